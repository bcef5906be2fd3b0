//! API tokens: 256 random bits shown once, stored only as their SHA-256, compared in
//! constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{Store, StoreError, TokenRecord};

/// Prefix that makes a Parley token recognisable (in secret scanners, for instance).
const PREFIX: &str = "pk_";

/// Hex SHA-256 of a secret.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored`, compared in constant time.
pub fn matches(secret: &str, stored: &str) -> bool {
    hash(secret).as_bytes().ct_eq(stored.as_bytes()).into()
}

/// `bytes` of randomness from the operating system, hex-encoded.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS random source failing leaves no safe way to make a secret.
    getrandom::fill(&mut buf).expect("the operating system's random source works");
    hex::encode(buf)
}

/// Whether `name` is a valid user name: 1-64 of `A-Z a-z 0-9 . _ -`, not `.` or `..`.
pub fn valid_user(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

/// Creates a token for `user` and returns it with its secret (shown once).
pub async fn issue(
    store: &dyn Store,
    user: &str,
    admin: bool,
    label: Option<&str>,
) -> Result<(TokenRecord, String), StoreError> {
    let (record, secret) = new_token(user, admin, label);
    store.create_token(&record).await?;
    Ok((record, secret))
}

/// A new token for `user`, not yet stored, with its secret.
pub fn new_token(user: &str, admin: bool, label: Option<&str>) -> (TokenRecord, String) {
    let secret = format!("{PREFIX}{}", random_hex(32));
    let record = TokenRecord {
        id: format!("tok_{}", random_hex(6)),
        user: user.to_owned(),
        label: label.map(str::to_owned),
        admin,
        created_at: crate::clock::now_ms(),
        revoked_at: None,
        hash: hash(&secret),
    };
    (record, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_compare() {
        let secret = format!("{PREFIX}{}", random_hex(32));
        assert_eq!(secret.len(), 3 + 64);
        assert!(matches(&secret, &hash(&secret)));
        assert!(!matches("pk_other", &hash(&secret)));
        assert!(valid_user("alice.b-2"));
        assert!(!valid_user("../x") && !valid_user("") && !valid_user(".."));
    }
}
