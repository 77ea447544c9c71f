//! Database connectors: adding one (its definition, its mappings and its sealed
//! password), and syncing its streams into the ledger.
//!
//! A sync reads a batch from the customer's database with no store transaction
//! open, maps it, and only then commits it as one short load that carries the
//! postings, the stream's cursor and the recomputed aggregates together. The next
//! batch is read and mapped while one commits (`ReadAhead`), never inside its
//! transaction. A crash
//! loses at most the batch in flight; the next sync starts again from the last
//! committed cursor (less the stream's look-back), and rows read twice replace
//! themselves by key.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use ledgersync_config::{ConnectorSpec, DatabaseKind, DatabaseStream, StreamDef};
use ledgersync_connectors::{
    Database, MappedBatch, Mapper, ReadRequest, RowBatch, RowNames, Source, SourceError,
    SourceIdentity,
};
use ledgersync_credentials::SecretString;
use ledgersync_schemas::{Amount, RowError};
use ledgersync_store::{LoadRecord, RunTotals, Store, StoreError, StoredConnector, Tenant, Unseen};
use serde::{Deserialize, Serialize};
use tokio_util::task::AbortOnDropHandle;

use crate::import::map_context;
use crate::secrets::Secrets;

/// A connector's definition as stored: the spec and, per stream, the mapping it
/// was added with, so that a sync never depends on files that may have moved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSpec {
    pub connector: ConnectorSpec,
    pub mappings: BTreeMap<String, StreamDef>,
}

impl StoredSpec {
    /// Reads the spec and every mapping it names (relative to the spec's folder).
    pub fn read(spec_file: &std::path::Path) -> anyhow::Result<StoredSpec> {
        let text = std::fs::read_to_string(spec_file)
            .with_context(|| format!("cannot read {}", spec_file.display()))?;
        let connector = ConnectorSpec::from_toml(&text)
            .with_context(|| format!("in {}", spec_file.display()))?;
        let base = spec_file.parent().unwrap_or(std::path::Path::new("."));
        let mut mappings = BTreeMap::new();
        for stream in &connector.streams {
            anyhow::ensure!(
                !stream.mapping.is_empty(),
                "stream '{}' in {} names no mapping file (`mapping = \"streams/….toml\"`)",
                stream.name,
                spec_file.display()
            );
            let path = base.join(&stream.mapping);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "stream '{}': cannot read its mapping {}",
                    stream.name,
                    path.display()
                )
            })?;
            let def = StreamDef::from_toml(&text)
                .with_context(|| format!("stream '{}': mapping {}", stream.name, path.display()))?;
            mappings.insert(stream.name.clone(), def);
        }
        Ok(StoredSpec {
            connector,
            mappings,
        })
    }

    /// Builds the spec from texts, as a remote client sends them: the definition
    /// (TOML) and each stream's mapping (TOML) by stream name. The definition's
    /// `mapping` paths, if any, are not read; every stream needs a mapping text,
    /// and a mapping for a stream the definition lacks is refused. `ca_file` names
    /// a file on the server, which a remote client has no business pointing at.
    /// Every error is the sender's to fix, in words.
    pub fn from_texts(
        definition: &str,
        mappings: &BTreeMap<String, String>,
    ) -> anyhow::Result<StoredSpec> {
        let connector = ConnectorSpec::from_toml(definition)?;
        anyhow::ensure!(
            connector.ca_file.is_none(),
            "connector definition: `ca_file` names a file on the server and cannot be given here; \
             leave it out to verify against the system's roots, or add the connector with the CLI"
        );
        if let Some(unknown) = mappings
            .keys()
            .find(|name| !connector.streams.iter().any(|s| &s.name == *name))
        {
            anyhow::bail!(
                "mappings: the definition has no stream named '{}' (its streams: {})",
                ledgersync_schemas::bounded(unknown, 100),
                stream_names(&connector)
            );
        }
        let mut defs = BTreeMap::new();
        for stream in &connector.streams {
            let text = mappings.get(&stream.name).with_context(|| {
                format!(
                    "mappings: stream '{}' has no mapping text; send it under mappings.{}",
                    stream.name, stream.name
                )
            })?;
            let def = StreamDef::from_toml(text)
                .with_context(|| format!("mappings.{}: not a stream mapping", stream.name))?;
            defs.insert(stream.name.clone(), def);
        }
        Ok(StoredSpec {
            connector,
            mappings: defs,
        })
    }

    pub fn from_stored(connector: &StoredConnector) -> anyhow::Result<StoredSpec> {
        serde_json::from_str(&connector.spec).with_context(|| {
            format!(
                "connector '{}' has an unreadable definition",
                connector.name
            )
        })
    }
}

fn stream_names(spec: &ConnectorSpec) -> String {
    spec.streams
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The database a connector reads, built from its spec and password.
pub fn database(
    spec: &ConnectorSpec,
    password: SecretString,
) -> Result<Box<dyn Database>, SourceError> {
    match spec.kind {
        DatabaseKind::Postgres => Ok(Box::new(
            ledgersync_connectors::postgres::PostgresDatabase::new(spec, password)?,
        )),
        DatabaseKind::Mysql => Ok(Box::new(ledgersync_connectors::mysql::MysqlDatabase::new(
            spec, password,
        )?)),
        DatabaseKind::Mssql => Ok(Box::new(ledgersync_connectors::mssql::MssqlDatabase::new(
            spec, password,
        )?)),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A connector's lease held by this process while it syncs, renewed every third of
/// its length so that it lapses only when the process dies; released by
/// [`HeldLease::release`] (dropped without it, it stops renewing and lapses).
pub struct HeldLease {
    store: Arc<dyn Store>,
    connector_id: String,
    holder: String,
    renewing: tokio::task::JoinHandle<()>,
}

impl HeldLease {
    /// Takes the lease for `holder`, unless another holder's is live (or, with a
    /// scheduled `tick`, the tick was claimed already): then `None`.
    pub async fn take(
        store: Arc<dyn Store>,
        connector_id: &str,
        holder: &str,
        lease: std::time::Duration,
        tick: Option<i64>,
    ) -> Result<Option<HeldLease>, StoreError> {
        let lease_ms = lease.as_millis() as i64;
        let taken = store
            .acquire_lease(connector_id, holder, now_ms(), now_ms() + lease_ms, tick)
            .await?;
        if !taken {
            return Ok(None);
        }
        let renewing = {
            let (store, id, holder) = (store.clone(), connector_id.to_string(), holder.to_string());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    let renewed = store
                        .acquire_lease(&id, &holder, now_ms(), now_ms() + lease_ms, None)
                        .await;
                    if !matches!(renewed, Ok(true)) {
                        tracing::warn!(connector = %id, "Could not renew a connector's lease.");
                    }
                }
            })
        };
        Ok(Some(HeldLease {
            store,
            connector_id: connector_id.to_string(),
            holder: holder.to_string(),
            renewing,
        }))
    }

    pub async fn release(self) {
        self.renewing.abort();
        if let Err(error) = self
            .store
            .release_lease(&self.connector_id, &self.holder)
            .await
        {
            tracing::warn!(connector = %self.connector_id, error = %error, "Could not release a connector's lease; it lapses on its own.");
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewing.abort();
    }
}

/// What one stream's sync did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StreamSynced {
    pub stream: String,
    pub run_id: i64,
    pub rows_read: i64,
    /// Size of the rows read, as text columns in memory.
    pub bytes_read: i64,
    pub postings_written: i64,
    /// Transactions removed because the source no longer has them (full refresh).
    pub removed: i64,
    pub commits: i64,
    pub control_sum: Amount,
    pub cursor_before: Option<String>,
    pub cursor_after: Option<String>,
}

/// Why a stream's sync stopped; what was committed before stays.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Rows the mapping refused, named by table and key.
    #[error(
        "{rejected} row(s) refused by the mapping, nothing of their batch was committed:\n{listed}"
    )]
    Rows { rejected: usize, listed: String },
    /// The mapping does not fit the relation (a column it names is missing).
    #[error(transparent)]
    Mapping(#[from] ledgersync_connectors::MappingError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub struct SyncOptions {
    pub batch_rows: usize,
    pub max_reported_errors: usize,
    /// Further attempts after a transient source failure (unreachable, timeout, a
    /// broken connection), each from the last committed cursor.
    pub retries: u32,
    /// The first wait before a retry; it doubles each time, with jitter.
    pub retry_base: std::time::Duration,
    /// Cancelled on shutdown: a sync stops after its next commit.
    pub stop: tokio_util::sync::CancellationToken,
    /// Reconcile the keys of every incremental stream after its sync, due or not
    /// (streams are otherwise reconciled as often as their `reconcile` says).
    pub reconcile_now: bool,
}

impl SyncOptions {
    /// A manual sync: no retries, never stopped.
    pub fn once(batch_rows: usize, max_reported_errors: usize) -> SyncOptions {
        SyncOptions {
            batch_rows,
            max_reported_errors,
            retries: 0,
            retry_base: std::time::Duration::from_secs(1),
            stop: tokio_util::sync::CancellationToken::new(),
            reconcile_now: false,
        }
    }

    /// Base × 2^attempt, ± a quarter at random, so that many connectors failing
    /// together do not retry in step.
    fn backoff(&self, attempt: u32) -> std::time::Duration {
        use rand::Rng as _;
        let base = self.retry_base.as_millis() as u64;
        let wait = base.saturating_mul(1 << attempt.min(16));
        let jitter = rand::rng().random_range(0..=wait / 2);
        std::time::Duration::from_millis(wait - wait / 4 + jitter)
    }
}

/// The ledger source a stream's transactions belong to.
pub fn ledger_source(connector: &str, stream: &str) -> String {
    SourceIdentity {
        tenant: String::new(),
        connector: connector.to_string(),
        stream: stream.to_string(),
    }
    .ledger_source()
}

/// Syncs every stream of a connector in turn, recording a run for each; stops at
/// the first stream that fails (the later ones run next time).
pub async fn sync_connector(
    store: Arc<dyn Store>,
    secrets: &Secrets,
    tenant: &Tenant,
    connector: &StoredConnector,
    trigger: &str,
    options: &SyncOptions,
) -> Result<Vec<StreamSynced>, SyncError> {
    let spec = StoredSpec::from_stored(connector)?;
    // A connector that cannot even be set up (its password unreadable, a bad CA
    // file) fails its run like any other, so that failures in a row count it.
    let database = match secrets.open(store.as_ref(), connector).await {
        Ok(password) => database(&spec.connector, password).map_err(SyncError::from),
        Err(error) => Err(SyncError::Other(error)),
    };
    let mut synced = Vec::new();
    for stream in &spec.connector.streams {
        let mapping = spec
            .mappings
            .get(&stream.name)
            .cloned()
            .with_context(|| format!("stream '{}' has no stored mapping", stream.name))?;
        let source = ledger_source(&connector.name, &stream.name);
        let cursor_before = store.sync_cursor(tenant, &source).await?;
        let run_id = store
            .start_run(connector, &stream.name, trigger, cursor_before.as_deref())
            .await?;
        let mut totals = RunTotals {
            cursor_after: cursor_before.clone(),
            ..RunTotals::default()
        };
        let database = match &database {
            Ok(database) => database,
            Err(error) => {
                let message = error.to_string();
                store
                    .finish_run(connector, run_id, &totals, Some(&message))
                    .await?;
                // The source's own failure (a bad CA file, an unsupported kind) stays
                // one, so that callers can tell it from the server's.
                return Err(match error {
                    SyncError::Source(source) => {
                        SyncError::Source(SourceError::new(source.kind, source.message.clone()))
                    }
                    _ => SyncError::Other(anyhow::anyhow!(message)),
                });
            }
        };
        let mut attempt = 0;
        let outcome = loop {
            let cursor = store.sync_cursor(tenant, &source).await?;
            let outcome = sync_stream(
                store.clone(),
                tenant,
                connector,
                database.as_ref(),
                stream,
                mapping.clone(),
                cursor,
                options,
                &mut totals,
            )
            .await;
            match outcome {
                Err(SyncError::Source(error))
                    if error.is_transient() && attempt < options.retries =>
                {
                    let wait = options.backoff(attempt);
                    attempt += 1;
                    tracing::warn!(
                        connector = %connector.name,
                        stream = %stream.name,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        error = %error,
                        "A source failed; trying again from the last committed cursor."
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = options.stop.cancelled() => break Err(SyncError::Source(error)),
                    }
                }
                other => break other,
            }
        };
        let error = outcome.as_ref().err().map(|e| e.to_string());
        let failures = store
            .finish_run(connector, run_id, &totals, error.as_deref())
            .await?;
        match outcome {
            Ok(commits) => {
                tracing::info!(
                    tenant = %tenant.slug,
                    connector = %connector.name,
                    stream = %stream.name,
                    rows = totals.rows_read,
                    commits,
                    "Synced a stream."
                );
                synced.push(StreamSynced {
                    stream: stream.name.clone(),
                    run_id,
                    rows_read: totals.rows_read,
                    bytes_read: totals.bytes_read,
                    postings_written: totals.rows_written,
                    removed: totals.removed,
                    commits,
                    control_sum: totals.control_sum,
                    cursor_before,
                    cursor_after: totals.cursor_after,
                });
            }
            Err(error) => {
                tracing::warn!(
                    tenant = %tenant.slug,
                    connector = %connector.name,
                    stream = %stream.name,
                    failures,
                    error = %error,
                    "A stream's sync failed."
                );
                return Err(error);
            }
        }
    }
    Ok(synced)
}

/// Reads, maps and commits one stream batch by batch; returns the commits made.
#[allow(clippy::too_many_arguments)]
async fn sync_stream(
    store: Arc<dyn Store>,
    tenant: &Tenant,
    connector: &StoredConnector,
    database: &dyn Database,
    stream: &DatabaseStream,
    mapping: StreamDef,
    cursor: Option<String>,
    options: &SyncOptions,
    totals: &mut RunTotals,
) -> Result<i64, SyncError> {
    let mapper = Arc::new(Mapper::compile(
        mapping.clone(),
        map_context(store.as_ref(), tenant).await?,
    )?);
    let request = ReadRequest {
        identity: SourceIdentity {
            tenant: tenant.id.clone(),
            connector: connector.name.clone(),
            stream: stream.name.clone(),
        },
        key: mapping.key.clone(),
        cursor,
        batch_rows: options.batch_rows,
        columns: None,
        instant_columns: mapper.instant_columns(stream.cursor.iter().map(|c| &c.column)),
        decimal_columns: mapper.decimal_columns(),
    };
    let had_cursor = request.cursor.is_some();
    let source: Box<dyn Source> = database.open(stream, request).await?;
    let identity = source.identity().clone();
    let ledger_source = identity.ledger_source();
    let mut reading = ReadAhead::start(source, mapper.clone());
    let mut commits = 0;
    let mut first_load = None;
    let mut stopped = false;
    while let Some(batch) = reading.batches.recv().await {
        let ReadBatch {
            mapped,
            names,
            rows,
            bytes,
            cursor,
        } = batch?;
        totals.rows_read += rows;
        totals.bytes_read += bytes;
        let mapped = mapped?;
        if !mapped.errors.is_empty() {
            totals.rows_rejected += mapped.errors.len() as i64;
            return Err(rejected_rows(&names, &mapped.errors, options));
        }
        // The batch is read and mapped: only now is the store written, briefly.
        let mut session = store.begin_load(tenant).await?;
        session.stage_frame(mapped.postings).await?;
        let record = LoadRecord {
            source: ledger_source.clone(),
            fingerprint: format!("sync:{}:{}", uuid::Uuid::new_v4().simple(), commits),
            stream: stream.name.clone(),
            origin: format!("connector {}", connector.name),
            rows_read: rows,
            cursor: cursor.clone(),
        };
        let summary = match session.commit(record, options.max_reported_errors).await {
            Ok(summary) => summary,
            Err(StoreError::Rejected(rejected)) => {
                totals.rows_rejected += rejected.total as i64;
                return Err(rejected_rows(&names, &rejected.errors, options));
            }
            Err(other) => return Err(other.into()),
        };
        commits += 1;
        first_load.get_or_insert(summary.load_id);
        totals.rows_written += summary.postings;
        totals.control_sum = totals
            .control_sum
            .checked_add(summary.control_sum)
            .context("the run's control sum is beyond the amount range")?;
        totals.cursor_after = cursor;
        if options.stop.is_cancelled() {
            // Shutting down: what is committed stays, the rest is read next time.
            stopped = true;
            break;
        }
    }
    // Every batch is committed: whether the read was whole is asked of the source
    // once its task has ended (a task that failed ends the sync instead).
    let complete = !stopped && reading.finish().await?.is_complete_read();
    if complete {
        // Every row the source holds was read: what the ledger holds beyond it was
        // deleted at the source.
        let summary = store
            .remove_unseen(
                tenant,
                Unseen::LoadedBefore(first_load),
                removal_record(&ledger_source, connector, stream, "removed", 0),
            )
            .await?;
        totals.removed += summary.counts.removed;
        commits += 1;
    } else if !stopped
        && reconcile_due(
            store.as_ref(),
            tenant,
            &ledger_source,
            stream,
            had_cursor,
            options,
        )
        .await?
    {
        totals.removed += reconcile_keys(
            store.as_ref(),
            tenant,
            connector,
            database,
            stream,
            &mapper,
            identity,
            options,
        )
        .await?;
        commits += 1;
    }
    Ok(commits)
}

/// A batch read and mapped, with what the source said of it.
struct ReadBatch {
    /// A batch the mapping failed on is still counted as read.
    mapped: Result<MappedBatch, SyncError>,
    names: RowNames,
    rows: i64,
    bytes: i64,
    /// The source's cursor once this batch was read: committed with it.
    cursor: Option<String>,
}

/// A stream read and mapped ahead of its commits: the source is read on a task of
/// its own and each batch mapped on a thread, one batch apart, so that the customer's
/// database, the mapping and the store's commits work at the same time. At most a
/// batch per stage is in memory, and one waiting between stages. Neither stage
/// touches the store. Dropping it stops the reading (and so the mapping).
struct ReadAhead {
    batches: tokio::sync::mpsc::Receiver<Result<ReadBatch, SyncError>>,
    reader: AbortOnDropHandle<Box<dyn Source>>,
    mapping: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    fn start(mut source: Box<dyn Source>, mapper: Arc<Mapper>) -> ReadAhead {
        type Read = Result<(RowBatch, RowNames, i64, Option<String>), SyncError>;
        let (read_sender, mut read_receiver) = tokio::sync::mpsc::channel::<Read>(1);
        let checking = mapper.clone();
        let reader = AbortOnDropHandle::new(tokio::spawn(async move {
            let mut checked_columns = false;
            loop {
                let item = match source.next_batch().await {
                    Ok(None) => break,
                    Ok(Some(batch)) => {
                        let checked = match checked_columns {
                            true => Ok(()),
                            false => checking.check_columns(&column_names(&batch.rows)),
                        };
                        checked_columns = true;
                        checked.map_err(SyncError::from).map(|()| {
                            let bytes = batch.rows.frame.estimated_size() as i64;
                            let (rows, names) = batch.into_parts();
                            (rows, names, bytes, source.cursor())
                        })
                    }
                    Err(error) => Err(SyncError::from(error)),
                };
                let failed = item.is_err();
                // A closed channel means the sync stopped: stop reading.
                if read_sender.send(item).await.is_err() || failed {
                    break;
                }
            }
            source
        }));
        let (sender, batches) = tokio::sync::mpsc::channel(1);
        let mapping = tokio::task::spawn_blocking(move || {
            while let Some(read) = read_receiver.blocking_recv() {
                let item = read.map(|(rows, names, bytes, cursor)| {
                    let count = rows.len() as i64;
                    let mapped = mapper
                        .map(rows)
                        .map_err(|e| SyncError::from(anyhow::Error::from(e)));
                    ReadBatch {
                        mapped,
                        names,
                        rows: count,
                        bytes,
                        cursor,
                    }
                });
                let failed = matches!(&item, Err(_) | Ok(ReadBatch { mapped: Err(_), .. }));
                if sender.blocking_send(item).is_err() || failed {
                    break;
                }
            }
        });
        ReadAhead {
            batches,
            reader,
            mapping,
        }
    }

    /// The source, once every batch was taken: a reading or mapping task that
    /// ended without saying why (a panic) is an error here, never a short read.
    async fn finish(self) -> Result<Box<dyn Source>, SyncError> {
        self.mapping.await.context("the mapping task failed")?;
        Ok(self.reader.await.context("the reading task failed")?)
    }
}

fn column_names(rows: &RowBatch) -> Vec<String> {
    rows.frame
        .get_column_names()
        .into_iter()
        .map(|name| name.to_string())
        .collect()
}

/// The record of a commit that only removes `stream`'s transactions the source no
/// longer holds: `removed` after a full refresh, `reconciled` after a key reconcile.
fn removal_record(
    ledger_source: &str,
    connector: &StoredConnector,
    stream: &DatabaseStream,
    what: &str,
    rows_read: i64,
) -> LoadRecord {
    LoadRecord {
        source: ledger_source.to_owned(),
        fingerprint: format!("sync:{}:{what}", uuid::Uuid::new_v4().simple()),
        stream: stream.name.clone(),
        origin: format!("connector {}", connector.name),
        rows_read,
        cursor: None,
    }
}

/// Whether an incremental stream's keys are to be reconciled after this sync:
/// asked for, or its period is over. A stream's first sync (no cursor before it)
/// read everything the source holds and is not reconciled.
async fn reconcile_due(
    store: &dyn Store,
    tenant: &Tenant,
    ledger_source: &str,
    stream: &DatabaseStream,
    had_cursor: bool,
    options: &SyncOptions,
) -> Result<bool, SyncError> {
    let Some(cursor) = &stream.cursor else {
        return Ok(false);
    };
    if options.reconcile_now {
        return Ok(true);
    }
    let Some(every) = cursor.reconcile_every() else {
        return Ok(false);
    };
    if !had_cursor {
        return Ok(false);
    }
    let last = store.reconciled_at(tenant, ledger_source).await?;
    Ok(is_due(last.as_deref(), every, chrono::Utc::now()))
}

/// Never reconciled, or reconciled at least `every` ago (an unreadable time counts
/// as never).
fn is_due(
    last: Option<&str>,
    every: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let Some(last) = last.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return true;
    };
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
    now.signed_duration_since(last) >= every
}

/// Reads the stream's key columns whole and removes from the ledger the stream's
/// transactions whose key the source no longer holds (deleted rows, which an
/// incremental read never sees); returns how many were removed. The keys are held
/// in memory for the comparison (tens of bytes each).
#[allow(clippy::too_many_arguments)]
async fn reconcile_keys(
    store: &dyn Store,
    tenant: &Tenant,
    connector: &StoredConnector,
    database: &dyn Database,
    stream: &DatabaseStream,
    mapper: &Mapper,
    identity: SourceIdentity,
    options: &SyncOptions,
) -> Result<i64, SyncError> {
    let whole = DatabaseStream {
        cursor: None,
        ..stream.clone()
    };
    let ledger_source = identity.ledger_source();
    let request = ReadRequest {
        identity,
        key: mapper.key_columns().to_vec(),
        cursor: None,
        batch_rows: options.batch_rows,
        columns: Some(mapper.key_columns().to_vec()),
        instant_columns: Vec::new(),
        decimal_columns: Vec::new(),
    };
    let mut source = database.open(&whole, request).await?;
    let mut present = std::collections::HashSet::new();
    while let Some(batch) = source.next_batch().await? {
        let (rows, _) = batch.into_parts();
        present.extend(
            mapper
                .transaction_keys(&rows)
                .map_err(anyhow::Error::from)?,
        );
    }
    let held = present.len();
    let summary = store
        .remove_unseen(
            tenant,
            Unseen::KeysNotIn(present),
            removal_record(&ledger_source, connector, stream, "reconciled", held as i64),
        )
        .await?;
    tracing::info!(
        tenant = %tenant.slug,
        connector = %connector.name,
        stream = %stream.name,
        keys = held,
        removed = summary.counts.removed,
        "Reconciled a stream's keys with the source."
    );
    Ok(summary.counts.removed)
}

fn rejected_rows(names: &RowNames, errors: &[RowError], options: &SyncOptions) -> SyncError {
    let listed = errors
        .iter()
        .take(options.max_reported_errors)
        .map(|e| format!("  {}: {}", names.describe(e.line), e.reason))
        .collect::<Vec<_>>()
        .join("\n");
    SyncError::Rows {
        rejected: errors.len(),
        listed,
    }
}

#[cfg(test)]
mod tests {
    use super::is_due;
    use std::time::Duration;

    #[test]
    fn a_reconcile_is_due_once_its_period_is_over() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .to_utc();
        let day = Duration::from_secs(86_400);
        assert!(is_due(None, day, now), "never reconciled");
        assert!(is_due(Some("not a time"), day, now));
        assert!(!is_due(Some("2026-11-30T00:00:00.000Z"), day, now));
        assert!(is_due(Some("2026-11-29T12:00:00.000Z"), day, now));
        assert!(is_due(Some("2026-11-29T19:00:00+07:00"), day, now));
    }
}
