//! The guest's side of a session's event stream: what arrives after
//! `Attached`, checked against the offsets it claims.

use rendezvous_proto::flow::GUEST_ACK_EVERY_MESSAGES;
use rendezvous_proto::v1::{
    Attached, ExitStatus, GuestEvent, HostState, Lagged, Output, WindowSize, exit_status,
    guest_event,
};
use tokio::sync::watch;
use tonic::Streaming;

use crate::error::{Call, ErrorContext, GuestError};

/// One event of a session after `Attached`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Output bytes, at the offset of their first byte.
    Output(Output),
    /// This guest fell behind the retained output; `missed_bytes` were
    /// skipped and output continues at the oldest retained byte.
    Lagged(Lagged),
    /// The session's terminal size changed (another guest resized it).
    Size(WindowSize),
    /// The session's host lost its connection and is expected back
    /// (`reconnecting`), or is back. The stream stays open meanwhile.
    HostState(HostState),
    /// The session's process ended. The server ends the stream after this.
    Exit(ExitStatus),
}

/// Reads a session's events, for either attach path. Dropping it cancels
/// the call, which detaches the guest.
pub struct EventReader {
    /// The first event of the stream.
    attached: Attached,
    /// The response stream, positioned after `Attached`.
    stream: Streaming<GuestEvent>,
    /// Maps statuses from the stream to errors.
    context: ErrorContext,
    /// Where the next output must start.
    offsets: Offsets,
    /// Events taken after `Attached`.
    received: u64,
    /// What this reader has taken, for the acknowledgements that open
    /// the server's message window (see [`rendezvous_proto::flow`]).
    progress: watch::Sender<Progress>,
}

/// What a guest has processed, as its acknowledgements tell the server
/// (`AckRequest`, `TerminalAck`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// One past the last output byte taken.
    pub(crate) offset: u64,
    /// Events taken after `Attached`.
    pub(crate) messages: u64,
}

/// The offset bookkeeping of one event stream, apart from any I/O: where
/// the next output must start, given the output and `Lagged` events so far.
/// Holds invariant 6 on the guest's side: each byte arrives once, in order,
/// at the offset it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offsets {
    /// Offset the next output must start at; `None` until it is known (the
    /// first output of a replay starts wherever retained output starts).
    next: Option<u64>,
}

impl Offsets {
    /// Bookkeeping for a stream that starts at `resume_offset`, or, when
    /// `None`, wherever the server's retained output starts.
    pub(crate) fn new(resume_offset: Option<u64>) -> Self {
        Self {
            next: resume_offset,
        }
    }

    /// Offset just past the last output byte received (or resumed from).
    pub(crate) fn next(self) -> Option<u64> {
        self.next
    }

    /// Accepts output of `len` bytes at `offset` if it starts where the
    /// last one ended; a gap or an overlap is a [`GuestError::Protocol`].
    pub(crate) fn output(&mut self, offset: u64, len: usize) -> Result<(), GuestError> {
        if let Some(expected) = self.next
            && offset != expected
        {
            return Err(GuestError::Protocol(format!(
                "output at offset {offset} where {expected} was expected"
            )));
        }
        let end = u64::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .ok_or_else(|| GuestError::Protocol("output offset overflows".to_owned()))?;
        self.next = Some(end);
        Ok(())
    }

    /// Skips the `missed` bytes a `Lagged` event reports.
    pub(crate) fn lagged(&mut self, missed: u64) {
        self.next = self.next.map(|offset| offset.saturating_add(missed));
    }
}

impl EventReader {
    /// Waits for the stream's first event, which must be `Attached`.
    /// Each [`GUEST_ACK_EVERY_MESSAGES`] events taken are reported on
    /// `progress`, for the caller to acknowledge.
    pub(crate) async fn start(
        mut stream: Streaming<GuestEvent>,
        context: ErrorContext,
        resume_offset: Option<u64>,
        progress: watch::Sender<Progress>,
    ) -> Result<Self, GuestError> {
        let attached = loop {
            let message = stream
                .message()
                .await
                .map_err(|status| context.map(&status, Call::Attach))?;
            let Some(message) = message else {
                return Err(GuestError::Protocol(
                    "the stream ended before Attached".to_owned(),
                ));
            };
            match message.event {
                Some(guest_event::Event::Attached(attached)) => break attached,
                Some(other) => {
                    return Err(GuestError::Protocol(format!(
                        "the first event was {} instead of Attached",
                        event_name(&other)
                    )));
                }
                // An event kind newer than this client: skip it.
                None => {}
            }
        };
        Ok(Self {
            attached,
            stream,
            context,
            offsets: Offsets::new(resume_offset),
            received: 0,
            progress,
        })
    }

    /// The `Attached` event: session ID, guest ID and token, role, host.
    pub fn attached(&self) -> &Attached {
        &self.attached
    }

    /// Offset just past the last output byte received: what to pass as
    /// `resume_offset` when attaching again. `None` before any output.
    pub fn next_offset(&self) -> Option<u64> {
        self.offsets.next()
    }

    /// The next event, or `None` when the server ended the stream. Output
    /// offsets are checked: a gap or an overlap is a
    /// [`GuestError::Protocol`]. Events of kinds newer than this client are
    /// skipped.
    ///
    /// Cancel-safe: dropping the future loses no event, so it can be used
    /// in `tokio::select!`.
    ///
    /// # Errors
    /// The status that ended the stream, mapped to a [`GuestError`], or a
    /// protocol violation.
    pub async fn next_event(&mut self) -> Result<Option<Event>, GuestError> {
        loop {
            let message = self
                .stream
                .message()
                .await
                .map_err(|status| self.context.map(&status, Call::Attach))?;
            let Some(message) = message else {
                return Ok(None);
            };
            // Every event after Attached counts in the message window,
            // kinds this client skips too.
            self.received += 1;
            if self.received.is_multiple_of(GUEST_ACK_EVERY_MESSAGES) {
                let offset = self.offsets.next().unwrap_or(0);
                self.progress.send_replace(Progress {
                    offset,
                    messages: self.received,
                });
            }
            let event = match message.event {
                None => continue,
                Some(guest_event::Event::Attached(_)) => {
                    return Err(GuestError::Protocol(
                        "a second Attached event on one stream".to_owned(),
                    ));
                }
                Some(guest_event::Event::Output(output)) => {
                    self.offsets.output(output.offset, output.data.len())?;
                    Event::Output(output)
                }
                Some(guest_event::Event::Lagged(lagged)) => {
                    self.offsets.lagged(lagged.missed_bytes);
                    Event::Lagged(lagged)
                }
                Some(guest_event::Event::Size(size)) => Event::Size(size),
                Some(guest_event::Event::HostState(state)) => Event::HostState(state),
                Some(guest_event::Event::Exit(exit)) => Event::Exit(exit),
            };
            return Ok(Some(event));
        }
    }
}

impl std::fmt::Debug for EventReader {
    // Not derived: `Attached` holds the guest token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("session_id", &self.attached.session_id)
            .field("guest_id", &self.attached.guest_id)
            .field("next_offset", &self.offsets.next())
            .finish_non_exhaustive()
    }
}

/// The event's name in the proto, for messages.
fn event_name(event: &guest_event::Event) -> &'static str {
    match event {
        guest_event::Event::Attached(_) => "Attached",
        guest_event::Event::Output(_) => "Output",
        guest_event::Event::Exit(_) => "Exit",
        guest_event::Event::Lagged(_) => "Lagged",
        guest_event::Event::Size(_) => "Size",
        guest_event::Event::HostState(_) => "HostState",
    }
}

/// The process exit code that stands for `status`, as a shell would report
/// it: the exit code itself, 128 + N for signal N, and 255 (like ssh for a
/// lost connection) when the host could not say.
pub fn exit_code(status: &ExitStatus) -> i32 {
    match status.status {
        Some(exit_status::Status::Code(code)) => code,
        Some(exit_status::Status::Signal(signal)) => 128_i32.saturating_add(signal),
        None => 255,
    }
}

/// A sentence for `status`: "session ended with exit code 0", "session
/// ended by signal 9", "session ended: host disconnected"; the server's
/// detail, if any, follows in parentheses.
pub fn describe_exit(status: &ExitStatus) -> String {
    let mut text = match status.status {
        Some(exit_status::Status::Code(code)) => format!("session ended with exit code {code}"),
        Some(exit_status::Status::Signal(signal)) => format!("session ended by signal {signal}"),
        None if status.message.is_empty() => "session ended".to_owned(),
        None => return format!("session ended: {}", status.message),
    };
    if !status.message.is_empty() {
        text.push_str(&format!(" ({})", status.message));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: Option<exit_status::Status>, message: &str) -> ExitStatus {
        ExitStatus {
            status,
            message: message.to_owned(),
        }
    }

    #[test]
    fn output_must_start_where_the_last_one_ended() {
        let mut offsets = Offsets::new(Some(0));
        offsets.output(0, 2).unwrap();
        assert_eq!(offsets.next(), Some(2));
        offsets.output(2, 5).unwrap();
        assert_eq!(offsets.next(), Some(7));
        // A gap and an overlap are both refused, and leave the bookkeeping.
        for offset in [8, 6] {
            let error = offsets.output(offset, 1).unwrap_err();
            assert!(matches!(error, GuestError::Protocol(_)), "{error:?}");
            assert_eq!(offsets.next(), Some(7));
        }
    }

    #[test]
    fn a_replay_starts_wherever_retained_output_starts() {
        let mut offsets = Offsets::new(None);
        assert_eq!(offsets.next(), None);
        offsets.output(4096, 10).unwrap();
        assert_eq!(offsets.next(), Some(4106));
        let error = offsets.output(4000, 1).unwrap_err();
        assert!(matches!(error, GuestError::Protocol(_)), "{error:?}");
    }

    #[test]
    fn lagged_moves_the_expected_offset_past_the_missed_bytes() {
        let mut offsets = Offsets::new(Some(0));
        offsets.output(0, 2).unwrap();
        offsets.lagged(3);
        assert_eq!(offsets.next(), Some(5));
        let error = offsets.output(2, 1).unwrap_err();
        assert!(matches!(error, GuestError::Protocol(_)), "{error:?}");
        offsets.output(5, 1).unwrap();
        assert_eq!(offsets.next(), Some(6));

        // Before the start is known, a lag leaves it unknown.
        let mut unknown = Offsets::new(None);
        unknown.lagged(3);
        assert_eq!(unknown.next(), None);
    }

    #[test]
    fn output_past_the_last_offset_is_refused() {
        let mut offsets = Offsets::new(None);
        let error = offsets.output(u64::MAX, 1).unwrap_err();
        assert!(matches!(error, GuestError::Protocol(_)), "{error:?}");
        offsets.output(u64::MAX - 1, 1).unwrap();
        assert_eq!(offsets.next(), Some(u64::MAX));
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(
            exit_code(&status(Some(exit_status::Status::Code(3)), "")),
            3
        );
        assert_eq!(
            exit_code(&status(Some(exit_status::Status::Signal(9)), "")),
            137
        );
        assert_eq!(exit_code(&status(None, "host disconnected")), 255);
    }

    #[test]
    fn exits_are_described_in_words() {
        assert_eq!(
            describe_exit(&status(Some(exit_status::Status::Code(0)), "")),
            "session ended with exit code 0"
        );
        assert_eq!(
            describe_exit(&status(Some(exit_status::Status::Signal(15)), "killed")),
            "session ended by signal 15 (killed)"
        );
        assert_eq!(
            describe_exit(&status(None, "host disconnected")),
            "session ended: host disconnected"
        );
        assert_eq!(describe_exit(&status(None, "")), "session ended");
    }
}
