//! Secrets and tokens: generation, digests, constant-time comparison. The
//! one place that decides whether a credential matches.
//!
//! The server keeps only SHA-256 digests of secrets and tokens, compares
//! digests in constant time, and never logs, formats or returns a secret:
//! [`Digest`]'s `Debug` prints nothing of the value.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a generated token: 128 bits.
pub const TOKEN_BYTES: usize = 16;

/// The SHA-256 digest of a secret or token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(..)")
    }
}

impl Digest {
    /// Digest of `secret`.
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `secret` has this digest, in time independent of where the
    /// digests differ.
    pub fn matches(&self, secret: &str) -> bool {
        self.same_as(&Self::of(secret))
    }

    /// The first 6 bytes as 12 hex digits: a name for a credential that
    /// has none, which tells nothing of the credential.
    pub fn short_hex(&self) -> String {
        self.0[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether both digests are equal, in time independent of where they
    /// differ.
    pub fn same_as(&self, other: &Digest) -> bool {
        other.0.ct_eq(&self.0).into()
    }

    /// The digest as 64 lower-case hex digits, as a shared store keeps it
    /// (the digest, never the secret).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A digest from [`to_hex`](Self::to_hex)'s 64 hex digits; `None` for
    /// anything else (a store's data is checked, not trusted).
    pub fn from_hex(hex: &str) -> Option<Self> {
        // from_str_radix alone would take a sign ("+f").
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(bytes))
    }
}

/// A new random token: 128 bits from the OS, base64url without padding (22
/// characters).
///
/// # Panics
/// Only if the operating system has no source of randomness, in which case
/// no credential the server could make would be safe.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_only_their_secret() {
        let d = Digest::of("correct horse battery staple");
        assert!(d.matches("correct horse battery staple"));
        assert!(!d.matches("correct horse battery stapl"));
        assert_eq!(format!("{d:?}"), "Digest(..)");
    }

    #[test]
    fn a_digest_comes_back_from_its_hex_and_nothing_else_passes() {
        let d = Digest::of("correct horse battery staple");
        let hex = d.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(Digest::from_hex(&hex).unwrap().same_as(&d));
        assert!(Digest::from_hex(&hex[..62]).is_none());
        assert!(Digest::from_hex(&format!("{}zz", &hex[..62])).is_none());
        assert!(Digest::from_hex(&format!("{}+1", &hex[..62])).is_none());
        assert!(Digest::from_hex(&"é".repeat(32)).is_none());
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
    }
}
