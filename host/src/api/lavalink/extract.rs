//! Request extractors that answer with Lavalink's error body: a body or query that does
//! not parse is a 400 whose message says what is wrong, naming the field (Lavalink's own
//! message does not, and clients print this one).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::LavalinkError;

/// A JSON body.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = LavalinkError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            // Lavalink answers a body that does not bind with 400 (axum would say 422), and
            // one that is not JSON at all with 415.
            Err(rejection) if rejection.status() == StatusCode::UNPROCESSABLE_ENTITY => {
                Err(LavalinkError::bad_request(rejection.body_text()))
            }
            Err(rejection) => Err(LavalinkError::new(rejection.status(), rejection.body_text())),
        }
    }
}

/// The query string.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = LavalinkError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(LavalinkError::bad_request(rejection.body_text())),
        }
    }
}
