//! README's runbook walkthrough, run as written with the real binary, against a
//! fresh SQLite store, a mail outbox, a server on a free port and the POS database
//! its "Database Connect" step reads (made here on the local PostgreSQL).

use std::process::Command;

fn runbook_from_readme() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme
        .find("<!-- runbook:start -->")
        .expect("README marks the runbook");
    let end = readme
        .find("<!-- runbook:end -->")
        .expect("README marks the runbook's end");
    let block = &readme[start..end];
    let code_start = block.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let code_end = block[code_start..].find("```").expect("a closed block") + code_start;
    block[code_start..code_end].to_string()
}

fn psql(database: &str, sql: &str) {
    let base = std::env::var("LS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let status = Command::new("psql")
        .args([
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            &format!("{base}/{database}"),
            "-c",
            sql,
        ])
        .status()
        .expect("psql must be installed (.ci/run installs PostgreSQL)");
    assert!(status.success(), "psql failed: {sql}");
}

/// The POS database of `examples/runbook/pos_connector.toml`, dropped with the value.
struct PosDatabase;

impl PosDatabase {
    fn create() -> PosDatabase {
        psql(
            "postgres",
            "DROP DATABASE IF EXISTS kopiken_pos WITH (FORCE)",
        );
        psql("postgres", "CREATE DATABASE kopiken_pos");
        psql(
            "kopiken_pos",
            "CREATE TABLE sales (sale_id text PRIMARY KEY, sold_at timestamp NOT NULL, \
             outlet text NOT NULL, category text NOT NULL, payment_method text NOT NULL, \
             net_amount numeric(18,2) NOT NULL, tax numeric(18,2) NOT NULL, \
             updated_at timestamp NOT NULL); \
             INSERT INTO sales VALUES \
             ('P1', '2025-02-01 02:00', 'Kemang', 'coffee', 'qris', 38000, 3800, '2025-02-01 02:00'), \
             ('P2', '2025-02-01 03:10', 'Senopati', 'pastry', 'cash', 26500.50, 2650.05, '2025-02-01 03:10'), \
             ('P3', '2025-02-02 11:45', 'Kemang', 'rice_bowl', 'gofood', 52000, 5200, '2025-02-02 11:45')",
        );
        PosDatabase
    }
}

impl Drop for PosDatabase {
    fn drop(&mut self) {
        psql(
            "postgres",
            "DROP DATABASE IF EXISTS kopiken_pos WITH (FORCE)",
        );
    }
}

#[test]
fn the_readme_runbook_works_as_written() {
    let script = runbook_from_readme();
    let _pos = PosDatabase::create();
    let work = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ledgersync"));
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("PATH", path)
        .env("API", format!("http://127.0.0.1:{port}"))
        .env("LEDGERSYNC_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "LEDGERSYNC_STORE__URL",
            format!("sqlite://{}", work.path().join("data").display()),
        )
        .env("LEDGERSYNC_MAIL__OUTBOX", work.path().join("outbox"))
        .env(
            "LEDGERSYNC_CREDENTIALS__KEY_FILE",
            work.path().join("master.key"),
        )
        .env("LEDGERSYNC_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = std::fs::remove_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../provision.txt"));
    assert!(
        output.status.success(),
        "the runbook failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("customer id:"), "{stdout}");
    assert!(stdout.contains("welcome email: written to"), "{stdout}");
    assert!(stdout.contains("✓ connected: PostgreSQL"), "{stdout}");
    assert!(
        stdout.contains("pos_sales: 3 row(s) read, 9 posting(s) written"),
        "{stdout}"
    );
    assert!(stdout.contains("connector pos syncs"), "{stdout}");
    let verify: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with('✓') || l.starts_with('✗'))
        .collect();
    assert!(verify.len() >= 5, "{stdout}");
    assert!(verify.iter().all(|l| l.starts_with('✓')), "{stdout}");
    assert!(
        std::fs::read_dir(work.path().join("outbox"))
            .unwrap()
            .count()
            >= 2
    );
}
