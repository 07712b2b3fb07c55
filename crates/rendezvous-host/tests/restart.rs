//! A fault in the middle of a long output stream, seen from every side: a
//! cut of the host's connection, and a server restart, drained (what
//! `serve` does on SIGTERM) or crashed, each followed by a server on the
//! same port with the same state key. The host keeps its
//! shell and resumes; guests that were attached resume by themselves (they
//! get UNAVAILABLE until the host is back, never "wrong secret"); a guest
//! that joins afterwards gets the retained output. Each checks the stream
//! byte for byte (SHA-256), and input typed during the outage runs once.

use std::time::Duration;

use rendezvous_guest::{
    AttachOptions, Client, Event, HostName, ResumingTerminal, Secret, TaskId, Update,
};
use rendezvous_host::HostStatus;
use rendezvous_server::ServerConfig;
use rendezvous_server::state_key::StateKey;
use rendezvous_testkit::proxy::FaultProxy;
use rendezvous_testkit::{Stop, TestHost, TestServer, resumable};
use sha2::{Digest, Sha256};
use tokio::time::{Instant, timeout};

/// Upper bound for anything a test waits for, stream included.
const DEADLINE: Duration = Duration::from_secs(60);

/// Lines of the stream: `seq 1 LINES` prints about 14.9 MB, far past the
/// 1 MiB the server and the host retain.
const LINES: u32 = 2_000_000;

/// Output retained by the server and by the host, in bytes (16 MiB). At a
/// break, what the server had sent a guest but the guest had not yet
/// received (its message window: up to 32 messages of 256 KiB, plus the
/// HTTP/2 buffers) is lost in flight and asked for again on resume; with
/// the default 1 MiB it may no longer be retained, and the guest then sees
/// one exact `Lagged` instead (see the README, "Host resume"). This test
/// is about exactness, so both sides retain more than can be in flight.
const RETAINED: usize = 16 * 1024 * 1024;

const TASK: &str = "restart-7";
const SECRET: &str = "restart-test-secret-0123456789";
const HOST_NAME: &str = "linux";

/// What the PTY makes of `seq 1 LINES`: each line ends in CR LF.
fn expected_stream() -> Vec<u8> {
    let mut out = Vec::with_capacity(15_000_000);
    for n in 1..=LINES {
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

fn options() -> AttachOptions {
    AttachOptions {
        host_name: Some(HostName::new(HOST_NAME).unwrap()),
        ..AttachOptions::new(TaskId::new(TASK).unwrap(), Secret::new(SECRET).unwrap())
    }
}

/// A guest through the resuming client, recording what it saw.
struct Guest {
    _client: Client,
    terminal: ResumingTerminal,
    output: Vec<u8>,
    /// `Reconnected.resumed` of each reconnect.
    reconnects: Vec<bool>,
    disconnects: usize,
    lagged: u64,
}

impl Guest {
    async fn attach(url: &str, options: AttachOptions) -> Self {
        let client = Client::connect(url).await.expect("guest connects");
        let terminal = timeout(DEADLINE, ResumingTerminal::attach(client.clone(), options))
            .await
            .expect("attached in time")
            .expect("attached");
        Self {
            _client: client,
            terminal,
            output: Vec::new(),
            reconnects: Vec::new(),
            disconnects: 0,
            lagged: 0,
        }
    }

    /// Reads updates until `done` holds for this guest.
    async fn until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(self) {
            self.step(what, deadline).await;
        }
    }

    /// Reads updates until the output contains `needle`, searching only
    /// what is new (the output grows to megabytes).
    async fn until_output(&mut self, needle: &str) {
        let needle = needle.as_bytes();
        let deadline = Instant::now() + DEADLINE;
        let mut from = 0;
        loop {
            if find(&self.output[from..], needle).is_some() {
                return;
            }
            from = self.output.len().saturating_sub(needle.len());
            self.step(&String::from_utf8_lossy(needle), deadline).await;
        }
    }

    /// Reads one update and records it.
    async fn step(&mut self, what: &str, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let update = timeout(left, self.terminal.next_update())
            .await
            .unwrap_or_else(|_| panic!("no {what} in time; {}", self.tail()));
        match update {
            Ok(Some(Update::Event(Event::Output(output)))) => {
                self.output.extend_from_slice(&output.data);
            }
            Ok(Some(Update::Event(Event::Lagged(lagged)))) => {
                self.lagged += lagged.missed_bytes;
            }
            Ok(Some(Update::Event(Event::Exit(exit)))) => {
                panic!(
                    "the session ended ({exit:?}) before {what}; {}",
                    self.tail()
                )
            }
            Ok(Some(Update::Event(_))) => {}
            Ok(Some(Update::Disconnected { .. })) => self.disconnects += 1,
            Ok(Some(Update::Reconnected { resumed, .. })) => self.reconnects.push(resumed),
            Ok(None) => panic!("the terminal ended before {what}; {}", self.tail()),
            Err(e) => panic!("the terminal failed before {what} ({e}); {}", self.tail()),
        }
    }

    fn tail(&self) -> String {
        let from = self.output.len().saturating_sub(300);
        format!(
            "{} bytes so far, ending {:?}",
            self.output.len(),
            String::from_utf8_lossy(&self.output[from..])
        )
    }

    /// The stream between the START and DONE markers.
    fn stream(&self) -> &[u8] {
        let start = find(&self.output, b"START\r\n").expect("START marker") + 7;
        let done = find(&self.output, b"DONE\r\n").expect("DONE marker");
        &self.output[start..done]
    }
}

/// What breaks in the middle of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The server stops (drained, or crashed) and another one starts on
    /// its port with the same state key: every guest re-joins.
    Restart(Stop),
    /// The host's connection is cut, and so is guest B's: guest A stays
    /// attached, B re-joins.
    Cut,
}

async fn fault_mid_stream(fault: Fault) {
    let key = StateKey::shared([7; 32]);
    let config = || {
        let mut config = ServerConfig {
            state_key: key.clone(),
            ..ServerConfig::default()
        };
        config.relay.retained_output_bytes = RETAINED;
        config
    };
    let server = TestServer::with_config(config()).await;
    let addr = server.addr;
    // For a cut: the host and guest B reach the server through proxies.
    let host_proxy = FaultProxy::start(&server.url).await;
    let b_proxy = FaultProxy::start(&server.url).await;
    let (host_url, b_url) = match fault {
        Fault::Cut => (host_proxy.url().to_owned(), b_proxy.url().to_owned()),
        Fault::Restart(_) => (server.url.clone(), server.url.clone()),
    };
    let host = resumable(&host_url, TASK, SECRET, Duration::from_secs(60))
        .name(HOST_NAME)
        .retained_output_bytes(RETAINED)
        .build()
        .expect("build host");
    let mut host = TestHost::from_host(host).await;
    let registered = |s: &HostStatus| matches!(s, HostStatus::Registered { .. });
    let first_id = host.registered().await;

    let mut a = Guest::attach(&server.url, options()).await;
    let session_id = a.terminal.attached().session_id.clone();
    let mut b = Guest::attach(
        &b_url,
        AttachOptions {
            session_id: Some(session_id.clone()),
            ..options()
        },
    )
    .await;
    a.terminal
        .send_input("stty -echo; echo ST''ART; seq 1 2000000; echo DO''NE\n")
        .await
        .unwrap();
    // Mid-stream at both.
    a.until_output("\r\n100000\r\n").await;
    b.until_output("\r\n100000\r\n").await;

    let server = match fault {
        Fault::Restart(how) => {
            server.stop(how).await;
            a.until("the break", |g| g.disconnects > 0).await;
            b.until("the break", |b| b.disconnects > 0).await;
            // Typed while the server is away: it runs once, after the
            // stream.
            a.terminal
                .send_input("echo typed-$((40+2))\n")
                .await
                .unwrap();
            TestServer::start_at(addr, config())
                .await
                .expect("bind the same port again")
        }
        Fault::Cut => {
            host_proxy.cut();
            b_proxy.cut();
            timeout(DEADLINE, host.status.wait_for(|s| !registered(s)))
                .await
                .expect("the host notices the cut")
                .expect("the host runs");
            b.until("the break", |b| b.disconnects > 0).await;
            // Typed by the guest that stayed, while the host is away.
            a.terminal
                .send_input("echo typed-$((40+2))\n")
                .await
                .unwrap();
            server
        }
    };
    assert_eq!(host.registered().await, first_id, "same host");

    a.until_output("typed-42\r\n").await;
    b.until_output("typed-42\r\n").await;
    let expected = expected_stream();
    if fault == Fault::Cut {
        assert_eq!(
            (a.disconnects, a.reconnects.len()),
            (0, 0),
            "a stayed attached"
        );
        assert_eq!(b.reconnects.first(), Some(&true), "b resumed as itself");
    }
    for (name, guest) in [("a", &a), ("b", &b)] {
        if fault != Fault::Cut {
            assert_eq!(
                guest.reconnects.first(),
                Some(&true),
                "{name} resumed as itself"
            );
        }
        assert_eq!(guest.lagged, 0, "{name} lagged");
        let stream = guest.stream();
        assert_eq!(stream.len(), expected.len(), "{name}: stream length");
        assert_eq!(sha256(stream), sha256(&expected), "{name}: stream SHA-256");
        assert_eq!(
            count(&guest.output, b"typed-42\r\n"),
            1,
            "{name}: input once"
        );
    }

    // A guest that joins now gets the retained output: the stream's last
    // bytes, exact, then the rest.
    let mut late = Guest::attach(
        &server.url,
        AttachOptions {
            session_id: Some(session_id.clone()),
            ..options()
        },
    )
    .await;
    late.until_output("typed-42\r\n").await;
    let done = find(&late.output, b"DONE\r\n").expect("DONE at the late guest");
    let seen = &late.output[..done];
    assert!(seen.len() >= 1024 * 1024, "retained: {} bytes", seen.len());
    let tail = &expected[expected.len() - seen.len()..];
    assert_eq!(sha256(seen), sha256(tail), "late guest: the stream's tail");

    // The same shell takes input from all.
    b.terminal
        .send_input("echo from-b-$((1+1))\n")
        .await
        .unwrap();
    a.until_output("from-b-2\r\n").await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_server_restart_loses_no_byte_and_no_keystroke() {
    fault_mid_stream(Fault::Restart(Stop::Graceful)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_cut_loses_no_byte_and_no_keystroke_at_staying_rejoining_and_late_guests() {
    fault_mid_stream(Fault::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_server_restart_loses_no_byte_and_no_keystroke() {
    fault_mid_stream(Fault::Restart(Stop::Crash)).await;
}

/// On a restarted server that its host has not resumed on yet, a resuming
/// guest is recognised by its signed token and told to wait (UNAVAILABLE,
/// which the clients retry), not "wrong secret"; a token that is not
/// signed with the server's key still gets PERMISSION_DENIED.
#[tokio::test]
async fn before_its_host_is_back_a_resuming_guest_is_told_to_wait() {
    let key = StateKey::shared([9; 32]);
    let config = |key: &StateKey| ServerConfig {
        state_key: key.clone(),
        ..ServerConfig::default()
    };
    let server = TestServer::with_config(config(&key)).await;
    let host = resumable(&server.url, TASK, SECRET, Duration::from_secs(60))
        .name(HOST_NAME)
        .build()
        .expect("build host");
    // Stopped on drop; it keeps trying the old address until then.
    let _host = TestHost::from_host(host).await;
    let client = Client::connect(&server.url).await.unwrap();
    let terminal = timeout(DEADLINE, client.terminal(options()))
        .await
        .expect("attached in time")
        .expect("attached");
    let attached = terminal.attached().clone();
    server.stop(Stop::Crash).await;

    // The host keeps trying the old address; these servers are elsewhere.
    let resume = |token: &str| AttachOptions {
        session_id: Some(attached.session_id.clone()),
        resume_guest: Some(rendezvous_guest::ResumeGuest {
            guest_id: attached.guest_id.clone(),
            guest_token: token.to_owned(),
            input_seq: Some(0),
        }),
        ..options()
    };
    let restarted = TestServer::with_config(config(&key)).await;
    let client = Client::connect(&restarted.url).await.unwrap();
    match client.terminal(resume(&attached.guest_token)).await {
        Err(rendezvous_guest::GuestError::Unavailable(message)) => {
            assert!(message.contains("reconnecting"), "{message}");
        }
        other => panic!(
            "expected UNAVAILABLE, got {:?}",
            other.map(|t| t.attached().clone())
        ),
    }
    let (grace, tag) = attached.guest_token.split_once('.').expect("grace.tag");
    for forged in [format!("{grace}.{}", &tag[1..]), format!("9{grace}.{tag}")] {
        let result = client.terminal(resume(&forged)).await;
        assert!(
            matches!(result, Err(rendezvous_guest::GuestError::Denied)),
            "a forged token: {:?}",
            result.map(|t| t.attached().clone())
        );
    }
    let other_key = TestServer::with_config(config(&StateKey::random())).await;
    let client = Client::connect(&other_key.url).await.unwrap();
    let result = client.terminal(resume(&attached.guest_token)).await;
    assert!(
        matches!(result, Err(rendezvous_guest::GuestError::Denied)),
        "another key: {:?}",
        result.map(|t| t.attached().clone())
    );
}

/// Input the server took but never passed on to the host (the host's link
/// was stalled) when it crashed is sent again by the guest after the
/// restart and runs once; input the host already had does not run again.
/// The restarted server learns from the host where each guest's input
/// stands (`ResumeSession.guest_inputs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn input_a_crashed_server_took_but_never_passed_on_runs_once_after_the_restart() {
    let key = StateKey::shared([5; 32]);
    let config = || ServerConfig {
        state_key: key.clone(),
        ..ServerConfig::default()
    };
    let server = TestServer::with_config(config()).await;
    let addr = server.addr;
    let host_proxy = FaultProxy::start(&server.url).await;
    let host = resumable(host_proxy.url(), TASK, SECRET, Duration::from_secs(60))
        .name(HOST_NAME)
        .build()
        .expect("build host");
    let host = TestHost::from_host(host).await;

    let mut a = Guest::attach(&server.url, options()).await;
    a.terminal
        .send_input("stty -echo; echo first-$((1+0))\n")
        .await
        .unwrap();
    a.until_output("first-1\r\n").await;

    // The host stops hearing from the server; the guest types.
    host_proxy.downstream().stall();
    let before = host_proxy.counts().downstream.held;
    let typed = "echo taken-$((1+1))\n";
    a.terminal.send_input(typed).await.unwrap();
    // The server has sent it down the host's Data stream: it took it.
    host_proxy
        .until("the input on its way to the host", |c| {
            // The whole Input message: an HTTP/2 DATA frame header (9),
            // the gRPC prefix (5), the bytes (2 + 20) and the origin (2 +
            // 2 + 32 + 2): more than the small frames (a PING, a window
            // update, an output ack) that may be held beside it.
            c.downstream.held >= before + (9 + 5 + 2 + typed.len() + 2 + 2 + 32 + 2) as u64
        })
        .await;
    server.stop(Stop::Crash).await;
    a.until("the break", |g| g.disconnects > 0).await;
    // What the proxy held for the host is lost with the old connection.
    let delivered = host_proxy.counts().downstream.delivered;
    host_proxy.cut();
    let after_cut = host_proxy
        .until("the held bytes dropped", |c| c.downstream.held == 0)
        .await;
    assert_eq!(after_cut.downstream.delivered, delivered, "none delivered");
    host_proxy.clear();
    let server = TestServer::start_at(addr, config())
        .await
        .expect("bind the same port again");

    a.until_output("taken-2\r\n").await;
    assert_eq!(a.reconnects.first(), Some(&true), "a resumed as itself");
    assert_eq!(count(&a.output, b"taken-2\r\n"), 1, "taken input runs once");
    // And after it the shell goes on, with nothing run twice.
    a.terminal
        .send_input("echo after-$((1+2))\n")
        .await
        .unwrap();
    a.until_output("after-3\r\n").await;
    assert_eq!(count(&a.output, b"first-1\r\n"), 1, "{}", a.tail());
    assert_eq!(count(&a.output, b"taken-2\r\n"), 1, "{}", a.tail());
    host.stop().await;
    drop(server);
}
