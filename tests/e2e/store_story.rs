//! The store contract, told once and run against both backends.

use ledgersync_schemas::{Month, BRANCH_TOTAL};
use ledgersync_store::{LoadRecord, Store, StoreError, Tenant};

use crate::helpers::{amount, posting, provision};

macro_rules! on_both_backends {
    ($($story:ident),* $(,)?) => {$(
        mod $story {
            #[tokio::test]
            async fn sqlite() {
                let test = crate::helpers::sqlite_store().await;
                super::$story(test.store.as_ref()).await;
            }
            #[tokio::test]
            async fn postgres() {
                let test = crate::helpers::postgres_store().await;
                super::$story(test.store.as_ref()).await;
            }
        }
    )*};
}

on_both_backends!(
    loads_compute_aggregates_and_cash_flow,
    reloading_is_idempotent_and_moves_touch_both_buckets,
    rejected_loads_change_nothing,
    cursor_commits_with_its_data,
    tenants_are_isolated_and_provisioning_is_idempotent,
    a_new_timezone_redates_the_ledger,
    concurrent_loads_queue_and_agree,
    transactions_split_across_batches_keep_their_cash_flow,
    a_key_that_comes_back_is_one_transaction,
    a_transaction_is_redated_as_one,
);

fn record(fingerprint: &str, cursor: Option<&str>) -> LoadRecord {
    LoadRecord {
        source: "test:ledger".into(),
        fingerprint: fingerprint.into(),
        stream: "journal".into(),
        origin: "story".into(),
        rows_read: 0,
        cursor: cursor.map(str::to_string),
    }
}

fn month(text: &str) -> Month {
    text.parse().unwrap()
}

fn january_ledger() -> Vec<ledgersync_schemas::Posting> {
    vec![
        // A sale at Kemang: cash in, revenue and restaurant tax out.
        posting("S1", "2025-01-15", "Kemang", "1000", "110.5"),
        posting("S1", "2025-01-15", "Kemang", "4000", "-100.4545"),
        posting("S1", "2025-01-15", "Kemang", "2100", "-10.0455"),
        // A purchase on credit: no cash.
        posting("P1", "2025-01-20", "Kemang", "5000", "30"),
        posting("P1", "2025-01-20", "Kemang", "2000", "-30"),
        // A cash deposit: between two cash accounts, not a flow.
        posting("T1", "2025-01-21", "Kemang", "1010", "50"),
        posting("T1", "2025-01-21", "Kemang", "1000", "-50"),
        // Owner capital and equipment at head office.
        posting("C1", "2025-01-02", "", "1010", "1000"),
        posting("C1", "2025-01-02", "", "3000", "-1000"),
        posting("E1", "2025-02-01", "", "1500", "200"),
        posting("E1", "2025-02-01", "", "1010", "-200"),
    ]
}

async fn load(
    store: &dyn Store,
    tenant: &Tenant,
    postings: &[ledgersync_schemas::Posting],
    record: LoadRecord,
) -> Result<ledgersync_store::LoadSummary, StoreError> {
    let mut session = store.begin_load(tenant).await?;
    session.stage(postings).await?;
    session.commit(record, 10).await
}

async fn loads_compute_aggregates_and_cash_flow(store: &dyn Store) {
    let tenant = provision(store, "lite").await;
    let summary = load(store, &tenant, &january_ledger(), record("a", None))
        .await
        .unwrap();
    assert_eq!((summary.transactions, summary.postings), (5, 11));
    assert_eq!(summary.control_sum, amount("2781"));

    let months = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-02"))
        .await
        .unwrap();
    let jan = &months[&month("2025-01")];
    assert_eq!(jan.revenue().unwrap(), amount("100.4545"));
    assert_eq!(jan.cogs(), amount("30"));
    assert_eq!(jan.get("cash_flow", "operating_in"), amount("110.5"));
    assert_eq!(jan.get("cash_flow", "financing_in"), amount("1000"));
    assert_eq!(jan.get("cash_flow", "operating_out"), amount("0"));
    assert_eq!(jan.cash_change(), amount("1110.5"));
    let feb = &months[&month("2025-02")];
    assert_eq!(feb.get("cash_flow", "investing_out"), amount("-200"));

    let kemang = store
        .month_metrics(&tenant, "Kemang", month("2025-01"), month("2025-01"))
        .await
        .unwrap();
    assert_eq!(kemang[&month("2025-01")].cash_change(), amount("110.5"));
    assert_eq!(kemang[&month("2025-01")].get("cogs", "food"), amount("30"));
    assert_eq!(
        store
            .cash_before(&tenant, BRANCH_TOTAL, month("2025-02"))
            .await
            .unwrap(),
        amount("1110.5")
    );
    assert_eq!(
        store
            .cash_before(&tenant, BRANCH_TOTAL, month("2025-03"))
            .await
            .unwrap(),
        amount("910.5")
    );
    assert_eq!(
        store.branches(&tenant).await.unwrap(),
        vec!["".to_string(), "Kemang".to_string()]
    );
}

async fn reloading_is_idempotent_and_moves_touch_both_buckets(store: &dyn Store) {
    let tenant = provision(store, "lite").await;
    load(store, &tenant, &january_ledger(), record("a", None))
        .await
        .unwrap();
    let before = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-02"))
        .await
        .unwrap();
    // The same rows again (say, a re-run sync) change nothing.
    load(store, &tenant, &january_ledger(), record("b", None))
        .await
        .unwrap();
    let after = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-02"))
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 11);
    assert!(store
        .find_load(&tenant, "test:ledger", "b")
        .await
        .unwrap()
        .is_some());

    // The source corrects the sale's date: January loses it, February gains it.
    let moved: Vec<_> = january_ledger()
        .into_iter()
        .filter(|p| p.source_key == "S1")
        .map(|mut p| {
            p.date = "2025-02-03".parse().unwrap();
            p
        })
        .collect();
    let summary = load(store, &tenant, &moved, record("c", None))
        .await
        .unwrap();
    assert_eq!(summary.buckets_recomputed, 2);
    let months = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-02"))
        .await
        .unwrap();
    assert_eq!(months[&month("2025-01")].revenue().unwrap(), amount("0"));
    assert_eq!(
        months[&month("2025-02")].revenue().unwrap(),
        amount("100.4545")
    );
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 11);

    // A full rebuild agrees with the incremental result.
    store.rebuild_aggregates(&tenant).await.unwrap();
    let rebuilt = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-02"))
        .await
        .unwrap();
    assert_eq!(months, rebuilt);
}

async fn rejected_loads_change_nothing(store: &dyn Store) {
    let tenant = provision(store, "lite").await;
    load(store, &tenant, &january_ledger(), record("a", None))
        .await
        .unwrap();
    let mut unbalanced = vec![
        posting("G1", "2025-03-01", "Kemang", "1000", "10"),
        posting("G1", "2025-03-01", "Kemang", "4000", "-10"),
        posting("U1", "2025-03-02", "Kemang", "1000", "10"),
        posting("U1", "2025-03-02", "Kemang", "4000", "-9.9999"),
        posting("M1", "2025-03-02", "Kemang", "1000", "10"),
        posting("M1", "2025-03-03", "Kemang", "4000", "-10"),
    ];
    unbalanced[2].origin_line = 7;
    unbalanced[3].origin_line = 8;
    let err = load(store, &tenant, &unbalanced, record("bad", None))
        .await
        .unwrap_err();
    let StoreError::Rejected(rejected) = err else {
        panic!("expected a rejection, got {err}")
    };
    assert_eq!(rejected.total, 2);
    assert!(rejected.errors.iter().any(|e| e.line == 7
        && e.reason.contains("unbalanced transaction 'U1'")
        && e.reason.contains("0.0001")));
    assert!(rejected
        .errors
        .iter()
        .any(|e| e.reason.contains("'M1' has postings on different dates")));
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 11);
    assert!(store
        .find_load(&tenant, "test:ledger", "bad")
        .await
        .unwrap()
        .is_none());
    let march = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-03"), month("2025-03"))
        .await
        .unwrap();
    assert!(march.is_empty());
}

async fn cursor_commits_with_its_data(store: &dyn Store) {
    let tenant = provision(store, "lite").await;
    assert_eq!(
        store.sync_cursor(&tenant, "test:ledger").await.unwrap(),
        None
    );
    load(store, &tenant, &january_ledger(), record("a", Some("42")))
        .await
        .unwrap();
    assert_eq!(
        store
            .sync_cursor(&tenant, "test:ledger")
            .await
            .unwrap()
            .as_deref(),
        Some("42")
    );
    let bad = vec![posting("U1", "2025-03-02", "", "1000", "1")];
    assert!(load(store, &tenant, &bad, record("b", Some("43")))
        .await
        .is_err());
    assert_eq!(
        store
            .sync_cursor(&tenant, "test:ledger")
            .await
            .unwrap()
            .as_deref(),
        Some("42")
    );
    // A session dropped without commit (a crash mid-load) leaves nothing either.
    let mut session = store.begin_load(&tenant).await.unwrap();
    session
        .stage(&[
            posting("X1", "2025-04-01", "", "1000", "1"),
            posting("X1", "2025-04-01", "", "3000", "-1"),
        ])
        .await
        .unwrap();
    drop(session);
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 11);
}

async fn tenants_are_isolated_and_provisioning_is_idempotent(store: &dyn Store) {
    let first = provision(store, "lite").await;
    let second = provision(store, "pro").await;
    load(store, &first, &january_ledger(), record("a", None))
        .await
        .unwrap();
    assert_eq!(store.posting_count(&second).await.unwrap(), 0);
    assert!(store
        .month_metrics(&second, BRANCH_TOTAL, month("2025-01"), month("2025-12"))
        .await
        .unwrap()
        .is_empty());

    let again =
        ledgersync::tenants::provision(store, "Kopi Kenangan", &first.admin_email, "lite", 10)
            .await
            .unwrap();
    assert!(!again.created);
    assert_eq!(again.tenant.id, first.id);
    assert_ne!(first.slug, second.slug, "slugs stay unique for equal names");
    assert_eq!(
        store.tenant(&first.slug).await.unwrap().unwrap().id,
        first.id
    );
    assert_eq!(
        store.tenant(&first.id).await.unwrap().unwrap().slug,
        first.slug
    );

    let secret = crate::helpers::new_key(store, &second, "read").await;
    let (tenant, key) = store
        .authenticate_api_key(&ledgersync::keys::hash(&secret))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tenant.id, second.id);
    assert_eq!(key.scope, "read");
    assert!(key.last_used_at.is_some());
    assert!(store
        .authenticate_api_key(&ledgersync::keys::hash("lsk_forged"))
        .await
        .unwrap()
        .is_none());
}

async fn a_new_timezone_redates_the_ledger(store: &dyn Store) {
    let tenant = provision(store, "lite").await;
    // 17:30 UTC on 31 January: 1 February in Jakarta.
    let mut sale = vec![
        posting("S1", "2025-02-01", "Kemang", "1000", "110"),
        posting("S1", "2025-02-01", "Kemang", "4000", "-110"),
    ];
    for p in &mut sale {
        p.occurred_at = Some("2025-01-31T17:30:00+00:00".into());
    }
    load(store, &tenant, &sale, record("a", None))
        .await
        .unwrap();
    let revenue = |months: &std::collections::BTreeMap<Month, ledgersync_schemas::MonthMetrics>,
                   m: &str| {
        months
            .get(&month(m))
            .map(|x| x.revenue().unwrap())
            .unwrap_or_default()
    };

    let mut settings = tenant.settings.clone();
    settings.timezone = "UTC".into();
    let (tenant, moved) = store.update_settings(&tenant, &settings).await.unwrap();
    assert_eq!(moved, 1);
    assert_eq!(tenant.settings.timezone, "UTC");
    for branch in [BRANCH_TOTAL, "Kemang"] {
        let months = store
            .month_metrics(&tenant, branch, month("2025-01"), month("2025-02"))
            .await
            .unwrap();
        assert_eq!(revenue(&months, "2025-01"), amount("110"), "{branch}");
        assert_eq!(revenue(&months, "2025-02"), amount("0"), "{branch}");
    }
    // Saving the same timezone again moves nothing; going back restores February.
    assert_eq!(
        store.update_settings(&tenant, &settings).await.unwrap().1,
        0
    );
    settings.timezone = "Asia/Jakarta".into();
    let (tenant, moved) = store.update_settings(&tenant, &settings).await.unwrap();
    assert_eq!(moved, 1);
    let months = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-02"))
        .await
        .unwrap();
    assert_eq!(revenue(&months, "2025-02"), amount("110"));

    // A load that finds the ledger dated in another timezone than the tenant's (a
    // settings change interrupted midway) finishes the change first, in its own
    // transaction: Jakarta back to UTC here.
    let mut drifted = tenant.clone();
    drifted.settings.timezone = "UTC".into();
    let late = vec![
        posting("S2", "2025-01-10", "Kemang", "1000", "5"),
        posting("S2", "2025-01-10", "Kemang", "4000", "-5"),
    ];
    load(store, &drifted, &late, record("b", None))
        .await
        .unwrap();
    let months = store
        .month_metrics(&drifted, BRANCH_TOTAL, month("2025-01"), month("2025-02"))
        .await
        .unwrap();
    assert_eq!(revenue(&months, "2025-01"), amount("115"));
    assert_eq!(revenue(&months, "2025-02"), amount("0"));

    settings.timezone = "Mars/Olympus".into();
    assert!(store.update_settings(&tenant, &settings).await.is_err());
}

async fn concurrent_loads_queue_and_agree(store: &dyn Store) {
    let tenant = provision(store, "lite").await;
    // Four loads into the same buckets at once, each with its own sales and one
    // shared, corrected sale: loads must queue, or their aggregates would each miss
    // the others' postings (or collide on the same aggregate rows).
    let batch = |n: usize| -> Vec<ledgersync_schemas::Posting> {
        let mut postings = Vec::new();
        for i in 0..150 {
            let key = format!("L{n}-{i}");
            postings.push(posting(&key, "2025-01-15", "Kemang", "1000", "10"));
            postings.push(posting(&key, "2025-01-15", "Kemang", "4000", "-10"));
        }
        let amount = format!("{}", 100 + n);
        postings.push(posting("SHARED", "2025-01-20", "Kemang", "1000", &amount));
        postings.push(posting(
            "SHARED",
            "2025-01-20",
            "Kemang",
            "4010",
            &format!("-{amount}"),
        ));
        postings
    };
    // An earlier load, so the four below find a ledger already set up.
    load(store, &tenant, &january_ledger(), record("first", None))
        .await
        .unwrap();
    let (a, b, c, d) = (batch(1), batch(2), batch(3), batch(4));
    let results = futures_join(store, &tenant, [&a, &b, &c, &d]).await;
    for result in results {
        result.unwrap();
    }
    assert_eq!(
        store.posting_count(&tenant).await.unwrap(),
        11 + 4 * 300 + 2
    );
    let incremental = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-01"))
        .await
        .unwrap();
    let revenue = incremental[&month("2025-01")].revenue().unwrap();
    // January's 100.4545, 4 x 150 sales of 10, and the shared sale as the last load wrote it.
    let shared = revenue.checked_sub(amount("6100.4545")).unwrap();
    assert!(
        ["101", "102", "103", "104"]
            .iter()
            .any(|v| shared == amount(v)),
        "{revenue}"
    );
    store.rebuild_aggregates(&tenant).await.unwrap();
    let rebuilt = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-01"))
        .await
        .unwrap();
    assert_eq!(incremental, rebuilt);
}

async fn futures_join(
    store: &dyn Store,
    tenant: &Tenant,
    batches: [&Vec<ledgersync_schemas::Posting>; 4],
) -> [Result<ledgersync_store::LoadSummary, StoreError>; 4] {
    let [a, b, c, d] = batches;
    let (ra, rb, rc, rd) = tokio::join!(
        load(store, tenant, a, record("a", None)),
        load(store, tenant, b, record("b", None)),
        load(store, tenant, c, record("c", None)),
        load(store, tenant, d, record("d", None)),
    );
    [ra, rb, rc, rd]
}

/// A batch boundary may fall inside a transaction, and a file need not keep a
/// transaction's rows together: the cash flow of such a transaction needs all of its
/// postings, at load time and when everything is rebuilt from storage.
async fn transactions_split_across_batches_keep_their_cash_flow(store: &dyn Store) {
    let ledger = january_ledger();
    // The sale's cash posting ends the first batch, its revenue and tax start the
    // second: the usual cut at a batch boundary.
    let boundary = provision(store, "lite").await;
    let mut session = store.begin_load(&boundary).await.unwrap();
    session.stage(&ledger[..1]).await.unwrap();
    session.stage(&ledger[1..]).await.unwrap();
    session.commit(record("boundary", None), 10).await.unwrap();
    let cut = store
        .month_metrics(&boundary, BRANCH_TOTAL, month("2025-01"), month("2025-02"))
        .await
        .unwrap();
    assert_eq!(
        cut[&month("2025-01")].get("cash_flow", "operating_in"),
        amount("110.5")
    );

    // The sale's and the purchase's rows interleaved within one batch.
    let interleaved = provision(store, "lite").await;
    let mut session = store.begin_load(&interleaved).await.unwrap();
    let mut rows = vec![
        ledger[0].clone(),
        ledger[3].clone(),
        ledger[1].clone(),
        ledger[4].clone(),
        ledger[2].clone(),
    ];
    rows.extend_from_slice(&ledger[5..]);
    session.stage(&rows).await.unwrap();
    session
        .commit(record("interleaved", None), 10)
        .await
        .unwrap();
    let mixed = store
        .month_metrics(
            &interleaved,
            BRANCH_TOTAL,
            month("2025-01"),
            month("2025-02"),
        )
        .await
        .unwrap();
    assert_eq!(mixed, cut);

    // The sale's rows apart in the file: its cash posting in the first batch, its
    // revenue and tax in the last, other transactions around and between them.
    let tenant = provision(store, "lite").await;
    let mut session = store.begin_load(&tenant).await.unwrap();
    session
        .stage(&[ledger[0].clone(), ledger[3].clone(), ledger[4].clone()])
        .await
        .unwrap();
    session.stage(&ledger[5..]).await.unwrap();
    session.stage(&ledger[1..3]).await.unwrap();
    let summary = session.commit(record("split", None), 10).await.unwrap();
    assert_eq!((summary.transactions, summary.postings), (5, 11));

    let loaded = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-02"))
        .await
        .unwrap();
    let jan = &loaded[&month("2025-01")];
    assert_eq!(jan.get("cash_flow", "operating_in"), amount("110.5"));
    assert_eq!(jan.cash_change(), amount("1110.5"));
    assert_eq!(loaded, cut);

    store.rebuild_aggregates(&tenant).await.unwrap();
    let rebuilt = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-02"))
        .await
        .unwrap();
    assert_eq!(loaded, rebuilt);

    // Replacing the split sale by a corrected one leaves no trace of the old one.
    let corrected: Vec<_> = ledger
        .iter()
        .filter(|p| p.source_key == "S1")
        .cloned()
        .map(|mut p| {
            p.amount = p.amount.checked_neg().unwrap();
            p.original_amount = p.amount;
            p
        })
        .collect();
    load(store, &tenant, &corrected, record("refund", None))
        .await
        .unwrap();
    let months = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-01"))
        .await
        .unwrap();
    assert_eq!(
        months[&month("2025-01")].get("cash_flow", "operating_in"),
        amount("0")
    );
    assert_eq!(
        months[&month("2025-01")].get("cash_flow", "operating_out"),
        amount("-110.5")
    );
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 11);
}

/// A transaction is all rows with its key, however far apart: a key that comes back
/// after its transaction balanced adds to it, and is checked as a whole.
async fn a_key_that_comes_back_is_one_transaction(store: &dyn Store) {
    let lined = |mut p: ledgersync_schemas::Posting, line: u64| {
        p.origin_line = line;
        p
    };
    let transfer = || {
        vec![
            lined(posting("T1", "2025-01-21", "Kemang", "1010", "50"), 2),
            lined(posting("T1", "2025-01-21", "Kemang", "1000", "-50"), 3),
        ]
    };
    let purchase = || {
        vec![
            lined(posting("P1", "2025-01-20", "Kemang", "5000", "30"), 4),
            lined(posting("P1", "2025-01-20", "Kemang", "2000", "-30"), 5),
        ]
    };
    // The transfer's key again: a cash sale of 5.
    let comeback = || {
        vec![
            lined(posting("T1", "2025-01-21", "Kemang", "1000", "5"), 9),
            lined(posting("T1", "2025-01-21", "Kemang", "4000", "-5"), 10),
        ]
    };
    let tenant = provision(store, "lite").await;
    let mut session = store.begin_load(&tenant).await.unwrap();
    session
        .stage(&[transfer(), purchase()].concat())
        .await
        .unwrap();
    session.stage(&comeback()).await.unwrap();
    let summary = session.commit(record("apart", None), 10).await.unwrap();
    assert_eq!((summary.transactions, summary.postings), (2, 6));
    let loaded = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-01"))
        .await
        .unwrap();
    // The transfer's second half is a cash sale of 5: one transaction, one flow.
    assert_eq!(
        loaded[&month("2025-01")].get("cash_flow", "operating_in"),
        amount("5")
    );
    assert_eq!(loaded[&month("2025-01")].revenue().unwrap(), amount("5"));
    store.rebuild_aggregates(&tenant).await.unwrap();
    let rebuilt = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-01"))
        .await
        .unwrap();
    assert_eq!(loaded, rebuilt);

    // The same when the key comes back within one batch.
    let within = provision(store, "lite").await;
    let mut session = store.begin_load(&within).await.unwrap();
    session
        .stage(&[transfer(), purchase(), comeback()].concat())
        .await
        .unwrap();
    let summary = session.commit(record("apart", None), 10).await.unwrap();
    assert_eq!((summary.transactions, summary.postings), (2, 6));
    let within_batch = store
        .month_metrics(&within, BRANCH_TOTAL, month("2025-01"), month("2025-01"))
        .await
        .unwrap();
    assert_eq!(within_batch, rebuilt);

    // Coming back unbalanced makes the whole transaction unbalanced, reported at its
    // first line.
    let other = provision(store, "lite").await;
    let mut session = store.begin_load(&other).await.unwrap();
    session
        .stage(&[transfer(), purchase()].concat())
        .await
        .unwrap();
    session
        .stage(&[lined(posting("T1", "2025-01-21", "Kemang", "1000", "5"), 9)])
        .await
        .unwrap();
    let err = session.commit(record("apart", None), 10).await.unwrap_err();
    let StoreError::Rejected(rejected) = err else {
        panic!("expected a rejection, got {err}")
    };
    assert_eq!(rejected.total, 1);
    assert_eq!(rejected.errors[0].line, 2);
    assert!(rejected.errors[0]
        .reason
        .contains("unbalanced transaction 'T1'"));
    assert_eq!(store.posting_count(&other).await.unwrap(), 0);
}

/// A transaction's postings may carry different instants of one local day; a new
/// timezone moves the whole transaction by its first instant, never splits it.
async fn a_transaction_is_redated_as_one(store: &dyn Store) {
    let tenant = provision(store, "lite").await;
    // 00:30 and 23:00 on 1 March in Jakarta: 28 February and 1 March in UTC.
    let mut sale = vec![
        posting("S1", "2025-03-01", "Kemang", "1000", "110"),
        posting("S1", "2025-03-01", "Kemang", "4000", "-110"),
    ];
    sale[0].occurred_at = Some("2025-02-28T17:30:00+00:00".into());
    sale[1].occurred_at = Some("2025-03-01T16:00:00+00:00".into());
    load(store, &tenant, &sale, record("a", None))
        .await
        .unwrap();
    let mut settings = tenant.settings.clone();
    settings.timezone = "UTC".into();
    let (tenant, moved) = store.update_settings(&tenant, &settings).await.unwrap();
    assert_eq!(moved, 1);
    let months = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-02"), month("2025-03"))
        .await
        .unwrap();
    let feb = &months[&month("2025-02")];
    assert_eq!(feb.revenue().unwrap(), amount("110"));
    assert_eq!(feb.cash_change(), amount("110"));
    assert_eq!(feb.get("cash_flow", "operating_in"), amount("110"));
    assert!(!months.contains_key(&month("2025-03")));

    // Dates far outside any business's books are refused, not bucketed.
    let typo = vec![
        posting("S2", "6025-03-01", "Kemang", "1000", "5"),
        posting("S2", "6025-03-01", "Kemang", "4000", "-5"),
    ];
    let err = load(store, &tenant, &typo, record("typo", None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rejected"), "{err}");
    let StoreError::Rejected(rejected) = err else {
        unreachable!()
    };
    assert!(rejected.errors[0]
        .reason
        .contains("outside the years 1900 to 4999"));
}
