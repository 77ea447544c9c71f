use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("LEDGERSYNC_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx=error")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    // One rustls crypto provider for every TLS client in the process (sqlx, lettre and,
    // later, the SQL Server driver, which would otherwise bring its own and make the
    // first TLS handshake panic on the ambiguity).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = ledgersync::cli::Cli::parse();
    match ledgersync::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
