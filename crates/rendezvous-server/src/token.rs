//! Guest tokens: short-lived credentials a CI system mints for one task, so
//! that its web front end can embed a terminal without ever holding the
//! task's secret.
//!
//! A token is a JWT signed with HMAC-SHA256 (HS256) under the server's token
//! key (`rendezvous serve --token-key-file`). Claims: `sub` (the task ID),
//! `role` (`read-write` or `read-only`), `aud` (always `rendezvous`) and
//! `exp` (expiry, seconds since the Unix epoch). `rendezvous token` mints
//! one; any JWT library can too. A guest presents it in `token` instead of
//! `secret`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rendezvous_proto::Role;
use serde::{Deserialize, Serialize};

/// Shortest token key, in bytes: HS256 keys should be at least as long as
/// the hash (32 bytes).
pub const MIN_TOKEN_KEY_BYTES: usize = 32;

/// The audience every guest token names.
pub const AUDIENCE: &str = "rendezvous";

/// Longest lifetime `rendezvous token` mints, in seconds (7 days).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a token key or a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The key is too short.
    #[error("the token key must be at least {MIN_TOKEN_KEY_BYTES} bytes")]
    ShortKey,
    /// The token's lifetime is zero or too long.
    #[error("a token's lifetime must be between 1 s and 7 days")]
    Lifetime,
    /// The token has expired.
    #[error("the guest token has expired: ask for a new link")]
    Expired,
    /// Bad signature, malformed, wrong audience or algorithm, or the server
    /// has no token key.
    #[error("invalid guest token: ask for a new link")]
    Invalid,
}

/// The claims of a guest token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestClaims {
    /// The task ID the token is for.
    pub sub: String,
    /// `read-write` or `read-only`.
    pub role: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// The server's key for signing and checking guest tokens. Its `Debug`
/// prints nothing of the key.
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from raw bytes.
    ///
    /// # Errors
    /// [`TokenError::ShortKey`] under [`MIN_TOKEN_KEY_BYTES`].
    pub fn new(key: &[u8]) -> Result<Self, TokenError> {
        if key.len() < MIN_TOKEN_KEY_BYTES {
            return Err(TokenError::ShortKey);
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
        })
    }

    /// Mints a token for `task_id` with `role`, valid for `ttl`.
    ///
    /// # Errors
    /// [`TokenError::Lifetime`] when `ttl` is 0 or over [`MAX_TOKEN_TTL`].
    pub fn mint(&self, task_id: &str, role: Role, ttl: Duration) -> Result<String, TokenError> {
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(TokenError::Lifetime);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = GuestClaims {
            sub: task_id.to_owned(),
            role: role_name(role).to_owned(),
            aud: AUDIENCE.to_owned(),
            exp: (now + ttl).as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| TokenError::Invalid)
    }

    /// Checks a token and returns the task ID and role it grants.
    ///
    /// # Errors
    /// [`TokenError::Expired`], or [`TokenError::Invalid`] for anything
    /// else wrong with it.
    pub fn verify(&self, token: &str) -> Result<(String, Role), TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<GuestClaims>(token, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let role = match data.claims.role.as_str() {
            "read-write" => Role::ReadWrite,
            "read-only" => Role::ReadOnly,
            _ => return Err(TokenError::Invalid),
        };
        Ok((data.claims.sub, role))
    }
}

/// The claim value for `role`.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::ReadWrite => "read-write",
        Role::ReadOnly | Role::Unspecified => "read-only",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(&[7u8; 32]).unwrap()
    }

    #[test]
    fn tokens_round_trip_with_their_role() {
        let token = key()
            .mint("build-1", Role::ReadOnly, Duration::from_secs(60))
            .unwrap();
        assert_eq!(key().verify(&token), Ok(("build-1".into(), Role::ReadOnly)));
    }

    #[test]
    fn other_keys_and_tampering_are_refused() {
        let token = key()
            .mint("build-1", Role::ReadWrite, Duration::from_secs(60))
            .unwrap();
        let other = TokenKey::new(&[8u8; 32]).unwrap();
        assert_eq!(other.verify(&token), Err(TokenError::Invalid));
        let mut tampered = token.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert_eq!(key().verify(&tampered), Err(TokenError::Invalid));
        assert_eq!(key().verify("not a token"), Err(TokenError::Invalid));
    }

    #[test]
    fn expired_tokens_say_so() {
        let past = GuestClaims {
            sub: "t".into(),
            role: "read-write".into(),
            aud: AUDIENCE.into(),
            exp: 1,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &past, &key().encoding).unwrap();
        assert_eq!(key().verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn keys_and_lifetimes_are_bounded() {
        assert_eq!(TokenKey::new(&[0u8; 31]).err(), Some(TokenError::ShortKey));
        assert_eq!(
            key().mint("t", Role::ReadWrite, Duration::ZERO),
            Err(TokenError::Lifetime)
        );
        assert_eq!(format!("{:?}", key()), "TokenKey(..)");
    }
}
