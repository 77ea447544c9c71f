//! What every handler shares (the store, the mailer, the read cache) and the server's
//! lifecycle: binding, serving, and stopping on a signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::Router;
use ledgersync_config::DaemonConfig;
use ledgersync_store::Store;
use moka::future::Cache;
use tokio::net::TcpListener;
use tracing::Instrument;

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
    pub sync_metrics: crate::metrics::SyncMetrics,
    /// A hash of the scraper's token; `/metrics` is off without one.
    pub metrics_token_hash: Option<String>,
    /// The master key that opens connector credentials; the connector routes that
    /// need it answer 503 without it.
    pub secrets: Option<Arc<crate::secrets::Secrets>>,
    /// How long a sync started through the API holds its connector's lease unless
    /// renewed (it is renewed every third of it while the sync runs).
    pub sync_lease: Duration,
}

/// Short-lived memory of the read path: who a credential is, and rendered reports.
/// Reports are keyed by the tenant's data generation, so a load, a settings or an
/// accounts change through this process is seen at once; every entry also expires
/// after the TTL, which bounds staleness across replicas.
///
/// A missing or expired entry is computed by one request; concurrent requests for
/// the same key wait for that computation instead of repeating it. A failure is not
/// kept: each waiting request gets it, and the next request computes again. An entry
/// still in use is renewed before it expires: the first request past a point between
/// half and three quarters of its life (at random, so that entries made together are
/// not renewed together) starts a background refresh and is answered from the entry
/// meanwhile, as are all others. So a busy key never makes requests wait.
pub struct ReadCache {
    ttl: Duration,
    callers: Memo<Caller>,
    reports: Memo<Arc<Response<Bytes>>>,
}

/// Entries kept per map (the least used go first); bounds memory under many
/// distinct queries.
const CACHE_ENTRIES: u64 = 10_000;

/// How often the tenants' data generations are synchronised with the store's
/// (changes made by other daemons show within this time).
pub const GENERATION_SYNC: Duration = Duration::from_secs(1);

/// The longest a report stays cached under one generation: a change committed by a
/// daemon that died before sharing it shows after this at the latest.
const REPORT_LIFE: Duration = Duration::from_secs(60);

impl ReadCache {
    pub fn new(ttl: Duration) -> ReadCache {
        ReadCache {
            ttl,
            callers: Memo::new(ttl, true),
            // Keyed by the data generation, which follows every daemon's commits
            // (synchronised each GENERATION_SYNC): an entry stays right until its
            // tenant's data changes, so it is not re-rendered while nothing does.
            reports: Memo::new(REPORT_LIFE.max(ttl), false),
        }
    }

    /// A cache whose reports are renewed by `ttl` like credentials, for a store
    /// whose generations are not synchronised with other daemons'.
    pub fn renewing_reports(ttl: Duration) -> ReadCache {
        ReadCache {
            ttl,
            callers: Memo::new(ttl, true),
            reports: Memo::new(ttl, true),
        }
    }

    /// Forgets every report: when generations cannot be synchronised, entries may
    /// no longer follow changes made elsewhere.
    pub fn forget_reports(&self) {
        self.reports.clear();
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The caller a credential hash stands for, looked up by `lookup` when it is not
    /// cached (or the cache is off) and when it is renewed.
    pub async fn caller<E, F>(
        &self,
        credential_hash: &str,
        lookup: impl Fn() -> F + Send + Sync,
    ) -> Result<Caller, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<Caller, E>> + Send + 'static,
    {
        if !self.enabled() {
            return lookup().await.map_err(Arc::new);
        }
        self.callers.get(self.ttl, credential_hash, lookup).await
    }

    /// Forgets every credential: after any change of users, keys, plans or settings.
    fn forget_callers(&self) {
        self.callers.clear();
    }

    /// The report cached under `key` (which names the data generation), rendered
    /// by `render` when it is not cached (or the cache is off) and when it is renewed.
    pub async fn report<E, F>(
        &self,
        key: &str,
        render: impl Fn() -> F + Send + Sync,
    ) -> Result<Response<Bytes>, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<Response<Bytes>, E>> + Send + 'static,
    {
        if !self.enabled() {
            return render().await.map_err(Arc::new);
        }
        let render = || {
            let rendering = render();
            async move { rendering.await.map(Arc::new) }
        };
        let cached = self.reports.get(self.ttl, key, render).await?;
        Ok(clone_response(&cached))
    }
}

/// One map of the read cache.
struct Memo<V> {
    entries: Cache<String, Entry<V>>,
    /// Whether entries in use are renewed before they expire (else they live out
    /// their time and the next request computes them again).
    renews: bool,
    /// Counts clearings: a refresh begun before one does not store what it read.
    clearings: Arc<AtomicU64>,
}

/// A cached value, when to renew it, and whether a renewal is under way.
#[derive(Clone)]
struct Entry<V> {
    value: V,
    renew_at: Instant,
    renewing: Arc<AtomicBool>,
}

impl<V> Entry<V> {
    fn new(value: V, ttl: Duration) -> Entry<V> {
        Entry {
            value,
            renew_at: Instant::now() + ttl.mul_f64(rand::random_range(0.5..=0.75)),
            renewing: Arc::default(),
        }
    }
}

impl<V: Clone + Send + Sync + 'static> Memo<V> {
    fn new(ttl: Duration, renews: bool) -> Memo<V> {
        Memo {
            renews,
            entries: Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
            clearings: Arc::default(),
        }
    }

    async fn get<E, F>(
        &self,
        ttl: Duration,
        key: &str,
        compute: impl Fn() -> F + Send + Sync,
    ) -> Result<V, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<V, E>> + Send + 'static,
    {
        let entry = self
            .entries
            .try_get_with_by_ref(key, async {
                compute().await.map(|value| Entry::new(value, ttl))
            })
            .await?;
        if self.renews
            && Instant::now() >= entry.renew_at
            && !entry.renewing.swap(true, Ordering::AcqRel)
        {
            let entries = self.entries.clone();
            let clearings = self.clearings.clone();
            let cleared_before = clearings.load(Ordering::Acquire);
            let (key, renewal) = (key.to_owned(), compute());
            tokio::spawn(async move {
                match renewal.await {
                    Ok(value) if clearings.load(Ordering::Acquire) == cleared_before => {
                        entries.insert(key, Entry::new(value, ttl)).await;
                    }
                    Ok(_) => {}
                    // Dropped: the next request computes it and answers with the
                    // failure if it lasts.
                    Err(_) => entries.invalidate(&key).await,
                }
            });
        }
        Ok(entry.value)
    }

    fn clear(&self) {
        self.clearings.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
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

/// The header a request's id is read from (a proxy's) and echoed in.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    /// The id of the request this task answers, for the problem documents it builds.
    static REQUEST_ID: String;
}

/// The id of the request being answered, outside a request none.
pub(crate) fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A proxy's id is kept when it is a short token, so its logs and ours meet; any
/// other value (long, or with characters a log line should not carry) is replaced.
fn usable_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let usable = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    usable.then(|| text.to_string())
}

/// Gives every request an id: echoed in `x-request-id`, carried by a tracing span
/// around everything logged while the request is answered, and put in every 5xx
/// problem document. tower-http's request-id layers set and echo the header but do
/// not check a proxy's value nor open the span; this does all three in one place.
pub(crate) async fn with_request_id(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(usable_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    // At the error level, so the id is on every line whenever anything is logged.
    let span = tracing::error_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request))
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
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
            sync_metrics: crate::metrics::SyncMetrics::default(),
            metrics_token_hash: config.metrics.token.as_ref().map(|token| {
                use secrecy::ExposeSecret as _;
                crate::keys::hash(token.expose_secret())
            }),
            secrets: None,
            sync_lease: Duration::from_secs(config.sync.lease_secs.max(3)),
        })))
    }

    /// The state serving `metrics` at `/metrics` (set before serving starts).
    pub fn with_sync_metrics(self, metrics: crate::metrics::SyncMetrics) -> AppState {
        match Arc::try_unwrap(self.0) {
            Ok(mut shared) => {
                shared.sync_metrics = metrics;
                AppState(Arc::new(shared))
            }
            Err(_) => panic!("sync metrics are attached before the state is shared"),
        }
    }

    /// The state opening connector credentials with `secrets` (set before serving
    /// starts).
    pub fn with_secrets(self, secrets: Arc<crate::secrets::Secrets>) -> AppState {
        match Arc::try_unwrap(self.0) {
            Ok(mut shared) => {
                shared.secrets = Some(secrets);
                AppState(Arc::new(shared))
            }
            Err(_) => panic!("secrets are attached before the state is shared"),
        }
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
        if state.cache.enabled() {
            tokio::spawn(sync_generations(Arc::downgrade(&state.0)));
        }
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

/// Keeps the tenants' data generations in step with the other daemons on the store
/// while the server's state lives; when that fails, cached reports are dropped
/// rather than trusted.
async fn sync_generations(state: std::sync::Weak<Shared>) {
    let mut failing = false;
    loop {
        tokio::time::sleep(GENERATION_SYNC).await;
        let Some(state) = state.upgrade() else { break };
        match state.store.sync_generations().await {
            Ok(()) => failing = false,
            Err(error) => {
                state.cache.forget_reports();
                if !failing {
                    tracing::warn!(error = %error, "Cannot follow changes made by other daemons; reports are not cached until it works again.");
                }
                failing = true;
            }
        }
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
