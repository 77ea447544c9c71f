//! A coffee chain's back office in a real PostgreSQL or MariaDB database (POS sales
//! with outlets, categories and payment methods; e-wallet and card settlements;
//! purchases; payroll) synced through the example mappings into the ledger, then
//! changed at the source (updates, inserts, and deletes on the full-refresh stream)
//! and synced again. After each sync every monthly P&L and cash figure must equal
//! hledger's, computed from a journal the test writes from the source rows as the
//! source database returns them (dates in Jakarta by the database's own zone rules).

use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use ledgersync::demo::DemoTransaction;
use ledgersync::sync::{sync_connector, StreamSynced, SyncOptions};
use ledgersync_schemas::Amount;
use ledgersync_store::{Store, Tenant};
use rust_decimal::Decimal;
use sqlx::{Connection, Row};

use crate::connectors::{
    add_connector, on_both_stores, sales_insert, test_secrets, SourceDb, SourceKind,
};
use crate::helpers::{postgres_base, provision, write};

const OUTLETS: [&str; 3] = ["Kemang", "Senopati", "Bintaro"];
/// A change made after every row's first version.
const LATER: &str = "2026-06-01 00:00:00";

/// The back-office tables beside `sales`, in the source's dialect.
fn back_office_tables(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Postgres => {
            "CREATE TABLE settlements (settlement_id bigint PRIMARY KEY, settled_on date NOT NULL, \
             outlet text NOT NULL, provider text NOT NULL, gross numeric(18,4) NOT NULL, \
             fee numeric(18,4) NOT NULL, updated_at timestamptz NOT NULL); \
             CREATE TABLE purchases (purchase_id text PRIMARY KEY, received_on date NOT NULL, \
             outlet text NOT NULL, category text NOT NULL, payment text NOT NULL, \
             amount numeric(18,4) NOT NULL); \
             CREATE TABLE payroll (payslip_id text PRIMARY KEY, paid_on date NOT NULL, \
             outlet text NOT NULL, gross_pay numeric(16,2) NOT NULL, bpjs numeric(16,2) NOT NULL, \
             updated_at timestamptz NOT NULL)"
        }
        SourceKind::Mariadb => {
            "CREATE TABLE settlements (settlement_id BIGINT PRIMARY KEY, settled_on DATE NOT NULL, \
             outlet VARCHAR(40) NOT NULL, provider VARCHAR(20) NOT NULL, \
             gross DECIMAL(18,4) NOT NULL, fee DECIMAL(18,4) NOT NULL, \
             updated_at DATETIME(6) NOT NULL); \
             CREATE TABLE purchases (purchase_id VARCHAR(16) PRIMARY KEY, received_on DATE NOT NULL, \
             outlet VARCHAR(40) NOT NULL, category VARCHAR(20) NOT NULL, \
             payment VARCHAR(10) NOT NULL, amount DECIMAL(18,4) NOT NULL); \
             CREATE TABLE payroll (payslip_id VARCHAR(16) PRIMARY KEY, paid_on DATE NOT NULL, \
             outlet VARCHAR(40) NOT NULL, gross_pay DECIMAL(16,2) NOT NULL, \
             bpjs DECIMAL(16,2) NOT NULL, updated_at DATETIME(6) NOT NULL)"
        }
    }
}

/// A UTC time as the source's timestamp column takes it.
fn timestamp(kind: SourceKind, text: &str) -> String {
    match kind {
        SourceKind::Postgres => format!("'{text}+00'"),
        SourceKind::Mariadb => format!("'{text}'"),
    }
}

/// Ten-thousandths as a plain decimal with four places.
fn units(value: i64) -> String {
    Decimal::new(value, 4).to_string()
}

/// Fifteen months of settlements, purchases and payroll for three outlets.
fn back_office_rows(kind: SourceKind) -> Vec<String> {
    let mut settlements = vec![];
    let mut purchases = vec![];
    let mut payroll = vec![];
    for month in 0..15u32 {
        let (year, m) = (2025 + (month / 12) as i32, month % 12 + 1);
        let day = |d: u32| NaiveDate::from_ymd_opt(year, m, d).unwrap();
        for (o, outlet) in OUTLETS.iter().enumerate() {
            let n = (month as i64) * 3 + o as i64;
            for (p, provider) in ["qris", "card", "gofood"].iter().enumerate() {
                let gross = 400_000_000_000 + n * 12_345_678_901 % 90_000_000_000 + p as i64 * 7;
                let fee = gross * (if *provider == "gofood" { 20 } else { 7 }) / 1000;
                let settled = day(5 + p as u32);
                settlements.push(format!(
                    "({}, '{settled}', '{outlet}', '{provider}', {}, {}, {})",
                    n * 10 + p as i64,
                    units(gross),
                    units(fee),
                    timestamp(kind, &format!("{settled} 09:00:00"))
                ));
            }
            for (c, category) in ["food", "beverage", "packaging"].iter().enumerate() {
                let amount = 125_000_000_000 + (n * 7 + c as i64) * 987_654_321 % 50_000_000_000;
                purchases.push(format!(
                    "('P{n:03}{c}', '{}', '{outlet}', '{category}', '{}', {})",
                    day(10 + c as u32 * 6),
                    if (n + c as i64) % 3 == 0 {
                        "credit"
                    } else {
                        "bank"
                    },
                    units(amount)
                ));
            }
            for staff in 0..4i64 {
                let gross = 450_000_000 + (n * 4 + staff) * 1_234_567 % 200_000_000;
                let paid = day(25);
                payroll.push(format!(
                    "('W{n:03}{staff}', '{paid}', '{outlet}', {}, {}, {})",
                    Decimal::new(gross, 2),
                    Decimal::new(gross * 4 / 100, 2),
                    timestamp(kind, &format!("{paid} 17:00:00"))
                ));
            }
        }
    }
    vec![
        format!("INSERT INTO settlements VALUES {}", settlements.join(", ")),
        format!("INSERT INTO purchases VALUES {}", purchases.join(", ")),
        format!("INSERT INTO payroll VALUES {}", payroll.join(", ")),
    ]
}

/// The connector: three incremental streams and one (purchases) read whole.
fn connector_spec(source: &SourceDb, dir: &Path) -> std::path::PathBuf {
    let streams = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/streams")
        .canonicalize()
        .unwrap();
    let (kind, port) = match source.kind {
        SourceKind::Postgres => ("postgres", 5432),
        SourceKind::Mariadb => ("mysql", 3306),
    };
    let stream = |name: &str, table: &str, mapping: &str, cursor: &str| {
        format!(
            "\n[[streams]]\nname = \"{name}\"\ntable = \"{table}\"\nmapping = \"{}\"\n{cursor}",
            streams.join(mapping).display(),
        )
    };
    let incremental = "cursor = { column = \"updated_at\", lookback = \"0s\" }\n";
    write(
        dir,
        "back_office.toml",
        &format!(
            "kind = \"{kind}\"\nhost = \"127.0.0.1\"\nport = {port}\ndatabase = \"{}\"\n\
             user = \"{}\"\ntls = \"disable\"\n{}{}{}{}",
            source.name,
            source.user,
            stream("pos_sales", "sales", "pos_sales.toml", incremental),
            // Settlements are withdrawn now and then: their keys are reconciled.
            stream(
                "settlements",
                "settlements",
                "ewallet_settlements.toml",
                "cursor = { column = \"updated_at\", lookback = \"0s\", reconcile = \"1d\" }\n"
            ),
            stream("purchases", "purchases", "purchases.toml", ""),
            stream("payroll", "payroll", "payroll.toml", incremental),
        ),
    )
}

/// Rows of `sql` as text cells, as the source database returns them.
async fn source_rows(source: &SourceDb, sql: &str) -> Vec<Vec<String>> {
    match source.kind {
        SourceKind::Postgres => {
            let mut conn =
                sqlx::PgConnection::connect(&format!("{}/{}", postgres_base(), source.name))
                    .await
                    .unwrap();
            sqlx::query(sql)
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .iter()
                .map(|row| (0..row.len()).map(|i| row.get::<String, _>(i)).collect())
                .collect()
        }
        SourceKind::Mariadb => crate::connectors::mariadb(&format!("USE {}; {sql}", source.name))
            .lines()
            .map(|line| line.split('\t').map(str::to_string).collect())
            .collect(),
    }
}

/// What each table's rows mean, written out here rather than read from the
/// mappings: `(account, amount)` per posting.
type Postings = Vec<(&'static str, Decimal)>;

fn sale(cells: &[Decimal], category: &str, payment: &str) -> Postings {
    let (net, tax) = (cells[0], cells[1]);
    let paid_to = match payment {
        "cash" => "1000",
        "qris" => "1020",
        "card" => "1030",
        "gofood" => "1040",
        other => panic!("payment method {other}"),
    };
    let sold = match category {
        "coffee" | "tea" => "4010",
        "pastry" | "rice_bowl" => "4000",
        other => panic!("category {other}"),
    };
    vec![(paid_to, net + tax), (sold, -net), ("2100", -tax)]
}

fn settlement(cells: &[Decimal], provider: &str) -> Postings {
    let (gross, fee) = (cells[0], cells[1]);
    let (clearing, fee_account) = match provider {
        "qris" => ("1020", "6500"),
        "card" => ("1030", "6500"),
        "gofood" => ("1040", "6400"),
        other => panic!("provider {other}"),
    };
    vec![
        ("1010", gross - fee),
        (fee_account, fee),
        (clearing, -gross),
    ]
}

fn purchase(cells: &[Decimal], category: &str, payment: &str) -> Postings {
    let cost = match category {
        "food" => "5000",
        "beverage" => "5010",
        "packaging" => "5020",
        other => panic!("category {other}"),
    };
    let from = if payment == "credit" { "2000" } else { "1010" };
    vec![(cost, cells[0]), (from, -cells[0])]
}

fn payslip(cells: &[Decimal]) -> Postings {
    let (gross, bpjs) = (cells[0], cells[1]);
    vec![("6000", gross), ("6010", bpjs), ("1010", -(gross + bpjs))]
}

/// Every source row as a transaction of the ground truth, sales dated by the
/// source database's own conversion of their UTC time to Jakarta.
async fn ground_truth(source: &SourceDb) -> Vec<DemoTransaction> {
    let jakarta_day = match source.kind {
        SourceKind::Postgres => "((sold_at AT TIME ZONE 'Asia/Jakarta')::date)::text",
        SourceKind::Mariadb => "DATE(DATE_ADD(sold_at, INTERVAL 7 HOUR))",
    };
    let text = |column: &str| match source.kind {
        SourceKind::Postgres => format!("{column}::text"),
        SourceKind::Mariadb => column.to_string(),
    };
    // (query, how many leading cells are labels, postings of a row)
    type Meaning = fn(&[Decimal], &[String]) -> Postings;
    let tables: [(String, usize, Meaning); 4] = [
        (
            format!(
                "SELECT sale_id, {jakarta_day}, outlet, category, payment_method, {}, {} FROM sales",
                text("net_amount"),
                text("tax")
            ),
            5,
            |n, l| sale(n, &l[3], &l[4]),
        ),
        (
            format!(
                "SELECT {}, {}, outlet, provider, {}, {} FROM settlements",
                text("settlement_id"),
                text("settled_on"),
                text("gross"),
                text("fee")
            ),
            4,
            |n, l| settlement(n, &l[3]),
        ),
        (
            format!(
                "SELECT purchase_id, {}, outlet, category, payment, {} FROM purchases",
                text("received_on"),
                text("amount")
            ),
            5,
            |n, l| purchase(n, &l[3], &l[4]),
        ),
        (
            format!(
                "SELECT payslip_id, {}, outlet, {}, {} FROM payroll",
                text("paid_on"),
                text("gross_pay"),
                text("bpjs")
            ),
            3,
            |n, _| payslip(n),
        ),
    ];
    let mut transactions = vec![];
    for (sql, labels, meaning) in tables {
        for row in source_rows(source, &sql).await {
            let numbers: Vec<Decimal> = row[labels..]
                .iter()
                .map(|cell| cell.parse().unwrap())
                .collect();
            let postings = meaning(&numbers, &row[..labels])
                .into_iter()
                .map(|(account, value)| (account, Amount::from_decimal(value).unwrap()))
                .collect();
            transactions.push(DemoTransaction {
                id: row[0].clone(),
                date: row[1].parse().unwrap(),
                branch: row[2].clone(),
                memo: String::new(),
                postings,
            });
        }
    }
    transactions
}

/// Our reports against hledger's over the source as it stands.
async fn assert_ledger_is_the_source(
    store: &Arc<dyn Store>,
    tenant: &Tenant,
    source: &SourceDb,
    dir: &Path,
) -> usize {
    let truth = ground_truth(source).await;
    let journal = dir.join("source.journal");
    ledgersync::demo::write_hledger_journal(
        &truth,
        &store.accounts(tenant).await.unwrap(),
        &journal,
    )
    .unwrap();
    let (pnl, flows) = crate::hledger::assert_statements_match(store, tenant, &journal).await;
    // Every kind of figure is there to compare.
    assert!(pnl.iter().filter(|r| !r.revenue.is_zero()).count() >= 15);
    assert!(pnl.iter().filter(|r| !r.expenses.is_zero()).count() >= 15);
    assert!(pnl.iter().filter(|r| !r.cogs.is_zero()).count() >= 15);
    assert!(flows.iter().any(|r| !r.net_change.is_zero()));
    truth.len()
}

/// One figure of each stream's sync, by stream.
fn by_stream(synced: &[StreamSynced], figure: fn(&StreamSynced) -> i64) -> Vec<(&str, i64)> {
    synced
        .iter()
        .map(|s| (s.stream.as_str(), figure(s)))
        .collect()
}

async fn back_office_matches_hledger(kind: SourceKind, test: &crate::helpers::TestStore) {
    let store: Arc<dyn Store> = test.store.clone();
    let source = SourceDb::create(kind).await;
    source.execute(back_office_tables(kind)).await;
    source.execute(&sales_insert(kind, 0, 300, None)).await;
    for insert in back_office_rows(kind) {
        source.execute(&insert).await;
    }
    let tenant = provision(store.as_ref(), "pro").await;
    let secrets = test_secrets(store.as_ref(), test).await;
    let spec = connector_spec(&source, test.dir.path());
    let connector = add_connector(store.as_ref(), &secrets, &tenant, "back_office", &spec).await;
    // A manual sync; `reconcile_now` as `connector sync --reconcile` sets it.
    let sync = |reconcile_now: bool| {
        let (store, secrets, tenant, connector) = (&store, &secrets, &tenant, &connector);
        async move {
            let options = SyncOptions {
                reconcile_now,
                ..SyncOptions::once(64, 20)
            };
            sync_connector(
                store.clone(),
                secrets,
                tenant,
                connector,
                "manual",
                &options,
            )
            .await
            .unwrap()
        }
    };
    let first = sync(false).await;
    assert_eq!(
        by_stream(&first, |s| s.rows_read),
        [
            ("pos_sales", 300),
            ("settlements", 135),
            ("purchases", 135),
            ("payroll", 180)
        ]
    );
    let rows = assert_ledger_is_the_source(&store, &tenant, &source, test.dir.path()).await;
    assert_eq!(rows, 750);

    // A month of corrections: sales and settlement fees amended, a settlement
    // withdrawn (deleted: found by the key reconcile), purchases
    // deleted, amended and added (that stream is read whole), payslips amended
    // and a new payroll month.
    let later = timestamp(kind, LATER);
    source
        .execute(&format!(
            "UPDATE sales SET net_amount = net_amount + 1000.5, tax = tax + 100.05, \
             updated_at = {later} WHERE sale_id IN ('S00003', 'S00150', 'S00299')"
        ))
        .await;
    source
        .execute(&sales_insert(kind, 300, 304, Some(LATER)))
        .await;
    source
        .execute(&format!(
            "UPDATE settlements SET fee = fee + 0.0001, updated_at = {later} \
             WHERE settlement_id IN (1, 72); DELETE FROM settlements WHERE settlement_id = 100"
        ))
        .await;
    source
        .execute(
            "DELETE FROM purchases WHERE purchase_id IN ('P0000', 'P0121', 'P0222', 'P0441'); \
             UPDATE purchases SET amount = amount * 2, payment = 'credit' \
             WHERE purchase_id IN ('P0011', 'P0302')",
        )
        .await;
    source
        .execute(
            "INSERT INTO purchases VALUES ('P9990', '2026-03-28', 'Kemang', 'food', 'bank', 77.7777), \
             ('P9991', '2025-02-28', 'Bintaro', 'packaging', 'credit', 1234567.8901)",
        )
        .await;
    source
        .execute(&format!(
            "UPDATE payroll SET bpjs = bpjs + 0.01, updated_at = {later} WHERE payslip_id = 'W0021'; \
             INSERT INTO payroll VALUES ('W9990', '2026-03-31', 'Kemang', 5100000.00, 204000.00, {later}), \
             ('W9991', '2026-03-31', 'Senopati', 4999999.99, 199999.99, {later})"
        ))
        .await;

    let second = sync(false).await;
    let purchases = second.iter().find(|s| s.stream == "purchases").unwrap();
    assert_eq!((purchases.rows_read, purchases.removed), (133, 4));
    // Never reconciled before: the settlements' keys are, after their sync.
    let settlements = second.iter().find(|s| s.stream == "settlements").unwrap();
    assert_eq!(settlements.removed, 1, "{second:?}");
    let rows = assert_ledger_is_the_source(&store, &tenant, &source, test.dir.path()).await;
    assert_eq!(rows, 750 + 4 - 4 + 2 + 2 - 1);

    // Aggregates as kept equal aggregates recomputed from the postings.
    store.rebuild_aggregates(&tenant).await.unwrap();
    assert_ledger_is_the_source(&store, &tenant, &source, test.dir.path()).await;

    // Another settlement withdrawn: the reconcile is not due for a day, so the
    // next sync keeps it; one asked for (`connector sync --reconcile`) removes it.
    source
        .execute("DELETE FROM settlements WHERE settlement_id = 101")
        .await;
    let third = sync(false).await;
    assert!(third.iter().all(|s| s.removed == 0), "{third:?}");
    let fourth = sync(true).await;
    assert_eq!(
        by_stream(&fourth, |s| s.removed),
        [
            ("pos_sales", 0),
            ("settlements", 1),
            ("purchases", 0),
            ("payroll", 0)
        ]
    );
    let rows = assert_ledger_is_the_source(&store, &tenant, &source, test.dir.path()).await;
    assert_eq!(rows, 752);
}

on_both_stores!(
    postgres_back_office_matches_hledger(Postgres),
    mariadb_back_office_matches_hledger(Mariadb),
);

async fn postgres_back_office_matches_hledger(kind: SourceKind, test: &crate::helpers::TestStore) {
    back_office_matches_hledger(kind, test).await
}

async fn mariadb_back_office_matches_hledger(kind: SourceKind, test: &crate::helpers::TestStore) {
    back_office_matches_hledger(kind, test).await
}
