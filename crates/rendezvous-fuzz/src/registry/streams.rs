//! A guest's event stream as the harness holds it, and the check that
//! each event continues it exactly.

use futures::{FutureExt, StreamExt};
use rendezvous_proto::{GuestEvent, Role, guest_event};
use rendezvous_server::guest_stream::EventStream;
use tonic::Code;

use crate::pattern;

pub(super) struct GuestEntry {
    pub(super) stream: EventStream,
    pub(super) guest_id: String,
    pub(super) token: String,
    pub(super) role: Role,
    /// Offset of the next byte the stream must send; `None` until the
    /// first Output or Lagged (a stream starts where it was asked to).
    pub(super) cursor: Option<u64>,
    /// The stream sent Exit: only its end may follow.
    pub(super) exited: bool,
    /// The stream has ended.
    pub(super) done: bool,
    /// What the stream last said of the host: away (reconnecting) or
    /// not; a stream starts with the host taken as connected.
    pub(super) reconnecting: bool,
}

/// Reads one event from a guest's stream if one is ready, and checks it
/// continues the stream exactly.
pub(super) fn poll(g: &mut GuestEntry) {
    // Like tonic, never poll a stream again once it has ended.
    if g.done {
        return;
    }
    let Some(item) = tokio::task::unconstrained(g.stream.next()).now_or_never() else {
        return;
    };
    let Some(item) = item else {
        g.done = true;
        return;
    };
    assert!(!g.exited, "an event after Exit: {item:?}");
    let event = match item {
        Ok(GuestEvent { event: Some(event) }) => event,
        Ok(GuestEvent { event: None }) => panic!("an empty event"),
        Err(status) => {
            // A stream replaced by a resume ends with ABORTED.
            assert_eq!(
                status.code(),
                Code::Aborted,
                "a guest stream failed: {status:?}"
            );
            g.done = true;
            return;
        }
    };
    match event {
        guest_event::Event::Output(output) => {
            if let Some(cursor) = g.cursor {
                assert_eq!(output.offset, cursor, "output does not continue the stream");
            }
            assert!(!output.data.is_empty(), "an empty Output");
            assert!(
                pattern::matches(output.offset, &output.data),
                "output bytes differ from what the host wrote"
            );
            g.cursor = Some(output.offset + output.data.len() as u64);
        }
        guest_event::Event::Lagged(lagged) => {
            assert!(lagged.missed_bytes > 0, "a Lagged of nothing");
            g.cursor = g.cursor.map(|c| c + lagged.missed_bytes);
        }
        guest_event::Event::Exit(_) => g.exited = true,
        guest_event::Event::Size(size) => {
            assert!((1..=1000).contains(&size.cols) && (1..=1000).contains(&size.rows));
        }
        guest_event::Event::HostState(state) => {
            assert_ne!(
                state.reconnecting, g.reconnecting,
                "a HostState that tells nothing new"
            );
            assert!(!state.message.is_empty(), "a HostState without words");
            g.reconnecting = state.reconnecting;
        }
        guest_event::Event::Attached(_) => panic!("a second Attached"),
    }
}
