//! README's runbook walkthrough, run as written with the real binary, against a
//! fresh SQLite store, a mail outbox and a server on a free port.

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

#[test]
fn the_readme_runbook_works_as_written() {
    let script = runbook_from_readme();
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
