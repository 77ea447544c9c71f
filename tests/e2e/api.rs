//! The HTTP API over real sockets.

use ledgersync::import::import_csv;
use ledgersync_config::StreamDef;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{new_key, options, provision, spawn_app, sqlite_store, write};

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
        assert!(
            operation["responses"]["default"]["content"]["application/problem+json"].is_object()
        );
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
    assert_eq!(doc["components"]["schemas"]["Amount"]["type"], "string");
    assert!(
        doc["components"]["schemas"]["TenantSettings"]["properties"]["fiscalYearStart"].is_object()
    );
}
