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

/// What a key may do.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    /// Reports, settings and the caller's identity, as a viewer.
    Read,
    /// Uploads to `POST /v1/imports`.
    Ingest,
}

impl KeyScope {
    fn as_str(self) -> &'static str {
        match self {
            KeyScope::Read => "read",
            KeyScope::Ingest => "ingest",
        }
    }
}

/// Longest key name, in characters.
const KEY_NAME_CHARS: usize = 100;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    /// A name people recognise the key by, 1 to 100 characters.
    #[schemars(length(min = 1, max = KEY_NAME_CHARS))]
    name: String,
    scope: KeyScope,
}

pub(crate) async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<KeyBody>,
) -> Result<Response, Problem> {
    let name_chars = body.name.chars().count();
    if name_chars == 0 || name_chars > KEY_NAME_CHARS {
        return Err(Problem::bad(format!(
            "name: must be 1 to {KEY_NAME_CHARS} characters, not {name_chars}"
        )));
    }
    let (secret, key) = crate::cli::create_key(
        state.store.as_ref(),
        &caller.tenant,
        &body.name,
        body.scope.as_str(),
        &caller.actor(),
    )
    .await
    // The body was checked above: what fails now is the server's.
    .map_err(|e| match e.downcast::<ledgersync_store::StoreError>() {
        Ok(store) => Problem::from(store),
        Err(other) => Problem::internal(other),
    })?;
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
