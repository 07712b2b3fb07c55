//! The first message of a streaming call, for both services: it must come
//! within [`FIRST_REQUEST_TIMEOUT`], or the call fails with
//! `DEADLINE_EXCEEDED`.

use tonic::{Status, Streaming};

use crate::config::FIRST_REQUEST_TIMEOUT;

/// The first message of `inbound` (`None` when the peer closed the stream
/// without one). `what` names the message expected, for the error.
///
/// # Errors
/// `DEADLINE_EXCEEDED` after [`FIRST_REQUEST_TIMEOUT`]; the stream's own
/// status when it failed.
pub(crate) async fn first_message<T>(
    inbound: &mut Streaming<T>,
    what: &str,
) -> Result<Option<T>, Status> {
    tokio::time::timeout(FIRST_REQUEST_TIMEOUT, inbound.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "no {what} within {} s of the call's start",
                FIRST_REQUEST_TIMEOUT.as_secs()
            ))
        })?
}
