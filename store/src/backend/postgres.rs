//! Shared-server backend: control tables in the `ledgersync` schema and one schema
//! per tenant (`tenant_<id>`), the isolation boundary and the unit Citus
//! schema-based sharding distributes.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::Mutex;

use super::Backend;
use crate::error::{Context, StoreError};

static CONTROL: Migrator = sqlx::migrate!("./migrations/postgres/control");
static TENANT: Migrator = sqlx::migrate!("./migrations/postgres/tenant");

const CONTROL_SCHEMA: &str = "ledgersync";

pub(crate) struct PostgresBackend {
    pool: AnyPool,
    migrated: Mutex<HashSet<String>>,
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
            migrated: Mutex::new(HashSet::new()),
        })
    }

    async fn migrate_tenant(&self, tenant_id: &str) -> Result<(), StoreError> {
        let mut migrated = self.migrated.lock().await;
        if migrated.contains(tenant_id) {
            return Ok(());
        }
        let schema = tenant_schema(tenant_id);
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("acquiring a connection")?;
        conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
            .await
            .context("creating a tenant schema")?;
        conn.execute(format!("SET search_path TO {schema}").as_str())
            .await
            .context("selecting a tenant schema")?;
        let outcome = TENANT.run_direct(&mut *conn).await;
        conn.execute(format!("SET search_path TO {CONTROL_SCHEMA}").as_str())
            .await
            .context("restoring the search path")?;
        outcome.map_err(|source| StoreError::Migrate {
            what: format!("tenant {tenant_id}"),
            source,
        })?;
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning a tenant transaction")?;
        tx.execute(format!("SET LOCAL search_path TO {schema}").as_str())
            .await
            .context("selecting a tenant schema")?;
        crate::legacy::adopt_row_postings(&mut tx).await?;
        tx.commit().await.context("committing moved postings")?;
        migrated.insert(tenant_id.to_string());
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
        self.migrate_tenant(tenant_id).await
    }

    async fn begin(&self, tenant_id: &str) -> Result<Transaction<'static, Any>, StoreError> {
        self.migrate_tenant(tenant_id).await?;
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning a tenant transaction")?;
        // LOCAL: the connection goes back to the pool pointing at the control schema.
        tx.execute(format!("SET LOCAL search_path TO {}", tenant_schema(tenant_id)).as_str())
            .await
            .context("selecting a tenant schema")?;
        Ok(tx)
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
}
