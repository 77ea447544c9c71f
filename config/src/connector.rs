//! Database connectors: where a customer's database is, how to reach it, and which
//! tables or queries flow into the ledger through which stream mappings. Stored per
//! tenant; the password is never part of this definition (it is sealed apart, see
//! the `ledgersync-credentials` crate).
//!
//! ```toml
//! kind = "postgres"
//! host = "pos-db.kopiken.internal"
//! port = 5432
//! database = "pos"
//! user = "ledgersync_reader"
//! tls = "require"
//! source_timezone = "Asia/Jakarta"
//! schedule = "0 */15 * * * *"
//!
//! [[streams]]
//! name = "pos_sales"
//! table = "sales"
//! mapping = "examples/streams/pos_sales.toml"
//! cursor = { column = "updated_at", lookback = "10m", reconcile = "1d" }
//! ```

use serde::{Deserialize, Serialize};

/// The databases a connector can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    Postgres,
    Mysql,
    Mssql,
}

impl DatabaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseKind::Postgres => "postgres",
            DatabaseKind::Mysql => "mysql",
            DatabaseKind::Mssql => "mssql",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            DatabaseKind::Postgres => 5432,
            DatabaseKind::Mysql => 3306,
            DatabaseKind::Mssql => 1433,
        }
    }
}

/// How the connection is secured. Postgres reads these as its `sslmode`s, MySQL as
/// its `ssl-mode`s (`disable` → DISABLED, `prefer` → PREFERRED, `require` →
/// REQUIRED, `verify-full` → VERIFY_IDENTITY). SQL Server: `disable` encrypts the
/// login only; `prefer` encrypts everything when the server agrees, `require`
/// always, both without checking the certificate (usually self-signed there);
/// `verify-full` checks the certificate and the host name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    #[default]
    Prefer,
    Require,
    /// The server's certificate is checked against the system's roots (or
    /// `ca_file`) and its name.
    VerifyFull,
}

/// A customer database and the streams read from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    pub kind: DatabaseKind,
    pub host: String,
    /// The kind's standard port if absent.
    #[serde(default)]
    pub port: Option<u16>,
    pub database: String,
    pub user: String,
    #[serde(default)]
    pub tls: TlsMode,
    /// A PEM file of roots to verify the server against, for `verify-full`.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Timezone the database writes times without an offset in (`timestamp`,
    /// `DATETIME`, `DATETIME2`); the tenant's if absent.
    #[serde(default)]
    pub source_timezone: Option<String>,
    /// Cron expression with seconds (`sec min hour day month weekday`), in the
    /// tenant's timezone; none means synced only on demand.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Seconds a source query may run before the database cancels it.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_secs: u64,
    pub streams: Vec<DatabaseStream>,
}

fn default_statement_timeout() -> u64 {
    600
}

/// One table or query of a connector, mapped into the ledger by a stream mapping
/// (the same mappings CSV files use: `key`, `date`, lookups and templates name the
/// relation's columns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseStream {
    pub name: String,
    /// `table` or `schema.table`; exclusive with `query`.
    #[serde(default)]
    pub table: Option<String>,
    /// A SELECT whose result is read as a table; exclusive with `table`.
    #[serde(default)]
    pub query: Option<String>,
    /// Path of the stream mapping (TOML), relative to the definition's folder. A
    /// definition sent to the API leaves it out: its mappings come with it as texts.
    #[serde(default)]
    pub mapping: String,
    /// Incremental reading by a column that grows with every insert and update;
    /// without one every sync reads the whole relation (full refresh), and keys no
    /// longer there are removed from the ledger.
    #[serde(default)]
    pub cursor: Option<CursorSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorSpec {
    pub column: String,
    /// How far before the last cursor value a sync starts again, for rows
    /// committed late with an earlier value: a duration (`90s`, `10m`, `2h`) for
    /// time cursors, a count for integer ones. Rows read twice replace themselves.
    #[serde(default)]
    pub lookback: Option<String>,
    /// How often the stream's keys are also read whole, after a sync, to remove
    /// from the ledger the rows deleted at the source (an incremental read never
    /// sees a deleted row): a duration (`12h`, `1d`). Never when absent.
    #[serde(default)]
    pub reconcile: Option<String>,
}

impl CursorSpec {
    /// The key reconcile's period, if the stream has one.
    pub fn reconcile_every(&self) -> Option<std::time::Duration> {
        match Lookback::parse(self.reconcile.as_deref()?)? {
            Lookback::Seconds(seconds) if seconds > 0 => {
                Some(std::time::Duration::from_secs(seconds as u64))
            }
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorSpecError {
    #[error("connector definition: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("connector definition: {0}")]
    Invalid(String),
}

impl ConnectorSpec {
    pub fn from_toml(text: &str) -> Result<ConnectorSpec, ConnectorSpecError> {
        let spec: ConnectorSpec = toml::from_str(text)?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.kind.default_port())
    }

    pub fn validate(&self) -> Result<(), ConnectorSpecError> {
        let invalid = |m: String| Err(ConnectorSpecError::Invalid(m));
        if self.host.trim().is_empty() || self.database.trim().is_empty() {
            return invalid("`host` and `database` must not be empty".into());
        }
        if self.streams.is_empty() {
            return invalid("a connector needs at least one [[streams]] entry".into());
        }
        if let Some(tz) = &self.source_timezone {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return invalid(format!(
                    "source_timezone '{tz}' is not an IANA timezone (e.g. Asia/Jakarta)"
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for stream in &self.streams {
            if !names.insert(stream.name.as_str()) {
                return invalid(format!("stream '{}' is defined twice", stream.name));
            }
            match (&stream.table, &stream.query) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return invalid(format!(
                        "stream '{}' needs exactly one of `table` or `query`",
                        stream.name
                    ))
                }
            }
            if let Some(cursor) = &stream.cursor {
                if cursor.reconcile.is_some() && cursor.reconcile_every().is_none() {
                    return invalid(format!(
                        "stream '{}': reconcile '{}' is not a duration (12h, 1d)",
                        stream.name,
                        cursor.reconcile.as_deref().unwrap_or_default()
                    ));
                }
            }
            if let Some(lookback) = stream.cursor.as_ref().and_then(|c| c.lookback.as_deref()) {
                if Lookback::parse(lookback).is_none() {
                    return invalid(format!(
                        "stream '{}': lookback '{lookback}' is neither a duration (90s, 10m, 2h, 1d) nor a count",
                        stream.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A cursor look-back: seconds for time cursors, a count for integer ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookback {
    Seconds(i64),
    Count(i64),
}

impl Lookback {
    pub fn parse(text: &str) -> Option<Lookback> {
        let text = text.trim();
        if let Ok(count) = text.parse::<i64>() {
            return (count >= 0).then_some(Lookback::Count(count));
        }
        let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
        let value: i64 = digits.parse().ok().filter(|v| *v >= 0)?;
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        };
        value.checked_mul(scale).map(Lookback::Seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
kind = "postgres"
host = "127.0.0.1"
database = "pos"
user = "reader"
tls = "verify-full"

[[streams]]
name = "pos_sales"
table = "public.sales"
mapping = "examples/streams/pos_sales.toml"
cursor = { column = "updated_at", lookback = "10m" }
"#;

    #[test]
    fn a_definition_reads_with_defaults() {
        let spec = ConnectorSpec::from_toml(SPEC).unwrap();
        assert_eq!(spec.port(), 5432);
        assert_eq!(spec.tls, TlsMode::VerifyFull);
        assert_eq!(spec.statement_timeout_secs, 600);
        assert_eq!(
            Lookback::parse("10m"),
            Some(Lookback::Seconds(600)),
            "minutes"
        );
    }

    #[test]
    fn bad_definitions_say_what_to_fix() {
        let both = SPEC.replace(
            "table = \"public.sales\"",
            "table = \"sales\"\nquery = \"SELECT 1\"",
        );
        let error = ConnectorSpec::from_toml(&both).unwrap_err().to_string();
        assert!(
            error.contains("exactly one of `table` or `query`"),
            "{error}"
        );
        let lookback = SPEC.replace("10m", "ten minutes");
        let error = ConnectorSpec::from_toml(&lookback).unwrap_err().to_string();
        assert!(error.contains("lookback 'ten minutes'"), "{error}");
        let unknown = SPEC.replace("tls = ", "password = \"x\"\ntls = ");
        let error = ConnectorSpec::from_toml(&unknown).unwrap_err().to_string();
        assert!(error.contains("unknown field `password`"), "{error}");
        assert_eq!(Lookback::parse("-5"), None);
        assert_eq!(Lookback::parse("500"), Some(Lookback::Count(500)));
        for bad in ["daily", "100", "0s"] {
            let reconcile = SPEC.replace("lookback = \"10m\"", &format!("reconcile = \"{bad}\""));
            let error = ConnectorSpec::from_toml(&reconcile)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("reconcile '{bad}' is not a duration")),
                "{error}"
            );
        }
    }

    #[test]
    fn a_key_reconcile_has_a_period() {
        let daily = SPEC.replace("lookback = \"10m\"", "reconcile = \"1d\"");
        let spec = ConnectorSpec::from_toml(&daily).unwrap();
        let cursor = spec.streams[0].cursor.as_ref().unwrap();
        assert_eq!(
            cursor.reconcile_every(),
            Some(std::time::Duration::from_secs(86_400))
        );
        let spec = ConnectorSpec::from_toml(SPEC).unwrap();
        assert_eq!(
            spec.streams[0].cursor.as_ref().unwrap().reconcile_every(),
            None
        );
    }
}
