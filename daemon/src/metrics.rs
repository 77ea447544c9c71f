//! Prometheus metrics of connector syncs (prometheus-client): runs, failures,
//! rows and bytes read, run duration and the time of the last success per connector, from which
//! a dashboard takes the lag (`time() - ledgersync_sync_last_success_seconds`).

use std::sync::Arc;
use std::time::Duration;

use ledgersync_store::StoredConnector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::sync::{StreamSynced, SyncError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    pub tenant: String,
    pub connector: String,
    pub kind: String,
}

/// The sync metrics and the registry they are served from.
#[derive(Clone)]
pub struct SyncMetrics {
    registry: Arc<Registry>,
    runs: Family<ConnectorLabels, Counter>,
    failures: Family<ConnectorLabels, Counter>,
    rows: Family<ConnectorLabels, Counter>,
    bytes: Family<ConnectorLabels, Counter>,
    duration: Family<ConnectorLabels, Histogram>,
    last_success: Family<ConnectorLabels, Gauge>,
}

fn duration_histogram() -> Histogram {
    // 50 ms to about 7 minutes.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

impl Default for SyncMetrics {
    fn default() -> Self {
        let runs = Family::<ConnectorLabels, Counter>::default();
        let failures = Family::<ConnectorLabels, Counter>::default();
        let rows = Family::<ConnectorLabels, Counter>::default();
        let bytes = Family::<ConnectorLabels, Counter>::default();
        let duration = Family::<ConnectorLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let last_success = Family::<ConnectorLabels, Gauge>::default();
        let mut registry = Registry::with_prefix("ledgersync_sync");
        registry.register("runs", "Connector sync runs", runs.clone());
        registry.register(
            "failures",
            "Connector sync runs that failed",
            failures.clone(),
        );
        registry.register("rows", "Rows read from connectors' sources", rows.clone());
        registry.register(
            "bytes",
            "Size of the rows read from connectors' sources, as text in memory",
            bytes.clone(),
        );
        registry.register(
            "duration_seconds",
            "Duration of connector sync runs",
            duration.clone(),
        );
        registry.register(
            "last_success_seconds",
            "When a connector last synced successfully (seconds since the epoch)",
            last_success.clone(),
        );
        SyncMetrics {
            registry: Arc::new(registry),
            runs,
            failures,
            rows,
            bytes,
            duration,
            last_success,
        }
    }
}

impl SyncMetrics {
    pub fn record(
        &self,
        tenant: &str,
        connector: &StoredConnector,
        took: Duration,
        outcome: &Result<Vec<StreamSynced>, SyncError>,
    ) {
        let labels = ConnectorLabels {
            tenant: tenant.to_string(),
            connector: connector.name.clone(),
            kind: connector.kind.clone(),
        };
        self.runs.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        match outcome {
            Ok(streams) => {
                let rows: i64 = streams.iter().map(|s| s.rows_read).sum();
                self.rows.get_or_create(&labels).inc_by(rows.max(0) as u64);
                let bytes: i64 = streams.iter().map(|s| s.bytes_read).sum();
                self.bytes
                    .get_or_create(&labels)
                    .inc_by(bytes.max(0) as u64);
                self.last_success
                    .get_or_create(&labels)
                    .set(chrono::Utc::now().timestamp());
            }
            Err(_) => {
                self.failures.get_or_create(&labels).inc();
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
