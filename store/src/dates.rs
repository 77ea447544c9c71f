//! Keeping transaction dates in the tenant's timezone when that timezone changes.
//!
//! Dates are tenant-local. Postings that kept their source instant (`occurred_at`)
//! are re-dated in the new timezone and the months they leave and enter are
//! recomputed, in the caller's transaction; `ledger_meta.timezone` records the
//! timezone the dates are in, so an interrupted change is completed next time.

use std::collections::{BTreeSet, HashSet};

use chrono::DateTime;
use chrono_tz::Tz;
use polars::prelude::*;
use sqlx::{Any, Executor, Transaction};

use crate::aggregates;
use crate::backend::Backend;
use crate::error::{Context, StoreError};
use crate::segments::{self, polars_error, DATE, MONTH, OCCURRED_AT, TXN};

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
        let mut months = BTreeSet::new();
        for id in segments::ids(tx, "1 = 1", &[]).await? {
            let stored = segments::read(tx, id, None).await?;
            let Some((frame, changed)) = redated(stored.frame, tz, &mut months)? else {
                continue;
            };
            moved += changed;
            segments::rewrite(tx, stored.id, frame).await?;
        }
        if !months.is_empty() {
            aggregates::recompute(backend, tx, Some(&months), None, Default::default()).await?;
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

/// The segment with its postings re-dated in `tz` and the number of transactions
/// that moved, or `None` if none did; adds the months left and entered to `months`.
fn redated(
    mut frame: DataFrame,
    tz: Tz,
    months: &mut BTreeSet<String>,
) -> Result<Option<(DataFrame, u64)>, StoreError> {
    let failed = polars_error("re-dating postings");
    let instants = frame.column(OCCURRED_AT).and_then(|c| c.str().cloned());
    let dates = frame.column(DATE).and_then(|c| c.str().cloned());
    let txns = frame.column(TXN).and_then(|c| c.u32().cloned());
    let (instants, dates, txns) = (
        instants.map_err(&failed)?,
        dates.map_err(&failed)?,
        txns.map_err(&failed)?,
    );
    let mut new_dates: Vec<String> = Vec::with_capacity(frame.height());
    let mut moved = HashSet::new();
    for ((instant, date), txn) in instants
        .iter()
        .zip(dates.iter())
        .zip(txns.into_no_null_iter())
    {
        let date = date.unwrap_or_default();
        let Some(instant) = instant else {
            new_dates.push(date.to_string());
            continue;
        };
        let local = DateTime::parse_from_rfc3339(instant)
            .map_err(|e| StoreError::Invalid(format!("stored instant '{instant}': {e}")))?
            .with_timezone(&tz)
            .date_naive()
            .to_string();
        if local != date {
            months.insert(date[..7.min(date.len())].to_string());
            months.insert(local[..7].to_string());
            moved.insert(txn);
        }
        new_dates.push(local);
    }
    if moved.is_empty() {
        return Ok(None);
    }
    let new_months: Vec<&str> = new_dates.iter().map(|d| &d[..7]).collect();
    frame
        .with_column(Column::new(MONTH.into(), new_months))
        .map_err(&failed)?;
    frame
        .with_column(Column::new(DATE.into(), &new_dates))
        .map_err(&failed)?;
    Ok(Some((frame, moved.len() as u64)))
}
