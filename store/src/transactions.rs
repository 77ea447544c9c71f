//! The transactions behind a report figure: those of a month range, optionally of one
//! branch and touching an account or a category's accounts, each with all its
//! postings, a page at a time in (date, source, key) order.
//!
//! Only segments whose manifest months overlap the range are read; within each, the
//! matching transactions are found from the filter columns and only those that can
//! be on the page are built, so a page costs the range's segments, not the ledger.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::NaiveDate;
use ledgersync_schemas::posting_column::{
    ACCOUNT, AMOUNT, BRANCH, CURRENCY, KEY, LINE, MEMO, OCCURRED_AT, ORIGINAL_AMOUNT,
};
use ledgersync_schemas::{Amount, Month};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::{Any, Transaction};

use crate::aggregates;
use crate::error::{Context, StoreError};
use crate::export::{day_range, listed, with_loads, Listed};
use crate::segments::{self, LOAD, TXN};

/// The most transactions one page holds.
pub const MAX_PAGE: usize = 1000;

/// Which transactions to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionQuery {
    pub from: Month,
    pub to: Month,
    pub branch: Option<String>,
    /// Transactions with a posting to this account.
    pub account: Option<String>,
    /// Transactions with a posting to an account of this category.
    pub category: Option<String>,
    /// 1 to [`MAX_PAGE`].
    pub limit: usize,
    /// Where the previous page ended.
    pub after: Option<TransactionCursor>,
}

/// A position in the (date, source, key) order of transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionCursor {
    pub date: String,
    pub source: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LedgerTransaction {
    /// `YYYY-MM-DD`, in the tenant's timezone.
    pub date: String,
    pub source: String,
    /// The source's own key of the transaction.
    pub key: String,
    pub branch: String,
    pub postings: Vec<LedgerPosting>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LedgerPosting {
    pub account: String,
    /// In the tenant's currency.
    pub amount: Amount,
    pub currency: String,
    /// In `currency`.
    pub original_amount: Amount,
    pub memo: String,
    /// The source instant, when the source gave one.
    pub occurred_at: Option<String>,
    /// The load that brought it, and its line (or row) in that load's source.
    pub load_id: i64,
    pub line: u64,
}

/// One page of transactions, and where the next starts if there are more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionPage {
    pub transactions: Vec<LedgerTransaction>,
    pub next: Option<TransactionCursor>,
}

/// A transaction's place in the order: days since 1970-01-01, source, key.
type Place = (i32, String, String);

/// What every segment is filtered by.
struct Filter {
    days: (i32, i32),
    branch: Option<String>,
    /// Accounts of which a posting makes a transaction match; any if `None`.
    accounts: Option<HashSet<String>>,
    after: Option<Place>,
    limit: usize,
}

pub(crate) async fn page(
    tx: &mut Transaction<'static, Any>,
    query: &TransactionQuery,
) -> Result<TransactionPage, StoreError> {
    if !(1..=MAX_PAGE).contains(&query.limit) {
        return Err(StoreError::Invalid(format!(
            "a page holds 1 to {MAX_PAGE} transactions, not {}",
            query.limit
        )));
    }
    if query.from > query.to {
        return Err(StoreError::Invalid(format!(
            "the range {} to {} is empty: the first month comes after the last",
            query.from, query.to
        )));
    }
    let after = match &query.after {
        None => None,
        Some(cursor) => {
            let date = NaiveDate::parse_from_str(&cursor.date, "%Y-%m-%d").map_err(|_| {
                StoreError::Invalid(format!("the cursor's date '{}' is not a date", cursor.date))
            })?;
            Some((
                date.to_epoch_days(),
                cursor.source.clone(),
                cursor.key.clone(),
            ))
        }
    };
    let mut accounts = query.account.iter().cloned().collect::<HashSet<_>>();
    if let Some(category) = &query.category {
        let in_category: Vec<String> =
            sqlx::query_scalar("SELECT code FROM accounts WHERE category = $1")
                .bind(category)
                .fetch_all(&mut **tx)
                .await
                .context("reading a category's accounts")?;
        accounts = match &query.account {
            Some(account) => in_category.into_iter().filter(|c| c == account).collect(),
            None => in_category.into_iter().collect(),
        };
    }
    let filter = Arc::new(Filter {
        days: day_range(Some(query.from), Some(query.to)),
        branch: query.branch.clone(),
        accounts: (query.account.is_some() || query.category.is_some()).then_some(accounts),
        after,
        limit: query.limit,
    });
    // The first `limit + 1` transactions after the cursor, the last telling whether
    // there is a next page.
    let mut chosen: BTreeMap<Place, LedgerTransaction> = BTreeMap::new();
    // Chosen transactions a load wrote to several segments, by load and number.
    let split = aggregates::split_transactions(tx).await?;
    let mut chosen_split: HashMap<i64, HashMap<u32, Place>> = HashMap::new();
    let segments_listed = listed(tx, Some(query.from), Some(query.to)).await?;
    // Segments are unpacked and searched on blocking threads, a few at a time, while
    // the next ones are read from the store; their finds are taken in segment order.
    let in_flight = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let mut searching = VecDeque::new();
    for segment in &segments_listed {
        if searching.len() >= in_flight {
            let (segment, search) = searching.pop_front().expect("a search is running");
            let found = segments::joined("listing transactions", search).await?;
            take(
                &mut chosen,
                &mut chosen_split,
                &split,
                filter.limit,
                segment,
                found,
            );
        }
        let stored = segments::read_bytes(tx, segment.id).await?;
        let shared = filter.clone();
        // Only places up to the page's current last can still make it.
        let before = (chosen.len() > filter.limit)
            .then(|| chosen.keys().next_back().cloned())
            .flatten();
        let (load, source) = (segment.load, segment.source.clone());
        let search = tokio::task::spawn_blocking(move || {
            matching(stored, load, &source, &shared, before.as_ref())
        });
        searching.push_back((segment, search));
    }
    while let Some((segment, search)) = searching.pop_front() {
        let found = segments::joined("listing transactions", search).await?;
        take(
            &mut chosen,
            &mut chosen_split,
            &split,
            filter.limit,
            segment,
            found,
        );
    }
    // A split transaction's postings from all its segments, whichever matched.
    for numbers in chosen_split.values() {
        for place in numbers.values() {
            if let Some(transaction) = chosen.get_mut(place) {
                transaction.postings.clear();
            }
        }
    }
    for segment in segments_listed.iter().filter(|s| !s.compacted) {
        let Some(numbers) = chosen_split.get(&segment.load) else {
            continue;
        };
        let wanted: HashSet<u32> = numbers
            .iter()
            .filter(|(_, place)| chosen.contains_key(place))
            .map(|(txn, _)| *txn)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let stored = segments::read_bytes(tx, segment.id).await?;
        let (load, days) = (segment.load, filter.days);
        let found = segments::blocking("listing transactions", move || {
            let frame = with_loads(stored.decode(None)?, load, days)?;
            postings_of(&frame, &wanted)
        })
        .await?;
        for (txn, (_, postings)) in found {
            if let Some(transaction) = numbers.get(&txn).and_then(|p| chosen.get_mut(p)) {
                transaction.postings.extend(postings);
            }
        }
    }
    let more = chosen.len() > filter.limit;
    let mut transactions: Vec<LedgerTransaction> = chosen.into_values().collect();
    transactions.truncate(filter.limit);
    for transaction in &mut transactions {
        transaction.postings.sort_by_key(|p| (p.load_id, p.line));
    }
    let next = more
        .then(|| transactions.last())
        .flatten()
        .map(|last| TransactionCursor {
            date: last.date.clone(),
            source: last.source.clone(),
            key: last.key.clone(),
        });
    Ok(TransactionPage { transactions, next })
}

/// What a segment's search found.
type Found = Vec<(Place, u32, LedgerTransaction)>;

/// Keeps the first `limit + 1` transactions of the page, noting those of `segment`
/// that its load split across segments.
fn take(
    chosen: &mut BTreeMap<Place, LedgerTransaction>,
    chosen_split: &mut HashMap<i64, HashMap<u32, Place>>,
    split: &HashMap<i64, HashSet<u32>>,
    limit: usize,
    segment: &Listed,
    found: Found,
) {
    let split_here = split.get(&segment.load).filter(|_| !segment.compacted);
    for (place, txn, transaction) in found {
        if split_here.is_some_and(|numbers| numbers.contains(&txn)) {
            chosen_split
                .entry(segment.load)
                .or_default()
                .insert(txn, place.clone());
        }
        chosen.entry(place).or_insert(transaction);
        if chosen.len() > limit + 1 {
            chosen.pop_last();
        }
    }
}

/// The columns that choose transactions.
const CHOOSING: [&str; 5] = [TXN, segments::DATE, BRANCH, ACCOUNT, KEY];

/// The transactions of segment `bytes` (of manifest load `load`) that match, placed
/// after the cursor and up to `before`: at most `limit + 1` of them, first in order.
/// They are chosen from the [`CHOOSING`] columns; the others are read only if some
/// are.
fn matching(
    stored: segments::Stored,
    load: i64,
    source: &str,
    filter: &Filter,
    before: Option<&Place>,
) -> PolarsResult<Found> {
    let ipc = stored.unpacked()?;
    let frame = with_loads(ipc.read(Some(&CHOOSING))?, load, filter.days)?;
    let text = |name: &str| -> PolarsResult<StringChunked> {
        Ok(frame.column(name)?.str()?.rechunk().into_owned())
    };
    let txns = frame.column(TXN)?.u32()?.rechunk();
    let (branches, accounts, keys) = (text(BRANCH)?, text(ACCOUNT)?, text(KEY)?);
    let dates = frame.column(segments::DATE)?.date()?.physical().rechunk();
    // Transactions with a posting that passes the filters, and their place.
    let mut places: BTreeMap<u32, Place> = BTreeMap::new();
    for row in 0..frame.height() {
        let (Some(txn), Some(day)) = (txns.get(row), dates.get(row)) else {
            continue;
        };
        // Days first: most rows of a full page's later segments end here.
        if before.is_some_and(|last| day > last.0)
            || filter.after.as_ref().is_some_and(|after| day < after.0)
        {
            continue;
        }
        let branch = branches.get(row).unwrap_or_default();
        if filter.branch.as_deref().is_some_and(|b| b != branch) {
            continue;
        }
        let account = accounts.get(row).unwrap_or_default();
        if filter
            .accounts
            .as_ref()
            .is_some_and(|a| !a.contains(account))
        {
            continue;
        }
        if places.contains_key(&txn) {
            continue;
        }
        let place = (
            day,
            source.to_string(),
            keys.get(row).unwrap_or_default().to_string(),
        );
        let after_cursor = filter.after.as_ref().is_none_or(|after| &place > after);
        // Equal: the rest of a transaction a load wrote to several segments.
        let before_last = before.is_none_or(|last| &place <= last);
        if after_cursor && before_last {
            places.insert(txn, place);
        }
    }
    // Only the first `limit + 1` can be on the page.
    let mut ordered: Vec<(Place, u32)> = places.into_iter().map(|(t, p)| (p, t)).collect();
    ordered.sort_unstable();
    ordered.truncate(filter.limit + 1);
    if ordered.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: HashSet<u32> = ordered.iter().map(|(_, t)| *t).collect();
    let frame = with_loads(ipc.read(None)?, load, filter.days)?;
    let mut postings = postings_of(&frame, &wanted)?;
    Ok(ordered
        .into_iter()
        .map(|(place, txn)| {
            let (branch, postings) = postings.remove(&txn).unwrap_or_default();
            let transaction = LedgerTransaction {
                date: NaiveDate::from_epoch_days(place.0)
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                source: place.1.clone(),
                key: place.2.clone(),
                branch,
                postings,
            };
            (place, txn, transaction)
        })
        .collect())
}

/// The branch and postings of transactions `txns` of a segment ([`with_loads`]).
fn postings_of(
    frame: &DataFrame,
    txns: &HashSet<u32>,
) -> PolarsResult<HashMap<u32, (String, Vec<LedgerPosting>)>> {
    let text = |name: &str| -> PolarsResult<StringChunked> {
        Ok(frame.column(name)?.str()?.rechunk().into_owned())
    };
    let numbers = frame.column(TXN)?.u32()?.rechunk();
    let (branches, accounts) = (text(BRANCH)?, text(ACCOUNT)?);
    let (currencies, memos, instants) = (text(CURRENCY)?, text(MEMO)?, text(OCCURRED_AT)?);
    let amounts = frame.column(AMOUNT)?.i64()?.rechunk();
    let originals = frame.column(ORIGINAL_AMOUNT)?.i64()?.rechunk();
    let loads = frame.column(LOAD)?.i64()?.rechunk();
    let lines = frame.column(LINE)?.u64()?.rechunk();
    let mut found: HashMap<u32, (String, Vec<LedgerPosting>)> = HashMap::new();
    for row in 0..frame.height() {
        let Some(txn) = numbers.get(row).filter(|t| txns.contains(t)) else {
            continue;
        };
        let (branch, postings) = found.entry(txn).or_default();
        if postings.is_empty() {
            *branch = branches.get(row).unwrap_or_default().to_string();
        }
        let amount = Amount::from_units(amounts.get(row).unwrap_or_default());
        postings.push(LedgerPosting {
            account: accounts.get(row).unwrap_or_default().to_string(),
            amount,
            currency: currencies.get(row).unwrap_or_default().to_string(),
            original_amount: originals.get(row).map_or(amount, Amount::from_units),
            memo: memos.get(row).unwrap_or_default().to_string(),
            occurred_at: instants.get(row).map(str::to_string),
            load_id: loads.get(row).unwrap_or_default(),
            line: lines.get(row).unwrap_or_default(),
        });
    }
    Ok(found)
}
