//! Validated names shared by hosts, guests and the server.
//!
//! Task IDs, host names and session IDs are checked at the edge (CLI,
//! builder, server handlers) and carried as newtypes afterwards, so that
//! code past the edge never sees an unchecked string. A malformed one
//! cannot name anything that exists, so the server refuses it with
//! `INVALID_ARGUMENT` before it looks at any credential.

use std::fmt;

/// Longest task ID, host name or session ID, in characters.
pub const MAX_NAME_LEN: usize = 128;

/// The host name used when a host or guest gives none.
pub const DEFAULT_HOST_NAME: &str = "default";

/// Shortest secret the server accepts, in characters (Unicode scalar
/// values, not bytes): 22 base64url characters carry 132 bits, above the
/// 128-bit floor. The server and the host both check it with
/// [`secret_long_enough`].
pub const MIN_SECRET_LEN: usize = 22;

/// Most labels a host may publish (32).
pub const MAX_LABELS: usize = 32;

/// Longest label key, and longest label value, in bytes (256).
pub const MAX_LABEL_BYTES: usize = 256;

/// Fewest distinct characters a secret must have (10). A generated
/// secret (22 random base64url characters) has about 18; one below 10
/// (`aaaa…`, `abababab…`) was typed, not drawn, and is refused.
pub const MIN_SECRET_DISTINCT_CHARS: usize = 10;

/// Whether `secret` has at least [`MIN_SECRET_LEN`] characters.
pub fn secret_long_enough(secret: &str) -> bool {
    secret.chars().count() >= MIN_SECRET_LEN
}

/// Why a secret (or a host token) is refused as too weak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeakSecret {
    /// Fewer than [`MIN_SECRET_LEN`] characters.
    Short,
    /// Fewer than [`MIN_SECRET_DISTINCT_CHARS`] distinct characters.
    Repetitive,
}

impl fmt::Display for WeakSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short => write!(
                f,
                "must be at least {MIN_SECRET_LEN} characters (128 random bits)"
            ),
            Self::Repetitive => write!(
                f,
                "has fewer than {MIN_SECRET_DISTINCT_CHARS} distinct characters, so it was not \
                 drawn at random"
            ),
        }
    }
}

impl std::error::Error for WeakSecret {}

/// Checks that `secret` looks drawn at random: at least [`MIN_SECRET_LEN`]
/// characters, of which at least [`MIN_SECRET_DISTINCT_CHARS`] distinct.
/// The server and the host both check it.
///
/// # Errors
/// The first rule `secret` breaks.
pub fn check_secret_strength(secret: &str) -> Result<(), WeakSecret> {
    if !secret_long_enough(secret) {
        return Err(WeakSecret::Short);
    }
    let distinct: std::collections::BTreeSet<char> = secret.chars().collect();
    if distinct.len() < MIN_SECRET_DISTINCT_CHARS {
        return Err(WeakSecret::Repetitive);
    }
    Ok(())
}

/// Labels over the bounds; the text says which bound and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidLabels {
    /// More than [`MAX_LABELS`] labels: how many.
    TooMany(usize),
    /// A key longer than [`MAX_LABEL_BYTES`]: its length in bytes.
    KeyTooLong(usize),
    /// A value longer than [`MAX_LABEL_BYTES`]: its length in bytes.
    ValueTooLong(usize),
}

impl fmt::Display for InvalidLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooMany(n) => write!(f, "{n} labels"),
            Self::KeyTooLong(n) => write!(f, "a label key of {n} bytes"),
            Self::ValueTooLong(n) => write!(f, "a label value of {n} bytes"),
        }?;
        write!(
            f,
            " (at most {MAX_LABELS} labels, keys and values of at most {MAX_LABEL_BYTES} bytes)"
        )
    }
}

impl std::error::Error for InvalidLabels {}

/// Checks labels against [`MAX_LABELS`] and [`MAX_LABEL_BYTES`].
///
/// # Errors
/// The first bound `labels` is over.
pub fn check_labels<'a>(
    labels: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<(), InvalidLabels> {
    if labels.len() > MAX_LABELS {
        return Err(InvalidLabels::TooMany(labels.len()));
    }
    for (key, value) in labels {
        if key.len() > MAX_LABEL_BYTES {
            return Err(InvalidLabels::KeyTooLong(key.len()));
        }
        if value.len() > MAX_LABEL_BYTES {
            return Err(InvalidLabels::ValueTooLong(value.len()));
        }
    }
    Ok(())
}

/// Smallest and largest terminal dimension, in character cells.
pub const MIN_CELLS: u32 = 1;
/// See [`MIN_CELLS`].
pub const MAX_CELLS: u32 = 1000;

/// A name that failed validation. The text says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidName {
    /// Which kind of name: "task ID", "host name" or "session ID".
    pub kind: &'static str,
}

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}: use 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ : -",
            self.kind
        )
    }
}

impl std::error::Error for InvalidName {}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks `s`: 1–128 characters of `[A-Za-z0-9._:-]`.
            ///
            /// # Errors
            /// [`InvalidName`] when `s` is empty, too long, or has another
            /// character.
            pub fn new(s: impl Into<String>) -> Result<Self, InvalidName> {
                let s = s.into();
                if valid_name(&s) {
                    Ok(Self(s))
                } else {
                    Err(InvalidName { kind: $kind })
                }
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// A CI task's ID: 1–128 characters of `[A-Za-z0-9._:-]`.
    TaskId,
    "task ID"
);
name_type!(
    /// A host's name within its task: 1–128 characters of `[A-Za-z0-9._:-]`.
    HostName,
    "host name"
);

name_type!(
    /// A session's ID, chosen by the server: 1–128 characters of
    /// `[A-Za-z0-9._:-]` (the server makes 32 hex digits).
    SessionId,
    "session ID"
);

impl HostName {
    /// Reads a host name from the wire, where empty means
    /// [`DEFAULT_HOST_NAME`].
    ///
    /// # Errors
    /// [`InvalidName`] as for [`HostName::new`].
    pub fn or_default(s: &str) -> Result<Self, InvalidName> {
        if s.is_empty() {
            Ok(Self(DEFAULT_HOST_NAME.to_owned()))
        } else {
            Self::new(s)
        }
    }
}

/// Clamps a terminal dimension to `MIN_CELLS..=MAX_CELLS`; 0 becomes
/// `default`.
pub fn clamp_cells(value: u32, default: u32) -> u32 {
    if value == 0 {
        default
    } else {
        value.clamp(MIN_CELLS, MAX_CELLS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_follow_the_charset() {
        assert!(TaskId::new("build-42.linux:x86_64").is_ok());
        assert!(TaskId::new("").is_err());
        assert!(TaskId::new("a/b").is_err());
        assert!(TaskId::new("x".repeat(129)).is_err());
        assert!(TaskId::new("x".repeat(128)).is_ok());
    }

    #[test]
    fn session_ids_follow_the_charset_and_are_not_echoed() {
        assert!(SessionId::new("0123456789abcdef0123456789abcdef").is_ok());
        assert!(SessionId::new("").is_err());
        let long = "x".repeat(1 << 20);
        let error = SessionId::new(long).unwrap_err().to_string();
        assert!(error.starts_with("invalid session ID"), "{error}");
        assert!(error.len() < 100, "{error}");
    }

    #[test]
    fn empty_host_name_is_default() {
        assert_eq!(HostName::or_default("").unwrap().as_str(), "default");
        assert!(HostName::or_default("a b").is_err());
    }

    #[test]
    fn cells_are_clamped() {
        assert_eq!(clamp_cells(0, 80), 80);
        assert_eq!(clamp_cells(5000, 80), 1000);
        assert_eq!(clamp_cells(7, 80), 7);
    }
}
