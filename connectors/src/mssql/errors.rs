//! Failures of a SQL Server source, classified from tiberius's errors by the
//! step they happened at and the server's error number. Messages are built from
//! the server's own message and our definition, never from the connection
//! configuration (which holds the password).

use tiberius::error::{Error as Driver, IoErrorKind};

use crate::source::{SourceError, SourceErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum MssqlError {
    #[error("cannot reach SQL Server at {address}: {reason}; check the host and port (SQL Server's TCP/IP protocol must be enabled, 1433 unless configured otherwise), that the server is running and that no firewall blocks this machine")]
    Unreachable { address: String, reason: String },
    #[error("TLS with SQL Server at {address} failed: {reason}; check the connector's `tls` mode and `ca_file` against the server's certificate")]
    Tls { address: String, reason: String },
    #[error("SQL Server refused the login of user '{user}' to database '{database}': {reason}; check the user name and password, that the server allows SQL Server authentication (mixed mode) and that the login has a user in the database")]
    Login {
        user: String,
        database: String,
        reason: String,
    },
    #[error("{subject}: {reason}; the user '{user}' needs SELECT on it (GRANT SELECT ON … TO [{user}], or membership of db_datareader)")]
    Permission {
        subject: String,
        user: String,
        reason: String,
    },
    #[error("{subject}: {reason}")]
    Definition { subject: String, reason: String },
    #[error("{subject}: {reason} (the connector's statement timeout is {seconds} s); raise `statement_timeout_secs` or make the read cheaper (an index on the cursor column)")]
    Timeout {
        subject: String,
        seconds: u64,
        reason: String,
    },
    #[error("{subject}: the connection to SQL Server broke: {reason}")]
    Interrupted { subject: String, reason: String },
    #[error("{relation}: column '{column}' has type {source_type}, which has no exact reading: {advice}")]
    UnsupportedColumn {
        relation: String,
        column: String,
        source_type: String,
        advice: &'static str,
    },
    #[error("{relation}: column '{column}' of row {line} ({key}): {reason}")]
    Value {
        relation: String,
        column: String,
        line: u64,
        key: String,
        reason: String,
    },
    /// A value the driver could not decode (text not valid in its encoding).
    #[error("{subject}: {reason}")]
    Undecodable { subject: String, reason: String },
    #[error("{subject}: {reason}")]
    Other { subject: String, reason: String },
}

/// How a refused encryption request is told apart: `prefer` then connects in
/// plaintext.
pub(crate) const NO_TLS: &str = "the server does not offer TLS";

impl From<MssqlError> for SourceError {
    fn from(error: MssqlError) -> SourceError {
        let kind = match &error {
            MssqlError::Unreachable { .. } => SourceErrorKind::Unreachable,
            MssqlError::Tls { .. } => SourceErrorKind::Tls,
            MssqlError::Login { .. } => SourceErrorKind::Login,
            MssqlError::Permission { .. } => SourceErrorKind::Permission,
            MssqlError::Definition { .. } => SourceErrorKind::Definition,
            MssqlError::Timeout { .. } => SourceErrorKind::Timeout,
            MssqlError::Interrupted { .. } => SourceErrorKind::Interrupted,
            MssqlError::UnsupportedColumn { .. }
            | MssqlError::Value { .. }
            | MssqlError::Undecodable { .. } => SourceErrorKind::Type,
            MssqlError::Other { .. } => SourceErrorKind::Other,
        };
        SourceError::new(kind, error.to_string())
    }
}

/// Where a request was when it failed: the same I/O error means an unreachable
/// server while connecting and a broken connection afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Connect,
    Query,
}

/// What a server error number means for the person who fixes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerKind {
    Login,
    Permission,
    Definition,
    Timeout,
    /// Deadlock victim, killed session, server shutting down: try again.
    Interrupted,
    /// Too many connections, database starting or moving (Azure): try later.
    Busy,
    Other,
}

pub(crate) fn server_kind(code: u32) -> ServerKind {
    match code {
        // Login failed; password expired or must change; account disabled or
        // locked; cannot open the database requested by the login.
        18456 | 18452 | 18470 | 18486 | 18487 | 18488 | 4060 => ServerKind::Login,
        // SELECT permission denied on an object or column; permission denied in
        // the database; the login has no user in the database.
        229 | 230 | 262 | 297 | 300 | 916 => ServerKind::Permission,
        // Invalid object or column name, ambiguous column, syntax errors, a
        // multi-part name that cannot be bound, a column named twice or unnamed
        // in a query, ORDER BY in a derived table, conversion of the cursor
        // bound, SNAPSHOT not allowed for a database the query reads.
        208 | 207 | 209 | 102 | 105 | 156 | 170 | 1013 | 1033 | 4104 | 4145 | 8155 | 8156 | 241
        | 245 | 8114 | 911 | 3952 => ServerKind::Definition,
        // Lock request time out period exceeded (SET LOCK_TIMEOUT).
        1222 => ServerKind::Timeout,
        // Deadlock victim, session killed, shutdown in progress, transport errors.
        1205 | 596 | 3980 | 6005 | 233 | 10053 | 10054 => ServerKind::Interrupted,
        // Too many user connections, single-user or upgrade mode, Azure SQL
        // database unavailable or busy.
        17809 | 18401 | 924 | 40613 | 40501 | 40197 | 49918 | 49919 | 49920 => ServerKind::Busy,
        _ => ServerKind::Other,
    }
}

/// What a failure is about, for its message.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub address: String,
    pub user: String,
    pub database: String,
    pub timeout_secs: u64,
    /// e.g. `stream 'pos_sales' (dbo.sales)`.
    pub subject: String,
}

impl Context {
    pub(crate) fn classify(&self, error: Driver, step: Step) -> MssqlError {
        let subject = self.subject.clone();
        let address = self.address.clone();
        match error {
            Driver::Server(token) => {
                let code = token.code();
                let reason = format!("{} (error {code})", token.message());
                match (server_kind(code), step) {
                    (ServerKind::Login, _) => MssqlError::Login {
                        user: self.user.clone(),
                        database: self.database.clone(),
                        reason,
                    },
                    (ServerKind::Permission, _) => MssqlError::Permission {
                        subject,
                        user: self.user.clone(),
                        reason,
                    },
                    (ServerKind::Definition, _) => MssqlError::Definition { subject, reason },
                    (ServerKind::Timeout, _) => MssqlError::Timeout {
                        subject,
                        seconds: self.timeout_secs,
                        reason: format!("waited too long for a lock another transaction holds: {reason}"),
                    },
                    (ServerKind::Busy, Step::Connect) => MssqlError::Unreachable { address, reason },
                    (ServerKind::Interrupted | ServerKind::Busy, _) => {
                        MssqlError::Interrupted { subject, reason }
                    }
                    (ServerKind::Other, _) => MssqlError::Other { subject, reason },
                }
            }
            Driver::Tls(reason) => MssqlError::Tls { address, reason },
            // tiberius's answer when the server has no certificate to encrypt with.
            Driver::Protocol(reason) if reason.contains("encryption level") => MssqlError::Tls {
                address,
                reason: format!("{reason} ({NO_TLS})"),
            },
            Driver::Io { kind, message } => match step {
                // rustls reports a refused handshake as InvalidData (every mode
                // but a plaintext fallback encrypts at least the login).
                Step::Connect if kind == IoErrorKind::InvalidData => {
                    MssqlError::Tls {
                        address,
                        reason: message,
                    }
                }
                Step::Connect => MssqlError::Unreachable {
                    address,
                    reason: io_words(kind, &message),
                },
                // tiberius's per-answer deadline (the statement timeout).
                Step::Query if kind == IoErrorKind::TimedOut => MssqlError::Timeout {
                    subject,
                    seconds: self.timeout_secs,
                    reason: "the server gave no answer in time".to_owned(),
                },
                Step::Query => MssqlError::Interrupted {
                    subject,
                    reason: io_words(kind, &message),
                },
            },
            Driver::Routing { host, port } => MssqlError::Unreachable {
                address,
                reason: format!("the server redirected the connection to {host}:{port} more than once"),
            },
            Driver::Utf8 | Driver::Utf16 | Driver::Encoding(_) => MssqlError::Undecodable {
                subject,
                reason: format!(
                    "{error}: a text value is not valid in its column's encoding; read the stream from a query that casts it, e.g. CAST(col AS VARBINARY(MAX)) to find it"
                ),
            },
            other => MssqlError::Other {
                subject,
                reason: other.to_string(),
            },
        }
    }
}

fn io_words(kind: IoErrorKind, message: &str) -> String {
    match kind {
        IoErrorKind::ConnectionRefused => {
            "connection refused (nothing listens on that port)".to_owned()
        }
        IoErrorKind::TimedOut => "the connection timed out".to_owned(),
        IoErrorKind::ConnectionReset | IoErrorKind::UnexpectedEof => {
            "the server closed the connection".to_owned()
        }
        _ => format!("network error: {message}"),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn context() -> Context {
        Context {
            address: "pos-db:1433".into(),
            user: "reader".into(),
            database: "pos".into(),
            timeout_secs: 600,
            subject: "stream 'pos_sales' (dbo.sales)".into(),
        }
    }

    fn kind(error: Driver, step: Step) -> SourceErrorKind {
        SourceError::from(context().classify(error, step)).kind
    }

    #[test]
    fn server_errors_by_number() {
        assert_eq!(server_kind(18456), ServerKind::Login);
        assert_eq!(server_kind(4060), ServerKind::Login);
        assert_eq!(server_kind(229), ServerKind::Permission);
        assert_eq!(server_kind(230), ServerKind::Permission);
        assert_eq!(server_kind(208), ServerKind::Definition);
        assert_eq!(server_kind(207), ServerKind::Definition);
        assert_eq!(server_kind(102), ServerKind::Definition);
        assert_eq!(server_kind(1222), ServerKind::Timeout);
        assert_eq!(server_kind(1205), ServerKind::Interrupted);
        assert_eq!(server_kind(40613), ServerKind::Busy);
        assert_eq!(server_kind(50000), ServerKind::Other);
    }

    #[test]
    fn driver_errors_by_step() {
        let io = |kind: IoErrorKind| Driver::Io {
            kind,
            message: format!("{kind:?}"),
        };
        assert_eq!(
            kind(io(IoErrorKind::ConnectionRefused), Step::Connect),
            SourceErrorKind::Unreachable
        );
        assert_eq!(
            kind(io(IoErrorKind::TimedOut), Step::Connect),
            SourceErrorKind::Unreachable
        );
        assert_eq!(
            kind(io(IoErrorKind::InvalidData), Step::Connect),
            SourceErrorKind::Tls
        );
        assert_eq!(
            kind(io(IoErrorKind::TimedOut), Step::Query),
            SourceErrorKind::Timeout
        );
        assert_eq!(
            kind(io(IoErrorKind::ConnectionReset), Step::Query),
            SourceErrorKind::Interrupted
        );
        assert_eq!(
            kind(
                Driver::Tls("invalid peer certificate".into()),
                Step::Connect
            ),
            SourceErrorKind::Tls
        );
        assert_eq!(
            kind(
                Driver::Protocol("Server does not allow the requested encryption level.".into()),
                Step::Connect
            ),
            SourceErrorKind::Tls
        );
        assert_eq!(kind(Driver::Utf16, Step::Query), SourceErrorKind::Type);
        let message = context()
            .classify(io(IoErrorKind::ConnectionRefused), Step::Connect)
            .to_string();
        assert!(
            message.starts_with("cannot reach SQL Server at pos-db:1433: connection refused"),
            "{message}"
        );
        let message = context()
            .classify(io(IoErrorKind::TimedOut), Step::Query)
            .to_string();
        assert!(message.contains("statement timeout is 600 s"), "{message}");
    }
}
