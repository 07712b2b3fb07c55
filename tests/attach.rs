//! Native guests across broken connections: [`ResumingTerminal`] and
//! `rendezvous attach` through a proxy that holds and cuts connections.
//! Output goes on byte-exact, and input is applied once, whether the server
//! had it or not when the connection broke.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use rendezvous_guest::{AttachOptions, Client, Event, ResumingTerminal, Secret, TaskId, Update};
use rendezvous_testkit::proxy::CutProxy;
use rendezvous_testkit::{DEADLINE, TestHost, TestServer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

/// What a [`ResumingTerminal`] reported so far.
#[derive(Default)]
struct Seen {
    output: Vec<u8>,
    /// Where the next search for a needle starts.
    searched: usize,
    disconnects: usize,
    /// `(resumed, lost_inputs)` of each reconnect.
    reconnects: Vec<(bool, u64)>,
}

impl Seen {
    /// Takes updates until the output (from where the last call found its
    /// needle) contains `needle`.
    async fn until(&mut self, terminal: &mut ResumingTerminal, needle: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let needle = needle.as_bytes();
        loop {
            if let Some(at) = self.output[self.searched..]
                .windows(needle.len())
                .position(|w| w == needle)
            {
                self.searched += at + needle.len();
                return;
            }
            let update = tokio::time::timeout_at(deadline, terminal.next_update())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {:?} in time; output ends {:?}",
                        String::from_utf8_lossy(needle),
                        String::from_utf8_lossy(
                            &self.output[self.output.len().saturating_sub(300)..]
                        )
                    )
                })
                .expect("no error ends the terminal")
                .expect("the session does not end");
            match update {
                Update::Event(Event::Output(output)) => self.output.extend_from_slice(&output.data),
                Update::Event(Event::Size(_) | Event::Lagged(_) | Event::HostState(_)) => {}
                Update::Event(Event::Exit(exit)) => panic!("unexpected {exit:?}"),
                Update::Disconnected { .. } => self.disconnects += 1,
                Update::Reconnected {
                    resumed,
                    lost_inputs,
                } => self.reconnects.push((resumed, lost_inputs)),
            }
        }
    }

    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.output)
            .matches(needle)
            .count()
    }
}

/// A server, a host running bash, a [`CutProxy`] in front of the server,
/// and a guest on a new shell through the proxy.
async fn through_proxy(task: &str) -> (TestServer, TestHost, CutProxy, ResumingTerminal) {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, task).await;
    let proxy = CutProxy::start(&server.url).await;
    let client = Client::connect(&proxy.url).await.unwrap();
    let mut options = AttachOptions::new(
        TaskId::new(task).unwrap(),
        Secret::new(host.secret.as_str()).unwrap(),
    );
    (options.cols, options.rows) = (80, 24);
    let terminal = tokio::time::timeout(DEADLINE, ResumingTerminal::attach(client, options))
        .await
        .expect("attach in time")
        .unwrap();
    (server, host, proxy, terminal)
}

#[tokio::test]
async fn a_resuming_terminal_carries_on_byte_exact_across_a_cut() {
    let (_server, _host, proxy, mut terminal) = through_proxy("resume-output").await;
    let session = terminal.attached().session_id.clone();
    let mut seen = Seen::default();
    seen.until(&mut terminal, "$ ").await;

    // A bash loop writes 100 000 numbered lines (about 0.6 MB, under the
    // 1 MiB the server retains) over a second or so; the cut comes early.
    terminal
        .send_input("seq 100000|while read n;do echo $n;done;echo E-$((1+1))\r")
        .await
        .unwrap();
    seen.until(&mut terminal, "\r\n2000\r\n").await;
    proxy.cut();
    assert_eq!(seen.count("E-2\r\n"), 0, "the cut came after the end");
    seen.until(&mut terminal, "E-2\r\n").await;
    assert!(seen.disconnects >= 1, "the cut was not noticed");
    assert_eq!(seen.reconnects.first(), Some(&(true, 0)));
    assert_eq!(terminal.attached().session_id, session);

    let text = String::from_utf8_lossy(&seen.output);
    let (_, after) = text.split_once("E-$((1+1))\r\n").unwrap();
    let (lines, _) = after.split_once("E-2\r\n").unwrap();
    let numbers: Vec<u32> = lines
        .split("\r\n")
        // bash turns bracketed paste off before running the command.
        .map(|l| l.trim_start_matches("\u{1b}[?2004l\r"))
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not a number: {l:?}")))
        .collect();
    assert!(
        numbers.iter().copied().eq(1..=100_000),
        "lines lost or repeated: {} lines",
        numbers.len()
    );
}

#[tokio::test]
async fn a_resuming_terminal_applies_input_once_whether_the_server_had_it_or_not() {
    let (_server, _host, proxy, mut terminal) = through_proxy("resume-input").await;
    let mut seen = Seen::default();

    // Applied before the cut: not sent again after it.
    terminal.send_input("echo ONE-$((40+1))\r").await.unwrap();
    seen.until(&mut terminal, "ONE-41\r\n").await;
    proxy.cut();
    terminal.send_input("echo TWO-$((40+2))\r").await.unwrap();
    seen.until(&mut terminal, "TWO-42\r\n").await;

    // Held by the muted proxy, so the server never had it: sent again.
    proxy.mute();
    terminal.send_input("echo THREE-$((40+3))\r").await.unwrap();
    proxy.cut();
    seen.until(&mut terminal, "THREE-43\r\n").await;
    terminal.send_input("echo FOUR-$((40+4))\r").await.unwrap();
    seen.until(&mut terminal, "FOUR-44\r\n").await;

    for line in ["ONE-41\r\n", "TWO-42\r\n", "THREE-43\r\n", "FOUR-44\r\n"] {
        assert_eq!(
            seen.count(line),
            1,
            "{line:?} in {:?}",
            String::from_utf8_lossy(&seen.output)
        );
    }
    assert!(seen.reconnects.len() >= 2, "{:?}", seen.reconnects);
    assert!(
        seen.reconnects.iter().all(|r| *r == (true, 0)),
        "{:?}",
        seen.reconnects
    );
}

/// Everything a child process wrote to one pipe, as it arrives.
#[derive(Clone)]
struct Captured(Arc<Mutex<Vec<u8>>>, watch::Receiver<usize>);

impl Captured {
    fn start(mut pipe: impl AsyncRead + Unpin + Send + 'static) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (grew, watch) = watch::channel(0);
        let sink = bytes.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                let mut all = sink.lock().unwrap();
                all.extend_from_slice(&buf[..n]);
                grew.send_replace(all.len());
            }
        });
        Self(bytes, watch)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    async fn until(&mut self, needle: &str) {
        let found = tokio::time::timeout(DEADLINE, async {
            loop {
                if self.text().contains(needle) {
                    return;
                }
                if self.1.changed().await.is_err() {
                    panic!("the pipe closed without {needle:?}");
                }
            }
        })
        .await;
        assert!(found.is_ok(), "no {needle:?} in time: {:?}", self.text());
    }
}

#[tokio::test]
async fn rendezvous_attach_reconnects_sends_what_was_typed_meanwhile_and_exits_with_the_code() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "attach-cut").await;
    let proxy = CutProxy::start(&server.url).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args(["attach", "--server", &proxy.url, "--task-id", "attach-cut"])
        .env("RENDEZVOUS_SECRET", &host.secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start rendezvous attach");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = Captured::start(child.stdout.take().unwrap());
    let mut stderr = Captured::start(child.stderr.take().unwrap());

    stdin.write_all(b"echo ONE-$((40+1))\n").await.unwrap();
    stdout.until("ONE-41\r\n").await;
    // Typed while the connection is down: sent once it is back.
    proxy.cut();
    stdin
        .write_all(b"echo TWO-$((40+2)); exit 7\n")
        .await
        .unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("attach ends in time")
        .unwrap();
    stderr.until("session ended with exit code 7").await;

    assert_eq!(status.code(), Some(7), "{}", stderr.text());
    let out = stdout.text();
    assert_eq!(out.matches("ONE-41\r\n").count(), 1, "{out:?}");
    assert_eq!(out.matches("TWO-42\r\n").count(), 1, "{out:?}");
    let err = stderr.text();
    assert!(err.contains("[rendezvous: connection lost ("), "{err}");
    assert!(err.contains("[rendezvous: reconnected]"), "{err}");
    assert!(!err.contains(&host.secret), "the secret leaked: {err}");
}

#[tokio::test]
async fn a_session_that_ends_while_a_guest_is_away_is_reported_as_ended() {
    let (server, host, proxy, mut terminal) = through_proxy("resume-ended").await;
    let mut seen = Seen::default();
    seen.until(&mut terminal, "$ ").await;

    // The guest hears nothing from now on; another guest ends the session.
    proxy.mute();
    let other = Client::connect(&server.url).await.unwrap();
    let mut options = AttachOptions::new(
        TaskId::new("resume-ended").unwrap(),
        Secret::new(host.secret.as_str()).unwrap(),
    );
    options.session_id = Some(terminal.attached().session_id.clone());
    let mut other = other.terminal(options).await.unwrap();
    other.send_input("exit 3\r").await.unwrap();
    while let Some(event) = tokio::time::timeout(DEADLINE, other.next_event())
        .await
        .expect("the other guest sees the end")
        .unwrap()
    {
        if matches!(event, Event::Exit(_)) {
            break;
        }
    }

    proxy.cut();
    // Either way it is told, with the Exit or with SessionEnded: the
    // resume may still find the guest attached (the server's side of the
    // muted stream had not closed yet) and replace its stream, which then
    // delivers the Exit; the Exit may have got out before the mute; or the
    // guest had gone with the session, and the resume answers that it has
    // ended.
    let mut exit = None;
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match terminal.next_update().await {
                Ok(Some(Update::Event(Event::Exit(status)))) => exit = Some(status),
                Ok(Some(
                    Update::Disconnected { .. } | Update::Reconnected { .. } | Update::Event(_),
                )) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the reconnect is answered in time");
    match (&exit, &ended) {
        (Some(status), Ok(None)) => assert_eq!(
            status.status,
            Some(rendezvous_proto::exit_status::Status::Code(3)),
            "{status:?}"
        ),
        (None, Err(rendezvous_guest::GuestError::SessionEnded)) => {
            assert!(matches!(terminal.next_update().await, Ok(None)));
        }
        _ => panic!("neither the Exit nor SessionEnded: {exit:?}, {ended:?}"),
    }
}

#[tokio::test]
async fn rendezvous_attach_says_why_an_idle_session_ended() {
    let server = TestServer::with_config(rendezvous_server::ServerConfig {
        timeouts: rendezvous_server::config::SessionTimeouts {
            idle: std::time::Duration::from_millis(1_500),
            max_lifetime: None,
        },
        ..rendezvous_server::ServerConfig::default()
    })
    .await;
    let host = TestHost::start(&server, "attach-idle").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args([
            "attach",
            "--server",
            &server.url,
            "--task-id",
            "attach-idle",
        ])
        .env("RENDEZVOUS_SECRET", &host.secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start rendezvous attach");
    let _stdin = child.stdin.take().unwrap();
    let mut stderr = Captured::start(child.stderr.take().unwrap());
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("attach ends in time")
        .unwrap();
    stderr
        .until("no input or output for 1500 ms (the server's --session-idle-timeout)")
        .await;
    assert_ne!(status.code(), Some(0));
}
