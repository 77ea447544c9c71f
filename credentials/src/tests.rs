//! Real keys and real AES-256-GCM throughout: every failure below is the cipher's.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::{
    rewrap, CredentialsError, DataKey, ExposeSecret, MasterKey, SecretString, WrappedDataKey,
    MASTER_KEY_ENV,
};

const TENANT: &str = "3f0c5a9e-6d1b-4c8e-9a7f-2b4d6e8f0a1c";
const CONNECTOR: &str = "bank-feed";
const PASSWORD: &str = "correct horse battery staple";

fn secret(text: &str) -> SecretString {
    SecretString::from(text)
}

/// Every way the bytes of `key` could be printed: base64 (as in the key file), hex,
/// and the `Debug` of the byte array.
fn renderings(key: &[u8; 32]) -> Vec<String> {
    vec![
        BASE64.encode(key),
        key.iter().map(|b| format!("{b:02x}")).collect(),
        format!("{key:?}"),
    ]
}

fn key_file_text(key: &MasterKey) -> String {
    format!("{}\n", BASE64.encode(key.bytes_for_tests()))
}

#[test]
fn a_sealed_secret_opens_to_the_same_text() {
    let key = DataKey::generate();
    let sealed = key.seal(&secret(PASSWORD), TENANT, CONNECTOR);
    assert!(sealed.starts_with("v1:"), "{sealed}");
    assert!(!sealed.contains(PASSWORD));
    let opened = key.open(&sealed, TENANT, CONNECTOR).unwrap();
    assert_eq!(opened.expose_secret(), PASSWORD);

    let empty = key.seal(&secret(""), TENANT, CONNECTOR);
    assert_eq!(
        key.open(&empty, TENANT, CONNECTOR).unwrap().expose_secret(),
        ""
    );
}

#[test]
fn a_sealed_secret_opens_only_for_its_tenant_and_connector() {
    let key = DataKey::generate();
    let sealed = key.seal(&secret(PASSWORD), TENANT, CONNECTOR);

    for (tenant, connector) in [
        ("another-tenant", CONNECTOR),
        (TENANT, "another-connector"),
        (TENANT, ""),
    ] {
        let err = key.open(&sealed, tenant, connector).unwrap_err();
        assert!(
            matches!(err, CredentialsError::CredentialsUndecryptable { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(connector), "{message}");
        assert!(
            message.contains("wrong data key or tampered data"),
            "{message}"
        );
        assert!(!message.contains(PASSWORD));
    }
}

#[test]
fn a_secret_sealed_under_another_data_key_does_not_open() {
    let sealed = DataKey::generate().seal(&secret(PASSWORD), TENANT, CONNECTOR);
    let err = DataKey::generate()
        .open(&sealed, TENANT, CONNECTOR)
        .unwrap_err();
    assert!(matches!(
        err,
        CredentialsError::CredentialsUndecryptable { .. }
    ));
}

#[test]
fn any_tampered_byte_stops_a_sealed_secret_from_opening() {
    let key = DataKey::generate();
    let sealed = key.seal(&secret(PASSWORD), TENANT, CONNECTOR);
    let payload = BASE64.decode(sealed.strip_prefix("v1:").unwrap()).unwrap();
    assert_eq!(payload.len(), 12 + PASSWORD.len() + 16);

    // Nonce, ciphertext and tag: one flipped bit anywhere is caught.
    for index in 0..payload.len() {
        let mut tampered = payload.clone();
        tampered[index] ^= 0x01;
        let tampered = format!("v1:{}", BASE64.encode(&tampered));
        let err = key.open(&tampered, TENANT, CONNECTOR).unwrap_err();
        assert!(
            matches!(err, CredentialsError::CredentialsUndecryptable { .. }),
            "byte {index}: {err:?}"
        );
    }
    // Cut short, or not base64 at all.
    for broken in [
        format!("v1:{}", BASE64.encode(&payload[..payload.len() - 1])),
        format!("v1:{}", BASE64.encode(&payload[..20])),
        "v1:".to_string(),
        "v1:not base64!".to_string(),
    ] {
        let err = key.open(&broken, TENANT, CONNECTOR).unwrap_err();
        assert!(
            matches!(err, CredentialsError::CredentialsUndecryptable { .. }),
            "{broken}: {err:?}"
        );
    }
}

#[test]
fn a_stored_plaintext_or_unknown_version_is_not_taken_for_a_sealed_secret() {
    let key = DataKey::generate();
    for stored in [PASSWORD, "v2:AAAA", ""] {
        let err = key.open(stored, TENANT, CONNECTOR).unwrap_err();
        assert!(
            matches!(err, CredentialsError::UnknownSealedFormat { .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains(PASSWORD));
    }
}

#[test]
fn sealing_the_same_secret_twice_takes_two_nonces() {
    let key = DataKey::generate();
    let first = key.seal(&secret(PASSWORD), TENANT, CONNECTOR);
    let second = key.seal(&secret(PASSWORD), TENANT, CONNECTOR);
    assert_ne!(first, second);
    let nonce = |sealed: &str| BASE64.decode(&sealed[3..]).unwrap()[..12].to_vec();
    assert_ne!(nonce(&first), nonce(&second));
    for sealed in [first, second] {
        assert_eq!(
            key.open(&sealed, TENANT, CONNECTOR)
                .unwrap()
                .expose_secret(),
            PASSWORD
        );
    }
}

#[test]
fn a_wrapped_data_key_unwraps_under_its_master_key_and_tenant() {
    let master = MasterKey::generate();
    let data_key = DataKey::generate();
    let wrapped = master.wrap(&data_key, TENANT);
    assert_eq!(wrapped.master_key_id, master.id());

    // Stored as text and read back.
    let stored = serde_json::to_string(&wrapped).unwrap();
    let read: WrappedDataKey = serde_json::from_str(&stored).unwrap();
    assert_eq!(read, wrapped);

    let unwrapped = master.unwrap(&read, TENANT).unwrap();
    assert_eq!(unwrapped.bytes(), data_key.bytes());
    let sealed = data_key.seal(&secret(PASSWORD), TENANT, CONNECTOR);
    assert_eq!(
        unwrapped
            .open(&sealed, TENANT, CONNECTOR)
            .unwrap()
            .expose_secret(),
        PASSWORD
    );
}

#[test]
fn a_wrapped_data_key_does_not_unwrap_for_another_tenant_or_when_tampered() {
    let master = MasterKey::generate();
    let wrapped = master.wrap(&DataKey::generate(), TENANT);

    let err = master.unwrap(&wrapped, "another-tenant").unwrap_err();
    assert!(
        matches!(err, CredentialsError::DataKeyUndecryptable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("another-tenant"));

    let mut bytes = BASE64.decode(&wrapped.ciphertext).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    let tampered = WrappedDataKey {
        ciphertext: BASE64.encode(&bytes),
        ..wrapped.clone()
    };
    let err = master.unwrap(&tampered, TENANT).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot decrypt the data key of tenant {TENANT}: wrong master key or tampered data"
        )
    );
}

#[test]
fn a_wrong_master_key_is_named_with_both_ids() {
    let right = MasterKey::generate();
    let wrong = MasterKey::generate();
    assert_ne!(right.id(), wrong.id());
    let wrapped = right.wrap(&DataKey::generate(), TENANT);

    let err = wrong.unwrap(&wrapped, TENANT).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the data key of tenant {TENANT} is encrypted under master key {}, \
             but the configured key is {}",
            right.id(),
            wrong.id()
        )
    );
}

#[test]
fn a_master_key_id_is_a_short_stable_fingerprint() {
    let key = MasterKey::generate();
    assert_eq!(key.id().len(), 16);
    assert!(key.id().bytes().all(|b| b.is_ascii_hexdigit()));
    let text = key_file_text(&key);
    let same = MasterKey::from_env_or_file(Some(&text), Path::new("/nonexistent"))
        .unwrap()
        .unwrap();
    assert_eq!(same.id(), key.id());
    for rendering in renderings(key.bytes_for_tests()) {
        assert!(!rendering.contains(key.id()));
    }
}

#[test]
fn rotation_rewraps_a_data_key_under_the_new_master_key_only() {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let data_key = DataKey::generate();
    let sealed = data_key.seal(&secret(PASSWORD), TENANT, CONNECTOR);
    let wrapped = old.wrap(&data_key, TENANT);

    let rotated = rewrap(&old, &new, &wrapped, TENANT).unwrap();
    assert_eq!(rotated.master_key_id, new.id());
    // The data key is the same, so what it sealed before the rotation still opens.
    let unwrapped = new.unwrap(&rotated, TENANT).unwrap();
    assert_eq!(
        unwrapped
            .open(&sealed, TENANT, CONNECTOR)
            .unwrap()
            .expose_secret(),
        PASSWORD
    );
    let err = old.unwrap(&rotated, TENANT).unwrap_err();
    assert!(
        matches!(
            &err,
            CredentialsError::WrongMasterKey { wrapped_under, configured, .. }
                if wrapped_under == new.id() && configured == old.id()
        ),
        "{err:?}"
    );

    // Even with a forged id, the old key cannot decrypt the rotated key.
    let forged = WrappedDataKey {
        master_key_id: old.id().to_string(),
        ..rotated.clone()
    };
    assert!(matches!(
        old.unwrap(&forged, TENANT),
        Err(CredentialsError::DataKeyUndecryptable { .. })
    ));

    // A rotation run again after being cut short leaves rotated keys as they are.
    assert_eq!(rewrap(&old, &new, &rotated, TENANT).unwrap(), rotated);
    // A key under neither master key is an error that names the keys.
    let stranger = MasterKey::generate().wrap(&data_key, TENANT);
    assert!(matches!(
        rewrap(&old, &new, &stranger, TENANT),
        Err(CredentialsError::WrongMasterKey { .. })
    ));
}

#[test]
fn debug_output_shows_no_key_material_or_secret() {
    let master = MasterKey::generate();
    let debug = format!("{master:?}");
    assert_eq!(debug, format!("MasterKey {{ id: {:?}, .. }}", master.id()));
    for rendering in renderings(master.bytes_for_tests()) {
        assert!(!debug.contains(&rendering), "{debug}");
        assert!(!format!("{master:#?}").contains(&rendering));
    }

    let data_key = DataKey::generate();
    let debug = format!("{data_key:?}");
    for rendering in renderings(data_key.bytes()) {
        assert!(!debug.contains(&rendering), "{debug}");
        assert!(!format!("{data_key:#?}").contains(&rendering));
    }

    let password = secret(PASSWORD);
    let debug = format!("{password:?} {password:#?}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    let opened = data_key
        .open(
            &data_key.seal(&password, TENANT, CONNECTOR),
            TENANT,
            CONNECTOR,
        )
        .unwrap();
    assert!(!format!("{opened:?}").contains(PASSWORD));
}

#[test]
fn a_new_key_file_is_private_to_its_owner_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");

    let key = MasterKey::write_new_file(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, key_file_text(&key));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    let err = MasterKey::write_new_file(&path).unwrap_err();
    assert!(
        matches!(err, CredentialsError::KeyFileExists { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    let read = MasterKey::from_env_or_file(None, &path).unwrap().unwrap();
    assert_eq!(read.id(), key.id());
    assert_eq!(read.bytes_for_tests(), key.bytes_for_tests());
}

#[test]
fn the_environment_takes_precedence_over_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let from_file = MasterKey::write_new_file(&path).unwrap();
    let from_env = MasterKey::generate();

    let env_text = BASE64.encode(from_env.bytes_for_tests());
    let key = MasterKey::from_env_or_file(Some(&env_text), &path)
        .unwrap()
        .unwrap();
    assert_eq!(key.id(), from_env.id());
    assert_ne!(key.id(), from_file.id());

    assert!(
        MasterKey::from_env_or_file(None, &dir.path().join("absent.key"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_malformed_master_key_is_an_error_that_does_not_echo_it() {
    let key = MasterKey::generate();
    let valid = BASE64.encode(key.bytes_for_tests());
    let malformed = [
        // 31 bytes.
        BASE64.encode(&key.bytes_for_tests()[..31]),
        // 33 bytes.
        BASE64.encode([7u8; 33]),
        // A character base64 does not have, which the decoder's own error would quote.
        format!("{}#", &valid[..43]),
        // Hex, a likely mistake.
        key.bytes_for_tests()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        String::new(),
    ];
    for value in &malformed {
        let err = MasterKey::from_env_or_file(Some(value), Path::new("/nonexistent")).unwrap_err();
        assert!(
            matches!(err, CredentialsError::MalformedMasterKey { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(MASTER_KEY_ENV), "{message}");
        assert!(message.contains("base64"), "{message}");
        assert!(message.contains("32"), "{message}");
        for shown in [&message, &format!("{err:?}")] {
            if !value.is_empty() {
                assert!(!shown.contains(value.as_str()), "{shown}");
            }
            assert!(!shown.contains(&valid[..8]), "{shown}");
            assert!(!shown.contains('#'), "{shown}");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    std::fs::write(&path, format!("{}\n", &malformed[0])).unwrap();
    let err = MasterKey::from_env_or_file(None, &path).unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(!message.contains(&malformed[0]), "{message}");
}

#[test]
fn starting_without_a_master_key_fails_only_when_encrypted_credentials_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");

    let err = MasterKey::load_or_create(None, &path, true).unwrap_err();
    assert!(
        matches!(err, CredentialsError::MasterKeyMissing { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(MASTER_KEY_ENV), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(!path.exists(), "no key file is made to hide the lost one");

    // A fresh install: a key file is generated, and the next start reads it.
    let created = MasterKey::load_or_create(None, &path, false).unwrap();
    assert!(path.exists());
    let loaded = MasterKey::load_or_create(None, &path, true).unwrap();
    assert_eq!(loaded.id(), created.id());
}
