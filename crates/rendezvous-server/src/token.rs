//! Guest tokens: short-lived credentials a CI system mints for one task, so
//! that its web front end can embed a terminal without ever holding the
//! task's secret.
//!
//! A token is a JWT signed either with HMAC-SHA256 (HS256) under the
//! server's token key (`rendezvous serve --token-key-file`), or by the CI
//! system's own private key, RS256, ES256 or EdDSA (also RS384…PS512 and
//! ES384), checked with its public keys (`--token-jwks-file`,
//! `--token-public-key-file` or `--token-jwks-url`; see [`crate::jwks`]:
//! the header's `kid` picks the key, and its `alg` must be that key's).
//! Claims, the same whoever signed:
//! - `task_id`: the task;
//! - `owner`: who the task belongs to, as its host was admitted (`open`, or
//!   `token:NAME` for a host token; see
//!   [`Owner`](crate::registry::Owner)). A token never reaches a task of
//!   the same ID that another owner's host registered;
//! - `role`: `read-write` or `read-only`;
//! - `aud`: always `rendezvous`;
//! - `exp`: expiry, seconds since the Unix epoch, at most
//!   [`MAX_TOKEN_TTL`] ahead, checked on every use, not only when minted;
//! - `nbf` (optional): not valid before, seconds since the Unix epoch;
//! - `sub` (optional): who the token was given to, for the logs;
//! - `host` (optional): the only host name the token attaches to;
//! - `session` (optional): the only session ID the token attaches to (it
//!   then joins that session and never opens a new shell).
//!
//! `rendezvous token` mints one; any JWT library can too. A guest presents
//! it in `token` instead of `secret`. No leeway is allowed on `exp` or
//! `nbf`: clocks on one CI platform agree to well under the lifetimes used.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rendezvous_proto::Role;
use serde::{Deserialize, Serialize};

use crate::jwks::KeySource;
use crate::registry::Owner;

/// Shortest token key, in bytes: HS256 keys should be at least as long as
/// the hash (32 bytes).
pub const MIN_TOKEN_KEY_BYTES: usize = 32;

/// The audience every guest token names.
pub const AUDIENCE: &str = "rendezvous";

/// Longest lifetime of a guest token, in seconds (7 days): `exp` may be at
/// most this far ahead of now, when minted and on every use.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a token key or a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The key is too short.
    #[error("the token key must be at least {MIN_TOKEN_KEY_BYTES} bytes")]
    ShortKey,
    /// The token's lifetime is zero or too long (minting), or its `exp` is
    /// more than 7 days ahead (using).
    #[error("a guest token's lifetime must be between 1 s and 7 days: ask for a new link")]
    Lifetime,
    /// The token has expired.
    #[error("the guest token has expired: ask for a new link")]
    Expired,
    /// The token's `nbf` is still ahead.
    #[error("the guest token is not valid yet: check the clock of the system that made it")]
    NotYetValid,
    /// Bad signature, malformed, wrong audience or algorithm, or the server
    /// has no token key.
    #[error("invalid guest token: ask for a new link")]
    Invalid,
}

/// The claims of a guest token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestClaims {
    /// The task ID the token is for.
    pub task_id: String,
    /// The task's owner (see the module docs).
    pub owner: String,
    /// `read-write` or `read-only`.
    pub role: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Who the token was given to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The only host name the token attaches to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The only session ID the token attaches to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// Longest `sub` a [`Grant`] carries, in bytes (256): a longer claim is
/// cut at a character boundary, so that logs, the audit log and the
/// host's notices stay bounded.
pub const MAX_SUB_BYTES: usize = 256;

/// What a valid guest token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The task ID.
    pub task_id: String,
    /// The task's owner.
    pub owner: Owner,
    /// The role.
    pub role: Role,
    /// Who the token was given to, if it says (at most
    /// [`MAX_SUB_BYTES`]).
    pub sub: Option<String>,
    /// The only host name it attaches to, if it says.
    pub host: Option<String>,
    /// The only session ID it attaches to, if it says.
    pub session: Option<String>,
}

impl GuestClaims {
    /// The claims of a token for `owner`'s task `task_id` with `role`,
    /// valid from now for `ttl`; no `sub`, `host` or `session` yet (set
    /// them, then [`TokenKey::sign`]).
    ///
    /// # Errors
    /// [`TokenError::Lifetime`] when `ttl` is 0 or over [`MAX_TOKEN_TTL`].
    pub fn new(
        task_id: &str,
        owner: &Owner,
        role: Role,
        ttl: Duration,
    ) -> Result<Self, TokenError> {
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(TokenError::Lifetime);
        }
        let now = now();
        Ok(Self {
            task_id: task_id.to_owned(),
            owner: owner.as_str().to_owned(),
            role: role_name(role).to_owned(),
            aud: AUDIENCE.to_owned(),
            exp: (now + ttl).as_secs(),
            nbf: Some(now.as_secs()),
            sub: None,
            host: None,
            session: None,
        })
    }
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
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

    /// Mints a token for `owner`'s task `task_id` with `role`, valid from
    /// now for `ttl`, given to `sub` if named.
    ///
    /// # Errors
    /// [`TokenError::Lifetime`] when `ttl` is 0 or over [`MAX_TOKEN_TTL`].
    pub fn mint(
        &self,
        task_id: &str,
        owner: &Owner,
        role: Role,
        ttl: Duration,
        sub: Option<&str>,
    ) -> Result<String, TokenError> {
        let mut claims = GuestClaims::new(task_id, owner, role, ttl)?;
        claims.sub = sub.map(str::to_owned);
        self.sign(&claims)
    }

    /// Signs `claims` as they are.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] if they cannot be encoded.
    pub fn sign(&self, claims: &GuestClaims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|_| TokenError::Invalid)
    }

    /// Checks a token and returns what it grants.
    ///
    /// # Errors
    /// [`TokenError::Expired`], [`TokenError::NotYetValid`],
    /// [`TokenError::Lifetime`] (`exp` more than [`MAX_TOKEN_TTL`] ahead),
    /// or [`TokenError::Invalid`] for anything else wrong with it.
    pub fn verify(&self, token: &str) -> Result<Grant, TokenError> {
        check_claims(token, &self.decoding, Algorithm::HS256)
    }
}

/// Checks a guest token signed either way: HS256 with `hmac`, or with one
/// of `public`'s keys (the header's `kid` and `alg` decide which).
///
/// # Errors
/// As [`TokenKey::verify`]; [`TokenError::Invalid`] also when the server
/// has no key of the token's kind, the `kid` is unknown, or the `alg` is
/// not its key's.
pub async fn verify(
    token: &str,
    hmac: Option<&TokenKey>,
    public: Option<&KeySource>,
) -> Result<Grant, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
    if header.alg == Algorithm::HS256 {
        return hmac.ok_or(TokenError::Invalid)?.verify(token);
    }
    let (key, algorithm) = public
        .ok_or(TokenError::Invalid)?
        .select(&header)
        .await
        .map_err(|_| TokenError::Invalid)?;
    check_claims(token, &key, algorithm)
}

/// Checks `token`'s signature with `key` under `algorithm` only, and its
/// claims, as the module docs say.
fn check_claims(token: &str, key: &DecodingKey, algorithm: Algorithm) -> Result<Grant, TokenError> {
    let mut validation = Validation::new(algorithm);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<GuestClaims>(token, key, &validation).map_err(|e| match e
        .kind()
    {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
        jsonwebtoken::errors::ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        _ => TokenError::Invalid,
    })?;
    let claims = data.claims;
    if claims.exp > (now() + MAX_TOKEN_TTL).as_secs() {
        return Err(TokenError::Lifetime);
    }
    let role = match claims.role.as_str() {
        "read-write" => Role::ReadWrite,
        "read-only" => Role::ReadOnly,
        _ => return Err(TokenError::Invalid),
    };
    Ok(Grant {
        task_id: claims.task_id,
        owner: Owner::from_claim(&claims.owner),
        role,
        sub: claims.sub.map(cut_sub),
        host: claims.host,
        session: claims.session,
    })
}

/// `sub` cut to [`MAX_SUB_BYTES`] at a character boundary.
fn cut_sub(mut sub: String) -> String {
    if sub.len() > MAX_SUB_BYTES {
        let mut end = MAX_SUB_BYTES;
        while !sub.is_char_boundary(end) {
            end -= 1;
        }
        sub.truncate(end);
    }
    sub
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

    fn claims(exp: u64) -> GuestClaims {
        GuestClaims {
            task_id: "t".into(),
            owner: "open".into(),
            role: "read-write".into(),
            aud: AUDIENCE.into(),
            exp,
            nbf: None,
            sub: None,
            host: None,
            session: None,
        }
    }

    #[test]
    fn tokens_round_trip_with_their_role_owner_and_subject() {
        let owner = Owner::token("ci");
        let token = key()
            .mint(
                "build-1",
                &owner,
                Role::ReadOnly,
                Duration::from_secs(60),
                Some("alice"),
            )
            .unwrap();
        assert_eq!(
            key().verify(&token),
            Ok(Grant {
                task_id: "build-1".into(),
                owner,
                role: Role::ReadOnly,
                sub: Some("alice".into()),
                host: None,
                session: None,
            })
        );
    }

    #[test]
    fn a_long_sub_is_cut_at_a_character_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let token = key()
            .mint(
                "build-1",
                &Owner::open(),
                Role::ReadWrite,
                Duration::from_secs(60),
                Some(&long),
            )
            .unwrap();
        let sub = key().verify(&token).unwrap().sub.unwrap();
        assert_eq!(sub.len(), MAX_SUB_BYTES);
        assert!(long.starts_with(&sub));
    }

    #[test]
    fn other_keys_and_tampering_are_refused() {
        let token = key()
            .mint(
                "build-1",
                &Owner::open(),
                Role::ReadWrite,
                Duration::from_secs(60),
                None,
            )
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
        let token = key().sign(&claims(1)).unwrap();
        assert_eq!(key().verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn tokens_not_yet_valid_or_too_long_lived_are_refused_on_use() {
        let in_an_hour = (now() + Duration::from_secs(3600)).as_secs();
        let early = GuestClaims {
            nbf: Some(in_an_hour),
            ..claims(in_an_hour + 60)
        };
        assert_eq!(
            key().verify(&key().sign(&early).unwrap()),
            Err(TokenError::NotYetValid)
        );
        let eight_days = (now() + MAX_TOKEN_TTL + Duration::from_secs(86_400)).as_secs();
        assert_eq!(
            key().verify(&key().sign(&claims(eight_days)).unwrap()),
            Err(TokenError::Lifetime)
        );
        assert_eq!(
            key().verify(&key().sign(&claims(1 << 62)).unwrap()),
            Err(TokenError::Lifetime)
        );
        let fine = (now() + Duration::from_secs(3600)).as_secs();
        assert!(key().verify(&key().sign(&claims(fine)).unwrap()).is_ok());
    }

    #[test]
    fn keys_and_lifetimes_are_bounded() {
        assert_eq!(TokenKey::new(&[0u8; 31]).err(), Some(TokenError::ShortKey));
        assert_eq!(
            key().mint("t", &Owner::open(), Role::ReadWrite, Duration::ZERO, None),
            Err(TokenError::Lifetime)
        );
        assert_eq!(format!("{:?}", key()), "TokenKey(..)");
    }
}
