//! TLS on the server's one port: the certificate and its key (from PEM
//! files, reloaded on SIGHUP, or self-signed for a trial), ALPN, HSTS.
//!
//! A [`TlsConfig`] holds the current certificate behind a lock that is
//! taken only to clone an `Arc`, once per handshake. [`TlsConfig::reload`]
//! reads the files again and swaps the certificate in when both files are
//! good: handshakes after it use the new certificate, connections already
//! made keep theirs (TLS never looks at the certificate again after the
//! handshake). A bad file leaves the old certificate in place.
//!
//! ALPN offers `h2` first, then `http/1.1`: browsers and gRPC clients get
//! HTTP/2, and gRPC-Web over HTTP/1.1 still works. Errors name files, never
//! their contents: a key never reaches a log or an error.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rendezvous_proto::tls::{ALPN_H2, ALPN_HTTP1, Fingerprint, crypto_provider};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How long a client may take for its TLS handshake, in ms (10 s), counted
/// from the accepted TCP connection; a slower one is closed. The handshake
/// runs in the connection's own task, so a slow one never delays accepting
/// others; it holds a connection slot (`--max-connections`) meanwhile.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(10_000);

/// The `Strict-Transport-Security` value sent on every HTTP response when
/// the server serves TLS: one year, in seconds (31 536 000), this host only
/// (no `includeSubDomains`: other services may share the domain).
pub const HSTS_VALUE: &str = "max-age=31536000";

/// The names a self-signed certificate is valid for, besides the listen
/// address when it is not unspecified (`0.0.0.0`, `::`).
pub const SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Why a certificate or key cannot be used. Messages name the file and what
/// is wrong with it; never a key's bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, so that a log line says it).
        error: std::io::Error,
    },
    /// The certificate file holds no PEM certificate, or a broken one.
    #[error("no usable certificate in {path}: {reason} (expected PEM: BEGIN CERTIFICATE)")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong, e.g. "no certificate found".
        reason: String,
    },
    /// The key file holds no PEM private key, or one that cannot be parsed
    /// or is of a kind the provider does not sign with (RSA, ECDSA P-256 or
    /// P-384, Ed25519 are supported).
    #[error(
        "no usable private key in {path}: {reason} (expected PEM: BEGIN PRIVATE KEY, \
         BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY)"
    )]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong, without the key's bytes.
        reason: String,
    },
    /// The key is not the key of the certificate's public key.
    #[error("the private key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// [`TlsConfig::reload`] on a configuration that has no files (a
    /// self-signed certificate, or one given as PEM bytes).
    #[error("this TLS certificate did not come from files, so there is nothing to reload")]
    NotFromFiles,
    /// Generating a self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    /// rustls refused the configuration (not expected with the defaults).
    #[error("cannot configure TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// Where a [`TlsConfig`]'s certificate comes from.
#[derive(Debug)]
enum Source {
    /// PEM files, read again by [`TlsConfig::reload`].
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The leaf's private key.
        key: PathBuf,
    },
    /// Given once (self-signed, or PEM bytes): cannot be reloaded.
    Fixed,
}

/// The certificate handshakes get: swapped whole by a reload.
struct CurrentCert {
    /// The certificate chain and signing key, and the leaf's fingerprint.
    /// Written only by [`TlsConfig::reload`]; read (an `Arc` clone) once per
    /// handshake. Never held across an `.await`.
    current: RwLock<(Arc<CertifiedKey>, Fingerprint)>,
}

impl CurrentCert {
    fn get(&self) -> (Arc<CertifiedKey>, Fingerprint) {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, key: Arc<CertifiedKey>, fingerprint: Fingerprint) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = (key, fingerprint);
    }
}

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentCert")
            .field("fingerprint", &self.get().1)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get().0)
    }
}

/// The server's TLS settings: its certificate (reloadable), ALPN `h2` and
/// `http/1.1`, TLS 1.2 and 1.3 with rustls' *ring* provider. Cheap to
/// clone: clones share the certificate, so a reload through one is seen by
/// all (the server's acceptor and the SIGHUP handler hold clones).
#[derive(Clone)]
pub struct TlsConfig {
    cert: Arc<CurrentCert>,
    server_config: Arc<rustls::ServerConfig>,
    source: Arc<Source>,
}

impl TlsConfig {
    /// Reads the certificate chain (PEM, leaf first, then intermediates)
    /// and its private key (PEM: PKCS#8, PKCS#1 or SEC1) from files that
    /// [`reload`](Self::reload) reads again.
    ///
    /// # Errors
    /// [`TlsError`]: a file cannot be read, holds no usable certificate or
    /// key, or the key does not belong to the certificate.
    pub fn from_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let loaded = load_files(&cert, &key)?;
        Self::new(loaded, Source::Files { cert, key })
    }

    /// A certificate chain and key given as PEM (as [`from_files`](Self::from_files)
    /// reads them), e.g. by tests. It cannot be reloaded.
    ///
    /// # Errors
    /// As [`from_files`](Self::from_files); the "file" in messages is
    /// `<certificate PEM>` or `<key PEM>`.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let loaded = load_pem(
            cert_pem,
            key_pem,
            Path::new("<certificate PEM>"),
            Path::new("<key PEM>"),
        )?;
        Self::new(loaded, Source::Fixed)
    }

    /// An ephemeral self-signed certificate (ECDSA P-256) for a trial,
    /// valid for [`SELF_SIGNED_NAMES`] and for `listen` unless it is
    /// unspecified. Clients must pin its [`fingerprint`](Self::fingerprint).
    /// It lives as long as the process and cannot be reloaded.
    ///
    /// # Errors
    /// [`TlsError::SelfSigned`] when key generation fails.
    pub fn self_signed(listen: IpAddr) -> Result<Self, TlsError> {
        let mut names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|s| s.to_string()).collect();
        let listen = listen.to_canonical();
        if !listen.is_unspecified() && !names.contains(&listen.to_string()) {
            names.push(listen.to_string());
        }
        let mut params = rcgen::CertificateParams::new(names)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Rendezvous self-signed (trial)");
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let certified = CertifiedKey::from_der(vec![cert.der().clone()], key, &crypto_provider())?;
        Self::new(certified, Source::Fixed)
    }

    fn new(certified: CertifiedKey, source: Source) -> Result<Self, TlsError> {
        let fingerprint = leaf_fingerprint(&certified);
        let cert = Arc::new(CurrentCert {
            current: RwLock::new((Arc::new(certified), fingerprint)),
        });
        let mut server_config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        server_config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(Self {
            cert,
            server_config: Arc::new(server_config),
            source: Arc::new(source),
        })
    }

    /// The SHA-256 fingerprint of the current leaf certificate (what
    /// clients pin with `--server-fingerprint`).
    pub fn fingerprint(&self) -> Fingerprint {
        self.cert.get().1
    }

    /// When the current leaf certificate expires (its `notAfter`); `None`
    /// if it cannot be parsed (rustls took it, so that does not happen for
    /// a well-formed X.509 certificate).
    pub fn not_after(&self) -> Option<std::time::SystemTime> {
        let (certified, _) = self.cert.get();
        let leaf = certified.cert.first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).ok()?;
        let seconds = u64::try_from(parsed.validity().not_after.timestamp()).ok()?;
        std::time::SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(seconds))
    }

    /// The certificate and key files, when the certificate came from files.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        match &*self.source {
            Source::Files { cert, key } => Some((cert, key)),
            Source::Fixed => None,
        }
    }

    /// Reads the certificate and key files again (what SIGHUP does) and,
    /// when both are good and belong together, makes them the certificate
    /// of every later handshake; returns the new leaf's fingerprint.
    /// Connections already made are not touched. Reads two small files, so
    /// it blocks for as long as that takes.
    ///
    /// # Errors
    /// [`TlsError::NotFromFiles`] for a self-signed or PEM-given
    /// certificate; otherwise the [`TlsError`] of the files. On any error
    /// the old certificate stays.
    pub fn reload(&self) -> Result<Fingerprint, TlsError> {
        let Source::Files { cert, key } = &*self.source else {
            return Err(TlsError::NotFromFiles);
        };
        let certified = load_files(cert, key)?;
        let fingerprint = leaf_fingerprint(&certified);
        self.cert.set(Arc::new(certified), fingerprint);
        Ok(fingerprint)
    }

    /// The acceptor for one connection's handshake.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config.clone())
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("fingerprint", &self.fingerprint())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The layer that adds `Strict-Transport-Security: `[`HSTS_VALUE`] to every
/// response (replacing one a handler set).
pub(crate) fn hsts_layer() -> tower_http::set_header::SetResponseHeaderLayer<http::HeaderValue> {
    tower_http::set_header::SetResponseHeaderLayer::overriding(
        http::header::STRICT_TRANSPORT_SECURITY,
        http::HeaderValue::from_static(HSTS_VALUE),
    )
}

fn leaf_fingerprint(certified: &CertifiedKey) -> Fingerprint {
    // `load_pem` refuses an empty chain, and so `CertifiedKey` has a leaf.
    certified
        .cert
        .first()
        .map_or_else(|| Fingerprint::of(&[]), |leaf| Fingerprint::of(leaf))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    load_pem(&read(cert)?, &read(key)?, cert, key)
}

/// Parses a chain and a key; `cert_path` and `key_path` only name them in
/// errors.
fn load_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: cert_path.to_owned(),
        reason,
    };
    let key_error = |reason: &str| TlsError::Key {
        path: key_path.to_owned(),
        reason: reason.to_owned(),
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no certificate found".to_owned()));
    }
    // The PEM parser's errors may quote a line of the file: for the key,
    // say only what kind of problem it is.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => key_error("no private key found"),
        _ => key_error("the PEM does not parse"),
    })?;
    let provider = crypto_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| key_error("the key does not parse, or is of an unsupported kind"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        }),
        Err(e) => Err(cert_error(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn pem_pairs_load_and_mismatched_keys_are_refused() {
        let (cert_a, key_a) = pem_pair(&["a.test"]);
        let (_, key_b) = pem_pair(&["b.test"]);
        assert!(TlsConfig::from_pem(cert_a.as_bytes(), key_a.as_bytes()).is_ok());
        let error = TlsConfig::from_pem(cert_a.as_bytes(), key_b.as_bytes()).unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
    }

    #[test]
    fn files_without_pem_are_refused_by_name_and_never_show_the_key() {
        let (cert, key) = pem_pair(&["a.test"]);
        let error = TlsConfig::from_pem(b"junk", key.as_bytes()).unwrap_err();
        assert!(matches!(error, TlsError::Certificate { .. }), "{error}");
        // A key cut short: its PEM does not parse.
        let broken = &key[..key.len() / 2];
        let error = TlsConfig::from_pem(cert.as_bytes(), broken.as_bytes()).unwrap_err();
        assert!(matches!(error, TlsError::Key { .. }), "{error}");
        let body: String = key.lines().nth(1).unwrap().chars().take(16).collect();
        assert!(!error.to_string().contains(&body), "{error}");
        assert!(!format!("{error:?}").contains(&body), "{error:?}");
        let error = TlsConfig::from_pem(cert.as_bytes(), b"").unwrap_err();
        assert!(
            error.to_string().contains("no private key found"),
            "{error}"
        );
    }

    #[test]
    fn a_self_signed_certificate_names_loopback_and_the_listen_address() {
        let tls = TlsConfig::self_signed("192.0.2.7".parse().unwrap()).unwrap();
        let (certified, fingerprint) = tls.cert.get();
        assert_eq!(fingerprint, tls.fingerprint());
        let der = certified.cert[0].as_ref();
        // The IP SANs are stored as their octets.
        let loopback6 = std::net::Ipv6Addr::LOCALHOST.octets();
        for octets in [&[127u8, 0, 0, 1][..], &[192, 0, 2, 7], &loopback6] {
            assert!(der.windows(octets.len()).any(|w| w == octets), "{octets:?}");
        }
        assert!(der.windows(9).any(|w| w == b"localhost"));
        assert!(matches!(tls.reload(), Err(TlsError::NotFromFiles)));
        // A debug print shows the fingerprint, not the key.
        assert!(format!("{tls:?}").contains(&fingerprint.to_string()));
    }
}
