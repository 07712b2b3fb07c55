//! What a guest sees, read with one deadline per wait: a transcript of a
//! session's events with `until(marker)` and `until_exit()`, and a native
//! guest on the bidi Terminal call.

use rendezvous_proto::guest_service_client::GuestServiceClient;
use rendezvous_proto::{
    AttachRequest, Attached, ExitStatus, GuestEvent, TerminalRequest, WindowSize, guest_event,
    terminal_request,
};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::{DEADLINE, TestServer};

/// A native guest on the bidi Terminal stream.
pub struct TermGuest {
    /// The stream's first event.
    pub attached: Attached,
    input: mpsc::Sender<TerminalRequest>,
    /// What the session sent.
    pub events: Transcript,
}

/// Reads a guest's events and keeps the output seen so far, each wait
/// bounded by [`DEADLINE`].
pub struct Transcript {
    stream: tonic::Streaming<GuestEvent>,
    /// All output bytes, in order.
    pub output: Vec<u8>,
    /// Offset the next output must carry.
    pub next_offset: Option<u64>,
    /// Every size event, in order.
    pub sizes: Vec<WindowSize>,
    /// Bytes reported missed by Lagged events.
    pub lagged: u64,
    /// Every HostState event, in order (`reconnecting` of each).
    pub host_states: Vec<bool>,
    /// Acknowledges events as they are read, for a stream attached with a
    /// message window (`AttachRequest.window_messages`).
    acks: Option<Acks>,
}

/// How an [`Transcript`] acknowledges the events it reads: it counts them,
/// and a task sends each new count as an Ack call, so that the reader
/// never waits on a call's answer (whose DATA may need the very
/// connection window its unread events hold).
struct Acks {
    /// Events read after Attached.
    received: u64,
    /// The count the task acknowledges; the task ends when this drops.
    count: tokio::sync::watch::Sender<u64>,
}
impl Transcript {
    /// Reads `stream` (Attached first, as the server sends it).
    pub fn new(stream: tonic::Streaming<GuestEvent>) -> Self {
        Self {
            stream,
            output: Vec::new(),
            next_offset: None,
            sizes: Vec::new(),
            lagged: 0,
            host_states: Vec::new(),
            acks: None,
        }
    }

    /// Acknowledges every 8 events read (as the native guest does), by
    /// count only, so that a byte window is left to the test.
    pub fn acking(mut self, mut client: GuestServiceClient<Channel>, attached: &Attached) -> Self {
        let (count, mut counts) = tokio::sync::watch::channel(0u64);
        let (guest_id, guest_token) = (attached.guest_id.clone(), attached.guest_token.clone());
        tokio::spawn(async move {
            while counts.changed().await.is_ok() {
                let messages = *counts.borrow_and_update();
                let ack = rendezvous_proto::AckRequest {
                    guest_id: guest_id.clone(),
                    guest_token: guest_token.clone(),
                    offset: 0,
                    messages,
                    ..Default::default()
                };
                if client.ack(ack).await.is_err() {
                    return;
                }
            }
        });
        self.acks = Some(Acks { received: 0, count });
        self
    }

    /// The next event, with offsets checked: each output starts where the
    /// last one ended.
    pub async fn next(&mut self) -> Option<guest_event::Event> {
        tokio::time::timeout(DEADLINE, self.next_result())
            .await
            .expect("an event within the deadline")
            .expect("stream error")
    }

    /// The next event or the stream's error status.
    pub async fn next_result(&mut self) -> Result<Option<guest_event::Event>, tonic::Status> {
        let Some(event) = self.stream.message().await? else {
            return Ok(None);
        };
        let event = event.event.expect("event set");
        if let Some(acks) = &mut self.acks
            && !matches!(event, guest_event::Event::Attached(_))
        {
            acks.received += 1;
            if acks
                .received
                .is_multiple_of(rendezvous_proto::flow::GUEST_ACK_EVERY_MESSAGES)
            {
                acks.count.send_replace(acks.received);
            }
        }
        match &event {
            guest_event::Event::Output(out) => {
                if let Some(expected) = self.next_offset {
                    assert_eq!(out.offset, expected, "output offsets are contiguous");
                }
                self.next_offset = Some(out.offset + out.data.len() as u64);
                self.output.extend_from_slice(&out.data);
            }
            guest_event::Event::Size(size) => self.sizes.push(*size),
            guest_event::Event::HostState(state) => self.host_states.push(state.reconnecting),
            guest_event::Event::Lagged(lagged) => {
                self.lagged += lagged.missed_bytes;
                if let Some(next) = &mut self.next_offset {
                    *next += lagged.missed_bytes;
                }
            }
            _ => {}
        }
        Ok(Some(event))
    }

    /// The output so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// Reads until the output contains `needle`; returns the text so far.
    /// Scans only the bytes that are new since the last look, so that
    /// following a long stream costs linear time.
    pub async fn until(&mut self, needle: &str) -> String {
        let needle = needle.as_bytes();
        let mut scanned = 0usize;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let from = scanned.saturating_sub(needle.len());
            if self.output[from..]
                .windows(needle.len())
                .any(|w| w == needle)
            {
                return self.text();
            }
            scanned = self.output.len();
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {:?} in output: {:?}",
                String::from_utf8_lossy(needle),
                self.text()
            );
            match self.next().await {
                Some(guest_event::Event::Exit(status)) => panic!(
                    "session ended ({status:?}) before {:?}: {:?}",
                    String::from_utf8_lossy(needle),
                    self.text()
                ),
                Some(_) => {}
                None => panic!("stream ended before {:?}", String::from_utf8_lossy(needle)),
            }
        }
    }

    /// Reads until `done(text so far)`; `what` names the wait in failures.
    pub async fn until_match(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !done(&self.text()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what:?} in output: {:?}",
                self.text()
            );
            match self.next().await {
                Some(guest_event::Event::Exit(status)) => {
                    panic!(
                        "session ended ({status:?}) before {what:?}: {:?}",
                        self.text()
                    )
                }
                Some(_) => {}
                None => panic!("stream ended before {what:?}: {:?}", self.text()),
            }
        }
        self.text()
    }

    /// Reads until Exit; returns it and checks that the stream then ends.
    pub async fn until_exit(&mut self) -> ExitStatus {
        loop {
            match self.next().await {
                Some(guest_event::Event::Exit(status)) => {
                    assert!(self.next().await.is_none(), "the stream ends after Exit");
                    return status;
                }
                Some(_) => {}
                None => panic!("stream ended without Exit"),
            }
        }
    }
}

impl TermGuest {
    /// Attaches over the bidi Terminal call.
    ///
    /// # Errors
    /// The server's refusal.
    pub async fn open(server: &TestServer, request: AttachRequest) -> Result<Self, tonic::Status> {
        let mut client = server.guest_client().await;
        let (input, rx) = mpsc::channel(16);
        input
            .send(TerminalRequest {
                message: Some(terminal_request::Message::Attach(request)),
            })
            .await
            .unwrap();
        let stream = client
            .terminal(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut events = Transcript::new(stream);
        let attached = match events.next().await {
            Some(guest_event::Event::Attached(a)) => a,
            other => panic!("expected Attached first, got {other:?}"),
        };
        Ok(Self {
            attached,
            input,
            events,
        })
    }

    /// Sends `text` as one input request.
    pub async fn type_text(&self, text: &str) {
        self.input
            .send(TerminalRequest {
                message: Some(terminal_request::Message::Input(
                    text.as_bytes().to_vec().into(),
                )),
            })
            .await
            .expect("send input");
    }
}
