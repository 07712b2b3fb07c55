//! A guest's view of a session as a stream of events: Attached first, then
//! the effective size whenever it changes, output at the guest's cursor,
//! Lagged when the cursor fell out of the retained output, HostState when
//! the host goes away and comes back, and Exit last.
//! Both `Attach` and `Terminal` send this stream.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rendezvous_proto::flow::{MAX_WINDOW_MESSAGES, MIN_WINDOW_MESSAGES};
use rendezvous_proto::{Attached, GuestEvent, Lagged, Output, WindowSize, guest_event::Event};
use tokio::sync::{oneshot, watch};
use tokio_util::task::AbortOnDropHandle;
use tonic::Status;

use crate::metrics::Metrics;
use crate::registry::GuestHandle;
use crate::session::Read;

/// The response stream type of `Attach` and `Terminal`.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<GuestEvent, Status>> + Send>>;

/// One guest's cursor into its session. Dropping it detaches the guest.
#[derive(Debug)]
pub struct GuestStream {
    guest: GuestHandle,
    attached: Option<Attached>,
    /// Offset of the next byte to send.
    cursor: u64,
    last_size: Option<WindowSize>,
    /// Whether the guest was last told that the host is reconnecting.
    told_reconnecting: bool,
    changed: watch::Receiver<u64>,
    done: bool,
    /// The guest resumed on another stream: this one ends with ABORTED.
    replaced: bool,
    /// Ends the stream with this status (e.g. the Terminal reader's error).
    abort: Option<oneshot::Receiver<Status>>,
    /// A task serving this guest's requests, ended with the stream.
    _reader: Option<AbortOnDropHandle<()>>,
    /// Counts what the stream sends.
    metrics: Arc<Metrics>,
    /// The guest's message window (`AttachRequest.window_messages`,
    /// clamped), if it asked for one: no event but Exit goes out while
    /// `sent` is this far past its acknowledged count.
    window_messages: Option<u64>,
    /// Events sent after `Attached` (Output, Lagged, Size).
    sent: u64,
    /// Cancelled when the server drains: the stream then ends with
    /// UNAVAILABLE, and the guest resumes.
    draining: tokio_util::sync::CancellationToken,
}

impl GuestStream {
    /// A stream that starts with `attached`, then reads from `cursor`;
    /// what it sends is counted in `metrics`.
    pub fn new(guest: GuestHandle, attached: Attached, cursor: u64, metrics: Arc<Metrics>) -> Self {
        let changed = guest.session().subscribe();
        let draining = guest.draining();
        Self {
            guest,
            attached: Some(attached),
            cursor,
            last_size: None,
            told_reconnecting: false,
            changed,
            done: false,
            replaced: false,
            abort: None,
            _reader: None,
            metrics,
            window_messages: None,
            sent: 0,
            draining,
        }
    }

    /// Gives the stream a message window of `window_messages` events
    /// (clamped to [`MIN_WINDOW_MESSAGES`]..=[`MAX_WINDOW_MESSAGES`]); 0
    /// leaves it without one. See [`rendezvous_proto::flow`].
    pub fn with_window_messages(mut self, window_messages: u32) -> Self {
        if window_messages > 0 {
            let window = window_messages.clamp(MIN_WINDOW_MESSAGES, MAX_WINDOW_MESSAGES);
            self.window_messages = Some(u64::from(window));
        }
        self
    }

    /// Whether the guest's message window is full: it has not acknowledged
    /// enough of the events already sent. False for a stream that is no
    /// longer the guest's, so that it reads on and learns it was replaced.
    fn at_window(&self) -> bool {
        let Some(window) = self.window_messages else {
            return false;
        };
        let session = self.guest.session();
        session
            .acked_messages(self.guest.id(), self.guest.attachment())
            .is_some_and(|acked| self.sent >= acked.saturating_add(window))
    }

    /// Ties a request-reading task to this stream: the task is aborted when
    /// the stream is dropped, and a status sent on `abort` ends the stream.
    pub fn with_reader(
        mut self,
        reader: AbortOnDropHandle<()>,
        abort: oneshot::Receiver<Status>,
    ) -> Self {
        self._reader = Some(reader);
        self.abort = Some(abort);
        self
    }

    /// The guest's ID.
    pub fn guest_id(&self) -> &str {
        self.guest.id()
    }

    /// The input sequence number the guest's next input carries
    /// (`Attached.next_input_seq`); 0 once `Attached` has been sent.
    pub fn next_input_seq(&self) -> u64 {
        self.attached.as_ref().map_or(0, |a| a.next_input_seq)
    }

    /// The guest's session.
    pub fn session(&self) -> &std::sync::Arc<crate::session::Session> {
        self.guest.session()
    }

    /// The next event, or `None` after Exit.
    pub async fn next(&mut self) -> Option<GuestEvent> {
        let event = |e| Some(GuestEvent { event: Some(e) });
        if let Some(attached) = self.attached.take() {
            return event(Event::Attached(attached));
        }
        if self.done {
            return None;
        }
        let session = self.guest.session().clone();
        loop {
            self.changed.borrow_and_update();
            if self.at_window() {
                // Wait for an ack (or any change that ends the wait).
                if self.changed.changed().await.is_err() {
                    return None;
                }
                continue;
            }
            let host_state = session.host_state();
            if host_state.reconnecting != self.told_reconnecting {
                self.told_reconnecting = host_state.reconnecting;
                self.sent += 1;
                return event(Event::HostState(host_state));
            }
            let size = session.size();
            if self.last_size != Some(size) {
                self.last_size = Some(size);
                self.sent += 1;
                return event(Event::Size(size));
            }
            match session.read_attached(self.guest.id(), self.guest.attachment(), self.cursor) {
                Read::Output { offset, data } => {
                    self.cursor = offset + data.len() as u64;
                    self.sent += 1;
                    self.metrics.guest_output_bytes.inc_by(data.len() as u64);
                    return event(Event::Output(Output { offset, data }));
                }
                Read::Lagged { missed } => {
                    self.cursor += missed;
                    self.sent += 1;
                    self.metrics.lagged_bytes.inc_by(missed);
                    self.metrics.guest_lags.inc();
                    return event(Event::Lagged(Lagged {
                        missed_bytes: missed,
                    }));
                }
                Read::Exit(status) => {
                    self.done = true;
                    return event(Event::Exit(status));
                }
                Read::Replaced => {
                    self.done = true;
                    self.replaced = true;
                    return None;
                }
                Read::Nothing => {}
            }
            if self.changed.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The stream as a tonic response body.
    pub fn into_stream(self) -> EventStream {
        Box::pin(futures::stream::unfold(self, |mut me| async move {
            if me.done {
                return None;
            }
            let draining = me.draining.clone();
            let item = tokio::select! {
                biased;
                () = draining.cancelled(), if me.attached.is_none() => {
                    if me.guest.session().has_ended() {
                        // Its Exit goes out even while draining.
                        me.next_item().await
                    } else {
                        me.done = true;
                        Some(Err(crate::registry::RegistryError::Draining.into()))
                    }
                }
                item = me.next_item() => item,
            };
            let item = item.or_else(|| {
                // Said once: the stream ends after it.
                std::mem::take(&mut me.replaced).then(|| {
                    Err(Status::aborted(
                        "this guest resumed on another stream; this one has ended",
                    ))
                })
            });
            item.map(|item| (item, me))
        }))
    }

    /// The next event, or the status the stream's reader ended it with.
    async fn next_item(&mut self) -> Option<Result<GuestEvent, Status>> {
        match self.abort.take() {
            Some(mut abort) => tokio::select! {
                biased;
                status = &mut abort => match status {
                    Ok(status) => {
                        self.done = true;
                        Some(Err(status))
                    }
                    // The reader ended quietly: keep streaming output.
                    Err(_) => self.next().await.map(Ok),
                },
                event = self.next() => {
                    self.abort = Some(abort);
                    event.map(Ok)
                }
            },
            None => self.next().await.map(Ok),
        }
    }
}
