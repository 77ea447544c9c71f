//! Database connectors in the control database or schema: their definitions and
//! sealed credentials, each tenant's wrapped data key, the lease that lets one
//! daemon at a time run a connector, and the record of every run. The store never
//! sees a plaintext password: sealing and unsealing happen in the daemon.

use async_trait::async_trait;
use serde::Serialize;
use sqlx::Row;

use crate::control::{now, SqlStore};
use crate::error::{Context, StoreError};

/// A connector as stored. `secret` is sealed text, shown to no one.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredConnector {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub kind: String,
    /// The definition as JSON, without the password.
    pub spec: String,
    pub secret: String,
    pub paused_at: Option<String>,
    pub pause_reason: Option<String>,
    /// Failed runs in a row.
    pub failures: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl std::fmt::Debug for StoredConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredConnector")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("paused_at", &self.paused_at)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// A tenant's data key, wrapped by the master key `master_key_id` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDataKey {
    pub tenant_id: String,
    pub master_key_id: String,
    pub wrapped: String,
}

/// One run of a connector's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SyncRun {
    pub id: i64,
    pub connector: String,
    pub stream: String,
    /// `schedule` or `manual`.
    pub trigger: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    pub rows_read: i64,
    /// Size of the rows read, as text columns in memory.
    pub bytes_read: i64,
    pub rows_written: i64,
    pub rows_rejected: i64,
    /// Transactions removed because the source no longer has them.
    pub rows_removed: i64,
    /// Sum of the absolute amounts committed, as a decimal.
    pub control_sum: ledgersync_schemas::Amount,
    pub cursor_before: Option<String>,
    pub cursor_after: Option<String>,
    pub error: Option<String>,
}

/// What a finished run read and wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub rows_read: i64,
    /// Size of the rows read, as text columns in memory.
    pub bytes_read: i64,
    pub rows_written: i64,
    pub rows_rejected: i64,
    /// Transactions removed because the source no longer has them.
    pub removed: i64,
    pub control_sum: ledgersync_schemas::Amount,
    pub cursor_after: Option<String>,
}

#[async_trait]
pub trait ConnectorStore: Send + Sync {
    /// The tenant's wrapped data key, if it has one.
    async fn data_key(&self, tenant_id: &str) -> Result<Option<StoredDataKey>, StoreError>;
    /// Stores a tenant's first data key; when another process stored one first,
    /// returns that one instead (callers use what comes back).
    async fn put_data_key(&self, key: &StoredDataKey) -> Result<StoredDataKey, StoreError>;
    async fn data_keys(&self) -> Result<Vec<StoredDataKey>, StoreError>;
    /// Replaces wrapped data keys in one transaction (master key rotation): each
    /// pair is a key as read and the same key wrapped anew; a key no longer as read
    /// (rotated meanwhile) is left alone. Returns how many were replaced.
    async fn rewrap_data_keys(
        &self,
        keys: &[(StoredDataKey, StoredDataKey)],
    ) -> Result<u64, StoreError>;
    /// Whether any connector holds a sealed credential.
    async fn has_sealed_credentials(&self) -> Result<bool, StoreError>;

    /// Adds a connector; a name the tenant already uses is a conflict.
    async fn create_connector(
        &self,
        connector: &StoredConnector,
    ) -> Result<StoredConnector, StoreError>;
    async fn connector(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<StoredConnector>, StoreError>;
    async fn connectors(&self, tenant_id: &str) -> Result<Vec<StoredConnector>, StoreError>;
    /// Every tenant's connectors (the scheduler's list).
    async fn all_connectors(&self) -> Result<Vec<StoredConnector>, StoreError>;
    /// Pauses (with a reason) or resumes (`None`) a connector; resuming clears its
    /// failure count.
    async fn set_connector_paused(
        &self,
        tenant_id: &str,
        name: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;
    async fn remove_connector(&self, tenant_id: &str, name: &str) -> Result<(), StoreError>;

    /// Takes (or renews) the connector's lease for `holder` until `until_ms`, unless
    /// another holder's lease is still live at `now_ms`. With a scheduled `tick`
    /// (seconds since the epoch), also unless that tick was already claimed: of
    /// several daemons firing one tick, one runs it. True when `holder` holds it.
    async fn acquire_lease(
        &self,
        connector_id: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
        tick: Option<i64>,
    ) -> Result<bool, StoreError>;
    async fn release_lease(&self, connector_id: &str, holder: &str) -> Result<(), StoreError>;

    /// Records a run as started and returns its id.
    async fn start_run(
        &self,
        connector: &StoredConnector,
        stream: &str,
        trigger: &str,
        cursor_before: Option<&str>,
    ) -> Result<i64, StoreError>;
    /// Records how a run ended (`error` None for success) and counts the
    /// connector's failures in a row; returns that count.
    async fn finish_run(
        &self,
        connector: &StoredConnector,
        run_id: i64,
        totals: &RunTotals,
        error: Option<&str>,
    ) -> Result<i64, StoreError>;
    /// Newest first; of one connector if `connector` is given.
    async fn sync_runs(
        &self,
        tenant_id: &str,
        connector: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SyncRun>, StoreError>;
}

const CONNECTOR_COLUMNS: &str = "id, tenant_id, name, kind, spec, secret, paused_at, \
     pause_reason, failures, created_at, updated_at";

fn connector_from_row(row: &sqlx::any::AnyRow) -> Result<StoredConnector, StoreError> {
    const READING: &str = "reading a connector";
    Ok(StoredConnector {
        id: row.try_get("id").context(READING)?,
        tenant_id: row.try_get("tenant_id").context(READING)?,
        name: row.try_get("name").context(READING)?,
        kind: row.try_get("kind").context(READING)?,
        spec: row.try_get("spec").context(READING)?,
        secret: row.try_get("secret").context(READING)?,
        paused_at: row.try_get("paused_at").context(READING)?,
        pause_reason: row.try_get("pause_reason").context(READING)?,
        failures: row.try_get("failures").context(READING)?,
        created_at: row.try_get("created_at").context(READING)?,
        updated_at: row.try_get("updated_at").context(READING)?,
    })
}

fn data_key_from_row(row: &sqlx::any::AnyRow) -> Result<StoredDataKey, StoreError> {
    const READING: &str = "reading a data key";
    Ok(StoredDataKey {
        tenant_id: row.try_get("tenant_id").context(READING)?,
        master_key_id: row.try_get("master_key_id").context(READING)?,
        wrapped: row.try_get("wrapped").context(READING)?,
    })
}

fn run_from_row(row: &sqlx::any::AnyRow) -> Result<SyncRun, StoreError> {
    const READING: &str = "reading a sync run";
    Ok(SyncRun {
        id: row.try_get("id").context(READING)?,
        connector: row.try_get("connector").context(READING)?,
        stream: row.try_get("stream").context(READING)?,
        trigger: row.try_get("trigger_kind").context(READING)?,
        started_at: row.try_get("started_at").context(READING)?,
        ended_at: row.try_get("ended_at").context(READING)?,
        status: row.try_get("status").context(READING)?,
        rows_read: row.try_get("rows_read").context(READING)?,
        bytes_read: row.try_get("bytes_read").context(READING)?,
        rows_written: row.try_get("rows_written").context(READING)?,
        rows_rejected: row.try_get("rows_rejected").context(READING)?,
        rows_removed: row.try_get("rows_removed").context(READING)?,
        control_sum: ledgersync_schemas::Amount::from_units(
            row.try_get("control_sum").context(READING)?,
        ),
        cursor_before: row.try_get("cursor_before").context(READING)?,
        cursor_after: row.try_get("cursor_after").context(READING)?,
        error: row.try_get("error").context(READING)?,
    })
}

/// Characters of a run's error kept in its record.
const RUN_ERROR_CHARS: usize = 2000;

#[async_trait]
impl ConnectorStore for SqlStore {
    async fn data_key(&self, tenant_id: &str) -> Result<Option<StoredDataKey>, StoreError> {
        let row = sqlx::query(
            "SELECT tenant_id, master_key_id, wrapped FROM tenant_data_keys WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(self.backend.control())
        .await
        .context("reading a data key")?;
        row.as_ref().map(data_key_from_row).transpose()
    }

    async fn put_data_key(&self, key: &StoredDataKey) -> Result<StoredDataKey, StoreError> {
        sqlx::query(
            "INSERT INTO tenant_data_keys (tenant_id, master_key_id, wrapped, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(&key.tenant_id)
        .bind(&key.master_key_id)
        .bind(&key.wrapped)
        .bind(now())
        .execute(self.backend.control())
        .await
        .context("storing a data key")?;
        self.data_key(&key.tenant_id)
            .await?
            .ok_or_else(|| StoreError::Invalid("a data key just stored is missing".into()))
    }

    async fn data_keys(&self) -> Result<Vec<StoredDataKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, master_key_id, wrapped FROM tenant_data_keys ORDER BY tenant_id",
        )
        .fetch_all(self.backend.control())
        .await
        .context("reading data keys")?;
        rows.iter().map(data_key_from_row).collect()
    }

    async fn rewrap_data_keys(
        &self,
        keys: &[(StoredDataKey, StoredDataKey)],
    ) -> Result<u64, StoreError> {
        let mut tx = self.backend.begin_control_write(None).await?;
        let at = now();
        let mut changed = 0;
        for (old, new) in keys {
            changed += sqlx::query(
                "UPDATE tenant_data_keys SET master_key_id = $1, wrapped = $2, rotated_at = $3 \
                 WHERE tenant_id = $4 AND master_key_id = $5 AND wrapped = $6",
            )
            .bind(&new.master_key_id)
            .bind(&new.wrapped)
            .bind(&at)
            .bind(&old.tenant_id)
            .bind(&old.master_key_id)
            .bind(&old.wrapped)
            .execute(&mut *tx)
            .await
            .context("rewrapping a data key")?
            .rows_affected();
        }
        tx.commit()
            .await
            .context("committing rewrapped data keys")?;
        Ok(changed)
    }

    async fn has_sealed_credentials(&self) -> Result<bool, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM connectors")
            .fetch_one(self.backend.control())
            .await
            .context("counting connectors")?;
        Ok(count > 0)
    }

    async fn create_connector(
        &self,
        connector: &StoredConnector,
    ) -> Result<StoredConnector, StoreError> {
        let at = now();
        let inserted = sqlx::query(
            "INSERT INTO connectors (id, tenant_id, name, kind, spec, secret, failures, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7)",
        )
        .bind(&connector.id)
        .bind(&connector.tenant_id)
        .bind(&connector.name)
        .bind(&connector.kind)
        .bind(&connector.spec)
        .bind(&connector.secret)
        .bind(&at)
        .execute(self.backend.control())
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "the tenant already has a connector named '{}'; remove it first or choose another name",
                    connector.name
                )))
            }
            Err(e) => {
                return Err(StoreError::Database {
                    context: "adding a connector",
                    source: e,
                })
            }
        }
        self.connector(&connector.tenant_id, &connector.name)
            .await?
            .ok_or_else(|| StoreError::Invalid("a connector just added is missing".into()))
    }

    async fn connector(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<StoredConnector>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(self.backend.control())
        .await
        .context("reading a connector")?;
        row.as_ref().map(connector_from_row).transpose()
    }

    async fn connectors(&self, tenant_id: &str) -> Result<Vec<StoredConnector>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(tenant_id)
        .fetch_all(self.backend.control())
        .await
        .context("listing connectors")?;
        rows.iter().map(connector_from_row).collect()
    }

    async fn all_connectors(&self) -> Result<Vec<StoredConnector>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONNECTOR_COLUMNS} FROM connectors ORDER BY tenant_id, name"
        ))
        .fetch_all(self.backend.control())
        .await
        .context("listing connectors")?;
        rows.iter().map(connector_from_row).collect()
    }

    async fn set_connector_paused(
        &self,
        tenant_id: &str,
        name: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let at = now();
        let changed = match reason {
            Some(reason) => sqlx::query(
                "UPDATE connectors SET paused_at = $1, pause_reason = $2, updated_at = $1 \
                 WHERE tenant_id = $3 AND name = $4",
            )
            .bind(&at)
            .bind(reason)
            .bind(tenant_id)
            .bind(name),
            None => sqlx::query(
                "UPDATE connectors SET paused_at = NULL, pause_reason = NULL, failures = 0, \
                 updated_at = $1 WHERE tenant_id = $2 AND name = $3",
            )
            .bind(&at)
            .bind(tenant_id)
            .bind(name),
        }
        .execute(self.backend.control())
        .await
        .context("pausing or resuming a connector")?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(format!("no connector named '{name}'")));
        }
        Ok(())
    }

    async fn remove_connector(&self, tenant_id: &str, name: &str) -> Result<(), StoreError> {
        let changed = sqlx::query("DELETE FROM connectors WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(self.backend.control())
            .await
            .context("removing a connector")?
            .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(format!("no connector named '{name}'")));
        }
        Ok(())
    }

    async fn acquire_lease(
        &self,
        connector_id: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
        tick: Option<i64>,
    ) -> Result<bool, StoreError> {
        // One conditional UPDATE: of several daemons asking at once, the database
        // lets exactly one take a free or expired lease (and an unclaimed tick).
        let taken = match tick {
            None => sqlx::query(
                "UPDATE connectors SET lease_holder = $1, lease_until = $2 \
                 WHERE id = $3 AND (lease_holder IS NULL OR lease_holder = $1 OR lease_until < $4)",
            )
            .bind(holder)
            .bind(until_ms)
            .bind(connector_id)
            .bind(now_ms),
            Some(tick) => sqlx::query(
                "UPDATE connectors SET lease_holder = $1, lease_until = $2, last_tick = $5 \
                 WHERE id = $3 AND (lease_holder IS NULL OR lease_holder = $1 OR lease_until < $4) \
                 AND (last_tick IS NULL OR last_tick < $5)",
            )
            .bind(holder)
            .bind(until_ms)
            .bind(connector_id)
            .bind(now_ms)
            .bind(tick),
        }
        .execute(self.backend.control())
        .await
        .context("taking a connector's lease")?
        .rows_affected();
        Ok(taken == 1)
    }

    async fn release_lease(&self, connector_id: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connectors SET lease_holder = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_holder = $2",
        )
        .bind(connector_id)
        .bind(holder)
        .execute(self.backend.control())
        .await
        .context("releasing a connector's lease")?;
        Ok(())
    }

    async fn start_run(
        &self,
        connector: &StoredConnector,
        stream: &str,
        trigger: &str,
        cursor_before: Option<&str>,
    ) -> Result<i64, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO sync_runs (tenant_id, connector_id, connector, stream, trigger_kind, \
             started_at, status, cursor_before) VALUES ($1, $2, $3, $4, $5, $6, 'running', $7) \
             RETURNING id",
        )
        .bind(&connector.tenant_id)
        .bind(&connector.id)
        .bind(&connector.name)
        .bind(stream)
        .bind(trigger)
        .bind(now())
        .bind(cursor_before)
        .fetch_one(self.backend.control())
        .await
        .context("recording a sync run")?;
        Ok(id)
    }

    async fn finish_run(
        &self,
        connector: &StoredConnector,
        run_id: i64,
        totals: &RunTotals,
        error: Option<&str>,
    ) -> Result<i64, StoreError> {
        let mut tx = self
            .backend
            .begin_control_write(Some(&connector.tenant_id))
            .await?;
        let error = error.map(|e| ledgersync_schemas::bounded(e, RUN_ERROR_CHARS));
        sqlx::query(
            "UPDATE sync_runs SET ended_at = $1, status = $2, rows_read = $3, rows_written = $4, \
             rows_rejected = $5, control_sum = $6, cursor_after = $7, error = $8, \
             rows_removed = $10, bytes_read = $11 WHERE id = $9",
        )
        .bind(now())
        .bind(if error.is_some() {
            "failed"
        } else {
            "succeeded"
        })
        .bind(totals.rows_read)
        .bind(totals.rows_written)
        .bind(totals.rows_rejected)
        .bind(totals.control_sum.units())
        .bind(totals.cursor_after.as_deref())
        .bind(error.as_deref())
        .bind(run_id)
        .bind(totals.removed)
        .bind(totals.bytes_read)
        .execute(&mut *tx)
        .await
        .context("recording the end of a sync run")?;
        let update = if error.is_some() {
            "UPDATE connectors SET failures = failures + 1 WHERE id = $1"
        } else {
            "UPDATE connectors SET failures = 0 WHERE id = $1"
        };
        sqlx::query(update)
            .bind(&connector.id)
            .execute(&mut *tx)
            .await
            .context("counting a connector's failures")?;
        let failures: Option<i64> =
            sqlx::query_scalar("SELECT failures FROM connectors WHERE id = $1")
                .bind(&connector.id)
                .fetch_optional(&mut *tx)
                .await
                .context("counting a connector's failures")?;
        tx.commit().await.context("committing a sync run")?;
        Ok(failures.unwrap_or(0))
    }

    async fn sync_runs(
        &self,
        tenant_id: &str,
        connector: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SyncRun>, StoreError> {
        const COLUMNS: &str = "id, connector, stream, trigger_kind, started_at, ended_at, \
             status, rows_read, bytes_read, rows_written, rows_rejected, rows_removed, control_sum, cursor_before, \
             cursor_after, error";
        let sql = match connector {
            Some(_) => format!(
                "SELECT {COLUMNS} FROM sync_runs WHERE tenant_id = $1 AND connector = $2 \
                 ORDER BY id DESC LIMIT $3"
            ),
            None => format!(
                "SELECT {COLUMNS} FROM sync_runs WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2"
            ),
        };
        let mut query = sqlx::query(&sql).bind(tenant_id);
        if let Some(name) = connector {
            query = query.bind(name);
        }
        let query = query.bind(limit);
        let rows = query
            .fetch_all(self.backend.control())
            .await
            .context("reading sync runs")?;
        rows.iter().map(run_from_row).collect()
    }
}
