//! What every handler shares (the store, the mailer, the read cache) and the server's
//! lifecycle: binding, serving, and stopping on a signal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::Router;
use ledgersync_config::DaemonConfig;
use ledgersync_store::Store;
use tokio::net::TcpListener;

use super::auth::Caller;
use super::routes::router;
use crate::import::ImportOptions;
use crate::mail::Mailer;

/// What every handler shares. axum clones the state for each middleware and
/// extractor of every request: one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub store: Arc<dyn Store>,
    pub mailer: Arc<Mailer>,
    pub public_url: String,
    pub import: Arc<ImportOptions>,
    pub cache: Arc<ReadCache>,
    pub hashing: Arc<crate::access::PasswordHashing>,
}

/// Short-lived memory of the read path: who a credential is, and rendered reports.
/// Reports are keyed by the tenant's data generation, so a load, a settings or an
/// accounts change through this process is seen at once; everything also expires
/// after the TTL, which bounds staleness across replicas.
pub struct ReadCache {
    ttl: Duration,
    callers: Mutex<HashMap<String, (Instant, Caller)>>,
    reports: Mutex<HashMap<String, CachedReport>>,
}

/// When it was rendered, for which data generation, and the response.
type CachedReport = (Instant, u64, Response<Bytes>);

/// Entries kept per map before it is emptied; bounds memory under many distinct queries.
const CACHE_ENTRIES: usize = 10_000;

impl ReadCache {
    pub fn new(ttl: Duration) -> ReadCache {
        ReadCache {
            ttl,
            callers: Mutex::new(HashMap::new()),
            reports: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    pub(crate) fn caller(&self, credential_hash: &str) -> Option<Caller> {
        let callers = self.callers.lock().expect("cache lock");
        callers
            .get(credential_hash)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, caller)| caller.clone())
    }

    pub(crate) fn remember_caller(&self, credential_hash: String, caller: &Caller) {
        let mut callers = self.callers.lock().expect("cache lock");
        if callers.len() >= CACHE_ENTRIES {
            callers.clear();
        }
        callers.insert(credential_hash, (Instant::now(), caller.clone()));
    }

    /// Forgets every credential: after any change of users, keys, plans or settings.
    fn forget_callers(&self) {
        self.callers.lock().expect("cache lock").clear();
    }

    pub(crate) fn report(&self, key: &str, generation: u64) -> Option<Response<Bytes>> {
        let reports = self.reports.lock().expect("cache lock");
        reports
            .get(key)
            .filter(|(at, g, _)| *g == generation && at.elapsed() < self.ttl)
            .map(|(_, _, response)| clone_response(response))
    }

    pub(crate) fn remember_report(&self, key: String, generation: u64, response: &Response<Bytes>) {
        let mut reports = self.reports.lock().expect("cache lock");
        if reports.len() >= CACHE_ENTRIES {
            reports.clear();
        }
        reports.insert(key, (Instant::now(), generation, clone_response(response)));
    }
}

fn clone_response(response: &Response<Bytes>) -> Response<Bytes> {
    let mut copy = Response::new(response.body().clone());
    *copy.status_mut() = response.status();
    *copy.headers_mut() = response.headers().clone();
    copy
}

/// A request that may change users, keys, plans or settings (every route but a
/// GET) invalidates the credential cache once it is answered.
pub(crate) async fn forget_callers_after_changes(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    state.cache.forget_callers();
    response
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: &DaemonConfig) -> anyhow::Result<AppState> {
        Ok(AppState(Arc::new(Shared {
            store,
            mailer: Arc::new(Mailer::from_config(&config.mail)?),
            public_url: config.mail.public_url.clone(),
            import: Arc::new(ImportOptions {
                batch_rows: config.import.batch_rows,
                max_reported_errors: config.import.max_reported_errors,
                progress: false,
            }),
            cache: Arc::new(ReadCache::new(Duration::from_secs(
                config.server.cache_ttl_secs,
            ))),
            hashing: Arc::new(crate::access::PasswordHashing::default()),
        })))
    }
}

/// A bound, not yet serving, API server; port 0 picks a free port (tests).
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    pub async fn build(state: AppState, listen: SocketAddr) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        Ok(Application {
            listener,
            router: router(state),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // With the peer's address: failed logins are counted per client.
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await
    }
}

/// Ctrl-C, or SIGTERM from a service manager: finish the requests in flight, then stop.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "Cannot listen for SIGTERM; only Ctrl-C stops the server.");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
    tracing::info!("Shutting down: finishing requests in flight.");
}
