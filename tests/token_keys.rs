//! Guest tokens signed by a CI system's own private key (RS256, ES256,
//! EdDSA) and checked with its public keys: from a JWKS, a PEM file, or a
//! JWKS URL served on loopback, with key rotation. Real keys, real crypto.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header};
use rendezvous_proto::{ListSessionsRequest, Role};
use rendezvous_server::ServerConfig;
use rendezvous_server::jwks::{KeyFile, KeyFileFormat, KeySet, KeySource, RemoteJwks};
use rendezvous_server::token::{self, GuestClaims, TokenError, TokenKey};
use rendezvous_testkit::jwt::{DocumentServer, SigningKey, jwks};
use rendezvous_testkit::{TermGuest, TestHost, TestServer};
use tonic::Code;

/// One key of each kind, made once per test binary (RSA takes a moment).
fn keys() -> &'static [SigningKey; 3] {
    static KEYS: OnceLock<[SigningKey; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            SigningKey::rsa("rsa-1"),
            SigningKey::p256("ec-1"),
            SigningKey::ed25519("ed-1"),
        ]
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims for `task` of the owner `open`, read-write, expiring in 10 min.
fn claims(task: &str) -> GuestClaims {
    GuestClaims {
        task_id: task.into(),
        owner: "open".into(),
        role: "read-write".into(),
        aud: "rendezvous".into(),
        exp: now() + 600,
        nbf: None,
        sub: Some("alice".into()),
        host: None,
        session: None,
    }
}

fn fixed(keys: &[&SigningKey]) -> KeySource {
    KeySource::Fixed(Arc::new(KeySet::from_jwks(jwks(keys).as_bytes()).unwrap()))
}

async fn server_with(keys: KeySource) -> TestServer {
    TestServer::with_config(ServerConfig {
        token_public_keys: Some(keys),
        ..ServerConfig::default()
    })
    .await
}

fn with_token(host: &TestHost, session_id: &str, token: &str) -> rendezvous_proto::AttachRequest {
    let mut request = host.attach_request(session_id);
    request.secret.clear();
    request.token = token.to_owned();
    request
}

#[tokio::test]
async fn tokens_signed_with_rsa_p256_and_ed25519_keys_open_shells() {
    let [rsa, ec, ed] = keys();
    let server = server_with(fixed(&[rsa, ec, ed])).await;
    let host = TestHost::start(&server, "pk-ok").await;
    for key in keys() {
        let token = key.sign(&claims("pk-ok"));
        let mut guest = TermGuest::open(&server, with_token(&host, "", &token))
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", key.algorithm));
        assert_eq!(guest.attached.role(), Role::ReadWrite);
        guest.type_text("echo signed-$((40+2))\n").await;
        guest.events.until("signed-42").await;
    }
}

#[tokio::test]
async fn a_pem_public_key_checks_its_tokens_only() {
    for key in keys() {
        let source = KeySource::Fixed(Arc::new(
            KeySet::from_pem(key.public_pem().as_bytes()).unwrap(),
        ));
        let grant = token::verify(&key.sign(&claims("t")), None, Some(&source))
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", key.algorithm));
        assert_eq!(grant.sub.as_deref(), Some("alice"));
        for other in keys().iter().filter(|k| k.kid != key.kid) {
            assert_eq!(
                token::verify(&other.sign(&claims("t")), None, Some(&source)).await,
                Err(TokenError::Invalid),
                "{:?} under a {:?} key",
                other.algorithm,
                key.algorithm
            );
        }
    }
    assert!(
        KeySet::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .is_err()
    );
}

#[tokio::test]
async fn tokens_not_yet_valid_too_long_lived_or_expired_are_refused() {
    let [rsa, ec, ed] = keys();
    let source = fixed(&[rsa, ec, ed]);
    for key in keys() {
        let verify = |claims: GuestClaims| {
            let token = key.sign(&claims);
            let source = source.clone();
            async move { token::verify(&token, None, Some(&source)).await }
        };
        let early = GuestClaims {
            nbf: Some(now() + 3600),
            exp: now() + 7200,
            ..claims("t")
        };
        assert_eq!(verify(early).await, Err(TokenError::NotYetValid));
        let eight_days = GuestClaims {
            exp: now() + 8 * 86_400,
            ..claims("t")
        };
        assert_eq!(verify(eight_days).await, Err(TokenError::Lifetime));
        let expired = GuestClaims {
            exp: now() - 10,
            ..claims("t")
        };
        assert_eq!(verify(expired).await, Err(TokenError::Expired));
        let wrong_audience = GuestClaims {
            aud: "someone-else".into(),
            ..claims("t")
        };
        assert_eq!(verify(wrong_audience).await, Err(TokenError::Invalid));
        assert!(verify(claims("t")).await.is_ok());
    }
}

#[tokio::test]
async fn forged_tokens_unknown_kids_and_algorithm_confusion_are_refused() {
    let [rsa, ec, ed] = keys();
    let source = fixed(&[rsa, ec, ed]);
    let verify = |token: String| {
        let source = source.clone();
        async move { token::verify(&token, None, Some(&source)).await }
    };

    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);

    // A bad signature: another key of the same kind, claiming the kid.
    let impostor = SigningKey::p256("ec-1");
    assert_eq!(
        verify(impostor.sign(&claims("t"))).await,
        Err(TokenError::Invalid)
    );
    // Tampered claims under a real signature.
    let token = ed.sign(&claims("t"));
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = ed
        .sign(&claims("other-task"))
        .split('.')
        .nth(1)
        .unwrap()
        .into();
    assert_eq!(verify(parts.join(".")).await, Err(TokenError::Invalid));

    // An unknown kid.
    let stranger = SigningKey::ed25519("ed-unknown");
    assert_eq!(
        verify(stranger.sign(&claims("t"))).await,
        Err(TokenError::Invalid)
    );

    // An ES256 signature under the RSA key's kid.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(rsa.kid.clone());
    assert_eq!(
        verify(ec.sign_with(&header, &claims("t"))).await,
        Err(TokenError::Invalid)
    );
    // ES384 claimed for the P-256 key (right kid, wrong alg).
    let es256 = ec.sign(&claims("t"));
    let (_, rest) = es256.split_once('.').unwrap();
    let relabelled = format!("{}.{rest}", b64(r#"{"alg":"ES384","kid":"ec-1"}"#));
    assert_eq!(verify(relabelled).await, Err(TokenError::Invalid));
    // HS256 "signed" with the RSA public key as the HMAC secret, the
    // classic confusion: refused without an HMAC key, and with one.
    let confused = jsonwebtoken::encode(
        &Header {
            kid: Some(rsa.kid.clone()),
            ..Header::new(Algorithm::HS256)
        },
        &claims("t"),
        &jsonwebtoken::EncodingKey::from_secret(rsa.public_pem().as_bytes()),
    )
    .unwrap();
    assert_eq!(verify(confused.clone()).await, Err(TokenError::Invalid));
    let hmac = TokenKey::new(&[5u8; 32]).unwrap();
    assert_eq!(
        token::verify(&confused, Some(&hmac), Some(&source)).await,
        Err(TokenError::Invalid)
    );
    // alg none, unsigned.
    let unsigned = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#),
        b64(&serde_json::to_string(&claims("t")).unwrap())
    );
    assert_eq!(verify(unsigned).await, Err(TokenError::Invalid));
    // The real thing still passes.
    assert!(verify(rsa.sign(&claims("t"))).await.is_ok());
}

#[tokio::test]
async fn a_token_for_another_owner_reaches_nothing() {
    let [rsa, ec, ed] = keys();
    let server = server_with(fixed(&[rsa, ec, ed])).await;
    let host = TestHost::start(&server, "pk-owner").await;
    let others = GuestClaims {
        owner: "token:someone-else".into(),
        ..claims("pk-owner")
    };
    let refused = TermGuest::open(&server, with_token(&host, "", &rsa.sign(&others)))
        .await
        .err()
        .unwrap();
    let mut wrong_secret = host.attach_request("");
    wrong_secret.secret = "w".repeat(32);
    let denied = TermGuest::open(&server, wrong_secret).await.err().unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(refused.message(), denied.message());
}

#[tokio::test]
async fn tokens_bound_to_a_host_or_session_reach_only_that() {
    let [rsa, ec, ed] = keys();
    let server = server_with(fixed(&[rsa, ec, ed])).await;
    let host = TestHost::start(&server, "pk-bound").await;
    let first = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    let second = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    let session = first.attached.session_id.clone();

    let other_host = GuestClaims {
        host: Some("another-host".into()),
        ..claims("pk-bound")
    };
    let err = TermGuest::open(&server, with_token(&host, "", &ec.sign(&other_host)))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied);
    let this_host = GuestClaims {
        host: Some("default".into()),
        ..claims("pk-bound")
    };
    assert!(
        TermGuest::open(&server, with_token(&host, "", &ec.sign(&this_host)))
            .await
            .is_ok()
    );

    let one_session = ed.sign(&GuestClaims {
        session: Some(session.clone()),
        ..claims("pk-bound")
    });
    for (target, why) in [
        ("", "a new shell"),
        (second.attached.session_id.as_str(), "another session"),
    ] {
        let err = TermGuest::open(&server, with_token(&host, target, &one_session))
            .await
            .err()
            .unwrap_or_else(|| panic!("{why} was reached"));
        assert_eq!(err.code(), Code::PermissionDenied, "{why}");
    }
    let joined = TermGuest::open(&server, with_token(&host, &session, &one_session))
        .await
        .unwrap();
    assert_eq!(joined.attached.session_id, session);

    // Listing shows only what the token may reach.
    let list = |token: String| {
        let server = &server;
        async move {
            server
                .guest_client()
                .await
                .list_sessions(ListSessionsRequest {
                    task_id: "pk-bound".into(),
                    token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .hosts
        }
    };
    let everything = list(ec.sign(&claims("pk-bound"))).await;
    assert_eq!(
        everything[0].sessions.len(),
        3,
        "two shells here, one by this_host"
    );
    let listed = list(one_session).await;
    assert_eq!(listed.len(), 1);
    let ids: Vec<&str> = listed[0]
        .sessions
        .iter()
        .map(|s| s.session_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [session.as_str()],
        "only the token's session is listed"
    );
    assert!(
        list(ec.sign(&other_host)).await.is_empty(),
        "another host's token lists no host"
    );
}

#[tokio::test]
async fn a_jwks_url_is_cached_and_refetched_at_most_once_a_minute_for_unknown_kids() {
    let [rsa, ec, _] = keys();
    let http = DocumentServer::start().await;
    http.set("/jwks", jwks(&[rsa]));
    let source = KeySource::Remote(Arc::new(RemoteJwks::new(&http.url("/jwks")).unwrap()));
    let verify = |token: String| {
        let source = source.clone();
        async move { token::verify(&token, None, Some(&source)).await }
    };
    assert!(verify(rsa.sign(&claims("t"))).await.is_ok());
    assert!(verify(rsa.sign(&claims("t"))).await.is_ok());
    assert_eq!(http.hits("/jwks"), 1, "the set is cached");
    // An unknown kid: the set was fetched less than a minute ago, so it is
    // not fetched again, even though the new key is there now.
    http.set("/jwks", jwks(&[rsa, ec]));
    assert_eq!(
        verify(ec.sign(&claims("t"))).await,
        Err(TokenError::Invalid)
    );
    assert_eq!(
        verify(SigningKey::ed25519("made-up").sign(&claims("t"))).await,
        Err(TokenError::Invalid)
    );
    assert_eq!(http.hits("/jwks"), 1, "unknown kids are rate-limited");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_for_its_new_kid_and_the_old_one_stops_working() {
    let [rsa, ec, ed] = keys();
    let http = DocumentServer::start().await;
    http.set("/keys", jwks(&[rsa]));
    let mut remote = RemoteJwks::new(&http.url("/keys")).unwrap();
    remote.min_refetch_interval = Duration::ZERO;
    let server = server_with(KeySource::Remote(Arc::new(remote))).await;
    let host = TestHost::start(&server, "pk-rotate").await;
    let attach = |key: &SigningKey| {
        let request = with_token(&host, "", &key.sign(&claims("pk-rotate")));
        let server = &server;
        async move { TermGuest::open(server, request).await.map(|_| ()) }
    };
    attach(rsa).await.unwrap();
    assert_eq!(http.hits("/keys"), 1);

    // Rotation: the issuer now publishes new keys only.
    http.set("/keys", jwks(&[ec, ed]));
    attach(ec).await.unwrap();
    assert_eq!(http.hits("/keys"), 2, "a new kid fetches the set");
    attach(ed).await.unwrap();
    assert_eq!(http.hits("/keys"), 2, "the new set is cached");
    let err = attach(rsa).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("invalid guest token"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn an_unreachable_jwks_url_refuses_tokens_and_is_not_hammered() {
    let [rsa, ..] = keys();
    let http = DocumentServer::start().await;
    // Nothing at /missing: 404.
    let source = KeySource::Remote(Arc::new(RemoteJwks::new(&http.url("/missing")).unwrap()));
    for _ in 0..3 {
        assert_eq!(
            token::verify(&rsa.sign(&claims("t")), None, Some(&source)).await,
            Err(TokenError::Invalid)
        );
    }
    assert_eq!(http.hits("/missing"), 1);
    assert!(RemoteJwks::new("http://192.0.2.1/jwks").is_err());
}

#[tokio::test]
async fn a_reloaded_key_file_checks_tokens_of_its_new_keys_only() {
    let [rsa, ec, _] = keys();
    let dir = rendezvous_testkit::temp_dir("key-file");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[rsa])).unwrap();
    let file = Arc::new(KeyFile::load(&path, KeyFileFormat::Jwks).unwrap());
    let server = server_with(KeySource::File(file.clone())).await;
    let host = TestHost::start(&server, "pk-reload").await;
    let attach = |token: String| {
        let request = with_token(&host, "", &token);
        let server = &server;
        async move { TermGuest::open(server, request).await.map(|_| ()) }
    };
    assert!(attach(rsa.sign(&claims("pk-reload"))).await.is_ok());
    assert!(
        attach(ec.sign(&claims("pk-reload"))).await.is_err(),
        "a key not in the file"
    );

    // Rotated: the new key checks tokens, the old one no longer does.
    std::fs::write(&path, jwks(&[ec])).unwrap();
    assert_eq!(file.reload().unwrap(), 1);
    assert!(attach(ec.sign(&claims("pk-reload"))).await.is_ok());
    assert!(attach(rsa.sign(&claims("pk-reload"))).await.is_err());

    // A broken file keeps the keys in force.
    std::fs::write(&path, "{ not json").unwrap();
    let error = file.reload().unwrap_err().to_string();
    assert!(error.contains("jwks.json"), "{error}");
    assert!(attach(ec.sign(&claims("pk-reload"))).await.is_ok());
}
