//! The relay under many guests, slow guests and hostile guests: fan-out with
//! byte-exact delivery and lag, backpressure, roles, one reply to terminal
//! queries, the resize policy, and limits. Real server, real bash, real gRPC.
//!
//! Over 650 lines, on purpose: each test here drives the same fan-out
//! helpers (attach, send, the paused and reading guests), which splitting
//! would repeat in a second file.

use std::collections::HashMap;
use std::time::Duration;

use rendezvous_proto::guest_service_client::GuestServiceClient;
use rendezvous_proto::host_service_client::HostServiceClient;
use rendezvous_proto::{
    AttachRequest, Attached, HostControlRequest, ListSessionsRequest, ResizeRequest, Role,
    SendInputRequest, guest_event::Event, host_control_request,
};
use rendezvous_server::session::RelayConfig;
use rendezvous_server::{Limits, ServerConfig};
use rendezvous_testkit::{DEADLINE, TermGuest, TestHost, TestServer, Transcript, held_output};
use tonic::Code;
use tonic::transport::Channel;

/// A guest on its own HTTP/2 connection (as every browser tab has), with
/// small flow-control windows so that one that stops reading stops the
/// server's sends quickly.
async fn own_channel(server: &TestServer) -> Channel {
    rendezvous_proto::endpoint::endpoint(&server.url)
        .unwrap()
        .map_endpoint(|e| {
            e.initial_stream_window_size(64 * 1024)
                .initial_connection_window_size(64 * 1024)
        })
        .connect()
        .await
        .unwrap()
}

/// Attaches over the browser's path (server-streaming Attach) on its own
/// connection, with the native guest's message window and acks (a client
/// on Rust's h2 needs them: see `rendezvous_proto::flow`); returns the
/// client (for unary calls), Attached and the event reader.
async fn attach(
    server: &TestServer,
    request: AttachRequest,
) -> Result<(GuestServiceClient<Channel>, Attached, Transcript), tonic::Status> {
    let mut client = GuestServiceClient::new(own_channel(server).await);
    let request = AttachRequest {
        window_messages: rendezvous_proto::flow::GUEST_WINDOW_MESSAGES,
        ..request
    };
    let stream = client.attach(request).await?.into_inner();
    let mut events = Transcript::new(stream);
    let Some(Event::Attached(attached)) = events.next().await else {
        panic!("expected Attached first");
    };
    let events = events.acking(client.clone(), &attached);
    Ok((client, attached, events))
}

async fn send(
    client: &mut GuestServiceClient<Channel>,
    attached: &Attached,
    seq: u64,
    text: &[u8],
) -> Result<(), tonic::Status> {
    client
        .send_input(SendInputRequest {
            guest_id: attached.guest_id.clone(),
            guest_token: attached.guest_token.clone(),
            seq,
            data: text.to_vec().into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

/// Checks that two guests got the same bytes; on failure, shows where they
/// part.
fn assert_same_bytes(got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(40)..(at + 40).min(b.len())]).into_owned()
    };
    panic!(
        "guests' bytes differ at offset {at} (lengths {} and {}): {:?} vs {:?}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    );
}

/// Checks that `text` holds blocks 1..=n, each the lines i*10000 ..
/// i*10000+9999 then `BLOCK-i-END`, in order, as printed through a PTY
/// (CRLF line ends).
fn assert_blocks(text: &str, n: u32) {
    let ready = "READY-2\r\n";
    let start = text.find(ready).expect("the ready line") + ready.len();
    let mut lines = text[start..].split("\r\n");
    for block in 1..=n {
        for number in block * 10_000..block * 10_000 + 10_000 {
            assert_eq!(lines.next(), Some(number.to_string().as_str()));
        }
        assert_eq!(lines.next(), Some(format!("BLOCK-{block}-END").as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_guests_get_every_byte_while_three_are_paused() {
    // A small retained output makes the paused guests fall out of it.
    let config = ServerConfig {
        relay: RelayConfig {
            retained_output_bytes: 256 * 1024,
            ..RelayConfig::default()
        },
        ..ServerConfig::default()
    };
    let server = TestServer::with_config(config).await;
    let host = TestHost::start(&server, "fanout").await;
    let (mut opener_client, opener, opener_events) =
        attach(&server, host.attach_request("")).await.unwrap();
    let mut guests = vec![opener_events];
    for _ in 1..20 {
        let (_client, _, events) = attach(&server, host.attach_request(&opener.session_id))
            .await
            .unwrap();
        guests.push(events);
    }
    let paused: Vec<Transcript> = guests.drain(17..).collect();

    // The shell prints one block of 10,000 numbered lines (about 70 KB)
    // per line it reads; the test sends the next line once every reading
    // guest has the block. If the paused guests held the host back, no
    // reader would get the next block.
    const BLOCKS: u32 = 12;
    let command = format!(
        "stty -echo; echo READY-$((1+1)); for i in $(seq 1 {BLOCKS}); do IFS= read -r x; \
         seq $((i*10000)) $((i*10000+9999)); echo BLOCK-$i-END; done; stty echo; echo END-$((40+2))\n"
    );
    send(&mut opener_client, &opener, 0, command.as_bytes())
        .await
        .unwrap();
    // Echo is off from here on: the newlines the test sends stay out of
    // the output.
    guests[0].until("READY-2\r\n").await;
    for block in 1..=BLOCKS {
        send(&mut opener_client, &opener, u64::from(block), b"\n")
            .await
            .unwrap();
        let marker = format!("BLOCK-{block}-END");
        futures::future::join_all(guests.iter_mut().map(|g| g.until(&marker))).await;
    }
    futures::future::join_all(guests.iter_mut().map(|g| g.until("END-42"))).await;

    // Every reader got every byte: the same bytes for all, every line.
    let mut reference: Option<Vec<u8>> = None;
    for guest in &guests {
        assert_eq!(guest.lagged, 0, "a reading guest never lags");
        assert_blocks(&guest.text(), BLOCKS);
        let marker = b"END-42";
        let end = guest
            .output
            .windows(marker.len())
            .rposition(|w| w == marker)
            .unwrap()
            + marker.len()
            - 1;
        match &reference {
            None => reference = Some(guest.output[..=end].to_vec()),
            Some(r) => assert_same_bytes(&guest.output[..=end], r),
        }
    }
    let reference = reference.unwrap();

    // The paused guests resume: what they already had is exact, then one
    // Lagged, then exact bytes again from the new offset to the end.
    let mut lags = 0;
    for mut guest in paused {
        let mut got: HashMap<u64, Vec<u8>> = HashMap::new();
        let mut lagged = 0;
        while !String::from_utf8_lossy(&guest.output).contains("END-42") {
            match guest.next().await.expect("stream continues") {
                Event::Output(out) => {
                    got.insert(out.offset, out.data.to_vec());
                }
                Event::Lagged(l) => {
                    assert!(l.missed_bytes > 0);
                    lagged += 1;
                }
                _ => {}
            }
        }
        assert_eq!(lagged, 1, "one Lagged event for one gap");
        lags += 1;
        for (at, data) in got {
            let at = at as usize;
            let end = (at + data.len()).min(reference.len());
            assert_eq!(
                &data[..end - at],
                &reference[at..end],
                "bytes at offset {at}"
            );
        }
    }
    // Each lag is counted once in the metrics.
    assert_eq!(server.registry().metrics().guest_lags.get(), lags);
}

/// A child process of the `rendezvous` binary, killed on drop.
struct Child {
    child: tokio::process::Child,
}

impl Child {
    fn spawn(args: &[&str]) -> (Self, tokio::process::ChildStdout) {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rendezvous"))
            .args(args)
            .env("PS1", "$ ")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start rendezvous");
        let stdout = child.stdout.take().unwrap();
        (Self { child }, stdout)
    }

    /// The process's resident set size, in KiB.
    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

/// Reads stdout lines until one contains `needle`; returns that line.
async fn line_with(stdout: &mut tokio::process::ChildStdout, needle: &str) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    loop {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("line in time")
            .unwrap()
            .expect("process printed the line before exiting");
        if line.contains(needle) {
            return line;
        }
    }
}

/// The bound on server RSS and on host RSS under a flood to a paused guest,
/// in KiB (as documented in the README).
const FLOOD_RSS_BOUND_KIB: u64 = 64 * 1024;

#[tokio::test]
async fn a_flood_to_a_paused_guest_is_held_at_the_host() {
    let (server, mut server_out) = Child::spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let url = line_with(&mut server_out, "listening on").await;
    let url = url.rsplit(' ').next().unwrap().to_owned();
    let secret = "flood-secret-0123456789abcdef";
    let (host, mut host_out) = Child::spawn(&[
        "host",
        "--server",
        &url,
        "--task-id",
        "flood",
        "--secret",
        secret,
        "--",
        "bash",
        "--norc",
        "--noprofile",
    ]);
    line_with(&mut host_out, "/t/flood").await;

    let mut client = GuestServiceClient::new(
        rendezvous_proto::endpoint::endpoint(&url)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let request = AttachRequest {
        task_id: "flood".into(),
        secret: secret.into(),
        cols: 80,
        rows: 24,
        ..Default::default()
    };
    let stream = client.attach(request).await.unwrap().into_inner();
    let mut events = Transcript::new(stream);
    let Some(Event::Attached(guest)) = events.next().await else {
        panic!("expected Attached");
    };
    send(&mut client, &guest, 0, b"yes flood-flood-flood\n")
        .await
        .unwrap();

    // The guest reads nothing more. The session's output must stop growing:
    // the server stops reading the host's Data stream, HTTP/2 flow control
    // stops the host's PTY reader, and `yes` blocks on its full PTY.
    let offset = |mut client: GuestServiceClient<Channel>| async move {
        client
            .list_sessions(ListSessionsRequest {
                task_id: "flood".into(),
                secret: secret.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .hosts[0]
            .sessions[0]
            .output_offset
    };
    let held = held_output(|| offset(client.clone())).await;
    // Backpressure window (256 KiB) + retained output (1 MiB) + HTTP/2
    // windows and the host's bounded queue: far below what `yes` writes in
    // a second when nothing holds it.
    assert!(
        held < 8 * 1024 * 1024,
        "{held} bytes went out while the guest was paused"
    );
    let (server_rss, host_rss) = (server.rss_kib(), host.rss_kib());
    eprintln!("flood held at {held} bytes; server RSS {server_rss} KiB, host RSS {host_rss} KiB");
    assert!(
        server_rss < FLOOD_RSS_BOUND_KIB,
        "server RSS {server_rss} KiB"
    );
    assert!(host_rss < FLOOD_RSS_BOUND_KIB, "host RSS {host_rss} KiB");

    // When the guest reads again, the flood goes on: it was paused, not
    // stopped.
    while events.next_offset.unwrap_or(0) < held + 1024 * 1024 {
        events.next().await;
    }
}

#[tokio::test]
async fn read_only_guests_are_refused_by_every_path() {
    let server = TestServer::start().await;
    let read_only_secret = "read-only-secret-0123456789".to_string();
    let host = {
        let h = rendezvous_host::Host::builder(&server.url)
            .task_id("ro")
            .command("bash", ["--norc", "--noprofile"])
            .env("PS1", "$ ")
            .read_only_secret(read_only_secret.clone())
            .build()
            .unwrap();
        TestHost::from_host(h).await
    };
    let (mut rw_client, rw, mut rw_events) =
        attach(&server, host.attach_request("")).await.unwrap();

    let mut as_reader = host.attach_request(&rw.session_id);
    as_reader.secret = read_only_secret.clone();
    // No new shell for read-only guests.
    let mut new_shell = as_reader.clone();
    new_shell.session_id.clear();
    let refused = attach(&server, new_shell).await.err().unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied);

    let (mut ro_client, ro, _ro_events) = attach(&server, as_reader.clone()).await.unwrap();
    assert_eq!(ro.role(), Role::ReadOnly);
    let input = send(&mut ro_client, &ro, 0, b"echo RO-LEAK-$((1+1))\n").await;
    assert_eq!(input.unwrap_err().code(), Code::PermissionDenied);
    let resize = ro_client
        .resize(ResizeRequest {
            guest_id: ro.guest_id.clone(),
            guest_token: ro.guest_token.clone(),
            cols: 20,
            rows: 5,
            ..Default::default()
        })
        .await;
    assert_eq!(resize.unwrap_err().code(), Code::PermissionDenied);

    // The bidi path: the stream ends with PERMISSION_DENIED.
    let mut term = TermGuest::open(&server, as_reader).await.unwrap();
    term.type_text("echo RO-LEAK-$((2+2))\n").await;
    let status = loop {
        match tokio::time::timeout(DEADLINE, term.events.next_result()).await {
            Ok(Err(status)) => break status,
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("stream ended without an error"),
            Err(_) => panic!("no error in time"),
        }
    };
    assert_eq!(status.code(), Code::PermissionDenied);

    // Nothing reached the PTY: the writer's later command comes back, and
    // no read-only input came before it.
    send(&mut rw_client, &rw, 0, b"echo RW-$((3+3))\n")
        .await
        .unwrap();
    let text = rw_events.until("RW-6").await;
    assert!(!text.contains("RO-LEAK"), "{text:?}");
}

#[tokio::test]
async fn three_guests_give_one_reply_to_a_terminal_query() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "query").await;
    let (mut a_client, a, mut a_events) = attach(&server, host.attach_request("")).await.unwrap();
    let (mut b_client, b, mut b_events) = attach(&server, host.attach_request(&a.session_id))
        .await
        .unwrap();
    let (mut c_client, c, mut c_events) = attach(&server, host.attach_request(&a.session_id))
        .await
        .unwrap();

    // The shell prints a DA query between two markers and reads its stdin
    // raw until an `x`, then counts the DA replies it read.
    let command = "stty -echo -icanon; printf 'Q\\033[cQ'; IFS= read -r -d x r; stty sane; \
                   echo \"REPLIES=$(grep -o '1;2c' <<<\"$r\" | wc -l)=\"\n";
    send(&mut a_client, &a, 0, command.as_bytes())
        .await
        .unwrap();
    // Each guest's terminal sees the query and answers, as xterm.js does.
    for events in [&mut a_events, &mut b_events, &mut c_events] {
        events.until("Q\x1b[cQ").await;
    }
    let reply = b"\x1b[?1;2c";
    send(&mut b_client, &b, 0, reply).await.unwrap();
    send(&mut c_client, &c, 0, reply).await.unwrap();
    send(&mut a_client, &a, 1, reply).await.unwrap();
    // Every reply has been applied or dropped: now end the read.
    send(&mut a_client, &a, 2, b"x").await.unwrap();
    let text = a_events.until("=\r\n").await;
    assert!(text.contains("REPLIES=1="), "{text:?}");
}

#[tokio::test]
async fn the_smallest_read_write_guest_sets_the_pty_size() {
    let server = TestServer::start().await;
    let read_only_secret = "read-only-secret-abcdefghij".to_string();
    let host = TestHost::from_host(
        rendezvous_host::Host::builder(&server.url)
            .task_id("sizes")
            .command("bash", ["--norc", "--noprofile"])
            .env("PS1", "$ ")
            .read_only_secret(read_only_secret.clone())
            .build()
            .unwrap(),
    )
    .await;
    let mut big = host.attach_request("");
    (big.cols, big.rows) = (120, 30);
    let (a_client, a, a_events) = attach(&server, big).await.unwrap();
    let mut tall = host.attach_request(&a.session_id);
    (tall.cols, tall.rows) = (90, 50);
    let (b_client, _b, b_events) = attach(&server, tall).await.unwrap();
    let mut tiny_reader = host.attach_request(&a.session_id);
    (tiny_reader.cols, tiny_reader.rows, tiny_reader.secret) = (10, 5, read_only_secret);
    let (_c_client, _c, _c_events) = attach(&server, tiny_reader).await.unwrap();

    // Smallest cols and smallest rows among read-write guests; the
    // read-only guest does not shrink it. Sizes are clamped to 1..=1000.
    let mut a_guest = Asker {
        client: a_client,
        attached: a,
        events: a_events,
        seq: 0,
    };
    a_guest.until_size("30 90").await;
    // The joiner is told the effective size on its stream.
    let mut b_events = b_events;
    while b_events.sizes.last().map(|s| (s.cols, s.rows)) != Some((90, 30)) {
        b_events.next().await.expect("the stream goes on");
    }
    let a = a_guest.attached.clone();
    a_guest
        .client
        .resize(ResizeRequest {
            guest_id: a.guest_id.clone(),
            guest_token: a.guest_token.clone(),
            cols: 5000,
            rows: 5000,
            ..Default::default()
        })
        .await
        .unwrap();
    a_guest.until_size("50 90").await;
    // The guest that leaves no longer counts.
    drop(b_events);
    drop(b_client);
    a_guest.until_size("1000 1000").await;
}

/// A read-write guest that asks the shell for `stty size`.
struct Asker {
    client: GuestServiceClient<Channel>,
    attached: Attached,
    events: Transcript,
    seq: u64,
}

impl Asker {
    /// Asks until `stty size` prints `want` ("ROWS COLS"). A resize reaches
    /// the PTY beside input, not in line with it (as SIGWINCH does), so the
    /// first answer may be the old size.
    async fn until_size(&mut self, want: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let tag = format!("s{}=", self.seq);
            let command = format!("echo {tag}$(stty size)=\n");
            send(
                &mut self.client,
                &self.attached,
                self.seq,
                command.as_bytes(),
            )
            .await
            .unwrap();
            self.seq += 1;
            // Output lines start after a CR (bash resets bracketed paste
            // first); the echoed command has a space there.
            let line_start = format!("\r{tag}");
            let text = self
                .events
                .until_match(&line_start, |t| {
                    t.rsplit_once(&line_start)
                        .is_some_and(|(_, rest)| rest.contains('='))
                })
                .await;
            let answer = text.rsplit(&tag).next().unwrap();
            if answer.starts_with(&format!("{want}=")) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "size never became {want}: {text:?}"
            );
        }
    }
}

#[tokio::test]
async fn each_limit_gives_resource_exhausted_naming_it() {
    let config = ServerConfig {
        limits: Limits {
            hosts_per_task: 1,
            sessions_per_host: 1,
            guests_per_session: 2,
            input_bytes: 16,
            connections: 8,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let server = TestServer::with_config(config).await;
    let host = TestHost::start(&server, "limits").await;

    // Hosts per task.
    let mut raw_host = HostServiceClient::new(server.channel().await);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(HostControlRequest {
        message: Some(host_control_request::Message::Hello(
            rendezvous_proto::Hello {
                task_id: host.task_id.clone(),
                host_name: "second".into(),
                secret: host.secret.clone(),
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let err = raw_host
        .control(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("hosts per task is 1"),
        "{}",
        err.message()
    );

    // Sessions per host.
    let (mut client, first, mut first_events) =
        attach(&server, host.attach_request("")).await.unwrap();
    let err = attach(&server, host.attach_request(""))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("sessions per host is 1"),
        "{}",
        err.message()
    );

    // Guests per session.
    let _second = attach(&server, host.attach_request(&first.session_id))
        .await
        .unwrap();
    let err = attach(&server, host.attach_request(&first.session_id))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("guests per session is 2"),
        "{}",
        err.message()
    );

    // Bytes per input call.
    let err = send(&mut client, &first, 0, &[b'a'; 17]).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("bytes per input call is 16"),
        "{}",
        err.message()
    );

    // Connections: this test holds 4 (host control, host data, two
    // guests) and the listing below one more; fill the rest.
    let mut extra = Vec::new();
    let err = loop {
        assert!(extra.len() < 16, "the connection limit never applied");
        let mut c = GuestServiceClient::new(own_channel(&server).await);
        match c
            .list_sessions(ListSessionsRequest {
                task_id: host.task_id.clone(),
                secret: host.secret.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(_) => extra.push(c),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("connections is 8"),
        "{}",
        err.message()
    );

    // What already runs is not affected.
    send(&mut client, &first, 0, b"echo $((5*5))k\n")
        .await
        .unwrap();
    first_events.until("25k").await;
}

#[tokio::test]
async fn an_acknowledged_window_holds_a_flood_when_the_transport_reads_ahead() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "window").await;
    // A guest whose transport would take 8 MiB unasked, as a browser's
    // fetch over HTTP/1.1 does; only the acknowledged window holds it.
    let channel = rendezvous_proto::endpoint::endpoint(&server.url)
        .unwrap()
        .map_endpoint(|e| {
            e.initial_stream_window_size(8 * 1024 * 1024)
                .initial_connection_window_size(8 * 1024 * 1024)
        })
        .connect()
        .await
        .unwrap();
    let mut client = GuestServiceClient::new(channel);
    const WINDOW: u64 = 64 * 1024;
    let mut request = host.attach_request("");
    request.window_bytes = WINDOW as u32;
    let mut events = Transcript::new(client.attach(request).await.unwrap().into_inner());
    let Some(Event::Attached(guest)) = events.next().await else {
        panic!("expected Attached");
    };
    send(&mut client, &guest, 0, b"yes window-window-window\n")
        .await
        .unwrap();

    let received = |events: &Transcript| events.next_offset.unwrap_or(0);
    let mut acked = 0;
    while received(&events) < WINDOW {
        events.next().await;
        assert!(received(&events) <= acked + WINDOW, "sent past the window");
    }
    // The session's output stops growing although the guest's transport has
    // room for megabytes more.
    let held =
        held_output(|| async { host.list_hosts(&server).await[0].sessions[0].output_offset }).await;
    assert!(
        held < 4 * 1024 * 1024,
        "{held} bytes of output while the guest acked none"
    );
    assert_eq!(received(&events), WINDOW);

    // Acks open the window, step by step.
    for _ in 0..4 {
        acked = received(&events);
        client
            .ack(rendezvous_proto::AckRequest {
                guest_id: guest.guest_id.clone(),
                guest_token: guest.guest_token.clone(),
                offset: acked,
                messages: 0,
                ..Default::default()
            })
            .await
            .unwrap();
        while received(&events) < acked + WINDOW {
            events.next().await;
            assert!(received(&events) <= acked + WINDOW, "sent past the window");
        }
    }
}

/// Input stays exactly once across a reconnect: the guest that resumes
/// keeps its ID, token and input sequence, whether its old stream is still
/// open (the server has not noticed the cut) or already closed.
#[tokio::test]
async fn a_resumed_guest_applies_a_retried_input_once() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "resume-input").await;
    let (mut client, first, mut first_events) =
        attach(&server, host.attach_request("")).await.unwrap();
    assert!(!first.resumed);
    send(&mut client, &first, 0, b"echo ONE-$((40+1))\r")
        .await
        .unwrap();
    first_events.until("ONE-41\r\n").await;

    // The old stream is still open: resuming takes the guest over, and the
    // old stream ends with ABORTED.
    let resume = |offset| AttachRequest {
        resume_offset: Some(offset),
        resume_guest_id: first.guest_id.clone(),
        resume_guest_token: first.guest_token.clone(),
        ..host.attach_request(&first.session_id)
    };
    let offset = first_events.next_offset.unwrap();
    let (mut client2, second, mut second_events) = attach(&server, resume(offset)).await.unwrap();
    assert!(second.resumed);
    assert_eq!(second.next_input_seq, 1, "seq 0 was applied");
    assert_eq!(second.guest_id, first.guest_id);
    assert_eq!(second.guest_token, first.guest_token);
    let ended = loop {
        match tokio::time::timeout(DEADLINE, first_events.next_result())
            .await
            .expect("the old stream ends")
        {
            Ok(Some(_)) => {}
            other => break other,
        }
    };
    assert_eq!(ended.map(|_| ()).unwrap_err().code(), Code::Aborted);

    // The request in flight at the cut is retried with the same seq: it is
    // not applied again. The next one is.
    send(&mut client2, &second, 0, b"echo ONE-$((40+1))\r")
        .await
        .unwrap();
    send(&mut client2, &second, 1, b"echo TWO-$((40+2))\r")
        .await
        .unwrap();
    let text = second_events.until("TWO-42\r\n").await;
    assert!(
        !text.contains("ONE-41"),
        "the retried input ran again: {text:?}"
    );

    // After the stream has closed, the guest resumes too.
    let offset = second_events.next_offset.unwrap();
    drop(second_events);
    drop(client2);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while host.list_hosts(&server).await[0].sessions[0].guest_count > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never saw the stream close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut client3, third, mut third_events) = attach(&server, resume(offset)).await.unwrap();
    assert!(third.resumed);
    assert_eq!(third.next_input_seq, 2);
    send(&mut client3, &third, 1, b"echo TWO-$((40+2))\r")
        .await
        .unwrap();
    send(&mut client3, &third, 2, b"echo THREE-$((40+3))\r")
        .await
        .unwrap();
    let text = third_events.until("THREE-43\r\n").await;
    assert!(
        !text.contains("TWO-42"),
        "the retried input ran again: {text:?}"
    );

    // A wrong token gets a new guest, whose input starts at seq 0.
    let stranger = AttachRequest {
        resume_guest_token: "not-the-token-at-all-xx".into(),
        ..resume(offset)
    };
    let (_c, fourth, _e) = attach(&server, stranger).await.unwrap();
    assert!(!fourth.resumed);
    assert_ne!(fourth.guest_id, first.guest_id);
}
