//! `rendezvous serve --metrics-listen`: the Prometheus endpoint of a real
//! server process, with a real host and guests, counts what they did and
//! shows no task ID or secret.

use std::process::Stdio;

use rendezvous_guest::{AttachOptions, Client, Event, GuestError, Secret, TaskId};
use rendezvous_testkit::metrics::{scrape, value};
use rendezvous_testkit::{DEADLINE, TestHost};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const TASK: &str = "task-behind-the-metrics";

/// `rendezvous serve` on loopback ports; returns the child, the server URL
/// and the metrics address.
async fn serve() -> (tokio::process::Child, String, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--max-guests-per-session",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start rendezvous serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut server, mut metrics) = (None, None);
    tokio::time::timeout(DEADLINE, async {
        while server.is_none() || metrics.is_none() {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("serve prints its addresses");
            if let Some(url) = line.strip_prefix("rendezvous: listening on ") {
                server = Some(url.to_owned());
            } else if let Some(rest) = line.strip_prefix("rendezvous: metrics on http://") {
                metrics = Some(rest.trim_end_matches("/metrics").to_owned());
            }
        }
    })
    .await
    .expect("serve starts in time");
    (child, server.unwrap(), metrics.unwrap())
}

#[tokio::test]
async fn metrics_count_hosts_sessions_guests_bytes_and_refusals() {
    let (_serve, server, metrics) = serve().await;
    let host = rendezvous_host::Host::builder(server.as_str())
        .task_id(TASK)
        .command("bash", ["--norc", "--noprofile"])
        .env("PS1", "$ ")
        .build()
        .unwrap();
    let host = TestHost::from_host(host).await;
    let client = Client::connect(&server).await.unwrap();
    let options = || {
        AttachOptions::new(
            TaskId::new(TASK).unwrap(),
            Secret::new(host.secret.as_str()).unwrap(),
        )
    };

    let mut guest = client.terminal(options()).await.unwrap();
    let input = "echo M-$((6*7))\r";
    guest.send_input(input).await.unwrap();
    let mut output = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while !String::from_utf8_lossy(&output).contains("M-42") {
            if let Some(Event::Output(o)) = guest.next_event().await.unwrap() {
                output.extend_from_slice(&o.data);
            }
        }
    })
    .await
    .expect("the echo comes back");

    // One refusal of each kind.
    let wrong = AttachOptions::new(
        TaskId::new(TASK).unwrap(),
        Secret::new("a-wrong-secret-of-enough-length").unwrap(),
    );
    let denied = client.terminal(wrong).await.unwrap_err();
    assert!(matches!(denied, GuestError::Denied), "{denied:?}");
    let mut second = options();
    second.session_id = Some(guest.attached().session_id.clone());
    let full = client.terminal(second).await.unwrap_err();
    assert!(matches!(full, GuestError::LimitReached(_)), "{full:?}");

    // A listing, and one with a wrong secret: RPCs by method and code.
    let listed = client
        .list_sessions(
            &TaskId::new(TASK).unwrap(),
            &Secret::new(host.secret.as_str()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let wrong_secret = Secret::new("another-wrong-secret-of-enough-length").unwrap();
    assert!(
        client
            .list_sessions(&TaskId::new(TASK).unwrap(), &wrong_secret)
            .await
            .is_err()
    );

    let text = scrape(&metrics).await;
    let rpcs = |method: &str, code: &str| {
        value(
            &text,
            &format!(
                "rendezvous_rpc_duration_seconds_count{{method=\"{method}\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(rpcs("GuestService/ListSessions", "OK"), 1.0, "{text}");
    assert_eq!(
        rpcs("GuestService/ListSessions", "PERMISSION_DENIED"),
        1.0,
        "{text}"
    );
    // Streams that are still open are not counted yet; the refused
    // attaches are, whichever RPC the client used for them.
    let refused: f64 = text
        .lines()
        .filter(|l| l.starts_with("rendezvous_rpc_duration_seconds_count{method=\"GuestService/"))
        .filter(|l| {
            l.contains("code=\"PERMISSION_DENIED\"") || l.contains("code=\"RESOURCE_EXHAUSTED\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 3.0, "two refused attaches and one listing: {text}");
    // The keystrokes went through the server's input queue to the host.
    assert!(
        value(&text, "rendezvous_input_relay_seconds_count") >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "rendezvous_input_relay_seconds_sum") > 0.0,
        "{text}"
    );
    assert_eq!(value(&text, "rendezvous_paused_sessions"), 0.0);
    assert_eq!(value(&text, "rendezvous_guest_lags_total"), 0.0);
    assert_eq!(value(&text, "rendezvous_rate_limit_trips_total"), 0.0);
    assert_eq!(
        value(
            &text,
            "rendezvous_limit_refusals_total{limit=\"connections\"}"
        ),
        0.0
    );
    let build = text
        .lines()
        .find(|l| l.starts_with("rendezvous_build_info{"))
        .unwrap_or_else(|| panic!("no build info: {text}"));
    assert!(
        build.contains(concat!("version=\"", env!("CARGO_PKG_VERSION"), "\"")),
        "{build}"
    );
    assert!(
        !build.contains("commit=\"unknown\""),
        "serve names its commit: {build}"
    );
    assert!(build.ends_with(" 1"), "{build}");
    // No TLS, no expiry.
    assert!(!text.contains("tls_certificate_expiry"), "{text}");

    assert_eq!(value(&text, "rendezvous_tasks"), 1.0);
    assert_eq!(value(&text, "rendezvous_hosts"), 1.0);
    assert_eq!(value(&text, "rendezvous_sessions"), 1.0);
    assert_eq!(value(&text, "rendezvous_guests"), 1.0);
    // The host's connection and the guests' one, at least.
    assert!(value(&text, "rendezvous_connections") >= 2.0, "{text}");
    let from_host = value(&text, "rendezvous_host_output_bytes_total");
    assert!(from_host >= output.len() as f64, "{text}");
    assert!(value(&text, "rendezvous_guest_output_bytes_total") >= output.len() as f64);
    assert!(value(&text, "rendezvous_guest_input_bytes_total") >= input.len() as f64);
    assert_eq!(value(&text, "rendezvous_auth_failures_total"), 2.0);
    assert_eq!(
        value(
            &text,
            "rendezvous_limit_refusals_total{limit=\"hosts per task\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &text,
            "rendezvous_limit_refusals_total{limit=\"guests per session\"}"
        ),
        1.0
    );
    assert!(!text.contains(TASK), "a task ID in the metrics: {text}");
    assert!(!text.contains(&host.secret), "the secret in the metrics");

    // A guest that leaves is no longer counted.
    drop(guest);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while value(&scrape(&metrics).await, "rendezvous_guests") != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the guest is still counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The server's tokio tasks (`rendezvous_runtime_tasks`) rise with hosts,
/// sessions and guests and fall back to where they were, within 10 %, once
/// all have left: nothing a session or a guest spawned is left behind.
#[tokio::test]
async fn runtime_tasks_return_to_their_idle_level_once_everyone_has_left() {
    let (_serve, server, metrics) = serve().await;
    let tasks = |text: &str| value(text, "rendezvous_runtime_tasks");
    let idle = tasks(&scrape(&metrics).await);
    assert!(idle >= 1.0, "the gauge counts the server's own tasks");

    let host = rendezvous_host::Host::builder(server.as_str())
        .task_id("tasks-1")
        .command("bash", ["--norc", "--noprofile"])
        .env("PS1", "$ ")
        .build()
        .unwrap();
    let host = TestHost::from_host(host).await;
    let client = Client::connect(&server).await.unwrap();
    let mut guests = Vec::new();
    for n in 0..10 {
        let options = AttachOptions::new(
            TaskId::new("tasks-1").unwrap(),
            Secret::new(host.secret.as_str()).unwrap(),
        );
        let mut guest = client.terminal(options).await.unwrap();
        guest
            .send_input(format!("echo T-$((100+{n}))\r"))
            .await
            .unwrap();
        let want = format!("T-{}", 100 + n);
        let mut output = Vec::new();
        tokio::time::timeout(DEADLINE, async {
            while !String::from_utf8_lossy(&output).contains(&want) {
                if let Some(Event::Output(o)) = guest.next_event().await.unwrap() {
                    output.extend_from_slice(&o.data);
                }
            }
        })
        .await
        .expect("the echo comes back");
        guests.push(guest);
    }
    let busy = tasks(&scrape(&metrics).await);
    assert!(
        busy > idle + 10.0,
        "10 sessions and guests run tasks: {idle} -> {busy}"
    );

    drop(guests);
    drop(client);
    drop(host);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = tasks(&scrape(&metrics).await);
        if now <= (idle * 1.1).max(idle + 1.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tasks stay at {now} (idle {idle}, busy {busy})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
