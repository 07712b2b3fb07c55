//! The CI job's identity token (OIDC ID token), presented instead of a
//! host token to a server that admits hosts by it
//! (`serve --host-oidc-issuer`).
//!
//! - GitHub Actions (a job with `permissions: id-token: write`) exports
//!   [`GITHUB_REQUEST_URL_ENV`] and [`GITHUB_REQUEST_TOKEN_ENV`]; the host
//!   GETs `$URL&audience=AUD` with `Authorization: bearer $TOKEN` and takes
//!   `value` from the JSON answer, anew for every connection, since these
//!   tokens live only minutes.
//! - GitLab CI puts the token in the variable an `id_tokens:` entry names;
//!   the host takes it as it is ([`IdTokenSource::fixed`]).
//!
//! Neither the token nor the request token is ever logged or printed.

use std::fmt;
use std::time::Duration;

use crate::secret::Secret;

/// The variable GitHub Actions sets to its token endpoint's URL.
pub const GITHUB_REQUEST_URL_ENV: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";

/// The variable GitHub Actions sets to the bearer for its token endpoint.
pub const GITHUB_REQUEST_TOKEN_ENV: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";

/// Largest answer of the token endpoint accepted, in bytes (64 KiB).
pub const MAX_ID_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// How long one token request may take, in ms (10 s).
pub const ID_TOKEN_TIMEOUT: Duration = Duration::from_millis(10_000);

/// Why no identity token could be had. No text holds a token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot get the CI identity token: {0}")]
pub struct IdTokenError(String);

/// Where the host gets its identity token from. `Debug` shows no token.
#[derive(Clone)]
pub enum IdTokenSource {
    /// GitHub Actions' token endpoint, asked for `audience`.
    GitHubActions {
        /// `ACTIONS_ID_TOKEN_REQUEST_URL`.
        request_url: String,
        /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
        request_token: String,
        /// The `aud` to ask for (the server's `--host-oidc-audience`).
        audience: String,
    },
    /// A token given as it is (GitLab's `id_tokens:` variable).
    Fixed(String),
}

impl fmt::Debug for IdTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GitHubActions { audience, .. } => f
                .debug_struct("GitHubActions")
                .field("audience", audience)
                .finish_non_exhaustive(),
            Self::Fixed(_) => f.write_str("Fixed(<redacted>)"),
        }
    }
}

impl IdTokenSource {
    /// GitHub Actions' endpoint from [`GITHUB_REQUEST_URL_ENV`] and
    /// [`GITHUB_REQUEST_TOKEN_ENV`], asked for `audience`; `None` when
    /// either is unset (not on GitHub Actions, or the job lacks
    /// `permissions: id-token: write`).
    pub fn github_actions_from_env(audience: &str) -> Option<Self> {
        let request_url = std::env::var(GITHUB_REQUEST_URL_ENV).ok()?;
        let request_token = std::env::var(GITHUB_REQUEST_TOKEN_ENV).ok()?;
        Some(Self::GitHubActions {
            request_url,
            request_token,
            audience: audience.to_owned(),
        })
    }

    /// A token as it is.
    pub fn fixed(token: impl Into<String>) -> Self {
        Self::Fixed(token.into())
    }

    /// The token to present now.
    ///
    /// # Errors
    /// [`IdTokenError`] when the endpoint cannot be reached, answers other
    /// than 200, or sends no `value`.
    pub(crate) async fn token(&self) -> Result<Secret, IdTokenError> {
        let (request_url, request_token, audience) = match self {
            Self::Fixed(token) => return Ok(Secret::new(token.clone())),
            Self::GitHubActions {
                request_url,
                request_token,
                audience,
            } => (request_url, request_token, audience),
        };
        let separator = if request_url.contains('?') { '&' } else { '?' };
        let audience: String =
            percent_encoding::utf8_percent_encode(audience, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        let url = format!("{request_url}{separator}audience={audience}");
        let mut headers = http::HeaderMap::new();
        let mut bearer = http::HeaderValue::from_str(&format!("bearer {request_token}"))
            .map_err(|_| IdTokenError(format!("{GITHUB_REQUEST_TOKEN_ENV} is not printable")))?;
        bearer.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, bearer);
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        let body = rendezvous_proto::fetch::get(
            &url,
            headers,
            MAX_ID_TOKEN_RESPONSE_BYTES,
            ID_TOKEN_TIMEOUT,
        )
        .await
        .map_err(|e| IdTokenError(e.to_string()))?;
        #[derive(serde::Deserialize)]
        struct Answer {
            value: String,
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|_| IdTokenError("the token endpoint's answer has no \"value\"".to_owned()))?;
        Ok(Secret::new(answer.value))
    }
}
