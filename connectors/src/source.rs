//! The one interface behind every way rows come in: a [`Source`] yields bounded
//! [`SourceBatch`]es of text columns for the mapper, names each row for error
//! messages (a file line, or a table and key values), and says where to resume
//! (its cursor) once what it read is committed.
//!
//! Database sources ([`Database`]) turn each value into one canonical text form per
//! [`CanonicalType`] through their own declarative type table, so the stream
//! mapping that reads a POS export reads the POS database the same way.

use async_trait::async_trait;
use ledgersync_config::DatabaseStream;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::batch::RowBatch;

/// Which source, for logs and the store: rows are replaced by key within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIdentity {
    pub tenant: String,
    /// `file` for files, else the connector's name.
    pub connector: String,
    pub stream: String,
}

impl SourceIdentity {
    /// The ledger source the stream's transactions belong to, e.g. `db:pos/pos_sales`.
    pub fn ledger_source(&self) -> String {
        format!("db:{}/{}", self.connector, self.stream)
    }
}

/// What a source column is read as. Values reach the mapper as text, one form per
/// type, so nothing is parsed twice and no value passes through a float:
///
/// | type | text |
/// |---|---|
/// | `Text` | the value, decoded to UTF-8 from the column's character set |
/// | `Integer` | decimal digits, `-` for negatives |
/// | `Decimal` | plain decimal, every digit the source holds (`-1234.5600`), never an exponent |
/// | `Boolean` | `true` / `false` |
/// | `Date` | `YYYY-MM-DD` |
/// | `Timestamp` | `YYYY-MM-DD HH:MM:SS[.ffffff]`, a local time: placed by the connector's `source_timezone` (then written as `TimestampTz`), else by the mapping's `date.source_timezone` or the tenant's |
/// | `TimestampTz` | RFC 3339 in UTC, `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CanonicalType {
    Text,
    Integer,
    Decimal,
    Boolean,
    Date,
    Timestamp,
    TimestampTz,
}

/// A column as `discover` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    /// The database's own type name, e.g. `numeric(18,2)`, `DATETIME2`.
    pub source_type: String,
    /// None when the type has no canonical reading (e.g. `bytea`): a stream that
    /// reads the column is refused naming it.
    pub canonical: Option<CanonicalType>,
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableInfo {
    /// Schema (Postgres, SQL Server) or database (MySQL) holding the table.
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnInfo>,
}

/// How rows of a batch are named in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOrigin {
    /// Rows are lines of a file; `origin_lines` are line numbers.
    Lines,
    /// Rows of a table or query; `origin_lines` count rows from 1 over the read,
    /// and `keys[i]` names the batch's row `i` by its key values.
    Relation {
        relation: String,
        key_columns: Vec<String>,
        keys: Vec<String>,
    },
}

/// Up to a batch's worth of rows, with where each came from.
#[derive(Debug)]
pub struct SourceBatch {
    pub rows: RowBatch,
    pub origin: RowOrigin,
}

impl SourceBatch {
    /// Names the row whose origin is `line`: `line 17` or `sales row 17 (sale_id=S17)`.
    pub fn describe(&self, line: u64) -> String {
        describe(&self.origin, &self.rows.origin_lines, line)
    }

    /// The rows for the mapper, and what names them in messages afterwards.
    pub fn into_parts(self) -> (RowBatch, RowNames) {
        let names = RowNames {
            lines: self.rows.origin_lines.clone(),
            origin: self.origin,
        };
        (self.rows, names)
    }
}

/// What names a batch's rows once the rows themselves went to the mapper.
#[derive(Debug, Clone)]
pub struct RowNames {
    pub origin: RowOrigin,
    pub lines: Vec<u64>,
}

impl RowNames {
    pub fn describe(&self, line: u64) -> String {
        describe(&self.origin, &self.lines, line)
    }
}

fn describe(origin: &RowOrigin, lines: &[u64], line: u64) -> String {
    match origin {
        RowOrigin::Lines => format!("line {line}"),
        RowOrigin::Relation {
            relation,
            key_columns,
            keys,
        } => {
            let index = lines.iter().position(|&l| l == line);
            match index.and_then(|i| keys.get(i)) {
                Some(key) => format!("{relation} row {line} ({}={key})", key_columns.join(",")),
                None => format!("{relation} row {line}"),
            }
        }
    }
}

/// What kind of failure a source met, so that `connector test` and the scheduler
/// can act on it: the first four are the customer's IT person's to fix, a timeout
/// or an interrupted connection is worth retrying, the rest are definitions to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceErrorKind {
    /// Host not found, connection refused or timed out.
    Unreachable,
    /// The TLS handshake or the certificate failed.
    Tls,
    /// The database refused the user or password.
    Login,
    /// The user may not read a table or column.
    Permission,
    /// A statement ran past its timeout.
    Timeout,
    /// The connection broke while reading.
    Interrupted,
    /// A table, column or query of the definition does not exist or is invalid.
    Definition,
    /// A value or column type that has no exact canonical reading.
    Type,
    /// Content the reader cannot take apart (a file that is not UTF-8, malformed
    /// CSV, no header row): the sender's to fix.
    Content,
    Other,
}

/// A source's failure in words for the person who can fix it; never holds a
/// password (connection errors are rendered from the driver's kind and message,
/// not from the connection string). One made from a reader's own error shows
/// that error's words and keeps it for callers that sort errors by their type
/// ([`SourceError::cause`]).
#[derive(Debug)]
pub struct SourceError {
    pub kind: SourceErrorKind,
    pub message: String,
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SourceError {
    /// Past the cause, whose words are this error's own: a chain printed whole
    /// says them once.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_ref().and_then(|cause| cause.source())
    }
}

impl SourceError {
    pub fn new(kind: SourceErrorKind, message: impl Into<String>) -> SourceError {
        SourceError {
            kind,
            message: message.into(),
            cause: None,
        }
    }

    /// A reader's own error, in its own words.
    pub fn caused_by(
        kind: SourceErrorKind,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> SourceError {
        SourceError {
            kind,
            message: cause.to_string(),
            cause: Some(Box::new(cause)),
        }
    }

    /// The reader's own error this one was made from, if any.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }

    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            SourceErrorKind::Unreachable | SourceErrorKind::Timeout | SourceErrorKind::Interrupted
        )
    }
}

/// Rows in bounded batches, then `None`.
#[async_trait]
pub trait Source: Send {
    fn identity(&self) -> &SourceIdentity;
    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, SourceError>;
    /// Where the next read resumes once everything read so far is committed; None
    /// for sources read whole every time.
    fn cursor(&self) -> Option<String>;
    /// Whether the batches are the source's whole content: then keys the ledger
    /// holds for the source and the read did not bring were deleted at the source.
    fn is_complete_read(&self) -> bool;
    /// The columns every batch has, when known before the first batch (a file's
    /// header): a mapping is checked against them before anything is read.
    fn columns(&self) -> Option<&[String]> {
        None
    }
    /// How far the read is, as (done, total) in the source's own unit (a file's
    /// bytes), when it knows.
    fn progress(&self) -> Option<(u64, u64)> {
        None
    }
}

/// What a stream's read needs beside its definition.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub identity: SourceIdentity,
    /// The mapping's key columns: rows are ordered by them within a cursor value,
    /// and named by them in messages.
    pub key: Vec<String>,
    /// The cursor committed by the last sync, if the stream is incremental.
    pub cursor: Option<String>,
    pub batch_rows: usize,
    /// Only these columns, in the relation's order (a key reconcile reads the key
    /// columns alone); every column when `None`.
    pub columns: Option<Vec<String>>,
    /// Columns the mapping reads only as instants (its date column) or not at all
    /// (a cursor column it does not map): a reader may hand these over as
    /// `Datetime(µs, UTC)` rather than text, sparing the text written here and
    /// parsed there. Key columns stay text whatever this says.
    pub instant_columns: Vec<String>,
    /// Columns the mapping reads only as exact amounts: a reader may hand these over
    /// as `Decimal(38, 8)` (the scale the mapping reads amounts at) rather than text,
    /// where every value of the column fits. Key columns stay text.
    pub decimal_columns: Vec<String>,
}

/// What `connector test` found, step by step, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionCheck {
    /// e.g. `PostgreSQL 15.19`, `MariaDB 10.11.19`.
    pub server: String,
    /// One line per stream: `pos_sales: 128,042 rows readable in public.sales`.
    pub streams: Vec<String>,
}

/// A customer database: checked, described, and read stream by stream. No
/// connection is held between calls.
#[async_trait]
pub trait Database: Send + Sync {
    /// Connects, logs in and reads one row of each stream's relation; a failure
    /// says which step failed and what to do.
    async fn check(&self, streams: &[DatabaseStream]) -> Result<ConnectionCheck, SourceError>;
    /// Tables and views the user may read, with each column's canonical type.
    async fn discover(&self) -> Result<Vec<TableInfo>, SourceError>;
    /// Starts reading a stream: read-only, with the connector's statement timeout.
    async fn open(
        &self,
        stream: &DatabaseStream,
        request: ReadRequest,
    ) -> Result<Box<dyn Source>, SourceError>;
}

/// A batch a reading task fetched, and the greatest cursor value in it.
pub(crate) struct Fetched {
    pub(crate) batch: SourceBatch,
    pub(crate) cursor: Option<String>,
}

/// A database read driven by a task of its own, which owns the connection and sends
/// batches through a bounded channel (so memory holds the batch waiting and the
/// one being read); the channel closing ends the read. Dropping the source stops
/// the task, and its connection closes with it.
pub(crate) struct TaskSource {
    identity: SourceIdentity,
    batches: mpsc::Receiver<Result<Fetched, SourceError>>,
    task: Option<JoinHandle<()>>,
    cursor: Option<String>,
    incremental: bool,
}

impl TaskSource {
    /// `cursor` is the committed cursor of an incremental read (kept until a batch
    /// moves it), `incremental` whether the stream has a cursor column.
    pub(crate) fn new(
        identity: SourceIdentity,
        batches: mpsc::Receiver<Result<Fetched, SourceError>>,
        task: JoinHandle<()>,
        cursor: Option<String>,
        incremental: bool,
    ) -> TaskSource {
        TaskSource {
            identity,
            batches,
            task: Some(task),
            cursor,
            incremental,
        }
    }
}

impl Drop for TaskSource {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[async_trait]
impl Source for TaskSource {
    fn identity(&self) -> &SourceIdentity {
        &self.identity
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, SourceError> {
        match self.batches.recv().await {
            Some(Ok(fetched)) => {
                if fetched.cursor.is_some() {
                    self.cursor = fetched.cursor;
                }
                Ok(Some(fetched.batch))
            }
            Some(Err(error)) => Err(error),
            None => match self.task.take() {
                Some(task) => match task.await {
                    Err(error) if error.is_panic() => Err(SourceError::new(
                        SourceErrorKind::Other,
                        format!(
                            "stream '{}': the reader stopped unexpectedly",
                            self.identity.stream
                        ),
                    )),
                    _ => Ok(None),
                },
                None => Ok(None),
            },
        }
    }

    fn cursor(&self) -> Option<String> {
        self.cursor.clone()
    }

    fn is_complete_read(&self) -> bool {
        !self.incremental
    }
}
