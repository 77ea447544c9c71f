//! Errors that say what went wrong and what to do, and never what a secret is.

use std::path::PathBuf;

/// Why a key could not be loaded or a secret not be decrypted.
///
/// No message holds key material, decrypted plaintext or the text a key was read
/// from: these messages end up in logs and API responses. Where a base64 decoder's own
/// error would quote an offending character of a key, it is dropped, not wrapped.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The master key in the environment or the key file is not base64 of 32 bytes.
    #[error(
        "the master key in {origin} is malformed: expected the standard base64 text of \
         32 random bytes (44 characters, e.g. from `openssl rand -base64 32`)"
    )]
    MalformedMasterKey {
        /// Where the key came from: the environment variable's name or the file's path.
        origin: String,
    },

    /// The key file exists but cannot be read.
    #[error("cannot read the master key file {path}: {source}")]
    ReadKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A new key file cannot be created or written.
    #[error("cannot create the master key file {path}: {source}")]
    WriteKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A new key file was asked for where one already exists.
    #[error(
        "the master key file {path} already exists; refusing to overwrite it, as it may be \
         the only key that decrypts the stored credentials"
    )]
    KeyFileExists { path: PathBuf },

    /// Encrypted credentials exist but no master key is configured.
    #[error(
        "encrypted credentials exist but no master key is configured: set \
         LEDGERSYNC_MASTER_KEY or restore the key file {file}"
    )]
    MasterKeyMissing { file: PathBuf },

    /// A tenant's data key was wrapped under another master key than the configured one.
    #[error(
        "the data key of tenant {tenant_id} is encrypted under master key {wrapped_under}, \
         but the configured key is {configured}"
    )]
    WrongMasterKey {
        tenant_id: String,
        wrapped_under: String,
        configured: String,
    },

    /// A wrapped data key does not decrypt under the master key it names.
    #[error(
        "cannot decrypt the data key of tenant {tenant_id}: wrong master key or tampered data"
    )]
    DataKeyUndecryptable { tenant_id: String },

    /// A sealed credential does not decrypt with its tenant's data key.
    #[error(
        "cannot decrypt the credentials of connector {connector_id} of tenant {tenant_id}: \
         wrong data key or tampered data"
    )]
    CredentialsUndecryptable {
        tenant_id: String,
        connector_id: String,
    },

    /// A stored credential is not in a sealed format this version reads.
    #[error(
        "the stored credentials of connector {connector_id} of tenant {tenant_id} are not \
         sealed in a known format (expected `v1:` and base64)"
    )]
    UnknownSealedFormat {
        tenant_id: String,
        connector_id: String,
    },
}
