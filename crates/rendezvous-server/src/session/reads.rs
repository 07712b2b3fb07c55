//! What one guest is sent: output at its cursor, within its acknowledged
//! window (bytes), and the acks that open that window and the message
//! window its stream keeps (see `crate::guest_stream`).

use std::time::Instant;

use super::output::Found;
use super::{
    MAX_WINDOW_BYTES, MIN_WINDOW_BYTES, Read, Session, SessionError, UNACKED_MESSAGE_BYTES, lock,
};

impl Session {
    /// Reads output for the guest's stream with this `attachment` number at
    /// `cursor` (at most `max_output_message_bytes`, and within the guest's
    /// acknowledged window), and records the guest's new cursor for
    /// backpressure. [`Read::Replaced`] once the guest has resumed on
    /// another stream or left. Slices are joined after the lock is
    /// released, so the host's output and other guests never wait on it.
    pub fn read_attached(&self, guest_id: &str, attachment: u64, cursor: u64) -> Read {
        self.read_inner(guest_id, Some(attachment), cursor)
    }

    pub(super) fn read_inner(&self, guest_id: &str, attachment: Option<u64>, cursor: u64) -> Read {
        let mut st = lock(&self.state);
        if let Some(attachment) = attachment
            && st
                .guests
                .get(guest_id)
                .is_none_or(|g| g.attachment != attachment)
        {
            return Read::Replaced;
        }
        let mut max = self.config.max_output_message_bytes;
        if st.guests.get(guest_id).is_some_and(|g| !g.has_acked) {
            max = max.min(UNACKED_MESSAGE_BYTES);
        }
        if let Some(guest) = st.guests.get(guest_id)
            && let Some(window) = guest.window
            && cursor >= st.output.start()
            && cursor < st.output.end()
        {
            // Acknowledged flow control: nothing at or past acked + window.
            let limit = guest.acked + window;
            if cursor >= limit {
                return Read::Nothing;
            }
            max = max.min(usize::try_from(limit - cursor).unwrap_or(usize::MAX));
        }
        let found = st.output.read(cursor, max);
        let moved_to = match &found {
            Found::Output(slices) => Some(slices.offset + slices.len as u64),
            Found::Lagged(missed) => Some(cursor + missed),
            Found::AtEnd => None,
        };
        let exit = st.exit.clone();
        if let Some(to) = moved_to
            && let Some(guest) = st.guests.get_mut(guest_id)
        {
            guest.cursor = to;
            // What the guest did itself: a lag jump is not progress, and a
            // guest with a byte window shows progress by its acks alone
            // (its transport reads ahead of what it renders).
            if guest.window.is_none() && matches!(found, Found::Output(_)) {
                guest.last_progress = Instant::now();
            }
            // Skipped bytes need no acknowledgement.
            if matches!(found, Found::Lagged(_)) {
                guest.acked = guest.acked.max(to);
            }
        }
        drop(st);
        if moved_to.is_some() {
            self.room.notify_one();
        }
        match found {
            Found::Output(slices) => Read::Output {
                offset: slices.offset,
                data: slices.join(),
            },
            Found::Lagged(missed) => Read::Lagged { missed },
            Found::AtEnd => exit.map_or(Read::Nothing, Read::Exit),
        }
    }

    /// Gives a guest an acknowledged window of `window_bytes` (clamped to
    /// [`MIN_WINDOW_BYTES`]..=[`MAX_WINDOW_BYTES`]): from now on it is sent
    /// nothing at or past its last [`Session::ack`] offset plus the window,
    /// and a guest at its window stops moving, so it counts as behind for
    /// backpressure. For clients whose transport reads ahead of what they
    /// render, as a browser's fetch does. Unknown guests are ignored.
    pub fn set_window(&self, guest_id: &str, window_bytes: u32) {
        let window = u64::from(window_bytes).clamp(MIN_WINDOW_BYTES, MAX_WINDOW_BYTES);
        if let Some(guest) = lock(&self.state).guests.get_mut(guest_id) {
            guest.window = Some(window);
        }
    }

    /// Records that a guest has processed output up to `offset`
    /// (exclusive), which opens its byte window, and `messages` events of
    /// its current stream, which opens its message window. Both only move
    /// forward; an offset past what was sent counts as all that was sent.
    ///
    /// # Errors
    /// [`SessionError::UnknownGuest`].
    pub fn ack(&self, guest_id: &str, offset: u64, messages: u64) -> Result<(), SessionError> {
        let mut st = lock(&self.state);
        let guest = st
            .guests
            .get_mut(guest_id)
            .ok_or(SessionError::UnknownGuest)?;
        let offset = offset.min(guest.cursor);
        let mut moved = false;
        if offset > guest.acked {
            guest.acked = offset;
            moved = true;
        }
        if messages > guest.acked_messages {
            guest.acked_messages = messages;
            moved = true;
        }
        if moved {
            guest.last_progress = Instant::now();
            guest.has_acked = true;
        }
        drop(st);
        if moved {
            // Wake the guest's stream, which may be waiting at its window.
            self.changed.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    /// How many events the guest has acknowledged on the stream with this
    /// `attachment` number; `None` when that stream is no longer the
    /// guest's (it resumed elsewhere, or left).
    pub fn acked_messages(&self, guest_id: &str, attachment: u64) -> Option<u64> {
        lock(&self.state)
            .guests
            .get(guest_id)
            .filter(|g| g.attachment == attachment)
            .map(|g| g.acked_messages)
    }
}
