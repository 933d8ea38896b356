//! Request extractors that answer with the contract's error body instead of axum's text.

use std::collections::HashMap;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::model::Id;

/// A JSON body; malformed or mistyped input is a 400 `bad_request` naming the problem.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::bad_request("expected a JSON body with Content-Type: application/json"))
            }
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::payload_too_large("request body is larger than 2 MiB"))
            }
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// The `{id}` path segment: a player id; anything else is a 404 for that "player".
pub struct PlayerId(pub Id);

impl<S: Send + Sync> FromRequestParts<S> for PlayerId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e: PathRejection| ApiError::bad_request(e.body_text()))?
            .0;
        let raw = params.get("id").cloned().unwrap_or_default();
        raw.parse().map(|v| Self(Id(v))).map_err(|_| ApiError::not_found(format!("player {raw} not found")))
    }
}
