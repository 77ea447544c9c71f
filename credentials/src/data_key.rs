//! A tenant's data key and the sealed text format of the credentials it encrypts.

use std::fmt;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::cipher::{self, KEY_LEN};
use crate::{CredentialsError, Result};

/// The prefix of the current sealed format. Versioned so that a later format (another
/// cipher, another associated data layout) can be read beside this one.
const SEALED_V1: &str = "v1:";

/// A tenant's key for its connectors' credentials. Stored only wrapped by the master
/// key ([`MasterKey::wrap`](crate::MasterKey::wrap)); wiped from memory when dropped;
/// its `Debug` shows nothing of it.
pub struct DataKey {
    // Boxed so that moves do not leave copies of the key behind.
    bytes: SecretBox<[u8; KEY_LEN]>,
}

impl DataKey {
    /// A new random key from the operating system's generator, for a tenant that has
    /// none yet.
    pub fn generate() -> DataKey {
        DataKey {
            bytes: SecretBox::init_with_mut(|bytes: &mut [u8; KEY_LEN]| OsRng.fill_bytes(bytes)),
        }
    }

    /// Encrypts a connector's secret into `v1:<base64(nonce ‖ ciphertext ‖ tag)>`, text
    /// to store in place of the secret. The tenant and connector ids are associated
    /// data: the sealed text opens only for the connector it was sealed for.
    ///
    /// Every call takes a fresh random nonce, so sealing the same secret twice gives two
    /// different texts.
    pub fn seal(&self, plaintext: &SecretString, tenant_id: &str, connector_id: &str) -> String {
        let sealed = cipher::encrypt(
            self.bytes.expose_secret(),
            &seal_associated_data(tenant_id, connector_id),
            plaintext.expose_secret().as_bytes(),
        );
        let mut text = String::from(SEALED_V1);
        BASE64.encode_string(sealed, &mut text);
        text
    }

    /// Decrypts a secret sealed by [`seal`](DataKey::seal) for the same tenant and
    /// connector.
    pub fn open(&self, sealed: &str, tenant_id: &str, connector_id: &str) -> Result<SecretString> {
        let undecryptable = || CredentialsError::CredentialsUndecryptable {
            tenant_id: tenant_id.to_string(),
            connector_id: connector_id.to_string(),
        };
        let payload = sealed.strip_prefix(SEALED_V1).ok_or_else(|| {
            CredentialsError::UnknownSealedFormat {
                tenant_id: tenant_id.to_string(),
                connector_id: connector_id.to_string(),
            }
        })?;
        let payload = BASE64.decode(payload).map_err(|_| undecryptable())?;
        let plain = cipher::decrypt(
            self.bytes.expose_secret(),
            &seal_associated_data(tenant_id, connector_id),
            &payload,
        )
        .ok_or_else(undecryptable)?;
        // Only `seal` made this text and it sealed a `str`, so the bytes are UTF-8
        // unless the key was used outside this crate; they are copied straight into an
        // allocation of their exact size, which the secret wipes when dropped.
        let text = std::str::from_utf8(&plain).map_err(|_| undecryptable())?;
        Ok(SecretString::from(Box::<str>::from(text)))
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        self.bytes.expose_secret()
    }

    /// The key in `bytes`, if they are a key's length.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<DataKey> {
        let bytes: &[u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(DataKey {
            bytes: SecretBox::init_with_mut(|key: &mut [u8; KEY_LEN]| *key = *bytes),
        })
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// Associated data for a sealed credential: `ledgersync/v1/<tenant>/<connector>`.
///
/// Unambiguous where it matters: a data key belongs to one tenant, so under any one key
/// the tenant part is fixed and the text tells connectors apart, whatever characters
/// their ids hold.
fn seal_associated_data(tenant_id: &str, connector_id: &str) -> Vec<u8> {
    format!("ledgersync/v1/{tenant_id}/{connector_id}").into_bytes()
}
