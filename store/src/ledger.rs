//! A tenant's ledger: accounts, loads (stage → validate → merge → aggregate, in one
//! transaction) and aggregate reads. The [`Store`] implementation lives here.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use ledgersync_config::TenantSettings;
use ledgersync_schemas::{Account, AccountClass, Amount, Month, MonthMetrics, Posting, RowError};
use sqlx::{Any, Executor, Row, Transaction};

use crate::backend::Backend;
use crate::control::{now, SqlStore};
use crate::error::{Context, LoadRejected, StoreError};
use crate::{aggregates, dates};
use crate::{
    ApiKey, AuditEntry, LedgerTotals, LoadRecord, LoadSession, LoadSummary, LoginCandidate,
    NewTenant, PastLoad, Store, Tenant, User,
};

const STAGE_COLUMNS: &str = "source_key TEXT NOT NULL, line BIGINT NOT NULL, seq BIGINT NOT NULL, \
    date TEXT NOT NULL, branch TEXT NOT NULL, memo TEXT NOT NULL, occurred_at TEXT, account TEXT NOT NULL, \
    amount BIGINT NOT NULL, currency TEXT NOT NULL, original_amount BIGINT NOT NULL";
const STAGE_WIDTH: usize = 11;

pub(crate) async fn create_temp(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    name: &str,
    columns: &str,
    indexed: &str,
) -> Result<(), StoreError> {
    for statement in backend.create_temp(name, columns, indexed) {
        tx.execute(statement.as_str())
            .await
            .context("creating a staging table")?;
    }
    Ok(())
}

pub(crate) async fn drop_temp(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
    names: &[&str],
) -> Result<(), StoreError> {
    for name in names {
        tx.execute(backend.drop_temp(name).as_str())
            .await
            .context("dropping a staging table")?;
    }
    Ok(())
}

/// `($1, …, $width), ($width+1, …)` for `rows` rows, or `(?, …)` when `anonymous`.
fn placeholders(rows: usize, width: usize, anonymous: bool) -> String {
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

struct SqlLoad {
    backend: Arc<dyn Backend>,
    generations: Arc<crate::control::Generations>,
    tenant_id: String,
    tx: Transaction<'static, Any>,
    /// Held until the session commits or is dropped: loads of a tenant queue.
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    next_seq: i64,
}

#[async_trait]
impl LoadSession for SqlLoad {
    async fn stage(&mut self, postings: &[Posting]) -> Result<(), StoreError> {
        for chunk in postings.chunks(self.backend.stage_chunk_rows()) {
            let sql = format!(
                "INSERT INTO load_stage (source_key, line, seq, date, branch, memo, occurred_at, account, \
                 amount, currency, original_amount) VALUES {}",
                placeholders(chunk.len(), STAGE_WIDTH, self.backend.anonymous_placeholders())
            );
            let mut query = sqlx::query(&sql);
            for posting in chunk {
                self.next_seq += 1;
                query = query
                    .bind(posting.source_key.as_str())
                    .bind(posting.origin_line as i64)
                    .bind(self.next_seq)
                    .bind(posting.date.to_string())
                    .bind(posting.branch.as_str())
                    .bind(posting.memo.as_str())
                    .bind(posting.occurred_at.as_deref())
                    .bind(posting.account.as_str())
                    .bind(posting.amount.units())
                    .bind(posting.currency.as_str())
                    .bind(posting.original_amount.units());
            }
            query
                .execute(&mut *self.tx)
                .await
                .context("staging postings")?;
        }
        Ok(())
    }

    async fn commit(
        mut self: Box<Self>,
        record: LoadRecord,
        max_errors: usize,
    ) -> Result<LoadSummary, StoreError> {
        let tx = &mut self.tx;
        let mut errors = Vec::new();
        // One pass over the staged postings finds both kinds of broken transaction.
        let broken = sqlx::query(
            "SELECT source_key, MIN(line) AS line, CAST(SUM(amount) AS BIGINT) AS total, \
             CASE WHEN COUNT(DISTINCT date) > 1 OR COUNT(DISTINCT branch) > 1 THEN 1 ELSE 0 END AS mixed \
             FROM load_stage GROUP BY source_key \
             HAVING SUM(amount) <> 0 OR COUNT(DISTINCT date) > 1 OR COUNT(DISTINCT branch) > 1",
        )
        .fetch_all(&mut **tx)
        .await
        .context("checking transactions")?;
        for row in broken {
            let key: String = row.try_get("source_key").context("checking transactions")?;
            let line = row
                .try_get::<i64, _>("line")
                .context("checking transactions")? as u64;
            let total: i64 = row.try_get("total").context("checking transactions")?;
            let mixed: i32 = row.try_get("mixed").context("checking transactions")?;
            if total != 0 {
                errors.push(RowError {
                    line,
                    reason: format!(
                        "unbalanced transaction '{key}': its postings sum to {}",
                        Amount::from_units(total)
                    ),
                });
            }
            if mixed != 0 {
                errors.push(RowError {
                    line,
                    reason: format!(
                        "transaction '{key}' has postings on different dates or branches"
                    ),
                });
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            let total = errors.len();
            errors.truncate(max_errors);
            // Dropping the transaction rolls it back.
            return Err(LoadRejected { errors, total }.into());
        }

        let totals = sqlx::query(
            "SELECT COUNT(DISTINCT source_key) AS transactions, COUNT(*) AS postings, \
             CAST(COALESCE(SUM(ABS(amount)), 0) AS BIGINT) AS control_sum FROM load_stage",
        )
        .fetch_one(&mut **tx)
        .await
        .context("totalling the load")?;
        let transactions: i64 = totals
            .try_get("transactions")
            .context("totalling the load")?;
        let postings: i64 = totals.try_get("postings").context("totalling the load")?;
        let control_sum: i64 = totals
            .try_get("control_sum")
            .context("totalling the load")?;

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
        .bind(postings)
        .bind(control_sum)
        .bind(now())
        .fetch_one(&mut **tx)
        .await
        .context("recording the load")?;

        aggregates::create_touched(self.backend.as_ref(), tx).await?;
        let merge = [
            "INSERT INTO touched (month, branch) \
             SELECT month, branch FROM transactions \
             WHERE source = $1 AND source_key IN (SELECT source_key FROM load_stage) \
             UNION SELECT substr(date, 1, 7), branch FROM load_stage",
            "DELETE FROM postings WHERE txn_id IN (SELECT id FROM transactions \
             WHERE source = $1 AND source_key IN (SELECT source_key FROM load_stage))",
            "DELETE FROM transactions WHERE source = $1 AND source_key IN (SELECT source_key FROM load_stage)",
        ];
        for statement in merge {
            sqlx::query(statement)
                .bind(&record.source)
                .execute(&mut **tx)
                .await
                .context("replacing the source's transactions")?;
        }
        sqlx::query(
            "INSERT INTO transactions (source, source_key, date, month, branch, memo, occurred_at, load_id) \
             SELECT $1, source_key, MIN(date), substr(MIN(date), 1, 7), MIN(branch), MIN(memo), \
             MIN(occurred_at), $2 FROM load_stage GROUP BY source_key",
        )
        .bind(&record.source)
        .bind(load_id)
        .execute(&mut **tx)
        .await
        .context("writing transactions")?;
        sqlx::query(
            "INSERT INTO postings (txn_id, seq, account, amount, currency, original_amount) \
             SELECT t.id, s.seq, s.account, s.amount, s.currency, s.original_amount \
             FROM load_stage s JOIN transactions t ON t.source = $1 AND t.source_key = s.source_key",
        )
        .bind(&record.source)
        .execute(&mut **tx)
        .await
        .context("writing postings")?;

        let buckets = aggregates::recompute(self.backend.as_ref(), tx).await?;
        if let Some(cursor) = &record.cursor {
            sqlx::query(
                "INSERT INTO sync_cursors (source, position, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (source) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
            )
            .bind(&record.source)
            .bind(cursor)
            .bind(now())
            .execute(&mut **tx)
            .await
            .context("advancing the sync cursor")?;
        }
        drop_temp(self.backend.as_ref(), tx, &["touched", "load_stage"]).await?;
        self.tx.commit().await.context("committing the load")?;
        self.generations.bump(&self.tenant_id);
        Ok(LoadSummary {
            load_id,
            transactions,
            postings,
            control_sum: Amount::from_units(control_sum),
            buckets_recomputed: buckets as i64,
        })
    }
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
    })
}

const LOAD_COLUMNS: &str =
    "id, source, stream, origin, rows_read, transactions, postings, control_sum, loaded_at, status, problem";

#[async_trait]
impl Store for SqlStore {
    async fn create_tenant(&self, new: NewTenant) -> Result<(Tenant, bool), StoreError> {
        self.insert_tenant(new).await
    }

    async fn tenant(&self, id_or_slug: &str) -> Result<Option<Tenant>, StoreError> {
        self.find_tenant(id_or_slug).await
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.all_tenants().await
    }

    async fn update_settings(
        &self,
        tenant: &Tenant,
        settings: &TenantSettings,
    ) -> Result<(Tenant, u64), StoreError> {
        settings
            .validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.write_settings(&tenant.id, settings).await?;
        let mut tx = self.backend.begin(&tenant.id).await?;
        let moved = dates::align(self.backend.as_ref(), &mut tx, &settings.timezone).await?;
        tx.commit()
            .await
            .context("committing re-dated transactions")?;
        self.generations.bump(&tenant.id);
        let updated = self
            .find_tenant(&tenant.id)
            .await?
            .ok_or_else(|| StoreError::Invalid(format!("tenant {} vanished", tenant.id)))?;
        Ok((updated, moved))
    }

    async fn create_api_key(
        &self,
        tenant_id: &str,
        name: &str,
        scope: &str,
        secret_hash: &str,
    ) -> Result<ApiKey, StoreError> {
        self.insert_api_key(tenant_id, name, scope, secret_hash)
            .await
    }

    async fn authenticate_api_key(
        &self,
        secret_hash: &str,
    ) -> Result<Option<(Tenant, ApiKey)>, StoreError> {
        self.api_key_by_hash(secret_hash).await
    }

    async fn invite_user(
        &self,
        tenant: &Tenant,
        email: &str,
        role: &str,
        token_hash: &str,
        expires_at: &str,
    ) -> Result<User, StoreError> {
        self.invite(tenant, email, role, token_hash, expires_at)
            .await
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        password_hash: &str,
    ) -> Result<(Tenant, User), StoreError> {
        self.accept(token_hash, password_hash).await
    }

    async fn users(&self, tenant: &Tenant) -> Result<Vec<User>, StoreError> {
        self.tenant_users(tenant).await
    }

    async fn login_candidate(&self, email: &str) -> Result<Option<LoginCandidate>, StoreError> {
        self.candidate(email).await
    }

    async fn record_login(
        &self,
        user_id: &str,
        success: bool,
        locked_until: Option<&str>,
    ) -> Result<(), StoreError> {
        self.login_outcome(user_id, success, locked_until).await
    }

    async fn create_session(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: &str,
    ) -> Result<(), StoreError> {
        self.open_session(user_id, token_hash, expires_at).await
    }

    async fn session(&self, token_hash: &str) -> Result<Option<(Tenant, User)>, StoreError> {
        self.session_user(token_hash).await
    }

    async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        self.close_session(token_hash).await
    }

    async fn set_user_role(
        &self,
        tenant: &Tenant,
        user_id: &str,
        role: &str,
    ) -> Result<User, StoreError> {
        self.change_role(tenant, user_id, role).await
    }

    async fn remove_user(&self, tenant: &Tenant, user_id: &str) -> Result<(), StoreError> {
        self.delete_user(tenant, user_id).await
    }

    async fn api_keys(&self, tenant: &Tenant) -> Result<Vec<ApiKey>, StoreError> {
        self.tenant_api_keys(tenant).await
    }

    async fn revoke_api_key(&self, tenant: &Tenant, key_id: &str) -> Result<(), StoreError> {
        self.revoke_key(tenant, key_id).await
    }

    async fn set_plan(
        &self,
        tenant: &Tenant,
        plan: &str,
        seats: i64,
    ) -> Result<Tenant, StoreError> {
        self.change_plan(tenant, plan, seats).await
    }

    async fn audit(
        &self,
        tenant_id: &str,
        actor: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.append_audit(tenant_id, actor, action, detail).await
    }

    async fn audit_log(&self, tenant: &Tenant, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        self.read_audit(tenant, limit).await
    }

    async fn upsert_accounts(
        &self,
        tenant: &Tenant,
        accounts: &[Account],
    ) -> Result<(), StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        for account in accounts {
            sqlx::query(
                "INSERT INTO accounts (code, name, class, category, cash_flow_section) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (code) DO UPDATE SET name = excluded.name, class = excluded.class, \
                 category = excluded.category, cash_flow_section = excluded.cash_flow_section",
            )
            .bind(&account.code)
            .bind(&account.name)
            .bind(account.class.as_str())
            .bind(account.category.as_deref())
            .bind(account.class.cash_flow_section().as_str())
            .execute(&mut *tx)
            .await
            .context("writing accounts")?;
        }
        // A changed class or category changes what the aggregates say.
        rebuild_in(self.backend.as_ref(), &mut tx).await?;
        tx.commit().await.context("committing accounts")?;
        self.generations.bump(&tenant.id);
        Ok(())
    }

    async fn accounts(&self, tenant: &Tenant) -> Result<Vec<Account>, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        let rows = sqlx::query("SELECT code, name, class, category FROM accounts ORDER BY code")
            .fetch_all(&mut *tx)
            .await
            .context("reading accounts")?;
        rows.iter()
            .map(|row| {
                let class: String = row.try_get("class").context("reading accounts")?;
                Ok(Account {
                    code: row.try_get("code").context("reading accounts")?,
                    name: row.try_get("name").context("reading accounts")?,
                    class: AccountClass::parse(&class).ok_or_else(|| {
                        StoreError::Invalid(format!("stored account class '{class}' is unknown"))
                    })?,
                    category: row.try_get("category").context("reading accounts")?,
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
             control_sum, loaded_at, status, problem) VALUES ($1, $2, $3, $4, $5, 0, 0, 0, $6, 'failed', $7)",
        )
        .bind(&record.source)
        // Failed attempts of the same content may repeat; they never block a later success.
        .bind(format!("failed:{}:{at}", record.fingerprint))
        .bind(&record.stream)
        .bind(&record.origin)
        .bind(record.rows_read)
        .bind(&at)
        .bind(problem)
        .execute(&mut *tx)
        .await
        .context("recording a failed load")?;
        tx.commit().await.context("committing a failed load")
    }

    async fn load_totals(&self, tenant: &Tenant, load_id: i64) -> Result<LedgerTotals, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        let row = sqlx::query(
            "SELECT COUNT(DISTINCT t.id) AS transactions, COUNT(p.txn_id) AS postings, \
             CAST(COALESCE(SUM(ABS(p.amount)), 0) AS BIGINT) AS control_sum \
             FROM transactions t JOIN postings p ON p.txn_id = t.id WHERE t.load_id = $1",
        )
        .bind(load_id)
        .fetch_one(&mut *tx)
        .await
        .context("totalling a load in the ledger")?;
        Ok(LedgerTotals {
            transactions: row.try_get("transactions").context("totalling a load")?,
            postings: row.try_get("postings").context("totalling a load")?,
            control_sum: Amount::from_units(
                row.try_get("control_sum").context("totalling a load")?,
            ),
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
        let guard = self.backend.load_lock(&tenant.id).await;
        let mut tx = self.backend.begin(&tenant.id).await?;
        if let Some(statement) = self.backend.load_lock_statement() {
            sqlx::query(statement)
                .bind(&tenant.id)
                .execute(&mut *tx)
                .await
                .context("waiting for the tenant's load lock")?;
        }
        dates::align(self.backend.as_ref(), &mut tx, &tenant.settings.timezone).await?;
        create_temp(
            self.backend.as_ref(),
            &mut tx,
            "load_stage",
            STAGE_COLUMNS,
            "source_key",
        )
        .await?;
        Ok(Box::new(SqlLoad {
            backend: self.backend.clone(),
            generations: self.generations.clone(),
            tenant_id: tenant.id.clone(),
            tx,
            next_seq: 0,
            _guard: guard,
        }))
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
                entry.add(metric, key, Amount::from_units(units));
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
        let units: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM month_metrics \
             WHERE branch = $1 AND month < $2 AND metric = 'class' AND key = 'cash'",
        )
        .bind(branch)
        .bind(month.to_string())
        .fetch_one(&mut *tx)
        .await
        .context("reading opening cash")?;
        Ok(Amount::from_units(units))
    }

    async fn branches(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
        sqlx::query_scalar(
            "SELECT DISTINCT branch FROM month_metrics WHERE branch <> '*' ORDER BY branch",
        )
        .fetch_all(&mut *tx)
        .await
        .context("listing branches")
    }

    async fn rebuild_aggregates(&self, tenant: &Tenant) -> Result<i64, StoreError> {
        let mut tx = self.backend.begin(&tenant.id).await?;
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
        sqlx::query_scalar("SELECT COUNT(*) FROM postings")
            .fetch_one(&mut *tx)
            .await
            .context("counting postings")
    }
}

/// Recomputes every bucket that has postings or had aggregates.
async fn rebuild_in(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
) -> Result<u64, StoreError> {
    aggregates::create_touched(backend, tx).await?;
    tx.execute(
        "INSERT INTO touched (month, branch) SELECT DISTINCT month, branch FROM transactions \
         UNION SELECT DISTINCT month, branch FROM month_metrics WHERE branch <> '*'",
    )
    .await
    .context("listing buckets")?;
    let buckets = aggregates::recompute(backend, tx).await?;
    drop_temp(backend, tx, &["touched"]).await?;
    Ok(buckets)
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(super::placeholders(2, 3, false), "($1,$2,$3),($4,$5,$6)");
        assert_eq!(super::placeholders(2, 2, true), "(?,?),(?,?)");
    }
}
