//! Resume tickets: what a host presents to get its registration and
//! sessions back after a lost connection, signed rather than stored so
//! that a restarted server, or another replica, can check them (see
//! DESIGN.md, "Signed, not stored").
//!
//! A ticket is HMAC-SHA256 under the server's [`StateKey`] over what it
//! binds, base64url without padding (43 characters). It carries nothing
//! itself: the host sends the fields in the clear beside it, and the
//! server recomputes the tag. What a ticket binds:
//! - a host ticket: the owner (admitted identity), the task ID, the host
//!   name and the host ID;
//! - a session ticket: the same, and the session ID;
//! - a guest token: the task ID, host name, session ID, guest ID and role,
//!   and the host's grace period, which it also carries in the clear
//!   (`{grace_ms}.{tag}`). The owner is not in it: the guest does not know
//!   it, and a session ID is only ever restored by its owner's host.
//!
//! A ticket alone does nothing. The resuming host must also be admitted
//! again as the same owner (host token or OIDC identity) and present the
//! task's secrets, so a stolen ticket lets no one else resume.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::registry::Owner;

/// Shortest state key file, in bytes (32: the HMAC-SHA256 block's worth
/// of entropy the tickets rely on).
pub const MIN_STATE_KEY_BYTES: usize = 32;

/// Why a state key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StateKeyError {
    /// The file could not be read.
    #[error("cannot read the state key file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds fewer than [`MIN_STATE_KEY_BYTES`] bytes.
    #[error(
        "the state key file {0} is shorter than {MIN_STATE_KEY_BYTES} bytes; \
         make one with `head -c 32 /dev/urandom > FILE`"
    )]
    Short(std::path::PathBuf),
}

/// The key resume tickets are signed with. Its `Debug` output shows no
/// byte of it.
#[derive(Clone)]
pub struct StateKey(Arc<[u8]>, bool);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(..)")
    }
}

impl Default for StateKey {
    fn default() -> Self {
        Self::random()
    }
}

impl StateKey {
    /// A random key (32 bytes from the OS): tickets then work only until
    /// this server stops. After a restart, hosts register again as new
    /// ones and their old sessions end.
    ///
    /// # Panics
    /// Only if the operating system has no source of randomness.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random number generator failed");
        Self(bytes.into(), false)
    }

    /// A key of these bytes, the same for every server given them (as
    /// from a file): for embedding and tests.
    pub fn shared(bytes: [u8; 32]) -> Self {
        Self(Arc::new(bytes), true)
    }

    /// Whether the key came from a file or [`shared`](Self::shared), so that a restarted server (or
    /// another replica) can check what this one signed.
    pub fn is_persistent(&self) -> bool {
        self.1
    }

    /// The key in `path` (its raw bytes, at least
    /// [`MIN_STATE_KEY_BYTES`]), the same on every replica and across
    /// restarts (`serve --state-key-file`).
    ///
    /// # Errors
    /// [`StateKeyError::Read`], [`StateKeyError::Short`].
    pub fn from_file(path: &Path) -> Result<Self, StateKeyError> {
        let bytes = std::fs::read(path).map_err(|source| StateKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        if bytes.len() < MIN_STATE_KEY_BYTES {
            return Err(StateKeyError::Short(path.to_owned()));
        }
        Ok(Self(bytes.into(), true))
    }

    fn mac(&self, kind: &str, fields: &[&str]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"rendezvous/v1/");
        mac.update(kind.as_bytes());
        for field in fields {
            // Length-prefixed, so that no two field lists sign alike.
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }

    fn sign(&self, kind: &str, fields: &[&str]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(kind, fields).finalize().into_bytes())
    }

    fn verify(&self, kind: &str, fields: &[&str], ticket: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(ticket) else {
            return false;
        };
        // Constant time.
        self.mac(kind, fields).verify_slice(&tag).is_ok()
    }

    /// The resume ticket of host `host_id`, named `host` in task `task` of
    /// `owner`.
    pub fn host_ticket(&self, owner: &Owner, task: &str, host: &str, host_id: &str) -> String {
        self.sign("host", &[owner.as_str(), task, host, host_id])
    }

    /// Whether `ticket` is [`host_ticket`](Self::host_ticket) of these.
    pub fn verify_host_ticket(
        &self,
        owner: &Owner,
        task: &str,
        host: &str,
        host_id: &str,
        ticket: &str,
    ) -> bool {
        self.verify("host", &[owner.as_str(), task, host, host_id], ticket)
    }

    /// The resume ticket of session `session` of that host.
    pub fn session_ticket(&self, owner: &Owner, task: &str, host: &str, session: &str) -> String {
        self.sign("session", &[owner.as_str(), task, host, session])
    }

    /// Whether `ticket` is [`session_ticket`](Self::session_ticket) of
    /// these.
    pub fn verify_session_ticket(
        &self,
        owner: &Owner,
        task: &str,
        host: &str,
        session: &str,
        ticket: &str,
    ) -> bool {
        self.verify("session", &[owner.as_str(), task, host, session], ticket)
    }
}

/// Whom a guest token is for: what it binds, besides the host's grace
/// period.
#[derive(Debug, Clone, Copy)]
pub struct GuestClaims<'a> {
    /// The task ID.
    pub task: &'a str,
    /// The host's name in the task.
    pub host: &'a str,
    /// The session ID.
    pub session: &'a str,
    /// The guest ID.
    pub guest: &'a str,
    /// The guest's role.
    pub role: rendezvous_proto::Role,
}

impl GuestClaims<'_> {
    fn sign(&self, key: &StateKey, grace_ms: &str) -> Hmac<Sha256> {
        key.mac(
            "guest",
            &[
                self.task,
                self.host,
                self.session,
                self.guest,
                self.role.as_str_name(),
                grace_ms,
            ],
        )
    }
}

impl StateKey {
    /// The guest token for `claims`, whose host keeps its sessions for
    /// `grace` after losing its connection (at most `u64::MAX` ms).
    pub fn guest_token(&self, claims: &GuestClaims<'_>, grace: std::time::Duration) -> String {
        let grace_ms = u64::try_from(grace.as_millis())
            .unwrap_or(u64::MAX)
            .to_string();
        let tag = URL_SAFE_NO_PAD.encode(claims.sign(self, &grace_ms).finalize().into_bytes());
        format!("{grace_ms}.{tag}")
    }

    /// The grace period in `token` when it is
    /// [`guest_token`](Self::guest_token) of `claims`; `None` otherwise
    /// (another key, field, role, or not a guest token at all).
    pub fn verify_guest_token(
        &self,
        claims: &GuestClaims<'_>,
        token: &str,
    ) -> Option<std::time::Duration> {
        let (grace_ms, tag) = token.split_once('.')?;
        let grace = grace_ms.parse::<u64>().ok()?;
        // Only the canonical decimal form: one token per guest.
        if grace.to_string() != grace_ms {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Constant time.
        claims
            .sign(self, grace_ms)
            .verify_slice(&tag)
            .is_ok()
            .then(|| std::time::Duration::from_millis(grace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_verify_only_for_what_they_bind_and_under_their_key() {
        let key = StateKey::random();
        let owner = Owner::open();
        let ticket = key.host_ticket(&owner, "t", "default", "h1");
        assert_eq!(ticket.len(), 43);
        assert!(key.verify_host_ticket(&owner, "t", "default", "h1", &ticket));
        assert!(!key.verify_host_ticket(&owner, "t", "default", "h2", &ticket));
        assert!(!key.verify_host_ticket(&owner, "u", "default", "h1", &ticket));
        let other_owner = Owner::token("ci");
        assert!(!key.verify_host_ticket(&other_owner, "t", "default", "h1", &ticket));
        assert!(!StateKey::random().verify_host_ticket(&owner, "t", "default", "h1", &ticket));
        // A host ticket is not a session ticket of the same strings.
        assert!(!key.verify_session_ticket(&owner, "t", "default", "h1", &ticket));
        assert!(!key.verify_host_ticket(&owner, "t", "default", "h1", "not base64!"));
        assert!(!key.verify_host_ticket(&owner, "t", "default", "h1", ""));
        // Field boundaries count.
        let a = key.session_ticket(&owner, "ab", "c", "s");
        assert!(!key.verify_session_ticket(&owner, "a", "bc", "s", &a));
    }

    #[test]
    fn guest_tokens_verify_only_for_their_guest_role_and_key() {
        use rendezvous_proto::Role;
        let key = StateKey::random();
        let grace = std::time::Duration::from_secs(300);
        let claims = |session, guest, role| GuestClaims {
            task: "t",
            host: "default",
            session,
            guest,
            role,
        };
        let token = key.guest_token(&claims("s1", "g1", Role::ReadWrite), grace);
        assert!(token.starts_with("300000."));
        let check = |k: &StateKey, session, guest, role, token: &str| {
            k.verify_guest_token(&claims(session, guest, role), token)
        };
        assert_eq!(
            check(&key, "s1", "g1", Role::ReadWrite, &token),
            Some(grace)
        );
        assert_eq!(check(&key, "s2", "g1", Role::ReadWrite, &token), None);
        assert_eq!(check(&key, "s1", "g2", Role::ReadWrite, &token), None);
        assert_eq!(check(&key, "s1", "g1", Role::ReadOnly, &token), None);
        assert_eq!(
            check(&StateKey::random(), "s1", "g1", Role::ReadWrite, &token),
            None
        );
        // The grace in the clear is signed: a longer one does not verify.
        let tag = token.split_once('.').unwrap().1;
        assert_eq!(
            check(&key, "s1", "g1", Role::ReadWrite, &format!("900000.{tag}")),
            None
        );
        assert_eq!(
            check(&key, "s1", "g1", Role::ReadWrite, &format!("0300000.{tag}")),
            None
        );
        for junk in ["", ".", "300000", "x.y", "300000.!!"] {
            assert_eq!(
                check(&key, "s1", "g1", Role::ReadWrite, junk),
                None,
                "{junk:?}"
            );
        }
    }

    #[test]
    fn key_files_must_be_long_enough() {
        let dir = std::env::temp_dir().join(format!("state-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, [1u8; 31]).unwrap();
        assert!(matches!(
            StateKey::from_file(&short),
            Err(StateKeyError::Short(_))
        ));
        let good = dir.join("good");
        std::fs::write(&good, [7u8; 32]).unwrap();
        let a = StateKey::from_file(&good).unwrap();
        let b = StateKey::from_file(&good).unwrap();
        let t = a.host_ticket(&Owner::open(), "t", "h", "id");
        assert!(b.verify_host_ticket(&Owner::open(), "t", "h", "id", &t));
        assert!(format!("{a:?}") == "StateKey(..)");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
