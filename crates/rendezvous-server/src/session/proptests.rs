//! Property tests of the relay's bookkeeping, against plain models: the
//! retained output's offsets, replay and lag ([`RetainedOutput`]), and a
//! guest's input order ([`InputOrder`]). The fuzzers drive the same code
//! through the whole session; these check each rule exactly, on inputs
//! proptest shrinks when one fails.

use bytes::Bytes;
use proptest::prelude::*;

use super::input::{Accepted, InputOrder, MAX_PENDING_INPUTS, TooFarAhead};
use super::output::{Found, RetainedOutput};

/// The byte at `offset` of the streams pushed here: its value says where
/// it was, so a byte at the wrong offset shows.
fn byte_at(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// What a test does to a retained output.
#[derive(Debug, Clone)]
enum Step {
    /// Pushes this many bytes.
    Push(usize),
    /// Reads at `end - back` (past the end when negative), at most `max`.
    Read { back: i64, max: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..6_000).prop_map(Step::Push),
        (-8i64..30_000, 0usize..9_000).prop_map(|(back, max)| Step::Read { back, max }),
    ]
}

proptest! {
    /// Every read gets exactly the stream's bytes at its cursor (at most
    /// `max`), or `Lagged` with exactly the bytes it missed, or nothing at
    /// the end; at most `limit` bytes are kept, the newest.
    #[test]
    fn retained_output_reads_are_exact(
        limit in 1usize..20_000,
        start in 0u64..1_000_000,
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let mut output = RetainedOutput::starting_at(limit, start);
        let mut end = start;
        for step in steps {
            match step {
                Step::Push(n) => {
                    let data: Vec<u8> = (end..end + n as u64).map(byte_at).collect();
                    output.push(&data);
                    end += n as u64;
                }
                Step::Read { back, max } => {
                    let cursor = end.saturating_add_signed(-back);
                    let kept_from = end - (end - start).min(limit as u64);
                    let found = output.read(cursor, max);
                    if cursor < kept_from {
                        prop_assert_eq!(found, Found::Lagged(kept_from - cursor));
                    } else if cursor >= end || max == 0 {
                        prop_assert_eq!(found, Found::AtEnd);
                    } else {
                        let Found::Output(slices) = found else {
                            return Err(TestCaseError::fail(format!("no output at {cursor}")));
                        };
                        prop_assert_eq!(slices.offset, cursor);
                        let got = slices.join();
                        let want: Vec<u8> =
                            (cursor..end.min(cursor + max as u64)).map(byte_at).collect();
                        prop_assert_eq!(&got[..], &want[..]);
                    }
                }
            }
            prop_assert_eq!(output.end(), end);
            prop_assert_eq!(output.start(), end - (end - start).min(limit as u64));
        }
    }

    /// However a guest's requests arrive (reordered, repeated, resent
    /// after a resume), each is applied once and in seq order; a request
    /// too far ahead is refused and changes nothing.
    #[test]
    fn input_is_applied_once_in_order(
        first in 0u64..1_000,
        arrivals in proptest::collection::vec(0u64..(MAX_PENDING_INPUTS + 8), 1..200),
    ) {
        let mut order = InputOrder::starting_at(first);
        let mut applied = Vec::new();
        let mut received = std::collections::BTreeSet::new();
        for relative in arrivals {
            let seq = first + relative;
            let data = Bytes::from(seq.to_string() + ",");
            let next = order.next_seq();
            match order.accept(seq, data) {
                Ok(Accepted::Apply(bytes)) => {
                    received.insert(seq);
                    applied.extend_from_slice(&bytes);
                }
                Ok(Accepted::Nothing) => {
                    received.insert(seq);
                }
                Err(TooFarAhead { expected }) => {
                    prop_assert_eq!(expected, next);
                    prop_assert!(seq - next > MAX_PENDING_INPUTS);
                    prop_assert_eq!(order.next_seq(), next);
                }
            }
        }
        // Applied up to the first seq never received, and no further.
        let gap = (first..).find(|s| !received.contains(s)).unwrap_or(first);
        prop_assert_eq!(order.next_seq(), gap);
        let want: String = (first..gap).map(|s| s.to_string() + ",").collect();
        prop_assert_eq!(String::from_utf8(applied).unwrap(), want);
    }
}
