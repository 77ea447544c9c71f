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
//! polars computes them from postings in batches. Each batch reduces to partial sums
//! that add up across batches: per (month, branch, account), and per transaction and
//! cash-flow section. A transaction's cash flow needs all of its postings, so a
//! transaction that may continue in another batch stays open until
//! [`Partials::finish`]; the others become flows at once, which keeps a rebuild's
//! memory to a batch plus the few transactions a load split across segments.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use polars::prelude::*;
use sqlx::{Any, Executor, Row, Transaction};

use crate::backend::Backend;
use crate::error::{Context, StoreError};
use crate::segments::{self, polars_error, ACCOUNT, AMOUNT, BRANCH, MONTH, TXN};

const UID: &str = "uid";
const CODE: &str = "code";
const CLASS: &str = "class";
const CATEGORY: &str = "category";
/// The cash-flow section of an account, or `cash` for a cash account.
const FLOW_SECTION: &str = "flow_section";
const CASH: &str = "cash";
const INFLOW: &str = "inflow";

/// Rows of postings reduced at once when rebuilding: large enough for polars to use
/// both cores well, small enough to keep a rebuild's memory flat.
const BATCH_ROWS: usize = 1 << 20;

/// Metrics of one (month, branch): `metric:key` → ten-thousandths.
pub(crate) type Rollups = BTreeMap<(String, String), BTreeMap<String, i64>>;

/// The chart of accounts as aggregation needs it.
#[derive(Clone)]
pub(crate) struct Chart(DataFrame);

impl Chart {
    pub(crate) async fn read(tx: &mut Transaction<'static, Any>) -> Result<Chart, StoreError> {
        let rows = sqlx::query("SELECT code, class, category, cash_flow_section FROM accounts")
            .fetch_all(&mut **tx)
            .await
            .context("reading accounts")?;
        let mut codes = Vec::with_capacity(rows.len());
        let mut classes = Vec::with_capacity(rows.len());
        let mut categories = Vec::with_capacity(rows.len());
        let mut sections = Vec::with_capacity(rows.len());
        for row in rows {
            let class: String = row.try_get("class").context("reading accounts")?;
            let section: String = row
                .try_get("cash_flow_section")
                .context("reading accounts")?;
            sections.push(if class == CASH {
                CASH.to_string()
            } else {
                section
            });
            classes.push(class);
            codes.push(
                row.try_get::<String, _>("code")
                    .context("reading accounts")?,
            );
            categories.push(
                row.try_get::<Option<String>, _>("category")
                    .context("reading accounts")?
                    .unwrap_or_default(),
            );
        }
        let frame = DataFrame::new(
            codes.len(),
            vec![
                Column::new(CODE.into(), codes),
                Column::new(CLASS.into(), classes),
                Column::new(CATEGORY.into(), categories),
                Column::new(FLOW_SECTION.into(), sections),
            ],
        )
        .map_err(polars_error("reading accounts"))?;
        Ok(Chart(frame))
    }
}

/// Postings reduced to sums that add up across batches.
#[derive(Default)]
pub(crate) struct Partials {
    per_account: Vec<DataFrame>,
    /// Per transaction and flow section, of transactions that may continue elsewhere.
    open: Vec<DataFrame>,
    /// Finished cash flows per (month, branch, section, direction).
    flows: Vec<DataFrame>,
}

/// A transaction's id across loads: its load's id and its number within the load.
fn uid(load_id: i64, txn: u32) -> i64 {
    (load_id << 32) | i64::from(txn)
}

impl Partials {
    /// Adds postings (the [`segments::AGGREGATED`] columns) of `load_id`. Transactions
    /// for which `open` says true may have postings in other batches and are finished
    /// by [`Partials::finish`]; `None` keeps every transaction open.
    pub(crate) fn add(
        &mut self,
        postings: DataFrame,
        load_id: i64,
        open: Option<&HashSet<u32>>,
        chart: &Chart,
    ) -> PolarsResult<()> {
        let txns = postings.column(TXN)?.u32()?;
        let uids: Vec<i64> = txns
            .into_no_null_iter()
            .map(|txn| uid(load_id, txn))
            .collect();
        let mask: BooleanChunked = match open {
            None => BooleanChunked::full("open".into(), true, postings.height()),
            Some(set) => txns
                .into_no_null_iter()
                .map(|txn| set.contains(&txn))
                .collect(),
        };
        let mut postings = postings;
        postings.with_column(Column::new(UID.into(), uids))?;
        self.reduce(postings, mask, chart)
    }

    fn reduce(
        &mut self,
        postings: DataFrame,
        open: BooleanChunked,
        chart: &Chart,
    ) -> PolarsResult<()> {
        if postings.height() == 0 {
            return Ok(());
        }
        self.per_account.push(
            postings
                .clone()
                .lazy()
                .group_by([col(MONTH), col(BRANCH), col(ACCOUNT)])
                .agg([col(AMOUNT).sum()])
                .collect()?,
        );
        let per_txn = |frame: DataFrame| {
            frame
                .lazy()
                .join(
                    chart
                        .0
                        .clone()
                        .lazy()
                        .select([col(CODE), col(FLOW_SECTION)]),
                    [col(ACCOUNT)],
                    [col(CODE)],
                    JoinArgs::new(JoinType::Inner),
                )
                .group_by([col(UID), col(MONTH), col(BRANCH), col(FLOW_SECTION)])
                .agg([col(AMOUNT).sum()])
        };
        let open_count = open.sum().unwrap_or(0) as usize;
        if open_count > 0 {
            self.open.push(per_txn(postings.filter(&open)?).collect()?);
        }
        if open_count < postings.height() {
            let closed = postings.filter(&!&open)?;
            self.flows.push(flows(per_txn(closed)).collect()?);
        }
        self.compact()
    }

    /// Folds the sums of many batches into one frame each, so that what a long load
    /// or rebuild holds does not grow with the number of batches.
    fn compact(&mut self) -> PolarsResult<()> {
        const MOST_FRAMES: usize = 8;
        if self.per_account.len() > MOST_FRAMES {
            let frames = std::mem::take(&mut self.per_account);
            self.per_account.push(
                stacked(frames)?
                    .group_by([col(MONTH), col(BRANCH), col(ACCOUNT)])
                    .agg([col(AMOUNT).sum()])
                    .collect()?,
            );
        }
        if self.flows.len() > MOST_FRAMES {
            let frames = std::mem::take(&mut self.flows);
            self.flows.push(
                stacked(frames)?
                    .group_by([col(MONTH), col(BRANCH), col(FLOW_SECTION), col(INFLOW)])
                    .agg([col(AMOUNT).sum()])
                    .collect()?,
            );
        }
        Ok(())
    }

    /// Folds everything added into rollups, with the `*` totals of each month.
    pub(crate) fn finish(mut self, chart: &Chart) -> PolarsResult<Rollups> {
        let mut rollups = Rollups::new();
        if !self.open.is_empty() {
            let open = stacked(std::mem::take(&mut self.open))?
                .group_by([col(UID), col(MONTH), col(BRANCH), col(FLOW_SECTION)])
                .agg([col(AMOUNT).sum()]);
            self.flows.push(flows(open).collect()?);
        }
        if !self.per_account.is_empty() {
            let per_account = stacked(self.per_account)?
                .group_by([col(MONTH), col(BRANCH), col(ACCOUNT)])
                .agg([col(AMOUNT).sum()])
                .join(
                    chart.0.clone().lazy(),
                    [col(ACCOUNT)],
                    [col(CODE)],
                    JoinArgs::new(JoinType::Inner),
                );
            let by_class = per_account
                .clone()
                .group_by([col(MONTH), col(BRANCH), col(CLASS)])
                .agg([col(AMOUNT).sum()])
                .collect()?;
            add_rows(&mut rollups, &by_class, |row| format!("class:{}", row[0]))?;
            let by_category = per_account
                .filter(
                    col(CLASS)
                        .eq(lit("revenue"))
                        .or(col(CLASS).eq(lit("cogs")))
                        .or(col(CLASS).eq(lit("expense"))),
                )
                .group_by([col(MONTH), col(BRANCH), col(CLASS), col(CATEGORY)])
                .agg([col(AMOUNT).sum()])
                .select([
                    col(MONTH),
                    col(BRANCH),
                    col(CLASS),
                    col(CATEGORY),
                    col(AMOUNT),
                ])
                .collect()?;
            add_rows(&mut rollups, &by_category, |row| {
                format!("{}:{}", row[0], row[1])
            })?;
        }
        if !self.flows.is_empty() {
            let flows = stacked(self.flows)?
                .group_by([col(MONTH), col(BRANCH), col(FLOW_SECTION), col(INFLOW)])
                .agg([col(AMOUNT).sum()])
                .with_column(
                    when(col(INFLOW))
                        .then(lit("_in"))
                        .otherwise(lit("_out"))
                        .alias(INFLOW),
                )
                .select([
                    col(MONTH),
                    col(BRANCH),
                    col(FLOW_SECTION),
                    col(INFLOW),
                    col(AMOUNT),
                ])
                .collect()?;
            add_rows(&mut rollups, &flows, |row| {
                format!("cash_flow:{}{}", row[0], row[1])
            })?;
        }
        let mut totals: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for ((month, _), metrics) in &rollups {
            let total = totals.entry(month.clone()).or_default();
            for (name, units) in metrics {
                *total.entry(name.clone()).or_default() += units;
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

/// Per-transaction sums (by flow section) → cash flows of the transactions that
/// touch cash, per (month, branch, section, direction).
fn flows(per_txn: LazyFrame) -> LazyFrame {
    let with_cash = per_txn
        .clone()
        .filter(col(FLOW_SECTION).eq(lit(CASH)))
        .select([col(UID)])
        .unique(None, UniqueKeepStrategy::Any);
    per_txn
        .join(
            with_cash,
            [col(UID)],
            [col(UID)],
            JoinArgs::new(JoinType::Inner),
        )
        .filter(col(FLOW_SECTION).neq(lit(CASH)))
        .with_column((lit(0i64) - col(AMOUNT)).alias(AMOUNT))
        .filter(col(AMOUNT).neq(lit(0i64)))
        .with_column(col(AMOUNT).gt(lit(0i64)).alias(INFLOW))
        .group_by([col(MONTH), col(BRANCH), col(FLOW_SECTION), col(INFLOW)])
        .agg([col(AMOUNT).sum()])
}

fn stacked(frames: Vec<DataFrame>) -> PolarsResult<LazyFrame> {
    concat(
        frames.into_iter().map(IntoLazy::lazy).collect::<Vec<_>>(),
        UnionArgs::default(),
    )
}

/// Adds a frame of `month, branch, <name parts…>, amount` rows to the rollups.
fn add_rows(
    rollups: &mut Rollups,
    frame: &DataFrame,
    name: impl Fn(&[&str]) -> String,
) -> PolarsResult<()> {
    let columns = frame.columns();
    let months = columns[0].str()?;
    let branches = columns[1].str()?;
    let parts: Vec<&StringChunked> = columns[2..columns.len() - 1]
        .iter()
        .map(|c| c.str())
        .collect::<PolarsResult<_>>()?;
    let amounts = columns[columns.len() - 1].i64()?;
    let mut values: Vec<&str> = Vec::with_capacity(parts.len());
    for row in 0..frame.height() {
        values.clear();
        values.extend(parts.iter().map(|p| p.get(row).unwrap_or_default()));
        let key = (
            months.get(row).unwrap_or_default().to_string(),
            branches.get(row).unwrap_or_default().to_string(),
        );
        *rollups
            .entry(key)
            .or_default()
            .entry(name(&values))
            .or_default() += amounts.get(row).unwrap_or_default();
    }
    Ok(())
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
/// those of load `except`, whose contribution `partials` already holds. Returns the
/// (month, branch) rollups written.
pub(crate) async fn recompute(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    months: Option<&BTreeSet<String>>,
    except: Option<i64>,
    mut partials: Partials,
) -> Result<u64, StoreError> {
    let chart = Chart::read(tx).await?;
    let split = split_transactions(tx).await?;
    let none = HashSet::new();
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
    let wanted: Option<HashSet<&str>> = months.map(|m| m.iter().map(String::as_str).collect());
    let mut batch: Vec<DataFrame> = Vec::new();
    let mut batch_open: Vec<BooleanChunked> = Vec::new();
    let mut batch_rows = 0usize;
    for id in ids {
        let stored = segments::read(tx, id, Some(&segments::AGGREGATED)).await?;
        let mut frame = stored.frame;
        if let Some(wanted) = &wanted {
            let keep: BooleanChunked = frame
                .column(MONTH)
                .and_then(|c| c.str().cloned())
                .map_err(polars_error("filtering months"))?
                .iter()
                .map(|m| m.is_some_and(|m| wanted.contains(m)))
                .collect();
            frame = frame
                .filter(&keep)
                .map_err(polars_error("filtering months"))?;
        }
        let open = split.get(&stored.load_id).unwrap_or(&none);
        let txns = frame
            .column(TXN)
            .and_then(|c| c.u32().cloned())
            .map_err(polars_error("reading transactions"))?;
        batch_open.push(
            txns.into_no_null_iter()
                .map(|t| open.contains(&t))
                .collect(),
        );
        let uids: Vec<i64> = txns
            .into_no_null_iter()
            .map(|txn| uid(stored.load_id, txn))
            .collect();
        frame
            .with_column(Column::new(UID.into(), uids))
            .map_err(polars_error("reading transactions"))?;
        batch_rows += frame.height();
        batch.push(frame);
        if batch_rows >= BATCH_ROWS {
            partials = reduced(
                partials,
                std::mem::take(&mut batch),
                std::mem::take(&mut batch_open),
                &chart,
            )
            .await?;
            batch_rows = 0;
        }
    }
    let partials = reduced(partials, batch, batch_open, &chart).await?;
    let rollups =
        segments::blocking("computing aggregates", move || partials.finish(&chart)).await?;
    write_rollups(backend, tx, months, &rollups).await
}

/// `partials` with a batch of postings (and which of their transactions are open) added.
async fn reduced(
    mut partials: Partials,
    frames: Vec<DataFrame>,
    open: Vec<BooleanChunked>,
    chart: &Chart,
) -> Result<Partials, StoreError> {
    if frames.is_empty() {
        return Ok(partials);
    }
    let chart = chart.clone();
    segments::blocking("computing aggregates", move || {
        let mut frames = frames.into_iter();
        let mut open = open.into_iter();
        let (Some(mut frame), Some(mut mask)) = (frames.next(), open.next()) else {
            return Ok(partials);
        };
        for (other, other_mask) in frames.zip(open) {
            frame.vstack_mut(&other)?;
            mask.append(&other_mask)?;
        }
        partials.reduce(frame, mask, &chart)?;
        Ok(partials)
    })
    .await
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
    let rows: Vec<(&(String, String), String, i64)> = rollups
        .iter()
        .map(|(bucket, metrics)| {
            let cash = metrics.get("class:cash").copied().unwrap_or_default();
            let json = serde_json::to_string(metrics).unwrap_or_default();
            (bucket, json, cash)
        })
        .collect();
    for chunk in rows.chunks(backend.rows_per_insert()) {
        let sql = format!(
            "INSERT INTO month_rollups (month, branch, metrics, cash) VALUES {}",
            crate::ledger::placeholders(chunk.len(), 4, backend.anonymous_placeholders())
        );
        let mut query = sqlx::query(&sql);
        for ((month, branch), json, cash) in chunk {
            query = query.bind(month).bind(branch).bind(json).bind(*cash);
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
