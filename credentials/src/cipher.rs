//! The one AES-256-GCM construction both key levels use: a fresh random nonce per
//! encryption, stored in front of the ciphertext (`nonce ‖ ciphertext ‖ tag`).

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::Aes256Gcm;
use zeroize::Zeroizing;

/// An AES-256 key's length in bytes.
pub(crate) const KEY_LEN: usize = 32;

/// A GCM nonce's length: 96 bits, the size GCM is specified for.
const NONCE_LEN: usize = 12;

/// The authentication tag GCM appends to every ciphertext.
const TAG_LEN: usize = 16;

/// Encrypts `plaintext` under `key`, binding `associated_data`, and returns
/// `nonce ‖ ciphertext ‖ tag`.
///
/// The nonce is random (96 bits from the OS), never a counter: keys are used from
/// several processes (the daemon, `ledgersync keys rotate`) with no shared state to
/// keep a counter in, and a tenant's credentials are few enough that random nonces stay
/// far below GCM's collision bound (2^32 messages per key).
pub(crate) fn encrypt(key: &[u8; KEY_LEN], associated_data: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.into());
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    // `encrypt` encrypts a copy of the plaintext in place, so no second plaintext copy
    // is left behind; only ciphertext is moved when the tag is appended.
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: associated_data,
            },
        )
        .expect("AES-GCM encrypts any message shorter than 64 GiB");
    let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    sealed
}

/// Decrypts `nonce ‖ ciphertext ‖ tag` made by [`encrypt`] with the same key and
/// associated data; `None` when the key, the associated data or any byte differs
/// (GCM cannot tell these apart, and callers say so).
///
/// The plaintext is wiped when dropped, the spare capacity of its buffer included.
pub(crate) fn decrypt(
    key: &[u8; KEY_LEN],
    associated_data: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(
            nonce.into(),
            Payload {
                msg: ciphertext,
                aad: associated_data,
            },
        )
        .ok()
        .map(Zeroizing::new)
}
