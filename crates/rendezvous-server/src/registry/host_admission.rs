//! Which hosts may register, and as whom: the [`Owner`] a task belongs to.
//!
//! A host presents a host token (`authorization: Bearer TOKEN` on its
//! Control call). The server holds the tokens of `--host-token-file` as
//! digests, each with a name, and admits a host whose token is one of them
//! as the owner `token:NAME`. Or it presents its CI job's identity token
//! (a JWT; see [`crate::oidc`]), admitted as `oidc:{iss}:{sub}`; both
//! kinds may be configured, and either admits. Without either the server
//! runs with open registration (the owner `open`), which `rendezvous
//! serve` allows only on loopback or with `--allow-open-registration`.
//!
//! Tasks are kept per owner (see [`TaskStore`](super::TaskStore)): a host
//! admitted as another owner never reaches a task, its guests or its
//! guest tokens, it makes a task of its own under the same ID. So nobody
//! can take a task over, in the hostless grace period or after a restart,
//! and nobody can lock its real host out by registering the ID first.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rendezvous_proto::ids::check_secret_strength;

use super::RegistryError;
use crate::auth::Digest;

/// The request metadata key a host presents its host token in, as
/// `Bearer TOKEN`.
pub const HOST_TOKEN_METADATA: &str = "authorization";

/// Longest host token name, in characters (64).
pub const MAX_HOST_TOKEN_NAME_LEN: usize = 64;

/// Most tokens a host token file may hold (10 000).
pub const MAX_HOST_TOKENS: usize = 10_000;

/// Who a task belongs to: the identity its first host was admitted as.
/// Printed as `open` (open registration), `token:NAME` (a host token of
/// that name) or `oidc:{iss}:{sub}` (a CI identity token). Guest tokens
/// name it in their `owner` claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(String);

impl Owner {
    /// The owner of every task under open registration.
    pub fn open() -> Self {
        Self("open".to_owned())
    }

    /// The owner for the host token named `name`.
    pub fn token(name: &str) -> Self {
        Self(format!("token:{name}"))
    }

    /// The owner for a CI identity token from issuer `iss` with subject
    /// `sub`: `oidc:{iss}:{sub}`.
    pub fn oidc(iss: &str, sub: &str) -> Self {
        Self(format!("oidc:{iss}:{sub}"))
    }

    /// An owner as printed (the `owner` claim of a guest token).
    pub fn from_claim(claim: &str) -> Self {
        Self(claim.to_owned())
    }

    /// The owner as printed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a host token file was refused. The texts name the file and line,
/// never a token.
#[derive(Debug, thiserror::Error)]
pub enum HostTokenFileError {
    /// The file cannot be read.
    #[error("cannot read the host token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is malformed; `why` says how.
    #[error("{path}:{line}: {why}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong and what is allowed.
        why: String,
    },
    /// The file holds no token, or more than [`MAX_HOST_TOKENS`].
    #[error("{path}: {why}")]
    Count {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The host tokens of one file, by digest: the name each one admits as.
type Tokens = HashMap<Digest, String>;

/// A host token file (`--host-token-file`), reloadable.
///
/// One token per line, as `NAME TOKEN` or a bare `TOKEN`; blank lines and
/// lines starting with `#` are skipped. A name is 1 to
/// [`MAX_HOST_TOKEN_NAME_LEN`] characters of `[A-Za-z0-9._-]`; a bare
/// token is named by the first 12 hex digits of its SHA-256. Several tokens
/// may share a name (rotation: add the new one, move the jobs, remove the
/// old): they admit the same owner. Tokens must pass the secrets' strength
/// rule (at least 22 characters, 10 of them distinct). Only digests are
/// kept.
pub struct HostTokenFile {
    path: PathBuf,
    tokens: RwLock<Arc<Tokens>>,
}

impl fmt::Debug for HostTokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostTokenFile")
            .field("path", &self.path)
            .field("tokens", &self.current().len())
            .finish()
    }
}

impl HostTokenFile {
    /// Reads `path`.
    ///
    /// # Errors
    /// [`HostTokenFileError`] when the file cannot be read, a line is
    /// malformed or a token weak, or there are no tokens.
    pub fn load(path: &Path) -> Result<Self, HostTokenFileError> {
        let tokens = read_tokens(path)?;
        Ok(Self {
            path: path.to_owned(),
            tokens: RwLock::new(Arc::new(tokens)),
        })
    }

    /// Reads the file again (on SIGHUP) and returns how many tokens it
    /// holds now. Hosts already registered stay.
    ///
    /// # Errors
    /// As [`load`](Self::load); the tokens read before stay in force.
    pub fn reload(&self) -> Result<usize, HostTokenFileError> {
        let tokens = read_tokens(&self.path)?;
        let count = tokens.len();
        *self
            .tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tokens);
        Ok(count)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn current(&self) -> Arc<Tokens> {
        self.tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The owner `token` admits as, if it is in the file.
    fn admit(&self, token: &str) -> Option<Owner> {
        self.current()
            .get(&Digest::of(token))
            .map(|name| Owner::token(name))
    }
}

fn read_tokens(path: &Path) -> Result<Tokens, HostTokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| HostTokenFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut tokens = Tokens::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| HostTokenFileError::Line {
            path: path.to_owned(),
            line: index + 1,
            why,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (name, token) = match fields.as_slice() {
            [token] => (None, *token),
            [name, token] => (Some(*name), *token),
            _ => {
                return Err(bad(
                    "expected `NAME TOKEN` or a bare `TOKEN` (a token has no spaces)".into(),
                ));
            }
        };
        if let Some(name) = name
            && (name.is_empty()
                || name.chars().count() > MAX_HOST_TOKEN_NAME_LEN
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(bad(format!(
                "the name must be 1 to {MAX_HOST_TOKEN_NAME_LEN} characters of [A-Za-z0-9._-]"
            )));
        }
        check_secret_strength(token).map_err(|why| {
            bad(format!(
                "the token {why}; make one with `openssl rand -base64 32`"
            ))
        })?;
        let digest = Digest::of(token);
        let name = name.map_or_else(|| digest.short_hex(), str::to_owned);
        tokens.insert(digest, name);
    }
    let count_error = |why: String| HostTokenFileError::Count {
        path: path.to_owned(),
        why,
    };
    if tokens.is_empty() {
        return Err(count_error(
            "no host token in the file: add a line `NAME TOKEN`".into(),
        ));
    }
    if tokens.len() > MAX_HOST_TOKENS {
        return Err(count_error(format!(
            "{} tokens, more than {MAX_HOST_TOKENS}",
            tokens.len()
        )));
    }
    Ok(tokens)
}

/// Which hosts may register. With no mode configured and `open` false,
/// no host can.
#[derive(Debug, Clone)]
pub struct HostAdmission {
    /// Host tokens (`--host-token-file`). When set, only hosts with one of
    /// them (or an identity token `oidc` admits) register, and `open` is
    /// ignored.
    pub tokens: Option<Arc<HostTokenFile>>,
    /// Open registration: any host registers, as the owner `open`.
    pub open: bool,
    /// Issuers of CI identity tokens (`--host-oidc-issuer`). When any is
    /// set, a host whose bearer is a JWT from one of them registers, and
    /// `open` is ignored.
    pub oidc: Vec<Arc<crate::oidc::OidcIssuer>>,
}

impl Default for HostAdmission {
    /// Open registration, as the demo and the tests on loopback run.
    fn default() -> Self {
        Self {
            tokens: None,
            open: true,
            oidc: Vec::new(),
        }
    }
}

impl HostAdmission {
    /// Admits only the hosts with a token of `file` (`--host-token-file`).
    pub fn with_tokens(file: Arc<HostTokenFile>) -> Self {
        Self {
            tokens: Some(file),
            open: false,
            oidc: Vec::new(),
        }
    }

    /// Whether hosts register without a credential.
    pub fn is_open(&self) -> bool {
        self.tokens.is_none() && self.oidc.is_empty() && self.open
    }

    /// The owner a host with `token` (from [`HOST_TOKEN_METADATA`], without
    /// `Bearer `; `None` when absent) is admitted as: a host token of the
    /// file, else, when it looks like a JWT, an identity token of a
    /// configured issuer (which may fetch the issuer's keys).
    ///
    /// # Errors
    /// [`RegistryError::HostNotAdmitted`] (`UNAUTHENTICATED`) when a
    /// credential is required and missing, unknown or refused (the message
    /// says why), or registration is closed.
    pub async fn admit(&self, token: Option<&str>) -> Result<Owner, RegistryError> {
        let refused = |why: String| Err(RegistryError::HostNotAdmitted(why));
        if self.tokens.is_none() && self.oidc.is_empty() {
            if self.open {
                return Ok(Owner::open());
            }
            return refused(
                "this server admits no hosts: its operator has configured no admission mode".into(),
            );
        }
        let Some(token) = token else {
            return refused(match (&self.tokens, self.oidc.is_empty()) {
                (Some(_), true) => "this server admits only hosts with a host token: pass \
                                    --host-token or set RENDEZVOUS_HOST_TOKEN"
                    .into(),
                (None, _) => "this server admits only hosts with a CI identity token: run \
                              in a CI job with OIDC tokens (GitHub Actions: `permissions: \
                              id-token: write`; GitLab: `id_tokens:` with --oidc-token-env)"
                    .into(),
                (Some(_), false) => "this server admits only hosts with a host token \
                                     (--host-token) or a CI identity token"
                    .into(),
            });
        };
        if let Some(owner) = self.tokens.as_ref().and_then(|file| file.admit(token)) {
            return Ok(owner);
        }
        if !self.oidc.is_empty() && crate::oidc::looks_like_jwt(token) {
            let Some(iss) = crate::oidc::claimed_issuer(token) else {
                return refused("the CI identity token has no issuer (iss)".into());
            };
            let Some(issuer) = self.oidc.iter().find(|i| i.issuer() == iss) else {
                return refused(format!(
                    "the CI identity token was refused: {}",
                    crate::oidc::OidcError::UnknownIssuer(iss)
                ));
            };
            return issuer
                .admit(token)
                .await
                .or_else(|e| refused(format!("the CI identity token was refused: {e}")));
        }
        refused(
            "the host token is not one this server admits: check RENDEZVOUS_HOST_TOKEN \
             with the server's operator"
                .into(),
        )
    }
}
