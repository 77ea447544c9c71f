//! The store's one implementation ([`SqlStore`]) and its per-tenant data
//! generations; tenants and API keys in the control database or schema.

use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::backend::Backend;
use crate::error::{Context, StoreError};
use crate::{ApiKey, NewTenant, Tenant};

/// The one [`crate::Store`] implementation: shared SQL over a [`Backend`].
pub(crate) struct SqlStore {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) generations: Arc<Generations>,
}

/// Per tenant, a number that changes whenever this process commits something that
/// changes what the tenant's reports say; readers cache against it.
#[derive(Default)]
pub(crate) struct Generations(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl Generations {
    pub(crate) fn bump(&self, tenant_id: &str) {
        let mut map = self.0.lock().expect("generations lock");
        *map.entry(tenant_id.to_string()).or_default() += 1;
    }

    pub(crate) fn get(&self, tenant_id: &str) -> u64 {
        self.0
            .lock()
            .expect("generations lock")
            .get(tenant_id)
            .copied()
            .unwrap_or(0)
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

    pub(crate) async fn insert_tenant(&self, new: NewTenant) -> Result<(Tenant, bool), StoreError> {
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
        let tenant = self
            .find_tenant(&id)
            .await?
            .expect("the tenant just inserted");
        Ok((tenant, true))
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

    pub(crate) async fn find_tenant(&self, id_or_slug: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 OR slug = $1"
        ))
        .bind(id_or_slug.trim())
        .fetch_optional(self.backend.control())
        .await
        .context("looking up a tenant")?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    pub(crate) async fn all_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at"
        ))
        .fetch_all(self.backend.control())
        .await
        .context("listing tenants")?;
        rows.iter().map(tenant_from_row).collect()
    }

    pub(crate) async fn prepare_all_tenants(&self) -> Result<usize, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants")
            .fetch_all(self.backend.control())
            .await
            .context("listing tenants")?;
        for id in &ids {
            self.backend.prepare_tenant(id).await?;
        }
        Ok(ids.len())
    }

    pub(crate) async fn insert_api_key(
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

    pub(crate) async fn api_key_by_hash(
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
