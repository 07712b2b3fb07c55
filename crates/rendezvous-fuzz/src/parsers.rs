//! The parsers harness: the server's own parsing of untrusted text, each
//! fed the fuzzer's bytes:
//! - guest tokens (`token::verify`, HS256 under a token key and public
//!   keys from a key set) and CI identity tokens (`OidcIssuer::admit`
//!   with fixed keys; `claimed_issuer`, `looks_like_jwt`), which any
//!   client presents;
//! - JWKS documents and PEM keys (`KeySet::from_jwks`, `from_pem`), which
//!   the server fetches from an issuer's URL;
//! - a guest's input, stripped of terminal replies
//!   (`terminal_replies::strip`) for guests that are not the primary
//!   writer;
//! - the stated rules of each: a grant's role is read-write or read-only
//!   and its `sub` at most [`MAX_SUB_BYTES`]; a key set holds 1 to
//!   [`MAX_KEYS`] keys; stripping only removes bytes, in order, and
//!   leaves input without ESC as it is.

use std::sync::Arc;

use futures::FutureExt;
use jsonwebtoken::{Algorithm, Header};
use rendezvous_proto::Role;
use rendezvous_server::jwks::{KeySet, KeySource, MAX_KEYS};
use rendezvous_server::oidc::{OidcIssuer, claimed_issuer, looks_like_jwt};
use rendezvous_server::terminal_replies;
use rendezvous_server::token::{MAX_SUB_BYTES, TokenKey, verify};

use crate::fixture::TOKEN_KEY;

/// An Ed25519 public key (RFC 8037's example), as a JWKS.
const JWKS: &[u8] = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::PS512,
];

/// Runs the parsers harness on `data`. See the module docs.
///
/// # Panics
/// When a parser panics or breaks its stated rules.
pub fn parsers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    crate::exec::run(async {
        tokens(&text).await;
    });
    key_sets(data);
    replies(data);
}

async fn tokens(token: &str) {
    let key = TokenKey::new(TOKEN_KEY).expect("the key is long enough");
    let keys = KeySet::from_jwks(JWKS).expect("the fixed JWKS parses");
    let public = KeySource::Fixed(Arc::new(keys.clone()));
    let grants = [
        key.verify(token),
        verify(token, Some(&key), Some(&public))
            .now_or_never()
            .expect("fixed keys do not wait"),
    ];
    for grant in grants.into_iter().flatten() {
        assert!(matches!(grant.role, Role::ReadWrite | Role::ReadOnly));
        assert!(grant.sub.is_none_or(|s| s.len() <= MAX_SUB_BYTES));
    }
    let issuer = OidcIssuer::with_keys("https://issuer.example", "rendezvous", Vec::new(), keys);
    if let Some(Ok(owner)) = issuer.admit(token).now_or_never() {
        assert!(owner.as_str().starts_with("oidc:"), "{owner}");
    }
    let _ = claimed_issuer(token);
    let parts: Vec<&str> = token.split('.').collect();
    if looks_like_jwt(token) {
        assert_eq!(parts.len(), 3, "a JWT has three parts");
    }
}

fn key_sets(data: &[u8]) {
    let mut sets = Vec::new();
    if let Ok(set) = KeySet::from_jwks(data) {
        assert!(
            (1..=MAX_KEYS).contains(&set.len()),
            "a key set of {}",
            set.len()
        );
        sets.push(set);
    }
    if let Ok(set) = KeySet::from_pem(data) {
        assert_eq!(set.len(), 1, "a PEM holds one key");
        sets.push(set);
    }
    for set in &sets {
        for alg in ALGORITHMS {
            for kid in [None, Some("k1".to_owned()), Some(String::new())] {
                let header = Header {
                    kid,
                    ..Header::new(alg)
                };
                if let Ok((_, chosen)) = set.select(&header) {
                    assert_eq!(
                        chosen, alg,
                        "a key chose another algorithm than the token's"
                    );
                }
            }
        }
    }
}

fn replies(input: &[u8]) {
    let out = terminal_replies::strip(input);
    if !input.contains(&0x1b) {
        assert_eq!(&out[..], input, "input without ESC changed");
    }
    // `out` is a subsequence of `input`.
    let mut rest = input.iter();
    for b in out.iter() {
        assert!(rest.any(|x| x == b), "stripping added or reordered bytes");
    }
}
