//! The ledger store checked against a model. Random sequences of steps run on both
//! backends: files of new and replaced keys through the real import path (a general
//! ledger and a sales stream, two sources sharing months, branches and key texts),
//! the same file again, refused files (unbalanced transactions, bad rows), a new
//! timezone and `accounts rebuild`. Beside them runs a plain in-memory ledger: a map
//! of (source, key) to postings, whose figures are summed posting by posting from
//! the chart's classes. After every step the stored transactions, every aggregate
//! bucket, the opening cash and what the step itself reported must equal the
//! model's.
//!
//! CI runs a fixed number of cases per backend; `LEDGERSYNC_MODEL_CASES=500` runs
//! that many instead. A failing case's seed is appended to
//! `store_model.proptest-regressions` beside this file, which is committed: every
//! later run replays those cases before new ones, so a sequence that once broke the
//! store stays a test. A seed is a random generator's state, turned into steps by
//! [`scenario`]: a change to the generators gives an old seed other steps, so a bug
//! found here deserves a story of its own in `store_story.rs` too.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::io::{Cursor, Read};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;
use ledgersync::import::{import_csv, FileRejected, ImportOptions, ImportOutcome};
use ledgersync_config::StreamDef;
use ledgersync_schemas::{
    default_chart, posting_column, Account, AccountClass, Amount, Month, MonthMetrics, BRANCH_TOTAL,
};
use ledgersync_store::{Store, Tenant};
use polars::prelude::{DataFrame, DataType};
use polars_io::ipc::IpcReader;
use polars_io::SerReader;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use sqlx::Connection;

use crate::helpers::{provision, sqlite_store, TestStore};

/// Cases per backend in CI: together about twenty seconds on two cores (a
/// PostgreSQL tenant is slower to provision and to load into).
const SQLITE_CASES: u32 = 64;
const POSTGRES_CASES: u32 = 40;
/// Cases per backend instead of the above, for a longer run.
const CASES_VARIABLE: &str = "LEDGERSYNC_MODEL_CASES";
/// Seeds of failed cases, replayed first by every run.
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/e2e/store_model.proptest-regressions"
);

/// Keys of both sources: the same texts in each (distinct transactions), of
/// several lengths and cases and one beyond ASCII, so that key ranges compared in
/// byte order meet keys that sort otherwise in a database's collation.
const KEYS: [&str; 8] = ["K1", "K10", "K2", "k1", "Z", "10", "é1", "K1-a"];
/// The general ledger's branches; the empty one is head office.
const BRANCHES: [&str; 3] = ["Kemang", "Senopati", ""];
const OUTLETS: [&str; 2] = ["Kemang", "Senopati"];
/// Days on both sides of month ends, so that a timezone moves sales across months.
const JOURNAL_DAYS: [&str; 7] = [
    "2024-12-31",
    "2025-01-01",
    "2025-01-15",
    "2025-01-31",
    "2025-02-01",
    "2025-02-28",
    "2025-03-01",
];
const SALE_DAYS: [&str; 6] = [
    "2024-12-31",
    "2025-01-01",
    "2025-01-31",
    "2025-02-01",
    "2025-02-28",
    "2025-03-01",
];
/// Accounts of the default chart of every class and cash-flow section.
const JOURNAL_ACCOUNTS: [&str; 18] = [
    "1000", "1010", "1020", "1200", "1500", "2000", "2100", "2500", "3000", "4000", "4010", "4090",
    "5000", "5010", "6000", "6100", "7000", "8000",
];
/// From UTC-11 to UTC+14: every sale's day moves under some of them.
const TIMEZONES: [&str; 6] = [
    "Asia/Jakarta",
    "UTC",
    "Asia/Makassar",
    "America/New_York",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
];
/// Months that hold every date the steps make, in any of the timezones, with room.
const FIRST_MONTH: Month = Month {
    year: 2024,
    month: 10,
};
const LAST_MONTH: Month = Month {
    year: 2025,
    month: 5,
};

const JOURNAL_SOURCE: &str = "file:journal";
const SALES_SOURCE: &str = "file:sales";
/// A sales export whose timestamps are UTC instants, dated in the tenant's timezone.
const SALES_STREAM: &str = r#"
name = "sales"
key = ["sale_id"]
date = { column = "sold_at", source_timezone = "UTC" }
branch = "outlet"
numeric = ["net_amount", "tax"]

[lookups.payment_account]
cash = "1000"
qris = "1020"
card = "1030"
gofood = "1040"

[lookups.sales_account]
coffee = "4010"
pastry = "4000"

[[templates]]
postings = [
  { account = { lookup = "payment_account", column = "payment_method" }, amount = "net_amount + tax" },
  { account = { lookup = "sales_account", column = "category" }, amount = "-net_amount" },
  { account = "2100", amount = "-tax" },
]
"#;
/// The lookups of [`SALES_STREAM`], as the model reads them.
const PAYMENTS: [(&str, &str); 4] = [
    ("cash", "1000"),
    ("qris", "1020"),
    ("card", "1030"),
    ("gofood", "1040"),
];
const CATEGORIES: [(&str, &str); 2] = [("coffee", "4010"), ("pastry", "4000")];
const TAX_ACCOUNT: &str = "2100";

// ---------------------------------------------------------------------------------
// The steps.

/// A general-ledger transaction as a file writes it, one posting per row.
#[derive(Debug, Clone)]
struct JournalTxn {
    key: &'static str,
    date: NaiveDate,
    branch: &'static str,
    /// Account and amount (ten-thousandths) of each row; a zero amount posts nothing.
    rows: Vec<(&'static str, i64)>,
    /// Rows from this one on come back at the end of the file, after the others.
    comes_back_at: Option<usize>,
}

/// A sale of the sales export: a row per line item, each of two or three postings
/// and an instant of its own.
#[derive(Debug, Clone)]
struct Sale {
    key: &'static str,
    /// In UTC.
    sold_at: NaiveDateTime,
    outlet: &'static str,
    items: Vec<Item>,
    /// Items from this one on come back at the end of the file, after the others.
    comes_back_at: Option<usize>,
}

#[derive(Debug, Clone)]
struct Item {
    /// After the sale's `sold_at`, in any order of rows: the items of a sale near
    /// midnight may fall on two days in some timezone, which refuses the file (a
    /// transaction has one date), while a loaded sale is re-dated by its earliest
    /// instant.
    minutes_later: i64,
    category: usize,
    payment: usize,
    net: i64,
    tax: i64,
}

impl Sale {
    /// Each item's instant, in order.
    fn instants(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.items
            .iter()
            .map(|item| (self.sold_at + chrono::Duration::minutes(item.minutes_later)).and_utc())
    }

    /// Whether the items fall on more than one day in `timezone`.
    fn spans_days(&self, timezone: Tz) -> bool {
        let days: HashSet<NaiveDate> = self
            .instants()
            .map(|instant| instant.with_timezone(&timezone).date_naive())
            .collect();
        days.len() > 1
    }
}

/// What makes a general-ledger file refused, in one transaction's first posting.
#[derive(Debug, Clone, Copy)]
enum JournalDefect {
    Unbalanced,
    UnknownAccount,
    TooPrecise,
    BadDate,
    MixedDates,
}

/// What makes a sales file refused, in one sale.
#[derive(Debug, Clone, Copy)]
enum SaleDefect {
    UnknownPayment,
    TooPrecise,
    BadTimestamp,
}

#[derive(Debug, Clone)]
enum File {
    Journal {
        txns: Vec<JournalTxn>,
        defect: Option<(JournalDefect, Index)>,
    },
    Sales {
        sales: Vec<Sale>,
        defect: Option<(SaleDefect, Index)>,
    },
}

#[derive(Debug, Clone)]
enum Step {
    Import(File),
    /// Imports a file of an earlier step again: from the same path, or from a copy
    /// of it under a new name (`copied`).
    ImportAgain {
        which: Index,
        copied: bool,
    },
    /// Saves the tenant's settings with this timezone.
    Timezone(&'static str),
    /// `accounts rebuild`.
    Rebuild,
}

#[derive(Debug, Clone)]
struct Scenario {
    batch_rows: usize,
    steps: Vec<Step>,
}

fn day(text: &str) -> NaiveDate {
    text.parse().expect("a listed day")
}

fn units(amount: i64) -> String {
    Amount::from_units(amount).to_string()
}

/// `amount` with a fifth fractional digit, which no amount may have.
fn too_precise(amount: i64) -> String {
    rust_decimal::Decimal::new(amount * 10 + amount.signum(), 5).to_string()
}

impl File {
    fn source(&self) -> &'static str {
        match self {
            File::Journal { .. } => JOURNAL_SOURCE,
            File::Sales { .. } => SALES_SOURCE,
        }
    }

    fn stream(&self) -> StreamDef {
        match self {
            File::Journal { .. } => StreamDef::journal(),
            File::Sales { .. } => StreamDef::from_toml(SALES_STREAM).expect("the sales stream"),
        }
    }

    /// Whether the file is refused when the tenant's timezone is `timezone`.
    fn refused(&self, timezone: Tz) -> bool {
        match self {
            File::Journal { defect, .. } => defect.is_some(),
            File::Sales { sales, defect } => {
                defect.is_some() || sales.iter().any(|sale| sale.spans_days(timezone))
            }
        }
    }

    fn render(&self) -> String {
        let mut lines = Vec::new();
        match self {
            File::Journal { txns, defect } => {
                lines.push("date,txn_id,account,amount,branch".to_string());
                let defective = defect
                    .as_ref()
                    .map(|(defect, at)| (*defect, at.index(txns.len())));
                let mut tails = Vec::new();
                for (number, txn) in txns.iter().enumerate() {
                    let defect = defective.filter(|(_, at)| *at == number).map(|(d, _)| d);
                    // A defect goes on a posting that counts: a zero row posts nothing.
                    let target = txn.rows.iter().position(|(_, amount)| *amount != 0);
                    let mut rows: Vec<String> = txn
                        .rows
                        .iter()
                        .enumerate()
                        .map(|(row, &(account, raw))| {
                            let (mut date, mut account, mut amount) =
                                (txn.date.to_string(), account.to_string(), units(raw));
                            match defect.filter(|_| Some(row) == target) {
                                Some(JournalDefect::Unbalanced) => amount = units(raw + 5_000),
                                Some(JournalDefect::UnknownAccount) => account = "9999".into(),
                                Some(JournalDefect::TooPrecise) => amount = too_precise(raw),
                                Some(JournalDefect::BadDate) => {
                                    date = txn.date.format("%d/%m/%Y").to_string()
                                }
                                Some(JournalDefect::MixedDates) => {
                                    date = txn.date.succ_opt().expect("a later day").to_string()
                                }
                                None => {}
                            }
                            format!("{date},{},{account},{amount},{}", txn.key, txn.branch)
                        })
                        .collect();
                    if let Some(at) = txn.comes_back_at {
                        tails.extend(rows.split_off(at));
                    }
                    lines.extend(rows);
                }
                lines.extend(tails);
            }
            File::Sales { sales, defect } => {
                lines.push(
                    "sale_id,sold_at,outlet,category,payment_method,net_amount,tax".to_string(),
                );
                let defective = defect
                    .as_ref()
                    .map(|(defect, at)| (*defect, at.index(sales.len())));
                let mut tails = Vec::new();
                for (number, sale) in sales.iter().enumerate() {
                    let defect = defective.filter(|(_, at)| *at == number).map(|(d, _)| d);
                    let mut rows: Vec<String> = sale
                        .items
                        .iter()
                        .zip(sale.instants())
                        .enumerate()
                        .map(|(row, (item, instant))| {
                            let mut sold_at = instant.format("%Y-%m-%d %H:%M:%S").to_string();
                            let mut payment = PAYMENTS[item.payment].0.to_string();
                            let mut net = units(item.net);
                            match defect.filter(|_| row == 0) {
                                Some(SaleDefect::UnknownPayment) => payment = "bitcoin".into(),
                                Some(SaleDefect::TooPrecise) => net = too_precise(item.net),
                                Some(SaleDefect::BadTimestamp) => {
                                    sold_at = instant.format("%d/%m/%Y %H:%M").to_string()
                                }
                                None => {}
                            }
                            format!(
                                "{},{sold_at},{},{},{payment},{net},{}",
                                sale.key,
                                sale.outlet,
                                CATEGORIES[item.category].0,
                                units(item.tax)
                            )
                        })
                        .collect();
                    if let Some(at) = sale.comes_back_at {
                        tails.extend(rows.split_off(at));
                    }
                    lines.extend(rows);
                }
                lines.extend(tails);
            }
        }
        lines.push(String::new());
        lines.join("\n")
    }

    /// The transactions of a file that is not refused, with their postings as they
    /// are stored once the tenant's timezone is `timezone`.
    fn transactions(&self, timezone: Tz) -> Vec<(String, Vec<Leg>)> {
        // A zero amount posts nothing.
        let leg = |date: NaiveDate,
                   branch: &str,
                   occurred_at: Option<DateTime<Utc>>,
                   (account, amount): (&str, i64)| {
            (amount != 0).then(|| Leg {
                date,
                branch: branch.to_string(),
                occurred_at,
                account: account.to_string(),
                amount,
            })
        };
        let mut transactions: Vec<(String, Vec<Leg>)> = match self {
            File::Journal { txns, .. } => txns
                .iter()
                .map(|txn| {
                    let legs = txn
                        .rows
                        .iter()
                        .filter_map(|&row| leg(txn.date, txn.branch, None, row))
                        .collect();
                    (txn.key.to_string(), legs)
                })
                .collect(),
            File::Sales { sales, .. } => sales
                .iter()
                .map(|sale| {
                    let mut legs = Vec::new();
                    for (item, instant) in sale.items.iter().zip(sale.instants()) {
                        let date = instant.with_timezone(&timezone).date_naive();
                        legs.extend(
                            [
                                (PAYMENTS[item.payment].1, item.net + item.tax),
                                (CATEGORIES[item.category].1, -item.net),
                                (TAX_ACCOUNT, -item.tax),
                            ]
                            .into_iter()
                            .filter_map(|posting| leg(date, sale.outlet, Some(instant), posting)),
                        );
                    }
                    (sale.key.to_string(), legs)
                })
                .collect(),
        };
        for (_, legs) in &mut transactions {
            legs.sort();
        }
        transactions
    }
}

/// A nonzero amount, in ten-thousandths: fractions of a unit, whole units and
/// amounts of up to ten billion with every digit.
fn amount() -> impl Strategy<Value = i64> {
    let magnitude = prop_oneof![
        1i64..10_000,
        (1i64..100_000).prop_map(|whole| whole * 10_000),
        1i64..100_000_000_000_000,
    ];
    (magnitude, any::<bool>()).prop_map(
        |(magnitude, negative)| {
            if negative {
                -magnitude
            } else {
                magnitude
            }
        },
    )
}

fn journal_txn() -> impl Strategy<Value = JournalTxn> {
    let row = || {
        (
            0..JOURNAL_ACCOUNTS.len(),
            prop_oneof![8 => amount(), 1 => Just(0)],
        )
    };
    (
        (0..KEYS.len(), 0..JOURNAL_DAYS.len(), 0..BRANCHES.len()),
        (0..JOURNAL_ACCOUNTS.len(), amount()),
        vec(row(), 0..3),
        0..JOURNAL_ACCOUNTS.len(),
        option::weighted(0.2, any::<Index>()),
    )
        .prop_map(
            |((key, date, branch), first, others, balancing, comes_back)| {
                let mut rows: Vec<(&'static str, i64)> = std::iter::once(first)
                    .chain(others)
                    .map(|(account, amount)| (JOURNAL_ACCOUNTS[account], amount))
                    .collect();
                let sum: i64 = rows.iter().map(|(_, amount)| amount).sum();
                rows.push((JOURNAL_ACCOUNTS[balancing], -sum));
                let comes_back_at = comes_back.map(|at| 1 + at.index(rows.len() - 1));
                JournalTxn {
                    key: KEYS[key],
                    date: day(JOURNAL_DAYS[date]),
                    branch: BRANCHES[branch],
                    rows,
                    comes_back_at,
                }
            },
        )
}

fn item() -> impl Strategy<Value = Item> {
    (
        prop_oneof![Just(0i64), 1i64..=90],
        (0..CATEGORIES.len(), 0..PAYMENTS.len()),
        amount(),
        prop_oneof![Just(0i64), 1i64..10_000_000_000],
    )
        .prop_map(|(minutes_later, (category, payment), net, tax)| Item {
            minutes_later,
            category,
            payment,
            net,
            tax,
        })
}

fn sale() -> impl Strategy<Value = Sale> {
    (
        (
            0..KEYS.len(),
            0..SALE_DAYS.len(),
            0..48u32,
            0..OUTLETS.len(),
        ),
        prop_oneof![3 => vec(item(), 1..=1), 1 => vec(item(), 2..=3)],
        option::weighted(0.3, any::<Index>()),
    )
        .prop_map(|((key, date, half_hour, outlet), items, comes_back)| {
            let comes_back_at = comes_back
                .filter(|_| items.len() > 1)
                .map(|at| 1 + at.index(items.len() - 1));
            Sale {
                key: KEYS[key],
                sold_at: day(SALE_DAYS[date])
                    .and_hms_opt(half_hour / 2, half_hour % 2 * 30, 0)
                    .expect("a time of day"),
                outlet: OUTLETS[outlet],
                items,
                comes_back_at,
            }
        })
}

/// Items with distinct keys, the first of each: a key given twice in a file is one
/// transaction of all its rows, which these files do not mean.
fn distinct<T>(mut items: Vec<T>, key: impl Fn(&T) -> &'static str) -> Vec<T> {
    let mut seen = HashSet::new();
    items.retain(|item| seen.insert(key(item)));
    items
}

fn file() -> impl Strategy<Value = File> {
    let journal = (
        vec(journal_txn(), 1..=6),
        option::weighted(
            0.2,
            (
                select(vec![
                    JournalDefect::Unbalanced,
                    JournalDefect::UnknownAccount,
                    JournalDefect::TooPrecise,
                    JournalDefect::BadDate,
                    JournalDefect::MixedDates,
                ]),
                any::<Index>(),
            ),
        ),
    )
        .prop_map(|(txns, defect)| File::Journal {
            txns: distinct(txns, |txn| txn.key),
            defect,
        });
    let sales = (
        vec(sale(), 1..=6),
        option::weighted(
            0.2,
            (
                select(vec![
                    SaleDefect::UnknownPayment,
                    SaleDefect::TooPrecise,
                    SaleDefect::BadTimestamp,
                ]),
                any::<Index>(),
            ),
        ),
    )
        .prop_map(|(sales, defect)| File::Sales {
            sales: distinct(sales, |sale| sale.key),
            defect,
        });
    prop_oneof![4 => journal, 3 => sales]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let step = prop_oneof![
        7 => file().prop_map(Step::Import),
        2 => (any::<Index>(), any::<bool>())
            .prop_map(|(which, copied)| Step::ImportAgain { which, copied }),
        1 => select(TIMEZONES.to_vec()).prop_map(Step::Timezone),
        1 => Just(Step::Rebuild),
    ];
    (1..=4usize, vec(step, 1..=10)).prop_map(|(batch_rows, steps)| Scenario { batch_rows, steps })
}

// ---------------------------------------------------------------------------------
// The model.

/// A stored posting as the model and the store are compared on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Leg {
    date: NaiveDate,
    branch: String,
    occurred_at: Option<DateTime<Utc>>,
    account: String,
    amount: i64,
}

/// Each transaction's postings, sorted, by (source, key).
type Transactions = BTreeMap<(String, String), Vec<Leg>>;
/// Nonzero figures as `(metric, key)` → ten-thousandths.
type Figures = BTreeMap<(String, String), i64>;
/// Figures by (branch or `*`, month).
type Rollups = BTreeMap<(String, Month), Figures>;

/// Metric names of a rollup, as the store keeps them (see `MonthMetrics`).
const METRICS: [&str; 5] = ["class", "revenue", "cogs", "expense", "cash_flow"];

struct Model {
    chart: HashMap<String, Account>,
    timezone: Tz,
    transactions: Transactions,
    /// File contents loaded by source: the same content again changes nothing.
    loaded: HashSet<(&'static str, String)>,
}

#[derive(Debug)]
enum Expected {
    AlreadyLoaded,
    Refused,
    Loaded { transactions: i64, postings: i64 },
}

impl Model {
    fn new(timezone: Tz) -> Model {
        Model {
            chart: default_chart()
                .into_iter()
                .map(|account| (account.code.clone(), account))
                .collect(),
            timezone,
            transactions: Transactions::new(),
            loaded: HashSet::new(),
        }
    }

    fn expect(&self, file: &File, content: &str) -> Expected {
        if self.loaded.contains(&(file.source(), content.to_string())) {
            return Expected::AlreadyLoaded;
        }
        if file.refused(self.timezone) {
            return Expected::Refused;
        }
        let transactions = file.transactions(self.timezone);
        Expected::Loaded {
            transactions: transactions.len() as i64,
            postings: transactions.iter().map(|(_, legs)| legs.len() as i64).sum(),
        }
    }

    /// A loaded file replaces its source's transactions with the same keys.
    fn load(&mut self, file: &File, content: &str) {
        for (key, legs) in file.transactions(self.timezone) {
            self.transactions
                .insert((file.source().to_string(), key), legs);
        }
        self.loaded.insert((file.source(), content.to_string()));
    }

    /// Re-dates every transaction that kept its source instant (by its first
    /// instant); returns how many changed date.
    fn redate(&mut self, timezone: Tz) -> u64 {
        self.timezone = timezone;
        let mut moved = 0;
        for legs in self.transactions.values_mut() {
            let Some(first) = legs.iter().filter_map(|leg| leg.occurred_at).min() else {
                continue;
            };
            let date = first.with_timezone(&timezone).date_naive();
            if legs.iter().any(|leg| leg.date != date) {
                moved += 1;
                for leg in legs.iter_mut() {
                    leg.date = date;
                }
                legs.sort();
            }
        }
        moved
    }

    fn postings(&self) -> i64 {
        self.transactions
            .values()
            .map(|legs| legs.len() as i64)
            .sum()
    }

    /// Every bucket's figures, summed posting by posting: by account class, by
    /// category of revenue, COGS and expenses, and the direct cash flow (in a
    /// transaction that touches cash, each other posting moves cash by minus its
    /// amount, netted per section); then each month's total over branches.
    fn rollups(&self) -> Rollups {
        let mut sums: BTreeMap<(String, Month), BTreeMap<(String, String), i128>> = BTreeMap::new();
        for legs in self.transactions.values() {
            let Some(first) = legs.first() else { continue };
            let bucket = sums
                .entry((first.branch.clone(), Month::of(first.date)))
                .or_default();
            let mut add = |metric: &str, key: &str, amount: i128| {
                *bucket
                    .entry((metric.to_string(), key.to_string()))
                    .or_default() += amount;
            };
            let mut touches_cash = false;
            let mut sections: BTreeMap<&str, i128> = BTreeMap::new();
            for leg in legs {
                let account = &self.chart[&leg.account];
                let amount = i128::from(leg.amount);
                add("class", account.class.as_str(), amount);
                if matches!(
                    account.class,
                    AccountClass::Revenue | AccountClass::Cogs | AccountClass::Expense
                ) {
                    let category = account.category.as_deref().unwrap_or_default();
                    add(account.class.as_str(), category, amount);
                }
                if account.class == AccountClass::Cash {
                    touches_cash = true;
                } else {
                    *sections
                        .entry(account.class.cash_flow_section().as_str())
                        .or_default() += amount;
                }
            }
            if touches_cash {
                for (section, sum) in sections {
                    let flow = -sum;
                    let direction = if flow > 0 { "in" } else { "out" };
                    if flow != 0 {
                        add("cash_flow", &format!("{section}_{direction}"), flow);
                    }
                }
            }
        }
        let mut totals: BTreeMap<(String, Month), BTreeMap<(String, String), i128>> =
            BTreeMap::new();
        for ((_, month), figures) in &sums {
            let total = totals
                .entry((BRANCH_TOTAL.to_string(), *month))
                .or_default();
            for (name, amount) in figures {
                *total.entry(name.clone()).or_default() += amount;
            }
        }
        sums.into_iter()
            .chain(totals)
            .map(|(bucket, figures)| {
                let figures = figures
                    .into_iter()
                    .filter(|(_, amount)| *amount != 0)
                    .map(|(name, amount)| {
                        let amount = i64::try_from(amount).expect("the model's sums fit an amount");
                        (name, amount)
                    })
                    .collect();
                (bucket, figures)
            })
            .collect()
    }
}

/// Cash of `branch` (or `*`) before `month`.
fn cash_before(rollups: &Rollups, branch: &str, month: Month) -> i64 {
    rollups
        .iter()
        .filter(|((b, m), _)| b == branch && *m < month)
        .filter_map(|(_, figures)| figures.get(&("class".to_string(), "cash".to_string())))
        .sum()
}

/// The figures of a stored rollup, without zeros.
fn figures(metrics: &MonthMetrics) -> Figures {
    METRICS
        .iter()
        .flat_map(|metric| {
            metrics
                .keys(metric)
                .into_iter()
                .map(move |key| (metric.to_string(), key))
        })
        .map(|(metric, key)| {
            let amount = metrics.get(&metric, &key).units();
            ((metric, key), amount)
        })
        .filter(|(_, amount)| *amount != 0)
        .collect()
}

/// The entries where two maps differ, one per line; `None` if they are equal.
fn differences<K: Ord + Debug, V: PartialEq + Debug>(
    what: &str,
    stored: &BTreeMap<K, V>,
    model: &BTreeMap<K, V>,
) -> Option<String> {
    let keys: BTreeSet<&K> = stored.keys().chain(model.keys()).collect();
    let lines: Vec<String> = keys
        .into_iter()
        .filter(|key| stored.get(*key) != model.get(*key))
        .map(|key| {
            format!(
                "  {key:?}:\n    stored {:?}\n    model  {:?}",
                stored.get(key),
                model.get(key)
            )
        })
        .collect();
    (!lines.is_empty()).then(|| format!("{what} differ from the model's:\n{}", lines.join("\n")))
}

// ---------------------------------------------------------------------------------
// The stores, and the stored transactions read back.

/// Where a backend keeps a tenant's ledger, to read its segments back directly: the
/// store has no listing of postings, and this reader is independent of its code.
enum Ledgers {
    /// The SQLite store's directory: a tenant's ledger is `tenants/<id>.db` in it.
    Sqlite(PathBuf),
    /// The test's database (`url`); a tenant's ledger is its schema
    /// `tenant_<hex of id>`. `admin` reaches the server to drop it.
    Postgres {
        url: String,
        admin: String,
        database: String,
    },
}

struct Backend {
    store: Arc<dyn Store>,
    ledgers: Ledgers,
    /// The SQLite store's directory lives as long as this.
    _sqlite: Option<TestStore>,
}

const SEGMENTS: &str = "SELECT s.source, s.load_id, d.data FROM {schema}ledger_segments s \
     JOIN {schema}segment_data d ON d.segment_id = s.id ORDER BY s.id";
/// Transactions a later version replaced: no longer in the ledger (docs/segments.md).
const REPLACED: &str = "SELECT load_id, txn FROM {schema}replaced_transactions";

impl Backend {
    async fn sqlite() -> Backend {
        let test = sqlite_store().await;
        Backend {
            store: test.store.clone(),
            ledgers: Ledgers::Sqlite(test.dir.path().join("data")),
            _sqlite: Some(test),
        }
    }

    /// A store in a database of its own, dropped by [`Backend::close`].
    async fn postgres() -> Backend {
        let base = std::env::var("LS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let database = format!("ledgersync_model_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
            .await
            .expect("PostgreSQL must be running on loopback (see .ci/run)");
        sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {database}").as_str())
            .await
            .expect("creating the test's database");
        let url = format!("{base}/{database}");
        Backend {
            store: ledgersync_store::connect(&url).await.expect("the store"),
            ledgers: Ledgers::Postgres {
                url,
                admin: format!("{base}/postgres"),
                database,
            },
            _sqlite: None,
        }
    }

    async fn close(self) {
        drop(self.store);
        if let Ledgers::Postgres {
            admin, database, ..
        } = self.ledgers
        {
            let mut admin = sqlx::PgConnection::connect(&admin)
                .await
                .expect("PostgreSQL to drop the test's database");
            sqlx::Executor::execute(
                &mut admin,
                format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str(),
            )
            .await
            .expect("dropping the test's database");
        }
    }

    /// Every stored posting, by source and key, decoded from the segments.
    async fn transactions(&self, tenant: &Tenant) -> anyhow::Result<Transactions> {
        type Segment = (Option<String>, Option<i64>, Vec<u8>);
        let (segments, replaced): (Vec<Segment>, Vec<(i64, i64)>) = match &self.ledgers {
            Ledgers::Sqlite(dir) => {
                let file = dir.join("tenants").join(format!("{}.db", tenant.id));
                let mut ledger = sqlx::SqliteConnection::connect(&format!(
                    "sqlite://{}?mode=ro",
                    file.display()
                ))
                .await
                .context("opening the tenant's ledger")?;
                let segments = sqlx::query_as(&SEGMENTS.replace("{schema}", ""))
                    .fetch_all(&mut ledger)
                    .await
                    .context("reading segments")?;
                let replaced = sqlx::query_as(&REPLACED.replace("{schema}", ""))
                    .fetch_all(&mut ledger)
                    .await
                    .context("reading replaced transactions")?;
                (segments, replaced)
            }
            Ledgers::Postgres { url, .. } => {
                let mut ledger = sqlx::PgConnection::connect(url)
                    .await
                    .context("connecting to the test's database")?;
                let hex: String = tenant.id.chars().filter(char::is_ascii_hexdigit).collect();
                let schema = format!("tenant_{hex}.");
                let segments = sqlx::query_as(&SEGMENTS.replace("{schema}", &schema))
                    .fetch_all(&mut ledger)
                    .await
                    .context("reading segments")?;
                let replaced = sqlx::query_as(&REPLACED.replace("{schema}", &schema))
                    .fetch_all(&mut ledger)
                    .await
                    .context("reading replaced transactions")?;
                (segments, replaced)
            }
        };
        let replaced: HashSet<(i64, i64)> = replaced.into_iter().collect();
        let mut transactions = Transactions::new();
        for (source, load_id, bytes) in segments {
            // A segment of no source would be postings of no committed load.
            let source = source.unwrap_or_else(|| "<none>".to_string());
            let load_id = load_id.unwrap_or_default();
            for (txn, key, leg) in decode_segment(&bytes)? {
                if replaced.contains(&(load_id, i64::from(txn))) {
                    continue;
                }
                transactions
                    .entry((source.clone(), key))
                    .or_default()
                    .push(leg);
            }
        }
        for legs in transactions.values_mut() {
            legs.sort();
        }
        Ok(transactions)
    }
}

/// A segment's postings: an Arrow IPC file in one LZ4 frame (README, "How the
/// ledger is stored"), read with polars' own IPC reader.
fn decode_segment(bytes: &[u8]) -> anyhow::Result<Vec<(u32, String, Leg)>> {
    use posting_column::{ACCOUNT, AMOUNT, BRANCH, DATE, KEY, OCCURRED_AT};
    const TXN: &str = "txn";
    let mut ipc = Vec::new();
    lz4::Decoder::new(bytes)
        .and_then(|mut decoder| decoder.read_to_end(&mut ipc))
        .context("decompressing a segment")?;
    let frame: DataFrame = IpcReader::new(Cursor::new(ipc))
        .with_columns(Some(
            [TXN, KEY, DATE, BRANCH, OCCURRED_AT, ACCOUNT, AMOUNT]
                .map(String::from)
                .to_vec(),
        ))
        .finish()
        .context("reading a segment")?;
    let txns = frame.column(TXN)?.u32()?;
    let keys = frame.column(KEY)?.str()?;
    let dates = frame.column(DATE)?.date()?.physical();
    let branches = frame.column(BRANCH)?.str()?;
    // A wholly empty column is stored without a type.
    let instants = frame.column(OCCURRED_AT)?.cast(&DataType::String)?;
    let instants = instants.str()?;
    let accounts = frame.column(ACCOUNT)?.str()?;
    let amounts = frame.column(AMOUNT)?.i64()?;
    let mut postings = Vec::with_capacity(frame.height());
    for row in 0..frame.height() {
        let missing = |column: &str| anyhow::anyhow!("a stored posting has no {column}");
        let days = dates.get(row).ok_or_else(|| missing(DATE))?;
        let occurred_at = instants
            .get(row)
            .map(|instant| {
                DateTime::parse_from_rfc3339(instant)
                    .map(|instant| instant.with_timezone(&Utc))
                    .with_context(|| format!("stored instant '{instant}'"))
            })
            .transpose()?;
        postings.push((
            txns.get(row).ok_or_else(|| missing(TXN))?,
            keys.get(row).ok_or_else(|| missing(KEY))?.to_string(),
            Leg {
                date: NaiveDate::from_epoch_days(days)
                    .ok_or_else(|| anyhow::anyhow!("stored day {days} is out of range"))?,
                branch: branches
                    .get(row)
                    .ok_or_else(|| missing(BRANCH))?
                    .to_string(),
                occurred_at,
                account: accounts
                    .get(row)
                    .ok_or_else(|| missing(ACCOUNT))?
                    .to_string(),
                amount: amounts.get(row).ok_or_else(|| missing(AMOUNT))?,
            },
        ));
    }
    Ok(postings)
}

// ---------------------------------------------------------------------------------
// Running the steps.

fn failed(step: usize, what: &str, error: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("step {step}: {what}: {error:#}"))
}

/// Imports `file` (written at `path`) and checks the outcome against the model's.
async fn import(
    backend: &Backend,
    tenant: &Tenant,
    model: &mut Model,
    scenario: &Scenario,
    step: usize,
    (file, path): &(File, PathBuf),
) -> Result<(), TestCaseError> {
    let content = std::fs::read_to_string(path).map_err(|e| failed(step, "reading", e))?;
    let expected = model.expect(file, &content);
    let options = ImportOptions {
        batch_rows: scenario.batch_rows,
        max_reported_errors: 10,
        progress: false,
    };
    let outcome = import_csv(backend.store.clone(), tenant, file.stream(), path, &options).await;
    match (&expected, outcome) {
        (Expected::AlreadyLoaded, Ok(ImportOutcome::AlreadyLoaded(_))) => Ok(()),
        (Expected::Refused, Err(error)) if error.downcast_ref::<FileRejected>().is_some() => Ok(()),
        (
            Expected::Loaded {
                transactions,
                postings,
            },
            Ok(ImportOutcome::Loaded(summary)),
        ) => {
            prop_assert_eq!(
                (summary.transactions, summary.postings),
                (*transactions, *postings),
                "step {}: transactions and postings the load counted",
                step
            );
            model.load(file, &content);
            Ok(())
        }
        (expected, Ok(outcome)) => Err(failed(
            step,
            "the import",
            format!("expected {expected:?}, got {outcome:?}"),
        )),
        (expected, Err(error)) => Err(failed(
            step,
            "the import",
            format!("expected {expected:?}, got the error {error:#}"),
        )),
    }
}

/// Everything the store says of the ledger against the model: transactions by key,
/// the number of postings, the branches, every bucket's figures and opening cash.
async fn compare(
    backend: &Backend,
    tenant: &Tenant,
    model: &Model,
    step: usize,
) -> Result<(), TestCaseError> {
    let store = backend.store.as_ref();
    let stored = backend
        .transactions(tenant)
        .await
        .map_err(|e| failed(step, "reading the stored transactions", e))?;
    if let Some(difference) = differences("transactions", &stored, &model.transactions) {
        return Err(failed(step, "after the step", difference));
    }
    let postings = store
        .posting_count(tenant)
        .await
        .map_err(|e| failed(step, "counting postings", e))?;
    prop_assert_eq!(
        postings,
        model.postings(),
        "step {}: postings counted",
        step
    );

    let rollups = model.rollups();
    let model_branches: BTreeSet<String> = rollups
        .keys()
        .map(|(branch, _)| branch.clone())
        .filter(|branch| branch != BRANCH_TOTAL)
        .collect();
    let branches: BTreeSet<String> = store
        .branches(tenant)
        .await
        .map_err(|e| failed(step, "listing branches", e))?
        .into_iter()
        .collect();
    prop_assert_eq!(&branches, &model_branches, "step {}: branches", step);
    if let Some((branch, month)) = rollups
        .keys()
        .find(|(_, month)| !(FIRST_MONTH..=LAST_MONTH).contains(month))
    {
        return Err(failed(
            step,
            "the model",
            format!("{branch}'s {month} is outside the months compared"),
        ));
    }

    let mut stored_rollups = Rollups::new();
    let buckets = branches.iter().map(String::as_str).chain([BRANCH_TOTAL]);
    for branch in buckets.clone() {
        let months = store
            .month_metrics(tenant, branch, FIRST_MONTH, LAST_MONTH)
            .await
            .map_err(|e| failed(step, "reading aggregates", e))?;
        for (month, metrics) in months {
            stored_rollups.insert((branch.to_string(), month), figures(&metrics));
        }
    }
    if let Some(difference) = differences("aggregates", &stored_rollups, &rollups) {
        return Err(failed(step, "after the step", difference));
    }

    for branch in buckets {
        for month in FIRST_MONTH.through(LAST_MONTH) {
            let cash = store
                .cash_before(tenant, branch, month)
                .await
                .map_err(|e| failed(step, "reading opening cash", e))?;
            prop_assert_eq!(
                cash.units(),
                cash_before(&rollups, branch, month),
                "step {}: cash of '{}' before {}",
                step,
                branch,
                month
            );
        }
    }
    Ok(())
}

async fn run(backend: &Backend, scenario: Scenario) -> Result<(), TestCaseError> {
    let store = backend.store.as_ref();
    let mut tenant = provision(store, "pro").await;
    let mut model = Model::new(
        tenant
            .settings
            .timezone
            .parse()
            .map_err(|e| TestCaseError::fail(format!("the tenant's timezone: {e}")))?,
    );
    let files = tempfile::tempdir().map_err(|e| failed(0, "a directory for files", e))?;
    let mut written: Vec<(File, PathBuf)> = Vec::new();
    for (step, action) in scenario.steps.iter().enumerate() {
        match action {
            Step::Import(file) => {
                let path = files.path().join(format!("step-{step}.csv"));
                std::fs::write(&path, file.render()).map_err(|e| failed(step, "writing", e))?;
                written.push((file.clone(), path));
                let last = written.last().expect("just written");
                import(backend, &tenant, &mut model, &scenario, step, last).await?;
            }
            Step::ImportAgain { which, copied } => {
                if written.is_empty() {
                    continue;
                }
                let (file, path) = &written[which.index(written.len())];
                let again = match copied {
                    true => {
                        let copy = files.path().join(format!("step-{step}-copy.csv"));
                        std::fs::copy(path, &copy).map_err(|e| failed(step, "copying", e))?;
                        (file.clone(), copy)
                    }
                    false => (file.clone(), path.clone()),
                };
                import(backend, &tenant, &mut model, &scenario, step, &again).await?;
            }
            Step::Timezone(timezone) => {
                let mut settings = tenant.settings.clone();
                settings.timezone = timezone.to_string();
                let (updated, moved) = store
                    .update_settings(&tenant, &settings)
                    .await
                    .map_err(|e| failed(step, "saving settings", e))?;
                tenant = updated;
                let expected = model.redate(timezone.parse().expect("a listed timezone"));
                prop_assert_eq!(moved, expected, "step {}: transactions re-dated", step);
            }
            Step::Rebuild => {
                let buckets = store
                    .rebuild_aggregates(&tenant)
                    .await
                    .map_err(|e| failed(step, "rebuilding", e))?;
                let expected = model
                    .rollups()
                    .keys()
                    .filter(|(branch, _)| branch != BRANCH_TOTAL)
                    .count() as i64;
                prop_assert_eq!(buckets, expected, "step {}: buckets rebuilt", step);
            }
        }
        compare(backend, &tenant, &model, step).await?;
    }
    Ok(())
}

/// Runs the scenarios on a backend, then drops its storage whatever they found.
fn check_against_model(open: impl std::future::Future<Output = Backend>, default_cases: u32) {
    let cases = match std::env::var(CASES_VARIABLE) {
        Ok(cases) => cases
            .parse()
            .unwrap_or_else(|_| panic!("{CASES_VARIABLE} must be a number of cases")),
        Err(_) => default_cases,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let backend = runtime.block_on(open);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        // A failure shrinks towards the shortest sequence for up to five minutes.
        max_shrink_time: 300_000,
        ..Config::default()
    });
    let outcome = runner.run(&scenario(), |scenario| {
        runtime.block_on(run(&backend, scenario))
    });
    runtime.block_on(backend.close());
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

#[test]
fn sqlite() {
    check_against_model(Backend::sqlite(), SQLITE_CASES);
}

#[test]
fn postgres() {
    check_against_model(Backend::postgres(), POSTGRES_CASES);
}
