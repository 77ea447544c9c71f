//! The HTTP API. A request proves who it is with a session (`Authorization: Bearer
//! lss_…` or the `ledgersync_session` cookie) or an API key (`Bearer lsk_…`); the
//! credential alone decides the tenant, and every route names what it needs in
//! [`ROUTES`], which the router is built from. Reports read only precomputed
//! aggregates. Errors are RFC 9457 problem details with a stable `type`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;

use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, State,
};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, COOKIE, RETRY_AFTER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use ledgersync_config::{DaemonConfig, StreamDef};
use ledgersync_schemas::{Grouping, Month, ReportKind};
use ledgersync_store::{ApiKey, Store, StoreError, Tenant, User};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::access::{self, AccessError, Role};
use crate::import::{self, FileRejected, ImportOptions, ImportOutcome};
use crate::mail::Mailer;
use crate::reports::{self, ReportError, ReportQuery};
use crate::{keys, tenants};

const SESSION_COOKIE: &str = "ledgersync_session";
/// Largest accepted upload; bigger files go through the CLI or a watched folder.
const MAX_UPLOAD_BYTES: usize = 64 << 20;
/// Largest accepted JSON body (logins, settings, invitations …).
const MAX_JSON_BYTES: usize = 64 << 10;

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
    pub hashing: Arc<access::PasswordHashing>,
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

    fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn caller(&self, credential_hash: &str) -> Option<Caller> {
        let callers = self.callers.lock().expect("cache lock");
        callers
            .get(credential_hash)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, caller)| caller.clone())
    }

    fn remember_caller(&self, credential_hash: String, caller: &Caller) {
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

    fn report(&self, key: &str, generation: u64) -> Option<Response<Bytes>> {
        let reports = self.reports.lock().expect("cache lock");
        reports
            .get(key)
            .filter(|(at, g, _)| *g == generation && at.elapsed() < self.ttl)
            .map(|(_, _, response)| clone_response(response))
    }

    fn remember_report(&self, key: String, generation: u64, response: &Response<Bytes>) {
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
async fn forget_callers_after_changes(
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
            hashing: Arc::new(access::PasswordHashing::default()),
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
        // The peer's address: failed logins are counted per client.
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

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Nobody,
    /// A user session of at least this role; a `read` API key counts as a viewer.
    Role(Role),
    /// Loading data: a manager or admin session, or an `ingest` API key.
    Import,
}

#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub need: Need,
}

const fn route(method: &'static str, path: &'static str, need: Need) -> RouteSpec {
    RouteSpec { method, path, need }
}

/// Every route, and what it needs. The router is built from this table, so a route
/// cannot exist without an entry, and each non-public route is guarded by it.
pub const ROUTES: &[RouteSpec] = &[
    route("GET", "/healthz", Need::Nobody),
    route("POST", "/v1/auth/login", Need::Nobody),
    route("POST", "/v1/invitations/{token}/accept", Need::Nobody),
    route("POST", "/v1/auth/logout", Need::Role(Role::Viewer)),
    route("GET", "/v1/me", Need::Role(Role::Viewer)),
    route("POST", "/v1/session/tenant", Need::Role(Role::Viewer)),
    route("GET", "/v1/reports/{kind}", Need::Role(Role::Viewer)),
    route("GET", "/v1/settings", Need::Role(Role::Viewer)),
    route("PUT", "/v1/settings", Need::Role(Role::Admin)),
    route("POST", "/v1/imports", Need::Import),
    route("GET", "/v1/loads", Need::Role(Role::Manager)),
    route("GET", "/v1/users", Need::Role(Role::Admin)),
    route("POST", "/v1/users/invitations", Need::Role(Role::Admin)),
    route("PATCH", "/v1/users/{id}", Need::Role(Role::Admin)),
    route("DELETE", "/v1/users/{id}", Need::Role(Role::Admin)),
    route("GET", "/v1/apikeys", Need::Role(Role::Admin)),
    route("POST", "/v1/apikeys", Need::Role(Role::Admin)),
    route("DELETE", "/v1/apikeys/{id}", Need::Role(Role::Admin)),
    route("GET", "/v1/audit", Need::Role(Role::Admin)),
    route("GET", "/v1/openapi.json", Need::Nobody),
];

fn handler_for(method: &str, path: &str) -> MethodRouter<AppState> {
    match (method, path) {
        ("GET", "/healthz") => on(MethodFilter::GET, healthz),
        ("POST", "/v1/auth/login") => on(MethodFilter::POST, login),
        ("POST", "/v1/invitations/{token}/accept") => on(MethodFilter::POST, accept_invitation),
        ("POST", "/v1/auth/logout") => on(MethodFilter::POST, logout),
        ("GET", "/v1/me") => on(MethodFilter::GET, me),
        ("POST", "/v1/session/tenant") => on(MethodFilter::POST, switch_tenant),
        ("GET", "/v1/reports/{kind}") => on(MethodFilter::GET, report),
        ("GET", "/v1/settings") => on(MethodFilter::GET, get_settings),
        ("PUT", "/v1/settings") => on(MethodFilter::PUT, put_settings),
        ("POST", "/v1/imports") => {
            on(MethodFilter::POST, upload_import).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        }
        ("GET", "/v1/loads") => on(MethodFilter::GET, list_loads),
        ("GET", "/v1/users") => on(MethodFilter::GET, list_users),
        ("POST", "/v1/users/invitations") => on(MethodFilter::POST, invite_user),
        ("PATCH", "/v1/users/{id}") => on(MethodFilter::PATCH, change_role),
        ("DELETE", "/v1/users/{id}") => on(MethodFilter::DELETE, remove_user),
        ("GET", "/v1/apikeys") => on(MethodFilter::GET, list_keys),
        ("POST", "/v1/apikeys") => on(MethodFilter::POST, create_key),
        ("DELETE", "/v1/apikeys/{id}") => on(MethodFilter::DELETE, revoke_key),
        ("GET", "/v1/audit") => on(MethodFilter::GET, audit_log),
        ("GET", "/v1/openapi.json") => on(MethodFilter::GET, openapi),
        (method, path) => panic!("ROUTES lists {method} {path} but no handler serves it"),
    }
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for spec in ROUTES {
        let mut handler = handler_for(spec.method, spec.path);
        if spec.need != Need::Nobody {
            let need = spec.need;
            handler = handler.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                move |State(state): State<AppState>, request, next| {
                    guard(state, need, request, next)
                },
            ));
        }
        // Only requests that may change users, keys, plans or settings: reads (the
        // hot path) skip a middleware.
        if spec.method != "GET" {
            handler = handler.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                forget_callers_after_changes,
            ));
        }
        router = router.route(spec.path, handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "No such route.")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "The route exists, but not with this method; see /v1/openapi.json.",
    )
}

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    extra: Option<serde_json::Value>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            kind,
            detail: detail.into(),
            extra: None,
        }
    }

    fn bad(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-parameter", detail)
    }

    fn unavailable(error: impl std::fmt::Display) -> Problem {
        tracing::error!(error = %error, "A request failed on the store.");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Try again shortly.",
        )
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Problem {
        match error {
            StoreError::Conflict(detail) => Problem::new(StatusCode::CONFLICT, "conflict", detail),
            StoreError::NotFound(detail) => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
            }
            StoreError::SeatLimit { .. } => {
                Problem::new(StatusCode::CONFLICT, "seat-limit", error.to_string())
            }
            StoreError::Invalid(detail) => Problem::bad(detail),
            other => Problem::unavailable(other),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "type": format!("https://ledgersync.dev/problems/{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let (Some(extra), Some(map)) = (self.extra, body.as_object_mut()) {
            if let Some(fields) = extra.as_object() {
                map.extend(fields.clone());
            }
        }
        (
            self.status,
            [(CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

#[derive(Clone)]
pub enum Principal {
    User {
        user: User,
        role: Role,
        session_hash: String,
    },
    Key(ApiKey),
}

/// The tenant and principal a request authenticated as; shared, as every request
/// of a cached credential hands the same one to its handler.
#[derive(Clone)]
pub struct Caller(Arc<Authenticated>);

pub struct Authenticated {
    pub tenant: Tenant,
    pub principal: Principal,
}

impl std::ops::Deref for Caller {
    type Target = Authenticated;

    fn deref(&self) -> &Authenticated {
        &self.0
    }
}

impl Caller {
    /// Who, for the audit trail.
    pub fn actor(&self) -> String {
        match &self.principal {
            Principal::User { user, .. } => format!("user:{}", user.email),
            Principal::Key(key) => format!("apikey:{}", key.name),
        }
    }

    pub fn require(&self, need: Need) -> Result<(), Problem> {
        let allowed = match (&self.principal, need) {
            (_, Need::Nobody) => true,
            (Principal::User { role, .. }, Need::Role(needed)) => *role >= needed,
            (Principal::User { role, .. }, Need::Import) => *role >= Role::Manager,
            (Principal::Key(key), Need::Role(Role::Viewer)) => key.scope == "read",
            (Principal::Key(key), Need::Import) => key.scope == "ingest",
            (Principal::Key(_), Need::Role(_)) => false,
        };
        if allowed {
            Ok(())
        } else {
            let what = match need {
                Need::Role(role) => format!("the {role} role"),
                Need::Import => "a manager, an admin or an ingest key".to_string(),
                Need::Nobody => unreachable!("anyone is allowed"),
            };
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("This needs {what}."),
            ))
        }
    }
}

fn bearer_or_cookie(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return value.strip_prefix("Bearer ").map(str::trim);
    }
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            pair.trim()
                .strip_prefix(SESSION_COOKIE)
                .and_then(|rest| rest.strip_prefix('='))
        })
}

/// Who sent a request, from its session or API key (cached for the TTL).
async fn authenticate(headers: &HeaderMap, state: &AppState) -> Result<Caller, Problem> {
    let unauthorized = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Log in (POST /v1/auth/login) or send an API key as `Authorization: Bearer lsk_…`.",
        )
    };
    let secret = bearer_or_cookie(headers).ok_or_else(unauthorized)?;
    if secret.len() > 200 {
        return Err(unauthorized());
    }
    let hash = keys::hash(secret);
    if let Some(caller) = state.cache.caller(&hash) {
        return Ok(caller);
    }
    let caller = if secret.starts_with("lss_") {
        let (tenant, user) = state
            .store
            .session(&hash)
            .await
            .map_err(Problem::unavailable)?
            .ok_or_else(unauthorized)?;
        let role = user.role.parse().map_err(|_| unauthorized())?;
        Caller(Arc::new(Authenticated {
            tenant,
            principal: Principal::User {
                user,
                role,
                session_hash: hash.clone(),
            },
        }))
    } else {
        let (tenant, key) = state
            .store
            .authenticate_api_key(&hash)
            .await
            .map_err(Problem::unavailable)?
            .ok_or_else(unauthorized)?;
        Caller(Arc::new(Authenticated {
            tenant,
            principal: Principal::Key(key),
        }))
    };
    if state.cache.enabled() {
        state.cache.remember_caller(hash, &caller);
    }
    Ok(caller)
}

/// The guard every non-public route gets from [`ROUTES`]: authenticates the request,
/// checks what the route needs, and hands the caller to the handler.
async fn guard(
    state: AppState,
    need: Need,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let caller = match authenticate(request.headers(), &state).await {
        Ok(caller) => caller,
        Err(problem) => return problem.into_response(),
    };
    if let Err(problem) = caller.require(need) {
        return problem.into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    /// The caller the route's guard authenticated and authorised.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "A handler asked for the caller on a public route.");
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "This route has no caller.")
        })
    }
}

/// Whether a request accepts CSV (`Accept: text/csv`), read without copying the
/// request's headers as the `HeaderMap` extractor would.
pub struct WantsCsv(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for WantsCsv {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(WantsCsv(
            parts
                .headers
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|accept| accept.contains("text/csv")),
        ))
    }
}

/// A JSON body whose rejection is a problem document.
pub struct Body<T>(pub T);

impl<T, S> FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(request, state)
            .await
            .map(|Json(value)| Body(value))
            .map_err(|rejection| {
                Problem::new(rejection.status(), "invalid-body", rejection.body_text())
            })
    }
}

/// A raw request body (an uploaded file) whose rejection, e.g. over the size limit,
/// is a problem document.
pub struct Upload(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Upload {
    type Rejection = Problem;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state)
            .await
            .map(Upload)
            .map_err(|rejection| {
                Problem::new(rejection.status(), "invalid-body", rejection.body_text())
            })
    }
}

/// Query parameters whose rejection is a problem document.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Params(value))
            .map_err(|rejection| {
                Problem::new(
                    rejection.status(),
                    "invalid-parameter",
                    rejection.body_text(),
                )
            })
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    email: String,
    password: String,
    /// The tenant (id or slug) to act in; by default the person's first.
    tenant: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchTenantBody {
    /// A tenant (id or slug) the person is an active member of.
    tenant: String,
}

/// The address of the peer a request came from, when the server recorded it.
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), |info| {
                    info.0.ip()
                }),
        ))
    }
}

/// A problem with a `Retry-After` header.
fn retry_after(problem: Problem, secs: i64) -> Response {
    let mut response = problem.into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, axum::http::HeaderValue::from(secs.max(1)));
    response
}

/// The answer when every password hashing slot stayed taken.
fn hashing_busy() -> Response {
    retry_after(
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "Too many passwords are being checked at once; try again in a second.",
        ),
        1,
    )
}

fn session_cookie(state: &AppState, token: &str, max_age_secs: i64) -> String {
    let secure = if state.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{secure}")
}

async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    Body(body): Body<LoginBody>,
) -> Response {
    let invalid = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-credentials",
            "Wrong email or password.",
        )
        .into_response()
    };
    if body.email.len() > 254
        || body.password.len() > 1024
        || body.tenant.as_ref().is_some_and(|t| t.len() > 200)
    {
        return invalid();
    }
    let outcome = access::login(
        state.store.as_ref(),
        &state.hashing,
        &body.email,
        &body.password,
        body.tenant.as_deref(),
        client,
    )
    .await;
    match outcome {
        Ok(session) => {
            let cookie = session_cookie(&state, &session.token, access::SESSION_HOURS * 3600);
            if let Err(error) = state
                .store
                .audit(
                    &session.tenant.id,
                    &format!("user:{}", session.user.email),
                    "user.login",
                    "",
                )
                .await
            {
                tracing::warn!(error = %error, "Could not write a login to the audit trail.");
            }
            ([(SET_COOKIE, cookie)], Json(session)).into_response()
        }
        Err(AccessError::Throttled { retry_after_secs }) => {
            let mut problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "login-throttled",
                format!("Too many failed logins; try again in {retry_after_secs} s."),
            );
            problem.extra = Some(serde_json::json!({ "retryAfterSeconds": retry_after_secs }));
            retry_after(problem, retry_after_secs)
        }
        Err(AccessError::Busy) => hashing_busy(),
        Err(error @ (AccessError::NotAMember(_) | AccessError::NoTenant)) => {
            Problem::new(StatusCode::FORBIDDEN, "not-a-member", format!("{error}.")).into_response()
        }
        Err(AccessError::Internal(e)) => Problem::unavailable(e).into_response(),
        Err(_) => invalid(),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    password: String,
}

async fn accept_invitation(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Body(body): Body<AcceptBody>,
) -> Response {
    match access::accept(state.store.as_ref(), &state.hashing, &token, &body.password).await {
        Ok((_, user)) => Json(user).into_response(),
        Err(AccessError::WeakPassword(reason)) => {
            Problem::new(StatusCode::BAD_REQUEST, "weak-password", reason).into_response()
        }
        Err(AccessError::InvalidInvitation(reason)) => {
            Problem::new(StatusCode::NOT_FOUND, "invalid-invitation", reason).into_response()
        }
        Err(error @ AccessError::WrongPassword) => Problem::new(
            StatusCode::UNAUTHORIZED,
            "wrong-password",
            format!("{error}."),
        )
        .into_response(),
        Err(AccessError::Busy) => hashing_busy(),
        Err(e) => Problem::unavailable(e).into_response(),
    }
}

async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, Problem> {
    let Principal::User { session_hash, .. } = &caller.principal else {
        return Err(Problem::bad(
            "API keys have no session; revoke the key instead.",
        ));
    };
    state.store.end_session(session_hash).await?;
    Ok((
        [(SET_COOKIE, session_cookie(&state, "", 0))],
        StatusCode::NO_CONTENT,
    )
        .into_response())
}

/// The caller's tenant and identity; for a person, every tenant they may switch to.
async fn me(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, Problem> {
    let who = match &caller.principal {
        Principal::User { user, .. } => {
            let tenants = state.store.person_tenants(&user.person_id).await?;
            serde_json::json!({ "user": user, "tenants": tenants })
        }
        Principal::Key(key) => serde_json::json!({ "apiKey": key }),
    };
    Ok(Json(
        serde_json::json!({ "tenant": { "id": caller.tenant.id, "slug": caller.tenant.slug, "name": caller.tenant.name, "plan": caller.tenant.plan }, "as": who }),
    ))
}

/// Points the caller's session at another of the person's tenants.
async fn switch_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<SwitchTenantBody>,
) -> Result<Json<serde_json::Value>, Problem> {
    let Principal::User { session_hash, .. } = &caller.principal else {
        return Err(Problem::bad(
            "An API key belongs to one tenant; log in to switch between tenants.",
        ));
    };
    if body.tenant.len() > 200 {
        return Err(Problem::bad("tenant: longer than 200 characters"));
    }
    let (tenant, user) = state
        .store
        .switch_session_tenant(session_hash, &body.tenant)
        .await?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::FORBIDDEN,
                "not-a-member",
                format!("You are not an active member of tenant '{}'.", body.tenant),
            )
        })?;
    let tenants = state.store.person_tenants(&user.person_id).await?;
    Ok(Json(
        serde_json::json!({ "tenant": { "id": tenant.id, "slug": tenant.slug, "name": tenant.name, "plan": tenant.plan }, "as": { "user": user, "tenants": tenants } }),
    ))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    from: String,
    to: String,
    branch: Option<String>,
    by: Option<String>,
}

fn feature_enabled(tenant: &Tenant, kind: ReportKind) -> bool {
    let features = &tenant.settings.features;
    match kind {
        ReportKind::Pnl => features.pl,
        ReportKind::CashFlow => features.cash_flow,
        ReportKind::Cogs => features.cogs,
        ReportKind::Staff => features.staff && tenants::plan_allows(&tenant.plan, "staff"),
    }
}

async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(kind): Path<String>,
    Params(params): Params<ReportParams>,
    WantsCsv(wants_csv): WantsCsv,
) -> Result<Response, Problem> {
    let kind: ReportKind = kind
        .parse()
        .map_err(|e: String| Problem::new(StatusCode::NOT_FOUND, "unknown-report", e))?;
    if !feature_enabled(&caller.tenant, kind) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "feature-disabled",
            format!(
                "The {kind:?} report is not enabled for this tenant (plan {}); an admin enables it in the settings, and staff cost needs the pro plan.",
                caller.tenant.plan
            ),
        ));
    }
    let from: Month = params
        .from
        .parse()
        .map_err(|e: ledgersync_schemas::MonthError| Problem::bad(format!("from: {e}")))?;
    let to: Month = params
        .to
        .parse()
        .map_err(|e: ledgersync_schemas::MonthError| Problem::bad(format!("to: {e}")))?;
    let by: Grouping = params
        .by
        .as_deref()
        .unwrap_or("month")
        .parse()
        .map_err(|e: String| Problem::bad(format!("by: {e}")))?;
    if params.branch.as_ref().is_some_and(|b| b.len() > 200) {
        return Err(Problem::bad("branch: longer than 200 characters"));
    }
    let cache_key = format!(
        "{}|{kind:?}|{from}|{to}|{}|{by:?}|{wants_csv}",
        caller.tenant.id,
        params.branch.as_deref().unwrap_or("*")
    );
    let generation = state.store.generation(&caller.tenant.id);
    if state.cache.enabled() {
        if let Some(cached) = state.cache.report(&cache_key, generation) {
            return Ok(cached.map(axum::body::Body::from));
        }
    }
    let query = ReportQuery {
        kind,
        from,
        to,
        branch: params.branch,
        by,
    };
    let report = reports::build(state.store.as_ref(), &caller.tenant, &query)
        .await
        .map_err(|e| match e {
            ReportError::Store(store) => Problem::unavailable(store),
            other => Problem::bad(other.to_string()),
        })?;
    let (content_type, body) = if wants_csv {
        ("text/csv; charset=utf-8", Bytes::from(report.to_csv()))
    } else {
        (
            "application/json",
            Bytes::from(serde_json::to_vec(&report).map_err(Problem::unavailable)?),
        )
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        axum::http::HeaderValue::from_static(content_type),
    );
    if state.cache.enabled() {
        state
            .cache
            .remember_report(cache_key, generation, &response);
    }
    Ok(response.map(axum::body::Body::from))
}

async fn get_settings(caller: Caller) -> Result<Json<ledgersync_config::TenantSettings>, Problem> {
    Ok(Json(caller.tenant.settings.clone()))
}

async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    body: String,
) -> Result<Json<ledgersync_config::TenantSettings>, Problem> {
    let (tenant, _) =
        tenants::configure(state.store.as_ref(), &caller.tenant, &body, &caller.actor())
            .await
            .map_err(|e| match e {
                tenants::ConfigureError::Store(store) => Problem::from(store),
                upgrade @ tenants::ConfigureError::UpgradeRequired { .. } => Problem::new(
                    StatusCode::FORBIDDEN,
                    "upgrade-required",
                    upgrade.to_string(),
                ),
                invalid @ tenants::ConfigureError::Invalid(_) => Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-settings",
                    invalid.to_string(),
                ),
            })?;
    Ok(Json(tenant.settings))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    stream: Option<String>,
    /// File name, for messages.
    name: Option<String>,
}

async fn upload_import(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<ImportParams>,
    Upload(body): Upload,
) -> Result<Response, Problem> {
    let stream = match params.stream.as_deref().unwrap_or("journal") {
        "journal" => StreamDef::journal(),
        other => {
            return Err(Problem::bad(format!(
                "stream: '{other}' is not a stream; built in: journal"
            )))
        }
    };
    let name: String = params
        .name
        .unwrap_or_else(|| "upload.csv".into())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(100)
        .collect();
    // Removed when dropped, whatever happens below.
    let dir = tempfile::Builder::new()
        .prefix("ledgersync-upload-")
        .tempdir()
        .map_err(Problem::unavailable)?;
    let path = dir.path().join(if name.is_empty() {
        "upload.csv".to_string()
    } else {
        name
    });
    std::fs::write(&path, &body).map_err(Problem::unavailable)?;
    let outcome = import::import_csv(
        state.store.clone(),
        &caller.tenant,
        stream,
        &path,
        &state.import,
    )
    .await;
    drop(dir);
    match outcome {
        Ok(ImportOutcome::Loaded(summary)) => {
            state
                .store
                .audit(
                    &caller.tenant.id,
                    &caller.actor(),
                    "import.loaded",
                    &format!("{} posting(s)", summary.postings),
                )
                .await?;
            Ok((
                StatusCode::CREATED,
                Json(serde_json::json!({ "status": "loaded", "summary": summary })),
            )
                .into_response())
        }
        Ok(ImportOutcome::AlreadyLoaded(past)) => Ok(Json(
            serde_json::json!({ "status": "already-loaded", "load": past }),
        )
        .into_response()),
        Err(error) => match error.downcast::<FileRejected>() {
            Ok(rejected) => {
                let mut problem = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "rows-rejected",
                    format!("{} bad row(s); nothing was imported.", rejected.total),
                );
                problem.extra =
                    Some(serde_json::json!({ "errors": rejected.errors, "total": rejected.total }));
                Err(problem)
            }
            Err(other) => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "import-failed",
                format!("{other:#}"),
            )),
        },
    }
}

async fn list_loads(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ledgersync_store::PastLoad>>, Problem> {
    Ok(Json(state.store.loads(&caller.tenant).await?))
}

async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, Problem> {
    let users = state.store.users(&caller.tenant).await?;
    Ok(Json(
        serde_json::json!({ "seats": caller.tenant.seats, "users": users }),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    email: String,
    role: String,
}

async fn invite_user(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<InviteBody>,
) -> Result<Response, Problem> {
    let role: Role = body
        .role
        .parse()
        .map_err(|e: String| Problem::bad(format!("role: {e}")))?;
    let invitation = access::invite(
        state.store.as_ref(),
        &state.mailer,
        &state.public_url,
        &caller.tenant,
        &body.email,
        role,
        &caller.actor(),
    )
    .await
    .map_err(|e| match e.downcast::<StoreError>() {
        Ok(store) => Problem::from(store),
        Err(other) => Problem::bad(other.to_string()),
    })?;
    // The link is the secret: it goes to the invitee by mail, not back to the caller.
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "user": invitation.user, "expiresAt": invitation.expires_at, "mail": invitation.mail })),
    )
        .into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    role: String,
}

async fn change_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<RoleBody>,
) -> Result<Json<User>, Problem> {
    let role: Role = body
        .role
        .parse()
        .map_err(|e: String| Problem::bad(format!("role: {e}")))?;
    let user = state
        .store
        .set_user_role(&caller.tenant, &id, &role.to_string())
        .await?;
    state
        .store
        .audit(
            &caller.tenant.id,
            &caller.actor(),
            "user.role_changed",
            &format!("{} to {role}", user.email),
        )
        .await?;
    Ok(Json(user))
}

async fn remove_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    if matches!(&caller.principal, Principal::User { user, .. } if user.id == id) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "Admins cannot remove themselves.",
        ));
    }
    state.store.remove_user(&caller.tenant, &id).await?;
    state
        .store
        .audit(&caller.tenant.id, &caller.actor(), "user.removed", &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApiKey>>, Problem> {
    Ok(Json(state.store.api_keys(&caller.tenant).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    name: String,
    scope: String,
}

async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<KeyBody>,
) -> Result<Response, Problem> {
    let (secret, key) = crate::cli::create_key(
        state.store.as_ref(),
        &caller.tenant,
        &body.name,
        &body.scope,
        &caller.actor(),
    )
    .await
    .map_err(|e| Problem::bad(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "key": key, "secret": secret })),
    )
        .into_response())
}

async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    state.store.revoke_api_key(&caller.tenant, &id).await?;
    state
        .store
        .audit(&caller.tenant.id, &caller.actor(), "apikey.revoked", &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    limit: Option<i64>,
}

async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<AuditParams>,
) -> Result<Json<Vec<ledgersync_store::AuditEntry>>, Problem> {
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(state.store.audit_log(&caller.tenant, limit).await?))
}
