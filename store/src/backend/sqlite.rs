//! Embedded backend: `DIR/control.db` and one SQLite file per tenant in
//! `DIR/tenants/`, so a tenant's export or deletion is one file, beside its key index
//! (`<tenant>.keys.db`: derived data, built again from the tenant's file when missing).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::Mutex;

use super::Backend;
use crate::error::{Context, StoreError};

static CONTROL: Migrator = sqlx::migrate!("./migrations/sqlite/control");
static TENANT: Migrator = sqlx::migrate!("./migrations/sqlite/tenant");

pub(crate) struct SqliteBackend {
    dir: PathBuf,
    control: AnyPool,
    tenants: Mutex<HashMap<String, AnyPool>>,
    load_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl SqliteBackend {
    pub(crate) async fn open(dir: &str) -> Result<SqliteBackend, StoreError> {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(dir.join("tenants")).map_err(|e| {
            StoreError::Invalid(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let dir = dir
            .canonicalize()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let control = pool(&dir.join("control.db"), None).await?;
        CONTROL
            .run(&control)
            .await
            .map_err(|source| StoreError::Migrate {
                what: "the control database".into(),
                source,
            })?;
        Ok(SqliteBackend {
            dir,
            control,
            tenants: Mutex::new(HashMap::new()),
            load_locks: Mutex::new(HashMap::new()),
        })
    }

    fn tenant_file(&self, tenant_id: &str) -> PathBuf {
        self.dir.join("tenants").join(format!("{tenant_id}.db"))
    }

    async fn tenant_pool(&self, tenant_id: &str) -> Result<AnyPool, StoreError> {
        let mut tenants = self.tenants.lock().await;
        if let Some(pool) = tenants.get(tenant_id) {
            return Ok(pool.clone());
        }
        let file = self.tenant_file(tenant_id);
        let pool = pool(&file, Some(file.with_extension("keys.db"))).await?;
        TENANT
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                what: format!("tenant {tenant_id}"),
                source,
            })?;
        let mut tx = pool
            .begin()
            .await
            .context("beginning a tenant transaction")?;
        crate::legacy::adopt_row_postings(&mut tx).await?;
        tx.commit().await.context("committing moved postings")?;
        tenants.insert(tenant_id.to_string(), pool.clone());
        Ok(pool)
    }
}

/// The key index's tables (`keys.rs`), in a file of their own: a replacement writes
/// index entries at random places, and each page it dirties is written whole to the
/// WAL, so the index takes 4 KiB pages while the tenant's file keeps 64 KiB ones for
/// its blobs. SQLite commits the two files each atomically but not together:
/// `index_state` and `ledger_meta` carry the stamp of the last transaction that wrote
/// the index, and an index whose stamp differs is dropped (`keys::is_indexed`).
const KEY_INDEX: &str = "PRAGMA key_index.page_size = 4096; PRAGMA key_index.journal_mode = WAL; \
    PRAGMA key_index.synchronous = NORMAL; PRAGMA key_index.cache_size = -16384; \
    CREATE TABLE IF NOT EXISTS key_index.transaction_keys ( \
        source TEXT NOT NULL, key TEXT NOT NULL, load_id BIGINT NOT NULL, txn BIGINT NOT NULL, \
        postings TEXT NOT NULL, PRIMARY KEY (source, key)) WITHOUT ROWID; \
    CREATE TABLE IF NOT EXISTS key_index.indexed_sources (source TEXT PRIMARY KEY); \
    CREATE TABLE IF NOT EXISTS key_index.moved_transactions ( \
        from_load BIGINT NOT NULL, first_txn BIGINT NOT NULL, last_txn BIGINT NOT NULL, \
        to_load BIGINT NOT NULL, shift BIGINT NOT NULL, PRIMARY KEY (from_load, first_txn), \
        CHECK (to_load > from_load OR (to_load = from_load AND shift > 0))) WITHOUT ROWID; \
    CREATE TABLE IF NOT EXISTS key_index.index_state ( \
        id INTEGER PRIMARY KEY CHECK (id = 1), stamp BIGINT NOT NULL);";

/// A pool on `file`, with `key_index` attached to every connection when given.
async fn pool(file: &Path, key_index: Option<PathBuf>) -> Result<AnyPool, StoreError> {
    let url = format!("sqlite://{}?mode=rwc", file.display());
    AnyPoolOptions::new()
        .max_connections(4)
        .after_connect(move |conn, _| {
            let key_index = key_index.clone();
            Box::pin(async move {
                // WAL lets dashboards read while a load writes; NORMAL sync is still
                // crash-safe in WAL mode (a power cut may lose the last commit only).
                // A 16 MB page cache: a large load's pages spill to the WAL beyond it,
                // so the load's memory does not grow with the file.
                // 64 KiB pages: a tenant file is mostly segment blobs, written and read
                // whole; fewer, larger pages are fewer WAL frames to checksum and copy.
                // Only a new file takes it (WAL mode fixes the page size).
                conn.execute(
                    "PRAGMA page_size = 65536; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                     PRAGMA cache_size = -16384;",
                )
                .await?;
                if let Some(key_index) = key_index {
                    sqlx::query("ATTACH DATABASE $1 AS key_index")
                        .bind(key_index.display().to_string())
                        .execute(&mut *conn)
                        .await?;
                    conn.execute(KEY_INDEX).await?;
                }
                Ok(())
            })
        })
        .connect_with(super::connect_options(&url)?)
        .await
        .context("opening a SQLite database")
}

#[async_trait]
impl Backend for SqliteBackend {
    fn control(&self) -> &AnyPool {
        &self.control
    }

    /// One writer at a time for the whole file: the tenant needs no lock of its own.
    async fn begin_control_write(
        &self,
        _tenant_id: Option<&str>,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        self.control
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("beginning a control transaction")
    }

    async fn prepare_tenant(&self, tenant_id: &str) -> Result<(), StoreError> {
        self.tenant_pool(tenant_id).await.map(drop)
    }

    async fn begin(&self, tenant_id: &str) -> Result<Transaction<'static, Any>, StoreError> {
        self.tenant_pool(tenant_id)
            .await?
            .begin()
            .await
            .context("beginning a tenant transaction")
    }

    /// Under SQLite's 32766 bound parameters per statement.
    fn rows_per_insert(&self) -> usize {
        500
    }

    /// SQLite finds a numbered parameter's name by a linear scan, so binding a
    /// statement with numbered parameters costs the square of their count; anonymous
    /// ones bind in order at no such cost.
    fn anonymous_placeholders(&self) -> bool {
        true
    }

    /// A second writer would wait on the file lock only up to the busy timeout, far
    /// less than a large load takes; queue loads in the process instead.
    async fn load_lock(&self, tenant_id: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let lock = self
            .load_locks
            .lock()
            .await
            .entry(tenant_id.to_string())
            .or_default()
            .clone();
        Some(lock.lock_owned().await)
    }

    fn load_lock_statement(&self) -> Option<&'static str> {
        None
    }

    fn analyze_keys_statement(&self) -> Option<&'static str> {
        // SQLite plans an `IN` list over the primary key as lookups without them.
        None
    }
}
