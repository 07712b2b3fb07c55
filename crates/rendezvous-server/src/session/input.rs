//! Exactly-once input order for one guest: requests carry sequence numbers
//! 0, 1, 2, ...; each is applied once, in order, whatever order or how
//! many times they arrive (a retried unary call, a resumed guest).

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};

/// Most input requests of one guest that may wait for a missing earlier
/// sequence number; a request further ahead is refused.
pub const MAX_PENDING_INPUTS: u64 = 64;

/// Most bytes of one guest's input that may wait for a missing earlier
/// sequence number (256 KiB); a request that would exceed it is refused.
pub const MAX_PENDING_INPUT_BYTES: usize = 256 * 1024;

/// What [`InputOrder::accept`] made of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// In order: these bytes go to the PTY now (the request's, joined with
    /// the ones that were waiting for it).
    Apply(Bytes),
    /// Already applied (a repeat), or kept until the gap before it fills.
    Nothing,
}

/// A request too far ahead of the next expected sequence number, or one
/// that would make the waiting bytes exceed [`MAX_PENDING_INPUT_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooFarAhead {
    /// The next sequence number expected.
    pub(crate) expected: u64,
}

/// One guest's input sequence: the next number to apply, and the requests
/// that arrived ahead of it (bounded by [`MAX_PENDING_INPUTS`] and
/// [`MAX_PENDING_INPUT_BYTES`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct InputOrder {
    /// Next sequence number to apply.
    next_seq: u64,
    /// Requests ahead of `next_seq`, by sequence number.
    pending: BTreeMap<u64, Bytes>,
    /// Sum of `pending`'s lengths.
    pending_bytes: usize,
}

impl InputOrder {
    /// A sequence that goes on at `next_seq` with nothing waiting (a
    /// guest resumed after its stream closed).
    pub(crate) fn starting_at(next_seq: u64) -> Self {
        Self {
            next_seq,
            ..Self::default()
        }
    }

    /// The sequence number the next request must carry to be applied.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Takes request `seq` with `data`.
    ///
    /// # Errors
    /// [`TooFarAhead`] for a request more than [`MAX_PENDING_INPUTS`]
    /// ahead, or whose bytes would exceed [`MAX_PENDING_INPUT_BYTES`]
    /// waiting; nothing changes then.
    pub(crate) fn accept(&mut self, seq: u64, data: Bytes) -> Result<Accepted, TooFarAhead> {
        if seq < self.next_seq {
            return Ok(Accepted::Nothing);
        }
        if seq > self.next_seq {
            let replaced = self.pending.get(&seq).map_or(0, Bytes::len);
            if seq - self.next_seq > MAX_PENDING_INPUTS
                || self.pending_bytes - replaced + data.len() > MAX_PENDING_INPUT_BYTES
            {
                return Err(TooFarAhead {
                    expected: self.next_seq,
                });
            }
            self.pending_bytes = self.pending_bytes - replaced + data.len();
            self.pending.insert(seq, data);
            return Ok(Accepted::Nothing);
        }
        // In order: apply it and whatever was waiting for it, as one
        // message (the PTY sees the same bytes either way).
        self.next_seq += 1;
        if !self.pending.contains_key(&self.next_seq) {
            return Ok(Accepted::Apply(data));
        }
        let mut joined = BytesMut::from(&data[..]);
        while let Some(next) = self.pending.remove(&self.next_seq) {
            self.pending_bytes -= next.len();
            joined.extend_from_slice(&next);
            self.next_seq += 1;
        }
        Ok(Accepted::Apply(joined.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(order: &mut InputOrder, seq: u64, data: &'static [u8]) -> Accepted {
        order.accept(seq, Bytes::from_static(data)).unwrap()
    }

    #[test]
    fn requests_apply_in_order_exactly_once() {
        let mut order = InputOrder::default();
        assert_eq!(apply(&mut order, 1, b"b"), Accepted::Nothing);
        assert_eq!(
            apply(&mut order, 0, b"a"),
            Accepted::Apply(Bytes::from_static(b"ab"))
        );
        // A repeat of an applied request is dropped.
        assert_eq!(apply(&mut order, 0, b"a"), Accepted::Nothing);
        assert_eq!(apply(&mut order, 1, b"b"), Accepted::Nothing);
        assert_eq!(
            apply(&mut order, 2, b"c"),
            Accepted::Apply(Bytes::from_static(b"c"))
        );
        assert_eq!(order.next_seq(), 3);
    }

    #[test]
    fn requests_too_far_ahead_are_refused_and_change_nothing() {
        let mut order = InputOrder::starting_at(10);
        assert_eq!(
            order.accept(10 + MAX_PENDING_INPUTS + 1, Bytes::from_static(b"x")),
            Err(TooFarAhead { expected: 10 })
        );
        let big = Bytes::from(vec![0u8; MAX_PENDING_INPUT_BYTES]);
        assert_eq!(order.accept(12, big), Ok(Accepted::Nothing));
        assert_eq!(
            order.accept(13, Bytes::from_static(b"y")),
            Err(TooFarAhead { expected: 10 })
        );
        // The same request again replaces itself: still within the bound.
        let big = Bytes::from(vec![1u8; MAX_PENDING_INPUT_BYTES]);
        assert_eq!(order.accept(12, big), Ok(Accepted::Nothing));
        assert_eq!(order.next_seq(), 10);
    }
}
