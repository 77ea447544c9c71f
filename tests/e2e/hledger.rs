//! Our statements against hledger's, computed from the same ground truth.
//!
//! The demo generator writes a realistic multi-branch ledger twice: as the source
//! files a customer would hand over (POS sales with UTC timestamps, a GL export, a
//! financing sheet), which go through our real import path, and as an hledger
//! journal with the true Jakarta dates. Every monthly P&L figure and every monthly
//! cash change and closing balance must agree to the last of four decimals.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ledgersync::demo::{self, DemoSpec};
use ledgersync::import::import_csv;
use ledgersync::reports::{self, ReportQuery, Rows};
use ledgersync_config::StreamDef;
use ledgersync_schemas::{Amount, CashFlowRow, Grouping, Month, PnlRow, ReportKind};
use ledgersync_store::{Store, Tenant};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::helpers::{postgres_store, provision, sqlite_store, TestStore};

/// hledger's JSON amount cell (a list of amounts, one per commodity) as an Amount.
fn cell(amounts: &Value) -> Amount {
    let total: Decimal = amounts
        .as_array()
        .expect("an amount list")
        .iter()
        .map(|a| {
            let q = &a["aquantity"];
            Decimal::from_i128_with_scale(
                q["decimalMantissa"].as_i64().expect("mantissa") as i128,
                q["decimalPlaces"].as_u64().expect("places") as u32,
            )
        })
        .sum();
    Amount::from_decimal(total).expect("hledger amounts keep four places")
}

struct Statement {
    months: Vec<Month>,
    /// Per account-name prefix (our class), per month.
    by_class: BTreeMap<String, Vec<Amount>>,
    totals: Vec<Amount>,
}

fn hledger(journal: &Path, args: &[&str]) -> Statement {
    let output = Command::new("hledger")
        .arg("-f")
        .arg(journal)
        .args(args)
        .args(["-O", "json"])
        .output()
        .expect("hledger must be installed (Debian package `hledger`; .ci/run installs it)");
    assert!(
        output.status.success(),
        "hledger failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("hledger JSON");
    let months: Vec<Month> = report["cbrDates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|span| span[0].as_str().unwrap()[..7].parse().unwrap())
        .collect();
    let mut by_class: BTreeMap<String, Vec<Amount>> = BTreeMap::new();
    for subreport in report["cbrSubreports"].as_array().unwrap() {
        for row in subreport[1]["prRows"].as_array().unwrap() {
            let class = row["prrName"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_string();
            let sums = by_class
                .entry(class)
                .or_insert_with(|| vec![Amount::ZERO; months.len()]);
            for (i, amounts) in row["prrAmounts"].as_array().unwrap().iter().enumerate() {
                sums[i] = sums[i].checked_add(cell(amounts)).unwrap();
            }
        }
    }
    let totals = report["cbrTotals"]["prrAmounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(cell)
        .collect();
    Statement {
        months,
        by_class,
        totals,
    }
}

/// Every monthly P&L figure (by class, and net profit) and every monthly cash change
/// and closing cash balance of the tenant's reports against hledger's `is -M`,
/// `cf -M` and `cf -M -H` of `journal`, over the months hledger reports. Returns
/// our rows for further checks.
pub(crate) async fn assert_statements_match(
    store: &Arc<dyn Store>,
    tenant: &Tenant,
    journal: &Path,
) -> (Vec<PnlRow>, Vec<CashFlowRow>) {
    let income = hledger(journal, &["is", "-M"]);
    let (from, to) = (income.months[0], *income.months.last().unwrap());
    let report = |kind| {
        let store = store.clone();
        let tenant = tenant.clone();
        async move {
            let query = ReportQuery {
                kind,
                from,
                to,
                branch: None,
                by: Grouping::Month,
            };
            reports::build(store.as_ref(), &tenant, &query)
                .await
                .unwrap()
                .rows
        }
    };
    let Rows::Pnl(pnl) = report(ReportKind::Pnl).await else {
        unreachable!()
    };
    assert_eq!(pnl.len(), income.months.len());
    let class = |name: &str, i: usize| income.by_class.get(name).map_or(Amount::ZERO, |v| v[i]);
    for (i, row) in pnl.iter().enumerate() {
        assert_eq!(row.period, income.months[i].to_string());
        let at = &row.period;
        assert_eq!(row.revenue, class("revenue", i), "revenue {at}");
        assert_eq!(row.cogs, class("cogs", i), "cogs {at}");
        assert_eq!(row.expenses, class("expense", i), "expenses {at}");
        assert_eq!(
            row.other_income,
            class("other_income", i),
            "other income {at}"
        );
        assert_eq!(
            row.other_expense,
            class("other_expense", i),
            "other expense {at}"
        );
        assert_eq!(row.net_profit, income.totals[i], "net profit {at}");
    }

    let changes = hledger(journal, &["cf", "-M"]);
    let balances = hledger(journal, &["cf", "-M", "-H"]);
    let Rows::CashFlow(flows) = report(ReportKind::CashFlow).await else {
        unreachable!()
    };
    assert_eq!(changes.months, income.months);
    assert_eq!(flows.len(), changes.months.len());
    for (i, row) in flows.iter().enumerate() {
        let at = &row.period;
        assert_eq!(row.net_change, changes.totals[i], "cash change {at}");
        assert_eq!(row.closing_cash, balances.totals[i], "closing cash {at}");
    }
    (pnl, flows)
}

async fn statements_match_hledger(test: TestStore) {
    let store = test.store.clone();
    let tenant = provision(store.as_ref(), "pro").await;
    let spec = DemoSpec {
        outlets: 3,
        start: Month::new(2024, 1).unwrap(),
        months: 19,
        sales_per_day: 3,
        seed: 7,
    };
    let files = demo::generate(&spec, test.dir.path()).unwrap();
    for (stream, file) in [
        (
            StreamDef::from_toml(demo::POS_SALES_STREAM).unwrap(),
            &files.pos_sales,
        ),
        (StreamDef::journal(), &files.journal),
        (
            StreamDef::from_toml(demo::FINANCING_STREAM).unwrap(),
            &files.financing,
        ),
    ] {
        import_csv(
            store.clone(),
            &tenant,
            stream,
            file,
            &ledgersync::import::ImportOptions {
                batch_rows: 5_000,
                max_reported_errors: 20,
                progress: false,
            },
        )
        .await
        .unwrap();
    }
    let journal = test.dir.path().join("ledger.journal");
    demo::write_hledger_journal(
        &files.transactions,
        &store.accounts(&tenant).await.unwrap(),
        &journal,
    )
    .unwrap();

    let (pnl, flows) = assert_statements_match(&store, &tenant, &journal).await;
    assert!(pnl.len() >= 19, "{} months", pnl.len());
    // Only the spill-over month (sales after midnight on the last day) lacks COGS.
    assert!(
        pnl.iter()
            .filter(|r| r.revenue.is_zero() || r.cogs.is_zero())
            .count()
            <= 1
    );

    // The flows the generator put in each section are there.
    assert!(flows.iter().any(|r| !r.investing_out.is_zero()));
    assert!(
        flows.iter().any(|r| !r.financing_in.is_zero())
            && flows.iter().any(|r| !r.financing_out.is_zero())
    );
}

#[tokio::test]
async fn sqlite_statements_match_hledger() {
    statements_match_hledger(sqlite_store().await).await;
}

#[tokio::test]
async fn postgres_statements_match_hledger() {
    statements_match_hledger(postgres_store().await).await;
}
