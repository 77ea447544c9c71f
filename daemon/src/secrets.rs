//! Connector passwords sealed at rest: the master key (from `LEDGERSYNC_MASTER_KEY`
//! or the key file), each tenant's data key wrapped by it in the store, and the
//! rotation of the master key while daemons run.
//!
//! A daemon whose data key was wrapped under another master key than the one it
//! holds reads its key file again before giving up: `keys rotate` rewraps the data
//! keys first and then moves the new key into place, so running daemons pick the
//! new key up on their next unwrap without a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use ledgersync_credentials::{
    DataKey, ExposeSecret as _, MasterKey, SecretString, WrappedDataKey, MASTER_KEY_ENV,
};
use ledgersync_store::{Store, StoredConnector, StoredDataKey};

pub struct Secrets {
    master: Mutex<std::sync::Arc<MasterKey>>,
    key_file: PathBuf,
    /// Whether the key came from the environment (then it is never reloaded).
    from_env: bool,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("master_key_id", &self.master().id())
            .field("key_file", &self.key_file)
            .finish()
    }
}

fn env_key() -> Option<String> {
    std::env::var(MASTER_KEY_ENV).ok()
}

impl Secrets {
    /// The master key: from the environment, else the key file, which is created
    /// (0600) when no credential is stored yet. With stored credentials and no key
    /// this is an error naming both places to look.
    pub async fn load(store: &dyn Store, key_file: &Path) -> anyhow::Result<Secrets> {
        let env = env_key();
        let exist = store.has_sealed_credentials().await?;
        let master = MasterKey::load_or_create(env.as_deref(), key_file, exist)?;
        if !exist && env.is_none() {
            tracing::debug!(key_file = %key_file.display(), master_key_id = master.id(), "Master key ready.");
        }
        Ok(Secrets {
            master: Mutex::new(std::sync::Arc::new(master)),
            key_file: key_file.to_path_buf(),
            from_env: env.is_some(),
        })
    }

    fn master(&self) -> std::sync::Arc<MasterKey> {
        self.master.lock().expect("master key lock").clone()
    }

    pub fn master_key_id(&self) -> String {
        self.master().id().to_string()
    }

    /// Seals a connector's password under its tenant's data key (made on first use).
    pub async fn seal(
        &self,
        store: &dyn Store,
        tenant_id: &str,
        connector_id: &str,
        password: &SecretString,
    ) -> anyhow::Result<String> {
        let data_key = self.data_key(store, tenant_id, true).await?;
        Ok(data_key.seal(password, tenant_id, connector_id))
    }

    /// The password of a stored connector.
    pub async fn open(
        &self,
        store: &dyn Store,
        connector: &StoredConnector,
    ) -> anyhow::Result<SecretString> {
        let data_key = self.data_key(store, &connector.tenant_id, false).await?;
        Ok(data_key.open(&connector.secret, &connector.tenant_id, &connector.id)?)
    }

    async fn data_key(
        &self,
        store: &dyn Store,
        tenant_id: &str,
        create: bool,
    ) -> anyhow::Result<DataKey> {
        let stored = match store.data_key(tenant_id).await? {
            Some(stored) => stored,
            None if create => {
                let master = self.master();
                let wrapped = master.wrap(&DataKey::generate(), tenant_id);
                store
                    .put_data_key(&StoredDataKey {
                        tenant_id: tenant_id.to_string(),
                        master_key_id: wrapped.master_key_id,
                        wrapped: wrapped.ciphertext,
                    })
                    .await?
            }
            None => anyhow::bail!(
                "the tenant has no data key, so none of its credentials can be read; add the connector again"
            ),
        };
        let wrapped = WrappedDataKey {
            master_key_id: stored.master_key_id.clone(),
            ciphertext: stored.wrapped.clone(),
        };
        if stored.master_key_id != self.master().id() {
            self.reload_after_rotation()?;
        }
        Ok(self.master().unwrap(&wrapped, tenant_id)?)
    }

    /// Reads the key file again (after a rotation by another process); keeps the key
    /// it has when the file holds the same one or cannot be read.
    fn reload_after_rotation(&self) -> anyhow::Result<()> {
        if self.from_env {
            return Ok(());
        }
        if let Some(fresh) = MasterKey::from_env_or_file(None, &self.key_file)? {
            let mut held = self.master.lock().expect("master key lock");
            if fresh.id() != held.id() {
                tracing::info!(
                    old = held.id(),
                    new = fresh.id(),
                    "The master key was rotated; using the new one."
                );
                *held = std::sync::Arc::new(fresh);
            }
        }
        Ok(())
    }
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotation {
    pub old_id: String,
    pub new_id: String,
    pub rewrapped: u64,
    /// Where the previous key was kept (key file rotations).
    pub previous_key_file: Option<PathBuf>,
}

/// Rewraps every tenant's data key under a new master key, in one store
/// transaction, then puts the new key in place: the key file is replaced (the old
/// one kept beside it as `<file>.previous`), or, when the key comes from
/// `LEDGERSYNC_MASTER_KEY`, the new key is written to `new_key_file` for the
/// operator to move into the environment. Daemons reading the key file follow on
/// their own.
pub async fn rotate(
    store: &dyn Store,
    key_file: &Path,
    new_key_file: Option<&Path>,
) -> anyhow::Result<Rotation> {
    let env = env_key();
    let old = MasterKey::from_env_or_file(env.as_deref(), key_file)?.with_context(|| {
        format!(
            "no master key to rotate: set {MASTER_KEY_ENV} or create {}",
            key_file.display()
        )
    })?;
    let staged = match (&env, new_key_file) {
        (_, Some(path)) => path.to_path_buf(),
        (None, None) => with_suffix(key_file, ".next"),
        (Some(_), None) => anyhow::bail!(
            "the master key comes from {MASTER_KEY_ENV}: give --new-key-file, where the new key is written for you to put in the environment"
        ),
    };
    let new = MasterKey::write_new_file(&staged)?;
    let mut pairs = Vec::new();
    for stored in store.data_keys().await? {
        let wrapped = WrappedDataKey {
            master_key_id: stored.master_key_id.clone(),
            ciphertext: stored.wrapped.clone(),
        };
        let rewrapped = ledgersync_credentials::rewrap(&old, &new, &wrapped, &stored.tenant_id)?;
        pairs.push((
            stored.clone(),
            StoredDataKey {
                tenant_id: stored.tenant_id,
                master_key_id: rewrapped.master_key_id,
                wrapped: rewrapped.ciphertext,
            },
        ));
    }
    let rewrapped = store.rewrap_data_keys(&pairs).await?;
    let previous_key_file = if env.is_none() && new_key_file.is_none() {
        let previous = with_suffix(key_file, ".previous");
        std::fs::rename(key_file, &previous)
            .with_context(|| format!("keeping the old key as {}", previous.display()))?;
        std::fs::rename(&staged, key_file)
            .with_context(|| format!("moving the new key to {}", key_file.display()))?;
        Some(previous)
    } else {
        None
    };
    Ok(Rotation {
        old_id: old.id().to_string(),
        new_id: new.id().to_string(),
        rewrapped,
        previous_key_file,
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// A password given on standard input (first line), so that it is in no shell
/// history or process list.
pub fn password_from_stdin() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = SecretString::from(line.trim_end_matches(['\r', '\n']).to_string());
    anyhow::ensure!(
        !password.expose_secret().is_empty(),
        "no password on standard input"
    );
    Ok(password)
}
