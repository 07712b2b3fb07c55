//! No secret or token is ever shown: canary credentials, used on success
//! and failure paths against a real `rendezvous serve` and `rendezvous
//! host` logging at trace level, appear in none of their logs, the
//! metrics, the audit log, the errors clients get, or the pages.

use std::time::Duration;

use rendezvous_proto::guest_service_client::GuestServiceClient;
use rendezvous_proto::{AttachRequest, ListSessionsRequest, Role, SendInputRequest, guest_event};
use rendezvous_server::registry::Owner;
use rendezvous_server::token::TokenKey;
use rendezvous_testkit::{DEADLINE, ProcessOutput, temp_dir};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;

const TASK: &str = "canary-task";
const SECRET: &str = "CanarySecret-7Qm4Zr8Kx2VnLp";
const READ_ONLY_SECRET: &str = "CanaryReadOnly-3Hj6Tg9Wq1Ys";
const HOST_TOKEN: &str = "CanaryHostToken-Bv5Nc8Xz2Lk";
const WRONG_SECRET: &str = "CanaryWrongSecret-Pq4Rs7Tu0V";
const WRONG_HOST_TOKEN: &str = "CanaryWrongHost-Mn3Bv6Cx9Zq";
const TOKEN_KEY: &str = "CanaryTokenKey-0123456789abcdefghijklmnop";

fn rendezvous() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rendezvous"));
    command.env("RUST_LOG", "trace");
    command
}

/// `rendezvous host` for [`TASK`] presenting `host_token`.
fn host(url: &str, host_token: &str) -> ProcessOutput {
    let mut command = rendezvous();
    command
        .args(["host", "--server", url, "--task-id", TASK, "--"])
        .args(["bash", "--norc", "--noprofile"])
        .env("RENDEZVOUS_SECRET", SECRET)
        .env("RENDEZVOUS_READ_ONLY_SECRET", READ_ONLY_SECRET)
        .env("RENDEZVOUS_HOST_TOKEN", host_token)
        .env("PS1", "$ ")
        .env("HOME", "/tmp");
    ProcessOutput::spawn(command)
}

/// A plain HTTP/1.1 GET of `path` at `addr` (host:port); the whole
/// response.
async fn get(addr: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

fn attach(secret: &str, token: &str, session_id: &str) -> AttachRequest {
    AttachRequest {
        task_id: TASK.into(),
        secret: secret.into(),
        token: token.into(),
        session_id: session_id.into(),
        cols: 80,
        rows: 24,
        ..Default::default()
    }
}

#[tokio::test]
async fn canary_credentials_appear_in_no_log_metric_audit_error_or_page() {
    let dir = temp_dir("canary");
    let key_file = dir.path().join("token-key");
    std::fs::write(&key_file, TOKEN_KEY).unwrap();
    let tokens_file = dir.path().join("host-tokens");
    std::fs::write(&tokens_file, format!("ci {HOST_TOKEN}\n")).unwrap();
    let audit_file = dir.path().join("audit.jsonl");
    let mut serve_command = rendezvous();
    serve_command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--drain-delay",
            "0s",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--token-key-file")
        .arg(&key_file)
        .arg("--host-token-file")
        .arg(&tokens_file)
        .arg("--audit-log")
        .arg(&audit_file);
    let mut serve = ProcessOutput::spawn(serve_command);
    let metrics = serve
        .stdout_line("rendezvous: metrics on http://")
        .await
        .trim_end_matches("/metrics")
        .to_owned();
    let url = serve.stdout_line("rendezvous: listening on ").await;
    let addr = url.trim_start_matches("http://").to_owned();

    // A host with a wrong token is refused and gives up.
    let mut refused_host = host(&url, WRONG_HOST_TOKEN);
    let status = tokio::time::timeout(DEADLINE, refused_host.child.wait())
        .await
        .expect("the refused host gives up in time")
        .unwrap();
    assert!(!status.success());
    let mut real_host = host(&url, HOST_TOKEN);
    real_host.stdout_line("Open ").await;

    let mut client = GuestServiceClient::connect(url.clone()).await.unwrap();
    let mut errors = Vec::new();
    // Success: a shell with the secret, input with its guest token.
    let mut events = client
        .attach(attach(SECRET, "", ""))
        .await
        .unwrap()
        .into_inner();
    let Some(guest_event::Event::Attached(attached)) =
        events.message().await.unwrap().unwrap().event
    else {
        panic!("the first event is Attached");
    };
    client
        .send_input(SendInputRequest {
            guest_id: attached.guest_id.clone(),
            guest_token: attached.guest_token.clone(),
            seq: attached.next_input_seq,
            data: b"echo canary-$((6*7))\n".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while !String::from_utf8_lossy(&seen).contains("canary-42") {
            if let Some(guest_event::Event::Output(o)) =
                events.message().await.unwrap().unwrap().event
            {
                seen.extend_from_slice(&o.data);
            }
        }
    })
    .await
    .expect("the shell answers");
    // A read-only guest and a guest token, both joining.
    let key = TokenKey::new(TOKEN_KEY.as_bytes()).unwrap();
    let token = key
        .mint(
            TASK,
            &Owner::from_claim("token:ci"),
            Role::ReadWrite,
            Duration::from_secs(600),
            Some("canary-user"),
        )
        .unwrap();
    for (secret, token) in [(READ_ONLY_SECRET, ""), ("", token.as_str())] {
        client
            .attach(attach(secret, token, &attached.session_id))
            .await
            .expect("joins");
    }
    client
        .list_sessions(ListSessionsRequest {
            task_id: TASK.into(),
            token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Failures: a wrong secret, a tampered token, a token for another
    // task, a wrong guest token, a read-only secret that opens a shell.
    let last = if token.ends_with('A') { 'B' } else { 'A' };
    let tampered = format!("{}{last}", &token[..token.len() - 1]);
    let elsewhere = key
        .mint(
            "another-task",
            &Owner::from_claim("token:ci"),
            Role::ReadWrite,
            Duration::from_secs(600),
            None,
        )
        .unwrap();
    for (secret, token, session) in [
        (WRONG_SECRET, "", ""),
        ("", tampered.as_str(), ""),
        ("", elsewhere.as_str(), ""),
        (READ_ONLY_SECRET, "", ""),
    ] {
        let status = client
            .attach(attach(secret, token, session))
            .await
            .expect_err("refused");
        errors.push(format!("{status:?}"));
    }
    let wrong_input = client
        .send_input(SendInputRequest {
            guest_id: attached.guest_id.clone(),
            guest_token: format!("{}x", attached.guest_token),
            seq: attached.next_input_seq + 1,
            data: b"x".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    errors.push(format!("{wrong_input:?}"));

    let pages = [
        get(&addr, &format!("/t/{TASK}")).await,
        get(&addr, "/").await,
        get(&addr, &format!("/t/{TASK}?secret={SECRET}")).await,
    ];
    let scraped = get(&metrics, "/metrics").await;
    drop(events);
    serve.terminate().await;
    let audit = std::fs::read_to_string(&audit_file).unwrap();

    // Not vacuous: the logs are at trace level, the audit has the events,
    // the errors are the failures'.
    assert!(
        serve.stderr().contains("TRACE"),
        "serve logs at trace level"
    );
    assert!(
        real_host.stderr().contains("TRACE"),
        "the host logs at trace level"
    );
    for event in [
        "host_refused",
        "host_registered",
        "guest_attached",
        "auth_failed",
    ] {
        assert!(
            audit.contains(event),
            "no {event} in the audit log:\n{audit}"
        );
    }
    assert!(
        scraped.contains("rendezvous_auth_failures_total"),
        "{scraped}"
    );
    assert_eq!(errors.len(), 5);

    let canaries = [
        SECRET,
        READ_ONLY_SECRET,
        HOST_TOKEN,
        WRONG_SECRET,
        WRONG_HOST_TOKEN,
        TOKEN_KEY,
        token.as_str(),
        tampered.as_str(),
        elsewhere.as_str(),
        attached.guest_token.as_str(),
    ];
    let places = [
        ("serve's stdout", serve.stdout()),
        ("serve's log", serve.stderr()),
        ("the audit log", audit),
        ("the metrics", scraped),
        ("the errors", errors.join("\n")),
        ("the pages", pages.join("\n")),
        ("the host's log", real_host.stderr()),
        (
            "the refused host's output",
            refused_host.stdout() + &refused_host.stderr(),
        ),
    ];
    for (place, text) in &places {
        for canary in canaries {
            assert!(!text.contains(canary), "a credential in {place}");
        }
    }
}
