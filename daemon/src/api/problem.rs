//! Errors as RFC 9457 problem documents: a status, a stable `type` and a detail for
//! people; extra members (rejected rows, a retry delay) where a client can act on them.

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ledgersync_store::StoreError;

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    extra: Option<serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            kind,
            detail: detail.into(),
            extra: None,
        }
    }

    /// Members added to the document beside `detail`.
    pub fn with(mut self, extra: serde_json::Value) -> Problem {
        self.extra = Some(extra);
        self
    }

    pub fn bad(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-parameter", detail)
    }

    pub fn unavailable(error: impl std::fmt::Display) -> Problem {
        tracing::error!(error = %error, "A request failed on the store.");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Try again shortly.",
        )
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Problem {
        match error {
            StoreError::Conflict(detail) => Problem::new(StatusCode::CONFLICT, "conflict", detail),
            StoreError::NotFound(detail) => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
            }
            StoreError::SeatLimit { .. } => {
                Problem::new(StatusCode::CONFLICT, "seat-limit", error.to_string())
            }
            StoreError::Invalid(detail) => Problem::bad(detail),
            other => Problem::unavailable(other),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "type": format!("https://ledgersync.dev/problems/{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let (Some(extra), Some(map)) = (self.extra, body.as_object_mut()) {
            if let Some(fields) = extra.as_object() {
                map.extend(fields.clone());
            }
        }
        (
            self.status,
            [(CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

pub(crate) async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "No such route.")
}

pub(crate) async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "The route exists, but not with this method; see /v1/openapi.json.",
    )
}
