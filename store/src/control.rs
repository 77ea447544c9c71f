//! The control plane: tenants, API keys, people and their memberships of tenants,
//! invitations, sessions, login throttling and the audit trail, in the control
//! database or schema ([`ControlStore`] on [`SqlStore`], the store's one
//! implementation). A person (an email, one password) may belong to several tenants
//! with a role in each; a session acts in one of them at a time. Secrets arrive
//! already hashed.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::backend::Backend;
use crate::error::{Context, StoreError};
use crate::{
    ApiKey, AuditEntry, ControlStore, Invited, LoginThrottle, Membership, NewTenant,
    PendingInvitation, Person, Tenant, User,
};

/// The one implementation of [`ControlStore`] and [`crate::LedgerStore`]: shared SQL over a [`Backend`].
pub(crate) struct SqlStore {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) generations: Arc<Generations>,
}

/// Per tenant, a number that changes whenever something changes what the tenant's
/// reports say: at once for this process's own commits, and within a
/// [`ControlStore::sync_generations`] for other processes' (through the tenants'
/// `data_version`); readers cache against it.
#[derive(Default)]
pub(crate) struct Generations(std::sync::Mutex<GenerationState>);

#[derive(Default)]
pub(crate) struct GenerationState {
    current: std::collections::HashMap<String, u64>,
    /// Tenants changed here since their `data_version` was last raised.
    unshared: std::collections::HashSet<String>,
    /// The `data_version` of each tenant as last read (and raised by this process).
    seen: std::collections::HashMap<String, i64>,
}

impl Generations {
    pub(crate) fn bump(&self, tenant_id: &str) {
        let mut state = self.0.lock().expect("generations lock");
        *state.current.entry(tenant_id.to_string()).or_default() += 1;
        state.unshared.insert(tenant_id.to_string());
    }

    pub(crate) fn get(&self, tenant_id: &str) -> u64 {
        self.0
            .lock()
            .expect("generations lock")
            .current
            .get(tenant_id)
            .copied()
            .unwrap_or(0)
    }

    fn take_unshared(&self) -> Vec<String> {
        let mut state = self.0.lock().expect("generations lock");
        state.unshared.drain().collect()
    }

    /// This process raised `tenant_id`'s `data_version` by one.
    fn shared(&self, tenant_id: &str) {
        let mut state = self.0.lock().expect("generations lock");
        if let Some(seen) = state.seen.get_mut(tenant_id) {
            *seen += 1;
        }
    }

    /// The `data_version`s read from the store: a tenant whose version moved
    /// otherwise than by this process changed elsewhere.
    fn observe(&self, versions: Vec<(String, i64)>) {
        let mut state = self.0.lock().expect("generations lock");
        for (tenant, version) in versions {
            let moved = state
                .seen
                .insert(tenant.clone(), version)
                .is_some_and(|seen| seen != version);
            if moved {
                *state.current.entry(tenant).or_default() += 1;
            }
        }
    }
}

pub(crate) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

const TENANT_COLUMNS: &str = "id, slug, name, admin_email, plan, seats, settings, created_at";

fn tenant_from_row(row: &AnyRow) -> Result<Tenant, StoreError> {
    let settings: String = row.try_get("settings").context("reading a tenant")?;
    Ok(Tenant {
        id: row.try_get("id").context("reading a tenant")?,
        slug: row.try_get("slug").context("reading a tenant")?,
        name: row.try_get("name").context("reading a tenant")?,
        admin_email: row.try_get("admin_email").context("reading a tenant")?,
        plan: row.try_get("plan").context("reading a tenant")?,
        seats: row.try_get("seats").context("reading a tenant")?,
        settings: serde_json::from_str(&settings).map_err(|e| {
            StoreError::Invalid(format!("stored tenant settings are unreadable: {e}"))
        })?,
        created_at: row.try_get("created_at").context("reading a tenant")?,
    })
}

/// `Kopi Kenangan!` → `kopi-kenangan`.
fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-').to_string();
    if slug.is_empty() {
        "tenant".into()
    } else {
        slug
    }
}

/// A membership with its person's email, from `memberships m JOIN people p`.
const MEMBER_COLUMNS: &str =
    "m.id, m.person_id, m.tenant_id, p.email, m.role, m.status, m.created_at, m.accepted_at";
const MEMBERS: &str = "memberships m JOIN people p ON p.id = m.person_id";

/// The client key of an address's failures over every client.
const ALL_CLIENTS: &str = "*";

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    const READING: &str = "reading a membership";
    Ok(User {
        id: row.try_get("id").context(READING)?,
        person_id: row.try_get("person_id").context(READING)?,
        tenant_id: row.try_get("tenant_id").context(READING)?,
        email: row.try_get("email").context(READING)?,
        role: row.try_get("role").context(READING)?,
        status: row.try_get("status").context(READING)?,
        created_at: row.try_get("created_at").context(READING)?,
        accepted_at: row.try_get("accepted_at").context(READING)?,
    })
}

fn is_past(rfc3339: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or(true, |t| t < Utc::now())
}

fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// `CASE <failures> WHEN 1 THEN blocked_until … ELSE $3 + max END`: when the attempt
/// that brings the failures of a key to `failures` (an expression), made at `$3`,
/// blocks the key until. Free attempts leave the key as it is: a later bound would
/// block a concurrent attempt that read the clock a moment earlier.
fn blocked_until_after(failures: &str, throttle: &LoginThrottle) -> String {
    let mut sql = format!("CASE {failures}");
    let mut wait = throttle.first_wait_ms.max(1);
    for n in 1.. {
        if n <= throttle.free_failures {
            sql.push_str(&format!(" WHEN {n} THEN blocked_until"));
        } else if wait < throttle.max_wait_ms {
            sql.push_str(&format!(" WHEN {n} THEN $3 + {wait}"));
            wait = wait.saturating_mul(2);
        } else {
            break;
        }
    }
    sql.push_str(&format!(" ELSE $3 + {} END", throttle.max_wait_ms));
    sql
}

impl SqlStore {
    pub(crate) async fn tenant_by_email(&self, email: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE admin_email = $1"
        ))
        .bind(email)
        .fetch_optional(self.backend.control())
        .await
        .context("looking up a tenant")?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    pub(crate) async fn write_settings(
        &self,
        tenant_id: &str,
        settings: &ledgersync_config::TenantSettings,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE tenants SET settings = $1 WHERE id = $2")
            .bind(serde_json::to_string(settings).expect("settings serialize"))
            .bind(tenant_id)
            .execute(self.backend.control())
            .await
            .context("saving tenant settings")?;
        Ok(())
    }

    /// The tenant's membership `user_id`, read inside `tx`.
    async fn member_in(
        tx: &mut Transaction<'static, Any>,
        tenant: &Tenant,
        user_id: &str,
    ) -> Result<User, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {MEMBER_COLUMNS} FROM {MEMBERS} WHERE m.id = $1 AND m.tenant_id = $2"
        ))
        .bind(user_id)
        .bind(&tenant.id)
        .fetch_optional(&mut **tx)
        .await
        .context("looking up a member")?;
        row.as_ref()
            .map(user_from_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("no user {user_id} in this tenant")))
    }

    /// Refuses to take `member` away from the tenant's admins when no other active
    /// admin is left; run inside a transaction that holds the tenant's lock.
    async fn keep_an_admin(
        tx: &mut Transaction<'static, Any>,
        tenant: &Tenant,
        member: &User,
        what: &str,
    ) -> Result<(), StoreError> {
        if member.role != "admin" || member.status != "active" {
            return Ok(());
        }
        let other_admins: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM memberships WHERE tenant_id = $1 AND role = 'admin' \
             AND status = 'active' AND id <> $2",
        )
        .bind(&tenant.id)
        .bind(&member.id)
        .fetch_one(&mut **tx)
        .await
        .context("counting admins")?;
        if other_admins == 0 {
            return Err(StoreError::Conflict(format!(
                "{} is the tenant's only active admin and cannot be {what}; make another member admin first",
                member.email
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl ControlStore for SqlStore {
    async fn sync_generations(&self) -> Result<(), StoreError> {
        let unshared = self.generations.take_unshared();
        for tenant_id in &unshared {
            let raised =
                sqlx::query("UPDATE tenants SET data_version = data_version + 1 WHERE id = $1")
                    .bind(tenant_id)
                    .execute(self.backend.control())
                    .await;
            match raised {
                Ok(_) => self.generations.shared(tenant_id),
                Err(error) => {
                    // Told next time instead; the change is not lost to others.
                    self.generations.bump(tenant_id);
                    return Err(StoreError::Database {
                        context: "sharing a tenant's data version",
                        source: error,
                    });
                }
            }
        }
        let versions: Vec<(String, i64)> = sqlx::query_as("SELECT id, data_version FROM tenants")
            .fetch_all(self.backend.control())
            .await
            .context("reading the tenants' data versions")?;
        self.generations.observe(versions);
        Ok(())
    }

    async fn create_tenant(&self, new: NewTenant) -> Result<(Tenant, bool), StoreError> {
        let email = new.admin_email.trim().to_ascii_lowercase();
        if let Some(existing) = self.tenant_by_email(&email).await? {
            return Ok((existing, false));
        }
        let id = uuid::Uuid::new_v4().to_string();
        // Storage first: a crash after it leaves an unused, empty tenant database,
        // never a tenant row without storage.
        self.backend.prepare_tenant(&id).await?;
        let base = slugify(&new.name);
        let taken: Vec<String> =
            sqlx::query_scalar("SELECT slug FROM tenants WHERE slug = $1 OR slug LIKE $2")
                .bind(&base)
                .bind(format!("{base}-%"))
                .fetch_all(self.backend.control())
                .await
                .context("choosing a slug")?;
        let slug = std::iter::once(base.clone())
            .chain((2..).map(|n| format!("{base}-{n}")))
            .find(|candidate| !taken.contains(candidate))
            .expect("an unused slug exists");
        let settings = serde_json::to_string(&new.settings).expect("settings serialize");
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, slug, name, admin_email, plan, seats, settings, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(&slug)
        .bind(&new.name)
        .bind(&email)
        .bind(&new.plan)
        .bind(new.seats)
        .bind(settings)
        .bind(now())
        .execute(self.backend.control())
        .await;
        match inserted {
            Ok(_) => {}
            // Two provisioners raced on the same email: the other one won.
            Err(e) if is_unique_violation(&e) => {
                if let Some(existing) = self.tenant_by_email(&email).await? {
                    return Ok((existing, false));
                }
                return Err(StoreError::Database {
                    context: "creating a tenant",
                    source: e,
                });
            }
            Err(e) => {
                return Err(StoreError::Database {
                    context: "creating a tenant",
                    source: e,
                })
            }
        }
        let tenant = self.tenant(&id).await?.expect("the tenant just inserted");
        Ok((tenant, true))
    }

    async fn tenant(&self, id_or_slug: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 OR slug = $1"
        ))
        .bind(id_or_slug.trim())
        .fetch_optional(self.backend.control())
        .await
        .context("looking up a tenant")?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at"
        ))
        .fetch_all(self.backend.control())
        .await
        .context("listing tenants")?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn prepare_tenants(&self) -> Result<usize, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants")
            .fetch_all(self.backend.control())
            .await
            .context("listing tenants")?;
        for id in &ids {
            self.backend.prepare_tenant(id).await?;
        }
        Ok(ids.len())
    }

    async fn create_api_key(
        &self,
        tenant_id: &str,
        name: &str,
        scope: &str,
        secret_hash: &str,
    ) -> Result<ApiKey, StoreError> {
        let key = ApiKey {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant_id.to_string(),
            name: name.to_string(),
            scope: scope.to_string(),
            created_at: now(),
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, scope, secret_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(&key.name)
        .bind(&key.scope)
        .bind(secret_hash)
        .bind(&key.created_at)
        .execute(self.backend.control())
        .await
        .context("creating an API key")?;
        Ok(key)
    }

    async fn authenticate_api_key(
        &self,
        secret_hash: &str,
    ) -> Result<Option<(Tenant, ApiKey)>, StoreError> {
        let row = sqlx::query(
            "SELECT k.id AS key_id, k.name AS key_name, k.scope, k.created_at AS key_created_at, \
             k.last_used_at, t.id, t.slug, t.name, t.admin_email, t.plan, t.seats, t.settings, t.created_at \
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.secret_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(secret_hash)
        .fetch_optional(self.backend.control())
        .await
        .context("checking an API key")?;
        let Some(row) = row else { return Ok(None) };
        let tenant = tenant_from_row(&row)?;
        let mut key = ApiKey {
            id: row.try_get("key_id").context("reading an API key")?,
            tenant_id: tenant.id.clone(),
            name: row.try_get("key_name").context("reading an API key")?,
            scope: row.try_get("scope").context("reading an API key")?,
            created_at: row
                .try_get("key_created_at")
                .context("reading an API key")?,
            last_used_at: row.try_get("last_used_at").context("reading an API key")?,
        };
        // Record use at most once a minute per key: a write on every dashboard request
        // would serialise reads behind the writer.
        let now = now();
        let stale = key.last_used_at.as_deref().is_none_or(|last| {
            chrono::DateTime::parse_from_rfc3339(last)
                .map(|t| Utc::now().signed_duration_since(t) > chrono::Duration::minutes(1))
                .unwrap_or(true)
        });
        if stale {
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(&now)
                .bind(&key.id)
                .execute(self.backend.control())
                .await
                .context("recording API key use")?;
            key.last_used_at = Some(now);
        }
        Ok(Some((tenant, key)))
    }

    async fn invite_user(
        &self,
        tenant: &Tenant,
        email: &str,
        role: &str,
        token_hash: &str,
        expires_at: &str,
    ) -> Result<Invited, StoreError> {
        let email = normalize_email(email);
        // The tenant's lock makes the seat count and the insert one step.
        let mut tx = self.backend.begin_control_write(Some(&tenant.id)).await?;
        // A person another tenant is creating at the same moment is waited for,
        // then found.
        sqlx::query(
            "INSERT INTO people (id, email, password_hash, created_at) VALUES ($1, $2, NULL, $3) \
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(&email)
        .bind(now())
        .execute(&mut *tx)
        .await
        .context("creating a person")?;
        let person = sqlx::query("SELECT id, password_hash FROM people WHERE email = $1")
            .bind(&email)
            .fetch_one(&mut *tx)
            .await
            .context("looking up a person")?;
        let person_id: String = person.try_get("id").context("reading a person")?;
        let password_hash: Option<String> = person
            .try_get("password_hash")
            .context("reading a person")?;
        let existing = sqlx::query(&format!(
            "SELECT {MEMBER_COLUMNS} FROM {MEMBERS} WHERE m.person_id = $1 AND m.tenant_id = $2"
        ))
        .bind(&person_id)
        .bind(&tenant.id)
        .fetch_optional(&mut *tx)
        .await
        .context("looking up a membership")?;
        let user = match existing.as_ref().map(user_from_row).transpose()? {
            Some(member) if member.status == "active" => {
                return Err(StoreError::Conflict(format!(
                    "{email} is already a member of this tenant"
                )));
            }
            // Inviting again replaces the earlier invitation.
            Some(member) => {
                sqlx::query("UPDATE memberships SET role = $1 WHERE id = $2")
                    .bind(role)
                    .bind(&member.id)
                    .execute(&mut *tx)
                    .await
                    .context("updating an invitation")?;
                sqlx::query("DELETE FROM invitations WHERE membership_id = $1")
                    .bind(&member.id)
                    .execute(&mut *tx)
                    .await
                    .context("replacing an invitation")?;
                User {
                    role: role.to_string(),
                    ..member
                }
            }
            None => {
                let seats: i64 = sqlx::query_scalar("SELECT seats FROM tenants WHERE id = $1")
                    .bind(&tenant.id)
                    .fetch_one(&mut *tx)
                    .await
                    .context("reading the seats")?;
                let taken: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE tenant_id = $1")
                        .bind(&tenant.id)
                        .fetch_one(&mut *tx)
                        .await
                        .context("counting seats")?;
                if taken >= seats {
                    return Err(StoreError::SeatLimit { seats });
                }
                let user = User {
                    id: uuid::Uuid::new_v4().to_string(),
                    person_id: person_id.clone(),
                    tenant_id: tenant.id.clone(),
                    email: email.clone(),
                    role: role.to_string(),
                    status: "invited".into(),
                    created_at: now(),
                    accepted_at: None,
                };
                sqlx::query(
                    "INSERT INTO memberships (id, person_id, tenant_id, role, status, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&user.id)
                .bind(&user.person_id)
                .bind(&user.tenant_id)
                .bind(&user.role)
                .bind(&user.status)
                .bind(&user.created_at)
                .execute(&mut *tx)
                .await
                .context("creating a membership")?;
                user
            }
        };
        sqlx::query(
            "INSERT INTO invitations (token_hash, membership_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(&user.id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .context("creating an invitation")?;
        tx.commit().await.context("committing an invitation")?;
        Ok(Invited {
            user,
            has_password: password_hash.is_some(),
        })
    }

    async fn pending_invitation(
        &self,
        token_hash: &str,
    ) -> Result<Option<PendingInvitation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {MEMBER_COLUMNS}, p.password_hash, i.expires_at, i.used_at \
             FROM invitations i JOIN memberships m ON m.id = i.membership_id \
             JOIN people p ON p.id = m.person_id WHERE i.token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(self.backend.control())
        .await
        .context("looking up an invitation")?;
        let Some(row) = row else { return Ok(None) };
        let expires_at: String = row.try_get("expires_at").context("reading an invitation")?;
        let used_at: Option<String> = row.try_get("used_at").context("reading an invitation")?;
        if used_at.is_some() || is_past(&expires_at) {
            return Ok(None);
        }
        Ok(Some(PendingInvitation {
            user: user_from_row(&row)?,
            password_hash: row.try_get("password_hash").context("reading a person")?,
        }))
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        password_hash: Option<&str>,
    ) -> Result<(Tenant, User), StoreError> {
        let invalid = || StoreError::NotFound("this invitation is unknown, used or expired".into());
        let mut tx = self.backend.begin_control_write(None).await?;
        let row = sqlx::query(
            "SELECT i.membership_id, i.expires_at, i.used_at, m.person_id \
             FROM invitations i JOIN memberships m ON m.id = i.membership_id WHERE i.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await
        .context("looking up an invitation")?
        .ok_or_else(invalid)?;
        let membership_id: String = row
            .try_get("membership_id")
            .context("reading an invitation")?;
        let person_id: String = row.try_get("person_id").context("reading an invitation")?;
        let expires_at: String = row.try_get("expires_at").context("reading an invitation")?;
        let used_at: Option<String> = row.try_get("used_at").context("reading an invitation")?;
        if used_at.is_some() || is_past(&expires_at) {
            return Err(invalid());
        }
        let at = now();
        // The guard on used_at makes a concurrent second use affect no row.
        let used = sqlx::query(
            "UPDATE invitations SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(&at)
        .bind(token_hash)
        .execute(&mut *tx)
        .await
        .context("using an invitation")?;
        if used.rows_affected() != 1 {
            return Err(invalid());
        }
        if let Some(password_hash) = password_hash {
            // Only a person without a password gets one: another invitation of theirs
            // accepted meanwhile already set it.
            let set = sqlx::query(
                "UPDATE people SET password_hash = $1 WHERE id = $2 AND password_hash IS NULL",
            )
            .bind(password_hash)
            .bind(&person_id)
            .execute(&mut *tx)
            .await
            .context("setting a password")?;
            if set.rows_affected() != 1 {
                return Err(StoreError::Conflict(
                    "this address already has a password: accept the invitation with it".into(),
                ));
            }
        }
        sqlx::query("UPDATE memberships SET status = 'active', accepted_at = $1 WHERE id = $2")
            .bind(&at)
            .bind(&membership_id)
            .execute(&mut *tx)
            .await
            .context("activating a membership")?;
        let user = sqlx::query(&format!(
            "SELECT {MEMBER_COLUMNS} FROM {MEMBERS} WHERE m.id = $1"
        ))
        .bind(&membership_id)
        .fetch_one(&mut *tx)
        .await
        .context("reading a membership")?;
        let user = user_from_row(&user)?;
        tx.commit().await.context("committing an acceptance")?;
        let tenant = self.tenant(&user.tenant_id).await?.ok_or_else(invalid)?;
        Ok((tenant, user))
    }

    async fn users(&self, tenant: &Tenant) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {MEMBER_COLUMNS} FROM {MEMBERS} WHERE m.tenant_id = $1 ORDER BY m.created_at, p.email"
        ))
        .bind(&tenant.id)
        .fetch_all(self.backend.control())
        .await
        .context("listing users")?;
        rows.iter().map(user_from_row).collect()
    }

    async fn person(&self, email: &str) -> Result<Option<Person>, StoreError> {
        let row = sqlx::query("SELECT id, email, password_hash FROM people WHERE email = $1")
            .bind(normalize_email(email))
            .fetch_optional(self.backend.control())
            .await
            .context("looking up a person")?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Person {
            id: row.try_get("id").context("reading a person")?,
            email: row.try_get("email").context("reading a person")?,
            password_hash: row.try_get("password_hash").context("reading a person")?,
        }))
    }

    async fn person_tenants(&self, person_id: &str) -> Result<Vec<Membership>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.id, t.slug, t.name, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id \
             WHERE m.person_id = $1 AND m.status = 'active' ORDER BY m.created_at, t.slug",
        )
        .bind(person_id)
        .fetch_all(self.backend.control())
        .await
        .context("listing a person's tenants")?;
        rows.iter()
            .map(|row| {
                Ok(Membership {
                    tenant_id: row.try_get("id").context("reading a membership")?,
                    tenant_slug: row.try_get("slug").context("reading a membership")?,
                    tenant_name: row.try_get("name").context("reading a membership")?,
                    role: row.try_get("role").context("reading a membership")?,
                })
            })
            .collect()
    }

    async fn count_login_attempt(
        &self,
        email: &str,
        client: Option<&str>,
        throttle: &LoginThrottle,
    ) -> Result<Option<i64>, StoreError> {
        let email = normalize_email(email);
        let client = client.unwrap_or(ALL_CLIENTS);
        let now_ms = Utc::now().timestamp_millis();
        let control = self.backend.control();
        // Now and then, forget keys quiet for a day: unknown addresses leave rows too.
        if now_ms % 64 == 0 {
            sqlx::query(
                "DELETE FROM login_throttle WHERE last_attempt_at < $1 AND blocked_until < $1",
            )
            .bind(now_ms - 86_400_000)
            .execute(control)
            .await
            .context("forgetting old failed logins")?;
        }
        sqlx::query(
            "INSERT INTO login_throttle (email, client, failures, blocked_until, last_attempt_at) \
             VALUES ($1, $2, 0, 0, $3) ON CONFLICT (email, client) DO NOTHING",
        )
        .bind(&email)
        .bind(client)
        .bind(now_ms)
        .execute(control)
        .await
        .context("counting a login")?;
        // Counted as a failure before the password is checked, in the statement that
        // checks the wait: of parallel attempts, only those within the allowance pass
        // (PostgreSQL re-checks the condition on the row a concurrent update left;
        // SQLite runs one writer at a time). A right password forgets it afterwards.
        let failures = "(CASE WHEN last_attempt_at < $4 THEN 1 ELSE failures + 1 END)";
        let admitted = sqlx::query(&format!(
            "UPDATE login_throttle SET failures = {failures}, \
             blocked_until = {blocked_until}, last_attempt_at = $3 \
             WHERE email = $1 AND client = $2 AND blocked_until <= $3 RETURNING failures",
            blocked_until = blocked_until_after(failures, throttle)
        ))
        .bind(&email)
        .bind(client)
        .bind(now_ms)
        .bind(now_ms - throttle.forget_after_ms)
        .fetch_optional(control)
        .await
        .context("counting a login")?;
        if admitted.is_some() {
            return Ok(None);
        }
        let blocked_until: i64 = sqlx::query_scalar(
            "SELECT blocked_until FROM login_throttle WHERE email = $1 AND client = $2",
        )
        .bind(&email)
        .bind(client)
        .fetch_one(control)
        .await
        .context("reading a login wait")?;
        // From the clock now: under load the statement may run well after `now_ms`.
        Ok(Some(
            (blocked_until - Utc::now().timestamp_millis()).clamp(1, throttle.max_wait_ms),
        ))
    }

    async fn forget_login_failures(&self, email: &str, client: &str) -> Result<(), StoreError> {
        let email = normalize_email(email);
        sqlx::query(
            "UPDATE login_throttle SET failures = 0, blocked_until = 0 WHERE email = $1 AND client = $2",
        )
        .bind(&email)
        .bind(client)
        .execute(self.backend.control())
        .await
        .context("recording a login")?;
        // Over all clients, only this attempt is taken back: failures from elsewhere
        // still count against the address.
        sqlx::query(
            "UPDATE login_throttle SET failures = failures - 1 \
             WHERE email = $1 AND client = $2 AND failures > 0",
        )
        .bind(&email)
        .bind(ALL_CLIENTS)
        .execute(self.backend.control())
        .await
        .context("recording a login")?;
        Ok(())
    }

    async fn create_session(
        &self,
        person_id: &str,
        tenant_id: &str,
        token_hash: &str,
        expires_at: &str,
    ) -> Result<Option<(Tenant, User)>, StoreError> {
        let opened = sqlx::query(
            "INSERT INTO sessions (token_hash, person_id, membership_id, created_at, expires_at) \
             SELECT $1, person_id, id, $2, $3 FROM memberships \
             WHERE person_id = $4 AND tenant_id = $5 AND status = 'active'",
        )
        .bind(token_hash)
        .bind(now())
        .bind(expires_at)
        .bind(person_id)
        .bind(tenant_id)
        .execute(self.backend.control())
        .await
        .context("opening a session")?;
        if opened.rows_affected() == 0 {
            return Ok(None);
        }
        self.session(token_hash).await
    }

    async fn session(&self, token_hash: &str) -> Result<Option<(Tenant, User)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {MEMBER_COLUMNS}, s.expires_at AS session_expires_at \
             FROM sessions s JOIN memberships m ON m.id = s.membership_id \
             JOIN people p ON p.id = m.person_id \
             WHERE s.token_hash = $1 AND m.status = 'active'"
        ))
        .bind(token_hash)
        .fetch_optional(self.backend.control())
        .await
        .context("checking a session")?;
        let Some(row) = row else { return Ok(None) };
        let expires_at: String = row
            .try_get("session_expires_at")
            .context("reading a session")?;
        if is_past(&expires_at) {
            return Ok(None);
        }
        let user = user_from_row(&row)?;
        Ok(self
            .tenant(&user.tenant_id)
            .await?
            .map(|tenant| (tenant, user)))
    }

    async fn switch_session_tenant(
        &self,
        token_hash: &str,
        tenant: &str,
    ) -> Result<Option<(Tenant, User)>, StoreError> {
        let membership: Option<String> = sqlx::query_scalar(
            "SELECT m.id FROM sessions s JOIN memberships m ON m.person_id = s.person_id \
             JOIN tenants t ON t.id = m.tenant_id \
             WHERE s.token_hash = $1 AND m.status = 'active' AND (t.id = $2 OR t.slug = $2)",
        )
        .bind(token_hash)
        .bind(tenant.trim())
        .fetch_optional(self.backend.control())
        .await
        .context("looking up a membership")?;
        let Some(membership) = membership else {
            return Ok(None);
        };
        sqlx::query("UPDATE sessions SET membership_id = $1 WHERE token_hash = $2")
            .bind(&membership)
            .bind(token_hash)
            .execute(self.backend.control())
            .await
            .context("switching a session's tenant")?;
        self.session(token_hash).await
    }

    async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.backend.control())
            .await
            .context("closing a session")?;
        Ok(())
    }

    async fn set_user_role(
        &self,
        tenant: &Tenant,
        user_id: &str,
        role: &str,
    ) -> Result<User, StoreError> {
        let mut tx = self.backend.begin_control_write(Some(&tenant.id)).await?;
        let member = Self::member_in(&mut tx, tenant, user_id).await?;
        if role != "admin" {
            Self::keep_an_admin(&mut tx, tenant, &member, "demoted").await?;
        }
        sqlx::query("UPDATE memberships SET role = $1 WHERE id = $2")
            .bind(role)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .context("changing a role")?;
        tx.commit().await.context("committing a role change")?;
        Ok(User {
            role: role.to_string(),
            ..member
        })
    }

    async fn remove_user(&self, tenant: &Tenant, user_id: &str) -> Result<(), StoreError> {
        let mut tx = self.backend.begin_control_write(Some(&tenant.id)).await?;
        let member = Self::member_in(&mut tx, tenant, user_id).await?;
        Self::keep_an_admin(&mut tx, tenant, &member, "removed").await?;
        for statement in [
            "DELETE FROM sessions WHERE membership_id = $1",
            "DELETE FROM invitations WHERE membership_id = $1",
            "DELETE FROM memberships WHERE id = $1",
        ] {
            sqlx::query(statement)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .context("removing a member")?;
        }
        tx.commit().await.context("committing a removal")
    }

    async fn api_keys(&self, tenant: &Tenant) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, scope, created_at, last_used_at FROM api_keys \
             WHERE tenant_id = $1 AND revoked_at IS NULL ORDER BY created_at",
        )
        .bind(&tenant.id)
        .fetch_all(self.backend.control())
        .await
        .context("listing API keys")?;
        rows.iter()
            .map(|row| {
                Ok(ApiKey {
                    id: row.try_get("id").context("reading an API key")?,
                    tenant_id: row.try_get("tenant_id").context("reading an API key")?,
                    name: row.try_get("name").context("reading an API key")?,
                    scope: row.try_get("scope").context("reading an API key")?,
                    created_at: row.try_get("created_at").context("reading an API key")?,
                    last_used_at: row.try_get("last_used_at").context("reading an API key")?,
                })
            })
            .collect()
    }

    async fn revoke_api_key(&self, tenant: &Tenant, key_id: &str) -> Result<(), StoreError> {
        let revoked = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(key_id)
        .bind(&tenant.id)
        .execute(self.backend.control())
        .await
        .context("revoking an API key")?;
        if revoked.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "no live API key {key_id} in this tenant"
            )));
        }
        Ok(())
    }

    async fn set_plan(
        &self,
        tenant: &Tenant,
        plan: &str,
        seats: i64,
    ) -> Result<Tenant, StoreError> {
        sqlx::query("UPDATE tenants SET plan = $1, seats = $2 WHERE id = $3")
            .bind(plan)
            .bind(seats)
            .bind(&tenant.id)
            .execute(self.backend.control())
            .await
            .context("changing a plan")?;
        self.generations.bump(&tenant.id);
        self.tenant(&tenant.id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {} vanished", tenant.id)))
    }

    async fn audit(
        &self,
        tenant_id: &str,
        actor: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_log (tenant_id, at, actor, action, detail) VALUES ($1, $2, $3, $4, $5)")
            .bind(tenant_id)
            .bind(now())
            .bind(actor)
            .bind(action)
            .bind(detail)
            .execute(self.backend.control())
            .await
            .context("writing the audit trail")?;
        Ok(())
    }

    async fn audit_log(&self, tenant: &Tenant, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, detail FROM audit_log WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(&tenant.id)
        .bind(limit)
        .fetch_all(self.backend.control())
        .await
        .context("reading the audit trail")?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get("id").context("reading the audit trail")?,
                    at: row.try_get("at").context("reading the audit trail")?,
                    actor: row.try_get("actor").context("reading the audit trail")?,
                    action: row.try_get("action").context("reading the audit trail")?,
                    detail: row.try_get("detail").context("reading the audit trail")?,
                })
            })
            .collect()
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_are_url_safe() {
        assert_eq!(super::slugify("Kopi Kenangan"), "kopi-kenangan");
        assert_eq!(super::slugify("  Café & Co. "), "caf-co");
        assert_eq!(super::slugify("!!!"), "tenant");
    }
}
