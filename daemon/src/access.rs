//! Who is asking and what they may do: roles, passwords (argon2id, hashed off the
//! async workers), invitations, logins with throttling, and sessions of a person in
//! one of their tenants at a time. Tokens are random and stored hashed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use chrono::{Duration, SecondsFormat, Utc};
use ledgersync_store::{LoginThrottle, Membership, Store, StoreError, Tenant, User};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// Failed logins of one address from one client: three free, then each attempt
/// waits 5 s, doubling up to 15 minutes; an hour without attempts starts afresh.
pub const PER_CLIENT: LoginThrottle = LoginThrottle {
    free_failures: 3,
    first_wait_ms: 5_000,
    max_wait_ms: 15 * 60_000,
    forget_after_ms: 60 * 60_000,
};

/// Failed logins of one address over all clients (guessing spread over many
/// machines): twenty free, then each attempt waits 2 s, doubling up to 5 minutes. The
/// cap is lower than a client's so that someone who fails on purpose from elsewhere
/// delays the owner's right password by at most 5 minutes per attempt.
pub const PER_ADDRESS: LoginThrottle = LoginThrottle {
    free_failures: 20,
    first_wait_ms: 2_000,
    max_wait_ms: 5 * 60_000,
    forget_after_ms: 60 * 60_000,
};

/// How long a login or an acceptance waits for a free hashing slot before it is
/// answered "busy, retry".
pub const HASHING_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Password hashing is deliberately slow (argon2id, 19 MiB): it runs on blocking
/// threads, a bounded number at a time (by default one per core), so that a burst of
/// logins neither stalls the async workers that serve reports nor queues without
/// bound.
pub struct PasswordHashing {
    slots: Arc<Semaphore>,
    queue_wait: std::time::Duration,
}

impl PasswordHashing {
    pub fn new(slots: usize, queue_wait: std::time::Duration) -> PasswordHashing {
        PasswordHashing {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            queue_wait,
        }
    }

    /// A slot, held until the hash it was taken for is done.
    async fn slot(&self) -> Result<HashingSlot, AccessError> {
        match tokio::time::timeout(self.queue_wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(HashingSlot { _permit: permit }),
            Ok(Err(closed)) => Err(AccessError::Internal(closed.into())),
            Err(_) => Err(AccessError::Busy),
        }
    }
}

impl Default for PasswordHashing {
    fn default() -> PasswordHashing {
        PasswordHashing::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
            HASHING_QUEUE_WAIT,
        )
    }
}

struct HashingSlot {
    _permit: OwnedSemaphorePermit,
}

impl HashingSlot {
    /// Runs `work` on a blocking thread; the slot is freed when the work ends, even
    /// if the request that asked for it is gone by then.
    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AccessError> {
        tokio::task::spawn_blocking(move || {
            let _slot = self;
            work()
        })
        .await
        .map_err(|e| AccessError::Internal(anyhow::anyhow!("a password hashing task failed: {e}")))
    }
}

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

/// A hash of a random password with the parameters of real ones, checked when an
/// address has no password, so that the answer takes as long as for one that has.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password(&keys::generate()).expect("hashing a random password succeeds"));

/// At least 12 characters with a letter and a digit, neither the email nor its part
/// before the `@`.
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
    let email = email.trim();
    let local_part = email.split('@').next().unwrap_or_default();
    if password.eq_ignore_ascii_case(email) || password.eq_ignore_ascii_case(local_part) {
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

/// Invites `email` into `tenant` and mails the single-use link. A person who already
/// has an account (in another tenant) is added with the same answer as anyone else;
/// their mail says so and they accept with the password they have.
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
    let invited = store
        .invite_user(
            tenant,
            &email,
            &role.to_string(),
            &keys::hash(&token),
            &expires_at,
        )
        .await?;
    let public_url = public_url.trim_end_matches('/');
    let link = format!("{public_url}/invitations/{token}");
    let company = &tenant.settings.company_name;
    let api = format!(
        "Or through the API: POST {public_url}/v1/invitations/{token}/accept with {{\"password\": \"…\"}}\n"
    );
    let (subject, body) = if invited.has_password {
        (
            format!("You were added to {company}"),
            format!(
                "You were added to the {company} finance dashboard as {role}.\n\n\
                 You already have an account: confirm with the password you use today (no new \
                 password; the link works once and expires on {expires_at}):\n{link}\n\n{api}\n\
                 Then choose {company} when you log in, or switch to it with POST /v1/session/tenant.\n"
            ),
        )
    } else {
        (
            format!("Your invitation to {company}"),
            format!(
                "You have been invited to the {company} finance dashboard as {role}.\n\n\
                 Set your password here (the link works once and expires on {expires_at}):\n{link}\n\n{api}"
            ),
        )
    };
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
        user: invited.user,
        link,
        expires_at,
        mail,
    })
}

/// Uses an invitation: a new person sets their password; a person who has one
/// confirms with it. The token is checked before any password is hashed.
pub async fn accept(
    store: &dyn Store,
    hashing: &PasswordHashing,
    token: &str,
    password: &str,
) -> Result<(Tenant, User), AccessError> {
    let internal = |e: StoreError| AccessError::Internal(e.into());
    if password.len() > 1024 {
        return Err(AccessError::WeakPassword(
            "the password must have at most 1024 bytes".into(),
        ));
    }
    let token_hash = keys::hash(token);
    let Some(pending) = store
        .pending_invitation(&token_hash)
        .await
        .map_err(internal)?
    else {
        return Err(AccessError::InvalidInvitation(
            "this invitation is unknown, used or expired".into(),
        ));
    };
    let password = password.to_owned();
    let new_password_hash = match pending.password_hash {
        Some(existing) => {
            let slot = hashing.slot().await?;
            if !slot
                .run(move || verify_password(&password, &existing))
                .await?
            {
                return Err(AccessError::WrongPassword);
            }
            None
        }
        None => {
            check_password_policy(&password, &pending.user.email)
                .map_err(AccessError::WeakPassword)?;
            let slot = hashing.slot().await?;
            Some(
                slot.run(move || hash_password(&password))
                    .await?
                    .map_err(AccessError::Internal)?,
            )
        }
    };
    let (tenant, user) = store
        .accept_invitation(&token_hash, new_password_hash.as_deref())
        .await
        .map_err(|e| match e {
            StoreError::NotFound(reason) | StoreError::Conflict(reason) => {
                AccessError::InvalidInvitation(reason)
            }
            other => internal(other),
        })?;
    store
        .audit(
            &tenant.id,
            &format!("user:{}", user.email),
            "user.accepted",
            &user.email,
        )
        .await
        .map_err(internal)?;
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
    #[error("this address already has an account: accept the invitation with its password")]
    WrongPassword,
    #[error("you are not an active member of tenant '{0}'")]
    NotAMember(String),
    #[error("you are not an active member of any tenant; ask an admin for an invitation")]
    NoTenant,
    #[error("too many passwords are being checked; try again in a second")]
    Busy,
    #[error(transparent)]
    Internal(anyhow::Error),
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Session {
    pub token: String,
    pub expires_at: String,
    /// The membership the session acts in.
    pub user: User,
    /// Every tenant the person is an active member of; `POST /v1/session/tenant`
    /// switches between them.
    pub tenants: Vec<Membership>,
    #[serde(skip)]
    #[schemars(skip)]
    pub tenant: Tenant,
}

/// The key a client's failed logins are counted under: its IPv4 address, or the /64
/// network of an IPv6 one (one host is usually given a whole /64).
pub fn client_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Checks a password login from `client`, into `tenant` (id or slug) or the person's
/// first tenant. Every address, with or without an account, is answered the same
/// way and after the same hashing work; failures are counted before the password is
/// checked, per address and client ([`PER_CLIENT`]) and per address ([`PER_ADDRESS`]).
pub async fn login(
    store: &dyn Store,
    hashing: &PasswordHashing,
    email: &str,
    password: &str,
    tenant: Option<&str>,
    client: IpAddr,
) -> Result<Session, AccessError> {
    let internal = |e: StoreError| AccessError::Internal(e.into());
    let email = email.trim().to_ascii_lowercase();
    let client = client_key(client);
    // Counted first (cheap, and a throttled attempt never waits for hashing), so an
    // attempt answered "busy" below has counted as a failure: a retry is one more.
    for (client, throttle) in [(Some(client.as_str()), &PER_CLIENT), (None, &PER_ADDRESS)] {
        if let Some(wait_ms) = store
            .count_login_attempt(&email, client, throttle)
            .await
            .map_err(internal)?
        {
            return Err(AccessError::Throttled {
                retry_after_secs: (wait_ms + 999) / 1000,
            });
        }
    }
    let person = store.person(&email).await.map_err(internal)?;
    let hash = person.as_ref().and_then(|p| p.password_hash.clone());
    let slot = hashing.slot().await?;
    let password = password.to_owned();
    let verified = slot
        .run(move || verify_password(&password, hash.as_deref().unwrap_or(&DUMMY_HASH)))
        .await?;
    let person = match person {
        Some(person) if verified => person,
        _ => return Err(AccessError::InvalidCredentials),
    };
    store
        .forget_login_failures(&email, &client)
        .await
        .map_err(internal)?;
    let tenants = store.person_tenants(&person.id).await.map_err(internal)?;
    let chosen = match tenant {
        Some(wanted) => tenants
            .iter()
            .find(|m| m.tenant_id == wanted.trim() || m.tenant_slug == wanted.trim())
            .ok_or_else(|| AccessError::NotAMember(wanted.trim().to_string()))?,
        None => tenants.first().ok_or(AccessError::NoTenant)?,
    };
    let token = keys::generate_with_prefix("lss_");
    let expires_at = at(Duration::hours(SESSION_HOURS));
    let (tenant, user) = store
        .create_session(
            &person.id,
            &chosen.tenant_id,
            &keys::hash(&token),
            &expires_at,
        )
        .await
        .map_err(internal)?
        // The membership ended between the two reads.
        .ok_or_else(|| AccessError::NotAMember(chosen.tenant_slug.clone()))?;
    Ok(Session {
        token,
        expires_at,
        user,
        tenants,
        tenant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        assert!(check_password_policy("short1", "a@b.c").is_err());
        assert!(check_password_policy("longenoughbutnodigit", "a@b.c").is_err());
        assert!(check_password_policy("kopi-susu-2025", "a@b.c").is_ok());
        assert!(
            check_password_policy("Finance2025@kopi.example", "finance2025@kopi.example").is_err()
        );
        assert!(check_password_policy("finance20251", "finance20251@kopi.example").is_err());
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("kopi-susu-2025").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("kopi-susu-2025", &hash));
        assert!(!verify_password("kopi-susu-2026", &hash));
        assert!(!verify_password("anything", &DUMMY_HASH));
        // The dummy must cost what a real hash costs, or addresses without a
        // password would answer faster.
        let dummy = PasswordHash::new(&DUMMY_HASH).unwrap();
        let real = PasswordHash::new(&hash).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.params, real.params);
    }

    #[test]
    fn clients_are_counted_by_address_or_ipv6_network() {
        assert_eq!(client_key("203.0.113.7".parse().unwrap()), "203.0.113.7");
        assert_eq!(
            client_key("::ffff:203.0.113.7".parse().unwrap()),
            "203.0.113.7"
        );
        assert_eq!(
            client_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Manager && Role::Manager > Role::Viewer);
        assert_eq!("Manager".parse::<Role>().unwrap(), Role::Manager);
    }
}
