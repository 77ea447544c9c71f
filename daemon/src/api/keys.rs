//! `/v1/apikeys`: API keys of the tenant; a secret is shown once, at creation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledgersync_store::ApiKey;
use serde::Deserialize;

use super::auth::Caller;
use super::extract::Body;
use super::problem::Problem;
use super::state::AppState;

pub(crate) async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApiKey>>, Problem> {
    Ok(Json(state.store.api_keys(&caller.tenant).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    name: String,
    scope: String,
}

pub(crate) async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<KeyBody>,
) -> Result<Response, Problem> {
    let (secret, key) = crate::cli::create_key(
        state.store.as_ref(),
        &caller.tenant,
        &body.name,
        &body.scope,
        &caller.actor(),
    )
    .await
    .map_err(|e| Problem::bad(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "key": key, "secret": secret })),
    )
        .into_response())
}

pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state.store.revoke_api_key(&caller.tenant, &id).await?;
    state
        .store
        .audit(&caller.tenant.id, &caller.actor(), "apikey.revoked", &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
