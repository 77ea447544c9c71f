//! The daemon's configuration, layered: built-in defaults, then an optional TOML
//! file, then `LEDGERSYNC_*` environment variables (`__` separates sections, e.g.
//! `LEDGERSYNC_STORE__URL`). Unknown keys are errors, so a typo never silently falls
//! back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub store: StoreConfig,
    pub server: ServerConfig,
    pub import: ImportConfig,
    pub mail: MailConfig,
    pub credentials: CredentialsConfig,
    pub sync: SyncConfig,
    pub metrics: MetricsConfig,
}

/// `GET /metrics` (Prometheus text format) answers only a scraper that presents
/// this token as a bearer credential (`LEDGERSYNC_METRICS__TOKEN`); without one
/// the route is off, since the metrics name tenants and connectors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Never serialized, never logged.
    #[serde(default, skip_serializing)]
    pub token: Option<SecretString>,
}

/// How `serve` runs connectors' scheduled syncs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Seconds a daemon's claim on a running connector lasts unless renewed (it is
    /// renewed every third of it); a daemon killed mid-sync loses it after this and
    /// another daemon resumes at the next tick.
    pub lease_secs: u64,
    /// Failed runs in a row after which a connector is paused (and `verify` says so).
    pub max_failures: i64,
    /// Further attempts within a run after a transient source failure.
    pub retries: u32,
    /// The first wait before a retry, in seconds; doubled each time, with jitter.
    pub retry_base_secs: u64,
    /// How often the list of connectors is read again for added, changed, paused or
    /// removed ones, in seconds.
    pub refresh_secs: u64,
}

/// Where the master key that protects connector credentials comes from:
/// `LEDGERSYNC_MASTER_KEY` (base64 of 32 bytes) when set, else `key_file`, which a
/// fresh install creates (mode 0600). Keep a copy of the key apart from the data:
/// without it stored credentials cannot be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// Sender of welcome and invitation mail.
    pub from: String,
    /// Where mail is written as `.eml` files when no SMTP server is configured.
    pub outbox: PathBuf,
    /// Base URL people open invitation links at (the dashboard or this API).
    pub public_url: String,
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub username: Option<String>,
    /// Never serialized, never logged.
    #[serde(default, skip_serializing)]
    pub password: Option<SecretString>,
    /// Upgrade the connection with STARTTLS (required when true).
    #[serde(default)]
    pub starttls: bool,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://DIR` (a control database plus one file per tenant under DIR) or
    /// `postgres://…` (a control schema plus one schema per tenant).
    pub url: String,
}

/// The URL may carry a password: Debug shows it redacted.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &crate::redact_url(&self.url))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// How long credentials may be served from memory; with several replicas, a key
    /// revoked elsewhere shows here within this time. Reports follow changes made
    /// elsewhere within about a second (see the README). 0 disables both caches.
    pub cache_ttl_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// Rows mapped and staged at a time; memory is bounded by this, not by file size.
    pub batch_rows: usize,
    /// Row errors listed in one report before the rest are only counted.
    pub max_reported_errors: usize,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            store: StoreConfig {
                url: "sqlite://ledgersync-data".to_string(),
            },
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                cache_ttl_secs: 5,
            },
            import: ImportConfig {
                batch_rows: 50_000,
                max_reported_errors: 100,
            },
            mail: MailConfig {
                from: "ledgersync <noreply@ledgersync.localhost>".to_string(),
                outbox: PathBuf::from("ledgersync-outbox"),
                public_url: "http://127.0.0.1:8080".to_string(),
                smtp: None,
            },
            credentials: CredentialsConfig {
                key_file: PathBuf::from("ledgersync-master.key"),
            },
            metrics: MetricsConfig::default(),
            sync: SyncConfig {
                lease_secs: 120,
                max_failures: 5,
                retries: 3,
                retry_base_secs: 5,
                refresh_secs: 30,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

/// Environment variables with the prefix that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["config", "master_key", "log"];

impl DaemonConfig {
    /// Defaults, then `file` when given (it must exist), then the environment.
    ///
    /// Relative paths (a `sqlite://` store's directory, the outbox) are made absolute
    /// here, once: against the config file's directory when the file set them, else
    /// against the working directory at start. A daemon started elsewhere, or one
    /// that changes directory, keeps its data where it was.
    pub fn load(file: Option<&Path>) -> Result<DaemonConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(DaemonConfig::default()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        let figment = figment.merge(
            Env::prefixed("LEDGERSYNC_")
                .ignore(NON_CONFIG_ENV)
                .split("__"),
        );
        let mut config: DaemonConfig = figment.extract().map_err(|e| ConfigError(Box::new(e)))?;
        let base = |key: &str| -> PathBuf {
            let from_file = figment
                .find_metadata(key)
                .and_then(|metadata| metadata.source.as_ref())
                .and_then(|source| source.file_path())
                .and_then(Path::parent)
                .map(Path::to_path_buf);
            let cwd = std::env::current_dir().unwrap_or_default();
            match from_file {
                Some(dir) => cwd.join(dir),
                None => cwd,
            }
        };
        if let Some(rest) = config.store.url.strip_prefix("sqlite://") {
            let (dir, query) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
            if !dir.is_empty() && Path::new(dir).is_relative() {
                let absolute = base("store.url").join(dir);
                config.store.url = format!("sqlite://{}{query}", absolute.display());
            }
        }
        if config.mail.outbox.is_relative() {
            config.mail.outbox = base("mail.outbox").join(&config.mail.outbox);
        }
        if config.credentials.key_file.is_relative() {
            config.credentials.key_file =
                base("credentials.key_file").join(&config.credentials.key_file);
        }
        Ok(config)
    }

    /// The file named by `LEDGERSYNC_CONFIG`, if any.
    pub fn file_from_env() -> Option<PathBuf> {
        std::env::var_os("LEDGERSYNC_CONFIG").map(PathBuf::from)
    }
}

// figment::Jail closures return figment::Error by design.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn layers_defaults_file_and_env() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "ledgersync.toml",
                "[store]\nurl = \"postgres://localhost/ledger\"\n[import]\nbatch_rows = 10\nmax_reported_errors = 5\n",
            )?;
            jail.set_env("LEDGERSYNC_SERVER__LISTEN", "0.0.0.0:9000");
            let config = DaemonConfig::load(Some(Path::new("ledgersync.toml"))).unwrap();
            assert_eq!(config.store.url, "postgres://localhost/ledger");
            assert_eq!(config.import.batch_rows, 10);
            assert_eq!(config.server.listen.port(), 9000);
            Ok(())
        });
    }

    #[test]
    fn smtp_password_is_read_but_never_shown() {
        use secrecy::ExposeSecret;
        Jail::expect_with(|jail| {
            jail.create_file(
                "ledgersync.toml",
                "[mail.smtp]\nhost = \"smtp.example\"\nport = 587\nusername = \"u\"\nstarttls = true\n",
            )?;
            jail.set_env("LEDGERSYNC_MAIL__SMTP__PASSWORD", "hunter2");
            let config = DaemonConfig::load(Some(Path::new("ledgersync.toml"))).unwrap();
            let smtp = config.mail.smtp.clone().unwrap();
            assert_eq!(smtp.password.as_ref().unwrap().expose_secret(), "hunter2");
            assert!(!format!("{config:?}").contains("hunter2"));
            Ok(())
        });
    }

    #[test]
    fn relative_paths_are_resolved_once_where_they_were_written() {
        Jail::expect_with(|jail| {
            let started_in = jail.directory().to_path_buf();
            std::fs::create_dir(started_in.join("etc")).unwrap();
            jail.create_file(
                "etc/ledgersync.toml",
                "[store]\nurl = \"sqlite://data?mode=rwc\"\n",
            )?;
            let config = DaemonConfig::load(Some(Path::new("etc/ledgersync.toml"))).unwrap();
            assert_eq!(
                config.store.url,
                format!(
                    "sqlite://{}?mode=rwc",
                    started_in.join("etc/data").display()
                )
            );
            // The outbox took its default: relative to where the daemon started.
            assert_eq!(config.mail.outbox, started_in.join("ledgersync-outbox"));

            jail.set_env("LEDGERSYNC_STORE__URL", "sqlite:///srv/ledger");
            let config = DaemonConfig::load(Some(Path::new("etc/ledgersync.toml"))).unwrap();
            assert_eq!(config.store.url, "sqlite:///srv/ledger");
            Ok(())
        });
    }

    #[test]
    fn defaults_need_no_file() {
        Jail::expect_with(|jail| {
            let config = DaemonConfig::load(None).unwrap();
            assert_eq!(
                config.store.url,
                format!(
                    "sqlite://{}",
                    jail.directory().join("ledgersync-data").display()
                )
            );
            assert!(config.mail.smtp.is_none());
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        Jail::expect_with(|jail| {
            jail.create_file("ledgersync.toml", "[store]\nurll = \"sqlite://x\"\n")?;
            let err = DaemonConfig::load(Some(Path::new("ledgersync.toml"))).unwrap_err();
            assert!(err.to_string().contains("urll"), "{err}");
            jail.set_env("LEDGERSYNC_SERVR__LISTEN", "0.0.0.0:1");
            assert!(DaemonConfig::load(None).is_err());
            Ok(())
        });
    }
}
