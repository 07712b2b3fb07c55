//! One session: a PTY process and its Data stream. Output goes up in order,
//! input and resizes come down, the exit status goes last.
//!
//! [`relay`] knows nothing about gRPC beyond the message types: it takes the
//! outbound queue and the inbound stream, so it is tested with channels.
//! [`run`] opens the real Data stream and hands it to [`relay`].

mod input;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt as _, Stream};
use rendezvous_proto::host_service_client::HostServiceClient;
use rendezvous_proto::{
    DataOpen, ExitStatus, HostDataRequest, HostDataResponse, exit_status, host_data_request,
};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::credit;
use crate::guests::GuestsTx;
use crate::processes::SessionProcesses;
use crate::pty::{self, PtyProcess};
use input::pump_input;

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
}

impl CloseReason {
    /// The text sent in `ExitStatus.message`, shown to guests.
    fn message(self) -> &'static str {
        match self {
            Self::ClosedByServer => "session closed by the server",
            Self::HostDisconnected => "host disconnected",
            Self::HostShutdown => "host shut down",
        }
    }
}

/// Opens the Data stream of session `open.session_id` and relays it to
/// `process` until the process exits, the stream ends, or `close` fires
/// (a dropped sender counts as [`CloseReason::HostShutdown`]). Always ends
/// the session's processes before returning.
pub(crate) async fn run(
    mut client: HostServiceClient<Channel>,
    open: DataOpen,
    mut process: PtyProcess,
    guests: GuestsTx,
    close: oneshot::Receiver<CloseReason>,
) {
    let session_id = open.session_id.clone();
    let close = async move { close.await.unwrap_or(CloseReason::HostShutdown) };
    tokio::pin!(close);
    let (outbound, requests) = mpsc::channel(DATA_QUEUE_MESSAGES);
    // The queue is empty and its receiver alive: this cannot fail.
    let _ = outbound.try_send(HostDataRequest {
        message: Some(host_data_request::Message::Open(open)),
    });
    let opened = tokio::select! {
        opened = client.data(ReceiverStream::new(requests)) => opened,
        reason = &mut close => {
            tracing::debug!(session_id, ?reason, "session closed before its data stream opened");
            end_process(process.processes, &mut process.child, &session_id).await;
            return;
        }
    };
    match opened {
        Ok(response) => {
            let inbound = response.into_inner();
            relay(&session_id, process, outbound, inbound, &guests, close).await;
        }
        Err(status) => {
            tracing::warn!(
                session_id,
                code = ?status.code(),
                message = status.message(),
                "the server refused the session's data stream"
            );
            end_process(process.processes, &mut process.child, &session_id).await;
        }
    }
}

/// How the first phase of a session ended.
enum Ended {
    /// The process exited and all its output is queued.
    Exited(ExitStatus),
    /// The Data stream is over (ended or broken) before the process exited.
    StreamGone,
    /// Ended from outside.
    Closed(CloseReason),
}

/// Relays one session between its PTY `process` and a Data stream
/// (`outbound` up, `inbound` down), counting input in `guests`, until the process exits, the stream
/// ends, or `close` resolves; then ends the session's processes.
///
/// The outbound messages are Output chunks in PTY order, then (unless the
/// stream is gone) one Exit. After the Exit, `outbound` is dropped, and the
/// relay waits up to [`STREAM_FINISH_TIMEOUT`] for `inbound` to end, so the
/// transport flushes the Exit before the stream is dropped.
pub(crate) async fn relay<S>(
    session_id: &str,
    process: PtyProcess,
    outbound: mpsc::Sender<HostDataRequest>,
    inbound: S,
    guests: &GuestsTx,
    close: impl Future<Output = CloseReason>,
) where
    S: Stream<Item = Result<HostDataResponse, tonic::Status>> + Unpin,
{
    let PtyProcess {
        mut reader,
        writer,
        mut child,
        processes,
    } = process;
    let (output_tx, output_rx) = mpsc::channel(DATA_QUEUE_MESSAGES);
    let (acked_tx, acked_rx) = watch::channel(0u64);
    let (written_tx, written_rx) = watch::channel(0u64);
    let mut input = Box::pin(pump_input(
        session_id, inbound, writer, acked_tx, written_tx, guests,
    ));
    let ended = {
        let output = async {
            let pump = pump_output(&mut reader, &mut child, output_tx);
            let forward = credit::forward_output(output_rx, acked_rx, written_rx, &outbound);
            tokio::pin!(pump, forward);
            // `forward` ends first only when the stream is gone: it sends
            // all output once `pump` is done, and `pump` is polled first.
            tokio::select! {
                biased;
                exit = &mut pump => match exit {
                    Some(exit) if (&mut forward).await => Some(exit),
                    _ => None,
                },
                _gone = &mut forward => None,
            }
        };
        tokio::pin!(output, close);
        tokio::select! {
            exited = &mut output => exited.map_or(Ended::StreamGone, Ended::Exited),
            () = &mut input => Ended::StreamGone,
            reason = &mut close => Ended::Closed(reason),
        }
    };
    let exit = match ended {
        Ended::Exited(exit) => {
            end_process(processes, &mut child, session_id).await;
            Some(exit)
        }
        Ended::StreamGone => {
            tracing::info!(
                session_id,
                "data stream ended; ending the session's processes"
            );
            end_process(processes, &mut child, session_id).await;
            None
        }
        Ended::Closed(reason) => {
            tracing::info!(session_id, ?reason, "ending session");
            let mut exit = match processes.terminate(&mut child).await {
                Ok(status) => exit_status(status),
                Err(e) => exit_unknown(&e),
            };
            exit.message = reason.message().to_owned();
            Some(exit)
        }
    };
    if let Some(exit) = exit {
        tracing::debug!(session_id, ?exit, "session ended");
        let exit = HostDataRequest {
            message: Some(host_data_request::Message::Exit(exit)),
        };
        let _ = timeout(STREAM_FINISH_TIMEOUT, outbound.send(exit)).await;
        drop(outbound);
        // Input that arrives now has no process to go to; `pump_input`
        // drops it and returns when the server ends the stream.
        let _ = timeout(STREAM_FINISH_TIMEOUT, input).await;
    }
}

/// Reads the PTY into `output` until the process has exited and its
/// output is drained; returns its exit status, or `None` when the Data
/// stream is gone. Stops reading while `output` is full.
async fn pump_output(
    reader: &mut pty_process::OwnedReadPty,
    child: &mut Child,
    output: mpsc::Sender<Bytes>,
) -> Option<ExitStatus> {
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    // The exit status, and when draining must stop.
    let mut exited: Option<(ExitStatus, Instant)> = None;
    loop {
        let read = match &exited {
            None => tokio::select! {
                read = reader.read(&mut buf) => read,
                status = child.wait() => {
                    let status = status.map_or_else(|e| exit_unknown(&e), exit_status);
                    exited = Some((status, Instant::now() + EXIT_DRAIN_MAX));
                    continue;
                }
            },
            Some((_, drain_end)) => {
                let until = (Instant::now() + EXIT_DRAIN_IDLE).min(*drain_end);
                match timeout_at(until, reader.read(&mut buf)).await {
                    Ok(read) => read,
                    Err(_quiet) => break,
                }
            }
        };
        match read {
            Ok(0) => break,
            Ok(mut n) => {
                n += read_ready(reader, &mut buf[n..]);
                if output
                    .send(Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .is_err()
                {
                    return None;
                }
            }
            Err(e) if pty::is_end_of_output(&e) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the PTY failed");
                break;
            }
        }
    }
    Some(match exited {
        Some((exit, _)) => exit,
        None => child
            .wait()
            .await
            .map_or_else(|e| exit_unknown(&e), exit_status),
    })
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
