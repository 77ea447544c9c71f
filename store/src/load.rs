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
//! transaction's rows. Earlier versions of the load's transactions are found by key
//! in the source's key index (see [`crate::keys`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use fastbloom::BloomFilter;
use ledgersync_schemas::{short_text_key, Amount, PostingFrame, RowError, ShortTexts};
use polars::prelude::*;
use sqlx::{Any, Transaction};

use crate::aggregates::RecomputeError;
use crate::backend::Backend;
use crate::control::{now, Generations};
use crate::error::{Context, LoadRejected, StoreError};
use crate::segments::{self, polars_error};
use crate::{aggregates, keys, LoadCounts, LoadRecord, LoadSession, LoadSummary};

/// The amounts of a load, as absolute values, must add up within [`Amount::MAX`]:
/// then no sum within the load (a transaction's, an account's in a month, a cash
/// flow's) can overflow, and only sums across loads need checking.
fn control_sum_exceeded(amount: i64) -> String {
    format!(
        "the amount {} takes the file's control sum (its amounts added as absolute values) beyond the largest amount, {}; split the file or check its amounts",
        Amount::from_units(amount),
        Amount::MAX
    )
}

/// Years a posting may fall in: aggregates number months in 16 bits, and nothing a
/// restaurant books is dated outside these.
const YEARS: std::ops::RangeInclusive<i32> = 1900..=4999;

/// Errors kept word for word; beyond them only counted.
const KEPT_ERRORS: usize = 1000;

/// Keys the Bloom filter's first layer is sized for (2 MiB). Each further layer
/// takes four times as many keys as the one before, so a small load has a small
/// filter, a large one stays near the same rate of false positives, and a key of a
/// typical load (a million postings) is looked for in one layer, not two.
const FIRST_LAYER_KEYS: usize = 1 << 20;
/// Keys of the largest layer (8 MiB; 10 MiB for both): a load beyond their 5.2M
/// keys only sees more false positives, each settled exactly at commit.
const LARGEST_LAYER_KEYS: usize = 1 << 22;
const BITS_PER_KEY: usize = 16;
/// Two hashes: each is a cache miss in a large layer, and two keep false positives
/// near 1.4% in a full layer where the textbook eleven would take 0.05% at five
/// times the misses.
const FILTER_HASHES: u32 = 2;

/// What the load knows of a transaction whose rows are being read or do not balance.
struct TxnState {
    number: u32,
    /// Sum of its postings so far; must end at zero.
    sum: i64,
    /// Some partial sum was beyond an amount's range: it cannot balance exactly.
    overflowed: bool,
    first_line: u64,
    /// Its date, in days since 1970-01-01.
    date: i32,
    /// Its number in [`TxnIndex::branches`].
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
    /// The transaction whose rows are being read, and its key (a buffer reused from
    /// one transaction to the next).
    current: Option<TxnState>,
    current_key: String,
    /// The current key's view if the key is short (see [`short_text_key`]).
    current_view: Option<u128>,
    months: aggregates::MonthOfDate,
    /// Transactions whose rows so far do not balance or mix dates or branches.
    pending: HashMap<Box<str>, TxnState>,
    /// Transactions with rows in more than one batch.
    split: HashSet<u32>,
    branches: aggregates::Numbering,
    branch_texts: ShortTexts<u32>,
    /// (year, month, branch) of the load's transactions, each with the first line
    /// of a transaction there (to name a line when its aggregates overflow).
    buckets: PlHashMap<(i32, u32, u32), u64>,
    /// A transaction reduced as complete in a batch turned up again: the load's
    /// partial sums are wrong and the commit aggregates it from storage instead.
    reread: bool,
    /// The smallest and largest key started, in byte order.
    key_range: Option<(String, String)>,
    /// Rows refused as they were noted (transactions dated outside [`YEARS`], the
    /// amount that takes the control sum out of range): the first of them and how
    /// many.
    refused: Vec<RowError>,
    refused_count: usize,
    /// Sum of the absolute amounts noted so far; none once beyond an amount's range.
    control_sum: Option<i64>,
}

impl TxnIndex {
    fn new() -> TxnIndex {
        TxnIndex {
            numbers: 0,
            current: None,
            current_key: String::new(),
            current_view: None,
            months: aggregates::MonthOfDate::default(),
            pending: HashMap::new(),
            split: HashSet::new(),
            branches: aggregates::Numbering::default(),
            branch_texts: ShortTexts::default(),
            buckets: PlHashMap::new(),
            reread: false,
            key_range: None,
            refused: Vec::new(),
            refused_count: 0,
            control_sum: Some(0),
        }
    }

    /// The load refused because an aggregate it adds to would not fit, at the first
    /// line of a transaction of its month (and branch).
    fn too_large(&self, overflow: aggregates::AggregateOverflow) -> StoreError {
        let line = self
            .buckets
            .iter()
            .filter(|((year, month, _), _)| format!("{year:04}-{month:02}") == overflow.month)
            .map(|(&(_, _, branch), &line)| (self.branches.name(branch) != overflow.branch, line))
            .min()
            .or_else(|| self.buckets.values().map(|&line| (true, line)).min())
            .map_or(0, |(_, line)| line);
        LoadRejected {
            errors: vec![RowError {
                line,
                reason: format!("with the postings already loaded, {overflow}"),
            }],
            total: 1,
        }
        .into()
    }

    fn refuse(&mut self, error: RowError) {
        self.refused_count += 1;
        if self.refused.len() < KEPT_ERRORS {
            self.refused.push(error);
        }
    }

    /// Numbers the postings of batch `batch`, checks them as far as their rows go,
    /// and tells which transactions are open: seen in an earlier batch, or the
    /// batch's last one (its rows may go on in the next). The others are reduced as
    /// complete; when one is not, the commit notices.
    fn note(&mut self, postings: &PostingFrame, batch: u32) -> Result<Noted, StoreError> {
        let frame = postings.frame();
        let failed = polars_error("checking postings");
        // One chunk each, read in place; a posting frame has no empty values here.
        let keys = segments::column::<StringType>(frame, segments::KEY)?.rechunk();
        let keys = keys.downcast_as_array();
        let dates = segments::dates(frame)?.rechunk();
        let dates = dates.cont_slice().map_err(&failed)?;
        let branch_numbers = {
            let TxnIndex {
                branches,
                branch_texts,
                ..
            } = self;
            branch_texts.values(
                segments::column::<StringType>(frame, segments::BRANCH)?,
                |name| branches.number(name),
            )
        };
        let amounts = segments::column::<Int64Type>(frame, segments::AMOUNT)?.rechunk();
        let amounts = amounts.cont_slice().map_err(&failed)?;
        let lines = segments::column::<UInt64Type>(frame, segments::LINE)?.rechunk();
        let lines = lines.cont_slice().map_err(&failed)?;
        let mut numbers = Vec::with_capacity(frame.height());
        let mut open = HashSet::new();
        let mut starts = Vec::new();
        // A key differs from the row before's only where `same` is false below (and
        // at the first row, which may go on the previous batch's transaction): the
        // batch's key range is found there, not over every row.
        let first_key = if keys.len() == 0 { "" } else { keys.value(0) };
        let (mut least, mut most) = (first_key, first_key);
        let rows = dates.iter().zip(branch_numbers).zip(amounts).zip(lines);
        for (row, (((&date, branch), &amount), &line)) in rows.enumerate() {
            // A short key is held whole in its view: one comparison of integers.
            let short = short_text_key(keys, row);
            let same = self.current.is_some()
                && match short {
                    Some(key) => self.current_view == Some(key),
                    None => self.current_view.is_none() && self.current_key == keys.value(row),
                };
            if !same {
                let key = keys.value(row);
                // Keys of sorted files raise `most` at every transaction.
                if key > most {
                    most = key;
                } else if key < least {
                    least = key;
                }
                // The first row of a batch ends the previous batch's last transaction,
                // which was open there.
                self.end_transaction(row > 0);
                // Most loads never have a transaction pending: no key to hash then.
                let resumed = match self.pending.is_empty() {
                    true => None,
                    false => self.pending.remove(key),
                };
                let state = match resumed {
                    Some(state) => state,
                    None => {
                        starts.push(row as u32);
                        self.start(key, date, branch, line, batch)
                    }
                };
                self.current = Some(state);
                self.current_key.clear();
                self.current_key.push_str(key);
                self.current_view = short;
            }
            if let Some(sum) = self.control_sum {
                self.control_sum = amount.checked_abs().and_then(|a| sum.checked_add(a));
                if self.control_sum.is_none() {
                    self.refuse(RowError {
                        line,
                        reason: control_sum_exceeded(amount),
                    });
                }
            }
            let txn = self.current.as_mut().expect("a transaction is current");
            match txn.sum.checked_add(amount) {
                Some(sum) => txn.sum = sum,
                None => txn.overflowed = true,
            }
            txn.first_line = txn.first_line.min(line);
            txn.mixed |= txn.date != date || txn.branch != branch;
            if txn.last_batch != batch {
                self.reread |= txn.closed;
                txn.last_batch = batch;
            }
            if txn.first_batch != batch {
                open.insert(txn.number);
            }
            numbers.push(txn.number);
        }
        if let Some(txn) = &self.current {
            open.insert(txn.number);
        }
        // Every key of a batch was started in it or before: the load's key range is
        // its batches'.
        match &mut self.key_range {
            None => self.key_range = Some((least.to_string(), most.to_string())),
            Some((first, last)) => {
                if least < first.as_str() {
                    *first = least.to_string();
                }
                if most > last.as_str() {
                    *last = most.to_string();
                }
            }
        }
        Ok(Noted {
            numbers,
            open,
            starts,
            keys: (least.to_string(), most.to_string()),
        })
    }

    /// A new transaction, or one whose key comes back after it was complete (the
    /// [`KeyFilter`] tells it may have; the commit settles it).
    fn start(&mut self, key: &str, date: i32, branch: u32, line: u64, batch: u32) -> TxnState {
        let year_month = self
            .months
            .get(date)
            .ok()
            .map(|month| ((month / 12) as i32, (month % 12) as u32 + 1))
            .filter(|(year, _)| YEARS.contains(year));
        if year_month.is_none() {
            let date = NaiveDate::from_epoch_days(date)
                .map_or_else(|| format!("day {date} after 1970-01-01"), |d| d.to_string());
            self.refuse(RowError {
                line,
                reason: format!(
                    "transaction '{key}' is dated {date}, outside the years {} to {}",
                    YEARS.start(),
                    YEARS.end()
                ),
            });
        }
        let (year, month) = year_month.unwrap_or_default();
        self.buckets.entry((year, month, branch)).or_insert(line);
        let number = self.numbers;
        self.numbers += 1;
        TxnState {
            number,
            sum: 0,
            overflowed: false,
            first_line: line,
            date,
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
        let Some(mut txn) = self.current.take() else {
            return;
        };
        if txn.first_batch != txn.last_batch {
            self.split.insert(txn.number);
        }
        if within_batch && txn.first_batch == txn.last_batch {
            txn.closed = true;
        }
        if txn.sum != 0 || txn.mixed || txn.overflowed {
            self.pending.insert(self.current_key.as_str().into(), txn);
        }
    }

    /// Errors of transactions given as (key, first line, sum or none if it
    /// overflowed, postings on several dates or branches).
    fn errors(pending: impl Iterator<Item = (String, u64, Option<i64>, bool)>) -> Vec<RowError> {
        let mut errors = Vec::new();
        for (key, line, sum, mixed) in pending {
            match sum {
                Some(0) => {}
                Some(sum) => errors.push(RowError {
                    line,
                    reason: format!(
                        "unbalanced transaction '{key}': its postings sum to {}",
                        Amount::from_units(sum)
                    ),
                }),
                None => errors.push(RowError {
                    line,
                    reason: format!(
                        "unbalanced transaction '{key}': its postings add up beyond the largest amount, {}",
                        Amount::MAX
                    ),
                }),
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

/// What [`TxnIndex::note`] tells of a batch.
struct Noted {
    /// The transaction number of each posting.
    numbers: Vec<u32>,
    /// Transactions that may have postings in other batches.
    open: HashSet<u32>,
    /// Rows where a key starts (anew, or again after its transaction ended).
    starts: Vec<u32>,
    /// The batch's smallest and largest key, in byte order.
    keys: (String, String),
}

/// Every key a load started, in a Bloom filter, and the keys started again after
/// the filter (maybe) saw them. Fed off the async workers, a batch behind.
struct KeyFilter {
    seen: LayeredBloom,
    suspects: HashMap<Box<str>, Suspicion>,
}

/// A Bloom filter that grows: a full layer is followed by a larger one, and a key
/// is in the filter if any layer has it. Sized up front for the largest load, it
/// cost every load the page faults and cache misses of 10 MB.
struct LayeredBloom {
    /// Layers share one hasher (one seed), so a key is hashed once for all:
    /// foldhash's quality variant, several times faster than fastbloom's default
    /// SipHash on short keys.
    layers: Vec<BloomFilter<foldhash::quality::FixedState>>,
    seed: u64,
    /// Keys the newest layer still takes before the next one starts.
    room: usize,
    /// Keys the newest layer was sized for.
    last_keys: usize,
    /// Keys beyond which no larger layer is added.
    largest_keys: usize,
}

impl LayeredBloom {
    fn new(first_keys: usize, largest_keys: usize) -> LayeredBloom {
        use std::hash::BuildHasher as _;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u8);
        let mut filter = LayeredBloom {
            layers: Vec::new(),
            seed,
            room: 0,
            last_keys: 0,
            largest_keys,
        };
        filter.add_layer(first_keys);
        filter
    }

    fn add_layer(&mut self, keys: usize) {
        self.layers.push(
            // Zeroed memory from the allocator (calloc: fresh pages are zero without
            // being written), where fastbloom's own constructor writes every word.
            BloomFilter::from_vec(vec![0u64; (keys * BITS_PER_KEY).div_ceil(64)])
                .hasher(foldhash::quality::FixedState::with_seed(self.seed))
                .hashes(FILTER_HASHES),
        );
        self.room = keys;
        self.last_keys = keys;
    }

    fn hash(&self, key: &str) -> u64 {
        self.layers[0].source_hash(key)
    }

    /// Adds a key by its [`LayeredBloom::hash`]; true if it may have been added before.
    fn insert_hash(&mut self, hash: u64) -> bool {
        let (newest, older) = self.layers.split_last_mut().expect("a layer");
        if older.iter().any(|layer| layer.contains_hash(hash)) {
            return true;
        }
        if newest.insert_hash(hash) {
            return true;
        }
        self.room = self.room.saturating_sub(1);
        if self.room == 0 && self.last_keys < self.largest_keys {
            self.add_layer((self.last_keys * 4).min(self.largest_keys));
        }
        false
    }

    #[cfg(test)]
    fn contains(&self, key: &str) -> bool {
        let hash = self.hash(key);
        self.layers.iter().any(|layer| layer.contains_hash(hash))
    }
}

/// Where a key the filter flagged may have started before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Suspicion {
    /// The last batch it was flagged in: an earlier start, if any, is in that batch
    /// or one before it.
    last_batch: u32,
    /// It did start earlier in a batch it was flagged in (checked exactly there).
    repeated_in_batch: bool,
}

/// Flagged keys of one batch beyond which the batch's starts are put in a hash set
/// rather than searched, so that a file of many repeats stays linear.
const SCANNED_SUSPECTS: usize = 32;

impl KeyFilter {
    fn new() -> KeyFilter {
        KeyFilter::with_layers(FIRST_LAYER_KEYS, LARGEST_LAYER_KEYS)
    }

    fn with_layers(first_keys: usize, largest_keys: usize) -> KeyFilter {
        KeyFilter {
            seen: LayeredBloom::new(first_keys, largest_keys),
            suspects: HashMap::new(),
        }
    }

    /// Notes the keys at `starts` of batch `batch`'s key column. A flagged key is
    /// checked at once against the batch's own earlier starts, which are at hand:
    /// most flags are false, and a key of a sorted file is then known to be new
    /// without reading any stored segment (see [`SqlLoad::merge_scattered`]).
    fn note(&mut self, keys: &StringChunked, starts: &[u32], batch: u32) {
        // One chunk, read in place (a posting frame's keys are never empty).
        let keys = keys.rechunk();
        let keys = keys.downcast_as_array();
        let key = |at: usize| keys.value(starts[at] as usize);
        // Hashing first and setting bits in a tight loop lets the processor
        // overlap the filter's cache misses.
        let hashes: Vec<u64> = (0..starts.len())
            .map(|at| self.seen.hash(key(at)))
            .collect();
        let mut flagged = 0;
        // The first start of each hash before `indexed`, once flags are many.
        let (mut first_of_hash, mut indexed) = (PlHashMap::new(), 0);
        for (at, &hash) in hashes.iter().enumerate() {
            if !self.seen.insert_hash(hash) {
                continue;
            }
            flagged += 1;
            let this = key(at);
            // Earlier starts are compared by hash; equal hashes by their keys.
            let same = |earlier: usize| hashes[earlier] == hash && key(earlier) == this;
            let repeated = if flagged > SCANNED_SUSPECTS {
                for (earlier, &earlier_hash) in (indexed..at).zip(&hashes[indexed..at]) {
                    first_of_hash.entry(earlier_hash).or_insert(earlier);
                }
                indexed = at;
                match first_of_hash.get(&hash) {
                    Some(&earlier) if key(earlier) == this => true,
                    // Two keys of one 64-bit hash: too rare to index further.
                    Some(_) => (0..at).any(same),
                    None => false,
                }
            } else {
                (0..at).any(same)
            };
            let suspicion = self.suspects.entry(this.into()).or_insert(Suspicion {
                last_batch: batch,
                repeated_in_batch: false,
            });
            suspicion.last_batch = batch;
            suspicion.repeated_in_batch |= repeated;
        }
    }
}

/// A staged batch being reduced and filtered, and encoded, off the async workers
/// and in parallel; the next batch's [`SqlLoad::stage_frame`] writes it.
struct Writing {
    reducing: tokio::task::JoinHandle<
        Result<(aggregates::Partials, KeyFilter), aggregates::AggregateError>,
    >,
    encoding: tokio::task::JoinHandle<PolarsResult<segments::Encoded>>,
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
    /// This load's contribution to the aggregates, reduced batch by batch; away
    /// while `writing`.
    partials: aggregates::Partials,
    /// Away while `writing`.
    filter: Option<KeyFilter>,
    writing: Option<Writing>,
    /// The segment of each batch written so far, in batch order.
    staged: Vec<i64>,
    /// A batch failed to stage: the load can only be dropped (rolled back).
    broken: bool,
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
            partials: aggregates::Partials::default(),
            filter: Some(KeyFilter::new()),
            writing: None,
            staged: Vec::new(),
            broken: false,
        }
    }

    fn usable(&self) -> Result<(), StoreError> {
        match self.broken {
            true => Err(StoreError::Invalid(
                "an earlier batch of this load failed to stage; the load must start again".into(),
            )),
            false => Ok(()),
        }
    }

    /// Waits for the batch being prepared and writes its segment.
    async fn flush(&mut self) -> Result<(), StoreError> {
        let Some(writing) = self.writing.take() else {
            return Ok(());
        };
        let failed =
            |e: tokio::task::JoinError| StoreError::Invalid(format!("staging postings: {e}"));
        let (partials, filter) = writing
            .reducing
            .await
            .map_err(failed)?
            .map_err(|e| e.into_store("staging postings"))?;
        let encoded = writing
            .encoding
            .await
            .map_err(failed)?
            .map_err(polars_error("encoding postings"))?;
        self.partials = partials;
        self.filter = Some(filter);
        let id = segments::insert_encoded(&mut self.tx, None, encoded).await?;
        self.staged.push(id);
        Ok(())
    }

    /// Notes a batch, writes the one before it, and sends this one to be reduced and
    /// encoded.
    async fn stage_batch(&mut self, postings: PostingFrame) -> Result<(), StoreError> {
        if postings.is_empty() {
            return Ok(());
        }
        let Noted {
            numbers,
            open,
            starts,
            keys,
        } = self.index.note(&postings, self.batches)?;
        self.batches += 1;
        self.postings += postings.height() as i64;
        // Past the control sum's range the load is refused at commit, and its
        // partial sums could overflow: they are not reduced.
        let reducing = self.index.control_sum.is_some();
        let frame = segments::frame(postings, numbers).map_err(polars_error("staging postings"))?;
        // The previous batch is written while this one was noted; this one is
        // prepared while the next is read, mapped and noted.
        self.flush().await?;
        let chart = self.chart.clone();
        let batch = self.batches - 1;
        let mut partials = std::mem::take(&mut self.partials);
        let mut filter = self.filter.take().expect("flushed");
        let reduced = frame.select(segments::AGGREGATED.into_iter().chain([segments::KEY]));
        let reduced = reduced.map_err(polars_error("staging postings"))?;
        self.writing = Some(Writing {
            reducing: tokio::task::spawn_blocking(move || {
                filter.note(reduced.column(segments::KEY)?.str()?, &starts, batch);
                if reducing {
                    // The load's own number is not known yet; 0 is no load's.
                    partials.add(reduced.select(segments::AGGREGATED)?, 0, &open, &chart)?;
                }
                Ok((partials, filter))
            }),
            encoding: tokio::task::spawn_blocking(move || {
                segments::Encoded::with_keys(frame, keys)
            }),
        });
        Ok(())
    }

    fn filter(&self) -> &KeyFilter {
        self.filter
            .as_ref()
            .expect("the key filter is back once the load is flushed")
    }

    /// Settles the keys the filter flagged: a key whose rows got more than one number
    /// is one transaction whose rows are apart. Its rows are renumbered in the load's
    /// segments and it is checked again from them. Returns the errors of those
    /// transactions and how many numbers were merged away.
    async fn merge_scattered(&mut self) -> Result<(Vec<RowError>, u32), StoreError> {
        if self.filter().suspects.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let ranges = segments::staged_ranges(&mut self.tx).await?;
        let batch_of: HashMap<i64, u32> = (0..).zip(&self.staged).map(|(b, &id)| (id, b)).collect();
        let holds = |range: &Option<(String, String)>, key: &str| match range {
            Some((first, last)) => first.as_str() <= key && key <= last.as_str(),
            None => true,
        };
        // Most flags are false. A key not started twice in the batch it was flagged
        // in, and outside the key range of every earlier batch's segment, started
        // once: its segments need not be read.
        let mut suspects: Vec<String> = self
            .filter()
            .suspects
            .iter()
            .filter(|(key, suspicion)| {
                suspicion.repeated_in_batch
                    || ranges.iter().any(|(id, range)| {
                        batch_of
                            .get(id)
                            .is_none_or(|&batch| batch < suspicion.last_batch)
                            && holds(range, key)
                    })
            })
            .map(|(key, _)| key.to_string())
            .collect();
        if suspects.is_empty() {
            return Ok((Vec::new(), 0));
        }
        suspects.sort_unstable();
        // Only segments whose key range holds a suspect can hold its rows.
        let staged: Vec<i64> = ranges
            .into_iter()
            .filter(|(_, range)| match range {
                Some((first, last)) => {
                    let from = suspects.partition_point(|k| k < first);
                    suspects.get(from).is_some_and(|k| k <= last)
                }
                None => true,
            })
            .map(|(id, _)| id)
            .collect();
        let suspects: HashSet<String> = suspects.into_iter().collect();
        let mut numbers: HashMap<String, BTreeSet<u32>> = HashMap::new();
        for &id in &staged {
            let frame =
                segments::read(&mut self.tx, id, Some(&[segments::KEY, segments::TXN])).await?;
            let keys = segments::column::<StringType>(&frame, segments::KEY)?;
            let txns = segments::column::<UInt32Type>(&frame, segments::TXN)?;
            for (key, txn) in keys.iter().zip(txns.into_no_null_iter()) {
                if let Some(key) = key.filter(|k| suspects.contains(*k)) {
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
        let mut whole: BTreeMap<String, (u64, Option<i64>, HashSet<String>)> = BTreeMap::new();
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
            let dates = segments::dates(&frame)?;
            let branches = segments::column::<StringType>(&frame, segments::BRANCH)?;
            let lines = segments::column::<UInt64Type>(&frame, segments::LINE)?;
            let amounts = segments::column::<Int64Type>(&frame, segments::AMOUNT)?;
            for row in 0..frame.height() {
                let Some(key) = keys.get(row).filter(|k| numbers.contains_key(*k)) else {
                    continue;
                };
                let entry =
                    whole
                        .entry(key.to_string())
                        .or_insert((u64::MAX, Some(0), HashSet::new()));
                entry.0 = entry.0.min(lines.get(row).unwrap_or_default());
                entry.1 = entry
                    .1
                    .and_then(|sum| sum.checked_add(amounts.get(row).unwrap_or_default()));
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

    /// Hides the earlier versions of this load's transactions, found by key in the
    /// source's key index (built first if the source has earlier postings and no
    /// index yet), and indexes this load's transactions in their place. Returns the
    /// (month, branch) buckets the earlier versions leave, their sums to take out of
    /// the aggregates, and how many were replaced and how many of those unchanged.
    async fn replace_by_key(
        &mut self,
        source: &str,
        load_id: i64,
    ) -> Result<(BTreeSet<(String, String)>, aggregates::Partials, Replaced), StoreError> {
        let mut left = BTreeSet::new();
        let mut removed = aggregates::Partials::default();
        let mut replaced = Replaced::default();
        let backend = self.backend.clone();
        if !keys::is_indexed(&mut self.tx, source).await? {
            // Until a load's keys may meet earlier ones of its source (a first load,
            // the batches of a first sync in key order), nothing is replaced and
            // the source needs no index.
            let Some((first, last)) = self.index.key_range.clone() else {
                return Ok((left, removed, replaced));
            };
            let met =
                segments::holding_keys(&mut self.tx, source, load_id, (&first, &last)).await?;
            if met.is_empty() {
                return Ok((left, removed, replaced));
            }
            keys::build(backend.as_ref(), &mut self.tx, source, load_id).await?;
        }
        let mut parts: HashMap<(i64, u32), keys::Entry> = HashMap::new();
        for id in segments::ids(&mut self.tx, &format!("load_id = {load_id}"), &[]).await? {
            let frame = segments::read(&mut self.tx, id, Some(&keys::INDEXED)).await?;
            let found = segments::blocking("indexing transactions by key", move || {
                keys::entries(&frame)
            })
            .await?;
            let (split, whole): (Vec<_>, Vec<_>) = found
                .into_iter()
                .partition(|entry| self.index.split.contains(&entry.txn));
            for entry in split {
                keys::merge_part(&mut parts, load_id, entry);
            }
            let batch = self
                .replace_entries(source, load_id, whole, &mut left)
                .await?;
            self.reduce_replaced(batch, &mut removed, &mut replaced)?;
        }
        let split: Vec<keys::Entry> = parts.into_values().collect();
        let batch = self
            .replace_entries(source, load_id, split, &mut left)
            .await?;
        self.reduce_replaced(batch, &mut removed, &mut replaced)?;
        Ok((left, removed, replaced))
    }

    /// Indexes `entries` of load `load_id` and hides the earlier versions the index
    /// had of them; returns those earlier versions, each with whether the new one
    /// holds the same.
    async fn replace_entries(
        &mut self,
        source: &str,
        load_id: i64,
        entries: Vec<keys::Entry>,
        left: &mut BTreeSet<(String, String)>,
    ) -> Result<Vec<(keys::Held, bool)>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.backend.clone();
        let wanted: Vec<&str> = entries.iter().map(|entry| entry.key.as_str()).collect();
        let mut earlier = keys::find(backend.as_ref(), &mut self.tx, source, &wanted).await?;
        let mut hidden = Vec::with_capacity(earlier.len());
        let mut versions = Vec::with_capacity(earlier.len());
        for entry in &entries {
            if let Some(old) = earlier.remove(&entry.key) {
                hidden.push((old.load_id, old.txn, old.held.postings.len()));
                left.insert(keys::bucket(&old.held));
                let same = old.held == entry.held;
                versions.push((old.held, same));
            }
        }
        keys::mark_replaced(backend.as_ref(), &mut self.tx, &hidden).await?;
        keys::insert(backend.as_ref(), &mut self.tx, source, load_id, &entries).await?;
        Ok(versions)
    }

    /// Counts replaced versions and adds their sums to `removed`.
    fn reduce_replaced(
        &self,
        versions: Vec<(keys::Held, bool)>,
        removed: &mut aggregates::Partials,
        replaced: &mut Replaced,
    ) -> Result<(), StoreError> {
        if versions.is_empty() {
            return Ok(());
        }
        replaced.replaced += versions.len() as i64;
        replaced.unchanged += versions.iter().filter(|(_, same)| *same).count() as i64;
        let held: Vec<keys::Held> = versions.into_iter().map(|(held, _)| held).collect();
        let frame = keys::aggregated(&held).map_err(polars_error("replacing transactions"))?;
        match removed.add(frame, 0, &HashSet::new(), &self.chart) {
            Ok(()) => Ok(()),
            Err(aggregates::AggregateError::Overflow(overflow)) => {
                Err(self.index.too_large(overflow))
            }
            Err(error) => Err(error.into_store("replacing transactions")),
        }
    }
}

/// Transactions a load replaced, and how many of them it left as they were.
#[derive(Default)]
struct Replaced {
    replaced: i64,
    unchanged: i64,
}

#[async_trait]
impl LoadSession for SqlLoad {
    async fn stage_frame(&mut self, postings: PostingFrame) -> Result<(), StoreError> {
        self.usable()?;
        let staged = self.stage_batch(postings).await;
        self.broken = staged.is_err();
        staged
    }

    async fn commit(
        mut self: Box<Self>,
        record: LoadRecord,
        max_errors: usize,
    ) -> Result<LoadSummary, StoreError> {
        self.usable()?;
        let started = std::time::Instant::now();
        self.flush().await?;
        let flushed = started.elapsed();
        self.index.end_transaction(false);
        let (mut errors, merged) = self.merge_scattered().await?;
        let merged_in = started.elapsed();
        errors.extend(TxnIndex::errors(self.index.pending.iter().map(
            |(key, txn)| {
                let sum = (!txn.overflowed).then_some(txn.sum);
                (key.to_string(), txn.first_line, sum, txn.mixed)
            },
        )));
        let uncounted = self.index.refused_count - self.index.refused.len();
        errors.append(&mut self.index.refused);
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            let total = errors.len() + uncounted;
            errors.truncate(max_errors);
            // Dropping the transaction rolls it back.
            return Err(LoadRejected { errors, total }.into());
        }
        let transactions = i64::from(self.index.numbers - merged);
        let control_sum = self
            .index
            .control_sum
            .expect("a control sum out of range is a refused row");
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
        .bind(control_sum)
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
            .keys()
            .map(|&(year, month, branch)| {
                (
                    format!("{year:04}-{month:02}"),
                    self.index.branches.name(branch).to_string(),
                )
            })
            .collect();
        let (left, removed, replaced) = self.replace_by_key(&record.source, load_id).await?;
        buckets.extend(left);
        let counts = LoadCounts {
            added: transactions - replaced.replaced,
            replaced: replaced.replaced,
            unchanged: replaced.unchanged,
            removed: 0,
        };
        sqlx::query(
            "UPDATE loads SET added = $1, replaced = $2, unchanged = $3, removed = $4 WHERE id = $5",
        )
        .bind(counts.added)
        .bind(counts.replaced)
        .bind(counts.unchanged)
        .bind(counts.removed)
        .bind(load_id)
        .execute(&mut *self.tx)
        .await
        .context("recording what the load changed")?;
        let replaced_in = started.elapsed();

        let months: BTreeSet<String> = buckets.iter().map(|(m, _)| m.clone()).collect();
        let partials = std::mem::take(&mut self.partials);
        let backend = self.backend.clone();
        if self.index.reread {
            log::debug!(
                "A transaction's rows were apart in the file; aggregating the load from storage."
            );
        }
        // Rollups written before they counted their postings cannot tell when a
        // change leaves them empty: their months are recomputed (and counted) instead.
        let uncounted: Option<String> =
            sqlx::query_scalar("SELECT month FROM month_rollups WHERE postings IS NULL LIMIT 1")
                .fetch_optional(&mut *self.tx)
                .await
                .context("reading aggregates")?;
        let recomputed = if !self.index.reread && uncounted.is_none() {
            // Every bucket changes by exactly this load's sums less those of the
            // versions it replaced: no other posting needs reading.
            aggregates::apply_to_stored(
                backend.as_ref(),
                &mut self.tx,
                partials,
                removed,
                self.chart.clone(),
            )
            .await
        } else {
            // The load's own sums are not known batch by batch (or the rollups are
            // uncounted): its months are aggregated from storage, where the
            // versions it replaced are hidden.
            aggregates::recompute(
                backend.as_ref(),
                &mut self.tx,
                Some(&months),
                None,
                Default::default(),
                Some(self.chart.clone()),
            )
            .await
        };
        match recomputed {
            Ok(_) => {}
            // Dropping the transaction rolls the load back.
            Err(RecomputeError::Overflow(overflow)) => return Err(self.index.too_large(overflow)),
            Err(RecomputeError::Store(error)) => return Err(error),
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
        let aggregated_in = started.elapsed();
        crate::compaction::compact(
            &mut self.tx,
            &record.source,
            load_id,
            self.index.numbers,
            &months,
        )
        .await?;
        self.tx.commit().await.context("committing the load")?;
        log::debug!(
            "Committed a load: last batch written after {flushed:?}, scattered keys settled after {merged_in:?}, \
             replaced transactions after {replaced_in:?}, aggregates after {aggregated_in:?}, committed after {:?}.",
            started.elapsed()
        );
        self.generations.bump(&self.tenant_id);
        Ok(LoadSummary {
            load_id,
            transactions,
            postings: self.postings,
            control_sum: Amount::from_units(control_sum),
            buckets_recomputed: buckets.len() as i64,
            counts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This crate is built for tests without overflow checks, as a release build is
    /// (see the workspace Cargo.toml): a sum left unchecked wraps in the tests as in
    /// production, so they show the checks rather than a debug build's panic.
    #[test]
    fn tests_run_with_release_arithmetic() {
        let largest = std::hint::black_box(i64::MAX);
        assert_eq!(largest + 1, i64::MIN);
    }

    /// A filter far too small flags nearly every key; only keys that did start
    /// earlier in the same batch are marked repeated, by the scan and by the hash
    /// set it turns into after [`SCANNED_SUSPECTS`] flags alike.
    #[test]
    fn flagged_keys_know_whether_their_batch_repeats_them() {
        // One layer of 60 bits that never grows.
        let mut filter = KeyFilter::with_layers(6, 6);
        let keys: Vec<String> = (0..200).map(|i| format!("K{i}")).collect();
        let mut batch: Vec<&str> = keys.iter().map(String::as_str).collect();
        // Repeats early (scanned) and late (looked up in the set).
        batch.insert(5, "K1");
        batch.push("K150");
        let column = StringChunked::from_slice("key".into(), &batch);
        let starts: Vec<u32> = (0..batch.len() as u32).collect();
        filter.note(&column, &starts, 0);
        assert!(
            filter.suspects.len() > SCANNED_SUSPECTS * 2,
            "the filter is saturated"
        );
        let repeated: BTreeSet<&str> = filter
            .suspects
            .iter()
            .filter(|(_, s)| s.repeated_in_batch)
            .map(|(key, _)| &**key)
            .collect();
        assert_eq!(repeated, BTreeSet::from(["K1", "K150"]));

        // A later batch moves a key's last flag on, and keeps what was known.
        let later = StringChunked::from_slice("key".into(), &["K1", "K7"]);
        filter.note(&later, &[0, 1], 3);
        let k1 = filter.suspects["K1"];
        let k7 = filter.suspects["K7"];
        assert_eq!((k1.last_batch, k1.repeated_in_batch), (3, true));
        assert_eq!((k7.last_batch, k7.repeated_in_batch), (3, false));
    }

    /// The filter grows a layer at a time as keys come: every key added is found
    /// again (in whichever layer holds it), and keys never added are rarely taken
    /// for added ones, however many layers there are.
    #[test]
    fn the_layered_filter_grows_without_losing_keys() {
        let mut filter = LayeredBloom::new(1_000, 1 << 20);
        let added = |i: u32| format!("T{i:09}");
        for i in 0..300_000 {
            let hash = filter.hash(&added(i));
            assert!(
                !filter.insert_hash(hash) || i > 0,
                "an empty filter has nothing"
            );
        }
        // Layers of 1k, 4k, 16k and 64k keys are full; the fifth (256k) takes the rest.
        assert_eq!(filter.layers.len(), 5);
        assert!((0..300_000).all(|i| filter.contains(&added(i))));
        assert!((0..300_000).all(|i| filter.insert_hash(filter.hash(&added(i)))));
        let false_positives = (0..100_000)
            .filter(|i| filter.contains(&format!("U{i:09}")))
            .count();
        // About 3% for each full layer, less for the last.
        assert!(false_positives < 15_000, "{false_positives} of 100000");
    }
}
