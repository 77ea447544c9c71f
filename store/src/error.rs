use ledgersync_schemas::RowError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Database {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating {what}: {source}")]
    Migrate {
        what: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("unsupported store URL '{0}': use sqlite://DIR or postgres://HOST/DB")]
    UnsupportedUrl(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("all {seats} seats of the plan are taken; remove a user or add seats")]
    SeatLimit { seats: i64 },
    #[error(transparent)]
    Rejected(#[from] LoadRejected),
}

/// Whose doing an error is, which decides what a client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// What the caller asked for is wrong or impossible; the message says what to fix.
    Caller,
    /// The store could not answer for now (busy, unreachable); trying again may work.
    Busy,
    /// The server failed: a broken database, a failed migration, a bug. The message
    /// is for the operator's log, not for the client.
    Server,
}

impl StoreError {
    pub fn blame(&self) -> Blame {
        match self {
            StoreError::Invalid(_)
            | StoreError::Conflict(_)
            | StoreError::NotFound(_)
            | StoreError::SeatLimit { .. }
            | StoreError::Rejected(_) => Blame::Caller,
            StoreError::Database { source, .. } if is_transient(source) => Blame::Busy,
            StoreError::Database { .. }
            | StoreError::Migrate { .. }
            | StoreError::UnsupportedUrl(_) => Blame::Server,
        }
    }
}

/// A database error that goes away by itself: the pool or the server was busy or
/// briefly out of reach, or a concurrent writer held SQLite's lock.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(database) => {
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes;
            // PostgreSQL's serialization failure and deadlock.
            let code = database.code();
            let code = code.as_deref().unwrap_or("");
            let sqlite_busy = code
                .parse::<i64>()
                .is_ok_and(|code| matches!(code & 0xff, 5 | 6));
            sqlite_busy || matches!(code, "40001" | "40P01")
        }
        _ => false,
    }
}

/// A load refused as a whole because some of its rows are wrong; nothing was changed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{total} row(s) rejected; nothing was changed")]
pub struct LoadRejected {
    /// The first errors, by line.
    pub errors: Vec<RowError>,
    /// All errors, including those not listed.
    pub total: usize,
}

/// Attaches what the store was doing to a database error.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Database { context, source })
    }
}
