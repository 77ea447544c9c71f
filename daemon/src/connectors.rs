//! Managing a tenant's database connectors: add (the definition, its mappings and
//! the sealed password), show without secrets, test, discover, pause, resume,
//! remove. The CLI and the API call these; syncing is in [`crate::sync`].

use anyhow::Context as _;
use ledgersync_config::TlsMode;
use ledgersync_connectors::{ConnectionCheck, SourceError, TableInfo};
use ledgersync_credentials::SecretString;
use ledgersync_store::{Store, StoredConnector, SyncRun, Tenant};
use serde::Serialize;

use crate::secrets::Secrets;
use crate::sync::{database, StoredSpec};

/// A connector as people see it: never its password.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ConnectorView {
    pub name: String,
    pub kind: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub tls: String,
    pub schedule: Option<String>,
    pub streams: Vec<StreamView>,
    /// Why it is paused, if it is.
    pub paused: Option<String>,
    /// Failed runs in a row.
    pub failures: i64,
    pub last_run: Option<SyncRun>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StreamView {
    pub name: String,
    /// The table, or `query` for a stream defined by a query.
    pub reads: String,
    /// `incremental by <column>` or `full refresh`.
    pub mode: String,
}

fn tls_name(tls: TlsMode) -> &'static str {
    match tls {
        TlsMode::Disable => "disable",
        TlsMode::Prefer => "prefer",
        TlsMode::Require => "require",
        TlsMode::VerifyFull => "verify-full",
    }
}

pub async fn view(store: &dyn Store, connector: &StoredConnector) -> anyhow::Result<ConnectorView> {
    let spec = StoredSpec::from_stored(connector)?.connector;
    let last_run = store
        .sync_runs(&connector.tenant_id, Some(&connector.name), 1)
        .await?
        .into_iter()
        .next();
    Ok(ConnectorView {
        name: connector.name.clone(),
        kind: connector.kind.clone(),
        host: spec.host.clone(),
        port: spec.port(),
        database: spec.database.clone(),
        user: spec.user.clone(),
        tls: tls_name(spec.tls).to_string(),
        schedule: spec.schedule.clone(),
        streams: spec
            .streams
            .iter()
            .map(|s| StreamView {
                name: s.name.clone(),
                reads: s.table.clone().unwrap_or_else(|| "query".to_string()),
                mode: match &s.cursor {
                    Some(cursor) => format!("incremental by {}", cursor.column),
                    None => "full refresh".to_string(),
                },
            })
            .collect(),
        paused: connector.pause_reason.clone().or_else(|| {
            connector
                .paused_at
                .as_ref()
                .map(|at| format!("paused at {at}"))
        }),
        failures: connector.failures,
        last_run,
    })
}

/// Longest connector name.
pub const NAME_CHARS: usize = 64;

/// Whether `name` can name a connector: 1 to 64 letters, digits, '-' or '_'.
pub fn check_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(format!("a connector name is 1 to {NAME_CHARS} letters, digits, '-' or '_' (it names the ledger source `db:<name>/<stream>`)"))
    }
}

/// Adds a connector from its definition file; the password is sealed before it is
/// stored and never kept in the clear.
pub async fn add(
    store: &dyn Store,
    secrets: &Secrets,
    tenant: &Tenant,
    name: &str,
    spec_file: &std::path::Path,
    password: &SecretString,
    actor: &str,
) -> anyhow::Result<StoredConnector> {
    check_name(name).map_err(anyhow::Error::msg)?;
    let spec = StoredSpec::read(spec_file)?;
    add_spec(store, secrets, tenant, name, &spec, password, actor).await
}

/// Adds a connector from its definition and mappings already read (the API sends
/// them as texts); a name the tenant already uses is a store conflict.
pub async fn add_spec(
    store: &dyn Store,
    secrets: &Secrets,
    tenant: &Tenant,
    name: &str,
    spec: &StoredSpec,
    password: &SecretString,
    actor: &str,
) -> anyhow::Result<StoredConnector> {
    check_name(name).map_err(anyhow::Error::msg)?;
    let id = uuid::Uuid::new_v4().to_string();
    let secret = secrets.seal(store, &tenant.id, &id, password).await?;
    let stored = store
        .create_connector(&StoredConnector {
            id,
            tenant_id: tenant.id.clone(),
            name: name.to_string(),
            kind: spec.connector.kind.as_str().to_string(),
            spec: serde_json::to_string(spec).context("encoding the connector definition")?,
            secret,
            paused_at: None,
            pause_reason: None,
            failures: 0,
            created_at: String::new(),
            updated_at: String::new(),
        })
        .await?;
    store
        .audit(
            &tenant.id,
            actor,
            "connector.added",
            &format!(
                "{name}: {} database {} on {}, {} stream(s)",
                spec.connector.kind.as_str(),
                ledgersync_schemas::bounded(&spec.connector.database, 100),
                ledgersync_schemas::bounded(&spec.connector.host, 255),
                spec.connector.streams.len()
            ),
        )
        .await?;
    Ok(stored)
}

pub async fn find(
    store: &dyn Store,
    tenant: &Tenant,
    name: &str,
) -> anyhow::Result<StoredConnector> {
    store.connector(&tenant.id, name).await?.with_context(|| {
        format!(
            "the tenant has no connector named '{name}'; `ledgersync connector list --tenant {}` shows its connectors",
            tenant.slug
        )
    })
}

/// Connects, logs in and reads each stream's relation: what is wrong, in words.
pub async fn test(
    store: &dyn Store,
    secrets: &Secrets,
    connector: &StoredConnector,
) -> anyhow::Result<Result<ConnectionCheck, SourceError>> {
    let spec = StoredSpec::from_stored(connector)?.connector;
    let password = secrets.open(store, connector).await?;
    Ok(match database(&spec, password) {
        Ok(database) => database.check(&spec.streams).await,
        Err(error) => Err(error),
    })
}

pub async fn discover(
    store: &dyn Store,
    secrets: &Secrets,
    connector: &StoredConnector,
) -> anyhow::Result<Vec<TableInfo>> {
    let spec = StoredSpec::from_stored(connector)?.connector;
    let password = secrets.open(store, connector).await?;
    Ok(database(&spec, password)?.discover().await?)
}
