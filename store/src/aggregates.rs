//! The precomputed aggregates: one rollup per (month, branch), and per month one for
//! branch `*` holding the total of all branches.
//!
//! A rollup holds sums by account class, by category within revenue, COGS and
//! expenses, and the direct cash flow. A cash flow is classified by the counterpart
//! postings of each transaction that touches a cash account: every non-cash posting
//! moves cash by minus its amount, netted per section within the transaction, so a
//! transfer between two cash accounts is no flow and the flows always add up to the
//! change in cash.
//!
//! They are computed from postings in batches. Each batch reduces to partial sums
//! that add up across batches: per (month, branch, account), and per transaction and
//! cash-flow section. A transaction's cash flow needs all of its postings, so a
//! transaction that may continue in another batch stays open until
//! [`Partials::finish`]; the others become flows at once, which keeps a rebuild's
//! memory to a batch plus the few transactions a load split across segments.
//! Complete transactions whose rows are together (as files and segments keep them)
//! become flows in one pass; the sums polars groups are keyed by one integer each.
//!
//! Every sum is checked: a rollup that does not fit in an amount is an
//! [`AggregateOverflow`] naming its month, branch and metric, never a wrapped figure.
//! polars' sums wrap, so a frame is summed by polars only when the absolute values
//! of all its amounts fit together (no group's sum can overflow then), and exactly
//! here otherwise.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::Datelike;
use ledgersync_schemas::{Amount, ShortTexts};
use polars::prelude::*;
use sqlx::{Any, Executor, Row, Transaction};

use crate::backend::Backend;
use crate::error::{Context, StoreError};
use crate::segments::{self, polars_error, ACCOUNT, AMOUNT, BRANCH, DATE, TXN};

const UID: &str = "uid";
const CASH: &str = "cash";

/// Rows of postings reduced at once when rebuilding: large enough for polars to use
/// both cores well, small enough to keep a rebuild's memory flat.
const BATCH_ROWS: usize = 1 << 20;

/// Metrics of one (month, branch): `metric:key` → ten-thousandths; and [`POSTINGS`].
pub(crate) type Rollups = BTreeMap<(String, String), BTreeMap<String, i64>>;

/// Among a rollup's metrics while it is computed: how many postings it sums. Stored
/// apart (`month_rollups.postings`): a bucket is kept while it has postings, so that
/// it is there whether its sums were recomputed or changed by loads since, and a
/// metric at zero is not kept.
const POSTINGS: &str = "postings";

/// An aggregate whose sum does not fit in an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sum of {metric} in {month} at {} is beyond the largest amount, {}", branch_words(.branch), Amount::MAX)]
pub(crate) struct AggregateOverflow {
    pub(crate) month: String,
    /// A branch, or [`ledgersync_schemas::BRANCH_TOTAL`].
    pub(crate) branch: String,
    /// As stored (`class:revenue`), or `account 4000`.
    pub(crate) metric: String,
}

pub(crate) fn branch_words(branch: &str) -> String {
    match branch {
        ledgersync_schemas::BRANCH_TOTAL => "all branches".to_string(),
        named => format!("branch {named}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AggregateError {
    #[error(transparent)]
    Polars(#[from] PolarsError),
    #[error(transparent)]
    Overflow(#[from] AggregateOverflow),
}

impl AggregateError {
    /// As a store error: an overflow is the data's, refused in words; anything else
    /// a failure of `doing`.
    pub(crate) fn into_store(self, doing: &'static str) -> StoreError {
        match self {
            AggregateError::Polars(error) => polars_error(doing)(error),
            AggregateError::Overflow(overflow) => StoreError::Invalid(overflow.to_string()),
        }
    }
}

/// Why rollups could not be recomputed: the store failed, or a sum does not fit.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecomputeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Overflow(#[from] AggregateOverflow),
}

impl From<RecomputeError> for StoreError {
    fn from(error: RecomputeError) -> StoreError {
        match error {
            RecomputeError::Store(error) => error,
            RecomputeError::Overflow(overflow) => StoreError::Invalid(overflow.to_string()),
        }
    }
}

/// The overflow of `metric` in bucket `bucket` (see [`Partials`]), named.
fn overflow_in(bucket: u64, branches: &Numbering, metric: impl Into<String>) -> AggregateError {
    AggregateOverflow {
        month: month_name(bucket >> NAME_BITS),
        branch: branches
            .name((bucket & ((1 << NAME_BITS) - 1)) as u32)
            .to_string(),
        metric: metric.into(),
    }
    .into()
}

/// Adds `amount` to the metric `name`; none if the sum does not fit.
fn add_metric(metrics: &mut BTreeMap<String, i64>, name: String, amount: i64) -> Option<()> {
    let sum = metrics.entry(name).or_default();
    *sum = sum.checked_add(amount)?;
    Some(())
}

/// The chart of accounts as aggregation needs it: accounts by number, each with
/// its class, category and cash-flow section number (0 for cash accounts).
#[derive(Clone)]
pub(crate) struct Chart {
    numbers: PlHashMap<String, u32>,
    classes: Vec<String>,
    categories: Vec<String>,
    sections: Vec<u8>,
    /// Section names by number; `cash` first.
    section_names: Vec<String>,
}

impl Chart {
    /// The code of the account numbered `number` (for error messages).
    fn code(&self, number: u32) -> &str {
        self.numbers
            .iter()
            .find(|(_, &n)| n == number)
            .map_or("", |(code, _)| code.as_str())
    }

    pub(crate) async fn read(tx: &mut Transaction<'static, Any>) -> Result<Chart, StoreError> {
        let rows = sqlx::query(
            "SELECT code, class, category, cash_flow_section FROM accounts ORDER BY code",
        )
        .fetch_all(&mut **tx)
        .await
        .context("reading accounts")?;
        let mut chart = Chart {
            numbers: PlHashMap::default(),
            classes: Vec::with_capacity(rows.len()),
            categories: Vec::with_capacity(rows.len()),
            sections: Vec::with_capacity(rows.len()),
            section_names: vec![CASH.to_string()],
        };
        for row in rows {
            let code: String = row.try_get("code").context("reading accounts")?;
            let class: String = row.try_get("class").context("reading accounts")?;
            let section: String = row
                .try_get("cash_flow_section")
                .context("reading accounts")?;
            let number = if class == CASH {
                0
            } else {
                match chart.section_names.iter().position(|s| *s == section) {
                    Some(number) => number,
                    None => {
                        chart.section_names.push(section);
                        chart.section_names.len() - 1
                    }
                }
            };
            chart.numbers.insert(code, chart.classes.len() as u32);
            chart.sections.push(number as u8);
            chart.classes.push(class);
            chart.categories.push(
                row.try_get::<Option<String>, _>("category")
                    .context("reading accounts")?
                    .unwrap_or_default(),
            );
        }
        if chart.section_names.len() > 1 << SECTION_BITS {
            return Err(StoreError::Invalid(format!(
                "the chart has {} cash-flow sections; at most {} are supported",
                chart.section_names.len() - 1,
                (1 << SECTION_BITS) - 1
            )));
        }
        Ok(chart)
    }
}

/// Bits of a key holding a cash-flow section number.
const SECTION_BITS: u32 = 3;
/// Bits of a key holding a branch or an account number.
const NAME_BITS: u32 = 24;

/// Postings reduced to sums that add up across batches. Sums are keyed by one
/// integer each, far faster to group than several text columns, so months,
/// branches, accounts and sections are numbered first:
/// - a bucket is `month << 24 | branch` (months counted from year 0),
/// - per account: `bucket << 24 | account`,
/// - per transaction and section: `uid << 3 | section`, with the bucket beside it,
/// - a flow: `bucket << 4 | section << 1 | inflow`.
#[derive(Default)]
pub(crate) struct Partials {
    branches: Numbering,
    branch_texts: ShortTexts<u32>,
    /// Account numbers in the chart, none for an account no longer in it.
    account_texts: ShortTexts<Option<u32>>,
    /// Summed as rows are read: there are few keys (months × branches × accounts),
    /// which a hash map adds to faster than polars groups a frame per batch. Each
    /// with how many postings it sums.
    per_account: PlHashMap<u64, (i64, i64)>,
    /// Per transaction and section, of transactions that may continue elsewhere.
    open: Vec<DataFrame>,
    /// Finished cash flows by flow key: few (months × branches × sections × 2).
    flows: PlHashMap<u64, i64>,
}

const KEY: &str = "key";
const BUCKET: &str = "bucket";

/// Names (branches) numbered in the order they are first seen, looked up both ways.
#[derive(Default)]
pub(crate) struct Numbering {
    numbers: PlHashMap<String, u32>,
    names: Vec<String>,
}

impl Numbering {
    pub(crate) fn number(&mut self, name: &str) -> u32 {
        if let Some(&number) = self.numbers.get(name) {
            return number;
        }
        let number = self.names.len() as u32;
        self.names.push(name.to_string());
        self.numbers.insert(name.to_string(), number);
        number
    }

    /// The name of a number this numbering gave; empty for any other.
    pub(crate) fn name(&self, number: u32) -> &str {
        self.names.get(number as usize).map_or("", String::as_str)
    }
}

/// A transaction's id across loads: its load's id and its number within the load.
fn uid(load_id: i64, txn: u32) -> i64 {
    (load_id << 32) | i64::from(txn)
}

fn month_number(month: &str) -> Option<u64> {
    let year: u64 = month.get(..4)?.parse().ok()?;
    let month: u64 = month.get(5..7)?.parse().ok()?;
    (1..=12).contains(&month).then_some(year * 12 + month - 1)
}

/// The [`month_number`] of the date `days` after 1970-01-01; none before year 0.
fn month_number_of(days: i32) -> Option<u64> {
    let date = chrono::NaiveDate::from_epoch_days(days)?;
    let year = u64::try_from(date.year()).ok()?;
    Some(year * 12 + u64::from(date.month0()))
}

/// Month numbers of dates, remembered by day in a small table: a load's rows
/// come from a few years of days, in any order.
pub(crate) struct MonthOfDate {
    /// Indexed by the day's low bits: (day, its month number).
    known: Box<[(i32, u64); MonthOfDate::DAYS]>,
}

impl Default for MonthOfDate {
    fn default() -> Self {
        // No month number is u64::MAX: it marks an empty slot.
        MonthOfDate {
            known: Box::new([(0, u64::MAX); MonthOfDate::DAYS]),
        }
    }
}

impl MonthOfDate {
    /// Days remembered at once: almost three years without two sharing a slot.
    const DAYS: usize = 1024;

    #[inline]
    pub(crate) fn get(&mut self, days: i32) -> PolarsResult<u64> {
        let slot = &mut self.known[days as usize % Self::DAYS];
        if slot.0 == days && slot.1 != u64::MAX {
            return Ok(slot.1);
        }
        let month = month_number_of(days)
            .ok_or_else(|| polars_err!(ComputeError: "stored date {days} is out of range"))?;
        *slot = (days, month);
        Ok(month)
    }
}

fn month_name(number: u64) -> String {
    format!("{:04}-{:02}", number / 12, number % 12 + 1)
}

impl Partials {
    /// Adds postings (the [`segments::AGGREGATED`] columns) of `load_id`. Transactions
    /// in `open` may have postings in other batches and are finished by
    /// [`Partials::finish`].
    pub(crate) fn add(
        &mut self,
        postings: DataFrame,
        load_id: i64,
        open: &HashSet<u32>,
        chart: &Chart,
    ) -> Result<(), AggregateError> {
        // A batch has few open transactions (those at its edges), asked about for
        // every row: a scan of a few numbers beats hashing each.
        const SCANNED: usize = 8;
        let few: Option<Vec<u32>> = (open.len() <= SCANNED).then(|| open.iter().copied().collect());
        let (postings, open) = identified(postings, load_id, |txn| match &few {
            Some(few) => few.contains(&txn),
            None => open.contains(&txn),
        })?;
        self.reduce(postings, open, chart)
    }

    /// Reduces postings with a `uid` column; `open` marks the rows of transactions
    /// that may continue in other batches.
    fn reduce(
        &mut self,
        mut postings: DataFrame,
        mut open: Vec<bool>,
        chart: &Chart,
    ) -> Result<(), AggregateError> {
        if postings.height() == 0 {
            return Ok(());
        }
        // Rows without a date, account, amount or transaction count nowhere (stored
        // postings have none): dropped first, the loop reads values unchecked.
        let required = [DATE, ACCOUNT, AMOUNT, UID];
        if required
            .iter()
            .any(|name| postings.column(name).is_ok_and(|c| c.null_count() > 0))
        {
            let mut complete = BooleanChunked::full("complete".into(), true, postings.height());
            for name in required {
                complete = complete & postings.column(name)?.is_not_null();
            }
            postings = postings.filter(&complete)?;
            open = open
                .into_iter()
                .zip(complete.iter())
                .filter_map(|(open, complete)| (complete == Some(true)).then_some(open))
                .collect();
        }
        // Numeric columns as plain slices (a rebuild stacks segments: one chunk first);
        // iterating polars' chunked arrays cost more than the sums themselves.
        let dates = postings.column(DATE)?.date()?.physical().rechunk();
        let dates = dates.cont_slice()?;
        let Partials {
            branches,
            branch_texts,
            account_texts,
            per_account,
            open: open_sums,
            flows: flow_sums,
        } = self;
        let branch_numbers = branch_texts.values(postings.column(BRANCH)?.str()?, |name| {
            branches.number(name)
        });
        let account_numbers = account_texts.values(postings.column(ACCOUNT)?.str()?, |code| {
            chart.numbers.get(code).copied()
        });
        let amounts = postings.column(AMOUNT)?.i64()?.rechunk();
        let amounts = amounts.cont_slice()?;
        let uids = postings.column(UID)?.i64()?.rechunk();
        let uids = uids.cont_slice()?;
        let rows = postings.height();
        // Rows of transactions that may continue elsewhere, and of complete ones.
        let mut continuing = PerTxnRows::default();
        let mut complete = PerTxnRows::with_capacity(rows);
        let mut months = MonthOfDate::default();
        for (((((&date, branch_number), account), &amount), &uid), &open) in dates
            .iter()
            .zip(branch_numbers)
            .zip(account_numbers)
            .zip(amounts)
            .zip(uids)
            .zip(&open)
        {
            // Postings of accounts no longer in the chart count nowhere, as before.
            let Some(number) = account else {
                continue;
            };
            let month = months.get(date)?;
            let bucket = month << NAME_BITS | u64::from(branch_number);
            let (sum, count) = per_account
                .entry(bucket << NAME_BITS | u64::from(number))
                .or_default();
            *sum = sum.checked_add(amount).ok_or_else(|| {
                overflow_in(bucket, branches, format!("account {}", chart.code(number)))
            })?;
            *count += 1;
            let rows = match open {
                true => &mut continuing,
                false => &mut complete,
            };
            rows.keys
                .push(uid << SECTION_BITS | i64::from(chart.sections[number as usize]));
            rows.buckets.push(bucket);
            rows.amounts.push(amount);
        }
        if !continuing.keys.is_empty() {
            open_sums.push(by_txn(continuing.into_frame()?, branches)?);
        }
        if !complete.keys.is_empty()
            && !runs_of_transactions(&complete, flow_sums, branches, chart)?
        {
            let per_txn = by_txn(complete.into_frame()?, branches)?;
            add_flows(&per_txn, flow_sums, branches, chart)?;
        }
        self.compact()
    }

    /// Folds the sums of many batches into one frame, so that what a long load or
    /// rebuild holds does not grow with the number of batches.
    fn compact(&mut self) -> Result<(), AggregateError> {
        const MOST_FRAMES: usize = 8;
        if self.open.len() > MOST_FRAMES {
            let all = stacked(std::mem::take(&mut self.open))?.collect()?;
            self.open.push(by_txn(all, &self.branches)?);
        }
        Ok(())
    }

    /// Folds everything added into rollups, with the `*` totals of each month.
    pub(crate) fn finish(mut self, chart: &Chart) -> Result<Rollups, AggregateError> {
        let mut rollups = Rollups::new();
        if !self.open.is_empty() {
            let open = stacked(std::mem::take(&mut self.open))?.collect()?;
            let per_txn = by_txn(open, &self.branches)?;
            add_flows(&per_txn, &mut self.flows, &self.branches, chart)?;
        }
        let bucket_name = |bucket: u64| {
            let branch = (bucket & ((1 << NAME_BITS) - 1)) as u32;
            (
                month_name(bucket >> NAME_BITS),
                self.branches.name(branch).to_string(),
            )
        };
        for (&key, &(amount, count)) in &self.per_account {
            let account = (key & ((1 << NAME_BITS) - 1)) as usize;
            let bucket = key >> NAME_BITS;
            let metrics = rollups.entry(bucket_name(bucket)).or_default();
            add_metric(metrics, POSTINGS.to_string(), count)
                .ok_or_else(|| overflow_in(bucket, &self.branches, POSTINGS))?;
            let class = &chart.classes[account];
            let mut names = vec![format!("class:{class}")];
            if matches!(class.as_str(), "revenue" | "cogs" | "expense") {
                names.push(format!("{class}:{}", chart.categories[account]));
            }
            for name in names {
                add_metric(metrics, name.clone(), amount)
                    .ok_or_else(|| overflow_in(bucket, &self.branches, name))?;
            }
        }
        for (&key, &amount) in &self.flows {
            let bucket = key >> (SECTION_BITS + 1);
            let metrics = rollups.entry(bucket_name(bucket)).or_default();
            let name = flow_metric(key, chart);
            add_metric(metrics, name.clone(), amount)
                .ok_or_else(|| overflow_in(bucket, &self.branches, name))?;
        }
        let mut totals: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for ((month, _), metrics) in &rollups {
            let total = totals.entry(month.clone()).or_default();
            for (name, &units) in metrics {
                add_metric(total, name.clone(), units).ok_or_else(|| AggregateOverflow {
                    month: month.clone(),
                    branch: ledgersync_schemas::BRANCH_TOTAL.to_string(),
                    metric: name.clone(),
                })?;
            }
        }
        for (month, metrics) in totals {
            rollups.insert(
                (month, ledgersync_schemas::BRANCH_TOTAL.to_string()),
                metrics,
            );
        }
        Ok(rollups)
    }
}

/// Postings reduced to what cash flows need: transaction and section (`key`),
/// bucket and amount.
#[derive(Default)]
struct PerTxnRows {
    keys: Vec<i64>,
    buckets: Vec<u64>,
    amounts: Vec<i64>,
}

impl PerTxnRows {
    fn with_capacity(rows: usize) -> PerTxnRows {
        PerTxnRows {
            keys: Vec::with_capacity(rows),
            buckets: Vec::with_capacity(rows),
            amounts: Vec::with_capacity(rows),
        }
    }

    fn into_frame(self) -> PolarsResult<DataFrame> {
        DataFrame::new(
            self.keys.len(),
            vec![
                Int64Chunked::from_vec(KEY.into(), self.keys).into_column(),
                UInt64Chunked::from_vec(BUCKET.into(), self.buckets).into_column(),
                Int64Chunked::from_vec(AMOUNT.into(), self.amounts).into_column(),
            ],
        )
    }
}

/// The metric a flow key (`bucket << 4 | section << 1 | inflow`) adds to.
fn flow_metric(key: u64, chart: &Chart) -> String {
    let section = &chart.section_names[((key >> 1) & ((1 << SECTION_BITS) - 1)) as usize];
    let direction = if key & 1 == 1 { "in" } else { "out" };
    format!("cash_flow:{section}_{direction}")
}

/// Adds the cash flow `flow` of a transaction in `bucket` and `section` to `flows`.
fn add_flow(
    flows: &mut PlHashMap<u64, i64>,
    bucket: u64,
    section: u64,
    flow: i64,
    branches: &Numbering,
    chart: &Chart,
) -> Result<(), AggregateError> {
    let key = bucket << (SECTION_BITS + 1) | section << 1 | u64::from(flow > 0);
    let sum = flows.entry(key).or_default();
    *sum = sum
        .checked_add(flow)
        .ok_or_else(|| overflow_in(bucket, branches, flow_metric(key, chart)))?;
    Ok(())
}

/// Adds to `flows` the cash flows of complete transactions whose rows are together,
/// as files and segments keep them: one pass, summing each transaction's sections as
/// its rows go by. False, with nothing added, if some transaction's rows are apart
/// (its number comes again after higher ones of its load), for the grouping path.
fn runs_of_transactions(
    rows: &PerTxnRows,
    flows: &mut PlHashMap<u64, i64>,
    branches: &Numbering,
    chart: &Chart,
) -> Result<bool, AggregateError> {
    let mut highest: PlHashMap<i64, i64> = PlHashMap::default();
    let mut previous = None;
    for &key in &rows.keys {
        let uid = key >> SECTION_BITS;
        if previous == Some(uid) {
            continue;
        }
        previous = Some(uid);
        let top = highest.entry(uid >> 32).or_insert(-1);
        if uid & 0xFFFF_FFFF <= *top {
            return Ok(false);
        }
        *top = uid & 0xFFFF_FFFF;
    }
    let mut sections = [0i64; 1 << SECTION_BITS];
    let mut current: Option<(i64, u64)> = None;
    let mut has_cash = false;
    let mut finish = |bucket: u64, sections: &mut [i64], has_cash: bool| {
        if has_cash {
            for (section, &sum) in sections.iter().enumerate().skip(1) {
                let metric =
                    || flow_metric(bucket << (SECTION_BITS + 1) | (section as u64) << 1, chart);
                let flow = sum
                    .checked_neg()
                    .ok_or_else(|| overflow_in(bucket, branches, metric()))?;
                if flow != 0 {
                    add_flow(flows, bucket, section as u64, flow, branches, chart)?;
                }
            }
        }
        sections.fill(0);
        Ok::<(), AggregateError>(())
    };
    for ((&key, &bucket), &amount) in rows.keys.iter().zip(&rows.buckets).zip(&rows.amounts) {
        let uid = key >> SECTION_BITS;
        match current {
            Some((open, open_bucket)) if open != uid => {
                finish(open_bucket, &mut sections, has_cash)?;
                has_cash = false;
                current = Some((uid, bucket));
            }
            None => current = Some((uid, bucket)),
            _ => {}
        }
        let section = (key & ((1 << SECTION_BITS) - 1)) as usize;
        has_cash |= section == 0;
        sections[section] = sections[section].checked_add(amount).ok_or_else(|| {
            overflow_in(
                bucket,
                branches,
                flow_metric(bucket << (SECTION_BITS + 1) | (section as u64) << 1, chart),
            )
        })?;
    }
    if let Some((_, bucket)) = current {
        finish(bucket, &mut sections, has_cash)?;
    }
    Ok(true)
}

/// Per-posting `key` (transaction and section), `bucket` and `amount` → sums per key
/// (`key`, `amount`, `bucket`). Grouped by polars when no sum can overflow, and
/// exactly here, checked, when the amounts together could.
fn by_txn(frame: DataFrame, branches: &Numbering) -> Result<DataFrame, AggregateError> {
    let amounts = frame.column(AMOUNT)?.i64()?;
    let bounded = amounts
        .into_no_null_iter()
        .try_fold(0i64, |total, amount| {
            total.checked_add(amount.checked_abs()?)
        })
        .is_some();
    if bounded {
        return Ok(frame
            .lazy()
            .group_by([col(KEY)])
            .agg([col(AMOUNT).sum(), col(BUCKET).first()])
            .collect()?);
    }
    let keys = frame.column(KEY)?.i64()?;
    let buckets = frame.column(BUCKET)?.u64()?;
    let mut sums: PlHashMap<i64, (i64, u64)> = PlHashMap::default();
    for ((key, bucket), amount) in keys
        .into_no_null_iter()
        .zip(buckets.into_no_null_iter())
        .zip(amounts.into_no_null_iter())
    {
        let (sum, first_bucket) = sums.entry(key).or_insert((0, bucket));
        *sum = sum.checked_add(amount).ok_or_else(|| {
            overflow_in(
                *first_bucket,
                branches,
                "sum of one transaction's postings in a cash-flow section",
            )
        })?;
    }
    let mut keys = Vec::with_capacity(sums.len());
    let mut amounts = Vec::with_capacity(sums.len());
    let mut buckets = Vec::with_capacity(sums.len());
    for (key, (amount, bucket)) in sums {
        keys.push(key);
        amounts.push(amount);
        buckets.push(bucket);
    }
    Ok(DataFrame::new(
        keys.len(),
        vec![
            Int64Chunked::from_vec(KEY.into(), keys).into_column(),
            Int64Chunked::from_vec(AMOUNT.into(), amounts).into_column(),
            UInt64Chunked::from_vec(BUCKET.into(), buckets).into_column(),
        ],
    )?)
}

/// Per-transaction sums by section (from [`by_txn`]) → the cash flows of the
/// transactions that touch cash (section 0), added to `flows`.
fn add_flows(
    per_txn: &DataFrame,
    flows: &mut PlHashMap<u64, i64>,
    branches: &Numbering,
    chart: &Chart,
) -> Result<(), AggregateError> {
    let keys = per_txn.column(KEY)?.i64()?;
    let amounts = per_txn.column(AMOUNT)?.i64()?;
    let buckets = per_txn.column(BUCKET)?.u64()?;
    let sections = (1i64 << SECTION_BITS) - 1;
    let with_cash: PlHashSet<i64> = keys
        .into_no_null_iter()
        .filter(|key| key & sections == 0)
        .map(|key| key >> SECTION_BITS)
        .collect();
    for ((key, amount), bucket) in keys
        .into_no_null_iter()
        .zip(amounts.into_no_null_iter())
        .zip(buckets.into_no_null_iter())
    {
        let section = (key & sections) as u64;
        if section == 0 || !with_cash.contains(&(key >> SECTION_BITS)) {
            continue;
        }
        let flow = amount.checked_neg().ok_or_else(|| {
            overflow_in(
                bucket,
                branches,
                flow_metric(bucket << (SECTION_BITS + 1) | section << 1, chart),
            )
        })?;
        if flow != 0 {
            add_flow(flows, bucket, section, flow, branches, chart)?;
        }
    }
    Ok(())
}

fn stacked(frames: Vec<DataFrame>) -> PolarsResult<LazyFrame> {
    concat(
        frames.into_iter().map(IntoLazy::lazy).collect::<Vec<_>>(),
        UnionArgs::default(),
    )
}

/// Transactions of each load that were split across its segments.
pub(crate) async fn split_transactions(
    tx: &mut Transaction<'static, Any>,
) -> Result<HashMap<i64, HashSet<u32>>, StoreError> {
    let rows = sqlx::query("SELECT load_id, txn FROM split_transactions")
        .fetch_all(&mut **tx)
        .await
        .context("reading split transactions")?;
    let mut split: HashMap<i64, HashSet<u32>> = HashMap::new();
    for row in rows {
        let load: i64 = row
            .try_get("load_id")
            .context("reading split transactions")?;
        let txn: i64 = row.try_get("txn").context("reading split transactions")?;
        split.entry(load).or_default().insert(txn as u32);
    }
    Ok(split)
}

/// Recomputes the rollups of `months` (all if `None`) from the stored postings, except
/// those of load `except`, whose contribution `partials` already holds, reduced with
/// `chart` (read anew if `None`). Returns the (month, branch) rollups written; a
/// rollup that does not fit is refused and nothing written.
pub(crate) async fn recompute(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    months: Option<&BTreeSet<String>>,
    except: Option<i64>,
    mut partials: Partials,
    chart: Option<Chart>,
) -> Result<u64, RecomputeError> {
    // `partials` name accounts by the chart they were reduced with.
    let chart = match chart {
        Some(chart) => chart,
        None => Chart::read(tx).await?,
    };
    let split = split_transactions(tx).await?;
    let except_clause = match except {
        Some(id) => format!(" AND load_id <> {id}"),
        None => String::new(),
    };
    let ids = match months {
        Some(months) if months.is_empty() => Vec::new(),
        Some(months) => {
            let first = months.first().map(String::as_str).unwrap_or_default();
            let last = months.last().map(String::as_str).unwrap_or_default();
            segments::ids(
                tx,
                &format!("last_month >= $1 AND first_month <= $2{except_clause}"),
                &[first, last],
            )
            .await?
        }
        None => segments::ids(tx, &format!("1 = 1{except_clause}"), &[]).await?,
    };
    let wanted: Option<Arc<HashSet<u64>>> =
        months.map(|m| Arc::new(m.iter().filter_map(|month| month_number(month)).collect()));
    let split = Arc::new(split);
    let mut batch: Vec<DataFrame> = Vec::new();
    let mut batch_open: Vec<Vec<bool>> = Vec::new();
    let mut batch_rows = 0usize;
    // Reducing a batch (polars, both cores) overlaps reading and decoding the next.
    let mut reducing: Option<tokio::task::JoinHandle<Result<Partials, AggregateError>>> = None;
    for id in ids {
        let stored = segments::read_bytes(tx, id).await?;
        let load_id = stored.load_id;
        let (wanted, split) = (wanted.clone(), split.clone());
        let (frame, open) = segments::blocking("reading postings", move || {
            prepared(stored, wanted.as_deref(), split.get(&load_id))
        })
        .await?;
        batch_rows += frame.height();
        batch.push(frame);
        batch_open.push(open);
        if batch_rows >= BATCH_ROWS {
            if let Some(running) = reducing.take() {
                partials = joined(running).await?;
            }
            reducing = Some(reduce_later(
                partials,
                std::mem::take(&mut batch),
                std::mem::take(&mut batch_open),
                chart.clone(),
            ));
            partials = Partials::default();
            batch_rows = 0;
        }
    }
    if let Some(running) = reducing.take() {
        partials = joined(running).await?;
    }
    let partials = joined(reduce_later(partials, batch, batch_open, chart.clone())).await?;
    let rollups = finished(partials, chart).await?;
    Ok(write_rollups(backend, tx, months, &rollups).await?)
}

/// The rollups of `partials`, finished on a blocking thread.
async fn finished(partials: Partials, chart: Chart) -> Result<Rollups, RecomputeError> {
    let rollups = tokio::task::spawn_blocking(move || partials.finish(&chart))
        .await
        .map_err(|e| StoreError::Invalid(format!("computing aggregates: {e}")))?;
    match rollups {
        Ok(rollups) => Ok(rollups),
        Err(AggregateError::Overflow(overflow)) => Err(overflow.into()),
        Err(other) => Err(other.into_store("computing aggregates").into()),
    }
}

/// A rollup as written: bucket, metrics (JSON), cash change, postings summed.
type RollupRow<'a> = (&'a (String, String), String, i64, Option<i64>);

/// Changes the stored aggregates by a load's own sums (`added`) less those of the
/// transactions it replaced (`removed`). Right only when `added` holds all the load's
/// postings and `removed` all the replaced ones', and every stored rollup counts its
/// postings (the commit recomputes instead while one written before counts does not):
/// every bucket then changes by exactly their difference, and no other posting needs
/// reading.
pub(crate) async fn apply_to_stored(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    added: Partials,
    removed: Partials,
    chart: Chart,
) -> Result<u64, RecomputeError> {
    let added = finished(added, chart.clone()).await?;
    let removed = finished(removed, chart).await?;
    // Per bucket, each metric's net change: what the load adds less what it takes
    // out, so that a sum is checked once, not in between.
    let mut changes: BTreeMap<(String, String), BTreeMap<String, i128>> = BTreeMap::new();
    for (sign, rollups) in [(1i128, added), (-1, removed)] {
        for (bucket, metrics) in rollups {
            let change = changes.entry(bucket).or_default();
            for (name, units) in metrics {
                *change.entry(name).or_default() += sign * i128::from(units);
            }
        }
    }
    let mut merged = Rollups::new();
    // Branches before their total, so that a sum out of range is named by the
    // branch that crossed it.
    let (totals, branches): (Vec<_>, Vec<_>) = changes
        .into_iter()
        .partition(|((_, branch), _)| branch == ledgersync_schemas::BRANCH_TOTAL);
    // The stored rollups of the months changed, read in one statement per month.
    let months: BTreeSet<String> = branches
        .iter()
        .chain(&totals)
        .map(|((month, _), _)| month.clone())
        .collect();
    let mut stored: HashMap<(String, String), (String, Option<i64>)> = HashMap::new();
    for month in &months {
        let rows: Vec<(String, String, Option<i64>)> =
            sqlx::query_as("SELECT branch, metrics, postings FROM month_rollups WHERE month = $1")
                .bind(month)
                .fetch_all(&mut **tx)
                .await
                .context("reading aggregates")?;
        for (branch, json, count) in rows {
            stored.insert((month.clone(), branch), (json, count));
        }
    }
    for ((month, branch), change) in branches.into_iter().chain(totals) {
        let stored = stored.remove(&(month.clone(), branch.clone()));
        let mut sums: BTreeMap<String, i64> = match stored {
            Some((json, count)) => {
                let mut sums: BTreeMap<String, i64> = serde_json::from_str(&json).map_err(|e| {
                    StoreError::Invalid(format!("the aggregates of {month} are unreadable: {e}"))
                })?;
                sums.extend(count.map(|count| (POSTINGS.to_string(), count)));
                sums
            }
            None => BTreeMap::new(),
        };
        for (name, units) in change {
            i64::try_from(units)
                .ok()
                .and_then(|units| add_metric(&mut sums, name.clone(), units))
                .ok_or_else(|| AggregateOverflow {
                    month: month.clone(),
                    branch: branch.clone(),
                    metric: name,
                })?;
        }
        merged.insert((month, branch), sums);
    }
    // The changed buckets are written again: the rest of each month stays as it is.
    for month in months {
        let changed: Vec<&String> = merged
            .keys()
            .filter(|(of, _)| *of == month)
            .map(|(_, branch)| branch)
            .collect();
        for chunk in changed.chunks(backend.rows_per_insert()) {
            let anonymous = backend.anonymous_placeholders();
            let sql = format!(
                "DELETE FROM month_rollups WHERE month = {} AND branch IN ({})",
                crate::ledger::parameters(1, 1, anonymous),
                crate::ledger::parameters(chunk.len(), 2, anonymous)
            );
            let mut query = sqlx::query(&sql).bind(&month);
            for branch in chunk {
                query = query.bind(*branch);
            }
            query
                .execute(&mut **tx)
                .await
                .context("replacing aggregates")?;
        }
    }
    Ok(write_rollups(backend, tx, Some(&BTreeSet::new()), &merged).await?)
}

/// A decoded segment's postings in `wanted` months, with their transactions' ids and
/// which of them are `open` (split across segments).
fn prepared(
    stored: segments::Stored,
    wanted: Option<&HashSet<u64>>,
    open: Option<&HashSet<u32>>,
) -> PolarsResult<(DataFrame, Vec<bool>)> {
    let load_id = stored.load_id;
    let mut frame = stored.decode(Some(&segments::AGGREGATED))?;
    if let Some(wanted) = wanted {
        let mut months = MonthOfDate::default();
        let keep = frame
            .column(DATE)?
            .date()?
            .physical()
            .iter()
            .map(|days| {
                Ok(days
                    .map(|d| months.get(d))
                    .transpose()?
                    .is_some_and(|m| wanted.contains(&m)))
            })
            .collect::<PolarsResult<BooleanChunked>>()?;
        frame = frame.filter(&keep)?;
    }
    identified(frame, load_id, |txn| open.is_some_and(|o| o.contains(&txn)))
}

/// Postings with the `uid` of their transaction, and which of those are `open`.
fn identified(
    mut frame: DataFrame,
    load_id: i64,
    open: impl Fn(u32) -> bool,
) -> PolarsResult<(DataFrame, Vec<bool>)> {
    let txns = frame.column(TXN)?.u32()?.clone();
    let mask: Vec<bool> = txns.into_no_null_iter().map(&open).collect();
    let uids: Vec<i64> = txns
        .into_no_null_iter()
        .map(|txn| uid(load_id, txn))
        .collect();
    frame.with_column(Int64Chunked::from_vec(UID.into(), uids).into_column())?;
    Ok((frame, mask))
}

fn reduce_later(
    mut partials: Partials,
    frames: Vec<DataFrame>,
    open: Vec<Vec<bool>>,
    chart: Chart,
) -> tokio::task::JoinHandle<Result<Partials, AggregateError>> {
    tokio::task::spawn_blocking(move || {
        let mut frames = frames.into_iter();
        let mut open = open.into_iter();
        let (Some(mut frame), Some(mut mask)) = (frames.next(), open.next()) else {
            return Ok(partials);
        };
        for (other, other_mask) in frames.zip(open) {
            frame.vstack_mut(&other)?;
            mask.extend(other_mask);
        }
        partials.reduce(frame, mask, &chart)?;
        Ok(partials)
    })
}

async fn joined(
    running: tokio::task::JoinHandle<Result<Partials, AggregateError>>,
) -> Result<Partials, RecomputeError> {
    match running
        .await
        .map_err(|e| StoreError::Invalid(format!("computing aggregates: {e}")))?
    {
        Ok(partials) => Ok(partials),
        Err(AggregateError::Overflow(overflow)) => Err(overflow.into()),
        Err(other) => Err(other.into_store("computing aggregates").into()),
    }
}

/// Replaces the rollups of `months` (all if `None`) with `rollups`.
async fn write_rollups(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    months: Option<&BTreeSet<String>>,
    rollups: &Rollups,
) -> Result<u64, StoreError> {
    match months {
        None => {
            tx.execute("DELETE FROM month_rollups")
                .await
                .context("replacing aggregates")?;
        }
        Some(months) => {
            for month in months {
                sqlx::query("DELETE FROM month_rollups WHERE month = $1")
                    .bind(month)
                    .execute(&mut **tx)
                    .await
                    .context("replacing aggregates")?;
            }
        }
    }
    // A metric at zero is not kept, nor a bucket without postings (see [`POSTINGS`]).
    let rows: Vec<RollupRow<'_>> = rollups
        .iter()
        .map(|(bucket, metrics)| {
            let count = metrics.get(POSTINGS).copied();
            let metrics: BTreeMap<&String, &i64> = metrics
                .iter()
                .filter(|(name, &units)| units != 0 && name.as_str() != POSTINGS)
                .collect();
            (bucket, metrics, count)
        })
        .filter(|(_, _, count)| *count != Some(0))
        .map(|(bucket, metrics, count)| {
            let cash = metrics
                .get(&"class:cash".to_string())
                .map_or(0, |&&units| units);
            let json = serde_json::to_string(&metrics).unwrap_or_default();
            (bucket, json, cash, count)
        })
        .collect();
    for chunk in rows.chunks(backend.rows_per_insert()) {
        let sql = format!(
            "INSERT INTO month_rollups (month, branch, metrics, cash, postings) VALUES {}",
            crate::ledger::placeholders(chunk.len(), 5, backend.anonymous_placeholders())
        );
        let mut query = sqlx::query(&sql);
        for ((month, branch), json, cash, count) in chunk {
            query = query
                .bind(month)
                .bind(branch)
                .bind(json)
                .bind(*cash)
                .bind(*count);
        }
        query
            .execute(&mut **tx)
            .await
            .context("writing aggregates")?;
    }
    Ok(rollups
        .keys()
        .filter(|(_, branch)| branch != ledgersync_schemas::BRANCH_TOTAL)
        .count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            numbers: [("1000".to_string(), 0), ("4000".to_string(), 1)]
                .into_iter()
                .collect(),
            classes: vec![CASH.into(), "revenue".into()],
            categories: vec![String::new(), "food".into()],
            sections: vec![0, 1],
            section_names: vec![CASH.into(), "operating".into()],
        }
    }

    /// Postings of 2025-01-15 at Kemang: (transaction, account, amount, dated).
    fn postings(rows: &[(u32, Option<&str>, Option<i64>, bool)]) -> DataFrame {
        let day = chrono::NaiveDate::from_ymd_opt(2025, 1, 15)
            .unwrap()
            .to_epoch_days();
        let days: Int32Chunked = rows.iter().map(|r| r.3.then_some(day)).collect();
        DataFrame::new(
            rows.len(),
            vec![
                Column::new(TXN.into(), rows.iter().map(|r| r.0).collect::<Vec<u32>>()),
                days.with_name(DATE.into()).into_date().into_column(),
                Column::new(BRANCH.into(), vec!["Kemang"; rows.len()]),
                Column::new(ACCOUNT.into(), rows.iter().map(|r| r.1).collect::<Vec<_>>()),
                Column::new(AMOUNT.into(), rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            ],
        )
        .unwrap()
    }

    /// A row without a date, account or amount counts nowhere: the sums equal those
    /// of the same postings without it.
    #[test]
    fn incomplete_rows_count_nowhere() {
        let sums = |frame: DataFrame| {
            let mut partials = Partials::default();
            partials.add(frame, 1, &HashSet::new(), &chart()).unwrap();
            partials.finish(&chart()).unwrap()
        };
        let clean = sums(postings(&[
            (0, Some("1000"), Some(1_000_000), true),
            (0, Some("4000"), Some(-1_000_000), true),
        ]));
        let with_gaps = sums(postings(&[
            (0, Some("1000"), Some(1_000_000), true),
            (0, None, Some(5), true),
            (0, Some("4000"), Some(-1_000_000), true),
            (0, Some("4000"), None, true),
            (0, Some("4000"), Some(7), false),
        ]));
        assert_eq!(with_gaps, clean);
        let kemang = &clean[&("2025-01".to_string(), "Kemang".to_string())];
        assert_eq!(kemang["class:revenue"], -1_000_000);
    }
}
