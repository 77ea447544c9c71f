//! Users, invitations, sessions, API key management and the audit trail, in the
//! control database or schema. Secrets (passwords, tokens) arrive already hashed.

use chrono::Utc;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::control::{now, SqlStore};
use crate::error::{Context, StoreError};
use crate::{ApiKey, AuditEntry, LoginCandidate, Tenant, User};

const USER_COLUMNS: &str = "id, tenant_id, email, role, status, created_at, accepted_at";

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: row.try_get("id").context("reading a user")?,
        tenant_id: row.try_get("tenant_id").context("reading a user")?,
        email: row.try_get("email").context("reading a user")?,
        role: row.try_get("role").context("reading a user")?,
        status: row.try_get("status").context("reading a user")?,
        created_at: row.try_get("created_at").context("reading a user")?,
        accepted_at: row.try_get("accepted_at").context("reading a user")?,
    })
}

fn is_past(rfc3339: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or(true, |t| t < Utc::now())
}

impl SqlStore {
    pub(crate) async fn invite(
        &self,
        tenant: &Tenant,
        email: &str,
        role: &str,
        token_hash: &str,
        expires_at: &str,
    ) -> Result<User, StoreError> {
        let email = email.trim().to_ascii_lowercase();
        let mut tx = self
            .backend
            .control()
            .begin()
            .await
            .context("beginning an invitation")?;
        let existing = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
        ))
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await
        .context("looking up a user")?;
        let user = match existing.as_ref().map(user_from_row).transpose()? {
            Some(user) if user.tenant_id != tenant.id || user.status == "active" => {
                return Err(StoreError::Conflict(format!(
                    "{email} already has an account"
                )));
            }
            // Inviting again replaces the earlier invitation.
            Some(user) => {
                sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
                    .bind(role)
                    .bind(&user.id)
                    .execute(&mut *tx)
                    .await
                    .context("updating an invitation")?;
                sqlx::query("DELETE FROM invitations WHERE user_id = $1")
                    .bind(&user.id)
                    .execute(&mut *tx)
                    .await
                    .context("replacing an invitation")?;
                User {
                    role: role.to_string(),
                    ..user
                }
            }
            None => {
                let taken: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE tenant_id = $1")
                        .bind(&tenant.id)
                        .fetch_one(&mut *tx)
                        .await
                        .context("counting seats")?;
                if taken >= tenant.seats {
                    return Err(StoreError::SeatLimit {
                        seats: tenant.seats,
                    });
                }
                let user = User {
                    id: uuid::Uuid::new_v4().to_string(),
                    tenant_id: tenant.id.clone(),
                    email: email.clone(),
                    role: role.to_string(),
                    status: "invited".into(),
                    created_at: now(),
                    accepted_at: None,
                };
                sqlx::query(
                    "INSERT INTO users (id, tenant_id, email, role, status, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&user.id)
                .bind(&user.tenant_id)
                .bind(&user.email)
                .bind(&user.role)
                .bind(&user.status)
                .bind(&user.created_at)
                .execute(&mut *tx)
                .await
                .context("creating a user")?;
                user
            }
        };
        sqlx::query(
            "INSERT INTO invitations (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(&user.id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .context("creating an invitation")?;
        tx.commit().await.context("committing an invitation")?;
        Ok(user)
    }

    pub(crate) async fn accept(
        &self,
        token_hash: &str,
        password_hash: &str,
    ) -> Result<(Tenant, User), StoreError> {
        let invalid = || StoreError::NotFound("this invitation is unknown, used or expired".into());
        let mut tx = self
            .backend
            .control()
            .begin()
            .await
            .context("beginning an acceptance")?;
        let row = sqlx::query(
            "SELECT user_id, expires_at, used_at FROM invitations WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await
        .context("looking up an invitation")?
        .ok_or_else(invalid)?;
        let user_id: String = row.try_get("user_id").context("reading an invitation")?;
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
        sqlx::query(
            "UPDATE users SET password_hash = $1, status = 'active', accepted_at = $2, failed_logins = 0 WHERE id = $3",
        )
        .bind(password_hash)
        .bind(&at)
        .bind(&user_id)
        .execute(&mut *tx)
        .await
        .context("activating a user")?;
        tx.commit().await.context("committing an acceptance")?;
        let user = self.user(&user_id).await?.ok_or_else(invalid)?;
        let tenant = self
            .find_tenant(&user.tenant_id)
            .await?
            .ok_or_else(invalid)?;
        Ok((tenant, user))
    }

    pub(crate) async fn user(&self, user_id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(user_id)
            .fetch_optional(self.backend.control())
            .await
            .context("looking up a user")?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub(crate) async fn tenant_users(&self, tenant: &Tenant) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY created_at, email"
        ))
        .bind(&tenant.id)
        .fetch_all(self.backend.control())
        .await
        .context("listing users")?;
        rows.iter().map(user_from_row).collect()
    }

    pub(crate) async fn candidate(
        &self,
        email: &str,
    ) -> Result<Option<LoginCandidate>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash, failed_logins, locked_until FROM users WHERE email = $1"
        ))
        .bind(email.trim().to_ascii_lowercase())
        .fetch_optional(self.backend.control())
        .await
        .context("looking up a login")?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(LoginCandidate {
            user: user_from_row(&row)?,
            password_hash: row.try_get("password_hash").context("reading a login")?,
            failed_logins: row.try_get("failed_logins").context("reading a login")?,
            locked_until: row.try_get("locked_until").context("reading a login")?,
        }))
    }

    pub(crate) async fn login_outcome(
        &self,
        user_id: &str,
        success: bool,
        locked_until: Option<&str>,
    ) -> Result<(), StoreError> {
        let query = if success {
            sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1")
                .bind(user_id)
        } else {
            sqlx::query("UPDATE users SET failed_logins = failed_logins + 1, locked_until = $2 WHERE id = $1")
                .bind(user_id)
                .bind(locked_until)
        };
        query
            .execute(self.backend.control())
            .await
            .context("recording a login")?;
        Ok(())
    }

    pub(crate) async fn open_session(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(user_id)
            .bind(now())
            .bind(expires_at)
            .execute(self.backend.control())
            .await
            .context("opening a session")?;
        Ok(())
    }

    pub(crate) async fn session_user(
        &self,
        token_hash: &str,
    ) -> Result<Option<(Tenant, User)>, StoreError> {
        let row = sqlx::query("SELECT user_id, expires_at FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(self.backend.control())
            .await
            .context("checking a session")?;
        let Some(row) = row else { return Ok(None) };
        let expires_at: String = row.try_get("expires_at").context("reading a session")?;
        if is_past(&expires_at) {
            return Ok(None);
        }
        let user_id: String = row.try_get("user_id").context("reading a session")?;
        let Some(user) = self.user(&user_id).await? else {
            return Ok(None);
        };
        if user.status != "active" {
            return Ok(None);
        }
        Ok(self
            .find_tenant(&user.tenant_id)
            .await?
            .map(|tenant| (tenant, user)))
    }

    pub(crate) async fn close_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.backend.control())
            .await
            .context("closing a session")?;
        Ok(())
    }

    pub(crate) async fn change_role(
        &self,
        tenant: &Tenant,
        user_id: &str,
        role: &str,
    ) -> Result<User, StoreError> {
        let changed = sqlx::query("UPDATE users SET role = $1 WHERE id = $2 AND tenant_id = $3")
            .bind(role)
            .bind(user_id)
            .bind(&tenant.id)
            .execute(self.backend.control())
            .await
            .context("changing a role")?;
        if changed.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "no user {user_id} in this tenant"
            )));
        }
        Ok(self.user(user_id).await?.expect("the user just updated"))
    }

    pub(crate) async fn delete_user(
        &self,
        tenant: &Tenant,
        user_id: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .backend
            .control()
            .begin()
            .await
            .context("beginning a removal")?;
        let found: Option<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND tenant_id = $2")
                .bind(user_id)
                .bind(&tenant.id)
                .fetch_optional(&mut *tx)
                .await
                .context("looking up a user")?;
        if found.is_none() {
            return Err(StoreError::NotFound(format!(
                "no user {user_id} in this tenant"
            )));
        }
        for statement in [
            "DELETE FROM sessions WHERE user_id = $1",
            "DELETE FROM invitations WHERE user_id = $1",
            "DELETE FROM users WHERE id = $1",
        ] {
            sqlx::query(statement)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .context("removing a user")?;
        }
        tx.commit().await.context("committing a removal")
    }

    pub(crate) async fn tenant_api_keys(&self, tenant: &Tenant) -> Result<Vec<ApiKey>, StoreError> {
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

    pub(crate) async fn revoke_key(&self, tenant: &Tenant, key_id: &str) -> Result<(), StoreError> {
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

    pub(crate) async fn change_plan(
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
        self.find_tenant(&tenant.id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {} vanished", tenant.id)))
    }

    pub(crate) async fn append_audit(
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

    pub(crate) async fn read_audit(
        &self,
        tenant: &Tenant,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
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
