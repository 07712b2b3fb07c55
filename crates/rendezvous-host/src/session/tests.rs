//! A session over channels (the test plays the server), on a real PTY
//! running bash; and `read_ready` against a reader like a flooded PTY.

use std::time::Duration;

use bytes::Bytes;
use rendezvous_proto::{
    ExitStatus, HostDataRequest, HostDataResponse, WindowSize, exit_status, host_data_request,
    host_data_response,
};
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;

use super::live::{self, LiveSession};
use super::stream::{self, StreamEnd};
use super::*;
use crate::pty::{self, CommandSpec, PtySize};

/// Upper bound for anything a test waits for.
const TEST_DEADLINE: Duration = Duration::from_secs(20);

type Inbound = mpsc::Sender<Result<HostDataResponse, tonic::Status>>;

/// A session and its current Data stream over channels.
struct Harness {
    live: LiveSession,
    /// What the stream sends up.
    up: mpsc::Receiver<HostDataRequest>,
    /// What the test sends down; dropping it ends the stream.
    down: Option<Inbound>,
    /// Fires the close signal.
    close: Option<oneshot::Sender<CloseReason>>,
    /// The session's task.
    task: tokio::task::JoinHandle<()>,
    /// The stream's relay.
    relay: tokio::task::JoinHandle<StreamEnd>,
    /// Output the "server" took, from offset 0.
    output: Vec<u8>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.relay.abort();
        self.task.abort();
    }
}

fn open_stream(
    live: &LiveSession,
    at: u64,
) -> (
    mpsc::Receiver<HostDataRequest>,
    Inbound,
    tokio::task::JoinHandle<StreamEnd>,
) {
    let (up_tx, up) = mpsc::channel(DATA_QUEUE_MESSAGES);
    let (down, down_rx) = mpsc::channel(64);
    // The server's first word: where its output ends.
    down.try_send(Ok(HostDataResponse {
        message: Some(host_data_response::Message::OutputAck(at)),
        input_origin: None,
    }))
    .unwrap();
    let live = live.clone();
    let relay = tokio::spawn(async move {
        let guests = crate::guests::GuestsTx(tokio::sync::watch::Sender::new(Default::default()));
        stream::relay("s1", &live, up_tx, ReceiverStream::new(down_rx), &guests).await
    });
    (up, down, relay)
}

impl Harness {
    fn start() -> Self {
        let spec = CommandSpec::new("bash".into(), vec!["--norc".into(), "--noprofile".into()]);
        let size = PtySize::from_wire(80, 24);
        let process = pty::spawn(&spec, size).unwrap();
        let (live, close, task) = live::start("s1".into(), String::new(), process, size, 1 << 20);
        let task = tokio::spawn(task);
        let (up, down, relay) = open_stream(&live, 0);
        Self {
            live,
            up,
            down: Some(down),
            close: Some(close),
            task,
            relay,
            output: Vec::new(),
        }
    }

    /// Breaks the stream and opens a new one, as a reconnect does; the
    /// "server" has what it took.
    async fn reconnect(&mut self) {
        if let Some(down) = self.down.take() {
            let _ = down
                .send(Err(tonic::Status::unavailable("connection lost")))
                .await;
        }
        let end = timeout(TEST_DEADLINE, &mut self.relay)
            .await
            .expect("relay did not return")
            .unwrap();
        assert_eq!(end, StreamEnd::Broken);
        self.live.log.send_modify(|log| log.disconnected());
        let (up, down, relay) = open_stream(&self.live, self.output.len() as u64);
        self.up = up;
        self.down = Some(down);
        self.relay = relay;
    }

    async fn send(&self, message: host_data_response::Message) {
        let down = self.down.as_ref().unwrap();
        down.send(Ok(HostDataResponse {
            message: Some(message),
            input_origin: None,
        }))
        .await
        .unwrap();
    }

    /// Input from guest `guest_id`, up to its `next_seq`.
    async fn input_from(&self, guest_id: &str, next_seq: u64, text: &str) {
        let down = self.down.as_ref().unwrap();
        down.send(Ok(HostDataResponse {
            message: Some(host_data_response::Message::Input(Bytes::from(
                text.to_owned(),
            ))),
            input_origin: Some(rendezvous_proto::GuestInputSeq {
                guest_id: guest_id.into(),
                next_seq,
            }),
        }))
        .await
        .unwrap();
    }

    async fn input(&self, text: &str) {
        self.send(host_data_response::Message::Input(Bytes::from(
            text.to_owned(),
        )))
        .await;
    }

    /// Keeps output the stream sent, and acknowledges it as the server
    /// does once its session has taken it.
    async fn took(&mut self, data: &[u8]) {
        self.output.extend_from_slice(data);
        let offset = self.output.len() as u64;
        if let Some(down) = &self.down {
            // The relay may have ended meanwhile.
            let _ = down
                .send(Ok(HostDataResponse {
                    message: Some(host_data_response::Message::OutputAck(offset)),
                    input_origin: None,
                }))
                .await;
        }
    }

    /// Collects Output until it contains `needle`.
    async fn output_until(&mut self, needle: &str) {
        let needle_bytes = needle.as_bytes();
        let found = timeout(TEST_DEADLINE, async {
            let mut from = 0;
            while !self.output[from..]
                .windows(needle_bytes.len())
                .any(|w| w == needle_bytes)
            {
                from = self.output.len().saturating_sub(needle_bytes.len());
                match self.up.recv().await.and_then(|m| m.message) {
                    Some(host_data_request::Message::Output(data)) => {
                        self.took(&data).await;
                    }
                    Some(host_data_request::Message::InputAck(_)) => {}
                    other => panic!("expected output, got {other:?}"),
                }
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "no {needle:?} in {:?}",
            String::from_utf8_lossy(&self.output)
        );
    }

    /// Collects Output until the Exit, which must come last.
    async fn exit(&mut self) -> ExitStatus {
        let exit = timeout(TEST_DEADLINE, async {
            loop {
                match self.up.recv().await.and_then(|m| m.message) {
                    Some(host_data_request::Message::Output(data)) => {
                        self.took(&data).await;
                    }
                    Some(host_data_request::Message::InputAck(_)) => {}
                    Some(host_data_request::Message::Exit(exit)) => return exit,
                    other => panic!("expected output or exit, got {other:?}"),
                }
            }
        })
        .await
        .expect("no exit status");
        // The server ends the stream; the relay then returns, having
        // sent nothing after the Exit.
        self.down = None;
        let end = timeout(TEST_DEADLINE, &mut self.relay)
            .await
            .expect("relay did not return")
            .unwrap();
        assert_eq!(end, StreamEnd::Finished);
        assert!(self.up.recv().await.is_none());
        exit
    }
}

#[tokio::test]
async fn output_then_exit_code_in_order() {
    let mut h = Harness::start();
    h.input("echo hi-$((1+1))\n").await;
    h.output_until("hi-2").await;
    // Output printed just before exiting arrives before the Exit.
    h.input("echo bye-$((2+2)); exit 3\n").await;
    let exit = h.exit().await;
    assert_eq!(exit.status, Some(exit_status::Status::Code(3)));
    assert_eq!(exit.message, "");
    assert!(String::from_utf8_lossy(&h.output).contains("bye-4"));
}

#[tokio::test]
async fn exit_is_sent_and_leftovers_killed_when_a_background_job_holds_the_pty() {
    let mut h = Harness::start();
    h.input("sleep 1000 & echo \"pid=$!.\"; exit 4\n").await;
    let exit = h.exit().await;
    assert_eq!(exit.status, Some(exit_status::Status::Code(4)));
    let output = String::from_utf8_lossy(&h.output).into_owned();
    let pid = output
        .split("pid=")
        .skip(1)
        .find_map(|rest| rest.split('.').next()?.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no pid in {output:?}"));
    timeout(TEST_DEADLINE, async {
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z')))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("background job {pid} survived"));
}

#[tokio::test]
async fn resize_reaches_the_process() {
    let mut h = Harness::start();
    h.send(host_data_response::Message::Resize(WindowSize {
        cols: 123,
        rows: 45,
    }))
    .await;
    h.input("stty size\n").await;
    h.output_until("45 123").await;
    // Out-of-range sizes are clamped, zero means the default.
    h.send(host_data_response::Message::Resize(WindowSize {
        cols: 0,
        rows: 5000,
    }))
    .await;
    h.input("stty size\n").await;
    h.output_until("1000 80").await;
}

#[tokio::test]
async fn close_kills_the_process_and_reports_why() {
    let mut h = Harness::start();
    h.input("echo started; sleep 1000\n").await;
    h.output_until("started\r\n").await;
    h.close
        .take()
        .unwrap()
        .send(CloseReason::ClosedByServer)
        .unwrap();
    let exit = h.exit().await;
    // SIGHUP, or SIGKILL when the shell was too busy (forking) to die of
    // SIGHUP within the grace period.
    assert!(
        matches!(exit.status, Some(exit_status::Status::Signal(1 | 9))),
        "{exit:?}"
    );
    assert_eq!(exit.message, "session closed by the server");
}

#[tokio::test]
async fn a_broken_stream_leaves_the_session_running_and_the_next_one_resumes_exactly() {
    let mut h = Harness::start();
    h.input("stty -echo; echo started\n").await;
    h.output_until("started\r\n").await;
    // Output that runs while no stream serves the session.
    h.input("sleep 0.3; seq 1 20000; echo done-$((1+1))\n")
        .await;
    h.reconnect().await;
    assert!(
        !h.task.is_finished(),
        "the shell survives the broken stream"
    );
    h.output_until("done-2").await;
    let text = String::from_utf8_lossy(&h.output).into_owned();
    let numbers: Vec<&str> = text
        .split("\r\n")
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let expected: Vec<String> = (1..=20000).map(|n| n.to_string()).collect();
    assert_eq!(
        numbers, expected,
        "no gap and no duplicate across the break"
    );
    // Input after the reconnect reaches the same shell, once.
    h.input("echo again-$((2+3))\n").await;
    h.output_until("again-5").await;
}

#[tokio::test]
async fn the_reader_pauses_when_the_kept_output_is_unconfirmed() {
    let mut h = Harness::start();
    h.input("head -c 3000000 /dev/zero | tr '\\0' x; echo; echo done-$((1+1))\n")
        .await;
    // Nobody acknowledges: the log stops at its bound, with the process
    // blocked on its writes.
    timeout(TEST_DEADLINE, async {
        while h.live.log.borrow().end() < 1 << 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the log never filled");
    let end = h.live.log.borrow().end();
    assert!(end < (1 << 20) + READ_CHUNK_BYTES as u64, "{end}");
    assert!(!h.task.is_finished());
    // Acknowledging lets everything through.
    h.output_until("done-2").await;
}

/// A reader like a PTY under a flood: at most `per_read` bytes a read,
/// and `Pending` once the bytes made ready so far are taken.
struct PtyLike {
    data: Vec<u8>,
    taken: usize,
    ready: usize,
    per_read: usize,
}

impl AsyncRead for PtyLike {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let end = self.ready.min(self.data.len());
        if self.taken == end && end < self.data.len() {
            return std::task::Poll::Pending;
        }
        let n = (end - self.taken).min(self.per_read).min(buf.remaining());
        let start = self.taken;
        buf.put_slice(&self.data[start..start + n]);
        self.taken += n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[test]
fn a_flood_goes_up_in_messages_larger_than_one_pty_read() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut pty = PtyLike {
        data: data.clone(),
        taken: 4096,
        ready: data.len(),
        per_read: 4096,
    };
    // The first 4 KiB came from the blocking read; what is ready joins it.
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    buf[..4096].copy_from_slice(&data[..4096]);
    let n = 4096 + read_ready(&mut pty, &mut buf[4096..]);
    assert_eq!(n, READ_CHUNK_BYTES);
    assert_eq!(buf, data[..READ_CHUNK_BYTES]);
}

#[test]
fn a_lone_write_goes_up_at_once() {
    let mut pty = PtyLike {
        data: vec![b'x'; 10_000],
        taken: 0,
        ready: 3,
        per_read: 4096,
    };
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    // What is ready, and no wait for more.
    assert_eq!(read_ready(&mut pty, &mut buf), 3);
    assert_eq!(read_ready(&mut pty, &mut buf), 0);
    // The end of output stops it too.
    let mut ended = PtyLike {
        data: vec![b'y'; 5],
        taken: 0,
        ready: 5,
        per_read: 4096,
    };
    assert_eq!(read_ready(&mut ended, &mut buf), 5);
    assert_eq!(read_ready(&mut ended, &mut buf), 0);
}

/// The host keeps where each guest's input stands, across streams, for the
/// next server: `ResumeSession.guest_inputs`.
#[tokio::test]
async fn the_host_keeps_each_guests_input_seq_for_a_resume() {
    let mut h = Harness::start();
    h.input_from("g", 3, "echo one-$((1+0))\n").await;
    h.input_from("k", 1, "echo two-$((1+1))\n").await;
    h.output_until("two-2").await;
    h.reconnect().await;
    h.input_from("g", 4, "echo three-$((1+2))\n").await;
    h.output_until("three-3").await;
    let mut seqs: Vec<_> = h
        .live
        .guest_inputs()
        .into_iter()
        .map(|s| (s.guest_id, s.next_seq))
        .collect();
    seqs.sort();
    assert_eq!(seqs, [("g".to_owned(), 4), ("k".to_owned(), 1)]);
}
