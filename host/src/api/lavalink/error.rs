//! Lavalink's error body: `{"timestamp","status","error","message","path"}`, with `trace`
//! only when the request asked for it with `?trace=true`. A handler returns the status and
//! message; [`with_error_body`] writes the body, because only it sees the request's path
//! and query.

use axum::Json;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A failed Lavalink request: what the body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LavalinkError {
    pub status: StatusCode,
    pub message: String,
}

impl LavalinkError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

pub type LavalinkResult<T> = Result<T, LavalinkError>;

impl IntoResponse for LavalinkError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

#[derive(Serialize)]
struct Body<'a> {
    timestamp: u64,
    status: u16,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<String>,
    message: &'a str,
    path: &'a str,
}

/// Turns a [`LavalinkError`] into Lavalink's JSON body for the request that caused it.
pub async fn with_error_body(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let trace = request.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "trace=true"));
    let response = next.run(request).await;
    let Some(error) = response.extensions().get::<LavalinkError>().cloned() else { return response };
    let body = Body {
        timestamp: crate::wall_clock::unix_ms(),
        status: error.status.as_u16(),
        error: error.status.canonical_reason().unwrap_or(""),
        // There is no JVM stack to show; the trace is the message with where it happened.
        trace: trace.then(|| format!("{}: {} ({path})", error.status, error.message)),
        message: &error.message,
        path: &path,
    };
    (error.status, Json(body)).into_response()
}
