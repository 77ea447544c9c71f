//! Money at the edge of its range: every sum in a load, an aggregate and a report is
//! checked, and input that would be rounded or misread is refused in words.
//!
//! Our crates are built for tests without overflow checks (see the workspace
//! Cargo.toml), as in a release build: a sum that was not checked would wrap here
//! and these tests would see the wrapped figure, not a panic.

use std::path::Path;
use std::sync::Arc;

use ledgersync::import::{import_csv, FileRejected, ImportOutcome};
use ledgersync::reports::{self, ReportError, ReportQuery};
use ledgersync_config::StreamDef;
use ledgersync_schemas::{Amount, Grouping, Month, ReportKind, BRANCH_TOTAL};
use ledgersync_store::{Store, Tenant};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{amount, new_key, options, provision, spawn_app, sqlite_store, write};

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
    a_transaction_that_wraps_to_zero_is_refused,
    oversized_amounts_are_refused_by_file_and_line,
    aggregates_beyond_the_range_refuse_the_load_that_crosses_it,
    report_totals_beyond_the_range_are_refused,
    amounts_with_digits_beyond_the_ninth_decimal_are_refused,
);

const HEADER: &str = "date,txn_id,account,amount,branch\n";

fn month(text: &str) -> Month {
    text.parse().unwrap()
}

async fn import(
    store: &Arc<dyn Store>,
    tenant: &Tenant,
    dir: &Path,
    name: &str,
    rows: &str,
) -> anyhow::Result<ImportOutcome> {
    let file = write(dir, name, &format!("{HEADER}{rows}"));
    import_csv(
        store.clone(),
        tenant,
        StreamDef::journal(),
        &file,
        &options(),
    )
    .await
}

/// The file's refusal, rendered as the CLI prints it.
fn refusal(outcome: anyhow::Result<ImportOutcome>) -> (FileRejected, String) {
    let error = outcome.expect_err("the file is refused");
    let text = error.to_string();
    let rejected = error.downcast::<FileRejected>().expect("a refusal by rows");
    (rejected, text)
}

/// The loads recorded for the tenant: (status, problem).
async fn recorded(store: &dyn Store, tenant: &Tenant) -> Vec<(String, Option<String>)> {
    let mut loads = store.loads(tenant).await.unwrap();
    loads.sort_by_key(|load| load.id);
    loads
        .into_iter()
        .map(|load| (load.status, load.problem))
        .collect()
}

/// `[i64::MAX units, i64::MAX units, 0.0002]` sums to exactly zero in two's
/// complement: it is refused by name, and nothing is loaded.
async fn a_transaction_that_wraps_to_zero_is_refused(store: Arc<dyn Store>, dir: &Path) {
    let tenant = provision(store.as_ref(), "pro").await;
    let largest = Amount::MAX.to_string();
    let rows = format!(
        "2025-01-10,W1,1000,{largest},Kemang\n\
         2025-01-10,W1,1010,{largest},Kemang\n\
         2025-01-10,W1,4000,0.0002,Kemang\n\
         2025-01-11,G1,1000,5,Kemang\n\
         2025-01-11,G1,4000,-5,Kemang\n"
    );
    let (rejected, text) = refusal(import(&store, &tenant, dir, "wrap.csv", &rows).await);
    let reasons: Vec<(u64, &str)> = rejected
        .errors
        .iter()
        .map(|e| (e.line, e.reason.as_str()))
        .collect();
    assert!(
        reasons.contains(&(
            2,
            "unbalanced transaction 'W1': its postings add up beyond the largest amount, 922337203685477.5807"
        )),
        "{reasons:?}"
    );
    // The second posting also takes the file's control sum out of range.
    assert!(
        reasons
            .iter()
            .any(|(line, reason)| *line == 3 && reason.contains("control sum")),
        "{reasons:?}"
    );
    assert!(
        text.contains("wrap.csv:2: unbalanced transaction 'W1'"),
        "{text}"
    );
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 0);
    let loads = recorded(store.as_ref(), &tenant).await;
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0].0, "failed");
}

/// Postings of ±900000000000000 each fit in an amount, but not their control sum:
/// the import is refused at the line that crosses it, recorded as a failed load.
async fn oversized_amounts_are_refused_by_file_and_line(store: Arc<dyn Store>, dir: &Path) {
    let tenant = provision(store.as_ref(), "pro").await;
    let rows = "2025-01-10,B1,1000,900000000000000,Kemang\n\
                2025-01-10,B1,4000,-900000000000000,Kemang\n";
    let (rejected, text) = refusal(import(&store, &tenant, dir, "big.csv", rows).await);
    assert_eq!(rejected.total, 1);
    assert_eq!(rejected.errors[0].line, 3);
    assert_eq!(
        rejected.errors[0].reason,
        "the amount -900000000000000 takes the file's control sum (its amounts added as absolute values) \
         beyond the largest amount, 922337203685477.5807; split the file or check its amounts"
    );
    assert!(
        text.contains("big.csv:3: the amount -900000000000000"),
        "{text}"
    );
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 0);
    let loads = recorded(store.as_ref(), &tenant).await;
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0].0, "failed");
    assert!(
        loads[0].1.as_deref().unwrap_or("").contains("line 3"),
        "{loads:?}"
    );
}

/// A sale of 400 trillion: the largest a load can hold of one month's revenue is
/// half its control sum, so two loads always fit and the third crosses the bound.
fn big_sale(key: &str) -> String {
    format!(
        "2025-01-10,{key},1000,400000000000000,Kemang\n\
         2025-01-10,{key},4000,-400000000000000,Kemang\n"
    )
}

/// Loads whose month's revenue together exceed the range: the load that crosses it
/// is refused naming its file, line, month and branch, and the store is as before.
async fn aggregates_beyond_the_range_refuse_the_load_that_crosses_it(
    store: Arc<dyn Store>,
    dir: &Path,
) {
    let tenant = provision(store.as_ref(), "pro").await;
    for (n, key) in ["S1", "S2"].into_iter().enumerate() {
        let outcome = import(
            &store,
            &tenant,
            dir,
            &format!("sales-{n}.csv"),
            &big_sale(key),
        )
        .await
        .unwrap();
        assert!(matches!(outcome, ImportOutcome::Loaded(_)));
    }
    let january = |store: Arc<dyn Store>, tenant: Tenant| async move {
        store
            .month_metrics(&tenant, BRANCH_TOTAL, month("2025-01"), month("2025-01"))
            .await
            .unwrap()
    };
    let before = january(store.clone(), tenant.clone()).await;
    assert_eq!(
        before[&month("2025-01")].revenue().unwrap(),
        amount("800000000000000")
    );

    let (rejected, text) =
        refusal(import(&store, &tenant, dir, "sales-2.csv", &big_sale("S3")).await);
    assert_eq!(rejected.errors.len(), 1);
    let error = &rejected.errors[0];
    assert_eq!(error.line, 2);
    assert!(
        error
            .reason
            .starts_with("with the postings already loaded, the sum of ")
            && error.reason.ends_with(
                " in 2025-01 at branch Kemang is beyond the largest amount, 922337203685477.5807"
            ),
        "{}",
        error.reason
    );
    assert!(
        text.contains("sales-2.csv:2: with the postings already loaded"),
        "{text}"
    );
    // Nothing of the third load is visible, and its failure is on record.
    assert_eq!(january(store.clone(), tenant.clone()).await, before);
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 4);
    let statuses: Vec<String> = recorded(store.as_ref(), &tenant)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    assert_eq!(statuses, ["succeeded", "succeeded", "failed"]);
    // A rebuild from the stored postings agrees.
    store.rebuild_aggregates(&tenant).await.unwrap();
    assert_eq!(january(store.clone(), tenant.clone()).await, before);
}

fn query(kind: ReportKind, from: &str, to: &str, by: Grouping) -> ReportQuery {
    ReportQuery {
        kind,
        from: month(from),
        to: month(to),
        branch: None,
        by,
    }
}

/// Months that each fit, whose quarter does not: monthly reports are given, the
/// quarter's total and the cash balance carried past it are refused in words.
async fn report_totals_beyond_the_range_are_refused(store: Arc<dyn Store>, dir: &Path) {
    let tenant = provision(store.as_ref(), "pro").await;
    for (n, month_text) in ["2025-01", "2025-02", "2025-03"].into_iter().enumerate() {
        let rows = big_sale(&format!("S{n}")).replace("2025-01-10", &format!("{month_text}-10"));
        import(&store, &tenant, dir, &format!("sales-{n}.csv"), &rows)
            .await
            .unwrap();
    }
    let by_month = reports::build(
        store.as_ref(),
        &tenant,
        &query(ReportKind::Pnl, "2025-01", "2025-03", Grouping::Month),
    )
    .await
    .unwrap();
    assert_eq!(by_month.to_csv().lines().count(), 4);
    assert!(by_month.to_csv().contains("2025-03,400000000000000,"));

    let by_quarter = reports::build(
        store.as_ref(),
        &tenant,
        &query(ReportKind::Pnl, "2025-01", "2025-03", Grouping::Quarter),
    )
    .await
    .unwrap_err();
    assert!(matches!(by_quarter, ReportError::Overflow { .. }));
    // The first metric of the quarter's sum that does not fit (cash flows sort first).
    assert_eq!(
        by_quarter.to_string(),
        "the 2025-Q1 report of all branches cannot be given exactly: \
         cash_flow:operating_in adds up beyond the largest amount, 922337203685477.5807"
    );
    // The cash before April is the three months' cash: beyond the range.
    let april = reports::build(
        store.as_ref(),
        &tenant,
        &query(ReportKind::CashFlow, "2025-04", "2025-04", Grouping::Month),
    )
    .await
    .unwrap_err();
    assert_eq!(
        april.to_string(),
        "the 2025-04 report of all branches cannot be given exactly: \
         opening cash adds up beyond the largest amount, 922337203685477.5807"
    );
    let cash_before = store
        .cash_before(&tenant, BRANCH_TOTAL, month("2025-04"))
        .await
        .unwrap_err();
    assert_eq!(
        cash_before.to_string(),
        "the cash balance of all branches through 2025-03 is beyond the largest amount, 922337203685477.5807"
    );
    // February opens on January's cash and closes within the range; March would
    // close beyond it.
    let february = reports::build(
        store.as_ref(),
        &tenant,
        &query(ReportKind::CashFlow, "2025-02", "2025-02", Grouping::Month),
    )
    .await
    .unwrap();
    assert!(
        february
            .to_csv()
            .contains("2025-02,400000000000000,400000000000000,"),
        "{}",
        february.to_csv()
    );
    assert!(february.to_csv().trim_end().ends_with(",800000000000000"));
    let march = reports::build(
        store.as_ref(),
        &tenant,
        &query(ReportKind::CashFlow, "2025-03", "2025-03", Grouping::Month),
    )
    .await
    .unwrap_err();
    assert_eq!(
        march.to_string(),
        "the 2025-03 report of all branches cannot be given exactly: \
         closing cash adds up beyond the largest amount, 922337203685477.5807"
    );
}

/// `1.000000001` against `-1` balanced once the ninth decimal was rounded away;
/// now the value is refused at its line.
async fn amounts_with_digits_beyond_the_ninth_decimal_are_refused(
    store: Arc<dyn Store>,
    dir: &Path,
) {
    let tenant = provision(store.as_ref(), "pro").await;
    let rows = "2025-01-10,T1,1000,1.000000001,Kemang\n\
                2025-01-10,T1,4000,-1,Kemang\n";
    let (rejected, text) = refusal(import(&store, &tenant, dir, "precise.csv", rows).await);
    assert_eq!(rejected.total, 1);
    assert_eq!(rejected.errors[0].line, 2);
    assert!(
        text.contains(
            "precise.csv:2: amount '1.000000001' in column 'amount' has more than 4 decimal places"
        ),
        "{text}"
    );
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 0);
}

/// Over HTTP the oversized upload is answered 422 with a problem document naming
/// the line, and the failed load is listed.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_upload_is_answered_422_and_recorded() {
    let test = sqlite_store().await;
    let app = spawn_app(test.store.clone()).await;
    let ingest = new_key(app.store.as_ref(), &app.tenant, "ingest").await;
    let body = format!(
        "{HEADER}2025-01-10,B1,1000,900000000000000,Kemang\n2025-01-10,B1,4000,-900000000000000,Kemang\n"
    );
    let response = app
        .client
        .post(format!("{}/v1/imports?name=big.csv", app.address))
        .bearer_auth(&ingest)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 422);
    assert_eq!(problem["errors"][0]["line"], 3);
    assert!(
        problem["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("control sum"),
        "{problem}"
    );
    let loads = recorded(app.store.as_ref(), &app.tenant).await;
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0].0, "failed");
    assert_eq!(app.store.posting_count(&app.tenant).await.unwrap(), 0);

    // Three months that fit, uploaded; their quarter does not, and says so.
    for (n, month_text) in ["2025-01", "2025-02", "2025-03"].into_iter().enumerate() {
        let rows = big_sale(&format!("S{n}")).replace("2025-01-10", &format!("{month_text}-10"));
        let response = app
            .client
            .post(format!("{}/v1/imports?name=sales-{n}.csv", app.address))
            .bearer_auth(&ingest)
            .body(format!("{HEADER}{rows}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let url = format!(
        "{}/v1/reports/pnl?from=2025-01&to=2025-03&by=quarter",
        app.address
    );
    let response = app.get(&url, &app.key).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .ends_with("adds up beyond the largest amount, 922337203685477.5807"),
        "{problem}"
    );
    let by_month = url.replace("quarter", "month");
    assert_eq!(app.get(&by_month, &app.key).await.status(), StatusCode::OK);
}

/// A file with bytes that are not UTF-8 on line 2 is refused naming line 2.
#[tokio::test(flavor = "multi_thread")]
async fn text_that_is_not_utf8_is_named_by_its_line() {
    let test = sqlite_store().await;
    let tenant = provision(test.store.as_ref(), "pro").await;
    let file = test.dir.path().join("latin1.csv");
    std::fs::write(
        &file,
        b"date,txn_id,account,amount,branch\n2025-01-10,T1,1000,5,Caf\xe9\n2025-01-10,T1,4000,-5,Caf\xe9\n",
    )
    .unwrap();
    let error = import_csv(
        test.store.clone(),
        &tenant,
        StreamDef::journal(),
        &file,
        &options(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:2: field 5 is not UTF-8 text; save the file as UTF-8",
            file.display()
        )
    );
    let loads = recorded(test.store.as_ref(), &tenant).await;
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0].0, "failed");
}
