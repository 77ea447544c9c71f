//! Scheduled syncs in `serve`: each active connector's cron expression (with
//! seconds, in its tenant's timezone) runs through tokio-cron-scheduler.
//!
//! Several daemons may serve one PostgreSQL store: at each tick every daemon asks
//! the store for the connector's lease, and only the one that gets it syncs, so a
//! scheduled sync runs once. The lease is renewed while the sync runs; a daemon
//! killed mid-sync stops renewing it and, once it lapses, the next tick of any
//! daemon resumes from the last committed cursor. A run that fails after its
//! retries counts towards the connector's failures in a row; at
//! `sync.max_failures` the connector is paused and `verify` says so.
//!
//! tokio-cron-scheduler places a timezone at its UTC offset when a job is made: a
//! daylight-saving change takes effect for a connector at the next refresh that
//! sees its schedule changed, or at restart (Indonesia keeps no daylight saving).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ledgersync_config::{DaemonConfig, SyncConfig};
use ledgersync_store::{Store, StoredConnector};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::SyncMetrics;
use crate::secrets::Secrets;
use crate::sync::{sync_connector, HeldLease, StoredSpec, SyncOptions};

/// What every scheduled run shares.
struct Runner {
    store: Arc<dyn Store>,
    secrets: Secrets,
    config: SyncConfig,
    batch_rows: usize,
    max_reported_errors: usize,
    /// This daemon, as lease holder.
    holder: String,
    stop: CancellationToken,
    running: TaskTracker,
    metrics: SyncMetrics,
}

/// The running schedule; [`Scheduler::shutdown`] stops it.
pub struct Scheduler {
    jobs: JobScheduler,
    runner: Arc<Runner>,
    refresher: tokio::task::JoinHandle<()>,
}

/// A connector's job: what it was made from, to notice changes.
struct Scheduled {
    job: uuid::Uuid,
    schedule: String,
    timezone: String,
}

impl Scheduler {
    pub async fn start(
        store: Arc<dyn Store>,
        config: &DaemonConfig,
        metrics: SyncMetrics,
    ) -> anyhow::Result<Scheduler> {
        let secrets = Secrets::load(store.as_ref(), &config.credentials.key_file).await?;
        let runner = Arc::new(Runner {
            store,
            secrets,
            config: config.sync.clone(),
            batch_rows: config.import.batch_rows,
            max_reported_errors: config.import.max_reported_errors,
            holder: format!("{}:{}", hostname(), uuid::Uuid::new_v4().simple()),
            stop: CancellationToken::new(),
            running: TaskTracker::new(),
            metrics,
        });
        let jobs = JobScheduler::new()
            .await
            .context("starting the scheduler")?;
        jobs.start().await.context("starting the scheduler")?;
        let mut scheduled = HashMap::new();
        refresh(&jobs, &runner, &mut scheduled).await?;
        let refresher = {
            let (jobs, runner) = (jobs.clone(), runner.clone());
            tokio::spawn(async move {
                let every = Duration::from_secs(runner.config.refresh_secs.max(1));
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = runner.stop.cancelled() => break,
                    }
                    if let Err(error) = refresh(&jobs, &runner, &mut scheduled).await {
                        tracing::warn!(error = %error, "Could not read the connectors again; keeping the schedule as it was.");
                    }
                }
            })
        };
        Ok(Scheduler {
            jobs,
            runner,
            refresher,
        })
    }

    /// Stops scheduling, lets running syncs reach their next commit, and waits for
    /// them.
    pub async fn shutdown(mut self) {
        self.runner.stop.cancel();
        self.refresher.abort();
        if let Err(error) = self.jobs.shutdown().await {
            tracing::warn!(error = %error, "The scheduler did not stop cleanly.");
        }
        self.runner.running.close();
        self.runner.running.wait().await;
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "ledgersync".to_string())
}

/// Makes the jobs match the stored connectors: new or changed schedules get a job,
/// removed, paused or unscheduled connectors lose theirs.
async fn refresh(
    jobs: &JobScheduler,
    runner: &Arc<Runner>,
    scheduled: &mut HashMap<String, Scheduled>,
) -> anyhow::Result<()> {
    let connectors = runner.store.all_connectors().await?;
    let mut wanted: HashMap<String, (StoredConnector, String, String)> = HashMap::new();
    for connector in connectors {
        if connector.paused_at.is_some() {
            continue;
        }
        let Ok(spec) = StoredSpec::from_stored(&connector) else {
            continue;
        };
        let Some(schedule) = spec.connector.schedule.clone() else {
            continue;
        };
        let Some(tenant) = runner.store.tenant(&connector.tenant_id).await? else {
            continue;
        };
        wanted.insert(
            connector.id.clone(),
            (connector, schedule, tenant.settings.timezone.clone()),
        );
    }
    let stale: Vec<String> = scheduled
        .iter()
        .filter(|(id, job)| {
            wanted
                .get(*id)
                .is_none_or(|(_, schedule, tz)| *schedule != job.schedule || *tz != job.timezone)
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in stale {
        if let Some(job) = scheduled.remove(&id) {
            jobs.remove(&job.job).await.ok();
        }
    }
    for (id, (connector, schedule, timezone)) in wanted {
        if scheduled.contains_key(&id) {
            continue;
        }
        let tz: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
        let job = {
            let runner = runner.clone();
            let (tenant_id, name) = (connector.tenant_id.clone(), connector.name.clone());
            Job::new_async_tz(schedule.as_str(), tz, move |_, _| {
                let runner = runner.clone();
                let (tenant_id, name) = (tenant_id.clone(), name.clone());
                Box::pin(async move {
                    if runner.stop.is_cancelled() {
                        return;
                    }
                    let tracked =
                        runner
                            .running
                            .track_future(run_scheduled(runner.clone(), tenant_id, name));
                    tracked.await;
                })
            })
        };
        match job {
            Ok(job) => {
                let uuid = jobs.add(job).await.context("scheduling a connector")?;
                tracing::info!(connector = %connector.name, schedule = %schedule, timezone = %timezone, "Scheduled a connector.");
                scheduled.insert(
                    id,
                    Scheduled {
                        job: uuid,
                        schedule,
                        timezone,
                    },
                );
            }
            Err(error) => tracing::warn!(
                connector = %connector.name,
                schedule = %schedule,
                error = %error,
                "A connector's schedule is not a cron expression with seconds (sec min hour day month weekday); it is not scheduled."
            ),
        }
    }
    Ok(())
}

/// One tick of a connector: take the lease or leave it to the daemon holding it,
/// sync, record, pause after too many failures in a row.
async fn run_scheduled(runner: Arc<Runner>, tenant_id: String, name: String) {
    let store = runner.store.as_ref();
    let connector = match store.connector(&tenant_id, &name).await {
        Ok(Some(connector)) if connector.paused_at.is_none() => connector,
        Ok(_) => return,
        Err(error) => {
            tracing::warn!(connector = %name, error = %error, "Could not read a connector before its scheduled sync.");
            return;
        }
    };
    let lease = Duration::from_secs(runner.config.lease_secs.max(3));
    // The scheduler fires a job within a second after its tick: the second it fires
    // in names the tick for every daemon.
    let tick = chrono::Utc::now().timestamp_millis().div_euclid(1000);
    let held = match HeldLease::take(
        runner.store.clone(),
        &connector.id,
        &runner.holder,
        lease,
        Some(tick),
    )
    .await
    {
        Ok(Some(held)) => held,
        Ok(None) => {
            tracing::debug!(connector = %name, "Another daemon holds the connector's lease; not syncing.");
            return;
        }
        Err(error) => {
            tracing::warn!(connector = %name, error = %error, "Could not take a connector's lease.");
            return;
        }
    };
    let Some(tenant) = store.tenant(&tenant_id).await.ok().flatten() else {
        held.release().await;
        return;
    };
    let options = SyncOptions {
        batch_rows: runner.batch_rows,
        max_reported_errors: runner.max_reported_errors,
        retries: runner.config.retries,
        retry_base: Duration::from_secs(runner.config.retry_base_secs),
        stop: runner.stop.clone(),
        reconcile_now: false,
    };
    let started = std::time::Instant::now();
    let outcome = sync_connector(
        runner.store.clone(),
        &runner.secrets,
        &tenant,
        &connector,
        "schedule",
        &options,
    )
    .await;
    runner
        .metrics
        .record(&tenant.slug, &connector, started.elapsed(), &outcome);
    held.release().await;
    if let Err(error) = outcome {
        let failures = store
            .connector(&tenant_id, &name)
            .await
            .ok()
            .flatten()
            .map_or(0, |c| c.failures);
        if failures >= runner.config.max_failures {
            let reason = format!(
                "paused after {failures} failed runs in a row; last: {}",
                ledgersync_schemas::bounded(&error.to_string(), 300)
            );
            if store
                .set_connector_paused(&tenant_id, &name, Some(&reason))
                .await
                .is_ok()
            {
                tracing::warn!(connector = %name, failures, "Paused a connector that kept failing.");
                store
                    .audit(&tenant_id, "scheduler", "connector.paused", &reason)
                    .await
                    .ok();
            }
        }
    }
}
