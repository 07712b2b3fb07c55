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

use rendezvous_guest::{AttachOptions, Client, ResumingTerminal, Secret, TaskId};
use rendezvous_host::Guests;
use rendezvous_server::server::{HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT};
use rendezvous_testkit::proxy::FaultProxy;
use rendezvous_testkit::seq_stream::{
    END, STREAM_COMMAND, Seen, StreamGuest, assert_exact, expected_stream, stream_in,
};
use rendezvous_testkit::{DEADLINE, ProcessOutput, TestHost, bash};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::Instant;

/// Bytes each session retains here (4 MiB): more than the stream.
const RETAINED_BYTES: &str = "4194304";

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

/// A native guest of `host` on the Terminal call through `url`, attached
/// to `session` or a new shell.
async fn guest(url: &str, host: &TestHost, session: Option<&str>) -> StreamGuest {
    StreamGuest::attach(url, options(host, session)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_on_a_slow_link_gets_the_stream_exact_without_slowing_a_direct_guest() {
    // 128 KiB/s: the slow guest needs about 11 s, so the direct one has
    // room to be late on a loaded machine and still be far ahead.
    const RATE: u64 = 128 * 1024;
    let (_serve, url) = serve().await;
    let (host, _) = host(&url, "faults-slow").await;
    let proxy = FaultProxy::start(&url).await;
    let mut direct = guest(&url, &host, None).await;
    direct.until("$ ").await;
    let session = direct.session_id();
    let mut slow = guest(proxy.url(), &host, Some(&session)).await;
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
    let mut direct = guest(&url, &host, None).await;
    direct.until("$ ").await;
    let session = direct.session_id();
    let mut stalled = guest(proxy.url(), &host, Some(&session)).await;
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
    let mut guest = guest(proxy.url(), &host, None).await;
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
