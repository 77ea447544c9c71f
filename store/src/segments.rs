//! Postings are kept columnar. A segment is a batch of one load's postings as an
//! Arrow IPC file in one LZ4 frame (see [`encode`]), in `segment_data`, beside its
//! source, load, month and key range in `ledger_segments`; it commits in the same
//! database transaction as the load's record, cursor and aggregates. Aggregation,
//! rebuilds and listings decode only the columns they need, instead of walking one
//! B-tree row per posting.
//!
//! Transactions are numbered within their load (`txn`); `(load_id, txn)` identifies a
//! transaction across segments, `key` is the source's own key. A segment compacted from
//! several loads' (see [`crate::compaction`]) is numbered in its manifest load's
//! numbers and keeps each posting's own load in a [`LOAD`] column.
//!
//! The layout, its versions and what a reader must accept are in `docs/segments.md`.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use ledgersync_schemas::PostingFrame;
use polars::prelude::*;
use polars_io::ipc::{IpcReader, IpcWriter};
use polars_io::{SerReader, SerWriter};
use sqlx::{Any, Row, Transaction};

use crate::error::{Context, StoreError};

pub(crate) const TXN: &str = "txn";
/// The load each posting came from, in segments compacted from several loads
/// (`Int64`); without it every posting is the manifest row's load's.
pub(crate) const LOAD: &str = "load_id";

/// The segment format this build writes and the newest it reads: 1 for segments
/// written before formats were numbered, 2 for those that say so in their schema
/// metadata ([`FORMAT_KEY`]) and manifest row, and may carry a [`LOAD`] column.
pub(crate) const FORMAT_VERSION: i64 = 2;
/// Schema metadata holding a segment's format version.
const FORMAT_KEY: &str = "ledgersync.format";

/// A segment of a format newer than this build reads.
fn newer_format(segment: Option<i64>, version: i64) -> String {
    let which = segment.map_or_else(|| "a segment".to_string(), |id| format!("segment {id}"));
    format!(
        "{which} of the ledger is in format {version}, written by a newer ledgersync \
         (this one reads formats up to {FORMAT_VERSION}); upgrade ledgersync to read this ledger"
    )
}
/// The other columns are a [`PostingFrame`]'s.
pub(crate) use ledgersync_schemas::posting_column::{
    ACCOUNT, AMOUNT, BRANCH, DATE, KEY, LINE, OCCURRED_AT, ORIGINAL_AMOUNT,
};

/// The columns aggregation reads.
pub(crate) const AGGREGATED: [&str; 5] = [TXN, DATE, BRANCH, ACCOUNT, AMOUNT];

/// A column segments written before dates were typed also kept: `YYYY-MM` of the
/// date, as text (the date was text too).
const LEGACY_MONTH: &str = "month";

pub(crate) fn polars_error(context: &'static str) -> impl Fn(PolarsError) -> StoreError {
    move |e| StoreError::Invalid(format!("{context}: {e}"))
}

/// The dates of a decoded segment, as days since 1970-01-01.
pub(crate) fn dates(frame: &DataFrame) -> Result<&Int32Chunked, StoreError> {
    frame
        .column(DATE)
        .and_then(|c| c.date())
        .map(|dates| dates.physical())
        .map_err(polars_error("reading stored postings"))
}

/// `YYYY-MM` of the date `days` after 1970-01-01 (none beyond chrono's range).
pub(crate) fn month_of(days: i32) -> Option<String> {
    chrono::NaiveDate::from_epoch_days(days).map(ledgersync_schemas::time_text::month_text)
}

/// A typed column of a decoded segment; a segment without it is corrupt.
pub(crate) fn column<'a, T: PolarsPhysicalType>(
    frame: &'a DataFrame,
    name: &str,
) -> Result<&'a ChunkedArray<T>, StoreError> {
    frame
        .column(name)
        .and_then(|c| c.as_materialized_series().unpack::<T>())
        .map_err(polars_error("reading stored postings"))
}

/// Runs polars work on a blocking thread: lazy queries block their thread (on
/// tokio's `block_in_place`, which a current-thread runtime refuses), and long ones
/// must not hold an async worker.
pub(crate) async fn blocking<T: Send + 'static>(
    context: &'static str,
    work: impl FnOnce() -> PolarsResult<T> + Send + 'static,
) -> Result<T, StoreError> {
    joined(context, tokio::task::spawn_blocking(work)).await
}

/// The result of polars work already running on a blocking thread.
pub(crate) async fn joined<T>(
    context: &'static str,
    work: tokio::task::JoinHandle<PolarsResult<T>>,
) -> Result<T, StoreError> {
    work.await
        .map_err(|e| StoreError::Invalid(format!("{context}: {e}")))?
        .map_err(polars_error(context))
}

/// Adds the (month, branch) buckets of `frame`'s postings to `buckets`: those whose
/// aggregates change when the postings leave.
pub(crate) fn add_buckets(
    frame: &DataFrame,
    buckets: &mut std::collections::BTreeSet<(String, String)>,
) -> Result<(), StoreError> {
    let dates = dates(frame)?;
    let branches = column::<StringType>(frame, BRANCH)?;
    for (date, branch) in dates.iter().zip(branches.iter()) {
        buckets.insert((
            date.and_then(month_of).unwrap_or_default(),
            branch.unwrap_or_default().to_string(),
        ));
    }
    Ok(())
}

/// A segment's frame: the postings, `txns` numbering their transactions.
pub(crate) fn frame(postings: PostingFrame, txns: Vec<u32>) -> PolarsResult<DataFrame> {
    let mut frame = postings.into_frame();
    frame.insert_column(0, UInt32Chunked::from_vec(TXN.into(), txns).into_column())?;
    Ok(frame)
}

/// Columns that are often wholly empty (plain dates have no instant; amounts in the
/// tenant's currency have no separate original), with the type they read back as.
const OFTEN_EMPTY: [(&str, DataType); 2] = [
    (OCCURRED_AT, DataType::String),
    (ORIGINAL_AMOUNT, DataType::Int64),
];

/// How a segment's bytes start when they are an LZ4 frame (its magic number,
/// little-endian) holding the IPC file. Segments written before are IPC files whose
/// buffers are compressed one by one, and start with the IPC magic `ARROW1`.
const LZ4_FRAME_MAGIC: [u8; 4] = 0x184D_2204_u32.to_le_bytes();

/// How many times smaller than its columns in memory a batch of postings usually
/// encodes (about 21 MB for a million postings of 100 bytes each); a batch that
/// compresses worse only grows its buffer once or twice.
const EXPECTED_RATIO: usize = 4;

/// A segment's bytes: an uncompressed IPC file, streamed through one LZ4 frame of
/// independent blocks without checksums. polars compresses each buffer as a frame
/// of its own, with a checksum per block and per frame, which took twice the time
/// for the same size; SQLite and PostgreSQL pages need no checksum of ours.
pub(crate) fn encode(frame: &mut DataFrame) -> PolarsResult<Vec<u8>> {
    // A wholly empty column is written as a null column, which has no buffers: its
    // views or values would be as many bytes of zeros to compress and checksum.
    for (name, _) in &OFTEN_EMPTY {
        let height = frame.height();
        if frame
            .column(name)
            .is_ok_and(|c| height > 0 && c.null_count() == height)
        {
            frame.with_column(Column::full_null((*name).into(), height, &DataType::Null))?;
        }
    }
    // Lines one after the other, as a journal's postings are, are kept as the first
    // of them: the column was an eighth of what LZ4 read and took longer than most.
    // polars-arrow's `Metadata`.
    let mut metadata: BTreeMap<PlSmallStr, PlSmallStr> = BTreeMap::new();
    metadata.insert(FORMAT_KEY.into(), FORMAT_VERSION.to_string().into());
    if let Some(first) = consecutive_lines(frame) {
        let height = frame.height();
        frame.with_column(Column::full_null(LINE.into(), height, &DataType::Null))?;
        metadata.insert(FIRST_LINE.into(), first.to_string().into());
    }
    let mut lz4 = lz4::EncoderBuilder::new()
        .block_size(lz4::BlockSize::Max1MB)
        .block_mode(lz4::BlockMode::Independent)
        .checksum(lz4::ContentChecksum::NoChecksum)
        .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
        // Each write is compressed as it comes, not first copied into a block buffer.
        .auto_flush(true)
        // Room for the usual compressed size up front: grown from empty, the output
        // was copied at every doubling into fresh pages.
        .build(Vec::with_capacity(frame.estimated_size() / EXPECTED_RATIO))?;
    let mut writer = IpcWriter::new(&mut lz4)
        // polars' own string layout, written as is rather than converted.
        .with_compat_level(CompatLevel::newest());
    writer.set_custom_schema_metadata(Arc::new(metadata));
    writer.finish(frame)?;
    let (bytes, finished) = lz4.finish();
    finished?;
    Ok(bytes)
}

/// Decodes a segment, only `columns` if given; empty columns get their types back.
fn decode(bytes: Vec<u8>, columns: Option<&[&str]>) -> PolarsResult<DataFrame> {
    read_ipc(&unpacked(bytes)?, columns)
}

/// A segment's bytes as the IPC file they hold, to read columns of it more than once.
fn unpacked(bytes: Vec<u8>) -> PolarsResult<Vec<u8>> {
    if !bytes.starts_with(&LZ4_FRAME_MAGIC) {
        return Ok(bytes);
    }
    let mut ipc = Vec::with_capacity(bytes.len() * 4);
    lz4::Decoder::new(bytes.as_slice())?.read_to_end(&mut ipc)?;
    Ok(ipc)
}

/// [`decode`] of an [`unpacked`] segment.
fn read_ipc(ipc: &[u8], columns: Option<&[&str]>) -> PolarsResult<DataFrame> {
    let mut reader = IpcReader::new(Cursor::new(ipc))
        .with_columns(columns.map(|c| c.iter().map(|s| s.to_string()).collect()));
    let metadata = reader.custom_metadata()?;
    // Segments written before formats were numbered have no version: format 1.
    let version = match metadata.as_ref().and_then(|m| m.get(FORMAT_KEY)) {
        None => 1,
        Some(text) => text.parse::<i64>().map_err(
            |_| polars_err!(ComputeError: "a segment's format version '{text}' is not a number"),
        )?,
    };
    if version > FORMAT_VERSION {
        polars_bail!(ComputeError: "{}", newer_format(None, version));
    }
    let first_line = metadata
        .as_ref()
        .and_then(|metadata| metadata.get(FIRST_LINE)?.parse::<u64>().ok());
    let mut frame = reader.finish()?;
    if let Some(first) =
        first_line.filter(|_| frame.column(LINE).is_ok_and(|c| c.dtype().is_null()))
    {
        let height = frame.height() as u64;
        let lines = UInt64Chunked::from_vec(LINE.into(), (first..first + height).collect());
        frame.with_column(lines.into_column())?;
    }
    if frame.column(LEGACY_MONTH).is_ok() {
        frame.drop_in_place(LEGACY_MONTH)?;
    }
    if let Ok(DataType::String) = frame.column(DATE).map(|c| c.dtype()) {
        let typed = frame
            .column(DATE)?
            .str()?
            .iter()
            .map(|text| {
                text.map(|text| {
                    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                        .map(|date| date.to_epoch_days())
                        .map_err(
                            |_| polars_err!(ComputeError: "stored date '{text}' is not YYYY-MM-DD"),
                        )
                })
                .transpose()
            })
            .collect::<PolarsResult<Int32Chunked>>()?;
        frame.with_column(typed.with_name(DATE.into()).into_date().into_column())?;
    }
    for (name, dtype) in &OFTEN_EMPTY {
        if frame.column(name).is_ok_and(|c| c.dtype().is_null()) {
            let height = frame.height();
            frame.with_column(Column::full_null((*name).into(), height, dtype))?;
        }
    }
    Ok(frame)
}

/// Schema metadata of a segment whose lines were consecutive: the first of them.
const FIRST_LINE: &str = "ledgersync.first_line";

/// The first line if every posting's line is the one before's plus one (none if
/// some line is missing).
fn consecutive_lines(frame: &DataFrame) -> Option<u64> {
    let lines = frame.column(LINE).ok()?.u64().ok()?.rechunk();
    let lines = lines.cont_slice().ok()?;
    let &first = lines.first()?;
    let consecutive = lines
        .iter()
        .zip(first..)
        .all(|(&line, expected)| line == expected);
    consecutive.then_some(first)
}

/// Smallest and largest value of a text column, in byte order.
fn text_range(frame: &DataFrame, column: &str) -> PolarsResult<(String, String)> {
    // polars' binary kernels compare the views' inline prefixes first.
    let values = frame.column(column)?.str()?.as_binary();
    let text =
        |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
    Ok((text(values.min_binary()), text(values.max_binary())))
}

/// First and last month of a segment's dates.
fn month_range(frame: &DataFrame) -> PolarsResult<(String, String)> {
    let dates = frame.column(DATE)?.date()?.physical();
    let month = |days: Option<i32>| days.and_then(month_of).unwrap_or_default();
    Ok((month(dates.min()), month(dates.max())))
}

/// A segment ready to store, with what its manifest row says of it.
pub(crate) struct Encoded {
    months: (String, String),
    /// Its keys' range, so that a load can skip segments that cannot hold its keys.
    keys: (String, String),
    rows: i64,
    /// The first of several loads a compacted segment holds.
    first_load: Option<i64>,
    bytes: Vec<u8>,
}

impl Encoded {
    pub(crate) fn new(frame: DataFrame) -> PolarsResult<Encoded> {
        let keys = text_range(&frame, KEY)?;
        Encoded::with_keys(frame, keys)
    }

    /// A segment whose smallest and largest key are known already.
    pub(crate) fn with_keys(mut frame: DataFrame, keys: (String, String)) -> PolarsResult<Encoded> {
        debug_assert_eq!(text_range(&frame, KEY).ok().as_ref(), Some(&keys));
        let months = month_range(&frame)?;
        let rows = frame.height() as i64;
        encode(&mut frame).map(|bytes| Encoded {
            months,
            keys,
            rows,
            first_load: None,
            bytes,
        })
    }

    /// Notes that the segment holds postings of loads from `first_load` on.
    pub(crate) fn holding_loads_since(self, first_load: i64) -> Encoded {
        Encoded {
            first_load: Some(first_load),
            ..self
        }
    }
}

async fn encoded(frame: DataFrame) -> Result<Encoded, StoreError> {
    blocking("encoding postings", move || Encoded::new(frame)).await
}

/// Stores a segment; `load` is `None` while its load is being committed.
pub(crate) async fn insert(
    tx: &mut Transaction<'static, Any>,
    load: Option<(&str, i64)>,
    frame: DataFrame,
) -> Result<(), StoreError> {
    let segment = encoded(frame).await?;
    insert_encoded(tx, load, segment).await.map(|_| ())
}

/// Stores an encoded segment, `load` as for [`insert`]; returns its id.
pub(crate) async fn insert_encoded(
    tx: &mut Transaction<'static, Any>,
    load: Option<(&str, i64)>,
    segment: Encoded,
) -> Result<i64, StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO ledger_segments (source, load_id, first_month, last_month, first_key, \
         last_key, postings, format, first_load) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         RETURNING id",
    )
    .bind(load.map(|(source, _)| source))
    .bind(load.map(|(_, id)| id))
    .bind(segment.months.0)
    .bind(segment.months.1)
    .bind(segment.keys.0)
    .bind(segment.keys.1)
    .bind(segment.rows)
    .bind(FORMAT_VERSION)
    .bind(segment.first_load)
    .fetch_one(&mut **tx)
    .await
    .context("writing postings")?;
    sqlx::query("INSERT INTO segment_data (segment_id, data) VALUES ($1, $2)")
        .bind(id)
        .bind(segment.bytes)
        .execute(&mut **tx)
        .await
        .context("writing postings")?;
    Ok(id)
}

/// Removes a segment.
pub(crate) async fn remove(tx: &mut Transaction<'static, Any>, id: i64) -> Result<(), StoreError> {
    for delete in [
        "DELETE FROM segment_data WHERE segment_id = $1",
        "DELETE FROM ledger_segments WHERE id = $1",
    ] {
        sqlx::query(delete)
            .bind(id)
            .execute(&mut **tx)
            .await
            .context("removing postings")?;
    }
    Ok(())
}

/// Replaces a segment's postings, or removes it when none are left.
pub(crate) async fn rewrite(
    tx: &mut Transaction<'static, Any>,
    id: i64,
    frame: DataFrame,
) -> Result<(), StoreError> {
    if frame.height() == 0 {
        return remove(tx, id).await;
    }
    let segment = encoded(frame).await?;
    sqlx::query(
        "UPDATE ledger_segments SET first_month = $1, last_month = $2, first_key = $3, \
         last_key = $4, postings = $5, format = $6 WHERE id = $7",
    )
    .bind(segment.months.0)
    .bind(segment.months.1)
    .bind(segment.keys.0)
    .bind(segment.keys.1)
    .bind(segment.rows)
    .bind(FORMAT_VERSION)
    .bind(id)
    .execute(&mut **tx)
    .await
    .context("rewriting postings")?;
    sqlx::query("UPDATE segment_data SET data = $1 WHERE segment_id = $2")
        .bind(segment.bytes)
        .bind(id)
        .execute(&mut **tx)
        .await
        .context("rewriting postings")?;
    Ok(())
}

/// Ids of the source's segments, other than load `except`'s, whose key range may
/// overlap `keys`. Ranges compare in byte order here, not in the database's
/// collation; segments written before ranges were kept always qualify.
pub(crate) async fn holding_keys(
    tx: &mut Transaction<'static, Any>,
    source: &str,
    except: i64,
    keys: (&str, &str),
) -> Result<Vec<i64>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, first_key, last_key FROM ledger_segments WHERE source = $1 AND load_id <> $2 \
         ORDER BY id",
    )
    .bind(source)
    .bind(except)
    .fetch_all(&mut **tx)
    .await
    .context("listing postings")?;
    Ok(key_ranges(rows)?
        .into_iter()
        .filter(|(_, range)| match range {
            Some((first, last)) => last.as_str() >= keys.0 && first.as_str() <= keys.1,
            None => true,
        })
        .map(|(id, _)| id)
        .collect())
}

/// Ids and key ranges of the segments of the load being written.
pub(crate) async fn staged_ranges(
    tx: &mut Transaction<'static, Any>,
) -> Result<KeyRanges, StoreError> {
    let rows = sqlx::query(
        "SELECT id, first_key, last_key FROM ledger_segments WHERE load_id IS NULL ORDER BY id",
    )
    .fetch_all(&mut **tx)
    .await
    .context("listing postings")?;
    key_ranges(rows)
}

/// Segment ids with their smallest and largest key.
pub(crate) type KeyRanges = Vec<(i64, Option<(String, String)>)>;

/// `(id, first_key, last_key)` rows as ids and key ranges (none for segments written
/// before ranges were kept).
fn key_ranges(rows: Vec<sqlx::any::AnyRow>) -> Result<KeyRanges, StoreError> {
    rows.into_iter()
        .map(|row| {
            let first: Option<String> = row.try_get("first_key")?;
            let last: Option<String> = row.try_get("last_key")?;
            Ok((row.try_get("id")?, first.zip(last)))
        })
        .collect::<Result<_, sqlx::Error>>()
        .context("listing postings")
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

/// A segment as stored: its manifest load, its bytes, and the transactions of that
/// load replaced since by later versions (`replaced_transactions`), which every
/// reader leaves out. Their rows stay until the segment is rewritten.
pub(crate) struct Stored {
    pub(crate) load_id: i64,
    bytes: Vec<u8>,
    replaced: Replaced,
}

/// Numbers of a load's replaced transactions, sorted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Replaced(Vec<u32>);

impl Replaced {
    pub(crate) fn contains(&self, txn: u32) -> bool {
        self.0.binary_search(&txn).is_ok()
    }

    /// The frame without the rows of replaced transactions. It must have [`TXN`].
    pub(crate) fn remove_from(&self, frame: DataFrame) -> PolarsResult<DataFrame> {
        if self.0.is_empty() {
            return Ok(frame);
        }
        let keep: BooleanChunked = frame
            .column(TXN)?
            .u32()?
            .iter()
            .map(|txn| txn.is_none_or(|txn| !self.contains(txn)))
            .collect();
        frame.filter(&keep)
    }

    /// Reads `columns` of an unpacked segment, replaced transactions left out.
    fn read(&self, ipc: &[u8], columns: Option<&[&str]>) -> PolarsResult<DataFrame> {
        if self.0.is_empty() {
            return read_ipc(ipc, columns);
        }
        match columns {
            Some(wanted) if !wanted.contains(&TXN) => {
                let mut with_txn = wanted.to_vec();
                with_txn.push(TXN);
                let frame = self.remove_from(read_ipc(ipc, Some(&with_txn))?)?;
                frame.select(wanted.iter().copied())
            }
            _ => self.remove_from(read_ipc(ipc, columns)?),
        }
    }
}

impl Stored {
    /// Decodes the segment's live postings, only `columns` if given.
    pub(crate) fn decode(self, columns: Option<&[&str]>) -> PolarsResult<DataFrame> {
        let ipc = unpacked(self.bytes)?;
        self.replaced.read(&ipc, columns)
    }

    /// The segment unpacked, to read columns of it more than once.
    pub(crate) fn unpacked(self) -> PolarsResult<Unpacked> {
        Ok(Unpacked {
            ipc: unpacked(self.bytes)?,
            replaced: self.replaced,
        })
    }

    /// Decodes every row, replaced transactions included, and tells which those are
    /// (for compaction, which drops them for good).
    pub(crate) fn decode_all(self) -> PolarsResult<(DataFrame, Replaced)> {
        Ok((decode(self.bytes, None)?, self.replaced))
    }
}

/// An unpacked segment (see [`Stored::unpacked`]).
pub(crate) struct Unpacked {
    ipc: Vec<u8>,
    replaced: Replaced,
}

impl Unpacked {
    /// Reads `columns` (all if `None`) of the live postings; every read leaves out the
    /// same rows, so row numbers agree between reads.
    pub(crate) fn read(&self, columns: Option<&[&str]>) -> PolarsResult<DataFrame> {
        self.replaced.read(&self.ipc, columns)
    }
}

/// A segment's manifest load, encoded postings and replaced transactions.
pub(crate) async fn read_bytes(
    tx: &mut Transaction<'static, Any>,
    id: i64,
) -> Result<Stored, StoreError> {
    let row = sqlx::query(
        "SELECT s.load_id, s.format, d.data FROM ledger_segments s \
         JOIN segment_data d ON d.segment_id = s.id WHERE s.id = $1",
    )
    .bind(id)
    .fetch_one(&mut **tx)
    .await
    .context("reading postings")?;
    let load_id: Option<i64> = row.try_get("load_id").context("reading postings")?;
    let format: i64 = row.try_get("format").context("reading postings")?;
    if format > FORMAT_VERSION {
        return Err(StoreError::Invalid(newer_format(Some(id), format)));
    }
    let bytes: Vec<u8> = row.try_get("data").context("reading postings")?;
    let replaced = match load_id {
        Some(load_id) => replaced_of(tx, load_id).await?,
        // A segment being written: its load replaced nothing of its own.
        None => Replaced::default(),
    };
    Ok(Stored {
        load_id: load_id.unwrap_or(0),
        bytes,
        replaced,
    })
}

/// The replaced transactions of load `load_id`.
pub(crate) async fn replaced_of(
    tx: &mut Transaction<'static, Any>,
    load_id: i64,
) -> Result<Replaced, StoreError> {
    let mut numbers: Vec<i64> =
        sqlx::query_scalar("SELECT txn FROM replaced_transactions WHERE load_id = $1")
            .bind(load_id)
            .fetch_all(&mut **tx)
            .await
            .context("reading replaced transactions")?;
    numbers.sort_unstable();
    Ok(Replaced(numbers.into_iter().map(|n| n as u32).collect()))
}

/// A segment's live postings, decoded to `columns` (all if `None`).
pub(crate) async fn read(
    tx: &mut Transaction<'static, Any>,
    id: i64,
    columns: Option<&'static [&'static str]>,
) -> Result<DataFrame, StoreError> {
    let stored = read_bytes(tx, id).await?;
    blocking("decoding postings", move || stored.decode(columns)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgersync_schemas::{Amount, Posting};

    fn posting(occurred_at: Option<&str>, original: i64) -> Posting {
        Posting {
            source_key: "S1".into(),
            origin_line: 2,
            date: "2025-02-01".parse().unwrap(),
            branch: "Kemang".into(),
            memo: String::new(),
            occurred_at: occurred_at.map(str::to_string),
            account: "1000".into(),
            amount: Amount::from_units(10_000),
            currency: "IDR".into(),
            original_amount: Amount::from_units(original),
        }
    }

    fn round_trip(postings: &[Posting]) -> DataFrame {
        let mut stored = frame(
            PostingFrame::from_postings(postings),
            vec![0; postings.len()],
        )
        .unwrap();
        decode(encode(&mut stored).unwrap(), None).unwrap()
    }

    /// Wholly empty columns are stored without buffers and read back typed and empty;
    /// columns with a value keep every value.
    #[test]
    fn empty_columns_read_back_with_their_types() {
        let empty = round_trip(&[posting(None, 10_000), posting(None, 10_000)]);
        assert_eq!(
            empty.column(OCCURRED_AT).unwrap().dtype(),
            &DataType::String
        );
        assert_eq!(
            empty.column(ORIGINAL_AMOUNT).unwrap().dtype(),
            &DataType::Int64
        );
        assert_eq!(empty.column(OCCURRED_AT).unwrap().null_count(), 2);
        let back = PostingFrame::from_frame(empty.drop(TXN).unwrap()).unwrap();
        assert_eq!(
            back.to_postings().unwrap(),
            [posting(None, 10_000), posting(None, 10_000)]
        );

        let mixed = [
            posting(Some("2025-01-31T17:30:00+00:00"), 10_000),
            posting(None, 5),
        ];
        let kept = round_trip(&mixed);
        let back = PostingFrame::from_frame(kept.drop(TXN).unwrap()).unwrap();
        assert_eq!(back.to_postings().unwrap(), mixed);
    }

    /// Consecutive lines are kept as their first and read back whole; others as they
    /// are.
    #[test]
    fn consecutive_lines_read_back() {
        let numbered = |lines: &mut dyn Iterator<Item = u64>| -> Vec<Posting> {
            lines
                .map(|line| Posting {
                    origin_line: line,
                    ..posting(None, 10_000)
                })
                .collect()
        };
        let consecutive = numbered(&mut (7..1007));
        let mut stored = frame(PostingFrame::from_postings(&consecutive), vec![0; 1000]).unwrap();
        assert_eq!(consecutive_lines(&stored), Some(7));
        let bytes = encode(&mut stored).unwrap();
        let lines_only = decode(bytes.clone(), Some(&[LINE])).unwrap();
        assert_eq!(lines_only.column(LINE).unwrap().dtype(), &DataType::UInt64);
        let back = decode(bytes, None).unwrap();
        let back = PostingFrame::from_frame(back.drop(TXN).unwrap()).unwrap();
        assert_eq!(back.to_postings().unwrap(), consecutive);

        let gapped = numbered(&mut (7..1007).map(|line| if line == 500 { 9_000 } else { line }));
        let mut stored = frame(PostingFrame::from_postings(&gapped), vec![0; 1000]).unwrap();
        assert_eq!(consecutive_lines(&stored), None);
        let back = decode(encode(&mut stored).unwrap(), None).unwrap();
        let back = PostingFrame::from_frame(back.drop(TXN).unwrap()).unwrap();
        assert_eq!(back.to_postings().unwrap(), gapped);
    }

    /// A segment says its format; one of a format newer than this build's is refused
    /// with a message saying so, not misread.
    #[test]
    fn segments_carry_their_format_and_newer_ones_are_refused() {
        let postings: Vec<Posting> = (0..10).map(|i| posting(None, i)).collect();
        let mut stored = frame(PostingFrame::from_postings(&postings), vec![0; 10]).unwrap();
        let bytes = encode(&mut stored.clone()).unwrap();
        let mut ipc = Vec::new();
        lz4::Decoder::new(bytes.as_slice())
            .unwrap()
            .read_to_end(&mut ipc)
            .unwrap();
        let mut reader = IpcReader::new(Cursor::new(ipc));
        let metadata = reader.custom_metadata().unwrap().unwrap();
        assert_eq!(
            metadata.get(FORMAT_KEY).map(|v| v.as_str()),
            Some(FORMAT_VERSION.to_string().as_str())
        );

        let mut newer = Vec::new();
        let mut writer = IpcWriter::new(&mut newer).with_compat_level(CompatLevel::newest());
        let metadata = BTreeMap::from([(PlSmallStr::from(FORMAT_KEY), PlSmallStr::from("3"))]);
        writer.set_custom_schema_metadata(Arc::new(metadata));
        writer.finish(&mut stored).unwrap();
        let refused = decode(newer, None).unwrap_err().to_string();
        assert!(
            refused.contains("format 3, written by a newer ledgersync"),
            "{refused}"
        );
    }

    /// Segments written before the single LZ4 frame (IPC files with LZ4-framed
    /// buffers, dates as text beside their month) still read back.
    #[test]
    fn segments_of_both_encodings_read_back() {
        use polars_io::ipc::IpcCompression;
        let postings: Vec<Posting> = (0..1000).map(|i| posting(None, i)).collect();
        let mut stored = frame(PostingFrame::from_postings(&postings), vec![0; 1000]).unwrap();
        // Then dates were text, beside their month.
        let mut legacy = stored.clone();
        let texts = legacy
            .column(DATE)
            .unwrap()
            .cast(&DataType::String)
            .unwrap();
        let months: StringChunked = texts
            .str()
            .unwrap()
            .iter()
            .map(|d| d.map(|d| &d[..7]))
            .collect();
        legacy.with_column(texts).unwrap();
        legacy
            .with_column(months.into_column().with_name(LEGACY_MONTH.into()))
            .unwrap();
        assert_eq!(
            legacy.column(LEGACY_MONTH).unwrap().str().unwrap().get(0),
            Some("2025-02")
        );
        let mut earlier = Vec::new();
        IpcWriter::new(&mut earlier)
            .with_compression(Some(IpcCompression::LZ4))
            .with_compat_level(CompatLevel::newest())
            .finish(&mut legacy)
            .unwrap();
        assert!(earlier.starts_with(b"ARROW1"));
        let current = encode(&mut stored).unwrap();
        assert!(current.starts_with(&LZ4_FRAME_MAGIC));
        for bytes in [earlier, current] {
            let back = decode(bytes, None).unwrap();
            let back = PostingFrame::from_frame(back.drop(TXN).unwrap()).unwrap();
            assert_eq!(back.to_postings().unwrap(), postings);
        }
    }
}
