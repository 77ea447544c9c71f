//! `GET /v1/reports/{kind}`: reports from the precomputed aggregates, as JSON or CSV,
//! kept in the read cache for the data generation they were rendered from (rendered
//! once for all the requests that wait for it, renewed in the background while used).

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

/// Longest branch name a report is asked for, in characters.
const BRANCH_CHARS: usize = 200;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    /// First month, YYYY-MM; at most 240 months before `to`.
    #[schemars(regex(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$"))]
    from: String,
    /// Last month, YYYY-MM, not before `from`.
    #[schemars(regex(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$"))]
    to: String,
    /// One branch; all branches together when absent.
    #[schemars(length(max = BRANCH_CHARS))]
    branch: Option<String>,
    /// How months are grouped into rows; by month when absent.
    by: Option<Grouping>,
}

/// The report kinds a path may name.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
pub struct ReportPath {
    kind: ReportKind,
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
    let by = params.by.unwrap_or_default();
    if params
        .branch
        .as_ref()
        .is_some_and(|b| b.chars().count() > BRANCH_CHARS)
    {
        return Err(Problem::bad(format!(
            "branch: longer than {BRANCH_CHARS} characters"
        )));
    }
    let generation = state.store.generation(&caller.tenant.id);
    let cache_key = format!(
        "{}|{generation}|{kind:?}|{from}|{to}|{}|{by:?}|{wants_csv}",
        caller.tenant.id,
        params.branch.as_deref().unwrap_or("*")
    );
    let query = ReportQuery {
        kind,
        from,
        to,
        branch: params.branch,
        by,
    };
    let response = state
        .cache
        .report(&cache_key, || {
            render(state.clone(), caller.clone(), query.clone(), wants_csv)
        })
        .await
        .map_err(|error| match &*error {
            RenderError::Report(ReportError::Store(store)) => Problem::of_store(store),
            // Settings are checked when they are written: a bad one here is the server's.
            RenderError::Report(settings @ ReportError::Settings(_)) => {
                Problem::internal(anyhow::anyhow!("{settings}"))
            }
            // Months that are each valid but do not make a range.
            RenderError::Report(
                range @ (ReportError::ReversedRange { .. } | ReportError::RangeTooLong { .. }),
            ) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-range",
                range.to_string(),
            ),
            // Stored figures whose sum does not fit an amount: the question is fine, the
            // answer cannot be given exactly (and is never given wrapped).
            RenderError::Report(overflow @ ReportError::Overflow { .. }) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "figure-overflow",
                overflow.to_string(),
            ),
            RenderError::Serialize(serialize) => Problem::internal(anyhow::anyhow!("{serialize}")),
        })?;
    Ok(response.map(axum::body::Body::from))
}

/// Why a report could not be rendered; shared by every request that waited for it.
#[derive(Debug, thiserror::Error)]
enum RenderError {
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("serialising a report: {0}")]
    Serialize(#[from] serde_json::Error),
}

async fn render(
    state: AppState,
    caller: Caller,
    query: ReportQuery,
    wants_csv: bool,
) -> Result<Response<Bytes>, RenderError> {
    let report = reports::build(state.store.as_ref(), &caller.tenant, &query).await?;
    let (content_type, body) = if wants_csv {
        ("text/csv; charset=utf-8", Bytes::from(report.to_csv()))
    } else {
        (
            "application/json",
            Bytes::from(serde_json::to_vec(&report)?),
        )
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        axum::http::HeaderValue::from_static(content_type),
    );
    Ok(response)
}
