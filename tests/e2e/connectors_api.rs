//! `/v1/connectors` and `/v1/syncs` over real HTTP against a real PostgreSQL source
//! database: an admin adds a connector with its texts and password, a manager reads
//! it and syncs it (the ledger then equals the source), viewers and read keys are
//! refused, bad inputs are answered in words, another tenant sees none of it, and
//! the password is in no answer and nowhere in the store.

use std::path::Path;

use ledgersync::api::AppState;
use ledgersync::Application;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::access::{add_user, provisioned_admin, session};
use crate::connectors::{
    assert_no_plaintext, ledger_figures, pos_mapping, sales_insert, SourceDb, SourceKind, PASSWORD,
};
use crate::helpers::{config_with_outbox, new_key, spawn_app, sqlite_store, TestApp};

fn mapping_text() -> String {
    std::fs::read_to_string(pos_mapping()).unwrap()
}

/// The source's connector definition as a remote client sends it: without the
/// `mapping` path (its text goes in `mappings`).
fn definition_text(source: &SourceDb, dir: &Path) -> String {
    std::fs::read_to_string(source.spec(dir))
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("mapping = "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A definition of a PostgreSQL database where nothing listens.
const DOWN: &str = "kind = \"postgres\"\nhost = \"127.0.0.1\"\nport = 1\ndatabase = \"pos\"\n\
                    user = \"reader\"\ntls = \"disable\"\n\n[[streams]]\nname = \"pos_sales\"\n\
                    table = \"sales\"\n";

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    credential: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut request = app
        .client
        .request(method.parse().unwrap(), format!("{}{path}", app.address))
        .bearer_auth(credential);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn connectors_are_managed_and_synced_over_http_by_role_and_tenant() {
    let test = sqlite_store().await;
    let app = spawn_app(test.store.clone()).await;
    let (tenant, admin) = provisioned_admin(&app, "owner@kopi.example", "pro").await;
    add_user(&app, &admin, "manager@kopi.example", "manager").await;
    add_user(&app, &admin, "viewer@kopi.example", "viewer").await;
    let manager = session(&app, "manager@kopi.example").await;
    let viewer = session(&app, "viewer@kopi.example").await;
    let read_key = new_key(app.store.as_ref(), &tenant, "read").await;

    let source = SourceDb::create(SourceKind::Postgres).await;
    source
        .execute(&sales_insert(SourceKind::Postgres, 0, 300, None))
        .await;
    let definition = definition_text(&source, test.dir.path());
    let body = json!({
        "name": "pos",
        "definition": definition,
        "mappings": { "pos_sales": mapping_text() },
        "password": PASSWORD,
    });

    // An admin adds it; neither the answer nor any read holds the password.
    let (status, text) = send(&app, "POST", "/v1/connectors", &admin, Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert!(
        !text.contains(PASSWORD) && !text.contains("password"),
        "{text}"
    );
    let added = json_of(&text);
    assert_eq!(added["name"], "pos");
    assert_eq!(added["kind"], "postgres");
    assert_eq!(added["database"], source.name.as_str());
    assert_eq!(added["streams"][0]["name"], "pos_sales");
    assert_eq!(added["streams"][0]["mode"], "incremental by updated_at");
    assert!(
        added["paused"].is_null() && added["last_run"].is_null(),
        "{text}"
    );

    // The password was sealed under the tenant's data key, wrapped by the master
    // key in the daemon's key file.
    assert!(app.keys.path().join("master.key").is_file());

    // Adding the same name again is a conflict.
    let (status, text) = send(&app, "POST", "/v1/connectors", &admin, Some(body.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert!(
        text.contains("already has a connector named 'pos'"),
        "{text}"
    );

    // A manager lists and reads it.
    let (status, text) = send(&app, "GET", "/v1/connectors", &manager, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    let list = json_of(&text);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "pos");
    let (status, text) = send(&app, "GET", "/v1/connectors/pos", &manager, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert_eq!(json_of(&text)["host"], "127.0.0.1");

    // The admin's test reaches the database, logs in and reads the table.
    let (status, text) = send(&app, "POST", "/v1/connectors/pos/test", &admin, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let tested = json_of(&text);
    assert_eq!(tested["ok"], true, "{text}");
    assert!(
        tested["server"].as_str().unwrap().starts_with("PostgreSQL"),
        "{text}"
    );
    assert!(tested.get("error").is_none(), "{text}");
    let (status, text) = send(&app, "GET", "/v1/connectors/pos/discover", &admin, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let tables = json_of(&text);
    let sales = tables
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "sales")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(sales["columns"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "net_amount" && c["canonical"] == "decimal"));

    // The manager syncs it now: every row, and the ledger equals the source.
    let (status, text) = send(&app, "POST", "/v1/connectors/pos/sync", &manager, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let synced = json_of(&text);
    assert_eq!(synced[0]["stream"], "pos_sales");
    assert_eq!(synced[0]["rows_read"], 300, "{text}");
    let expected = source.monthly_figures().await;
    assert!(expected.len() >= 12, "{expected:?}");
    assert_eq!(
        ledger_figures(app.store.as_ref(), &tenant, &expected).await,
        expected
    );

    // The run is in the history, by connector and limit.
    let (status, text) = send(&app, "GET", "/v1/syncs", &manager, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let runs = json_of(&text);
    assert_eq!(runs.as_array().unwrap().len(), 1, "{text}");
    assert_eq!(runs[0]["connector"], "pos");
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["trigger"], "manual");
    assert_eq!(runs[0]["rows_read"], 300);
    let (status, text) = send(
        &app,
        "GET",
        "/v1/syncs?connector=pos&limit=1",
        &manager,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(json_of(&text).as_array().unwrap().len(), 1);
    let (_, text) = send(&app, "GET", "/v1/syncs?connector=other", &manager, None).await;
    assert_eq!(json_of(&text), json!([]));
    for query in ["limit=0", "limit=1001", "connector=no%20spaces", "since=1"] {
        let (status, text) = send(&app, "GET", &format!("/v1/syncs?{query}"), &manager, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {text}");
    }
    let (_, text) = send(&app, "GET", "/v1/connectors/pos", &manager, None).await;
    assert_eq!(json_of(&text)["last_run"]["status"], "succeeded", "{text}");

    // A sync while another run holds the lease is refused, and runs once it is free.
    let id = app
        .store
        .connector(&tenant.id, "pos")
        .await
        .unwrap()
        .unwrap()
        .id;
    let now = chrono::Utc::now().timestamp_millis();
    assert!(app
        .store
        .acquire_lease(&id, "another-daemon", now, now + 60_000, None)
        .await
        .unwrap());
    let (status, text) = send(&app, "POST", "/v1/connectors/pos/sync", &manager, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("syncing now"), "{text}");
    app.store
        .release_lease(&id, "another-daemon")
        .await
        .unwrap();
    let (status, text) = send(&app, "POST", "/v1/connectors/pos/sync", &manager, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");

    // A manager may not add, test, discover, pause, resume or remove.
    let admin_only = [
        ("POST", "/v1/connectors"),
        ("POST", "/v1/connectors/pos/test"),
        ("GET", "/v1/connectors/pos/discover"),
        ("POST", "/v1/connectors/pos/pause"),
        ("POST", "/v1/connectors/pos/resume"),
        ("DELETE", "/v1/connectors/pos"),
    ];
    let other_body = json!({ "name": "pos2", "definition": DOWN, "mappings": { "pos_sales": mapping_text() }, "password": "x" });
    for (method, path) in admin_only {
        let body = (path == "/v1/connectors").then(|| other_body.clone());
        let (status, text) = send(&app, method, path, &manager, body).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "manager {method} {path}: {text}"
        );
    }
    // A viewer and a read key may do nothing with connectors.
    let manager_too = [
        ("GET", "/v1/connectors"),
        ("GET", "/v1/connectors/pos"),
        ("POST", "/v1/connectors/pos/sync"),
        ("GET", "/v1/syncs"),
    ];
    for credential in [&viewer, &read_key] {
        for (method, path) in admin_only.iter().chain(manager_too.iter()) {
            let body = (*path == "/v1/connectors").then(|| other_body.clone());
            let (status, text) = send(&app, method, path, credential, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {text}");
        }
    }
    assert!(app
        .store
        .connector(&tenant.id, "pos2")
        .await
        .unwrap()
        .is_none());

    // A database where nothing listens: the test says so in words, a sync is a 502.
    let down = json!({ "name": "down", "definition": DOWN, "mappings": { "pos_sales": mapping_text() }, "password": PASSWORD });
    let (status, text) = send(&app, "POST", "/v1/connectors", &admin, Some(down)).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let (status, text) = send(&app, "POST", "/v1/connectors/down/test", &admin, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let tested = json_of(&text);
    assert_eq!(tested["ok"], false, "{text}");
    assert_eq!(tested["error"]["kind"], "unreachable", "{text}");
    assert!(!tested["error"]["message"].as_str().unwrap().is_empty());
    assert!(!text.contains(PASSWORD), "{text}");
    let (status, text) = send(&app, "POST", "/v1/connectors/down/sync", &manager, None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{text}");
    let problem = json_of(&text);
    assert_eq!(problem["kind"], "unreachable", "{text}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("unreachable: "),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    let (status, text) = send(&app, "GET", "/v1/connectors/down/discover", &admin, None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{text}");
    let (_, text) = send(&app, "GET", "/v1/syncs?connector=down", &manager, None).await;
    assert_eq!(json_of(&text)[0]["status"], "failed", "{text}");

    // Bad inputs are answered with what to fix.
    let mapping = mapping_text();
    let cases = [
        (
            json!({ "name": "x", "definition": DOWN, "mappings": { "pos_sales": mapping }, "password": "p", "port": 5 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `port`",
        ),
        (
            json!({ "name": "x", "definition": "kind = \"postgres\"\nhost = ", "mappings": {}, "password": "p" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "connector definition: TOML parse error",
        ),
        (
            json!({ "name": "x", "definition": DOWN.replace("kind = \"postgres\"", "kind = \"oracle\""), "mappings": {}, "password": "p" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown variant `oracle`",
        ),
        (
            json!({ "name": "x", "definition": DOWN, "mappings": {}, "password": "p" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "stream 'pos_sales' has no mapping text",
        ),
        (
            json!({ "name": "x", "definition": DOWN, "mappings": { "pos_sales": mapping, "refunds": mapping }, "password": "p" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the definition has no stream named 'refunds'",
        ),
        (
            json!({ "name": "x", "definition": DOWN, "mappings": { "pos_sales": "key = " }, "password": "p" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "mappings.pos_sales: not a stream mapping",
        ),
        (
            json!({ "name": "x", "definition": DOWN.replace("tls = \"disable\"", "tls = \"verify-full\"\nca_file = \"/etc/passwd\""), "mappings": { "pos_sales": mapping }, "password": "p" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "`ca_file` names a file on the server",
        ),
        (
            json!({ "name": "x", "definition": DOWN, "mappings": { "pos_sales": mapping }, "password": "" }),
            StatusCode::BAD_REQUEST,
            "password: must be 1 to 1024 characters, not 0",
        ),
        (
            json!({ "name": "x", "definition": DOWN, "mappings": { "pos_sales": mapping }, "password": "p".repeat(1025) }),
            StatusCode::BAD_REQUEST,
            "password: must be 1 to 1024 characters, not 1025",
        ),
        (
            json!({ "name": "no spaces", "definition": DOWN, "mappings": { "pos_sales": mapping }, "password": "p" }),
            StatusCode::BAD_REQUEST,
            "name: a connector name is 1 to 64 letters",
        ),
        (
            json!({ "name": "x", "definition": "", "mappings": { "pos_sales": mapping }, "password": "p" }),
            StatusCode::BAD_REQUEST,
            "definition: must be 1 to 65536 characters",
        ),
        (
            json!({ "name": "x", "definition": DOWN, "password": "p" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `mappings`",
        ),
    ];
    for (body, expected, words) in cases {
        let (status, text) = send(&app, "POST", "/v1/connectors", &admin, Some(body.clone())).await;
        assert_eq!(status, expected, "{body}: {text}");
        let problem = json_of(&text);
        assert!(
            problem["detail"].as_str().unwrap().contains(words),
            "{words} not in {text}"
        );
    }
    let (status, text) = send(&app, "POST", "/v1/connectors", &admin, None).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{text}");
    assert!(app
        .store
        .connector(&tenant.id, "x")
        .await
        .unwrap()
        .is_none());

    // Another tenant's admin finds none of it.
    let (_, other_admin) = provisioned_admin(&app, "owner@other.example", "pro").await;
    for (method, path) in [
        ("GET", "/v1/connectors/pos"),
        ("POST", "/v1/connectors/pos/test"),
        ("GET", "/v1/connectors/pos/discover"),
        ("POST", "/v1/connectors/pos/sync"),
        ("POST", "/v1/connectors/pos/pause"),
        ("POST", "/v1/connectors/pos/resume"),
        ("DELETE", "/v1/connectors/pos"),
    ] {
        let (status, text) = send(&app, method, path, &other_admin, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {text}");
    }
    let (_, text) = send(&app, "GET", "/v1/connectors", &other_admin, None).await;
    assert_eq!(json_of(&text), json!([]));
    let (_, text) = send(&app, "GET", "/v1/syncs", &other_admin, None).await;
    assert_eq!(json_of(&text), json!([]));
    // The same name is free in the other tenant.
    let (status, text) = send(&app, "POST", "/v1/connectors", &other_admin, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");

    // The admin pauses, resumes and removes it.
    let (status, text) = send(&app, "POST", "/v1/connectors/pos/pause", &admin, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        json_of(&text)["paused"],
        "paused by user:owner@kopi.example",
        "{text}"
    );
    let (status, text) = send(&app, "POST", "/v1/connectors/pos/resume", &admin, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(json_of(&text)["paused"].is_null(), "{text}");
    let (status, text) = send(&app, "DELETE", "/v1/connectors/pos", &admin, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    let (status, _) = send(&app, "GET", "/v1/connectors/pos", &admin, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // What it synced stays in the ledger.
    assert_eq!(
        ledger_figures(app.store.as_ref(), &tenant, &expected).await,
        expected
    );

    // Every change is in the audit trail, by the person who made it.
    let (_, text) = send(&app, "GET", "/v1/audit", &admin, None).await;
    let audit = json_of(&text);
    let entry = |action: &str| {
        audit
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action && e["detail"].as_str().unwrap().starts_with("pos"))
            .unwrap_or_else(|| panic!("no {action} in {text}"))
            .clone()
    };
    assert_eq!(entry("connector.added")["actor"], "user:owner@kopi.example");
    assert_eq!(
        entry("connector.synced")["actor"],
        "user:manager@kopi.example"
    );
    for action in ["connector.paused", "connector.resumed", "connector.removed"] {
        assert_eq!(
            entry(action)["actor"],
            "user:owner@kopi.example",
            "{action}"
        );
    }
    assert!(!text.contains(PASSWORD));

    assert_no_plaintext(&test, PASSWORD).await;
}

/// A daemon without a master key serves connectors' descriptions, and answers 503
/// where a credential is needed.
#[tokio::test]
async fn without_a_master_key_credential_routes_answer_503() {
    let test = sqlite_store().await;
    let app = spawn_app(test.store.clone()).await;
    let (_, admin) = provisioned_admin(&app, "owner@kopi.example", "pro").await;
    let body = json!({ "name": "down", "definition": DOWN, "mappings": { "pos_sales": mapping_text() }, "password": PASSWORD });
    let (status, text) = send(&app, "POST", "/v1/connectors", &admin, Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");

    // A second server on the same store, without secrets.
    let outbox = tempfile::tempdir().unwrap();
    let state = AppState::new(test.store.clone(), &config_with_outbox(outbox.path())).unwrap();
    let server = Application::build(state, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let keyless = TestApp {
        address: format!("http://{}", server.local_addr()),
        store: test.store.clone(),
        tenant: app.tenant.clone(),
        key: app.key.clone(),
        client: reqwest::Client::new(),
        outbox,
        keys: tempfile::tempdir().unwrap(),
    };
    tokio::spawn(server.run_until_stopped());

    let (status, text) = send(&keyless, "GET", "/v1/connectors/down", &admin, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    for (method, path) in [
        ("POST", "/v1/connectors/down/test"),
        ("GET", "/v1/connectors/down/discover"),
        ("POST", "/v1/connectors/down/sync"),
    ] {
        let (status, text) = send(&keyless, method, path, &admin, None).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {text}"
        );
        assert!(
            text.contains("connector credentials are unavailable: the daemon has no master key"),
            "{text}"
        );
    }
    let body = json!({ "name": "other", "definition": DOWN, "mappings": { "pos_sales": mapping_text() }, "password": PASSWORD });
    let (status, text) = send(&keyless, "POST", "/v1/connectors", &admin, Some(body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
}
