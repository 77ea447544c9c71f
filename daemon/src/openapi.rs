//! `GET /v1/openapi.json`: the API described from the code. Paths, methods and the
//! credentials each needs come from [`ROUTES`]; request and response bodies and
//! query parameters are JSON Schemas derived (schemars) from the Rust types the
//! handlers use; every error is a problem document.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::access::{Role, Session};
use crate::api::{
    AcceptBody, AuditParams, ImportParams, InviteBody, KeyBody, LoginBody, Need, ReportParams,
    RoleBody, SwitchTenantBody, ROUTES,
};
use crate::reports::Report;
use ledgersync_config::TenantSettings;
use ledgersync_store::{ApiKey, AuditEntry, PastLoad, User};

/// What the table of routes does not say: a summary, bodies and query parameters.
struct Operation {
    summary: &'static str,
    query: Option<Schema>,
    request: Option<Schema>,
    status: u16,
    response: Option<Schema>,
}

/// A free-form object, for responses assembled ad hoc.
fn object(description: &str) -> Option<Schema> {
    Some(schemars::json_schema!({ "type": "object", "description": description }))
}

fn describe(method: &str, path: &str, g: &mut SchemaGenerator) -> Operation {
    fn of<T: JsonSchema>(g: &mut SchemaGenerator) -> Option<Schema> {
        Some(g.subschema_for::<T>())
    }
    fn inline<T: JsonSchema>(g: &mut SchemaGenerator) -> Option<Schema> {
        Some(g.root_schema_for::<T>())
    }
    let op = |summary, query, request, status, response| Operation {
        summary,
        query,
        request,
        status,
        response,
    };
    match (method, path) {
        ("GET", "/healthz") => op("Liveness", None, None, 200, None),
        ("POST", "/v1/auth/login") => op(
            "Log in with email and password; returns a session token and sets an HttpOnly cookie",
            None,
            of::<LoginBody>(g),
            200,
            of::<Session>(g),
        ),
        ("POST", "/v1/invitations/{token}/accept") => op(
            "Accept an invitation by setting a password, or with the existing one of a person who has an account (single use, expires)",
            None,
            of::<AcceptBody>(g),
            200,
            of::<User>(g),
        ),
        ("POST", "/v1/auth/logout") => op("End the session", None, None, 204, None),
        ("GET", "/v1/me") => op("The caller's tenant and identity; for a person, the tenants they belong to", None, None, 200, object("tenant, and user with tenants or apiKey")),
        ("POST", "/v1/session/tenant") => op(
            "Switch the session to another tenant the person is an active member of",
            None,
            of::<SwitchTenantBody>(g),
            200,
            object("tenant, and user with tenants"),
        ),
        ("GET", "/v1/reports/{kind}") => op(
            "A report (pnl, cash-flow, cogs, staff) from the precomputed aggregates; CSV with Accept: text/csv",
            inline::<ReportParams>(g),
            None,
            200,
            of::<Report>(g),
        ),
        ("GET", "/v1/settings") => op("The tenant's settings", None, None, 200, of::<TenantSettings>(g)),
        ("PUT", "/v1/settings") => op(
            "Replace the settings; features beyond the plan are refused",
            None,
            of::<TenantSettings>(g),
            200,
            of::<TenantSettings>(g),
        ),
        ("POST", "/v1/imports") => op(
            "Import a CSV body through a stream; all rows or none",
            inline::<ImportParams>(g),
            Some(schemars::json_schema!({ "type": "string", "contentMediaType": "text/csv" })),
            201,
            object("status and the load summary"),
        ),
        ("GET", "/v1/loads") => op("Loads so far (sync status)", None, None, 200, of::<Vec<PastLoad>>(g)),
        ("GET", "/v1/users") => op("Users and seats", None, None, 200, object("seats and users")),
        ("POST", "/v1/users/invitations") => op(
            "Invite a user by email within the plan's seats",
            None,
            of::<InviteBody>(g),
            201,
            object("the invited user, expiry and where the mail went"),
        ),
        ("PATCH", "/v1/users/{id}") => op("Change a user's role", None, of::<RoleBody>(g), 200, of::<User>(g)),
        ("DELETE", "/v1/users/{id}") => op("Remove a user", None, None, 204, None),
        ("GET", "/v1/apikeys") => op("Live API keys, without secrets", None, None, 200, of::<Vec<ApiKey>>(g)),
        ("POST", "/v1/apikeys") => op(
            "Create an API key; the secret is returned once",
            None,
            of::<KeyBody>(g),
            201,
            object("key and secret"),
        ),
        ("DELETE", "/v1/apikeys/{id}") => op("Revoke an API key", None, None, 204, None),
        ("GET", "/v1/audit") => op("The audit trail, newest first", inline::<AuditParams>(g), None, 200, of::<Vec<AuditEntry>>(g)),
        ("GET", "/v1/openapi.json") => op("This document", None, None, 200, object("OpenAPI 3.1")),
        (method, path) => panic!("the OpenAPI document does not describe {method} {path}"),
    }
}

fn need_text(need: Need) -> String {
    match need {
        Need::Nobody => "No credentials.".into(),
        Need::Role(Role::Viewer) => {
            "A session of any role, or an API key with scope `read`.".into()
        }
        Need::Role(role) => format!("A session with the {role} role or higher."),
        Need::Import => "A manager or admin session, or an API key with scope `ingest`.".into(),
    }
}

fn json_body(schema: Schema, media: &str) -> Value {
    json!({ "content": { media: { "schema": schema } } })
}

/// The whole document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut paths: Map<String, Value> = Map::new();
    for spec in ROUTES {
        let operation = describe(spec.method, spec.path, &mut generator);
        let mut parameters: Vec<Value> = spec
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if let Some(query) = &operation.query {
            let value = query.as_value();
            let required: Vec<&str> = value["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(properties) = value["properties"].as_object() {
                for (name, schema) in properties {
                    parameters.push(json!({ "name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": schema }));
                }
            }
        }
        let mut responses = Map::new();
        let success = match operation.response {
            Some(schema) => {
                let mut body = json_body(schema, "application/json");
                body["description"] = json!("Success");
                body
            }
            None => json!({ "description": "Success" }),
        };
        responses.insert(operation.status.to_string(), success);
        let mut problem = json_body(
            schemars::json_schema!({ "$ref": "#/components/schemas/Problem" }),
            "application/problem+json",
        );
        problem["description"] = json!("An RFC 9457 problem: 400 invalid input, 401 no or bad credentials, 403 not allowed, 404 not found, 409 conflict (e.g. the last admin), seat limit, 422 rejected rows or settings, 429 login throttled (Retry-After), 503 store unavailable or password checks busy (Retry-After)");
        responses.insert("default".into(), problem);
        let mut entry = json!({
            "summary": operation.summary,
            "description": need_text(spec.need),
            "operationId": format!("{} {}", spec.method.to_lowercase(), spec.path),
            "parameters": parameters,
            "responses": responses,
            "security": if spec.need == Need::Nobody { json!([]) } else { json!([{ "bearer": [] }, { "sessionCookie": [] }]) },
        });
        if let Some(request) = operation.request {
            let media = if spec.path == "/v1/imports" {
                "text/csv"
            } else {
                "application/json"
            };
            let mut body = json_body(request, media);
            body["required"] = json!(true);
            entry["requestBody"] = body;
        }
        let item = paths
            .entry(spec.path.to_string())
            .or_insert_with(|| json!({}));
        item[spec.method.to_lowercase()] = entry;
    }
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    schemas.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": { "type": "string", "description": "Stable URI naming the kind of problem" },
                "title": { "type": "string" },
                "status": { "type": "integer" },
                "detail": { "type": "string" },
                "errors": { "type": "array", "description": "Rejected rows (file line and reason) for rows-rejected" },
                "retryAfterSeconds": { "type": "integer", "description": "For login-throttled" }
            }
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ledgersync",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Finance aggregates for F&B dashboards. The credential decides the tenant."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "A session token (lss_…) from /v1/auth/login, or an API key (lsk_…)" },
                "sessionCookie": { "type": "apiKey", "in": "cookie", "name": "ledgersync_session" }
            }
        }
    })
}
