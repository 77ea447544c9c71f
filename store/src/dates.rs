//! Keeping transaction dates in the tenant's timezone when that timezone changes.
//!
//! Dates are tenant-local. Transactions that kept their source instant
//! (`occurred_at`) are re-dated in the new timezone and the buckets they leave and
//! enter are recomputed, in the caller's transaction; `ledger_meta.timezone` records
//! the timezone the dates are in, so an interrupted change is completed next time.

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;
use sqlx::{Any, Executor, Row, Transaction};

use crate::aggregates;
use crate::backend::Backend;
use crate::error::{Context, StoreError};
use crate::ledger::drop_temp;

/// Re-dates the ledger into `timezone` if its dates are in another one; returns the
/// number of transactions whose date changed.
pub(crate) async fn align(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    timezone: &str,
) -> Result<u64, StoreError> {
    let current: Option<String> =
        sqlx::query_scalar("SELECT value FROM ledger_meta WHERE key = 'timezone'")
            .fetch_optional(&mut **tx)
            .await
            .context("reading the ledger's timezone")?;
    if current.as_deref() == Some(timezone) {
        return Ok(0);
    }
    let tz: Tz = timezone
        .parse()
        .map_err(|_| StoreError::Invalid(format!("'{timezone}' is not an IANA timezone")))?;
    let mut moved = 0u64;
    // A ledger without a recorded timezone was dated in the current one.
    if current.is_some() {
        let rows = sqlx::query(
            "SELECT id, date, branch, occurred_at FROM transactions WHERE occurred_at IS NOT NULL",
        )
        .fetch_all(&mut **tx)
        .await
        .context("reading source instants")?;
        let mut changes = Vec::new();
        for row in rows {
            let id: i64 = row.try_get("id").context("reading source instants")?;
            let date: String = row.try_get("date").context("reading source instants")?;
            let branch: String = row.try_get("branch").context("reading source instants")?;
            let instant: String = row
                .try_get("occurred_at")
                .context("reading source instants")?;
            let instant = DateTime::parse_from_rfc3339(&instant)
                .map_err(|e| StoreError::Invalid(format!("stored instant '{instant}': {e}")))?;
            let local: NaiveDate = instant.with_timezone(&tz).date_naive();
            let local = local.to_string();
            if local != date {
                changes.push((id, date, local, branch));
            }
        }
        if !changes.is_empty() {
            aggregates::create_touched(backend, tx).await?;
            for (id, old, new, branch) in &changes {
                for day in [old, new] {
                    sqlx::query("INSERT INTO touched (month, branch) VALUES ($1, $2)")
                        .bind(&day[..7])
                        .bind(branch)
                        .execute(&mut **tx)
                        .await
                        .context("noting re-dated buckets")?;
                }
                sqlx::query("UPDATE transactions SET date = $1, month = $2 WHERE id = $3")
                    .bind(new)
                    .bind(&new[..7])
                    .bind(id)
                    .execute(&mut **tx)
                    .await
                    .context("re-dating a transaction")?;
            }
            aggregates::recompute(backend, tx).await?;
            drop_temp(backend, tx, &["touched"]).await?;
            moved = changes.len() as u64;
        }
    }
    tx.execute(
        sqlx::query(
            "INSERT INTO ledger_meta (key, value) VALUES ('timezone', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(timezone),
    )
    .await
    .context("recording the ledger's timezone")?;
    Ok(moved)
}
