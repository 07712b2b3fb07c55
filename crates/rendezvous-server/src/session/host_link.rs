//! The session's side of its host: the Data stream that serves it now (at
//! most one), the input waiting for the host, and whether the host is
//! away and expected back.
//!
//! # Input across Data streams
//! Guests' input is numbered per session, from 0, in the order the session
//! took it. Each message stays in the queue until the host counts it as
//! written to its PTY (`input_ack`, counted over the session's life), so
//! that a Data stream that breaks loses nothing: the next one starts at
//! the count the host gives in its `DataOpen.input_applied`, and nothing
//! is written twice. The queue holds at most [`HOST_INPUT_QUEUE_MESSAGES`](super::HOST_INPUT_QUEUE_MESSAGES)
//! messages; a guest's input waits for room (see [`Session::send_input`]).

use std::collections::VecDeque;

use bytes::Bytes;
use rendezvous_proto::{
    GuestInputSeq, HostDataResponse, HostState, WindowSize, host_data_response,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Session, lock};

/// Input for the host, kept until the host has written it.
#[derive(Debug)]
pub(super) struct HostInputQueue {
    /// Messages the host has not acknowledged yet, oldest first, each with
    /// the guest it came from (`HostDataResponse.input_origin`); the front
    /// one has number `acked`. At most
    /// [`HOST_INPUT_QUEUE_MESSAGES`](super::HOST_INPUT_QUEUE_MESSAGES).
    unacked: VecDeque<(Bytes, GuestInputSeq, std::time::Instant)>,
    /// Messages the host has written to its PTY: the number of the front
    /// of `unacked`.
    acked: u64,
    /// One past the last message a Data stream has taken: later takes of
    /// earlier messages are resends.
    sent: u64,
}

impl HostInputQueue {
    /// A queue whose next message has number `first`: on a session
    /// restored after a server restart, what the host has written so far.
    pub(super) fn starting_at(first: u64) -> Self {
        Self {
            unacked: VecDeque::new(),
            acked: first,
            sent: first,
        }
    }

    /// Number one past the last message queued.
    pub(super) fn end(&self) -> u64 {
        self.acked + self.unacked.len() as u64
    }

    /// Queues `data` from `origin`, which reached the server at
    /// `received`.
    pub(super) fn push(
        &mut self,
        data: Bytes,
        origin: GuestInputSeq,
        received: std::time::Instant,
    ) {
        self.unacked.push_back((data, origin, received));
    }

    /// Drops what the host has written, up to `count` (clamped to what
    /// was queued); returns how many messages left the queue.
    fn ack(&mut self, count: u64) -> usize {
        let count = count.min(self.end());
        let mut freed = 0;
        while self.acked < count {
            self.unacked.pop_front();
            self.acked += 1;
            freed += 1;
        }
        freed
    }

    /// Message `number` and its origin, if it is queued, and, the first
    /// time it is taken, when it reached the server.
    fn take(&mut self, number: u64) -> Option<(Bytes, GuestInputSeq, Option<std::time::Instant>)> {
        let index = usize::try_from(number.checked_sub(self.acked)?).ok()?;
        let (data, origin, received) = self.unacked.get(index)?.clone();
        let first = number >= self.sent;
        if first {
            self.sent = number + 1;
        }
        Some((data, origin, first.then_some(received)))
    }
}

/// What a host Data stream takes from [`Session::attach_host`].
#[derive(Debug)]
pub struct HostLink {
    /// Reads the session's input in order.
    pub input: HostInputReader,
    /// The PTY size; changes go to the host as resizes.
    pub size: watch::Receiver<WindowSize>,
    /// Which stream this is, for [`Session::detach_host`] and
    /// [`Session::push_host_output`].
    pub stream: u64,
    /// Cancelled when another Data stream replaces this one, or the
    /// session ends: this stream is done.
    pub replaced: CancellationToken,
}

/// One Data stream's reader of the session's input queue.
#[derive(Debug)]
pub struct HostInputReader {
    /// Number of the next message to send the host.
    next: u64,
    /// Bumped when input is queued or acknowledged.
    changed: watch::Receiver<u64>,
}

impl HostInputReader {
    /// Number of the next message this reader sends.
    pub fn next_number(&self) -> u64 {
        self.next
    }

    /// The next input message of `session`, if one is queued, without
    /// waiting; the reader moves past it. With it, on its first send (not
    /// a resend to a resumed host), when it reached the server.
    pub fn try_next(
        &mut self,
        session: &Session,
    ) -> Option<(HostDataResponse, Option<std::time::Instant>)> {
        let (data, origin, received) = lock(&session.state).host_input.take(self.next)?;
        self.next += 1;
        let message = HostDataResponse {
            message: Some(host_data_response::Message::Input(data)),
            input_origin: Some(origin),
        };
        Some((message, received))
    }

    /// Waits until input was queued or acknowledged since the last call
    /// (or the session's input side is gone: then `false`).
    pub async fn changed(&mut self) -> bool {
        self.changed.changed().await.is_ok()
    }

    /// For tests: takes the next message as [`try_next`](Self::try_next)
    /// does, with the mpsc receiver's signature.
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self, session: &Session) -> Result<HostDataResponse, ()> {
        self.try_next(session).map(|(message, _)| message).ok_or(())
    }
}

impl Session {
    /// Hands the session to a host Data stream whose host has written
    /// `input_applied` Input messages of this session so far (0 on its
    /// first stream): the stream sends input from there on. A stream that
    /// is already attached is replaced (the host only opens a new one when
    /// it has lost the old one); the old one's [`Session::detach_host`]
    /// then does nothing. Returns `None` when the session has ended.
    pub fn attach_host(&self, input_applied: u64) -> Option<HostLink> {
        let mut st = lock(&self.state);
        if st.exit.is_some() {
            return None;
        }
        let freed = st.host_input.ack(input_applied);
        let next = st.host_input.acked;
        st.host_attached = true;
        st.host_streams += 1;
        let stream = st.host_streams;
        st.host_stream = Some(stream);
        st.host_stream_changed = std::time::Instant::now();
        let replaced = self.ended.child_token();
        if let Some(old) = st.host_stream_token.replace(replaced.clone()) {
            old.cancel();
        }
        drop(st);
        self.input_room.add_permits(freed);
        self.input_changed.send_modify(|v| *v += 1);
        Some(HostLink {
            input: HostInputReader {
                next,
                changed: self.input_changed.subscribe(),
            },
            size: self.size.subscribe(),
            stream,
            replaced,
        })
    }

    /// Appends output the Data stream `stream` read from the host (see
    /// [`Session::push_output`]), unless another stream has replaced it:
    /// then the bytes are dropped, and the new stream's host sends them
    /// again from the offset it was given. Returns whether it was taken.
    pub fn push_host_output(&self, stream: u64, data: &[u8]) -> bool {
        self.push_output_if(data, |st| st.host_stream == Some(stream))
    }

    /// The Data stream `stream` is gone without an exit status (its host
    /// may open another). Does nothing if another stream replaced it.
    pub fn detach_host(&self, stream: u64) {
        let mut st = lock(&self.state);
        if st.host_stream == Some(stream) {
            st.host_stream = None;
            st.host_stream_changed = std::time::Instant::now();
            if let Some(token) = st.host_stream_token.take() {
                token.cancel();
            }
        }
    }

    /// Whether a host Data stream serves the session now, and since when
    /// that last changed.
    pub fn host_stream(&self) -> (bool, std::time::Instant) {
        let st = lock(&self.state);
        (st.host_stream.is_some(), st.host_stream_changed)
    }

    /// Records the host's `input_ack`: it has written `count` Input
    /// messages of this session (counted from the session's start). Counts
    /// past what was queued are taken as all of it; older ones change
    /// nothing.
    pub fn ack_host_input(&self, count: u64) {
        let freed = lock(&self.state).host_input.ack(count);
        if freed > 0 {
            self.input_room.add_permits(freed);
            self.input_changed.send_modify(|v| *v += 1);
        }
    }

    /// Input messages the host has written (its latest `input_ack`).
    pub fn host_input_acked(&self) -> u64 {
        lock(&self.state).host_input.acked
    }

    /// Marks the session's host as away and expected back
    /// (`reconnecting`), or back; guests are told with a `HostState`
    /// event carrying `message`.
    pub fn set_host_state(&self, reconnecting: bool, message: &str) {
        {
            let mut st = lock(&self.state);
            if st.exit.is_some() || st.host_state.reconnecting == reconnecting {
                return;
            }
            st.host_state = HostState {
                reconnecting,
                message: message.to_owned(),
            };
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Whether the host is away, and what guests are told about it.
    pub fn host_state(&self) -> HostState {
        lock(&self.state).host_state.clone()
    }

    /// Number of queued input messages (sent to the host or not) that it
    /// has not acknowledged, at most [`HOST_INPUT_QUEUE_MESSAGES`](super::HOST_INPUT_QUEUE_MESSAGES).
    pub fn unacked_host_input(&self) -> usize {
        lock(&self.state).host_input.unacked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_keeps_input_until_the_host_counts_it() {
        let mut q = HostInputQueue::starting_at(5);
        assert_eq!(q.end(), 5);
        let origin = |next_seq| GuestInputSeq {
            guest_id: "g".into(),
            next_seq,
        };
        let t = std::time::Instant::now();
        q.push(Bytes::from_static(b"a"), origin(1), t);
        q.push(Bytes::from_static(b"b"), origin(2), t);
        assert_eq!(q.take(4), None);
        let a = (Bytes::from_static(b"a"), origin(1));
        let b = (Bytes::from_static(b"b"), origin(2));
        // The first take of a message says when it came; a resend not.
        assert_eq!(q.take(5), Some((a.0.clone(), a.1.clone(), Some(t))));
        assert_eq!(q.take(6), Some((b.0.clone(), b.1.clone(), Some(t))));
        assert_eq!(q.take(5), Some((a.0, a.1, None)));
        assert_eq!(q.take(7), None);
        assert_eq!(q.ack(3), 0, "an old count changes nothing");
        assert_eq!(q.ack(6), 1);
        assert_eq!(q.take(5), None);
        assert_eq!(q.take(6), Some((b.0, b.1, None)));
        assert_eq!(q.ack(u64::MAX), 1, "a count past the end is the end");
        assert_eq!(q.acked, 7);
    }
}
