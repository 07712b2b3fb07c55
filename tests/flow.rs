//! A paused reader never loses its connection. h2 (under tonic and hyper)
//! closes a connection that holds too many small DATA frames unread
//! (GOAWAY `ENHANCE_YOUR_CALM` "too_many_data_frames"); these tests leave
//! readers paused while a real host on a real PTY writes one byte at a
//! time, through the real server and the native guest client, and check
//! that every connection survives and every byte arrives once the reader
//! reads again. See `rendezvous_proto::flow` for the credit that holds it.

use rendezvous_guest::{AttachOptions, Client, Event, EventReader, Secret, TaskId, TerminalWriter};
use rendezvous_proto::{AckRequest, AttachRequest, SendInputRequest, guest_event};
use rendezvous_testkit::{DEADLINE, TestHost, TestServer, held_output};

/// Bytes of bulk output that pause a session whose guest has stopped
/// acknowledging a 64 KiB window.
const BULK: usize = 330_000;

/// How many one-byte writes the trickle makes.
const WRITES: usize = 20_000;

/// Prints [`WRITES`] bytes `x`, one write each, 0.5 ms apart, so that each
/// reaches the host as a PTY read of its own (and so as an Output message
/// and a DATA frame of its own); then `END-42`.
fn trickle() -> String {
    format!(
        "perl -e '$|=1; for (1..{WRITES}) {{ print \"x\"; select(undef,undef,undef,0.0005) }} print \"\\nEND-\", 6*7, \"\\n\"'\n"
    )
}

fn options(host: &TestHost, session_id: Option<&str>) -> AttachOptions {
    let mut options = AttachOptions::new(
        TaskId::new(&host.task_id).unwrap(),
        Secret::new(&host.secret).unwrap(),
    );
    options.session_id = session_id.map(str::to_owned);
    options
}

/// One guest's stream and all the output it has read.
struct Reader {
    events: EventReader,
    output: Vec<u8>,
}

impl Reader {
    fn new(events: EventReader) -> Self {
        Self {
            events,
            output: Vec::new(),
        }
    }

    /// Reads until the output holds `marker`. Any lag, end or error fails.
    async fn until(&mut self, marker: &str) {
        let marker = marker.as_bytes();
        let read = async {
            // Only the new bytes (and a marker's length before them) are
            // searched, so a long output costs linear time.
            let mut from = 0;
            while !self.output[from..]
                .windows(marker.len())
                .any(|w| w == marker)
            {
                from = self.output.len().saturating_sub(marker.len());
                match self.events.next_event().await.expect("the stream goes on") {
                    Some(Event::Output(out)) => self.output.extend_from_slice(&out.data),
                    Some(Event::Lagged(l)) => panic!("lagged by {} bytes", l.missed_bytes),
                    Some(Event::Size(_) | Event::HostState(_)) => {}
                    Some(Event::Exit(exit)) => panic!("the session ended: {exit:?}"),
                    None => panic!("the stream ended"),
                }
            }
        };
        tokio::time::timeout(DEADLINE * 3, read)
            .await
            .unwrap_or_else(|_| panic!("no {:?} in time", String::from_utf8_lossy(marker)));
    }

    /// How many trickled bytes arrived between READY and END-42.
    fn trickled(&self) -> usize {
        let text = String::from_utf8_lossy(&self.output);
        let start = text.find("READY\r\n").expect("the ready line") + "READY\r\n".len();
        let end = text[start..].find("END-42").expect("the end marker") + start;
        text[start..end].bytes().filter(|b| *b == b'x').count()
    }
}

/// Opens a shell with echo off and reads it up to READY.
async fn shell(client: &Client, host: &TestHost) -> (TerminalWriter, Reader, String) {
    let terminal = client.terminal(options(host, None)).await.unwrap();
    let session_id = terminal.attached().session_id.clone();
    let (writer, events) = terminal.split();
    writer
        .send_input("stty -echo; echo READ\"Y\"\n")
        .await
        .unwrap();
    let mut reader = Reader::new(events);
    reader.until("READY\r\n").await;
    (writer, reader, session_id)
}

/// The session's output offset, as ListSessions reports it.
async fn output_offset(server: &TestServer, host: &TestHost) -> u64 {
    let hosts = host.list_hosts(server).await;
    let host = hosts.first().expect("the host is still connected");
    host.sessions
        .first()
        .expect("its session is alive")
        .output_offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_stops_reading_keeps_its_connection_through_one_byte_writes() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "flow-guest").await;
    let client = Client::connect(&server.url).await.unwrap();
    let (writer, mut reader, _) = shell(&client, &host).await;
    // The guest stops reading while the host writes 20,000 single bytes:
    // each would be a DATA frame of its own, unread on the guest's
    // connection.
    writer.send_input(trickle()).await.unwrap();
    let total = held_output(|| output_offset(&server, &host)).await;
    assert!(total > WRITES as u64, "the trickle ran to its end");
    reader.until("END-42").await;
    assert_eq!(reader.trickled(), WRITES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_session_keeps_its_hosts_connection_through_one_byte_writes() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "flow-host").await;
    // A browser-like guest with a 64 KiB acknowledged window that stops
    // acknowledging, as a background tab does: 330 KB of bulk output put
    // it just over 256 KiB behind, which pauses the session while the
    // host's Data stream still has HTTP/2 window to spare. Then the host
    // writes 20,000 single bytes, which a paused server must not leave
    // unread. The server refuses a host that sends past its output credit,
    // so this also fails if the host stops keeping to it.
    let mut client = server.guest_client().await;
    let request = AttachRequest {
        window_bytes: 64 * 1024,
        ..host.attach_request("")
    };
    let mut events =
        rendezvous_testkit::Transcript::new(client.attach(request).await.unwrap().into_inner());
    let Some(guest_event::Event::Attached(attached)) = events.next().await else {
        panic!("expected Attached first");
    };
    let input = |seq: u64, text: String| SendInputRequest {
        guest_id: attached.guest_id.clone(),
        guest_token: attached.guest_token.clone(),
        seq,
        data: text.into(),
        ..Default::default()
    };
    client
        .send_input(input(0, "stty -echo; echo READ\"Y\"\n".to_owned()))
        .await
        .unwrap();
    events.until("READY\r\n").await;
    client
        .send_input(input(
            1,
            format!("head -c {BULK} /dev/zero | tr '\\0' y; {}", trickle()),
        ))
        .await
        .unwrap();
    let held = held_output(|| output_offset(&server, &host)).await;
    assert!(
        held < (BULK + WRITES) as u64,
        "the session was not paused: {held} bytes went out"
    );
    // The metrics say so.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while server.registry().connected().paused_sessions != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rendezvous_paused_sessions never showed the paused session"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The host is still connected and its session alive.
    output_offset(&server, &host).await;
    // The guest acknowledges again as it reads: everything arrives.
    let read = async {
        let mut from = 0;
        while !events.output[from..].windows(6).any(|w| w == b"END-42") {
            from = events.output.len().saturating_sub(6);
            events.next().await.expect("the stream goes on");
            client
                .ack(AckRequest {
                    guest_id: attached.guest_id.clone(),
                    guest_token: attached.guest_token.clone(),
                    offset: events.next_offset.unwrap_or(0),
                    messages: 0,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    };
    tokio::time::timeout(DEADLINE * 3, read)
        .await
        .expect("END-42 in time");
    assert_eq!(events.lagged, 0);
    assert_eq!(server.registry().connected().paused_sessions, 0);
    let text = events.text();
    let after_ready = &text[text.find("READY\r\n").unwrap()..];
    assert_eq!(after_ready.bytes().filter(|b| *b == b'y').count(), BULK);
    assert_eq!(after_ready.bytes().filter(|b| *b == b'x').count(), WRITES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_sharing_a_connection_survive_some_of_them_pausing() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "flow-shared").await;
    // One client: every guest below shares its HTTP/2 connection.
    let client = Client::connect(&server.url).await.unwrap();
    let (writer, opener, session_id) = shell(&client, &host).await;
    let mut readers = vec![opener];
    for _ in 0..7 {
        let joined = client
            .terminal(options(&host, Some(&session_id)))
            .await
            .unwrap();
        let (_, events) = joined.split();
        let mut reader = Reader::new(events);
        // A joiner replays the retained output, READY included.
        reader.until("READY\r\n").await;
        readers.push(reader);
    }
    let mut paused: Vec<Reader> = readers.drain(5..).collect();
    writer.send_input(trickle()).await.unwrap();
    // Five guests read everything while three do not read at all.
    futures::future::join_all(readers.iter_mut().map(|r| r.until("END-42"))).await;
    for reader in &readers {
        assert_eq!(reader.trickled(), WRITES);
    }
    // The paused ones, still connected, get every byte when they read.
    for reader in &mut paused {
        reader.until("END-42").await;
        assert_eq!(reader.trickled(), WRITES);
    }
}
