use super::*;
use sha2::Digest;

const UID: &str = "5f0c1e2a-8d6b-4c3f-9a7e-2b1d0c9e8f7a";

fn hash(pairs: &[(&str, &str)]) -> String {
    config_hash(UID, pairs.iter().map(|(k, v)| (*k, v.as_bytes())))
}

#[test]
fn config_hash_ignores_key_order_and_changes_with_any_value() {
    let base = hash(&[("apiUrl", "https://x"), ("token", "t1")]);
    assert_eq!(base, hash(&[("token", "t1"), ("apiUrl", "https://x")]));
    assert_eq!(base.len(), 64, "hex HMAC-SHA256");
    assert_ne!(base, hash(&[("apiUrl", "https://x"), ("token", "t2")]));
    assert_ne!(base, hash(&[("apiUrl", "https://y"), ("token", "t1")]));
    assert_ne!(base, hash(&[("apiUrl", "https://x")]));
    // Boundaries are part of the content.
    assert_ne!(hash(&[("a", "bc")]), hash(&[("ab", "c")]));
}

/// Without the Secret's uid, the content cannot be guessed from the hash: the same
/// content under another Secret, or hashed without a key, gives another value.
#[test]
fn config_hash_is_keyed_by_the_secret() {
    let pairs = [("token", "t1")];
    let keyed = hash(&pairs);
    let other = config_hash("another-uid", pairs.iter().map(|(k, v)| (*k, v.as_bytes())));
    assert_ne!(keyed, other);
    let mut plain = Sha256::new();
    for part in ["token", "t1"] {
        plain.update((part.len() as u64).to_be_bytes());
        plain.update(part);
    }
    assert_ne!(keyed, hex::encode(plain.finalize()));
}

#[test]
fn config_is_an_env_config_any_and_needs_text_values() {
    let data = BTreeMap::from([
        ("token".to_string(), ByteString(b"s3cret".to_vec())),
        ("apiUrl".to_string(), ByteString(b"https://x".to_vec())),
    ]);
    let config = ConnectorConfig::from_secret(UID, &data).unwrap();
    assert_eq!(
        config.to_any(),
        json!({"@type": ENV_CONFIG_TYPE, "configuration": {
            "apiUrl": {"stringValue": "https://x"}, "token": {"stringValue": "s3cret"}}})
    );
    assert_eq!(
        config.hash,
        hash(&[("token", "s3cret"), ("apiUrl", "https://x")])
    );
    let binary = BTreeMap::from([("cert".to_string(), ByteString(vec![0xff, 0xfe]))]);
    assert_eq!(
        ConnectorConfig::from_secret(UID, &binary).err().as_deref(),
        Some("cert")
    );
}
