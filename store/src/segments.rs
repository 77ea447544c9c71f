//! Postings are kept columnar. A segment is a batch of one load's postings as an
//! Arrow IPC file (LZ4) in `ledger_segments.data`, beside its source, load and month
//! range; it commits in the same database transaction as the load's record, cursor
//! and aggregates. Aggregation and rebuilds decode only the columns they need and
//! let polars do the arithmetic, instead of walking one B-tree row per posting.
//!
//! Transactions are numbered within their load (`txn`); `(load_id, txn)` identifies a
//! transaction across segments, `key` is the source's own key.

use std::io::Cursor;

use ledgersync_schemas::Posting;
use polars::prelude::*;
use polars_io::ipc::{IpcCompression, IpcReader, IpcWriter};
use polars_io::{SerReader, SerWriter};
use sqlx::{Any, Row, Transaction};

use crate::error::{Context, StoreError};

pub(crate) const TXN: &str = "txn";
pub(crate) const KEY: &str = "key";
pub(crate) const DATE: &str = "date";
pub(crate) const MONTH: &str = "month";
pub(crate) const BRANCH: &str = "branch";
pub(crate) const MEMO: &str = "memo";
pub(crate) const OCCURRED_AT: &str = "occurred_at";
pub(crate) const ACCOUNT: &str = "account";
pub(crate) const AMOUNT: &str = "amount";
pub(crate) const CURRENCY: &str = "currency";
pub(crate) const ORIGINAL_AMOUNT: &str = "original_amount";
/// The source line (or row) a posting came from, for error reports.
pub(crate) const LINE: &str = "line";

/// The columns aggregation reads.
pub(crate) const AGGREGATED: [&str; 5] = [TXN, MONTH, BRANCH, ACCOUNT, AMOUNT];

pub(crate) fn polars_error(context: &'static str) -> impl Fn(PolarsError) -> StoreError {
    move |e| StoreError::Invalid(format!("{context}: {e}"))
}

/// Runs polars work on a blocking thread: lazy queries block their thread (on
/// tokio's `block_in_place`, which a current-thread runtime refuses), and long ones
/// must not hold an async worker.
pub(crate) async fn blocking<T: Send + 'static>(
    context: &'static str,
    work: impl FnOnce() -> PolarsResult<T> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Invalid(format!("{context}: {e}")))?
        .map_err(polars_error(context))
}

/// The frame of a batch of postings, `txns` numbering their transactions.
pub(crate) fn frame(postings: &[Posting], txns: Vec<u32>) -> PolarsResult<DataFrame> {
    let dates: Vec<String> = postings.iter().map(|p| p.date.to_string()).collect();
    let months: Vec<&str> = dates.iter().map(|d| &d[..7]).collect();
    let texts = |pick: fn(&Posting) -> &str| postings.iter().map(pick).collect::<Vec<&str>>();
    DataFrame::new(
        postings.len(),
        vec![
            Column::new(TXN.into(), txns),
            Column::new(KEY.into(), texts(|p| &p.source_key)),
            Column::new(MONTH.into(), months),
            Column::new(DATE.into(), &dates),
            Column::new(BRANCH.into(), texts(|p| &p.branch)),
            Column::new(MEMO.into(), texts(|p| &p.memo)),
            Column::new(
                OCCURRED_AT.into(),
                postings
                    .iter()
                    .map(|p| p.occurred_at.as_deref())
                    .collect::<Vec<_>>(),
            ),
            Column::new(ACCOUNT.into(), texts(|p| &p.account)),
            Column::new(
                AMOUNT.into(),
                postings
                    .iter()
                    .map(|p| p.amount.units())
                    .collect::<Vec<_>>(),
            ),
            Column::new(CURRENCY.into(), texts(|p| &p.currency)),
            Column::new(
                ORIGINAL_AMOUNT.into(),
                postings
                    .iter()
                    .map(|p| p.original_amount.units())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                LINE.into(),
                postings.iter().map(|p| p.origin_line).collect::<Vec<_>>(),
            ),
        ],
    )
}

pub(crate) fn encode(frame: &mut DataFrame) -> PolarsResult<Vec<u8>> {
    let mut bytes = Vec::new();
    IpcWriter::new(&mut bytes)
        .with_compression(Some(IpcCompression::LZ4))
        // polars' own string layout, written as is rather than converted.
        .with_compat_level(CompatLevel::newest())
        .finish(frame)?;
    Ok(bytes)
}

/// Decodes a segment, only `columns` if given.
pub(crate) fn decode(bytes: Vec<u8>, columns: Option<&[&str]>) -> PolarsResult<DataFrame> {
    IpcReader::new(Cursor::new(bytes))
        .with_columns(columns.map(|c| c.iter().map(|s| s.to_string()).collect()))
        .finish()
}

/// First and last month of a segment's postings.
pub(crate) fn month_range(frame: &DataFrame) -> PolarsResult<(String, String)> {
    let months = frame.column(MONTH)?.str()?;
    let first = months.iter().flatten().min().unwrap_or_default();
    let last = months.iter().flatten().max().unwrap_or_default();
    Ok((first.to_string(), last.to_string()))
}

/// Month range, rows and encoding of a segment.
async fn encoded(mut frame: DataFrame) -> Result<(String, String, i64, Vec<u8>), StoreError> {
    blocking("encoding postings", move || {
        let (first, last) = month_range(&frame)?;
        let rows = frame.height() as i64;
        encode(&mut frame).map(|bytes| (first, last, rows, bytes))
    })
    .await
}

/// Stores a segment; `load` is `None` while its load is being committed.
pub(crate) async fn insert(
    tx: &mut Transaction<'static, Any>,
    load: Option<(&str, i64)>,
    frame: DataFrame,
) -> Result<(), StoreError> {
    let (first, last, rows, bytes) = encoded(frame).await?;
    sqlx::query(
        "INSERT INTO ledger_segments (source, load_id, first_month, last_month, postings, data) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(load.map(|(source, _)| source))
    .bind(load.map(|(_, id)| id))
    .bind(first)
    .bind(last)
    .bind(rows)
    .bind(bytes)
    .execute(&mut **tx)
    .await
    .context("writing postings")?;
    Ok(())
}

/// Replaces a segment's postings, or removes it when none are left.
pub(crate) async fn rewrite(
    tx: &mut Transaction<'static, Any>,
    id: i64,
    frame: DataFrame,
) -> Result<(), StoreError> {
    if frame.height() == 0 {
        sqlx::query("DELETE FROM ledger_segments WHERE id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await
            .context("removing emptied postings")?;
        return Ok(());
    }
    let (first, last, rows, bytes) = encoded(frame).await?;
    sqlx::query(
        "UPDATE ledger_segments SET first_month = $1, last_month = $2, postings = $3, data = $4 \
         WHERE id = $5",
    )
    .bind(first)
    .bind(last)
    .bind(rows)
    .bind(bytes)
    .bind(id)
    .execute(&mut **tx)
    .await
    .context("rewriting postings")?;
    Ok(())
}

/// Ids of the segments matching `filter`, an SQL condition over `ledger_segments`
/// with `$1`, `$2`… bound to `values`. Callers then [`read`] one at a time, so memory holds
/// one segment, not all.
pub(crate) async fn ids(
    tx: &mut Transaction<'static, Any>,
    filter: &str,
    values: &[&str],
) -> Result<Vec<i64>, StoreError> {
    let sql = format!("SELECT id FROM ledger_segments WHERE {filter} ORDER BY id");
    let mut query = sqlx::query_scalar(&sql);
    for value in values {
        query = query.bind(*value);
    }
    query.fetch_all(&mut **tx).await.context("listing postings")
}

/// A segment's load and encoded postings.
pub(crate) async fn read_bytes(
    tx: &mut Transaction<'static, Any>,
    id: i64,
) -> Result<(i64, Vec<u8>), StoreError> {
    let row = sqlx::query("SELECT load_id, data FROM ledger_segments WHERE id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .context("reading postings")?;
    let load_id: Option<i64> = row.try_get("load_id").context("reading postings")?;
    let bytes: Vec<u8> = row.try_get("data").context("reading postings")?;
    Ok((load_id.unwrap_or(0), bytes))
}

/// A segment, decoded to `columns` (all if `None`).
pub(crate) async fn read(
    tx: &mut Transaction<'static, Any>,
    id: i64,
    columns: Option<&'static [&'static str]>,
) -> Result<DataFrame, StoreError> {
    let (_, bytes) = read_bytes(tx, id).await?;
    blocking("decoding postings", move || decode(bytes, columns)).await
}
