//! `/v1/connectors` and `/v1/syncs`: the tenant's database connectors, added with
//! their definition and mappings as texts and a password that is sealed at once and
//! never answered nor logged; tested, discovered, synced now, paused, resumed,
//! removed; and the record of every run. The tenant is always the caller's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledgersync_connectors::{MappingError, SourceError};
use ledgersync_credentials::{ExposeSecret as _, SecretString};
use ledgersync_store::{StoreError, StoredConnector, SyncRun};
use schemars::{json_schema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::extract::{Body, Params};
use super::problem::Problem;
use super::state::AppState;
use crate::connectors::{self, ConnectorView, NAME_CHARS};
use crate::secrets::Secrets;
use crate::sync::{sync_connector, HeldLease, StoredSpec, StreamSynced, SyncError, SyncOptions};

/// Longest connector definition, in characters.
pub const DEFINITION_CHARS: usize = 64 << 10;
/// Most mappings one connector is added with, and the longest, in characters.
pub const MAPPINGS: usize = 16;
pub const MAPPING_CHARS: usize = 64 << 10;
/// Longest database password, in characters.
pub const PASSWORD_CHARS: usize = 1024;
/// Largest body `POST /v1/connectors` accepts: every text at its longest, each
/// character escaped as JSON may escape it.
pub const MAX_CONNECTOR_BYTES: usize = 16 << 20;

/// Characters of an explanation (a TOML error, a source's failure) in an answer.
const DETAIL_CHARS: usize = 2000;

/// The master key, or 503 when this daemon has none.
fn secrets(state: &AppState) -> Result<Arc<Secrets>, Problem> {
    state.secrets.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "credentials-unavailable",
            "connector credentials are unavailable: the daemon has no master key",
        )
    })
}

/// The caller's tenant's connector `name`, or 404.
async fn find(state: &AppState, caller: &Caller, name: &str) -> Result<StoredConnector, Problem> {
    state
        .store
        .connector(&caller.tenant.id, name)
        .await?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!(
                    "no connector named '{}'; GET /v1/connectors lists the tenant's connectors",
                    ledgersync_schemas::bounded(name, NAME_CHARS)
                ),
            )
        })
}

/// 502 for a failure of the customer's database: unlike the server's own failures,
/// its words are the answer (they never hold the password), for the person who can
/// fix the database, its network or the definition.
fn source_failed(error: &SourceError) -> Problem {
    let kind = kind_name(error);
    Problem::new(
        StatusCode::BAD_GATEWAY,
        "source-failed",
        ledgersync_schemas::bounded(&format!("{kind}: {}", error.message), DETAIL_CHARS),
    )
    .with(serde_json::json!({ "kind": kind }))
}

fn kind_name(error: &SourceError) -> String {
    serde_json::to_value(error.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "other".into())
}

/// An error of the daemon's connector functions as a problem: the store's by its
/// blame, the source's as 502, a mapping that does not fit as 422, the rest the
/// server's.
fn of_error(error: anyhow::Error) -> Problem {
    for cause in error.chain() {
        if let Some(store) = cause.downcast_ref::<StoreError>() {
            return Problem::of_store(store);
        }
        if let Some(source) = cause.downcast_ref::<SourceError>() {
            return source_failed(source);
        }
        if let Some(mapping) = cause.downcast_ref::<MappingError>() {
            return refused(mapping.to_string());
        }
    }
    Problem::internal(error)
}

/// 422: the connector's definition, mapping or rows are refused, in words.
fn refused(detail: impl AsRef<str>) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "connector-refused",
        ledgersync_schemas::bounded(detail.as_ref(), DETAIL_CHARS),
    )
}

pub(crate) async fn list_connectors(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ConnectorView>>, Problem> {
    let mut views = Vec::new();
    for connector in state.store.connectors(&caller.tenant.id).await? {
        views.push(
            connectors::view(state.store.as_ref(), &connector)
                .await
                .map_err(of_error)?,
        );
    }
    Ok(Json(views))
}

pub(crate) async fn get_connector(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ConnectorView>, Problem> {
    let connector = find(&state, &caller, &name).await?;
    Ok(Json(
        connectors::view(state.store.as_ref(), &connector)
            .await
            .map_err(of_error)?,
    ))
}

/// A new connector.
// `Debug` is not derived: the password is in it.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorBody {
    /// 1 to 64 letters, digits, '-' or '_'; the ledger source of its streams is
    /// `db:<name>/<stream>`.
    #[schemars(length(min = 1, max = NAME_CHARS), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    name: String,
    /// The connector definition (TOML: kind, host, port, database, user, tls,
    /// source_timezone, schedule, statement_timeout_secs and [[streams]] with name,
    /// table or query, and cursor), as `ledgersync connector add` reads it; a
    /// stream's `mapping` path is not read, and `ca_file` is refused.
    #[schemars(length(min = 1, max = DEFINITION_CHARS))]
    definition: String,
    /// Each stream's mapping (TOML), by stream name: one for every stream of the
    /// definition.
    #[schemars(schema_with = "mappings_schema")]
    mappings: BTreeMap<String, String>,
    /// The database user's password: sealed at once, never answered nor logged.
    #[schemars(with = "String", length(min = 1, max = PASSWORD_CHARS))]
    password: SecretString,
}

fn mappings_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "Each stream's mapping (TOML), by stream name: one for every stream of the definition.",
        "maxProperties": MAPPINGS,
        "additionalProperties": { "type": "string", "maxLength": MAPPING_CHARS },
    })
}

pub(crate) async fn add_connector(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<ConnectorBody>,
) -> Result<Response, Problem> {
    connectors::check_name(&body.name).map_err(|e| Problem::bad(format!("name: {e}")))?;
    let definition_chars = body.definition.chars().count();
    if definition_chars == 0 || definition_chars > DEFINITION_CHARS {
        return Err(Problem::bad(format!(
            "definition: must be 1 to {DEFINITION_CHARS} characters, not {definition_chars}"
        )));
    }
    if body.mappings.len() > MAPPINGS {
        return Err(Problem::bad(format!(
            "mappings: at most {MAPPINGS}, not {}",
            body.mappings.len()
        )));
    }
    for (stream, text) in &body.mappings {
        let chars = text.chars().count();
        if chars > MAPPING_CHARS {
            return Err(Problem::bad(format!(
                "mappings.{}: at most {MAPPING_CHARS} characters, not {chars}",
                ledgersync_schemas::bounded(stream, 100)
            )));
        }
    }
    let password_chars = body.password.expose_secret().chars().count();
    if password_chars == 0 || password_chars > PASSWORD_CHARS {
        return Err(Problem::bad(format!(
            "password: must be 1 to {PASSWORD_CHARS} characters, not {password_chars}"
        )));
    }
    let spec = StoredSpec::from_texts(&body.definition, &body.mappings)
        .map_err(|e| refused(format!("{e:#}")))?;
    let secrets = secrets(&state)?;
    let added = connectors::add_spec(
        state.store.as_ref(),
        &secrets,
        &caller.tenant,
        &body.name,
        &spec,
        &body.password,
        &caller.actor(),
    )
    .await
    .map_err(of_error)?;
    let view = connectors::view(state.store.as_ref(), &added)
        .await
        .map_err(of_error)?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// What a connection test found.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ConnectionTest {
    /// Whether the database was reached, logged into, and each stream's relation read.
    pub ok: bool,
    /// The server, e.g. `PostgreSQL 15.19`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// One line per stream: how many rows are readable where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TestFailure>,
}

/// Why a connection test failed.
#[derive(Serialize, schemars::JsonSchema)]
pub struct TestFailure {
    /// unreachable, tls, login, permission, timeout, interrupted, definition, type
    /// or other.
    pub kind: String,
    /// What failed and what to do, in words (never the password).
    pub message: String,
}

pub(crate) async fn test_connector(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ConnectionTest>, Problem> {
    let secrets = secrets(&state)?;
    let connector = find(&state, &caller, &name).await?;
    let tested = connectors::test(state.store.as_ref(), &secrets, &connector)
        .await
        .map_err(of_error)?;
    Ok(Json(match tested {
        Ok(check) => ConnectionTest {
            ok: true,
            server: Some(check.server),
            streams: Some(check.streams),
            error: None,
        },
        Err(error) => ConnectionTest {
            ok: false,
            server: None,
            streams: None,
            error: Some(TestFailure {
                kind: kind_name(&error),
                message: ledgersync_schemas::bounded(&error.message, DETAIL_CHARS).into_owned(),
            }),
        },
    }))
}

pub(crate) async fn discover_connector(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<ledgersync_connectors::TableInfo>>, Problem> {
    let secrets = secrets(&state)?;
    let connector = find(&state, &caller, &name).await?;
    Ok(Json(
        connectors::discover(state.store.as_ref(), &secrets, &connector)
            .await
            .map_err(of_error)?,
    ))
}

/// The schema of discover's answer (the connectors crate describes no schemas).
pub fn tables_schema() -> Schema {
    json_schema!({
        "type": "array",
        "description": "Tables and views the connector's user can read",
        "items": {
            "type": "object",
            "required": ["schema", "name", "columns"],
            "properties": {
                "schema": { "type": "string", "description": "Schema (PostgreSQL) or database (MySQL) holding the table" },
                "name": { "type": "string" },
                "columns": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "source_type", "nullable"],
                        "properties": {
                            "name": { "type": "string" },
                            "source_type": { "type": "string", "description": "The database's own type name" },
                            "canonical": {
                                "type": ["string", "null"],
                                "description": "The canonical type it is read as; null when it has none (cast it in a query)"
                            },
                            "nullable": { "type": "boolean" }
                        }
                    }
                }
            }
        }
    })
}

/// Syncs every stream now, holding the connector's lease so that no scheduled run
/// of any daemon overlaps it: 409 while another run holds it.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncNowParams {
    /// Also read every incremental stream's keys whole and remove from the ledger
    /// what the source deleted, whether or not the stream's `reconcile` is due.
    #[serde(default)]
    reconcile: bool,
}

pub(crate) async fn sync_now(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Params(params): Params<SyncNowParams>,
) -> Result<Json<Vec<StreamSynced>>, Problem> {
    let secrets = secrets(&state)?;
    let connector = find(&state, &caller, &name).await?;
    let holder = format!("api:{}", uuid::Uuid::new_v4().simple());
    let held = HeldLease::take(
        state.store.clone(),
        &connector.id,
        &holder,
        state.sync_lease,
        None,
    )
    .await?;
    let Some(held) = held else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "sync-running",
            format!(
                "connector '{}' is syncing now; try again when that run is done (GET /v1/syncs shows it)",
                connector.name
            ),
        ));
    };
    // On a task of its own: a client that goes away does not cut the sync short
    // between its commits, nor leave the lease held.
    let task = {
        let (state, tenant, connector) = (state.clone(), caller.tenant.clone(), connector.clone());
        tokio::spawn(async move {
            let options = SyncOptions {
                reconcile_now: params.reconcile,
                ..SyncOptions::once(state.import.batch_rows, state.import.max_reported_errors)
            };
            let started = Instant::now();
            let outcome = sync_connector(
                state.store.clone(),
                &secrets,
                &tenant,
                &connector,
                "manual",
                &options,
            )
            .await;
            state
                .sync_metrics
                .record(&tenant.slug, &connector, started.elapsed(), &outcome);
            held.release().await;
            outcome
        })
    };
    let outcome = task
        .await
        .map_err(|e| Problem::internal(anyhow::anyhow!("the sync task failed: {e}")))?;
    let detail = match &outcome {
        Ok(streams) => format!(
            "{}: {} stream(s), {} row(s) read",
            connector.name,
            streams.len(),
            streams.iter().map(|s| s.rows_read).sum::<i64>()
        ),
        Err(error) => format!(
            "{}: failed: {}",
            connector.name,
            ledgersync_schemas::bounded(&error.to_string(), 300)
        ),
    };
    state
        .store
        .audit(
            &caller.tenant.id,
            &caller.actor(),
            "connector.synced",
            &detail,
        )
        .await?;
    match outcome {
        Ok(streams) => Ok(Json(streams)),
        Err(SyncError::Source(error)) => Err(source_failed(&error)),
        Err(error @ (SyncError::Rows { .. } | SyncError::Mapping(_))) => {
            Err(refused(error.to_string()))
        }
        Err(SyncError::Store(error)) => Err(Problem::of_store(&error)),
        Err(SyncError::Other(error)) => Err(of_error(error)),
    }
}

pub(crate) async fn pause_connector(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ConnectorView>, Problem> {
    let connector = find(&state, &caller, &name).await?;
    let actor = caller.actor();
    state
        .store
        .set_connector_paused(
            &caller.tenant.id,
            &connector.name,
            Some(&format!("paused by {actor}")),
        )
        .await?;
    state
        .store
        .audit(
            &caller.tenant.id,
            &actor,
            "connector.paused",
            &connector.name,
        )
        .await?;
    get_connector(State(state), caller, Path(connector.name)).await
}

pub(crate) async fn resume_connector(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ConnectorView>, Problem> {
    let connector = find(&state, &caller, &name).await?;
    state
        .store
        .set_connector_paused(&caller.tenant.id, &connector.name, None)
        .await?;
    state
        .store
        .audit(
            &caller.tenant.id,
            &caller.actor(),
            "connector.resumed",
            &connector.name,
        )
        .await?;
    get_connector(State(state), caller, Path(connector.name)).await
}

pub(crate) async fn remove_connector(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    let connector = find(&state, &caller, &name).await?;
    state
        .store
        .remove_connector(&caller.tenant.id, &connector.name)
        .await?;
    state
        .store
        .audit(
            &caller.tenant.id,
            &caller.actor(),
            "connector.removed",
            &connector.name,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncParams {
    /// Only this connector's runs.
    #[schemars(length(min = 1, max = NAME_CHARS), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    connector: Option<String>,
    /// Runs to return, newest first; 100 when absent.
    #[schemars(range(min = 1, max = MAX_RUNS))]
    limit: Option<i64>,
}

/// Most runs one request returns.
const MAX_RUNS: i64 = 1000;

pub(crate) async fn list_syncs(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<SyncParams>,
) -> Result<Json<Vec<SyncRun>>, Problem> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_RUNS).contains(&limit) {
        return Err(Problem::bad(format!(
            "limit: {limit} is not between 1 and {MAX_RUNS}"
        )));
    }
    if let Some(connector) = &params.connector {
        connectors::check_name(connector).map_err(|e| Problem::bad(format!("connector: {e}")))?;
    }
    Ok(Json(
        state
            .store
            .sync_runs(&caller.tenant.id, params.connector.as_deref(), limit)
            .await?,
    ))
}
