//! The audit log (`serve --audit-log FILE`): one JSON line for each host
//! registration (accepted or refused), attach, detach, failed
//! authentication, rate-limit trip and session end, with the task, host,
//! session, role, client IP, the token's `sub`, and a keyed fingerprint of
//! the credential, never the credential.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rendezvous_host::{Host, HostError};
use rendezvous_proto::{AttachRequest, Role};
use rendezvous_server::ServerConfig;
use rendezvous_server::audit::{AuditKey, AuditLog};
use rendezvous_server::auth_limit::{FailureQuota, FailureQuotas};
use rendezvous_server::registry::{HostAdmission, Owner};
use rendezvous_server::token::TokenKey;
use rendezvous_testkit::{
    DEADLINE, TermGuest, TestHost, TestServer, bash, host_token_file, temp_dir,
};
use serde_json::Value;
use tonic::Code;

const TASK: &str = "audit-1";
const SECRET: &str = "audit-task-secret-Qm4Zr8Kx2Vn";
const WRONG_SECRET: &str = "audit-wrong-secret-Lk3Jh7Gf5D";
const HOST_TOKEN: &str = "audit-host-token-Hq2xZk9LpW3";
const WRONG_HOST_TOKEN: &str = "audit-wrong-host-token-Zx9Cv2";
const TOKEN_KEY: &[u8] = b"audit-test-token-key-0123456789abcdef0123";

/// The audit file's events, one JSON object per line.
fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect()
}

/// Waits until the audit file has an event `kind` for which `also` holds.
async fn event(path: &Path, kind: &str, also: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(e) = events(path)
                .into_iter()
                .find(|e| e["event"] == kind && also(e))
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event in {:#?}", events(path)))
}

struct Audited {
    server: TestServer,
    path: PathBuf,
    key: AuditKey,
    _dirs: [tempfile::TempDir; 2],
}

async fn audited_server(quotas: FailureQuotas) -> Audited {
    let (tokens_dir, tokens) = host_token_file(&format!("acme {HOST_TOKEN}\n"));
    let dir = temp_dir("audit");
    let path = dir.path().join("audit.jsonl");
    let key = AuditKey::random();
    let config = ServerConfig {
        token_key: Some(TokenKey::new(TOKEN_KEY).unwrap()),
        host_admission: HostAdmission::with_tokens(tokens),
        failure_quotas: quotas,
        audit: AuditLog::to_file(&path, key.clone()).unwrap(),
        ..ServerConfig::default()
    };
    Audited {
        server: TestServer::with_config(config).await,
        path,
        key,
        _dirs: [tokens_dir, dir],
    }
}

fn host(server: &TestServer, token: &str) -> Host {
    let command = bash();
    Host::builder(&server.url)
        .task_id(TASK)
        .secret(SECRET)
        .host_token(token)
        .command(&command[0], &command[1..])
        .env("PS1", "$ ")
        // host_left comes when the host is gone for good: at once.
        .grace_period(std::time::Duration::ZERO)
        .build()
        .unwrap()
}

fn attach(secret: &str, token: &str) -> AttachRequest {
    AttachRequest {
        task_id: TASK.into(),
        secret: secret.into(),
        token: token.into(),
        cols: 80,
        rows: 24,
        ..Default::default()
    }
}

#[tokio::test]
async fn each_event_is_recorded_with_a_fingerprint_of_its_credential() {
    // `_dirs` bound, not `..`: the directories live to the test's end.
    let Audited {
        server,
        path,
        key,
        _dirs,
    } = audited_server(FailureQuotas::default()).await;
    let print = |credential: &str| Value::from(key.fingerprint(credential));

    // A host with a token the server does not know.
    let refused = host(&server, WRONG_HOST_TOKEN)
        .run(std::future::pending())
        .await;
    assert!(
        matches!(refused, Err(HostError::NotAdmitted(_))),
        "{refused:?}"
    );
    let e = event(&path, "host_refused", |_| true).await;
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["credential_kind"], "host_token");
    assert_eq!(e["credential"], print(WRONG_HOST_TOKEN));
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("not one this server admits")
    );

    // The real host.
    let real = TestHost::from_host(host(&server, HOST_TOKEN)).await;
    let e = event(&path, "host_registered", |_| true).await;
    assert_eq!(e["task"], TASK);
    assert_eq!(e["owner"], "token:acme");
    assert_eq!(e["host"], "default");
    assert_eq!(e["credential"], print(HOST_TOKEN));

    // A wrong secret.
    let status = TermGuest::open(&server, attach(WRONG_SECRET, ""))
        .await
        .err()
        .expect("a wrong secret is refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    let e = event(&path, "auth_failed", |_| true).await;
    assert_eq!(e["task"], TASK);
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["credential_kind"], "secret");
    assert_eq!(e["credential"], print(WRONG_SECRET));

    // A guest token given to alice opens a shell, which exits.
    let token = TokenKey::new(TOKEN_KEY)
        .unwrap()
        .mint(
            TASK,
            &Owner::from_claim("token:acme"),
            Role::ReadWrite,
            Duration::from_secs(600),
            Some("alice"),
        )
        .unwrap();
    let mut guest = TermGuest::open(&server, attach("", &token)).await.unwrap();
    let session = guest.attached.session_id.clone();
    let attached = event(&path, "guest_attached", |_| true).await;
    assert_eq!(attached["sub"], "alice");
    assert_eq!(attached["role"], "read_write");
    assert_eq!(attached["session"], Value::from(session.as_str()));
    assert_eq!(
        attached["guest"],
        Value::from(guest.attached.guest_id.as_str())
    );
    assert_eq!(attached["host"], "default");
    assert_eq!(attached["owner"], "token:acme");
    assert_eq!(attached["credential_kind"], "guest_token");
    assert_eq!(attached["credential"], print(&token));
    guest.type_text("exit 3\n").await;
    guest.events.until_exit().await;
    let ended = event(&path, "session_ended", |_| true).await;
    assert_eq!(ended["session"], Value::from(session.as_str()));
    assert_eq!(ended["reason"], "the process exited with code 3");
    drop(guest);
    let detached = event(&path, "guest_detached", |_| true).await;
    assert_eq!(detached["guest"], attached["guest"]);
    assert_eq!(detached["sub"], "alice");
    assert_eq!(detached["reason"], "the session ended");

    drop(real);
    let left = event(&path, "host_left", |_| true).await;
    assert_eq!(left["task"], TASK);

    let text = std::fs::read_to_string(&path).unwrap();
    for credential in [SECRET, WRONG_SECRET, HOST_TOKEN, WRONG_HOST_TOKEN, &token] {
        assert!(!text.contains(credential), "a credential in the audit log");
    }
}

#[tokio::test]
async fn a_rate_limit_trip_is_recorded() {
    let quota = |burst| FailureQuota {
        burst,
        refill: Duration::from_secs(60),
    };
    let Audited {
        server,
        path,
        _dirs,
        ..
    } = audited_server(FailureQuotas {
        per_ip: quota(2),
        per_task: quota(1_000),
    })
    .await;
    let _host = TestHost::from_host(host(&server, HOST_TOKEN)).await;
    let mut denied = 0;
    let locked = tokio::time::timeout(DEADLINE, async {
        loop {
            let status = TermGuest::open(&server, attach(WRONG_SECRET, ""))
                .await
                .err()
                .expect("a wrong secret is refused");
            if status.code() == Code::ResourceExhausted {
                return status;
            }
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            denied += 1;
        }
    })
    .await
    .expect("the IP is locked after its burst");
    assert!(locked.message().contains("try again in"), "{locked:?}");
    let e = event(&path, "rate_limited", |_| true).await;
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["task"], TASK);
    assert!(
        e["reason"].as_str().unwrap().contains("try again in"),
        "{e}"
    );
    let failures = events(&path)
        .iter()
        .filter(|e| e["event"] == "auth_failed")
        .count();
    assert_eq!(
        failures, denied,
        "each refused attempt up to the trip is recorded"
    );
}
