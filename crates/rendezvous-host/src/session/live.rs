//! One running session, apart from any connection: its PTY process, the
//! reader that fills its [`OutputLog`], and the writer that takes its
//! input. It outlives Data streams and control connections, so that a
//! host that lost its server keeps the shell running and resumes it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use rendezvous_proto::input_seqs::InputSeqs;
use rendezvous_proto::{ExitStatus, GuestInputSeq};
use tokio::io::AsyncReadExt as _;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, timeout_at};

use super::log::OutputLog;
use super::{
    CloseReason, EXIT_DRAIN_IDLE, EXIT_DRAIN_MAX, READ_CHUNK_BYTES, end_process, exit_status,
    exit_unknown, input::write_pty, read_ready,
};
use crate::pty::{self, PtyProcess, PtySize};

/// Bound of the queue of Input messages between the Data streams and the
/// PTY writer, in messages: twice a stream's input credit, since a stream
/// that replaces a broken one may be sent a full credit while the old
/// stream's last messages still wait to be written.
pub(crate) const INPUT_QUEUE_MESSAGES: usize =
    2 * rendezvous_proto::flow::HOST_INPUT_CREDIT_MESSAGES as usize;

/// What the Data streams share with a running session.
#[derive(Debug, Clone)]
pub(crate) struct LiveSession {
    /// The server-chosen session ID.
    pub(crate) id: String,
    /// Its resume ticket, from OpenSession.
    pub(crate) ticket: String,
    /// The output, and the exit status once the session has ended.
    pub(crate) log: Arc<watch::Sender<OutputLog>>,
    /// Input for the PTY, in order.
    pub(crate) input: mpsc::Sender<Bytes>,
    /// Input messages taken from Data streams over the session's life.
    pub(crate) input_received: Arc<AtomicU64>,
    /// Per guest, the seq after its last input taken (from each Input's
    /// `input_origin`): reported on resume, so that a server that lost its
    /// state resumes guests' input exactly there.
    pub(crate) guest_inputs: Arc<Mutex<InputSeqs>>,
    /// Input messages written to the PTY over the session's life.
    pub(crate) input_written: watch::Receiver<u64>,
    /// The PTY size the server asks for.
    pub(crate) size: Arc<watch::Sender<PtySize>>,
}

impl LiveSession {
    /// Input messages taken so far (what `DataOpen.input_applied` says).
    pub(crate) fn input_received(&self) -> u64 {
        self.input_received.load(Ordering::Acquire)
    }

    /// Counts one more Input message taken, from the guest `origin` says.
    pub(crate) fn count_input(&self, origin: Option<&GuestInputSeq>) {
        if let Some(origin) = origin {
            self.guest_inputs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(&origin.guest_id, origin.next_seq);
        }
        self.input_received.fetch_add(1, Ordering::AcqRel);
    }

    /// What `ResumeSession.guest_inputs` says.
    pub(crate) fn guest_inputs(&self) -> Vec<GuestInputSeq> {
        self.guest_inputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .to_wire()
    }
}

/// Starts the session on `process`: returns what streams share, the sender
/// that closes it, and the task to run (it ends once the process has ended
/// and its exit status is in the log).
pub(crate) fn start(
    id: String,
    ticket: String,
    process: PtyProcess,
    size: PtySize,
    retain: usize,
) -> (
    LiveSession,
    oneshot::Sender<CloseReason>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let log = Arc::new(watch::Sender::new(OutputLog::new(retain)));
    let (input, queue) = mpsc::channel(INPUT_QUEUE_MESSAGES);
    let (written_tx, input_written) = watch::channel(0u64);
    let size = Arc::new(watch::Sender::new(size));
    let (close, closed) = oneshot::channel();
    let live = LiveSession {
        id: id.clone(),
        ticket,
        log: log.clone(),
        input,
        input_received: Arc::new(AtomicU64::new(0)),
        guest_inputs: Arc::default(),
        input_written,
        size: size.clone(),
    };
    // Subscribed now, so that no resize is missed before the task runs.
    let sizes = size.subscribe();
    let task = run(id, process, log, queue, written_tx, sizes, closed);
    (live, close, task)
}

async fn run(
    id: String,
    process: PtyProcess,
    log: Arc<watch::Sender<OutputLog>>,
    queue: mpsc::Receiver<Bytes>,
    written: watch::Sender<u64>,
    sizes: watch::Receiver<PtySize>,
    closed: oneshot::Receiver<CloseReason>,
) {
    let PtyProcess {
        mut reader,
        writer,
        mut child,
        processes,
    } = process;
    let close = async move { closed.await.unwrap_or(CloseReason::HostShutdown) };
    let write = write_pty(&id, writer, queue, sizes, written);
    let main = async {
        let mut pump = Box::pin(pump_output(&mut reader, &mut child, &log));
        tokio::pin!(close);
        let ended = tokio::select! {
            exit = &mut pump => Ok(exit),
            reason = &mut close => Err(reason),
        };
        // `pump` borrows the child: let it go first.
        drop(pump);
        match ended {
            Ok(exit) => {
                end_process(processes, &mut child, &id).await;
                exit
            }
            Err(reason) => {
                tracing::info!(session_id = id, ?reason, "ending session");
                let mut exit = match processes.terminate(&mut child).await {
                    Ok(status) => exit_status(status),
                    Err(e) => exit_unknown(&e),
                };
                exit.message = reason.message().to_owned();
                exit
            }
        }
    };
    tokio::pin!(write, main);
    // The writer never ends by itself: it runs beside the rest.
    let exit = tokio::select! {
        exit = &mut main => exit,
        () = &mut write => (&mut main).await,
    };
    tracing::debug!(session_id = id, ?exit, "session ended");
    log.send_modify(|log| log.exit = Some(exit));
}

/// Reads the PTY into `log` while it has room, until the process has
/// exited and its output is drained; returns its exit status.
async fn pump_output(
    reader: &mut pty_process::OwnedReadPty,
    child: &mut Child,
    log: &watch::Sender<OutputLog>,
) -> ExitStatus {
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut room = log.subscribe();
    // The exit status, and when draining must stop.
    let mut exited: Option<(ExitStatus, Instant)> = None;
    loop {
        // Wait for room: the server has confirmed enough.
        if !room.borrow_and_update().has_room() {
            let status = tokio::select! {
                changed = room.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
                status = child.wait(), if exited.is_none() => status,
            };
            let status = status.map_or_else(|e| exit_unknown(&e), exit_status);
            // Output the PTY still holds waits for room, at most this long.
            exited = Some((status, Instant::now() + EXIT_DRAIN_MAX));
            continue;
        }
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
                let data = Bytes::copy_from_slice(&buf[..n]);
                log.send_modify(|log| log.push(data));
            }
            Err(e) if pty::is_end_of_output(&e) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the PTY failed");
                break;
            }
        }
    }
    match exited {
        Some((exit, _)) => exit,
        None => child
            .wait()
            .await
            .map_or_else(|e| exit_unknown(&e), exit_status),
    }
}
