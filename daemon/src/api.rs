//! The HTTP API. Every `/v1` route authenticates by API key (`Authorization: Bearer
//! lsk_…`); the key alone decides the tenant. Reports read only precomputed
//! aggregates. Errors are RFC 9457 problem details with a stable `type`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ledgersync_schemas::{Grouping, Month, ReportKind};
use ledgersync_store::{ApiKey, Store, Tenant};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::keys;
use crate::reports::{self, ReportError, ReportQuery};

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
}

/// A bound, not yet serving, API server; port 0 picks a free port (tests).
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    pub async fn build(store: Arc<dyn Store>, listen: SocketAddr) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        Ok(Application {
            listener,
            router: router(AppState { store }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown_signal())
            .await
    }
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("Shutting down on interrupt.");
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/reports/{kind}", get(report))
        .fallback(not_found)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "No such route.")
}

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            kind,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": format!("https://ledgersync.dev/problems/{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        (
            self.status,
            [(CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// The tenant and key a request authenticated as.
pub struct Caller {
    pub tenant: Tenant,
    pub key: ApiKey,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Send an API key as `Authorization: Bearer lsk_…`.",
            )
        };
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(unauthorized)?;
        let secret = header.strip_prefix("Bearer ").ok_or_else(unauthorized)?;
        if secret.len() > 200 {
            return Err(unauthorized());
        }
        match state.store.authenticate_api_key(&keys::hash(secret)).await {
            Ok(Some((tenant, key))) => Ok(Caller { tenant, key }),
            Ok(None) => Err(unauthorized()),
            Err(e) => {
                tracing::error!(error = %e, "Checking an API key failed.");
                Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "Try again shortly.",
                ))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    from: String,
    to: String,
    branch: Option<String>,
    by: Option<String>,
}

async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(kind): Path<String>,
    Query(params): Query<ReportParams>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let bad = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "invalid-parameter", detail);
    if caller.key.scope != "read" {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "This key's scope is '{}'; reports need a 'read' key.",
                caller.key.scope
            ),
        ));
    }
    let kind: ReportKind = kind
        .parse()
        .map_err(|e: String| Problem::new(StatusCode::NOT_FOUND, "unknown-report", e))?;
    let from: Month = params
        .from
        .parse()
        .map_err(|e: ledgersync_schemas::MonthError| bad(format!("from: {e}")))?;
    let to: Month = params
        .to
        .parse()
        .map_err(|e: ledgersync_schemas::MonthError| bad(format!("to: {e}")))?;
    let by: Grouping = params
        .by
        .as_deref()
        .unwrap_or("month")
        .parse()
        .map_err(|e: String| bad(format!("by: {e}")))?;
    if params.branch.as_ref().is_some_and(|b| b.len() > 200) {
        return Err(bad("branch: longer than 200 characters".into()));
    }
    let query = ReportQuery {
        kind,
        from,
        to,
        branch: params.branch,
        by,
    };
    let report = reports::build(state.store.as_ref(), &caller.tenant, &query)
        .await
        .map_err(|e| match e {
            ReportError::Store(store) => {
                tracing::error!(tenant = %caller.tenant.id, error = %store, "Reading aggregates failed.");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", "Try again shortly.")
            },
            other => bad(other.to_string()),
        })?;
    let wants_csv = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"));
    Ok(if wants_csv {
        ([(CONTENT_TYPE, "text/csv; charset=utf-8")], report.to_csv()).into_response()
    } else {
        Json(report).into_response()
    })
}
