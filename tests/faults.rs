//! Guests behind a broken network: a real `rendezvous serve`, a real host
//! running bash on a PTY, native guests (`rendezvous-guest`), and the test
//! kit's [`FaultProxy`] between a guest and the server. A slow link, a
//! stalled peer, a cut and a delayed link each leave the output stream
//! byte-exact, and never slow or stop the other guests.
//!
//! The stream is `seq 1 200000` (1 488 895 bytes as the PTY writes it,
//! with `\r\n`), between two markers. The server retains 4 MiB per
//! session here, more than the whole stream, so that a guest that falls
//! behind or is away catches up from retained output whatever the
//! machine's speed. With the default 1 MiB: in the slow-link test a guest
//! more than 1 MiB behind the fastest is told it lagged, by design; in the
//! cut test, output the server had sent but the guest had not received
//! (in HTTP/2 windows and socket buffers, up to several MiB) is older than
//! the retained output when the guest resumes (known, see the issue note).

use std::time::Duration;

use rendezvous_guest::{
    AttachOptions, Client, Event, ResumingTerminal, Secret, TaskId, Terminal, Update,
};
use rendezvous_host::Guests;
use rendezvous_server::server::{HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT};
use rendezvous_testkit::proxy::FaultProxy;
use rendezvous_testkit::{DEADLINE, ProcessOutput, TestHost, bash};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::Instant;

/// Bytes each session retains here (4 MiB): more than the stream.
const RETAINED_BYTES: &str = "4194304";

/// What a guest types: the stream between two markers whose text is not
/// in the echoed command line.
const STREAM_COMMAND: &str = "echo BEGIN-$((1+1)); seq 1 200000; echo END-$((2+2))\r";
const BEGIN: &str = "BEGIN-2\r\n";
const END: &str = "END-4\r\n";

/// What `seq 1 200000` writes through a PTY.
fn expected_stream() -> Vec<u8> {
    (1..=200_000)
        .flat_map(|n| format!("{n}\r\n").into_bytes())
        .collect()
}

/// The bytes between [`BEGIN`] and [`END`] in `output`.
fn stream_in(output: &[u8]) -> &[u8] {
    let find = |needle: &str, from: usize| {
        output[from..]
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .map(|at| from + at)
    };
    let begin = find(BEGIN, 0).expect("the begin marker") + BEGIN.len();
    let end = find(END, begin).expect("the end marker");
    &output[begin..end]
}

/// Fails unless `got` is the whole `seq` stream, saying where it differs.
fn assert_exact(who: &str, got: &[u8]) {
    let expected = expected_stream();
    if got != expected.as_slice() {
        let at = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "{who}: {} bytes, expected {}; first difference at byte {at}: {:?}",
            got.len(),
            expected.len(),
            String::from_utf8_lossy(&got[at.saturating_sub(20)..got.len().min(at + 20)])
        );
    }
}

/// `rendezvous serve` on a free loopback port, retaining
/// [`RETAINED_BYTES`] per session; its URL.
async fn serve() -> (ProcessOutput, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rendezvous"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--drain-delay", "0s"])
        .args(["--retained-output-bytes", RETAINED_BYTES])
        .env("RUST_LOG", "warn");
    let mut serve = ProcessOutput::spawn(command);
    let url = serve.stdout_line("rendezvous: listening on ").await;
    (serve, url)
}

/// A host of `task` on `url` running bash with a plain prompt, registered,
/// and its view of the guests attached.
async fn host(url: &str, task: &str) -> (TestHost, watch::Receiver<Guests>) {
    let command = bash();
    let host = rendezvous_host::Host::builder(url)
        .task_id(task)
        .command(&command[0], &command[1..])
        .env("PS1", "$ ")
        .env("HISTFILE", "/dev/null")
        .build()
        .unwrap();
    let guests = host.guests();
    (TestHost::from_host(host).await, guests)
}

fn options(host: &TestHost, session: Option<&str>) -> AttachOptions {
    let mut options = AttachOptions::new(
        TaskId::new(host.task_id.as_str()).unwrap(),
        Secret::new(host.secret.as_str()).unwrap(),
    );
    options.session_id = session.map(str::to_owned);
    (options.cols, options.rows) = (100, 30);
    options
}

/// A native guest on the bidi Terminal call, and what it received.
struct Guest {
    terminal: Terminal,
    output: Vec<u8>,
    /// Where the next search for a needle starts.
    searched: usize,
    /// Bytes the server said this guest missed.
    lagged: u64,
}

impl Guest {
    /// Attaches through `url` (the server's or a proxy's) to `session`, or
    /// a new shell.
    async fn attach(url: &str, host: &TestHost, session: Option<&str>) -> Self {
        let attach = async {
            let client = Client::connect(url).await?;
            client.terminal(options(host, session)).await
        };
        let terminal = tokio::time::timeout(DEADLINE, attach)
            .await
            .expect("attach in time")
            .expect("attach");
        Self {
            terminal,
            output: Vec::new(),
            searched: 0,
            lagged: 0,
        }
    }

    fn session_id(&self) -> String {
        self.terminal.attached().session_id.clone()
    }

    fn guest_id(&self) -> String {
        self.terminal.attached().guest_id.clone()
    }

    async fn type_text(&self, text: &str) {
        self.terminal.send_input(text.to_owned()).await.unwrap();
    }

    /// Reads until the output after the last needle found contains
    /// `needle`, within the deadline.
    async fn until(&mut self, needle: &str) {
        self.until_within(needle, DEADLINE).await;
    }

    /// [`Guest::until`] within `limit`.
    async fn until_within(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        let needle = needle.as_bytes();
        loop {
            if let Some(at) = self.output[self.searched..]
                .windows(needle.len())
                .position(|w| w == needle)
            {
                self.searched += at + needle.len();
                return;
            }
            let event = tokio::time::timeout_at(deadline, self.terminal.next_event())
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
                .expect("the stream goes on")
                .expect("the session goes on");
            match event {
                Event::Output(output) => self.output.extend_from_slice(&output.data),
                Event::Lagged(lagged) => self.lagged += lagged.missed_bytes,
                Event::Size(_) | Event::HostState(_) => {}
                Event::Exit(exit) => panic!("unexpected {exit:?}"),
            }
        }
    }

    /// Types `echo` of a marker and waits for bash's answer: the session
    /// answers this guest.
    async fn answers(&mut self, marker: &str) {
        self.type_text(&format!("echo {marker}-$((40+2))\r")).await;
        self.until(&format!("{marker}-42\r\n")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_on_a_slow_link_gets_the_stream_exact_without_slowing_a_direct_guest() {
    // 128 KiB/s: the slow guest needs about 11 s, so the direct one has
    // room to be late on a loaded machine and still be far ahead.
    const RATE: u64 = 128 * 1024;
    let (_serve, url) = serve().await;
    let (host, _) = host(&url, "faults-slow").await;
    let proxy = FaultProxy::start(&url).await;
    let mut direct = Guest::attach(&url, &host, None).await;
    direct.until("$ ").await;
    let session = direct.session_id();
    let mut slow = Guest::attach(proxy.url(), &host, Some(&session)).await;
    slow.until("$ ").await;
    proxy.downstream().throttle(RATE);

    direct.type_text(STREAM_COMMAND).await;
    let started = Instant::now();
    let direct = tokio::spawn(async move {
        direct.until(END).await;
        (direct, started.elapsed())
    });
    let slow = tokio::spawn(async move {
        slow.until_within(END, 2 * DEADLINE).await;
        (slow, started.elapsed())
    });
    let (direct, direct_took) = direct.await.unwrap();
    // Whatever the slow guest had when the direct one was done.
    let slow_had = proxy.counts().downstream.delivered;
    let (slow, slow_took) = slow.await.unwrap();
    eprintln!("direct guest: {direct_took:?}; guest at 128 KiB/s: {slow_took:?}");

    assert_eq!((direct.lagged, slow.lagged), (0, 0));
    assert_exact("direct guest", stream_in(&direct.output));
    assert_exact("slow guest", stream_in(&slow.output));
    // The throttle held: the stream cannot pass it faster.
    let least = Duration::from_secs_f64(expected_stream().len() as f64 / RATE as f64);
    assert!(slow_took >= least.mul_f64(0.9), "{slow_took:?}");
    // The direct guest set the pace: it was done while the slow one had
    // at most two thirds of the stream (paced by the slow guest, it would
    // end within one backpressure window, 256 KiB, of it).
    assert!(
        slow_had < expected_stream().len() as u64 * 2 / 3,
        "the slow guest had {slow_had} bytes when the direct guest was done \
         ({direct_took:?} against {slow_took:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_guest_is_detached_by_the_servers_keepalive_and_the_others_go_on() {
    let (_serve, url) = serve().await;
    let (host, mut guests) = host(&url, "faults-stall").await;
    let proxy = FaultProxy::start(&url).await;
    let mut direct = Guest::attach(&url, &host, None).await;
    direct.until("$ ").await;
    let session = direct.session_id();
    let mut stalled = Guest::attach(proxy.url(), &host, Some(&session)).await;
    stalled.until("$ ").await;
    let stalled_id = stalled.guest_id();
    tokio::time::timeout(DEADLINE, guests.wait_for(|g| g.count() == 2))
        .await
        .expect("the host sees both guests")
        .unwrap();

    // Nothing goes either way from now on, not even the end of a stream:
    // only a keepalive can find the guest gone.
    proxy.both().blackhole();
    let stalled_at = Instant::now();
    direct.answers("DURING").await;

    let keepalive = HTTP2_KEEPALIVE_INTERVAL + HTTP2_KEEPALIVE_TIMEOUT;
    let left = tokio::time::timeout(keepalive + DEADLINE, guests.wait_for(|g| g.count() == 1))
        .await
        .expect("the host sees the stalled guest leave")
        .unwrap()
        .clone();
    let took = stalled_at.elapsed();
    let counts = proxy.counts();
    eprintln!("stalled guest detached after {took:?}: {counts:?}");
    // The guest's client gave up first (its keepalive: 20 s + 10 s), and
    // its close stayed in the blackhole: the server found out by itself.
    assert_eq!(counts.upstream.ends, 1, "the guest's close was read");
    assert_eq!(counts.upstream.held, 0);
    let remaining: Vec<_> = left.attached().map(|g| g.guest_id.clone()).collect();
    assert_eq!(remaining, [direct.guest_id()]);
    assert!(!remaining.contains(&stalled_id));
    // The guest had just attached when the stall began, so the last frame
    // the server read from it came then: its PING goes out an interval
    // later, and it gives up a timeout after that. (Had the guest's own
    // close leaked through, at 30 s, the detach would come sooner.)
    assert!(
        took >= keepalive - Duration::from_secs(5),
        "detached after {took:?}, before the server's keepalive could"
    );
    assert!(
        took <= keepalive + Duration::from_secs(3),
        "detached after {took:?}, more than {keepalive:?}"
    );

    // The server closed the connection itself (the guest's own close,
    // after its keepalive of 20 s + 10 s, is held in the blackhole).
    proxy
        .until("the server's end of the stalled connection", |c| {
            c.downstream.ends == 1
        })
        .await;
    // The other guest never noticed.
    direct.answers("AFTER").await;
    assert_eq!(direct.lagged, 0);
}

/// What a [`ResumingTerminal`] received, and its breaks.
#[derive(Default)]
struct Seen {
    output: Vec<u8>,
    searched: usize,
    disconnects: usize,
    /// `(resumed, lost_inputs)` of each reconnect.
    reconnects: Vec<(bool, u64)>,
    lagged: u64,
}

impl Seen {
    /// Takes updates until the output (after the last needle found)
    /// contains `needle`.
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
            let update = tokio::time::timeout_at(deadline, terminal.next_update())
                .await
                .unwrap_or_else(|_| panic!("no {:?} in time", String::from_utf8_lossy(needle)))
                .expect("no error ends the terminal")
                .expect("the session does not end");
            match update {
                Update::Event(Event::Output(output)) => self.output.extend_from_slice(&output.data),
                Update::Event(Event::Lagged(lagged)) => self.lagged += lagged.missed_bytes,
                Update::Event(Event::Size(_) | Event::HostState(_)) => {}
                Update::Event(Event::Exit(exit)) => panic!("unexpected {exit:?}"),
                Update::Disconnected { .. } => self.disconnects += 1,
                Update::Reconnected {
                    resumed,
                    lost_inputs,
                } => self.reconnects.push((resumed, lost_inputs)),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_whose_link_is_cut_mid_stream_resumes_without_a_gap_or_a_repeat() {
    let (_serve, url) = serve().await;
    let (host, _) = host(&url, "faults-cut").await;
    let proxy = FaultProxy::start(&url).await;
    let client = Client::connect(proxy.url()).await.unwrap();
    let mut terminal = tokio::time::timeout(
        DEADLINE,
        ResumingTerminal::attach(client, options(&host, None)),
    )
    .await
    .expect("attach in time")
    .unwrap();
    let session = terminal.attached().session_id.clone();
    let mut seen = Seen::default();
    seen.until(&mut terminal, "$ ").await;
    // Slow enough (about 3 s for the stream) that every cut lands in it.
    proxy.downstream().throttle(512 * 1024);

    terminal.send_input(STREAM_COMMAND).await.unwrap();
    for line in ["\r\n20000\r\n", "\r\n90000\r\n", "\r\n160000\r\n"] {
        seen.until(&mut terminal, line).await;
        proxy.cut();
    }
    assert!(
        !String::from_utf8_lossy(&seen.output).contains(END),
        "a cut came after the end"
    );
    seen.until(&mut terminal, END).await;

    assert_eq!(seen.lagged, 0);
    assert_exact("resumed guest", stream_in(&seen.output));
    assert_eq!(seen.disconnects, 3, "one break a cut");
    assert_eq!(seen.reconnects, [(true, 0); 3], "resumed as the same guest");
    assert_eq!(terminal.attached().session_id, session);
    assert_eq!(proxy.counts().accepted, 4, "a connection after each cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_on_a_delayed_link_gets_the_stream_exact_and_its_input_works() {
    const LATENCY: Duration = Duration::from_millis(150);
    let (_serve, url) = serve().await;
    let (host, _) = host(&url, "faults-delay").await;
    let proxy = FaultProxy::start(&url).await;
    proxy.both().delay(LATENCY);
    let mut guest = Guest::attach(proxy.url(), &host, None).await;
    guest.until("$ ").await;

    // Input goes up one latency, its echo comes down another.
    let typed = Instant::now();
    guest.answers("TYPED").await;
    let round_trip = typed.elapsed();
    assert!(round_trip >= 2 * LATENCY, "answered in {round_trip:?}");

    guest.type_text(STREAM_COMMAND).await;
    guest.until(END).await;
    assert_eq!(guest.lagged, 0);
    assert_exact("delayed guest", stream_in(&guest.output));
    guest.answers("STILL").await;
    eprintln!("round trip {round_trip:?}; {:?}", proxy.counts());
}
