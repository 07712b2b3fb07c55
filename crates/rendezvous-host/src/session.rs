//! One session: a PTY process and its Data stream. Output goes up in order,
//! input and resizes come down, the exit status goes last.
//!
//! [`relay`] knows nothing about gRPC beyond the message types: it takes the
//! outbound queue and the inbound stream, so it is tested with channels.
//! [`run`] opens the real Data stream and hands it to [`relay`].

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt as _, Stream, StreamExt as _};
use rendezvous_proto::host_service_client::HostServiceClient;
use rendezvous_proto::{
    DataOpen, ExitStatus, HostDataRequest, HostDataResponse, exit_status, host_data_request,
    host_data_response,
};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use rendezvous_proto::flow::HOST_INPUT_CREDIT_MESSAGES;

use crate::credit;
use crate::processes::SessionProcesses;
use crate::pty::{self, PtyProcess, PtySize, PtyWriter};

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
            relay(&session_id, process, outbound, inbound, close).await;
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
/// (`outbound` up, `inbound` down) until the process exits, the stream
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
        session_id, inbound, writer, acked_tx, written_tx,
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

/// Reads `inbound` until the stream ends (normally or not), never waiting
/// on the PTY: Input and Resize go to [`write_pty`], output
/// acknowledgements to `acked`. The server sends at most
/// [`HOST_INPUT_CREDIT_MESSAGES`] Input messages past what `written`
/// reports, so the queue to the PTY writer never fills, and the server
/// never leaves this stream's frames unread on the host's connection.
async fn pump_input<S>(
    session_id: &str,
    mut inbound: S,
    writer: PtyWriter,
    acked: watch::Sender<u64>,
    written: watch::Sender<u64>,
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
mod tests {
    use rendezvous_proto::WindowSize;

    use super::*;
    use crate::pty::{CommandSpec, PtySize};

    /// Upper bound for anything a test waits for.
    const TEST_DEADLINE: Duration = Duration::from_secs(20);

    type Inbound = mpsc::Sender<Result<HostDataResponse, tonic::Status>>;

    /// A relay over channels: the test plays the server.
    struct Harness {
        /// What the relay sends up.
        up: mpsc::Receiver<HostDataRequest>,
        /// What the test sends down; dropping it ends the stream.
        down: Option<Inbound>,
        /// Fires the close signal.
        close: Option<oneshot::Sender<CloseReason>>,
        /// The relay itself.
        relay: tokio::task::JoinHandle<()>,
        /// Output seen so far.
        output: Vec<u8>,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.relay.abort();
        }
    }

    impl Harness {
        fn start() -> Self {
            let spec = CommandSpec::new("bash".into(), vec!["--norc".into(), "--noprofile".into()]);
            let process = pty::spawn(&spec, PtySize::from_wire(80, 24)).unwrap();
            let (up_tx, up) = mpsc::channel(DATA_QUEUE_MESSAGES);
            let (down, down_rx) = mpsc::channel(4);
            let (close, close_rx) = oneshot::channel();
            let relay = tokio::spawn(async move {
                let close = async move { close_rx.await.unwrap_or(CloseReason::HostShutdown) };
                relay("s1", process, up_tx, ReceiverStream::new(down_rx), close).await;
            });
            Self {
                up,
                down: Some(down),
                close: Some(close),
                relay,
                output: Vec::new(),
            }
        }

        async fn send(&self, message: host_data_response::Message) {
            let down = self.down.as_ref().unwrap();
            down.send(Ok(HostDataResponse {
                message: Some(message),
            }))
            .await
            .unwrap();
        }

        async fn input(&self, text: &str) {
            self.send(host_data_response::Message::Input(Bytes::from(
                text.to_owned(),
            )))
            .await;
        }

        /// Keeps output the relay sent, and acknowledges it as the server
        /// does once its session has taken it.
        async fn took(&mut self, data: &[u8]) {
            self.output.extend_from_slice(data);
            let offset = self.output.len() as u64;
            if let Some(down) = &self.down {
                // The relay may have ended meanwhile.
                let _ = down
                    .send(Ok(HostDataResponse {
                        message: Some(host_data_response::Message::OutputAck(offset)),
                    }))
                    .await;
            }
        }

        /// Collects Output until it contains `needle`.
        async fn output_until(&mut self, needle: &str) {
            let needle_bytes = needle.as_bytes();
            let found = timeout(TEST_DEADLINE, async {
                // Only the new bytes (and a needle's length before them)
                // are searched, so long outputs stay cheap.
                let mut from = 0;
                while !self.output[from..]
                    .windows(needle_bytes.len())
                    .any(|w| w == needle_bytes)
                {
                    from = self.output.len().saturating_sub(needle_bytes.len());
                    match self.up.recv().await.and_then(|m| m.message) {
                        Some(host_data_request::Message::Output(data)) => {
                            self.took(&data).await;
                        }
                        Some(host_data_request::Message::InputAck(_)) => {}
                        other => panic!("expected output, got {other:?}"),
                    }
                }
            })
            .await;
            assert!(
                found.is_ok(),
                "no {needle:?} in {:?}",
                String::from_utf8_lossy(&self.output)
            );
        }

        /// Collects Output until the Exit, which must come last.
        async fn exit(&mut self) -> ExitStatus {
            let exit = timeout(TEST_DEADLINE, async {
                loop {
                    match self.up.recv().await.and_then(|m| m.message) {
                        Some(host_data_request::Message::Output(data)) => {
                            self.took(&data).await;
                        }
                        Some(host_data_request::Message::InputAck(_)) => {}
                        Some(host_data_request::Message::Exit(exit)) => return exit,
                        other => panic!("expected output or exit, got {other:?}"),
                    }
                }
            })
            .await
            .expect("no exit status");
            // The server ends the stream; the relay then returns, having
            // sent nothing after the Exit.
            self.down = None;
            timeout(TEST_DEADLINE, &mut self.relay)
                .await
                .expect("relay did not return")
                .unwrap();
            assert!(self.up.recv().await.is_none());
            exit
        }
    }

    #[tokio::test]
    async fn output_then_exit_code_in_order() {
        let mut h = Harness::start();
        h.input("echo hi-$((1+1))\n").await;
        h.output_until("hi-2").await;
        // Output printed just before exiting arrives before the Exit.
        h.input("echo bye-$((2+2)); exit 3\n").await;
        let exit = h.exit().await;
        assert_eq!(exit.status, Some(exit_status::Status::Code(3)));
        assert_eq!(exit.message, "");
        assert!(String::from_utf8_lossy(&h.output).contains("bye-4"));
    }

    #[tokio::test]
    async fn exit_is_sent_and_leftovers_killed_when_a_background_job_holds_the_pty() {
        let mut h = Harness::start();
        h.input("sleep 1000 & echo \"pid=$!.\"; exit 4\n").await;
        let exit = h.exit().await;
        assert_eq!(exit.status, Some(exit_status::Status::Code(4)));
        let output = String::from_utf8_lossy(&h.output).into_owned();
        let pid = output
            .split("pid=")
            .skip(1)
            .find_map(|rest| rest.split('.').next()?.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no pid in {output:?}"));
        // The relay has returned, so the session's processes were ended.
        timeout(TEST_DEADLINE, async {
            while std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z')))
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("background job {pid} survived"));
    }

    #[tokio::test]
    async fn resize_reaches_the_process() {
        let mut h = Harness::start();
        h.send(host_data_response::Message::Resize(WindowSize {
            cols: 123,
            rows: 45,
        }))
        .await;
        h.input("stty size\n").await;
        h.output_until("45 123").await;
        // Out-of-range sizes are clamped, zero means the default.
        h.send(host_data_response::Message::Resize(WindowSize {
            cols: 0,
            rows: 5000,
        }))
        .await;
        h.input("stty size\n").await;
        h.output_until("1000 80").await;
    }

    #[tokio::test]
    async fn close_kills_the_process_and_reports_why() {
        let mut h = Harness::start();
        h.input("echo started; sleep 1000\n").await;
        h.output_until("started\r\n").await;
        h.close
            .take()
            .unwrap()
            .send(CloseReason::ClosedByServer)
            .unwrap();
        let exit = h.exit().await;
        // SIGHUP, or SIGKILL when the shell was too busy (forking) to die of
        // SIGHUP within the grace period.
        assert!(
            matches!(exit.status, Some(exit_status::Status::Signal(1 | 9))),
            "{exit:?}"
        );
        assert_eq!(exit.message, "session closed by the server");
    }

    #[tokio::test]
    async fn broken_stream_ends_the_session_without_exit() {
        let mut h = Harness::start();
        h.input("echo started\n").await;
        h.output_until("started\r\n").await;
        h.down
            .as_ref()
            .unwrap()
            .send(Err(tonic::Status::unavailable("connection lost")))
            .await
            .unwrap();
        timeout(TEST_DEADLINE, &mut h.relay)
            .await
            .expect("relay did not return")
            .unwrap();
        // Whatever output was queued, no Exit follows a broken stream.
        while let Some(message) = h.up.recv().await {
            assert!(
                matches!(
                    message.message,
                    Some(
                        host_data_request::Message::Output(_)
                            | host_data_request::Message::InputAck(_)
                    )
                ),
                "{message:?}"
            );
        }
    }

    /// A reader like a PTY under a flood: at most `per_read` bytes a read,
    /// and `Pending` once the bytes made ready so far are taken.
    struct PtyLike {
        data: Vec<u8>,
        taken: usize,
        ready: usize,
        per_read: usize,
    }

    impl AsyncRead for PtyLike {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let end = self.ready.min(self.data.len());
            if self.taken == end && end < self.data.len() {
                return std::task::Poll::Pending;
            }
            let n = (end - self.taken).min(self.per_read).min(buf.remaining());
            let start = self.taken;
            buf.put_slice(&self.data[start..start + n]);
            self.taken += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_flood_goes_up_in_messages_larger_than_one_pty_read() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut pty = PtyLike {
            data: data.clone(),
            taken: 4096,
            ready: data.len(),
            per_read: 4096,
        };
        // The first 4 KiB came from the blocking read; what is ready joins it.
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        buf[..4096].copy_from_slice(&data[..4096]);
        let n = 4096 + read_ready(&mut pty, &mut buf[4096..]);
        assert_eq!(n, READ_CHUNK_BYTES);
        assert_eq!(buf, data[..READ_CHUNK_BYTES]);
    }

    #[test]
    fn a_lone_write_goes_up_at_once() {
        let mut pty = PtyLike {
            data: vec![b'x'; 10_000],
            taken: 0,
            ready: 3,
            per_read: 4096,
        };
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        // What is ready, and no wait for more.
        assert_eq!(read_ready(&mut pty, &mut buf), 3);
        assert_eq!(read_ready(&mut pty, &mut buf), 0);
        // The end of output stops it too.
        let mut ended = PtyLike {
            data: vec![b'y'; 5],
            taken: 0,
            ready: 5,
            per_read: 4096,
        };
        assert_eq!(read_ready(&mut ended, &mut buf), 5);
        assert_eq!(read_ready(&mut ended, &mut buf), 0);
    }

    #[tokio::test]
    async fn a_stalled_stream_stops_the_pty_reader() {
        let mut h = Harness::start();
        // Far more output than the queue holds; nobody reads it yet.
        h.input("head -c 2000000 /dev/zero | tr '\\0' x; echo; echo done-$((1+1))\n")
            .await;
        // The queue fills up to its bound and stays there: the reader is
        // parked on the full queue, not buffering elsewhere.
        timeout(TEST_DEADLINE, async {
            while h.up.len() < DATA_QUEUE_MESSAGES {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("queue never filled");
        assert_eq!(h.up.len(), DATA_QUEUE_MESSAGES);
        assert!(!h.relay.is_finished());
        // Reading again lets everything through.
        h.output_until("done-2").await;
    }
}
