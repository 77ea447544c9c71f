//! Who a request is: sessions and API keys, the guard every non-public route gets,
//! and the routes that create, switch and end sessions (login, invitations, the
//! session's tenant, logout). A session is a person's, acting in one of their
//! tenants at a time.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::header::{AUTHORIZATION, COOKIE, RETRY_AFTER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledgersync_store::{ApiKey, Tenant, User};
use serde::Deserialize;

use super::extract::Body;
use super::problem::Problem;
use super::routes::Need;
use super::state::AppState;
use crate::access::{self, AccessError, Role};
use crate::keys;

const SESSION_COOKIE: &str = "ledgersync_session";

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

/// Why a credential names no caller; shared by every request that waited for the
/// one lookup of it.
enum LookupFailure {
    Unknown,
    Store(ledgersync_store::StoreError),
}

/// Who sent a request, from its session or API key (cached for the TTL: concurrent
/// requests with the same uncached credential wait for one lookup).
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
    let is_session = secret.starts_with("lss_");
    let lookup = || {
        let (state, hash) = (state.clone(), hash.clone());
        async move { look_up(&state, hash, is_session).await }
    };
    state
        .cache
        .caller(&hash, lookup)
        .await
        .map_err(|failure| match &*failure {
            LookupFailure::Unknown => unauthorized(),
            LookupFailure::Store(error) => Problem::unavailable(error),
        })
}

/// The caller of a session or API key hash, from the store.
async fn look_up(
    state: &AppState,
    hash: String,
    is_session: bool,
) -> Result<Caller, LookupFailure> {
    let authenticated = if is_session {
        let (tenant, user) = state
            .store
            .session(&hash)
            .await
            .map_err(LookupFailure::Store)?
            .ok_or(LookupFailure::Unknown)?;
        let role = user.role.parse().map_err(|_| LookupFailure::Unknown)?;
        Authenticated {
            tenant,
            principal: Principal::User {
                user,
                role,
                session_hash: hash,
            },
        }
    } else {
        let (tenant, key) = state
            .store
            .authenticate_api_key(&hash)
            .await
            .map_err(LookupFailure::Store)?
            .ok_or(LookupFailure::Unknown)?;
        Authenticated {
            tenant,
            principal: Principal::Key(key),
        }
    };
    Ok(Caller(Arc::new(authenticated)))
}

/// The guard every non-public route gets from [`super::ROUTES`]: authenticates the request,
/// checks what the route needs, and hands the caller to the handler.
pub(crate) async fn guard(
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

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[schemars(length(max = 254))]
    email: String,
    #[schemars(length(max = 1024))]
    password: String,
    /// The tenant (id or slug) to act in; by default the person's first.
    #[schemars(length(max = 200))]
    tenant: Option<String>,
}

/// The address of the peer a request came from (unspecified when the server was
/// not started with connection info).
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |info| info.0.ip()),
        ))
    }
}

/// A problem with a `Retry-After` header.
fn retry_after(problem: Problem, secs: i64) -> Response {
    let mut response = problem.into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
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

pub(crate) async fn login(
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
        Err(AccessError::Throttled { retry_after_secs }) => retry_after(
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "login-throttled",
                format!("Too many failed logins; try again in {retry_after_secs} s."),
            )
            .with(serde_json::json!({ "retryAfterSeconds": retry_after_secs })),
            retry_after_secs,
        ),
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
    /// A new person's password (at least 12 characters and at most 1024 bytes, with a
    /// letter and a digit, not the email), or the one a person with an account
    /// already has.
    #[schemars(
        length(min = 12, max = 1024),
        regex(pattern = r"[^\W\d_][\s\S]*[0-9]|[0-9][\s\S]*[^\W\d_]")
    )]
    password: String,
}

pub(crate) async fn accept_invitation(
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

pub(crate) async fn logout(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, Problem> {
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

fn tenant_json(tenant: &Tenant) -> serde_json::Value {
    serde_json::json!({ "id": tenant.id, "slug": tenant.slug, "name": tenant.name, "plan": tenant.plan })
}

/// A person acting in `tenant`, and every tenant they may switch to.
async fn person_identity(
    state: &AppState,
    tenant: &Tenant,
    user: &User,
) -> Result<Json<serde_json::Value>, Problem> {
    let tenants = state.store.person_tenants(&user.person_id).await?;
    Ok(Json(serde_json::json!({
        "tenant": tenant_json(tenant),
        "as": { "user": user, "tenants": tenants },
    })))
}

/// The caller's tenant and identity; for a person, the tenants they may switch to.
pub(crate) async fn me(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, Problem> {
    match &caller.principal {
        Principal::User { user, .. } => person_identity(&state, &caller.tenant, user).await,
        Principal::Key(key) => Ok(Json(serde_json::json!({
            "tenant": tenant_json(&caller.tenant),
            "as": { "apiKey": key },
        }))),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchTenantBody {
    /// A tenant (id or slug) the person is an active member of.
    #[schemars(length(min = 1, max = 200))]
    tenant: String,
}

/// Points the caller's session at another of the person's tenants.
pub(crate) async fn switch_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<SwitchTenantBody>,
) -> Result<Json<serde_json::Value>, Problem> {
    let Principal::User { session_hash, .. } = &caller.principal else {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "session-required",
            "An API key belongs to one tenant; log in to switch between tenants.",
        ));
    };
    if body.tenant.is_empty() || body.tenant.chars().count() > 200 {
        return Err(Problem::bad("tenant: between 1 and 200 characters"));
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
    person_identity(&state, &tenant, &user).await
}
