//! Guest tokens: a CI system mints a short-lived token for one task (here
//! with `rendezvous token`, the binary), and its web UI attaches with it
//! instead of the task's secret.

use std::time::Duration;

use rendezvous_proto::Role;
use rendezvous_server::ServerConfig;
use rendezvous_server::registry::Owner;
use rendezvous_server::token::TokenKey;
use rendezvous_testkit::{TermGuest, TestHost, TestServer};
use tonic::Code;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-test-key";

async fn server() -> TestServer {
    TestServer::with_config(ServerConfig {
        token_key: Some(TokenKey::new(KEY).unwrap()),
        ..ServerConfig::default()
    })
    .await
}

/// Mints a token with the `rendezvous token` command, as a CI system would.
fn mint_with_cli(task_id: &str, extra: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!("rendezvous-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One file per task: tests run in parallel.
    let key_file = dir.join(format!("key-{task_id}"));
    std::fs::write(&key_file, [KEY, b"\n"].concat()).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rendezvous"));
    command.args([
        "token",
        "--task-id",
        task_id,
        "--ttl-secs",
        "600",
        "--key-file",
    ]);
    command.arg(&key_file).args(extra);
    let out = command.output().expect("run rendezvous token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn with_token(host: &TestHost, session_id: &str, token: &str) -> rendezvous_proto::AttachRequest {
    let mut request = host.attach_request(session_id);
    request.secret.clear();
    request.token = token.to_owned();
    request
}

#[tokio::test]
async fn a_read_write_token_opens_a_shell_without_the_secret() {
    let server = server().await;
    let host = TestHost::start(&server, "tok-rw").await;
    let token = mint_with_cli("tok-rw", &[]);
    assert!(!token.contains(&host.secret));
    let mut guest = TermGuest::open(&server, with_token(&host, "", &token))
        .await
        .unwrap();
    assert_eq!(guest.attached.role(), Role::ReadWrite);
    guest.type_text("echo token-$((20+3))\n").await;
    guest.events.until("token-23").await;
}

#[tokio::test]
async fn a_read_only_token_may_only_watch() {
    let server = server().await;
    let host = TestHost::start(&server, "tok-ro").await;
    let writer = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    let token = mint_with_cli("tok-ro", &["--read-only"]);
    let refused = TermGuest::open(&server, with_token(&host, "", &token))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let watcher = TermGuest::open(
        &server,
        with_token(&host, &writer.attached.session_id, &token),
    )
    .await
    .unwrap();
    assert_eq!(watcher.attached.role(), Role::ReadOnly);
}

#[tokio::test]
async fn a_token_minted_for_one_session_joins_only_that_session() {
    let server = server().await;
    let host = TestHost::start(&server, "tok-one").await;
    let first = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    let second = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    let session = first.attached.session_id.as_str();
    let token = mint_with_cli("tok-one", &["--session", session, "--host", "default"]);
    for target in ["", second.attached.session_id.as_str()] {
        let refused = TermGuest::open(&server, with_token(&host, target, &token))
            .await
            .err()
            .unwrap_or_else(|| panic!("{target:?} was reached"));
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
    let joined = TermGuest::open(&server, with_token(&host, session, &token))
        .await
        .unwrap();
    assert_eq!(joined.attached.session_id, session);
    let elsewhere = mint_with_cli("tok-one", &["--host", "another-host"]);
    let refused = TermGuest::open(&server, with_token(&host, session, &elsewhere))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let server = server().await;
    let host = TestHost::start(&server, "tok-bad").await;
    let key = TokenKey::new(KEY).unwrap();

    // A token for another task looks exactly like a wrong secret.
    let other_task = key
        .mint(
            "another-task",
            &Owner::open(),
            Role::ReadWrite,
            Duration::from_secs(60),
            None,
        )
        .unwrap();
    let err = TermGuest::open(&server, with_token(&host, "", &other_task))
        .await
        .err()
        .unwrap();
    let mut wrong_secret = host.attach_request("");
    wrong_secret.secret = "w".repeat(32);
    let denied = TermGuest::open(&server, wrong_secret).await.err().unwrap();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), denied.message());

    // Signed with another key.
    let forged = TokenKey::new(&[9u8; 32])
        .unwrap()
        .mint(
            "tok-bad",
            &Owner::open(),
            Role::ReadWrite,
            Duration::from_secs(60),
            None,
        )
        .unwrap();
    let err = TermGuest::open(&server, with_token(&host, "", &forged))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("invalid guest token"),
        "{}",
        err.message()
    );

    // A server without a token key accepts none.
    let keyless = TestServer::start().await;
    let keyless_host = TestHost::start(&keyless, "tok-bad").await;
    let token = key
        .mint(
            "tok-bad",
            &Owner::open(),
            Role::ReadWrite,
            Duration::from_secs(60),
            None,
        )
        .unwrap();
    let err = TermGuest::open(&keyless, with_token(&keyless_host, "", &token))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied);
}
