//! The runbook's access flows over real HTTP: provisioning with a welcome mail,
//! invitations, logins, sessions, roles on every route, seats, throttling, audit.

use std::path::Path;
use std::process::Stdio;

use ledgersync::access::Role;
use ledgersync::api::{Need, ROUTES};
use ledgersync::mail::Mailer;
use ledgersync::tenants;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use crate::helpers::{config_with_outbox, new_key, spawn_app, sqlite_store, TestApp};

const PASSWORD: &str = "kopi-susu-2025";

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

async fn accept(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/invitations/{token}/accept", app.address))
        .json(&json!({ "password": password }))
        .send()
        .await
        .unwrap()
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/auth/login", app.address))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

async fn session(app: &TestApp, email: &str) -> String {
    let response = login(app, email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK, "login of {email}");
    response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Provisions a tenant the runbook's way and logs its admin in.
async fn provisioned_admin(
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
async fn add_user(app: &TestApp, admin: &str, email: &str, role: &str) {
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
    let audit: Value = app
        .get_json(format!("{}/v1/audit", app.address), &admin)
        .await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
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

/// A request for one route, with valid parameters and body.
fn request(
    app: &TestApp,
    method: &str,
    path: &str,
    target_user: &str,
    target_key: &str,
    n: usize,
) -> reqwest::RequestBuilder {
    let concrete = path
        .replace("{token}", "inv_0000")
        .replace("{kind}", "pnl")
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
    let (_, other_admin) = provisioned_admin(&app, "owner@other.example", "pro").await;
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
            let mut builder = request(&app, route.method, route.path, &target_user, &target_key, n);
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
                // Another tenant's users never reach this tenant's users or keys.
                (_, true) if other_tenant && route.path.contains("{id}") => {
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
    let (tenant, user) = ledgersync::access::accept(test.store.as_ref(), token, PASSWORD)
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
