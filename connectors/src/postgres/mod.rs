//! PostgreSQL as a source: checked, described and read through sqlx's Postgres
//! driver (not the Any driver, which has no decimal or timestamp values). Every
//! call opens its own connection and closes it when done; a read holds one
//! read-only transaction for as long as its stream is being read.

mod cursor;
mod errors;
mod typesystem;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono_tz::Tz;
use futures_util::TryStreamExt;
use ledgersync_config::{ConnectorSpec, DatabaseKind, DatabaseStream, Lookback, TlsMode};
use polars::prelude::ChunkedBuilder;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgRow, PgSslMode, PgValueFormat};
use sqlx::{Column as _, Connection, Executor, PgConnection, Row, Statement, ValueRef};
use tokio::sync::mpsc;

pub use errors::PostgresError;

use crate::batch::{CellColumn, CellKind, RowBatch};
use crate::source::{
    ColumnInfo, ConnectionCheck, Database, Fetched, ReadRequest, RowOrigin, Source, SourceBatch,
    SourceError, SourceErrorKind, TableInfo, TaskSource,
};
use errors::{Context, Step};
use typesystem::{CellError, Reading};

/// How long a connection attempt may take before the server counts as unreachable
/// (sqlx itself waits as long as the operating system does).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A PostgreSQL database of a connector. Holds the password only as a
/// [`SecretString`]; its `Debug` shows where it connects, never the password.
pub struct PostgresDatabase {
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

impl fmt::Debug for PostgresDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresDatabase")
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

impl PostgresDatabase {
    pub fn new(
        spec: &ConnectorSpec,
        password: SecretString,
    ) -> Result<PostgresDatabase, SourceError> {
        let invalid = |message: String| SourceError::new(SourceErrorKind::Definition, message);
        if spec.kind != DatabaseKind::Postgres {
            return Err(invalid(format!(
                "connector of kind '{}' is not a PostgreSQL connector",
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
        Ok(PostgresDatabase {
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
            tls: self.tls != TlsMode::Disable,
            timeout_secs: self.statement_timeout_secs,
            subject: subject.into(),
        }
    }

    /// Built for each connection and dropped with it: the options hold the
    /// password in the clear (and print it in their `Debug`).
    fn options(&self) -> PgConnectOptions {
        let mode = match self.tls {
            TlsMode::Disable => PgSslMode::Disable,
            TlsMode::Prefer => PgSslMode::Prefer,
            TlsMode::Require => PgSslMode::Require,
            TlsMode::VerifyFull => PgSslMode::VerifyFull,
        };
        let options = PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .database(&self.database)
            .username(&self.user)
            .password(self.password.expose_secret())
            .ssl_mode(mode)
            .application_name("ledgersync");
        match &self.ca_file {
            Some(path) => options.ssl_root_cert(path),
            None => options,
        }
    }

    async fn connect(&self, context: &Context) -> Result<PgConnection, PostgresError> {
        if let Some(path) = &self.ca_file {
            if let Err(error) = std::fs::metadata(path) {
                return Err(PostgresError::Tls {
                    address: context.address.clone(),
                    reason: format!("cannot read ca_file '{path}': {error}"),
                });
            }
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&self.options()))
            .await
        {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(context.classify(error, Step::Connect)),
            Err(_) => Err(PostgresError::Unreachable {
                address: context.address.clone(),
                reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            }),
        }
    }

    /// A connection inside a read-only transaction with the statement timeout.
    /// REPEATABLE READ: everything one call reads is one snapshot.
    async fn session(&self, context: &Context) -> Result<PgConnection, PostgresError> {
        let mut connection = self.connect(context).await?;
        let timeout = format!(
            "SET LOCAL statement_timeout = '{}s'",
            self.statement_timeout_secs
        );
        for statement in [
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            timeout.as_str(),
        ] {
            connection
                .execute(statement)
                .await
                .map_err(|e| context.classify(e, Step::Query))?;
        }
        Ok(connection)
    }

    /// The relation's columns and their readings, refusing those without one.
    async fn plan(
        &self,
        connection: &mut PgConnection,
        relation: &Relation,
        context: &Context,
    ) -> Result<Vec<(String, Reading)>, PostgresError> {
        // Executed, not only described: Postgres checks privileges when a
        // statement starts, so a missing SELECT shows here, before the types.
        let probe = format!("SELECT * FROM {} AS src LIMIT 0", relation.from);
        let statement = connection
            .prepare(&probe)
            .await
            .map_err(|e| context.classify(e, Step::Query))?;
        sqlx::query(&probe)
            .execute(&mut *connection)
            .await
            .map_err(|e| context.classify(e, Step::Query))?;
        let columns: Vec<(String, i64)> = statement
            .columns()
            .iter()
            .map(|c| {
                let oid = c.type_info().oid().map_or(0, |oid| i64::from(oid.0));
                (c.name().to_owned(), oid)
            })
            .collect();
        let oids: Vec<i64> = columns.iter().map(|(_, oid)| *oid).collect();
        let names: Vec<(i64, String)> = sqlx::query_as(
            "SELECT oid::int8, typname::text FROM pg_catalog.pg_type WHERE oid::int8 = ANY($1)",
        )
        .bind(&oids)
        .fetch_all(&mut *connection)
        .await
        .map_err(|e| context.classify(e, Step::Query))?;
        let mut planned: Vec<(String, Reading)> = Vec::with_capacity(columns.len());
        for (name, oid) in columns {
            if planned.iter().any(|(seen, _)| *seen == name) {
                return Err(PostgresError::Definition {
                    subject: context.subject.clone(),
                    reason: format!(
                        "column '{name}' appears twice; give each column its own name (… AS other_name)"
                    ),
                });
            }
            let typname = names
                .iter()
                .find(|(o, _)| *o == oid)
                .map_or("unknown", |(_, n)| n.as_str());
            let reading = typesystem::reading(typname);
            if let Reading::Refused(advice) = reading {
                return Err(PostgresError::UnsupportedColumn {
                    relation: relation.name.clone(),
                    column: name,
                    source_type: typname.to_owned(),
                    advice,
                });
            }
            planned.push((name, reading));
        }
        Ok(planned)
    }

    async fn check_on(
        &self,
        connection: &mut PgConnection,
        context: &Context,
        streams: &[DatabaseStream],
    ) -> Result<ConnectionCheck, PostgresError> {
        let (version,): (String,) = sqlx::query_as("SHOW server_version")
            .fetch_one(&mut *connection)
            .await
            .map_err(|e| context.classify(e, Step::Query))?;
        let server = format!(
            "PostgreSQL {}",
            version.split_whitespace().next().unwrap_or(&version)
        );
        let mut lines = Vec::with_capacity(streams.len());
        for stream in streams {
            let context = self.context(subject(stream));
            let relation = Relation::of(stream)?;
            let columns = self.plan(connection, &relation, &context).await?;
            if let Some(cursor) = &stream.cursor {
                column_index(&columns, &cursor.column, "cursor", &relation, &context)?;
            }
            let (rows,): (i64,) =
                sqlx::query_as(&format!("SELECT count(*) FROM {} AS src", relation.from))
                    .fetch_one(&mut *connection)
                    .await
                    .map_err(|e| context.classify(e, Step::Query))?;
            let what = match &stream.table {
                Some(table) => table.as_str(),
                None => "query",
            };
            lines.push(format!(
                "{}: {what} readable ({} rows)",
                stream.name,
                thousands(rows)
            ));
        }
        Ok(ConnectionCheck {
            server,
            streams: lines,
        })
    }

    /// The stream's one query, its cursor bound and what turns its rows into
    /// batches, once the relation's columns are known to be readable.
    async fn prepare_read(
        &self,
        connection: &mut PgConnection,
        relation: Relation,
        stream: &DatabaseStream,
        request: &ReadRequest,
        context: Context,
    ) -> Result<(String, Option<String>, Reader), PostgresError> {
        let mut columns = self.plan(connection, &relation, &context).await?;
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
        let mut sql = format!(
            "SELECT {} FROM {} AS src",
            columns
                .iter()
                .map(|(name, reading)| match reading.select_cast() {
                    Some(cast) => format!("src.{q}::{cast} AS {q}", q = quote_ident(name)),
                    None => format!("src.{}", quote_ident(name)),
                })
                .collect::<Vec<_>>()
                .join(", "),
            relation.from
        );
        let mut bound = None;
        if let (Some(index), Some(spec)) = (cursor, &stream.cursor) {
            let (name, reading) = &columns[index];
            let quoted = quote_ident(name);
            if let Some(committed) = &request.cursor {
                let lookback =
                    match spec.lookback.as_deref() {
                        None => None,
                        Some(text) => Some(Lookback::parse(text).ok_or_else(|| {
                            PostgresError::Definition {
                                subject: context.subject.clone(),
                                reason: format!(
                                    "lookback '{text}' is neither a duration nor a count"
                                ),
                            }
                        })?),
                    };
                let value =
                    cursor::lower_bound(*reading, committed, lookback, self.source_timezone)
                        .map_err(|reason| PostgresError::Definition {
                            subject: context.subject.clone(),
                            reason: format!("cursor column '{name}': {reason}"),
                        })?;
                sql.push_str(&format!(
                    " WHERE src.{quoted} >= $1::{}",
                    reading.bound_cast()
                ));
                bound = Some(value);
            }
            let mut order = vec![format!("src.{quoted}")];
            order.extend(
                keys.iter()
                    .map(|&k| format!("src.{}", quote_ident(&columns[k].0))),
            );
            sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        let instants = columns
            .iter()
            .enumerate()
            .map(|(index, (name, reading))| {
                reading.is_instant(self.source_timezone)
                    && request.instant_columns.contains(name)
                    && !keys.contains(&index)
            })
            .collect();
        let reader = Reader {
            relation: relation.name,
            key_names: request.key.clone(),
            columns,
            instants,
            keys,
            cursor,
            batch_rows: request.batch_rows.max(1),
            timezone: self.source_timezone,
            context,
            line: 0,
            cell: String::new(),
            key_parts: Vec::new(),
        };
        Ok((sql, bound, reader))
    }
}

/// A stream's relation: the FROM item and its name in messages.
struct Relation {
    from: String,
    name: String,
}

impl Relation {
    fn of(stream: &DatabaseStream) -> Result<Relation, PostgresError> {
        let definition = |reason: String| PostgresError::Definition {
            subject: format!("stream '{}'", stream.name),
            reason,
        };
        match (&stream.table, &stream.query) {
            (Some(table), None) => {
                let parts = split_table(table).map_err(definition)?;
                Ok(Relation {
                    from: parts
                        .iter()
                        .map(|p| quote_ident(p))
                        .collect::<Vec<_>>()
                        .join("."),
                    name: table.clone(),
                })
            }
            (None, Some(query)) => {
                let query = query.trim().trim_end_matches(';').trim_end();
                Ok(Relation {
                    from: format!("({query})"),
                    name: stream.name.clone(),
                })
            }
            _ => Err(definition(
                "needs exactly one of `table` or `query`".to_owned(),
            )),
        }
    }
}

fn subject(stream: &DatabaseStream) -> String {
    match &stream.table {
        Some(table) => format!("stream '{}' ({table})", stream.name),
        None => format!("stream '{}' (query)", stream.name),
    }
}

/// `table` or `schema.table`, each part verbatim (case kept) or double-quoted
/// when it contains a dot (`"my.schema".sales`, with `""` for a quote).
fn split_table(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("table '{text}' has an unclosed quote")),
                }
            }
            if !matches!(chars.peek(), None | Some('.')) {
                return Err(format!("table '{text}': text after a closing quote"));
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != '.') {
                part.push(c);
            }
        }
        if part.is_empty() {
            return Err(format!("table '{text}' is not `table` or `schema.table`"));
        }
        parts.push(part);
        if chars.next().is_none() {
            break;
        }
    }
    if parts.len() > 2 {
        return Err(format!(
            "table '{text}' is not `table` or `schema.table` (quote a name holding a dot: \"a.b\")"
        ));
    }
    Ok(parts)
}

/// An identifier as SQL: double-quoted, quotes doubled. Names never reach SQL
/// any other way.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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
    columns: &[(String, Reading)],
    name: &str,
    role: &str,
    relation: &Relation,
    context: &Context,
) -> Result<usize, PostgresError> {
    columns
        .iter()
        .position(|(c, _)| c == name)
        .ok_or_else(|| PostgresError::Definition {
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

#[async_trait]
impl Database for PostgresDatabase {
    async fn check(&self, streams: &[DatabaseStream]) -> Result<ConnectionCheck, SourceError> {
        let context = self.context(format!("database '{}'", self.database));
        let mut connection = self.session(&context).await?;
        let checked = self.check_on(&mut connection, &context, streams).await;
        // Read only: how the transaction ends changes nothing.
        let _ = connection.close().await;
        Ok(checked?)
    }

    async fn discover(&self) -> Result<Vec<TableInfo>, SourceError> {
        let context = self.context(format!("database '{}'", self.database));
        let mut connection = self.session(&context).await?;
        // Domains are described by their base type (as result columns are).
        let rows: Vec<(String, String, String, String, String, bool)> = sqlx::query_as(
            "SELECT n.nspname::text, c.relname::text, a.attname::text,
                    format_type(a.atttypid, a.atttypmod), b.typname::text, NOT a.attnotnull
             FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_catalog.pg_attribute a
               ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
             JOIN pg_catalog.pg_type b
               ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
             WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
               AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
               AND has_schema_privilege(n.oid, 'USAGE')
               AND has_table_privilege(c.oid, 'SELECT')
             ORDER BY n.nspname, c.relname, a.attnum",
        )
        .fetch_all(&mut connection)
        .await
        .map_err(|e| context.classify(e, Step::Query))?;
        let _ = connection.close().await;
        let mut tables: Vec<TableInfo> = Vec::new();
        for (schema, name, column, source_type, typname, nullable) in rows {
            let info = ColumnInfo {
                name: column,
                source_type,
                canonical: typesystem::reading(&typname).canonical(),
                nullable,
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

    async fn open(
        &self,
        stream: &DatabaseStream,
        request: ReadRequest,
    ) -> Result<Box<dyn Source>, SourceError> {
        let context = self.context(subject(stream));
        let relation = Relation::of(stream)?;
        let mut connection = self.session(&context).await?;
        let (sql, bound, reader) = match self
            .prepare_read(&mut connection, relation, stream, &request, context)
            .await
        {
            Ok(prepared) => prepared,
            Err(error) => {
                let _ = connection.close().await;
                return Err(error.into());
            }
        };
        // One batch waiting while the next is read: memory stays at two batches.
        let (sender, batches) = mpsc::channel(1);
        let task = tokio::spawn(pump(connection, sql, bound, reader, sender));
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
    columns: Vec<(String, Reading)>,
    /// Per column: handed over as instants (UTC microseconds), not text.
    instants: Vec<bool>,
    keys: Vec<usize>,
    cursor: Option<usize>,
    batch_rows: usize,
    timezone: Option<Tz>,
    context: Context,
    /// Rows read so far.
    line: u64,
    /// The cell being written, reused for every cell.
    cell: String,
    /// The key columns' texts of the row being read, reused for every row.
    key_parts: Vec<String>,
}

/// A batch being filled, column by column.
struct Pending {
    cells: Vec<CellColumn>,
    keys: Vec<String>,
    lines: Vec<u64>,
    cursor: Option<String>,
    /// The last value of a cursor column handed over as instants, written as text
    /// once, when the batch is finished.
    cursor_bytes: Vec<u8>,
}

impl Reader {
    fn pending(&self) -> Pending {
        Pending {
            cells: self
                .columns
                .iter()
                .zip(&self.instants)
                .map(|((name, _), &instants)| {
                    let kind = match instants {
                        true => CellKind::Instants,
                        false => CellKind::Text,
                    };
                    CellColumn::new(name, self.batch_rows, kind)
                })
                .collect(),
            keys: Vec::with_capacity(self.batch_rows),
            lines: Vec::with_capacity(self.batch_rows),
            cursor: None,
            cursor_bytes: Vec::new(),
        }
    }

    fn other(&self, reason: String) -> PostgresError {
        PostgresError::Other {
            subject: self.context.subject.clone(),
            reason,
        }
    }

    /// Appends a row to the batch. Each cell is written into one reused buffer and
    /// copied into its column from there; a row with a bad value fails the read,
    /// so a half-appended row never reaches a batch.
    fn push(&mut self, row: &PgRow, pending: &mut Pending) -> Result<(), PostgresError> {
        self.line += 1;
        let mut key_parts = std::mem::take(&mut self.key_parts);
        key_parts.resize_with(self.keys.len(), String::new);
        key_parts.iter_mut().for_each(String::clear);
        for (index, (_, reading)) in self.columns.iter().enumerate() {
            let raw = row
                .try_get_raw(index)
                .map_err(|e| self.other(e.to_string()))?;
            let key_part = self.keys.iter().position(|&k| k == index);
            let column = match &mut pending.cells[index] {
                CellColumn::Text(column) => column,
                // This reader hands decimals over as text (`Reader::pending` makes
                // no decimal column).
                CellColumn::Decimals(_) => {
                    return Err(self.other("a decimal column this reader does not fill".into()))
                }
                CellColumn::Instants(column) if raw.is_null() => {
                    column.append_null();
                    continue;
                }
                // Never a key column (see `Reader::instants`).
                CellColumn::Instants(column) => {
                    let bytes = binary(&raw).map_err(|e| self.other(e))?;
                    let micros = reading
                        .instant_micros(bytes, self.timezone)
                        .map_err(|error| self.bad_value(row, index, error))?;
                    column.append_value(micros);
                    if self.cursor == Some(index) {
                        pending.cursor_bytes.clear();
                        pending.cursor_bytes.extend_from_slice(bytes);
                    }
                    continue;
                }
            };
            if raw.is_null() {
                column.append_null();
            } else {
                let bytes = binary(&raw).map_err(|e| self.other(e))?;
                self.cell.clear();
                if let Err(error) = reading.write_text(bytes, self.timezone, &mut self.cell) {
                    return Err(self.bad_value(row, index, error));
                }
                column.append_value(&self.cell);
                if self.cursor == Some(index) {
                    // The cursor stays in the column's own terms (a naive
                    // time stays naive) so the next read compares like with like.
                    // Kept in one buffer: only the batch's last row's counts.
                    let cursor = pending.cursor.get_or_insert_with(String::new);
                    cursor.clear();
                    match (reading, self.timezone) {
                        (Reading::Timestamp, Some(_)) => reading
                            .write_text(bytes, None, cursor)
                            .map_err(|e| self.other(e.to_string()))?,
                        _ => cursor.push_str(&self.cell),
                    }
                }
            }
            if let (Some(part), false) = (key_part, raw.is_null()) {
                key_parts[part].push_str(&self.cell);
            }
        }
        pending.keys.push(match key_parts.as_slice() {
            [single] => single.clone(),
            parts => parts.join(","),
        });
        self.key_parts = key_parts;
        pending.lines.push(self.line);
        Ok(())
    }

    /// The error of a row whose column `index` holds a value without a canonical
    /// text, naming the row by its key as far as it can be read.
    fn bad_value(&self, row: &PgRow, index: usize, error: CellError) -> PostgresError {
        let key = self
            .keys
            .iter()
            .map(|&k| {
                let (_, reading) = &self.columns[k];
                row.try_get_raw(k)
                    .ok()
                    .filter(|raw| !raw.is_null())
                    .and_then(|raw| raw.as_bytes().ok().map(<[u8]>::to_vec))
                    .and_then(|bytes| reading.to_text(&bytes, self.timezone).ok())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(",");
        PostgresError::Value {
            relation: self.relation.clone(),
            column: self.columns[index].0.clone(),
            line: self.line,
            key: if self.keys.is_empty() {
                "no key".to_owned()
            } else {
                format!("{}={key}", self.key_names.join(","))
            },
            reason: error.to_string(),
        }
    }

    fn finish(&self, mut pending: Pending) -> Result<Fetched, PostgresError> {
        let height = pending.lines.len();
        if let (Some(index), false) = (self.cursor, pending.cursor_bytes.is_empty()) {
            // As a text cursor column gives it: a naive time stays naive.
            let (_, reading) = &self.columns[index];
            let timezone = match reading {
                Reading::Timestamp => None,
                _ => self.timezone,
            };
            let text = reading
                .to_text(&pending.cursor_bytes, timezone)
                .map_err(|e| self.other(e.to_string()))?;
            pending.cursor = Some(text);
        }
        let columns = pending.cells.into_iter().map(CellColumn::finish).collect();
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

/// A value's bytes, which must be in the binary format the reader asks for.
fn binary<'r>(raw: &sqlx::postgres::PgValueRef<'r>) -> Result<&'r [u8], String> {
    if raw.format() != PgValueFormat::Binary {
        return Err("the server sent a value as text, not binary".into());
    }
    raw.as_bytes().map_err(|e| e.to_string())
}

/// Runs the stream's one query and sends its rows batch by batch; ends the
/// transaction and closes the connection when done or when the reader is gone.
async fn pump(
    mut connection: PgConnection,
    sql: String,
    bound: Option<String>,
    mut reader: Reader,
    sender: mpsc::Sender<Result<Fetched, SourceError>>,
) {
    let read = async {
        let mut query = sqlx::query(&sql);
        if let Some(bound) = bound {
            query = query.bind(bound);
        }
        let mut rows = query.fetch(&mut connection);
        let mut pending = reader.pending();
        loop {
            let row = rows
                .try_next()
                .await
                .map_err(|e| reader.context.classify(e, Step::Query))?;
            let Some(row) = row else { break };
            reader.push(&row, &mut pending)?;
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
        Ok::<bool, PostgresError>(true)
    };
    match read.await {
        Ok(true) => {
            let _ = connection.execute("COMMIT").await;
            let _ = connection.close().await;
        }
        // The source was dropped: dropping the connection ends the transaction.
        Ok(false) => {}
        Err(error) => {
            let _ = connection.close().await;
            let _ = sender.send(Err(error.into())).await;
        }
    }
}
