//! Compaction: small segments of one source and month merged into one, so that a
//! source loading a few rows every minute leaves a bounded number of segments per
//! month rather than one per load.
//!
//! Policy: at the end of each load's commit (in its database transaction, after the
//! aggregates are written), every group of the load's source whose segments span the
//! same months and that the load touched is looked at; when it holds
//! [`COMPACT_AT`] or more segments of fewer than [`SMALL_POSTINGS`] postings, those
//! are merged into one. A merged segment of [`SMALL_POSTINGS`] or more is left alone
//! from then on, and a smaller one is merged again with the next small ones, so a
//! group keeps fewer than [`COMPACT_AT`] small segments and each posting is rewritten
//! a few times at most (each merge multiplies a segment's size by up to
//! [`COMPACT_AT`]). A large load's segments are never small (but perhaps its last),
//! so the CSV import's path is unchanged for large loads.
//!
//! A merged segment belongs to the committing load in the manifest: its transactions
//! are renumbered after that load's own numbers (each small segment's block of
//! numbers shifted whole, so that the key index follows with one noted move per segment),
//! and each posting keeps the load it came from in a [`segments::LOAD`] column
//! (format 2). Replaced transactions are dropped from the merged segment; the live
//! postings, their transactions (each whole in one segment) and so every aggregate
//! are unchanged.
//! Segments of loads with transactions split across segments are left out: their
//! numbers tie segments together.

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;
use sqlx::{Any, Row, Transaction};

use crate::error::{Context, StoreError};
use crate::segments::{self, polars_error, LOAD, TXN};

/// Postings below which a segment is small.
pub(crate) const SMALL_POSTINGS: i64 = 16_384;
/// Small segments of one group that are merged into one.
pub(crate) const COMPACT_AT: usize = 16;

/// A small segment: its id, manifest load, and first load if compacted before.
struct Small {
    id: i64,
    load: i64,
    first_load: Option<i64>,
}

/// Merges the small segments of `source` in the month ranges among `months` that hold
/// [`COMPACT_AT`] or more, into segments of load `load_id`, whose transactions are
/// numbered below `next_txn` so far. Returns how many segments were merged away.
pub(crate) async fn compact(
    tx: &mut Transaction<'static, Any>,
    source: &str,
    load_id: i64,
    next_txn: u32,
    months: &BTreeSet<String>,
) -> Result<u64, StoreError> {
    const LISTING: &str = "listing small segments to compact";
    let split: Option<i64> =
        sqlx::query_scalar("SELECT load_id FROM split_transactions WHERE load_id = $1 LIMIT 1")
            .bind(load_id)
            .fetch_optional(&mut **tx)
            .await
            .context(LISTING)?;
    if split.is_some() {
        // A load large enough to split a transaction has no small segments to speak of.
        return Ok(0);
    }
    let rows = sqlx::query(
        "SELECT id, load_id, first_load, first_month, last_month FROM ledger_segments \
         WHERE source = $1 AND postings < $2 \
         AND load_id NOT IN (SELECT load_id FROM split_transactions) ORDER BY id",
    )
    .bind(source)
    .bind(SMALL_POSTINGS)
    .fetch_all(&mut **tx)
    .await
    .context(LISTING)?;
    let mut groups: BTreeMap<(String, String), Vec<Small>> = BTreeMap::new();
    for row in rows {
        let first: String = row.try_get("first_month").context(LISTING)?;
        let last: String = row.try_get("last_month").context(LISTING)?;
        let touched = months.range(first.clone()..=last.clone()).next().is_some();
        if !touched {
            continue;
        }
        groups.entry((first, last)).or_default().push(Small {
            id: row.try_get("id").context(LISTING)?,
            load: row.try_get("load_id").context(LISTING)?,
            first_load: row.try_get("first_load").context(LISTING)?,
        });
    }
    groups.retain(|_, group| group.len() >= COMPACT_AT);
    if groups.is_empty() {
        return Ok(0);
    }
    // Moves matter only to index entries, which only an indexed source has.
    let indexed = crate::keys::is_indexed(tx, source).await?;
    let mut next_txn = next_txn;
    let mut merged_away = 0;
    for ((first, last), group) in groups {
        let count = group.len() as u64;
        next_txn = merge(tx, source, load_id, next_txn, group, indexed).await?;
        merged_away += count - 1;
        log::debug!("Compacted {count} small segments of {source} for {first} to {last} into one.");
    }
    Ok(merged_away)
}

/// Replaces `group` by one segment of load `load_id`; returns the next free
/// transaction number of that load. Replaced transactions are dropped for good. The
/// moves are noted for the key index if the source is `indexed`.
async fn merge(
    tx: &mut Transaction<'static, Any>,
    source: &str,
    load_id: i64,
    mut next_txn: u32,
    group: Vec<Small>,
    indexed: bool,
) -> Result<u32, StoreError> {
    let failed = polars_error("compacting segments");
    let mut merged: Option<DataFrame> = None;
    let mut first_load = load_id;
    for small in &group {
        first_load = first_load.min(small.first_load.unwrap_or(small.load));
        let stored = segments::read_bytes(tx, small.id).await?;
        let (frame, replaced) =
            segments::blocking("compacting segments", move || stored.decode_all()).await?;
        // A segment's transactions are a block of its load's numbers (none is split
        // across segments here): the block moves whole, shifted after `next_txn`.
        let txns = segments::column::<UInt32Type>(&frame, TXN)?;
        let (Some(first), Some(last)) = (txns.min(), txns.max()) else {
            segments::remove(tx, small.id).await?;
            continue;
        };
        let shift = i64::from(next_txn) - i64::from(first);
        next_txn = next_txn.checked_add(last - first + 1).ok_or_else(|| {
            StoreError::Invalid(format!(
                "load {load_id} has more transactions than segments can number"
            ))
        })?;
        let frame = replaced.remove_from(frame).map_err(&failed)?;
        let frame = relabeled(frame, small.load, shift)?;
        if indexed {
            crate::keys::moved(tx, small.load, (first, last), load_id, shift).await?;
        }
        sqlx::query(
            "DELETE FROM replaced_transactions WHERE load_id = $1 AND txn >= $2 AND txn <= $3",
        )
        .bind(small.load)
        .bind(i64::from(first))
        .bind(i64::from(last))
        .execute(&mut **tx)
        .await
        .context("dropping compacted replaced transactions")?;
        match &mut merged {
            None => merged = Some(frame),
            Some(merged) => {
                merged.vstack_mut_owned(frame).map_err(&failed)?;
            }
        }
        segments::remove(tx, small.id).await?;
    }
    let Some(mut merged) = merged.filter(|merged| merged.height() > 0) else {
        return Ok(next_txn);
    };
    merged.rechunk_mut();
    let encoded = segments::blocking("compacting segments", move || {
        segments::Encoded::new(merged)
    })
    .await?
    .holding_loads_since(first_load);
    segments::insert_encoded(tx, Some((source, load_id)), encoded).await?;
    Ok(next_txn)
}

/// A segment of manifest load `load` with its transactions' numbers moved by `shift`
/// and each posting's load in a [`LOAD`] column, columns in the order every merged
/// frame has.
fn relabeled(mut frame: DataFrame, load: i64, shift: i64) -> Result<DataFrame, StoreError> {
    let failed = polars_error("compacting segments");
    let txns = segments::column::<UInt32Type>(&frame, TXN)?;
    let renumbered: Vec<u32> = txns
        .into_no_null_iter()
        .map(|txn| (i64::from(txn) + shift) as u32)
        .collect();
    frame
        .with_column(UInt32Chunked::from_vec(TXN.into(), renumbered).into_column())
        .map_err(&failed)?;
    if frame.column(LOAD).is_err() {
        let height = frame.height();
        frame
            .with_column(Int64Chunked::full(LOAD.into(), load, height).into_column())
            .map_err(&failed)?;
    }
    let order = std::iter::once(TXN)
        .chain(ledgersync_schemas::posting_column::ALL)
        .chain([LOAD]);
    frame.select(order).map_err(&failed)
}
