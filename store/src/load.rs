//! A load in progress: postings staged batch by batch as segments and checked as they
//! arrive; the commit records the load, replaces earlier versions of its
//! transactions and recomputes the touched months, all in one database transaction.
//!
//! Memory stays bounded by the batch for well-formed input. Files keep a
//! transaction's rows together, so a transaction is checked when its rows end and
//! then forgotten; only transactions that do not balance (yet) are kept by key. A
//! Bloom filter of every key started catches a key that comes back after its
//! transaction was complete; the commit confirms such keys and merges their rows from
//! the load's own segments, exactly, at a cost only for files that scatter a
//! transaction's rows. The same filter finds the candidates among the source's
//! earlier postings that this load replaces.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Datelike, NaiveDate};
use fastbloom::BloomFilter;
use ledgersync_schemas::{Amount, Posting, RowError};
use polars::prelude::*;
use sqlx::{Any, Transaction};

use crate::backend::Backend;
use crate::control::{now, Generations};
use crate::error::{Context, LoadRejected, StoreError};
use crate::segments::{self, polars_error};
use crate::{aggregates, LoadRecord, LoadSession, LoadSummary};

/// Years a posting may fall in: aggregates number months in 16 bits, and nothing a
/// restaurant books is dated outside these.
const YEARS: std::ops::RangeInclusive<i32> = 1900..=4999;

/// Errors kept word for word; beyond them only counted.
const KEPT_ERRORS: usize = 1000;

/// Keys the Bloom filter is sized for (about 10 MB at 1% false positives); a larger
/// load only sees more false positives, each settled exactly at commit.
const FILTER_KEYS: usize = 8_000_000;

/// What the load knows of a transaction whose rows are being read or do not balance.
struct TxnState {
    number: u32,
    /// Sum of its postings so far; must end at zero.
    sum: i64,
    first_line: u64,
    date: NaiveDate,
    /// Index into [`TxnIndex::branches`].
    branch: u32,
    /// The batches it was first and last seen in.
    first_batch: u32,
    last_batch: u32,
    /// Postings on another date or branch than the first.
    mixed: bool,
    /// Reduced as complete in some batch (see [`TxnIndex::note`]).
    closed: bool,
}

/// The load's transactions: numbers, balances and where they were seen.
struct TxnIndex {
    numbers: u32,
    /// The transaction whose rows are being read.
    current: Option<(Box<str>, TxnState)>,
    /// Transactions whose rows so far do not balance or mix dates or branches.
    pending: HashMap<Box<str>, TxnState>,
    /// Every key started.
    seen: BloomFilter,
    /// Keys that started again after the filter (maybe) saw them.
    suspects: HashSet<Box<str>>,
    /// Transactions with rows in more than one batch.
    split: HashSet<u32>,
    branches: Vec<String>,
    /// (year, month, branch) of the load's transactions.
    buckets: HashSet<(i32, u32, u32)>,
    /// A transaction reduced as complete in a batch turned up again: the load's
    /// partial sums are wrong and the commit aggregates it from storage instead.
    reread: bool,
    /// The smallest and largest key started, in byte order.
    key_range: Option<(String, String)>,
    /// Transactions dated outside [`YEARS`], the first of them and how many.
    misdated: Vec<RowError>,
    misdated_count: usize,
}

impl TxnIndex {
    fn new() -> TxnIndex {
        TxnIndex {
            numbers: 0,
            current: None,
            pending: HashMap::new(),
            seen: BloomFilter::with_false_pos(0.01).expected_items(FILTER_KEYS),
            suspects: HashSet::new(),
            split: HashSet::new(),
            branches: Vec::new(),
            buckets: HashSet::new(),
            reread: false,
            key_range: None,
            misdated: Vec::new(),
            misdated_count: 0,
        }
    }

    fn branch_index(&mut self, branch: &str) -> u32 {
        match self.branches.iter().position(|b| b == branch) {
            Some(index) => index as u32,
            None => {
                self.branches.push(branch.to_string());
                (self.branches.len() - 1) as u32
            }
        }
    }

    /// Numbers the postings of batch `batch`, checks them as far as their rows go,
    /// and tells which transactions are open: seen in an earlier batch, or the
    /// batch's last one (its rows may go on in the next). The others are reduced as
    /// complete; when one is not, the commit notices.
    fn note(&mut self, postings: &[Posting], batch: u32) -> (Vec<u32>, HashSet<u32>) {
        let mut numbers = Vec::with_capacity(postings.len());
        let mut open = HashSet::new();
        for (row, posting) in postings.iter().enumerate() {
            let key = posting.source_key.as_str();
            if !matches!(&self.current, Some((current, _)) if &**current == key) {
                // The first row of a batch ends the previous batch's last transaction,
                // which was open there.
                self.end_transaction(row > 0);
                let state = match self.pending.remove(key) {
                    Some(state) => state,
                    None => self.start(posting, batch),
                };
                self.current = Some((key.into(), state));
            }
            let branch_differs = {
                let (_, txn) = self.current.as_ref().expect("a transaction is current");
                self.branches[txn.branch as usize] != posting.branch
            };
            let (_, txn) = self.current.as_mut().expect("a transaction is current");
            txn.sum += posting.amount.units();
            txn.first_line = txn.first_line.min(posting.origin_line);
            txn.mixed |= txn.date != posting.date || branch_differs;
            if txn.last_batch != batch {
                self.reread |= txn.closed;
                txn.last_batch = batch;
            }
            if txn.first_batch != batch {
                open.insert(txn.number);
            }
            numbers.push(txn.number);
        }
        if let Some((_, txn)) = &self.current {
            open.insert(txn.number);
        }
        (numbers, open)
    }

    /// A new transaction, or one whose key comes back after it was complete (the
    /// filter tells it may have; the commit settles it).
    fn start(&mut self, posting: &Posting, batch: u32) -> TxnState {
        let key = posting.source_key.as_str();
        if self.seen.insert(key) {
            self.suspects.insert(key.into());
        }
        match &mut self.key_range {
            None => self.key_range = Some((key.to_string(), key.to_string())),
            Some((first, last)) => {
                if key < first.as_str() {
                    *first = key.to_string();
                } else if key > last.as_str() {
                    *last = key.to_string();
                }
            }
        }
        if !YEARS.contains(&posting.date.year()) {
            self.misdated_count += 1;
            if self.misdated.len() < KEPT_ERRORS {
                self.misdated.push(RowError {
                    line: posting.origin_line,
                    reason: format!(
                        "transaction '{key}' is dated {}, outside the years {} to {}",
                        posting.date,
                        YEARS.start(),
                        YEARS.end()
                    ),
                });
            }
        }
        let branch = self.branch_index(&posting.branch);
        self.buckets
            .insert((posting.date.year(), posting.date.month(), branch));
        let number = self.numbers;
        self.numbers += 1;
        TxnState {
            number,
            sum: 0,
            first_line: posting.origin_line,
            date: posting.date,
            branch,
            first_batch: batch,
            last_batch: batch,
            mixed: false,
            closed: false,
        }
    }

    /// The current transaction's rows ended; `within_batch` if the batch goes on
    /// (so it was reduced as complete there, unless it began in an earlier batch).
    fn end_transaction(&mut self, within_batch: bool) {
        let Some((key, mut txn)) = self.current.take() else {
            return;
        };
        if txn.first_batch != txn.last_batch {
            self.split.insert(txn.number);
        }
        if within_batch && txn.first_batch == txn.last_batch {
            txn.closed = true;
        }
        if txn.sum != 0 || txn.mixed {
            self.pending.insert(key, txn);
        }
    }

    fn errors(pending: impl Iterator<Item = (String, u64, i64, bool)>) -> Vec<RowError> {
        let mut errors = Vec::new();
        for (key, line, sum, mixed) in pending {
            if sum != 0 {
                errors.push(RowError {
                    line,
                    reason: format!(
                        "unbalanced transaction '{key}': its postings sum to {}",
                        Amount::from_units(sum)
                    ),
                });
            }
            if mixed {
                errors.push(RowError {
                    line,
                    reason: format!(
                        "transaction '{key}' has postings on different dates or branches"
                    ),
                });
            }
        }
        errors
    }
}

pub(crate) struct SqlLoad {
    backend: Arc<dyn Backend>,
    generations: Arc<Generations>,
    tenant_id: String,
    tx: Transaction<'static, Any>,
    /// Held until the session commits or is dropped: loads of a tenant queue.
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    chart: aggregates::Chart,
    index: TxnIndex,
    batches: u32,
    postings: i64,
    control_sum: i64,
    /// This load's contribution to the aggregates, reduced batch by batch.
    partials: aggregates::Partials,
}

impl SqlLoad {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        generations: Arc<Generations>,
        tenant_id: String,
        tx: Transaction<'static, Any>,
        guard: Option<tokio::sync::OwnedMutexGuard<()>>,
        chart: aggregates::Chart,
    ) -> SqlLoad {
        SqlLoad {
            backend,
            generations,
            tenant_id,
            tx,
            _guard: guard,
            chart,
            index: TxnIndex::new(),
            batches: 0,
            postings: 0,
            control_sum: 0,
            partials: aggregates::Partials::default(),
        }
    }

    /// Settles the keys the filter flagged: a key whose rows got more than one number
    /// is one transaction whose rows are apart. Its rows are renumbered in the load's
    /// segments and it is checked again from them. Returns the errors of those
    /// transactions and how many numbers were merged away.
    async fn merge_scattered(&mut self) -> Result<(Vec<RowError>, u32), StoreError> {
        if self.index.suspects.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let staged = segments::ids(&mut self.tx, "load_id IS NULL", &[]).await?;
        let mut numbers: HashMap<String, BTreeSet<u32>> = HashMap::new();
        for &id in &staged {
            let frame =
                segments::read(&mut self.tx, id, Some(&[segments::KEY, segments::TXN])).await?;
            let keys = segments::column::<StringType>(&frame, segments::KEY)?;
            let txns = segments::column::<UInt32Type>(&frame, segments::TXN)?;
            for (key, txn) in keys.iter().zip(txns.into_no_null_iter()) {
                if let Some(key) = key.filter(|k| self.index.suspects.contains(*k)) {
                    numbers.entry(key.to_string()).or_default().insert(txn);
                }
            }
        }
        numbers.retain(|_, found| found.len() > 1);
        if numbers.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let mut renumber: HashMap<u32, u32> = HashMap::new();
        for found in numbers.values() {
            let first = *found.first().expect("two or more numbers");
            for &other in found.iter().skip(1) {
                renumber.insert(other, first);
            }
            self.index.split.insert(first);
        }
        // Their rows, checked whole: sum, first line, dates and branches.
        let mut whole: BTreeMap<String, (u64, i64, HashSet<String>)> = BTreeMap::new();
        for &id in &staged {
            let mut frame = segments::read(&mut self.tx, id, None).await?;
            let txns = segments::column::<UInt32Type>(&frame, segments::TXN)?;
            if txns.into_no_null_iter().any(|t| renumber.contains_key(&t)) {
                let merged: Vec<u32> = txns
                    .into_no_null_iter()
                    .map(|t| renumber.get(&t).copied().unwrap_or(t))
                    .collect();
                frame
                    .with_column(Column::new(segments::TXN.into(), merged))
                    .map_err(polars_error("merging scattered transactions"))?;
                segments::rewrite(&mut self.tx, id, frame.clone()).await?;
            }
            let keys = segments::column::<StringType>(&frame, segments::KEY)?;
            let dates = segments::column::<StringType>(&frame, segments::DATE)?;
            let branches = segments::column::<StringType>(&frame, segments::BRANCH)?;
            let lines = segments::column::<UInt64Type>(&frame, segments::LINE)?;
            let amounts = segments::column::<Int64Type>(&frame, segments::AMOUNT)?;
            for row in 0..frame.height() {
                let Some(key) = keys.get(row).filter(|k| numbers.contains_key(*k)) else {
                    continue;
                };
                let entry = whole
                    .entry(key.to_string())
                    .or_insert((u64::MAX, 0, HashSet::new()));
                entry.0 = entry.0.min(lines.get(row).unwrap_or_default());
                entry.1 += amounts.get(row).unwrap_or_default();
                entry.2.insert(format!(
                    "{}|{}",
                    dates.get(row).unwrap_or_default(),
                    branches.get(row).unwrap_or_default()
                ));
            }
        }
        for key in numbers.keys() {
            self.index.pending.remove(key.as_str());
        }
        self.index.reread = true;
        let errors = TxnIndex::errors(
            whole
                .into_iter()
                .map(|(key, (line, sum, places))| (key, line, sum, places.len() > 1)),
        );
        Ok((errors, renumber.len() as u32))
    }

    /// Removes from the source's earlier segments the transactions this load
    /// replaces; returns the (month, branch) buckets they leave.
    async fn replace_earlier(
        &mut self,
        source: &str,
        load_id: i64,
    ) -> Result<BTreeSet<(String, String)>, StoreError> {
        let mut left = BTreeSet::new();
        let Some((first, last)) = self.index.key_range.clone() else {
            return Ok(left);
        };
        let earlier =
            segments::holding_keys(&mut self.tx, source, load_id, (&first, &last)).await?;
        // Candidates: earlier keys the filter says this load may hold.
        let mut candidates: HashSet<String> = HashSet::new();
        let mut holders = Vec::new();
        for &id in &earlier {
            let frame = segments::read(&mut self.tx, id, Some(&[segments::KEY])).await?;
            let keys = segments::column::<StringType>(&frame, segments::KEY)?;
            let mut holds = false;
            for key in keys.iter().flatten() {
                if self.index.seen.contains(key) {
                    candidates.insert(key.to_string());
                    holds = true;
                }
            }
            if holds {
                holders.push(id);
            }
        }
        if candidates.is_empty() {
            return Ok(left);
        }
        // Confirmed against the load's own keys.
        let mut replaced: HashSet<String> = HashSet::new();
        for id in segments::ids(&mut self.tx, &format!("load_id = {load_id}"), &[]).await? {
            let frame = segments::read(&mut self.tx, id, Some(&[segments::KEY])).await?;
            let keys = segments::column::<StringType>(&frame, segments::KEY)?;
            replaced.extend(
                keys.iter()
                    .flatten()
                    .filter(|k| candidates.contains(*k))
                    .map(str::to_string),
            );
        }
        drop(candidates);
        for id in holders {
            let frame = segments::read(&mut self.tx, id, None).await?;
            let failed = polars_error("replacing transactions");
            let gone: BooleanChunked = segments::column::<StringType>(&frame, segments::KEY)?
                .iter()
                .map(|k| k.is_some_and(|k| replaced.contains(k)))
                .collect();
            if !gone.any() {
                continue;
            }
            let removed = frame.filter(&gone).map_err(&failed)?;
            let months = segments::column::<StringType>(&removed, segments::MONTH)?;
            let branches = segments::column::<StringType>(&removed, segments::BRANCH)?;
            for (month, branch) in months.iter().zip(branches.iter()) {
                left.insert((
                    month.unwrap_or_default().to_string(),
                    branch.unwrap_or_default().to_string(),
                ));
            }
            let kept = frame.filter(&!&gone).map_err(&failed)?;
            segments::rewrite(&mut self.tx, id, kept).await?;
        }
        Ok(left)
    }
}

#[async_trait]
impl LoadSession for SqlLoad {
    async fn stage(&mut self, postings: &[Posting]) -> Result<(), StoreError> {
        if postings.is_empty() {
            return Ok(());
        }
        let (numbers, open) = self.index.note(postings, self.batches);
        self.batches += 1;
        self.postings += postings.len() as i64;
        self.control_sum += postings.iter().map(|p| p.amount.units().abs()).sum::<i64>();
        let frame = segments::frame(postings, numbers).map_err(polars_error("staging postings"))?;
        let chart = self.chart.clone();
        let mut partials = std::mem::take(&mut self.partials);
        let (partials, frame) = segments::blocking("staging postings", move || {
            let aggregated = frame.select(segments::AGGREGATED)?;
            // The load's own number is not known yet; 0 is no load's.
            partials.add(aggregated, 0, &open, &chart)?;
            Ok((partials, frame))
        })
        .await?;
        self.partials = partials;
        segments::insert(&mut self.tx, None, frame).await
    }

    async fn commit(
        mut self: Box<Self>,
        record: LoadRecord,
        max_errors: usize,
    ) -> Result<LoadSummary, StoreError> {
        self.index.end_transaction(false);
        let (mut errors, merged) = self.merge_scattered().await?;
        errors.extend(TxnIndex::errors(self.index.pending.iter().map(
            |(key, txn)| (key.to_string(), txn.first_line, txn.sum, txn.mixed),
        )));
        let uncounted = self.index.misdated_count - self.index.misdated.len();
        errors.append(&mut self.index.misdated);
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            let total = errors.len() + uncounted;
            errors.truncate(max_errors);
            // Dropping the transaction rolls it back.
            return Err(LoadRejected { errors, total }.into());
        }
        let transactions = i64::from(self.index.numbers - merged);
        let load_id: i64 = sqlx::query_scalar(
            "INSERT INTO loads (source, fingerprint, stream, origin, rows_read, transactions, postings, \
             control_sum, loaded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(&record.source)
        .bind(&record.fingerprint)
        .bind(&record.stream)
        .bind(&record.origin)
        .bind(record.rows_read)
        .bind(transactions)
        .bind(self.postings)
        .bind(self.control_sum)
        .bind(now())
        .fetch_one(&mut *self.tx)
        .await
        .context("recording the load")?;
        sqlx::query("UPDATE ledger_segments SET source = $1, load_id = $2 WHERE load_id IS NULL")
            .bind(&record.source)
            .bind(load_id)
            .execute(&mut *self.tx)
            .await
            .context("claiming the load's postings")?;
        for &number in &self.index.split {
            sqlx::query("INSERT INTO split_transactions (load_id, txn) VALUES ($1, $2)")
                .bind(load_id)
                .bind(i64::from(number))
                .execute(&mut *self.tx)
                .await
                .context("noting transactions split across segments")?;
        }

        // Buckets this load writes to, and those its replaced transactions leave.
        let mut buckets: BTreeSet<(String, String)> = self
            .index
            .buckets
            .iter()
            .map(|&(year, month, branch)| {
                (
                    format!("{year:04}-{month:02}"),
                    self.index.branches[branch as usize].clone(),
                )
            })
            .collect();
        buckets.extend(self.replace_earlier(&record.source, load_id).await?);

        let months: BTreeSet<String> = buckets.iter().map(|(m, _)| m.clone()).collect();
        let partials = std::mem::take(&mut self.partials);
        let backend = self.backend.clone();
        if self.index.reread {
            log::debug!(
                "A transaction's rows were apart in the file; aggregating the load from storage."
            );
            aggregates::recompute(
                backend.as_ref(),
                &mut self.tx,
                Some(&months),
                None,
                Default::default(),
                Some(self.chart.clone()),
            )
            .await?;
        } else {
            aggregates::recompute(
                backend.as_ref(),
                &mut self.tx,
                Some(&months),
                Some(load_id),
                partials,
                Some(self.chart.clone()),
            )
            .await?;
        }
        if let Some(cursor) = &record.cursor {
            sqlx::query(
                "INSERT INTO sync_cursors (source, position, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (source) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
            )
            .bind(&record.source)
            .bind(cursor)
            .bind(now())
            .execute(&mut *self.tx)
            .await
            .context("advancing the sync cursor")?;
        }
        self.tx.commit().await.context("committing the load")?;
        self.generations.bump(&self.tenant_id);
        Ok(LoadSummary {
            load_id,
            transactions,
            postings: self.postings,
            control_sum: Amount::from_units(self.control_sum),
            buckets_recomputed: buckets.len() as i64,
        })
    }
}
