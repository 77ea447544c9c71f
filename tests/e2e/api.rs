//! The HTTP API over real sockets.

use ledgersync::import::import_csv;
use ledgersync_config::StreamDef;
use ledgersync_store::Tenant;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    new_key, options, postgres_store, provision, spawn_app, sqlite_store, write, TestApp, TestStore,
};

const JOURNAL: &str = "date,txn_id,account,amount,branch
2025-01-10,S1,1000,1100.5,Kemang
2025-01-10,S1,4010,-1000.5,Kemang
2025-01-10,S1,2100,-100,Kemang
2025-02-10,P1,5010,400,Kemang
2025-02-10,P1,1010,-400,Kemang
";

/// A served SQLite store whose tenant has imported `JOURNAL`.
async fn app_with_journal() -> (crate::helpers::TestStore, crate::helpers::TestApp) {
    let test = sqlite_store().await;
    let app = spawn_app(test.store.clone()).await;
    let file = write(test.dir.path(), "gl.csv", JOURNAL);
    import_csv(
        app.store.clone(),
        &app.tenant,
        StreamDef::journal(),
        &file,
        &options(),
    )
    .await
    .unwrap();
    (test, app)
}

#[tokio::test]
async fn reports_are_served_as_json_and_csv_to_the_key_holder_only() {
    let (_test, app) = app_with_journal().await;
    let url = format!("{}/v1/reports/pnl?from=2025-01&to=2025-02", app.address);

    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let anonymous = app.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = anonymous.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/unauthorized"));

    let json: Value = app.get_json(&url, &app.key).await;
    assert_eq!(json["rows"][0]["period"], "2025-01");
    assert_eq!(json["rows"][0]["revenue"], "1000.5");
    assert_eq!(json["rows"][1]["cogs"], "400");
    assert_eq!(json["rows"][1]["net_profit"], "-400");

    // A new load shows at once, cache or not.
    let more = write(
        app.outbox.path(),
        "more.csv",
        "date,txn_id,account,amount\n2025-01-20,S2,1000,99.5\n2025-01-20,S2,4010,-99.5\n",
    );
    import_csv(
        app.store.clone(),
        &app.tenant,
        StreamDef::journal(),
        &more,
        &options(),
    )
    .await
    .unwrap();
    let json: Value = app.get_json(&url, &app.key).await;
    assert_eq!(json["rows"][0]["revenue"], "1100");

    let csv = app
        .client
        .get(format!(
            "{}/v1/reports/cash-flow?from=2025-01&to=2025-02&branch=Kemang",
            app.address
        ))
        .bearer_auth(&app.key)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), StatusCode::OK);
    assert_eq!(
        csv.text().await.unwrap(),
        "period,opening_cash,operating_in,operating_out,investing_in,investing_out,financing_in,financing_out,net_change,closing_cash\n\
         2025-01,0,1100.5,0,0,0,0,0,1100.5,1100.5\n\
         2025-02,1100.5,0,-400,0,0,0,0,-400,700.5\n"
    );

    // Another tenant's key sees that tenant's (empty) books, whatever it asks.
    let other = provision(app.store.as_ref(), "lite").await;
    let other_key = new_key(app.store.as_ref(), &other, "read").await;
    let theirs: Value = app.get_json(&url, &other_key).await;
    assert_eq!(theirs["rows"][0]["revenue"], "0");
    assert_eq!(theirs["tenant"], other.slug.as_str());

    let ingest_key = new_key(app.store.as_ref(), &app.tenant, "ingest").await;
    let forbidden = app.get(&url, &ingest_key).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);

    let bad = app
        .get(
            format!("{}/v1/reports/pnl?from=2025-13&to=2025-02", app.address),
            &app.key,
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let problem: Value = bad.json().await.unwrap();
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("from: '2025-13' is not a month"));

    let unknown = app
        .get(
            format!(
                "{}/v1/reports/balance-sheet?from=2025-01&to=2025-02",
                app.address
            ),
            &app.key,
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn periods_group_months_by_quarter_and_fiscal_year() {
    let (_test, app) = app_with_journal().await;
    let get = |by: &'static str| {
        let app = &app;
        async move {
            let url = format!(
                "{}/v1/reports/staff?from=2024-12&to=2025-03&by={by}",
                app.address
            );
            app.get(url, &app.key).await.json::<Value>().await.unwrap()
        }
    };
    let quarters = get("quarter").await;
    let labels: Vec<&str> = quarters["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["period"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["2024-Q4", "2025-Q1"]);
    assert_eq!(quarters["rows"][1]["prime_cost"], "400");
    assert_eq!(quarters["rows"][1]["prime_cost_pct"], "39.98");
    let ytd = get("ytd").await;
    assert_eq!(ytd["rows"][3]["period"], "2025-03");
    assert_eq!(ytd["rows"][3]["revenue"], "1000.5");
}

#[tokio::test]
async fn the_api_describes_every_route() {
    let test = sqlite_store().await;
    let app = spawn_app(test.store.clone()).await;
    let doc: Value = app
        .client
        .get(format!("{}/v1/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for route in ledgersync::api::ROUTES {
        let operation = &doc["paths"][route.path][route.method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{} {} is missing from openapi.json",
            route.method,
            route.path
        );
        // Every problem status the route can answer is listed, each a problem document.
        let guarded = route.need != ledgersync::api::Need::Nobody;
        for status in route.errors {
            assert!(
                operation["responses"][status.to_string()]["content"]["application/problem+json"]
                    .is_object(),
                "{} {} lacks {status}",
                route.method,
                route.path
            );
        }
        if guarded {
            for status in [401, 403, 500, 503] {
                assert!(
                    route.errors.contains(&status),
                    "{} {} lacks {status}",
                    route.method,
                    route.path
                );
            }
        }
        let public = route.need == ledgersync::api::Need::Nobody;
        assert_eq!(
            operation["security"].as_array().unwrap().is_empty(),
            public,
            "{}",
            route.path
        );
        for name in route
            .path
            .split('/')
            .filter_map(|p| p.strip_prefix('{')?.strip_suffix('}'))
        {
            let params = operation["parameters"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path"),
                "{} lacks {name}",
                route.path
            );
        }
    }
    // Every reference resolves, and the report parameters and amounts are described.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "unresolved schema {name}"
        );
    }
    let report = &doc["paths"]["/v1/reports/{kind}"]["get"];
    let params: Vec<&str> = report["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["kind", "from", "to", "branch", "by"] {
        assert!(params.contains(&name), "{params:?}");
    }
    let kind = report["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "kind")
        .unwrap();
    let resolve = |schema: &Value| match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            doc["components"]["schemas"][name].clone()
        }
        None => schema.clone(),
    };
    assert_eq!(
        resolve(&kind["schema"])["enum"],
        serde_json::json!(["pnl", "cash-flow", "cogs", "staff"])
    );
    // The constraints the handlers enforce are stated where the types are.
    let schemas = &doc["components"]["schemas"];
    let parameter = |path: &str, method: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    assert_eq!(
        parameter("/v1/reports/{kind}", "get", "from")["pattern"],
        "^[0-9]{4}-(0[1-9]|1[0-2])$"
    );
    // An enum is `enum`, or `oneOf` single values where a variant has a doc comment.
    let values = |schema: &Value| -> Vec<String> {
        let schema = resolve(schema);
        let alternatives = match schema["oneOf"].as_array() {
            Some(alternatives) => alternatives.clone(),
            None => vec![schema.clone()],
        };
        alternatives
            .iter()
            .flat_map(|a| match a["enum"].as_array() {
                Some(values) => values.clone(),
                None => vec![a["const"].clone()],
            })
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        values(&parameter("/v1/reports/{kind}", "get", "by")),
        ["month", "quarter", "year", "fiscal-year", "ytd"]
    );
    assert_eq!(parameter("/v1/audit", "get", "limit")["maximum"], 1000);
    assert_eq!(schemas["KeyBody"]["properties"]["name"]["maxLength"], 100);
    assert_eq!(
        values(&schemas["KeyBody"]["properties"]["scope"]),
        ["read", "ingest"]
    );
    assert_eq!(
        values(&schemas["InviteBody"]["properties"]["role"]),
        ["viewer", "manager", "admin"]
    );
    assert_eq!(
        schemas["AcceptBody"]["properties"]["password"]["minLength"],
        12
    );
    let connector = &schemas["ConnectorBody"]["properties"];
    assert_eq!(connector["name"]["maxLength"], 64);
    assert_eq!(connector["name"]["pattern"], "^[A-Za-z0-9_-]+$");
    assert_eq!(connector["definition"]["maxLength"], 65536);
    assert_eq!(connector["mappings"]["maxProperties"], 16);
    assert_eq!(
        connector["mappings"]["additionalProperties"]["maxLength"],
        65536
    );
    assert_eq!(connector["password"]["minLength"], 1);
    assert_eq!(connector["password"]["maxLength"], 1024);
    assert_eq!(parameter("/v1/syncs", "get", "limit")["maximum"], 1000);
    assert!(
        doc["paths"]["/v1/connectors"]["post"]["requestBody"]["description"]
            .as_str()
            .unwrap()
            .contains(&ledgersync::api::connectors::MAX_CONNECTOR_BYTES.to_string())
    );
    assert!(doc["paths"]["/v1/connectors/{name}/sync"]["post"]["responses"]["502"].is_object());
    let settings = &schemas["TenantSettings"]["properties"];
    assert_eq!(settings["companyName"]["maxLength"], 200);
    assert!(settings["timezone"]["enum"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("Asia/Jakarta")));
    let upload = &doc["paths"]["/v1/imports"]["post"]["requestBody"];
    assert!(upload["content"]["text/csv"].is_object());
    assert!(upload["description"]
        .as_str()
        .unwrap()
        .contains(&ledgersync::api::imports::MAX_UPLOAD_BYTES.to_string()));
    assert_eq!(doc["components"]["schemas"]["Amount"]["type"], "string");
    assert!(
        doc["components"]["schemas"]["TenantSettings"]["properties"]["fiscalYearStart"].is_object()
    );
}

/// Drops `tables` from the tenant's database behind the store's back: what a damaged
/// database looks like to the server.
async fn damage_tenant_database(test: &TestStore, tenant: &Tenant, tables: &[&str]) {
    // SQLite has no CASCADE (nor anything depending on a table to cascade to).
    let cascade = match test.url.starts_with("sqlite://") {
        true => "",
        false => " CASCADE",
    };
    let drops: Vec<String> = tables
        .iter()
        .map(|table| format!("DROP TABLE IF EXISTS {table}{cascade}"))
        .collect();
    let drops: Vec<&str> = drops.iter().map(String::as_str).collect();
    crate::helpers::tenant_sql(test, tenant, &drops).await;
}

async fn upload(app: &TestApp, key: &str, name: &str, body: String) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/imports?name={name}", app.address))
        .bearer_auth(key)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap()
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A 4xx says what to fix; a 5xx says only that the server failed, with the id its
/// log names the failure by, and never the failure's own text.
async fn input_errors_say_what_to_fix_and_failures_only_an_id(test: TestStore) {
    let app = spawn_app(test.store.clone()).await;
    let ingest = new_key(app.store.as_ref(), &app.tenant, "ingest").await;

    let empty = upload(&app, &ingest, "march.csv", String::new()).await;
    assert_eq!(empty.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(is_generated_id(
        empty.headers()["x-request-id"].to_str().unwrap()
    ));
    let problem: Value = empty.json().await.unwrap();
    assert!(problem["type"]
        .as_str()
        .unwrap()
        .ends_with("/unreadable-file"));
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("march.csv") && detail.contains("no header row"),
        "{detail}"
    );
    assert!(!detail.contains("ledgersync-upload"), "{detail}");
    assert!(problem.get("requestId").is_none());

    let missing = upload(
        &app,
        &ingest,
        "march.csv",
        "date,amount\n2025-01-10,5\n".into(),
    )
    .await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = missing.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("missing column(s)") && detail.contains("txn_id"),
        "{detail}"
    );

    let reversed = app
        .get(
            format!("{}/v1/reports/pnl?from=2025-03&to=2025-01", app.address),
            &app.key,
        )
        .await;
    assert_eq!(reversed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = reversed.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("reversed"));

    damage_tenant_database(&test, &app.tenant, &["accounts", "month_rollups"]).await;
    let report = app
        .client
        .get(format!(
            "{}/v1/reports/pnl?from=2025-01&to=2025-02",
            app.address
        ))
        .bearer_auth(&app.key)
        .header("x-request-id", "probe-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(report.headers()["x-request-id"], "probe-42.a_b");
    assert_eq!(report.headers()["content-type"], "application/problem+json");
    let text = report.text().await.unwrap();
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/internal"));
    assert_eq!(problem["requestId"], "probe-42.a_b");
    for internal in ["month_rollups", "table", "relation", "sqlx", "database"] {
        assert!(!text.to_lowercase().contains(internal), "{text}");
    }

    // An id a log line should not carry is replaced by one of the server's.
    let import = app
        .client
        .post(format!("{}/v1/imports?name=gl.csv", app.address))
        .bearer_auth(&ingest)
        .header("x-request-id", "two words\tand a tab")
        .body(JOURNAL)
        .send()
        .await
        .unwrap();
    assert_eq!(import.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let id = import.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(is_generated_id(&id), "{id}");
    let text = import.text().await.unwrap();
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["requestId"], id.as_str());
    for internal in [
        "accounts",
        "table",
        "relation",
        "chart",
        "ledgersync-upload",
    ] {
        assert!(!text.to_lowercase().contains(internal), "{text}");
    }
}

#[tokio::test]
async fn input_errors_and_failures_are_told_apart_on_sqlite() {
    input_errors_say_what_to_fix_and_failures_only_an_id(sqlite_store().await).await;
}

#[tokio::test]
async fn input_errors_and_failures_are_told_apart_on_postgres() {
    input_errors_say_what_to_fix_and_failures_only_an_id(postgres_store().await).await;
}

/// A refused upload's answer and load record quote bad cells by a short prefix, list
/// a bounded number of rows, and name the upload as its sender did.
async fn refusals_stay_small_and_name_the_upload(test: TestStore) {
    let app = spawn_app(test.store.clone()).await;
    let ingest = new_key(app.store.as_ref(), &app.tenant, "ingest").await;
    let header = "date,txn_id,account,amount\n";

    let huge_cell = format!("1x{}", "9".repeat(5 << 20));
    let one_bad_line = format!("{header}2025-01-10,S1,1000,{huge_cell}\n2025-01-10,S1,4010,-1\n");
    let answer = upload(&app, &ingest, "gl-march.csv", one_bad_line).await;
    assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = answer.text().await.unwrap();
    assert!(text.len() < 2_000, "{} bytes", text.len());
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["total"], 1);
    let reason = problem["errors"][0]["reason"].as_str().unwrap();
    assert_eq!(problem["errors"][0]["line"], 2);
    assert!(
        reason.starts_with("non-numeric amount '1x999") && reason.contains("…'"),
        "{reason}"
    );

    let big_cell = "7".repeat(40 << 10);
    let many_bad_lines: String = std::iter::once(header.to_string())
        .chain((0..150).map(|i| format!("2025-01-10,S{i},1000,x{big_cell}\n")))
        .collect();
    let answer = upload(&app, &ingest, "gl-march.csv", many_bad_lines).await;
    assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = answer.text().await.unwrap();
    assert!(text.len() < 40_000, "{} bytes", text.len());
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["total"], 150);
    assert_eq!(problem["errors"].as_array().unwrap().len(), 100);

    let unreadable = upload(&app, &ingest, "gl-march.csv", "\n\n".into()).await;
    assert_eq!(unreadable.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // What `GET /v1/loads` lists: the upload's own name, and short problems.
    let loads = app.store.loads(&app.tenant).await.unwrap();
    assert_eq!(loads.len(), 3);
    for load in &loads {
        assert_eq!(load.status, "failed");
        assert_eq!(load.origin, "gl-march.csv");
        let problem = load.problem.as_deref().unwrap();
        assert!(
            problem.chars().count() <= 2_001,
            "{} characters",
            problem.len()
        );
        assert!(!problem.contains("ledgersync-upload"), "{problem}");
    }
    assert!(loads[2]
        .problem
        .as_deref()
        .unwrap()
        .contains("gl-march.csv"));
}

#[tokio::test]
async fn refusals_stay_small_and_name_the_upload_on_sqlite() {
    refusals_stay_small_and_name_the_upload(sqlite_store().await).await;
}

#[tokio::test]
async fn refusals_stay_small_and_name_the_upload_on_postgres() {
    refusals_stay_small_and_name_the_upload(postgres_store().await).await;
}
