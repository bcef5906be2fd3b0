//! One-time pairing codes: printed by the server's first start (or `parley pair`), traded
//! for a token with `POST /api/pair`.

use crate::store::{PairingGrant, Store, StoreError};

/// Letters and digits that cannot be mistaken for one another.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// How long a pairing code stays valid.
pub const PAIRING_TTL_MS: i64 = 60 * 60 * 1000;

/// Makes a code like `K7QD-M2XH` granting `grant`, stores its hash, and returns it.
pub async fn new_code(store: &dyn Store, grant: &PairingGrant) -> Result<String, StoreError> {
    let random = super::tokens::random_hex(8);
    let bytes = hex::decode(random).unwrap_or_default();
    let chars: String =
        bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
    let code = format!("{}-{}", &chars[..4], &chars[4..]);
    store
        .create_pairing_code(
            &super::tokens::hash(&normalize(&code)),
            crate::clock::now_ms() + PAIRING_TTL_MS,
            grant,
        )
        .await?;
    Ok(code)
}

/// A code as typed by a person: case and separators do not matter.
pub fn normalize(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}
