//! Errors as RFC 9457 problem documents: a status, a stable `type` and a detail for
//! people; extra members (rejected rows, a retry delay) where a client can act on them.
//!
//! Two classes, never mixed: a 4xx says what the caller must fix; a 5xx says only
//! that the server failed, with the request's id, while the failure itself goes to
//! the log (under the same id) and never into the answer.

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ledgersync_store::{Blame, StoreError};

use super::state::current_request_id;

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    extra: Option<serde_json::Value>,
}

/// What a 5xx answer says: the failure is in the log, under the request's id.
const INTERNAL_DETAIL: &str =
    "The server failed to answer this request; quote its requestId when reporting it.";

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

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn bad(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-parameter", detail)
    }

    /// A failure of the server itself: logged with its whole chain of causes, answered
    /// with a generic detail.
    pub fn internal(error: impl Into<anyhow::Error>) -> Problem {
        let error = error.into();
        tracing::error!(
            error = format!("{error:#}"),
            "A request failed on the server."
        );
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            INTERNAL_DETAIL,
        )
    }

    /// The store is busy or out of reach for now: logged, answered 503.
    pub fn unavailable(error: impl std::fmt::Display) -> Problem {
        tracing::error!(error = %error, "A request failed on the store.");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "The store is busy or unreachable; try again shortly.",
        )
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Problem {
        Problem::of_store(&error)
    }
}

impl Problem {
    /// A store error as a problem: the caller's fault with its detail, or a failure
    /// (logged with its causes) with a generic one.
    pub fn of_store(error: &StoreError) -> Problem {
        match error.blame() {
            Blame::Server => return Problem::internal(anyhow::anyhow!("{}", causes(error))),
            Blame::Busy => return Problem::unavailable(causes(error)),
            Blame::Caller => {}
        }
        match error {
            StoreError::Conflict(detail) => {
                Problem::new(StatusCode::CONFLICT, "conflict", detail.clone())
            }
            StoreError::NotFound(detail) => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", detail.clone())
            }
            StoreError::SeatLimit { .. } => {
                Problem::new(StatusCode::CONFLICT, "seat-limit", error.to_string())
            }
            StoreError::Rejected(rejected) => rows_rejected(&rejected.errors, rejected.total),
            StoreError::Invalid(detail) => Problem::bad(detail.clone()),
            other => Problem::internal(anyhow::anyhow!("{}", causes(other))),
        }
    }
}

/// An error and its chain of causes, for the log.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Characters of one rejected row's reason in an answer; the readers and the mapping
/// already cut the cells they quote, this bounds whatever else a reason holds.
const REASON_CHARS: usize = 300;

/// 422 for a file refused because of its rows: the first rows (line and reason,
/// each bounded) and how many there were in all.
pub(crate) fn rows_rejected(errors: &[ledgersync_schemas::RowError], total: usize) -> Problem {
    let errors: Vec<serde_json::Value> = errors
        .iter()
        .map(|e| {
            serde_json::json!({
                "line": e.line,
                "reason": ledgersync_schemas::bounded(&e.reason, REASON_CHARS),
            })
        })
        .collect();
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "rows-rejected",
        format!("{total} bad row(s); nothing was imported."),
    )
    .with(serde_json::json!({ "errors": errors, "total": total }))
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "type": format!("https://ledgersync.dev/problems/{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(map) = body.as_object_mut() {
            if let Some(fields) = self.extra.as_ref().and_then(|extra| extra.as_object()) {
                map.extend(fields.clone());
            }
            if self.status.is_server_error() {
                if let Some(id) = current_request_id() {
                    map.insert("requestId".into(), id.into());
                }
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
