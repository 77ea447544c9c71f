//! Configuration: the daemon's own settings (figment: defaults → TOML file →
//! `LEDGERSYNC_` environment), tenant settings in the runbook's JSON shape, and the
//! stream mapping definitions that turn source rows into ledger postings, and the
//! database connectors that feed them.

mod connector;
mod daemon;
mod redact;
mod stream;
mod tenant;

pub use connector::{
    ConnectorSpec, ConnectorSpecError, CursorSpec, DatabaseKind, DatabaseStream, Lookback, TlsMode,
};
pub use daemon::{
    ConfigError, CredentialsConfig, DaemonConfig, ImportConfig, MailConfig, MetricsConfig,
    ServerConfig, SmtpConfig, StoreConfig, SyncConfig,
};
pub use redact::redact_url;
pub use stream::{AccountSpec, DateSpec, PostingSpec, StreamDef, TemplateDef, BUILTIN_JOURNAL};
pub use tenant::{Features, SettingsError, TenantSettings};
