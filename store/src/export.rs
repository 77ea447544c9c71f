//! The stored postings written out as CSV or Parquet, with the source, load and line
//! each came from, so a tenant's ledger is readable without ledgersync. Written
//! segment by segment: memory holds one segment, whatever the ledger's size.

use std::io::Write;

use chrono::NaiveDate;
use ledgersync_schemas::posting_column::{
    ACCOUNT, AMOUNT, BRANCH, CURRENCY, DATE, KEY, LINE, MEMO, OCCURRED_AT, ORIGINAL_AMOUNT,
};
use ledgersync_schemas::{Amount, Month};
use polars::prelude::*;
use polars_io::parquet::write::{BatchedWriter, ParquetWriter};
use sqlx::{Any, Row, Transaction};

use crate::error::{Context, StoreError};
use crate::segments::{self, polars_error, LOAD};

/// How [`crate::Store::export_ledger`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Amounts as exact decimal text.
    Csv,
    /// Amounts as `Decimal(38, 4)`.
    Parquet,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    pub postings: u64,
}

/// The exported columns, in order (also the CSV header).
pub const EXPORT_COLUMNS: [&str; 12] = [
    "source",
    "load_id",
    "line",
    "date",
    "txn_key",
    "account",
    "amount",
    "currency",
    "original_amount",
    "branch",
    "memo",
    "occurred_at",
];

/// Amounts in Parquet: ten-thousandths, as in the store, with room for any `i64`.
const AMOUNT_PRECISION: usize = 38;
const AMOUNT_DECIMAL: DataType =
    DataType::Decimal(AMOUNT_PRECISION, ledgersync_schemas::AMOUNT_SCALE as usize);

/// A committed segment of the ledger, as its manifest row tells.
pub(crate) struct Listed {
    pub(crate) id: i64,
    pub(crate) source: String,
    pub(crate) load: i64,
    /// Compacted from several loads: its postings carry their own.
    pub(crate) compacted: bool,
}

/// The committed segments that may hold postings dated in `from..=to` (any month if
/// `None`), in the order they were written.
pub(crate) async fn listed(
    tx: &mut Transaction<'static, Any>,
    from: Option<Month>,
    to: Option<Month>,
) -> Result<Vec<Listed>, StoreError> {
    const LISTING: &str = "listing the ledger's segments";
    let rows = sqlx::query(
        "SELECT id, source, load_id, first_load FROM ledger_segments \
         WHERE load_id IS NOT NULL AND last_month >= $1 AND first_month <= $2 ORDER BY id",
    )
    .bind(from.map_or_else(|| "0000-00".to_string(), |m| m.to_string()))
    .bind(to.map_or_else(|| "9999-99".to_string(), |m| m.to_string()))
    .fetch_all(&mut **tx)
    .await
    .context(LISTING)?;
    rows.into_iter()
        .map(|row| {
            Ok(Listed {
                id: row.try_get("id")?,
                source: row.try_get("source")?,
                load: row.try_get("load_id")?,
                compacted: row.try_get::<Option<i64>, _>("first_load")?.is_some(),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .context(LISTING)
}

/// Days since 1970-01-01 of the first day of `from` and the last of `to`.
pub(crate) fn day_range(from: Option<Month>, to: Option<Month>) -> (i32, i32) {
    let first_day = |month: Month| {
        NaiveDate::from_ymd_opt(month.year, month.month, 1).map(|d| d.to_epoch_days())
    };
    let first = from.and_then(first_day).unwrap_or(i32::MIN);
    let last = to
        .and_then(|to| first_day(to.next()))
        .map_or(i32::MAX, |next| next - 1);
    (first, last)
}

/// A decoded segment's postings dated within `days`, each with its load in a
/// [`LOAD`] column.
pub(crate) fn with_loads(
    mut frame: DataFrame,
    listed_load: i64,
    days: (i32, i32),
) -> PolarsResult<DataFrame> {
    if frame.column(LOAD).is_err() {
        let height = frame.height();
        frame.with_column(Int64Chunked::full(LOAD.into(), listed_load, height).into_column())?;
    }
    if days != (i32::MIN, i32::MAX) {
        let dates = frame.column(DATE)?.date()?.physical().clone();
        let keep: BooleanChunked = dates
            .iter()
            .map(|day| day.is_some_and(|day| day >= days.0 && day <= days.1))
            .collect();
        frame = frame.filter(&keep)?;
    }
    Ok(frame)
}

enum Sink {
    Csv(Box<csv::Writer<Box<dyn Write + Send>>>),
    Parquet(Box<BatchedWriter<Box<dyn Write + Send>>>),
}

fn write_failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("writing the export: {e}"))
}

impl Sink {
    fn new(format: ExportFormat, out: Box<dyn Write + Send>) -> Result<Sink, StoreError> {
        match format {
            ExportFormat::Csv => {
                let mut writer = csv::Writer::from_writer(out);
                writer.write_record(EXPORT_COLUMNS).map_err(write_failed)?;
                Ok(Sink::Csv(Box::new(writer)))
            }
            ExportFormat::Parquet => {
                let schema = Schema::from_iter(EXPORT_COLUMNS.map(|name| {
                    let dtype = match name {
                        "load_id" => DataType::Int64,
                        "line" => DataType::UInt64,
                        "date" => DataType::Date,
                        "amount" | "original_amount" => AMOUNT_DECIMAL,
                        _ => DataType::String,
                    };
                    Field::new(name.into(), dtype)
                }));
                let writer = ParquetWriter::new(out)
                    .batched(&schema)
                    .map_err(write_failed)?;
                Ok(Sink::Parquet(Box::new(writer)))
            }
        }
    }

    /// Writes the postings of `frame` (a segment [`with_loads`]) from `source`.
    fn write(&mut self, frame: &DataFrame, source: &str) -> Result<(), StoreError> {
        match self {
            Sink::Csv(writer) => write_csv(writer, frame, source),
            Sink::Parquet(writer) => {
                let mut out = parquet_frame(frame, source).map_err(write_failed)?;
                out.align_chunks();
                writer.write_batch(&out).map_err(write_failed)
            }
        }
    }

    fn finish(self) -> Result<(), StoreError> {
        match self {
            Sink::Csv(mut writer) => writer.flush().map_err(write_failed),
            Sink::Parquet(writer) => writer.finish().map(|_| ()).map_err(write_failed),
        }
    }
}

fn write_csv(
    writer: &mut csv::Writer<Box<dyn Write + Send>>,
    frame: &DataFrame,
    source: &str,
) -> Result<(), StoreError> {
    let text = |name| segments::column::<StringType>(frame, name);
    let (keys, accounts, currencies) = (text(KEY)?, text(ACCOUNT)?, text(CURRENCY)?);
    let (branches, memos, instants) = (text(BRANCH)?, text(MEMO)?, text(OCCURRED_AT)?);
    let loads = segments::column::<Int64Type>(frame, LOAD)?;
    let lines = segments::column::<UInt64Type>(frame, LINE)?;
    let amounts = segments::column::<Int64Type>(frame, AMOUNT)?;
    let originals = segments::column::<Int64Type>(frame, ORIGINAL_AMOUNT)?;
    let dates = segments::dates(frame)?;
    for row in 0..frame.height() {
        let amount = amounts.get(row).map(Amount::from_units);
        let original = originals.get(row).map(Amount::from_units).or(amount);
        let date = dates
            .get(row)
            .and_then(NaiveDate::from_epoch_days)
            .map(|d| d.to_string());
        let number = |n: Option<String>| n.unwrap_or_default();
        writer
            .write_record([
                source,
                &number(loads.get(row).map(|l| l.to_string())),
                &number(lines.get(row).map(|l| l.to_string())),
                &number(date),
                keys.get(row).unwrap_or_default(),
                accounts.get(row).unwrap_or_default(),
                &number(amount.map(|a| a.to_string())),
                currencies.get(row).unwrap_or_default(),
                &number(original.map(|a| a.to_string())),
                branches.get(row).unwrap_or_default(),
                memos.get(row).unwrap_or_default(),
                instants.get(row).unwrap_or_default(),
            ])
            .map_err(write_failed)?;
    }
    Ok(())
}

/// Ten-thousandths as `Decimal(38, 4)`.
fn decimal(name: &str, units: impl Iterator<Item = Option<i64>>) -> PolarsResult<Column> {
    let mantissas: Int128Chunked = units.map(|u| u.map(i128::from)).collect();
    let scale = ledgersync_schemas::AMOUNT_SCALE as usize;
    Ok(mantissas
        .with_name(name.into())
        .into_decimal(AMOUNT_PRECISION, scale)?
        .into_series()
        .into_column())
}

fn parquet_frame(frame: &DataFrame, source: &str) -> PolarsResult<DataFrame> {
    let height = frame.height();
    let renamed = |from: &str, to: &str| -> PolarsResult<Column> {
        Ok(frame.column(from)?.clone().with_name(to.into()))
    };
    let amounts = frame.column(AMOUNT)?.i64()?;
    let originals = frame.column(ORIGINAL_AMOUNT)?.i64()?;
    let columns = vec![
        StringChunked::full("source".into(), source, height).into_column(),
        renamed(LOAD, "load_id")?,
        renamed(LINE, "line")?,
        renamed(DATE, "date")?,
        renamed(KEY, "txn_key")?,
        renamed(ACCOUNT, "account")?,
        decimal("amount", amounts.iter())?,
        renamed(CURRENCY, "currency")?,
        decimal(
            "original_amount",
            originals.iter().zip(amounts.iter()).map(|(o, a)| o.or(a)),
        )?,
        renamed(BRANCH, "branch")?,
        renamed(MEMO, "memo")?,
        renamed(OCCURRED_AT, "occurred_at")?,
    ];
    DataFrame::new(height, columns)
}

/// Writes the ledger's postings dated in `from..=to` to `out`, segment by segment.
pub(crate) async fn export(
    tx: &mut Transaction<'static, Any>,
    from: Option<Month>,
    to: Option<Month>,
    format: ExportFormat,
    out: Box<dyn Write + Send>,
) -> Result<ExportSummary, StoreError> {
    let days = day_range(from, to);
    let mut sink = Sink::new(format, out)?;
    let mut postings = 0u64;
    for listed in listed(tx, from, to).await? {
        let stored = segments::read_bytes(tx, listed.id).await?;
        // Decoding and writing run off the async workers, the sink moving with them.
        let (returned, written) = tokio::task::spawn_blocking(move || {
            let written = stored
                .decode(None)
                .and_then(|frame| with_loads(frame, listed.load, days))
                .map_err(polars_error("reading postings to export"))
                .and_then(|frame| {
                    sink.write(&frame, &listed.source)?;
                    Ok(frame.height() as u64)
                });
            (sink, written)
        })
        .await
        .map_err(write_failed)?;
        sink = returned;
        postings += written?;
    }
    tokio::task::spawn_blocking(move || sink.finish())
        .await
        .map_err(write_failed)??;
    Ok(ExportSummary { postings })
}
