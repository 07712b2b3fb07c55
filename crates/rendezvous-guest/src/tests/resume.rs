//! [`ResumingTerminal`] across connections cut by a proxy between it and
//! the server: output goes on byte-exact, and input is applied once,
//! whether the server had it or not when the connection broke.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};

use super::*;

/// A TCP proxy on 127.0.0.1:0 in front of a server. `mute` holds every
/// byte from then on (in both directions) without closing anything; `cut`
/// closes every connection open now, dropping what was held. New
/// connections are let through as usual.
struct CutProxy {
    url: String,
    muted: Arc<watch::Sender<bool>>,
    cuts: Arc<watch::Sender<u64>>,
    task: JoinHandle<()>,
}

impl CutProxy {
    async fn start(server_url: &str) -> Self {
        let upstream = server_url.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let muted = Arc::new(watch::Sender::new(false));
        let cuts = Arc::new(watch::Sender::new(0u64));
        let (m, c) = (muted.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (muted, mut cut) = (m.subscribe(), c.subscribe());
                let generation = *cut.borrow_and_update();
                tokio::spawn(async move {
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        _ = pump(ri, wo, muted.clone()) => {}
                        _ = pump(ro, wi, muted) => {}
                        _ = cut.wait_for(|g| *g != generation) => {}
                    }
                });
            }
        });
        Self {
            url,
            muted,
            cuts,
            task,
        }
    }

    fn mute(&self) {
        self.muted.send_replace(true);
    }

    fn cut(&self) {
        self.muted.send_replace(false);
        self.cuts.send_modify(|g| *g += 1);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Copies `from` to `to`; bytes read while muted wait until unmuted.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut muted: watch::Receiver<bool>,
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if muted.wait_for(|m| !*m).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

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
        let deadline = Instant::now() + DEADLINE;
        let needle = needle.as_bytes();
        loop {
            if let Some(at) = self.output[self.searched..]
                .windows(needle.len())
                .position(|w| w == needle)
            {
                self.searched += at + needle.len();
                return;
            }
            let update = timeout_at(deadline, terminal.next_update())
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
                Update::Event(Event::Size(_) | Event::Lagged(_)) => {}
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

/// A server, a host, a [`CutProxy`] in front of the server, and a guest
/// on a new shell through the proxy.
async fn through_proxy() -> (TestServer, TestHost, CutProxy, ResumingTerminal) {
    let server = TestServer::start().await;
    let host = TestHost::start(&server).await;
    let proxy = CutProxy::start(&server.url).await;
    let client = Client::connect(&proxy.url).await.unwrap();
    let terminal = within(
        "attach",
        ResumingTerminal::attach(client, host.options(80, 24)),
    )
    .await
    .unwrap();
    (server, host, proxy, terminal)
}

#[tokio::test]
async fn a_resuming_terminal_carries_on_byte_exact_across_a_cut() {
    let (_server, _host, proxy, mut terminal) = through_proxy().await;
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
    let (_server, _host, proxy, mut terminal) = through_proxy().await;
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
