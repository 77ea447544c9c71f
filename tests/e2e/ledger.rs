//! The ledger as a format that lasts: small segments compacted without changing a
//! figure, the export read back by other readers, the transactions behind a report
//! page by page, and segments of a newer format refused by name.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ledgersync::import::{import_csv, ImportOutcome};
use ledgersync_config::StreamDef;
use ledgersync_schemas::{Amount, Month, Posting, BRANCH_TOTAL};
use ledgersync_store::{
    ExportFormat, LedgerTransaction, LoadRecord, Store, Tenant, TransactionQuery, EXPORT_COLUMNS,
};

use crate::helpers::{
    amount, key_index_count, key_index_sql, options, posting, provision, tenant_sql, write,
    TestStore,
};

macro_rules! on_both_backends {
    ($($story:ident),* $(,)?) => {$(
        mod $story {
            #[tokio::test]
            async fn sqlite() {
                super::$story(crate::helpers::sqlite_store().await).await;
            }
            #[tokio::test]
            async fn postgres() {
                super::$story(crate::helpers::postgres_store().await).await;
            }
        }
    )*};
}

on_both_backends!(
    tiny_loads_are_compacted_and_change_nothing,
    replacing_reads_the_key_index_not_the_segments,
    an_index_not_committed_with_the_ledger_is_built_again,
    the_export_reads_back_as_imported,
    transactions_behind_a_report_over_http,
);

fn month(text: &str) -> Month {
    text.parse().unwrap()
}

fn record(fingerprint: &str) -> LoadRecord {
    LoadRecord {
        source: "push:pos".into(),
        fingerprint: fingerprint.into(),
        stream: "pos".into(),
        origin: "ledger story".into(),
        rows_read: 0,
        cursor: None,
    }
}

async fn load(store: &dyn Store, tenant: &Tenant, postings: &[Posting], fingerprint: &str) {
    let mut session = store.begin_load(tenant).await.unwrap();
    session.stage(postings).await.unwrap();
    session.commit(record(fingerprint), 10).await.unwrap();
}

/// What a source pushes each minute: five sales of two postings, a third of the
/// minutes in February, the rest in January.
fn minute(i: usize) -> Vec<Posting> {
    let month = if i.is_multiple_of(3) {
        "2025-02"
    } else {
        "2025-01"
    };
    let date = format!("{month}-{:02}", i % 28 + 1);
    (0..5)
        .flat_map(|t| {
            let key = format!("M{i:04}-{t}");
            let branch = ["Kemang", "Senopati"][t % 2];
            let value = format!("{}.{:04}", 1000 + i * 7 + t, (i * 31 + t) % 10_000);
            let mut cash = posting(&key, &date, branch, "1000", &value);
            let mut sale = posting(&key, &date, branch, "4000", &format!("-{value}"));
            cash.origin_line = 2 * t as u64 + 2;
            sale.origin_line = 2 * t as u64 + 3;
            [cash, sale]
        })
        .collect()
}

/// A later minute corrects one earlier sale: another amount, another branch.
fn correction() -> Vec<Posting> {
    vec![
        posting("M0004-1", "2025-01-05", "Kemang", "1000", "1.5"),
        posting("M0004-1", "2025-01-05", "Kemang", "4000", "-1.5"),
    ]
}

/// Every transaction of January and February, by key: date, branch and postings
/// (account and amount, in order), read a page of `limit` at a time.
async fn transactions_by_key(
    store: &dyn Store,
    tenant: &Tenant,
    limit: usize,
) -> BTreeMap<String, (String, String, Vec<(String, Amount)>)> {
    let mut all = BTreeMap::new();
    let mut query = TransactionQuery {
        from: month("2025-01"),
        to: month("2025-02"),
        branch: None,
        account: None,
        category: None,
        limit,
        after: None,
    };
    let mut pages = 0;
    loop {
        let page = store.ledger_transactions(tenant, &query).await.unwrap();
        assert!(page.transactions.len() <= limit);
        pages += 1;
        for LedgerTransaction {
            date,
            key,
            branch,
            postings,
            ..
        } in page.transactions
        {
            let mut postings: Vec<(String, Amount)> = postings
                .into_iter()
                .map(|p| (p.account, p.amount))
                .collect();
            postings.sort();
            assert!(
                all.insert(key.clone(), (date, branch, postings)).is_none(),
                "{key} is on two pages"
            );
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert!(pages >= all.len() / limit, "{pages} page(s) of {limit}");
    all
}

async fn tiny_loads_are_compacted_and_change_nothing(test: TestStore) {
    let store = test.store.as_ref();
    let minutes = 120;
    let tiny = provision(store, "pro").await;
    for i in 0..minutes {
        load(store, &tiny, &minute(i), &format!("minute-{i}")).await;
    }
    // Each (source, months) group keeps fewer than 16 small segments (the policy's
    // threshold), so two months hold at most 30, not 120.
    let segments = store.segment_count(&tiny).await.unwrap();
    assert!(segments <= 30, "{segments} segments after {minutes} loads");

    // The same postings in one load, as the reference.
    let whole = provision(store, "pro").await;
    let everything: Vec<Posting> = (0..minutes).flat_map(minute).collect();
    load(store, &whole, &everything, "all-at-once").await;
    for tenant in [&tiny, &whole] {
        load(store, tenant, &correction(), "correction").await;
    }

    let tiny_transactions = transactions_by_key(store, &tiny, 1000).await;
    assert_eq!(tiny_transactions.len(), minutes * 5);
    assert_eq!(
        tiny_transactions["M0004-1"],
        (
            "2025-01-05".into(),
            "Kemang".into(),
            vec![
                ("1000".into(), amount("1.5")),
                ("4000".into(), amount("-1.5"))
            ]
        )
    );
    assert_eq!(
        tiny_transactions,
        transactions_by_key(store, &whole, 1000).await
    );
    // Small pages give the same transactions.
    assert_eq!(
        tiny_transactions,
        transactions_by_key(store, &tiny, 7).await
    );
    let branches = [BRANCH_TOTAL, "Kemang", "Senopati"];
    assert_same_figures(store, &tiny, &whole, &branches, "2025-01").await;
    // A rebuild from the compacted segments agrees with the rollups kept so far.
    assert_rebuild_agrees(store, &tiny).await;

    // Each load still accounts for what it brought, wherever its postings now are.
    let loads = store.loads(&tiny).await.unwrap();
    assert_eq!(loads.len(), minutes + 1);
    for (at, expected_transactions) in [(10, 5), (4, 4), (minutes - 1, 5), (minutes, 1)] {
        let held = store.load_totals(&tiny, loads[at].id).await.unwrap();
        assert_eq!(held.transactions, expected_transactions, "load {at}");
        assert_eq!(held.postings, expected_transactions * 2, "load {at}");
    }
    let last = store.load_totals(&tiny, loads[minutes].id).await.unwrap();
    assert_eq!(last.control_sum, amount("3"));
}

/// A key as many POS systems make them: random, so no key range narrows a search.
fn random_key(i: usize) -> String {
    let mixed = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{mixed:016x}-{:08x}", mixed.rotate_left(17) as u32)
}

/// A sale as (date, branch, amount), by key.
type Sales = BTreeMap<String, (String, String, String)>;

fn sale_postings(sales: &Sales) -> Vec<Posting> {
    sales
        .iter()
        .flat_map(|(key, (date, branch, value))| {
            [
                posting(key, date, branch, "1000", value),
                posting(key, date, branch, "4000", &format!("-{value}")),
            ]
        })
        .collect()
}

async fn load_sales(store: &dyn Store, tenant: &Tenant, sales: &Sales, fingerprint: &str) -> i64 {
    let mut session = store.begin_load(tenant).await.unwrap();
    session.stage(&sale_postings(sales)).await.unwrap();
    let summary = session.commit(record(fingerprint), 10).await.unwrap();
    summary.load_id
}

/// A load that replaces transactions finds their earlier versions by key: it reads
/// none of the source's earlier segments (made unreadable here while it runs), hides
/// those versions and changes the aggregates by the difference. Tiny loads that
/// replace each other's transactions are compacted, and their transactions replaced
/// again where compaction moved them. Every figure and transaction
/// then equals a ledger loaded once with the final versions, and a rebuild.
async fn replacing_reads_the_key_index_not_the_segments(test: TestStore) {
    let store = test.store.as_ref();
    let kept = provision(store, "pro").await;
    let branches = ["Kemang", "Senopati", "Dago"];
    let mut model = Sales::new();
    let bulk: Sales = (0..300)
        .map(|i| {
            let date = format!("2025-0{}-{:02}", 1 + i % 2, 1 + i % 28);
            let value = format!("{}.{:04}", 10_000 + i * 37, i % 10_000);
            (random_key(i), (date, branches[i % 3].to_string(), value))
        })
        .collect();
    let bulk_load = load_sales(store, &kept, &bulk, "bulk").await;
    model.extend(bulk.clone());
    let later: Sales = (300..320)
        .map(|i| {
            let sale = ("2025-02-14".to_string(), "Dago".to_string(), format!("{i}"));
            (random_key(i), sale)
        })
        .collect();
    load_sales(store, &kept, &later, "later").await;
    model.extend(later);

    // The bulk load's segments are made unreadable.
    spoil_segments(
        &test,
        &kept,
        &format!("segment_id IN (SELECT id FROM ledger_segments WHERE load_id = {bulk_load})"),
    )
    .await;
    // Five changed amounts, one sale sent again as it was, one moved to another
    // branch and month, one of the later load changed, and a new one.
    let mut changes = Sales::new();
    for i in 0..5 {
        let (date, branch, _) = bulk[&random_key(i)].clone();
        changes.insert(random_key(i), (date, branch, format!("{}.5", 7 + i)));
    }
    changes.insert(random_key(5), bulk[&random_key(5)].clone());
    changes.insert(
        random_key(6),
        ("2025-01-31".into(), "Senopati".into(), "99".into()),
    );
    changes.insert(
        random_key(307),
        ("2025-02-14".into(), "Dago".into(), "1".into()),
    );
    changes.insert(
        random_key(1000),
        ("2025-01-09".into(), "Kemang".into(), "12.25".into()),
    );
    let mut session = store.begin_load(&kept).await.unwrap();
    session.stage(&sale_postings(&changes)).await.unwrap();
    let summary = session.commit(record("changes"), 10).await.unwrap();
    assert_eq!(
        (
            summary.counts.added,
            summary.counts.replaced,
            summary.counts.unchanged
        ),
        (1, 8, 1)
    );
    model.extend(changes);
    // A version replaced again.
    let again: Sales = [(
        random_key(0),
        (
            "2025-02-02".to_string(),
            "Kemang".to_string(),
            "3".to_string(),
        ),
    )]
    .into();
    load_sales(store, &kept, &again, "again").await;
    model.extend(again);
    // The segments were unreadable indeed: a rebuild has to read them, and fails.
    assert!(store.rebuild_aggregates(&kept).await.is_err());
    restore_segments(&test, &kept).await;

    // A minute at a time: each load corrects a bulk sale and the previous minute's
    // own sale, and adds one, all in January.
    for minute in 0..40 {
        let mut sales = Sales::new();
        let sale = |value: String| ("2025-01-10".to_string(), "Kemang".to_string(), value);
        sales.insert(random_key(20 + minute), sale(format!("{minute}.1")));
        if minute > 0 {
            sales.insert(random_key(2000 + minute - 1), sale(format!("{minute}.2")));
        }
        sales.insert(random_key(2000 + minute), sale(format!("{minute}.3")));
        load_sales(store, &kept, &sales, &format!("minute-{minute}")).await;
        model.extend(sales);
    }
    let segments = store.segment_count(&kept).await.unwrap();
    assert!(segments < 30, "{segments} segments after 44 loads");
    // Each minute's sale once more: most were compacted since they were indexed, the
    // earliest twice (the first merged segment was small, and merged again), so their
    // index entries are followed through compaction's moves to where they are now.
    let last_word: Sales = (0..40)
        .map(|minute| {
            let sale = (
                "2025-01-11".to_string(),
                "Dago".to_string(),
                format!("{minute}.4"),
            );
            (random_key(2000 + minute), sale)
        })
        .collect();
    let moves = key_index_count(&test, &kept, "SELECT COUNT(*) FROM moved_transactions").await;
    assert!(moves >= 30, "{moves} blocks moved by compaction");
    // Some were moved twice: into a merged segment, and with it into another.
    let chained = "SELECT COUNT(*) FROM moved_transactions a JOIN moved_transactions b \
                   ON a.to_load = b.from_load AND a.from_load <> a.to_load \
                   AND b.from_load <> b.to_load";
    assert!(key_index_count(&test, &kept, chained).await > 0);
    // Every segment unreadable again while it commits: it can only follow the moves
    // (building the index anew, or reading where the versions were, would fail).
    spoil_segments(&test, &kept, "TRUE").await;
    load_sales(store, &kept, &last_word, "last word").await;
    model.extend(last_word);
    restore_segments(&test, &kept).await;
    let after = key_index_count(&test, &kept, "SELECT COUNT(*) FROM moved_transactions").await;
    assert!(after >= moves, "{after} moves left of {moves}");
    let indexed = key_index_count(&test, &kept, "SELECT COUNT(*) FROM indexed_sources").await;
    assert_eq!(indexed, 1);

    let reference = provision(store, "pro").await;
    load_sales(store, &reference, &model, "final").await;
    let listed = transactions_by_key(store, &kept, 100).await;
    assert_eq!(listed.len(), model.len());
    assert_eq!(listed, transactions_by_key(store, &reference, 100).await);
    let branches = [BRANCH_TOTAL, "Kemang", "Senopati", "Dago"];
    assert_same_figures(store, &kept, &reference, &branches, "2025-02").await;
    assert_rebuild_agrees(store, &kept).await;
}

/// Makes the segments `which` (an SQL condition on `segment_data`) unreadable,
/// keeping their bytes aside for [`restore_segments`].
async fn spoil_segments(test: &TestStore, tenant: &Tenant, which: &str) {
    let garbage = match test.url.starts_with("sqlite://") {
        true => "X'00'",
        false => "'\\x00'::bytea",
    };
    tenant_sql(
        test,
        tenant,
        &[
            &format!(
                "CREATE TABLE kept_data AS SELECT segment_id, data FROM segment_data WHERE {which}"
            ),
            &format!(
                "UPDATE segment_data SET data = {garbage} \
                 WHERE segment_id IN (SELECT segment_id FROM kept_data)"
            ),
        ],
    )
    .await;
}

/// Puts back the bytes [`spoil_segments`] kept aside.
async fn restore_segments(test: &TestStore, tenant: &Tenant) {
    tenant_sql(
        test,
        tenant,
        &[
            "UPDATE segment_data SET data = (SELECT data FROM kept_data \
             WHERE kept_data.segment_id = segment_data.segment_id) \
             WHERE segment_id IN (SELECT segment_id FROM kept_data)",
            "DROP TABLE kept_data",
        ],
    )
    .await;
}

/// Each of `branches` has the same figures for January and February 2025 in `tenant`
/// as in `reference`, with revenue in `with_revenue`.
async fn assert_same_figures(
    store: &dyn Store,
    tenant: &Tenant,
    reference: &Tenant,
    branches: &[&str],
    with_revenue: &str,
) {
    for branch in branches {
        let metrics =
            |tenant| store.month_metrics(tenant, branch, month("2025-01"), month("2025-02"));
        let (figures, expected) = (
            metrics(tenant).await.unwrap(),
            metrics(reference).await.unwrap(),
        );
        assert_eq!(figures, expected, "{branch}");
        assert!(!figures[&month(with_revenue)].revenue().unwrap().is_zero());
    }
}

/// Recomputing every aggregate from the stored postings changes no figure.
async fn assert_rebuild_agrees(store: &dyn Store, tenant: &Tenant) {
    let figures = || store.month_metrics(tenant, BRANCH_TOTAL, month("2025-01"), month("2025-02"));
    let kept = figures().await.unwrap();
    store.rebuild_aggregates(tenant).await.unwrap();
    assert_eq!(kept, figures().await.unwrap());
}

/// On SQLite the key index is a file of its own, committed apart from the ledger's:
/// an index a crash left out of step (here: entries unreadable, and its stamp not the
/// ledger's) is dropped and built again from the segments, never used.
async fn an_index_not_committed_with_the_ledger_is_built_again(test: TestStore) {
    let store = test.store.as_ref();
    let tenant = provision(store, "pro").await;
    let sale = |value: &str| {
        (
            "2025-03-05".to_string(),
            "Kemang".to_string(),
            value.to_string(),
        )
    };
    let mut model: Sales = (0..50)
        .map(|i| (random_key(i), sale(&format!("{i}.5"))))
        .collect();
    load_sales(store, &tenant, &model, "first").await;
    // A change: the source is indexed from here on.
    let change: Sales = [(random_key(3), sale("7"))].into();
    load_sales(store, &tenant, &change, "change").await;
    model.extend(change);
    key_index_sql(
        &test,
        &tenant,
        &[
            "UPDATE transaction_keys SET postings = 'lost'",
            "UPDATE index_state SET stamp = stamp + 1",
        ],
    )
    .await;
    let again: Sales = [(random_key(3), sale("8")), (random_key(4), sale("9"))].into();
    let mut session = store.begin_load(&tenant).await.unwrap();
    session.stage(&sale_postings(&again)).await.unwrap();
    let summary = session.commit(record("again"), 10).await.unwrap();
    assert_eq!((summary.counts.added, summary.counts.replaced), (0, 2));
    model.extend(again);
    assert_eq!(
        key_index_count(&test, &tenant, "SELECT COUNT(*) FROM transaction_keys").await,
        50
    );

    let reference = provision(store, "pro").await;
    load_sales(store, &reference, &model, "final").await;
    assert_eq!(
        transactions_by_key(store, &tenant, 100).await,
        transactions_by_key(store, &reference, 100).await
    );
    let metrics =
        |tenant| store.month_metrics(tenant, BRANCH_TOTAL, month("2025-03"), month("2025-03"));
    assert_eq!(
        metrics(&tenant).await.unwrap(),
        metrics(&reference).await.unwrap()
    );
}

const JOURNAL: &str = "date,txn_id,account,amount,branch,memo
2025-01-05,J1,1010,1500000000,,Owner capital
2025-01-05,J1,3000,-1500000000,,Owner capital
2025-01-31,J2,5000,12500000.125,Kemang,\"Beans, roasted\"
2025-01-31,J2,2000,-12500000.125,Kemang,\"Beans, roasted\"
2025-02-01,J3,6000,45000000,Kemang,Payroll
2025-02-01,J3,6010,1800000,Kemang,Payroll
2025-02-01,J3,1010,-46800000,Kemang,Payroll
2025-02-03,J4,1000,0.0001,Senopati,A rupiah fraction
2025-02-03,J4,4000,-0.0001,Senopati,A rupiah fraction
2025-03-01,J5,1000,90000000000.1234,Senopati,A large amount
2025-03-01,J5,4000,-90000000000.1234,Senopati,A large amount
";

/// A posting as the journal file gives it: line, date, key, account, amount, branch
/// and memo.
type Row = (u64, String, String, String, Amount, String, String);

fn journal_rows(months: &[&str]) -> Vec<Row> {
    let mut reader = csv::Reader::from_reader(JOURNAL.as_bytes());
    reader
        .records()
        .enumerate()
        .map(|(at, record)| {
            let record = record.unwrap();
            (
                at as u64 + 2,
                record[0].to_string(),
                record[1].to_string(),
                record[2].to_string(),
                amount(&record[3]),
                record[4].to_string(),
                record[5].to_string(),
            )
        })
        .filter(|row| months.iter().any(|m| row.1.starts_with(m)))
        .collect()
}

async fn export_to(
    store: &dyn Store,
    tenant: &Tenant,
    range: Option<(&str, &str)>,
    format: ExportFormat,
    path: &Path,
) -> u64 {
    let file = std::fs::File::create(path).unwrap();
    store
        .export_ledger(
            tenant,
            range.map(|r| month(r.0)),
            range.map(|r| month(r.1)),
            format,
            Box::new(file),
        )
        .await
        .unwrap()
        .postings
}

/// The exported CSV's rows, checked for their source and load.
fn csv_rows(path: &Path, load_id: i64) -> Vec<Row> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    assert_eq!(reader.headers().unwrap(), EXPORT_COLUMNS.as_slice());
    let mut rows: Vec<Row> = reader
        .records()
        .map(|record| {
            let r = record.unwrap();
            assert_eq!(
                (&r[0], r[1].parse::<i64>().unwrap()),
                ("file:journal", load_id)
            );
            // The journal's amounts are in the tenant's currency.
            assert_eq!(&r[8], &r[6]);
            (
                r[2].parse().unwrap(),
                r[3].to_string(),
                r[4].to_string(),
                r[5].to_string(),
                // Exact decimal text: parsed as an amount, nothing dropped or rounded.
                r[6].parse().unwrap(),
                r[9].to_string(),
                r[10].to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn parquet_rows(path: &Path, load_id: i64) -> Vec<Row> {
    use polars::prelude::*;
    use polars_io::SerReader;
    let frame = polars_io::parquet::read::ParquetReader::new(std::fs::File::open(path).unwrap())
        .finish()
        .unwrap();
    let names: Vec<&str> = frame
        .get_column_names()
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(names, EXPORT_COLUMNS);
    assert_eq!(
        frame.column("amount").unwrap().dtype(),
        &DataType::Decimal(38, 4)
    );
    let text = |name: &str| frame.column(name).unwrap().str().unwrap().clone();
    let (sources, keys, accounts) = (text("source"), text("txn_key"), text("account"));
    let (branches, memos) = (text("branch"), text("memo"));
    let loads = frame.column("load_id").unwrap().i64().unwrap().clone();
    let lines = frame.column("line").unwrap().u64().unwrap().clone();
    let dates = frame
        .column("date")
        .unwrap()
        .cast(&DataType::String)
        .unwrap();
    let dates = dates.str().unwrap();
    let units = |name: &str| {
        frame
            .column(name)
            .unwrap()
            .decimal()
            .unwrap()
            .physical()
            .clone()
    };
    let (amounts, originals) = (units("amount"), units("original_amount"));
    let mut rows: Vec<Row> = (0..frame.height())
        .map(|at| {
            assert_eq!(sources.get(at), Some("file:journal"));
            assert_eq!(loads.get(at), Some(load_id));
            assert_eq!(originals.get(at), amounts.get(at));
            (
                lines.get(at).unwrap(),
                dates.get(at).unwrap().to_string(),
                keys.get(at).unwrap().to_string(),
                accounts.get(at).unwrap().to_string(),
                Amount::from_units(i64::try_from(amounts.get(at).unwrap()).unwrap()),
                branches.get(at).unwrap().to_string(),
                memos.get(at).unwrap().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

async fn import_journal(store: Arc<dyn Store>, tenant: &Tenant, file: &Path) -> i64 {
    // Batches of 7 rows: transactions split across segments are exported whole.
    let outcome = import_csv(store, tenant, StreamDef::journal(), file, &options())
        .await
        .unwrap();
    let ImportOutcome::Loaded(summary) = outcome else {
        panic!("expected a load")
    };
    summary.load_id
}

async fn the_export_reads_back_as_imported(test: TestStore) {
    let store = test.store.clone();
    let tenant = provision(store.as_ref(), "pro").await;
    let file = write(test.dir.path(), "gl.csv", JOURNAL);
    let load_id = import_journal(store.clone(), &tenant, &file).await;

    let csv_file = test.dir.path().join("ledger.csv");
    let written = export_to(store.as_ref(), &tenant, None, ExportFormat::Csv, &csv_file).await;
    let everything = journal_rows(&["2025"]);
    assert_eq!(written, everything.len() as u64);
    assert_eq!(csv_rows(&csv_file, load_id), everything);

    let parquet_file = test.dir.path().join("ledger.parquet");
    let written = export_to(
        store.as_ref(),
        &tenant,
        None,
        ExportFormat::Parquet,
        &parquet_file,
    )
    .await;
    assert_eq!(written, everything.len() as u64);
    assert_eq!(parquet_rows(&parquet_file, load_id), everything);

    // A month range exports the postings dated in it.
    let february = Some(("2025-02", "2025-02"));
    export_to(
        store.as_ref(),
        &tenant,
        february,
        ExportFormat::Csv,
        &csv_file,
    )
    .await;
    assert_eq!(csv_rows(&csv_file, load_id), journal_rows(&["2025-02"]));
    export_to(
        store.as_ref(),
        &tenant,
        february,
        ExportFormat::Parquet,
        &parquet_file,
    )
    .await;
    assert_eq!(
        parquet_rows(&parquet_file, load_id),
        journal_rows(&["2025-02"])
    );
}

/// `ledgersync ledger export` as an operator runs it.
#[tokio::test]
async fn the_export_command_writes_the_file() {
    let test = crate::helpers::sqlite_store().await;
    let tenant = provision(test.store.as_ref(), "pro").await;
    let file = write(test.dir.path(), "gl.csv", JOURNAL);
    let load_id = import_journal(test.store.clone(), &tenant, &file).await;
    let config = write(
        test.dir.path(),
        "ledgersync.toml",
        &format!(
            "[store]\nurl = \"sqlite://{}\"\n",
            test.dir.path().join("data").display()
        ),
    );
    let output = test.dir.path().join("march.csv");
    let command = [
        "ledgersync",
        "--config",
        config.to_str().unwrap(),
        "ledger",
        "export",
        "--tenant",
        &tenant.slug,
        "--from",
        "2025-03",
        "--to",
        "2025-03",
        "--format",
        "csv",
        "--output",
        output.to_str().unwrap(),
    ];
    let cli = <ledgersync::cli::Cli as clap::Parser>::try_parse_from(command).unwrap();
    ledgersync::cli::run(cli).await.unwrap();
    assert_eq!(csv_rows(&output, load_id), journal_rows(&["2025-03"]));
}

/// A segment of a format newer than this build is refused, naming it, by every
/// reader; nothing is misread.
#[tokio::test]
async fn a_segment_of_a_newer_format_is_refused_by_name() {
    use sqlx::Connection;
    let test = crate::helpers::sqlite_store().await;
    let store = test.store.as_ref();
    let tenant = provision(store, "pro").await;
    load(store, &tenant, &minute(1), "minute").await;
    let database = test
        .dir
        .path()
        .join("data/tenants")
        .join(format!("{}.db", tenant.id));
    let mut connection =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", database.display()))
            .await
            .unwrap();
    let segment: i64 = sqlx::query_scalar("UPDATE ledger_segments SET format = 3 RETURNING id")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    let expected =
        format!("segment {segment} of the ledger is in format 3, written by a newer ledgersync");
    let refused = store
        .rebuild_aggregates(&tenant)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains(&expected), "{refused}");
    let out = Box::new(std::io::sink());
    let refused = store
        .export_ledger(&tenant, None, None, ExportFormat::Csv, out)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains(&expected), "{refused}");
}

/// January sales at two outlets (food and beverage), a purchase, and a February sale.
fn sales_journal() -> String {
    let mut journal = String::from("date,txn_id,account,amount,branch,memo\n");
    for n in 1..=12 {
        let branch = ["Kemang", "Senopati"][n % 2];
        let (food, drinks) = (format!("{}.{n:02}", 100 * n), format!("{}.5", 30 * n));
        let cash = amount(&food).units() + amount(&drinks).units();
        let cash = Amount::from_units(cash);
        journal.push_str(&format!(
            "2025-01-{n:02},S{n:02},1000,{cash},{branch},Sale {n}\n\
             2025-01-{n:02},S{n:02},4000,-{food},{branch},Sale {n}\n\
             2025-01-{n:02},S{n:02},4010,-{drinks},{branch},Sale {n}\n"
        ));
    }
    journal.push_str(
        "2025-01-20,P1,5000,400,Kemang,Beans\n2025-01-20,P1,2000,-400,Kemang,Beans\n\
         2025-02-01,S13,1000,99,Kemang,Sale 13\n2025-02-01,S13,4000,-99,Kemang,Sale 13\n",
    );
    journal
}

/// A user of `role` in the app's tenant, logged in; returns the session token.
async fn user_session(
    app: &crate::helpers::TestApp,
    email: &str,
    role: ledgersync::access::Role,
) -> String {
    let config = crate::helpers::config_with_outbox(app.outbox.path());
    let mailer = ledgersync::mail::Mailer::from_config(&config.mail).unwrap();
    let invitation = ledgersync::access::invite(
        app.store.as_ref(),
        &mailer,
        "http://dashboard.test",
        &app.tenant,
        email,
        role,
        "test",
    )
    .await
    .unwrap();
    let token = invitation.link.rsplit('/').next().unwrap().to_string();
    let password = "kopi-susu-2025";
    let hashing = ledgersync::access::PasswordHashing::default();
    ledgersync::access::accept(app.store.as_ref(), &hashing, &token, password)
        .await
        .unwrap();
    let client = std::net::Ipv4Addr::LOCALHOST.into();
    ledgersync::access::login(app.store.as_ref(), &hashing, email, password, None, client)
        .await
        .unwrap()
        .token
}

/// Every transaction of one query, following `next`; checks each page's size.
async fn all_pages(
    app: &crate::helpers::TestApp,
    session: &str,
    query: &str,
    limit: usize,
) -> Vec<serde_json::Value> {
    let mut transactions = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!(
            "{}/v1/ledger/transactions?{query}&limit={limit}{cursor}",
            app.address
        );
        let response = app.get(&url, session).await;
        assert_eq!(response.status(), 200, "{url}");
        let page: serde_json::Value = response.json().await.unwrap();
        let listed = page["transactions"].as_array().unwrap();
        assert!(listed.len() <= limit);
        transactions.extend(listed.iter().cloned());
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(listed.len(), limit, "a page before the last is full");
                cursor = format!("&cursor={next}");
            }
            None => break,
        }
    }
    transactions
}

/// The postings to `account` over `transactions`, summed.
fn account_sum(transactions: &[serde_json::Value], account: &str) -> Amount {
    transactions
        .iter()
        .flat_map(|t| t["postings"].as_array().unwrap())
        .filter(|p| p["account"] == account)
        .map(|p| amount(p["amount"].as_str().unwrap()))
        .fold(Amount::ZERO, |sum, a| sum.checked_add(a).unwrap())
}

async fn transactions_behind_a_report_over_http(test: TestStore) {
    let app = crate::helpers::spawn_app(test.store.clone()).await;
    let file = write(test.dir.path(), "sales.csv", &sales_journal());
    import_journal(app.store.clone(), &app.tenant, &file).await;
    use ledgersync::access::Role;
    let manager = user_session(&app, "manager@kopi.example", Role::Manager).await;
    let viewer = user_session(&app, "viewer@kopi.example", Role::Viewer).await;
    let january = "from=2025-01&to=2025-01";

    // Each revenue account's transactions for January sum to what the P&L shows.
    let report: serde_json::Value = app
        .get_json(
            format!("{}/v1/reports/pnl?{january}", app.address),
            &manager,
        )
        .await;
    let revenue = amount(report["rows"][0]["revenue"].as_str().unwrap());
    assert!(revenue.is_positive());
    let food = all_pages(&app, &manager, &format!("{january}&account=4000"), 5).await;
    let drinks = all_pages(&app, &manager, &format!("{january}&account=4010"), 1000).await;
    assert_eq!((food.len(), drinks.len()), (12, 12));
    let sold = account_sum(&food, "4000")
        .checked_add(account_sum(&drinks, "4010"))
        .unwrap();
    assert_eq!(sold.units(), -revenue.units());
    // Each transaction comes with all its postings, balanced.
    for transaction in &food {
        let postings = transaction["postings"].as_array().unwrap();
        assert_eq!(postings.len(), 3, "{transaction}");
        let accounts: Vec<&str> = postings
            .iter()
            .map(|p| p["account"].as_str().unwrap())
            .collect();
        assert!(accounts.contains(&"1000") && accounts.contains(&"4010"));
        assert_eq!(
            account_sum(std::slice::from_ref(transaction), "1000").units(),
            -(account_sum(std::slice::from_ref(transaction), "4000").units()
                + account_sum(std::slice::from_ref(transaction), "4010").units())
        );
        assert_eq!(transaction["source"], "file:journal");
    }
    // In date order, pages joined without a gap or a repeat.
    let keys: Vec<&str> = food.iter().map(|t| t["key"].as_str().unwrap()).collect();
    let expected: Vec<String> = (1..=12).map(|n| format!("S{n:02}")).collect();
    assert_eq!(keys, expected);

    // By branch, and by category: the purchase is the only COGS food transaction.
    let kemang = all_pages(&app, &manager, &format!("{january}&branch=Kemang"), 1000).await;
    assert_eq!(kemang.len(), 7);
    assert!(kemang.iter().all(|t| t["branch"] == "Kemang"));
    let beans = all_pages(
        &app,
        &manager,
        &format!("{january}&category=food&account=5000"),
        10,
    )
    .await;
    assert_eq!(beans.len(), 1);
    assert_eq!(beans[0]["key"], "P1");
    let food_category = all_pages(&app, &manager, &format!("{january}&category=food"), 10).await;
    assert_eq!(food_category.len(), 13);
    let february = all_pages(&app, &manager, "from=2025-02&to=2025-02", 10).await;
    assert_eq!(february.len(), 1);

    // Managers and admins only; every parameter bounded.
    let url = |query: &str| format!("{}/v1/ledger/transactions?{query}", app.address);
    assert_eq!(app.get(url(january), &viewer).await.status(), 403);
    assert_eq!(app.get(url(january), &app.key).await.status(), 403);
    let anonymous = app.client.get(url(january)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let long = "x".repeat(201);
    for bad in [
        format!("{january}&limit=0"),
        format!("{january}&limit=1001"),
        format!("{january}&limit=-1"),
        "from=2025-13&to=2025-12".to_string(),
        "to=2025-01".to_string(),
        format!("{january}&branch={long}"),
        format!("{january}&account={long}"),
        format!("{january}&cursor={}", "a".repeat(5000)),
        format!("{january}&sort=amount"),
    ] {
        let response = app.get(url(&bad), &manager).await;
        assert_eq!(response.status(), 400, "{bad}");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().is_some(), "{bad}: {problem}");
    }
    // Well formed, but not a range or not a cursor this server gave.
    for refused in [
        "from=2025-02&to=2025-01".to_string(),
        format!("{january}&cursor=zz"),
    ] {
        let response = app.get(url(&refused), &manager).await;
        assert_eq!(response.status(), 422, "{refused}");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().is_some(), "{refused}: {problem}");
    }
    let most: serde_json::Value = app
        .get_json(url(&format!("{january}&limit=1000")), &manager)
        .await;
    assert_eq!(most["transactions"].as_array().unwrap().len(), 13);
    assert!(most["next"].is_null());
}
