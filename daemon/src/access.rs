//! Who is asking and what they may do: roles, passwords (argon2id), invitations,
//! logins with throttling, and sessions. Tokens are random and stored hashed.

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use chrono::{Duration, SecondsFormat, Utc};
use ledgersync_store::{Store, StoreError, Tenant, User};
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::mail::{Delivery, Mailer};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Manager,
    Admin,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "manager" => Ok(Role::Manager),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "'{other}' is not a role: use viewer, manager or admin"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Manager => "manager",
            Role::Admin => "admin",
        })
    }
}

pub const INVITATION_DAYS: i64 = 7;
pub const SESSION_HOURS: i64 = 12;
/// Failed logins allowed before each further attempt must wait.
const FREE_FAILURES: i64 = 3;

fn at(offset: Duration) -> String {
    (Utc::now() + offset).to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password failed: {e}"))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// At least 12 characters with a letter and a digit, not the email itself.
pub fn check_password_policy(password: &str, email: &str) -> Result<(), String> {
    if password.chars().count() < 12 {
        return Err("the password must have at least 12 characters".into());
    }
    if password.len() > 1024 {
        return Err("the password must have at most 1024 bytes".into());
    }
    if !password.chars().any(char::is_alphabetic) || !password.chars().any(|c| c.is_ascii_digit()) {
        return Err("the password must contain a letter and a digit".into());
    }
    if password.eq_ignore_ascii_case(email) {
        return Err("the password must not be the email address".into());
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct Invitation {
    pub user: User,
    pub link: String,
    pub expires_at: String,
    pub mail: Delivery,
}

/// An invitation's address that cannot be one: the caller's to fix.
#[derive(Debug, thiserror::Error)]
#[error("'{}' is not an email address", ledgersync_schemas::excerpt(.0))]
pub struct NotAnEmail(pub String);

/// Invites `email` into `tenant` and mails the single-use link.
pub async fn invite(
    store: &dyn Store,
    mailer: &Mailer,
    public_url: &str,
    tenant: &Tenant,
    email: &str,
    role: Role,
    actor: &str,
) -> anyhow::Result<Invitation> {
    let email = email.trim().to_ascii_lowercase();
    if !(email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(a, d)| !a.is_empty() && d.contains('.')))
    {
        return Err(NotAnEmail(email).into());
    }
    let token = keys::generate_with_prefix("inv_");
    let expires_at = at(Duration::days(INVITATION_DAYS));
    let user = store
        .invite_user(
            tenant,
            &email,
            &role.to_string(),
            &keys::hash(&token),
            &expires_at,
        )
        .await?;
    let link = format!("{}/invitations/{token}", public_url.trim_end_matches('/'));
    let body = format!(
        "You have been invited to the {company} finance dashboard as {role}.\n\n\
         Set your password here (the link works once and expires on {expires_at}):\n{link}\n\n\
         Or through the API: POST {api}/v1/invitations/{token}/accept with {{\"password\": \"…\"}}\n",
        company = tenant.settings.company_name,
        api = public_url.trim_end_matches('/'),
    );
    let subject = format!("Your invitation to {}", tenant.settings.company_name);
    let mail = mailer.send(&email, &subject, &body).await?;
    store
        .audit(
            &tenant.id,
            actor,
            "user.invited",
            &format!("{email} as {role}"),
        )
        .await?;
    Ok(Invitation {
        user,
        link,
        expires_at,
        mail,
    })
}

/// Sets the password of an invited user and activates them.
pub async fn accept(
    store: &dyn Store,
    token: &str,
    password: &str,
) -> Result<(Tenant, User), AccessError> {
    let hash = keys::hash(token);
    // Check the policy against the invited address before using the token up.
    if password.len() > 1024 {
        return Err(AccessError::WeakPassword(
            "the password must have at most 1024 bytes".into(),
        ));
    }
    let policy_ok = check_password_policy(password, "");
    if let Err(reason) = policy_ok {
        return Err(AccessError::WeakPassword(reason));
    }
    let password_hash = hash_password(password).map_err(AccessError::Internal)?;
    let (tenant, user) = store
        .accept_invitation(&hash, &password_hash)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(reason) => AccessError::InvalidInvitation(reason),
            other => AccessError::Internal(other.into()),
        })?;
    store
        .audit(
            &tenant.id,
            &format!("user:{}", user.email),
            "user.accepted",
            &user.email,
        )
        .await
        .map_err(|e| AccessError::Internal(e.into()))?;
    Ok((tenant, user))
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("too many failed logins; try again in {retry_after_secs} s")]
    Throttled { retry_after_secs: i64 },
    #[error("{0}")]
    InvalidInvitation(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error(transparent)]
    Internal(anyhow::Error),
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Session {
    pub token: String,
    pub expires_at: String,
    pub user: User,
    #[serde(skip)]
    #[schemars(skip)]
    pub tenant: Tenant,
}

/// Checks a password login. After a few failures each attempt must wait, from 5 s
/// doubling up to 15 minutes; unknown emails cost the same hashing work as known ones.
pub async fn login(store: &dyn Store, email: &str, password: &str) -> Result<Session, AccessError> {
    let internal = |e: StoreError| AccessError::Internal(e.into());
    let candidate = store.login_candidate(email).await.map_err(internal)?;
    let Some(candidate) = candidate else {
        let _ = verify_password(password, DUMMY_HASH);
        return Err(AccessError::InvalidCredentials);
    };
    if let Some(until) = candidate.locked_until.as_deref() {
        if let Ok(until) = chrono::DateTime::parse_from_rfc3339(until) {
            let wait = until.signed_duration_since(Utc::now()).num_seconds();
            if wait > 0 {
                return Err(AccessError::Throttled {
                    retry_after_secs: wait,
                });
            }
        }
    }
    let hash = candidate.password_hash.as_deref().unwrap_or(DUMMY_HASH);
    if candidate.user.status != "active" || !verify_password(password, hash) {
        let failures = candidate.failed_logins + 1;
        let locked_until = (failures > FREE_FAILURES).then(|| {
            let exponent = (failures - FREE_FAILURES - 1).min(10) as u32;
            at(Duration::seconds((5 * 2i64.pow(exponent)).min(900)))
        });
        store
            .record_login(&candidate.user.id, false, locked_until.as_deref())
            .await
            .map_err(internal)?;
        return Err(AccessError::InvalidCredentials);
    }
    store
        .record_login(&candidate.user.id, true, None)
        .await
        .map_err(internal)?;
    let token = keys::generate_with_prefix("lss_");
    let expires_at = at(Duration::hours(SESSION_HOURS));
    store
        .create_session(&candidate.user.id, &keys::hash(&token), &expires_at)
        .await
        .map_err(internal)?;
    let tenant = store
        .tenant(&candidate.user.tenant_id)
        .await
        .map_err(internal)?
        .ok_or(AccessError::InvalidCredentials)?;
    Ok(Session {
        token,
        expires_at,
        user: candidate.user,
        tenant,
    })
}

/// An argon2id hash of a random password, verified against when the email is
/// unknown so that timing does not tell which emails have accounts.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Zs8mLwO3m9S2b0u4Jr4lq3XbO8rUqZ2Xw5m3bYv0j2E";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        assert!(check_password_policy("short1", "a@b.c").is_err());
        assert!(check_password_policy("longenoughbutnodigit", "a@b.c").is_err());
        assert!(check_password_policy("kopi-susu-2025", "a@b.c").is_ok());
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("kopi-susu-2025").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("kopi-susu-2025", &hash));
        assert!(!verify_password("kopi-susu-2026", &hash));
        assert!(!verify_password("anything", DUMMY_HASH));
        // The dummy must be a real hash, or unknown emails would answer faster.
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Manager && Role::Manager > Role::Viewer);
        assert_eq!("Manager".parse::<Role>().unwrap(), Role::Manager);
    }
}
