//! The table of routes: each route's method, path, what it needs from its caller,
//! its handler and what the OpenAPI document says of it, written once. The router
//! and `/v1/openapi.json` are both built from [`ROUTES`], so a route cannot be served
//! unguarded or undocumented.

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::state::{forget_callers_after_changes, with_request_id, AppState};
use super::{audit, auth, connectors, imports, keys, ledger, problem, reports, settings, users};
use crate::access::{Role, Session};
use crate::connectors::ConnectorView;
use crate::reports::Report;
use crate::sync::StreamSynced;
use ledgersync_config::TenantSettings;
use ledgersync_store::{ApiKey, AuditEntry, PastLoad, SyncRun, User};

/// Largest accepted JSON body (logins, settings, invitations …).
pub const MAX_JSON_BYTES: usize = 64 << 10;

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Nobody,
    /// A user session of at least this role; a `read` API key counts as a viewer.
    Role(Role),
    /// Loading data: a manager or admin session, or an `ingest` API key.
    Import,
}

/// The schemas of a route's path parameters, query, request body and successful
/// response. Path parameters without a schema are plain strings.
#[derive(Default)]
pub struct Shapes {
    pub path: Option<Schema>,
    pub query: Option<Schema>,
    pub request: Option<Schema>,
    pub response: Option<Schema>,
}

/// One route. `serve` builds its handler for the method; `shapes` describes it.
#[derive(Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub need: Need,
    pub summary: &'static str,
    /// Status of a successful answer.
    pub status: u16,
    /// Media type of the request body, where it has one.
    pub request_media: &'static str,
    /// Largest request body, in bytes; a larger one is answered 413.
    pub body_limit: usize,
    /// The problem statuses the route can answer (each a problem document).
    pub errors: &'static [u16],
    serve: fn(MethodFilter) -> MethodRouter<AppState>,
    pub shapes: fn(&mut SchemaGenerator) -> Shapes,
}

const fn route(
    method: &'static str,
    path: &'static str,
    need: Need,
    summary: &'static str,
    serve: fn(MethodFilter) -> MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        need,
        summary,
        status: 200,
        request_media: "application/json",
        body_limit: MAX_JSON_BYTES,
        errors: &[],
        serve,
        shapes: |_| Shapes::default(),
    }
}

impl Route {
    const fn answers(mut self, status: u16) -> Route {
        self.status = status;
        self
    }

    const fn shaped(mut self, shapes: fn(&mut SchemaGenerator) -> Shapes) -> Route {
        self.shapes = shapes;
        self
    }

    const fn body_of(mut self, media: &'static str) -> Route {
        self.request_media = media;
        self
    }

    const fn limit(mut self, bytes: usize) -> Route {
        self.body_limit = bytes;
        self
    }

    const fn fails(mut self, errors: &'static [u16]) -> Route {
        self.errors = errors;
        self
    }
}

/// A named schema, referenced from the document's components.
pub fn of<T: JsonSchema>(g: &mut SchemaGenerator) -> Option<Schema> {
    Some(g.subschema_for::<T>())
}

/// A schema written out in place (query parameters are listed one by one).
pub fn inline<T: JsonSchema>(g: &mut SchemaGenerator) -> Option<Schema> {
    Some(g.root_schema_for::<T>())
}

/// A free-form object, for responses assembled ad hoc.
pub fn object(description: &str) -> Option<Schema> {
    Some(schemars::json_schema!({ "type": "object", "description": description }))
}

// The problem statuses of groups of routes. Every guarded route may answer 401 (no
// or a bad credential) and 403 (not allowed), and every route that reads the store
// 500 (the server failed) and 503 (the store is busy); a JSON body may be malformed
// (400), too large (413), of another media type (415) or off its schema (422).
const GUARDED: &[u16] = &[401, 403, 500, 503];
const GUARDED_QUERY: &[u16] = &[400, 401, 403, 500, 503];
const GUARDED_JSON: &[u16] = &[400, 401, 403, 413, 415, 422, 500, 503];

const VIEWER: Need = Need::Role(Role::Viewer);
const MANAGER: Need = Need::Role(Role::Manager);
const ADMIN: Need = Need::Role(Role::Admin);

/// Every route.
pub const ROUTES: &[Route] = &[
    route("GET", "/healthz", Need::Nobody, "Liveness", |m| on(m, healthz)),
    route(
        "GET",
        "/metrics",
        Need::Nobody,
        "Connector sync metrics in the Prometheus text format, for a scraper presenting the configured metrics token as a bearer credential; off (404) without one",
        |m| on(m, metrics),
    )
    .fails(&[401, 404]),
    route(
        "POST",
        "/v1/auth/login",
        Need::Nobody,
        "Log in with email and password, optionally naming the tenant to act in; returns a session token, the person's tenants, and sets an HttpOnly cookie",
        |m| on(m, auth::login),
    )
    .fails(&[400, 401, 413, 415, 422, 429, 500, 503])
    .shaped(|g| Shapes {
        request: of::<auth::LoginBody>(g),
        response: of::<Session>(g),
        ..Shapes::default()
    }),
    route(
        "POST",
        "/v1/invitations/{token}/accept",
        Need::Nobody,
        "Accept an invitation by setting a password, or with the existing password of a person who has an account (single use, expires)",
        |m| on(m, auth::accept_invitation),
    )
    .fails(&[400, 404, 413, 415, 422, 500, 503])
    .shaped(|g| Shapes {
        request: of::<auth::AcceptBody>(g),
        response: of::<User>(g),
        ..Shapes::default()
    }),
    route("POST", "/v1/auth/logout", VIEWER, "End the session", |m| {
        on(m, auth::logout)
    })
    .answers(204)
    .fails(&[400, 401, 403, 500, 503]),
    route(
        "GET",
        "/v1/me",
        VIEWER,
        "The caller's tenant and identity; for a person, the tenants they belong to",
        |m| on(m, auth::me),
    )
    .fails(GUARDED)
    .shaped(|_| Shapes {
        response: object("tenant, and user with tenants or apiKey"),
        ..Shapes::default()
    }),
    route(
        "POST",
        "/v1/session/tenant",
        VIEWER,
        "Switch the session to another tenant the person is an active member of",
        |m| on(m, auth::switch_tenant),
    )
    .fails(GUARDED_JSON)
    .shaped(|g| Shapes {
        request: of::<auth::SwitchTenantBody>(g),
        response: object("tenant, and user with tenants"),
        ..Shapes::default()
    }),
    route(
        "GET",
        "/v1/reports/{kind}",
        VIEWER,
        "A report (pnl, cash-flow, cogs, staff) from the precomputed aggregates; CSV with Accept: text/csv",
        |m| on(m, reports::report),
    )
    .fails(&[400, 401, 403, 404, 422, 500, 503])
    .shaped(|g| Shapes {
        path: inline::<reports::ReportPath>(g),
        query: inline::<reports::ReportParams>(g),
        response: of::<Report>(g),
        ..Shapes::default()
    }),
    route(
        "GET",
        "/v1/settings",
        VIEWER,
        "The tenant's settings",
        |m| on(m, settings::get_settings),
    )
    .fails(GUARDED)
    .shaped(|g| Shapes {
        response: of::<TenantSettings>(g),
        ..Shapes::default()
    }),
    route(
        "PUT",
        "/v1/settings",
        ADMIN,
        "Replace the settings; features beyond the plan are refused",
        |m| on(m, settings::put_settings),
    )
    .fails(&[400, 401, 403, 413, 422, 500, 503])
    .shaped(|g| Shapes {
        request: of::<TenantSettings>(g),
        response: of::<TenantSettings>(g),
        ..Shapes::default()
    }),
    route(
        "POST",
        "/v1/imports",
        Need::Import,
        "Import a CSV body through a stream; all rows or none",
        |m| on(m, imports::upload_import),
    )
    .answers(201)
    .body_of("text/csv")
    .limit(imports::MAX_UPLOAD_BYTES)
    .fails(&[400, 401, 403, 413, 422, 500, 503])
    .shaped(|g| Shapes {
        query: inline::<imports::ImportParams>(g),
        request: Some(schemars::json_schema!({
            "type": "string",
            "contentMediaType": "text/csv",
            "description": format!(
                "A CSV file with a header row, at most {} bytes (larger bodies are answered 413). \
                 The journal stream reads the columns date, txn_id, account and amount, and \
                 branch, memo and currency where present.",
                imports::MAX_UPLOAD_BYTES
            ),
        })),
        response: object("status and the load summary"),
        ..Shapes::default()
    }),
    route(
        "GET",
        "/v1/loads",
        MANAGER,
        "Loads so far (sync status)",
        |m| on(m, imports::list_loads),
    )
    .fails(GUARDED)
    .shaped(|g| Shapes {
        response: of::<Vec<PastLoad>>(g),
        ..Shapes::default()
    }),
    route(
        "GET",
        "/v1/ledger/transactions",
        MANAGER,
        "The transactions behind a report figure, each with its postings: by month range, branch, account or category, a page at a time",
        |m| on(m, ledger::transactions),
    )
    .fails(&[400, 401, 403, 422, 500, 503])
    .shaped(|g| Shapes {
        query: inline::<ledger::TransactionParams>(g),
        response: of::<ledger::TransactionsPage>(g),
        ..Shapes::default()
    }),
    route("GET", "/v1/users", ADMIN, "Users and seats", |m| {
        on(m, users::list_users)
    })
    .fails(GUARDED)
    .shaped(|_| Shapes {
        response: object("seats and users"),
        ..Shapes::default()
    }),
    route(
        "POST",
        "/v1/users/invitations",
        ADMIN,
        "Invite a person by email within the plan's seats (one per membership); a person with an account elsewhere keeps their password",
        |m| on(m, users::invite_user),
    )
    .answers(201)
    .fails(&[400, 401, 403, 409, 413, 415, 422, 500, 503])
    .shaped(|g| Shapes {
        request: of::<users::InviteBody>(g),
        response: object("the invited user, expiry and where the mail went"),
        ..Shapes::default()
    }),
    route(
        "PATCH",
        "/v1/users/{id}",
        ADMIN,
        "Change a user's role",
        |m| on(m, users::change_role),
    )
    .fails(&[400, 401, 403, 404, 409, 413, 415, 422, 500, 503])
    .shaped(|g| Shapes {
        request: of::<users::RoleBody>(g),
        response: of::<User>(g),
        ..Shapes::default()
    }),
    route("DELETE", "/v1/users/{id}", ADMIN, "Remove a member from the tenant (never its last active admin)", |m| {
        on(m, users::remove_user)
    })
    .answers(204)
    .fails(&[401, 403, 404, 409, 500, 503]),
    route(
        "GET",
        "/v1/apikeys",
        ADMIN,
        "Live API keys, without secrets",
        |m| on(m, keys::list_keys),
    )
    .fails(GUARDED)
    .shaped(|g| Shapes {
        response: of::<Vec<ApiKey>>(g),
        ..Shapes::default()
    }),
    route(
        "POST",
        "/v1/apikeys",
        ADMIN,
        "Create an API key; the secret is returned once",
        |m| on(m, keys::create_key),
    )
    .answers(201)
    .fails(GUARDED_JSON)
    .shaped(|g| Shapes {
        request: of::<keys::KeyBody>(g),
        response: object("key and secret"),
        ..Shapes::default()
    }),
    route(
        "DELETE",
        "/v1/apikeys/{id}",
        ADMIN,
        "Revoke an API key",
        |m| on(m, keys::revoke_key),
    )
    .answers(204)
    .fails(&[401, 403, 404, 500, 503]),
    route(
        "GET",
        "/v1/audit",
        ADMIN,
        "The audit trail, newest first",
        |m| on(m, audit::audit_log),
    )
    .fails(GUARDED_QUERY)
    .shaped(|g| Shapes {
        query: inline::<audit::AuditParams>(g),
        response: of::<Vec<AuditEntry>>(g),
        ..Shapes::default()
    }),
    route(
        "GET",
        "/v1/connectors",
        MANAGER,
        "The tenant's database connectors, their state and last run (never a password)",
        |m| on(m, connectors::list_connectors),
    )
    .fails(GUARDED)
    .shaped(|g| Shapes {
        response: of::<Vec<ConnectorView>>(g),
        ..Shapes::default()
    }),
    route(
        "POST",
        "/v1/connectors",
        ADMIN,
        "Add a database connector from its definition and its streams' mappings (TOML texts) and the database password, which is sealed and never answered",
        |m| on(m, connectors::add_connector),
    )
    .answers(201)
    .limit(connectors::MAX_CONNECTOR_BYTES)
    .fails(&[400, 401, 403, 409, 413, 415, 422, 500, 503])
    .shaped(|g| Shapes {
        request: of::<connectors::ConnectorBody>(g),
        response: of::<ConnectorView>(g),
        ..Shapes::default()
    }),
    route(
        "GET",
        "/v1/connectors/{name}",
        MANAGER,
        "One connector (never its password)",
        |m| on(m, connectors::get_connector),
    )
    .fails(&[401, 403, 404, 500, 503])
    .shaped(|g| Shapes {
        response: of::<ConnectorView>(g),
        ..Shapes::default()
    }),
    route(
        "DELETE",
        "/v1/connectors/{name}",
        ADMIN,
        "Remove a connector and its sealed password; what it synced stays in the ledger",
        |m| on(m, connectors::remove_connector),
    )
    .answers(204)
    .fails(&[401, 403, 404, 500, 503]),
    route(
        "POST",
        "/v1/connectors/{name}/test",
        ADMIN,
        "Connect, log in and read each stream's relation; what failed, in words",
        |m| on(m, connectors::test_connector),
    )
    .fails(&[401, 403, 404, 500, 502, 503])
    .shaped(|g| Shapes {
        response: of::<connectors::ConnectionTest>(g),
        ..Shapes::default()
    }),
    route(
        "GET",
        "/v1/connectors/{name}/discover",
        ADMIN,
        "Tables the connector's user can read, with each column's canonical type",
        |m| on(m, connectors::discover_connector),
    )
    .fails(&[401, 403, 404, 500, 502, 503])
    .shaped(|_| Shapes {
        response: Some(connectors::tables_schema()),
        ..Shapes::default()
    }),
    route(
        "POST",
        "/v1/connectors/{name}/sync",
        MANAGER,
        "Sync every stream now and answer what each did; 409 while another run of the connector holds its lease",
        |m| on(m, connectors::sync_now),
    )
    .fails(&[400, 401, 403, 404, 409, 422, 500, 502, 503])
    .shaped(|g| Shapes {
        query: inline::<connectors::SyncNowParams>(g),
        response: of::<Vec<StreamSynced>>(g),
        ..Shapes::default()
    }),
    route(
        "POST",
        "/v1/connectors/{name}/pause",
        ADMIN,
        "Pause a connector's scheduled syncs",
        |m| on(m, connectors::pause_connector),
    )
    .fails(&[401, 403, 404, 500, 503])
    .shaped(|g| Shapes {
        response: of::<ConnectorView>(g),
        ..Shapes::default()
    }),
    route(
        "POST",
        "/v1/connectors/{name}/resume",
        ADMIN,
        "Resume a connector's scheduled syncs and clear its failures in a row",
        |m| on(m, connectors::resume_connector),
    )
    .fails(&[401, 403, 404, 500, 503])
    .shaped(|g| Shapes {
        response: of::<ConnectorView>(g),
        ..Shapes::default()
    }),
    route(
        "GET",
        "/v1/syncs",
        MANAGER,
        "Connector sync runs, newest first: rows read and written, control sum, cursor before and after, error",
        |m| on(m, connectors::list_syncs),
    )
    .fails(GUARDED_QUERY)
    .shaped(|g| Shapes {
        query: inline::<connectors::SyncParams>(g),
        response: of::<Vec<SyncRun>>(g),
        ..Shapes::default()
    }),
    route(
        "GET",
        "/v1/openapi.json",
        Need::Nobody,
        "This document",
        |m| on(m, openapi),
    )
    .shaped(|_| Shapes {
        response: object("OpenAPI 3.1"),
        ..Shapes::default()
    }),
];

fn method_filter(method: &str) -> MethodFilter {
    match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "PATCH" => MethodFilter::PATCH,
        "DELETE" => MethodFilter::DELETE,
        other => panic!("ROUTES uses the method {other}, which the router does not map"),
    }
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for spec in ROUTES {
        let mut handler = (spec.serve)(method_filter(spec.method));
        if spec.body_limit != MAX_JSON_BYTES {
            handler = handler.layer(DefaultBodyLimit::max(spec.body_limit));
        }
        if spec.need != Need::Nobody {
            let need = spec.need;
            handler = handler.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                move |State(state): State<AppState>, request, next| {
                    auth::guard(state, need, request, next)
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
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(axum::middleware::from_fn(with_request_id))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// The metrics, to the holder of the metrics token only (compared by hash, so the
/// comparison's time says nothing of the token).
async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<String, problem::Problem> {
    use axum::http::StatusCode;
    let Some(expected) = &state.metrics_token_hash else {
        return Err(problem::Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "metrics are off: set [metrics] token (LEDGERSYNC_METRICS__TOKEN) to serve them",
        ));
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(crate::keys::hash);
    if presented.as_deref() != Some(expected.as_str()) {
        return Err(problem::Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "present the metrics token as `Authorization: Bearer <token>`",
        ));
    }
    Ok(state.sync_metrics.render())
}

async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi::document())
}
