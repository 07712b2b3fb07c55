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
    fn tokens_are_long_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
    }
}
