//! Output credit on a Data stream (see [`rendezvous_proto::flow`]): PTY
//! output goes up with at most [`HOST_OUTPUT_CREDIT_MESSAGES`] Output
//! messages past the server's last `output_ack`. While the host waits for
//! credit, output that piles up is joined into messages of up to
//! [`READ_CHUNK_BYTES`], and once the queue in front of it is full the PTY
//! reader stops: the process blocks on its writes, as under HTTP/2 flow
//! control, but the server never holds the host's frames unread.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use rendezvous_proto::flow::HOST_OUTPUT_CREDIT_MESSAGES;
use rendezvous_proto::{HostDataRequest, host_data_request};
use tokio::sync::{mpsc, watch};

use crate::session::READ_CHUNK_BYTES;

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

/// Sends PTY output from `output` up `outbound` under credit, with the
/// server's acknowledgements from `acked`, and each new value of
/// `input_written` (Input messages written to the PTY) as `input_ack`.
/// Returns `true` once `output` is closed and all of it is sent, `false`
/// when the stream is gone.
pub(crate) async fn forward_output(
    mut output: mpsc::Receiver<Bytes>,
    mut acked: watch::Receiver<u64>,
    mut input_written: watch::Receiver<u64>,
    outbound: &mpsc::Sender<HostDataRequest>,
) -> bool {
    let mut credit = Credit::default();
    // A message taken from `output` that did not fit the last join.
    let mut carry: Option<Bytes> = None;
    let mut input_open = true;
    let send = |message| {
        outbound.send(HostDataRequest {
            message: Some(message),
        })
    };
    loop {
        if credit.available()
            && let Some(first) = carry.take()
        {
            let data = join_ready(first, &mut output, &mut carry);
            credit.sent(data.len());
            if send(host_data_request::Message::Output(data))
                .await
                .is_err()
            {
                return false;
            }
            continue;
        }
        tokio::select! {
            biased;
            changed = acked.changed() => {
                if changed.is_err() {
                    // The stream's reader is gone; so is the stream.
                    return false;
                }
                credit.acked(*acked.borrow_and_update());
            }
            changed = input_written.changed(), if input_open => {
                if changed.is_err() {
                    // The PTY writer is done: no more input acks.
                    input_open = false;
                    continue;
                }
                let count = *input_written.borrow_and_update();
                if send(host_data_request::Message::InputAck(count)).await.is_err() {
                    return false;
                }
            }
            data = output.recv(), if credit.available() => {
                let Some(data) = data else { return true };
                let data = join_ready(data, &mut output, &mut carry);
                credit.sent(data.len());
                if send(host_data_request::Message::Output(data)).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// `first`, joined with the messages already waiting in `output` while
/// the whole stays within [`READ_CHUNK_BYTES`]: output that piled up while
/// the host waited for credit goes as few messages. A waiting message
/// that would not fit is left in `carry`, to start the next one.
fn join_ready(
    first: Bytes,
    output: &mut mpsc::Receiver<Bytes>,
    carry: &mut Option<Bytes>,
) -> Bytes {
    let mut joined: Option<BytesMut> = None;
    let mut len = first.len();
    while len < READ_CHUNK_BYTES {
        let Ok(next) = output.try_recv() else { break };
        if len + next.len() > READ_CHUNK_BYTES {
            *carry = Some(next);
            break;
        }
        let buf = joined.get_or_insert_with(|| {
            let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
            buf.extend_from_slice(&first);
            buf
        });
        buf.extend_from_slice(&next);
        len += next.len();
    }
    match joined {
        Some(buf) => buf.freeze(),
        None => first,
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

    /// Lets the spawned tasks of a current-thread runtime run until they
    /// wait.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_paused_server_gets_at_most_the_credit_then_joined_output() {
        let (output_tx, output) = mpsc::channel(4096);
        let (acked_tx, acked) = watch::channel(0u64);
        let (_written_tx, written) = watch::channel(0u64);
        let (outbound, mut wire) = mpsc::channel(4096);
        let forward =
            tokio::spawn(async move { forward_output(output, acked, written, &outbound).await });
        // One-byte writes, each sent at once while there is credit.
        for _ in 0..HOST_OUTPUT_CREDIT_MESSAGES {
            output_tx.send(Bytes::from_static(b"x")).await.unwrap();
            match wire.recv().await.and_then(|m| m.message) {
                Some(host_data_request::Message::Output(data)) => assert_eq!(&data[..], b"x"),
                other => panic!("expected output, got {other:?}"),
            }
        }
        // Without acks nothing more goes, however much waits.
        for _ in 0..1000 {
            output_tx.send(Bytes::from_static(b"y")).await.unwrap();
        }
        drop(output_tx);
        settle().await;
        assert!(wire.try_recv().is_err(), "more than the credit went out");
        // An ack lets the rest go, joined into one message.
        acked_tx.send_replace(HOST_OUTPUT_CREDIT_MESSAGES as u64);
        match wire.recv().await.and_then(|m| m.message) {
            Some(host_data_request::Message::Output(data)) => assert_eq!(data.len(), 1000),
            other => panic!("expected output, got {other:?}"),
        }
        assert!(forward.await.unwrap());
    }

    #[tokio::test]
    async fn input_acks_go_up_without_credit() {
        let (_output_tx, output) = mpsc::channel::<Bytes>(1);
        let (_acked_tx, acked) = watch::channel(0u64);
        let (written_tx, written) = watch::channel(0u64);
        let (outbound, mut wire) = mpsc::channel(16);
        let _forward =
            tokio::spawn(async move { forward_output(output, acked, written, &outbound).await });
        written_tx.send_replace(3);
        match wire.recv().await.and_then(|m| m.message) {
            Some(host_data_request::Message::InputAck(count)) => assert_eq!(count, 3),
            other => panic!("expected an input ack, got {other:?}"),
        }
    }
}
