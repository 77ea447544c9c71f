//! CSV files through the real mapping path into the store (SQLite, and both
//! backends where a file is loaded again).

use std::path::Path;
use std::sync::Arc;

use ledgersync::import::{
    import_csv, import_csv_repeating, read_chart, FileRejected, ImportOutcome,
    LoadedUnderAnotherStream, Repeat,
};
use ledgersync_config::StreamDef;
use ledgersync_schemas::{Month, BRANCH_TOTAL};
use ledgersync_store::{LoadCounts, LoadSummary, Store, Tenant};

use crate::helpers::{amount, options, provision, sqlite_tenant, write, TestStore};

const GOOD_JOURNAL: &str = "date,txn_id,account,amount,branch,memo
2025-01-05,J1,1010,1500000000,,Owner capital
2025-01-05,J1,3000,-1500000000,,Owner capital
2025-01-31,J2,5000,12500000.125,Kemang,Beans
2025-01-31,J2,2000,-12500000.125,Kemang,Beans
2025-02-01,J3,6000,45000000,Kemang,Payroll
2025-02-01,J3,6010,1800000,Kemang,Payroll
2025-02-01,J3,1010,-46800000,Kemang,Payroll
";

/// Imports `file` through the built-in journal stream with the default options.
async fn import_journal(
    store: &Arc<dyn Store>,
    tenant: &Tenant,
    file: &Path,
) -> anyhow::Result<ImportOutcome> {
    import_csv(
        store.clone(),
        tenant,
        StreamDef::journal(),
        file,
        &options(),
    )
    .await
}

fn month(text: &str) -> Month {
    text.parse().unwrap()
}

#[tokio::test]
async fn journal_imports_once_and_reimport_changes_nothing() {
    let (test, store, tenant) = sqlite_tenant("pro").await;
    let file = write(test.dir.path(), "gl.csv", GOOD_JOURNAL);
    let outcome = import_journal(&store, &tenant, &file).await.unwrap();
    let ImportOutcome::Loaded(summary) = outcome else {
        panic!("expected a load")
    };
    assert_eq!((summary.transactions, summary.postings), (3, 7));
    let again = import_journal(&store, &tenant, &file).await.unwrap();
    assert!(matches!(again, ImportOutcome::AlreadyLoaded(_)));
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 7);
    assert_eq!(store.loads(&tenant).await.unwrap().len(), 1);

    // The same rows in a new file (say, re-exported with a trailing newline) replace
    // themselves: nothing doubles.
    let copy = write(
        test.dir.path(),
        "gl-again.csv",
        &format!("{GOOD_JOURNAL}\n"),
    );
    import_journal(&store, &tenant, &copy).await.unwrap();
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 7);
    let months = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-02"))
        .await
        .unwrap();
    assert_eq!(months[&month("2025-01")].cogs(), amount("12500000.125"));
    assert_eq!(months[&month("2025-02")].labour(), amount("46800000"));
}

/// Files loaded by versions that fingerprinted content with bare SHA-256 are still
/// recognised: re-importing one changes nothing, even after later corrections.
// polars' lazy engine blocks in place: the mapping needs a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread")]
async fn files_fingerprinted_by_earlier_versions_are_still_known() {
    use ledgersync_store::LoadRecord;
    use sha2::{Digest, Sha256};
    let (test, store, tenant) = sqlite_tenant("pro").await;
    let file = write(test.dir.path(), "gl.csv", GOOD_JOURNAL);
    // The load an earlier version made of this file, fingerprint and all.
    let postings = ledgersync_connectors::Mapper::compile(
        StreamDef::journal(),
        ledgersync::import::map_context(store.as_ref(), &tenant)
            .await
            .unwrap(),
    )
    .unwrap();
    let mut batches = ledgersync_connectors::file::CsvBatches::open(&file, 100).unwrap();
    let mapped = postings
        .map(batches.next_batch().unwrap().unwrap())
        .unwrap();
    let mut session = store.begin_load(&tenant).await.unwrap();
    session.stage_frame(mapped.postings).await.unwrap();
    let sha256 = hex::encode(Sha256::digest(std::fs::read(&file).unwrap()));
    session
        .commit(
            LoadRecord {
                source: "file:journal".into(),
                fingerprint: sha256,
                stream: "journal".into(),
                origin: file.display().to_string(),
                rows_read: 7,
                cursor: None,
            },
            10,
        )
        .await
        .unwrap();
    let again = import_journal(&store, &tenant, &file).await.unwrap();
    assert!(matches!(again, ImportOutcome::AlreadyLoaded(_)));
    assert_eq!(store.loads(&tenant).await.unwrap().len(), 1);
}

#[tokio::test]
async fn every_bad_row_is_reported_and_nothing_changes() {
    let (test, store, tenant) = sqlite_tenant("lite").await;
    let file = write(
        test.dir.path(),
        "bad.csv",
        "date,txn_id,account,amount
2025-01-05,J1,1010,100
2025-01-05,J1,9999,-100
2025-01-06,J2,1010,12,5
2025-01-06,J3,1010,abc
31/01/2025,J4,1010,1
2025-01-07,J5,1010,0.00001
",
    );
    let err = import_journal(&store, &tenant, &file).await.unwrap_err();
    let rejected = err
        .downcast_ref::<FileRejected>()
        .expect("a row-level rejection");
    let lines: Vec<u64> = rejected.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7], "{rejected}");
    let text = rejected.to_string();
    assert!(text.contains("bad.csv:3: unknown account '9999'"), "{text}");
    assert!(
        text.contains("bad.csv:4: expected 4 fields, found 5"),
        "{text}"
    );
    assert!(
        text.contains("bad.csv:5: non-numeric amount 'abc' in column 'amount'"),
        "{text}"
    );
    assert!(text.contains("bad.csv:6: bad date '31/01/2025'"), "{text}");
    assert!(
        text.contains("bad.csv:7: amount 'amount': '0.00001' has more than 4 decimal places"),
        "{text}"
    );
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 0);
    // The refused attempt is on record, with nothing loaded, and `verify` says so.
    let loads = store.loads(&tenant).await.unwrap();
    assert_eq!(loads.len(), 1);
    assert_eq!((loads[0].status.as_str(), loads[0].postings), ("failed", 0));
    assert!(loads[0]
        .problem
        .as_deref()
        .unwrap()
        .starts_with("5 bad row(s); first: line 3: unknown account '9999'"));
    let checks = ledgersync::verify::verify(store.as_ref(), &tenant)
        .await
        .unwrap();
    let data = checks.iter().find(|c| c.check == "data loaded").unwrap();
    assert!(
        !data.ok && data.detail.contains("failed"),
        "{}",
        data.detail
    );

    let unbalanced = write(
        test.dir.path(),
        "unbalanced.csv",
        "date,txn_id,account,amount\n2025-01-05,J1,1010,100\n2025-01-05,J1,3000,-100\n2025-01-06,J2,1010,100\n2025-01-06,J2,3000,-99.5\n",
    );
    let err = import_journal(&store, &tenant, &unbalanced)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("unbalanced.csv:4: unbalanced transaction 'J2': its postings sum to 0.5"),
        "{text}"
    );
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 0);

    let missing = write(
        test.dir.path(),
        "missing.csv",
        "date,txn_id,amount\n2025-01-05,J1,100\n",
    );
    let err = import_journal(&store, &tenant, &missing).await.unwrap_err();
    assert!(
        err.to_string().contains("missing column(s) account"),
        "{err}"
    );
}

#[tokio::test]
async fn pos_sales_map_to_jakarta_months_with_exact_rupiah() {
    let (test, store, tenant) = sqlite_tenant("lite").await;
    let file = write(
        test.dir.path(),
        "pos.csv",
        // 17:30 UTC on 31 January is 00:30 on 1 February in Jakarta.
        "sale_id,sold_at,outlet,category,payment_method,net_amount,tax
S1,2025-01-31 17:30:00,Kemang,coffee,QRIS,45900.9,4590.09
S2,2025-01-31 16:59:59,Kemang,pastry,cash,30000,3000
S3,2025-01-15 03:00:00,Senopati,rice_bowl,grabfood,-755.0125,0
",
    );
    let stream = StreamDef::from_toml(ledgersync::demo::POS_SALES_STREAM).unwrap();
    import_csv(store.clone(), &tenant, stream, &file, &options())
        .await
        .unwrap();
    let months = store
        .month_metrics(&tenant, "Kemang", month("2025-01"), month("2025-02"))
        .await
        .unwrap();
    assert_eq!(
        months[&month("2025-01")].revenue().unwrap(),
        amount("30000")
    );
    assert_eq!(
        months[&month("2025-02")].revenue().unwrap(),
        amount("45900.9")
    );
    assert_eq!(
        months[&month("2025-02")].get("revenue", "beverage"),
        amount("-45900.9")
    );
    let senopati = store
        .month_metrics(&tenant, "Senopati", month("2025-01"), month("2025-01"))
        .await
        .unwrap();
    assert_eq!(
        senopati[&month("2025-01")].revenue().unwrap(),
        amount("-755.0125")
    );
}

#[tokio::test]
async fn a_custom_chart_extends_the_default() {
    let (test, store, tenant) = sqlite_tenant("lite").await;
    let chart = write(
        test.dir.path(),
        "chart.csv",
        "code,name,class,category\n4030,Catering sales,revenue,food\n1025,ShopeePay clearing,receivable,clearing\n",
    );
    let accounts = read_chart(&chart).unwrap();
    store.upsert_accounts(&tenant, &accounts).await.unwrap();
    let codes: Vec<String> = store
        .accounts(&tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.code)
        .collect();
    assert!(codes.contains(&"4030".to_string()) && codes.contains(&"1000".to_string()));

    let bad = write(
        test.dir.path(),
        "bad-chart.csv",
        "code,name,class\n4040,Other,incomez\n",
    );
    let err = read_chart(&bad).unwrap_err();
    assert!(
        err.to_string()
            .contains("bad-chart.csv:2: unknown class 'incomez'"),
        "{err}"
    );
}

#[tokio::test]
async fn settings_name_the_bad_field_and_respect_the_plan() {
    let (_test, store, tenant) = sqlite_tenant("lite").await;
    let settings = |timezone: &str, staff: bool| {
        format!(
            r#"{{"companyName":"Kopi Kenangan","fiscalYearStart":"April","currency":"IDR","timezone":"{timezone}",
               "features":{{"pl":true,"cashFlow":true,"cogs":true,"staff":{staff}}}}}"#
        )
    };
    let err = ledgersync::tenants::configure(
        store.as_ref(),
        &tenant,
        &settings("Asia/Jakarta", true),
        "test",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("upgrade to pro"), "{err}");
    let err = ledgersync::tenants::configure(
        store.as_ref(),
        &tenant,
        &settings("Java/Bandung", false),
        "test",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("'timezone'"), "{err}");
    let (updated, _) = ledgersync::tenants::configure(
        store.as_ref(),
        &tenant,
        &settings("Asia/Makassar", false),
        "test",
    )
    .await
    .unwrap();
    assert_eq!(updated.settings.fiscal_first_month().unwrap(), 4);
    assert_eq!(
        store
            .tenant(&tenant.slug)
            .await
            .unwrap()
            .unwrap()
            .settings
            .timezone,
        "Asia/Makassar"
    );
}

/// Runs a story on a SQLite store and on a PostgreSQL one.
macro_rules! on_both_backends {
    ($($story:ident),* $(,)?) => {
        mod repeated_imports {
            $(
                mod $story {
                    // polars' lazy engine blocks in place: the mapping needs a multi-threaded runtime.
                    #[tokio::test(flavor = "multi_thread")]
                    async fn sqlite() {
                        super::super::$story(crate::helpers::sqlite_store().await).await;
                    }
                    #[tokio::test(flavor = "multi_thread")]
                    async fn postgres() {
                        super::super::$story(crate::helpers::postgres_store().await).await;
                    }
                }
            )*
        }
    };
}

on_both_backends!(
    a_changed_mapping_loads_the_file_again_and_force_reloads_it,
    a_file_of_another_stream_is_refused_unless_it_is_a_new_source,
    loads_count_what_they_added_replaced_and_left_unchanged,
);

const SALES: &str = "id,day,net
S1,2025-03-01,10000
S2,2025-03-01,2500.5
S3,2025-03-02,700
";

/// A mapped stream of sales, `name`d, with `revenue` as the sales account.
fn sales_stream(name: &str, revenue: &str) -> StreamDef {
    StreamDef::from_toml(&format!(
        r#"
name = "{name}"
key = ["id"]
date = {{ column = "day" }}
numeric = ["net"]
[[templates]]
postings = [{{ account = "1000", amount = "net" }}, {{ account = "{revenue}", amount = "-net" }}]
"#
    ))
    .unwrap()
}

async fn import_as(
    store: &Arc<dyn Store>,
    tenant: &Tenant,
    stream: StreamDef,
    file: &Path,
    repeat: Repeat,
) -> anyhow::Result<ImportOutcome> {
    let origin = file.display().to_string();
    import_csv_repeating(
        store.clone(),
        tenant,
        stream,
        file,
        &origin,
        &options(),
        repeat,
    )
    .await
}

fn loaded(outcome: anyhow::Result<ImportOutcome>) -> LoadSummary {
    match outcome.unwrap() {
        ImportOutcome::Loaded(summary) => summary,
        other => panic!("expected a load, got {other:?}"),
    }
}

fn counts(added: i64, replaced: i64, unchanged: i64) -> LoadCounts {
    LoadCounts {
        added,
        replaced,
        unchanged,
        removed: 0,
    }
}

async fn a_changed_mapping_loads_the_file_again_and_force_reloads_it(test: TestStore) {
    let store = test.store.clone();
    let tenant = provision(store.as_ref(), "pro").await;
    let file = write(test.dir.path(), "sales.csv", SALES);
    let once = Repeat::default();
    let first =
        loaded(import_as(&store, &tenant, sales_stream("sales", "4000"), &file, once).await);
    assert_eq!(first.counts, counts(3, 0, 0));
    let same = import_as(&store, &tenant, sales_stream("sales", "4000"), &file, once).await;
    assert!(
        matches!(same.unwrap(), ImportOutcome::AlreadyLoaded(past) if past.id == first.load_id)
    );

    // The mapping now books the sales to another account: the file is loaded again
    // and its transactions replace the earlier ones, none of them unchanged.
    let remapped =
        loaded(import_as(&store, &tenant, sales_stream("sales", "4010"), &file, once).await);
    assert_eq!(remapped.counts, counts(0, 3, 0));
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 6);
    let metrics = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-03"), month("2025-03"))
        .await
        .unwrap();
    assert_eq!(
        metrics[&month("2025-03")].revenue().unwrap(),
        amount("13200.5")
    );

    // Back to the first mapping: the last load of the file was under the other one.
    let back = loaded(import_as(&store, &tenant, sales_stream("sales", "4000"), &file, once).await);
    assert_eq!(back.counts, counts(0, 3, 0));
    let same = import_as(&store, &tenant, sales_stream("sales", "4000"), &file, once).await;
    assert!(matches!(same.unwrap(), ImportOutcome::AlreadyLoaded(past) if past.id == back.load_id));

    // Forced, the same file under the same mapping loads again and changes nothing.
    let force = Repeat {
        force: true,
        ..Repeat::default()
    };
    let forced =
        loaded(import_as(&store, &tenant, sales_stream("sales", "4000"), &file, force).await);
    assert_eq!(forced.counts, counts(0, 3, 3));
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 6);
    let loads = store.loads(&tenant).await.unwrap();
    let recorded: Vec<_> = loads.iter().map(|l| l.counts).collect();
    assert_eq!(
        recorded,
        [
            Some(counts(3, 0, 0)),
            Some(counts(0, 3, 0)),
            Some(counts(0, 3, 0)),
            Some(counts(0, 3, 3))
        ]
    );
}

async fn a_file_of_another_stream_is_refused_unless_it_is_a_new_source(test: TestStore) {
    let store = test.store.clone();
    let tenant = provision(store.as_ref(), "pro").await;
    let file = write(test.dir.path(), "sales.csv", SALES);
    let once = Repeat::default();
    loaded(import_as(&store, &tenant, sales_stream("sales", "4000"), &file, once).await);

    // The mapping renamed: the same rows under a second source would count twice.
    let error = import_as(&store, &tenant, sales_stream("pos", "4000"), &file, once)
        .await
        .unwrap_err();
    let refused = error
        .downcast_ref::<LoadedUnderAnotherStream>()
        .unwrap_or_else(|| panic!("expected a refusal, got {error:#}"));
    assert_eq!(refused.earlier_stream, "sales");
    let message = error.to_string();
    assert!(
        message.contains("sales.csv was already loaded as stream 'sales'")
            && message.contains("--as-new-source"),
        "{message}"
    );
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 6);
    assert_eq!(store.loads(&tenant).await.unwrap().len(), 1);

    // Asked for, it is a source of its own; the first stream still knows the file.
    let new_source = Repeat {
        as_new_source: true,
        ..Repeat::default()
    };
    let second = loaded(
        import_as(
            &store,
            &tenant,
            sales_stream("pos", "4000"),
            &file,
            new_source,
        )
        .await,
    );
    assert_eq!(second.counts, counts(3, 0, 0));
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 12);
    let again = import_as(&store, &tenant, sales_stream("sales", "4000"), &file, once).await;
    assert!(matches!(again.unwrap(), ImportOutcome::AlreadyLoaded(_)));
    let again = import_as(&store, &tenant, sales_stream("pos", "4000"), &file, once).await;
    assert!(
        matches!(again.unwrap(), ImportOutcome::AlreadyLoaded(past) if past.id == second.load_id)
    );
}

async fn loads_count_what_they_added_replaced_and_left_unchanged(test: TestStore) {
    let store = test.store.clone();
    let tenant = provision(store.as_ref(), "pro").await;
    let first = write(test.dir.path(), "gl.csv", GOOD_JOURNAL);
    let summary = loaded(import_journal(&store, &tenant, &first).await);
    assert_eq!(summary.counts, counts(3, 0, 0));

    // J1 as it was (its rows in another order and on other lines), J2's amount
    // corrected, J3 left out (a load removes nothing it does not carry), J4 new.
    let corrected = write(
        test.dir.path(),
        "gl-corrected.csv",
        "date,txn_id,account,amount,branch,memo
2025-01-31,J2,5000,12600000,Kemang,Beans
2025-01-31,J2,2000,-12600000,Kemang,Beans
2025-01-05,J1,3000,-1500000000,,Owner capital
2025-01-05,J1,1010,1500000000,,Owner capital
2025-02-03,J4,5000,10,Kemang,Milk
2025-02-03,J4,2000,-10,Kemang,Milk
",
    );
    let summary = loaded(import_journal(&store, &tenant, &corrected).await);
    assert_eq!((summary.transactions, summary.postings), (3, 6));
    assert_eq!(summary.counts, counts(1, 2, 1));
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 9);
    let loads = store.loads(&tenant).await.unwrap();
    assert_eq!(loads.last().unwrap().counts, Some(counts(1, 2, 1)));
    let months = store
        .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-01"))
        .await
        .unwrap();
    assert_eq!(months[&month("2025-01")].cogs(), amount("12600000"));
}
