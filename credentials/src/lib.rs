//! Connector credentials encrypted at rest: envelope encryption with AES-256-GCM.
//!
//! Two levels of keys, so that replacing the one key an operator holds never means
//! re-encrypting every stored secret:
//!
//! - a [`MasterKey`], from `LEDGERSYNC_MASTER_KEY` or a key file, never stored in the
//!   database;
//! - a [`DataKey`] per tenant, stored only wrapped (encrypted) by the master key as a
//!   [`WrappedDataKey`]. Rotating the master key ([`rewrap`]) re-encrypts these few
//!   wrapped keys; the credentials sealed under the data keys stay as they are.
//!
//! A credential is sealed by its tenant's data key into a versioned text
//! (`v1:<base64(nonce ‖ ciphertext ‖ tag)>`) with the tenant and connector ids as
//! associated data, so a sealed value copied to another connector or tenant does not
//! open. Every encryption takes a fresh random 96-bit nonce.
//!
//! Nothing secret is printed: keys show only their id in `Debug`, plaintext is a
//! [`SecretString`] (whose `Debug` is redacted and which does not serialize), and no
//! [`CredentialsError`] message holds key material, plaintext or the text a key was
//! parsed from.

mod cipher;
mod data_key;
mod error;
mod master_key;

pub use data_key::DataKey;
pub use error::CredentialsError;
pub use master_key::{rewrap, MasterKey, WrappedDataKey, MASTER_KEY_ENV};
pub use secrecy::{ExposeSecret, SecretString};

/// The result of this crate's fallible operations.
pub type Result<T, E = CredentialsError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
