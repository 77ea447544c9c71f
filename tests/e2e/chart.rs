//! A tenant's own chart instead of the default one, and retired accounts: postings
//! already on an account outlive it, new ones are refused by name.

use std::path::Path;
use std::sync::Arc;

use ledgersync::import::{import_csv, read_chart, FileRejected, ImportOutcome};
use ledgersync_config::StreamDef;
use ledgersync_schemas::{default_chart, Month, BRANCH_TOTAL};
use ledgersync_store::{Store, StoreError, Tenant};

use crate::helpers::{amount, options, provision, write};

macro_rules! on_both_backends {
    ($($story:ident),* $(,)?) => {$(
        mod $story {
            // polars' lazy engine blocks in place: the mapping needs a multi-threaded
            // runtime.
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                let test = crate::helpers::sqlite_store().await;
                super::$story(test.store.clone(), test.dir.path()).await;
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                let test = crate::helpers::postgres_store().await;
                super::$story(test.store.clone(), test.dir.path()).await;
            }
        }
    )*};
}

on_both_backends!(
    a_replaced_chart_keeps_accounts_with_postings_and_reports_stay_the_same,
    a_retired_account_refuses_new_postings_until_imported_again,
);

async fn import_journal(
    store: &Arc<dyn Store>,
    tenant: &Tenant,
    dir: &Path,
    name: &str,
    rows: &str,
) -> anyhow::Result<ImportOutcome> {
    let file = write(
        dir,
        name,
        &format!("date,txn_id,account,amount,branch\n{rows}"),
    );
    import_csv(
        store.clone(),
        tenant,
        StreamDef::journal(),
        &file,
        &options(),
    )
    .await
}

fn month(text: &str) -> Month {
    text.parse().unwrap()
}

/// (code, retired) of the tenant's chart.
async fn chart(store: &dyn Store, tenant: &Tenant) -> Vec<(String, bool)> {
    store
        .accounts(tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.code, a.retired))
        .collect()
}

const MARKETING_AND_SALES: &str = "\
2025-03-02,M1,6300,2500000,Kemang
2025-03-02,M1,1010,-2500000,Kemang
2025-03-03,S1,1000,1100000,Kemang
2025-03-03,S1,4010,-1000000,Kemang
2025-03-03,S1,2100,-100000,Kemang
";

async fn a_replaced_chart_keeps_accounts_with_postings_and_reports_stay_the_same(
    store: Arc<dyn Store>,
    dir: &Path,
) {
    let tenant = provision(store.as_ref(), "pro").await;
    import_journal(&store, &tenant, dir, "gl.csv", MARKETING_AND_SALES)
        .await
        .unwrap();
    let march = || store.month_metrics(&tenant, BRANCH_TOTAL, month("2025-03"), month("2025-03"));
    let before = march().await.unwrap();

    // The tenant's own chart: its cash, bank, tax, sales and a marketing account of
    // its own numbering; 6300 (with postings) and the rest of the default chart not.
    let own = write(
        dir,
        "own-chart.csv",
        "code,name,class,category\n\
         1000,Kas,cash,\n\
         1010,Bank BCA,cash,\n\
         2100,PB1 terutang,payable,tax\n\
         4010,Penjualan minuman,revenue,beverage\n\
         6310,Iklan dan promosi,expense,marketing\n",
    );
    let change = store
        .replace_chart(&tenant, &read_chart(&own).unwrap())
        .await
        .unwrap();
    assert_eq!(change.written, 5);
    assert_eq!(change.retired, ["6300"]);
    let defaults = default_chart().len();
    // Every default account but the four kept and the one retired is gone.
    assert_eq!(change.removed.len(), defaults - 5, "{:?}", change.removed);
    assert!(!change.removed.contains(&"6300".to_string()));
    assert_eq!(
        chart(store.as_ref(), &tenant).await,
        [
            ("1000".to_string(), false),
            ("1010".to_string(), false),
            ("2100".to_string(), false),
            ("4010".to_string(), false),
            ("6300".to_string(), true),
            ("6310".to_string(), false),
        ]
    );
    // The postings on 6300 still count, as before, after a rebuild too.
    assert_eq!(march().await.unwrap(), before);
    store.rebuild_aggregates(&tenant).await.unwrap();
    assert_eq!(march().await.unwrap(), before);
    assert_eq!(
        before[&month("2025-03")].get("expense", "marketing"),
        amount("2500000")
    );

    // A removed default account is unknown now, a retired one refused as retired.
    let refused = import_journal(
        &store,
        &tenant,
        dir,
        "after.csv",
        "2025-04-01,M2,6300,10,Kemang\n2025-04-01,M2,1010,-10,Kemang\n\
         2025-04-01,C1,5000,10,Kemang\n2025-04-01,C1,1010,-10,Kemang\n\
         2025-04-01,M3,6310,10,Kemang\n2025-04-01,M3,1010,-10,Kemang\n",
    )
    .await
    .expect_err("postings on retired and removed accounts are refused");
    let rejected = refused.downcast::<FileRejected>().unwrap();
    let reasons: Vec<_> = rejected
        .errors
        .iter()
        .map(|e| (e.line, e.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, 2);
    assert!(
        reasons[0].1.contains("'6300'") && reasons[0].1.contains("retired"),
        "{}",
        reasons[0].1
    );
    assert_eq!(reasons[1].0, 4);
    assert!(
        reasons[1].1.starts_with("unknown account '5000'"),
        "{}",
        reasons[1].1
    );
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 5);
}

async fn a_retired_account_refuses_new_postings_until_imported_again(
    store: Arc<dyn Store>,
    dir: &Path,
) {
    let tenant = provision(store.as_ref(), "pro").await;
    import_journal(&store, &tenant, dir, "gl.csv", MARKETING_AND_SALES)
        .await
        .unwrap();
    let codes = |list: &[&str]| list.iter().map(|c| c.to_string()).collect::<Vec<_>>();

    // An unknown code retires nothing, the known ones included.
    let unknown = store
        .retire_accounts(&tenant, &codes(&["6300", "9999"]))
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, StoreError::NotFound(ref m) if m.contains("'9999'")),
        "{unknown}"
    );
    assert!(chart(store.as_ref(), &tenant)
        .await
        .iter()
        .all(|(_, retired)| !retired));

    store
        .retire_accounts(&tenant, &codes(&["6300", "6400"]))
        .await
        .unwrap();
    let retired: Vec<String> = chart(store.as_ref(), &tenant)
        .await
        .into_iter()
        .filter(|(_, retired)| *retired)
        .map(|(code, _)| code)
        .collect();
    assert_eq!(retired, ["6300", "6400"]);
    let rows = "2025-04-01,M2,6300,10,Kemang\n2025-04-01,M2,1010,-10,Kemang\n";
    let refused = import_journal(&store, &tenant, dir, "april.csv", rows)
        .await
        .expect_err("a retired account is refused");
    assert!(refused.to_string().contains("retired"), "{refused}");

    // Imported again (as a chart line), it is in use and the same file loads.
    let line = write(
        dir,
        "marketing.csv",
        "code,name,class,category\n6300,Marketing,expense,marketing\n",
    );
    store
        .upsert_accounts(&tenant, &read_chart(&line).unwrap())
        .await
        .unwrap();
    let outcome = import_journal(&store, &tenant, dir, "april.csv", rows)
        .await
        .unwrap();
    assert!(matches!(outcome, ImportOutcome::Loaded(_)));
    let april = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-04"), month("2025-04"))
        .await
        .unwrap();
    assert_eq!(
        april[&month("2025-04")].get("expense", "marketing"),
        amount("10")
    );
}
