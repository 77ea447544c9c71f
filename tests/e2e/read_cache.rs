//! The read cache in front of the store, on both backends: a missing or expired
//! report is rendered by one request while the others asking for it wait, and one
//! in use is renewed in the background by one request while all are answered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::Response;
use ledgersync::api::state::ReadCache;
use ledgersync::import::import_csv;
use ledgersync::reports::{self, ReportError, ReportQuery};
use ledgersync_config::StreamDef;
use ledgersync_schemas::{Grouping, ReportKind};
use ledgersync_store::{Store, Tenant};

use crate::helpers::{
    options, postgres_store, provision, spawn_app, sqlite_store, write, TestStore,
};

const JOURNAL: &str = "date,txn_id,account,amount,branch
2025-01-10,S1,1000,1100.5,Kemang
2025-01-10,S1,4010,-1000.5,Kemang
2025-01-10,S1,2100,-100,Kemang
2025-02-10,P1,5010,400,Kemang
2025-02-10,P1,1010,-400,Kemang
";

/// Requests asking for the same report at once.
const CONCURRENT: usize = 16;

async fn tenant_with_journal(test: &TestStore) -> Tenant {
    let tenant = provision(test.store.as_ref(), "pro").await;
    let file = write(test.dir.path(), "gl.csv", JOURNAL);
    import_csv(
        test.store.clone(),
        &tenant,
        StreamDef::journal(),
        &file,
        &options(),
    )
    .await
    .unwrap();
    tenant
}

/// Renders a P&L from the store as the report route does, counting renders. It
/// dawdles first, so that every concurrent request arrives while it runs.
async fn render(
    store: Arc<dyn Store>,
    tenant: Tenant,
    from: &str,
    renders: Arc<AtomicUsize>,
) -> Result<Response<Bytes>, ReportError> {
    renders.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let query = ReportQuery {
        kind: ReportKind::Pnl,
        from: from.parse().unwrap(),
        to: "2025-02".parse().unwrap(),
        branch: None,
        by: Grouping::Month,
    };
    let report = reports::build(store.as_ref(), &tenant, &query).await?;
    Ok(Response::new(Bytes::from(
        serde_json::to_vec(&report).unwrap(),
    )))
}

/// `CONCURRENT` requests for one key at once: their bodies, or how many failed.
async fn ask_at_once(
    cache: &Arc<ReadCache>,
    store: &Arc<dyn Store>,
    tenant: &Tenant,
    from: &'static str,
    renders: &Arc<AtomicUsize>,
) -> Result<Vec<Bytes>, usize> {
    let requests: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let (cache, store, tenant, renders) = (
                cache.clone(),
                store.clone(),
                tenant.clone(),
                renders.clone(),
            );
            tokio::spawn(async move {
                let key = format!("{}|{from}", tenant.id);
                let render = || render(store.clone(), tenant.clone(), from, renders.clone());
                cache
                    .report(&key, render)
                    .await
                    .map(|response| response.into_body())
            })
        })
        .collect();
    let mut bodies = Vec::new();
    let mut failures = 0;
    for request in requests {
        match request.await.unwrap() {
            Ok(body) => bodies.push(body),
            Err(_) => failures += 1,
        }
    }
    if failures > 0 {
        Err(failures)
    } else {
        Ok(bodies)
    }
}

/// The TTL of these tests: long enough that the steps below land where they are
/// meant to (an entry is renewed from half to three quarters of it).
const TTL: Duration = Duration::from_millis(3_000);

async fn an_expired_report_is_rendered_once_for_all_who_wait(test: TestStore) {
    let tenant = tenant_with_journal(&test).await;
    let cache = Arc::new(ReadCache::renewing_reports(TTL));
    let renders = Arc::new(AtomicUsize::new(0));
    let count = || renders.load(Ordering::SeqCst);

    let first = ask_at_once(&cache, &test.store, &tenant, "2025-01", &renders)
        .await
        .unwrap();
    let rendered = std::time::Instant::now();
    assert_eq!(count(), 1, "a missing entry is rendered once");
    assert!(first.iter().all(|body| body == &first[0]));
    assert!(String::from_utf8_lossy(&first[0]).contains("\"revenue\":\"1000.5\""));

    ask_at_once(&cache, &test.store, &tenant, "2025-01", &renders)
        .await
        .unwrap();
    assert_eq!(count(), 1, "a fresh entry is not rendered again");

    // Past its renewal point and before it expires: answered from the entry while one
    // request renews it in the background.
    tokio::time::sleep_until((rendered + TTL.mul_f64(0.85)).into()).await;
    let renewing = ask_at_once(&cache, &test.store, &tenant, "2025-01", &renders)
        .await
        .unwrap();
    assert!(renewing.iter().all(|body| body == &first[0]));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(count(), 2, "one renewal for all");
    ask_at_once(&cache, &test.store, &tenant, "2025-01", &renders)
        .await
        .unwrap();
    assert_eq!(count(), 2, "the renewed entry is fresh");

    // Not asked for until it expired: rendered once for all who wait.
    tokio::time::sleep(TTL + Duration::from_millis(200)).await;
    let refreshed = ask_at_once(&cache, &test.store, &tenant, "2025-01", &renders)
        .await
        .unwrap();
    assert_eq!(count(), 3, "an expired entry is rendered once");
    assert!(refreshed.iter().all(|body| body == &first[0]));

    // A failure (here a reversed range) goes to every waiting request and is not
    // kept: the next request renders again.
    let failed = ask_at_once(&cache, &test.store, &tenant, "2025-03", &renders).await;
    assert_eq!(failed, Err(CONCURRENT));
    assert_eq!(count(), 4);
    let failed = ask_at_once(&cache, &test.store, &tenant, "2025-03", &renders).await;
    assert_eq!(failed, Err(CONCURRENT));
    assert_eq!(count(), 5);
}

#[tokio::test]
async fn an_expired_report_is_rendered_once_for_all_who_wait_sqlite() {
    an_expired_report_is_rendered_once_for_all_who_wait(sqlite_store().await).await;
}

#[tokio::test]
async fn an_expired_report_is_rendered_once_for_all_who_wait_postgres() {
    an_expired_report_is_rendered_once_for_all_who_wait(postgres_store().await).await;
}

/// Over HTTP: concurrent first requests of a key share one lookup and one render,
/// and all get the report.
async fn concurrent_first_requests_all_get_the_report(test: TestStore) {
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
    let url = format!("{}/v1/reports/pnl?from=2025-01&to=2025-02", app.address);
    let requests: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let request = app.client.get(&url).bearer_auth(&app.key).send();
            tokio::spawn(async move {
                let response = request.await.unwrap();
                (response.status(), response.text().await.unwrap())
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        bodies.push(body);
    }
    assert!(bodies[0].contains("\"revenue\":\"1000.5\""));
    assert!(bodies.iter().all(|body| body == &bodies[0]));
}

#[tokio::test]
async fn concurrent_first_requests_all_get_the_report_sqlite() {
    concurrent_first_requests_all_get_the_report(sqlite_store().await).await;
}

#[tokio::test]
async fn concurrent_first_requests_all_get_the_report_postgres() {
    concurrent_first_requests_all_get_the_report(postgres_store().await).await;
}

/// Two daemons on one PostgreSQL store: a change committed by one moves the other's
/// data generation (the key its cached reports are kept under) once both have
/// synchronised, and nothing moves it while nothing changes.
#[tokio::test]
async fn a_change_made_by_another_daemon_moves_the_generation() {
    let test = crate::helpers::postgres_store().await;
    let tenant = tenant_with_journal(&test).await;
    let other = ledgersync_store::connect(&test.url).await.unwrap();
    other.sync_generations().await.unwrap();
    let before = other.generation(&tenant.id);
    other.sync_generations().await.unwrap();
    assert_eq!(other.generation(&tenant.id), before, "nothing changed");

    test.store
        .upsert_accounts(&tenant, &ledgersync_schemas::default_chart()[..1])
        .await
        .unwrap();
    other.sync_generations().await.unwrap();
    assert_eq!(other.generation(&tenant.id), before, "not shared yet");
    test.store.sync_generations().await.unwrap();
    other.sync_generations().await.unwrap();
    let after = other.generation(&tenant.id);
    assert_ne!(after, before, "shared and seen");
    // The daemon that made the change counts it once, not again when it reads back
    // its own raise.
    let own = test.store.generation(&tenant.id);
    test.store.sync_generations().await.unwrap();
    assert_eq!(test.store.generation(&tenant.id), own);
    other.sync_generations().await.unwrap();
    assert_eq!(other.generation(&tenant.id), after);
}
