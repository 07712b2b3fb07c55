//! What only tests use: guests attached without a token, reads without an
//! attachment, and a look at the guests' bookkeeping.

use rendezvous_proto::Role;

use super::{NewGuest, Read, Session, lock};

impl Session {
    /// Attaches a new guest of `role` that cannot be resumed, with no
    /// limit on guests. Returns its cursor.
    pub(crate) fn add_guest(
        &self,
        guest_id: String,
        role: Role,
        cols: u32,
        rows: u32,
        resume_offset: Option<u64>,
    ) -> u64 {
        let new = NewGuest {
            role,
            cols,
            rows,
            resume_offset,
            resume_guest: None,
            signed_resume: None,
            max_guests: usize::MAX,
        };
        self.attach_locked(&mut lock(&self.state), guest_id, None, new)
            .map_or(0, |a| a.cursor)
    }

    /// Detaches a guest whatever stream serves it.
    pub(crate) fn remove_guest(&self, guest_id: &str) {
        self.remove(guest_id, None);
    }

    /// Reads for a guest at `cursor`, whatever stream serves it.
    pub(crate) fn read(&self, guest_id: &str, cursor: u64) -> Read {
        self.read_inner(guest_id, None, cursor)
    }

    pub(crate) fn lock_primary(&self) -> Option<String> {
        lock(&self.state).guests.primary()
    }

    pub(crate) fn lock_departed(&self) -> Vec<String> {
        lock(&self.state).guests.departed_ids()
    }
}
