//! Logs a log stack can read (issue 12, point 2): `--log-format json`
//! writes one JSON object per line with timestamp, level, target, message
//! and the fields that apply (task, host, session, guest, client_ip); the
//! server's first line says how it runs; the audit file can be logfmt.

use rendezvous_guest::{AttachOptions, Client, Secret, TaskId};
use rendezvous_testkit::{DEADLINE, ProcessOutput, TestHost, bash};
use serde_json::Value;
use tokio::process::Command;

/// `rendezvous serve` with `args`, on a free loopback port; its URL.
async fn serve(args: &[&str]) -> (ProcessOutput, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rendezvous"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--drain-delay", "0s"])
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    let mut serve = ProcessOutput::spawn(command);
    let url = serve.stdout_line("rendezvous: listening on ").await;
    (serve, url)
}

/// A host of `task` on `url`, registered.
async fn host(url: &str, task: &str) -> TestHost {
    let command = bash();
    let host = rendezvous_host::Host::builder(url)
        .task_id(task)
        .command(&command[0], &command[1..])
        .grace_period(std::time::Duration::ZERO)
        .build()
        .unwrap();
    TestHost::from_host(host).await
}

/// Opens a shell on the host's task and leaves it.
async fn open_shell(url: &str, host: &TestHost) -> String {
    let options = AttachOptions::new(
        TaskId::new(host.task_id.as_str()).unwrap(),
        Secret::new(host.secret.as_str()).unwrap(),
    );
    let terminal = tokio::time::timeout(DEADLINE, async {
        Client::connect(url).await?.terminal(options).await
    })
    .await
    .expect("attach in time")
    .expect("attach");
    terminal.attached().session_id.clone()
}

/// The log line whose message is `message`.
fn event<'a>(lines: &'a [Value], message: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["message"] == message)
        .unwrap_or_else(|| panic!("no {message:?} in the log: {lines:#?}"))
}

#[tokio::test]
async fn json_logs_carry_timestamp_level_target_message_and_the_fields_that_apply() {
    let (mut server, url) = serve(&["--log-format", "json"]).await;
    let host = host(&url, "json-logs").await;
    // Both lines are written before the host and the guest hear back.
    let session = open_shell(&url, &host).await;
    let secret = host.secret.clone();
    host.stop().await;
    server.terminate().await;

    let stderr = server.stderr();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line[key].is_string(), "{key} missing in {line}");
        }
    }
    let started = event(&lines, "server started");
    assert_eq!(started["listen"], url.as_str());
    assert_eq!(started["tls"], "off");
    assert_eq!(started["host_admission"], "open");
    assert_eq!(started["metrics"], "off");
    assert_eq!(started["audit"], "off");
    assert_eq!(started["level"], "INFO");
    assert!(started["max_hosts"].is_u64() && started["max_connections"].is_u64());

    let registered = event(&lines, "host registered");
    assert_eq!(registered["task"], "json-logs");
    assert_eq!(registered["client_ip"], "127.0.0.1");
    assert!(registered["host"].is_string());

    let attached = event(&lines, "guest attached");
    assert_eq!(attached["task"], "json-logs");
    assert_eq!(attached["session"], session.as_str());
    assert_eq!(attached["client_ip"], "127.0.0.1");
    assert!(attached["guest"].as_str().is_some_and(|g| !g.is_empty()));
    assert!(
        !stderr.contains(&secret),
        "the task's secret is never logged"
    );
}

#[tokio::test]
async fn the_start_line_says_tls_admission_metrics_and_audit_and_the_audit_file_can_be_logfmt() {
    let dir = rendezvous_testkit::temp_dir("logs");
    let audit = dir.path().join("audit.log");
    let (mut server, url) = serve(&[
        "--tls-self-signed",
        "--metrics-listen",
        "127.0.0.1:0",
        "--audit-log",
        audit.to_str().unwrap(),
        "--audit-log-format",
        "text",
    ])
    .await;
    // The start line is written before the address is printed.
    server.terminate().await;
    let started = server
        .stderr()
        .lines()
        .find(|l| l.contains("server started"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no start line: {}", server.stderr()));
    assert!(started.contains(&format!("listen={url}")), "{started}");
    assert!(started.contains("tls=self-signed"), "{started}");
    assert!(started.contains("host_admission=open"), "{started}");
    assert!(started.contains("metrics=http://127.0.0.1:"), "{started}");
    assert!(
        started.contains(&format!("audit={}", audit.display())),
        "{started}"
    );
    assert!(started.contains("max_guests=16384"), "{started}");
    let _ = std::fs::read_to_string(&audit).expect("the audit file exists");
}

#[tokio::test]
async fn the_audit_file_in_text_is_one_logfmt_line_per_event() {
    let dir = rendezvous_testkit::temp_dir("logs");
    let audit = dir.path().join("audit.log");
    let (mut server, url) = serve(&[
        "--audit-log",
        audit.to_str().unwrap(),
        "--audit-log-format",
        "text",
    ])
    .await;
    let host = host(&url, "logfmt-audit").await;
    host.stop().await;
    server.terminate().await;
    let text = std::fs::read_to_string(&audit).expect("the audit file");
    let registered = text
        .lines()
        .find(|l| l.contains("event=host_registered"))
        .unwrap_or_else(|| panic!("no host_registered event in {text}"));
    assert!(registered.starts_with("time="), "{registered}");
    assert!(registered.contains(" task=logfmt-audit "), "{registered}");
    assert!(registered.contains(" client_ip=127.0.0.1"), "{registered}");
    assert!(!text.contains('{'), "no JSON: {text}");
}
