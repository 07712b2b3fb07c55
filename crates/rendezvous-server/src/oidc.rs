//! Host admission by CI identity tokens (OpenID Connect ID tokens), as
//! GitHub Actions and GitLab CI issue them to each job: the job proves
//! which repository, branch or workflow it runs for, and needs no host
//! token handed to it.
//!
//! An [`OidcIssuer`] (`--host-oidc-issuer URL --host-oidc-audience AUD
//! [--host-oidc-require CLAIM=VALUE]… [--host-oidc-jwks-file FILE]`)
//! admits a host whose bearer is a JWT that it signed, with:
//! - `iss` exactly the issuer URL, `aud` the audience;
//! - `exp` ahead and `nbf` (if present) behind, with [`CLOCK_LEEWAY`]
//!   either way (the issuer's clock is not ours);
//! - a signature by one of the issuer's keys: the JWKS file, or the
//!   `jwks_uri` of its discovery document
//!   (`ISSUER/.well-known/openid-configuration`), cached and refetched
//!   for an unknown `kid` as [`crate::jwks::RemoteJwks`] says;
//! - every required claim equal to its value (a string claim compared as
//!   it is; numbers and booleans by their JSON text).
//!
//! The host is admitted as the owner `oidc:{iss}:{sub}` (e.g.
//! `oidc:https://token.actions.githubusercontent.com:repo:acme/app:ref:refs/heads/main`),
//! which guest tokens then name in their `owner` claim.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::Validation;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::jwks::{JwksError, KeySet, KeySource, RemoteJwks};
use crate::registry::Owner;

/// Clock skew allowed on `exp` and `nbf` of an identity token, in seconds
/// (30 s).
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(30);

/// How long after a failed discovery of an issuer it is tried again, in
/// ms (10 s); meanwhile hosts get the failure's error at once.
pub const DISCOVERY_RETRY: Duration = Duration::from_millis(10_000);

/// Largest discovery document accepted, in bytes (64 KiB).
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// Why an identity token was refused. The texts say what to fix, and
/// never hold the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// Not a JWT, or its payload is not JSON claims.
    #[error("the bearer is not a JWT identity token")]
    Malformed,
    /// No configured issuer issued it.
    #[error("it was issued by {0:?}, which this server does not admit (--host-oidc-issuer)")]
    UnknownIssuer(String),
    /// Its `exp` has passed.
    #[error("it has expired: CI identity tokens are short-lived, request a new one")]
    Expired,
    /// Its `nbf` is ahead.
    #[error("it is not valid yet: check this machine's clock")]
    NotYetValid,
    /// Its `aud` is not the one configured.
    #[error("its audience is not {0:?}: request the token with that audience (--oidc-audience)")]
    Audience(String),
    /// A required claim is missing or has another value.
    #[error("its claim {claim:?} is not {want:?}, as this server requires")]
    Claim {
        /// The claim's name.
        claim: String,
        /// The value required.
        want: String,
    },
    /// The signature is bad, or no key of the issuer checks it (unknown
    /// `kid`, algorithm not the key's).
    #[error("its signature cannot be checked with the issuer's keys ({0})")]
    Signature(String),
    /// The issuer's keys could not be had.
    #[error("cannot get the issuer's keys: {0}")]
    Keys(String),
}

/// A claim rule of `--host-oidc-require CLAIM=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRule {
    /// The claim's name, e.g. `repository`.
    pub claim: String,
    /// The value it must have, e.g. `acme/app`.
    pub value: String,
}

impl std::str::FromStr for ClaimRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((claim, value)) if !claim.is_empty() => Ok(Self {
                claim: claim.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(format!(
                "expected CLAIM=VALUE (e.g. repository=acme/app), got {s:?}"
            )),
        }
    }
}

/// Where an issuer's keys come from.
#[derive(Debug)]
enum IssuerKeys {
    /// A JWKS file (`--host-oidc-jwks-file`).
    Fixed(KeySource),
    /// The issuer's discovery document's `jwks_uri`, found on first use;
    /// and the last failed discovery, when and why.
    Discovered(OnceCell<KeySource>, Mutex<Option<(Instant, String)>>),
}

/// One trusted issuer of CI identity tokens, with its audience and claim
/// rules.
#[derive(Debug)]
pub struct OidcIssuer {
    issuer: String,
    audience: String,
    rules: Vec<ClaimRule>,
    keys: IssuerKeys,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl OidcIssuer {
    /// An issuer whose keys are found through its discovery document.
    ///
    /// # Errors
    /// [`OidcError::Keys`] for an issuer URL that may not be fetched
    /// (`https://`, or `http://` on loopback).
    pub fn discovered(
        issuer: &str,
        audience: &str,
        rules: Vec<ClaimRule>,
    ) -> Result<Self, OidcError> {
        rendezvous_proto::fetch::check_url(issuer)
            .map_err(|e| OidcError::Keys(format!("--host-oidc-issuer: {e}")))?;
        Ok(Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            rules,
            keys: IssuerKeys::Discovered(OnceCell::new(), Mutex::new(None)),
        })
    }

    /// An issuer whose keys are `keys` (a JWKS file, for set-ups without
    /// a network path to the issuer).
    pub fn with_keys(issuer: &str, audience: &str, rules: Vec<ClaimRule>, keys: KeySet) -> Self {
        Self::with_key_source(issuer, audience, rules, KeySource::Fixed(Arc::new(keys)))
    }

    /// An issuer whose keys come from `keys`, e.g. a [`KeySource::File`]
    /// reloaded on SIGHUP.
    pub fn with_key_source(
        issuer: &str,
        audience: &str,
        rules: Vec<ClaimRule>,
        keys: KeySource,
    ) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            rules,
            keys: IssuerKeys::Fixed(keys),
        }
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The file its keys come from, if they do (to reload it).
    pub fn key_file(&self) -> Option<&Arc<crate::jwks::KeyFile>> {
        match &self.keys {
            IssuerKeys::Fixed(KeySource::File(file)) => Some(file),
            _ => None,
        }
    }

    /// The issuer's keys, discovering them on first use. A failed
    /// discovery is tried again [`DISCOVERY_RETRY`] later at the
    /// earliest; until then hosts get its error at once, so that hosts
    /// with tokens of an issuer that is down cannot make the server fetch
    /// from it on every attempt.
    async fn keys(&self) -> Result<&KeySource, OidcError> {
        let (cell, failed) = match &self.keys {
            IssuerKeys::Fixed(keys) => return Ok(keys),
            IssuerKeys::Discovered(cell, failed) => (cell, failed),
        };
        if let Some(keys) = cell.get() {
            return Ok(keys);
        }
        let last = failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some((at, why)) = last
            && at.elapsed() < DISCOVERY_RETRY
        {
            return Err(OidcError::Keys(why));
        }
        cell.get_or_try_init(|| self.discover())
            .await
            .inspect_err(|e| {
                let why = match e {
                    OidcError::Keys(why) => why.clone(),
                    other => other.to_string(),
                };
                *failed.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now(), why));
            })
    }

    async fn discover(&self) -> Result<KeySource, OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let body = rendezvous_proto::fetch::get(
            &url,
            http::HeaderMap::new(),
            MAX_DISCOVERY_BYTES,
            crate::jwks::FETCH_TIMEOUT,
        )
        .await
        .map_err(|e| OidcError::Keys(e.to_string()))?;
        let discovery: Discovery = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Keys(format!("{url}: not a discovery document: {e}")))?;
        if discovery.issuer != self.issuer {
            return Err(OidcError::Keys(format!(
                "{url} names the issuer {:?}, not {:?}",
                discovery.issuer, self.issuer
            )));
        }
        let remote = RemoteJwks::new(&discovery.jwks_uri)
            .map_err(|e| OidcError::Keys(format!("jwks_uri of {url}: {e}")))?;
        tracing::info!(issuer = %self.issuer, jwks_uri = %discovery.jwks_uri, "OIDC issuer discovered");
        Ok(KeySource::Remote(Arc::new(remote)))
    }

    /// Checks `token` as the module docs say and returns the owner it
    /// admits, `oidc:{iss}:{sub}`.
    ///
    /// # Errors
    /// [`OidcError`] saying which check failed.
    pub async fn admit(&self, token: &str) -> Result<Owner, OidcError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| OidcError::Malformed)?;
        let (key, algorithm) = self
            .keys()
            .await?
            .select(&header)
            .await
            .map_err(|e| match e {
                JwksError::Fetch(why) | JwksError::Malformed(why) => OidcError::Keys(why),
                other => OidcError::Signature(other.to_string()),
            })?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = CLOCK_LEEWAY.as_secs();
        let claims =
            jsonwebtoken::decode::<BTreeMap<String, serde_json::Value>>(token, &key, &validation)
                .map_err(|e| {
                    use jsonwebtoken::errors::ErrorKind;
                    match e.kind() {
                        ErrorKind::ExpiredSignature => OidcError::Expired,
                        ErrorKind::ImmatureSignature => OidcError::NotYetValid,
                        ErrorKind::InvalidAudience => OidcError::Audience(self.audience.clone()),
                        ErrorKind::InvalidIssuer => OidcError::UnknownIssuer(String::new()),
                        ErrorKind::InvalidSignature => OidcError::Signature("bad signature".into()),
                        ErrorKind::InvalidAlgorithm => {
                            OidcError::Signature("wrong algorithm".into())
                        }
                        _ => OidcError::Malformed,
                    }
                })?
                .claims;
        for rule in &self.rules {
            let matches = match claims.get(&rule.claim) {
                Some(serde_json::Value::String(s)) => *s == rule.value,
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    serde_json::to_string(v).is_ok_and(|text| text == rule.value)
                }
                _ => false,
            };
            if !matches {
                return Err(OidcError::Claim {
                    claim: rule.claim.clone(),
                    want: rule.value.clone(),
                });
            }
        }
        let sub = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .ok_or(OidcError::Malformed)?;
        Ok(Owner::oidc(&self.issuer, sub))
    }
}

/// The `iss` a JWT says it has, unverified: only to pick the issuer whose
/// keys then verify it. `None` when the bearer is no JWT with an `iss`.
pub fn claimed_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token)
        .ok()
        .map(|c| c.iss)
}

/// Whether a bearer looks like a JWT (three base64url parts), so that it
/// is checked as an identity token rather than a host token.
pub fn looks_like_jwt(bearer: &str) -> bool {
    let parts: Vec<&str> = bearer.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
