//! Host admission and task ownership, as an attacker would try them: only
//! hosts with a host token register, and a host admitted as another owner
//! never takes a task, its guests or its guest tokens, whether it comes
//! first, in the hostless grace period, or after a server restart. The real
//! host is never locked out.
//!
//! Each host runs bash with `WHO` set to its owner, so a guest can tell
//! whose shell it reached.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rendezvous_host::{Host, HostError};
use rendezvous_proto::{AttachRequest, ListSessionsRequest, Role};
use rendezvous_server::ServerConfig;
use rendezvous_server::auth_limit::{FailureQuota, FailureQuotas};
use rendezvous_server::registry::{HostAdmission, HostTokenFile, Owner};
use rendezvous_server::token::TokenKey;
use rendezvous_testkit::{DEADLINE, Stop, TermGuest, TestHost, TestServer, bash};
use tonic::Code;

const ACME_TOKEN: &str = "acme-host-token-7Hq2xZk9Lp";
const MALLORY_TOKEN: &str = "mallory-host-token-Vb3Nw8Rt";
const TOKEN_KEY: &[u8] = b"admission-test-token-key-0123456789abcdef";
const TASK: &str = "build-42";

/// A host token file holding `lines`, in a directory of its own.
fn token_file(test: &str, lines: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rendezvous-admission-{}-{test}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("host-tokens");
    std::fs::write(&path, lines).unwrap();
    path
}

fn config(tokens: &Arc<HostTokenFile>) -> ServerConfig {
    // These tests poll for a task that the server does not know yet (after
    // a restart, before the host is back): each poll is a failed
    // authentication, which the default limits would soon lock out
    // (tests/rate_limit.rs tests those).
    let generous = FailureQuota {
        burst: 100_000,
        refill: Duration::from_millis(1),
    };
    ServerConfig {
        failure_quotas: FailureQuotas {
            per_ip: generous,
            per_task: generous,
        },
        token_key: Some(TokenKey::new(TOKEN_KEY).unwrap()),
        host_admission: HostAdmission {
            tokens: Some(tokens.clone()),
            open: false,
            oidc: Vec::new(),
        },
        ..ServerConfig::default()
    }
}

async fn server(test: &str) -> (TestServer, Arc<HostTokenFile>) {
    let path = token_file(
        test,
        &format!("# two teams\nacme {ACME_TOKEN}\n\nmallory {MALLORY_TOKEN}\n"),
    );
    let tokens = Arc::new(HostTokenFile::load(&path).unwrap());
    (TestServer::with_config(config(&tokens)).await, tokens)
}

/// A host of [`TASK`] presenting `token`, whose shells say `who`.
fn host(server: &TestServer, token: Option<&str>, who: &str, secret: &str) -> Host {
    host_named(&server.url, token, who, secret, "default")
}

/// [`host`], for the server at `url`, with a host name.
fn host_named(url: &str, token: Option<&str>, who: &str, secret: &str, name: &str) -> Host {
    let command = bash();
    let mut builder = Host::builder(url)
        .task_id(TASK)
        .name(name)
        .secret(secret)
        .command(&command[0], &command[1..])
        .env("PS1", "$ ")
        .env("WHO", who)
        // A dropped host is gone at once: these tests are about who may
        // take a task, not about resuming.
        .grace_period(std::time::Duration::ZERO);
    if let Some(token) = token {
        builder = builder.host_token(token);
    }
    builder.build().unwrap()
}

fn guest_token(owner: &str) -> String {
    TokenKey::new(TOKEN_KEY)
        .unwrap()
        .mint(
            TASK,
            &Owner::from_claim(owner),
            Role::ReadWrite,
            Duration::from_secs(600),
            Some("alice"),
        )
        .unwrap()
}

fn with_secret(secret: &str) -> AttachRequest {
    AttachRequest {
        task_id: TASK.into(),
        secret: secret.into(),
        cols: 80,
        rows: 24,
        ..Default::default()
    }
}

fn with_token(token: &str) -> AttachRequest {
    AttachRequest {
        task_id: TASK.into(),
        token: token.into(),
        cols: 80,
        rows: 24,
        ..Default::default()
    }
}

/// Opens a shell with `request` and returns whose it is (`$WHO`).
async fn whose_shell(server: &TestServer, request: AttachRequest) -> String {
    let mut guest = TermGuest::open(server, request).await.expect("attach");
    guest.type_text("echo \"who=$WHO.\"\n").await;
    let text = guest
        .events
        .until_match("an answer", |t| {
            t.contains("who=acme.") || t.contains("who=mallory.")
        })
        .await;
    if text.contains("who=acme.") {
        "acme".into()
    } else {
        "mallory".into()
    }
}

/// How many hosts a guest with `secret` sees in the task, or the refusal.
async fn try_hosts_seen(server: &TestServer, secret: &str) -> Result<usize, tonic::Status> {
    Ok(server
        .guest_client()
        .await
        .list_sessions(ListSessionsRequest {
            task_id: TASK.into(),
            secret: secret.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .hosts
        .len())
}

/// How many hosts a guest with `secret` sees in the task.
async fn hosts_seen(server: &TestServer, secret: &str) -> usize {
    try_hosts_seen(server, secret).await.expect("list sessions")
}

/// Waits until a guest with `secret` sees `count` hosts (a task the server
/// does not know yet counts as none).
async fn until_hosts(server: &TestServer, secret: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let seen = || async {
        match try_hosts_seen(server, secret).await {
            Err(status) if status.code() == Code::PermissionDenied => 0,
            other => other.expect("list sessions"),
        }
    };
    while seen().await != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task did not get {count} host(s) in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a host that the server must refuse, and returns its error.
async fn refused(host: Host) -> HostError {
    tokio::time::timeout(DEADLINE, host.run(std::future::pending()))
        .await
        .expect("the host gives up in time")
        .expect_err("the server refused the host")
}

const ACME_SECRET: &str = "acme-task-secret-Qw7Er4Ty9";
const MALLORY_SECRET: &str = "mallory-task-secret-Zx5Cv2Bn";

#[tokio::test]
async fn only_hosts_with_an_admitted_token_register() {
    let (server, _tokens) = server("only").await;
    let error = refused(host(&server, None, "acme", ACME_SECRET)).await;
    let HostError::NotAdmitted(message) = &error else {
        panic!("expected NotAdmitted, got {error:?}");
    };
    assert!(message.contains("--host-token"), "{message}");
    let wrong = "not-a-token-the-server-knows-123";
    let error = refused(host(&server, Some(wrong), "acme", ACME_SECRET)).await;
    let HostError::NotAdmitted(message) = &error else {
        panic!("expected NotAdmitted, got {error:?}");
    };
    assert!(message.contains("not one this server admits"), "{message}");
    assert!(!error.to_string().contains(wrong));
    // An admitted host registers; the guest reaches its shell.
    let _acme = TestHost::from_host(host(&server, Some(ACME_TOKEN), "acme", ACME_SECRET)).await;
    assert_eq!(whose_shell(&server, with_secret(ACME_SECRET)).await, "acme");
}

#[tokio::test]
async fn a_squatter_that_registers_first_neither_locks_out_nor_reaches_the_task() {
    let (server, _tokens) = server("first").await;
    // Mallory registers the task ID before the real job starts.
    let _mallory = TestHost::from_host(host(
        &server,
        Some(MALLORY_TOKEN),
        "mallory",
        MALLORY_SECRET,
    ))
    .await;
    // The real host registers all the same, under the same ID.
    let _acme = TestHost::from_host(host(&server, Some(ACME_TOKEN), "acme", ACME_SECRET)).await;
    assert_eq!(whose_shell(&server, with_secret(ACME_SECRET)).await, "acme");
    assert_eq!(
        whose_shell(&server, with_token(&guest_token("token:acme"))).await,
        "acme"
    );
    assert_eq!(hosts_seen(&server, ACME_SECRET).await, 1);
    // Mallory sees only its own task, whose secret it chose.
    assert_eq!(
        whose_shell(&server, with_secret(MALLORY_SECRET)).await,
        "mallory"
    );
}

#[tokio::test]
async fn in_the_grace_period_another_owner_never_takes_the_task() {
    let (server, _tokens) = server("grace").await;
    let acme = TestHost::from_host(host(&server, Some(ACME_TOKEN), "acme", ACME_SECRET)).await;
    drop(acme);
    // Hostless: acme's guests are told to wait (no host), not refused.
    until_hosts(&server, ACME_SECRET, 0).await;
    let _mallory = TestHost::from_host(host(
        &server,
        Some(MALLORY_TOKEN),
        "mallory",
        MALLORY_SECRET,
    ))
    .await;
    // acme's guests still see no host, with the secret or with a token.
    assert_eq!(hosts_seen(&server, ACME_SECRET).await, 0);
    let status = TermGuest::open(&server, with_token(&guest_token("token:acme")))
        .await
        .err()
        .expect("acme's token does not reach mallory's host");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // The real host comes back and its guests reach it.
    let _acme = TestHost::from_host(host(&server, Some(ACME_TOKEN), "acme", ACME_SECRET)).await;
    assert_eq!(
        whose_shell(&server, with_token(&guest_token("token:acme"))).await,
        "acme"
    );
}

#[tokio::test]
async fn after_a_restart_another_owner_never_reaches_the_task() {
    let (server, tokens) = server("restart").await;
    let addr = server.addr;
    let acme = host(&server, Some(ACME_TOKEN), "acme", ACME_SECRET);
    let _acme_run = tokio::spawn(acme.run(std::future::pending()));
    until_hosts(&server, ACME_SECRET, 1).await;
    let token = guest_token("token:acme");
    server.stop(Stop::Crash).await;
    // The restarted server has forgotten every task; mallory is first.
    let server = TestServer::start_at(addr, config(&tokens)).await.unwrap();
    let _mallory = TestHost::from_host(host(
        &server,
        Some(MALLORY_TOKEN),
        "mallory",
        MALLORY_SECRET,
    ))
    .await;
    // acme's token, minted before the restart, reaches no one until acme's
    // host is back, and then acme.
    let early = TermGuest::open(&server, with_token(&token)).await;
    match early {
        Err(status) => assert!(
            matches!(status.code(), Code::PermissionDenied | Code::NotFound),
            "{status:?}"
        ),
        Ok(mut guest) => {
            // acme's host reconnected first: the shell must be acme's.
            guest.type_text("echo \"who=$WHO.\"\n").await;
            guest.events.until("who=acme.").await;
        }
    }
    until_hosts(&server, ACME_SECRET, 1).await;
    assert_eq!(whose_shell(&server, with_token(&token)).await, "acme");
    assert_eq!(
        whose_shell(&server, with_secret(MALLORY_SECRET)).await,
        "mallory"
    );
}

#[tokio::test]
async fn a_reloaded_token_file_admits_new_tokens_and_drops_removed_ones() {
    let path = token_file("reload", &format!("acme {ACME_TOKEN}\n"));
    let tokens = Arc::new(HostTokenFile::load(&path).unwrap());
    let server = TestServer::with_config(config(&tokens)).await;
    assert!(matches!(
        refused(host(
            &server,
            Some(MALLORY_TOKEN),
            "mallory",
            MALLORY_SECRET
        ))
        .await,
        HostError::NotAdmitted(_)
    ));
    std::fs::write(&path, format!("mallory {MALLORY_TOKEN}\n")).unwrap();
    assert_eq!(tokens.reload().unwrap(), 1);
    let _mallory = TestHost::from_host(host(
        &server,
        Some(MALLORY_TOKEN),
        "mallory",
        MALLORY_SECRET,
    ))
    .await;
    assert!(matches!(
        refused(host(&server, Some(ACME_TOKEN), "acme", ACME_SECRET)).await,
        HostError::NotAdmitted(_)
    ));
    // A broken file keeps the tokens in force.
    std::fs::write(&path, "mallory zzQQ\n").unwrap();
    let error = tokens.reload().unwrap_err().to_string();
    assert!(error.contains("host-tokens:1"), "{error}");
    assert!(
        !error.contains("zzQQ"),
        "the error must not echo the token: {error}"
    );
    let _again = TestHost::from_host(host_named(
        &server.url,
        Some(MALLORY_TOKEN),
        "mallory",
        MALLORY_SECRET,
        "second",
    ))
    .await;
}

#[tokio::test]
async fn serve_reloads_the_host_token_file_on_sighup() {
    let path = token_file("sighup", &format!("acme {ACME_TOKEN}\n"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args(["serve", "--listen", "127.0.0.1:0", "--host-token-file"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start rendezvous serve");
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let url = tokio::time::timeout(DEADLINE, async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("serve prints its address");
            assert!(
                !line.contains("registration is open"),
                "a host token file closes open registration: {line}"
            );
            if let Some(url) = line.strip_prefix("rendezvous: listening on ") {
                return url.to_owned();
            }
        }
    })
    .await
    .expect("serve starts in time");
    let mallory = || host_named(&url, Some(MALLORY_TOKEN), "mallory", MALLORY_SECRET, "m");
    assert!(matches!(
        refused(mallory()).await,
        HostError::NotAdmitted(_)
    ));
    std::fs::write(
        &path,
        format!("acme {ACME_TOKEN}\nmallory {MALLORY_TOKEN}\n"),
    )
    .unwrap();
    let pid = child.id().expect("serve runs").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    // The reload happens on the server's own time: try until admitted.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let host = mallory();
        let mut status = host.status();
        let run = tokio::spawn(host.run(std::future::pending()));
        let registered = tokio::time::timeout(
            DEADLINE,
            status.wait_for(|s| matches!(s, rendezvous_host::HostStatus::Registered { .. })),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        run.abort();
        if registered {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new token was not admitted after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
