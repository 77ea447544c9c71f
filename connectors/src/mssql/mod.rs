//! SQL Server as a source, through tiberius (TDS 7.3, rustls). Every call opens
//! its own connection and closes it when done; a read holds one connection and
//! one transaction, always rolled back, for as long as its stream is read.
//!
//! SQL Server has no read-only transaction and no statement timeout of its own.
//! Reads are kept read-only by the login (give it only `db_datareader`), by
//! ApplicationIntent=ReadOnly (which an availability group routes to a readable
//! secondary) and by rolling back whatever a stream's query did. The statement
//! timeout is tiberius's deadline for each answer of the server plus
//! `SET LOCK_TIMEOUT` of the same length, so a read blocked by a writer's lock
//! ends with the server's error 1222 instead of waiting.
//!
//! TLS modes (`tls`):
//! - `disable`: only the login is encrypted (SQL Server's ENCRYPT_OFF: every
//!   SQL Server since 2005 has at least a self-signed certificate for it), the
//!   certificate not checked; rows travel in plaintext. The password itself is
//!   never sent in the clear.
//! - `prefer`: everything encrypted, the certificate not checked (SQL Server's
//!   certificate is self-signed unless a DBA installed one, so checking it would
//!   fail for most servers; `verify-full` is the mode that checks). A server with
//!   no certificate at all declines encryption, and then the connection is
//!   retried in plaintext, as libpq's `prefer` does.
//! - `require`: everything encrypted, the certificate not checked; a server that
//!   declines encryption is an error.
//! - `verify-full`: everything encrypted, the certificate checked against the
//!   system's roots plus `ca_file` (tiberius adds it to them; it does not replace
//!   them) and the host name.

mod cursor;
mod errors;
mod sql;
mod typesystem;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono_tz::Tz;
use futures_util::TryStreamExt;
use ledgersync_config::{ConnectorSpec, DatabaseKind, DatabaseStream, Lookback, TlsMode};
use polars::prelude::Column as FrameColumn;
use secrecy::{ExposeSecret, SecretString};
use tiberius::{AuthMethod, Client, Column, Config, EncryptionLevel, Row, ToSql};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

pub use errors::MssqlError;

use crate::batch::RowBatch;
use crate::source::{
    ColumnInfo, ConnectionCheck, Database, Fetched, ReadRequest, RowOrigin, Source, SourceBatch,
    SourceError, SourceErrorKind, TableInfo, TaskSource,
};
use cursor::Bound;
use errors::{Context, Step};
use sql::Relation;
use typesystem::{CellError, ColumnReading, Decode};

/// How long reaching the server and logging in may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

type Connection = Client<Compat<TcpStream>>;

/// A SQL Server database of a connector. Holds the password only as a
/// [`SecretString`]; its `Debug` shows where it connects, never the password.
pub struct MssqlDatabase {
    host: String,
    port: u16,
    database: String,
    user: String,
    tls: TlsMode,
    ca_file: Option<String>,
    source_timezone: Option<Tz>,
    statement_timeout_secs: u64,
    password: SecretString,
}

impl fmt::Debug for MssqlDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MssqlDatabase")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("source_timezone", &self.source_timezone)
            .field("statement_timeout_secs", &self.statement_timeout_secs)
            .finish_non_exhaustive()
    }
}

/// How certificates are treated.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trust {
    /// Any certificate, any name (`Config::trust_cert`).
    Any,
    /// The system's roots, and the server's name.
    System,
    /// The system's roots plus this PEM file, and the server's name.
    SystemAnd(String),
}

/// The encryption asked of the server and the trust in its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsPlan {
    level: EncryptionLevel,
    trust: Trust,
    /// Whether a server without a certificate is read in plaintext instead.
    plaintext_fallback: bool,
}

fn tls_plan(mode: TlsMode, ca_file: Option<&str>) -> TlsPlan {
    let plan = |level, trust, plaintext_fallback| TlsPlan {
        level,
        trust,
        plaintext_fallback,
    };
    match mode {
        TlsMode::Disable => plan(EncryptionLevel::Off, Trust::Any, false),
        TlsMode::Prefer => plan(EncryptionLevel::On, Trust::Any, true),
        TlsMode::Require => plan(EncryptionLevel::Required, Trust::Any, false),
        TlsMode::VerifyFull => plan(
            EncryptionLevel::Required,
            match ca_file {
                Some(path) => Trust::SystemAnd(path.to_owned()),
                None => Trust::System,
            },
            false,
        ),
    }
}

impl MssqlDatabase {
    pub fn new(spec: &ConnectorSpec, password: SecretString) -> Result<MssqlDatabase, SourceError> {
        let invalid = |message: String| SourceError::new(SourceErrorKind::Definition, message);
        if spec.kind != DatabaseKind::Mssql {
            return Err(invalid(format!(
                "connector of kind '{}' is not a SQL Server connector",
                spec.kind.as_str()
            )));
        }
        let source_timezone = match &spec.source_timezone {
            None => None,
            Some(name) => Some(name.parse::<Tz>().map_err(|_| {
                invalid(format!(
                    "source_timezone '{name}' is not an IANA timezone (e.g. Asia/Jakarta)"
                ))
            })?),
        };
        // tiberius's rustls builds its TLS config with the process's default
        // provider when there is one, else aws-lc-rs (compiled in with it). Ours
        // is ring; an earlier install wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(MssqlDatabase {
            host: spec.host.clone(),
            port: spec.port(),
            database: spec.database.clone(),
            user: spec.user.clone(),
            tls: spec.tls,
            ca_file: spec.ca_file.clone(),
            source_timezone,
            statement_timeout_secs: spec.statement_timeout_secs,
            password,
        })
    }

    fn context(&self, subject: impl Into<String>) -> Context {
        Context {
            address: format!("{}:{}", self.host, self.port),
            user: self.user.clone(),
            database: self.database.clone(),
            timeout_secs: self.statement_timeout_secs,
            subject: subject.into(),
        }
    }

    /// Built for each connection: it holds the password (redacted in its `Debug`).
    fn config(&self, plan: &TlsPlan) -> Config {
        let mut config = Config::new();
        config.host(&self.host);
        config.port(self.port);
        config.database(&self.database);
        config.authentication(AuthMethod::sql_server(
            &self.user,
            self.password.expose_secret(),
        ));
        config.application_name("ledgersync");
        config.readonly(true);
        config.handshake_timeout(Some(CONNECT_TIMEOUT));
        config.command_timeout(sql::timeouts(self.statement_timeout_secs).0);
        config.encryption(plan.level);
        match &plan.trust {
            Trust::Any => config.trust_cert(),
            Trust::System => {}
            Trust::SystemAnd(path) => config.trust_cert_ca(path),
        }
        config
    }

    async fn connect(&self, context: &Context) -> Result<Connection, MssqlError> {
        if let Some(path) = &self.ca_file {
            if let Err(error) = std::fs::metadata(path) {
                return Err(MssqlError::Tls {
                    address: context.address.clone(),
                    reason: format!("cannot read ca_file '{path}': {error}"),
                });
            }
        }
        let plan = tls_plan(self.tls, self.ca_file.as_deref());
        match self.attempt(self.config(&plan), context).await {
            Err(MssqlError::Tls { reason, .. })
                if plan.plaintext_fallback && reason.contains(errors::NO_TLS) =>
            {
                let plaintext = TlsPlan {
                    level: EncryptionLevel::NotSupported,
                    ..plan
                };
                self.attempt(self.config(&plaintext), context).await
            }
            other => other,
        }
    }

    /// One connection, following one redirect (Azure SQL's gateway sends the
    /// client on to the database's node).
    async fn attempt(
        &self,
        mut config: Config,
        context: &Context,
    ) -> Result<Connection, MssqlError> {
        for _ in 0..2 {
            let address = config.get_addr();
            let tcp =
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address)).await {
                    Err(_) => {
                        return Err(MssqlError::Unreachable {
                            address,
                            reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                        })
                    }
                    Ok(Err(error)) => {
                        return Err(context.classify(error.into(), Step::Connect));
                    }
                    Ok(Ok(tcp)) => tcp,
                };
            let _ = tcp.set_nodelay(true);
            match Client::connect(config.clone(), tcp.compat_write()).await {
                Ok(client) => return Ok(client),
                Err(tiberius::error::Error::Routing { host, port }) => {
                    config.host(host);
                    config.port(port);
                }
                Err(error) => return Err(context.classify(error, Step::Connect)),
            }
        }
        Err(MssqlError::Unreachable {
            address: context.address.clone(),
            reason: "the server redirected the connection more than once".to_owned(),
        })
    }

    /// A connection inside the read session (see [`sql::session`]), and the
    /// server's name and version.
    async fn session(&self, context: &Context) -> Result<(Connection, String), MssqlError> {
        let mut client = self.connect(context).await?;
        let query = |e| context.classify(e, Step::Query);
        let row = client
            .simple_query(sql::SERVER)
            .await
            .map_err(query)?
            .into_row()
            .await
            .map_err(query)?;
        let (version, edition, snapshot) = match &row {
            Some(row) => (
                row.try_get::<&str, _>(0)
                    .map_err(query)?
                    .unwrap_or_default(),
                row.try_get::<&str, _>(1)
                    .map_err(query)?
                    .unwrap_or_default(),
                row.try_get::<i32, _>(2).map_err(query)?.unwrap_or_default(),
            ),
            None => ("", "", 0),
        };
        let server = if edition.is_empty() {
            format!("SQL Server {version}")
        } else {
            format!("SQL Server {version} ({edition})")
        };
        let setup = sql::session(sql::timeouts(self.statement_timeout_secs).1, snapshot == 1);
        client
            .simple_query(setup)
            .await
            .map_err(query)?
            .into_results()
            .await
            .map_err(query)?;
        Ok((client, server))
    }

    /// The relation's columns and their readings, refusing those without one.
    /// The probe runs (with no rows), so a missing SELECT permission shows here.
    async fn plan(
        &self,
        client: &mut Connection,
        relation: &Relation,
        context: &Context,
    ) -> Result<Vec<(String, ColumnReading)>, MssqlError> {
        let query = |e| context.classify(e, Step::Query);
        let mut stream = client
            .simple_query(sql::probe(relation))
            .await
            .map_err(query)?;
        let columns: Vec<Column> = stream
            .columns()
            .await
            .map_err(query)?
            .map(<[Column]>::to_vec)
            .unwrap_or_default();
        stream.into_results().await.map_err(query)?;
        self.readings(&columns, relation, context)
    }

    fn readings(
        &self,
        columns: &[Column],
        relation: &Relation,
        context: &Context,
    ) -> Result<Vec<(String, ColumnReading)>, MssqlError> {
        let mut planned: Vec<(String, ColumnReading)> = Vec::with_capacity(columns.len());
        for column in columns {
            let name = column.name().to_owned();
            if planned.iter().any(|(seen, _)| *seen == name) {
                return Err(MssqlError::Definition {
                    subject: context.subject.clone(),
                    reason: format!(
                        "column '{name}' appears twice; give each column its own name (… AS other_name)"
                    ),
                });
            }
            let row = typesystem::by_wire(column.column_type());
            if row.decode == Decode::Refuse {
                return Err(MssqlError::UnsupportedColumn {
                    relation: relation.name.clone(),
                    column: name,
                    source_type: wire_name(column),
                    advice: row.advice,
                });
            }
            planned.push((name, ColumnReading::of(row, self.source_timezone)));
        }
        Ok(planned)
    }

    async fn check_on(
        &self,
        client: &mut Connection,
        streams: &[DatabaseStream],
    ) -> Result<Vec<String>, MssqlError> {
        let mut lines = Vec::with_capacity(streams.len());
        for stream in streams {
            let context = self.context(subject(stream));
            let relation = Relation::of(stream).map_err(|reason| MssqlError::Definition {
                subject: context.subject.clone(),
                reason,
            })?;
            let columns = self.plan(client, &relation, &context).await?;
            if let Some(cursor) = &stream.cursor {
                column_index(&columns, &cursor.column, "cursor", &relation, &context)?;
            }
            let query = |e| context.classify(e, Step::Query);
            let row = client
                .simple_query(sql::count(&relation))
                .await
                .map_err(query)?
                .into_row()
                .await
                .map_err(query)?;
            let rows = match &row {
                Some(row) => row.try_get::<i64, _>(0).map_err(query)?.unwrap_or(0),
                None => 0,
            };
            lines.push(format!(
                "{}: {} rows readable in {}",
                stream.name,
                thousands(rows),
                relation.name
            ));
        }
        Ok(lines)
    }

    async fn discover_on(
        &self,
        client: &mut Connection,
        context: &Context,
    ) -> Result<Vec<TableInfo>, MssqlError> {
        let query = |e| context.classify(e, Step::Query);
        let rows = client
            .simple_query(sql::DISCOVER)
            .await
            .map_err(query)?
            .into_first_result()
            .await
            .map_err(query)?;
        let mut tables: Vec<TableInfo> = Vec::new();
        for row in &rows {
            let text = |i: usize| -> Result<String, MssqlError> {
                Ok(row
                    .try_get::<&str, _>(i)
                    .map_err(query)?
                    .unwrap_or_default()
                    .to_owned())
            };
            let number = |i: usize| row.try_get::<i32, _>(i).map_err(query);
            let (schema, name, column, data_type) = (text(0)?, text(1)?, text(2)?, text(3)?);
            let source_type =
                sql::source_type(&data_type, number(4)?, number(5)?, number(6)?, number(7)?);
            let info = ColumnInfo {
                name: column,
                source_type,
                canonical: ColumnReading::of(typesystem::by_name(&data_type), self.source_timezone)
                    .canonical(),
                nullable: text(8)?.eq_ignore_ascii_case("YES"),
            };
            match tables.last_mut() {
                Some(table) if table.schema == schema && table.name == name => {
                    table.columns.push(info)
                }
                _ => tables.push(TableInfo {
                    schema,
                    name,
                    columns: vec![info],
                }),
            }
        }
        Ok(tables)
    }

    /// The stream's one query, its cursor bound and what turns its rows into
    /// batches, once the relation's columns are known to be readable.
    async fn prepare_read(
        &self,
        client: &mut Connection,
        stream: &DatabaseStream,
        request: &ReadRequest,
        context: Context,
    ) -> Result<(String, Option<Bound>, Reader), MssqlError> {
        let definition = |reason: String| MssqlError::Definition {
            subject: context.subject.clone(),
            reason,
        };
        let relation = Relation::of(stream).map_err(definition)?;
        let mut columns = self.plan(client, &relation, &context).await?;
        if let Some(wanted) = &request.columns {
            for name in wanted {
                column_index(&columns, name, "requested", &relation, &context)?;
            }
            columns.retain(|(name, _)| wanted.contains(name));
        }
        let keys = request
            .key
            .iter()
            .map(|k| column_index(&columns, k, "key", &relation, &context))
            .collect::<Result<Vec<_>, _>>()?;
        let cursor = match &stream.cursor {
            None => None,
            Some(spec) => Some(column_index(
                &columns,
                &spec.column,
                "cursor",
                &relation,
                &context,
            )?),
        };
        let mut bound = None;
        if let (Some(index), Some(spec), Some(committed)) =
            (cursor, &stream.cursor, &request.cursor)
        {
            let lookback = match spec.lookback.as_deref() {
                None => None,
                Some(text) => Some(Lookback::parse(text).ok_or_else(|| {
                    definition(format!(
                        "lookback '{text}' is neither a duration nor a count"
                    ))
                })?),
            };
            let (name, reading) = &columns[index];
            bound = Some(
                cursor::lower_bound(reading, committed, lookback)
                    .map_err(|reason| definition(format!("cursor column '{name}': {reason}")))?,
            );
        }
        let key_names: Vec<String> = keys.iter().map(|&k| columns[k].0.clone()).collect();
        let projection: Option<Vec<String>> = request
            .columns
            .as_ref()
            .map(|_| columns.iter().map(|(name, _)| name.clone()).collect());
        let sql = sql::select(
            &relation,
            projection.as_deref(),
            cursor.map(|i| columns[i].0.as_str()),
            bound.is_some(),
            &key_names,
        );
        let reader = Reader {
            relation: relation.name,
            key_names: request.key.clone(),
            columns,
            keys,
            cursor,
            batch_rows: request.batch_rows.max(1),
            context,
            line: 0,
        };
        Ok((sql, bound, reader))
    }
}

fn subject(stream: &DatabaseStream) -> String {
    match &stream.table {
        Some(table) => format!("stream '{}' ({table})", stream.name),
        None => format!("stream '{}' (query)", stream.name),
    }
}

/// `FLOAT`, `VARBINARY`: the result column's type as the user knows it.
fn wire_name(column: &Column) -> String {
    use tiberius::ColumnType::*;
    match column.column_type() {
        Float4 => "REAL".to_owned(),
        Float8 | Floatn => "FLOAT".to_owned(),
        Timen => "TIME".to_owned(),
        BigVarBin => "VARBINARY".to_owned(),
        BigBinary => "BINARY (or ROWVERSION)".to_owned(),
        Image => "IMAGE".to_owned(),
        SSVariant => "SQL_VARIANT".to_owned(),
        Udt => "a CLR type (geography, geometry, hierarchyid)".to_owned(),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// `128042` → `128,042`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn column_index(
    columns: &[(String, ColumnReading)],
    name: &str,
    role: &str,
    relation: &Relation,
    context: &Context,
) -> Result<usize, MssqlError> {
    columns
        .iter()
        .position(|(c, _)| c == name)
        .ok_or_else(|| MssqlError::Definition {
            subject: context.subject.clone(),
            reason: format!(
                "{role} column '{name}' does not exist in {}; it has {}",
                relation.name,
                columns
                    .iter()
                    .map(|(c, _)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// Ends the session's transaction (rolling back) and the connection.
async fn finish(mut client: Connection) {
    if let Ok(stream) = client.simple_query(sql::END).await {
        let _ = stream.into_results().await;
    }
    let _ = client.close().await;
}

#[async_trait]
impl Database for MssqlDatabase {
    async fn check(&self, streams: &[DatabaseStream]) -> Result<ConnectionCheck, SourceError> {
        let context = self.context(format!("database '{}'", self.database));
        let (mut client, server) = self.session(&context).await?;
        let checked = self.check_on(&mut client, streams).await;
        finish(client).await;
        Ok(ConnectionCheck {
            server,
            streams: checked?,
        })
    }

    async fn discover(&self) -> Result<Vec<TableInfo>, SourceError> {
        let context = self.context(format!("database '{}'", self.database));
        let (mut client, _) = self.session(&context).await?;
        let discovered = self.discover_on(&mut client, &context).await;
        finish(client).await;
        Ok(discovered?)
    }

    async fn open(
        &self,
        stream: &DatabaseStream,
        request: ReadRequest,
    ) -> Result<Box<dyn Source>, SourceError> {
        let context = self.context(subject(stream));
        let (mut client, _) = self.session(&context).await?;
        let (sql, bound, reader) = match self
            .prepare_read(&mut client, stream, &request, context)
            .await
        {
            Ok(prepared) => prepared,
            Err(error) => {
                finish(client).await;
                return Err(error.into());
            }
        };
        // One batch waiting while the next is read: memory stays at two batches.
        let (sender, batches) = mpsc::channel(1);
        let task = tokio::spawn(pump(client, sql, bound, reader, sender));
        Ok(Box::new(TaskSource::new(
            request.identity,
            batches,
            task,
            stream.cursor.as_ref().and(request.cursor),
            stream.cursor.is_some(),
        )))
    }
}

/// Turns rows into batches.
struct Reader {
    relation: String,
    key_names: Vec<String>,
    columns: Vec<(String, ColumnReading)>,
    keys: Vec<usize>,
    cursor: Option<usize>,
    batch_rows: usize,
    context: Context,
    /// Rows read so far.
    line: u64,
}

/// A batch being filled, column by column.
struct Pending {
    cells: Vec<Vec<Option<String>>>,
    keys: Vec<String>,
    lines: Vec<u64>,
    cursor: Option<String>,
}

impl Reader {
    fn pending(&self) -> Pending {
        Pending {
            cells: vec![Vec::with_capacity(self.batch_rows); self.columns.len()],
            keys: Vec::with_capacity(self.batch_rows),
            lines: Vec::with_capacity(self.batch_rows),
            cursor: None,
        }
    }

    fn other(&self, reason: String) -> MssqlError {
        MssqlError::Other {
            subject: self.context.subject.clone(),
            reason,
        }
    }

    /// The read's result columns are the ones planned (the relation could have
    /// changed between the probe and the read).
    fn check_columns(&self, columns: &[Column]) -> Result<(), MssqlError> {
        let same = columns.len() == self.columns.len()
            && columns
                .iter()
                .zip(&self.columns)
                .all(|(c, (name, reading))| {
                    c.name() == name
                        && typesystem::by_wire(c.column_type()).decode == reading.decode
                });
        if same {
            Ok(())
        } else {
            Err(MssqlError::Definition {
                subject: self.context.subject.clone(),
                reason: "the relation's columns changed while the read started; the next sync tries again".to_owned(),
            })
        }
    }

    fn push(&mut self, row: Row, pending: &mut Pending) -> Result<(), MssqlError> {
        self.line += 1;
        if row.result_index() != 0 {
            return Err(MssqlError::Definition {
                subject: self.context.subject.clone(),
                reason:
                    "the query returned more than one result set; a stream's query is one SELECT"
                        .to_owned(),
            });
        }
        let mut values: Vec<Option<String>> = Vec::with_capacity(self.columns.len());
        let mut failure = None;
        for (index, (value, (_, reading))) in row.into_iter().zip(&self.columns).enumerate() {
            match typesystem::to_text(reading, &value) {
                Ok(text) => {
                    if self.cursor == Some(index) && text.is_some() {
                        // Rows come in cursor order: the last one is the greatest.
                        pending.cursor.clone_from(&text);
                    }
                    values.push(text);
                }
                Err(error) => {
                    failure.get_or_insert((index, error));
                    values.push(None);
                }
            }
        }
        if values.len() != self.columns.len() {
            return Err(self.other(format!(
                "a row has {} values for {} columns",
                values.len(),
                self.columns.len()
            )));
        }
        let key = self
            .keys
            .iter()
            .map(|&k| values[k].as_deref().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(",");
        if let Some((index, error)) = failure {
            let (column, _) = &self.columns[index];
            let reason = match error {
                CellError::MoneyTooLarge(value) => format!(
                    "the MONEY value {value} is too large to read exactly through the driver; read the stream from a query with CAST([{}] AS DECIMAL(19,4))",
                    column.replace(']', "]]")
                ),
                CellError::NoSuchLocalTime(why) => {
                    format!("{why}; check the connector's source_timezone")
                }
                CellError::Unexpected(why) => why,
            };
            return Err(MssqlError::Value {
                relation: self.relation.clone(),
                column: column.clone(),
                line: self.line,
                key: if self.keys.is_empty() {
                    "no key".to_owned()
                } else {
                    format!("{}={key}", self.key_names.join(","))
                },
                reason,
            });
        }
        for (column, value) in pending.cells.iter_mut().zip(values) {
            column.push(value);
        }
        pending.keys.push(key);
        pending.lines.push(self.line);
        Ok(())
    }

    fn finish(&self, pending: Pending) -> Result<Fetched, MssqlError> {
        let height = pending.lines.len();
        let columns = self
            .columns
            .iter()
            .zip(pending.cells)
            .map(|((name, _), values)| FrameColumn::new(name.as_str().into(), values))
            .collect();
        let rows = RowBatch::from_columns(height, columns, pending.lines, Vec::new())
            .map_err(|e| self.other(e.to_string()))?;
        Ok(Fetched {
            batch: SourceBatch {
                rows,
                origin: RowOrigin::Relation {
                    relation: self.relation.clone(),
                    key_columns: self.key_names.clone(),
                    keys: pending.keys,
                },
            },
            cursor: pending.cursor,
        })
    }
}

/// Runs the stream's one query and sends its rows batch by batch; rolls back
/// and closes the connection when done. When the source is dropped the task is
/// aborted and the connection dropped with it, which ends the server's work.
async fn pump(
    mut client: Connection,
    sql: String,
    bound: Option<Bound>,
    mut reader: Reader,
    sender: mpsc::Sender<Result<Fetched, SourceError>>,
) {
    let read = async {
        let params: Vec<&dyn ToSql> = bound.iter().map(Bound::as_sql).collect();
        let classify = |e| reader.context.classify(e, Step::Query);
        let mut stream = client
            .query(sql.as_str(), &params)
            .await
            .map_err(classify)?;
        let columns: Vec<Column> = stream
            .columns()
            .await
            .map_err(classify)?
            .map(<[Column]>::to_vec)
            .unwrap_or_default();
        reader.check_columns(&columns)?;
        let mut rows = stream.into_row_stream();
        let mut pending = reader.pending();
        loop {
            let row = rows
                .try_next()
                .await
                .map_err(|e| reader.context.classify(e, Step::Query))?;
            let Some(row) = row else { break };
            reader.push(row, &mut pending)?;
            if pending.lines.len() == reader.batch_rows {
                let full = std::mem::replace(&mut pending, reader.pending());
                if sender.send(Ok(reader.finish(full)?)).await.is_err() {
                    return Ok(false);
                }
            }
        }
        if !pending.lines.is_empty() && sender.send(Ok(reader.finish(pending)?)).await.is_err() {
            return Ok(false);
        }
        Ok::<bool, MssqlError>(true)
    };
    match read.await {
        Ok(true) => finish(client).await,
        // The source was dropped: closing the connection ends the transaction.
        Ok(false) => drop(client),
        Err(error) => {
            // After a timeout the connection is out of step with the server:
            // dropped, not reused.
            drop(client);
            let _ = sender.send(Err(error.into())).await;
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn spec(tls: &str) -> ConnectorSpec {
        ConnectorSpec::from_toml(&format!(
            r#"
kind = "mssql"
host = "pos-db.internal"
database = "pos"
user = "reader"
tls = "{tls}"
statement_timeout_secs = 120

[[streams]]
name = "pos_sales"
table = "dbo.sales"
mapping = "m.toml"
"#
        ))
        .unwrap()
    }

    #[test]
    fn tls_modes_map_to_encryption_levels_and_trust() {
        let plan = |mode, ca: Option<&str>| tls_plan(mode, ca);
        assert_eq!(
            plan(TlsMode::Disable, None),
            TlsPlan {
                level: EncryptionLevel::Off,
                trust: Trust::Any,
                plaintext_fallback: false
            }
        );
        assert_eq!(
            plan(TlsMode::Prefer, None),
            TlsPlan {
                level: EncryptionLevel::On,
                trust: Trust::Any,
                plaintext_fallback: true
            }
        );
        assert_eq!(
            plan(TlsMode::Require, Some("/ca.pem")),
            TlsPlan {
                level: EncryptionLevel::Required,
                trust: Trust::Any,
                plaintext_fallback: false
            }
        );
        assert_eq!(plan(TlsMode::VerifyFull, None).trust, Trust::System);
        assert_eq!(
            plan(TlsMode::VerifyFull, Some("/etc/ca.pem")),
            TlsPlan {
                level: EncryptionLevel::Required,
                trust: Trust::SystemAnd("/etc/ca.pem".into()),
                plaintext_fallback: false
            }
        );
    }

    #[test]
    fn the_database_is_configured_from_its_spec_and_never_shows_the_password() {
        let database = MssqlDatabase::new(
            &spec("verify-full"),
            SecretString::from("pw-never-shown-7Qx"),
        )
        .unwrap();
        let config = database.config(&tls_plan(database.tls, None));
        assert_eq!(config.get_addr(), "pos-db.internal:1433");
        assert_eq!(config.get_command_timeout(), Some(Duration::from_secs(120)));
        assert_eq!(config.get_handshake_timeout(), Some(CONNECT_TIMEOUT));
        let shown = format!("{database:?} {config:?}");
        assert!(!shown.contains("pw-never-shown-7Qx"), "{shown}");
        assert!(shown.contains("pos-db.internal"), "{shown}");
        let postgres = spec("disable");
        let postgres = ConnectorSpec {
            kind: DatabaseKind::Postgres,
            ..postgres
        };
        let error = MssqlDatabase::new(&postgres, SecretString::from("x")).unwrap_err();
        assert_eq!(error.kind, SourceErrorKind::Definition);
        let zoned = ConnectorSpec {
            source_timezone: Some("Mars/Olympus".into()),
            ..spec("disable")
        };
        assert!(MssqlDatabase::new(&zoned, SecretString::from("x"))
            .unwrap_err()
            .message
            .contains("Mars/Olympus"));
    }

    #[test]
    fn counts_read_with_separators() {
        assert_eq!(thousands(128_042), "128,042");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(-1_000_000), "-1,000,000");
    }
}
