//! `GET /v1/openapi.json`: the API described from the code. Paths, methods, summaries
//! and the credentials each needs come from [`ROUTES`]; request and response bodies
//! and query parameters are JSON Schemas derived (schemars) from the Rust types the
//! handlers use; every error is a problem document.

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
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if let Some(query) = &shapes.query {
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
        let success = match shapes.response {
            Some(schema) => {
                let mut body = json_body(schema, "application/json");
                body["description"] = json!("Success");
                body
            }
            None => json!({ "description": "Success" }),
        };
        responses.insert(spec.status.to_string(), success);
        let mut problem = json_body(
            schemars::json_schema!({ "$ref": "#/components/schemas/Problem" }),
            "application/problem+json",
        );
        problem["description"] = json!("An RFC 9457 problem: 400 invalid input, 401 no or bad credentials, 403 not allowed, 404 not found, 409 conflict (e.g. the last admin) or seat limit, 422 rejected rows or settings, 429 login throttled (Retry-After), 503 store unavailable or password checks busy (Retry-After)");
        responses.insert("default".into(), problem);
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
