//! The session harness: one [`Session`] driven by a random sequence of
//! host and guest actions, checked after every step against a model of
//! what the session's documentation promises.
//!
//! The model knows the session's offsets, retained output, guests (live,
//! replaced, departed and resumable), input order and windows, and the
//! host's Data streams, so it checks values, not only the absence of
//! panics:
//! - every read is exact: an Output starts at the guest's cursor, holds
//!   the stream's bytes at those offsets (see [`crate::pattern`]), and is
//!   as long as the cursor, the end, the message cap (64 KiB until the
//!   guest's first ack) and the guest's byte window allow; a Lagged says
//!   exactly how many bytes fell out of the retained output, which is the
//!   last `retained_output_bytes` bytes, never more; a replaced or
//!   departed stream reads Replaced; Exit comes after the last byte;
//! - input is applied once, in order, and reaches the host's queue as the
//!   session promises: repeats dropped, gaps waited for, at most
//!   [`MAX_PENDING_INPUTS`] ahead and [`MAX_PENDING_INPUT_BYTES`] waiting,
//!   the queue bounded by [`HOST_INPUT_QUEUE_MESSAGES`] messages the host
//!   has not acknowledged;
//! - the host's Data streams: a new one replaces the old (whose output
//!   is refused from then on, as is any stream's that does not serve the
//!   session) and reads the input from the count it opened with; a host
//!   that opens each stream with the count it has taken takes every
//!   input message exactly once, however often its stream is replaced;
//! - guests: at most `max_guests`, at most [`MAX_DEPARTED_GUESTS`]
//!   remembered for resuming, resumed only with their token and role (a
//!   resume refused at the guest limit keeps the departed guest's
//!   record); read-only guests never write or resize; the PTY size is the
//!   smallest of the read-write guests';
//! - backpressure: the host has room exactly when the session says so,
//!   with a departed read-write guest holding it for [`DEPARTED_PACE`];
//! - a bystander session, fed and read alongside, stays exact.
//!
//! # Files
//! - `actions`: what an input is made of (the bounds and the actions);
//! - `model`: what the session documents, as a model;
//! - `bystander`: the session beside it that nothing touches;
//! - `steps`: each guest action, taken on the session and the model, and
//!   checked;
//! - `host`: each host action (output, Data streams, input), likewise;
//! - this file: the entry point, and the properties checked after every
//!   step.
//!
//! [`HOST_INPUT_QUEUE_MESSAGES`]: rendezvous_server::session::HOST_INPUT_QUEUE_MESSAGES
//! [`DEPARTED_PACE`]: rendezvous_server::session::DEPARTED_PACE

mod actions;
mod bystander;
mod host;
mod model;
mod restored;
mod steps;

pub use restored::restored;

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use rendezvous_proto::input_seqs::InputSeqs;
use rendezvous_proto::{ExitStatus, ResumeSession, exit_status};
use rendezvous_server::session::{
    HostLink, MAX_DEPARTED_GUESTS, MAX_PENDING_INPUT_BYTES, MAX_PENDING_INPUTS, MAX_WINDOW_BYTES,
    MIN_WINDOW_BYTES, Read, Session,
};

use actions::{Action, Config};
use bystander::Bystander;
use model::{HostModel, Model, cells, clamp};

/// Most actions one input runs.
pub const MAX_ACTIONS: usize = 400;

/// Runs the session harness on `data`. See the module docs.
///
/// # Panics
/// When the session breaks a property the module docs list.
pub fn session(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(config) = Config::arbitrary(&mut u) else {
        return;
    };
    let actions = crate::actions::<Action>(&mut u, MAX_ACTIONS);
    crate::exec::run(async move { Harness::new(config).run(&actions) });
}

/// One input's run: the session under test with its host side, the
/// model it is checked against, and the bystander.
struct Harness {
    session: Session,
    /// What the host's latest Data stream took from
    /// [`Session::attach_host`].
    link: HostLink,
    model: Model,
    bystander: Bystander,
}

fn code(code: i32) -> ExitStatus {
    ExitStatus {
        status: Some(exit_status::Status::Code(code)),
        message: String::new(),
    }
}

impl Harness {
    fn new(config: Config) -> Self {
        let session = Session::new(
            "fuzzed".into(),
            u32::from(config.cols),
            u32::from(config.rows),
            config.relay(),
        );
        Self::with(config, session, &ResumeSession::default())
    }

    /// A session its host restored as `restore` says.
    fn restored(config: Config, restore: restored::Restore) -> Self {
        let resume = restore.resume(config.cols, config.rows);
        let session = Session::restored(config.relay(), &resume);
        Self::with(config, session, &resume)
    }

    /// The harness of `session`, new or restored as `resume` says; its
    /// host opens its first Data stream with `resume.input_applied`.
    fn with(config: Config, session: Session, resume: &ResumeSession) -> Self {
        let relay = config.relay();
        let applied = resume.input_applied;
        let link = session
            .attach_host(applied)
            .expect("a new session takes its host");
        let mut host = HostModel::new();
        host.streams = 1;
        host.stream = Some(link.stream);
        (host.acked, host.next, host.taken) = (applied, applied, applied);
        assert_eq!(link.stream, 1, "the first Data stream's number");
        let model = Model {
            relay,
            max_guests: usize::from(config.max_guests % 8) + 1,
            origin: resume.start_offset,
            end: resume.start_offset,
            restored_end: resume.end_offset.max(resume.start_offset),
            input_seqs: InputSeqs::from_wire(&resume.guest_inputs),
            exit: None,
            size: clamp(u32::from(config.cols), u32::from(config.rows)),
            guests: Vec::new(),
            departed: VecDeque::new(),
            primary: None,
            joins: 0,
            attachments: 0,
            host,
            inputs_made: 0,
        };
        Self {
            session,
            link,
            model,
            bystander: Bystander::new(),
        }
    }

    fn run(mut self, actions: &[Action]) {
        for (step, action) in actions.iter().enumerate() {
            if crate::tracing() {
                eprintln!(
                    "{step}: {action:?} (guests {}, end {})",
                    self.model.guests.len(),
                    self.model.end
                );
            }
            self.apply(*action);
            self.check(step, action);
            self.bystander.step();
        }
    }

    /// The guest `who` names: one of those made so far, or (one past
    /// them) a guest the session never had.
    fn who(&self, who: u8) -> Option<usize> {
        let i = usize::from(who) % (self.model.guests.len() + 1);
        (i < self.model.guests.len()).then_some(i)
    }

    fn id(&self, who: Option<usize>) -> String {
        who.map_or_else(|| "nobody".to_owned(), |i| self.model.guests[i].id.clone())
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Output(len) => self.output(len.bytes()),
            Action::StaleOutput { len, which } => self.stale_output(len.bytes(), which),
            Action::HostReadsInput { count } => self.host_reads(count % 80),
            Action::HostAcksInput { fewer } => self.host_acks(fewer),
            Action::HostReattach { wrong } => self.host_reattach(wrong),
            Action::HostDetach { stale } => self.host_detach(stale),
            Action::HostState { reconnecting } => self.host_state(reconnecting),
            Action::Attach {
                read_write,
                cols,
                rows,
                from,
                resume,
                window,
            } => self.attach(read_write, cols, rows, from, resume, window),
            Action::Read { who, times } => {
                let who = self.who(who);
                for _ in 0..=times % 4 {
                    self.read(who);
                }
            }
            Action::ReadStale { who } => {
                let who = self.who(who);
                let id = self.id(who);
                let stale = who
                    .and_then(|i| self.model.guests[i].old.last().copied())
                    .unwrap_or(0);
                assert_eq!(
                    self.session.read_attached(&id, stale, 0),
                    Read::Replaced,
                    "a stream that no longer serves its guest read something"
                );
            }
            Action::Detach { who } => {
                let who = self.who(who);
                self.detach(who);
            }
            Action::DetachStale { who } => {
                let who = self.who(who);
                let id = self.id(who);
                let stale = who
                    .and_then(|i| self.model.guests[i].old.last().copied())
                    .unwrap_or(0);
                // Changes nothing: checked after the step.
                self.session.detach(&id, stale);
            }
            Action::Input { who, seq, len } => {
                let who = self.who(who);
                self.input(who, seq, len.bytes());
            }
            Action::Ack {
                who,
                offset,
                messages,
            } => {
                let who = self.who(who);
                self.ack(who, offset, u64::from(messages));
            }
            Action::Resize { who, cols, rows } => {
                let who = self.who(who);
                self.resize(who, cells(cols), cells(rows));
            }
            Action::Window { who, bytes } => {
                let who = self.who(who);
                self.session.set_window(&self.id(who), bytes);
                if let Some(live) = who.and_then(|i| self.model.guests[i].live.as_mut()) {
                    live.window = Some(u64::from(bytes).clamp(MIN_WINDOW_BYTES, MAX_WINDOW_BYTES));
                }
            }
            Action::Finish { odds, .. } if odds % 16 != 0 => {}
            Action::Finish { code: c, .. } => {
                self.session.finish(code(c));
                self.model.exit.get_or_insert(code(c));
            }
            Action::Room => self.room(),
        }
    }
}

impl Harness {
    /// The properties that hold after every step.
    fn check(&self, step: usize, action: &dyn std::fmt::Debug) {
        let (s, m) = (&self.session, &self.model);
        let at = || format!("after step {step} ({action:?})");
        assert_eq!(s.end_offset(), m.end, "end offset {}", at());
        assert_eq!(s.has_ended(), m.exit.is_some(), "ended {}", at());
        assert_eq!(s.guest_count(), m.attached(), "guest count {}", at());
        assert!(
            s.guest_count() <= m.max_guests,
            "guests over the limit {}",
            at()
        );
        assert!(m.departed.len() <= MAX_DEPARTED_GUESTS);
        assert_eq!(s.size(), m.size, "PTY size {}", at());
        let h = &m.host;
        assert_eq!(
            s.unacked_host_input(),
            h.unacked.len(),
            "input the host has not acknowledged {}",
            at()
        );
        assert_eq!(s.host_input_acked(), h.acked, "input acknowledged {}", at());
        assert_eq!(
            self.link.input.next_number(),
            h.next,
            "the host's next input message {}",
            at()
        );
        assert_eq!(
            s.host_stream().0,
            h.stream.is_some(),
            "a Data stream serves the session {}",
            at()
        );
        assert_eq!(
            self.link.replaced.is_cancelled(),
            m.exit.is_some() || h.stream != Some(self.link.stream),
            "the latest Data stream is done {}",
            at()
        );
        assert_eq!(s.host_state(), h.state, "the host's state {}", at());
        assert!(s.host_attached());
        for g in &m.guests {
            let want = g.live.as_ref().map(|l| l.acked_messages);
            let attachment = g.live.as_ref().map_or(0, |l| l.attachment);
            assert_eq!(
                s.acked_messages(&g.id, attachment),
                want,
                "acknowledged messages of {} {}",
                g.id,
                at()
            );
            for old in &g.old {
                assert_eq!(
                    s.acked_messages(&g.id, *old),
                    None,
                    "a replaced stream {}",
                    at()
                );
            }
            assert!(g.input.pending.len() as u64 <= MAX_PENDING_INPUTS);
            assert!(g.input.pending_bytes <= MAX_PENDING_INPUT_BYTES);
        }
    }
}
