//! The task secret as a type that cannot leak by accident: its `Debug`
//! prints a placeholder, and it has no `Display`.

use std::fmt;

/// A task's secret (read-write or read-only), as a guest presents it.
///
/// `Debug` never shows the value, so a `Secret` inside options, arguments or
/// errors can be printed safely. Use [`Secret::expose`] only to put it on the
/// wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// The text that stands for a secret wherever one would be shown.
pub const REDACTED: &str = "[redacted]";

/// A secret that cannot be used: it is empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the secret is empty: pass --secret or set RENDEZVOUS_SECRET")]
pub struct EmptySecret;

impl Secret {
    /// Wraps `secret`. Only emptiness is checked here: any other wrong
    /// secret is refused by the server, which answers an unknown task and a
    /// wrong secret alike.
    ///
    /// # Errors
    /// [`EmptySecret`] when `secret` is empty.
    pub fn new(secret: impl Into<String>) -> Result<Self, EmptySecret> {
        let secret = secret.into();
        if secret.is_empty() {
            Err(EmptySecret)
        } else {
            Ok(Self(secret))
        }
    }

    /// The secret in clear text, for the request that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of this secret replaced by [`REDACTED`],
    /// for text that came from elsewhere (a server's error message) and is
    /// about to be shown.
    pub fn redact(&self, text: &str) -> String {
        text.replace(self.0.as_str(), REDACTED)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl std::str::FromStr for Secret {
    type Err = EmptySecret;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_the_secret() {
        let secret = Secret::new("hunter2-hunter2-hunter2").unwrap();
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert_eq!(secret.expose(), "hunter2-hunter2-hunter2");
    }

    #[test]
    fn empty_secret_is_refused() {
        assert_eq!(Secret::new(""), Err(EmptySecret));
        assert!("x".parse::<Secret>().is_ok());
    }

    #[test]
    fn redact_replaces_every_occurrence() {
        let secret = Secret::new("s3cr3t").unwrap();
        assert_eq!(
            secret.redact("a s3cr3t b s3cr3t"),
            "a [redacted] b [redacted]"
        );
    }
}
