//! One host Data stream: the session's output coming up, its input and
//! resizes going down, each direction under credit in messages (see
//! [`rendezvous_proto::flow`]).
//!
//! The reader never leaves the host's frames unread, even while the
//! session is paused. Output the session has no room for waits in a queue
//! of at most [`HOST_OUTPUT_CREDIT_MESSAGES`] messages, and each one is
//! acknowledged as the session takes it. Backpressure is therefore the
//! absence of acknowledgements: the host stops sending, then stops reading
//! its PTY. A host that sends past its credit (the queue is full) is
//! refused with `RESOURCE_EXHAUSTED`, so a host cannot make the server hold
//! more than the credit, and the rule is tested, not assumed.
//!
//! A message the server refuses (one over the message-size limit, one it
//! cannot decode, a second DataOpen) ends the session and the call: the
//! host receives the refusal as the Data stream's status, and guests an
//! Exit whose message says that the server ended the session, and why.
//!
//! A stream that breaks, or ends without an exit status, of a host that
//! asked for a grace period, leaves the session running: the host opens a
//! new Data stream (after a reconnect, or at once), which starts with an
//! `output_ack` at the session's end offset, so the host sends exactly the
//! output the server lacks, and takes the input from the count the host
//! gives (see [`crate::session::HostLink`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use rendezvous_proto::flow::{HOST_INPUT_CREDIT_MESSAGES, HOST_OUTPUT_CREDIT_MESSAGES};
use rendezvous_proto::{ExitStatus, HostDataRequest, HostDataResponse, WindowSize};
use rendezvous_proto::{host_data_request, host_data_response};
use tokio::sync::{oneshot, watch};
use tonic::{Status, Streaming};

use crate::metrics::Metrics;
use crate::registry::{Host, gone};
use crate::session::{HostInputReader, HostLink, Session};
use crate::task_stream::TaskStream;

/// The response stream type of `HostService.Data`.
pub type DataStream = Pin<Box<dyn Stream<Item = Result<HostDataResponse, Status>> + Send>>;

/// When dropped, ends its session as "host gone" unless it already ended,
/// or, for a host that may resume, detaches the stream and leaves the
/// session to the next one: the Data stream's reader owns it.
struct SessionGuard {
    host: Arc<Host>,
    session: Arc<Session>,
    /// The stream's number (see [`HostLink::stream`]).
    stream: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.session.has_ended() {
            return;
        }
        if self.host.may_resume() {
            self.session.detach_host(self.stream);
        } else {
            self.host.end_session(
                &self.session,
                gone("the host closed the session without an exit status"),
            );
        }
    }
}

/// Serves the Data stream of `session` (already opened by `DataOpen`),
/// with the `link` [`Session::attach_host`] handed over.
pub(crate) fn serve(
    host: Arc<Host>,
    session: Arc<Session>,
    inbound: Streaming<HostDataRequest>,
    link: HostLink,
    metrics: Arc<Metrics>,
) -> DataStream {
    let HostLink {
        input,
        mut size,
        stream: number,
        replaced,
    } = link;
    // A size set while no stream served the session goes first.
    size.mark_changed();
    // Read after the link was made: the old stream, if any, can no longer
    // add output, so this is exactly where the host must go on from.
    let end = session.end_offset();
    let (output_acked, output_acked_rx) = watch::channel(end);
    let (ending, ending_rx) = oneshot::channel();
    let draining = host.draining();
    let reader = Reader {
        guard: SessionGuard {
            host,
            session: session.clone(),
            stream: number,
        },
        replaced: replaced.clone(),
        draining,
        ending: Some(ending),
        inbound,
        pending: VecDeque::with_capacity(HOST_OUTPUT_CREDIT_MESSAGES),
        exit: None,
        output_acked,
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(reader.run());
    let outbound = Outbound {
        metrics,
        session,
        input,
        size,
        first_ack: Some(end),
        output_acked: output_acked_rx,
    };
    let stream = futures::stream::unfold(outbound, |mut out| async move {
        out.next()
            .await
            .map(|message| (Ok::<_, Status>(message), out))
    })
    .take_until(replaced.cancelled_owned())
    .boxed();
    Box::pin(TaskStream::with_ending(stream, task, ending_rx))
}

/// Reads the host's messages into the session.
struct Reader {
    guard: SessionGuard,
    /// Cancelled when a newer Data stream (or the session's end) replaces
    /// this one.
    replaced: tokio_util::sync::CancellationToken,
    /// Cancelled when the server drains: the call ends with UNAVAILABLE,
    /// and the session waits for the host to resume.
    draining: tokio_util::sync::CancellationToken,
    /// Ends the host's call with a status, once (see [`Reader::refuse`]).
    ending: Option<oneshot::Sender<Status>>,
    inbound: Streaming<HostDataRequest>,
    /// Output read but not yet taken by the session (it had no room): at
    /// most [`HOST_OUTPUT_CREDIT_MESSAGES`], as the host keeps to.
    pending: VecDeque<Bytes>,
    /// The exit status, once read; applied after the pending output.
    exit: Option<ExitStatus>,
    /// The offset one past the output the session has taken.
    output_acked: watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

impl Reader {
    async fn run(mut self) {
        let session = self.guard.session.clone();
        loop {
            if self.pending.is_empty()
                && let Some(exit) = self.exit.take()
            {
                self.guard.host.end_session(&session, exit);
                return;
            }
            // Read even while the session is paused: a host that keeps to
            // its credit never has more than the pending queue holds, and
            // one that does not is refused (see `take`).
            tokio::select! {
                next = self.inbound.message(), if self.exit.is_none() => match next {
                    Ok(Some(message)) => {
                        if let Err(status) = self.take(message.message) {
                            self.refuse(status);
                            return;
                        }
                    }
                    // The guard ends the session: the host left without
                    // an exit status.
                    Ok(None) => return,
                    // A broken connection: the host has gone, and the
                    // guard says so.
                    Err(status) if is_broken_connection(&status) => return,
                    // Over the message-size limit, or undecodable: the
                    // server refuses it.
                    Err(status) => {
                        self.refuse(status);
                        return;
                    }
                },
                () = session.wait_for_room(), if !self.pending.is_empty() => {
                    if let Some(data) = self.pending.pop_front() {
                        if !session.push_host_output(self.guard.stream, &data) {
                            // Replaced: the new stream takes it from here.
                            return;
                        }
                        self.output_acked.send_replace(session.end_offset());
                    }
                }
                () = self.replaced.cancelled() => return,
                () = self.draining.cancelled() => {
                    if let Some(exit) = self.exit.take() {
                        // The session ended: its last output and its exit
                        // are kept, not left for a host that will not
                        // resume it (bounded by the credit).
                        for data in self.pending.drain(..) {
                            session.push_host_output(self.guard.stream, &data);
                        }
                        self.guard.host.end_session(&session, exit);
                    }
                    if let Some(ending) = self.ending.take() {
                        let _ = ending.send(crate::registry::RegistryError::Draining.into());
                    }
                    return;
                }
            }
        }
    }

    /// Ends the session, telling its guests that the server ended it and
    /// why, and ends the host's call with `status`.
    fn refuse(&mut self, status: Status) {
        let session = &self.guard.session;
        tracing::warn!(
            task = %self.guard.host.task_id(), host = %self.guard.host.name(),
            session = session.id(), %status, "ending a session: its Data stream failed"
        );
        let reason = format!(
            "the server ended the session: the host's Data stream failed: {}",
            status.message()
        );
        // Sent first: the host's response stream ends with the session.
        if let Some(ending) = self.ending.take() {
            let _ = ending.send(status);
        }
        self.guard.host.end_session(session, gone(&reason));
    }

    /// Takes one message from the host; `Err` ends the session and the
    /// call with that status.
    fn take(&mut self, message: Option<host_data_request::Message>) -> Result<(), Status> {
        match message {
            Some(host_data_request::Message::Output(data)) => {
                self.metrics.host_output_bytes.inc_by(data.len() as u64);
                if self.pending.len() >= HOST_OUTPUT_CREDIT_MESSAGES {
                    return Err(Status::resource_exhausted(format!(
                        "the host sent more than {HOST_OUTPUT_CREDIT_MESSAGES} Output messages \
                         past the server's output_ack; a host must keep to its output credit \
                         (upgrade rendezvous-host)"
                    )));
                }
                if !data.is_empty() {
                    self.pending.push_back(data);
                }
            }
            Some(host_data_request::Message::Exit(status)) => self.exit = Some(status),
            Some(host_data_request::Message::InputAck(count)) => {
                self.guard.session.ack_host_input(count);
            }
            Some(host_data_request::Message::Open(_)) => {
                return Err(Status::invalid_argument(
                    "the host sent a second DataOpen on one Data stream",
                ));
            }
            // A message kind newer than this server.
            None => {}
        }
        Ok(())
    }
}

/// What goes down to the host: output acknowledgements, resizes, and input
/// within the host's input credit.
struct Outbound {
    /// For the input relay latency.
    metrics: Arc<Metrics>,
    session: Arc<Session>,
    input: HostInputReader,
    size: watch::Receiver<WindowSize>,
    /// The session's end offset when the stream began, sent first.
    first_ack: Option<u64>,
    output_acked: watch::Receiver<u64>,
}

impl Outbound {
    /// The next message for the host; `None` when the session's side is
    /// gone.
    async fn next(&mut self) -> Option<HostDataResponse> {
        let message = |m| {
            Some(HostDataResponse {
                message: Some(m),
                input_origin: None,
            })
        };
        if let Some(end) = self.first_ack.take() {
            return message(host_data_response::Message::OutputAck(end));
        }
        loop {
            // A pending resize goes before any queued input (also input queued
            // before it, which is harmless): a guest that saw
            // the new size (its Size event) and typed `stty size` must get
            // the new size, so the PTY is resized before that input is
            // written (the host applies them in the order they come).
            match self.size.has_changed() {
                Ok(true) => {
                    let size = *self.size.borrow_and_update();
                    return message(host_data_response::Message::Resize(size));
                }
                Ok(false) => {}
                Err(_) => return None,
            }
            let credit = self.input.next_number()
                < self.session.host_input_acked() + HOST_INPUT_CREDIT_MESSAGES;
            if credit && let Some((input, received)) = self.input.try_next(&self.session) {
                if let Some(received) = received {
                    self.metrics
                        .input_relay_seconds
                        .observe(received.elapsed().as_secs_f64());
                }
                return Some(input);
            }
            tokio::select! {
                biased;
                changed = self.output_acked.changed() => {
                    changed.ok()?;
                    let offset = *self.output_acked.borrow_and_update();
                    return message(host_data_response::Message::OutputAck(offset));
                }
                changed = self.size.changed() => {
                    changed.ok()?;
                    let size = *self.size.borrow_and_update();
                    return message(host_data_response::Message::Resize(size));
                }
                changed = self.input.changed() => {
                    if !changed {
                        return None;
                    }
                }
            }
        }
    }
}

/// Whether `status` is a broken transport (the host's connection was
/// reset, closed or timed out) rather than something the server refused:
/// somewhere in its source chain is the transport's own error (hyper's,
/// h2's or an I/O error), or tonic gave it a transport's code. The
/// server's own refusals (the message limit, a decoding error) have
/// neither.
fn is_broken_connection(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<hyper::Error>() || error.is::<h2::Error>() || error.is::<std::io::Error>() {
            return true;
        }
        source = error.source();
    }
    matches!(
        status.code(),
        tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::RelayConfig;
    use bytes::Bytes;
    use futures::FutureExt;
    use rendezvous_proto::Role;

    /// Found by the browser's resize test: a guest that saw its new size
    /// and typed `stty size` at once had its input sent to the host before
    /// the resize, so the shell printed the old size.
    #[tokio::test]
    async fn a_resize_goes_to_the_host_before_input_sent_after_it() {
        let session = Arc::new(Session::new("s".into(), 80, 24, RelayConfig::default()));
        session.add_guest("g".into(), Role::ReadWrite, 80, 24, None);
        let link = session.attach_host(0).expect("the host attaches");
        let mut outbound = Outbound {
            metrics: Arc::default(),
            session: session.clone(),
            input: link.input,
            size: link.size,
            first_ack: None,
            output_acked: watch::channel(0).1,
        };
        session
            .resize_guest("g", 55, 20)
            .expect("the guest resizes");
        session
            .send_input("g", 0, Bytes::from_static(b"stty size\r"))
            .await
            .expect("the input is queued");
        let first = outbound.next().now_or_never().flatten();
        assert_eq!(
            first.and_then(|m| m.message),
            Some(host_data_response::Message::Resize(WindowSize {
                cols: 55,
                rows: 20
            }))
        );
        let second = outbound.next().now_or_never().flatten();
        assert_eq!(
            second.and_then(|m| m.message),
            Some(host_data_response::Message::Input(Bytes::from_static(
                b"stty size\r"
            )))
        );
    }
}
