//! One account's transactions for one month in a tenant of 10M postings: the query
//! behind `GET /v1/ledger/transactions`, timed on the store. Builds the tenant through
//! the real load path (batches of 50,000 postings, two years sorted by date, 50
//! outlets), then asks for one month of one COGS account, a page of 1,000
//! transactions, and prints the best and median of 20 runs.
//!
//! Usage: ledger_transactions [postings=10000000] [store URL, default a fresh SQLite
//! directory]

use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use ledgersync_schemas::{Amount, Posting, PostingFrame};
use ledgersync_store::{LoadRecord, TransactionQuery};

/// Postings per staged batch, as `import.batch_rows` by default.
const BATCH: usize = 50_000;
const BRANCHES: usize = 50;
const DAYS: u64 = 731;
/// What each tenth of transactions is: food and beverage sales, purchases.
const KINDS: [(&str, &str); 10] = [
    ("1000", "4000"),
    ("1000", "4000"),
    ("1000", "4000"),
    ("1000", "4000"),
    ("1000", "4000"),
    ("1000", "4000"),
    ("1000", "4010"),
    ("1000", "4010"),
    ("5000", "2000"),
    ("5010", "2000"),
];

fn transaction(number: usize, transactions: usize) -> [Posting; 2] {
    let start = NaiveDate::from_ymd_opt(2024, 1, 1).expect("a date");
    let day = (number as u64 * DAYS) / transactions as u64;
    let date = start + Days::new(day);
    let (debit, credit) = KINDS[number % KINDS.len()];
    let units = 10_000 * (number % 977 + 1) as i64 + (number % 10_000) as i64;
    let posting = |account: &str, units: i64| Posting {
        source_key: format!("T{number:09}"),
        origin_line: 2 * number as u64 + 2,
        date,
        branch: format!("Outlet {:02}", number % BRANCHES),
        memo: String::new(),
        occurred_at: None,
        account: account.into(),
        amount: Amount::from_units(units),
        currency: "IDR".into(),
        original_amount: Amount::from_units(units),
    };
    [posting(debit, units), posting(credit, -units)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let postings: usize = args.next().map_or(Ok(10_000_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let url = args
        .next()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("data").display()));
    let store = ledgersync_store::connect(&url).await?;
    let tenant = ledgersync::tenants::provision(
        store.as_ref(),
        "Bench",
        "bench@transactions.example",
        "pro",
        1,
    )
    .await?
    .tenant;

    let transactions = postings / 2;
    let started = Instant::now();
    let mut session = store.begin_load(&tenant).await?;
    let mut batch = Vec::with_capacity(BATCH);
    for number in 0..transactions {
        batch.extend(transaction(number, transactions));
        if batch.len() >= BATCH {
            session
                .stage_frame(PostingFrame::from_postings(&batch))
                .await?;
            batch.clear();
        }
    }
    session
        .stage_frame(PostingFrame::from_postings(&batch))
        .await?;
    let record = LoadRecord {
        source: "bench:pos".into(),
        fingerprint: format!("bench-{postings}"),
        stream: "bench".into(),
        origin: "ledger_transactions".into(),
        rows_read: postings as i64,
        cursor: None,
    };
    session.commit(record, 10).await?;
    eprintln!(
        "loaded {} postings in {} segments in {:.1?}",
        store.posting_count(&tenant).await?,
        store.segment_count(&tenant).await?,
        started.elapsed()
    );

    let month = "2025-03".parse()?;
    let query = TransactionQuery {
        from: month,
        to: month,
        branch: None,
        account: Some("5010".into()),
        category: None,
        limit: 1000,
        after: None,
    };
    let mut times: Vec<Duration> = Vec::new();
    let mut listed = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let page = store.ledger_transactions(&tenant, &query).await?;
        times.push(started.elapsed());
        listed = page.transactions.len();
        anyhow::ensure!(page
            .transactions
            .iter()
            .all(|t| t.postings.iter().any(|p| p.account == "5010")));
    }
    times.sort();
    println!(
        "one account's transactions for one month ({listed} on the page) of {postings} postings: best {:.1} ms, median {:.1} ms",
        times[0].as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3
    );
    Ok(())
}
