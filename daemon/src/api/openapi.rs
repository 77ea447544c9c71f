//! `GET /v1/openapi.json`: the API described from the code. Paths, methods, summaries
//! and the credentials each needs come from [`ROUTES`]; request and response bodies
//! and query parameters are JSON Schemas derived (schemars) from the Rust types the
//! handlers use, with the constraints the handlers enforce; every error status a
//! route can answer is listed, each a problem document.

use schemars::generate::SchemaSettings;
use schemars::Schema;
use serde_json::{json, Map, Value};

use super::routes::{Need, ROUTES};
use crate::access::Role;

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

/// What a problem status means, as the document describes it.
fn error_text(status: u16) -> &'static str {
    match status {
        400 => "Invalid input: a parameter or body off its schema; the detail says what to fix",
        401 => "No credential, or one that is wrong or expired",
        403 => "The credential does not allow this (role, key scope, plan or feature)",
        404 => "No such resource",
        409 => "Conflicts with the current state (a seat limit, a rule about admins, a name in use, a sync running)",
        413 => "The body is larger than the route accepts",
        415 => "The body is not of the media type the route reads",
        422 => "Valid in form, refused on its content (rejected rows, an unreadable file, a reversed range, settings that do not hold); the detail says why",
        429 => "Too many failed logins; retry after retryAfterSeconds",
        502 => "The connector's database failed or could not be reached; the detail says what failed, in words, and kind names the failure",
        500 => "The server failed; the detail is generic and requestId names the failure in the server's log",
        503 => "The store is busy or unreachable; try again shortly (requestId as for 500)",
        _ => "A problem",
    }
}

/// An optional query parameter is absent, never null: its schema without the null
/// alternative schemars gives an `Option`.
fn never_null(mut schema: Value) -> Value {
    let is_null = |alternative: &Value| {
        alternative.get("enum") == Some(&json!([null]))
            || alternative.get("type") == Some(&json!("null"))
    };
    if let Some(fields) = schema.as_object_mut() {
        fields.remove("nullable");
        if let Some(Value::Array(alternatives)) = fields.remove("anyOf") {
            let mut kept: Vec<Value> = alternatives.into_iter().filter(|a| !is_null(a)).collect();
            match kept.pop() {
                Some(Value::Object(only)) if kept.is_empty() => fields.extend(only),
                Some(last) => {
                    kept.push(last);
                    fields.insert("anyOf".into(), Value::Array(kept));
                }
                None => {}
            }
        }
    }
    schema
}

/// The path parameter `name`'s schema, from the route's path shape or a string.
fn path_parameter(path: Option<&Schema>, name: &str) -> Value {
    let schema = path
        .and_then(|schema| schema.as_value().get("properties"))
        .and_then(|properties| properties.get(name))
        .cloned()
        .unwrap_or_else(|| json!({ "type": "string" }));
    json!({ "name": name, "in": "path", "required": true, "schema": schema })
}

/// The whole document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut paths: Map<String, Value> = Map::new();
    for spec in ROUTES {
        let shapes = (spec.shapes)(&mut generator);
        let mut parameters: Vec<Value> = spec
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| path_parameter(shapes.path.as_ref(), name))
            .collect();
        if let Some(query) = &shapes.query {
            let value = query.as_value();
            let required: Vec<&str> = value["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(properties) = value["properties"].as_object() {
                for (name, schema) in properties {
                    let schema = never_null(schema.clone());
                    parameters.push(json!({ "name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": schema }));
                }
            }
        }
        let mut responses = Map::new();
        let success = match shapes.response {
            Some(schema) => {
                let mut body = json_body(schema, "application/json");
                body["description"] = json!("Success");
                body
            }
            None => json!({ "description": "Success" }),
        };
        responses.insert(spec.status.to_string(), success);
        for &status in spec.errors {
            let mut problem = json_body(
                schemars::json_schema!({ "$ref": "#/components/schemas/Problem" }),
                "application/problem+json",
            );
            problem["description"] = json!(error_text(status));
            responses.insert(status.to_string(), problem);
        }
        let mut entry = json!({
            "summary": spec.summary,
            "description": need_text(spec.need),
            "operationId": format!("{} {}", spec.method.to_lowercase(), spec.path),
            "parameters": parameters,
            "responses": responses,
            "security": if spec.need == Need::Nobody { json!([]) } else { json!([{ "bearer": [] }, { "sessionCookie": [] }]) },
        });
        if let Some(request) = shapes.request {
            let mut body = json_body(request, spec.request_media);
            body["required"] = json!(true);
            let limit = spec.body_limit;
            body["description"] = json!(format!(
                "At most {limit} bytes; a larger body is answered 413."
            ));
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
                "detail": { "type": "string", "description": "For 4xx what to fix; for 5xx a generic text" },
                "requestId": { "type": "string", "description": "For 5xx: the request's id (also its x-request-id header), which the server's log names the failure by" },
                "errors": {
                    "type": "array",
                    "description": "For rows-rejected: the first rejected rows, each with its file line and a reason (values quoted in it are cut to 80 characters)",
                    "items": {
                        "type": "object",
                        "required": ["line", "reason"],
                        "properties": { "line": { "type": "integer" }, "reason": { "type": "string" } }
                    }
                },
                "total": { "type": "integer", "description": "For rows-rejected: how many rows were rejected in all" },
                "retryAfterSeconds": { "type": "integer", "description": "For login-throttled" },
                "kind": { "type": "string", "description": "For source-failed: unreachable, tls, login, permission, timeout, interrupted, definition, type or other" }
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
