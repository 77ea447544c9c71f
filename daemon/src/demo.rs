//! A realistic coffee-chain ledger: POS sales in several payment methods (some near
//! midnight Jakarta time, with fractional rupiah), purchases, payroll, rent, clearing
//! settlements, tax remittance, an equipment purchase, owner capital and a loan.
//!
//! It is written as the source files a customer would hand over (a POS export, a
//! general-ledger export, a financing sheet) and, independently, as an hledger
//! journal from the same ground truth, so tests can check our statements against
//! hledger's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDate, TimeZone};
use ledgersync_schemas::{Account, AccountClass, Amount, Month};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

pub const POS_SALES_STREAM: &str = include_str!("../../examples/streams/pos_sales.toml");
pub const FINANCING_STREAM: &str = include_str!("../../examples/streams/financing.toml");

const OUTLETS: [&str; 16] = [
    "Kemang",
    "Senopati",
    "Menteng",
    "Kuningan",
    "Kelapa Gading",
    "Pantai Indah Kapuk",
    "Bintaro",
    "Serpong",
    "Depok",
    "Bekasi",
    "Bogor",
    "Cikini",
    "Tebet",
    "Pluit",
    "Cibubur",
    "Sudirman",
];
const CATEGORIES: [(&str, i64); 4] = [
    ("coffee", 38_000),
    ("tea", 28_000),
    ("pastry", 32_000),
    ("rice_bowl", 55_000),
];
const PAYMENTS: [&str; 8] = [
    "cash",
    "qris",
    "gopay",
    "ovo",
    "card",
    "grabfood",
    "gofood",
    "shopeefood",
];

#[derive(Debug, Clone)]
pub struct DemoSpec {
    pub outlets: usize,
    pub start: Month,
    pub months: u32,
    pub sales_per_day: usize,
    pub seed: u64,
}

impl Default for DemoSpec {
    /// About two years of a dozen outlets.
    fn default() -> Self {
        DemoSpec {
            outlets: 12,
            start: Month::new(2024, 1).expect("valid"),
            months: 24,
            sales_per_day: 4,
            seed: 2024,
        }
    }
}

/// The ground truth: every transaction with its Jakarta date.
#[derive(Debug, Clone)]
pub struct DemoTransaction {
    pub id: String,
    pub date: NaiveDate,
    pub branch: String,
    pub memo: String,
    pub postings: Vec<(&'static str, Amount)>,
}

#[derive(Debug)]
pub struct DemoFiles {
    pub pos_sales: PathBuf,
    pub journal: PathBuf,
    pub financing: PathBuf,
    pub transactions: Vec<DemoTransaction>,
    /// Source rows written, over all files.
    pub rows: usize,
}

/// Sums of the demo's figures, a coffee chain's: far inside an amount's range, so
/// one out of it is a bug in the generator.
trait DemoSums {
    fn plus(self, other: Amount) -> Amount;
    fn minus(self, other: Amount) -> Amount;
    fn negated(self) -> Amount;
}

const IN_RANGE: &str = "the demo's figures are far inside an amount's range";

impl DemoSums for Amount {
    fn plus(self, other: Amount) -> Amount {
        self.checked_add(other).expect(IN_RANGE)
    }
    fn minus(self, other: Amount) -> Amount {
        self.checked_sub(other).expect(IN_RANGE)
    }
    fn negated(self) -> Amount {
        self.checked_neg().expect(IN_RANGE)
    }
}

fn add_to(total: &mut Amount, amount: Amount) {
    *total = total.plus(amount);
}

fn amount(units_of_rupiah: i64) -> Amount {
    Amount::from_units(units_of_rupiah * 10_000)
}

/// `value * rate`, rounded half-even to the ledger's four places.
fn scale(value: Amount, percent: i64) -> Amount {
    let exact = value.to_decimal() * Decimal::new(percent, 2);
    Amount::from_decimal(exact.round_dp(4)).expect("in range")
}

fn last_day(month: Month) -> NaiveDate {
    NaiveDate::from_ymd_opt(month.next().year, month.next().month, 1).expect("valid")
        - Duration::days(1)
}

fn day(month: Month, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(month.year, month.month, day).expect("valid day")
}

/// Writes the three source files into `dir` and returns them with the ground truth.
pub fn generate(spec: &DemoSpec, dir: &Path) -> std::io::Result<DemoFiles> {
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let jakarta = chrono_tz::Asia::Jakarta;
    let outlets = &OUTLETS[..spec.outlets.min(OUTLETS.len())];
    let months: Vec<Month> = spec.start.through(last_month(spec)).collect();
    let mut transactions = Vec::new();
    let mut rows = 0usize;

    let pos_path = dir.join("pos_sales.csv");
    let mut pos = std::io::BufWriter::new(std::fs::File::create(&pos_path)?);
    writeln!(
        pos,
        "sale_id,sold_at,outlet,category,payment_method,net_amount,tax"
    )?;
    // Per (month, outlet): takings by payment account, sales by category, tax.
    let mut takings: BTreeMap<(Month, &str, &'static str), Amount> = BTreeMap::new();
    let mut food_sales: BTreeMap<(Month, &str), Amount> = BTreeMap::new();
    let mut beverage_sales: BTreeMap<(Month, &str), Amount> = BTreeMap::new();
    let mut tax_due: BTreeMap<Month, BTreeMap<&str, Amount>> = BTreeMap::new();
    let mut sale_number = 0u64;
    let first = day(spec.start, 1);
    let end = last_day(last_month(spec));
    let mut date = first;
    while date <= end {
        for outlet in outlets {
            for _ in 0..spec.sales_per_day {
                sale_number += 1;
                let (category, base) = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
                let payment = PAYMENTS[rng.random_range(0..PAYMENTS.len())];
                // Daily covers vary; fractional rupiah as POS APIs report them.
                let covers = rng.random_range(20..90);
                let fraction = [0, 5_000, 9_000, 125][rng.random_range(0..4)];
                let net = Amount::from_units(base * covers * 10_000 + fraction);
                let tax = scale(net, 10);
                // Opening hours 07:00 to 00:45; one sale in ten near midnight.
                let minute = if rng.random_range(0..10) == 0 {
                    rng.random_range(23 * 60 + 30..24 * 60 + 45)
                } else {
                    rng.random_range(7 * 60..23 * 60)
                };
                let local =
                    date.and_hms_opt(0, 0, 0).expect("midnight") + Duration::minutes(minute);
                let local_date = local.date();
                let utc = jakarta
                    .from_local_datetime(&local)
                    .single()
                    .expect("Jakarta has no DST")
                    .naive_utc();
                let id = format!("S{sale_number:08}");
                writeln!(
                    pos,
                    "{id},{},{outlet},{category},{payment},{net},{tax}",
                    utc.format("%Y-%m-%d %H:%M:%S")
                )?;
                rows += 1;
                let payment_account = payment_account(payment);
                let sales_account = if matches!(category, "coffee" | "tea") {
                    "4010"
                } else {
                    "4000"
                };
                let month = Month::of(local_date);
                add_to(
                    takings.entry((month, outlet, payment_account)).or_default(),
                    net.plus(tax),
                );
                let sales = if sales_account == "4010" {
                    &mut beverage_sales
                } else {
                    &mut food_sales
                };
                add_to(sales.entry((month, outlet)).or_default(), net);
                add_to(
                    tax_due.entry(month).or_default().entry(outlet).or_default(),
                    tax,
                );
                transactions.push(DemoTransaction {
                    id,
                    date: local_date,
                    branch: outlet.to_string(),
                    memo: String::new(),
                    postings: vec![
                        (payment_account, net.plus(tax)),
                        (sales_account, net.negated()),
                        ("2100", tax.negated()),
                    ],
                });
            }
        }
        date += Duration::days(1);
    }
    pos.flush()?;

    let mut journal: Vec<DemoTransaction> = Vec::new();
    let mut add = |id: String,
                   date: NaiveDate,
                   branch: &str,
                   memo: &str,
                   postings: Vec<(&'static str, Amount)>| {
        if date <= end {
            journal.push(DemoTransaction {
                id,
                date,
                branch: branch.to_string(),
                memo: memo.to_string(),
                postings,
            });
        }
    };
    for (index, &month) in months.iter().enumerate() {
        let next = month.next();
        for outlet in outlets {
            let food = food_sales
                .get(&(month, outlet))
                .copied()
                .unwrap_or_default();
            let beverage = beverage_sales
                .get(&(month, outlet))
                .copied()
                .unwrap_or_default();
            let (cogs_food, cogs_beverage) = (scale(food, 32), scale(beverage, 24));
            let packaging = scale(food.plus(beverage), 3);
            let purchases = cogs_food.plus(cogs_beverage).plus(packaging);
            let tag = format!("{month}-{outlet}");
            add(
                format!("PUR-{tag}"),
                last_day(month),
                outlet,
                "Supplier purchases",
                vec![
                    ("5000", cogs_food),
                    ("5010", cogs_beverage),
                    ("5020", packaging),
                    ("2000", purchases.negated()),
                ],
            );
            add(
                format!("PAY-{tag}"),
                day(next, 10),
                outlet,
                "Pay suppliers",
                vec![("2000", purchases), ("1010", purchases.negated())],
            );
            let wages = amount(rng.random_range(38..52) * 1_000_000);
            let payroll_tax = scale(wages, 4);
            add(
                format!("WAGE-{tag}"),
                day(month, 25),
                outlet,
                "Payroll",
                vec![
                    ("6000", wages),
                    ("6010", payroll_tax),
                    ("1010", wages.plus(payroll_tax).negated()),
                ],
            );
            let rent = amount(35_000_000 + 1_000_000 * (index as i64 / 12));
            add(
                format!("RENT-{tag}"),
                day(month, 1),
                outlet,
                "Rent",
                vec![("6100", rent), ("1010", rent.negated())],
            );
            let utilities = amount(rng.random_range(4_000_000..7_500_000));
            add(
                format!("UTIL-{tag}"),
                day(month, 20),
                outlet,
                "Electricity and water",
                vec![("6200", utilities), ("1010", utilities.negated())],
            );
            // Clearing settles to the bank next month, net of provider fees.
            for (clearing, fee_account, fee_percent) in [
                ("1020", "6500", 1),
                ("1030", "6500", 2),
                ("1040", "6400", 20),
            ] {
                let gross = takings
                    .get(&(month, outlet, clearing))
                    .copied()
                    .unwrap_or_default();
                if gross.is_zero() {
                    continue;
                }
                let fee = scale(gross, fee_percent);
                add(
                    format!("SET-{clearing}-{tag}"),
                    day(next, 3),
                    outlet,
                    "Provider settlement",
                    vec![
                        ("1010", gross.minus(fee)),
                        (fee_account, fee),
                        (clearing, gross.negated()),
                    ],
                );
            }
            let cash = takings
                .get(&(month, outlet, "1000"))
                .copied()
                .unwrap_or_default();
            let deposit = scale(cash, 90);
            add(
                format!("DEP-{tag}"),
                day(month, 28),
                outlet,
                "Cash deposit",
                vec![("1010", deposit), ("1000", deposit.negated())],
            );
            let tax = tax_due
                .get(&month)
                .and_then(|t| t.get(outlet))
                .copied()
                .unwrap_or_default();
            add(
                format!("TAX-{tag}"),
                day(next, 15),
                outlet,
                "PBJT remittance",
                vec![("2100", tax), ("1010", tax.negated())],
            );
        }
        let marketing = amount(rng.random_range(10_000_000..30_000_000));
        add(
            format!("MKT-{month}"),
            day(month, 12),
            "",
            "Marketing campaign",
            vec![("6300", marketing), ("1010", marketing.negated())],
        );
        add(
            format!("DEPR-{month}"),
            last_day(month),
            "",
            "Depreciation",
            vec![
                ("6600", amount(5_208_333)),
                ("1510", amount(5_208_333).negated()),
            ],
        );
        if index >= 1 {
            let interest = amount(3_125_000);
            add(
                format!("INT-{month}"),
                day(month, 28),
                "",
                "Loan interest",
                vec![("8000", interest), ("1010", interest.negated())],
            );
        }
        let deposit_interest =
            Amount::from_units(rng.random_range(1_000_000..5_000_000) * 10_000 + 2_500);
        add(
            format!("BINT-{month}"),
            last_day(month),
            "",
            "Bank interest",
            vec![
                ("1010", deposit_interest),
                ("7000", deposit_interest.negated()),
            ],
        );
    }
    add(
        "EQP-2024-03".into(),
        day(months[months.len().min(3) - 1], 15),
        "",
        "Espresso machines",
        vec![
            ("1500", amount(250_000_000)),
            ("1010", amount(250_000_000).negated()),
        ],
    );

    let journal_path = dir.join("journal.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&journal_path)?);
    writeln!(out, "date,txn_id,account,amount,branch,memo")?;
    for txn in &journal {
        for (account, value) in &txn.postings {
            writeln!(
                out,
                "{},{},{account},{value},{},{}",
                txn.date, txn.id, txn.branch, txn.memo
            )?;
            rows += 1;
        }
    }
    out.flush()?;
    transactions.extend(journal);

    let financing_path = dir.join("financing.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&financing_path)?);
    writeln!(out, "id,date,kind,amount,fee,memo")?;
    let mut financing = vec![
        (
            "CAP-1",
            day(spec.start, 2),
            "capital",
            amount(1_500_000_000),
            None,
        ),
        (
            "LOAN-1",
            day(months[1.min(months.len() - 1)], 1),
            "loan",
            amount(500_000_000),
            Some(amount(2_500_000)),
        ),
    ];
    for &month in months.iter().skip(2) {
        financing.push(("", day(month, 5), "repayment", amount(15_000_000), None));
    }
    for (n, (id, date, kind, value, fee)) in financing.into_iter().enumerate() {
        let id = if id.is_empty() {
            format!("REPAY-{n}")
        } else {
            id.to_string()
        };
        let fee_text = fee.map(|f| f.to_string()).unwrap_or_default();
        writeln!(out, "{id},{date},{kind},{value},{fee_text},{kind}")?;
        rows += 1;
        let postings = match kind {
            "capital" => vec![("1010", value), ("3000", value.negated())],
            "loan" => {
                let fee = fee.unwrap_or_default();
                vec![
                    ("1010", value.minus(fee)),
                    ("8000", fee),
                    ("2500", value.negated()),
                ]
            }
            _ => vec![("2500", value), ("1010", value.negated())],
        };
        transactions.push(DemoTransaction {
            id,
            date,
            branch: String::new(),
            memo: kind.to_string(),
            postings: postings.into_iter().filter(|(_, v)| !v.is_zero()).collect(),
        });
    }
    out.flush()?;
    Ok(DemoFiles {
        pos_sales: pos_path,
        journal: journal_path,
        financing: financing_path,
        transactions,
        rows,
    })
}

fn last_month(spec: &DemoSpec) -> Month {
    spec.start
        .through(Month::new(spec.start.year + 100, 12).expect("valid"))
        .nth(spec.months as usize - 1)
        .expect("months > 0")
}

fn payment_account(method: &str) -> &'static str {
    match method {
        "cash" => "1000",
        "card" => "1030",
        "grabfood" | "gofood" | "shopeefood" => "1040",
        _ => "1020",
    }
}

/// hledger's account type letter for a class.
fn hledger_type(class: AccountClass) -> &'static str {
    match class {
        AccountClass::Revenue | AccountClass::OtherIncome => "R",
        AccountClass::Cogs | AccountClass::Expense | AccountClass::OtherExpense => "X",
        AccountClass::Cash => "C",
        AccountClass::Receivable
        | AccountClass::Inventory
        | AccountClass::OtherAsset
        | AccountClass::FixedAsset => "A",
        AccountClass::Payable | AccountClass::OtherLiability => "L",
        AccountClass::Equity => "E",
    }
}

/// hledger account name for an account: `<class>:<code>`, so reports can be summed
/// by class from hledger's own per-account rows.
pub fn hledger_account(account: &Account) -> String {
    format!("{}:{}", account.class.as_str(), account.code)
}

/// The ground truth as an hledger journal, every account's type declared.
pub fn write_hledger_journal(
    transactions: &[DemoTransaction],
    chart: &[Account],
    path: &Path,
) -> std::io::Result<()> {
    let names: BTreeMap<&str, String> = chart
        .iter()
        .map(|a| (a.code.as_str(), hledger_account(a)))
        .collect();
    let mut text = String::new();
    for account in chart {
        let _ = writeln!(
            text,
            "account {}  ; type: {}",
            names[account.code.as_str()],
            hledger_type(account.class)
        );
    }
    let mut sorted: Vec<&DemoTransaction> = transactions.iter().collect();
    sorted.sort_by(|a, b| (a.date, &a.id).cmp(&(b.date, &b.id)));
    for txn in sorted {
        let _ = writeln!(text, "\n{} {} {}", txn.date, txn.id, txn.memo);
        for (code, value) in &txn.postings {
            // Four fixed places: never ambiguous with a thousands separator.
            let _ = writeln!(text, "    {}  {:.4}", names[code], value.to_decimal());
        }
    }
    std::fs::write(path, text)
}

/// Days covered, for messages.
pub fn span(spec: &DemoSpec) -> (NaiveDate, NaiveDate) {
    (day(spec.start, 1), last_day(last_month(spec)))
}
