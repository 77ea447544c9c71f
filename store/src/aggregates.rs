//! Recomputing the precomputed aggregates of the buckets listed in a temporary table
//! `touched (month, branch)`, inside the caller's transaction.
//!
//! Per (month, branch): sums by account class, by category within revenue, COGS and
//! expenses, and the direct cash flow. A cash flow is classified by the counterpart
//! postings of each transaction that touches a cash account: every non-cash posting
//! moves cash by minus its amount, netted per section within the transaction, so a
//! transfer between two cash accounts is no flow and the flows always add up to the
//! change in cash. Branch `*` then holds each touched month's total, and
//! `month_rollups` one JSON row per bucket for reads.

use sqlx::{Any, Executor, Transaction};

use crate::backend::Backend;
use crate::error::{Context, StoreError};

const IN_TOUCHED: &str =
    "EXISTS (SELECT 1 FROM touched b WHERE b.month = t.month AND b.branch = t.branch)";

/// Creates the empty `touched (month, branch)` table that [`recompute`] reads.
pub(crate) async fn create_touched(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
) -> Result<(), StoreError> {
    crate::ledger::create_temp(
        backend,
        tx,
        "touched",
        "month TEXT NOT NULL, branch TEXT NOT NULL",
        "month, branch",
    )
    .await
}

pub(crate) async fn recompute(
    backend: &dyn Backend,
    tx: &mut Transaction<'static, Any>,
) -> Result<u64, StoreError> {
    let statements = [
        "DELETE FROM month_metrics WHERE EXISTS \
         (SELECT 1 FROM touched b WHERE b.month = month_metrics.month AND b.branch = month_metrics.branch)"
            .to_string(),
        "DELETE FROM month_metrics WHERE branch = '*' AND month IN (SELECT month FROM touched)".to_string(),
        // One pass over the postings to per-account sums; classes and categories
        // are then a small join over those.
        format!(
            "INSERT INTO bucket_accounts (month, branch, account, amount) \
             SELECT t.month, t.branch, p.account, SUM(p.amount) \
             FROM postings p JOIN transactions t ON t.id = p.txn_id \
             WHERE {IN_TOUCHED} GROUP BY t.month, t.branch, p.account"
        ),
        "INSERT INTO month_metrics (month, branch, metric, key, amount) \
         SELECT b.month, b.branch, 'class', a.class, SUM(b.amount) \
         FROM bucket_accounts b JOIN accounts a ON a.code = b.account \
         GROUP BY b.month, b.branch, a.class"
            .to_string(),
        "INSERT INTO month_metrics (month, branch, metric, key, amount) \
         SELECT b.month, b.branch, a.class, COALESCE(a.category, ''), SUM(b.amount) \
         FROM bucket_accounts b JOIN accounts a ON a.code = b.account \
         WHERE a.class IN ('revenue', 'cogs', 'expense') \
         GROUP BY b.month, b.branch, a.class, COALESCE(a.category, '')"
            .to_string(),
        format!(
            "INSERT INTO month_metrics (month, branch, metric, key, amount) \
             SELECT month, branch, 'cash_flow', section || direction, SUM(flow) FROM ( \
               SELECT month, branch, section, flow, \
                      CASE WHEN flow > 0 THEN '_in' ELSE '_out' END AS direction FROM ( \
                 SELECT t.month AS month, t.branch AS branch, a.cash_flow_section AS section, \
                        -SUM(p.amount) AS flow \
                 FROM postings p JOIN transactions t ON t.id = p.txn_id JOIN accounts a ON a.code = p.account \
                 WHERE a.class <> 'cash' AND {IN_TOUCHED} \
                   AND EXISTS (SELECT 1 FROM postings c JOIN accounts ca ON ca.code = c.account \
                               WHERE c.txn_id = t.id AND ca.class = 'cash') \
                 GROUP BY t.month, t.branch, t.id, a.cash_flow_section \
               ) per_transaction WHERE flow <> 0 \
             ) flows GROUP BY month, branch, section, direction"
        ),
        "INSERT INTO month_metrics (month, branch, metric, key, amount) \
         SELECT month, '*', metric, key, SUM(amount) FROM month_metrics \
         WHERE branch <> '*' AND month IN (SELECT month FROM touched) \
         GROUP BY month, metric, key"
            .to_string(),
        "DELETE FROM month_rollups WHERE EXISTS \
         (SELECT 1 FROM touched b WHERE b.month = month_rollups.month AND b.branch = month_rollups.branch) \
         OR (branch = '*' AND month IN (SELECT month FROM touched))"
            .to_string(),
        format!(
            "INSERT INTO month_rollups (month, branch, metrics) \
             SELECT m.month, m.branch, {} FROM month_metrics m \
             WHERE EXISTS (SELECT 1 FROM touched b WHERE b.month = m.month AND b.branch = m.branch) \
             OR (m.branch = '*' AND m.month IN (SELECT month FROM touched)) \
             GROUP BY m.month, m.branch",
            backend.json_object_agg("m.metric || ':' || m.key", "m.amount")
        ),
    ];
    crate::ledger::create_temp(
        backend,
        tx,
        "bucket_accounts",
        "month TEXT NOT NULL, branch TEXT NOT NULL, account TEXT NOT NULL, amount BIGINT NOT NULL",
        "account",
    )
    .await?;
    for statement in &statements {
        tx.execute(statement.as_str())
            .await
            .context("recomputing aggregates")?;
    }
    crate::ledger::drop_temp(backend, tx, &["bucket_accounts"]).await?;
    let buckets: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM touched")
        .fetch_one(&mut **tx)
        .await
        .context("counting recomputed buckets")?;
    Ok(buckets as u64)
}
