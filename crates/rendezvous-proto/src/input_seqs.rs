//! Where each guest's input stands in a session, kept by both the server
//! and the host so that a server that lost its state (a restart, another
//! replica) resumes guests' input exactly where the host has it: see
//! `ResumeSession.guest_inputs` and `AttachRequest.resume_input_seq`.

use std::collections::HashMap;

use crate::GuestInputSeq;

/// Most guests one session keeps an input seq for (256): those whose input
/// came last. About 40 bytes each on the wire, so 64 resumed sessions stay
/// well within one message.
pub const MAX_GUEST_INPUT_SEQS: usize = 256;

/// Longest guest ID taken from the wire, in bytes (the server makes 32).
pub const MAX_GUEST_ID_BYTES: usize = 128;

/// Largest seq taken from the wire (2^62): far past what any guest sends,
/// and far enough from `u64::MAX` that counting on from it cannot overflow.
pub const MAX_INPUT_SEQ: u64 = 1 << 62;

/// Per guest, the seq after its last input request taken; bounded by
/// [`MAX_GUEST_INPUT_SEQS`], forgetting the guest whose input is oldest.
#[derive(Debug, Clone, Default)]
pub struct InputSeqs {
    /// Guest ID to (next seq, when its input was last recorded).
    seqs: HashMap<String, (u64, u64)>,
    /// Bumped by every record: the order in which guests last typed.
    clock: u64,
}

impl InputSeqs {
    /// The guests of a resumed session as its host reported them: at most
    /// [`MAX_GUEST_INPUT_SEQS`] (the rest is ignored), each guest ID at
    /// most [`MAX_GUEST_ID_BYTES`] and each seq at most [`MAX_INPUT_SEQ`]
    /// (other entries are skipped). A guest listed twice keeps its larger
    /// seq.
    pub fn from_wire(list: &[GuestInputSeq]) -> Self {
        let mut seqs = Self::default();
        for entry in list.iter().take(MAX_GUEST_INPUT_SEQS) {
            if !entry.guest_id.is_empty()
                && entry.guest_id.len() <= MAX_GUEST_ID_BYTES
                && entry.next_seq <= MAX_INPUT_SEQ
            {
                seqs.record(&entry.guest_id, entry.next_seq);
            }
        }
        seqs
    }

    /// The list for `ResumeSession.guest_inputs`: the guest that typed
    /// longest ago first, so that [`InputSeqs::from_wire`] keeps the order
    /// in which guests go at the bound.
    pub fn to_wire(&self) -> Vec<GuestInputSeq> {
        let mut by_age: Vec<_> = self.seqs.iter().collect();
        by_age.sort_by_key(|(_, (_, at))| *at);
        by_age
            .into_iter()
            .map(|(id, &(next_seq, _))| GuestInputSeq {
                guest_id: id.clone(),
                next_seq,
            })
            .collect()
    }

    /// Input of `guest_id` up to (not including) `next_seq` has been
    /// taken. Seqs only move forward: an older one changes nothing.
    pub fn record(&mut self, guest_id: &str, next_seq: u64) {
        self.clock += 1;
        if let Some(entry) = self.seqs.get_mut(guest_id) {
            *entry = (entry.0.max(next_seq), self.clock);
            return;
        }
        if self.seqs.len() >= MAX_GUEST_INPUT_SEQS
            && let Some(oldest) = self
                .seqs
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(id, _)| id.clone())
        {
            self.seqs.remove(&oldest);
        }
        self.seqs
            .insert(guest_id.to_owned(), (next_seq, self.clock));
    }

    /// The seq after the last input of `guest_id` taken, if it is known.
    pub fn get(&self, guest_id: &str) -> Option<u64> {
        self.seqs.get(guest_id).map(|&(next_seq, _)| next_seq)
    }

    /// How many guests are known.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// Whether no guest is known.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_move_forward_and_the_guest_that_typed_longest_ago_goes_first() {
        let mut seqs = InputSeqs::default();
        seqs.record("a", 5);
        seqs.record("a", 3);
        assert_eq!(seqs.get("a"), Some(5), "an older seq changes nothing");
        for i in 1..MAX_GUEST_INPUT_SEQS {
            seqs.record(&format!("g{i}"), 1);
        }
        // "a" types again: now "g1" typed longest ago.
        seqs.record("a", 6);
        seqs.record("new", 1);
        assert_eq!(seqs.len(), MAX_GUEST_INPUT_SEQS);
        assert_eq!(seqs.get("g1"), None);
        assert_eq!(seqs.get("a"), Some(6));
        assert_eq!(seqs.get("new"), Some(1));
    }

    #[test]
    fn the_wire_list_is_bounded_and_checked() {
        let entry = |id: String, next_seq| GuestInputSeq {
            guest_id: id,
            next_seq,
        };
        let mut list: Vec<_> = (0..MAX_GUEST_INPUT_SEQS + 10)
            .map(|i| entry(format!("g{i}"), i as u64))
            .collect();
        list.insert(0, entry("x".repeat(MAX_GUEST_ID_BYTES + 1), 9));
        list.insert(0, entry(String::new(), 9));
        list.insert(0, entry("huge".into(), MAX_INPUT_SEQ + 1));
        let seqs = InputSeqs::from_wire(&list);
        assert_eq!(seqs.get(""), None);
        assert_eq!(seqs.get("huge"), None);
        assert_eq!(seqs.get(&"x".repeat(MAX_GUEST_ID_BYTES + 1)), None);
        assert_eq!(seqs.get("g0"), Some(0));
        assert_eq!(seqs.get(&format!("g{}", MAX_GUEST_INPUT_SEQS)), None);
        let mut back = seqs.to_wire();
        back.sort_by_key(|e| e.next_seq);
        assert_eq!(back.len(), MAX_GUEST_INPUT_SEQS - 3);
        assert_eq!(back[0], entry("g0".into(), 0));
    }

    proptest::proptest! {
        /// Against a model: each known guest has the largest seq recorded
        /// for it, and at the bound the guest recorded longest ago goes.
        #[test]
        fn seqs_match_a_model(
            records in proptest::collection::vec((0usize..400, 0u64..1_000), 1..1_500),
        ) {
            let mut seqs = InputSeqs::default();
            // (guest, seq), the most recently recorded last.
            let mut model: Vec<(usize, u64)> = Vec::new();
            for (guest, seq) in records {
                let id = format!("{guest:032x}");
                seqs.record(&id, seq);
                let kept = match model.iter().position(|&(g, _)| g == guest) {
                    Some(i) => model.remove(i).1.max(seq),
                    None => {
                        if model.len() == MAX_GUEST_INPUT_SEQS {
                            model.remove(0);
                        }
                        seq
                    }
                };
                model.push((guest, kept));
                proptest::prop_assert_eq!(seqs.len(), model.len());
            }
            for guest in 0..400 {
                let want = model.iter().find(|&&(g, _)| g == guest).map(|&(_, s)| s);
                proptest::prop_assert_eq!(seqs.get(&format!("{guest:032x}")), want);
            }
            let wire = seqs.to_wire();
            let order: Vec<String> = wire.iter().map(|e| e.guest_id.clone()).collect();
            let want: Vec<String> = model.iter().map(|(g, _)| format!("{g:032x}")).collect();
            proptest::prop_assert_eq!(order, want, "oldest first");
            let back = InputSeqs::from_wire(&wire);
            for &(guest, seq) in &model {
                proptest::prop_assert_eq!(back.get(&format!("{guest:032x}")), Some(seq));
            }
        }
    }
}
