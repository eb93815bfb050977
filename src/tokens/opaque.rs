//! Opaque secrets (refresh tokens, client secrets): 256 random bits from
//! ring's `SystemRandom`, stored only as a SHA-256 digest. A high-entropy
//! secret needs no slow hash; the digest is compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

use crate::secret::Secret;

/// A new 256-bit secret, base64url without padding (43 characters).
pub fn generate() -> Result<Secret, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(Secret::new(URL_SAFE_NO_PAD.encode(bytes)))
}

/// Hex SHA-256 of a secret: what the database keeps.
pub fn digest(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `secret` hashes to `stored`, in time independent of where they differ.
pub fn matches(secret: &str, stored: &str) -> bool {
    use subtle::ConstantTimeEq;
    let candidate = digest(secret);
    candidate.len() == stored.len() && bool::from(candidate.as_bytes().ct_eq(stored.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_256_bit_and_distinct() {
        let (Ok(a), Ok(b)) = (generate(), generate()) else { panic!("rng") };
        assert_eq!(a.expose().len(), 43);
        assert_ne!(a, b);
    }

    #[test]
    fn only_the_right_secret_matches_its_digest() {
        let stored = digest("s3cret");
        assert!(matches("s3cret", &stored));
        assert!(!matches("s3creT", &stored));
    }
}
