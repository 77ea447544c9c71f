//! `GET /v1/reports/{kind}`: reports from the precomputed aggregates, as JSON or CSV,
//! kept in the read cache for the data generation they were rendered from.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::Response;
use ledgersync_schemas::{Grouping, Month, ReportKind};
use ledgersync_store::Tenant;
use serde::Deserialize;

use super::auth::Caller;
use super::extract::{Params, WantsCsv};
use super::problem::Problem;
use super::state::AppState;
use crate::reports::{self, ReportError, ReportQuery};
use crate::tenants;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    from: String,
    to: String,
    branch: Option<String>,
    by: Option<String>,
}

fn feature_enabled(tenant: &Tenant, kind: ReportKind) -> bool {
    let features = &tenant.settings.features;
    match kind {
        ReportKind::Pnl => features.pl,
        ReportKind::CashFlow => features.cash_flow,
        ReportKind::Cogs => features.cogs,
        ReportKind::Staff => features.staff && tenants::plan_allows(&tenant.plan, "staff"),
    }
}

pub(crate) async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(kind): Path<String>,
    Params(params): Params<ReportParams>,
    WantsCsv(wants_csv): WantsCsv,
) -> Result<Response, Problem> {
    let kind: ReportKind = kind
        .parse()
        .map_err(|e: String| Problem::new(StatusCode::NOT_FOUND, "unknown-report", e))?;
    if !feature_enabled(&caller.tenant, kind) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "feature-disabled",
            format!(
                "The {kind:?} report is not enabled for this tenant (plan {}); an admin enables it in the settings, and staff cost needs the pro plan.",
                caller.tenant.plan
            ),
        ));
    }
    let from: Month = params
        .from
        .parse()
        .map_err(|e: ledgersync_schemas::MonthError| Problem::bad(format!("from: {e}")))?;
    let to: Month = params
        .to
        .parse()
        .map_err(|e: ledgersync_schemas::MonthError| Problem::bad(format!("to: {e}")))?;
    let by: Grouping = params
        .by
        .as_deref()
        .unwrap_or("month")
        .parse()
        .map_err(|e: String| Problem::bad(format!("by: {e}")))?;
    if params.branch.as_ref().is_some_and(|b| b.len() > 200) {
        return Err(Problem::bad("branch: longer than 200 characters"));
    }
    let cache_key = format!(
        "{}|{kind:?}|{from}|{to}|{}|{by:?}|{wants_csv}",
        caller.tenant.id,
        params.branch.as_deref().unwrap_or("*")
    );
    let generation = state.store.generation(&caller.tenant.id);
    if state.cache.enabled() {
        if let Some(cached) = state.cache.report(&cache_key, generation) {
            return Ok(cached.map(axum::body::Body::from));
        }
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
            ReportError::Store(store) => Problem::unavailable(store),
            other => Problem::bad(other.to_string()),
        })?;
    let (content_type, body) = if wants_csv {
        ("text/csv; charset=utf-8", Bytes::from(report.to_csv()))
    } else {
        (
            "application/json",
            Bytes::from(serde_json::to_vec(&report).map_err(Problem::unavailable)?),
        )
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        axum::http::HeaderValue::from_static(content_type),
    );
    if state.cache.enabled() {
        state
            .cache
            .remember_report(cache_key, generation, &response);
    }
    Ok(response.map(axum::body::Body::from))
}
