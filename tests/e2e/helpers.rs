//! Stores on both backends, provisioned tenants and a running API for tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use ledgersync::api::AppState;
use ledgersync::import::ImportOptions;
use ledgersync::{keys, tenants, Application};
use ledgersync_config::DaemonConfig;
use ledgersync_schemas::{Amount, Posting};
use ledgersync_store::{Store, Tenant};
use sqlx::Connection;
use tempfile::TempDir;

pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub dir: TempDir,
    /// The PostgreSQL database made for this test, dropped with it.
    postgres_database: Option<String>,
    /// The store's URL, for tests that reach past the store into its database.
    pub url: String,
}

impl Drop for TestStore {
    /// Drops the test's PostgreSQL database, ending the connections its pools (and
    /// any server the test spawned) still hold. On a thread of its own, since the
    /// test's runtime is the one being left.
    fn drop(&mut self) {
        let Some(name) = self.postgres_database.take() else {
            return;
        };
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin =
                    sqlx::PgConnection::connect(&format!("{}/postgres", postgres_base())).await?;
                sqlx::Executor::execute(
                    &mut admin,
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                )
                .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("could not drop the test's PostgreSQL database: {dropped:?}");
        }
    }
}

/// Runs `statements` in the tenant's own database (its SQLite file, or its schema),
/// past the store, for tests that damage or inspect what the store keeps.
/// A connection to `tenant`'s own tables (its SQLite file, or its PostgreSQL schema),
/// or with `key_index` to those of its key index (a file of its own on SQLite).
async fn tenant_connection(
    test: &TestStore,
    tenant: &Tenant,
    key_index: bool,
) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    let (url, schema) = match test.url.strip_prefix("sqlite://") {
        Some(dir) => {
            let extension = if key_index { "keys.db" } else { "db" };
            let file = Path::new(dir)
                .join("tenants")
                .join(format!("{}.{extension}", tenant.id));
            (format!("sqlite://{}", file.display()), None)
        }
        None => {
            let hex: String = tenant.id.chars().filter(char::is_ascii_hexdigit).collect();
            (
                test.url.clone(),
                Some(format!("SET search_path TO tenant_{hex}")),
            )
        }
    };
    let mut connection = sqlx::AnyConnection::connect(&url).await.unwrap();
    if let Some(schema) = schema {
        sqlx::query(&schema).execute(&mut connection).await.unwrap();
    }
    connection
}

pub async fn tenant_sql(test: &TestStore, tenant: &Tenant, statements: &[&str]) {
    run_sql(tenant_connection(test, tenant, false).await, statements).await;
}

/// Runs `statements` on the tables of `tenant`'s key index.
pub async fn key_index_sql(test: &TestStore, tenant: &Tenant, statements: &[&str]) {
    run_sql(tenant_connection(test, tenant, true).await, statements).await;
}

async fn run_sql(mut connection: sqlx::AnyConnection, statements: &[&str]) {
    for statement in statements {
        sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap();
    }
}

/// The one number `query` selects from the tables of `tenant`'s key index.
pub async fn key_index_count(test: &TestStore, tenant: &Tenant, query: &str) -> i64 {
    let mut connection = tenant_connection(test, tenant, true).await;
    sqlx::query_scalar(query)
        .fetch_one(&mut connection)
        .await
        .unwrap()
}

pub async fn sqlite_store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("data").display());
    let store = ledgersync_store::connect(&url).await.unwrap();
    TestStore {
        store,
        dir,
        postgres_database: None,
        url,
    }
}

pub fn postgres_base() -> String {
    std::env::var("LS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh database per test, so control schemas never collide.
pub async fn postgres_store() -> TestStore {
    let base = postgres_base();
    let name = format!("ledgersync_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .expect("PostgreSQL must be running on loopback (see .ci/run)");
    sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    postgres_store_on(name).await
}

/// A store on a PostgreSQL database the test created itself (e.g. with an older
/// schema); the database is dropped with the returned [`TestStore`].
pub async fn postgres_store_on(name: String) -> TestStore {
    let url = format!("{}/{name}", postgres_base());
    let store = ledgersync_store::connect(&url).await.unwrap();
    TestStore {
        store,
        dir: tempfile::tempdir().unwrap(),
        postgres_database: Some(name),
        url,
    }
}

/// A SQLite store with one freshly provisioned tenant.
pub async fn sqlite_tenant(plan: &str) -> (TestStore, Arc<dyn Store>, Tenant) {
    let test = sqlite_store().await;
    let store = test.store.clone();
    let tenant = provision(store.as_ref(), plan).await;
    (test, store, tenant)
}

pub async fn provision(store: &dyn Store, plan: &str) -> Tenant {
    let email = format!("owner-{}@kopi.example", uuid::Uuid::new_v4().simple());
    tenants::provision(store, "Kopi Kenangan", &email, plan, 10)
        .await
        .unwrap()
        .tenant
}

pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

pub fn options() -> ImportOptions {
    ImportOptions {
        batch_rows: 7,
        max_reported_errors: 50,
        progress: false,
    }
}

pub fn amount(text: &str) -> Amount {
    text.parse().unwrap()
}

pub fn posting(key: &str, date: &str, branch: &str, account: &str, value: &str) -> Posting {
    Posting {
        source_key: key.into(),
        origin_line: 1,
        date: date.parse::<NaiveDate>().unwrap(),
        branch: branch.into(),
        memo: String::new(),
        occurred_at: None,
        account: account.into(),
        amount: amount(value),
        currency: "IDR".into(),
        original_amount: amount(value),
    }
}

/// A served API over `store`, with a tenant and a read key; mail goes to `outbox`.
pub struct TestApp {
    pub address: String,
    pub store: Arc<dyn Store>,
    pub tenant: Tenant,
    pub key: String,
    pub client: reqwest::Client,
    pub outbox: TempDir,
    /// Where the master key that seals connector passwords is.
    pub keys: TempDir,
}

/// The daemon's default configuration, with mail written to `outbox`.
pub fn config_with_outbox(outbox: &Path) -> DaemonConfig {
    let mut config = DaemonConfig::default();
    config.mail.outbox = outbox.to_path_buf();
    config.mail.public_url = "http://dashboard.test".into();
    config
}

impl TestApp {
    /// GET `url` with a bearer credential.
    pub async fn get(&self, url: impl reqwest::IntoUrl, credential: &str) -> reqwest::Response {
        self.client
            .get(url)
            .bearer_auth(credential)
            .send()
            .await
            .unwrap()
    }

    /// GET `url` with a bearer credential, as JSON.
    pub async fn get_json(
        &self,
        url: impl reqwest::IntoUrl,
        credential: &str,
    ) -> serde_json::Value {
        self.get(url, credential).await.json().await.unwrap()
    }
}

pub async fn spawn_app(store: Arc<dyn Store>) -> TestApp {
    let tenant = provision(store.as_ref(), "pro").await;
    let key = new_key(store.as_ref(), &tenant, "read").await;
    let outbox = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let secrets =
        ledgersync::secrets::Secrets::load(store.as_ref(), &keys.path().join("master.key"))
            .await
            .unwrap();
    let state = AppState::new(store.clone(), &config_with_outbox(outbox.path()))
        .unwrap()
        .with_secrets(Arc::new(secrets));
    let app = Application::build(state, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let address = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        store,
        tenant,
        key,
        client: reqwest::Client::new(),
        outbox,
        keys,
    }
}

pub async fn new_key(store: &dyn Store, tenant: &Tenant, scope: &str) -> String {
    let secret = keys::generate();
    store
        .create_api_key(&tenant.id, "test", scope, &keys::hash(&secret))
        .await
        .unwrap();
    secret
}
