//! A session's output as the host keeps it: the last bytes read from the
//! PTY, each at its offset, and how far the server has confirmed taking
//! them. The host is the authority on its sessions: this is what refills a
//! server that lost them (restarted, or another replica), and what a
//! reconnecting host sends the server that missed it.
//!
//! Bounds, with `retain` the retained output (default
//! [`RETAINED_OUTPUT_BYTES`], 1 MiB, as the server's):
//! - the PTY reader reads only while fewer than `retain` bytes are
//!   unconfirmed; then the process blocks on its writes, as under
//!   backpressure. Nothing is ever dropped unconfirmed;
//! - confirmed bytes are dropped, oldest first, while more than `retain`
//!   bytes are kept, but only while a server is connected: during a
//!   disconnection nothing is dropped, so the host can refill a server
//!   that lost everything from the oldest byte it named when it resumed.
//!   So at most 2 × `retain` bytes (plus one PTY read) are kept.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use rendezvous_proto::ExitStatus;

/// Default bytes of output a host keeps per session, past what the server
/// confirmed (1 MiB, the server's default retained output).
pub const RETAINED_OUTPUT_BYTES: usize = 1024 * 1024;

/// One session's output log. No I/O: the session's tasks share it behind
/// a `watch` channel.
#[derive(Debug)]
pub(crate) struct OutputLog {
    /// The kept bytes, oldest first; the first starts at `start`.
    chunks: VecDeque<Bytes>,
    /// Offset of the oldest kept byte.
    start: u64,
    /// Offset one past the last byte read from the PTY.
    end: u64,
    /// One past the last byte the connected server confirmed taking.
    confirmed: u64,
    /// See the module docs.
    retain: u64,
    /// Whether confirmed bytes may be dropped (a server is connected).
    trimming: bool,
    /// How the session ended, once it has; sent after the last byte.
    pub(crate) exit: Option<ExitStatus>,
}

impl OutputLog {
    /// An empty log keeping `retain` bytes (at least 1).
    pub(crate) fn new(retain: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            start: 0,
            end: 0,
            confirmed: 0,
            retain: retain.max(1) as u64,
            trimming: true,
            exit: None,
        }
    }

    /// Offset of the oldest kept byte.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// Offset one past the last byte read.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Bytes kept now.
    #[cfg(test)]
    pub(crate) fn kept(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the PTY reader may read more: fewer than `retain` bytes are
    /// unconfirmed.
    pub(crate) fn has_room(&self) -> bool {
        self.end - self.confirmed < self.retain
    }

    /// Appends bytes read from the PTY.
    pub(crate) fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.end += data.len() as u64;
        self.chunks.push_back(data);
        self.trim();
    }

    /// A server's Data stream began and its server has the output up to
    /// `offset`: confirmation starts again from there (it may be less than
    /// before, on a server that lost output), and old bytes may be dropped
    /// again. Returns `false` when the host cannot continue from there:
    /// `offset` is older than the oldest kept byte, or past the end.
    pub(crate) fn connected(&mut self, offset: u64) -> bool {
        if offset < self.start || offset > self.end {
            return false;
        }
        self.confirmed = offset;
        self.trimming = true;
        self.trim();
        true
    }

    /// The server's Data stream is gone: keep every byte until the next
    /// one says what its server has.
    pub(crate) fn disconnected(&mut self) {
        self.trimming = false;
    }

    /// The server confirmed taking output up to `offset` (clamped to the
    /// end; older offsets change nothing).
    pub(crate) fn confirm(&mut self, offset: u64) {
        self.confirmed = self.confirmed.max(offset.min(self.end));
        self.trim();
    }

    /// At most `max` bytes from `offset` on (`None` at the end, or before
    /// the oldest kept byte). One chunk goes as a slice of itself; bytes
    /// from several are joined (one copy).
    pub(crate) fn read(&self, offset: u64, max: usize) -> Option<Bytes> {
        if offset < self.start || offset >= self.end || max == 0 {
            return None;
        }
        let mut at = self.start;
        let mut parts = Vec::new();
        let mut len = 0usize;
        for chunk in &self.chunks {
            let chunk_end = at + chunk.len() as u64;
            if chunk_end > offset {
                let from = usize::try_from(offset.max(at) - at).unwrap_or(0);
                let take = (chunk.len() - from).min(max - len);
                parts.push(chunk.slice(from..from + take));
                len += take;
                if len == max {
                    break;
                }
            }
            at = chunk_end;
        }
        if parts.len() == 1 {
            return parts.pop();
        }
        let mut joined = BytesMut::with_capacity(len);
        for part in parts {
            joined.extend_from_slice(&part);
        }
        Some(joined.freeze())
    }

    /// Drops confirmed bytes, oldest first, while more than `retain` are
    /// kept.
    fn trim(&mut self) {
        if !self.trimming {
            return;
        }
        while self.end - self.start > self.retain && self.start < self.confirmed {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let excess = (self.end - self.start - self.retain).min(self.confirmed - self.start);
            let len = front.len() as u64;
            if len <= excess {
                self.chunks.pop_front();
                self.start += len;
            } else {
                let cut = usize::try_from(excess).unwrap_or(front.len());
                *front = front.slice(cut..);
                self.start += excess;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, b: u8) -> Bytes {
        Bytes::from(vec![b; n])
    }

    #[test]
    fn unconfirmed_bytes_are_never_dropped_and_pause_the_reader() {
        let mut log = OutputLog::new(10);
        log.push(bytes(6, b'a'));
        assert!(log.has_room());
        log.push(bytes(6, b'b'));
        assert!(!log.has_room(), "12 unconfirmed bytes of a 10-byte bound");
        assert_eq!(log.kept(), 12);
        assert_eq!(log.start(), 0);
        log.confirm(4);
        // Keeps 10 of them; only confirmed ones went.
        assert_eq!(log.start(), 2);
        assert_eq!(log.kept(), 10);
        assert!(log.has_room());
        assert_eq!(log.read(2, 100).unwrap(), Bytes::from_static(b"aaaabbbbbb"));
        assert_eq!(log.read(7, 3).unwrap(), Bytes::from_static(b"bbb"));
        assert_eq!(log.read(1, 3), None, "before the oldest kept byte");
        assert_eq!(log.read(12, 3), None, "at the end");
    }

    #[test]
    fn nothing_is_dropped_while_disconnected_and_a_new_server_starts_over() {
        let mut log = OutputLog::new(4);
        log.push(bytes(4, b'a'));
        log.confirm(4);
        log.disconnected();
        log.push(bytes(3, b'b'));
        assert_eq!(log.start(), 0, "kept for a server that lost it all");
        assert!(log.has_room());
        log.push(bytes(1, b'c'));
        assert!(!log.has_room());
        // A restarted server has nothing before the start we named.
        assert!(log.connected(0));
        assert_eq!(log.read(0, 100).unwrap().len(), 8);
        assert!(!log.has_room());
        log.confirm(8);
        assert_eq!(log.start(), 4);
        assert!(!log.connected(3), "older than what is kept");
        assert!(!log.connected(9), "past the end");
    }

    #[test]
    fn offsets_are_exact_across_chunks() {
        let mut log = OutputLog::new(1 << 20);
        let mut all = Vec::new();
        for i in 0..50u8 {
            let chunk = bytes(usize::from(i) + 1, i);
            all.extend_from_slice(&chunk);
            log.push(chunk);
        }
        let mut at = 0u64;
        while let Some(data) = log.read(at, 7) {
            assert_eq!(&data[..], &all[at as usize..at as usize + data.len()]);
            at += data.len() as u64;
        }
        assert_eq!(at, all.len() as u64);
    }
}
