//! The runbook's access flows over real HTTP: provisioning with a welcome mail,
//! invitations, logins, sessions, roles on every route, seats, throttling, audit.

use std::path::Path;
use std::process::Stdio;

use ledgersync::access::{AccessError, Role};
use ledgersync::api::{Need, ROUTES};
use ledgersync::mail::Mailer;
use ledgersync::tenants;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use crate::helpers::{
    config_with_outbox, new_key, postgres_base, postgres_store, postgres_store_on, spawn_app,
    sqlite_store, TestApp, TestStore,
};

pub(crate) const PASSWORD: &str = "kopi-susu-2025";

/// A mail file as text, quoted-printable decoded (long links are soft-wrapped).
fn mail_text(raw: &[u8]) -> String {
    let decoded = quoted_printable::decode(raw, quoted_printable::ParseMode::Robust).unwrap();
    String::from_utf8(decoded).unwrap()
}

/// The invitation token in the newest mail of an outbox folder.
fn token_from_mail(dir: &Path, to: &str) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let text = files
        .iter()
        .rev()
        .map(|f| mail_text(&std::fs::read(f).unwrap()))
        .find(|t| t.contains(to))
        .unwrap_or_else(|| panic!("no mail to {to} in {}", dir.display()));
    let start = text.find("/invitations/inv_").expect("an invitation link") + "/invitations/".len();
    text[start..start + 68].to_string()
}

/// Sends a request again while the server answers 503 "busy" (every password
/// hashing slot taken, e.g. by another test's burst), as its Retry-After asks.
async fn send_retrying_busy(request: reqwest::RequestBuilder) -> reqwest::Response {
    for _ in 0..10 {
        let response = request.try_clone().unwrap().send().await.unwrap();
        let busy = response.status() == StatusCode::SERVICE_UNAVAILABLE
            && response.headers().contains_key("retry-after");
        if !busy {
            if response.status().is_server_error() {
                panic!("{}: {}", response.status(), response.text().await.unwrap());
            }
            return response;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    panic!("the server stayed busy");
}

async fn accept(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    send_retrying_busy(
        app.client
            .post(format!("{}/v1/invitations/{token}/accept", app.address))
            .json(&json!({ "password": password })),
    )
    .await
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    send_retrying_busy(
        app.client
            .post(format!("{}/v1/auth/login", app.address))
            .json(&json!({ "email": email, "password": password })),
    )
    .await
}

pub(crate) async fn session(app: &TestApp, email: &str) -> String {
    let response = login(app, email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK, "login of {email}");
    response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Provisions a tenant the runbook's way and logs its admin in.
pub(crate) async fn provisioned_admin(
    app: &TestApp,
    email: &str,
    plan: &str,
) -> (ledgersync_store::Tenant, String) {
    let mailer = Mailer::from_config(&config_with_outbox(app.outbox.path()).mail).unwrap();
    let (provisioned, invitation) = tenants::provision_customer(
        app.store.as_ref(),
        &mailer,
        "http://dashboard.test",
        "Kopi Kenangan",
        email,
        plan,
        4,
    )
    .await
    .unwrap();
    assert!(provisioned.created && invitation.is_some());
    let token = token_from_mail(app.outbox.path(), email);
    assert_eq!(accept(app, &token, PASSWORD).await.status(), StatusCode::OK);
    (provisioned.tenant, session(app, email).await)
}

async fn invite(app: &TestApp, admin: &str, email: &str, role: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/users/invitations", app.address))
        .bearer_auth(admin)
        .json(&json!({ "email": email, "role": role }))
        .send()
        .await
        .unwrap()
}

/// Invites `email` with `role` as `admin` and accepts through the mailed link.
pub(crate) async fn add_user(app: &TestApp, admin: &str, email: &str, role: &str) {
    assert_eq!(
        invite(app, admin, email, role).await.status(),
        StatusCode::CREATED
    );
    let token = token_from_mail(app.outbox.path(), email);
    assert_eq!(accept(app, &token, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn invitations_logins_seats_and_throttling() {
    let test = sqlite_store().await;
    let app = spawn_app(test.store.clone()).await;
    let (tenant, admin) = provisioned_admin(&app, "owner@kopi.example", "lite").await;

    // Provisioning again creates nothing and sends nothing.
    let mailer = Mailer::from_config(&config_with_outbox(app.outbox.path()).mail).unwrap();
    let mails_before = std::fs::read_dir(app.outbox.path()).unwrap().count();
    let (again, invitation) = tenants::provision_customer(
        app.store.as_ref(),
        &mailer,
        "http://x",
        "Kopi Kenangan",
        "owner@kopi.example",
        "lite",
        4,
    )
    .await
    .unwrap();
    assert!(!again.created && invitation.is_none());
    assert_eq!(again.tenant.id, tenant.id);
    assert_eq!(
        std::fs::read_dir(app.outbox.path()).unwrap().count(),
        mails_before
    );

    // The invitation link works once.
    assert_eq!(
        invite(&app, &admin, "barista@kopi.example", "viewer")
            .await
            .status(),
        StatusCode::CREATED
    );
    let token = token_from_mail(app.outbox.path(), "barista@kopi.example");
    let weak = accept(&app, &token, "short").await;
    assert_eq!(weak.status(), StatusCode::BAD_REQUEST);
    assert!(weak.json::<Value>().await.unwrap()["type"]
        .as_str()
        .unwrap()
        .ends_with("/weak-password"));
    assert_eq!(
        accept(&app, &token, PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        accept(&app, &token, PASSWORD).await.status(),
        StatusCode::NOT_FOUND
    );

    // Sessions work as bearer tokens and as HttpOnly cookies.
    let response = login(&app, "barista@kopi.example", PASSWORD).await;
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let me = app
        .client
        .get(format!("{}/v1/me", app.address))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(
        me.json::<Value>().await.unwrap()["as"]["user"]["role"],
        "viewer"
    );

    // Four seats: the admin, the barista, two more; the fifth is refused.
    assert_eq!(
        invite(&app, &admin, "a@kopi.example", "manager")
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        invite(&app, &admin, "b@kopi.example", "viewer")
            .await
            .status(),
        StatusCode::CREATED
    );
    let full = invite(&app, &admin, "c@kopi.example", "viewer").await;
    assert_eq!(full.status(), StatusCode::CONFLICT);
    assert!(full.json::<Value>().await.unwrap()["type"]
        .as_str()
        .unwrap()
        .ends_with("/seat-limit"));

    // Repeated failures slow logins down, even with the right password.
    for _ in 0..4 {
        assert_eq!(
            login(&app, "barista@kopi.example", "wrong-password-1")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let throttled = login(&app, "barista@kopi.example", PASSWORD).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        login(&app, "nobody@kopi.example", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Malformed requests are answered with problem documents too.
    let malformed = app
        .client
        .post(format!("{}/v1/auth/login", app.address))
        .header("content-type", "application/json")
        .body("{\"email\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        malformed.headers()["content-type"],
        "application/problem+json"
    );
    let unknown_param = app
        .get(
            format!("{}/v1/audit?limit=5&colour=blue", app.address),
            &admin,
        )
        .await;
    assert_eq!(unknown_param.status(), StatusCode::BAD_REQUEST);
    assert!(unknown_param.text().await.unwrap().contains("colour"));
    let wrong_method = app
        .client
        .delete(format!("{}/v1/settings", app.address))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        wrong_method.headers()["content-type"],
        "application/problem+json"
    );
    let huge_login = app
        .client
        .post(format!("{}/v1/auth/login", app.address))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"email\": \"{}\", \"password\": \"x\"}}",
            "a".repeat(100_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(huge_login.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let too_large = app
        .client
        .post(format!("{}/v1/imports", app.address))
        .bearer_auth(&admin)
        .body(vec![b'x'; (64 << 20) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        too_large.headers()["content-type"],
        "application/problem+json"
    );

    // Logging out ends the session.
    let token = session(&app, "owner@kopi.example").await;
    let out = app
        .client
        .post(format!("{}/v1/auth/logout", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after = app.get(format!("{}/v1/me", app.address), &token).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);

    // Reports of features off the plan are refused with the reason; the audit trail
    // names who did what.
    let staff = app
        .get(
            format!("{}/v1/reports/staff?from=2025-01&to=2025-02", app.address),
            &admin,
        )
        .await;
    assert_eq!(staff.status(), StatusCode::FORBIDDEN);
    assert!(staff.json::<Value>().await.unwrap()["type"]
        .as_str()
        .unwrap()
        .ends_with("/feature-disabled"));
    let mut settings = tenant.settings.clone();
    settings.features.staff = true;
    let upgrade = app
        .client
        .put(format!("{}/v1/settings", app.address))
        .bearer_auth(&admin)
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(upgrade.status(), StatusCode::FORBIDDEN);
    assert!(upgrade.text().await.unwrap().contains("upgrade"));
    let imported = app
        .client
        .post(format!("{}/v1/imports?name=gl-march.csv", app.address))
        .bearer_auth(&admin)
        .body("date,txn_id,account,amount\n2025-03-01,A1,1000,10\n2025-03-01,A1,4000,-10\n")
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), StatusCode::CREATED);
    let audit: Value = app
        .get_json(format!("{}/v1/audit", app.address), &admin)
        .await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    let import = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "import.loaded")
        .expect("the import is in the audit trail");
    assert_eq!(import["actor"], "user:owner@kopi.example");
    let detail = import["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("gl-march.csv through stream journal: load ")
            && detail.ends_with("1 transaction(s) (1 added, 0 replaced of which 0 unchanged, 0 removed), 2 posting(s)"),
        "{detail}"
    );
    for action in [
        "tenant.provisioned",
        "user.invited",
        "user.accepted",
        "user.login",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
}

/// A request for one route, with valid parameters and body; `own_tenant` is the
/// slug of the caller's tenant.
fn request(
    app: &TestApp,
    method: &str,
    path: &str,
    target_user: &str,
    target_key: &str,
    own_tenant: &str,
    n: usize,
) -> reqwest::RequestBuilder {
    let concrete = path
        .replace("{token}", "inv_0000")
        .replace("{kind}", "pnl")
        .replace("{name}", "no-such-connector")
        .replace(
            "{id}",
            if path.starts_with("/v1/users") {
                target_user
            } else {
                target_key
            },
        );
    let url = match concrete.as_str() {
        "/v1/reports/pnl" => format!("{}{concrete}?from=2025-01&to=2025-02", app.address),
        "/v1/ledger/transactions" => format!("{}{concrete}?from=2025-01&to=2025-02", app.address),
        "/v1/imports" => format!("{}{concrete}?stream=journal", app.address),
        _ => format!("{}{concrete}", app.address),
    };
    let builder = app.client.request(method.parse().unwrap(), url);
    match (method, path) {
        ("POST", "/v1/auth/login") => builder.json(&json!({ "email": "viewer@kopi.example", "password": PASSWORD })),
        ("POST", "/v1/invitations/{token}/accept") => builder.json(&json!({ "password": PASSWORD })),
        ("PUT", "/v1/settings") => builder.body(
            r#"{"companyName":"Kopi Kenangan","fiscalYearStart":"January","currency":"IDR","timezone":"Asia/Jakarta",
                "features":{"pl":true,"cashFlow":true,"cogs":true,"staff":false}}"#,
        ),
        ("POST", "/v1/imports") => builder.body(format!(
            "date,txn_id,account,amount\n2025-01-0{d},M{n},1000,10\n2025-01-0{d},M{n},4000,-10\n",
            d = n % 9 + 1
        )),
        ("POST", "/v1/users/invitations") => builder.json(&json!({ "email": format!("new{n}@kopi.example"), "role": "viewer" })),
        ("PATCH", _) => builder.json(&json!({ "role": "manager" })),
        ("POST", "/v1/apikeys") => builder.json(&json!({ "name": format!("k{n}"), "scope": "read" })),
        ("POST", "/v1/session/tenant") => builder.json(&json!({ "tenant": own_tenant })),
        ("POST", "/v1/connectors") => builder.json(&json!({ "name": format!("c{n}"), "definition": "kind = 1", "mappings": {}, "password": "secret" })),
        _ => builder,
    }
}

#[tokio::test]
async fn every_route_checks_every_role_and_tenant() {
    let test = sqlite_store().await;
    let app = spawn_app(test.store.clone()).await;
    let (tenant, admin) = provisioned_admin(&app, "owner@kopi.example", "pro").await;
    for (email, role) in [
        ("manager@kopi.example", "manager"),
        ("viewer@kopi.example", "viewer"),
        ("target@kopi.example", "viewer"),
    ] {
        add_user(&app, &admin, email, role).await;
    }
    let users: Value = app
        .get_json(format!("{}/v1/users", app.address), &admin)
        .await;
    let target_user = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "target@kopi.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let target_key = app.store.api_keys(&tenant).await.unwrap();
    assert!(target_key.is_empty());
    new_key(app.store.as_ref(), &tenant, "read").await;
    let target_key = app.store.api_keys(&tenant).await.unwrap()[0].id.clone();

    // The other tenant has one user of each role too.
    let (other_tenant, other_admin) = provisioned_admin(&app, "owner@other.example", "pro").await;
    for (email, role) in [
        ("manager@other.example", "manager"),
        ("viewer@other.example", "viewer"),
    ] {
        add_user(&app, &other_admin, email, role).await;
    }
    let read_key = new_key(app.store.as_ref(), &tenant, "read").await;
    let ingest_key = new_key(app.store.as_ref(), &tenant, "ingest").await;

    enum Who {
        Anonymous,
        /// A user of a role, in this tenant (`own`) or the other one, by email.
        User {
            role: Role,
            own: bool,
            email: &'static str,
        },
        ReadKey(String),
        IngestKey(String),
    }
    let user = |role, own, email| Who::User { role, own, email };
    // This tenant's admin goes last: it may delete the targets no one else may touch.
    let principals = [
        Who::Anonymous,
        user(Role::Viewer, true, "viewer@kopi.example"),
        user(Role::Manager, true, "manager@kopi.example"),
        Who::ReadKey(read_key),
        Who::IngestKey(ingest_key),
        user(Role::Viewer, false, "viewer@other.example"),
        user(Role::Manager, false, "manager@other.example"),
        user(Role::Admin, false, "owner@other.example"),
        user(Role::Admin, true, "owner@kopi.example"),
    ];
    let mut checked = 0;
    for (p, who) in principals.iter().enumerate() {
        let token = match who {
            Who::User { email, .. } => Some(session(&app, email).await),
            Who::ReadKey(key) | Who::IngestKey(key) => Some(key.clone()),
            Who::Anonymous => None,
        };
        for (r, route) in ROUTES.iter().enumerate() {
            let n = p * 100 + r;
            // Logging out ends the session it is sent with: log out a throwaway one.
            let credential = match (who, route.path) {
                (Who::User { email, .. }, "/v1/auth/logout") => Some(session(&app, email).await),
                _ => token.clone(),
            };
            let own_tenant = match who {
                Who::User { own: false, .. } => &other_tenant.slug,
                _ => &tenant.slug,
            };
            let mut builder = request(
                &app,
                route.method,
                route.path,
                &target_user,
                &target_key,
                own_tenant,
                n,
            );
            if let Some(token) = &credential {
                builder = builder.bearer_auth(token);
            }
            let status = builder.send().await.unwrap().status();
            let allowed = match (who, route.need) {
                (_, Need::Nobody) => true,
                (Who::Anonymous, _) => false,
                (Who::User { role, .. }, Need::Role(needed)) => *role >= needed,
                (Who::User { role, .. }, Need::Import) => *role >= Role::Manager,
                (Who::ReadKey(_), Need::Role(Role::Viewer)) => true,
                (Who::IngestKey(_), Need::Import) => true,
                (Who::ReadKey(_) | Who::IngestKey(_), _) => false,
            };
            let other_tenant = matches!(who, Who::User { own: false, .. });
            let at = format!("{} {} as principal #{p}", route.method, route.path);
            match (who, allowed) {
                (Who::Anonymous, false) => assert_eq!(status, StatusCode::UNAUTHORIZED, "{at}"),
                (_, false) => assert_eq!(status, StatusCode::FORBIDDEN, "{at}"),
                // Another tenant's users never reach this tenant's users, keys or
                // connectors.
                (_, true)
                    if other_tenant
                        && (route.path.contains("{id}") || route.path.contains("{name}")) =>
                {
                    assert_eq!(status, StatusCode::NOT_FOUND, "{at}")
                }
                (_, true) => assert!(
                    ![
                        StatusCode::UNAUTHORIZED,
                        StatusCode::FORBIDDEN,
                        StatusCode::METHOD_NOT_ALLOWED
                    ]
                    .contains(&status)
                        && !status.is_server_error(),
                    "{at}: {status}"
                ),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * principals.len());
    // The targets survived everyone but the admin.
    assert!(app
        .store
        .users(&tenant)
        .await
        .unwrap()
        .iter()
        .all(|u| u.id != target_user));
}

#[tokio::test]
async fn welcome_mail_goes_through_a_real_smtp_server() {
    let python = std::env::var("LS_TEST_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ledgersync-test-venv/bin/python",
            std::env::var("HOME").unwrap()
        )
    });
    let received = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp_sink.py");
    let mut sink = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(received.path())
        .arg("120")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{python} must run aiosmtpd (.ci/run installs it): {e}"));
    let mut lines = tokio::io::BufReader::new(sink.stdout.take().unwrap()).lines();
    let port: u16 = lines
        .next_line()
        .await
        .unwrap()
        .expect("the SMTP sink prints its port")
        .parse()
        .unwrap();

    let test = sqlite_store().await;
    let mut config = config_with_outbox(test.dir.path());
    config.mail.smtp = Some(ledgersync_config::SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        username: None,
        password: None,
        starttls: false,
    });
    let mailer = Mailer::from_config(&config.mail).unwrap();
    let (provisioned, invitation) = tenants::provision_customer(
        test.store.as_ref(),
        &mailer,
        "https://dash.kopi.example",
        "Kopi Kenangan",
        "admin@kopiken.com",
        "lite",
        10,
    )
    .await
    .unwrap();
    let invitation = invitation.unwrap();
    assert!(matches!(
        invitation.mail,
        ledgersync::mail::Delivery::Smtp { .. }
    ));
    let mail = mail_text(&std::fs::read(received.path().join("0001.eml")).unwrap());
    assert!(
        mail.starts_with("X-Envelope-To: admin@kopiken.com"),
        "{mail}"
    );
    assert!(
        mail.contains("Subject: Your invitation to Kopi Kenangan"),
        "{mail}"
    );
    assert!(mail.contains(&invitation.link), "{mail}");
    // The link in the mail is the working one.
    let token = invitation.link.rsplit('/').next().unwrap();
    let (tenant, user) = ledgersync::access::accept(
        test.store.as_ref(),
        &ledgersync::access::PasswordHashing::default(),
        token,
        PASSWORD,
    )
    .await
    .unwrap();
    assert_eq!(
        (tenant.id, user.status.as_str()),
        (provisioned.tenant.id, "active")
    );
    // No file was written to the outbox when SMTP is configured.
    assert!(!test.dir.path().read_dir().unwrap().any(|e| e
        .unwrap()
        .path()
        .extension()
        .is_some_and(|x| x == "eml")));
}

/// Credentials are served from memory for the cache TTL, but a change made through
/// the same process shows at once: a key revoked over the API stops working on the
/// next request.
#[tokio::test]
async fn revocations_take_effect_at_once_despite_the_cache() {
    let test = sqlite_store().await;
    let app = spawn_app(test.store.clone()).await;
    let (_, admin) = provisioned_admin(&app, "owner@kopi.example", "lite").await;
    let created: Value = app
        .client
        .post(format!("{}/v1/apikeys", app.address))
        .bearer_auth(&admin)
        .json(&json!({ "name": "dashboard", "scope": "read" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, secret) = (
        created["key"]["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    );
    let settings = format!("{}/v1/settings", app.address);
    // Twice: the second answer comes from the cache.
    for _ in 0..2 {
        assert_eq!(app.get(&settings, &secret).await.status(), StatusCode::OK);
    }
    let revoked = app
        .client
        .delete(format!("{}/v1/apikeys/{id}", app.address))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert_eq!(
        app.get(&settings, &secret).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// Provisions a tenant with `seats` seats, its admin `email` with [`PASSWORD`]
/// logged in.
async fn admin_with_seats(
    app: &TestApp,
    name: &str,
    email: &str,
    seats: i64,
) -> (ledgersync_store::Tenant, String) {
    let mailer = Mailer::from_config(&config_with_outbox(app.outbox.path()).mail).unwrap();
    let (provisioned, _) = tenants::provision_customer(
        app.store.as_ref(),
        &mailer,
        "http://dashboard.test",
        name,
        email,
        "pro",
        seats,
    )
    .await
    .unwrap();
    let token = token_from_mail(app.outbox.path(), email);
    assert_eq!(accept(app, &token, PASSWORD).await.status(), StatusCode::OK);
    (provisioned.tenant, session(app, email).await)
}

/// Sends the requests all at once; the answers in the order given.
async fn all_at_once(requests: Vec<reqwest::RequestBuilder>) -> Vec<reqwest::Response> {
    let sent: Vec<_> = requests
        .into_iter()
        .map(|request| tokio::spawn(request.send()))
        .collect();
    let mut responses = Vec::new();
    for response in sent {
        responses.push(response.await.unwrap().unwrap());
    }
    responses
}

fn count(responses: &[reqwest::Response], status: StatusCode) -> usize {
    responses.iter().filter(|r| r.status() == status).count()
}

fn login_request(app: &TestApp, email: &str, password: &str) -> reqwest::RequestBuilder {
    app.client
        .post(format!("{}/v1/auth/login", app.address))
        .json(&json!({ "email": email, "password": password }))
}

async fn problem_type(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["type"].as_str().unwrap_or_default().to_string()
}

/// One person in two tenants: the second invitation adds a membership that is
/// accepted with the existing password, the login lists both tenants, the session
/// switches between them, seats count memberships, and leaving one tenant keeps
/// the other.
async fn people_belong_to_several_tenants(test: TestStore) {
    let app = spawn_app(test.store.clone()).await;
    let (brand_a, admin_a) = admin_with_seats(&app, "Warung Satu", "owner@satu.example", 3).await;
    let (brand_b, admin_b) = admin_with_seats(&app, "Warung Dua", "owner@dua.example", 3).await;
    let accountant = "books@accounting.example";

    add_user(&app, &admin_a, accountant, "viewer").await;
    // Tenant B cannot tell the accountant already has an account: the same answer
    // as for a new address, and no 409.
    let existing = invite(&app, &admin_b, accountant, "admin").await;
    let new = invite(&app, &admin_b, "new@dua.example", "viewer").await;
    assert_eq!(existing.status(), StatusCode::CREATED);
    assert_eq!(new.status(), StatusCode::CREATED);
    let (existing, new): (Value, Value) =
        (existing.json().await.unwrap(), new.json().await.unwrap());
    assert_eq!(existing["user"]["status"], "invited");
    assert_eq!(
        existing["user"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        new["user"].as_object().unwrap().keys().collect::<Vec<_>>()
    );
    // The mail says they were added, and no second password is set.
    let token = token_from_mail(app.outbox.path(), accountant);
    let mut mails: Vec<_> = std::fs::read_dir(app.outbox.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("books_accounting"))
        .collect();
    mails.sort();
    let mail = mail_text(&std::fs::read(mails.last().unwrap()).unwrap());
    assert!(mail.contains("You were added to the Warung Dua"), "{mail}");
    let second_password = accept(&app, &token, "another-password-2025").await;
    assert_eq!(second_password.status(), StatusCode::UNAUTHORIZED);
    assert!(problem_type(second_password)
        .await
        .ends_with("/wrong-password"));
    assert_eq!(
        accept(&app, &token, PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        login(&app, accountant, "another-password-2025")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // Seats count memberships: B holds its admin, the accountant and the new one.
    let users: Value = app
        .get_json(format!("{}/v1/users", app.address), &admin_b)
        .await;
    assert_eq!(users["users"].as_array().unwrap().len(), 3);
    let full = invite(&app, &admin_b, "fourth@dua.example", "viewer").await;
    assert_eq!(full.status(), StatusCode::CONFLICT);

    // The login lists both tenants and acts in the first one joined.
    let response = login(&app, accountant, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let logged_in: Value = response.json().await.unwrap();
    let slugs: Vec<&str> = logged_in["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant_slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, [brand_a.slug.as_str(), brand_b.slug.as_str()]);
    assert_eq!(logged_in["user"]["tenant_id"], brand_a.id.as_str());
    let token = logged_in["token"].as_str().unwrap().to_string();
    let me: Value = app.get_json(format!("{}/v1/me", app.address), &token).await;
    assert_eq!(me["tenant"]["id"], brand_a.id.as_str());
    assert_eq!(me["as"]["user"]["role"], "viewer");
    assert_eq!(me["as"]["tenants"].as_array().unwrap().len(), 2);
    // A viewer in A may not list A's users …
    let users_a = app.get(format!("{}/v1/users", app.address), &token).await;
    assert_eq!(users_a.status(), StatusCode::FORBIDDEN);

    // … and, switched to B where they are admin, may list B's.
    let switched = app
        .client
        .post(format!("{}/v1/session/tenant", app.address))
        .bearer_auth(&token)
        .json(&json!({ "tenant": brand_b.slug }))
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), StatusCode::OK);
    let me: Value = app.get_json(format!("{}/v1/me", app.address), &token).await;
    assert_eq!(me["tenant"]["id"], brand_b.id.as_str());
    assert_eq!(me["as"]["user"]["role"], "admin");
    let users_b = app.get(format!("{}/v1/users", app.address), &token).await;
    assert_eq!(users_b.status(), StatusCode::OK);
    // A tenant the person is no member of is refused.
    let elsewhere = app
        .client
        .post(format!("{}/v1/session/tenant", app.address))
        .bearer_auth(&token)
        .json(&json!({ "tenant": app.tenant.slug }))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
    let direct = send_retrying_busy(
        app.client
            .post(format!("{}/v1/auth/login", app.address))
            .json(&json!({ "email": accountant, "password": PASSWORD, "tenant": app.tenant.slug })),
    )
    .await;
    assert_eq!(direct.status(), StatusCode::FORBIDDEN);
    // The login may name its tenant.
    let direct: Value = send_retrying_busy(
        app.client
            .post(format!("{}/v1/auth/login", app.address))
            .json(&json!({ "email": accountant, "password": PASSWORD, "tenant": brand_b.id })),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(direct["user"]["role"], "admin");

    // Removed from A, the person keeps B; the session acting in A ends.
    let token_in_a = session(&app, accountant).await;
    let member_a = app
        .store
        .users(&brand_a)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.email == accountant)
        .unwrap();
    let removed = app
        .client
        .delete(format!("{}/v1/users/{}", app.address, member_a.id))
        .bearer_auth(&admin_a)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(format!("{}/v1/me", app.address), &token_in_a)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let me: Value = app.get_json(format!("{}/v1/me", app.address), &token).await;
    assert_eq!(me["as"]["tenants"].as_array().unwrap().len(), 1);
    let again: Value = login(&app, accountant, PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["user"]["tenant_id"], brand_b.id.as_str());
}

#[tokio::test]
async fn people_belong_to_several_tenants_sqlite() {
    people_belong_to_several_tenants(sqlite_store().await).await;
}

#[tokio::test]
async fn people_belong_to_several_tenants_postgres() {
    people_belong_to_several_tenants(postgres_store().await).await;
}

/// Failures are counted before the password is checked, in one atomic step: of
/// many parallel attempts only the free ones are checked, and the right password
/// sent after a parallel burst of wrong ones waits like any other.
async fn parallel_logins_cannot_outrun_the_throttle(test: TestStore) {
    let app = spawn_app(test.store.clone()).await;
    let (_, admin) = admin_with_seats(&app, "Kopi Kenangan", "owner@kopi.example", 5).await;
    add_user(&app, &admin, "barista@kopi.example", "viewer").await;
    add_user(&app, &admin, "cashier@kopi.example", "viewer").await;
    let free = ledgersync::access::PER_CLIENT.free_failures as usize;

    let burst = all_at_once(
        (0..24)
            .map(|_| login_request(&app, "barista@kopi.example", "wrong-password-1"))
            .collect(),
    )
    .await;
    // The attempt that uses up the allowance is still checked (or, every hashing
    // slot taken too long, answered busy); every later one waits.
    let checked = |responses: &[reqwest::Response]| {
        count(responses, StatusCode::UNAUTHORIZED)
            + count(responses, StatusCode::SERVICE_UNAVAILABLE)
    };
    assert_eq!(checked(&burst), free + 1, "{burst:?}");
    assert_eq!(count(&burst, StatusCode::TOO_MANY_REQUESTS), 24 - free - 1);
    for throttled in burst
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
    {
        let wait: u64 = throttled.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=5).contains(&wait), "Retry-After {wait}");
    }

    let wrong = all_at_once(
        (0..11)
            .map(|_| login_request(&app, "cashier@kopi.example", "wrong-password-1"))
            .collect(),
    )
    .await;
    assert_eq!(checked(&wrong), free + 1, "{wrong:?}");
    assert_eq!(count(&wrong, StatusCode::TOO_MANY_REQUESTS), 11 - free - 1);
    let right = login(&app, "cashier@kopi.example", PASSWORD).await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_logins_cannot_outrun_the_throttle_sqlite() {
    parallel_logins_cannot_outrun_the_throttle(sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_logins_cannot_outrun_the_throttle_postgres() {
    parallel_logins_cannot_outrun_the_throttle(postgres_store().await).await;
}

/// Unknown, invited and active addresses get the same answers after the same work,
/// throttling included; someone failing on purpose from another client does not
/// keep the owner out, and failures spread over many clients wait only the
/// documented per-address time.
async fn logins_tell_nothing_about_addresses(test: TestStore) {
    let app = spawn_app(test.store.clone()).await;
    let (_, admin) = admin_with_seats(&app, "Kopi Kenangan", "owner@kopi.example", 6).await;
    add_user(&app, &admin, "active@kopi.example", "viewer").await;
    add_user(&app, &admin, "cap@kopi.example", "viewer").await;
    assert_eq!(
        invite(&app, &admin, "invited@kopi.example", "viewer")
            .await
            .status(),
        StatusCode::CREATED
    );
    let addresses = [
        "nobody@kopi.example",
        "invited@kopi.example",
        "active@kopi.example",
    ];
    let free = ledgersync::access::PER_CLIENT.free_failures;
    let mut timings = Vec::new();
    let mut answers = Vec::new();
    for email in addresses {
        let mut took = Vec::new();
        for _ in 0..=free {
            let started = std::time::Instant::now();
            let response = login(&app, email, "wrong-password-1").await;
            took.push(started.elapsed());
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{email}");
            answers.push(response.text().await.unwrap());
        }
        took.sort();
        timings.push(took[took.len() / 2]);
        let throttled = login(&app, email, PASSWORD).await;
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS, "{email}");
        let retry: Value = throttled.json().await.unwrap();
        // The fourth failure asked for 5 s, less the time since.
        let wait = retry["retryAfterSeconds"].as_i64().unwrap();
        assert!((1..=5).contains(&wait), "{email}: {wait}");
    }
    assert!(
        answers.windows(2).all(|pair| pair[0] == pair[1]),
        "{answers:?}"
    );
    // Each one hashes: none answers in a fraction of another's time.
    let fastest = timings.iter().min().unwrap();
    let slowest = timings.iter().max().unwrap();
    assert!(
        slowest.as_secs_f64() < fastest.as_secs_f64() * 3.0,
        "median login times {timings:?}"
    );

    // Another client failing for the owner's address does not stop the owner.
    let store = app.store.as_ref();
    // Slots enough that the owner's attempt below never waits for the capped one's.
    let hashing =
        ledgersync::access::PasswordHashing::new(4, ledgersync::access::HASHING_QUEUE_WAIT);
    let attacker: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    let owner: std::net::IpAddr = "198.51.100.7".parse().unwrap();
    for _ in 0..=free {
        let failed = ledgersync::access::login(
            store,
            &hashing,
            "owner@kopi.example",
            "guess-123456",
            None,
            attacker,
        )
        .await;
        assert!(
            matches!(failed, Err(AccessError::InvalidCredentials)),
            "{failed:?}"
        );
    }
    let locked = ledgersync::access::login(
        store,
        &hashing,
        "owner@kopi.example",
        PASSWORD,
        None,
        attacker,
    )
    .await;
    assert!(
        matches!(locked, Err(AccessError::Throttled { .. })),
        "{locked:?}"
    );
    ledgersync::access::login(store, &hashing, "owner@kopi.example", PASSWORD, None, owner)
        .await
        .unwrap();

    // Guesses spread over many clients meet the per-address cap, which delays the
    // owner by the documented wait only.
    let cap = ledgersync::access::PER_ADDRESS;
    for n in 0..cap.free_failures {
        let client: std::net::IpAddr = format!("192.0.2.{}", n + 1).parse().unwrap();
        let failed = ledgersync::access::login(
            store,
            &hashing,
            "cap@kopi.example",
            "guess-123456",
            None,
            client,
        )
        .await;
        assert!(
            matches!(failed, Err(AccessError::InvalidCredentials)),
            "{failed:?}"
        );
    }
    // The attempt over the cap is counted before its password is hashed: the
    // owner's, a moment later and while that hashing may still run, waits.
    let client: std::net::IpAddr = "192.0.2.200".parse().unwrap();
    let (capped, owner_attempt) = tokio::join!(
        ledgersync::access::login(
            store,
            &hashing,
            "cap@kopi.example",
            "guess-123456",
            None,
            client,
        ),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            ledgersync::access::login(store, &hashing, "cap@kopi.example", PASSWORD, None, owner)
                .await
        }
    );
    assert!(
        matches!(capped, Err(AccessError::InvalidCredentials)),
        "{capped:?}"
    );
    match owner_attempt {
        Err(AccessError::Throttled { retry_after_secs }) => {
            // The first wait of the cap, less the time since the capped attempt.
            assert!(
                (1..=cap.first_wait_ms / 1000).contains(&retry_after_secs),
                "{retry_after_secs}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(
                retry_after_secs as u64 * 1000 + 100,
            ))
            .await;
        }
        other => panic!("the per-address cap did not hold: {other:?}"),
    }
    ledgersync::access::login(store, &hashing, "cap@kopi.example", PASSWORD, None, owner)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_tell_nothing_about_addresses_sqlite() {
    logins_tell_nothing_about_addresses(sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_tell_nothing_about_addresses_postgres() {
    logins_tell_nothing_about_addresses(postgres_store().await).await;
}

/// Password hashing runs off the async workers and a bounded number at a time:
/// a burst of logins for unknown addresses leaves the server answering at once,
/// and an invitation with a bad token is refused before any hashing.
#[tokio::test]
async fn health_answers_at_once_while_logins_hash() {
    let test = sqlite_store().await;
    let app = spawn_app(test.store.clone()).await;
    let burst: Vec<_> = (0..16)
        .map(|n| {
            tokio::spawn(login_request(&app, &format!("nobody{n}@kopi.example"), PASSWORD).send())
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let health = app
            .client
            .get(format!("{}/healthz", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        slowest < std::time::Duration::from_millis(250),
        "/healthz took {slowest:?}"
    );
    // Bad tokens are answered while the burst still holds every hashing slot.
    let bad_tokens = all_at_once(
        (0..16)
            .map(|n| {
                app.client
                    .post(format!("{}/v1/invitations/inv_{n:064}/accept", app.address))
                    .json(&json!({ "password": PASSWORD }))
            })
            .collect(),
    )
    .await;
    assert_eq!(count(&bad_tokens, StatusCode::NOT_FOUND), 16);
    for login in burst {
        let status = login.await.unwrap().unwrap().status();
        // A login that found every slot taken for too long is told to retry.
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::SERVICE_UNAVAILABLE].contains(&status),
            "{status}"
        );
    }
}

/// Parallel invitations never exceed the seats, on PostgreSQL too, and parallel
/// writes to the control database wait their turn instead of failing.
async fn seats_and_control_writes_hold_under_concurrency(test: TestStore) {
    let app = spawn_app(test.store.clone()).await;
    let (tenant, admin) = admin_with_seats(&app, "Kopi Kenangan", "owner@kopi.example", 40).await;
    // Ten parallel invitations, eight parallel acceptances: all succeed.
    let invited = all_at_once(
        (0..10)
            .map(|n| {
                app.client
                    .post(format!("{}/v1/users/invitations", app.address))
                    .bearer_auth(&admin)
                    .json(&json!({ "email": format!("staff{n}@kopi.example"), "role": "viewer" }))
            })
            .collect(),
    )
    .await;
    assert_eq!(count(&invited, StatusCode::CREATED), 10, "{invited:?}");
    // Acceptances hash a password each: those that find every hashing slot taken
    // are told to retry, as a client would; a store error fails the test.
    let accepted: Vec<_> = (0..8)
        .map(|n| {
            let token = token_from_mail(app.outbox.path(), &format!("staff{n}@kopi.example"));
            tokio::spawn(send_retrying_busy(
                app.client
                    .post(format!("{}/v1/invitations/{token}/accept", app.address))
                    .json(&json!({ "password": PASSWORD })),
            ))
        })
        .collect();
    for acceptance in accepted {
        assert_eq!(acceptance.await.unwrap().status(), StatusCode::OK);
    }

    // One free seat, sixteen parallel invitations, four rounds: one gets it.
    for round in 0..4 {
        let taken = app.store.users(&tenant).await.unwrap().len() as i64;
        let tenant = app.store.set_plan(&tenant, "pro", taken + 1).await.unwrap();
        let race = all_at_once(
            (0..16)
                .map(|n| {
                    app.client
                        .post(format!("{}/v1/users/invitations", app.address))
                        .bearer_auth(&admin)
                        .json(&json!({ "email": format!("r{round}-{n}@kopi.example"), "role": "viewer" }))
                })
                .collect(),
        )
        .await;
        assert_eq!(
            count(&race, StatusCode::CREATED),
            1,
            "round {round}: {race:?}"
        );
        assert_eq!(
            count(&race, StatusCode::CONFLICT),
            15,
            "round {round}: {race:?}"
        );
        assert_eq!(
            app.store.users(&tenant).await.unwrap().len() as i64,
            tenant.seats
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seats_and_control_writes_hold_under_concurrency_sqlite() {
    seats_and_control_writes_hold_under_concurrency(sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seats_and_control_writes_hold_under_concurrency_postgres() {
    seats_and_control_writes_hold_under_concurrency(postgres_store().await).await;
}

/// A tenant always keeps an active admin: the only one can neither demote nor
/// remove themselves, and two admins demoting each other at once leave one.
async fn the_last_admin_stays(test: TestStore) {
    let app = spawn_app(test.store.clone()).await;
    let (tenant, admin) = admin_with_seats(&app, "Kopi Kenangan", "owner@kopi.example", 5).await;
    let owner_id = app.store.users(&tenant).await.unwrap()[0].id.clone();
    let demote = |token: &str, id: &str| {
        app.client
            .patch(format!("{}/v1/users/{id}", app.address))
            .bearer_auth(token)
            .json(&json!({ "role": "viewer" }))
    };
    let alone = demote(&admin, &owner_id).send().await.unwrap();
    assert_eq!(alone.status(), StatusCode::CONFLICT);
    let detail: Value = alone.json().await.unwrap();
    assert!(
        detail["detail"]
            .as_str()
            .unwrap()
            .contains("only active admin"),
        "{detail}"
    );

    add_user(&app, &admin, "partner@kopi.example", "admin").await;
    let partner = session(&app, "partner@kopi.example").await;
    let partner_id = app
        .store
        .users(&tenant)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.email == "partner@kopi.example")
        .unwrap()
        .id;
    for round in 0..3 {
        let race = all_at_once(vec![
            demote(&admin, &partner_id),
            demote(&partner, &owner_id),
        ])
        .await;
        // The loser is refused as the last admin, or, demoted already when its
        // request was authenticated, as a viewer.
        assert_eq!(count(&race, StatusCode::OK), 1, "round {round}: {race:?}");
        assert_eq!(
            count(&race, StatusCode::CONFLICT) + count(&race, StatusCode::FORBIDDEN),
            1,
            "round {round}: {race:?}"
        );
        let admins: Vec<_> = app
            .store
            .users(&tenant)
            .await
            .unwrap()
            .into_iter()
            .filter(|u| u.role == "admin")
            .collect();
        assert_eq!(admins.len(), 1, "round {round}");
        // Promote the demoted one again for the next round, through the store.
        for id in [&owner_id, &partner_id] {
            app.store.set_user_role(&tenant, id, "admin").await.unwrap();
        }
    }
    // Removing: the partner may go, then the owner is the last and stays.
    let removed = app
        .client
        .delete(format!("{}/v1/users/{partner_id}", app.address))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let last = app.store.remove_user(&tenant, &owner_id).await;
    assert!(
        matches!(last, Err(ledgersync_store::StoreError::Conflict(_))),
        "{last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_stays_sqlite() {
    the_last_admin_stays(sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_stays_postgres() {
    the_last_admin_stays(postgres_store().await).await;
}

#[tokio::test]
async fn a_password_equal_to_the_email_is_refused() {
    let test = sqlite_store().await;
    let app = spawn_app(test.store.clone()).await;
    let (_, admin) = admin_with_seats(&app, "Kopi Kenangan", "owner@kopi.example", 5).await;
    let email = "finance2025@kopi.example";
    assert_eq!(
        invite(&app, &admin, email, "viewer").await.status(),
        StatusCode::CREATED
    );
    let token = token_from_mail(app.outbox.path(), email);
    for password in [email, "FINANCE2025@kopi.example"] {
        let refused = accept(&app, &token, password).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{password}");
        assert!(problem_type(refused).await.ends_with("/weak-password"));
    }
    assert_eq!(
        accept(&app, &token, PASSWORD).await.status(),
        StatusCode::OK
    );
}

/// The control tables as control migration 0002 left them: a tenant, its active
/// admin with a password and a session, and an invited user with an invitation.
struct LegacyControl {
    tenant_id: String,
    session_token: String,
    invitation_token: String,
    statements: String,
}

fn legacy_control() -> LegacyControl {
    use ledgersync::{access, keys};
    let tenant_id = uuid::Uuid::new_v4().to_string();
    let session_token = keys::generate_with_prefix("lss_");
    let invitation_token = keys::generate_with_prefix("inv_");
    let settings = serde_json::to_string(&ledgersync_config::TenantSettings::new_default(
        "Legacy Kopi",
    ))
    .unwrap()
    .replace('\'', "''");
    let password_hash = access::hash_password(PASSWORD).unwrap();
    let (session_hash, invitation_hash) =
        (keys::hash(&session_token), keys::hash(&invitation_token));
    let statements = format!(
        "INSERT INTO tenants (id, slug, name, admin_email, plan, seats, settings, created_at) \
         VALUES ('{tenant_id}', 'legacy-kopi', 'Legacy Kopi', 'owner@legacy.example', 'pro', 5, '{settings}', '2026-01-01T00:00:00.000Z');
         INSERT INTO users (id, tenant_id, email, role, password_hash, status, failed_logins, created_at, accepted_at) \
         VALUES ('u-owner', '{tenant_id}', 'owner@legacy.example', 'admin', '{password_hash}', 'active', 2, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');
         INSERT INTO users (id, tenant_id, email, role, status, created_at) \
         VALUES ('u-invited', '{tenant_id}', 'new@legacy.example', 'viewer', 'invited', '2026-01-02T00:00:00.000Z');
         INSERT INTO invitations (token_hash, user_id, expires_at) VALUES ('{invitation_hash}', 'u-invited', '2099-01-01T00:00:00Z');
         INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ('{session_hash}', 'u-owner', '2026-01-01T00:00:00.000Z', '2099-01-01T00:00:00Z');"
    );
    LegacyControl {
        tenant_id,
        session_token,
        invitation_token,
        statements,
    }
}

/// A folder holding the first two control migrations of a backend, as they were
/// before people and memberships.
fn migrations_before_memberships(backend: &str) -> tempfile::TempDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../store/migrations")
        .join(backend)
        .join("control");
    let dir = tempfile::tempdir().unwrap();
    for name in ["0001_control.sql", "0002_users_and_audit.sql"] {
        std::fs::copy(from.join(name), dir.path().join(name)).unwrap();
    }
    dir
}

/// After the migration, each user is a person with a membership of the same id:
/// the session goes on, the password logs in, the invitation can be accepted.
async fn legacy_users_carry_over(
    store: std::sync::Arc<dyn ledgersync_store::Store>,
    legacy: LegacyControl,
) {
    let tenant = store.tenant(&legacy.tenant_id).await.unwrap().unwrap();
    let users = store.users(&tenant).await.unwrap();
    let summary: Vec<(&str, &str, &str, &str)> = users
        .iter()
        .map(|u| {
            (
                u.id.as_str(),
                u.email.as_str(),
                u.role.as_str(),
                u.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("u-owner", "owner@legacy.example", "admin", "active"),
            ("u-invited", "new@legacy.example", "viewer", "invited"),
        ]
    );
    let app = spawn_app(store).await;
    let me: Value = app
        .get_json(format!("{}/v1/me", app.address), &legacy.session_token)
        .await;
    assert_eq!(me["tenant"]["slug"], "legacy-kopi");
    assert_eq!(me["as"]["user"]["id"], "u-owner");
    let login = login(&app, "owner@legacy.example", PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    assert_eq!(
        accept(&app, &legacy.invitation_token, "legacy-kopi-2026")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        login_request(&app, "new@legacy.example", "legacy-kopi-2026")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn users_before_memberships_carry_over_sqlite() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("tenants")).unwrap();
    let legacy = legacy_control();
    {
        let mut conn = sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}?mode=rwc",
            data.join("control.db").display()
        ))
        .await
        .unwrap();
        let migrations = migrations_before_memberships("sqlite");
        sqlx::migrate::Migrator::new(migrations.path())
            .await
            .unwrap()
            .run(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(&legacy.statements)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let store = ledgersync_store::connect(&format!("sqlite://{}", data.display()))
        .await
        .unwrap();
    legacy_users_carry_over(store, legacy).await;
}

#[tokio::test]
async fn users_before_memberships_carry_over_postgres() {
    use sqlx::Connection;
    let base = postgres_base();
    let name = format!("ledgersync_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let legacy = legacy_control();
    {
        let mut conn = sqlx::PgConnection::connect(&format!("{base}/{name}"))
            .await
            .unwrap();
        sqlx::raw_sql("CREATE SCHEMA ledgersync; SET search_path TO ledgersync")
            .execute(&mut conn)
            .await
            .unwrap();
        let migrations = migrations_before_memberships("postgres");
        sqlx::migrate::Migrator::new(migrations.path())
            .await
            .unwrap()
            .run(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(&legacy.statements)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    // Migrated on connecting; the database goes with the test.
    let test = postgres_store_on(name).await;
    legacy_users_carry_over(test.store.clone(), legacy).await;
}
