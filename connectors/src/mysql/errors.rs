//! What can go wrong reading MySQL/MariaDB, classified for the person who fixes it.
//! Messages are built from the driver's error kind and the server's message (which
//! names the user, never the password) and from our own description of the target;
//! the connection options are never printed.

use std::io;

use mysql_async::{DriverError, Error as Driver, IoError};

use crate::source::{SourceError, SourceErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    /// Connecting or logging in to `target` (`host:port/database as user`) failed.
    #[error("connecting to {target}: {source}")]
    Connect { target: String, source: Driver },
    #[error("connecting to {target}: no answer after {seconds} s")]
    ConnectTimeout { target: String, seconds: u64 },
    /// A statement failed while `doing` (e.g. `reading stream pos_sales from pos.sales`).
    #[error("{doing}: {source}")]
    Statement { doing: String, source: Driver },
    #[error("{relation}: column {column} is {source_type}; {advice}")]
    ColumnType {
        relation: String,
        column: String,
        source_type: String,
        advice: String,
    },
    #[error("{relation} row {line} ({key}): column {column}: {problem}")]
    Value {
        relation: String,
        line: u64,
        key: String,
        column: String,
        problem: String,
    },
    #[error("{0}")]
    Definition(String),
    #[error("{0}")]
    Tls(String),
}

impl From<MysqlError> for SourceError {
    fn from(error: MysqlError) -> SourceError {
        let kind = match &error {
            MysqlError::Connect { source, .. } => connect_kind(source),
            MysqlError::ConnectTimeout { .. } => SourceErrorKind::Unreachable,
            MysqlError::Statement { source, .. } => statement_kind(source),
            MysqlError::ColumnType { .. } | MysqlError::Value { .. } => SourceErrorKind::Type,
            MysqlError::Definition(_) => SourceErrorKind::Definition,
            MysqlError::Tls(_) => SourceErrorKind::Tls,
        };
        let message = match &error {
            MysqlError::Connect { target, source } => {
                format!("connecting to {target}: {}", describe(source, kind))
            }
            MysqlError::Statement { doing, source } => {
                format!("{doing}: {}", describe(source, kind))
            }
            other => other.to_string(),
        };
        SourceError::new(kind, message)
    }
}

fn server_kind(code: u16) -> SourceErrorKind {
    match code {
        // Access denied for user (wrong password or unknown user), host not allowed.
        1045 | 1129 | 1130 | 1698 => SourceErrorKind::Login,
        // No privilege on the database, table or column.
        1044 | 1142 | 1143 | 1227 => SourceErrorKind::Permission,
        // Unknown database, table or column; syntax error in a stream's query.
        1049 | 1146 | 1054 | 1064 | 1109 | 1052 | 1060 => SourceErrorKind::Definition,
        // MySQL's max_execution_time, MariaDB's max_statement_time, lock waits.
        3024 | 1969 | 1205 => SourceErrorKind::Timeout,
        // Too many connections: worth trying later.
        1040 | 1203 => SourceErrorKind::Unreachable,
        // Killed (server shutdown, KILL QUERY).
        1317 | 1053 | 1927 => SourceErrorKind::Interrupted,
        _ => SourceErrorKind::Other,
    }
}

/// The rustls error inside an I/O error: tokio-rustls reports a failed handshake
/// (certificate, protocol) as `io::Error` wrapping it.
fn tls_failure(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

fn connect_kind(error: &Driver) -> SourceErrorKind {
    match error {
        Driver::Io(IoError::Tls(_)) | Driver::Driver(DriverError::NoClientSslFlagFromServer) => {
            SourceErrorKind::Tls
        }
        Driver::Io(IoError::Io(io)) if tls_failure(io).is_some() => SourceErrorKind::Tls,
        Driver::Io(_) | Driver::Driver(DriverError::ConnectionClosed) => {
            SourceErrorKind::Unreachable
        }
        Driver::Server(server) => server_kind(server.code),
        _ => SourceErrorKind::Other,
    }
}

fn statement_kind(error: &Driver) -> SourceErrorKind {
    match error {
        Driver::Io(IoError::Tls(_)) => SourceErrorKind::Tls,
        Driver::Io(_) | Driver::Driver(DriverError::ConnectionClosed) => {
            SourceErrorKind::Interrupted
        }
        Driver::Server(server) => server_kind(server.code),
        _ => SourceErrorKind::Other,
    }
}

/// The driver's error in words, with what to do about it.
fn describe(error: &Driver, kind: SourceErrorKind) -> String {
    let advice = match kind {
        SourceErrorKind::Unreachable => {
            "; check the host name, the port and that a firewall lets this machine through"
        }
        SourceErrorKind::Tls => {
            "; check that the server has TLS enabled and its certificate (or set tls to match the server)"
        }
        SourceErrorKind::Login => "; check the user name and password, and that the user may connect from this machine",
        SourceErrorKind::Permission => "; grant the user SELECT on the tables the streams read",
        SourceErrorKind::Timeout => "; the statement ran past the connector's statement_timeout_secs: add an index on the cursor column or raise the timeout",
        SourceErrorKind::Interrupted => "; the connection broke while reading, the next sync tries again",
        _ => "",
    };
    let what = match error {
        Driver::Server(server) => format!(
            "the server says: {} (error {})",
            server.message, server.code
        ),
        Driver::Io(IoError::Io(io)) => match tls_failure(io) {
            Some(tls) => format!("TLS failed: {tls}"),
            None => io_words(io),
        },
        Driver::Io(IoError::Tls(tls)) => format!("TLS failed: {tls}"),
        Driver::Driver(DriverError::NoClientSslFlagFromServer) => {
            "the server does not offer TLS, and the connector requires it".to_string()
        }
        other => other.to_string(),
    };
    format!("{what}{advice}")
}

fn io_words(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens on that port)".into()
        }
        io::ErrorKind::TimedOut => "the connection timed out".into(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => {
            "the server closed the connection".into()
        }
        _ => format!("network error: {error}"),
    }
}
