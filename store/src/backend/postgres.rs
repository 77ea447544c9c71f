//! Shared-server backend: control tables in the `ledgersync` schema and one schema
//! per tenant (`tenant_<id>`), the isolation boundary and the unit Citus
//! schema-based sharding distributes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Connection, Executor, Transaction};
use tokio::sync::OnceCell;

use super::Backend;
use crate::error::{Context, StoreError};

static CONTROL: Migrator = sqlx::migrate!("./migrations/postgres/control");
static TENANT: Migrator = sqlx::migrate!("./migrations/postgres/tenant");

const CONTROL_SCHEMA: &str = "ledgersync";

/// Connections idle longer than this are checked with a round trip before use; the
/// pool already checks every connection as it comes back, so one used a moment ago
/// goes straight to its next request.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(10);

pub(crate) struct PostgresBackend {
    pool: AnyPool,
    /// One cell per tenant, set once this process has migrated the tenant's schema.
    /// A tenant's first use migrates it while later uses of it wait for that one
    /// migration; uses of other tenants never wait for it.
    migrated: moka::future::Cache<String, Arc<OnceCell<()>>>,
}

/// Tenant ids are UUIDs we generate; the schema name keeps only their hex digits.
fn tenant_schema(tenant_id: &str) -> String {
    let hex: String = tenant_id.chars().filter(char::is_ascii_hexdigit).collect();
    format!("tenant_{hex}")
}

impl PostgresBackend {
    pub(crate) async fn open(url: &str) -> Result<PostgresBackend, StoreError> {
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_WHEN_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(format!("SET search_path TO {CONTROL_SCHEMA}").as_str())
                        .await?;
                    Ok(())
                })
            })
            .connect_with(super::connect_options(url)?)
            .await
            .context("connecting to PostgreSQL")?;
        pool.execute(format!("CREATE SCHEMA IF NOT EXISTS {CONTROL_SCHEMA}").as_str())
            .await
            .context("creating the control schema")?;
        CONTROL
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                what: "the control schema".into(),
                source,
            })?;
        Ok(PostgresBackend {
            pool,
            migrated: moka::future::Cache::builder().build(),
        })
    }

    /// Migrates the tenant's schema once per process.
    async fn ensure_migrated(&self, tenant_id: &str) -> Result<(), StoreError> {
        let cell = self
            .migrated
            .get_with_by_ref(tenant_id, async { Arc::new(OnceCell::new()) })
            .await;
        // A failed migration leaves the cell empty: the next use tries again.
        cell.get_or_try_init(|| self.migrate_tenant(tenant_id))
            .await
            .map(drop)
    }

    /// A transaction that sees `schema`, begun in one round trip (BEGIN and the
    /// search path as one simple query). LOCAL: the connection goes back to the pool
    /// pointing at the control schema.
    async fn begin_in_schema(&self, schema: &str) -> Result<Transaction<'static, Any>, StoreError> {
        self.pool
            .begin_with(format!("BEGIN; SET LOCAL search_path TO {schema}"))
            .await
            .context("beginning a tenant transaction")
    }

    async fn migrate_tenant(&self, tenant_id: &str) -> Result<(), StoreError> {
        let schema = tenant_schema(tenant_id);
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("acquiring a connection")?;
        // The migrator needs the schema as the session's search path; the connection
        // is closed afterwards rather than returned pointing at a tenant.
        conn.close_on_drop();
        conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
            .await
            .context("creating a tenant schema")?;
        conn.execute(format!("SET search_path TO {schema}").as_str())
            .await
            .context("selecting a tenant schema")?;
        TENANT
            .run_direct(&mut *conn)
            .await
            .map_err(|source| StoreError::Migrate {
                what: format!("tenant {tenant_id}"),
                source,
            })?;
        drop(conn);
        let mut tx = self.begin_in_schema(&schema).await?;
        crate::legacy::adopt_row_postings(&mut tx).await?;
        tx.commit().await.context("committing moved postings")?;
        Ok(())
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    fn control(&self) -> &AnyPool {
        &self.pool
    }

    async fn begin_control_write(
        &self,
        tenant_id: Option<&str>,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning a control transaction")?;
        if let Some(tenant_id) = tenant_id {
            sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(tenant_id)
                .fetch_optional(&mut *tx)
                .await
                .context("locking the tenant")?;
        }
        Ok(tx)
    }

    async fn prepare_tenant(&self, tenant_id: &str) -> Result<(), StoreError> {
        self.ensure_migrated(tenant_id).await
    }

    async fn begin(&self, tenant_id: &str) -> Result<Transaction<'static, Any>, StoreError> {
        self.ensure_migrated(tenant_id).await?;
        self.begin_in_schema(&tenant_schema(tenant_id)).await
    }

    fn rows_per_insert(&self) -> usize {
        1_000
    }

    fn anonymous_placeholders(&self) -> bool {
        false
    }

    async fn load_lock(&self, _tenant_id: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        None
    }

    /// Held until the load's transaction ends, across every replica on the server.
    fn load_lock_statement(&self) -> Option<&'static str> {
        Some("SELECT pg_advisory_xact_lock(hashtext($1))")
    }

    fn analyze_keys_statement(&self) -> Option<&'static str> {
        Some("ANALYZE transaction_keys")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use sqlx::{Connection, Executor, PgConnection};

    use super::{tenant_schema, PostgresBackend};
    use crate::backend::Backend;

    /// A database of its own on the test server, dropped at the end of the test.
    async fn fresh_database() -> (String, String) {
        let base = std::env::var("LS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("ledgersync_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&format!("{base}/postgres"))
            .await
            .expect("PostgreSQL must be running on loopback (see .ci/run)");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        (base, name)
    }

    async fn drop_database(base: &str, name: &str) {
        let mut admin = PgConnection::connect(&format!("{base}/postgres"))
            .await
            .unwrap();
        admin
            .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
            .await
            .unwrap();
    }

    async fn rollup_rows(backend: &PostgresBackend, tenant_id: &str) -> i64 {
        let mut tx = backend.begin(tenant_id).await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM month_rollups")
            .fetch_one(&mut *tx)
            .await
            .unwrap()
    }

    /// Provisioning (or first using) a tenant migrates its schema; meanwhile every
    /// other tenant's requests go on. The migration is held up here by another
    /// session creating the same schema and not committing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenant_being_migrated_holds_up_no_other_tenant() {
        sqlx::any::install_default_drivers();
        let (base, name) = fresh_database().await;
        let url = format!("{base}/{name}");
        let backend = Arc::new(PostgresBackend::open(&url).await.unwrap());
        let ready = uuid::Uuid::new_v4().to_string();
        backend.prepare_tenant(&ready).await.unwrap();

        let migrating = uuid::Uuid::new_v4().to_string();
        let mut blocker = PgConnection::connect(&url).await.unwrap();
        blocker.execute("BEGIN").await.unwrap();
        blocker
            .execute(format!("CREATE SCHEMA {}", tenant_schema(&migrating)).as_str())
            .await
            .unwrap();
        let provisioning = tokio::spawn({
            let backend = backend.clone();
            let id = migrating.clone();
            async move { backend.prepare_tenant(&id).await }
        });
        let mut observer = PgConnection::connect(&url).await.unwrap();
        let mut waits = 0;
        while waits == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waits = sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 \
                 AND wait_event_type = 'Lock' AND query LIKE 'CREATE SCHEMA IF NOT EXISTS%'",
            )
            .bind(&name)
            .fetch_one(&mut observer)
            .await
            .unwrap();
        }

        let read =
            tokio::time::timeout(Duration::from_secs(5), rollup_rows(&backend, &ready)).await;
        assert_eq!(
            read.ok(),
            Some(0),
            "a migrated tenant's read waited for another tenant's migration"
        );
        assert!(!provisioning.is_finished());

        blocker.execute("ROLLBACK").await.unwrap();
        provisioning.await.unwrap().unwrap();
        assert_eq!(rollup_rows(&backend, &migrating).await, 0);

        backend.pool.close().await;
        drop(blocker);
        drop(observer);
        drop_database(&base, &name).await;
    }
}
