//! Ledgers written before postings became columnar kept one row per posting in
//! `transactions` and `postings`. The first time such a tenant is opened, its
//! postings move into segments, one load at a time, in one transaction; the
//! aggregates are unchanged by the move and stay as they are.

use std::collections::HashMap;

use ledgersync_schemas::{Amount, Posting, PostingFrame};
use sqlx::{Any, Executor, Row, Transaction};

use crate::error::{Context, StoreError};
use crate::segments::{self, polars_error};

pub(crate) async fn adopt_row_postings(
    tx: &mut Transaction<'static, Any>,
) -> Result<(), StoreError> {
    const READING: &str = "reading postings of an earlier version";
    // Deleting the mark first also makes a concurrent opener wait, then find nothing.
    let pending = sqlx::query("DELETE FROM ledger_meta WHERE key = 'row_postings' RETURNING value")
        .fetch_optional(&mut **tx)
        .await
        .context(READING)?;
    if pending.is_none() {
        return Ok(());
    }
    let loads = sqlx::query("SELECT DISTINCT load_id, source FROM transactions ORDER BY load_id")
        .fetch_all(&mut **tx)
        .await
        .context(READING)?;
    let mut moved = 0usize;
    for load in loads {
        let load_id: i64 = load.try_get("load_id").context(READING)?;
        let source: String = load.try_get("source").context(READING)?;
        let rows = sqlx::query(
            "SELECT t.source_key, t.date, t.branch, t.memo, t.occurred_at, p.account, p.amount, \
             p.currency, p.original_amount FROM postings p JOIN transactions t ON t.id = p.txn_id \
             WHERE t.load_id = $1 ORDER BY t.id, p.seq",
        )
        .bind(load_id)
        .fetch_all(&mut **tx)
        .await
        .context(READING)?;
        let mut numbers: HashMap<String, u32> = HashMap::new();
        let mut txns = Vec::with_capacity(rows.len());
        let mut postings = Vec::with_capacity(rows.len());
        for row in rows {
            let key: String = row.try_get("source_key").context(READING)?;
            let next = numbers.len() as u32;
            txns.push(*numbers.entry(key.clone()).or_insert(next));
            let date: String = row.try_get("date").context(READING)?;
            postings.push(Posting {
                source_key: key,
                origin_line: 0,
                date: date
                    .parse()
                    .map_err(|e| StoreError::Invalid(format!("stored date '{date}': {e}")))?,
                branch: row.try_get("branch").context(READING)?,
                memo: row.try_get("memo").context(READING)?,
                occurred_at: row.try_get("occurred_at").context(READING)?,
                account: row.try_get("account").context(READING)?,
                amount: Amount::from_units(row.try_get("amount").context(READING)?),
                currency: row.try_get("currency").context(READING)?,
                original_amount: Amount::from_units(
                    row.try_get("original_amount").context(READING)?,
                ),
            });
        }
        moved += postings.len();
        let frame = segments::frame(PostingFrame::from_postings(&postings), txns)
            .map_err(polars_error(READING))?;
        segments::insert(tx, Some((&source, load_id)), frame).await?;
    }
    for statement in ["DELETE FROM postings", "DELETE FROM transactions"] {
        tx.execute(statement)
            .await
            .context("removing postings of an earlier version")?;
    }
    log::info!("Moved {moved} postings of an earlier version into columnar segments.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use ledgersync_config::TenantSettings;
    use ledgersync_schemas::{Amount, BRANCH_TOTAL};
    use sqlx::Executor;

    use crate::Tenant;

    /// A tenant database migrated by the migrations before `before` only.
    async fn migrated_before(file: &std::path::Path, before: &str) -> sqlx::AnyPool {
        let earlier = tempfile::tempdir().unwrap();
        let source =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite/tenant");
        for entry in std::fs::read_dir(&source).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.as_str() < before {
                std::fs::copy(&path, earlier.path().join(name)).unwrap();
            }
        }
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(earlier.path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        pool
    }

    /// A tenant database as the version before segments left it: migrations 0001 to
    /// 0005 and postings as rows.
    async fn earlier_version_ledger(file: &std::path::Path) {
        let pool = migrated_before(file, "0006").await;
        pool.execute(
            "INSERT INTO accounts VALUES ('1000', 'Cash', 'cash', NULL, 'operating'), \
                 ('4000', 'Sales', 'revenue', 'food', 'operating'); \
             INSERT INTO loads (id, source, fingerprint, stream, origin, rows_read, transactions, \
                 postings, control_sum, loaded_at) \
                 VALUES (1, 'file:journal', 'f', 'journal', 'a.csv', 2, 1, 2, 2200000, '2025-01-31'); \
             INSERT INTO transactions (id, source, source_key, date, month, branch, memo, occurred_at, load_id) \
                 VALUES (7, 'file:journal', 'S1', '2025-01-15', '2025-01', 'Kemang', 'sale', NULL, 1); \
             INSERT INTO postings VALUES (7, 1, '1000', 1100000, 'IDR', 1100000), \
                 (7, 2, '4000', -1100000, 'IDR', -1100000); \
             INSERT INTO month_metrics VALUES ('2025-01', 'Kemang', 'class', 'cash', 1100000), \
                 ('2025-01', 'Kemang', 'class', 'revenue', -1100000), \
                 ('2025-01', 'Kemang', 'revenue', 'food', -1100000), \
                 ('2025-01', 'Kemang', 'cash_flow', 'operating_in', 1100000); \
             INSERT INTO month_rollups SELECT month, branch, json_group_object(metric || ':' || key, amount) \
                 FROM month_metrics GROUP BY month, branch;",
        )
        .await
        .unwrap();
        pool.close().await;
    }

    fn tenant() -> Tenant {
        Tenant {
            id: "t1".into(),
            slug: "t1".into(),
            name: "Earlier".into(),
            admin_email: "admin@earlier.example".into(),
            plan: "lite".into(),
            seats: 1,
            settings: TenantSettings::new_default("Earlier"),
            created_at: "2025-01-01".into(),
        }
    }

    /// Segments written while their data sat in `ledger_segments` (before 0008) are
    /// read, rebuilt and replaced as any other once the data has moved apart.
    #[tokio::test]
    async fn segments_written_with_their_data_inline_keep_it() {
        use ledgersync_schemas::{Posting, PostingFrame};
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("tenants")).unwrap();
        let pool = migrated_before(&data.path().join("tenants/t1.db"), "0008").await;
        let posting = |account: &str, units: i64| Posting {
            source_key: "S1".into(),
            origin_line: 2,
            date: "2025-01-15".parse().unwrap(),
            branch: "Kemang".into(),
            memo: "sale".into(),
            occurred_at: None,
            account: account.into(),
            amount: Amount::from_units(units),
            currency: "IDR".into(),
            original_amount: Amount::from_units(units),
        };
        let postings = [posting("1000", 1_100_000), posting("4000", -1_100_000)];
        let mut frame =
            crate::segments::frame(PostingFrame::from_postings(&postings), vec![0, 0]).unwrap();
        let bytes = crate::segments::encode(&mut frame).unwrap();
        pool.execute(
            "INSERT INTO accounts VALUES ('1000', 'Cash', 'cash', NULL, 'operating'), \
                 ('4000', 'Sales', 'revenue', 'food', 'operating'); \
             INSERT INTO loads (id, source, fingerprint, stream, origin, rows_read, transactions, \
                 postings, control_sum, loaded_at) \
                 VALUES (1, 'file:journal', 'f', 'journal', 'a.csv', 2, 1, 2, 2200000, '2025-01-31');",
        )
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO ledger_segments (id, source, load_id, first_month, last_month, postings, \
             data, first_key, last_key) VALUES (5, 'file:journal', 1, '2025-01', '2025-01', 2, $1, 'S1', 'S1')",
        )
        .bind(bytes)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = crate::connect(&format!("sqlite://{}", data.path().display()))
            .await
            .unwrap();
        let tenant = tenant();
        let totals = store.load_totals(&tenant, 1).await.unwrap();
        assert_eq!((totals.transactions, totals.postings), (1, 2));
        assert_eq!(totals.control_sum, Amount::from_units(2_200_000));
        store.rebuild_aggregates(&tenant).await.unwrap();
        let month = "2025-01".parse().unwrap();
        let metrics = store
            .month_metrics(&tenant, "Kemang", month, month)
            .await
            .unwrap();
        assert_eq!(
            metrics[&month].get("class", "revenue"),
            Amount::from_units(-1_100_000)
        );
    }

    #[tokio::test]
    async fn postings_of_an_earlier_version_move_into_segments() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("tenants")).unwrap();
        earlier_version_ledger(&data.path().join("tenants/t1.db")).await;

        let store = crate::connect(&format!("sqlite://{}", data.path().display()))
            .await
            .unwrap();
        let tenant = tenant();
        assert_eq!(store.posting_count(&tenant).await.unwrap(), 2);
        let totals = store.load_totals(&tenant, 1).await.unwrap();
        assert_eq!((totals.transactions, totals.postings), (1, 2));
        assert_eq!(totals.control_sum, Amount::from_units(2_200_000));
        let month = "2025-01".parse().unwrap();
        let before = store
            .month_metrics(&tenant, "Kemang", month, month)
            .await
            .unwrap();
        assert_eq!(
            store
                .cash_before(&tenant, "Kemang", "2025-02".parse().unwrap())
                .await
                .unwrap(),
            Amount::from_units(1_100_000)
        );
        // Rebuilt from the moved postings, the aggregates say what they said.
        store.rebuild_aggregates(&tenant).await.unwrap();
        let after = store
            .month_metrics(&tenant, "Kemang", month, month)
            .await
            .unwrap();
        assert_eq!(before, after);
        let total = store
            .month_metrics(&tenant, BRANCH_TOTAL, month, month)
            .await
            .unwrap();
        assert_eq!(
            total[&month].get("cash_flow", "operating_in"),
            Amount::from_units(1_100_000)
        );
    }
}
