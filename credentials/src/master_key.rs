//! The master key: where it comes from, its non-secret id, and the data keys it wraps.

use std::fmt;
use std::io::Write;
use std::path::Path;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::cipher::{self, KEY_LEN};
use crate::{CredentialsError, DataKey, Result};

/// The environment variable holding the master key (base64 of 32 bytes); it takes
/// precedence over the key file.
pub const MASTER_KEY_ENV: &str = "LEDGERSYNC_MASTER_KEY";

/// The length of a key's base64 text (32 bytes, padded).
const BASE64_KEY_LEN: usize = 44;

/// Bytes of the key's SHA-256 shown as its id: 64 bits tell keys apart at a glance
/// and in storage, and are far too few to help anyone guess the key.
const ID_BYTES: usize = 8;

/// The key that wraps every tenant's data key. Wiped from memory when dropped; its
/// `Debug` shows only its [`id`](MasterKey::id).
pub struct MasterKey {
    // Boxed so that moving the key moves a pointer, not copies of the bytes that
    // the drop would not wipe.
    bytes: SecretBox<[u8; KEY_LEN]>,
    id: String,
}

impl MasterKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> MasterKey {
        Self::from_secret(SecretBox::init_with_mut(|bytes: &mut [u8; KEY_LEN]| {
            OsRng.fill_bytes(bytes)
        }))
    }

    /// The configured key: `env_value` (the value of [`MASTER_KEY_ENV`], if set) or
    /// else the key file, or `None` when neither exists.
    ///
    /// Both hold the standard base64 text of 32 bytes; surrounding whitespace (the
    /// file's newline) is ignored. A value that is set but malformed is an error rather
    /// than `None`, so a typo is never mistaken for "no key" and a new key generated.
    pub fn from_env_or_file(env_value: Option<&str>, file: &Path) -> Result<Option<MasterKey>> {
        if let Some(value) = env_value {
            return Self::parse(value, || MASTER_KEY_ENV.to_string()).map(Some);
        }
        let text = match std::fs::read_to_string(file) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CredentialsError::ReadKeyFile {
                    path: file.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text, || file.display().to_string()).map(Some)
    }

    /// Generates a key and writes it to a new file readable by its owner alone (0600),
    /// as base64 and a newline. Refuses to replace an existing file: that file may hold
    /// the only key that decrypts the stored credentials.
    pub fn write_new_file(path: &Path) -> Result<MasterKey> {
        let mut options = std::fs::OpenOptions::new();
        // `create_new` checks and creates in one step, so a key file that appears
        // between a check and the write is never overwritten.
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            // Set at creation, so the key is never readable by others, not even briefly.
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        }
        let mut file = options.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                CredentialsError::KeyFileExists {
                    path: path.to_path_buf(),
                }
            } else {
                CredentialsError::WriteKeyFile {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let key = Self::generate();
        // Built in one allocation of the final size, so no copy of the key's text is
        // left behind in a freed buffer.
        let mut text = Zeroizing::new(String::with_capacity(BASE64_KEY_LEN + 1));
        BASE64.encode_string(key.bytes.expose_secret(), &mut text);
        text.push('\n');
        if let Err(source) = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
        {
            // A partial file would read as a malformed key at the next start; without it
            // the next start simply makes a new one.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(CredentialsError::WriteKeyFile {
                path: path.to_path_buf(),
                source,
            });
        }
        Ok(key)
    }

    /// The key to start with: the configured one ([`from_env_or_file`]), or else a
    /// new key file ([`write_new_file`]) for a fresh install or the demo. When
    /// encrypted credentials already exist, a missing key is an error: a new key could
    /// not decrypt them, and writing one would hide that the real key was lost.
    ///
    /// [`from_env_or_file`]: MasterKey::from_env_or_file
    /// [`write_new_file`]: MasterKey::write_new_file
    pub fn load_or_create(
        env_value: Option<&str>,
        file: &Path,
        encrypted_credentials_exist: bool,
    ) -> Result<MasterKey> {
        match Self::from_env_or_file(env_value, file)? {
            Some(key) => Ok(key),
            None if encrypted_credentials_exist => Err(CredentialsError::MasterKeyMissing {
                file: file.to_path_buf(),
            }),
            None => Self::write_new_file(file),
        }
    }

    /// The key's fingerprint: the first 8 bytes of a SHA-256 of the key, in hex. Not
    /// secret; stored beside every key it wraps so that a wrong master key is named as
    /// such instead of looking like corrupt data.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts a tenant's data key under this key, with the tenant id as associated
    /// data: a wrapped key copied to another tenant does not unwrap.
    pub fn wrap(&self, data_key: &DataKey, tenant_id: &str) -> WrappedDataKey {
        let sealed = cipher::encrypt(
            self.bytes.expose_secret(),
            &wrap_associated_data(tenant_id),
            data_key.bytes(),
        );
        WrappedDataKey {
            master_key_id: self.id.clone(),
            ciphertext: BASE64.encode(sealed),
        }
    }

    /// Decrypts a tenant's data key wrapped by [`wrap`](MasterKey::wrap).
    ///
    /// A key wrapped under another master key is reported with both ids
    /// ([`CredentialsError::WrongMasterKey`]) before any decryption is tried.
    pub fn unwrap(&self, wrapped: &WrappedDataKey, tenant_id: &str) -> Result<DataKey> {
        if wrapped.master_key_id != self.id {
            return Err(CredentialsError::WrongMasterKey {
                tenant_id: tenant_id.to_string(),
                wrapped_under: wrapped.master_key_id.clone(),
                configured: self.id.clone(),
            });
        }
        let undecryptable = || CredentialsError::DataKeyUndecryptable {
            tenant_id: tenant_id.to_string(),
        };
        let sealed = BASE64
            .decode(&wrapped.ciphertext)
            .map_err(|_| undecryptable())?;
        let plain = cipher::decrypt(
            self.bytes.expose_secret(),
            &wrap_associated_data(tenant_id),
            &sealed,
        )
        .ok_or_else(undecryptable)?;
        DataKey::from_slice(&plain).ok_or_else(undecryptable)
    }

    /// Parses the base64 text of a key; `origin` names where it came from, for the
    /// error, which never quotes the text itself.
    fn parse(text: &str, origin: impl FnOnce() -> String) -> Result<MasterKey> {
        // The decoder's error is dropped: it names the offending character.
        let decoded = Zeroizing::new(BASE64.decode(text.trim()).unwrap_or_default());
        if decoded.len() != KEY_LEN {
            return Err(CredentialsError::MalformedMasterKey { origin: origin() });
        }
        Ok(Self::from_secret(SecretBox::init_with_mut(
            |bytes: &mut [u8; KEY_LEN]| bytes.copy_from_slice(&decoded),
        )))
    }

    fn from_secret(bytes: SecretBox<[u8; KEY_LEN]>) -> MasterKey {
        let id = fingerprint(bytes.expose_secret());
        MasterKey { bytes, id }
    }

    #[cfg(test)]
    pub(crate) fn bytes_for_tests(&self) -> &[u8; KEY_LEN] {
        self.bytes.expose_secret()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A tenant's data key encrypted under a master key, as stored (serialized, e.g. as
/// JSON in a TEXT column). Not secret: it is ciphertext and a key id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedDataKey {
    /// The [`MasterKey::id`] of the key it is wrapped under.
    pub master_key_id: String,
    /// Standard base64 of `nonce ‖ ciphertext ‖ tag`.
    pub ciphertext: String,
}

/// Re-wraps a tenant's data key from the `old` master key to the `new` one, for
/// `ledgersync keys rotate`. The data key itself is unchanged, so the credentials it
/// sealed need no re-encryption, and the daemon can go on using its unwrapped copy.
///
/// A key already wrapped under `new` is returned as it is, so a rotation cut short
/// (crash, lost connection) is finished by running it again with the same two keys.
pub fn rewrap(
    old: &MasterKey,
    new: &MasterKey,
    wrapped: &WrappedDataKey,
    tenant_id: &str,
) -> Result<WrappedDataKey> {
    if wrapped.master_key_id == new.id() {
        return Ok(wrapped.clone());
    }
    let data_key = old.unwrap(wrapped, tenant_id)?;
    Ok(new.wrap(&data_key, tenant_id))
}

/// Associated data for a wrapped data key: the tenant id, under a label that keeps it
/// apart from a sealed credential's associated data.
fn wrap_associated_data(tenant_id: &str) -> Vec<u8> {
    format!("ledgersync/v1/data-key/{tenant_id}").into_bytes()
}

/// The id of a key: hex of the first [`ID_BYTES`] of SHA-256 over a label and the key.
/// The label keeps this hash from being one any other protocol computes of the key.
fn fingerprint(key: &[u8; KEY_LEN]) -> String {
    let digest = Sha256::new()
        .chain_update(b"ledgersync master key id\0")
        .chain_update(key)
        .finalize();
    digest[..ID_BYTES]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
