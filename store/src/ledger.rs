//! A tenant's ledger: accounts, loads (stage → validate → merge → aggregate, in one
//! transaction) and aggregate reads: [`LedgerStore`] on the one store implementation.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_trait::async_trait;
use ledgersync_config::TenantSettings;
use ledgersync_schemas::{Account, AccountClass, Amount, Month, MonthMetrics};
use sqlx::{Any, Row, Transaction};

use crate::backend::Backend;
use crate::control::{now, SqlStore};
use crate::error::{Context, StoreError};
use crate::segments;
use crate::{aggregates, dates, keys};
use crate::{
    ChartReplaced, ControlStore, ExportFormat, ExportSummary, LedgerStore, LedgerTotals,
    LoadCounts, LoadRecord, LoadSession, LoadSummary, PastLoad, Tenant, TransactionPage,
    TransactionQuery, Unseen,
};
use polars::prelude::{BooleanChunked, Int64Type, StringType, UInt32Type};

/// Characters of a failed load's problem kept in its record.
const FAILED_LOAD_PROBLEM_CHARS: usize = 2000;

/// `count` parameters from number `first` on, for an `IN` list: `$2,$3,…`, or
/// `?,?,…` (see [`placeholders`]).
pub(crate) fn parameters(count: usize, first: usize, anonymous: bool) -> String {
    (0..count)
        .map(|i| match anonymous {
            true => "?".to_string(),
            false => format!("${}", first + i),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `($1, …, $width), ($width+1, …)` for `rows` rows, or `(?, …)` when `anonymous`.
pub(crate) fn placeholders(rows: usize, width: usize, anonymous: bool) -> String {
    let mut sql = String::with_capacity(rows * width * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for column in 0..width {
            if column > 0 {
                sql.push(',');
            }
            if anonymous {
                sql.push('?');
            } else {
                sql.push('$');
                sql.push_str(&(row * width + column + 1).to_string());
            }
        }
        sql.push(')');
    }
    sql
}

fn past_load(row: &sqlx::any::AnyRow) -> Result<PastLoad, StoreError> {
    const READING: &str = "reading a load";
    Ok(PastLoad {
        id: row.try_get("id").context(READING)?,
        source: row.try_get("source").context(READING)?,
        stream: row.try_get("stream").context(READING)?,
        origin: row.try_get("origin").context(READING)?,
        rows_read: row.try_get("rows_read").context(READING)?,
        transactions: row.try_get("transactions").context(READING)?,
        postings: row.try_get("postings").context(READING)?,
        control_sum: Amount::from_units(row.try_get("control_sum").context(READING)?),
        loaded_at: row.try_get("loaded_at").context(READING)?,
        status: row.try_get("status").context(READING)?,
        problem: row.try_get("problem").context(READING)?,
        fingerprint: row.try_get("fingerprint").context(READING)?,
        counts: counts(row).context(READING)?,
    })
}

/// A load's counts, none if it was recorded before loads counted.
fn counts(row: &sqlx::any::AnyRow) -> Result<Option<LoadCounts>, sqlx::Error> {
    let added: Option<i64> = row.try_get("added")?;
    let Some(added) = added else {
        return Ok(None);
    };
    let count = |name: &str| -> Result<i64, sqlx::Error> {
        Ok(row.try_get::<Option<i64>, _>(name)?.unwrap_or_default())
    };
    Ok(Some(LoadCounts {
        added,
        replaced: count("replaced")?,
        unchanged: count("unchanged")?,
        removed: count("removed")?,
    }))
}

const LOAD_COLUMNS: &str =
    "id, source, stream, origin, rows_read, transactions, postings, control_sum, \
     loaded_at, status, problem, fingerprint, added, replaced, unchanged, removed";

impl SqlStore {
    /// A transaction on the tenant's ledger that holds the tenant's load lock: loads,
    /// chart changes, re-dating and rebuilds rewrite segments and rollups whole, so
    /// they take turns (across replicas on PostgreSQL).
    async fn begin_writing(
        &self,
        tenant_id: &str,
    ) -> Result<
        (
            Option<tokio::sync::OwnedMutexGuard<()>>,
            Transaction<'static, Any>,
        ),
        StoreError,
    > {
        let guard = self.backend.load_lock(tenant_id).await;
        let mut tx = self.backend.begin(tenant_id).await?;
        if let Some(statement) = self.backend.load_lock_statement() {
            sqlx::query(statement)
                .bind(tenant_id)
                .execute(&mut *tx)
                .await
                .context("waiting for the tenant's load lock")?;
        }
        Ok((guard, tx))
    }
}

#[async_trait]
impl LedgerStore for SqlStore {
    async fn update_settings(
        &self,
        tenant: &Tenant,
        settings: &TenantSettings,
    ) -> Result<(Tenant, u64), StoreError> {
        settings
            .validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.write_settings(&tenant.id, settings).await?;
        let (_guard, mut tx) = self.begin_writing(&tenant.id).await?;
        let moved = dates::align(self.backend.as_ref(), &mut tx, &settings.timezone).await?;
        tx.commit()
            .await
            .context("committing re-dated transactions")?;
        self.generations.bump(&tenant.id);
        let updated = self
            .tenant(&tenant.id)
            .await?
            .ok_or_else(|| StoreError::Invalid(format!("tenant {} vanished", tenant.id)))?;
        Ok((updated, moved))
    }

    async fn upsert_accounts(
        &self,
        tenant: &Tenant,
        accounts: &[Account],
    ) -> Result<(), StoreError> {
        let (_guard, mut tx) = self.begin_writing(&tenant.id).await?;
        write_accounts(&mut tx, accounts).await?;
        // A changed class or category changes what the aggregates say.
        rebuild_in(self.backend.as_ref(), &mut tx).await?;
        tx.commit().await.context("committing accounts")?;
        self.generations.bump(&tenant.id);
        Ok(())
    }

    async fn replace_chart(
        &self,
        tenant: &Tenant,
        accounts: &[Account],
    ) -> Result<ChartReplaced, StoreError> {
        let (_guard, mut tx) = self.begin_writing(&tenant.id).await?;
        write_accounts(&mut tx, accounts).await?;
        let kept: HashSet<&str> = accounts.iter().map(|a| a.code.as_str()).collect();
        let others: Vec<String> = sqlx::query_scalar("SELECT code FROM accounts ORDER BY code")
            .fetch_all(&mut *tx)
            .await
            .context("reading accounts")?
            .into_iter()
            .filter(|code: &String| !kept.contains(code.as_str()))
            .collect();
        let mut change = ChartReplaced {
            written: accounts.len(),
            ..ChartReplaced::default()
        };
        if !others.is_empty() {
            let in_use = accounts_in_use(&mut tx).await?;
            let retired_at = now();
            for code in others {
                if in_use.contains(&code) {
                    sqlx::query(
                        "UPDATE accounts SET retired_at = COALESCE(retired_at, $1) WHERE code = $2",
                    )
                    .bind(&retired_at)
                    .bind(&code)
                    .execute(&mut *tx)
                    .await
                    .context("retiring an account")?;
                    change.retired.push(code);
                } else {
                    sqlx::query("DELETE FROM accounts WHERE code = $1")
                        .bind(&code)
                        .execute(&mut *tx)
                        .await
                        .context("removing an account")?;
                    change.removed.push(code);
                }
            }
        }
        rebuild_in(self.backend.as_ref(), &mut tx).await?;
        tx.commit().await.context("committing the chart")?;
        self.generations.bump(&tenant.id);
        Ok(change)
    }

    async fn retire_accounts(&self, tenant: &Tenant, codes: &[String]) -> Result<(), StoreError> {
        let (_guard, mut tx) = self.begin_writing(&tenant.id).await?;
        let retired_at = now();
        for code in codes {
            let changed = sqlx::query(
                "UPDATE accounts SET retired_at = COALESCE(retired_at, $1) WHERE code = $2",
            )
            .bind(&retired_at)
            .bind(code)
            .execute(&mut *tx)
            .await
            .context("retiring an account")?
            .rows_affected();
            if changed == 0 {
                return Err(StoreError::NotFound(format!(
                    "no account '{code}' in the chart; `ledgersync accounts list` shows the codes"
                )));
            }
        }
        tx.commit().await.context("committing retired accounts")?;
        self.generations.bump(&tenant.id);
        Ok(())
    }

    async fn accounts(&self, tenant: &Tenant) -> Result<Vec<Account>, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        let rows = sqlx::query(
            "SELECT code, name, class, category, retired_at FROM accounts ORDER BY code",
        )
        .fetch_all(&mut *tx)
        .await
        .context("reading accounts")?;
        rows.iter()
            .map(|row| {
                let class: String = row.try_get("class").context("reading accounts")?;
                let retired_at: Option<String> =
                    row.try_get("retired_at").context("reading accounts")?;
                Ok(Account {
                    code: row.try_get("code").context("reading accounts")?,
                    name: row.try_get("name").context("reading accounts")?,
                    class: AccountClass::parse(&class).ok_or_else(|| {
                        StoreError::Invalid(format!("stored account class '{class}' is unknown"))
                    })?,
                    category: row.try_get("category").context("reading accounts")?,
                    retired: retired_at.is_some(),
                })
            })
            .collect()
    }

    async fn find_load(
        &self,
        tenant: &Tenant,
        source: &str,
        fingerprint: &str,
    ) -> Result<Option<PastLoad>, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        let row = sqlx::query(&format!(
            "SELECT {LOAD_COLUMNS} FROM loads WHERE source = $1 AND fingerprint = $2 AND status = 'succeeded'"
        ))
        .bind(source)
        .bind(fingerprint)
        .fetch_optional(&mut *tx)
        .await
        .context("looking up a load")?;
        row.as_ref().map(past_load).transpose()
    }

    async fn has_unnamed_fingerprints(
        &self,
        tenant: &Tenant,
        source: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM loads WHERE source = $1 AND status = 'succeeded' \
             AND fingerprint NOT LIKE '%:%' LIMIT 1",
        )
        .bind(source)
        .fetch_optional(&mut *tx)
        .await
        .context("looking up earlier fingerprints")?;
        Ok(found.is_some())
    }

    async fn loads_of_content(
        &self,
        tenant: &Tenant,
        content: &str,
    ) -> Result<Vec<PastLoad>, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        // A content hash has no LIKE wildcards (`%`, `_`); one that did would only
        // widen the search, and the exact check below narrows it again.
        let rows = sqlx::query(&format!(
            "SELECT {LOAD_COLUMNS} FROM loads WHERE status = 'succeeded' \
             AND (fingerprint = $1 OR fingerprint LIKE $2) ORDER BY id"
        ))
        .bind(content)
        .bind(format!("{content}/%"))
        .fetch_all(&mut *tx)
        .await
        .context("looking up loads of the same content")?;
        let loads: Vec<PastLoad> = rows.iter().map(past_load).collect::<Result<_, _>>()?;
        Ok(loads
            .into_iter()
            .filter(|load| {
                load.fingerprint == content
                    || load
                        .fingerprint
                        .strip_prefix(content)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .collect())
    }

    async fn loads(&self, tenant: &Tenant) -> Result<Vec<PastLoad>, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        let rows = sqlx::query(&format!("SELECT {LOAD_COLUMNS} FROM loads ORDER BY id"))
            .fetch_all(&mut *tx)
            .await
            .context("listing loads")?;
        rows.iter().map(past_load).collect()
    }

    async fn record_failed_load(
        &self,
        tenant: &Tenant,
        record: &LoadRecord,
        problem: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        let at = now();
        sqlx::query(
            "INSERT INTO loads (source, fingerprint, stream, origin, rows_read, transactions, postings, \
             control_sum, loaded_at, status, problem, added, replaced, unchanged, removed) \
             VALUES ($1, $2, $3, $4, $5, 0, 0, 0, $6, 'failed', $7, 0, 0, 0, 0)",
        )
        .bind(&record.source)
        // Failed attempts of the same content may repeat; they never block a later success.
        .bind(format!("failed:{}:{at}", record.fingerprint))
        .bind(&record.stream)
        .bind(&record.origin)
        .bind(record.rows_read)
        .bind(&at)
        // Stored for `GET /v1/loads` and `verify`: whatever the caller hands in, a
        // record stays small.
        .bind(ledgersync_schemas::bounded(problem, FAILED_LOAD_PROBLEM_CHARS).as_ref())
        .execute(&mut *tx)
        .await
        .context("recording a failed load")?;
        tx.commit().await.context("committing a failed load")
    }

    async fn load_totals(&self, tenant: &Tenant, load_id: i64) -> Result<LedgerTotals, StoreError> {
        const READING: &str = "finding a load's postings";
        let mut tx = self.backend.begin(&tenant.id).await?;
        // The load's own segments, and compacted ones that may hold some of its postings.
        let rows = sqlx::query(
            "SELECT id, load_id, first_load FROM ledger_segments WHERE load_id = $1 \
             OR (first_load IS NOT NULL AND first_load <= $1 AND load_id >= $1)",
        )
        .bind(load_id)
        .fetch_all(&mut *tx)
        .await
        .context(READING)?;
        let mut txns = HashSet::new();
        let mut postings = 0i64;
        let mut control_sum = Amount::ZERO;
        for row in rows {
            let id: i64 = row.try_get("id").context(READING)?;
            let manifest_load: i64 = row.try_get("load_id").context(READING)?;
            let compacted = row
                .try_get::<Option<i64>, _>("first_load")
                .context(READING)?;
            const OWN: &[&str] = &[segments::TXN, segments::AMOUNT];
            const MIXED: &[&str] = &[segments::TXN, segments::AMOUNT, segments::LOAD];
            let columns = if compacted.is_some() { MIXED } else { OWN };
            let stored = segments::read(&mut tx, id, Some(columns)).await?;
            let numbers = segments::column::<UInt32Type>(&stored, segments::TXN)?;
            let amounts = segments::column::<Int64Type>(&stored, segments::AMOUNT)?;
            let loads = match compacted {
                Some(_) => Some(segments::column::<Int64Type>(&stored, segments::LOAD)?),
                None => None,
            };
            for (row, (txn, units)) in numbers
                .into_no_null_iter()
                .zip(amounts.into_no_null_iter())
                .enumerate()
            {
                if loads.is_some_and(|loads| loads.get(row) != Some(load_id)) {
                    continue;
                }
                txns.insert((manifest_load, txn));
                postings += 1;
                control_sum = units
                    .checked_abs()
                    .and_then(|units| control_sum.checked_add(Amount::from_units(units)))
                    .ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "the control sum of load {load_id} is beyond what amounts can hold"
                        ))
                    })?;
            }
        }
        Ok(LedgerTotals {
            transactions: txns.len() as i64,
            postings,
            control_sum,
        })
    }

    async fn sync_cursor(
        &self,
        tenant: &Tenant,
        source: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        sqlx::query_scalar("SELECT position FROM sync_cursors WHERE source = $1")
            .bind(source)
            .fetch_optional(&mut *tx)
            .await
            .context("reading a sync cursor")
    }

    async fn begin_load(&self, tenant: &Tenant) -> Result<Box<dyn LoadSession>, StoreError> {
        let (guard, mut tx) = self.begin_writing(&tenant.id).await?;
        dates::align(self.backend.as_ref(), &mut tx, &tenant.settings.timezone).await?;
        let chart = aggregates::Chart::read(&mut tx).await?;
        Ok(Box::new(crate::load::SqlLoad::new(
            self.backend.clone(),
            self.generations.clone(),
            tenant.id.clone(),
            tx,
            guard,
            chart,
        )))
    }

    async fn reconciled_at(
        &self,
        tenant: &Tenant,
        source: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        let at: Option<Option<String>> =
            sqlx::query_scalar("SELECT reconciled_at FROM sync_cursors WHERE source = $1")
                .bind(source)
                .fetch_optional(&mut *tx)
                .await
                .context("reading when a stream's keys were last reconciled")?;
        Ok(at.flatten())
    }

    async fn remove_unseen(
        &self,
        tenant: &Tenant,
        unseen: Unseen,
        record: LoadRecord,
    ) -> Result<LoadSummary, StoreError> {
        let (_guard, mut tx) = self.begin_writing(&tenant.id).await?;
        let mut buckets: BTreeSet<(String, String)> = BTreeSet::new();
        let mut removed_keys: HashSet<String> = HashSet::new();
        for id in segments::ids(&mut tx, "source = $1", &[&record.source]).await? {
            let stored = segments::read_bytes(&mut tx, id).await?;
            let listed_load = stored.load_id;
            // Only live transactions can be unseen. Every segment of the source is
            // read here, so the rows of replaced ones go too (their entries in
            // `replaced_transactions` are dropped below): a refresh leaves no
            // earlier copy of the source behind.
            let (frame, replaced) =
                segments::blocking("decoding postings", move || stored.decode_all()).await?;
            let failed = segments::polars_error("removing deleted transactions");
            let live: BooleanChunked = segments::column::<UInt32Type>(&frame, segments::TXN)?
                .iter()
                .map(|txn| txn.is_some_and(|txn| !replaced.contains(txn)))
                .collect();
            let stale: BooleanChunked = match &unseen {
                Unseen::LoadedBefore(since_load) => {
                    let since_load = since_load.unwrap_or(i64::MAX);
                    // Compacted segments name each posting's load; others are one load's.
                    match frame.column(segments::LOAD) {
                        Ok(loads) => loads
                            .i64()
                            .map_err(&failed)?
                            .iter()
                            .map(|load| load.unwrap_or(listed_load) < since_load)
                            .collect(),
                        Err(_) => {
                            std::iter::repeat_n(listed_load < since_load, frame.height()).collect()
                        }
                    }
                }
                Unseen::KeysNotIn(present) => {
                    segments::column::<StringType>(&frame, segments::KEY)?
                        .iter()
                        .map(|key| !key.is_some_and(|key| present.contains(key)))
                        .collect()
                }
            };
            let stale = &stale & &live;
            let hidden = !&live;
            if !stale.any() && !hidden.any() {
                continue;
            }
            let removed = frame.filter(&stale).map_err(&failed)?;
            let keys = segments::column::<StringType>(&removed, segments::KEY)?;
            removed_keys.extend(keys.iter().flatten().map(str::to_string));
            segments::add_buckets(&removed, &mut buckets)?;
            let kept = frame.filter(&(&live & &!&stale)).map_err(&failed)?;
            segments::rewrite(&mut tx, id, kept).await?;
        }
        // No row of the source's replaced transactions is left in any segment.
        sqlx::query(
            "DELETE FROM replaced_transactions \
             WHERE load_id IN (SELECT id FROM loads WHERE source = $1)",
        )
        .bind(&record.source)
        .execute(&mut *tx)
        .await
        .context("dropping removed replaced transactions")?;
        if keys::is_indexed(&mut tx, &record.source).await? {
            keys::remove(
                self.backend.as_ref(),
                &mut tx,
                &record.source,
                &removed_keys,
            )
            .await?;
        }
        let counts = LoadCounts {
            removed: removed_keys.len() as i64,
            ..LoadCounts::default()
        };
        let load_id: i64 = sqlx::query_scalar(
            "INSERT INTO loads (source, fingerprint, stream, origin, rows_read, transactions, postings, \
             control_sum, loaded_at, added, replaced, unchanged, removed) \
             VALUES ($1, $2, $3, $4, $5, 0, 0, 0, $6, 0, 0, 0, $7) RETURNING id",
        )
        .bind(&record.source)
        .bind(&record.fingerprint)
        .bind(&record.stream)
        .bind(&record.origin)
        .bind(record.rows_read)
        .bind(now())
        .bind(counts.removed)
        .fetch_one(&mut *tx)
        .await
        .context("recording the removal of deleted transactions")?;
        if let Unseen::KeysNotIn(_) = unseen {
            sqlx::query("UPDATE sync_cursors SET reconciled_at = $2 WHERE source = $1")
                .bind(&record.source)
                .bind(now())
                .execute(&mut *tx)
                .await
                .context("noting the key reconcile")?;
        }
        if !buckets.is_empty() {
            let months: BTreeSet<String> = buckets.iter().map(|(m, _)| m.clone()).collect();
            aggregates::recompute(
                self.backend.as_ref(),
                &mut tx,
                Some(&months),
                None,
                Default::default(),
                None,
            )
            .await?;
        }
        tx.commit()
            .await
            .context("committing the removal of deleted transactions")?;
        self.generations.bump(&tenant.id);
        Ok(LoadSummary {
            load_id,
            transactions: 0,
            postings: 0,
            control_sum: Amount::ZERO,
            buckets_recomputed: buckets.len() as i64,
            counts,
        })
    }

    async fn month_metrics(
        &self,
        tenant: &Tenant,
        branch: &str,
        from: Month,
        to: Month,
    ) -> Result<BTreeMap<Month, MonthMetrics>, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        let rows = sqlx::query(
            "SELECT month, metrics FROM month_rollups WHERE branch = $1 AND month >= $2 AND month <= $3",
        )
        .bind(branch)
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&mut *tx)
        .await
        .context("reading aggregates")?;
        let mut months: BTreeMap<Month, MonthMetrics> = BTreeMap::new();
        for row in rows {
            let month: String = row.try_get("month").context("reading aggregates")?;
            let month: Month = month
                .parse()
                .map_err(|e: ledgersync_schemas::MonthError| StoreError::Invalid(e.to_string()))?;
            let text: String = row.try_get("metrics").context("reading aggregates")?;
            let metrics: BTreeMap<String, i64> = serde_json::from_str(&text).map_err(|e| {
                StoreError::Invalid(format!("stored aggregates of {month} are unreadable: {e}"))
            })?;
            let entry = months.entry(month).or_default();
            for (name, units) in metrics {
                let (metric, key) = name.split_once(':').unwrap_or((name.as_str(), ""));
                entry
                    .add(metric, key, Amount::from_units(units))
                    .map_err(|e| StoreError::Invalid(format!("aggregates of {month}: {e}")))?;
            }
        }
        Ok(months)
    }

    async fn cash_before(
        &self,
        tenant: &Tenant,
        branch: &str,
        month: Month,
    ) -> Result<Amount, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        // Summed here, checked: SQL's SUM fails on an overflow with a database error
        // (SQLite) or a cast error (PostgreSQL) that names no month.
        let months: Vec<(String, i64)> = sqlx::query_as(
            "SELECT month, cash FROM month_rollups WHERE branch = $1 AND month < $2 ORDER BY month",
        )
        .bind(branch)
        .bind(month.to_string())
        .fetch_all(&mut *tx)
        .await
        .context("reading opening cash")?;
        let mut balance = Amount::ZERO;
        for (through, cash) in months {
            balance = balance
                .checked_add(Amount::from_units(cash))
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "the cash balance of {} through {through} is beyond the largest amount, {}",
                        aggregates::branch_words(branch),
                        Amount::MAX
                    ))
                })?;
        }
        Ok(balance)
    }

    async fn branches(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        sqlx::query_scalar(
            "SELECT DISTINCT branch FROM month_rollups WHERE branch <> '*' ORDER BY branch",
        )
        .fetch_all(&mut *tx)
        .await
        .context("listing branches")
    }

    async fn rebuild_aggregates(&self, tenant: &Tenant) -> Result<i64, StoreError> {
        let (_guard, mut tx) = self.begin_writing(&tenant.id).await?;
        let buckets = rebuild_in(self.backend.as_ref(), &mut tx).await?;
        tx.commit().await.context("committing aggregates")?;
        self.generations.bump(&tenant.id);
        Ok(buckets as i64)
    }

    fn generation(&self, tenant_id: &str) -> u64 {
        self.generations.get(tenant_id)
    }

    async fn posting_count(&self, tenant: &Tenant) -> Result<i64, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        // Rows of replaced transactions are stored until compaction drops them.
        sqlx::query_scalar(
            "SELECT CAST((SELECT COALESCE(SUM(postings), 0) FROM ledger_segments) \
             - (SELECT COALESCE(SUM(postings), 0) FROM replaced_transactions) AS BIGINT)",
        )
        .fetch_one(&mut *tx)
        .await
        .context("counting postings")
    }

    async fn segment_count(&self, tenant: &Tenant) -> Result<i64, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        sqlx::query_scalar("SELECT COUNT(*) FROM ledger_segments")
            .fetch_one(&mut *tx)
            .await
            .context("counting segments")
    }

    async fn export_ledger(
        &self,
        tenant: &Tenant,
        from: Option<Month>,
        to: Option<Month>,
        format: ExportFormat,
        out: Box<dyn std::io::Write + Send>,
    ) -> Result<ExportSummary, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        crate::export::export(&mut tx, from, to, format, out).await
    }

    async fn ledger_transactions(
        &self,
        tenant: &Tenant,
        query: &TransactionQuery,
    ) -> Result<TransactionPage, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        crate::transactions::page(&mut tx, query).await
    }
}

/// Recomputes every rollup from the postings.
/// Writes (adds or updates) accounts; a written account is in use again if it was
/// retired.
async fn write_accounts(
    tx: &mut Transaction<'static, Any>,
    accounts: &[Account],
) -> Result<(), StoreError> {
    for account in accounts {
        sqlx::query(
            "INSERT INTO accounts (code, name, class, category, cash_flow_section) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (code) DO UPDATE SET name = excluded.name, class = excluded.class, \
             category = excluded.category, cash_flow_section = excluded.cash_flow_section, \
             retired_at = NULL",
        )
        .bind(&account.code)
        .bind(&account.name)
        .bind(account.class.as_str())
        .bind(account.category.as_deref())
        .bind(account.class.cash_flow_section().as_str())
        .execute(&mut **tx)
        .await
        .context("writing accounts")?;
    }
    Ok(())
}

/// Codes of the accounts any stored posting is on: every segment's account column is
/// read (a chart is replaced rarely; the ledger keeps no per-account index).
async fn accounts_in_use(
    tx: &mut Transaction<'static, Any>,
) -> Result<HashSet<String>, StoreError> {
    let mut in_use = HashSet::new();
    for id in segments::ids(tx, "1 = 1", &[]).await? {
        let frame = segments::read(tx, id, Some(&[segments::ACCOUNT])).await?;
        let codes = frame
            .column(segments::ACCOUNT)
            .and_then(|c| c.str())
            .map_err(segments::polars_error("reading accounts of postings"))?;
        in_use.extend(codes.iter().flatten().map(str::to_string));
    }
    Ok(in_use)
}

async fn rebuild_in(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
) -> Result<u64, StoreError> {
    Ok(aggregates::recompute(
        backend,
        tx,
        None,
        None,
        aggregates::Partials::default(),
        None,
    )
    .await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(super::placeholders(2, 3, false), "($1,$2,$3),($4,$5,$6)");
        assert_eq!(super::placeholders(2, 2, true), "(?,?),(?,?)");
    }
}
