//! The store: the control plane ([`ControlStore`]: tenants, people, sessions, keys,
//! audit) and the ledger ([`LedgerStore`]: chart, loads, aggregates, reads), held
//! together as [`Store`], over two backends chosen by URL.
//!
//! - `sqlite://DIR` — the embedded default: `DIR/control.db` plus one database file
//!   per tenant under `DIR/tenants/`.
//! - `postgres://…` — a `ledgersync` control schema plus one schema per tenant.
//!
//! Each backend has its own migrations (`migrations/<backend>/{control,tenant}`).
//! Both speak the same SQL through sqlx's `Any` driver, so the ledger logic — staging
//! a load, validating it, merging it and recomputing the touched aggregates in one
//! transaction — is written once in [`ledger`]; the control plane's in [`control`].

mod aggregates;
pub mod backend;
mod compaction;
mod connectors;
mod control;
mod dates;
mod error;
mod export;
mod keys;
mod ledger;
mod legacy;
mod load;
mod segments;
mod transactions;

use control::SqlStore;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use ledgersync_config::TenantSettings;
use ledgersync_schemas::{Account, Amount, Month, MonthMetrics, Posting, PostingFrame};
use serde::Serialize;

pub use connectors::{ConnectorStore, RunTotals, StoredConnector, StoredDataKey, SyncRun};
pub use error::{Blame, LoadRejected, StoreError};
pub use export::{ExportFormat, ExportSummary, EXPORT_COLUMNS};
pub use transactions::{
    LedgerPosting, LedgerTransaction, TransactionCursor, TransactionPage, TransactionQuery,
    MAX_PAGE as MAX_TRANSACTIONS_PAGE,
};

/// Opens the store a URL names, creating and migrating its control storage.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    backend::connect(url).await
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub admin_email: String,
    pub plan: String,
    pub seats: i64,
    pub settings: TenantSettings,
    pub created_at: String,
}

#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: String,
    pub admin_email: String,
    pub plan: String,
    pub seats: i64,
    pub settings: TenantSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub scope: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

/// A person's membership of a tenant, as the tenant sees it: `id` is the membership's
/// (the API's user id). Roles: `viewer`, `manager`, `admin`; status `invited` until the
/// invitation is accepted, then `active`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct User {
    pub id: String,
    /// The person behind the membership; not shown, so that one tenant cannot tell
    /// that a person also belongs to another.
    #[serde(skip)]
    #[schemars(skip)]
    pub person_id: String,
    pub tenant_id: String,
    pub email: String,
    pub role: String,
    pub status: String,
    pub created_at: String,
    pub accepted_at: Option<String>,
}

/// One of a person's active memberships, as listed to the person at login and by
/// `GET /v1/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Membership {
    pub tenant_id: String,
    pub tenant_slug: String,
    pub tenant_name: String,
    pub role: String,
}

/// A person: one email, one password for every tenant they belong to.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub email: String,
    /// None until the person accepts a first invitation.
    pub password_hash: Option<String>,
}

/// An invitation just written, and whether its person already has a password (then
/// accepting it takes that password, not a new one).
#[derive(Debug, Clone)]
pub struct Invited {
    pub user: User,
    pub has_password: bool,
}

/// A live (unused, unexpired) invitation.
#[derive(Debug, Clone)]
pub struct PendingInvitation {
    pub user: User,
    /// The person's password, when they already have one.
    pub password_hash: Option<String>,
}

/// How failed logins of one key (an address from one client, or an address over all
/// clients) are slowed down: after `free_failures` attempts each further attempt
/// waits, from `first_wait_ms` doubling up to `max_wait_ms`; a key quiet for
/// `forget_after_ms` starts again.
#[derive(Debug, Clone, Copy)]
pub struct LoginThrottle {
    pub free_failures: i64,
    pub first_wait_ms: i64,
    pub max_wait_ms: i64,
    pub forget_after_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    /// Who: `user:<email>`, `apikey:<name>` or `cli`.
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// Which of a source's transactions a complete read did not see.
#[derive(Debug, Clone)]
pub enum Unseen {
    /// A full refresh whose first commit was this load: those no load since
    /// brought. `None` (the read found no rows): every transaction of the source.
    LoadedBefore(Option<i64>),
    /// A key reconcile of an incremental stream: those whose key is not among the
    /// keys the source holds.
    KeysNotIn(std::collections::HashSet<String>),
}

/// What a load records about itself, committed with its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadRecord {
    /// Source the rows belong to (e.g. `file:journal`); keys are unique within it.
    pub source: String,
    /// Content hash of a file, or the cursor range of a sync; a repeat is a no-op.
    pub fingerprint: String,
    pub stream: String,
    /// File path or connector name, for people.
    pub origin: String,
    pub rows_read: i64,
    /// Where a scheduled source resumes next time.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LoadSummary {
    pub load_id: i64,
    pub transactions: i64,
    pub postings: i64,
    /// Sum of the absolute amounts loaded, for reconciling with the source.
    pub control_sum: Amount,
    /// (month, branch) buckets whose aggregates were recomputed.
    pub buckets_recomputed: i64,
    /// What the load did to the source's transactions, see [`LoadCounts`].
    #[serde(flatten)]
    pub counts: LoadCounts,
}

/// What a load did to its source's transactions, by key: `added` were new,
/// `replaced` took the place of an earlier version, of which `unchanged` had exactly
/// the same postings (lines aside). A load never deletes a transaction it does not
/// carry, so `removed` is 0 for loads today; it is kept for sources that report
/// deletions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LoadCounts {
    pub added: i64,
    pub replaced: i64,
    pub unchanged: i64,
    pub removed: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PastLoad {
    pub id: i64,
    pub source: String,
    pub stream: String,
    pub origin: String,
    pub rows_read: i64,
    pub transactions: i64,
    pub postings: i64,
    /// Sum of the absolute amounts loaded.
    pub control_sum: Amount,
    pub loaded_at: String,
    /// `succeeded`, or `failed` for a refused load that changed nothing.
    pub status: String,
    /// Why a failed load was refused.
    pub problem: Option<String>,
    /// The content hash (and, for mapped files, the mapping's) the load was
    /// recognised by.
    pub fingerprint: String,
    /// None for loads recorded before loads counted what they did.
    pub counts: Option<LoadCounts>,
}

/// What replacing a tenant's chart did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChartReplaced {
    /// Accounts of the new chart, added or updated.
    pub written: usize,
    /// Accounts not in the new chart kept, retired, for the postings they hold.
    pub retired: Vec<String>,
    /// Accounts not in the new chart and without postings, removed.
    pub removed: Vec<String>,
}

/// What the ledger holds today of one load's transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LedgerTotals {
    pub transactions: i64,
    pub postings: i64,
    pub control_sum: Amount,
}

/// The control plane: tenants, API keys, people, memberships, invitations,
/// sessions, login throttling and the audit trail.
#[async_trait]
pub trait ControlStore: Send + Sync {
    /// Shares this process's changes to tenants' data with the other processes on
    /// the store, and takes theirs into [`LedgerStore::generation`]; a reader that
    /// caches by generation calls it about once a second.
    async fn sync_generations(&self) -> Result<(), StoreError>;
    /// Creates a tenant and its storage; with an existing admin email returns that
    /// tenant and `false` instead.
    async fn create_tenant(&self, new: NewTenant) -> Result<(Tenant, bool), StoreError>;
    /// By id or slug.
    async fn tenant(&self, id_or_slug: &str) -> Result<Option<Tenant>, StoreError>;
    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Creates and migrates every tenant's storage (idempotent). A server does this
    /// before it answers, so that no request migrates; returns how many tenants.
    async fn prepare_tenants(&self) -> Result<usize, StoreError>;
    async fn create_api_key(
        &self,
        tenant_id: &str,
        name: &str,
        scope: &str,
        secret_hash: &str,
    ) -> Result<ApiKey, StoreError>;
    /// The tenant and key of a live key's secret hash, recording its use.
    async fn authenticate_api_key(
        &self,
        secret_hash: &str,
    ) -> Result<Option<(Tenant, ApiKey)>, StoreError>;

    /// Invites `email` with `role` into the tenant, within its seats (one seat per
    /// membership). A person is created for a new address; a person who already
    /// belongs elsewhere keeps their password. Inviting a pending member again
    /// replaces the invitation; an active member is a conflict.
    async fn invite_user(
        &self,
        tenant: &Tenant,
        email: &str,
        role: &str,
        token_hash: &str,
        expires_at: &str,
    ) -> Result<Invited, StoreError>;
    /// The live invitation of a token hash, if any; reads only.
    async fn pending_invitation(
        &self,
        token_hash: &str,
    ) -> Result<Option<PendingInvitation>, StoreError>;
    /// Uses a live invitation once and activates its membership; `password_hash`
    /// becomes the person's password when they have none yet.
    async fn accept_invitation(
        &self,
        token_hash: &str,
        password_hash: Option<&str>,
    ) -> Result<(Tenant, User), StoreError>;
    /// The tenant's memberships, invited and active.
    async fn users(&self, tenant: &Tenant) -> Result<Vec<User>, StoreError>;
    async fn person(&self, email: &str) -> Result<Option<Person>, StoreError>;
    /// The tenants a person is an active member of, oldest membership first.
    async fn person_tenants(&self, person_id: &str) -> Result<Vec<Membership>, StoreError>;
    /// Counts a login attempt of `email` from `client` (`None`: from any client)
    /// against `throttle` before the password is checked, in one atomic step
    /// (parallel attempts cannot all pass): `None` when it may go ahead, else how long
    /// to wait in milliseconds. Kept for addresses without an account too.
    async fn count_login_attempt(
        &self,
        email: &str,
        client: Option<&str>,
        throttle: &LoginThrottle,
    ) -> Result<Option<i64>, StoreError>;
    /// After a right password: forgets the failures of `email` from `client`, and
    /// takes this attempt back from the address's count over all clients.
    async fn forget_login_failures(&self, email: &str, client: &str) -> Result<(), StoreError>;
    /// Opens a session of a person acting in their active membership of `tenant_id`;
    /// `None` (and no session) when they have none.
    async fn create_session(
        &self,
        person_id: &str,
        tenant_id: &str,
        token_hash: &str,
        expires_at: &str,
    ) -> Result<Option<(Tenant, User)>, StoreError>;
    /// The tenant and active membership a live session acts in.
    async fn session(&self, token_hash: &str) -> Result<Option<(Tenant, User)>, StoreError>;
    /// Points a live session at the person's active membership of another tenant (by
    /// id or slug); `None` when the person is no active member of it.
    async fn switch_session_tenant(
        &self,
        token_hash: &str,
        tenant: &str,
    ) -> Result<Option<(Tenant, User)>, StoreError>;
    async fn end_session(&self, token_hash: &str) -> Result<(), StoreError>;
    /// Changes a member's role; demoting the tenant's last active admin is a conflict.
    async fn set_user_role(
        &self,
        tenant: &Tenant,
        user_id: &str,
        role: &str,
    ) -> Result<User, StoreError>;
    /// Ends a membership, its invitations and the sessions acting in it (the person
    /// stays, with their other memberships); removing the last active admin is a
    /// conflict.
    async fn remove_user(&self, tenant: &Tenant, user_id: &str) -> Result<(), StoreError>;
    /// Live keys, without their secrets.
    async fn api_keys(&self, tenant: &Tenant) -> Result<Vec<ApiKey>, StoreError>;
    async fn revoke_api_key(&self, tenant: &Tenant, key_id: &str) -> Result<(), StoreError>;
    async fn set_plan(&self, tenant: &Tenant, plan: &str, seats: i64)
        -> Result<Tenant, StoreError>;
    async fn audit(
        &self,
        tenant_id: &str,
        actor: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError>;
    /// The newest entries first.
    async fn audit_log(&self, tenant: &Tenant, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;
}

/// A tenant's ledger: its chart, loads, aggregates and the reads over them.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Replaces a tenant's settings. A new timezone re-dates every transaction that
    /// kept its source instant and recomputes the buckets involved. Returns the
    /// updated tenant and how many transactions changed date.
    async fn update_settings(
        &self,
        tenant: &Tenant,
        settings: &TenantSettings,
    ) -> Result<(Tenant, u64), StoreError>;

    /// Adds or updates accounts; an updated retired account is in use again.
    async fn upsert_accounts(
        &self,
        tenant: &Tenant,
        accounts: &[Account],
    ) -> Result<(), StoreError>;
    /// Makes `accounts` the whole chart: they are written (and in use again if they
    /// were retired); every other account is retired if postings are on it, else
    /// removed.
    async fn replace_chart(
        &self,
        tenant: &Tenant,
        accounts: &[Account],
    ) -> Result<ChartReplaced, StoreError>;
    /// Retires accounts: they keep their postings and still count in every report,
    /// but imports refuse new postings on them. An unknown code is an error and
    /// retires none.
    async fn retire_accounts(&self, tenant: &Tenant, codes: &[String]) -> Result<(), StoreError>;
    /// The chart, retired accounts included.
    async fn accounts(&self, tenant: &Tenant) -> Result<Vec<Account>, StoreError>;

    /// A load with this fingerprint already committed (successfully) for the source.
    async fn find_load(
        &self,
        tenant: &Tenant,
        source: &str,
        fingerprint: &str,
    ) -> Result<Option<PastLoad>, StoreError>;
    /// Whether a committed load of the source has a fingerprint without a `scheme:`
    /// prefix (written before fingerprints named their hash).
    async fn has_unnamed_fingerprints(
        &self,
        tenant: &Tenant,
        source: &str,
    ) -> Result<bool, StoreError>;
    /// Committed loads, of any source, whose fingerprint is `content` or begins with
    /// `content/` (the same file under a mapping or loaded again), oldest first.
    async fn loads_of_content(
        &self,
        tenant: &Tenant,
        content: &str,
    ) -> Result<Vec<PastLoad>, StoreError>;
    async fn loads(&self, tenant: &Tenant) -> Result<Vec<PastLoad>, StoreError>;
    /// Records a refused load (nothing of it was loaded) and why.
    async fn record_failed_load(
        &self,
        tenant: &Tenant,
        record: &LoadRecord,
        problem: &str,
    ) -> Result<(), StoreError>;
    /// Transactions, postings and absolute amount sum still in the ledger from a load.
    async fn load_totals(&self, tenant: &Tenant, load_id: i64) -> Result<LedgerTotals, StoreError>;
    async fn sync_cursor(
        &self,
        tenant: &Tenant,
        source: &str,
    ) -> Result<Option<String>, StoreError>;

    /// When `source`'s keys were last reconciled ([`Unseen::KeysNotIn`]), RFC 3339.
    async fn reconciled_at(
        &self,
        tenant: &Tenant,
        source: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Ends a complete read of `source`: the source's transactions it did not see
    /// (see [`Unseen`]) were deleted at the source and are removed, their buckets
    /// recomputed, and the removal recorded as a load (`removed` counts them), all in
    /// one transaction; a key reconcile also notes its time there.
    async fn remove_unseen(
        &self,
        tenant: &Tenant,
        unseen: Unseen,
        record: LoadRecord,
    ) -> Result<LoadSummary, StoreError>;
    /// Starts a load (after finishing any interrupted timezone change): postings are staged batch by batch and only become visible,
    /// with their aggregates, record and cursor, when [`LoadSession::commit`] succeeds.
    async fn begin_load(&self, tenant: &Tenant) -> Result<Box<dyn LoadSession>, StoreError>;

    /// Month metrics of one branch (or [`ledgersync_schemas::BRANCH_TOTAL`]).
    async fn month_metrics(
        &self,
        tenant: &Tenant,
        branch: &str,
        from: Month,
        to: Month,
    ) -> Result<BTreeMap<Month, MonthMetrics>, StoreError>;
    /// Cash balance of a branch before `month`.
    async fn cash_before(
        &self,
        tenant: &Tenant,
        branch: &str,
        month: Month,
    ) -> Result<Amount, StoreError>;
    async fn branches(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError>;
    /// Recomputes every aggregate bucket from the postings.
    async fn rebuild_aggregates(&self, tenant: &Tenant) -> Result<i64, StoreError>;
    /// Changes whenever a change to what the tenant's reports say (loads, accounts,
    /// settings, plan) is committed: at once by this process, after
    /// [`ControlStore::sync_generations`] by others; a cache key for readers.
    fn generation(&self, tenant_id: &str) -> u64;
    /// Number of postings in the ledger.
    async fn posting_count(&self, tenant: &Tenant) -> Result<i64, StoreError>;
    /// Number of segments the ledger's postings are stored in.
    async fn segment_count(&self, tenant: &Tenant) -> Result<i64, StoreError>;
    /// Writes the postings dated `from..=to` (all if `None`) to `out`, with the source,
    /// load and line each came from, one segment at a time.
    async fn export_ledger(
        &self,
        tenant: &Tenant,
        from: Option<Month>,
        to: Option<Month>,
        format: ExportFormat,
        out: Box<dyn std::io::Write + Send>,
    ) -> Result<ExportSummary, StoreError>;
    /// A page of the transactions `query` selects, each with all its postings.
    async fn ledger_transactions(
        &self,
        tenant: &Tenant,
        query: &TransactionQuery,
    ) -> Result<TransactionPage, StoreError>;
}

/// Both planes and the connectors, as the daemon holds them (`Arc<dyn Store>`).
pub trait Store: ControlStore + LedgerStore + ConnectorStore {}

impl<T: ControlStore + LedgerStore + ConnectorStore> Store for T {}

#[async_trait]
pub trait LoadSession: Send {
    /// Stages a batch of postings; nothing is visible until commit. A transaction's
    /// postings are expected together (they may continue into the next batch); a
    /// key that comes back later is merged, at a cost, at commit.
    async fn stage_frame(&mut self, postings: PostingFrame) -> Result<(), StoreError>;

    /// Stages postings given one by one (tests, small sources).
    async fn stage(&mut self, postings: &[Posting]) -> Result<(), StoreError> {
        self.stage_frame(PostingFrame::from_postings(postings))
            .await
    }
    /// Validates everything staged (balanced transactions, one date and branch per
    /// transaction), replaces the source's transactions with the staged ones,
    /// recomputes the touched aggregates, records the load and its cursor — all in
    /// one database transaction. On rejection nothing changes.
    async fn commit(
        self: Box<Self>,
        record: LoadRecord,
        max_errors: usize,
    ) -> Result<LoadSummary, StoreError>;
}
