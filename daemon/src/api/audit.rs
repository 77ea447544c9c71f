//! `GET /v1/audit`: the tenant's audit trail, newest first.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::auth::Caller;
use super::extract::Params;
use super::problem::Problem;
use super::state::AppState;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Entries to return, newest first; 100 when absent.
    #[schemars(range(min = 1, max = MAX_LIMIT))]
    limit: Option<i64>,
}

/// Most entries one request returns.
const MAX_LIMIT: i64 = 1000;

pub(crate) async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<AuditParams>,
) -> Result<Json<Vec<ledgersync_store::AuditEntry>>, Problem> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::bad(format!(
            "limit: {limit} is not between 1 and {MAX_LIMIT}"
        )));
    }
    Ok(Json(state.store.audit_log(&caller.tenant, limit).await?))
}
