//! Outgoing mail: through SMTP (lettre) when configured, otherwise written as `.eml`
//! files to an outbox folder, so a deployment without a mail server still hands the
//! operator every welcome and invitation.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::PathBuf;

use anyhow::Context as _;
use ledgersync_config::MailConfig;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        server: String,
    },
    Outbox {
        dir: PathBuf,
        from: Mailbox,
    },
}

/// Where a message went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Delivery {
    Smtp { server: String },
    Outbox { file: String },
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delivery::Smtp { server } => write!(f, "sent through {server}"),
            Delivery::Outbox { file } => write!(f, "written to {file} (no SMTP server configured)"),
        }
    }
}

impl Mailer {
    pub fn from_config(config: &MailConfig) -> anyhow::Result<Mailer> {
        let from: Mailbox = config
            .from
            .parse()
            .with_context(|| format!("mail.from '{}' is not a mailbox", config.from))?;
        let Some(smtp) = &config.smtp else {
            return Ok(Mailer::Outbox {
                dir: config.outbox.clone(),
                from,
            });
        };
        let mut builder = if smtp.starttls {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                .with_context(|| format!("cannot use SMTP server {}", smtp.host))?
        } else {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
        };
        builder = builder.port(smtp.port);
        if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(Mailer::Smtp {
            transport: builder.build(),
            from,
            server: format!("{}:{}", smtp.host, smtp.port),
        })
    }

    pub async fn send(&self, to: &str, subject: &str, body: &str) -> anyhow::Result<Delivery> {
        let to: Mailbox = to
            .parse()
            .with_context(|| format!("'{to}' is not an email address"))?;
        let from = match self {
            Mailer::Smtp { from, .. } | Mailer::Outbox { from, .. } => from.clone(),
        };
        let message = Message::builder()
            .from(from)
            .to(to.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .context("composing mail")?;
        match self {
            Mailer::Smtp {
                transport, server, ..
            } => {
                transport
                    .send(message)
                    .await
                    .with_context(|| format!("sending mail to {} through {server}", to.email))?;
                tracing::info!(to = %to.email, server = %server, "Sent mail.");
                Ok(Delivery::Smtp {
                    server: server.clone(),
                })
            }
            Mailer::Outbox { dir, .. } => {
                // Invitation mails hold single-use links: readable by the daemon's user only.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create outbox {}", dir.display()))?;
                // A file name has at most 255 bytes; an address may have 254 characters.
                let address: String = to
                    .email
                    .to_string()
                    .replace(['@', '/'], "_")
                    .chars()
                    .scan(0, |bytes, c| {
                        *bytes += c.len_utf8();
                        (*bytes <= 160).then_some(c)
                    })
                    .collect();
                let name = format!(
                    "{}-{address}.eml",
                    chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"),
                );
                let path = dir.join(name);
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .and_then(|mut file| file.write_all(&message.formatted()))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!(to = %to.email, file = %path.display(), "Wrote mail to the outbox; no SMTP server is configured.");
                Ok(Delivery::Outbox {
                    file: path.display().to_string(),
                })
            }
        }
    }
}
