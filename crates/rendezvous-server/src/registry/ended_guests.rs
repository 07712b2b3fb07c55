//! Guests whose session has ended, remembered for a while: a guest's
//! stream (and with it its entry in the registry's guest index) goes as
//! soon as it has sent Exit, so without this record a late `SendInput`,
//! `Resize` or `Ack` would be told `UNAUTHENTICATED` "attach again" instead
//! of the `FAILED_PRECONDITION` "the session has ended" the proto promises.
//!
//! Bounded twice: an entry lasts [`ENDED_GUEST_GRACE`], and at most
//! [`MAX_ENDED_GUESTS`] are kept (the oldest goes first). Only a digest of
//! each guest token is kept, compared in constant time.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::auth::Digest;
use crate::config::{ENDED_GUEST_GRACE, MAX_ENDED_GUESTS};

/// The record. Its owner (the registry's guest index) holds it under its
/// lock, so an entry moves from the index to here in one step.
#[derive(Debug, Default)]
pub(crate) struct EndedGuests {
    /// Guest ID → its token's digest and when its stream ended.
    by_id: HashMap<String, (Digest, Instant)>,
    /// The same guests, oldest first, for expiry.
    order: VecDeque<(String, Instant)>,
}

impl EndedGuests {
    /// Remembers `guest_id`, whose session ended, with its token's digest.
    pub(crate) fn insert(&mut self, guest_id: &str, token: Digest, now: Instant) {
        self.by_id.insert(guest_id.to_owned(), (token, now));
        self.order.push_back((guest_id.to_owned(), now));
        self.prune(now);
    }

    /// Whether `guest_id` with `token` is a guest whose session ended less
    /// than [`ENDED_GUEST_GRACE`] ago.
    pub(crate) fn contains(&mut self, guest_id: &str, token: &str, now: Instant) -> bool {
        self.prune(now);
        self.by_id
            .get(guest_id)
            .is_some_and(|(digest, _)| digest.matches(token))
    }

    /// How many guests are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Forgets entries past their grace, and the oldest over the bound.
    fn prune(&mut self, now: Instant) {
        while let Some((id, ended_at)) = self.order.front() {
            let expired = now.duration_since(*ended_at) >= ENDED_GUEST_GRACE;
            if !expired && self.order.len() <= MAX_ENDED_GUESTS {
                break;
            }
            // A guest ID inserted again later keeps its newer entry.
            if self.by_id.get(id).is_some_and(|(_, at)| at == ended_at) {
                self.by_id.remove(id);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_guest_is_known_by_its_token_until_its_grace_ends() {
        let mut ended = EndedGuests::default();
        let now = Instant::now();
        ended.insert("g", Digest::of("token"), now);
        assert!(ended.contains("g", "token", now));
        assert!(!ended.contains("g", "other token", now));
        assert!(!ended.contains("h", "token", now));
        assert!(!ended.contains("g", "token", now + ENDED_GUEST_GRACE));
        assert_eq!(ended.len(), 0);
    }

    #[test]
    fn ended_guests_are_bounded_and_the_oldest_goes_first() {
        let mut ended = EndedGuests::default();
        let now = Instant::now();
        for i in 0..MAX_ENDED_GUESTS + 3 {
            ended.insert(&format!("g{i}"), Digest::of("t"), now);
        }
        assert_eq!(ended.len(), MAX_ENDED_GUESTS);
        assert_eq!(ended.order.len(), MAX_ENDED_GUESTS);
        assert!(!ended.contains("g2", "t", now));
        assert!(ended.contains("g3", "t", now));
    }
}
