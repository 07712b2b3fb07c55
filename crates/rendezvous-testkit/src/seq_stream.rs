//! A known output stream and the native guests that check it arrives
//! byte-exact: `seq 1 200000` between two markers (1 488 895 bytes as the
//! PTY writes it, with `\r\n`), typed by a guest with
//! [`STREAM_COMMAND`]; [`StreamGuest`] (the Terminal call) and
//! [`Seen`] (what a [`ResumingTerminal`] received, across its breaks)
//! keep every byte for [`assert_exact`].

use std::time::Duration;

use rendezvous_guest::{AttachOptions, Client, Event, ResumingTerminal, Terminal, Update};
use tokio::time::Instant;

use crate::DEADLINE;

/// What a guest types: the stream between two markers whose text is not
/// in the echoed command line.
pub const STREAM_COMMAND: &str = "echo BEGIN-$((1+1)); seq 1 200000; echo END-$((2+2))\r";
/// The marker before the stream, as the PTY writes it.
pub const BEGIN: &str = "BEGIN-2\r\n";
/// The marker after the stream, as the PTY writes it.
pub const END: &str = "END-4\r\n";

/// What `seq 1 200000` writes through a PTY.
pub fn expected_stream() -> Vec<u8> {
    (1..=200_000)
        .flat_map(|n| format!("{n}\r\n").into_bytes())
        .collect()
}

/// The bytes between [`BEGIN`] and [`END`] in `output`.
///
/// # Panics
/// When either marker is missing.
pub fn stream_in(output: &[u8]) -> &[u8] {
    let begin = find(output, BEGIN.as_bytes(), 0).expect("the begin marker") + BEGIN.len();
    let end = find(output, END.as_bytes(), begin).expect("the end marker");
    &output[begin..end]
}

fn find(output: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    output[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| from + at)
}

/// Fails unless `got` is the whole `seq` stream, saying where it differs.
///
/// # Panics
/// When it is not.
pub fn assert_exact(who: &str, got: &[u8]) {
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

/// A native guest on the bidi Terminal call, and what it received.
pub struct StreamGuest {
    /// The call.
    pub terminal: Terminal,
    /// Every output byte, in order.
    pub output: Vec<u8>,
    /// Where the next search for a needle starts.
    searched: usize,
    /// Bytes the server said this guest missed.
    pub lagged: u64,
}

impl StreamGuest {
    /// Attaches through `url` (a server's, a replica's or a proxy's) as
    /// `options` say, within [`DEADLINE`].
    ///
    /// # Panics
    /// When the attach fails or is late.
    pub async fn attach(url: &str, options: AttachOptions) -> Self {
        let attach = async {
            let client = Client::connect(url).await?;
            client.terminal(options).await
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

    /// The session it is attached to.
    pub fn session_id(&self) -> String {
        self.terminal.attached().session_id.clone()
    }

    /// Its guest ID.
    pub fn guest_id(&self) -> String {
        self.terminal.attached().guest_id.clone()
    }

    /// Types `text`.
    ///
    /// # Panics
    /// When the input is refused.
    pub async fn type_text(&self, text: &str) {
        self.terminal.send_input(text.to_owned()).await.unwrap();
    }

    /// Reads until the output after the last needle found contains
    /// `needle`, within [`DEADLINE`].
    pub async fn until(&mut self, needle: &str) {
        self.until_within(needle, DEADLINE).await;
    }

    /// [`StreamGuest::until`] within `limit`.
    ///
    /// # Panics
    /// When `needle` is not seen in time, the stream ends, or the session
    /// exits.
    pub async fn until_within(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        let needle = needle.as_bytes();
        loop {
            if let Some(at) = find(&self.output, needle, self.searched) {
                self.searched = at + needle.len();
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
    pub async fn answers(&mut self, marker: &str) {
        self.type_text(&format!("echo {marker}-$((40+2))\r")).await;
        self.until(&format!("{marker}-42\r\n")).await;
    }
}

/// What a [`ResumingTerminal`] received, and its breaks.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every output byte, in order.
    pub output: Vec<u8>,
    searched: usize,
    /// How many times it lost its stream.
    pub disconnects: usize,
    /// `(resumed, lost_inputs)` of each reconnect.
    pub reconnects: Vec<(bool, u64)>,
    /// Bytes the server said this guest missed.
    pub lagged: u64,
}

impl Seen {
    /// Takes updates until the output (after the last needle found)
    /// contains `needle`, within [`DEADLINE`].
    ///
    /// # Panics
    /// When it is not seen in time, an error ends the terminal, or the
    /// session exits.
    pub async fn until(&mut self, terminal: &mut ResumingTerminal, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        let needle = needle.as_bytes();
        loop {
            if let Some(at) = find(&self.output, needle, self.searched) {
                self.searched = at + needle.len();
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
