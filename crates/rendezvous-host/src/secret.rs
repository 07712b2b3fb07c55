//! Task secrets: generating them, and keeping them out of `Debug` output.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::HostError;

/// Random bytes in a generated secret: 192 bits, well above the 128-bit
/// floor, which encode to 32 base64url characters.
pub const GENERATED_SECRET_BYTES: usize = 24;

/// A secret held in memory. Its `Debug` output is redacted, so a stray
/// `{:?}` or `tracing` field never prints it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps a secret the caller chose; the builder checks its length.
    pub(crate) fn new(s: String) -> Self {
        Self(s)
    }

    /// Generates a fresh secret from the operating system's random source:
    /// [`GENERATED_SECRET_BYTES`] bytes as base64url without padding.
    ///
    /// # Errors
    /// [`HostError::Random`] when the OS random source fails.
    pub(crate) fn generate() -> Result<Self, HostError> {
        let mut bytes = [0u8; GENERATED_SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| HostError::Random(e.to_string()))?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The secret in clear text: only for Hello and the guest URL.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rendezvous_proto::ids::MIN_SECRET_LEN;

    use super::*;

    #[test]
    fn generated_secret_is_long_base64url_without_padding() {
        let secret = Secret::generate().unwrap();
        let s = secret.expose();
        assert!(s.len() >= MIN_SECRET_LEN, "{} characters", s.len());
        assert_eq!(s.len(), 32);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "not base64url: {s}"
        );
        let decoded = URL_SAFE_NO_PAD.decode(s).unwrap();
        assert_eq!(decoded.len(), GENERATED_SECRET_BYTES);
    }

    #[test]
    fn generated_secrets_are_unique() {
        let secrets: HashSet<String> = (0..1000)
            .map(|_| Secret::generate().unwrap().expose().to_owned())
            .collect();
        assert_eq!(secrets.len(), 1000);
    }

    #[test]
    fn debug_output_is_redacted() {
        let secret = Secret::new("super-secret-value-1234567890".into());
        let shown = format!("{secret:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
    }
}
