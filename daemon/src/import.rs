//! Loading a file through a stream mapping into a tenant's ledger.
//!
//! The file is read in bounded batches, each mapped by polars and staged in the
//! store; the load commits (postings, aggregates, load record) only if no row of the
//! whole file is wrong.
//!
//! A load's fingerprint is the file's content hash and the mapping's
//! (`blake3:<file>/mapping:blake3:<mapping>`, with `/again:<n>` for the n-th load of
//! the same content into the source). A file whose last load into the source was
//! under the same mapping changes nothing unless forced; under another mapping it is
//! loaded again. A file already loaded into another source (another stream name) is
//! refused unless it is meant as a new source: the same rows under two sources
//! count twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use ledgersync_config::{StreamDef, TenantSettings};
use ledgersync_connectors::file::FileSource;
use ledgersync_connectors::{
    AccountCodes, MapContext, MappedBatch, Mapper, RowBatch, Source, SourceIdentity,
};
use ledgersync_schemas::{Account, RowError};
use ledgersync_store::{LoadRecord, LoadSummary, PastLoad, Store, StoreError, Tenant};

#[derive(Debug)]
pub enum ImportOutcome {
    Loaded(LoadSummary),
    /// The same content was already loaded for this source under the same mapping;
    /// nothing changed.
    AlreadyLoaded(PastLoad),
}

/// What to do with a file loaded before.
#[derive(Debug, Clone, Copy, Default)]
pub struct Repeat {
    /// Load it again even if its last load into the source used the same mapping.
    pub force: bool,
    /// Load it even though another source (stream) holds the same content.
    pub as_new_source: bool,
}

/// A file refused because its content is already in the ledger under another
/// stream.
#[derive(Debug, thiserror::Error)]
#[error(
    "{file} was already loaded as stream '{earlier_stream}' (load {earlier_load}, {loaded_at}); \
     loading it as '{stream}' too would count its transactions twice. Import it with the \
     mapping of '{earlier_stream}' to update that load, or pass --as-new-source \
     (as_new_source=true over HTTP) if it really is a separate source"
)]
pub struct LoadedUnderAnotherStream {
    pub file: String,
    pub stream: String,
    pub earlier_stream: String,
    pub earlier_load: i64,
    pub loaded_at: String,
}

/// A file refused as a whole, with its first bad rows.
#[derive(Debug, thiserror::Error)]
#[error("{} has {total} bad row(s); nothing was imported:\n{}", .file.display(), render(.file, .errors, *.total))]
pub struct FileRejected {
    pub file: PathBuf,
    pub errors: Vec<RowError>,
    pub total: usize,
}

fn render(file: &Path, errors: &[RowError], total: usize) -> String {
    let mut text: Vec<String> = errors
        .iter()
        .map(|e| format!("  {}:{}: {}", file.display(), e.line, e.reason))
        .collect();
    if total > errors.len() {
        text.push(format!("  … and {} more", total - errors.len()));
    }
    text.join("\n")
}

pub struct ImportOptions {
    pub batch_rows: usize,
    pub max_reported_errors: usize,
    pub progress: bool,
}

/// What the tenant's settings and chart say a mapping needs.
pub async fn map_context(store: &dyn Store, tenant: &Tenant) -> anyhow::Result<MapContext> {
    let settings: &TenantSettings = &tenant.settings;
    let (retired, in_use): (Vec<_>, Vec<_>) = store
        .accounts(tenant)
        .await
        .context("reading the chart of accounts")?
        .into_iter()
        .partition(|a| a.retired);
    let codes =
        |accounts: Vec<Account>| -> AccountCodes { accounts.into_iter().map(|a| a.code).collect() };
    Ok(MapContext {
        timezone: settings.tz()?,
        currency: settings.currency.clone(),
        accounts: codes(in_use),
        retired: codes(retired),
    })
}

/// The file's content fingerprint: BLAKE3, which hashes a large export several
/// times faster than SHA-256. Read, not memory-mapped: a file an exporter truncates
/// while it is hashed would kill the process with SIGBUS through a mapping.
fn file_hash(path: &Path) -> anyhow::Result<String> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(file)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!("blake3:{}", hasher.finalize().to_hex()))
}

/// The fingerprint versions before BLAKE3 recorded: SHA-256, in bare hex.
fn sha256_file_hash(path: &Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Whether the source holds a load of this content under this mapping (or under a
/// mapping not recorded, by versions before mapping hashes): the latest load of the
/// content into the source decides. Loads by versions before BLAKE3 are found by
/// their SHA-256: re-importing an old file must not undo the corrections loaded
/// after it.
async fn same_load(
    store: &dyn Store,
    tenant: &Tenant,
    source: &str,
    path: &Path,
    here: &[PastLoad],
    mapped: &str,
) -> anyhow::Result<Option<PastLoad>> {
    if let Some(last) = here.last() {
        let content = mapped.split('/').next().unwrap_or(mapped);
        let same = last.fingerprint == content
            || last.fingerprint == mapped
            || last
                .fingerprint
                .strip_prefix(mapped)
                .is_some_and(|rest| rest.starts_with("/again:"));
        return Ok(same.then(|| last.clone()));
    }
    if !store.has_unnamed_fingerprints(tenant, source).await? {
        return Ok(None);
    }
    let path = path.to_path_buf();
    let earlier = tokio::task::spawn_blocking(move || sha256_file_hash(&path))
        .await
        .context("the hashing task failed")??;
    Ok(store.find_load(tenant, source, &earlier).await?)
}

/// Imports a file (see [`import_csv_repeating`]); a file loaded before is not
/// forced.
pub async fn import_csv(
    store: Arc<dyn Store>,
    tenant: &Tenant,
    stream: StreamDef,
    path: &Path,
    options: &ImportOptions,
) -> anyhow::Result<ImportOutcome> {
    let origin = path.display().to_string();
    import_csv_as(store, tenant, stream, path, &origin, options).await
}

/// Imports the file at `path` under the name `origin`, which the load record and
/// every message use instead of the path: an upload is named as its sender named
/// it, never by the server's temporary file. A file loaded before is not forced.
pub async fn import_csv_as(
    store: Arc<dyn Store>,
    tenant: &Tenant,
    stream: StreamDef,
    path: &Path,
    origin: &str,
    options: &ImportOptions,
) -> anyhow::Result<ImportOutcome> {
    import_csv_repeating(
        store,
        tenant,
        stream,
        path,
        origin,
        options,
        Repeat::default(),
    )
    .await
}

/// [`import_csv_as`], with `repeat` saying what to do with a file loaded before.
pub async fn import_csv_repeating(
    store: Arc<dyn Store>,
    tenant: &Tenant,
    stream: StreamDef,
    path: &Path,
    origin: &str,
    options: &ImportOptions,
    repeat: Repeat,
) -> anyhow::Result<ImportOutcome> {
    let source = format!("file:{}", stream.name);
    let stream_name = stream.name.clone();
    let mapping = stream.mapping_hash();
    // Hashing reads the whole file, off the async workers. The first batches are
    // read and mapped meanwhile: on two cores, waiting for the hash held up the
    // whole import. A file loaded before stops them after at most a few batches.
    let hashing = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || file_hash(&path))
    };
    let reading = start_reading(store.as_ref(), tenant, stream, path, options).await;
    let content = hashing.await.context("the hashing task failed")??;
    let mapped = format!("{content}/mapping:{mapping}");
    let (here, elsewhere): (Vec<PastLoad>, Vec<PastLoad>) = store
        .loads_of_content(tenant, &content)
        .await?
        .into_iter()
        .partition(|load| load.source == source);
    // Once the file is in this source, the question was settled by its first load.
    let asked = repeat.as_new_source || !here.is_empty();
    if let Some(earlier) = elsewhere.last().filter(|_| !asked) {
        return Err(LoadedUnderAnotherStream {
            file: origin.to_string(),
            stream: stream_name,
            earlier_stream: earlier.stream.clone(),
            earlier_load: earlier.id,
            loaded_at: earlier.loaded_at.clone(),
        }
        .into());
    }
    if let Some(past) = same_load(store.as_ref(), tenant, &source, path, &here, &mapped).await? {
        if !repeat.force {
            return Ok(ImportOutcome::AlreadyLoaded(past));
        }
    }
    // Fingerprints are unique within a source: a load of the same content again
    // (forced, or under another mapping) is numbered.
    let fingerprint = match here.len() {
        0 => mapped,
        earlier => format!("{mapped}/again:{earlier}"),
    };
    let outcome = match reading {
        Ok(reading) => {
            load(
                store.clone(),
                tenant,
                reading,
                origin,
                options,
                &source,
                &fingerprint,
            )
            .await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = &outcome {
        let problem = match error.downcast_ref::<FileRejected>() {
            Some(rejected) => format!(
                "{} bad row(s); first: line {}: {}",
                rejected.total,
                rejected.errors.first().map_or(0, |e| e.line),
                rejected.errors.first().map_or("", |e| e.reason.as_str())
            ),
            None => named_as(&format!("{error:#}"), path, origin),
        };
        let record = LoadRecord {
            source,
            fingerprint,
            stream: stream_name,
            origin: origin.to_string(),
            rows_read: 0,
            cursor: None,
        };
        if let Err(e) = store.record_failed_load(tenant, &record, &problem).await {
            tracing::warn!(error = %e, "Could not record a failed load.");
        }
    }
    outcome
}

/// A file being read and mapped, batch by batch, ahead of the load that stages it.
/// Dropping it stops the reading and mapping threads.
struct Reading {
    mapper: Arc<Mapper>,
    batches: tokio::sync::mpsc::Receiver<anyhow::Result<(MappedBatch, u64)>>,
    total_bytes: u64,
    reader: tokio::task::JoinHandle<()>,
    producer: tokio::task::JoinHandle<()>,
}

/// Opens the file and starts reading (file I/O, CSV) and mapping (polars), each on
/// a thread of its own, one batch apart: at most a few batches are in memory at
/// once (being read, mapped, staged, and one waiting between each).
async fn start_reading(
    store: &dyn Store,
    tenant: &Tenant,
    stream: StreamDef,
    path: &Path,
    options: &ImportOptions,
) -> anyhow::Result<Reading> {
    let mapper = Arc::new(Mapper::compile(stream, map_context(store, tenant).await?)?);
    let identity = SourceIdentity {
        tenant: tenant.id.clone(),
        connector: "file".to_string(),
        stream: mapper.stream_name().to_string(),
    };
    let mut source: Box<dyn Source> =
        Box::new(FileSource::open(identity, path, options.batch_rows)?);
    if let Some(columns) = source.columns() {
        mapper.check_columns(columns)?;
    }
    let total_bytes = source.progress().map_or(0, |(_, total)| total);
    let (read_sender, mut read_receiver) =
        tokio::sync::mpsc::channel::<anyhow::Result<(RowBatch, u64)>>(1);
    let reader = tokio::spawn(async move {
        loop {
            let item = match source.next_batch().await {
                Ok(Some(batch)) => Ok((batch.rows, source.progress().map_or(0, |(done, _)| done))),
                Ok(None) => break,
                Err(error) => Err(anyhow::Error::from(error)),
            };
            let failed = item.is_err();
            // A closed channel means the mapper gave up: stop reading.
            if read_sender.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    let (sender, receiver) = tokio::sync::mpsc::channel::<anyhow::Result<(MappedBatch, u64)>>(1);
    let producer = {
        let mapper = mapper.clone();
        tokio::task::spawn_blocking(move || {
            while let Some(item) = read_receiver.blocking_recv() {
                let item = item.and_then(|(batch, position)| {
                    Ok((mapper.map(batch).map_err(anyhow::Error::from)?, position))
                });
                let failed = item.is_err();
                // A closed channel means the load gave up: stop mapping.
                if sender.blocking_send(item).is_err() || failed {
                    break;
                }
            }
        })
    };
    Ok(Reading {
        mapper,
        batches: receiver,
        total_bytes,
        reader,
        producer,
    })
}

async fn load(
    store: Arc<dyn Store>,
    tenant: &Tenant,
    reading: Reading,
    origin: &str,
    options: &ImportOptions,
    source: &str,
    fingerprint: &str,
) -> anyhow::Result<ImportOutcome> {
    let Reading {
        mapper,
        batches: mut receiver,
        total_bytes,
        reader,
        producer,
    } = reading;
    let progress = if options.progress {
        let bar = ProgressBar::new(total_bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message(format!("importing {origin}"));
        bar
    } else {
        ProgressBar::hidden()
    };

    let started = std::time::Instant::now();
    let mut session = store.begin_load(tenant).await?;
    let mut errors: Vec<RowError> = Vec::new();
    let mut total_errors = 0usize;
    let mut rows_read = 0usize;
    while let Some(item) = receiver.recv().await {
        let (mapped, position) = item?;
        rows_read += mapped.rows;
        total_errors += mapped.errors.len();
        let room = options.max_reported_errors.saturating_sub(errors.len());
        errors.extend(mapped.errors.into_iter().take(room));
        // After the first bad row nothing will be committed, but reading on finds
        // every other bad row in one pass.
        if total_errors == 0 {
            session.stage_frame(mapped.postings).await?;
        }
        progress.set_position(position);
    }
    producer.await.context("the mapping task failed")?;
    reader.await.context("the reading task failed")?;
    progress.finish_and_clear();
    if total_errors > 0 {
        return Err(FileRejected {
            file: PathBuf::from(origin),
            errors,
            total: total_errors,
        }
        .into());
    }
    let record = LoadRecord {
        source: source.to_string(),
        fingerprint: fingerprint.to_string(),
        stream: mapper.stream_name().to_string(),
        origin: origin.to_string(),
        rows_read: rows_read as i64,
        cursor: None,
    };
    let staged_in = started.elapsed();
    // Validating, merging and recomputing aggregates take a while on large files too.
    let committing = if options.progress {
        let spinner = ProgressBar::new_spinner();
        spinner.set_message(format!(
            "validating {rows_read} rows, merging and recomputing aggregates"
        ));
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        spinner
    } else {
        ProgressBar::hidden()
    };
    let committed = session.commit(record, options.max_reported_errors).await;
    committing.finish_and_clear();
    match committed {
        Ok(summary) => {
            tracing::info!(
                file = origin,
                rows = rows_read,
                read_map_stage_secs = staged_in.as_secs_f64(),
                commit_secs = (started.elapsed() - staged_in).as_secs_f64(),
                "Imported a file."
            );
            Ok(ImportOutcome::Loaded(summary))
        }
        Err(StoreError::Rejected(rejected)) => Err(FileRejected {
            file: PathBuf::from(origin),
            errors: rejected.errors,
            total: rejected.total,
        }
        .into()),
        Err(other) => Err(other.into()),
    }
}

/// What the audit trail says of a committed load: the file, its stream and what
/// the load did.
pub fn audit_detail(origin: &str, stream: &str, summary: &LoadSummary) -> String {
    format!(
        "{origin} through stream {stream}: load {}, {} transaction(s) ({} added, {} replaced of \
         which {} unchanged, {} removed), {} posting(s)",
        summary.load_id,
        summary.transactions,
        summary.counts.added,
        summary.counts.replaced,
        summary.counts.unchanged,
        summary.counts.removed,
        summary.postings
    )
}

/// `message` with the file's path replaced by the name it is known by.
pub fn named_as(message: &str, path: &Path, origin: &str) -> String {
    message.replace(&path.display().to_string(), origin)
}

/// Reads a chart of accounts CSV: `code,name,class[,category]`.
pub fn read_chart(path: &Path) -> anyhow::Result<Vec<Account>> {
    use ledgersync_schemas::AccountClass;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let headers: Vec<String> = reader
        .headers()?
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let position = |name: &str| headers.iter().position(|h| h == name);
    let (Some(code), Some(name), Some(class)) =
        (position("code"), position("name"), position("class"))
    else {
        anyhow::bail!(
            "{}: the header must be code,name,class[,category]",
            path.display()
        );
    };
    let category = position("category");
    let mut accounts = Vec::new();
    let mut errors = Vec::new();
    for record in reader.records() {
        let record = record?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let field = |i: usize| record.get(i).unwrap_or("").to_string();
        let class_text = field(class);
        match AccountClass::parse(&class_text) {
            Some(parsed) if !field(code).is_empty() && !field(name).is_empty() => {
                accounts.push(Account {
                    code: field(code),
                    name: field(name),
                    class: parsed,
                    category: category.map(field).filter(|c| !c.is_empty()),
                    retired: false,
                })
            }
            Some(_) => errors.push(RowError {
                line,
                reason: "code and name must not be empty".into(),
            }),
            None => errors.push(RowError {
                line,
                reason: format!(
                    "unknown class '{class_text}': use one of {}",
                    AccountClass::ALL.map(|c| c.as_str()).join(", ")
                ),
            }),
        }
    }
    if !errors.is_empty() {
        let total = errors.len();
        return Err(FileRejected {
            file: path.to_path_buf(),
            errors,
            total,
        }
        .into());
    }
    Ok(accounts)
}
