//! The command line: the operator's runbook steps, imports, reports and the daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ledgersync_config::{DaemonConfig, StreamDef};
use ledgersync_schemas::{Grouping, Month, ReportKind};
use ledgersync_store::{ApiKey, ExportFormat, Store, Tenant};

use crate::access::{self, Role};
use crate::api::AppState;
use crate::import::{self, ImportOptions, ImportOutcome};
use crate::mail::Mailer;
use crate::reports::{self, ReportQuery};
use crate::{demo, keys, tenants, Application};

#[derive(Debug, Parser)]
#[command(
    name = "ledgersync",
    version,
    about = "Finance data connector and sync daemon for F&B dashboards"
)]
pub struct Cli {
    /// TOML configuration file (also LEDGERSYNC_CONFIG); LEDGERSYNC_* variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a customer: tenant, storage, default chart of accounts.
    Provision {
        #[command(subcommand)]
        what: ProvisionWhat,
    },
    /// List tenants.
    Tenants,
    /// A tenant's settings.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Chart of accounts.
    Accounts {
        #[command(subcommand)]
        action: AccountsAction,
    },
    /// Import CSV files through a stream mapping. A file already imported changes nothing.
    Import(ImportArgs),
    /// P&L, cash flow, COGS or staff report from the precomputed aggregates.
    Report(ReportArgs),
    /// Users of a tenant.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Who did what in a tenant, newest first.
    Audit {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// API keys.
    Apikey {
        #[command(subcommand)]
        action: ApikeyAction,
    },
    /// The runbook's post-deployment checklist; exits non-zero unless every check passes.
    Verify {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Customer databases synced into the ledger (the runbook's "Database Connect").
    Connector {
        #[command(subcommand)]
        action: ConnectorAction,
    },
    /// The record of connector syncs.
    Sync {
        #[command(subcommand)]
        action: SyncAction,
    },
    /// The master key that protects connector credentials.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// The stored ledger itself.
    Ledger {
        #[command(subcommand)]
        action: LedgerAction,
    },
    /// Serve the HTTP API.
    Serve,
    /// Create (once) a demo coffee chain with two years of data, then serve it.
    Demo {
        /// Prepare the demo and print how to use it, without serving.
        #[arg(long)]
        no_serve: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProvisionWhat {
    Customer {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "lite")]
        plan: String,
        /// Seats included in the plan.
        #[arg(long, default_value_t = 5)]
        users: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantAction {
    /// Print the settings as JSON.
    Show {
        #[arg(long)]
        tenant: String,
    },
    /// Apply settings from a JSON file: companyName, fiscalYearStart, currency,
    /// timezone, features {pl, cashFlow, cogs, staff}.
    Configure {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_name = "FILE")]
        settings: PathBuf,
    },
    /// Change the plan (lite or pro) and optionally the seats.
    SetPlan {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        plan: String,
        #[arg(long)]
        users: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsAction {
    /// Add or update accounts from a CSV file: code,name,class[,category]. An
    /// imported account that was retired is in use again.
    Import {
        #[arg(long)]
        tenant: String,
        file: PathBuf,
        /// Make the file the whole chart (the tenant's own instead of the default):
        /// accounts not in it are retired if postings are on them, else removed.
        #[arg(long)]
        replace: bool,
    },
    /// Retire accounts: they keep their postings and still count in every report,
    /// but imports refuse new postings on them. `accounts import` brings one back.
    Retire {
        #[arg(long)]
        tenant: String,
        /// Account codes.
        #[arg(required = true)]
        codes: Vec<String>,
    },
    /// Print the chart of accounts as CSV: code,name,class,category,section,status
    /// (`active` or `retired`).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Recompute every aggregate bucket from the ledger.
    Rebuild {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Tenant id or slug.
    #[arg(long)]
    tenant: String,
    /// The built-in stream: only `journal` (general-ledger exports) today; any other
    /// stream is given by --mapping.
    #[arg(long, default_value = "journal", value_parser = ["journal"], conflicts_with = "mapping")]
    stream: String,
    /// Stream mapping definition (TOML), e.g. examples/streams/pos_sales.toml.
    #[arg(long, value_name = "FILE")]
    mapping: Option<PathBuf>,
    /// Load the files again even if they were loaded under the same mapping (their
    /// transactions replace the ones loaded since, key by key).
    #[arg(long)]
    force: bool,
    /// Load files whose content another stream already loaded, as a source of their
    /// own (their transactions then count in both).
    #[arg(long)]
    as_new_source: bool,
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// pnl, cash-flow, cogs or staff.
    kind: ReportKind,
    #[arg(long)]
    tenant: String,
    /// First month, YYYY-MM.
    #[arg(long)]
    from: Month,
    /// Last month, YYYY-MM.
    #[arg(long)]
    to: Month,
    /// One branch (outlet); all branches when left out.
    #[arg(long)]
    branch: Option<String>,
    /// month, quarter, year, fiscal-year or ytd.
    #[arg(long, default_value = "month")]
    by: Grouping,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Debug, Subcommand)]
pub enum LedgerAction {
    /// Write the stored postings with the source, load and line each came from:
    /// source,load_id,line,date,txn_key,account,amount,currency,original_amount,branch,memo,occurred_at.
    Export(ExportArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormatArg {
    /// Amounts as exact decimal text.
    Csv,
    /// Amounts as Decimal(38, 4).
    Parquet,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long)]
    tenant: String,
    /// First month of the postings' dates, YYYY-MM (the first posting's when left out).
    #[arg(long)]
    from: Option<Month>,
    /// Last month, YYYY-MM (the last posting's when left out).
    #[arg(long)]
    to: Option<Month>,
    #[arg(long, value_enum)]
    format: ExportFormatArg,
    /// File to write (standard output when left out).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Invite someone by email into a tenant; the single-use link goes out by mail (or
    /// the outbox). Someone with an account in another tenant keeps their password and
    /// confirms with it.
    Invite {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        /// viewer, manager or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// List the tenant's members (each holds a seat) and its seats.
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectorAction {
    /// Add a connector from its definition (TOML: kind, host, database, user, tls,
    /// streams with their mappings; see examples/connectors/). The password is read
    /// from standard input or an environment variable, sealed, and never shown.
    Add {
        #[arg(long)]
        tenant: String,
        /// Letters, digits, '-' or '_'; names the ledger source `db:<name>/<stream>`.
        #[arg(long)]
        name: String,
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Read the password from the first line of standard input.
        #[arg(long, conflicts_with = "password_env")]
        password_stdin: bool,
        /// Read the password from this environment variable.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
    },
    /// The tenant's connectors, their state and last run.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// One connector as JSON (never its password).
    Show {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// Connect, log in and read each stream's table; says what is wrong in words.
    Test {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// Tables the connector's user can read, with each column's canonical type.
    Discover {
        #[arg(long)]
        tenant: String,
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Sync every stream now.
    Sync {
        #[arg(long)]
        tenant: String,
        name: String,
        /// Also read every incremental stream's keys whole and remove from the
        /// ledger what the source deleted, whether or not its `reconcile` is due.
        #[arg(long)]
        reconcile: bool,
    },
    /// Stop scheduled syncs until resumed.
    Pause {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// Resume scheduled syncs (and forget the failures in a row).
    Resume {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// Remove the connector and its sealed password; its data stays in the ledger.
    Remove {
        #[arg(long)]
        tenant: String,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SyncAction {
    /// Runs, newest first: start, end, rows read / written / rejected, control sum,
    /// cursor before and after, error.
    History {
        #[arg(long)]
        tenant: String,
        /// Only this connector's runs.
        #[arg(long)]
        connector: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Re-wrap every tenant's data key under a new master key. The key file is
    /// replaced (the old key kept as <file>.previous) and running daemons follow;
    /// with LEDGERSYNC_MASTER_KEY the new key is written to --new-key-file.
    Rotate {
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApikeyAction {
    /// Create a key; the secret is printed once and only its hash is stored.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "default")]
        name: String,
        /// read (reports) or ingest (push data).
        #[arg(long, default_value = "read")]
        scope: String,
    },
    /// List live keys (never their secrets).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key by id.
    Revoke {
        #[arg(long)]
        tenant: String,
        id: String,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config_file = cli.config.clone().or_else(DaemonConfig::file_from_env);
    let config = DaemonConfig::load(config_file.as_deref())?;
    let store = ledgersync_store::connect(&config.store.url)
        .await
        .with_context(|| {
            format!(
                "opening the store at {}",
                ledgersync_config::redact_url(&config.store.url)
            )
        })?;
    let import_options = ImportOptions {
        batch_rows: config.import.batch_rows,
        max_reported_errors: config.import.max_reported_errors,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    match cli.command {
        Command::Provision {
            what:
                ProvisionWhat::Customer {
                    name,
                    email,
                    plan,
                    users,
                    json,
                },
        } => {
            let mailer = Mailer::from_config(&config.mail)?;
            let (outcome, invitation) = tenants::provision_customer(
                store.as_ref(),
                &mailer,
                &config.mail.public_url,
                &name,
                &email,
                &plan,
                users,
            )
            .await?;
            let tenant = &outcome.tenant;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "customerId": tenant.id, "slug": tenant.slug, "created": outcome.created,
                        "plan": tenant.plan, "seats": tenant.seats,
                        "admin": invitation.as_ref().map(|i| serde_json::json!({
                            "email": i.user.email, "inviteLink": i.link, "inviteExpiresAt": i.expires_at,
                            "welcomeMail": i.mail,
                        })),
                    })
                );
            } else if let Some(invitation) = invitation {
                println!("customer id:   {}", tenant.id);
                println!("slug:          {}", tenant.slug);
                println!("storage:       initialised, default chart of accounts loaded");
                println!(
                    "admin user:    {} (invited; link expires {})",
                    invitation.user.email, invitation.expires_at
                );
                println!("invite link:   {}", invitation.link);
                println!("welcome email: {}", invitation.mail);
            } else {
                println!(
                    "customer id: {}\nslug:        {}\nalready provisioned for {}: nothing created",
                    tenant.id, tenant.slug, tenant.admin_email
                );
            }
        }
        Command::Tenants => {
            for tenant in store.tenants().await? {
                println!(
                    "{}  {:<24} {:<5} {}",
                    tenant.id, tenant.slug, tenant.plan, tenant.name
                );
            }
        }
        Command::Tenant { action } => match action {
            TenantAction::Show { tenant } => {
                let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
                println!("{}", serde_json::to_string_pretty(&tenant.settings)?);
            }
            TenantAction::SetPlan {
                tenant,
                plan,
                users,
            } => {
                let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
                let updated =
                    tenants::set_plan(store.as_ref(), &tenant, &plan, users, "cli").await?;
                println!("plan {} with {} seat(s)", updated.plan, updated.seats);
            }
            TenantAction::Configure { tenant, settings } => {
                let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
                let json = std::fs::read_to_string(&settings)
                    .with_context(|| format!("cannot read {}", settings.display()))?;
                let (_, moved) = tenants::configure(store.as_ref(), &tenant, &json, "cli").await?;
                println!("settings saved; {moved} transaction(s) re-dated");
            }
        },
        Command::Accounts { action } => match action {
            AccountsAction::Import {
                tenant,
                file,
                replace,
            } => {
                let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
                let accounts = import::read_chart(&file)?;
                let summary = if replace {
                    let change = store.replace_chart(&tenant, &accounts).await?;
                    let mut summary = format!(
                        "chart replaced: {} account(s) added or updated",
                        change.written
                    );
                    if !change.retired.is_empty() {
                        summary.push_str(&format!(
                            "; retired, for the postings they hold: {}",
                            change.retired.join(", ")
                        ));
                    }
                    if !change.removed.is_empty() {
                        summary.push_str(&format!("; removed: {}", change.removed.join(", ")));
                    }
                    summary
                } else {
                    store.upsert_accounts(&tenant, &accounts).await?;
                    format!("{} account(s) added or updated", accounts.len())
                };
                let action = if replace {
                    "accounts.replaced"
                } else {
                    "accounts.imported"
                };
                store.audit(&tenant.id, "cli", action, &summary).await?;
                println!("{summary}");
            }
            AccountsAction::Retire { tenant, codes } => {
                let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
                store.retire_accounts(&tenant, &codes).await?;
                let summary = format!("retired: {}", codes.join(", "));
                store
                    .audit(&tenant.id, "cli", "accounts.retired", &summary)
                    .await?;
                println!("{summary}; their postings stay in every report");
            }
            AccountsAction::Rebuild { tenant } => {
                let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
                let started = std::time::Instant::now();
                let buckets = store.rebuild_aggregates(&tenant).await?;
                println!(
                    "{buckets} month/branch bucket(s) recomputed in {:.2}s",
                    started.elapsed().as_secs_f64()
                );
            }
            AccountsAction::List { tenant } => {
                let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
                let mut out = csv::Writer::from_writer(std::io::stdout());
                out.write_record(["code", "name", "class", "category", "section", "status"])?;
                for a in store.accounts(&tenant).await? {
                    let section = a.class.cash_flow_section().as_str();
                    out.write_record([
                        a.code.as_str(),
                        &a.name,
                        a.class.as_str(),
                        a.category.as_deref().unwrap_or(""),
                        section,
                        if a.retired { "retired" } else { "active" },
                    ])?;
                }
                out.flush()?;
            }
        },
        Command::Import(args) => {
            let tenant = find_tenant(store.as_ref(), &config, &args.tenant).await?;
            let stream = match &args.mapping {
                Some(path) => read_stream(path)?,
                None if args.stream == "journal" => StreamDef::journal(),
                None => anyhow::bail!(
                    "unknown stream '{}': use journal, or --mapping FILE.toml",
                    args.stream
                ),
            };
            let repeat = import::Repeat {
                force: args.force,
                as_new_source: args.as_new_source,
            };
            for file in &args.files {
                import_one(
                    store.clone(),
                    &tenant,
                    stream.clone(),
                    file,
                    &import_options,
                    repeat,
                )
                .await?;
            }
        }
        Command::Report(args) => {
            let tenant = find_tenant(store.as_ref(), &config, &args.tenant).await?;
            let query = ReportQuery {
                kind: args.kind,
                from: args.from,
                to: args.to,
                branch: args.branch,
                by: args.by,
            };
            let report = reports::build(store.as_ref(), &tenant, &query).await?;
            match args.format {
                Format::Table => print!("{}", report.to_table()),
                Format::Csv => print!("{}", report.to_csv()),
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
        }
        Command::Apikey {
            action:
                ApikeyAction::Create {
                    tenant,
                    name,
                    scope,
                },
        } => {
            let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
            let (secret, _) = create_key(store.as_ref(), &tenant, &name, &scope, "cli").await?;
            println!("{secret}\n(shown once: only its hash is stored)");
        }
        Command::Apikey {
            action: ApikeyAction::List { tenant },
        } => {
            let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
            for key in store.api_keys(&tenant).await? {
                println!(
                    "{}  {:<20} {:<7} created {}  last used {}",
                    key.id,
                    key.name,
                    key.scope,
                    key.created_at,
                    key.last_used_at.as_deref().unwrap_or("never")
                );
            }
        }
        Command::Apikey {
            action: ApikeyAction::Revoke { tenant, id },
        } => {
            let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
            store.revoke_api_key(&tenant, &id).await?;
            store
                .audit(&tenant.id, "cli", "apikey.revoked", &id)
                .await?;
            println!("revoked {id}");
        }
        Command::User { action } => match action {
            UserAction::Invite {
                tenant,
                email,
                role,
            } => {
                let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
                let mailer = Mailer::from_config(&config.mail)?;
                let role: Role = role.parse().map_err(anyhow::Error::msg)?;
                let invitation = access::invite(
                    store.as_ref(),
                    &mailer,
                    &config.mail.public_url,
                    &tenant,
                    &email,
                    role,
                    "cli",
                )
                .await?;
                println!(
                    "invited {} as {role}; link expires {}",
                    invitation.user.email, invitation.expires_at
                );
                println!("invite link: {}", invitation.link);
                println!("email:       {}", invitation.mail);
            }
            UserAction::List { tenant } => {
                let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
                let users = store.users(&tenant).await?;
                // One seat per membership; a person may be a member of other tenants too.
                println!("{} of {} seat(s) used", users.len(), tenant.seats);
                for user in users {
                    println!(
                        "{}  {:<32} {:<8} {}",
                        user.id, user.email, user.role, user.status
                    );
                }
            }
        },
        Command::Audit { tenant, limit } => {
            let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
            for entry in store.audit_log(&tenant, limit.clamp(1, 10_000)).await? {
                println!(
                    "{}  {:<32} {:<22} {}",
                    entry.at, entry.actor, entry.action, entry.detail
                );
            }
        }
        Command::Verify { tenant, json } => {
            let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
            let checks = crate::verify::verify(store.as_ref(), &tenant).await?;
            let failed = checks.iter().filter(|c| !c.ok).count();
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "tenant": tenant.slug, "ok": failed == 0, "checks": checks })
                );
            } else {
                for c in &checks {
                    println!(
                        "{} {:<28} {}",
                        if c.ok { "✓" } else { "✗" },
                        c.check,
                        c.detail
                    );
                }
            }
            anyhow::ensure!(failed == 0, "{failed} of {} check(s) failed", checks.len());
        }
        Command::Connector { action } => {
            connector_command(store, &config, &import_options, action).await?
        }
        Command::Sync {
            action:
                SyncAction::History {
                    tenant,
                    connector,
                    limit,
                    json,
                },
        } => {
            let tenant = find_tenant(store.as_ref(), &config, &tenant).await?;
            let runs = store
                .sync_runs(&tenant.id, connector.as_deref(), limit.clamp(1, 1000))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                for run in runs {
                    println!(
                        "#{} {}/{} {} {} → {} read {} written {} rejected {} removed {} control sum {} cursor {} → {}{}",
                        run.id,
                        run.connector,
                        run.stream,
                        run.status,
                        run.started_at,
                        run.ended_at.as_deref().unwrap_or("…"),
                        run.rows_read,
                        run.rows_written,
                        run.rows_rejected,
                        run.rows_removed,
                        run.control_sum,
                        run.cursor_before.as_deref().unwrap_or("start"),
                        run.cursor_after.as_deref().unwrap_or("start"),
                        run.error.map(|e| format!("\n    {e}")).unwrap_or_default()
                    );
                }
            }
        }
        Command::Keys {
            action: KeysAction::Rotate { new_key_file },
        } => {
            let rotation = crate::secrets::rotate(
                store.as_ref(),
                &config.credentials.key_file,
                new_key_file.as_deref(),
            )
            .await?;
            println!(
                "{} data key(s) re-wrapped: master key {} replaced by {}",
                rotation.rewrapped, rotation.old_id, rotation.new_id
            );
            match (&rotation.previous_key_file, new_key_file) {
                (Some(previous), _) => println!(
                    "the new key is in {}; the old one is kept in {} until you have backed up the new one",
                    config.credentials.key_file.display(),
                    previous.display()
                ),
                (None, Some(file)) => println!(
                    "the new key is in {}: set LEDGERSYNC_MASTER_KEY to its content and restart the daemons",
                    file.display()
                ),
                (None, None) => {}
            }
        }
        Command::Ledger {
            action: LedgerAction::Export(args),
        } => export(store.as_ref(), args).await?,
        Command::Serve => serve(store, &config).await?,
        Command::Demo { no_serve } => demo(store, &config, &import_options, no_serve).await?,
    }
    Ok(())
}

async fn connector_command(
    store: Arc<dyn Store>,
    config: &DaemonConfig,
    import_options: &ImportOptions,
    action: ConnectorAction,
) -> anyhow::Result<()> {
    use crate::connectors;
    let secrets =
        crate::secrets::Secrets::load(store.as_ref(), &config.credentials.key_file).await?;
    match action {
        ConnectorAction::Add {
            tenant,
            name,
            file,
            password_stdin,
            password_env,
        } => {
            let tenant = find_tenant(store.as_ref(), config, &tenant).await?;
            let password = match (password_stdin, password_env) {
                (true, _) => crate::secrets::password_from_stdin()?,
                (false, Some(var)) => std::env::var(&var)
                    .map(ledgersync_credentials::SecretString::from)
                    .with_context(|| format!("the environment variable {var} is not set"))?,
                (false, None) => anyhow::bail!(
                    "give the database password with --password-stdin or --password-env VAR"
                ),
            };
            let added = connectors::add(
                store.as_ref(),
                &secrets,
                &tenant,
                &name,
                &file,
                &password,
                "cli",
            )
            .await?;
            println!(
                "connector {} added ({}); next: `ledgersync connector test --tenant {} {}`",
                added.name, added.kind, tenant.slug, added.name
            );
        }
        ConnectorAction::List { tenant, json } => {
            let tenant = find_tenant(store.as_ref(), config, &tenant).await?;
            let mut views = Vec::new();
            for connector in store.connectors(&tenant.id).await? {
                views.push(connectors::view(store.as_ref(), &connector).await?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                for v in views {
                    let state = v.paused.clone().unwrap_or_else(|| "active".into());
                    let last = v.last_run.as_ref().map_or_else(
                        || "never synced".to_string(),
                        |r| format!("last run {} at {}", r.status, r.started_at),
                    );
                    println!(
                        "{}\t{}://{}@{}:{}/{}\t{} stream(s)\t{}\t{}",
                        v.name,
                        v.kind,
                        v.user,
                        v.host,
                        v.port,
                        v.database,
                        v.streams.len(),
                        state,
                        last
                    );
                }
            }
        }
        ConnectorAction::Show { tenant, name } => {
            let tenant = find_tenant(store.as_ref(), config, &tenant).await?;
            let connector = connectors::find(store.as_ref(), &tenant, &name).await?;
            let view = connectors::view(store.as_ref(), &connector).await?;
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
        ConnectorAction::Test { tenant, name } => {
            let tenant = find_tenant(store.as_ref(), config, &tenant).await?;
            let connector = connectors::find(store.as_ref(), &tenant, &name).await?;
            match connectors::test(store.as_ref(), &secrets, &connector).await? {
                Ok(check) => {
                    println!("✓ connected: {}", check.server);
                    for line in check.streams {
                        println!("✓ {line}");
                    }
                }
                Err(error) => {
                    println!("✗ {error}");
                    anyhow::bail!("connector {name} cannot be read ({:?})", error.kind);
                }
            }
        }
        ConnectorAction::Discover { tenant, name, json } => {
            let tenant = find_tenant(store.as_ref(), config, &tenant).await?;
            let connector = connectors::find(store.as_ref(), &tenant, &name).await?;
            let tables = connectors::discover(store.as_ref(), &secrets, &connector).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tables)?);
            } else {
                for table in tables {
                    println!("{}.{}", table.schema, table.name);
                    for c in table.columns {
                        let canonical = c.canonical.map_or_else(
                            || "not readable: cast it in a query".to_string(),
                            |t| {
                                serde_json::to_value(t)
                                    .map(|v| v.as_str().unwrap_or_default().to_string())
                                    .unwrap_or_default()
                            },
                        );
                        println!(
                            "  {:<32} {:<28} {}{}",
                            c.name,
                            c.source_type,
                            canonical,
                            if c.nullable { "" } else { ", not null" }
                        );
                    }
                }
            }
        }
        ConnectorAction::Sync {
            tenant,
            name,
            reconcile,
        } => {
            let tenant = find_tenant(store.as_ref(), config, &tenant).await?;
            let connector = connectors::find(store.as_ref(), &tenant, &name).await?;
            let options = crate::sync::SyncOptions {
                reconcile_now: reconcile,
                ..crate::sync::SyncOptions::once(
                    import_options.batch_rows,
                    import_options.max_reported_errors,
                )
            };
            let synced = crate::sync::sync_connector(
                store.clone(),
                &secrets,
                &tenant,
                &connector,
                "manual",
                &options,
            )
            .await?;
            for s in synced {
                println!(
                    "{}: {} row(s) read, {} posting(s) written, {} transaction(s) removed, in {} commit(s), control sum {}, cursor {} → {}",
                    s.stream,
                    s.rows_read,
                    s.postings_written,
                    s.removed,
                    s.commits,
                    s.control_sum,
                    s.cursor_before.as_deref().unwrap_or("start"),
                    s.cursor_after.as_deref().unwrap_or("none")
                );
            }
        }
        ConnectorAction::Pause { tenant, name } => {
            let tenant = find_tenant(store.as_ref(), config, &tenant).await?;
            store
                .set_connector_paused(&tenant.id, &name, Some("paused by the operator"))
                .await?;
            store
                .audit(&tenant.id, "cli", "connector.paused", &name)
                .await?;
            println!("connector {name} paused");
        }
        ConnectorAction::Resume { tenant, name } => {
            let tenant = find_tenant(store.as_ref(), config, &tenant).await?;
            store.set_connector_paused(&tenant.id, &name, None).await?;
            store
                .audit(&tenant.id, "cli", "connector.resumed", &name)
                .await?;
            println!("connector {name} resumed");
        }
        ConnectorAction::Remove { tenant, name } => {
            let tenant = find_tenant(store.as_ref(), config, &tenant).await?;
            store.remove_connector(&tenant.id, &name).await?;
            store
                .audit(&tenant.id, "cli", "connector.removed", &name)
                .await?;
            println!("connector {name} removed; what it synced stays in the ledger");
        }
    }
    Ok(())
}

/// The tenant by id or slug; a miss names the store it was looked for in, which is
/// often the answer (a daemon configured for another store).
async fn find_tenant(
    store: &dyn Store,
    config: &DaemonConfig,
    id_or_slug: &str,
) -> anyhow::Result<Tenant> {
    store.tenant(id_or_slug).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "no tenant '{id_or_slug}' in the store at {}; check --tenant, or the store's url \
             (LEDGERSYNC_STORE__URL or [store] url in the config file)",
            ledgersync_config::redact_url(&config.store.url)
        )
    })
}

fn read_stream(path: &Path) -> anyhow::Result<StreamDef> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    StreamDef::from_toml(&text)
        .with_context(|| format!("{} is not a valid stream mapping", path.display()))
}

async fn import_one(
    store: Arc<dyn Store>,
    tenant: &Tenant,
    stream: StreamDef,
    file: &Path,
    options: &ImportOptions,
    repeat: import::Repeat,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let origin = file.display().to_string();
    let stream_name = stream.name.clone();
    match import::import_csv_repeating(
        store.clone(),
        tenant,
        stream,
        file,
        &origin,
        options,
        repeat,
    )
    .await?
    {
        ImportOutcome::Loaded(summary) => {
            store
                .audit(
                    &tenant.id,
                    "cli",
                    "import.loaded",
                    &import::audit_detail(&origin, &stream_name, &summary),
                )
                .await?;
            println!(
                "{}: {} transaction(s) ({} added, {} replaced of which {} unchanged, {} removed), \
             {} posting(s) imported in {:.3}s; {} month/branch bucket(s) recomputed",
                file.display(),
                summary.transactions,
                summary.counts.added,
                summary.counts.replaced,
                summary.counts.unchanged,
                summary.counts.removed,
                summary.postings,
                started.elapsed().as_secs_f64(),
                summary.buckets_recomputed
            )
        }
        ImportOutcome::AlreadyLoaded(past) => println!(
            "{}: already imported with this mapping on {} (load {}); nothing changed \
             (--force loads it again)",
            file.display(),
            past.loaded_at,
            past.id
        ),
    }
    Ok(())
}

/// Creates an API key, returning the secret (shown once) and the stored key.
pub async fn create_key(
    store: &dyn Store,
    tenant: &Tenant,
    name: &str,
    scope: &str,
    actor: &str,
) -> anyhow::Result<(String, ApiKey)> {
    anyhow::ensure!(
        keys::SCOPES.contains(&scope),
        "unknown scope '{scope}': use read or ingest"
    );
    anyhow::ensure!(
        (1..=100).contains(&name.chars().count()),
        "the key name must be 1 to 100 characters"
    );
    let secret = keys::generate();
    let key = store
        .create_api_key(&tenant.id, name, scope, &keys::hash(&secret))
        .await?;
    store
        .audit(
            &tenant.id,
            actor,
            "apikey.created",
            &format!("{name} ({scope})"),
        )
        .await?;
    Ok((secret, key))
}

async fn export(store: &dyn Store, args: ExportArgs) -> anyhow::Result<()> {
    let tenant = tenants::find(store, &args.tenant).await?;
    if let (Some(from), Some(to)) = (args.from, args.to) {
        anyhow::ensure!(from <= to, "--from {from} comes after --to {to}");
    }
    let format = match args.format {
        ExportFormatArg::Csv => ExportFormat::Csv,
        ExportFormatArg::Parquet => ExportFormat::Parquet,
    };
    let out: Box<dyn std::io::Write + Send> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let summary = store
        .export_ledger(&tenant, args.from, args.to, format, out)
        .await
        .context("exporting the ledger")?;
    if let Some(path) = &args.output {
        eprintln!(
            "{} posting(s) written to {}",
            summary.postings,
            path.display()
        );
    }
    Ok(())
}

async fn serve(store: Arc<dyn Store>, config: &DaemonConfig) -> anyhow::Result<()> {
    // Migrations run here, before the first request, never on the request path.
    let started = std::time::Instant::now();
    let tenants = store
        .prepare_tenants()
        .await
        .context("migrating the tenants' storage")?;
    tracing::info!(
        tenants,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Tenant storage is migrated."
    );
    let metrics = crate::metrics::SyncMetrics::default();
    let scheduler =
        crate::scheduler::Scheduler::start(store.clone(), config, metrics.clone()).await?;
    let mut state = AppState::new(store.clone(), config)?.with_sync_metrics(metrics);
    match crate::secrets::Secrets::load(store.as_ref(), &config.credentials.key_file).await {
        Ok(secrets) => state = state.with_secrets(Arc::new(secrets)),
        Err(error) => tracing::warn!(
            error = format!("{error:#}"),
            "No master key: the API's connector routes that need credentials answer 503."
        ),
    }
    let app = Application::build(state, config.server.listen).await?;
    tracing::info!(address = %app.local_addr(), "Serving the API.");
    let served = app.run_until_stopped().await;
    // Requests are done; running syncs reach their next commit before the process ends.
    scheduler.shutdown().await;
    served?;
    Ok(())
}

const DEMO_EMAIL: &str = "owner@kopi-demo.example";

async fn demo(
    store: Arc<dyn Store>,
    config: &DaemonConfig,
    options: &ImportOptions,
    no_serve: bool,
) -> anyhow::Result<()> {
    let outcome = tenants::provision(store.as_ref(), "Kopi Demo", DEMO_EMAIL, "pro", 10).await?;
    let tenant = outcome.tenant;
    if store.loads(&tenant).await?.is_empty() {
        let spec = demo::DemoSpec::default();
        // The generated files go once they are imported, or if the import fails.
        let dir = tempfile::Builder::new()
            .prefix("ledgersync-demo-")
            .tempdir()?;
        let files = demo::generate(&spec, dir.path())?;
        println!(
            "Generated {} source rows for {} outlets in {}",
            files.rows,
            spec.outlets,
            dir.path().display()
        );
        let pos = StreamDef::from_toml(demo::POS_SALES_STREAM)?;
        let financing = StreamDef::from_toml(demo::FINANCING_STREAM)?;
        let once = import::Repeat::default();
        import_one(store.clone(), &tenant, pos, &files.pos_sales, options, once).await?;
        import_one(
            store.clone(),
            &tenant,
            StreamDef::journal(),
            &files.journal,
            options,
            once,
        )
        .await?;
        import_one(
            store.clone(),
            &tenant,
            financing,
            &files.financing,
            options,
            once,
        )
        .await?;
    } else {
        println!("Demo tenant '{}' already has data.", tenant.slug);
    }
    let (key, _) = create_key(store.as_ref(), &tenant, "demo", "read", "cli").await?;
    let app = Application::build(AppState::new(store, config)?, config.server.listen).await?;
    let url = format!("http://{}", app.local_addr());
    println!(
        "\nDemo coffee chain '{slug}' is ready.\n\
         API:      {url}\n\
         API key:  {key}\n\n\
         Try:\n  curl -H 'Authorization: Bearer {key}' '{url}/v1/reports/pnl?from=2024-01&to=2025-12&by=quarter'\n  \
         cargo run -- report pnl --tenant {slug} --from 2025-01 --to 2025-12\n  \
         cargo run -- report cash-flow --tenant {slug} --from 2024-01 --to 2025-12 --by quarter\n",
        slug = tenant.slug
    );
    if no_serve {
        return Ok(());
    }
    println!("Serving; press Ctrl-C to stop.");
    app.run_until_stopped().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_tenant_names_the_store_looked_in() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = DaemonConfig::default();
        config.store.url = format!("sqlite://{}", dir.path().join("data").display());
        let store = ledgersync_store::connect(&config.store.url).await.unwrap();
        let error = find_tenant(store.as_ref(), &config, "kopi")
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "no tenant 'kopi' in the store at {}; check --tenant, or the store's url \
                 (LEDGERSYNC_STORE__URL or [store] url in the config file)",
                config.store.url
            )
        );
    }
}
