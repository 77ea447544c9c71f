//! Failures of a Postgres source, classified from sqlx's errors by the step they
//! happened at and the server's SQLSTATE. Messages are built from the server's
//! own message and our definition, never from the connection options (which hold
//! the password).

use sqlx::postgres::PgDatabaseError;

use crate::source::{SourceError, SourceErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("cannot reach PostgreSQL at {address}: {reason}; check the host and port, that the server is running and that no firewall blocks this machine")]
    Unreachable { address: String, reason: String },
    #[error("TLS with PostgreSQL at {address} failed: {reason}; check the connector's `tls` mode and `ca_file` against the server's certificate")]
    Tls { address: String, reason: String },
    #[error("PostgreSQL refused the login of user '{user}' to database '{database}': {reason}; check the user name and password, and that pg_hba.conf admits this machine")]
    Login {
        user: String,
        database: String,
        reason: String,
    },
    #[error("{subject}: {reason}; the user '{user}' needs SELECT on it (GRANT SELECT ON … TO \"{user}\")")]
    Permission {
        subject: String,
        user: String,
        reason: String,
    },
    #[error("{subject}: {reason}")]
    Definition { subject: String, reason: String },
    #[error("{subject}: cancelled after the connector's statement timeout of {seconds} s; raise `statement_timeout_secs` or make the read cheaper (an index on the cursor column)")]
    Timeout { subject: String, seconds: u64 },
    #[error("{subject}: the connection to PostgreSQL broke: {reason}")]
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
    #[error("{subject}: {reason}")]
    Other { subject: String, reason: String },
}

impl From<PostgresError> for SourceError {
    fn from(error: PostgresError) -> SourceError {
        let kind = match &error {
            PostgresError::Unreachable { .. } => SourceErrorKind::Unreachable,
            PostgresError::Tls { .. } => SourceErrorKind::Tls,
            PostgresError::Login { .. } => SourceErrorKind::Login,
            PostgresError::Permission { .. } => SourceErrorKind::Permission,
            PostgresError::Definition { .. } => SourceErrorKind::Definition,
            PostgresError::Timeout { .. } => SourceErrorKind::Timeout,
            PostgresError::Interrupted { .. } => SourceErrorKind::Interrupted,
            PostgresError::UnsupportedColumn { .. } | PostgresError::Value { .. } => {
                SourceErrorKind::Type
            }
            PostgresError::Other { .. } => SourceErrorKind::Other,
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

/// What a failure is about, for its message.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub address: String,
    pub user: String,
    pub database: String,
    pub tls: bool,
    pub timeout_secs: u64,
    /// e.g. `stream 'pos_sales' (public.sales)`.
    pub subject: String,
}

impl Context {
    pub(crate) fn classify(&self, error: sqlx::Error, step: Step) -> PostgresError {
        let subject = self.subject.clone();
        match error {
            sqlx::Error::Database(db) => {
                let mut reason = db.message().to_owned();
                if let Some(hint) = db
                    .try_downcast_ref::<PgDatabaseError>()
                    .and_then(|e| e.hint())
                {
                    reason.push_str(&format!(" ({hint})"));
                }
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                self.classify_sqlstate(&code, reason, step)
            }
            sqlx::Error::Tls(e) => PostgresError::Tls {
                address: self.address.clone(),
                reason: e.to_string(),
            },
            sqlx::Error::Io(e) if step == Step::Connect => {
                // rustls reports a refused certificate as InvalidData from the handshake.
                if self.tls && e.kind() == std::io::ErrorKind::InvalidData {
                    PostgresError::Tls {
                        address: self.address.clone(),
                        reason: e.to_string(),
                    }
                } else {
                    PostgresError::Unreachable {
                        address: self.address.clone(),
                        reason: e.to_string(),
                    }
                }
            }
            sqlx::Error::Io(e) => PostgresError::Interrupted {
                subject,
                reason: e.to_string(),
            },
            sqlx::Error::Protocol(reason) if step == Step::Query => {
                PostgresError::Interrupted { subject, reason }
            }
            other => PostgresError::Other {
                subject,
                reason: other.to_string(),
            },
        }
    }

    fn classify_sqlstate(&self, code: &str, reason: String, step: Step) -> PostgresError {
        let subject = self.subject.clone();
        match code {
            // invalid_password, invalid_authorization_specification (no such role,
            // NOLOGIN, pg_hba rejection)
            "28P01" | "28000" => PostgresError::Login {
                user: self.user.clone(),
                database: self.database.clone(),
                reason,
            },
            "42501" => PostgresError::Permission {
                subject,
                user: self.user.clone(),
                reason,
            },
            "57014" => PostgresError::Timeout {
                subject,
                seconds: self.timeout_secs,
            },
            "3D000" => PostgresError::Definition {
                subject: format!("database '{}'", self.database),
                reason,
            },
            "25006" => PostgresError::Definition {
                subject,
                reason: format!("{reason}; a stream's query may only read"),
            },
            // too_many_connections, cannot_connect_now (starting up, shutting down)
            "53300" | "57P03" if step == Step::Connect => PostgresError::Unreachable {
                address: self.address.clone(),
                reason,
            },
            // admin_shutdown, crash_shutdown, connection exceptions
            _ if code.starts_with("08") || code == "57P01" || code == "57P02" => {
                PostgresError::Interrupted { subject, reason }
            }
            // syntax errors, undefined tables/columns/functions, invalid schema
            _ if code.starts_with("42") || code.starts_with("3F") => {
                PostgresError::Definition { subject, reason }
            }
            _ => PostgresError::Other {
                subject,
                reason: format!("{reason} (SQLSTATE {code})"),
            },
        }
    }
}
