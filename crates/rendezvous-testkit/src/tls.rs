//! Certificates for TLS tests, made with rcgen: a [`TestCa`] that issues
//! leaf certificates ([`TestCert`]) for loopback names.

use std::path::Path;

use rendezvous_proto::tls::{Fingerprint, TlsOptions};
use rendezvous_server::tls::TlsConfig;

/// The names a test server's certificate is valid for: what its
/// `https://127.0.0.1:PORT` URL and `localhost` need.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A certificate authority of the test's own (ECDSA P-256).
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert_pem: String,
}

/// A leaf certificate and its key, issued by a [`TestCa`].
#[derive(Clone)]
pub struct TestCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The SHA-256 of the certificate's DER.
    pub fingerprint: Fingerprint,
}

impl TestCa {
    /// A new CA whose subject's common name is `name`.
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            issuer: rcgen::Issuer::new(params, key),
            cert_pem: cert.pem(),
        }
    }

    /// The CA's certificate, PEM (what `--ca-cert` reads).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Client options that trust this CA only.
    pub fn trust(&self) -> TlsOptions {
        TlsOptions {
            ca_cert_pem: Some(self.cert_pem.clone().into_bytes()),
            server_fingerprint: None,
        }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses), with a
    /// new key.
    pub fn issue(&self, names: &[&str]) -> TestCert {
        self.issue_until(names, None)
    }

    /// A leaf certificate for [`LOOPBACK_NAMES`] that expires on 1 January
    /// of `year`, at 00:00 UTC.
    pub fn issue_loopback_until(&self, year: i32) -> TestCert {
        self.issue_until(&LOOPBACK_NAMES, Some(year))
    }

    fn issue_until(&self, names: &[&str], year: Option<i32>) -> TestCert {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("leaf params");
        if let Some(year) = year {
            params.not_after = rcgen::date_time_ymd(year, 1, 1);
        }
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: Fingerprint::of(cert.der()),
        }
    }

    /// A leaf certificate for [`LOOPBACK_NAMES`].
    pub fn issue_loopback(&self) -> TestCert {
        self.issue(&LOOPBACK_NAMES)
    }
}

impl TestCert {
    /// The server's TLS configuration for this certificate (not
    /// reloadable: see [`TestCert::write_to`] for files).
    pub fn tls_config(&self) -> TlsConfig {
        TlsConfig::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
            .expect("a usable test certificate")
    }

    /// Client options that pin this certificate.
    pub fn pin(&self) -> TlsOptions {
        TlsOptions {
            ca_cert_pem: None,
            server_fingerprint: Some(self.fingerprint),
        }
    }

    /// Writes the certificate and key to `cert` and `key` (replacing them).
    pub fn write_to(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).expect("write the certificate");
        std::fs::write(key, &self.key_pem).expect("write the key");
    }
}
