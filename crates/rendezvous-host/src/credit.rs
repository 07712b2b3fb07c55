//! Output credit on a Data stream (see [`rendezvous_proto::flow`]): PTY
//! output goes up with at most [`HOST_OUTPUT_CREDIT_MESSAGES`] Output
//! messages past the server's last `output_ack`, so the server never holds
//! the host's frames unread. While the host waits for credit, output piles
//! up in the session's log, and goes as messages of up to 32 KiB once
//! credit returns; when the log is full the PTY reader stops, and the
//! process blocks on its writes.

use std::collections::VecDeque;

use rendezvous_proto::flow::HOST_OUTPUT_CREDIT_MESSAGES;

/// The Output messages on their way to the server, by the offset one past
/// each one's last byte. No I/O: [`forward_output`] drives it.
#[derive(Debug, Default)]
pub(crate) struct Credit {
    /// Offset one past the last byte handed to the stream.
    sent: u64,
    /// End offsets of the messages sent and not yet acknowledged, oldest
    /// first; at most [`HOST_OUTPUT_CREDIT_MESSAGES`].
    unacked: VecDeque<u64>,
}

impl Credit {
    /// Credit for a stream whose server has the output up to `offset`.
    pub(crate) fn starting_at(offset: u64) -> Self {
        Self {
            sent: offset,
            unacked: VecDeque::new(),
        }
    }

    /// Whether another Output message may go.
    pub(crate) fn available(&self) -> bool {
        self.unacked.len() < HOST_OUTPUT_CREDIT_MESSAGES
    }

    /// Records a message of `len` bytes as sent.
    pub(crate) fn sent(&mut self, len: usize) {
        self.sent += len as u64;
        self.unacked.push_back(self.sent);
    }

    /// Records that the server has taken output up to `offset`; an offset
    /// past what was sent counts as all of it.
    pub(crate) fn acked(&mut self, offset: u64) {
        while self.unacked.front().is_some_and(|end| *end <= offset) {
            self.unacked.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_runs_out_and_returns_with_acks() {
        let mut credit = Credit::default();
        for _ in 0..HOST_OUTPUT_CREDIT_MESSAGES {
            assert!(credit.available());
            credit.sent(10);
        }
        assert!(!credit.available());
        // An ack inside a message acknowledges only the ones before it.
        credit.acked(15);
        assert!(credit.available());
        credit.sent(10);
        assert!(!credit.available());
        credit.acked(u64::MAX);
        assert!(credit.available());
        assert_eq!(credit.unacked.len(), 0);
    }
}
