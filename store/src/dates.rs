//! Keeping transaction dates in the tenant's timezone when that timezone changes.
//!
//! Dates are tenant-local. Postings that kept their source instant (`occurred_at`)
//! are re-dated in the new timezone and the months they leave and enter are
//! recomputed, in the caller's transaction; `ledger_meta.timezone` records the
//! timezone the dates are in, so an interrupted change is completed next time.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use chrono_tz::Tz;
use polars::prelude::*;
use sqlx::{Any, Executor, Transaction};

use crate::aggregates;
use crate::backend::Backend;
use crate::error::{Context, StoreError};
use crate::segments::{self, DATE, OCCURRED_AT, TXN};

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
    // A transaction a load wrote to several segments moves in each of them: counted
    // once, by its load and number.
    let mut moved: HashSet<(i64, u32)> = HashSet::new();
    // A ledger without a recorded timezone was dated in the current one.
    if current.is_some() {
        let ids = segments::ids(tx, "1 = 1", &[]).await?;
        let split = aggregates::split_transactions(tx).await?;
        // A transaction a load wrote to several segments is dated by its first
        // instant over all of them.
        let mut first_of_split: HashMap<(i64, u32), DateTime<FixedOffset>> = HashMap::new();
        if !split.is_empty() {
            for &id in &ids {
                let stored = segments::read_bytes(tx, id).await?;
                let load_id = stored.load_id;
                let Some(numbers) = split.get(&load_id).cloned() else {
                    continue;
                };
                let firsts = segments::blocking("re-dating postings", move || {
                    let frame = stored.decode(Some(&[TXN, OCCURRED_AT]))?;
                    Ok(first_instants(&frame, |txn| numbers.contains(&txn)))
                })
                .await?
                .map_err(StoreError::Invalid)?;
                for (txn, instant) in firsts {
                    let first = first_of_split.entry((load_id, txn)).or_insert(instant);
                    *first = (*first).min(instant);
                }
            }
        }
        let first_of_split = Arc::new(first_of_split);
        let mut months = BTreeSet::new();
        for id in ids {
            let stored = segments::read_bytes(tx, id).await?;
            let load_id = stored.load_id;
            let split = first_of_split.clone();
            // Replaced transactions' rows are re-dated too and stay stored (their
            // entries in `replaced_transactions` count them), but are not counted.
            let outcome = segments::blocking("re-dating postings", move || {
                let (frame, replaced) = stored.decode_all()?;
                let outcome = redated(frame, tz, |txn| split.get(&(load_id, txn)).copied())?;
                Ok((outcome, replaced))
            })
            .await?;
            let (outcome, replaced) = outcome;
            let Some((frame, changed, touched)) = outcome.map_err(StoreError::Invalid)? else {
                continue;
            };
            moved.extend(
                changed
                    .into_iter()
                    .filter(|&txn| !replaced.contains(txn))
                    .map(|txn| (load_id, txn)),
            );
            months.extend(touched);
            segments::rewrite(tx, id, frame).await?;
        }
        if !months.is_empty() {
            aggregates::recompute(backend, tx, Some(&months), None, Default::default(), None)
                .await?;
            // The key index holds each transaction's date: built again when next needed.
            crate::keys::forget(tx, None).await?;
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
    Ok(moved.len() as u64)
}

type Redated = Option<(DataFrame, HashSet<u32>, BTreeSet<String>)>;

/// Each transaction's first source instant in `frame`, of those `wanted`.
fn first_instants(
    frame: &DataFrame,
    wanted: impl Fn(u32) -> bool,
) -> Result<HashMap<u32, DateTime<FixedOffset>>, String> {
    let failed = |e: PolarsError| e.to_string();
    let instants = frame
        .column(OCCURRED_AT)
        .and_then(|c| c.str())
        .map_err(failed)?;
    let txns = frame.column(TXN).and_then(|c| c.u32()).map_err(failed)?;
    let mut firsts: HashMap<u32, DateTime<FixedOffset>> = HashMap::new();
    for (instant, txn) in instants.iter().zip(txns.into_no_null_iter()) {
        let Some(instant) = instant.filter(|_| wanted(txn)) else {
            continue;
        };
        let instant = DateTime::parse_from_rfc3339(instant)
            .map_err(|e| format!("stored instant '{instant}': {e}"))?;
        let first = firsts.entry(txn).or_insert(instant);
        *first = (*first).min(instant);
    }
    Ok(firsts)
}

/// The segment with its postings re-dated in `tz` (each transaction by its first
/// instant, `split_first` giving it for transactions split across segments), the
/// numbers of the transactions that moved and the months they left and entered;
/// `None` if none moved.
fn redated(
    mut frame: DataFrame,
    tz: Tz,
    split_first: impl Fn(u32) -> Option<DateTime<FixedOffset>>,
) -> PolarsResult<Result<Redated, String>> {
    let mut firsts = match first_instants(&frame, |_| true) {
        Ok(firsts) => firsts,
        Err(problem) => return Ok(Err(problem)),
    };
    for (txn, first) in firsts.iter_mut() {
        if let Some(other) = split_first(*txn) {
            *first = (*first).min(other);
        }
    }
    let dates = frame.column(DATE)?.date()?.physical().clone();
    let txns = frame.column(TXN)?.u32()?.clone();
    let mut new_dates: Vec<i32> = Vec::with_capacity(frame.height());
    let mut moved = HashSet::new();
    let mut months = BTreeSet::new();
    for (date, txn) in dates.iter().zip(txns.into_no_null_iter()) {
        let date = date.unwrap_or_default();
        let Some(first) = firsts.get(&txn) else {
            new_dates.push(date);
            continue;
        };
        let local = first.with_timezone(&tz).date_naive().to_epoch_days();
        if local != date {
            months.extend(segments::month_of(date));
            months.extend(segments::month_of(local));
            moved.insert(txn);
        }
        new_dates.push(local);
    }
    if moved.is_empty() {
        return Ok(Ok(None));
    }
    frame.with_column(
        Int32Chunked::from_vec(DATE.into(), new_dates)
            .into_date()
            .into_column(),
    )?;
    Ok(Ok(Some((frame, moved, months))))
}
