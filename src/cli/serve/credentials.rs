//! What `rendezvous serve`'s flags name for admitting hosts and checking
//! guest tokens: the token key file, the guest tokens' public keys, the
//! host token file and the OIDC issuers.

use std::sync::Arc;

use anyhow::Context;
use rendezvous_server::jwks::{KeyFile, KeyFileFormat, KeySource, RemoteJwks};
use rendezvous_server::oidc::OidcIssuer;
use rendezvous_server::registry::{HostAdmission, HostTokenFile};
use rendezvous_server::token::TokenKey;

use super::ServeArgs;

impl ServeArgs {
    /// The public keys for guest tokens, from `--token-jwks-file`,
    /// `--token-public-key-file` (both reloaded on SIGHUP) or
    /// `--token-jwks-url`.
    pub(super) fn token_public_keys(&self) -> anyhow::Result<Option<KeySource>> {
        let files = [
            (&self.token_jwks_file, KeyFileFormat::Jwks),
            (&self.token_public_key_file, KeyFileFormat::Pem),
        ];
        for (path, format) in files {
            if let Some(path) = path {
                return Ok(Some(KeySource::File(Arc::new(KeyFile::load(
                    path, format,
                )?))));
            }
        }
        if let Some(url) = &self.token_jwks_url {
            return Ok(Some(KeySource::Remote(Arc::new(RemoteJwks::new(url)?))));
        }
        Ok(None)
    }

    /// Which hosts may register, from `--host-token-file` and
    /// `--allow-open-registration`.
    pub(super) fn host_admission(&self) -> anyhow::Result<HostAdmission> {
        let oidc = self.oidc_issuers()?;
        let tokens = self
            .host_token_file
            .as_deref()
            .map(HostTokenFile::load)
            .transpose()?;
        if tokens.is_some() || !oidc.is_empty() {
            return Ok(HostAdmission {
                tokens: tokens.map(Arc::new),
                open: false,
                oidc,
            });
        }
        if !self.listen.ip().is_loopback() && !self.allow_open_registration {
            anyhow::bail!(
                "refusing open host registration on {}: anyone who reaches it could publish a \
                 shell under any task ID. Give --host-token-file FILE (one `NAME TOKEN` per \
                 line; hosts pass --host-token), or --allow-open-registration on a network \
                 where every client is trusted",
                self.listen
            );
        }
        Ok(HostAdmission {
            tokens: None,
            open: true,
            oidc: Vec::new(),
        })
    }

    /// The issuers of `--host-oidc-issuer`, with the audience, rules and
    /// keys the other `--host-oidc-*` flags give them all.
    fn oidc_issuers(&self) -> anyhow::Result<Vec<Arc<OidcIssuer>>> {
        let Some(audience) = &self.host_oidc_audience else {
            return Ok(Vec::new());
        };
        let keys = match &self.host_oidc_jwks_file {
            Some(path) => Some(KeySource::File(Arc::new(KeyFile::load(
                path,
                KeyFileFormat::Jwks,
            )?))),
            None => None,
        };
        self.host_oidc_issuers
            .iter()
            .map(|issuer| {
                let rules = self.host_oidc_require.clone();
                Ok(Arc::new(match &keys {
                    Some(keys) => {
                        OidcIssuer::with_key_source(issuer, audience, rules, keys.clone())
                    }
                    None => OidcIssuer::discovered(issuer, audience, rules)?,
                }))
            })
            .collect()
    }
}

/// Reads a token key file; the key is the file's bytes without surrounding
/// whitespace.
///
/// # Errors
/// When the file cannot be read, or the key is shorter than 32 bytes.
pub fn read_token_key(path: &std::path::Path) -> anyhow::Result<TokenKey> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the token key file {}", path.display()))?;
    let key = bytes.trim_ascii();
    TokenKey::new(key).with_context(|| {
        format!(
            "the token key in {} is too short: write at least 32 random bytes, \
             e.g. `openssl rand -base64 48 > {}`",
            path.display(),
            path.display()
        )
    })
}
