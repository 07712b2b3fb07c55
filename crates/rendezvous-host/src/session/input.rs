//! The Data stream's downward half: input and resizes from the server to
//! the PTY, read without ever waiting on the PTY (see
//! [`rendezvous_proto::flow`]).

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use rendezvous_proto::flow::HOST_INPUT_CREDIT_MESSAGES;
use rendezvous_proto::{HostDataResponse, host_data_response};
use tokio::sync::{mpsc, watch};

use crate::guests::GuestsTx;
use crate::pty::{PtySize, PtyWriter};

/// Reads `inbound` until the stream ends (normally or not), never waiting
/// on the PTY: Input and Resize go to [`write_pty`], output
/// acknowledgements to `acked`. The server sends at most
/// [`HOST_INPUT_CREDIT_MESSAGES`] Input messages past what `written`
/// reports, so the queue to the PTY writer never fills, and the server
/// never leaves this stream's frames unread on the host's connection.
/// Each Input message counts in `guests` (the hold's idle rule).
pub(super) async fn pump_input<S>(
    session_id: &str,
    mut inbound: S,
    writer: PtyWriter,
    acked: watch::Sender<u64>,
    written: watch::Sender<u64>,
    guests: &GuestsTx,
) where
    S: Stream<Item = Result<HostDataResponse, tonic::Status>> + Unpin,
{
    let (inputs, queue) = mpsc::channel(HOST_INPUT_CREDIT_MESSAGES as usize);
    let (sizes, sizes_rx) = watch::channel(None);
    let write = write_pty(session_id, writer, queue, sizes_rx, written);
    let read = async {
        while let Some(message) = inbound.next().await {
            let message = match message {
                Ok(message) => message.message,
                Err(status) => {
                    tracing::info!(
                        session_id,
                        code = ?status.code(),
                        message = status.message(),
                        "data stream ended with an error"
                    );
                    return;
                }
            };
            match message {
                Some(host_data_response::Message::Input(data)) => {
                    guests.input();
                    // Fails only once the writer is gone, with the stream.
                    let _ = inputs.send(data).await;
                }
                Some(host_data_response::Message::Resize(size)) => {
                    sizes.send_replace(Some(PtySize::from_wire(size.cols, size.rows)));
                }
                Some(host_data_response::Message::OutputAck(offset)) => {
                    acked.send_if_modified(|acked| {
                        let forward = offset > *acked;
                        if forward {
                            *acked = offset;
                        }
                        forward
                    });
                }
                // A message newer than this host.
                None => {}
            }
        }
    };
    tokio::select! {
        () = read => {}
        () = write => {}
    }
}

/// Writes input from `queue` to the PTY in order and applies the latest
/// size from `sizes` before the next write; counts each Input message
/// written (or dropped, once the PTY no longer takes input because the
/// process has exited) in `written`.
async fn write_pty(
    session_id: &str,
    mut writer: PtyWriter,
    mut queue: mpsc::Receiver<Bytes>,
    mut sizes: watch::Receiver<Option<PtySize>>,
    written: watch::Sender<u64>,
) {
    let mut pty_open = true;
    let mut count = 0u64;
    loop {
        tokio::select! {
            biased;
            changed = sizes.changed() => {
                if changed.is_err() {
                    return;
                }
                let size = *sizes.borrow_and_update();
                if let Some(size) = size
                    && pty_open
                    && let Err(e) = writer.resize(size)
                {
                    tracing::debug!(session_id, error = %e, "PTY resize failed");
                }
            }
            data = queue.recv() => {
                let Some(data) = data else { return };
                if pty_open && let Err(e) = writer.write_all(&data).await {
                    tracing::debug!(session_id, error = %e, "PTY input closed");
                    pty_open = false;
                }
                count += 1;
                written.send_replace(count);
            }
        }
    }
}
