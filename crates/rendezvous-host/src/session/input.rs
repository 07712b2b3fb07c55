//! The PTY writer: input from the session's Data streams, in order, and
//! resizes, applied without the streams ever waiting on the PTY (see
//! [`rendezvous_proto::flow`]).

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::pty::{PtySize, PtyWriter};

/// Writes input from `queue` to the PTY in order and applies the latest
/// size from `sizes` before the next write; counts each Input message
/// written (or dropped, once the PTY no longer takes input because the
/// process has exited) in `written`, over the session's life.
pub(super) async fn write_pty(
    session_id: &str,
    mut writer: PtyWriter,
    mut queue: mpsc::Receiver<Bytes>,
    mut sizes: watch::Receiver<PtySize>,
    written: watch::Sender<u64>,
) {
    let mut pty_open = true;
    let mut count = 0u64;
    loop {
        tokio::select! {
            biased;
            changed = sizes.changed() => {
                if changed.is_err() {
                    // The session is over; input has nowhere to go.
                    std::future::pending::<()>().await;
                }
                let size = *sizes.borrow_and_update();
                if pty_open && let Err(e) = writer.resize(size) {
                    tracing::debug!(session_id, error = %e, "PTY resize failed");
                }
            }
            data = queue.recv() => {
                let Some(data) = data else {
                    std::future::pending::<()>().await;
                    return;
                };
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
