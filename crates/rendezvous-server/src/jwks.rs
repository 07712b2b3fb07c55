//! Public keys that verify JWTs: a JWKS (RFC 7517) or PEM file, or a JWKS
//! URL fetched and cached. Guest tokens signed by a CI system's own key
//! ([`crate::token`]) and CI identity tokens that admit hosts
//! ([`crate::oidc`]) both use them.
//!
//! Each key verifies exactly one algorithm, fixed by the key, not by the
//! token: an RSA key `RS256` (or the JWK's `alg`, one of `RS256`…`PS512`),
//! a P-256 key `ES256`, a P-384 key `ES384`, an Ed25519 key `EdDSA`. A
//! token's header `alg` must be that one, so an RSA key never checks an
//! HS256 token (algorithm confusion) and `none` is never accepted.
//! Symmetric (`oct`) keys and keys marked for encryption are skipped: a
//! shared secret belongs in `--token-key-file`, not in a public key set.
//!
//! A token's `kid` selects its key. A token without a `kid` is checked
//! only against a set of one key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header};

/// Largest JWKS document accepted, in bytes (256 KiB; GitHub's is about
/// 3 KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Most keys one set may hold (100).
pub const MAX_KEYS: usize = 100;

/// How long one JWKS fetch may take, connect to last byte, in ms (10 s).
pub const FETCH_TIMEOUT: Duration = Duration::from_millis(10_000);

/// Default [`RemoteJwks::min_refetch_interval`], in ms (60 s): a token
/// with an unknown `kid` fetches the set again at most this often, so
/// tokens with made-up `kid`s cannot make the server hammer the issuer.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_millis(60_000);

/// How long a fetched set is used before it is fetched again on the next
/// use, in ms (1 h), so that a key the issuer withdrew stops verifying.
/// If that fetch fails, the old set stays in use.
pub const MAX_KEY_SET_AGE: Duration = Duration::from_millis(3_600_000);

/// Why keys could not be had, or a token's header names none of them.
/// No text holds a token or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The document is not a JWKS or PEM public key this server can use.
    #[error("{0}")]
    Malformed(String),
    /// The set was not fetched (the text says why and from where).
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(String),
    /// No key in the set has the token's `kid` (or the token has none and
    /// the set holds several keys).
    #[error("no key for this token's kid")]
    UnknownKid,
    /// The token's `alg` is not the algorithm of the key its `kid` names.
    #[error("the token's algorithm is not its key's")]
    AlgorithmMismatch,
}

/// One public key and the one algorithm it verifies.
#[derive(Clone)]
struct VerifyingKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// A set of public keys. `Debug` shows their `kid`s and algorithms only.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (k.kid.as_deref(), k.algorithm)))
            .finish()
    }
}

/// The algorithm a JWK verifies, or `None` for a key this server does not
/// use (symmetric, for encryption, an unsupported curve, or an `alg` that
/// does not fit its type).
fn jwk_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let declared = jwk.common.key_algorithm;
    let (natural, allowed): (Algorithm, &[(KeyAlgorithm, Algorithm)]) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (
            Algorithm::RS256,
            &[
                (KeyAlgorithm::RS256, Algorithm::RS256),
                (KeyAlgorithm::RS384, Algorithm::RS384),
                (KeyAlgorithm::RS512, Algorithm::RS512),
                (KeyAlgorithm::PS256, Algorithm::PS256),
                (KeyAlgorithm::PS384, Algorithm::PS384),
                (KeyAlgorithm::PS512, Algorithm::PS512),
            ],
        ),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => (Algorithm::ES256, &[(KeyAlgorithm::ES256, Algorithm::ES256)]),
            EllipticCurve::P384 => (Algorithm::ES384, &[(KeyAlgorithm::ES384, Algorithm::ES384)]),
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => {
                (Algorithm::EdDSA, &[(KeyAlgorithm::EdDSA, Algorithm::EdDSA)])
            }
            _ => return None,
        },
        _ => return None,
    };
    match declared {
        None => Some(natural),
        Some(declared) => allowed
            .iter()
            .find(|(k, _)| *k == declared)
            .map(|(_, a)| *a),
    }
}

impl KeySet {
    /// The usable keys of a JWKS document (`{"keys": [...]}`); keys this
    /// server does not use are skipped (see the module docs).
    ///
    /// # Errors
    /// [`JwksError::Malformed`] when it is not a JWKS, has no usable key,
    /// or more than [`MAX_KEYS`].
    pub fn from_jwks(json: &[u8]) -> Result<Self, JwksError> {
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| {
            JwksError::Malformed(format!("not a JWKS (a JSON object with \"keys\"): {e}"))
        })?;
        if set.keys.len() > MAX_KEYS {
            return Err(JwksError::Malformed(format!(
                "{} keys, more than {MAX_KEYS}",
                set.keys.len()
            )));
        }
        let keys: Vec<VerifyingKey> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let algorithm = jwk_algorithm(jwk)?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some(VerifyingKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                })
            })
            .collect();
        if keys.is_empty() {
            return Err(JwksError::Malformed(
                "no usable public key in the JWKS (RSA, EC P-256/P-384 or Ed25519, not for \
                 encryption)"
                    .into(),
            ));
        }
        Ok(Self { keys })
    }

    /// One public key in PEM (`BEGIN PUBLIC KEY`: RSA, EC P-256/P-384 or
    /// Ed25519; or `BEGIN RSA PUBLIC KEY`), without a `kid`.
    ///
    /// # Errors
    /// [`JwksError::Malformed`] for a private key or anything else.
    pub fn from_pem(pem: &[u8]) -> Result<Self, JwksError> {
        if pem.windows(7).any(|w| w == b"PRIVATE") {
            return Err(JwksError::Malformed(
                "this is a private key: give the public key (`openssl pkey -pubout`)".into(),
            ));
        }
        let key = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (Algorithm::RS256, key)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (Algorithm::EdDSA, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // An uncompressed point: 1 + 2 × 32 bytes for P-256, 1 + 2 × 48
            // for P-384.
            match key.try_get_as_bytes().map(<[u8]>::len) {
                Ok(65) => (Algorithm::ES256, key),
                Ok(97) => (Algorithm::ES384, key),
                _ => {
                    return Err(JwksError::Malformed(
                        "an EC public key must be on P-256 or P-384, uncompressed".into(),
                    ));
                }
            }
        } else {
            return Err(JwksError::Malformed(
                "not a PEM public key (BEGIN PUBLIC KEY: RSA, EC P-256/P-384 or Ed25519)".into(),
            ));
        };
        Ok(Self {
            keys: vec![VerifyingKey {
                kid: None,
                algorithm: key.0,
                key: key.1,
            }],
        })
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key and algorithm that must verify a token with `header`.
    ///
    /// # Errors
    /// [`JwksError::UnknownKid`] or [`JwksError::AlgorithmMismatch`].
    pub fn select(&self, header: &Header) -> Result<(DecodingKey, Algorithm), JwksError> {
        let found = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .or(match self.keys.as_slice() {
                    // A PEM key (no kid) checks whatever kid a token names.
                    [only] if only.kid.is_none() => Some(only),
                    _ => None,
                }),
            None => match self.keys.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        };
        let key = found.ok_or(JwksError::UnknownKid)?;
        if key.algorithm != header.alg {
            return Err(JwksError::AlgorithmMismatch);
        }
        Ok((key.key.clone(), key.algorithm))
    }
}

/// A JWKS fetched from a URL, cached. Fetched on first use, when a token
/// names an unknown `kid`, and on the first use after [`MAX_KEY_SET_AGE`];
/// but at most once per [`min_refetch_interval`] whatever the reason, so
/// also a failed fetch is retried only after it.
///
/// [`min_refetch_interval`]: RemoteJwks::min_refetch_interval
#[derive(Debug)]
pub struct RemoteJwks {
    url: String,
    /// Shortest time between two fetches caused by unknown `kid`s
    /// (default [`MIN_REFETCH_INTERVAL`]; tests shorten it).
    pub min_refetch_interval: Duration,
    /// The set in use and when it was fetched; `None` before the first
    /// fetch that succeeded. Replaced, never edited, after a fetch.
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    keys: Option<(Arc<KeySet>, Instant)>,
    /// When the last fetch started, successful or not.
    last_attempt: Option<Instant>,
}

impl RemoteJwks {
    /// A set to be fetched from `url` (`https://`, or `http://` on
    /// loopback) on first use.
    ///
    /// # Errors
    /// [`JwksError::Malformed`] for a URL that may not be fetched.
    pub fn new(url: &str) -> Result<Self, JwksError> {
        rendezvous_proto::fetch::check_url(url)
            .map_err(|e| JwksError::Malformed(format!("--token-jwks-url: {e}")))?;
        Ok(Self {
            url: url.to_owned(),
            min_refetch_interval: MIN_REFETCH_INTERVAL,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key for `header`, fetching the set first if it was never
    /// fetched, is older than [`MAX_KEY_SET_AGE`], or lacks the `kid`
    /// (rate-limited as the type says).
    ///
    /// # Errors
    /// [`JwksError::UnknownKid`], [`JwksError::AlgorithmMismatch`], or
    /// [`JwksError::Fetch`] when there is no set to look in.
    pub async fn select(&self, header: &Header) -> Result<(DecodingKey, Algorithm), JwksError> {
        let (current, stale) = {
            let cache = lock(&self.cache);
            match &cache.keys {
                Some((keys, at)) => (Some(keys.clone()), at.elapsed() >= MAX_KEY_SET_AGE),
                None => (None, true),
            }
        };
        if let Some(keys) = &current
            && !stale
        {
            match keys.select(header) {
                Err(JwksError::UnknownKid) => {}
                other => return other,
            }
        }
        match self.refetch().await {
            Ok(keys) => keys.select(header),
            // A stale set is better than none while the issuer is away.
            Err(error) => match current {
                Some(keys) => keys.select(header),
                None => Err(error),
            },
        }
    }

    /// Fetches the set again unless a fetch (for any reason, successful or
    /// not) started less than `min_refetch_interval` ago; returns the set
    /// in use afterwards.
    async fn refetch(&self) -> Result<Arc<KeySet>, JwksError> {
        {
            let mut cache = lock(&self.cache);
            let recent = cache
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.min_refetch_interval);
            if recent {
                return cache.keys.as_ref().map(|(k, _)| k.clone()).ok_or_else(|| {
                    JwksError::Fetch(format!(
                        "{} failed moments ago; retrying within {} s",
                        self.url,
                        self.min_refetch_interval.as_secs()
                    ))
                });
            }
            cache.last_attempt = Some(Instant::now());
        }
        let body = rendezvous_proto::fetch::get(
            &self.url,
            http::HeaderMap::new(),
            MAX_JWKS_BYTES,
            FETCH_TIMEOUT,
        )
        .await
        .map_err(|e| JwksError::Fetch(e.to_string()));
        let keys = match body.and_then(|b| KeySet::from_jwks(&b)) {
            Ok(keys) => Arc::new(keys),
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "cannot refresh the JWKS");
                return Err(error);
            }
        };
        tracing::info!(url = %self.url, keys = keys.len(), "fetched the JWKS");
        lock(&self.cache).keys = Some((keys.clone(), Instant::now()));
        Ok(keys)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How a [`KeyFile`] is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFileFormat {
    /// A JWKS (`{"keys": [...]}`), as [`KeySet::from_jwks`] reads it.
    Jwks,
    /// One PEM public key, as [`KeySet::from_pem`] reads it.
    Pem,
}

/// Public keys from a file (`--token-jwks-file`, `--token-public-key-file`,
/// `--host-oidc-jwks-file`), read again by [`KeyFile::reload`] (on SIGHUP),
/// so that keys rotate without a restart.
#[derive(Debug)]
pub struct KeyFile {
    path: std::path::PathBuf,
    format: KeyFileFormat,
    keys: Mutex<Arc<KeySet>>,
}

impl KeyFile {
    /// Reads the keys in `path`.
    ///
    /// # Errors
    /// [`JwksError::Malformed`] when the file cannot be read (the message
    /// names it) or holds no usable key.
    pub fn load(path: &std::path::Path, format: KeyFileFormat) -> Result<Self, JwksError> {
        Ok(Self {
            path: path.to_owned(),
            format,
            keys: Mutex::new(Arc::new(read_key_file(path, format)?)),
        })
    }

    /// The file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Reads the file again and uses its keys from now on; returns how
    /// many there are. Tokens already checked stay checked.
    ///
    /// # Errors
    /// As [`KeyFile::load`]; the keys loaded before stay in force.
    pub fn reload(&self) -> Result<usize, JwksError> {
        let keys = read_key_file(&self.path, self.format)?;
        let count = keys.len();
        *lock(&self.keys) = Arc::new(keys);
        Ok(count)
    }

    /// The keys in force.
    pub fn keys(&self) -> Arc<KeySet> {
        lock(&self.keys).clone()
    }
}

fn read_key_file(path: &std::path::Path, format: KeyFileFormat) -> Result<KeySet, JwksError> {
    let bytes = std::fs::read(path)
        .map_err(|e| JwksError::Malformed(format!("cannot read {}: {e}", path.display())))?;
    match format {
        KeyFileFormat::Jwks => KeySet::from_jwks(&bytes),
        KeyFileFormat::Pem => KeySet::from_pem(&bytes),
    }
    .map_err(|e| JwksError::Malformed(format!("{}: {e}", path.display())))
}

/// Where public keys come from: fixed keys, a file, or a URL.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Keys given once (e.g. by an embedding program).
    Fixed(Arc<KeySet>),
    /// A JWKS or PEM file's keys, reloadable.
    File(Arc<KeyFile>),
    /// A JWKS URL's keys, cached.
    Remote(Arc<RemoteJwks>),
}

impl KeySource {
    /// The key and algorithm that must verify a token with `header`.
    ///
    /// # Errors
    /// As [`KeySet::select`] and [`RemoteJwks::select`].
    pub async fn select(&self, header: &Header) -> Result<(DecodingKey, Algorithm), JwksError> {
        match self {
            Self::Fixed(keys) => keys.select(header),
            Self::File(file) => file.keys().select(header),
            Self::Remote(remote) => remote.select(header).await,
        }
    }
}
