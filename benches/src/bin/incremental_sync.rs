//! What a small sync costs as the ledger grows: 1,000 changed sales committed into a
//! tenant holding 2M postings and into one holding 20M, on the store (begin the
//! load, stage, commit: what `connector sync` does once its rows are mapped).
//!
//! Each tenant is filled as a first sync fills it: commits of 50,000 sales of three
//! postings (cash, revenue, restaurant tax), keyed by random UUIDs (so no key range
//! narrows a search), over two years and 50 outlets. Then 1,000 sales picked at
//! random across the whole history change their amounts and are committed, 10
//! times; the best, median and worst are printed.
//!
//! Usage: incremental_sync [postings,...=2000000,20000000] [store URL, default a fresh
//! SQLite directory per tenant]

use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use ledgersync_schemas::{Amount, Posting, PostingFrame};
use ledgersync_store::{LoadRecord, Store, Tenant};

/// Sales per commit of the first sync, as `import.batch_rows` by default.
const BATCH_SALES: usize = 50_000;
const CHANGED: usize = 1_000;
const ROUNDS: usize = 10;
const BRANCHES: usize = 50;
const DAYS: u64 = 731;

/// A random-looking UUID for sale `number` (a bijection, so keys never collide).
fn key(number: usize) -> String {
    let mut x = number as u64 ^ 0x5DEE_CE66_D1CE_4E5B;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let y = (number as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        x >> 32,
        (x >> 16) & 0xffff,
        x & 0xfff,
        y >> 52,
        y & 0xffff_ffff_ffff
    )
}

/// Sale `number` of `sales`, its net amount raised by `change` rupiah.
fn sale(number: usize, sales: usize, change: i64) -> [Posting; 3] {
    let start = NaiveDate::from_ymd_opt(2024, 1, 1).expect("a date");
    let date = start + Days::new((number as u64 * DAYS) / sales as u64);
    let net = 10_000 * ((number % 977) as i64 + 15 + change);
    let tax = net / 10;
    let posting = |account: &str, units: i64| Posting {
        source_key: key(number),
        origin_line: number as u64 + 2,
        date,
        branch: format!("Outlet {:02}", number % BRANCHES),
        memo: String::new(),
        occurred_at: None,
        account: account.into(),
        amount: Amount::from_units(units),
        currency: "IDR".into(),
        original_amount: Amount::from_units(units),
    };
    [
        posting("1000", net + tax),
        posting("4000", -net),
        posting("2100", -tax),
    ]
}

fn record(fingerprint: String, rows: usize) -> LoadRecord {
    LoadRecord {
        source: "db:pos:pos_sales".into(),
        fingerprint,
        stream: "pos_sales".into(),
        origin: "incremental_sync".into(),
        rows_read: rows as i64,
        cursor: Some(format!("cursor-{rows}")),
    }
}

/// Commits `numbers` of `sales` as one load, amounts raised by `change`.
async fn commit(
    store: &dyn Store,
    tenant: &Tenant,
    numbers: impl Iterator<Item = usize>,
    sales: usize,
    change: i64,
    fingerprint: String,
) -> anyhow::Result<ledgersync_store::LoadSummary> {
    let mut session = store.begin_load(tenant).await?;
    let postings: Vec<Posting> = numbers.flat_map(|n| sale(n, sales, change)).collect();
    let rows = postings.len() / 3;
    session
        .stage_frame(PostingFrame::from_postings(&postings))
        .await?;
    Ok(session.commit(record(fingerprint, rows), 10).await?)
}

/// Fills a tenant with `postings` as a first sync would, then times the small syncs.
async fn measure(store: &dyn Store, postings: usize) -> anyhow::Result<Vec<Duration>> {
    let tenant = ledgersync::tenants::provision(
        store,
        "Bench",
        &format!("bench{postings}@incremental.example"),
        "pro",
        1,
    )
    .await?
    .tenant;
    let sales = postings / 3;
    let started = Instant::now();
    for first in (0..sales).step_by(BATCH_SALES) {
        let last = (first + BATCH_SALES).min(sales);
        commit(
            store,
            &tenant,
            first..last,
            sales,
            0,
            format!("first-{first}"),
        )
        .await?;
    }
    eprintln!(
        "first sync of {} postings in {} segments: {:.1?}",
        store.posting_count(&tenant).await?,
        store.segment_count(&tenant).await?,
        started.elapsed()
    );
    let mut times = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        // 1,000 sales spread over the whole history, different each round.
        let stride = sales / CHANGED;
        let numbers = (0..CHANGED).map(|i| (i * stride + round * 7919) % sales);
        let started = Instant::now();
        let summary = commit(
            store,
            &tenant,
            numbers,
            sales,
            round as i64 + 1,
            format!("changes-{round}"),
        )
        .await?;
        times.push(started.elapsed());
        anyhow::ensure!(
            summary.counts.replaced == CHANGED as i64 && summary.counts.added == 0,
            "round {round} replaced {} and added {}",
            summary.counts.replaced,
            summary.counts.added
        );
    }
    anyhow::ensure!(store.posting_count(&tenant).await? == (sales * 3) as i64);
    Ok(times)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let sizes: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "2000000,20000000".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let url = args.next();
    let mut medians = Vec::new();
    for postings in sizes {
        let dir = tempfile::tempdir()?;
        let url = url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("data").display()));
        let store = ledgersync_store::connect(&url).await?;
        let mut times = measure(store.as_ref(), postings).await?;
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let median = times[times.len() / 2];
        println!(
            "{CHANGED} changed sales into {postings} postings: best {:.1} ms, median {:.1} ms, worst {:.1} ms",
            ms(times[0]),
            ms(median),
            ms(times[times.len() - 1])
        );
        medians.push((postings, median));
    }
    if let [(small, first), .., (large, last)] = medians.as_slice() {
        println!(
            "median at {large} over median at {small}: {:.2}",
            last.as_secs_f64() / first.as_secs_f64()
        );
    }
    Ok(())
}
