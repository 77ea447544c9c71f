//! The key index (`transaction_keys`): each transaction of an indexed source by its
//! key, with where it is stored (its segment's manifest load and number) and what it
//! holds. A load that brings a new version of a transaction finds the old one here,
//! hides it (`replaced_transactions`) and takes its sums out of the aggregates, all
//! without reading a segment: a sync that changes a thousand rows touches a thousand
//! index rows, whatever the keys look like and however large the ledger is.
//!
//! A source is indexed by the first load that may replace something of it (one whose
//! key range meets that of an earlier segment of the source), from the segments as
//! they are then; every load since keeps its index. So a source's first load, and
//! the batches of a first sync read in key order, write none: the index costs
//! nothing until the source's transactions start to change. Anything that rewrites
//! what the index holds (re-dating the ledger) drops the index, to be built again
//! when next needed.
//!
//! Entries keep the place a transaction was indexed at; compaction, which moves
//! blocks of transactions, notes each move (`moved_transactions`) and a lookup
//! follows them. Every transaction that writes the index stamps it and the ledger
//! alike: on SQLite the index is a file of its own (see `backend/sqlite.rs`), committed
//! apart from the ledger's, and an index whose stamp is not the ledger's (a crash
//! between the two commits) is dropped, to be built again.

use std::collections::{HashMap, HashSet};

use ledgersync_schemas::posting_column;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};

use crate::backend::Backend;
use crate::error::{Context, StoreError};
use crate::segments;

/// The columns an index entry is made from.
pub(crate) const INDEXED: [&str; 9] = [
    segments::TXN,
    segments::KEY,
    segments::DATE,
    segments::BRANCH,
    posting_column::MEMO,
    segments::ACCOUNT,
    segments::AMOUNT,
    posting_column::CURRENCY,
    segments::ORIGINAL_AMOUNT,
];

/// What a transaction holds, as the index keeps it: enough to take its sums out of
/// the aggregates, and to tell a new version that changes nothing (lines and
/// source instants aside) from one that does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    /// Days since 1970-01-01.
    pub(crate) date: i32,
    pub(crate) branch: String,
    /// (account, amount, memo, currency, original amount), sorted.
    pub(crate) postings: Vec<(String, i64, String, String, Option<i64>)>,
}

/// A transaction of a segment, by key.
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) txn: u32,
    pub(crate) held: Held,
}

/// A key's transaction as the index has it.
pub(crate) struct Indexed {
    pub(crate) load_id: i64,
    pub(crate) txn: u32,
    pub(crate) held: Held,
}

/// The transactions of a decoded segment (the [`INDEXED`] columns), in the order
/// they first appear.
pub(crate) fn entries(frame: &DataFrame) -> PolarsResult<Vec<Entry>> {
    let txns = frame.column(segments::TXN)?.u32()?;
    let keys = frame.column(segments::KEY)?.str()?;
    let dates = frame.column(segments::DATE)?.date()?.physical();
    let text = |name: &str| frame.column(name).and_then(|c| c.str().cloned());
    let (branches, memos) = (text(segments::BRANCH)?, text(posting_column::MEMO)?);
    let (accounts, currencies) = (text(segments::ACCOUNT)?, text(posting_column::CURRENCY)?);
    let amounts = frame.column(segments::AMOUNT)?.i64()?;
    let originals = frame.column(segments::ORIGINAL_AMOUNT)?.i64()?;
    let mut at: HashMap<u32, usize> = HashMap::new();
    let mut entries: Vec<Entry> = Vec::new();
    for row in 0..frame.height() {
        let Some(txn) = txns.get(row) else {
            continue;
        };
        let entry = match at.get(&txn) {
            Some(&index) => &mut entries[index],
            None => {
                at.insert(txn, entries.len());
                entries.push(Entry {
                    key: keys.get(row).unwrap_or_default().to_string(),
                    txn,
                    held: Held {
                        date: dates.get(row).unwrap_or_default(),
                        branch: branches.get(row).unwrap_or_default().to_string(),
                        postings: Vec::new(),
                    },
                });
                entries.last_mut().expect("just pushed")
            }
        };
        entry.held.postings.push((
            accounts.get(row).unwrap_or_default().to_string(),
            amounts.get(row).unwrap_or_default(),
            memos.get(row).unwrap_or_default().to_string(),
            currencies.get(row).unwrap_or_default().to_string(),
            originals.get(row),
        ));
    }
    for entry in &mut entries {
        entry.held.postings.sort_unstable();
    }
    Ok(entries)
}

/// The postings of `held` transactions in the [`segments::AGGREGATED`] columns, each
/// transaction numbered by its place, to reduce their sums.
pub(crate) fn aggregated(held: &[Held]) -> PolarsResult<DataFrame> {
    let rows: usize = held.iter().map(|h| h.postings.len()).sum();
    let mut txns = Vec::with_capacity(rows);
    let mut dates = Vec::with_capacity(rows);
    let mut branches = Vec::with_capacity(rows);
    let mut accounts = Vec::with_capacity(rows);
    let mut amounts = Vec::with_capacity(rows);
    for (number, transaction) in held.iter().enumerate() {
        for (account, amount, ..) in &transaction.postings {
            txns.push(number as u32);
            dates.push(transaction.date);
            branches.push(transaction.branch.as_str());
            accounts.push(account.as_str());
            amounts.push(*amount);
        }
    }
    DataFrame::new(
        rows,
        vec![
            Column::new(segments::TXN.into(), txns),
            Int32Chunked::from_vec(segments::DATE.into(), dates)
                .into_date()
                .into_column(),
            Column::new(segments::BRANCH.into(), branches),
            Column::new(segments::ACCOUNT.into(), accounts),
            Column::new(segments::AMOUNT.into(), amounts),
        ],
    )
}

/// The (month, branch) bucket of a held transaction.
pub(crate) fn bucket(held: &Held) -> (String, String) {
    (
        segments::month_of(held.date).unwrap_or_default(),
        held.branch.clone(),
    )
}

/// Whether `source` is indexed. An index not stamped as the ledger is (see the
/// module's documentation) is dropped first.
pub(crate) async fn is_indexed(
    tx: &mut Transaction<'static, Any>,
    source: &str,
) -> Result<bool, StoreError> {
    const READING: &str = "reading the key index";
    let ledger: Option<String> = sqlx::query_scalar("SELECT value FROM ledger_meta WHERE key = $1")
        .bind(STAMP)
        .fetch_optional(&mut **tx)
        .await
        .context(READING)?;
    let index: Option<i64> = sqlx::query_scalar("SELECT stamp FROM index_state WHERE id = 1")
        .fetch_optional(&mut **tx)
        .await
        .context(READING)?;
    if ledger != index.map(|stamp| stamp.to_string()) {
        log::warn!(
            "The key index was not committed with the ledger (a crash between the two); \
             it is dropped and will be built again from the segments."
        );
        forget(tx, None).await?;
        return Ok(false);
    }
    let found: Option<String> =
        sqlx::query_scalar("SELECT source FROM indexed_sources WHERE source = $1")
            .bind(source)
            .fetch_optional(&mut **tx)
            .await
            .context(READING)?;
    Ok(found.is_some())
}

/// `ledger_meta`'s key for the stamp of the last transaction that wrote the index.
const STAMP: &str = "key_index_stamp";

/// Stamps the index and the ledger as written together by this transaction.
async fn stamp(tx: &mut Transaction<'static, Any>) -> Result<(), StoreError> {
    const STAMPING: &str = "stamping the key index";
    // Unique per transaction, so that no two commits leave equal stamps by chance.
    let stamp = (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64;
    sqlx::query(
        "INSERT INTO ledger_meta (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(STAMP)
    .bind(stamp.to_string())
    .execute(&mut **tx)
    .await
    .context(STAMPING)?;
    sqlx::query(
        "INSERT INTO index_state (id, stamp) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET stamp = excluded.stamp",
    )
    .bind(stamp)
    .execute(&mut **tx)
    .await
    .context(STAMPING)?;
    Ok(())
}

/// Indexes every transaction of `source` in segments of loads other than `except`
/// (the load being committed, which indexes its own). Returns how many.
pub(crate) async fn build(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    source: &str,
    except: i64,
) -> Result<u64, StoreError> {
    let started = std::time::Instant::now();
    let split = crate::aggregates::split_transactions(tx).await?;
    let ids = segments::ids(tx, "source = $1", &[source]).await?;
    // A transaction a load wrote to several segments is indexed once all are read.
    let mut parts: HashMap<(i64, u32), Entry> = HashMap::new();
    let mut indexed = 0u64;
    for id in ids {
        let stored = segments::read_bytes(tx, id).await?;
        let load_id = stored.load_id;
        if load_id == except {
            continue;
        }
        let found = segments::blocking("indexing transactions by key", move || {
            entries(&stored.decode(Some(&INDEXED))?)
        })
        .await?;
        let split_here = split.get(&load_id);
        let mut whole = Vec::with_capacity(found.len());
        for entry in found {
            if split_here.is_some_and(|numbers| numbers.contains(&entry.txn)) {
                merge_part(&mut parts, load_id, entry);
            } else {
                whole.push(entry);
            }
        }
        indexed += whole.len() as u64;
        insert(backend, tx, source, load_id, &whole).await?;
    }
    let mut by_load: HashMap<i64, Vec<Entry>> = HashMap::new();
    for ((load_id, _), entry) in parts {
        by_load.entry(load_id).or_default().push(entry);
    }
    for (load_id, entries) in by_load {
        indexed += entries.len() as u64;
        insert(backend, tx, source, load_id, &entries).await?;
    }
    sqlx::query("INSERT INTO indexed_sources (source) VALUES ($1) ON CONFLICT (source) DO NOTHING")
        .bind(source)
        .execute(&mut **tx)
        .await
        .context("recording the key index")?;
    stamp(tx).await?;
    if let Some(analyze) = backend.analyze_keys_statement() {
        sqlx::query(analyze)
            .execute(&mut **tx)
            .await
            .context("updating the key index's statistics")?;
    }
    log::info!(
        "Indexed the transactions of a source by key; loads replacing them no longer read its segments. \
         source={source} transactions={indexed} took={:?}",
        started.elapsed()
    );
    Ok(indexed)
}

/// Adds one segment's part of a transaction split across segments to the others.
pub(crate) fn merge_part(parts: &mut HashMap<(i64, u32), Entry>, load_id: i64, entry: Entry) {
    match parts.get_mut(&(load_id, entry.txn)) {
        Some(whole) => {
            whole.held.postings.extend(entry.held.postings);
            whole.held.postings.sort_unstable();
        }
        None => {
            parts.insert((load_id, entry.txn), entry);
        }
    }
}

/// Indexes `entries`, transactions of load `load_id`, in place of what their keys
/// held before.
pub(crate) async fn insert(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    source: &str,
    load_id: i64,
    entries: &[Entry],
) -> Result<(), StoreError> {
    for chunk in entries.chunks(backend.rows_per_insert()) {
        let sql = format!(
            "INSERT INTO transaction_keys (source, key, load_id, txn, postings) VALUES {} \
             ON CONFLICT (source, key) DO UPDATE SET load_id = excluded.load_id, \
             txn = excluded.txn, postings = excluded.postings",
            crate::ledger::placeholders(chunk.len(), 5, backend.anonymous_placeholders())
        );
        let mut query = sqlx::query(&sql);
        for entry in chunk {
            let held = serde_json::to_string(&entry.held)
                .map_err(|e| StoreError::Invalid(format!("indexing a transaction: {e}")))?;
            query = query
                .bind(source)
                .bind(entry.key.as_str())
                .bind(load_id)
                .bind(i64::from(entry.txn))
                .bind(held);
        }
        query
            .execute(&mut **tx)
            .await
            .context("writing the key index")?;
    }
    stamp(tx).await
}

/// What the index holds for those of `keys` it has.
pub(crate) async fn find(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    source: &str,
    keys: &[&str],
) -> Result<HashMap<String, Indexed>, StoreError> {
    const READING: &str = "reading the key index";
    let mut found = HashMap::new();
    let anonymous = backend.anonymous_placeholders();
    for chunk in keys.chunks(backend.rows_per_insert()) {
        let sql = format!(
            "SELECT key, load_id, txn, postings FROM transaction_keys WHERE source = {} AND key IN ({})",
            crate::ledger::parameters(1, 1, anonymous),
            crate::ledger::parameters(chunk.len(), 2, anonymous)
        );
        let mut query = sqlx::query(&sql).bind(source);
        for key in chunk {
            query = query.bind(*key);
        }
        for row in query.fetch_all(&mut **tx).await.context(READING)? {
            let key: String = row.try_get("key").context(READING)?;
            let held: String = row.try_get("postings").context(READING)?;
            let held: Held = serde_json::from_str(&held).map_err(|e| {
                StoreError::Invalid(format!("the key index entry of '{key}' is unreadable: {e}"))
            })?;
            let txn: i64 = row.try_get("txn").context(READING)?;
            found.insert(
                key,
                Indexed {
                    load_id: row.try_get("load_id").context(READING)?,
                    txn: txn as u32,
                    held,
                },
            );
        }
    }
    follow_moves(backend, tx, found.values_mut().collect()).await?;
    Ok(found)
}

/// Where compaction moved a block of a load's transactions.
struct Move {
    first: u32,
    last: u32,
    to_load: i64,
    shift: i64,
}

/// Moves `entries` from where they were indexed to where compaction has since put
/// them. Each move is into a later load or later numbers of the same load, so
/// following them ends.
async fn follow_moves(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    mut entries: Vec<&mut Indexed>,
) -> Result<(), StoreError> {
    const READING: &str = "reading where compaction moved transactions";
    let anonymous = backend.anonymous_placeholders();
    while !entries.is_empty() {
        let loads: Vec<i64> = entries
            .iter()
            .map(|entry| entry.load_id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut moves: HashMap<i64, Vec<Move>> = HashMap::new();
        for chunk in loads.chunks(backend.rows_per_insert()) {
            let sql = format!(
                "SELECT from_load, first_txn, last_txn, to_load, shift FROM moved_transactions \
                 WHERE from_load IN ({})",
                crate::ledger::parameters(chunk.len(), 1, anonymous)
            );
            let mut query = sqlx::query(&sql);
            for load in chunk {
                query = query.bind(*load);
            }
            for row in query.fetch_all(&mut **tx).await.context(READING)? {
                let number = |column: &str| -> Result<u32, StoreError> {
                    let value: i64 = row.try_get(column).context(READING)?;
                    Ok(value as u32)
                };
                let from_load: i64 = row.try_get("from_load").context(READING)?;
                let found = Move {
                    first: number("first_txn")?,
                    last: number("last_txn")?,
                    to_load: row.try_get("to_load").context(READING)?,
                    shift: row.try_get("shift").context(READING)?,
                };
                // Following ends because every move goes forward; a row that does not
                // is damage, refused rather than followed round in circles.
                if found.to_load < from_load || (found.to_load == from_load && found.shift <= 0) {
                    return Err(StoreError::Invalid(format!(
                        "the key index is damaged: a move of load {from_load}'s transactions \
                         does not go forward; emptying indexed_sources and moved_transactions \
                         makes the next load build the index again from the segments"
                    )));
                }
                moves.entry(from_load).or_default().push(found);
            }
        }
        if moves.is_empty() {
            break;
        }
        entries.retain_mut(|entry| {
            let found = moves.get(&entry.load_id).and_then(|moves| {
                moves
                    .iter()
                    .find(|m| m.first <= entry.txn && entry.txn <= m.last)
            });
            match found {
                Some(found) => {
                    entry.load_id = found.to_load;
                    entry.txn = (i64::from(entry.txn) + found.shift) as u32;
                    true
                }
                None => false,
            }
        });
    }
    Ok(())
}

/// Hides transactions from every reader: (manifest load, number, posting rows).
pub(crate) async fn mark_replaced(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    replaced: &[(i64, u32, usize)],
) -> Result<(), StoreError> {
    for chunk in replaced.chunks(backend.rows_per_insert()) {
        let sql = format!(
            "INSERT INTO replaced_transactions (load_id, txn, postings) VALUES {} \
             ON CONFLICT (load_id, txn) DO NOTHING",
            crate::ledger::placeholders(chunk.len(), 3, backend.anonymous_placeholders())
        );
        let mut query = sqlx::query(&sql);
        for &(load_id, txn, postings) in chunk {
            query = query
                .bind(load_id)
                .bind(i64::from(txn))
                .bind(postings as i64);
        }
        query
            .execute(&mut **tx)
            .await
            .context("hiding replaced transactions")?;
    }
    Ok(())
}

/// Takes removed keys out of the source's index.
pub(crate) async fn remove(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    source: &str,
    keys: &HashSet<String>,
) -> Result<(), StoreError> {
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let anonymous = backend.anonymous_placeholders();
    for chunk in keys.chunks(backend.rows_per_insert()) {
        let sql = format!(
            "DELETE FROM transaction_keys WHERE source = {} AND key IN ({})",
            crate::ledger::parameters(1, 1, anonymous),
            crate::ledger::parameters(chunk.len(), 2, anonymous)
        );
        let mut query = sqlx::query(&sql).bind(source);
        for key in chunk {
            query = query.bind(*key);
        }
        query
            .execute(&mut **tx)
            .await
            .context("removing keys from the key index")?;
    }
    stamp(tx).await
}

/// Drops the index of `source` (of every source if `None`).
pub(crate) async fn forget(
    tx: &mut Transaction<'static, Any>,
    source: Option<&str>,
) -> Result<(), StoreError> {
    for table in ["transaction_keys", "indexed_sources"] {
        match source {
            Some(source) => {
                sqlx::query(&format!("DELETE FROM {table} WHERE source = $1"))
                    .bind(source)
                    .execute(&mut **tx)
                    .await
            }
            None => {
                sqlx::query(&format!("DELETE FROM {table}"))
                    .execute(&mut **tx)
                    .await
            }
        }
        .context("dropping the key index")?;
    }
    if source.is_none() {
        // No entry is left to follow a move. (A source's index built again starts
        // from where its transactions are; other sources' moves stay theirs.)
        sqlx::query("DELETE FROM moved_transactions")
            .execute(&mut **tx)
            .await
            .context("dropping the key index")?;
    }
    stamp(tx).await
}

/// Notes that compaction moved load `from`'s transactions `first..=last` to load `to`,
/// each renumbered by `shift`: lookups of their index entries follow them there.
pub(crate) async fn moved(
    tx: &mut Transaction<'static, Any>,
    from: i64,
    (first, last): (u32, u32),
    to: i64,
    shift: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO moved_transactions (from_load, first_txn, last_txn, to_load, shift) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(from)
    .bind(i64::from(first))
    .bind(i64::from(last))
    .bind(to)
    .bind(shift)
    .execute(&mut **tx)
    .await
    .context("noting where compaction moved transactions")?;
    stamp(tx).await
}
