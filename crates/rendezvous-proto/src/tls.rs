//! TLS for clients (hosts, guests, bench, tests): which `https://` servers
//! to trust, and the connector that dials them.
//!
//! A client trusts, in this order of precedence:
//! - a pinned [`Fingerprint`] (`--server-fingerprint`): the SHA-256 of the
//!   server's leaf certificate, DER-encoded, as action-tmate pins its
//!   server's key. The CA chain, the host name and the validity dates are
//!   not checked (a self-signed certificate for a trial is the point), but
//!   the handshake signature is: the server must hold the certificate's
//!   private key;
//! - a CA certificate (`--ca-cert`, PEM): only certificates it signed, for
//!   the URL's host name or IP address;
//! - otherwise the platform's root certificates (as a browser would).
//!
//! The server's side (certificate files, reload, self-signed certificates)
//! is `rendezvous_server::tls`; the fingerprint is the one type both share.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::Uri;

/// The ALPN protocol a gRPC client offers: HTTP/2 only.
pub const ALPN_H2: &[u8] = b"h2";

/// The ALPN protocol of HTTP/1.1 (gRPC-Web from browsers, plain HTTP).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The port of an `https://` URL that names none.
pub const HTTPS_DEFAULT_PORT: u16 = 443;

/// The crypto provider of every TLS connection this project makes or
/// accepts: rustls' *ring* provider (as tonic's `tls-ring`), chosen
/// explicitly so that no process-wide default is needed.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The SHA-256 of a certificate's DER encoding: what `--server-fingerprint`
/// pins and what `rendezvous serve` prints.
///
/// It displays as 32 upper-case hex pairs separated by colons
/// (`AB:CD:…`, as `openssl x509 -noout -fingerprint -sha256` prints it), and
/// parses from that form or from 64 hex digits without colons, in either
/// case.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// The 32 bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lower-case hex digits without colons (the form `sha256sum` of the
    /// DER file prints).
    pub fn to_plain_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl From<[u8; 32]> for Fingerprint {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A string that is not a SHA-256 fingerprint.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{0:?} is not a SHA-256 fingerprint: give 64 hex digits, \
     or 32 hex pairs separated by colons (AB:CD:...)"
)]
pub struct FingerprintError(String);

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Parses `AB:CD:…` (32 pairs) or 64 hex digits; case does not matter,
    /// surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FingerprintError(s.to_owned());
        let trimmed = s.trim();
        let digits: String = if trimmed.contains(':') {
            let pairs: Vec<&str> = trimmed.split(':').collect();
            if pairs.len() != 32 || pairs.iter().any(|p| p.len() != 2) {
                return Err(bad());
            }
            pairs.concat()
        } else {
            trimmed.to_owned()
        };
        if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

/// Which `https://` servers a client trusts. The default trusts the
/// platform's root certificates. Options for an `http://` URL are refused
/// (see [`TlsOptionsError::NotHttps`]), so that a pin is never silently
/// ignored.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM with one or more CA certificates (`BEGIN CERTIFICATE`) to trust
    /// instead of the platform's roots.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Trust only the server whose leaf certificate has this fingerprint;
    /// skips CA, name and date checks (not the handshake signature).
    pub server_fingerprint: Option<Fingerprint>,
}

impl TlsOptions {
    /// Whether these options change anything from the default.
    pub fn is_default(&self) -> bool {
        self.ca_cert_pem.is_none() && self.server_fingerprint.is_none()
    }
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field(
                "ca_cert_pem",
                &self
                    .ca_cert_pem
                    .as_ref()
                    .map(|pem| format!("{} bytes", pem.len())),
            )
            .field("server_fingerprint", &self.server_fingerprint)
            .finish()
    }
}

/// [`TlsOptions`] that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsOptionsError {
    /// Both a CA certificate and a fingerprint were given.
    #[error(
        "give either a CA certificate (--ca-cert) or a server fingerprint \
         (--server-fingerprint), not both"
    )]
    Conflicting,
    /// TLS options for a server URL that is not `https://`.
    #[error(
        "a CA certificate or server fingerprint needs an https:// server URL \
         (got {0:?}): over http:// nothing would be checked"
    )]
    NotHttps(String),
    /// The CA PEM holds no certificate, or one that cannot be parsed.
    #[error("cannot use the CA certificate: {0}")]
    CaCert(String),
    /// No root certificate could be loaded from the platform.
    #[error(
        "no trusted root certificates found on this machine ({0}): install \
         the system's CA certificates, or give --ca-cert or --server-fingerprint"
    )]
    NoPlatformRoots(String),
    /// rustls refused the configuration (not expected with the defaults).
    #[error("cannot configure TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The platform's root certificates, loaded once per process.
fn platform_roots() -> Result<Arc<RootCertStore>, TlsOptionsError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (_added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            if roots.is_empty() {
                let why = loaded
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                Err(why)
            } else {
                Ok(Arc::new(roots))
            }
        })
        .clone()
        .map_err(TlsOptionsError::NoPlatformRoots)
}

/// The roots in a CA PEM.
fn ca_roots(pem: &[u8]) -> Result<RootCertStore, TlsOptionsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsOptionsError::CaCert(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsOptionsError::CaCert(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsOptionsError::CaCert(
            "no certificate (PEM BEGIN CERTIFICATE) in it".to_owned(),
        ));
    }
    Ok(roots)
}

/// The rustls client configuration for `options`, offering `alpn` (e.g.
/// `[ALPN_H2]` for gRPC).
///
/// # Errors
/// [`TlsOptionsError`] for conflicting options, an unusable CA PEM, or a
/// machine without root certificates (only when neither option is given).
pub fn client_config(
    options: &TlsOptions,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsOptionsError> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match (&options.ca_cert_pem, options.server_fingerprint) {
        (Some(_), Some(_)) => return Err(TlsOptionsError::Conflicting),
        (None, Some(pin)) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServerCert {
                pin,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        (Some(pem), None) => builder
            .with_root_certificates(ca_roots(pem)?)
            .with_no_client_auth(),
        (None, None) => builder
            .with_root_certificates(platform_roots()?)
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Accepts exactly the server whose leaf certificate has the pinned
/// fingerprint, and checks that the server signed the handshake with that
/// certificate's key.
#[derive(Debug)]
struct PinnedServerCert {
    pin: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

/// The server presented another certificate than the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate has SHA-256 fingerprint {seen}, not the pinned {pinned}")]
pub struct PinMismatch {
    /// What the server presented.
    pub seen: Fingerprint,
    /// What the client pinned.
    pub pinned: Fingerprint,
}

impl ServerCertVerifier for PinnedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of(end_entity);
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch {
                    seen,
                    pinned: self.pin,
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS handshake that failed, in words that say what to do. Carries no
/// source, so that it is the "root cause" clients show.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsConnectError(String);

impl TlsConnectError {
    /// Describes a failed handshake with `server` (`host:port`).
    fn new(server: &str, error: &std::io::Error) -> Self {
        let tls = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let text = match tls {
            Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
                match other.0.downcast_ref::<PinMismatch>() {
                    Some(mismatch) => format!(
                        "TLS certificate of {server} refused: {mismatch} \
                         (check --server-fingerprint)"
                    ),
                    None => format!("TLS certificate of {server} refused: {other}"),
                }
            }
            Some(e @ rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                format!(
                    "TLS certificate of {server} is not trusted ({e}): it is not signed by a \
                 trusted CA (give its CA with --ca-cert, or pin it with --server-fingerprint)"
                )
            }
            Some(e @ rustls::Error::InvalidCertificate(CertificateError::BadSignature)) => format!(
                "TLS certificate of {server} refused: a signature does not verify ({e}); \
                 the server may not hold the certificate's private key"
            ),
            Some(rustls::Error::InvalidCertificate(e)) => {
                format!("TLS certificate of {server} refused: {e}")
            }
            Some(e) => format!("TLS handshake with {server} failed: {e}"),
            None => format!("TLS handshake with {server} failed: {error}"),
        };
        Self(text)
    }
}

/// Dials `https://` servers: TCP (no Nagle), then TLS with the server
/// name from the URL. What tonic's `connect_with_connector` takes.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// A connector with the rustls client configuration `config`.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// Connects to the host and port of `uri` (port 443 when it names
    /// none) and completes the TLS handshake.
    ///
    /// # Errors
    /// The TCP connect's I/O error as it is ("Connection refused"), or a
    /// [`TlsConnectError`] saying why the handshake failed (e.g. an
    /// untrusted certificate, a fingerprint that does not match).
    pub async fn connect(
        &self,
        uri: &Uri,
    ) -> Result<TlsStream<TcpStream>, Box<dyn std::error::Error + Send + Sync>> {
        let host = uri.host().ok_or("the server URL has no host")?;
        // `[::1]` in a URL is `::1` on the wire and in certificates.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(HTTPS_DEFAULT_PORT);
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("{host:?} is not a valid server name for TLS"))?;
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| TlsConnectError::new(&format!("{host}:{port}"), &e).into())
    }
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.connect(&uri).await.map(TokioIo::new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    #[test]
    fn fingerprints_parse_with_or_without_colons_and_print_with_them() {
        let plain: Fingerprint = HEX.parse().unwrap();
        let shown = plain.to_string();
        assert_eq!(
            shown,
            "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:\
             00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF"
        );
        assert_eq!(shown.parse::<Fingerprint>().unwrap(), plain);
        assert_eq!(shown.to_lowercase().parse::<Fingerprint>().unwrap(), plain);
        assert_eq!(format!(" {HEX}\n").parse::<Fingerprint>().unwrap(), plain);
        assert_eq!(plain.to_plain_hex(), HEX.to_lowercase());
    }

    #[test]
    fn malformed_fingerprints_are_refused() {
        for bad in [
            "",
            &HEX[..62],
            &format!("{HEX}00"),
            &HEX.replace('a', "g"),
            "0:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF0",
            &format!("sha256:{HEX}"),
        ] {
            let error = bad.parse::<Fingerprint>().unwrap_err();
            assert!(error.to_string().contains("64 hex digits"), "{error}");
        }
    }

    #[test]
    fn the_fingerprint_is_the_sha256_of_the_der() {
        // sha256("abc"), a published test vector.
        assert_eq!(
            Fingerprint::of(b"abc").to_plain_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_ca_and_a_pin_together_are_refused() {
        let options = TlsOptions {
            ca_cert_pem: Some(b"x".to_vec()),
            server_fingerprint: Some(HEX.parse().unwrap()),
        };
        assert!(matches!(
            client_config(&options, &[ALPN_H2]),
            Err(TlsOptionsError::Conflicting)
        ));
    }

    #[test]
    fn a_ca_pem_without_certificates_is_refused() {
        let options = TlsOptions {
            ca_cert_pem: Some(b"not a certificate\n".to_vec()),
            server_fingerprint: None,
        };
        let error = client_config(&options, &[ALPN_H2]).unwrap_err();
        assert!(matches!(error, TlsOptionsError::CaCert(_)), "{error}");
    }

    #[test]
    fn debug_shows_no_pem() {
        let options = TlsOptions {
            ca_cert_pem: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
            server_fingerprint: None,
        };
        assert!(!format!("{options:?}").contains("BEGIN"));
    }
}
