//! The client against the real thing: a `rendezvous-server` on a free
//! loopback port and a `rendezvous-host` running bash in PTYs, both in this
//! process. Covers both attach paths, error mapping over the wire, and the
//! offset bookkeeping across a real `Lagged`. The pure offset checks a real
//! server never trips (gaps, overlaps) are unit tests in `events.rs`.

use std::time::Duration;

use rendezvous_server::ServerConfig;
use rendezvous_server::session::RelayConfig;
use sha2::{Digest, Sha256};
use tokio::time::timeout;

use rendezvous_guest::*;
use rendezvous_testkit::{TestHost, TestServer};

/// How long any one wait in a test may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// The task every test host registers under (each test has its own server).
const TASK: &str = "build-42";

/// The host's secret, as the guest client takes it.
fn secret(host: &TestHost) -> Secret {
    Secret::new(host.secret.as_str()).unwrap()
}

/// A secret of the same shape as the host's, but wrong.
fn wrong_secret(host: &TestHost) -> String {
    let mut wrong: Vec<char> = host.secret.chars().collect();
    let last = wrong.last_mut().expect("a non-empty secret");
    *last = if *last == 'A' { 'B' } else { 'A' };
    wrong.into_iter().collect()
}

/// Options for a new shell of `cols` x `rows` on the default host.
fn options(host: &TestHost, cols: u32, rows: u32) -> AttachOptions {
    let mut options = AttachOptions::new(task(), secret(host));
    options.cols = cols;
    options.rows = rows;
    options
}

fn task() -> TaskId {
    TaskId::new(TASK).unwrap()
}

/// The output of `future`, or a failed test after [`DEADLINE`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {DEADLINE:?} waiting for {what}"))
}

/// A guest's events, with what they carried so far.
struct Watch {
    events: EventReader,
    /// Every output byte received, in order.
    output: Vec<u8>,
    /// Every `Size` event, in order.
    sizes: Vec<WindowSize>,
    /// Every `Lagged` event's missed bytes, in order.
    lags: Vec<u64>,
    /// Offset of the first output received.
    first_offset: Option<u64>,
    /// Index in `output` just past the last match of [`Watch::until`].
    matched: usize,
}

impl Watch {
    fn new(events: EventReader) -> Self {
        Self {
            events,
            output: Vec::new(),
            sizes: Vec::new(),
            lags: Vec::new(),
            first_offset: None,
            matched: 0,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// The next event (no deadline: callers wrap loops in [`within`]).
    async fn next(&mut self) -> Option<Event> {
        let event = self
            .events
            .next_event()
            .await
            .unwrap_or_else(|error| panic!("event stream failed: {error:?}"));
        match &event {
            Some(Event::Output(output)) => {
                self.first_offset.get_or_insert(output.offset);
                self.output.extend_from_slice(&output.data);
            }
            Some(Event::Size(size)) => self.sizes.push(*size),
            Some(Event::Lagged(lagged)) => self.lags.push(lagged.missed_bytes),
            Some(Event::Exit(_) | Event::HostState(_)) | None => {}
        }
        event
    }

    /// Reads until the output after the previous match contains `needle`.
    async fn until(&mut self, needle: &str) {
        let bytes = needle.as_bytes();
        // Where the next search starts: bytes already searched are not
        // searched again.
        let mut from = self.matched;
        let found = timeout(DEADLINE, async {
            loop {
                if let Some(at) = self.output[from..]
                    .windows(bytes.len())
                    .position(|w| w == bytes)
                {
                    return Some(from + at + bytes.len());
                }
                from = from.max((self.output.len() + 1).saturating_sub(bytes.len()));
                match self.next().await {
                    Some(Event::Exit(_)) | None => return None,
                    Some(_) => {}
                }
            }
        })
        .await;
        let tail = self.output.len().saturating_sub(2000);
        let tail = String::from_utf8_lossy(&self.output[tail..]);
        match found {
            Ok(Some(end)) => self.matched = end,
            Ok(None) => panic!("the session ended before {needle:?}; output: {tail:?}"),
            Err(_) => panic!("no {needle:?} in the output after {DEADLINE:?}; output: {tail:?}"),
        }
    }

    /// Reads until a `Size` event of `cols` x `rows`.
    async fn until_size(&mut self, cols: u32, rows: u32) {
        let wanted = WindowSize { cols, rows };
        within(&format!("size {cols}x{rows}"), async {
            while self.sizes.last() != Some(&wanted) {
                match self.next().await {
                    Some(Event::Exit(status)) => panic!("session ended: {status:?}"),
                    None => panic!("stream ended"),
                    Some(_) => {}
                }
            }
        })
        .await;
    }

    /// Reads until `Exit`, and checks that the stream ends right after it.
    async fn until_exit(&mut self) -> ExitStatus {
        within("the exit status", async {
            loop {
                match self.next().await {
                    Some(Event::Exit(status)) => {
                        assert_eq!(self.next().await, None, "the stream ends after Exit");
                        return status;
                    }
                    Some(_) => {}
                    None => panic!("stream ended without Exit: {:?}", self.text()),
                }
            }
        })
        .await
    }
}

/// The SHA-256 of `data` as `sha256sum` prints it.
fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `len` printable bytes (a-z, no newline), the same on every run.
fn payload(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            b'a' + ((state >> 16) % 26) as u8
        })
        .collect()
}

#[tokio::test]
async fn terminal_relays_input_resizes_and_exit() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, TASK).await;
    let client = Client::connect(&server.url).await.unwrap();
    let terminal = within("attach", client.terminal(options(&host, 0, 0)))
        .await
        .unwrap();
    assert!(!terminal.attached().session_id.is_empty());
    assert_eq!(terminal.attached().role(), Role::ReadWrite);
    assert_eq!(terminal.attached().host_name, "default");

    let (writer, events) = terminal.split();
    let mut watch = Watch::new(events);
    // 0 x 0 asks for the server's default size.
    watch.until_size(80, 24).await;
    watch.until("$ ").await;

    // The echo of the command line shows `$((6*7))`, only bash prints 42.
    writer.send_input("echo hi-$((6*7))\r").await.unwrap();
    watch.until("hi-42").await;
    assert_eq!(watch.first_offset, Some(0));
    assert_eq!(watch.events.next_offset(), Some(watch.output.len() as u64));

    writer.resize(100, 30).await.unwrap();
    watch.until_size(100, 30).await;
    writer.send_input("stty size\r").await.unwrap();
    watch.until("30 100").await;

    writer.send_input("exit 3\r").await.unwrap();
    let status = watch.until_exit().await;
    assert_eq!(exit_code(&status), 3, "{status:?}");
}

#[tokio::test]
async fn wrong_secret_is_denied_and_never_echoed() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, TASK).await;
    let wrong = wrong_secret(&host);
    let client = Client::connect_lazy(&server.url).unwrap();
    let mut options = options(&host, 0, 0);
    options.secret = Secret::new(wrong.as_str()).unwrap();
    for error in [
        within("terminal", client.terminal(options.clone()))
            .await
            .unwrap_err(),
        within("attach", client.attach(options.clone()))
            .await
            .unwrap_err(),
        within(
            "list_sessions",
            client.list_sessions(&task(), &options.secret),
        )
        .await
        .unwrap_err(),
    ] {
        assert!(matches!(error, GuestError::Denied), "{error:?}");
        let text = format!("{error} {error:?}");
        assert!(!text.contains(&wrong), "{text}");
        assert!(!text.contains(&host.secret), "{text}");
    }
}

#[tokio::test]
async fn unknown_host_is_not_found() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, TASK).await;
    let client = Client::connect(&server.url).await.unwrap();
    let mut options = options(&host, 0, 0);
    options.host_name = Some(HostName::new("missing").unwrap());
    let error = within("terminal", client.terminal(options.clone()))
        .await
        .unwrap_err();
    assert!(matches!(error, GuestError::NotFound), "{error:?}");
    let error = within("attach", client.attach(options)).await.unwrap_err();
    assert!(matches!(error, GuestError::NotFound), "{error:?}");
}

#[tokio::test]
async fn unknown_session_is_not_found() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, TASK).await;
    let client = Client::connect(&server.url).await.unwrap();
    let mut options = options(&host, 0, 0);
    options.session_id = Some("no-such-session".to_owned());
    let error = within("terminal", client.terminal(options.clone()))
        .await
        .unwrap_err();
    assert!(matches!(error, GuestError::NotFound), "{error:?}");
    let error = within("attach", client.attach(options)).await.unwrap_err();
    assert!(matches!(error, GuestError::NotFound), "{error:?}");
}

#[tokio::test]
async fn list_sessions_shows_the_host_and_its_session() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, TASK).await;
    let client = Client::connect(&server.url).await.unwrap();

    let hosts = within(
        "list_sessions",
        client.list_sessions(&task(), &secret(&host)),
    )
    .await
    .unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0].host_name, "default");
    assert!(hosts[0].sessions.is_empty(), "{hosts:?}");

    let terminal = within("attach", client.terminal(options(&host, 100, 30)))
        .await
        .unwrap();
    let hosts = within(
        "list_sessions",
        client.list_sessions(&task(), &secret(&host)),
    )
    .await
    .unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0].host_name, "default");
    let [session] = &hosts[0].sessions[..] else {
        panic!("one session expected: {hosts:?}");
    };
    assert_eq!(session.session_id, terminal.attached().session_id);
    assert_eq!((session.cols, session.rows), (100, 30));
    assert_eq!(session.guest_count, 1);
}

#[tokio::test]
async fn attach_path_delivers_long_input_in_numbered_chunks() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, TASK).await;
    let client = Client::connect(&server.url).await.unwrap();
    let stream = within("attach", client.attach(options(&host, 200, 50)))
        .await
        .unwrap();
    let guest_id = stream.attached().guest_id.clone();
    assert!(!guest_id.is_empty());
    let (mut writer, events) = stream.split();
    let mut watch = Watch::new(events);
    watch.until("$ ").await;

    // Three chunks: two full ones and a short one.
    let data = payload(2 * MAX_INPUT_CHUNK_BYTES + 1000);
    // Raw mode, so that the tty passes the long line through as it is; bash
    // prints READY (not in the echo of `RE""ADY`) once it is in place.
    let command = format!(
        "stty raw -echo; echo RE\"\"ADY; head -c {} | sha256sum; stty sane\r",
        data.len()
    );
    assert_eq!(writer.next_seq(), 0);
    within("input", writer.send_input(command)).await.unwrap();
    assert_eq!(writer.next_seq(), 1);
    watch.until("READY").await;
    within("input", writer.send_input(data.clone()))
        .await
        .unwrap();
    assert_eq!(writer.next_seq(), 4);
    // A missing, repeated or reordered chunk would change the checksum (or
    // leave `head` waiting).
    watch.until(&sha256_hex(&data)).await;
    watch.until("$ ").await;

    within("resize", writer.resize(120, 40)).await.unwrap();
    watch.until_size(120, 40).await;
    within("input", writer.send_input("stty size\r"))
        .await
        .unwrap();
    watch.until("40 120").await;

    let error = within(
        "input",
        client.send_input(&guest_id, "bad-token", writer.next_seq(), "z"),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, GuestError::UnknownGuest), "{error:?}");
    let error = within("resize", client.resize(&guest_id, "bad-token", 80, 24))
        .await
        .unwrap_err();
    assert!(matches!(error, GuestError::UnknownGuest), "{error:?}");
}

#[tokio::test]
async fn a_late_joiner_from_offset_0_is_told_what_it_missed() {
    let config = ServerConfig {
        relay: RelayConfig {
            retained_output_bytes: 4096,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = TestServer::with_config(config).await;
    let host = TestHost::start(&server, TASK).await;
    let client = Client::connect(&server.url).await.unwrap();

    let first = within("attach", client.terminal(options(&host, 200, 50)))
        .await
        .unwrap();
    let session_id = first.attached().session_id.clone();
    let (writer, events) = first.split();
    let mut producer = Watch::new(events);
    producer.until("$ ").await;
    writer
        .send_input("head -c 100000 /dev/zero | tr '\\0' x; echo EN\"\"D\r")
        .await
        .unwrap();
    producer.until("xEND").await;
    let produced = producer.events.next_offset().unwrap();
    assert!(produced > 100_000, "{produced}");

    let mut options = options(&host, 200, 50);
    options.session_id = Some(session_id);
    options.resume_offset = Some(0);
    let late = within("join", client.terminal(options)).await.unwrap();
    let (late_writer, events) = late.split();
    let mut late = Watch::new(events);
    late.until("xEND").await;
    let [missed, ..] = late.lags[..] else {
        panic!("no Lagged for a late joiner from offset 0");
    };
    assert!(missed > 0);
    // Output resumes at the oldest retained byte, right after the lag.
    assert_eq!(late.first_offset, Some(missed));
    assert!(late.output.len() < 100_000, "{}", late.output.len());
    let skipped: u64 = late.lags.iter().sum();
    assert_eq!(
        late.events.next_offset(),
        Some(skipped + late.output.len() as u64)
    );

    // The bookkeeping carries on with live output.
    late_writer.send_input("echo af\"\"ter\r").await.unwrap();
    late.until("after").await;
    producer.until("after").await;
    assert_eq!(
        late.events.next_offset(),
        Some(late.lags.iter().sum::<u64>() + late.output.len() as u64)
    );
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    // Bind then drop, so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let error = within("connect", Client::connect(&url)).await.unwrap_err();
    assert!(matches!(error, GuestError::Unreachable { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot reach the server at {url}: ")),
        "{error}"
    );

    let client = Client::connect_lazy(&url).unwrap();
    let options = AttachOptions::new(task(), Secret::new("some-secret").unwrap());
    let error = within("terminal", client.terminal(options))
        .await
        .unwrap_err();
    assert!(matches!(error, GuestError::Unreachable { .. }), "{error:?}");
}

#[tokio::test]
async fn bad_urls_are_refused() {
    let error = Client::connect_lazy("ftp://example.com").unwrap_err();
    assert!(matches!(error, GuestError::InvalidUrl(_)), "{error:?}");
}
