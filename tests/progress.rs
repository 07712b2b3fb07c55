//! Progress on a terminal (issue 12, point 6): `rendezvous host` waiting
//! for its server shows a spinner saying so on a TTY, cleared once the
//! server accepts it; with stderr not a terminal (CI logs) only the log
//! lines are written.

use std::net::SocketAddr;

use rendezvous_server::ServerConfig;
use rendezvous_testkit::pty::until;
use rendezvous_testkit::{DEADLINE, ProcessOutput, TestServer};

/// A loopback address nothing listens on (yet).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

const SECRET: &str = "progress-secret-0123456789abcdef";

#[tokio::test]
async fn a_host_on_a_terminal_shows_what_it_waits_for_until_the_server_takes_it() {
    let addr = free_addr();
    let server_url = format!("http://{addr}");
    let (mut pty, pts) = pty_process::open().unwrap();
    pty.resize(pty_process::Size::new(30, 200)).unwrap();
    let _child = pty_process::Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args(["host", "--server", &server_url, "--task-id", "progress"])
        .env("RENDEZVOUS_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn(pts)
        .expect("start rendezvous host on the PTY");
    let mut seen = Vec::new();
    until(
        &mut pty,
        &mut seen,
        &format!("waiting for the server at {server_url}"),
    )
    .await;
    until(&mut pty, &mut seen, "next try in").await;

    // The server comes: the host registers, and the spinner gives way to
    // the link.
    let _server = TestServer::start_at(addr, ServerConfig::default())
        .await
        .expect("the server starts on the port");
    until(
        &mut pty,
        &mut seen,
        &format!("Open {server_url}/t/progress"),
    )
    .await;
}

#[tokio::test]
async fn a_host_whose_stderr_is_not_a_terminal_writes_only_log_lines() {
    let server_url = format!("http://{}", free_addr());
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rendezvous"));
    command
        .args(["host", "--server", &server_url, "--task-id", "progress-log"])
        .env("RENDEZVOUS_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1");
    let host = ProcessOutput::spawn(command);
    // Two tries logged, so a spinner would have had its time.
    tokio::time::timeout(DEADLINE, async {
        while host.stderr().matches("not connected; retrying").count() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no retries logged: {}", host.stderr()));
    let stderr = host.stderr();
    assert!(
        !stderr.contains("waiting for the server"),
        "a spinner in a log: {stderr}"
    );
}
