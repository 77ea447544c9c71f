//! MySQL and MariaDB sources through mysql_async (rustls with ring).
//!
//! Every call opens its own connection, which is made read-only
//! (`SET SESSION TRANSACTION READ ONLY`), put in UTC (`SET time_zone = '+00:00'`,
//! so TIMESTAMP values arrive as UTC) and given the connector's statement timeout
//! (`max_execution_time` in ms on MySQL, `max_statement_time` in seconds on
//! MariaDB). A read is one prepared statement streamed by a task that owns the
//! connection and hands over decoded batches through a channel of one batch, so
//! decoding overlaps the mapping of the batch before and memory stays bounded.
//!
//! TLS modes: `disable` → plaintext; `require` → TLS, certificate not checked;
//! `verify-full` → TLS checked against `ca_file` (else the Mozilla roots bundled
//! with webpki-roots) and the host name; `prefer` → TLS as `require`, and plaintext
//! only when the server does not offer TLS at all (as libmysqlclient's PREFERRED: a
//! failed handshake is an error, not a reason to go plaintext).

mod errors;
mod typesystem;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta};
use chrono_tz::Tz;
use futures_util::TryStreamExt;
use ledgersync_config::{ConnectorSpec, DatabaseKind, DatabaseStream, Lookback, TlsMode};
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, DriverError, Opts, OptsBuilder, Params, Row, SslOpts, Value};
use polars::prelude::ChunkedBuilder;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;

pub use errors::MysqlError;
use typesystem::{CellError, ColumnReading, Decode};

use crate::batch::{CellColumn, CellKind, RowBatch};
use crate::source::{
    ColumnInfo, ConnectionCheck, Database, ReadRequest, RowOrigin, Source, SourceBatch,
    SourceError, SourceErrorKind, SourceIdentity, TableInfo,
};

/// How long connecting and logging in may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A MySQL or MariaDB database of a connector. Its `Debug` shows where it points,
/// never the password.
#[derive(Clone)]
pub struct MysqlDatabase {
    inner: Arc<Inner>,
}

struct Inner {
    /// Everything but the password, which is added only to the copy each
    /// connection is made from.
    options: OptsBuilder,
    password: SecretString,
    tls: TlsMode,
    database: String,
    statement_timeout_secs: u64,
    zone: Option<Tz>,
    /// `host:port/database as user`, for messages.
    target: String,
}

impl fmt::Debug for MysqlDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlDatabase")
            .field("target", &self.inner.target)
            .field("tls", &self.inner.tls)
            .field("statement_timeout_secs", &self.inner.statement_timeout_secs)
            .finish_non_exhaustive()
    }
}

/// A connection with what the server said about itself.
struct Session {
    conn: Conn,
    /// `MariaDB 10.11.19`, `MySQL 8.0.36`.
    server: String,
}

impl MysqlDatabase {
    pub fn new(spec: &ConnectorSpec, password: SecretString) -> Result<MysqlDatabase, SourceError> {
        if spec.kind != DatabaseKind::Mysql {
            return Err(MysqlError::Definition(format!(
                "a {} connector cannot be read as MySQL",
                spec.kind.as_str()
            ))
            .into());
        }
        let zone = match &spec.source_timezone {
            None => None,
            Some(name) => Some(name.parse::<Tz>().map_err(|_| {
                MysqlError::Definition(format!("source_timezone '{name}' is not an IANA timezone"))
            })?),
        };
        let ssl = match spec.tls {
            TlsMode::Disable => None,
            TlsMode::Prefer | TlsMode::Require => Some(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            TlsMode::VerifyFull => {
                let ssl = SslOpts::default();
                Some(match &spec.ca_file {
                    None => ssl,
                    Some(path) => {
                        let pem = std::fs::read(path).map_err(|e| {
                            MysqlError::Tls(format!("cannot read ca_file {path}: {e}"))
                        })?;
                        ssl.with_root_certs(vec![pem.into()])
                            .with_disable_built_in_roots(true)
                    }
                })
            }
        };
        if ssl.is_some() {
            // mysql_async builds its TLS config with `ClientConfig::builder()`, which
            // panics when more than one rustls provider is compiled in and none is
            // the process default. Ours is ring; an earlier install wins.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let port = spec.port();
        let options = OptsBuilder::default()
            .ip_or_hostname(spec.host.clone())
            .tcp_port(port)
            .db_name(Some(spec.database.clone()))
            .user(Some(spec.user.clone()))
            // Connect where the definition says, not to a local socket found via
            // @@socket (mysql_async's default for loopback addresses).
            .prefer_socket(false)
            .ssl_opts(ssl)
            .setup(vec![
                "SET SESSION TRANSACTION READ ONLY",
                "SET time_zone = '+00:00'",
            ]);
        Ok(MysqlDatabase {
            inner: Arc::new(Inner {
                options,
                password,
                tls: spec.tls,
                database: spec.database.clone(),
                statement_timeout_secs: spec.statement_timeout_secs,
                zone,
                target: format!("{}:{port}/{} as {}", spec.host, spec.database, spec.user),
            }),
        })
    }

    async fn connect(&self) -> Result<Session, MysqlError> {
        let inner = &self.inner;
        let password = inner.password.expose_secret();
        let options = inner
            .options
            .clone()
            .pass((!password.is_empty()).then(|| password.to_string()));
        let conn = match self.connect_with(options.clone()).await {
            Err(MysqlError::Connect {
                source: mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer),
                ..
            }) if inner.tls == TlsMode::Prefer => self.connect_with(options.ssl_opts(None)).await?,
            other => other?,
        };
        let mut session = Session {
            conn,
            server: String::new(),
        };
        let version: Option<String> = session
            .conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|source| statement("asking the server's version", source))?;
        let version = version.unwrap_or_default();
        let mariadb = version.to_ascii_lowercase().contains("mariadb");
        let number = version.split('-').next().unwrap_or_default();
        session.server = format!("{} {number}", if mariadb { "MariaDB" } else { "MySQL" });
        let secs = inner.statement_timeout_secs;
        let timeout = if mariadb {
            format!("SET SESSION max_statement_time = {secs}")
        } else {
            format!(
                "SET SESSION max_execution_time = {}",
                secs.saturating_mul(1000)
            )
        };
        session
            .conn
            .query_drop(timeout)
            .await
            .map_err(|source| statement("setting the statement timeout", source))?;
        Ok(session)
    }

    async fn connect_with(&self, options: OptsBuilder) -> Result<Conn, MysqlError> {
        let target = self.inner.target.clone();
        match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(Opts::from(options))).await {
            Err(_) => Err(MysqlError::ConnectTimeout {
                target,
                seconds: CONNECT_TIMEOUT.as_secs(),
            }),
            Ok(result) => result.map_err(|source| MysqlError::Connect { target, source }),
        }
    }

    /// The relation a stream reads, as SQL and as named in messages.
    fn relation(&self, stream: &DatabaseStream) -> Result<(String, String), MysqlError> {
        match (&stream.table, &stream.query) {
            (Some(table), None) => {
                let (schema, name) = match table.split_once('.') {
                    Some((schema, name)) => (schema, name),
                    None => (self.inner.database.as_str(), table.as_str()),
                };
                Ok((format!("{}.{}", quote(schema), quote(name)), table.clone()))
            }
            (None, Some(query)) => Ok((
                format!("({}) AS src", query.trim().trim_end_matches(';')),
                format!("query of stream {}", stream.name),
            )),
            _ => Err(MysqlError::Definition(format!(
                "stream '{}' needs exactly one of `table` or `query`",
                stream.name
            ))),
        }
    }

    /// How each result column is read; a column without a canonical reading is
    /// refused naming it, with the query that would read it.
    fn readings(
        &self,
        relation: &str,
        columns: &[Column],
    ) -> Result<Vec<ColumnReading>, MysqlError> {
        columns
            .iter()
            .map(|column| {
                let row = typesystem::by_wire(column.column_type(), column.character_set());
                if row.decode == Decode::Refuse {
                    return Err(MysqlError::ColumnType {
                        relation: relation.to_string(),
                        column: column.name_str().into_owned(),
                        source_type: wire_name(column),
                        advice: row.advice.to_string(),
                    });
                }
                Ok(ColumnReading {
                    decode: row.decode,
                    charset: column.character_set(),
                    zone: (row.decode == Decode::Naive)
                        .then_some(self.inner.zone)
                        .flatten(),
                })
            })
            .collect()
    }
}

/// Identifiers in backticks, a backtick inside doubled.
fn quote(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}

fn statement(doing: impl Into<String>, source: mysql_async::Error) -> MysqlError {
    MysqlError::Statement {
        doing: doing.into(),
        source,
    }
}

/// `DOUBLE`, `BLOB (binary)`: the wire type as the user knows it.
fn wire_name(column: &Column) -> String {
    let name = format!("{:?}", column.column_type());
    let name = name.trim_start_matches("MYSQL_TYPE_").to_string();
    if column.character_set() == typesystem::BINARY_CHARSET
        && typesystem::by_name("blob")
            .wire
            .contains(&column.column_type())
    {
        format!("{name} (binary)")
    } else {
        name
    }
}

/// `128042` → `128,042`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl Database for MysqlDatabase {
    async fn check(&self, streams: &[DatabaseStream]) -> Result<ConnectionCheck, SourceError> {
        let mut session = self.connect().await?;
        let mut lines = Vec::with_capacity(streams.len());
        for stream in streams {
            let (sql, relation) = self.relation(stream)?;
            let doing = format!("checking stream {} ({relation})", stream.name);
            let prepared = session
                .conn
                .prep(format!("SELECT * FROM {sql}"))
                .await
                .map_err(|source| statement(doing.clone(), source))?;
            let columns = prepared.columns();
            self.readings(&relation, &columns)?;
            if let Some(cursor) = &stream.cursor {
                if !columns.iter().any(|c| c.name_str() == cursor.column) {
                    return Err(MysqlError::Definition(format!(
                        "stream {}: cursor column {} is not a column of {relation}",
                        stream.name, cursor.column
                    ))
                    .into());
                }
            }
            session
                .conn
                .close(prepared)
                .await
                .map_err(|source| statement(doing.clone(), source))?;
            let count: Option<u64> = session
                .conn
                .query_first(format!("SELECT COUNT(*) FROM {sql}"))
                .await
                .map_err(|source| statement(doing, source))?;
            lines.push(format!(
                "{}: {} rows readable in {relation}",
                stream.name,
                thousands(count.unwrap_or(0))
            ));
        }
        let _ = session.conn.disconnect().await;
        Ok(ConnectionCheck {
            server: session.server,
            streams: lines,
        })
    }

    async fn discover(&self) -> Result<Vec<TableInfo>, SourceError> {
        let mut session = self.connect().await?;
        // information_schema lists only the columns the user holds a privilege on.
        let rows: Vec<(String, String, String, String, String)> = session
            .conn
            .exec(
                "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
                 ORDER BY TABLE_NAME, ORDINAL_POSITION",
                (self.inner.database.as_str(),),
            )
            .await
            .map_err(|source| statement("listing tables and columns", source))?;
        let _ = session.conn.disconnect().await;
        let mut tables: Vec<TableInfo> = Vec::new();
        for (table, column, data_type, column_type, nullable) in rows {
            let row = typesystem::by_name(&data_type);
            let reading = ColumnReading {
                decode: row.decode,
                charset: 0,
                zone: self.inner.zone,
            };
            let info = ColumnInfo {
                name: column,
                source_type: column_type,
                canonical: reading.canonical(row),
                nullable: nullable.eq_ignore_ascii_case("YES"),
            };
            match tables.last_mut() {
                Some(last) if last.name == table => last.columns.push(info),
                _ => tables.push(TableInfo {
                    schema: self.inner.database.clone(),
                    name: table,
                    columns: vec![info],
                }),
            }
        }
        Ok(tables)
    }

    async fn open(
        &self,
        stream: &DatabaseStream,
        request: ReadRequest,
    ) -> Result<Box<dyn Source>, SourceError> {
        let (relation_sql, relation) = self.relation(stream)?;
        let doing = format!("reading stream {} ({relation})", stream.name);
        let mut session = self.connect().await?;
        let conn = &mut session.conn;
        conn.query_drop("START TRANSACTION READ ONLY")
            .await
            .map_err(|source| statement(doing.clone(), source))?;
        let lookback = match stream.cursor.as_ref().and_then(|c| c.lookback.as_deref()) {
            None => None,
            Some(text) => Some(Lookback::parse(text).ok_or_else(|| {
                MysqlError::Definition(format!(
                    "stream {}: lookback '{text}' is neither a duration nor a count",
                    stream.name
                ))
            })?),
        };
        let projection = match &request.columns {
            None => "*".to_owned(),
            Some(columns) => columns
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let mut sql = format!("SELECT {projection} FROM {relation_sql}");
        if let Some(cursor) = &stream.cursor {
            if request.cursor.is_some() {
                sql.push_str(&format!(" WHERE {} >= ?", quote(&cursor.column)));
            }
            let order: Vec<String> = std::iter::once(&cursor.column)
                .chain(request.key.iter().filter(|k| **k != cursor.column))
                .map(|c| quote(c))
                .collect();
            sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        let prepared = conn
            .prep(sql)
            .await
            .map_err(|source| statement(doing.clone(), source))?;
        let columns = prepared.columns();
        let readings = self.readings(&relation, &columns)?;
        let names: Vec<String> = columns.iter().map(|c| c.name_str().into_owned()).collect();
        let position = |name: &str| -> Result<usize, MysqlError> {
            names.iter().position(|n| n == name).ok_or_else(|| {
                MysqlError::Definition(format!(
                    "stream {}: {relation} has no column {name} (it has {})",
                    stream.name,
                    names.join(", ")
                ))
            })
        };
        let keys = request
            .key
            .iter()
            .map(|k| position(k))
            .collect::<Result<Vec<_>, _>>()?;
        let cursor_index = match &stream.cursor {
            Some(cursor) => Some(position(&cursor.column)?),
            None => None,
        };
        let params = match (cursor_index, &request.cursor) {
            (Some(index), Some(committed)) => {
                let bound = cursor_bound(committed, &readings[index], lookback).map_err(|why| {
                    MysqlError::Definition(format!(
                        "stream {}: cursor column {}: {why}",
                        stream.name, names[index]
                    ))
                })?;
                Params::Positional(vec![bound])
            }
            _ => Params::Empty,
        };
        let kinds = readings
            .iter()
            .zip(columns.iter())
            .enumerate()
            .map(|(index, (reading, column))| {
                let name = &names[index];
                if keys.contains(&index) {
                    CellKind::Text
                } else if typesystem::is_instant(reading) && request.instant_columns.contains(name)
                {
                    CellKind::Instants
                } else if reading.decode == Decode::Decimal
                    && request.decimal_columns.contains(name)
                    && Some(index) != cursor_index
                    && typesystem::decimals_fit(column)
                {
                    CellKind::Decimals
                } else {
                    CellKind::Text
                }
            })
            .collect();
        let plan = ReadPlan {
            relation: relation.clone(),
            names,
            readings,
            kinds,
            keys,
            key_columns: request.key.clone(),
            cursor: cursor_index,
            batch_rows: request.batch_rows.max(1),
            doing,
        };
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(pump(
            self.clone(),
            session.conn,
            prepared,
            params,
            plan,
            sender,
        ));
        Ok(Box::new(MysqlSource {
            identity: request.identity,
            receiver,
            cursor: request.cursor,
            incremental: stream.cursor.is_some(),
            finished: false,
        }))
    }
}

/// The lower bound of an incremental read: the committed cursor minus the
/// look-back, as a value of the cursor column's own type.
fn cursor_bound(
    committed: &str,
    reading: &ColumnReading,
    lookback: Option<Lookback>,
) -> Result<Value, String> {
    let seconds = |kind: &str| match lookback {
        None | Some(Lookback::Count(0)) => Ok(0),
        Some(Lookback::Seconds(s)) => Ok(s),
        Some(Lookback::Count(_)) => Err(format!(
            "a {kind} cursor needs a look-back duration (90s, 10m, 2h, 1d), not a count"
        )),
    };
    let unreadable = |kind: &str| {
        format!("the committed cursor '{committed}' is not a {kind}; reset the stream's cursor")
    };
    let minus = |t: NaiveDateTime, s: i64| {
        TimeDelta::try_seconds(s)
            .and_then(|d| t.checked_sub_signed(d))
            .ok_or_else(|| format!("look-back of {s} s before {t} is out of range"))
    };
    match reading.decode {
        Decode::Integer | Decode::Bits => {
            let value: i128 = committed.parse().map_err(|_| unreadable("integer"))?;
            let count = match lookback {
                None | Some(Lookback::Seconds(0)) => 0,
                Some(Lookback::Count(n)) => n,
                Some(Lookback::Seconds(_)) => {
                    return Err("an integer cursor needs a look-back count, not a duration".into())
                }
            };
            let bound = value - i128::from(count);
            Ok(match i64::try_from(bound) {
                Ok(v) => Value::Int(v),
                Err(_) if bound > 0 => Value::UInt(u64::try_from(bound).unwrap_or(u64::MAX)),
                Err(_) => Value::Int(i64::MIN),
            })
        }
        Decode::Date => {
            let day =
                NaiveDate::parse_from_str(committed, "%Y-%m-%d").map_err(|_| unreadable("date"))?;
            let start = minus(day.and_time(chrono::NaiveTime::MIN), seconds("date")?)?;
            Ok(typesystem::date_value(
                &start.date().and_time(chrono::NaiveTime::MIN),
            ))
        }
        Decode::Naive if reading.zone.is_none() => {
            let t = NaiveDateTime::parse_from_str(committed, "%Y-%m-%d %H:%M:%S%.f")
                .map_err(|_| unreadable("date and time"))?;
            Ok(typesystem::date_value(&minus(t, seconds("time")?)?))
        }
        Decode::Naive | Decode::Utc => {
            let t = DateTime::parse_from_rfc3339(committed)
                .map_err(|_| unreadable("UTC time"))?
                .naive_utc();
            let t = minus(t, seconds("time")?)?;
            // A DATETIME is compared in the source's wall-clock time; a TIMESTAMP
            // in the session's, which is UTC.
            let t = match reading.zone {
                Some(zone) if reading.decode == Decode::Naive => {
                    t.and_utc().with_timezone(&zone).naive_local()
                }
                _ => t,
            };
            Ok(typesystem::date_value(&t))
        }
        Decode::Decimal | Decode::Text | Decode::Refuse => match lookback {
            None | Some(Lookback::Count(0)) | Some(Lookback::Seconds(0)) => {
                Ok(Value::Bytes(committed.as_bytes().to_vec()))
            }
            Some(_) => Err("a look-back needs a time or integer cursor".into()),
        },
    }
}

/// What the reading task needs to turn rows into batches.
struct ReadPlan {
    relation: String,
    names: Vec<String>,
    readings: Vec<ColumnReading>,
    /// Per column: handed over as text, instants or decimals. Key columns are text.
    kinds: Vec<CellKind>,
    keys: Vec<usize>,
    key_columns: Vec<String>,
    cursor: Option<usize>,
    batch_rows: usize,
    doing: String,
}

/// What the reading task sends: batches, then the end, or an error. The end is
/// explicit so that a task that died is never taken for a complete read.
enum Message {
    Batch {
        batch: SourceBatch,
        cursor: Option<String>,
    },
    End,
}

/// Why the reading task stopped early.
enum Stop {
    /// The source was dropped before the end.
    Closed,
    Failed(MysqlError),
}

async fn pump(
    database: MysqlDatabase,
    mut conn: Conn,
    prepared: mysql_async::Statement,
    params: Params,
    plan: ReadPlan,
    sender: mpsc::Sender<Result<Message, SourceError>>,
) {
    let connection_id = conn.id();
    match stream_rows(&mut conn, prepared, params, &plan, &sender).await {
        Ok(()) => {
            let _ = conn.query_drop("COMMIT").await;
            let _ = conn.disconnect().await;
            let _ = sender.send(Ok(Message::End)).await;
        }
        Err(Stop::Failed(error)) => {
            let _ = sender.send(Err(error.into())).await;
        }
        Err(Stop::Closed) => {
            // Dropping the connection mid-result would make mysql_async read the
            // rest of the result before closing it; stop the query instead.
            if let Ok(mut other) = database.connect().await {
                let _ = other
                    .conn
                    .query_drop(format!("KILL QUERY {connection_id}"))
                    .await;
                let _ = other.conn.disconnect().await;
            }
            // The stopped query leaves its transaction open, holding locks: end it.
            let _ = conn.query_drop("ROLLBACK").await;
            let _ = conn.disconnect().await;
        }
    }
}

async fn stream_rows(
    conn: &mut Conn,
    prepared: mysql_async::Statement,
    params: Params,
    plan: &ReadPlan,
    sender: &mpsc::Sender<Result<Message, SourceError>>,
) -> Result<(), Stop> {
    let failed = |source| Stop::Failed(statement(plan.doing.clone(), source));
    let mut result = conn.exec_iter(prepared, params).await.map_err(failed)?;
    let Some(mut rows) = result.stream::<Row>().await.map_err(failed)? else {
        return Ok(());
    };
    let mut batch = BatchBuilder::new(plan);
    let mut line = 0u64;
    while let Some(row) = rows.try_next().await.map_err(failed)? {
        line += 1;
        batch.push(row.unwrap(), line).map_err(Stop::Failed)?;
        if batch.lines.len() == plan.batch_rows {
            let full = std::mem::replace(&mut batch, BatchBuilder::new(plan));
            send(sender, full.finish()).await?;
        }
    }
    if !batch.lines.is_empty() {
        send(sender, batch.finish()).await?;
    }
    Ok(())
}

async fn send(
    sender: &mpsc::Sender<Result<Message, SourceError>>,
    message: Result<Message, MysqlError>,
) -> Result<(), Stop> {
    let message = message.map_err(Stop::Failed)?;
    sender.send(Ok(message)).await.map_err(|_| Stop::Closed)
}

/// Rows of one batch, column by column: instants as UTC microseconds, decimals as
/// mantissas, every other value as canonical text.
struct BatchBuilder<'a> {
    plan: &'a ReadPlan,
    cells: Vec<CellColumn>,
    lines: Vec<u64>,
    keys: Vec<String>,
    cursor: Option<String>,
    /// The last instant of a cursor column handed over as instants: written as
    /// text once, when the batch is finished.
    cursor_micros: Option<i64>,
    /// The cell being written, reused for every cell.
    cell: String,
    /// The key columns' texts of the row being read, reused for every row.
    key_parts: Vec<String>,
}

impl<'a> BatchBuilder<'a> {
    fn new(plan: &'a ReadPlan) -> Self {
        BatchBuilder {
            plan,
            cells: plan
                .names
                .iter()
                .zip(&plan.kinds)
                .map(|(name, &kind)| CellColumn::new(name, plan.batch_rows, kind))
                .collect(),
            lines: Vec::with_capacity(plan.batch_rows),
            keys: Vec::with_capacity(plan.batch_rows),
            cursor: None,
            cursor_micros: None,
            cell: String::new(),
            key_parts: Vec::new(),
        }
    }

    /// Appends a row. Text cells are written into one reused buffer and copied into
    /// their column from there; a row with a bad value fails the read, so a
    /// half-appended row never reaches a batch.
    fn push(&mut self, values: Vec<Value>, line: u64) -> Result<(), MysqlError> {
        let plan = self.plan;
        let mut key_parts = std::mem::take(&mut self.key_parts);
        key_parts.resize_with(plan.keys.len(), String::new);
        key_parts.iter_mut().for_each(String::clear);
        for (index, (value, reading)) in values.iter().zip(&plan.readings).enumerate() {
            let column = match &mut self.cells[index] {
                CellColumn::Text(column) => column,
                CellColumn::Instants(column) => {
                    // Never a key column (see `ReadPlan::kinds`).
                    let micros = typesystem::instant_micros(reading, value)
                        .map_err(|error| bad_value(plan, &values, index, line, error))?;
                    column.append_option(micros);
                    if Some(index) == plan.cursor && micros.is_some() {
                        self.cursor_micros = micros;
                    }
                    continue;
                }
                // Never a key or cursor column (see `ReadPlan::kinds`).
                CellColumn::Decimals(column) => {
                    let mantissa = typesystem::decimal_mantissa(value)
                        .map_err(|error| bad_value(plan, &values, index, line, error))?;
                    column.append_option(mantissa);
                    continue;
                }
            };
            self.cell.clear();
            let present = typesystem::write_text(reading, value, &mut self.cell)
                .map_err(|error| bad_value(plan, &values, index, line, error))?;
            match present {
                true => column.append_value(&self.cell),
                false => column.append_null(),
            }
            if Some(index) == plan.cursor && present {
                // Rows come ordered by the cursor: the last one seen is the greatest.
                let cursor = self.cursor.get_or_insert_with(String::new);
                cursor.clear();
                cursor.push_str(&self.cell);
            }
            if let Some(part) = plan.keys.iter().position(|&k| k == index) {
                key_parts[part].push_str(&self.cell);
            }
        }
        self.lines.push(line);
        // The key columns in the key's order, whatever their order in the relation.
        self.keys.push(match key_parts.as_slice() {
            [single] => single.clone(),
            parts => parts.join(","),
        });
        self.key_parts = key_parts;
        Ok(())
    }

    fn finish(self) -> Result<Message, MysqlError> {
        let height = self.lines.len();
        let cursor = match self.cursor_micros {
            Some(micros) => Some(typesystem::instant_text(micros)),
            None => self.cursor,
        };
        let columns = self.cells.into_iter().map(CellColumn::finish).collect();
        let rows = RowBatch::from_columns(height, columns, self.lines, Vec::new())
            .map_err(|e| MysqlError::Definition(format!("{}: {e}", self.plan.relation)))?;
        Ok(Message::Batch {
            batch: SourceBatch {
                rows,
                origin: RowOrigin::Relation {
                    relation: self.plan.relation.clone(),
                    key_columns: self.plan.key_columns.clone(),
                    keys: self.keys,
                },
            },
            cursor,
        })
    }
}

/// The error of row `line` whose column `index` holds a value without a canonical
/// text, naming the row by its key as far as it can be read.
fn bad_value(
    plan: &ReadPlan,
    values: &[Value],
    index: usize,
    line: u64,
    error: CellError,
) -> MysqlError {
    let column = &plan.names[index];
    let key = plan
        .keys
        .iter()
        .map(
            |&k| match typesystem::to_text(&plan.readings[k], &values[k]) {
                Ok(text) => text.unwrap_or_default(),
                Err(_) => "?".to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join(",");
    let problem = match error {
        CellError::ZeroDate(value) => format!(
            "'{value}' is not a date (a zero date or zero month or day); fix the row, or read the stream from a query with NULLIF({}, '{value}')",
            quote(column)
        ),
        CellError::NoSuchLocalTime(why) => format!("{why}; check the connector's source_timezone"),
        CellError::NotText => "the value is not text in the column's character set".to_string(),
        CellError::Unexpected(why) => why,
    };
    MysqlError::Value {
        relation: plan.relation.clone(),
        line,
        key: if plan.key_columns.is_empty() {
            "no key".to_string()
        } else {
            format!("{}={key}", plan.key_columns.join(","))
        },
        column: column.clone(),
        problem,
    }
}

/// One stream's read, fed by the task that owns the connection.
pub struct MysqlSource {
    identity: SourceIdentity,
    receiver: mpsc::Receiver<Result<Message, SourceError>>,
    cursor: Option<String>,
    incremental: bool,
    finished: bool,
}

#[async_trait]
impl Source for MysqlSource {
    fn identity(&self) -> &SourceIdentity {
        &self.identity
    }

    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, SourceError> {
        if self.finished {
            return Ok(None);
        }
        match self.receiver.recv().await {
            Some(Ok(Message::Batch { batch, cursor })) => {
                if cursor.is_some() {
                    self.cursor = cursor;
                }
                Ok(Some(batch))
            }
            Some(Ok(Message::End)) => {
                self.finished = true;
                Ok(None)
            }
            Some(Err(error)) => {
                self.finished = true;
                Err(error)
            }
            None => {
                self.finished = true;
                Err(SourceError::new(
                    SourceErrorKind::Interrupted,
                    format!(
                        "reading stream {}: the read stopped before the end",
                        self.identity.stream
                    ),
                ))
            }
        }
    }

    fn cursor(&self) -> Option<String> {
        self.cursor.clone()
    }

    fn is_complete_read(&self) -> bool {
        !self.incremental
    }
}
