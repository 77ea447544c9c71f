//! Who a request is: sessions and API keys, the guard every non-public route gets,
//! and the routes that create and end sessions (login, invitations, logout).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
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
    email: String,
    password: String,
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
    Body(body): Body<LoginBody>,
) -> Result<Response, Problem> {
    if body.email.len() > 254 || body.password.len() > 1024 {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-credentials",
            "Wrong email or password.",
        ));
    }
    match access::login(state.store.as_ref(), &body.email, &body.password).await {
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
            Ok(([(SET_COOKIE, cookie)], Json(session)).into_response())
        }
        Err(AccessError::Throttled { retry_after_secs }) => Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "login-throttled",
            format!("Too many failed logins; try again in {retry_after_secs} s."),
        )
        .with(serde_json::json!({ "retryAfterSeconds": retry_after_secs }))),
        Err(AccessError::Internal(e)) => Err(Problem::unavailable(e)),
        Err(_) => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-credentials",
            "Wrong email or password.",
        )),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    /// At least 12 characters and at most 1024 bytes, with a letter and a digit, not
    /// the email address.
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
) -> Result<Json<User>, Problem> {
    match access::accept(state.store.as_ref(), &token, &body.password).await {
        Ok((_, user)) => Ok(Json(user)),
        Err(AccessError::WeakPassword(reason)) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "weak-password",
            reason,
        )),
        Err(AccessError::InvalidInvitation(reason)) => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "invalid-invitation",
            reason,
        )),
        Err(e) => Err(Problem::unavailable(e)),
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

pub(crate) async fn me(caller: Caller) -> Result<Json<serde_json::Value>, Problem> {
    let who = match &caller.principal {
        Principal::User { user, .. } => serde_json::json!({ "user": user }),
        Principal::Key(key) => serde_json::json!({ "apiKey": key }),
    };
    Ok(Json(
        serde_json::json!({ "tenant": { "id": caller.tenant.id, "slug": caller.tenant.slug, "plan": caller.tenant.plan }, "as": who }),
    ))
}
