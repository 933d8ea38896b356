//! The contract's error body: `{"code": …, "message": "<prefix>: <detail>"}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::player::PlayerError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, prefix: &str, detail: impl std::fmt::Display) -> Self {
        Self { status, code, message: format!("{prefix}: {detail}") }
    }
    pub fn bad_request(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", "bad request", detail)
    }
    pub fn not_found(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "not found", detail)
    }
    pub fn metadata_parse(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "metadata_parse_error", "metadata parse failed", detail)
    }
    pub fn source_unavailable(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "source_unavailable", "source unavailable", detail)
    }
    pub fn service_unavailable(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", "service unavailable", detail)
    }
    /// The state store could not answer: nothing was changed; the caller may retry.
    pub fn store_unavailable(e: crate::store::StoreError) -> Self {
        Self::service_unavailable(format!("{e}; nothing was changed, try again"))
    }
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error", detail)
    }
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "unauthorized: a bearer token is required".into(),
        }
    }
    pub fn forbidden() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: "forbidden: the bearer token is not valid".into(),
        }
    }
    /// 401 with what is missing.
    pub fn unauthorized_with(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized", detail)
    }
    /// 403 saying why what was presented is refused.
    pub fn forbidden_with(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "forbidden", detail)
    }
    /// 410: it existed and is gone for good.
    pub fn gone(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::GONE, "gone", "gone", detail)
    }
    /// A bound of this node was reached (`limit_exceeded`, 429).
    pub fn limit(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "limit_exceeded", "limit exceeded", detail)
    }
    /// 409: it exists already.
    pub fn conflict(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "conflict", detail)
    }
    pub fn payload_too_large(detail: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "payload too large", detail)
    }
}

impl From<PlayerError> for ApiError {
    fn from(e: PlayerError) -> Self {
        let detail = e.to_string();
        match e {
            PlayerError::NotFound(id) => Self::not_found(format!("player {id} not found")),
            PlayerError::Voice(v) => Self::service_unavailable(v),
            PlayerError::Store(e) => Self::store_unavailable(e),
            PlayerError::Full(_) => Self::limit(detail),
            PlayerError::Elsewhere(..) => Self::service_unavailable(detail),
            PlayerError::Internal(detail) => Self::internal(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(Body { code: self.code, message: &self.message })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
