//! One session: a PTY process ([`live`]), which outlives connections, and
//! the Data streams that serve it one after another ([`stream`]). Output
//! goes up in order from the session's [`log`], input and resizes come
//! down, the exit status goes last.

mod input;
pub(crate) mod live;
pub(crate) mod log;
pub(crate) mod stream;

use std::time::Duration;

use futures::FutureExt as _;
use rendezvous_proto::{ExitStatus, exit_status};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Child;

use crate::processes::SessionProcesses;
pub use log::RETAINED_OUTPUT_BYTES;

/// Largest Output message, in bytes (32 KiB): one PTY read, joined with the
/// reads that are ready after it (see `read_ready`).
pub(crate) const READ_CHUNK_BYTES: usize = 32 * 1024;

/// Bound of the queue of messages waiting to go up one Data stream, in
/// messages (so at most this many times [`READ_CHUNK_BYTES`] of output).
/// When it is full, the PTY reader stops reading: HTTP/2 flow control
/// reaches all the way to the process, which blocks on its writes.
pub(crate) const DATA_QUEUE_MESSAGES: usize = 8;

/// Once the process has exited, output still in the PTY is read until none
/// arrives for this long (or the PTY reports its end): a background process
/// that keeps the PTY open does not hold the exit status back.
pub(crate) const EXIT_DRAIN_IDLE: Duration = Duration::from_millis(200);

/// Longest time output is read after the process has exited, even if a
/// background process keeps writing.
pub(crate) const EXIT_DRAIN_MAX: Duration = Duration::from_secs(2);

/// How long a session waits, at its end, for the server to take the exit
/// status and end the Data stream, before it drops the stream.
pub(crate) const STREAM_FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session is being ended from outside (not by its process exiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The server sent CloseSession.
    ClosedByServer,
    /// The control connection was lost.
    HostDisconnected,
    /// The host is shutting down.
    HostShutdown,
    /// The host could not resume within its grace period.
    GraceExpired,
    /// The server could not take the session back after a reconnect.
    NotResumed,
}

impl CloseReason {
    /// The text sent in `ExitStatus.message`, shown to guests.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::ClosedByServer => "session closed by the server",
            Self::HostDisconnected => "host disconnected",
            Self::HostShutdown => "host shut down",
            Self::GraceExpired => {
                "the host could not reach the server again within its grace period"
            }
            Self::NotResumed => "the server could not resume the session after a reconnect",
        }
    }
}

/// Reads what the PTY has ready right now into `buf`, without waiting;
/// returns how many bytes. A PTY read returns at most a few KiB (the line
/// discipline's buffer), so under a flood this joins several reads into one
/// Output message: fewer messages for the server and every guest to handle.
/// An error or the end of output stops it; the next blocking read sees them
/// again.
fn read_ready<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).now_or_never() {
            Some(Ok(n)) if n > 0 => filled += n,
            _ => break,
        }
    }
    filled
}

/// Ends the session's processes and reaps its leader, logging (not
/// returning) a failure: nothing is left to report it to.
async fn end_process(processes: SessionProcesses, child: &mut Child, session_id: &str) {
    if let Err(e) = processes.terminate(child).await {
        tracing::warn!(session_id, error = %e, "could not reap the session's process");
    }
}

/// The wire form of a process's exit.
fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt as _;
    let status_field = match (status.code(), status.signal()) {
        (Some(code), _) => Some(exit_status::Status::Code(code)),
        (None, Some(signal)) => Some(exit_status::Status::Signal(signal)),
        (None, None) => None,
    };
    ExitStatus {
        status: status_field,
        message: String::new(),
    }
}

/// The wire form of an exit we could not observe.
fn exit_unknown(error: &std::io::Error) -> ExitStatus {
    ExitStatus {
        status: None,
        message: format!("could not wait for the process: {error}"),
    }
}

#[cfg(test)]
mod tests;
