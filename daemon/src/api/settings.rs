//! `GET` and `PUT /v1/settings`: the tenant's settings; features beyond the plan
//! are refused with an upgrade hint.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::auth::Caller;
use super::extract::Upload;
use super::problem::Problem;
use super::state::AppState;
use crate::tenants;

pub(crate) async fn get_settings(
    caller: Caller,
) -> Result<Json<ledgersync_config::TenantSettings>, Problem> {
    Ok(Json(caller.tenant.settings.clone()))
}

pub(crate) async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    Upload(body): Upload,
) -> Result<Json<ledgersync_config::TenantSettings>, Problem> {
    let body = std::str::from_utf8(&body)
        .map_err(|e| Problem::bad(format!("the body is not UTF-8 text: {e}")))?;
    let (tenant, _) =
        tenants::configure(state.store.as_ref(), &caller.tenant, body, &caller.actor())
            .await
            .map_err(|e| match e {
                tenants::ConfigureError::Store(store) => Problem::from(store),
                upgrade @ tenants::ConfigureError::UpgradeRequired { .. } => Problem::new(
                    StatusCode::FORBIDDEN,
                    "upgrade-required",
                    upgrade.to_string(),
                ),
                invalid @ tenants::ConfigureError::Invalid(_) => Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-settings",
                    invalid.to_string(),
                ),
            })?;
    Ok(Json(tenant.settings))
}
