use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(run())
}

/// glibc returns freed blocks above 128 KiB to the kernel at once and trims its heaps
/// eagerly (adapting only slowly). A load frees and allocates the same batch-sized
/// buffers again and again: each came back as fresh pages, faulted in and zeroed by
/// the kernel (7% of a million-line import's CPU). Blocks under 32 MiB now come
/// from the heap and up to 256 MiB of freed memory is kept for reuse: the process
/// holds what its largest batch needed.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

async fn run() -> std::process::ExitCode {
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
