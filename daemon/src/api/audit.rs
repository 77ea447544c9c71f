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
    limit: Option<i64>,
}

pub(crate) async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<AuditParams>,
) -> Result<Json<Vec<ledgersync_store::AuditEntry>>, Problem> {
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(state.store.audit_log(&caller.tenant, limit).await?))
}
