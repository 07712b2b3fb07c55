//! A host whose link to the server stalls (every byte held, both ways,
//! nothing closed: a NAT that dropped its mapping, a proxy that hung)
//! past the keepalives. Both sides must notice by themselves within two
//! keepalive intervals; the guest is told the host is reconnecting and
//! stays attached; once the link works again the host resumes in the same
//! shell, and input typed meanwhile runs once.

use std::time::Duration;

use rendezvous_guest::{AttachOptions, Client, Event, HostName, Secret, TaskId, Terminal};
use rendezvous_host::HostStatus;
use rendezvous_proto::endpoint::{HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT};
use rendezvous_testkit::proxy::FaultProxy;
use rendezvous_testkit::{TestHost, TestServer, resumable};
use tokio::time::{Instant, timeout};

/// Slack on top of a keepalive bound, for a loaded CI machine.
const SLACK: Duration = Duration::from_secs(10);

/// How long anything else may take.
const DEADLINE: Duration = Duration::from_secs(30);

const TASK: &str = "stall-3";
const SECRET: &str = "stalled-host-test-secret-0123";

struct Guest {
    terminal: Terminal,
    output: Vec<u8>,
    /// HostState events: whether the host was reconnecting.
    host_states: Vec<bool>,
}

impl Guest {
    /// Reads events until `done`, at most until `deadline`.
    async fn until(&mut self, what: &str, deadline: Instant, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = timeout(left, self.terminal.next_event())
                .await
                .unwrap_or_else(|_| panic!("no {what} in time: {:?}", self.text()));
            match event {
                Ok(Some(Event::Output(output))) => self.output.extend_from_slice(&output.data),
                Ok(Some(Event::HostState(state))) => self.host_states.push(state.reconnecting),
                Ok(Some(Event::Exit(exit))) => panic!("the session ended before {what}: {exit:?}"),
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended before {what}"),
                Err(e) => panic!("the stream failed before {what}: {e}"),
            }
        }
    }

    async fn until_text(&mut self, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        self.until(needle, deadline, |g| g.text().contains(needle))
            .await;
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

#[tokio::test]
async fn a_host_stalled_past_the_keepalive_is_noticed_on_both_sides_and_resumes() {
    let server = TestServer::start().await;
    let proxy = FaultProxy::start(&server.url).await;
    let host = resumable(proxy.url(), TASK, SECRET, Duration::from_secs(300))
        .build()
        .expect("build host");
    let mut host = TestHost::from_host(host).await;
    let registered = |s: &HostStatus| matches!(s, HostStatus::Registered { .. });

    // The guest reaches the server directly.
    let client = Client::connect(&server.url).await.unwrap();
    let options = AttachOptions {
        host_name: Some(HostName::new("default").unwrap()),
        ..AttachOptions::new(TaskId::new(TASK).unwrap(), Secret::new(SECRET).unwrap())
    };
    let terminal = timeout(DEADLINE, client.terminal(options))
        .await
        .expect("attached in time")
        .expect("attached");
    let mut guest = Guest {
        terminal,
        output: Vec::new(),
        host_states: Vec::new(),
    };
    guest
        .terminal
        .send_input("echo shell-$$-end\n")
        .await
        .unwrap();
    // The echoed command line shows `shell-$$-end`; the output, the PID.
    let shell_number = |text: &str| {
        text.match_indices("shell-").find_map(|(at, _)| {
            let rest = &text[at + 6..];
            rest[..rest.find("-end")?].parse::<u32>().ok()
        })
    };
    let deadline = Instant::now() + DEADLINE;
    guest
        .until("the shell's PID", deadline, |g| {
            shell_number(&g.text()).is_some()
        })
        .await;
    let shell = shell_number(&guest.text()).expect("the shell's PID");

    let stalled_at = Instant::now();
    proxy.both().stall();
    // The host: its HTTP/2 keepalive (a PING every interval, an answer
    // within the timeout) gives the connection up.
    let host_bound = HTTP2_KEEPALIVE_INTERVAL + HTTP2_KEEPALIVE_TIMEOUT + SLACK;
    timeout(host_bound, host.status.wait_for(|s| !registered(s)))
        .await
        .unwrap_or_else(|_| panic!("the host did not notice the stall within {host_bound:?}"))
        .expect("the host runs");
    // The server: its HTTP/2 keepalive (20 s, then 20 s for the answer)
    // closes the host's connection, and the guest is told.
    let server_bound = 2 * Duration::from_secs(20) + SLACK;
    guest
        .until("HostState reconnecting", stalled_at + server_bound, |g| {
            g.host_states.contains(&true)
        })
        .await;
    // Typed while the host is away: it waits in the session's queue.
    guest
        .terminal
        .send_input("echo typed-$((40+2))\n")
        .await
        .unwrap();

    proxy.both().release();
    guest
        .until("HostState back", Instant::now() + DEADLINE, |g| {
            g.host_states == [true, false]
        })
        .await;
    guest.until_text("typed-42\r\n").await;
    guest
        .terminal
        .send_input("echo again-$$-end\n")
        .await
        .unwrap();
    guest.until_text(&format!("again-{shell}-end")).await;
    assert_eq!(
        guest.text().matches("typed-42\r\n").count(),
        1,
        "input once"
    );
    host.stop().await;
}
