//! Probes and the stop on SIGTERM (issue 12, point 3), against
//! `rendezvous serve` as a process: `/readyz` turns 503 at once while the
//! server goes on serving for `--drain-delay`; then it stops accepting and
//! drains within `--shutdown-timeout`; a second SIGTERM ends at once.

use std::time::Duration;

use rendezvous_guest::{AttachOptions, Client, Secret, TaskId};
use rendezvous_testkit::proxy::FaultProxy;
use rendezvous_testkit::{DEADLINE, ProcessOutput, TestHost, bash};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;

/// `rendezvous serve` with `args` on a free loopback port; its address
/// (host:port).
async fn serve(args: &[&str]) -> (ProcessOutput, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rendezvous"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let mut serve = ProcessOutput::spawn(command);
    let url = serve.stdout_line("rendezvous: listening on ").await;
    let addr = url.trim_start_matches("http://").to_owned();
    (serve, addr)
}

/// The status code of a plain HTTP/1.1 GET of `path` at `addr`.
async fn status(addr: &str, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the server accepts");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// Waits (at most [`DEADLINE`]) until `done`.
async fn until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(DEADLINE, async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not in time: {what}"));
}

/// Waits until the server's log holds `text`.
async fn logged(serve: &ProcessOutput, text: &str) {
    let wanted = text.to_owned();
    until(&format!("{text:?} in the log"), || {
        let found = serve.stderr().contains(&wanted);
        async move { found }
    })
    .await;
}

fn sigterm(serve: &ProcessOutput) {
    let pid = serve.child.id().expect("the server runs");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
}

/// A host of `task` on `url` with no grace period, registered.
async fn host(url: &str, task: &str) -> TestHost {
    let command = bash();
    let host = rendezvous_host::Host::builder(url)
        .task_id(task)
        .command(&command[0], &command[1..])
        .grace_period(Duration::ZERO)
        .build()
        .unwrap();
    TestHost::from_host(host).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_at_sigterm_while_the_server_serves_on_for_the_drain_delay() {
    // Long enough for what the test does meanwhile, on a loaded machine.
    let (mut serve, addr) = serve(&["--drain-delay", "15s"]).await;
    assert_eq!(status(&addr, "/readyz").await, 200);
    assert_eq!(status(&addr, "/healthz").await, 200);

    sigterm(&serve);
    until("/readyz says 503", || {
        let addr = addr.clone();
        async move { status(&addr, "/readyz").await == 503 }
    })
    .await;
    logged(&serve, "stopping: /readyz says so").await;
    // Liveness is not readiness: the process is well.
    assert_eq!(status(&addr, "/healthz").await, 200);

    // Everything is served as before meanwhile: new connections, a new
    // host, a guest opening a shell on it.
    let url = format!("http://{addr}");
    let host = host(&url, "drain-delay").await;
    let options = AttachOptions::new(
        TaskId::new(host.task_id.as_str()).unwrap(),
        Secret::new(host.secret.as_str()).unwrap(),
    );
    let terminal = tokio::time::timeout(DEADLINE, async {
        Client::connect(&url).await?.terminal(options).await
    })
    .await
    .expect("attach in time")
    .expect("a guest attaches during the drain delay");
    assert!(!terminal.attached().session_id.is_empty());
    assert!(
        !serve.stderr().contains("draining:"),
        "the drain waits for the delay: {}",
        serve.stderr()
    );

    // Then it drains and exits by itself, cleanly.
    let status = serve.exited().await;
    assert!(status.success(), "{status:?}\n{}", serve.stderr());
    let log = serve.stderr();
    let stopping = log.find("stopping: /readyz says so").unwrap();
    let draining = log.find("draining:").expect("the drain followed");
    assert!(stopping < draining);
    drop((terminal, host));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_the_stop_at_once() {
    // Without the second signal this stop would last ten minutes.
    let (mut serve, addr) = serve(&["--drain-delay", "10m", "--shutdown-timeout", "20m"]).await;
    let host = host(&format!("http://{addr}"), "second-sigterm").await;
    sigterm(&serve);
    until("/readyz says 503", || {
        let addr = addr.clone();
        async move { status(&addr, "/readyz").await == 503 }
    })
    .await;
    sigterm(&serve);
    let status = serve.exited().await;
    assert!(status.success(), "{status:?}\n{}", serve.stderr());
    assert!(
        serve.stderr().contains("stopping at once (second signal)"),
        "{}",
        serve.stderr()
    );
    drop(host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_timeout_ends_a_drain_that_a_stalled_host_holds_up() {
    let (mut serve, addr) = serve(&["--drain-delay", "0s", "--shutdown-timeout", "3s"]).await;
    // A host behind a link that will carry nothing: it never hears the
    // drain, so its connection stays open until the timeout.
    let proxy = FaultProxy::start(&addr).await;
    let host = host(proxy.url(), "stalled-drain").await;
    let _ = proxy.both().stall();

    sigterm(&serve);
    logged(&serve, "draining:").await;
    // The listener is closed before the drain begins.
    let refused = tokio::net::TcpStream::connect(&addr).await;
    assert!(refused.is_err(), "a draining server accepts no connection");
    let status = serve.exited().await;
    assert!(status.success(), "{status:?}\n{}", serve.stderr());
    assert!(
        serve
            .stderr()
            .contains("connections still open at the shutdown timeout"),
        "{}",
        serve.stderr()
    );
    drop(host);
}
