//! Signing keys for JWTs, as a CI system or an OIDC issuer holds them, and
//! a tiny HTTP server on loopback that serves their JWKS (or any other
//! document: a discovery document, a CI's token endpoint).
//!
//! Keys are made fresh with real crypto: RSA 2048 (the `rsa` crate),
//! P-256 and Ed25519 (rcgen, on ring).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// A private signing key with its `kid`.
pub struct SigningKey {
    /// The key ID its JWK and tokens carry.
    pub kid: String,
    /// The one algorithm it signs with.
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: serde_json::Value,
    public_pem: String,
}

impl SigningKey {
    /// A new RSA 2048 key (RS256).
    pub fn rsa(kid: &str) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::EncodePublicKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("RSA key");
        let der = key.to_pkcs1_der().expect("PKCS#1");
        let public = key.to_public_key();
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: serde_json::json!({
                "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            }),
            public_pem: public
                .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
                .expect("PEM"),
        }
    }

    /// A new P-256 key (ES256).
    pub fn p256(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256");
        // An uncompressed point: 0x04, x (32 bytes), y (32 bytes).
        let point = pair.public_key_raw();
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
            public_pem: pair.public_key_pem(),
        }
    }

    /// A new Ed25519 key (EdDSA).
    pub fn ed25519(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519");
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
            jwk: serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
            }),
            public_pem: pair.public_key_pem(),
        }
    }

    /// Signs `claims` with this key, its algorithm and its `kid`.
    pub fn sign(&self, claims: &impl Serialize) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        self.sign_with(&header, claims)
    }

    /// Signs `claims` with this key under `header` as given (to forge a
    /// wrong `kid` or `alg`).
    pub fn sign_with(&self, header: &Header, claims: &impl Serialize) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("sign")
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> serde_json::Value {
        self.jwk.clone()
    }

    /// The public key as PEM (`BEGIN PUBLIC KEY`).
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }
}

/// A JWKS document holding `keys`' public keys.
pub fn jwks(keys: &[&SigningKey]) -> String {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
}

/// What a [`DocumentServer`] answers and has been asked.
#[derive(Default)]
struct Documents {
    /// Body by path (the query is ignored).
    bodies: HashMap<String, String>,
    /// Requests by path.
    hits: HashMap<String, usize>,
    /// The `authorization` header and query of the last request, by path.
    last: HashMap<String, (Option<String>, Option<String>)>,
}

/// An HTTP server on `127.0.0.1:0` that answers GETs with the documents
/// set on it (404 for others), and counts them. Stops on drop.
pub struct DocumentServer {
    /// Its address.
    pub addr: SocketAddr,
    documents: Arc<Mutex<Documents>>,
    _server: tokio_util::task::AbortOnDropHandle<()>,
}

impl DocumentServer {
    /// Starts one.
    pub async fn start() -> Self {
        let documents = Arc::new(Mutex::new(Documents::default()));
        let state = documents.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let state = state.clone();
            async move {
                let path = request.uri().path().to_owned();
                let mut docs = state.lock().unwrap();
                *docs.hits.entry(path.clone()).or_default() += 1;
                let auth = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let query = request.uri().query().map(str::to_owned);
                docs.last.insert(path.clone(), (auth, query));
                match docs.bodies.get(&path) {
                    Some(body) => (http::StatusCode::OK, body.clone()),
                    None => (http::StatusCode::NOT_FOUND, String::new()),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            documents,
            _server: tokio_util::task::AbortOnDropHandle::new(server),
        }
    }

    /// `http://ADDR` with `path` appended.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers GET `path` with `body` from now on.
    pub fn set(&self, path: &str, body: impl Into<String>) {
        self.documents
            .lock()
            .unwrap()
            .bodies
            .insert(path.to_owned(), body.into());
    }

    /// How many requests `path` has had.
    pub fn hits(&self, path: &str) -> usize {
        self.documents
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The `authorization` header and the query of the last request to
    /// `path`.
    pub fn last_request(&self, path: &str) -> (Option<String>, Option<String>) {
        self.documents
            .lock()
            .unwrap()
            .last
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}
