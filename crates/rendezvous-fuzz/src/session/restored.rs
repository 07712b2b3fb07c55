//! The restored-session harness: the session harness's actions on a
//! session a host restored on a server that lost it ([`Session::restored`]:
//! a restart, or another replica), plus guests resuming with signed tokens
//! (`NewGuest::signed_resume`), as the registry passes them on once a
//! token's signature checks out.
//!
//! The host's `ResumeSession` is fuzzed within what the registry lets
//! through (`start_offset <= end_offset <= MAX_RESUME_OFFSET`,
//! `input_applied <= MAX_RESUME_OFFSET`), and so is the seq a signed
//! resume holds (at most `MAX_RESUME_OFFSET`); its `guest_inputs` are
//! fuzzed whole, empty and too long IDs and seqs past the largest taken
//! included. What a signed resume may meet:
//! - a guest the session has no record of (never seen here, or forgotten):
//!   it resumes under its own ID, its input going on at the later of the
//!   seq it holds and the one the session (or the host's report) has;
//! - a guest the session knows, with its own token: an ordinary resume;
//! - a guest the session knows, with another token (a stale ticket, from
//!   before the guest last resumed with a new one) or in another role: a
//!   new guest, never the known one;
//! - the guest limit: a new guest over it is refused, as any other.
//!
//! Checked on top of the session harness's properties: the restored
//! stream starts at the host's `start_offset` (guests behind it read one
//! exact Lagged); a guest resuming ahead of the refill waits at its own
//! offset (up to what the host holds), and reads exactly what follows it.

use arbitrary::{Arbitrary, Unstructured};
use rendezvous_proto::input_seqs::{MAX_GUEST_ID_BYTES, MAX_INPUT_SEQ};
use rendezvous_proto::{GuestInputSeq, ResumeSession};
use rendezvous_server::registry::MAX_RESUME_OFFSET;

use super::actions::{Action, Config, Offset};
use super::{Harness, MAX_ACTIONS};

/// An output offset the host reports, from 0 to the largest the registry
/// takes.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) enum At {
    Zero,
    Small(u16),
    Large(u32),
    /// The largest, minus a little.
    Bound(u16),
}

impl At {
    fn value(self) -> u64 {
        match self {
            At::Zero => 0,
            At::Small(n) => u64::from(n),
            At::Large(n) => u64::from(n) << 16,
            At::Bound(d) => MAX_RESUME_OFFSET - u64::from(d),
        }
    }
}

/// A guest ID in the host's report or in a signed resume.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) enum ReportedId {
    /// One of a few IDs only signed resumes use (`r0`..`r3`).
    Signed(u8),
    /// The ID the harness gives its n-th new guest (`g0`..`g7`).
    Fresh(u8),
    Empty,
    /// Longer than the session takes from the wire.
    TooLong,
}

impl ReportedId {
    fn id(self) -> String {
        match self {
            ReportedId::Signed(n) => format!("r{}", n % 4),
            ReportedId::Fresh(n) => format!("g{}", n % 8),
            ReportedId::Empty => String::new(),
            ReportedId::TooLong => "r".repeat(MAX_GUEST_ID_BYTES + 1),
        }
    }
}

/// An input seq the host reports or a guest holds.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) enum SeqValue {
    Small(u8),
    /// The largest the session takes from the wire.
    Bound,
    /// Past it (the host's report skips it).
    Over,
    Max,
}

impl SeqValue {
    fn value(self) -> u64 {
        match self {
            SeqValue::Small(n) => u64::from(n),
            SeqValue::Bound => MAX_INPUT_SEQ,
            SeqValue::Over => MAX_INPUT_SEQ + 1,
            SeqValue::Max => u64::MAX,
        }
    }
}

/// What the host's `ResumeSession` says of the session.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) struct Restore {
    start: At,
    /// How many bytes past `start` the host holds (`end_offset - start_offset`).
    held: u16,
    applied: At,
    guest_inputs: [Option<(ReportedId, SeqValue)>; 4],
}

impl Restore {
    /// The `ResumeSession`, within the registry's bounds.
    pub(super) fn resume(self, cols: u16, rows: u16) -> ResumeSession {
        let start = self.start.value();
        ResumeSession {
            session_id: "fuzzed".into(),
            ticket: String::new(),
            start_offset: start,
            end_offset: (start + u64::from(self.held)).min(MAX_RESUME_OFFSET),
            cols: u32::from(cols),
            rows: u32::from(rows),
            input_applied: self.applied.value(),
            guest_inputs: self
                .guest_inputs
                .iter()
                .flatten()
                .map(|(id, seq)| GuestInputSeq {
                    guest_id: id.id(),
                    next_seq: seq.value(),
                })
                .collect(),
        }
    }
}

/// Whose ID a signed resume names.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) enum SignedWho {
    /// A guest the harness has made (its ID), if there is one.
    Guest(u8),
    Reported(ReportedId),
}

/// The token a signed resume presents.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) enum SignedToken {
    /// The one the session has for the guest (or, for a guest it never
    /// had, the one its ticket was signed as).
    Own,
    /// Another one for the same guest: a ticket from before the guest
    /// last resumed with a new one.
    Stale,
}

/// An action of the restored harness.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) enum Step {
    Plain(Action),
    SignedAttach {
        read_write: bool,
        cols: u16,
        rows: u16,
        from: Option<Offset>,
        who: SignedWho,
        token: SignedToken,
        /// The oldest input seq the guest holds (`resume_input_seq`).
        held: SeqValue,
    },
}

/// Runs the restored-session harness on `data`. See the module docs.
///
/// # Panics
/// When the session breaks a property the module docs (or the session
/// harness's) list.
pub fn restored(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(config) = Config::arbitrary(&mut u) else {
        return;
    };
    let Ok(restore) = Restore::arbitrary(&mut u) else {
        return;
    };
    let steps = crate::actions::<Step>(&mut u, MAX_ACTIONS);
    crate::exec::run(async move {
        let mut harness = Harness::restored(config, restore);
        for (step, action) in steps.iter().enumerate() {
            if crate::tracing() {
                eprintln!("{step}: {action:?} (guests {})", harness.model.guests.len());
            }
            match *action {
                Step::Plain(action) => {
                    harness.apply(action);
                    harness.check(step, &action);
                }
                Step::SignedAttach {
                    read_write,
                    cols,
                    rows,
                    from,
                    who,
                    token,
                    held,
                } => {
                    let (id, token) = harness.signed_guest(who, token);
                    let held = held.value().min(MAX_RESUME_OFFSET);
                    harness.attach_as(read_write, cols, rows, from, Some((id, token)), Some(held));
                    harness.check(step, action);
                }
            }
            harness.bystander.step();
        }
    });
}

impl Harness {
    /// The ID and token a signed resume presents.
    fn signed_guest(&self, who: SignedWho, token: SignedToken) -> (String, String) {
        let id = match who {
            SignedWho::Guest(n) if !self.model.guests.is_empty() => self.model.guests
                [usize::from(n) % self.model.guests.len()]
            .id
            .clone(),
            SignedWho::Guest(n) => ReportedId::Signed(n).id(),
            // The harness's strangers are "nobody"; no guest is made
            // with an empty ID (the server makes 32-character ones).
            SignedWho::Reported(ReportedId::Empty) => "r-empty".to_owned(),
            SignedWho::Reported(r) => r.id(),
        };
        let own = self
            .model
            .guests
            .iter()
            .find(|g| g.id == id)
            .map_or_else(|| format!("ticket-{id}"), |g| g.token.clone());
        let token = match token {
            SignedToken::Own => own,
            SignedToken::Stale => format!("{own}-stale"),
        };
        (id, token)
    }
}
