//! Host admission by CI identity tokens (OIDC), as GitHub Actions and
//! GitLab issue them: an issuer on loopback (discovery document and JWKS
//! served by axum), tokens signed with its real RSA key, and the GitHub
//! Actions token endpoint faked on loopback for the host's side.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rendezvous_host::{Host, HostError, HostStatus, IdTokenSource};
use rendezvous_proto::Role;
use rendezvous_server::ServerConfig;
use rendezvous_server::jwks::KeySet;
use rendezvous_server::oidc::{ClaimRule, OidcIssuer};
use rendezvous_server::registry::{HostAdmission, HostTokenFile, Owner};
use rendezvous_server::token::TokenKey;
use rendezvous_testkit::jwt::{DocumentServer, SigningKey, jwks};
use rendezvous_testkit::{DEADLINE, TermGuest, TestHost, TestServer, bash};
use serde_json::json;
use tonic::Code;

const AUDIENCE: &str = "https://rendezvous.test";
const TOKEN_KEY: &[u8] = b"oidc-test-guest-token-key-0123456789abcdef";

fn issuer_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::rsa("gh-1"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An issuer on loopback: its discovery document and JWKS.
async fn issuer() -> (DocumentServer, String) {
    let http = DocumentServer::start().await;
    let iss = http.url("");
    http.set(
        "/.well-known/openid-configuration",
        json!({ "issuer": iss, "jwks_uri": http.url("/jwks") }).to_string(),
    );
    http.set("/jwks", jwks(&[issuer_key()]));
    (http, iss)
}

/// Claims as GitHub Actions puts them in a job's token.
fn claims(iss: &str) -> serde_json::Value {
    json!({
        "iss": iss,
        "aud": AUDIENCE,
        "sub": "repo:acme/app:ref:refs/heads/main",
        "repository": "acme/app",
        "repository_owner": "acme",
        "run_attempt": 1,
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 300,
    })
}

fn admission(iss: &str) -> HostAdmission {
    let rules = vec![ClaimRule {
        claim: "repository_owner".into(),
        value: "acme".into(),
    }];
    HostAdmission {
        tokens: None,
        open: false,
        oidc: vec![Arc::new(
            OidcIssuer::discovered(iss, AUDIENCE, rules).unwrap(),
        )],
    }
}

fn host(server: &TestServer, task: &str, source: Option<IdTokenSource>) -> Host {
    let command = bash();
    let mut builder = Host::builder(&server.url)
        .task_id(task)
        .secret("oidc-task-secret-Qw7Er4Ty9")
        .command(&command[0], &command[1..])
        .env("PS1", "$ ");
    if let Some(source) = source {
        builder = builder.id_token(source);
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn a_ci_identity_token_admits_its_host_as_oidc_iss_sub() {
    let (http, iss) = issuer().await;
    let server = TestServer::with_config(ServerConfig {
        token_key: Some(TokenKey::new(TOKEN_KEY).unwrap()),
        host_admission: admission(&iss),
        ..ServerConfig::default()
    })
    .await;
    let token = issuer_key().sign(&claims(&iss));
    let _host =
        TestHost::from_host(host(&server, "oidc-ok", Some(IdTokenSource::fixed(token)))).await;
    assert_eq!(http.hits("/.well-known/openid-configuration"), 1);
    assert_eq!(http.hits("/jwks"), 1);

    // Guest tokens name that owner, and reach the task.
    let owner = Owner::oidc(&iss, "repo:acme/app:ref:refs/heads/main");
    assert_eq!(
        owner.as_str(),
        format!("oidc:{iss}:repo:acme/app:ref:refs/heads/main")
    );
    let mint = |owner: &Owner| {
        TokenKey::new(TOKEN_KEY)
            .unwrap()
            .mint(
                "oidc-ok",
                owner,
                Role::ReadWrite,
                Duration::from_secs(60),
                None,
            )
            .unwrap()
    };
    let request = |token: String| rendezvous_proto::AttachRequest {
        task_id: "oidc-ok".into(),
        token,
        cols: 80,
        rows: 24,
        ..Default::default()
    };
    let mut guest = TermGuest::open(&server, request(mint(&owner)))
        .await
        .unwrap();
    guest.type_text("echo oidc-$((6*7))\n").await;
    guest.events.until("oidc-42").await;
    let err = TermGuest::open(&server, request(mint(&Owner::open())))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn identity_tokens_are_refused_when_expired_for_another_audience_failing_a_rule_forged_or_of_an_unknown_kid()
 {
    let (http, iss) = issuer().await;
    let admission = admission(&iss);
    let admit = async |token: String| match admission.admit(Some(&token)).await {
        Ok(owner) => Ok(owner),
        Err(e) => Err(e.to_string()),
    };
    let key = issuer_key();
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = claims(&iss);
        change(&mut claims);
        key.sign(&claims)
    };
    assert!(admit(key.sign(&claims(&iss))).await.is_ok());

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 120)),
            "expired",
        ),
        (
            "another audience",
            with(&|c| c["aud"] = json!("https://elsewhere.test")),
            "audience",
        ),
        (
            "a failed claim rule",
            with(&|c| c["repository_owner"] = json!("mallory")),
            "repository_owner",
        ),
        (
            "a bad signature",
            SigningKey::rsa("gh-1").sign(&claims(&iss)),
            "signature",
        ),
        (
            "an unknown kid",
            SigningKey::p256("gh-unknown").sign(&claims(&iss)),
            "signature",
        ),
        (
            "another issuer",
            with(&|c| c["iss"] = json!("https://issuer.evil.test")),
            "does not admit",
        ),
    ];
    for (why, token, fragment) in cases {
        let error = admit(token.clone()).await.expect_err(why);
        assert!(error.contains(fragment), "{why}: {error}");
        assert!(!error.contains(&token), "{why}: the error holds the token");
    }
    // Discovery happened once; the unknown kid came less than a minute
    // after the JWKS was fetched, so it was not fetched again.
    assert_eq!(http.hits("/.well-known/openid-configuration"), 1);
    assert_eq!(http.hits("/jwks"), 1);
}

#[tokio::test]
async fn a_refused_identity_token_gets_unauthenticated_and_host_tokens_still_admit() {
    let (_http, iss) = issuer().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("host-tokens");
    std::fs::write(&file, "ci ci-host-token-7Hq2xZk9Lp\n").unwrap();
    let mut both = admission(&iss);
    both.tokens = Some(Arc::new(HostTokenFile::load(&file).unwrap()));
    let server = TestServer::with_config(ServerConfig {
        host_admission: both.clone(),
        ..ServerConfig::default()
    })
    .await;
    let mut expired = claims(&iss);
    expired["exp"] = json!(now() - 120);
    let refused = host(
        &server,
        "oidc-refused",
        Some(IdTokenSource::fixed(issuer_key().sign(&expired))),
    );
    let error = tokio::time::timeout(DEADLINE, refused.run(std::future::pending()))
        .await
        .expect("the host gives up in time")
        .expect_err("the server refused the host");
    let HostError::NotAdmitted(message) = &error else {
        panic!("expected NotAdmitted (UNAUTHENTICATED), got {error:?}");
    };
    assert!(message.contains("expired"), "{message}");
    // Either kind of credential admits.
    assert_eq!(
        both.admit(Some("ci-host-token-7Hq2xZk9Lp")).await.unwrap(),
        Owner::token("ci")
    );
    assert_eq!(
        both.admit(Some(&issuer_key().sign(&claims(&iss))))
            .await
            .unwrap()
            .as_str(),
        format!("oidc:{iss}:repo:acme/app:ref:refs/heads/main")
    );
}

#[tokio::test]
async fn an_offline_jwks_file_checks_identity_tokens_without_discovery() {
    let iss = "https://token.actions.githubusercontent.com";
    let keys = KeySet::from_jwks(jwks(&[issuer_key()]).as_bytes()).unwrap();
    let issuer = OidcIssuer::with_keys(iss, AUDIENCE, Vec::new(), keys);
    let owner = issuer
        .admit(&issuer_key().sign(&claims(iss)))
        .await
        .unwrap();
    assert_eq!(
        owner.as_str(),
        "oidc:https://token.actions.githubusercontent.com:repo:acme/app:ref:refs/heads/main"
    );
}

#[tokio::test]
async fn on_github_actions_the_host_requests_its_token_for_the_audience() {
    let (_http, iss) = issuer().await;
    let server = TestServer::with_config(ServerConfig {
        host_admission: admission(&iss),
        ..ServerConfig::default()
    })
    .await;
    // GitHub's token endpoint, faked on loopback.
    let github = DocumentServer::start().await;
    github.set(
        "/token",
        json!({ "count": 1, "value": issuer_key().sign(&claims(&iss)) }).to_string(),
    );
    let source = IdTokenSource::GitHubActions {
        request_url: github.url("/token?api-version=2.0"),
        request_token: "gh-request-token-123".into(),
        audience: AUDIENCE.into(),
    };
    assert!(!format!("{source:?}").contains("gh-request-token-123"));
    let host = host(&server, "oidc-gh", Some(source));
    let mut status = host.status();
    let run = tokio::spawn(host.run(std::future::pending()));
    tokio::time::timeout(
        DEADLINE,
        status.wait_for(|s| matches!(s, HostStatus::Registered { .. })),
    )
    .await
    .expect("registered in time")
    .unwrap();
    run.abort();
    let (auth, query) = github.last_request("/token");
    assert_eq!(auth.as_deref(), Some("bearer gh-request-token-123"));
    assert_eq!(
        query.as_deref(),
        Some("api-version=2.0&audience=https%3A%2F%2Frendezvous%2Etest")
    );
}

#[tokio::test]
async fn a_failed_discovery_is_not_fetched_again_on_every_host_then_recovers() {
    let http = DocumentServer::start().await;
    let iss = http.url("");
    let admission = admission(&iss);
    let token = issuer_key().sign(&claims(&iss));
    let discovery = "/.well-known/openid-configuration";
    for _ in 0..3 {
        let refused = admission.admit(Some(&token)).await.unwrap_err().to_string();
        assert!(
            refused.contains("cannot get the issuer's keys"),
            "{refused}"
        );
    }
    assert_eq!(http.hits(discovery), 1, "one fetch for three hosts");
    // The issuer is back: a host is admitted once the retry time passed.
    http.set(
        discovery,
        json!({ "issuer": iss, "jwks_uri": http.url("/jwks") }).to_string(),
    );
    http.set("/jwks", jwks(&[issuer_key()]));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while admission.admit(Some(&token)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        http.hits(discovery),
        2,
        "fetched again once, after the retry time"
    );
}
