//! Database connectors against real servers: a POS sales table in a throwaway
//! PostgreSQL or MariaDB database is synced through `examples/streams/pos_sales.toml`
//! into a store on each backend, then changed (updates, inserts) and synced again.
//! Every monthly revenue and cash figure is compared with what the source database
//! itself computes from its rows, and the raw store is searched for the password.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ledgersync::secrets::Secrets;
use ledgersync::sync::{sync_connector, SyncOptions};
use ledgersync_schemas::{Amount, Month, BRANCH_TOTAL};
use ledgersync_store::{Store, Tenant};
use sqlx::Connection;

use crate::helpers::{postgres_base, provision, write};

/// Distinctive, so that finding it anywhere in the store's bytes means it leaked.
pub(crate) const PASSWORD: &str = "Kopi-Susu-Gula-Aren-7319";

/// The POS mapping every connector of these tests uses.
pub(crate) fn pos_mapping() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/streams/pos_sales.toml")
        .canonicalize()
        .unwrap()
}

/// The master key of a test daemon, in the test's directory.
pub(crate) async fn test_secrets(store: &dyn Store, test: &crate::helpers::TestStore) -> Secrets {
    Secrets::load(store, &test.dir.path().join("master.key"))
        .await
        .unwrap()
}

/// Adds a connector from a definition file, with the test's password.
pub(crate) async fn add_connector(
    store: &dyn Store,
    secrets: &Secrets,
    tenant: &Tenant,
    name: &str,
    spec: &Path,
) -> ledgersync_store::StoredConnector {
    ledgersync::connectors::add(
        store,
        secrets,
        tenant,
        name,
        spec,
        &PASSWORD.to_string().into(),
        "test",
    )
    .await
    .unwrap()
}

macro_rules! on_both_stores {
    ($($story:ident($source:ident)),* $(,)?) => {$(
        mod $story {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite_store() {
                let test = crate::helpers::sqlite_store().await;
                super::$story(super::SourceKind::$source, &test).await;
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres_store() {
                let test = crate::helpers::postgres_store().await;
                super::$story(super::SourceKind::$source, &test).await;
            }
        }
    )*};
}
pub(crate) use on_both_stores;

on_both_stores!(
    postgres_source_syncs_incrementally_and_equals_the_source(Postgres),
    mariadb_source_syncs_incrementally_and_equals_the_source(Mariadb),
);

async fn postgres_source_syncs_incrementally_and_equals_the_source(
    kind: SourceKind,
    test: &crate::helpers::TestStore,
) {
    sync_story(kind, test).await
}

async fn mariadb_source_syncs_incrementally_and_equals_the_source(
    kind: SourceKind,
    test: &crate::helpers::TestStore,
) {
    sync_story(kind, test).await
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum SourceKind {
    Postgres,
    Mariadb,
}

/// A throwaway source database, dropped with the value.
pub(crate) struct SourceDb {
    pub(crate) kind: SourceKind,
    pub(crate) name: String,
    pub(crate) user: String,
}

pub(crate) fn mariadb(sql: &str) -> String {
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", "-N", "-B", "-e", sql])
        .output()
        .expect("the mariadb client must be installed (.ci/run installs MariaDB)");
    assert!(
        out.status.success(),
        "mariadb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl SourceDb {
    pub(crate) async fn create(kind: SourceKind) -> SourceDb {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("ls_src_{}", &suffix[..12]);
        match kind {
            SourceKind::Postgres => {
                let mut admin =
                    sqlx::PgConnection::connect(&format!("{}/postgres", postgres_base()))
                        .await
                        .unwrap();
                sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                let db = SourceDb {
                    kind,
                    name,
                    user: "postgres".into(),
                };
                db.execute(
                    "CREATE TABLE sales (sale_id text PRIMARY KEY, sold_at timestamptz NOT NULL, \
                     outlet text NOT NULL, category text NOT NULL, payment_method text NOT NULL, \
                     net_amount numeric(18,4) NOT NULL, tax numeric(18,4) NOT NULL, \
                     updated_at timestamptz NOT NULL)",
                )
                .await;
                db
            }
            SourceKind::Mariadb => {
                let user = format!("lsr_{}", &suffix[..10]);
                mariadb(&format!(
                    "CREATE DATABASE {name} CHARACTER SET utf8mb4; \
                     CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'; \
                     CREATE USER '{user}'@'localhost' IDENTIFIED BY '{PASSWORD}'; \
                     GRANT SELECT ON {name}.* TO '{user}'@'%'; \
                     GRANT SELECT ON {name}.* TO '{user}'@'localhost';"
                ));
                let db = SourceDb { kind, name, user };
                db.execute(
                    "CREATE TABLE sales (sale_id VARCHAR(16) PRIMARY KEY, sold_at DATETIME NOT NULL, \
                     outlet VARCHAR(40) NOT NULL, category VARCHAR(40) NOT NULL, \
                     payment_method VARCHAR(20) NOT NULL, net_amount DECIMAL(18,4) NOT NULL, \
                     tax DECIMAL(18,4) NOT NULL, updated_at DATETIME(6) NOT NULL)",
                )
                .await;
                db
            }
        }
    }

    pub(crate) async fn execute(&self, sql: &str) {
        match self.kind {
            SourceKind::Postgres => {
                let mut conn =
                    sqlx::PgConnection::connect(&format!("{}/{}", postgres_base(), self.name))
                        .await
                        .unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
            SourceKind::Mariadb => {
                mariadb(&format!("USE {}; {sql}", self.name));
            }
        }
    }

    /// `(month, sum of net_amount, sum of cash takings)` by Jakarta month, computed
    /// by the source database, as `YYYY-MM` and plain decimals.
    pub(crate) async fn monthly_figures(&self) -> Vec<(String, String, String)> {
        match self.kind {
            SourceKind::Postgres => {
                let mut conn =
                    sqlx::PgConnection::connect(&format!("{}/{}", postgres_base(), self.name))
                        .await
                        .unwrap();
                sqlx::query_as(
                    "SELECT to_char(sold_at AT TIME ZONE 'Asia/Jakarta', 'YYYY-MM') AS m, \
                     SUM(net_amount)::text, \
                     COALESCE(SUM(net_amount + tax) FILTER (WHERE payment_method = 'cash'), 0.0000)::text \
                     FROM sales GROUP BY m ORDER BY m",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap()
            }
            SourceKind::Mariadb => mariadb(&format!(
                "USE {}; SELECT DATE_FORMAT(DATE_ADD(sold_at, INTERVAL 7 HOUR), '%Y-%m') AS m, \
                 SUM(net_amount), SUM(IF(payment_method = 'cash', net_amount + tax, 0)) \
                 FROM sales GROUP BY m ORDER BY m",
                self.name
            ))
            .lines()
            .map(|line| {
                let cells: Vec<&str> = line.split('\t').collect();
                (cells[0].into(), cells[1].into(), cells[2].into())
            })
            .collect(),
        }
    }

    pub(crate) fn spec(&self, dir: &Path) -> std::path::PathBuf {
        let mapping = pos_mapping();
        let (kind, port) = match self.kind {
            SourceKind::Postgres => ("postgres", 5432),
            SourceKind::Mariadb => ("mysql", 3306),
        };
        write(
            dir,
            "connector.toml",
            &format!(
                "kind = \"{kind}\"\nhost = \"127.0.0.1\"\nport = {port}\ndatabase = \"{}\"\n\
                 user = \"{}\"\ntls = \"disable\"\n\n[[streams]]\nname = \"pos_sales\"\n\
                 table = \"sales\"\nmapping = \"{}\"\n\
                 cursor = {{ column = \"updated_at\", lookback = \"0s\" }}\n",
                self.name,
                self.user,
                mapping.display()
            ),
        )
    }
}

impl Drop for SourceDb {
    fn drop(&mut self) {
        let (kind, name, user) = (self.kind, self.name.clone(), self.user.clone());
        let dropped = std::thread::spawn(move || match kind {
            SourceKind::Postgres => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let mut admin =
                        sqlx::PgConnection::connect(&format!("{}/postgres", postgres_base()))
                            .await
                            .unwrap();
                    sqlx::Executor::execute(
                        &mut admin,
                        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                    )
                    .await
                    .unwrap();
                })
            }
            SourceKind::Mariadb => {
                mariadb(&format!(
                    "DROP DATABASE IF EXISTS {name}; DROP USER IF EXISTS '{user}'@'%'; \
                     DROP USER IF EXISTS '{user}'@'localhost';"
                ));
            }
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("could not drop the source database {}", self.name);
        }
    }
}

/// Ten-thousandths as a plain decimal with four places.
fn decimal(units: i64) -> String {
    format!("{}.{:04}", units / 10_000, units % 10_000)
}

/// `INSERT` rows `from..to` of a deterministic POS history (a sale every ~37 hours
/// from January 2025, four payment methods, fractional rupiah), updated at
/// `updated_at`, or when they were sold.
pub(crate) fn sales_insert(
    kind: SourceKind,
    from: usize,
    to: usize,
    updated_at: Option<&str>,
) -> String {
    const OUTLETS: [&str; 3] = ["Kemang", "Senopati", "Bintaro"];
    const CATEGORIES: [&str; 4] = ["coffee", "tea", "pastry", "rice_bowl"];
    const PAYMENTS: [&str; 4] = ["cash", "qris", "card", "gofood"];
    let start = chrono::NaiveDate::from_ymd_opt(2025, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let rows: Vec<String> = (from..to)
        .map(|i| {
            let sold_at = start + chrono::Duration::minutes(i as i64 * (37 * 60 + 11));
            let net = 150_000_000 + (i as i64 * 7_919_123) % 900_000_000 + (i as i64 % 7) * 2_500;
            let tax = net / 10;
            let sold_at = match kind {
                SourceKind::Postgres => format!("{}+00", sold_at.format("%Y-%m-%d %H:%M:%S")),
                SourceKind::Mariadb => sold_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            };
            let updated_at = updated_at.unwrap_or(&sold_at);
            format!(
                "('S{i:05}', '{sold_at}', '{}', '{}', '{}', {}, {}, '{updated_at}')",
                OUTLETS[i % 3],
                CATEGORIES[i % 4],
                PAYMENTS[(i / 3) % 4],
                decimal(net),
                decimal(tax)
            )
        })
        .collect();
    format!("INSERT INTO sales VALUES {}", rows.join(", "))
}

fn month(text: &str) -> Month {
    text.parse().unwrap()
}

/// The ledger's `(month, revenue, cash change)` over the months the source has.
pub(crate) async fn ledger_figures(
    store: &dyn Store,
    tenant: &Tenant,
    months: &[(String, String, String)],
) -> Vec<(String, String, String)> {
    let (first, last) = (&months[0].0, &months[months.len() - 1].0);
    let metrics = store
        .month_metrics(tenant, BRANCH_TOTAL, month(first), month(last))
        .await
        .unwrap();
    months
        .iter()
        .map(|(m, _, _)| {
            let figures = &metrics[&month(m)];
            // Only cash payments reach a cash account (1000); the rest clear.
            let cash = figures.cash_change();
            (
                m.clone(),
                trimmed(figures.revenue().unwrap()),
                trimmed(cash),
            )
        })
        .collect()
}

/// Figures as the source prints them: four places for the sums of DECIMAL(18,4).
fn trimmed(amount: Amount) -> String {
    decimal(amount.units())
}

async fn sync_story(kind: SourceKind, test: &crate::helpers::TestStore) {
    let store: Arc<dyn Store> = test.store.clone();
    let source = SourceDb::create(kind).await;
    source.execute(&sales_insert(kind, 0, 300, None)).await;
    let tenant = provision(store.as_ref(), "pro").await;
    let secrets = test_secrets(store.as_ref(), test).await;
    let connector = add_connector(
        store.as_ref(),
        &secrets,
        &tenant,
        "pos",
        &source.spec(test.dir.path()),
    )
    .await;
    let options = SyncOptions::once(64, 20);

    // The first sync: every row, in several short commits.
    let first = sync_connector(
        store.clone(),
        &secrets,
        &tenant,
        &connector,
        "manual",
        &options,
    )
    .await
    .unwrap();
    assert_eq!(first[0].rows_read, 300);
    assert_eq!(first[0].commits, 5, "300 rows in batches of 64");
    let expected = source.monthly_figures().await;
    assert!(expected.len() >= 12, "{expected:?}");
    assert_eq!(
        ledger_figures(store.as_ref(), &tenant, &expected).await,
        expected
    );
    let postings = store.posting_count(&tenant).await.unwrap();

    // Two sales corrected and two new ones, all updated after the first sync.
    source
        .execute(
            "UPDATE sales SET net_amount = net_amount + 1000.5, \
             updated_at = '2026-06-01 00:00:00' WHERE sale_id IN ('S00003', 'S00150')",
        )
        .await;
    source
        .execute(&sales_insert(kind, 300, 302, Some("2026-06-01 00:00:00")))
        .await;
    let second = sync_connector(
        store.clone(),
        &secrets,
        &tenant,
        &connector,
        "manual",
        &options,
    )
    .await
    .unwrap();
    // The cursor is the last row's sale time: that row again (rows sharing the
    // cursor value are read again), and the four changed since.
    assert_eq!(
        second[0].rows_read, 5,
        "only rows changed since the cursor: {first:?} {second:?}"
    );
    assert_eq!(second[0].cursor_before, first[0].cursor_after);
    let expected = source.monthly_figures().await;
    assert_eq!(
        ledger_figures(store.as_ref(), &tenant, &expected).await,
        expected
    );
    let more = store.posting_count(&tenant).await.unwrap();
    assert!(more > postings, "two new sales add postings");

    // Nothing changed: the rows at the cursor are read again and replace themselves.
    let third = sync_connector(
        store.clone(),
        &secrets,
        &tenant,
        &connector,
        "manual",
        &options,
    )
    .await
    .unwrap();
    assert_eq!(third[0].rows_read, 4, "the rows at the cursor: {third:?}");
    assert_eq!(store.posting_count(&tenant).await.unwrap(), more);
    assert_eq!(
        ledger_figures(store.as_ref(), &tenant, &expected).await,
        expected
    );
    assert_eq!(
        store.rebuild_aggregates(&tenant).await.map(|_| ()).ok(),
        Some(())
    );
    assert_eq!(
        ledger_figures(store.as_ref(), &tenant, &expected).await,
        expected
    );

    let runs = store.sync_runs(&tenant.id, Some("pos"), 10).await.unwrap();
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r.status == "succeeded"), "{runs:?}");
    assert_eq!(runs[2].rows_read, 300);

    assert_no_plaintext(test, PASSWORD).await;
}

/// Searches every byte the store keeps (SQLite files) or every row of every table
/// (PostgreSQL) for `secret`.
pub(crate) async fn assert_no_plaintext(test: &crate::helpers::TestStore, secret: &str) {
    if let Some(dir) = test.url.strip_prefix("sqlite://") {
        let mut files = vec![];
        let mut pending = vec![std::path::PathBuf::from(dir)];
        while let Some(path) = pending.pop() {
            for entry in std::fs::read_dir(&path).unwrap() {
                let entry = entry.unwrap().path();
                if entry.is_dir() {
                    pending.push(entry);
                } else {
                    files.push(entry);
                }
            }
        }
        assert!(files.len() >= 2, "{files:?}");
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the password is in {} in the clear",
                file.display()
            );
        }
    } else {
        let mut conn = sqlx::PgConnection::connect(&test.url).await.unwrap();
        let tables: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(tables.iter().any(|(_, t)| t == "connectors"), "{tables:?}");
        for (schema, table) in tables {
            let found: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM \"{schema}\".\"{table}\" t WHERE strpos(t::text, $1) > 0"
            ))
            .bind(secret)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            assert_eq!(found, 0, "the password is in {schema}.{table} in the clear");
        }
    }
}

/// The daemon configuration a test scheduler runs with: fast retries and refreshes.
fn scheduler_config(
    test: &crate::helpers::TestStore,
    max_failures: i64,
) -> ledgersync_config::DaemonConfig {
    let mut config = ledgersync_config::DaemonConfig::default();
    config.store.url = test.url.clone();
    config.credentials.key_file = test.dir.path().join("master.key");
    config.import.batch_rows = 64;
    config.sync.retries = 0;
    config.sync.retry_base_secs = 0;
    config.sync.max_failures = max_failures;
    config.sync.lease_secs = 30;
    config
}

/// Two daemons on one PostgreSQL store fire every tick of a connector's schedule;
/// each tick runs once, and the ledger equals the source.
#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_run_each_scheduled_sync_once() {
    let test = crate::helpers::postgres_store().await;
    let store: Arc<dyn Store> = test.store.clone();
    let source = SourceDb::create(SourceKind::Postgres).await;
    source
        .execute(&sales_insert(SourceKind::Postgres, 0, 120, None))
        .await;
    let tenant = provision(store.as_ref(), "pro").await;
    let secrets = test_secrets(store.as_ref(), &test).await;
    let spec = std::fs::read_to_string(source.spec(test.dir.path())).unwrap();
    let spec = write(
        test.dir.path(),
        "scheduled.toml",
        &spec.replace(
            "tls = \"disable\"",
            "tls = \"disable\"\nschedule = \"*/2 * * * * *\"",
        ),
    );
    add_connector(store.as_ref(), &secrets, &tenant, "pos", &spec).await;

    let config = scheduler_config(&test, 5);
    let metrics = ledgersync::metrics::SyncMetrics::default();
    let first = ledgersync::scheduler::Scheduler::start(store.clone(), &config, metrics.clone())
        .await
        .unwrap();
    let second = ledgersync::scheduler::Scheduler::start(store.clone(), &config, metrics.clone())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(7_500)).await;
    first.shutdown().await;
    second.shutdown().await;

    let runs = store.sync_runs(&tenant.id, Some("pos"), 100).await.unwrap();
    assert!(
        (3..=4).contains(&runs.len()),
        "one run per 2 s tick over 7.5 s: {runs:?}"
    );
    assert!(
        runs.iter()
            .all(|r| r.status == "succeeded" && r.trigger == "schedule"),
        "{runs:?}"
    );
    let mut seconds: Vec<i64> = runs
        .iter()
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(&r.started_at)
                .unwrap()
                .timestamp()
        })
        .collect();
    seconds.sort();
    assert!(
        seconds.windows(2).all(|w| w[1] - w[0] >= 1),
        "two runs of one tick: {seconds:?}"
    );
    assert_eq!(runs.iter().map(|r| r.rows_read).max(), Some(120));
    let expected = source.monthly_figures().await;
    assert_eq!(
        ledger_figures(store.as_ref(), &tenant, &expected).await,
        expected
    );
    let rendered = metrics.render();
    assert!(
        rendered.contains("ledgersync_sync_runs_total{tenant=\"kopi-kenangan"),
        "{rendered}"
    );
}

/// A connector whose database cannot be reached fails its scheduled runs, is paused
/// after `sync.max_failures` of them in a row, and `verify` says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_connector_failing_in_a_row_is_paused_and_verify_says_so() {
    let test = crate::helpers::sqlite_store().await;
    let store: Arc<dyn Store> = test.store.clone();
    let tenant = provision(store.as_ref(), "pro").await;
    let secrets = test_secrets(store.as_ref(), &test).await;
    let mapping = pos_mapping();
    // Port 1 on loopback: nothing listens there.
    let spec = write(
        test.dir.path(),
        "down.toml",
        &format!(
            "kind = \"postgres\"\nhost = \"127.0.0.1\"\nport = 1\ndatabase = \"pos\"\nuser = \"reader\"\n\
             tls = \"disable\"\nschedule = \"* * * * * *\"\n\n[[streams]]\nname = \"pos_sales\"\n\
             table = \"sales\"\nmapping = \"{}\"\n",
            mapping.display()
        ),
    );
    add_connector(store.as_ref(), &secrets, &tenant, "down", &spec).await;
    let config = scheduler_config(&test, 2);
    let scheduler = ledgersync::scheduler::Scheduler::start(
        store.clone(),
        &config,
        ledgersync::metrics::SyncMetrics::default(),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(4_500)).await;
    scheduler.shutdown().await;

    let connector = store.connector(&tenant.id, "down").await.unwrap().unwrap();
    let reason = connector.pause_reason.clone().expect("paused");
    assert!(
        reason.starts_with("paused after 2 failed runs in a row"),
        "{reason}"
    );
    let runs = store.sync_runs(&tenant.id, Some("down"), 10).await.unwrap();
    assert_eq!(runs.len(), 2, "no run after the pause: {runs:?}");
    assert!(runs.iter().all(|r| r.status == "failed"));
    let error = runs[0].error.clone().unwrap();
    assert!(!error.contains(PASSWORD), "{error}");
    let checks = ledgersync::verify::verify(store.as_ref(), &tenant)
        .await
        .unwrap();
    let check = checks
        .iter()
        .find(|c| c.check == "connector down syncs")
        .expect("verify checks the connector");
    assert!(
        !check.ok && check.detail.contains("paused after 2 failed runs"),
        "{check:?}"
    );
}

/// The `ledgersync` binary beside this test binary (`cargo test --workspace` builds
/// it).
fn ledgersync_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("ledgersync"))
        .unwrap();
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p ledgersync` (cargo test --workspace does)",
        binary.display()
    );
    binary
}

/// SIGKILL at random points of a sync, 30 times, with the source changing in
/// between; then a sync to the end. The ledger equals the source exactly (no row
/// lost, none doubled) and its aggregates equal a rebuild's. The stream looks back
/// over its whole history, so that every sync reads (and commits) long enough to be
/// killed in the middle.
async fn killed_syncs_resume_exactly_once(test: &crate::helpers::TestStore) {
    use rand::{Rng as _, SeedableRng as _};
    const ROWS: usize = 12_000;
    const KILLS: usize = 30;
    let store: Arc<dyn Store> = test.store.clone();
    let source = SourceDb::create(SourceKind::Postgres).await;
    for chunk in (0..ROWS).step_by(1_000) {
        source
            .execute(&sales_insert(
                SourceKind::Postgres,
                chunk,
                chunk + 1_000,
                None,
            ))
            .await;
    }
    let tenant = provision(store.as_ref(), "pro").await;
    let key_file = test.dir.path().join("master.key");
    let secrets = Secrets::load(store.as_ref(), &key_file).await.unwrap();
    let spec = std::fs::read_to_string(source.spec(test.dir.path())).unwrap();
    // Sales run from 2025 to 2076 (updated_at = sold_at) and corrections are
    // stamped 2027: the look-back reaches from the last sale back past 2025, so a
    // sync that finished before a correction still reads it next time.
    let spec = write(
        test.dir.path(),
        "everything.toml",
        &spec.replace("lookback = \"0s\"", "lookback = \"20000d\""),
    );
    add_connector(store.as_ref(), &secrets, &tenant, "pos", &spec).await;
    let sync = || {
        let mut command = tokio::process::Command::new(ledgersync_binary());
        command
            .args(["connector", "sync", "--tenant", &tenant.slug, "pos"])
            .env("LEDGERSYNC_STORE__URL", &test.url)
            .env("LEDGERSYNC_IMPORT__BATCH_ROWS", "100")
            .env("LEDGERSYNC_CREDENTIALS__KEY_FILE", &key_file)
            .env("LEDGERSYNC_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        command.spawn().unwrap()
    };
    let mut random = rand::rngs::StdRng::seed_from_u64(20_261_130);
    let mut killed = 0;
    let mut changed = ROWS;
    for round in 0..KILLS * 3 {
        if killed == KILLS {
            break;
        }
        let mut child = sync();
        tokio::time::sleep(std::time::Duration::from_millis(
            random.random_range(150..1_500),
        ))
        .await;
        if child.try_wait().unwrap().is_none() {
            child.kill().await.unwrap();
            killed += 1;
        } else {
            let output = child.wait_with_output().await.unwrap();
            assert!(
                output.status.success(),
                "an unkilled sync failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // The source moves on meanwhile: corrections of old sales and new sales.
        if round % 4 == 3 {
            let stamp = format!("2027-01-01 00:00:{:02}", round % 60);
            source
                .execute(&format!(
                    "UPDATE sales SET net_amount = net_amount + 10.25, updated_at = '{stamp}+00' \
                     WHERE sale_id IN ('S{:05}', 'S{:05}')",
                    random.random_range(0..ROWS),
                    random.random_range(0..ROWS)
                ))
                .await;
            source
                .execute(&sales_insert(
                    SourceKind::Postgres,
                    changed,
                    changed + 3,
                    Some(&format!("{stamp}+00")),
                ))
                .await;
            changed += 3;
        }
    }
    assert_eq!(killed, KILLS, "the syncs ended before they could be killed");
    let output = sync().wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let expected = source.monthly_figures().await;
    assert_eq!(
        ledger_figures(store.as_ref(), &tenant, &expected).await,
        expected
    );
    // Every sale is three postings (payment, sales, tax), none doubled.
    assert_eq!(
        store.posting_count(&tenant).await.unwrap(),
        3 * changed as i64
    );
    let (first, last) = (
        month(&expected[0].0),
        month(&expected[expected.len() - 1].0),
    );
    let before = store
        .month_metrics(&tenant, BRANCH_TOTAL, first, last)
        .await
        .unwrap();
    store.rebuild_aggregates(&tenant).await.unwrap();
    let rebuilt = store
        .month_metrics(&tenant, BRANCH_TOTAL, first, last)
        .await
        .unwrap();
    assert_eq!(before, rebuilt, "aggregates equal a rebuild's");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_syncs_resume_exactly_once_on_sqlite() {
    killed_syncs_resume_exactly_once(&crate::helpers::sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_syncs_resume_exactly_once_on_postgres() {
    killed_syncs_resume_exactly_once(&crate::helpers::postgres_store().await).await;
}

/// A stream without a cursor is read whole each time: rows deleted at the source
/// leave the ledger, changed ones replace themselves, and a sync of an unchanged
/// source changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_refresh_removes_what_the_source_deleted() {
    let test = crate::helpers::sqlite_store().await;
    let store: Arc<dyn Store> = test.store.clone();
    let source = SourceDb::create(SourceKind::Mariadb).await;
    source
        .execute(&sales_insert(SourceKind::Mariadb, 0, 200, None))
        .await;
    let tenant = provision(store.as_ref(), "pro").await;
    let secrets = test_secrets(store.as_ref(), &test).await;
    let spec = std::fs::read_to_string(source.spec(test.dir.path())).unwrap();
    let spec = write(
        test.dir.path(),
        "full.toml",
        &spec.replace(
            "cursor = { column = \"updated_at\", lookback = \"0s\" }\n",
            "",
        ),
    );
    let connector = add_connector(store.as_ref(), &secrets, &tenant, "pos", &spec).await;
    let options = SyncOptions::once(64, 20);
    let first = sync_connector(
        store.clone(),
        &secrets,
        &tenant,
        &connector,
        "manual",
        &options,
    )
    .await
    .unwrap();
    assert_eq!((first[0].rows_read, first[0].removed), (200, 0));
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 600);

    source
        .execute("DELETE FROM sales WHERE sale_id IN ('S00007', 'S00100', 'S00199')")
        .await;
    source
        .execute("UPDATE sales SET net_amount = 1.0001 WHERE sale_id = 'S00008'")
        .await;
    let second = sync_connector(
        store.clone(),
        &secrets,
        &tenant,
        &connector,
        "manual",
        &options,
    )
    .await
    .unwrap();
    assert_eq!((second[0].rows_read, second[0].removed), (197, 3));
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 591);
    let expected = source.monthly_figures().await;
    assert_eq!(
        ledger_figures(store.as_ref(), &tenant, &expected).await,
        expected
    );

    let third = sync_connector(
        store.clone(),
        &secrets,
        &tenant,
        &connector,
        "manual",
        &options,
    )
    .await
    .unwrap();
    assert_eq!(third[0].removed, 0);
    assert_eq!(store.posting_count(&tenant).await.unwrap(), 591);
    assert_eq!(
        ledger_figures(store.as_ref(), &tenant, &expected).await,
        expected
    );
    let runs = store.sync_runs(&tenant.id, Some("pos"), 10).await.unwrap();
    assert_eq!(runs[1].rows_removed, 3);
}

/// `keys rotate` re-wraps the data keys under a new master key: a daemon that
/// loaded the old key still opens credentials (it reads the key file again), a new
/// one opens them with the new key, and without any key the start is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_master_key_rotates_under_a_running_daemon() {
    use ledgersync_credentials::ExposeSecret as _;
    let test = crate::helpers::sqlite_store().await;
    let store: Arc<dyn Store> = test.store.clone();
    let tenant = provision(store.as_ref(), "pro").await;
    let key_file = test.dir.path().join("master.key");
    let running = Secrets::load(store.as_ref(), &key_file).await.unwrap();
    let mapping = pos_mapping();
    let spec = write(
        test.dir.path(),
        "pos.toml",
        &format!(
            "kind = \"postgres\"\nhost = \"127.0.0.1\"\ndatabase = \"pos\"\nuser = \"reader\"\n\n\
             [[streams]]\nname = \"pos_sales\"\ntable = \"sales\"\nmapping = \"{}\"\n",
            mapping.display()
        ),
    );
    add_connector(store.as_ref(), &running, &tenant, "pos", &spec).await;
    let connector = store.connector(&tenant.id, "pos").await.unwrap().unwrap();
    let old_id = running.master_key_id();

    let rotation = ledgersync::secrets::rotate(store.as_ref(), &key_file, None)
        .await
        .unwrap();
    assert_eq!(rotation.rewrapped, 1);
    assert_eq!(rotation.old_id, old_id);
    assert_ne!(rotation.new_id, old_id);
    assert!(rotation.previous_key_file.unwrap().exists());
    assert_eq!(
        store.data_keys().await.unwrap()[0].master_key_id,
        rotation.new_id
    );

    let opened = running.open(store.as_ref(), &connector).await.unwrap();
    assert_eq!(opened.expose_secret(), PASSWORD);
    assert_eq!(running.master_key_id(), rotation.new_id);
    let restarted = Secrets::load(store.as_ref(), &key_file).await.unwrap();
    assert_eq!(
        restarted
            .open(store.as_ref(), &connector)
            .await
            .unwrap()
            .expose_secret(),
        PASSWORD
    );

    std::fs::remove_file(&key_file).unwrap();
    let refused = Secrets::load(store.as_ref(), &key_file).await.unwrap_err();
    assert!(
        refused.to_string().contains("LEDGERSYNC_MASTER_KEY"),
        "{refused}"
    );
    assert!(
        !key_file.exists(),
        "no new key is made while credentials exist"
    );
}
