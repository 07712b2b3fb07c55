//! The load test in CI: 500 hosts with 3 guests each, typing and printing
//! for 60 s, through a real `rendezvous serve` process on loopback.
//!
//! The load is `rendezvous bench scale --server` (its host and guest
//! generators are processes of their own, on the native client): every
//! guest checks every byte of its session's printing and every echo of
//! every typist, once and in order, and the bench fails on a lost,
//! repeated or reordered byte, a `Lagged`, or a refused or broken call.
//! This test adds what the server shows:
//! - no warning or error in its log;
//! - once everyone has left, no host, session, guest or connection, and
//!   its tokio tasks (`rendezvous_runtime_tasks`) and its RSS back where
//!   they were after a warm-up round of the same load, within 10 %.
//!
//! The rates are lower than the bench's defaults so that the unoptimized
//! test build keeps up on 2 cores; the bench's figures come from the
//! release build (README, "Performance").

use std::time::Duration;

use rendezvous_testkit::metrics::{scrape, value};
use rendezvous_testkit::{ProcessOutput, rss_kib};
use serde_json::Value;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_rendezvous");

/// Hosts, one session each.
const HOSTS: u64 = 500;
/// Guests in each session: one opens it, two join; all three type.
const GUESTS_PER_HOST: u64 = 3;
/// Seconds of the measured round, and of the warm-up round.
const LOAD_SECS: u64 = 60;
const WARM_UP_SECS: u64 = 10;
/// Each session prints this many bytes a second, in this many writes.
const OUTPUT_RATE: u64 = 2000;
const WRITES_PER_S: u64 = 2;
/// Each guest types this many keystrokes a second.
const KEYS_PER_S: u64 = 1;

/// Each session's retained output, in bytes (16 KiB): both rounds fill
/// it, so the warm-up reaches the memory the load holds at its peak, and
/// what stays after the load is what it failed to free. (With the default
/// 1 MiB, the longer round would retain more at its peak, and the
/// allocator keeps that peak's pages: RSS would rise without a leak.)
const RETAINED_OUTPUT_BYTES: u64 = 16 * 1024;

/// How long the server may take to let go of everyone (60 s).
const SETTLE: Duration = Duration::from_secs(60);

/// `rendezvous serve` with caps for the load; returns it, its URL and its
/// metrics address.
async fn serve() -> (ProcessOutput, String, String) {
    let guests = HOSTS * GUESTS_PER_HOST;
    let connections = (HOSTS + guests + 64).to_string();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--drain-delay", "0s"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--max-hosts-per-ip", &(HOSTS + 16).to_string()])
        .args(["--max-connections", &connections])
        .args(["--max-connections-per-ip", &connections])
        .args([
            "--max-streams-per-ip",
            &(2 * HOSTS + guests + 64).to_string(),
        ])
        .args([
            "--retained-output-bytes",
            &RETAINED_OUTPUT_BYTES.to_string(),
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let mut serve = ProcessOutput::spawn(command);
    let url = serve.stdout_line("rendezvous: listening on ").await;
    let metrics = serve.stdout_line("rendezvous: metrics on http://").await;
    let metrics = metrics.trim_end_matches("/metrics").to_owned();
    (serve, url, metrics)
}

/// Runs the load for `secs` against `url`; returns the bench's report.
async fn load(url: &str, secs: u64) -> Value {
    let dir = rendezvous_testkit::temp_dir("load");
    let json = dir.path().join("scale.json");
    let mut command = Command::new(BIN);
    command
        .args(["bench", "scale", "--server", url])
        .args(["--steps", &HOSTS.to_string()])
        .args(["--guests-per-session", &GUESTS_PER_HOST.to_string()])
        .args(["--output-rate", &OUTPUT_RATE.to_string()])
        .args(["--writes-per-s", &WRITES_PER_S.to_string()])
        .args(["--keys-per-s", &KEYS_PER_S.to_string()])
        .args(["--step-secs", &secs.to_string(), "--settle-secs", "1"])
        // Latency is the bench's figure, not this test's verdict.
        .args(["--p99-ms", "60000"])
        .arg("--json")
        .arg(&json)
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(secs + 300), command.output())
        .await
        .expect("the load ends in time")
        .expect("run rendezvous bench scale");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the load failed: {}\n{stderr}",
        output.status
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read the report"))
            .expect("the report is JSON");
    report
}

/// The server at rest: what it holds once everyone has left.
#[derive(Debug, Clone, Copy)]
struct Rest {
    tasks: f64,
    rss_kib: u64,
}

/// Waits until the server has no host, session, guest or connection left
/// (at most [`SETTLE`]), then reads its tasks and RSS.
async fn at_rest(metrics: &str, pid: u32) -> Rest {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let text = scrape(metrics).await;
        let held: Vec<(&str, f64)> = [
            "rendezvous_hosts",
            "rendezvous_sessions",
            "rendezvous_guests",
            "rendezvous_connections",
        ]
        .into_iter()
        .map(|series| (series, value(&text, series)))
        .filter(|(_, v)| *v != 0.0)
        .collect();
        if held.is_empty() {
            return Rest {
                tasks: value(&text, "rendezvous_runtime_tasks"),
                rss_kib: rss_kib(pid),
            };
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server still holds {held:?} a minute after everyone left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks the bench's report of one round: everything typed and printed
/// came through, to every guest.
fn check_round(report: &Value, secs: u64) {
    let printed = report["printed_bytes"].as_u64().expect("printed_bytes");
    let received = report["received_bytes"].as_u64().expect("received_bytes");
    let keystrokes = report["keystrokes"].as_u64().expect("keystrokes");
    let step = &report["steps"][0];
    assert_eq!(step["sessions"], HOSTS, "{report}");
    assert_eq!(step["guests"], HOSTS * GUESTS_PER_HOST, "{report}");
    assert_eq!(received, printed * GUESTS_PER_HOST, "{report}");
    // At least half the nominal load went through (the bench adds the
    // sessions in turn, so the first ones print a little longer).
    assert!(
        printed >= HOSTS * OUTPUT_RATE * secs / 2,
        "the hosts printed only {printed} bytes: {report}"
    );
    assert!(
        keystrokes >= HOSTS * GUESTS_PER_HOST * KEYS_PER_S * secs / 2,
        "the guests typed only {keystrokes} keystrokes: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_hosts_with_three_guests_each_lose_nothing_and_leave_nothing_behind() {
    let (mut serve, url, metrics) = serve().await;
    let pid = serve.child.id().expect("the server runs");
    let started = at_rest(&metrics, pid).await;

    // The warm-up round pays for what the server keeps once it has seen a
    // load (allocator arenas, maps grown to size, the runtime's threads).
    let warm = load(&url, WARM_UP_SECS).await;
    check_round(&warm, WARM_UP_SECS);
    let base = at_rest(&metrics, pid).await;

    let report = load(&url, LOAD_SECS).await;
    check_round(&report, LOAD_SECS);

    // Everyone has left: what the server holds goes back to the base,
    // within 10 % (and 2 tasks, for a base of a task or two).
    let most_tasks = (base.tasks * 1.1).max(base.tasks + 2.0);
    let deadline = tokio::time::Instant::now() + SETTLE;
    let after = loop {
        let now = at_rest(&metrics, pid).await;
        let back = now.tasks <= most_tasks && now.rss_kib as f64 <= base.rss_kib as f64 * 1.1;
        if back || tokio::time::Instant::now() >= deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "server at rest: at start {started:?}, after the warm-up {base:?}, after the load {after:?}"
    );
    assert!(
        after.tasks <= most_tasks,
        "tokio tasks {} after the load, {} before: spawned tasks leaked",
        after.tasks,
        base.tasks
    );
    assert!(
        after.rss_kib as f64 <= base.rss_kib as f64 * 1.1,
        "RSS {} KiB after the load, {} KiB before: memory leaked",
        after.rss_kib,
        base.rss_kib
    );

    // Stopped (SIGTERM, the drain) before its log is read, so that the log
    // is complete, shutdown included.
    serve.terminate().await;
    let log = serve.stderr();
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .take(10)
        .collect();
    assert!(
        complaints.is_empty(),
        "the server logged warnings or errors under load:\n{}",
        complaints.join("\n")
    );
    let left = log.lines().filter(|l| l.contains("host left")).count() as u64;
    assert!(
        left >= 2 * HOSTS,
        "the log is the server's, to the end: {left} lines say a host left"
    );
}
