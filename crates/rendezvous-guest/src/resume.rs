//! A native guest that survives broken connections: it reconnects with
//! backoff, resumes as the same guest from the last output offset, and
//! resends the input the server had not applied, so that no output byte is
//! lost or repeated and each input is applied exactly once (what the web
//! guest does, over the bidi `Terminal` call).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use rendezvous_proto::backoff::Backoff;
use rendezvous_proto::v1::Attached;
use tokio::time::Instant;
use tonic::Code;

use crate::client::{
    AttachOptions, Client, MAX_INPUT_CHUNK_BYTES, ResumeGuest, Terminal, TerminalWriter,
};
use crate::error::GuestError;
use crate::events::{Event, EventReader};

/// Most input bytes kept for resending after a reconnect (1 MiB): the
/// latest input sent, of which the server may not have applied the tail,
/// and a server that crashed may have taken but not passed on even more.
/// Older input is forgotten first.
pub const MAX_RESEND_BYTES: usize = 1024 * 1024;

/// Most input requests kept for resending after a reconnect (4096): one per
/// keystroke when typed, so this covers far more than can be in flight.
pub const MAX_RESEND_REQUESTS: usize = 4096;

/// What [`ResumingTerminal::next_update`] reports.
#[derive(Debug)]
pub enum Update {
    /// An event of the session, in order across reconnects.
    Event(Event),
    /// The connection broke; the next attempt is in `retry_in`. Input sent
    /// meanwhile is kept and goes out after the reconnect.
    Disconnected {
        /// Why, in words for the user.
        reason: GuestError,
        /// When the next attempt starts.
        retry_in: Duration,
    },
    /// Attached again. Output continues where it stopped.
    Reconnected {
        /// The same guest carries on, its input exactly once: the server
        /// says where its input goes on (from its record of the guest, or,
        /// after a restart, from where the host has this guest's input),
        /// and what is kept here from there on is sent again. False when
        /// the server cannot check the guest's token (another state key):
        /// this is a new guest, and input sent just before the break may
        /// have been lost.
        resumed: bool,
        /// Input requests that were lost: sent before the break, not
        /// applied, and no longer kept for resending (over
        /// [`MAX_RESEND_BYTES`] or [`MAX_RESEND_REQUESTS`]). Always 0 when
        /// not `resumed`.
        lost_inputs: u64,
    },
}

/// The input a reconnect may have to resend: the latest requests sent,
/// numbered `first_seq..next_seq` (the `Terminal` call numbers input
/// requests from `Attached.next_input_seq`, one each), whether or not the
/// server has acknowledged them: a server that crashes may have taken
/// input it never passed on, and the restarted one asks for it again.
#[derive(Debug, Default)]
struct ResendLog {
    /// Sequence number of `requests[0]`.
    first_seq: u64,
    /// Sequence number the next request gets.
    next_seq: u64,
    requests: VecDeque<Bytes>,
    bytes: usize,
}

impl ResendLog {
    /// Numbers and keeps `data`, forgetting the oldest past the bounds.
    fn push(&mut self, data: Bytes) {
        self.bytes += data.len();
        self.requests.push_back(data);
        self.next_seq += 1;
        while self.requests.len() > MAX_RESEND_REQUESTS || self.bytes > MAX_RESEND_BYTES {
            if let Some(old) = self.requests.pop_front() {
                self.bytes -= old.len();
                self.first_seq += 1;
            }
        }
    }

    /// The server goes on at `next_input_seq`: returns the requests to send
    /// again (those from it on), and how many it needs that are no longer
    /// kept. What is before it stays kept, for a later restart.
    fn resume_at(&mut self, next_input_seq: u64) -> (VecDeque<Bytes>, u64) {
        if next_input_seq >= self.next_seq {
            if next_input_seq > self.next_seq {
                // Ahead of all sent (the server's bookkeeping, not ours):
                // number on from there, with nothing kept.
                self.requests.clear();
                self.bytes = 0;
                self.first_seq = next_input_seq;
                self.next_seq = next_input_seq;
            }
            return (VecDeque::new(), 0);
        }
        if next_input_seq < self.first_seq {
            // Some it needs are no longer kept: what is kept goes again,
            // numbered by the server from its next one on.
            let lost = self.first_seq - next_input_seq;
            self.first_seq = next_input_seq;
            self.next_seq = next_input_seq + self.requests.len() as u64;
            return (self.requests.clone(), lost);
        }
        // `next_input_seq` is within the log: it fits in usize.
        let skip = usize::try_from(next_input_seq - self.first_seq).unwrap_or(usize::MAX);
        (self.requests.iter().skip(skip).cloned().collect(), 0)
    }

    /// Starts numbering again at 0 (a new guest), forgetting all.
    fn restart(&mut self) {
        *self = Self::default();
    }
}

/// An attach attempt in progress, kept across cancelled polls.
type Attempt = Pin<Box<dyn Future<Output = Result<Terminal, GuestError>> + Send>>;

enum State {
    Connected {
        writer: TerminalWriter,
        /// Boxed: the other states are small.
        events: Box<EventReader>,
    },
    /// Waiting to try again.
    Waiting(Instant),
    Connecting(Attempt),
    /// The session ended or an error ended this guest.
    Ended,
}

/// A guest on the bidi `Terminal` call that reconnects by itself.
///
/// When the connection breaks (unreachable, reset, keepalive expired, the
/// stream ended without `Exit`, or the server answered `UNAVAILABLE`),
/// [`next_update`](Self::next_update) reports
/// [`Update::Disconnected`] and tries again after 0.5 s, doubling up to
/// 30 s, with jitter (as the host and the web guest). It attaches to the
/// same session as the same guest ([`AttachOptions::resume_guest`]) from
/// the offset after the last output byte received, so output goes on
/// byte-exact, and resends the input the server reports it has not applied
/// (`Attached.next_input_seq`), so each input is applied once. Errors that
/// another attempt cannot fix (a wrong secret, a session that has gone, a
/// guest taken over by another attach) end it.
pub struct ResumingTerminal {
    client: Client,
    /// The next attach: same session, this guest, the current offset and size.
    options: AttachOptions,
    attached: Attached,
    state: State,
    resend: ResendLog,
    /// Input not yet handed to the current call, oldest first: to resend
    /// after a reconnect, or waiting for room in the call's queue. Empty
    /// while disconnected.
    unsent: VecDeque<Bytes>,
    backoff: Backoff,
    /// Offset after the last output byte received; `None` before any.
    next_offset: Option<u64>,
}

impl ResumingTerminal {
    /// Attaches as [`Client::terminal`] does.
    ///
    /// # Errors
    /// As for [`Client::terminal`]: the first attach is not retried.
    pub async fn attach(client: Client, options: AttachOptions) -> Result<Self, GuestError> {
        let terminal = client.terminal(options.clone()).await?;
        let attached = terminal.attached().clone();
        let mut resend = ResendLog::default();
        resend.resume_at(attached.next_input_seq);
        let (writer, events) = terminal.split();
        let events = Box::new(events);
        let mut me = Self {
            client,
            options,
            attached,
            state: State::Connected { writer, events },
            resend,
            unsent: VecDeque::new(),
            backoff: Backoff::new(),
            next_offset: None,
        };
        me.remember_guest();
        Ok(me)
    }

    /// The latest `Attached`: session ID, guest ID, role, host.
    pub fn attached(&self) -> &Attached {
        &self.attached
    }

    /// Whether the terminal is attached right now.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// Sends input, in requests of at most [`MAX_INPUT_CHUNK_BYTES`]. While
    /// disconnected it is kept (up to [`MAX_RESEND_BYTES`]) and goes out
    /// after the reconnect, in order.
    ///
    /// # Errors
    /// [`GuestError::Closed`] after the session has ended.
    pub async fn send_input(&mut self, data: impl Into<Bytes>) -> Result<(), GuestError> {
        if matches!(self.state, State::Ended) {
            return Err(GuestError::Closed);
        }
        let connected = self.is_connected();
        let mut data = data.into();
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_INPUT_CHUNK_BYTES));
            self.resend.push(chunk.clone());
            // While disconnected the (bounded) log alone keeps it: a
            // reconnect sends what the log holds.
            if connected {
                self.unsent.push_back(chunk);
            }
        }
        if let State::Connected { writer, .. } = &self.state {
            // A closed call shows up as a break in `next_update`; what it
            // did not take is resent from the log then.
            let _ = send_unsent(writer, &mut self.unsent).await;
        }
        Ok(())
    }

    /// Reports a new terminal size in character cells; a reconnect attaches
    /// with the latest one.
    pub async fn resize(&mut self, cols: u32, rows: u32) {
        self.options.cols = cols;
        self.options.rows = rows;
        if let State::Connected { writer, .. } = &self.state {
            let _ = writer.resize(cols, rows).await;
        }
    }

    /// The next event or change of connection; `None` after the session's
    /// `Exit` has been returned.
    ///
    /// Cancel-safe: a dropped call loses no event, and an attach attempt in
    /// progress carries on at the next call.
    ///
    /// # Errors
    /// An error another attempt cannot fix: [`GuestError::Denied`],
    /// [`GuestError::SessionEnded`] (the session or its host went while
    /// disconnected, so its exit status was missed),
    /// [`GuestError::Protocol`], `ABORTED` (another attach took this guest
    /// over), and so on. The terminal has ended then.
    pub async fn next_update(&mut self) -> Result<Option<Update>, GuestError> {
        loop {
            match &mut self.state {
                State::Ended => return Ok(None),
                State::Connected { writer, events } => {
                    let next = tokio::select! {
                        next = events.next_event() => next,
                        // Input kept while the connection was down goes
                        // out as soon as the call takes it.
                        Ok(()) = send_unsent(writer, &mut self.unsent),
                            if !self.unsent.is_empty() => continue,
                    };
                    let broke = match next {
                        Ok(Some(event)) => {
                            match &event {
                                Event::Output(_) | Event::Lagged(_) => {
                                    self.next_offset = events.next_offset();
                                }
                                Event::Exit(_) => self.state = State::Ended,
                                Event::Size(_) | Event::HostState(_) => {}
                            }
                            return Ok(Some(Update::Event(event)));
                        }
                        Ok(None) => GuestError::Unavailable(
                            "the server ended the stream before the session ended".to_owned(),
                        ),
                        Err(error) if is_transient(&error) => error,
                        Err(error) => {
                            self.state = State::Ended;
                            return Err(error);
                        }
                    };
                    return Ok(Some(self.disconnected(broke)));
                }
                State::Waiting(at) => {
                    tokio::time::sleep_until(*at).await;
                    let client = self.client.clone();
                    let mut options = self.options.clone();
                    options.resume_offset = self.next_offset;
                    // A server that lost this guest's record (it restarted)
                    // goes on where its host has this guest's input, or at
                    // the oldest request kept here if that is later; a
                    // server that kept the record says itself. Either way
                    // `Attached.next_input_seq` says what to resend.
                    if let Some(guest) = &mut options.resume_guest {
                        guest.input_seq = Some(self.resend.first_seq);
                    }
                    self.state =
                        State::Connecting(Box::pin(async move { client.terminal(options).await }));
                }
                State::Connecting(attempt) => match attempt.as_mut().await {
                    Ok(terminal) => return Ok(Some(self.reconnected(terminal))),
                    Err(error) if is_transient(&error) => {
                        return Ok(Some(self.disconnected(error)));
                    }
                    Err(error) => {
                        self.state = State::Ended;
                        // The session (or its host) went while this guest
                        // was away: its exit status was missed.
                        return Err(match error {
                            GuestError::NotFound => GuestError::SessionEnded,
                            other => other,
                        });
                    }
                },
            }
        }
    }

    fn disconnected(&mut self, reason: GuestError) -> Update {
        let retry_in = self.backoff.next_delay();
        self.state = State::Waiting(Instant::now() + retry_in);
        // The reconnect resends from the log.
        self.unsent.clear();
        Update::Disconnected { reason, retry_in }
    }

    /// Takes over a new call; returns at once (no `.await`), so a completed
    /// attempt is never polled again.
    fn reconnected(&mut self, terminal: Terminal) -> Update {
        self.backoff.reset();
        self.attached = terminal.attached().clone();
        let resumed = self.attached.resumed;
        // A new guest cannot say what the old one applied: what may be lost
        // is told by `resumed`, not counted.
        // Resend what the server has not applied (nothing, for a new guest:
        // it cannot say what the old one applied).
        let (unsent, lost_inputs) = if resumed {
            self.resend.resume_at(self.attached.next_input_seq)
        } else {
            self.resend.restart();
            (VecDeque::new(), 0)
        };
        self.unsent = unsent;
        self.remember_guest();
        let (writer, events) = terminal.split();
        self.state = State::Connected {
            writer,
            events: Box::new(events),
        };
        Update::Reconnected {
            resumed,
            lost_inputs,
        }
    }

    /// Later attaches join this session as this guest.
    fn remember_guest(&mut self) {
        self.options.session_id = Some(self.attached.session_id.clone());
        self.options.resume_guest = Some(ResumeGuest::of(&self.attached));
    }
}

impl std::fmt::Debug for ResumingTerminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumingTerminal")
            .field("session_id", &self.attached.session_id)
            .field("guest_id", &self.attached.guest_id)
            .field("connected", &self.is_connected())
            .field("next_offset", &self.next_offset)
            .finish_non_exhaustive()
    }
}

/// Hands `unsent` to the call, oldest first. Cancel-safe: a chunk leaves
/// `unsent` only once the call has taken it.
async fn send_unsent(
    writer: &TerminalWriter,
    unsent: &mut VecDeque<Bytes>,
) -> Result<(), GuestError> {
    while let Some(chunk) = unsent.front() {
        writer.send_input(chunk.clone()).await?;
        unsent.pop_front();
    }
    Ok(())
}

/// Whether another attempt may succeed: the connection broke or could not
/// be made, or the server (or a proxy) said it is unavailable for now.
fn is_transient(error: &GuestError) -> bool {
    match error {
        GuestError::Unreachable { .. } | GuestError::Unavailable(_) | GuestError::Closed => true,
        GuestError::Other { code, .. } => matches!(
            code,
            Code::Unknown | Code::Internal | Code::Cancelled | Code::DeadlineExceeded
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy as _;

    #[test]
    fn the_resend_log_resends_what_the_server_lacks_and_keeps_the_rest() {
        let mut log = ResendLog::default();
        for text in ["a", "b", "c"] {
            log.push(Bytes::from(text));
        }
        assert_eq!(
            log.resume_at(1),
            (VecDeque::from([Bytes::from("b"), Bytes::from("c")]), 0)
        );
        // "a" is kept: a server that crashes may not have passed it on.
        assert_eq!(log.requests, ["a", "b", "c"]);
        assert_eq!((log.first_seq, log.next_seq), (0, 3));
        log.push(Bytes::from("d"));
        assert_eq!(log.resume_at(4), (VecDeque::new(), 0));
        // A restarted server goes on where its host has the input.
        assert_eq!(log.resume_at(2).0, ["c", "d"]);
        // One ahead of all sent: numbering goes on from there.
        assert_eq!(log.resume_at(9), (VecDeque::new(), 0));
        assert_eq!((log.first_seq, log.next_seq, log.bytes), (9, 9, 0));
        log.push(Bytes::from("e"));
        log.restart();
        assert_eq!((log.next_seq, log.bytes), (0, 0));
        assert!(log.requests.is_empty());
    }

    #[test]
    fn the_resend_log_is_bounded_and_counts_what_it_forgot() {
        let mut log = ResendLog::default();
        for _ in 0..MAX_RESEND_REQUESTS + 10 {
            log.push(Bytes::from_static(b"x"));
        }
        assert_eq!(log.requests.len(), MAX_RESEND_REQUESTS);
        assert_eq!(log.first_seq, 10);
        let (resend, lost) = log.resume_at(4);
        assert_eq!((resend.len(), lost), (MAX_RESEND_REQUESTS, 6));
        assert_eq!(
            (log.first_seq, log.next_seq),
            (4, 4 + MAX_RESEND_REQUESTS as u64)
        );
        let mut log = ResendLog::default();
        log.push(Bytes::from(vec![0; MAX_RESEND_BYTES]));
        log.push(Bytes::from_static(b"y"));
        assert_eq!(log.requests, ["y"]);
        assert_eq!(log.bytes, 1);
    }

    proptest::proptest! {
        /// Against a model of every request sent: after any pushes and
        /// reconnects, the log resends exactly the requests from the
        /// server's next seq on that it still holds (the newest, within
        /// its bounds), numbered from that seq, and counts the ones it no
        /// longer holds.
        #[test]
        fn the_resend_log_resends_what_the_server_lacks(
            steps in proptest::collection::vec(
                proptest::prop_oneof![
                    (1usize..300_000).prop_map(Some),
                    proptest::strategy::Just(None),
                ],
                1..80,
            ),
            behind in proptest::collection::vec(0u64..12, 80),
        ) {
            let mut log = ResendLog::default();
            // Every request the log numbered, by seq: its length.
            let mut sent: Vec<(u64, usize)> = Vec::new();
            for (i, step) in steps.into_iter().enumerate() {
                match step {
                    Some(len) => {
                        log.push(Bytes::from(vec![(i % 251) as u8; len]));
                        sent.push((log.next_seq - 1, len));
                    }
                    None => {
                        // The server applied all but the last few.
                        let next = log.next_seq.saturating_sub(behind[i]);
                        // What the log keeps: the newest within its bounds.
                        let mut held = 0usize;
                        let mut kept = Vec::new();
                        for (count, &(seq, len)) in sent.iter().rev().enumerate() {
                            if count == MAX_RESEND_REQUESTS || held + len > MAX_RESEND_BYTES {
                                break;
                            }
                            held += len;
                            kept.push((seq, len));
                        }
                        kept.reverse();
                        let want: Vec<usize> =
                            kept.iter().filter(|&&(seq, _)| seq >= next).map(|&(_, len)| len).collect();
                        let missing = log.next_seq - next;
                        let (resend, lost) = log.resume_at(next);
                        let got: Vec<usize> = resend.iter().map(Bytes::len).collect();
                        proptest::prop_assert_eq!(&got, &want);
                        proptest::prop_assert_eq!(lost, missing - want.len() as u64);
                        // Everything kept stays kept.
                        let all: Vec<usize> = log.requests.iter().map(Bytes::len).collect();
                        let kept_lens: Vec<usize> = kept.iter().map(|&(_, len)| len).collect();
                        proptest::prop_assert_eq!(&all, &kept_lens);
                        proptest::prop_assert_eq!(log.next_seq - log.first_seq, kept.len() as u64);
                        // The kept requests are numbered again when some
                        // the server needs were no longer kept.
                        let first = if lost > 0 { next } else { kept.first().map_or(next, |&(seq, _)| seq) };
                        proptest::prop_assert_eq!(log.first_seq, first);
                        sent = kept
                            .iter()
                            .enumerate()
                            .map(|(k, &(_, len))| (log.first_seq + k as u64, len))
                            .collect();
                    }
                }
            }
        }
    }
}
