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
