//! What differs between backends: where a tenant's tables live, how a transaction is
//! pointed at them, how control writes and loads are serialised, migrations and
//! statement sizes. Everything else is shared SQL.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Any, AnyPool, Transaction};

use crate::{SqlStore, Store, StoreError};

#[async_trait]
pub(crate) trait Backend: Send + Sync {
    /// Pool whose connections see the control tables.
    fn control(&self) -> &AnyPool;
    /// Begins a write transaction on the control tables that holds its write lock
    /// from the start (SQLite: `BEGIN IMMEDIATE`, so a concurrent writer waits out
    /// the busy timeout instead of failing with "database is locked" when it upgrades
    /// from reading). Given a tenant, it also takes turns with every other such
    /// transaction of that tenant (PostgreSQL: the tenant's row locked `FOR UPDATE`),
    /// so checks such as seats or the last admin hold until it commits.
    async fn begin_control_write(
        &self,
        tenant_id: Option<&str>,
    ) -> Result<Transaction<'static, Any>, StoreError>;
    /// Creates and migrates a tenant's storage (idempotent).
    async fn prepare_tenant(&self, tenant_id: &str) -> Result<(), StoreError>;
    /// Begins a transaction that sees the tenant's tables.
    async fn begin(&self, tenant_id: &str) -> Result<Transaction<'static, Any>, StoreError>;
    /// Rows per multi-row INSERT.
    fn rows_per_insert(&self) -> usize;
    /// Whether large statements should use anonymous `?` parameters.
    fn anonymous_placeholders(&self) -> bool;
    /// Loads of one tenant run one at a time. An in-process lock taken before the
    /// load's transaction begins (SQLite: one writer per file), if any …
    async fn load_lock(&self, tenant_id: &str) -> Option<tokio::sync::OwnedMutexGuard<()>>;
    /// … and a statement run first inside it, bound to the tenant id (PostgreSQL:
    /// an advisory lock that also holds across replicas), if any.
    fn load_lock_statement(&self) -> Option<&'static str>;
    /// A statement that refreshes the planner's statistics of the key index after
    /// it is built in bulk, if the backend needs one (PostgreSQL: without them an
    /// `IN` list of keys is planned as a scan of the whole index).
    fn analyze_keys_statement(&self) -> Option<&'static str>;
}

/// Connection options for a URL. Statements slower than a second are logged at debug
/// level, not as warnings: large loads are slow by nature, and operators read the
/// load's own timing line instead.
pub(crate) fn connect_options(url: &str) -> Result<sqlx::any::AnyConnectOptions, StoreError> {
    use sqlx::ConnectOptions;
    let options: sqlx::any::AnyConnectOptions =
        url.parse().map_err(|source| StoreError::Database {
            context: "reading the store URL",
            source,
        })?;
    Ok(options.log_slow_statements(log::LevelFilter::Debug, std::time::Duration::from_secs(1)))
}

pub(crate) async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    sqlx::any::install_default_drivers();
    let backend: Arc<dyn Backend> = if let Some(dir) = url.strip_prefix("sqlite://") {
        Arc::new(sqlite::SqliteBackend::open(dir).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(postgres::PostgresBackend::open(url).await?)
    } else {
        return Err(StoreError::UnsupportedUrl(ledgersync_config::redact_url(
            url,
        )));
    };
    Ok(Arc::new(SqlStore {
        backend,
        generations: Default::default(),
    }))
}
