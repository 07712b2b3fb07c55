//! Who is in the job right now: the guests the server says are attached
//! to this host's sessions, and a count of the input they sent. Kept on a
//! [`watch`] channel that [`Host::guests`](crate::Host::guests) returns,
//! and that the hold ([`crate::hold`]) reads.

use std::collections::BTreeMap;

use rendezvous_proto::{GuestAttached, GuestDetached, Role};
use tokio::sync::watch;

/// A guest's role, as the server told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestRole {
    /// May type, resize and open shells.
    ReadWrite,
    /// May only watch.
    ReadOnly,
}

impl GuestRole {
    /// `read-write` or `read-only`, as the job's log shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWrite => "read-write",
            Self::ReadOnly => "read-only",
        }
    }
}

impl std::fmt::Display for GuestRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One guest attached to one of this host's sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedGuest {
    /// The server-chosen guest ID (not a credential).
    pub guest_id: String,
    /// The session it is attached to.
    pub session_id: String,
    /// Its role.
    pub role: GuestRole,
    /// The `sub` of the guest token it presented, if any (at most 256
    /// bytes, as the server cuts it); `None` for a guest with a secret.
    pub sub: Option<String>,
}

/// The guests of a host as the server reports them, and their input.
/// Changed by the host's control connection (attach, detach; cleared when
/// the connection is lost, since its sessions end with it) and by each
/// session's Data stream (input).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guests {
    /// Attached guests by guest ID, with how many of the guest's streams
    /// are open (a guest resuming on a new stream is counted twice until
    /// its old stream closes).
    attached: BTreeMap<String, (AttachedGuest, u32)>,
    /// Input messages received from guests, on all sessions, since the
    /// host started. Grows by one per Input message.
    inputs: u64,
}

impl Guests {
    /// The guests attached now, one entry per guest ID, in ID order.
    pub fn attached(&self) -> impl Iterator<Item = &AttachedGuest> {
        self.attached.values().map(|(guest, _)| guest)
    }

    /// How many distinct guests are attached now.
    pub fn count(&self) -> usize {
        self.attached.len()
    }

    /// Input messages received from guests since the host started; a
    /// change means a guest typed (or its terminal answered a query).
    pub fn inputs(&self) -> u64 {
        self.inputs
    }
}

/// The writing side of [`Guests`], shared by the control connection and
/// the sessions.
#[derive(Debug, Clone)]
pub(crate) struct GuestsTx(pub(crate) watch::Sender<Guests>);

impl GuestsTx {
    /// A guest attached, or resumed on another stream. Returns the guest,
    /// for the log.
    pub(crate) fn attached(&self, message: GuestAttached) -> AttachedGuest {
        let role = match Role::try_from(message.role) {
            Ok(Role::ReadOnly) => GuestRole::ReadOnly,
            // The server only ever attaches the two roles; an unknown one
            // is taken for the stronger.
            _ => GuestRole::ReadWrite,
        };
        let guest = AttachedGuest {
            guest_id: message.guest_id,
            session_id: message.session_id,
            role,
            sub: (!message.sub.is_empty()).then_some(message.sub),
        };
        self.0.send_modify(|guests| {
            guests
                .attached
                .entry(guest.guest_id.clone())
                .and_modify(|(_, streams)| *streams += 1)
                .or_insert_with(|| (guest.clone(), 1));
        });
        guest
    }

    /// A guest's stream ended.
    pub(crate) fn detached(&self, message: &GuestDetached) {
        self.0.send_if_modified(|guests| {
            let Some((_, streams)) = guests.attached.get_mut(&message.guest_id) else {
                return false;
            };
            *streams -= 1;
            if *streams == 0 {
                guests.attached.remove(&message.guest_id);
            }
            true
        });
    }

    /// The control connection is gone, and every session with it.
    pub(crate) fn clear(&self) {
        self.0.send_if_modified(|guests| {
            let had = !guests.attached.is_empty();
            guests.attached.clear();
            had
        });
    }

    /// A guest sent an Input message.
    pub(crate) fn input(&self) {
        self.0.send_modify(|guests| guests.inputs += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach(id: &str, role: Role, sub: &str) -> GuestAttached {
        GuestAttached {
            guest_id: id.into(),
            session_id: "s".into(),
            role: role.into(),
            sub: sub.into(),
            resumed: false,
        }
    }

    fn detach(id: &str) -> GuestDetached {
        GuestDetached {
            guest_id: id.into(),
            session_id: "s".into(),
        }
    }

    #[test]
    fn a_resumed_guest_stays_until_its_last_stream_closes() {
        let tx = GuestsTx(watch::Sender::new(Guests::default()));
        let rx = tx.0.subscribe();
        let guest = tx.attached(attach("g1", Role::ReadOnly, "alice"));
        assert_eq!(guest.role, GuestRole::ReadOnly);
        assert_eq!(guest.sub.as_deref(), Some("alice"));
        tx.attached(attach("g1", Role::ReadOnly, "alice"));
        tx.detached(&detach("g1"));
        assert_eq!(rx.borrow().count(), 1);
        tx.detached(&detach("g1"));
        assert_eq!(rx.borrow().count(), 0);
        // An unknown guest's detach changes nothing.
        tx.detached(&detach("g2"));
        assert_eq!(rx.borrow().count(), 0);
    }

    #[test]
    fn clearing_forgets_guests_but_not_input() {
        let tx = GuestsTx(watch::Sender::new(Guests::default()));
        let guest = tx.attached(attach("g1", Role::ReadWrite, ""));
        assert_eq!(guest.sub, None);
        tx.input();
        tx.input();
        tx.clear();
        let guests = tx.0.borrow().clone();
        assert_eq!(guests.count(), 0);
        assert_eq!(guests.inputs(), 2);
    }
}
