//! Source keys: made from the OS's random source (256 bits), shown once, kept only as digests,
//! and checked in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A new key: 32 random bytes, URL-safe base64 (43 characters, usable in an `icecast://` URL).
pub fn new_key() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What is stored in place of `key`.
pub fn digest(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `presented` is the key whose digest is `stored`, in constant time.
pub fn matches(presented: &str, stored: &str) -> bool {
    digest(presented).as_bytes().ct_eq(stored.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_matches_its_digest_only() {
        let key = new_key();
        assert_eq!(key.len(), 43);
        assert_ne!(key, new_key());
        let stored = digest(&key);
        assert!(matches(&key, &stored));
        assert!(!matches(&new_key(), &stored));
        assert!(!matches("", &stored));
    }
}
