//! `--ca-cert` and `--server-fingerprint`: which `https://` server the
//! client commands (`host`, `attach`, `sessions`) trust.

use std::path::PathBuf;

use anyhow::Context as _;
use rendezvous_proto::tls::{Fingerprint, TlsOptions};

/// How a client checks an `https://` server; flattened into `host`,
/// `attach` and `sessions`. Without either flag, the platform's root
/// certificates are trusted.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Trust only servers whose certificate this CA (PEM file) signed,
    /// instead of the platform's root certificates.
    #[arg(
        long,
        value_name = "FILE",
        env = "RENDEZVOUS_CA_CERT",
        conflicts_with = "server_fingerprint"
    )]
    pub ca_cert: Option<PathBuf>,
    /// Trust only the server whose certificate has this SHA-256 fingerprint
    /// (of its DER; 64 hex digits, colons between pairs optional), e.g. the
    /// one `rendezvous serve --tls-self-signed` prints. No CA, name or date
    /// is checked then.
    #[arg(long, value_name = "SHA256", env = "RENDEZVOUS_SERVER_FINGERPRINT")]
    pub server_fingerprint: Option<Fingerprint>,
}

impl TlsArgs {
    /// The options these flags describe; reads the CA file.
    ///
    /// # Errors
    /// When the CA file cannot be read.
    pub fn options(&self) -> anyhow::Result<TlsOptions> {
        let ca_cert_pem = self
            .ca_cert
            .as_deref()
            .map(|path| {
                std::fs::read(path)
                    .with_context(|| format!("cannot read the CA certificate {}", path.display()))
            })
            .transpose()?;
        Ok(TlsOptions {
            ca_cert_pem,
            server_fingerprint: self.server_fingerprint,
        })
    }
}
