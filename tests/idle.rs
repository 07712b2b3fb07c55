//! Sessions end when nobody uses them: after the idle timeout with no host
//! output and no guest input, and at the maximum lifetime however busy.
//! The guest is told why in plain words. (`rendezvous attach` printing it:
//! `tests/attach.rs`.)

use std::time::{Duration, Instant};

use rendezvous_server::ServerConfig;
use rendezvous_server::config::SessionTimeouts;
use rendezvous_testkit::{TermGuest, TestHost, TestServer};

async fn server(idle: Duration, max_lifetime: Option<Duration>) -> TestServer {
    TestServer::with_config(ServerConfig {
        timeouts: SessionTimeouts { idle, max_lifetime },
        ..ServerConfig::default()
    })
    .await
}

#[tokio::test]
async fn an_idle_session_ends_and_says_why() {
    let idle = Duration::from_secs(1);
    let server = server(idle, None).await;
    let host = TestHost::start(&server, "idle").await;
    let mut guest = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    let started = Instant::now();
    let exit = guest.events.until_exit().await;
    assert!(started.elapsed() >= idle - Duration::from_millis(100));
    assert_eq!(exit.status, None);
    assert_eq!(
        exit.message,
        "no input or output for 1 s (the server's --session-idle-timeout)"
    );
}

#[tokio::test]
async fn input_and_output_keep_a_session_alive() {
    let idle = Duration::from_millis(1_000);
    let server = server(idle, None).await;
    let host = TestHost::start(&server, "busy").await;
    let mut guest = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    // Typing every 250 ms for three idle timeouts: the session lives on.
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < idle * 3 {
        n += 1;
        guest.type_text(&format!("echo tick-{n}-$((1+1))\n")).await;
        guest.events.until(&format!("tick-{n}-2")).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The host's output alone keeps it alive too.
    guest
        .type_text("for i in 1 2 3 4 5 6; do sleep 0.4; echo out-$i-$((2+2)); done\n")
        .await;
    guest.events.until("out-6-4").await;
    // Then nobody: it ends.
    let exit = guest.events.until_exit().await;
    assert!(exit.message.contains("--session-idle-timeout"), "{exit:?}");
}

#[tokio::test]
async fn a_session_ends_at_its_maximum_lifetime_however_busy() {
    let lifetime = Duration::from_millis(1_500);
    let server = server(Duration::from_secs(600), Some(lifetime)).await;
    let host = TestHost::start(&server, "lifetime").await;
    let mut guest = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    guest
        .type_text("while true; do echo busy; sleep 0.1; done\n")
        .await;
    let started = Instant::now();
    let exit = guest.events.until_exit().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        exit.message,
        "the session reached its maximum lifetime of 1500 ms (the server's --max-session-lifetime)"
    );
}
