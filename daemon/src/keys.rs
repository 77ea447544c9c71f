//! API keys and other tokens: random secrets shown once; only their SHA-256 is stored. A key has 256
//! bits of entropy, so a fast hash is enough (unlike passwords, nothing to brute-force).

use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "lsk_";

/// A new API key secret, e.g. `lsk_3f9a…` (64 hex digits after the prefix).
pub fn generate() -> String {
    generate_with_prefix(PREFIX)
}

/// A random 256-bit token with a prefix saying what it is (`inv_`, `lss_`, …).
pub fn generate_with_prefix(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// What is stored and looked up for a credential: SHA-256 in lowercase hex. Every
/// authenticated request computes it, so the hex goes through a table into one
/// buffer rather than a character at a time.
pub fn hash(secret: &str) -> String {
    let mut text = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(secret.trim().as_bytes()), &mut text)
        .expect("64 hex digits for 32 bytes");
    String::from_utf8_lossy(&text).into_owned()
}

/// Scopes a key can carry.
pub const SCOPES: [&str; 2] = ["read", "ingest"];

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_distinct_and_hash_stably() {
        let (a, b) = (super::generate(), super::generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(super::hash(&a), super::hash(&format!(" {a}\n")));
        assert_ne!(super::hash(&a), super::hash(&b));
        // The stored form: SHA-256 in lowercase hex (FIPS 180-2's "abc" vector).
        assert_eq!(
            super::hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
