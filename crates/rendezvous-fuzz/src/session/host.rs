//! Each host action, taken on the session and on the model, and checked:
//! output on the Data stream that serves the session and on others, the
//! input the latest stream reads and the host acknowledges, new streams
//! that replace the old, streams that go, and the host's state.

use futures::FutureExt;
use rendezvous_proto::{HostState, host_data_response};

use super::Harness;
use super::actions::Applied;
use super::model::Span;
use crate::pattern;

impl Harness {
    /// Output on the stream that serves the session, or on the latest
    /// one when none does (then refused).
    pub(super) fn output(&mut self, len: usize) {
        self.push_output(self.link.stream, len);
    }

    /// Output on a stream that does not serve the session: an older one,
    /// or a number never handed out (0, or past the latest).
    pub(super) fn stale_output(&mut self, len: usize, which: u8) {
        let h = &self.model.host;
        let others: Vec<u64> = (0..=h.streams + 1)
            .filter(|n| h.stream != Some(*n))
            .collect();
        let stream = others[usize::from(which) % others.len()];
        self.push_output(stream, len);
    }

    fn push_output(&mut self, stream: u64, len: usize) {
        let taken = self
            .session
            .push_host_output(stream, pattern::run(self.model.end, len));
        let serves = self.model.host.stream == Some(stream);
        let want = len == 0 || (self.model.exit.is_none() && serves);
        assert_eq!(
            taken,
            want,
            "output of {len} bytes on Data stream {stream} (serving: {:?}, ended: {})",
            self.model.host.stream,
            self.model.exit.is_some()
        );
        if taken && self.model.exit.is_none() {
            self.model.end += len as u64;
        }
    }

    /// The latest stream reads up to `count` input messages: each one is
    /// the next the session queued, from where the stream started.
    pub(super) fn host_reads(&mut self, count: u8) {
        for _ in 0..count {
            let got = self
                .link
                .input
                .try_next(&self.session)
                .map(|m| match m.0.message {
                    Some(host_data_response::Message::Input(data)) => data,
                    other => panic!("the host's input queue held {other:?}"),
                });
            let h = &mut self.model.host;
            let want = h
                .next
                .checked_sub(h.acked)
                .and_then(|i| h.unacked.get(usize::try_from(i).ok()?))
                .cloned();
            assert_eq!(
                got, want,
                "the host read other input than was applied (message {})",
                h.next
            );
            if want.is_none() {
                break;
            }
            if h.honest {
                // Exactly once: neither a message it took on an earlier
                // stream, nor one after a message it never got.
                assert_eq!(
                    h.next, h.taken,
                    "a host that opened each Data stream with what it had taken \
                     was sent another message than the next"
                );
            }
            h.next += 1;
            h.taken = h.taken.max(h.next);
        }
    }

    /// The host counts what it has taken as written (`input_ack`), or
    /// `fewer` less; never more than its latest stream has sent it, as
    /// no host can have written that.
    pub(super) fn host_acks(&mut self, fewer: Option<u8>) {
        let h = &mut self.model.host;
        let count = h
            .taken
            .min(h.next)
            .saturating_sub(fewer.map_or(0, |f| u64::from(f) + 1));
        self.session.ack_host_input(count);
        h.ack(count);
    }

    /// A new Data stream opens with what the host has taken as its
    /// `input_applied`, or `wrong`: it replaces the stream that served
    /// the session, and reads the input from that count on (or from what
    /// was already acknowledged).
    pub(super) fn host_reattach(&mut self, wrong: Option<Applied>) {
        let taken = self.model.host.taken;
        let applied = match wrong {
            None => taken,
            Some(Applied::Fewer(d)) => taken.saturating_sub(u64::from(d) + 1),
            Some(Applied::More(d)) => taken + u64::from(d) + 1,
            Some(Applied::Max) => u64::MAX,
        };
        let link = self.session.attach_host(applied);
        if self.model.exit.is_some() {
            assert!(link.is_none(), "a Data stream attached to an ended session");
            return;
        }
        let link = link.expect("a running session takes a new Data stream");
        let h = &mut self.model.host;
        h.honest = applied == h.taken && h.acked <= h.taken;
        h.ack(applied);
        h.streams += 1;
        h.stream = Some(h.streams);
        h.next = h.acked;
        assert_eq!(link.stream, h.streams, "Data stream numbers");
        assert_eq!(
            *link.size.borrow(),
            self.model.size,
            "the size a new Data stream starts from"
        );
        let old = std::mem::replace(&mut self.link, link);
        assert!(
            old.replaced.is_cancelled(),
            "a replaced Data stream was not told that it is done"
        );
    }

    /// A Data stream is gone without an exit status: the latest one, or
    /// (`stale`) the one before it, which changes nothing.
    pub(super) fn host_detach(&mut self, stale: bool) {
        let stream = if stale {
            self.link.stream - 1
        } else {
            self.link.stream
        };
        self.session.detach_host(stream);
        let h = &mut self.model.host;
        if h.stream == Some(stream) {
            h.stream = None;
        }
    }

    /// The host is marked away or back; an ended session keeps what it
    /// said last, and so does a mark that changes nothing.
    pub(super) fn host_state(&mut self, reconnecting: bool) {
        let message = if reconnecting {
            "the host is away"
        } else {
            "the host is back"
        };
        self.session.set_host_state(reconnecting, message);
        let h = &mut self.model.host;
        if self.model.exit.is_none() && h.state.reconnecting != reconnecting {
            h.state = HostState {
                reconnecting,
                message: message.to_owned(),
            };
        }
    }

    /// Whether the host may send output now, against the model (unless a
    /// departed guest's pace may or may not have run out meanwhile).
    pub(super) fn room(&mut self) {
        // Unconstrained: tokio's cooperative budget would make a session
        // with room look full after many operations in one poll.
        let (room, checked) = Span::around(|| {
            tokio::task::unconstrained(self.session.wait_for_room())
                .now_or_never()
                .is_some()
        });
        if let Some(want) = self.model.room(checked) {
            assert_eq!(
                room, want,
                "wait_for_room disagrees with the guests' cursors"
            );
        }
    }
}
