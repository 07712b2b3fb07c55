//! The session harness: one [`Session`] driven by a random sequence of
//! host and guest actions, checked after every step against a model of
//! what the session's documentation promises.
//!
//! The model knows the session's offsets, retained output, guests (live,
//! replaced, departed and resumable), input order and windows, so it
//! checks values, not only the absence of panics:
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
//!   the queue bounded by [`HOST_INPUT_QUEUE_MESSAGES`];
//! - guests: at most `max_guests`, at most [`MAX_DEPARTED_GUESTS`]
//!   remembered for resuming, resumed only with their token and role;
//!   read-only guests never write or resize; the PTY size is the smallest
//!   of the read-write guests';
//! - backpressure: the host has room exactly when the session says so;
//! - a bystander session, fed and read alongside, stays exact.

use std::collections::{BTreeMap, VecDeque};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use futures::FutureExt;
use rendezvous_proto::ids::clamp_cells;
use rendezvous_proto::{
    ExitStatus, HostDataResponse, Role, WindowSize, exit_status, host_data_response,
};
use rendezvous_server::auth::Digest;
use rendezvous_server::session::{
    DEFAULT_SIZE, HOST_INPUT_QUEUE_MESSAGES, MAX_DEPARTED_GUESTS, MAX_PENDING_INPUT_BYTES,
    MAX_PENDING_INPUTS, MAX_WINDOW_BYTES, MIN_WINDOW_BYTES, NewGuest, Read, RelayConfig, Session,
    SessionError, UNACKED_MESSAGE_BYTES,
};
use tokio::sync::mpsc;

use crate::pattern;

/// Most actions one input runs.
pub const MAX_ACTIONS: usize = 400;

/// A size of host output or guest input, from nothing to past one
/// message's data.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Len {
    Zero,
    Byte(u8),
    Small(u16),
    /// Up to 4 MiB, in steps of 64 bytes.
    Large(u16),
    /// One message's data, 4 MiB.
    Max,
    /// Over one message's data, by up to 64 KiB.
    Over(u16),
}

impl Len {
    fn bytes(self) -> usize {
        use rendezvous_proto::message_size::MAX_DATA_BYTES;
        match self {
            Len::Zero => 0,
            Len::Byte(n) => usize::from(n),
            Len::Small(n) => usize::from(n),
            Len::Large(n) => usize::from(n) * 64,
            Len::Max => MAX_DATA_BYTES,
            Len::Over(n) => MAX_DATA_BYTES + 1 + usize::from(n),
        }
    }
}

/// A size of guest input: small, up to a call's default limit, or just
/// over the bytes that may wait.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum InputLen {
    Zero,
    Byte(u8),
    Small(u16),
    OverPending,
}

impl InputLen {
    fn bytes(self) -> usize {
        match self {
            InputLen::Zero => 0,
            InputLen::Byte(n) => usize::from(n),
            InputLen::Small(n) => usize::from(n),
            InputLen::OverPending => MAX_PENDING_INPUT_BYTES + 1,
        }
    }
}

/// An offset, relative to what the session holds.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Offset {
    Zero,
    /// The oldest retained byte, plus or minus a little.
    Start(i8),
    /// The end of the stream, plus or minus a little.
    End(i16),
    /// The guest's own cursor, plus or minus.
    Cursor(i32),
    Raw(u64),
    Max,
}

/// Which sequence number an input carries.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Seq {
    Next,
    /// An earlier one (a retry).
    Back(u8),
    /// Ahead of the next, by up to 255 (the bound is 64).
    Ahead(u8),
    Raw(u64),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Action {
    Output(Len),
    Attach {
        read_write: bool,
        cols: u16,
        rows: u16,
        /// `None`: from the oldest retained byte.
        from: Option<Offset>,
        /// An earlier guest to resume, and whether the token is its own.
        resume: Option<(u8, bool)>,
        window: Option<u32>,
    },
    Read {
        who: u8,
        times: u8,
    },
    /// A read on a stream that no longer serves its guest.
    ReadStale {
        who: u8,
    },
    Detach {
        who: u8,
    },
    DetachStale {
        who: u8,
    },
    Input {
        who: u8,
        seq: Seq,
        len: InputLen,
    },
    Ack {
        who: u8,
        offset: Offset,
        messages: u16,
    },
    Resize {
        who: u8,
        cols: u32,
        rows: u32,
    },
    Window {
        who: u8,
        bytes: u32,
    },
    HostReadsInput {
        count: u8,
    },
    /// Ends the session, one time in 16: an end early in every input
    /// would leave little to test.
    Finish {
        code: i32,
        odds: u8,
    },
    Room,
}

/// The relay bounds, from the smallest that make sense to the defaults.
#[derive(Debug, Clone, Copy, Arbitrary)]
struct Config {
    retained: u8,
    message: u8,
    backpressure: u8,
    max_guests: u8,
    cols: u16,
    rows: u16,
}

impl Config {
    fn relay(self) -> RelayConfig {
        const RETAINED: [usize; 6] = [1, 16, 100, 4096, 65_536, 1 << 20];
        const MESSAGE: [usize; 5] = [1, 8, 4096, 65_536, 256 * 1024];
        const BACKPRESSURE: [u64; 4] = [1, 100, 65_536, 256 * 1024];
        RelayConfig {
            retained_output_bytes: RETAINED[usize::from(self.retained) % RETAINED.len()],
            max_output_message_bytes: MESSAGE[usize::from(self.message) % MESSAGE.len()],
            backpressure_bytes: BACKPRESSURE[usize::from(self.backpressure) % BACKPRESSURE.len()],
            ..RelayConfig::default()
        }
    }
}

/// One guest's input order, as the session documents it.
#[derive(Debug, Default, Clone)]
struct InputModel {
    next_seq: u64,
    pending: BTreeMap<u64, Bytes>,
    pending_bytes: usize,
}

/// What accepting an input does, in the model.
enum Accept {
    Apply(Bytes),
    Nothing,
    TooFar,
}

impl InputModel {
    fn accept(&mut self, seq: u64, data: Bytes) -> Accept {
        if seq < self.next_seq {
            return Accept::Nothing;
        }
        if seq > self.next_seq {
            let replaced = self.pending.get(&seq).map_or(0, Bytes::len);
            if seq - self.next_seq > MAX_PENDING_INPUTS
                || self.pending_bytes - replaced + data.len() > MAX_PENDING_INPUT_BYTES
            {
                return Accept::TooFar;
            }
            self.pending_bytes = self.pending_bytes - replaced + data.len();
            self.pending.insert(seq, data);
            return Accept::Nothing;
        }
        let mut joined = data.to_vec();
        self.next_seq += 1;
        while let Some(next) = self.pending.remove(&self.next_seq) {
            self.pending_bytes -= next.len();
            joined.extend_from_slice(&next);
            self.next_seq += 1;
        }
        Accept::Apply(Bytes::from(joined))
    }
}

/// A guest's current stream, as the model sees it.
#[derive(Debug, Clone)]
struct Live {
    attachment: u64,
    size: WindowSize,
    /// The stream's cursor, which is also the session's cursor for the
    /// guest (what backpressure reads).
    cursor: u64,
    acked: u64,
    acked_messages: u64,
    has_acked: bool,
    window: Option<u64>,
}

#[derive(Debug)]
struct GuestModel {
    id: String,
    token: String,
    role: Role,
    joined: u64,
    live: Option<Live>,
    /// Attachment numbers of streams that served it and no longer do.
    old: Vec<u64>,
    input: InputModel,
}

#[derive(Debug)]
struct Model {
    relay: RelayConfig,
    max_guests: usize,
    end: u64,
    exit: Option<ExitStatus>,
    size: WindowSize,
    guests: Vec<GuestModel>,
    /// Departed guests that may resume (indexes into `guests`), oldest
    /// first, with their next input seq.
    departed: VecDeque<(usize, u64)>,
    primary: Option<usize>,
    joins: u64,
    attachments: u64,
    /// Input messages the host's queue holds, oldest first.
    host_queue: VecDeque<Bytes>,
    /// Distinguishes the bytes of each input.
    inputs_made: u64,
}

/// A terminal dimension from the fuzzer's number: often 0 (the default)
/// or the largest there is, else the number itself.
fn cells(n: u32) -> u32 {
    match n % 4 {
        0 => 0,
        1 => u32::MAX,
        _ => n,
    }
}

fn clamp(cols: u32, rows: u32) -> WindowSize {
    WindowSize {
        cols: clamp_cells(cols, DEFAULT_SIZE.cols),
        rows: clamp_cells(rows, DEFAULT_SIZE.rows),
    }
}

impl Model {
    fn start(&self) -> u64 {
        self.end - self.end.min(self.relay.retained_output_bytes as u64)
    }

    fn attached(&self) -> usize {
        self.guests.iter().filter(|g| g.live.is_some()).count()
    }

    fn update_size(&mut self) {
        if let Some(wanted) = self
            .guests
            .iter()
            .filter(|g| g.role == Role::ReadWrite)
            .filter_map(|g| g.live.as_ref().map(|l| l.size))
            .reduce(|a, b| WindowSize {
                cols: a.cols.min(b.cols),
                rows: a.rows.min(b.rows),
            })
        {
            self.size = wanted;
        }
    }

    fn offset(&self, offset: Offset, cursor: u64) -> u64 {
        match offset {
            Offset::Zero => 0,
            Offset::Start(d) => self.start().saturating_add_signed(i64::from(d)),
            Offset::End(d) => self.end.saturating_add_signed(i64::from(d)),
            Offset::Cursor(d) => cursor.saturating_add_signed(i64::from(d)),
            Offset::Raw(n) => n,
            Offset::Max => u64::MAX,
        }
    }

    /// Whether the host may send more output now.
    fn room(&self) -> bool {
        if self.exit.is_some() {
            return true;
        }
        let fastest = self
            .guests
            .iter()
            .filter(|g| g.role == Role::ReadWrite)
            .filter_map(|g| g.live.as_ref().map(|l| l.cursor))
            .max();
        fastest.is_none_or(|c| self.end - c <= self.relay.backpressure_window())
    }
}

/// The bystander: a session of its own with one guest, fed and read at
/// every step, whose stream must stay exact whatever the other does.
struct Bystander {
    session: Session,
    attachment: u64,
    cursor: u64,
}

impl Bystander {
    fn new() -> Self {
        let session = Session::new("bystander".into(), 80, 24, RelayConfig::default());
        let attached = session
            .attach_guest(
                "watcher".into(),
                Digest::of("watcher-token"),
                NewGuest {
                    role: Role::ReadWrite,
                    cols: 80,
                    rows: 24,
                    resume_offset: None,
                    resume_guest: None,
                    max_guests: 1,
                },
            )
            .expect("the bystander's guest attaches");
        Self {
            session,
            attachment: attached.attachment,
            cursor: 0,
        }
    }

    fn step(&mut self) {
        let end = self.session.end_offset();
        self.session.push_output(pattern::run(end, 17));
        loop {
            match self
                .session
                .read_attached("watcher", self.attachment, self.cursor)
            {
                Read::Output { offset, data } => {
                    assert_eq!(offset, self.cursor, "bystander: output at a wrong offset");
                    assert!(pattern::matches(offset, &data), "bystander: wrong bytes");
                    self.cursor += data.len() as u64;
                }
                Read::Nothing => break,
                other => panic!("bystander: unexpected read {other:?}"),
            }
        }
        assert_eq!(
            self.cursor,
            self.session.end_offset(),
            "bystander fell behind"
        );
        assert!(!self.session.has_ended());
    }
}

/// What the model expects where the server has a known bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// What the documentation says, everywhere.
    Documented,
    /// What the server does today where a bug this harness found is not
    /// fixed yet, so that fuzzing goes on looking for other ones. The
    /// known bugs:
    ///
    /// 1. A departed guest that tries to resume while its session is at
    ///    its guest limit is refused (right), and loses its departed
    ///    record (wrong: `Guests::attach` in the server's
    ///    `session/guests.rs` takes the record out in `resumable` before
    ///    it checks the limit). Attached again within [`RESUME_GRACE`]
    ///    once there is room, it is a new guest: its input sequence starts
    ///    over, and a retried input is not applied exactly once.
    ///    Input: `regressions/session/known-bugs/`.
    ///
    /// [`RESUME_GRACE`]: rendezvous_server::session::RESUME_GRACE
    FollowKnownBugs,
}

/// Runs the session harness on `data`, following the server's known bugs
/// (see [`Mode`]). See the module docs.
///
/// # Panics
/// When the session breaks a property the module docs list.
pub fn session(data: &[u8]) {
    session_in(Mode::FollowKnownBugs, data);
}

/// Runs the session harness on `data`, expecting what the documentation
/// says everywhere: fails on inputs that show a known bug.
///
/// # Panics
/// As [`session`], and on the known bugs.
pub fn session_documented(data: &[u8]) {
    session_in(Mode::Documented, data);
}

fn session_in(mode: Mode, data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(config) = Config::arbitrary(&mut u) else {
        return;
    };
    let actions = crate::actions::<Action>(&mut u, MAX_ACTIONS);
    crate::exec::run(async move { Harness::new(config, mode).run(&actions) });
}

struct Harness {
    mode: Mode,
    session: Session,
    host_input: mpsc::Receiver<HostDataResponse>,
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
    fn new(config: Config, mode: Mode) -> Self {
        let relay = config.relay();
        let session = Session::new(
            "fuzzed".into(),
            u32::from(config.cols),
            u32::from(config.rows),
            relay,
        );
        let (host_input, _size) = session.attach_host().expect("a new session takes its host");
        assert!(session.attach_host().is_none(), "a second host attached");
        let model = Model {
            relay,
            max_guests: usize::from(config.max_guests % 8) + 1,
            end: 0,
            exit: None,
            size: clamp(u32::from(config.cols), u32::from(config.rows)),
            guests: Vec::new(),
            departed: VecDeque::new(),
            primary: None,
            joins: 0,
            attachments: 0,
            host_queue: VecDeque::new(),
            inputs_made: 0,
        };
        Self {
            mode,
            session,
            host_input,
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
            Action::HostReadsInput { count } => {
                for _ in 0..count % 80 {
                    let got = self.host_input.try_recv().ok().map(|m| match m.message {
                        Some(host_data_response::Message::Input(data)) => data,
                        other => panic!("the host's input queue held {other:?}"),
                    });
                    let want = self.model.host_queue.pop_front();
                    assert_eq!(got, want, "the host read other input than was applied");
                    if want.is_none() {
                        break;
                    }
                }
            }
            Action::Finish { odds, .. } if odds % 16 != 0 => {}
            Action::Finish { code: c, .. } => {
                self.session.finish(code(c));
                self.model.exit.get_or_insert(code(c));
            }
            Action::Room => {
                let room = tokio::task::unconstrained(self.session.wait_for_room())
                    .now_or_never()
                    .is_some();
                assert_eq!(
                    room,
                    self.model.room(),
                    "wait_for_room disagrees with the guests' cursors"
                );
            }
        }
    }

    fn output(&mut self, len: usize) {
        self.session.push_output(pattern::run(self.model.end, len));
        if self.model.exit.is_none() {
            self.model.end += len as u64;
        }
    }

    fn attach(
        &mut self,
        read_write: bool,
        cols: u16,
        rows: u16,
        from: Option<Offset>,
        resume: Option<(u8, bool)>,
        window: Option<u32>,
    ) {
        let role = if read_write {
            Role::ReadWrite
        } else {
            Role::ReadOnly
        };
        let resume = resume.map(|(who, right)| {
            let who = self.who(who);
            let token = match (who, right) {
                (Some(i), true) => self.model.guests[i].token.clone(),
                _ => "a-token-nobody-was-given".to_owned(),
            };
            (who, self.id(who), token, right)
        });
        let fresh = self.model.guests.len();
        let (fresh_id, fresh_token) = (format!("g{fresh}"), format!("token-{fresh}"));
        let (cols, rows) = (cells(u32::from(cols)), cells(u32::from(rows)));
        let requested = from.map(|o| self.model.offset(o, 0));
        let result = self.session.attach_guest(
            fresh_id.clone(),
            Digest::of(&fresh_token),
            NewGuest {
                role,
                cols,
                rows,
                resume_offset: requested,
                resume_guest: resume
                    .as_ref()
                    .map(|(_, id, t, _)| (id.as_str(), t.as_str())),
                max_guests: self.model.max_guests,
            },
        );
        // The model's answer: which guest carries on, if any.
        let model = &mut self.model;
        let resumed = resume.as_ref().and_then(|(who, _, _, right)| {
            let i = (*who)?;
            let g = &model.guests[i];
            if !right || g.role != role {
                return None;
            }
            if g.live.is_some() {
                return Some((i, true));
            }
            model
                .departed
                .iter()
                .any(|(d, _)| *d == i)
                .then_some((i, false))
        });
        let replacing = resumed.is_some_and(|(_, live)| live);
        if !replacing && model.attached() >= model.max_guests {
            assert_eq!(
                result,
                Err(SessionError::TooManyGuests(model.max_guests)),
                "a guest over the limit was attached"
            );
            if self.mode == Mode::FollowKnownBugs
                && let Some((i, false)) = resumed
            {
                // Known bug 1 (see `Mode`): the refused resume cost the
                // guest its departed record.
                model.departed.retain(|(d, _)| *d != i);
            }
            return;
        }
        let attached = result.expect("a guest within the limit attaches");
        if std::env::var_os("RENDEZVOUS_FUZZ_STATS").is_some() {
            eprintln!(
                "STAT attach resumed={} replacing={}",
                resumed.is_some(),
                replacing
            );
        }
        let cursor = requested.unwrap_or(model.start()).min(model.end);
        model.attachments += 1;
        assert_eq!(attached.attachment, model.attachments, "attachment numbers");
        assert_eq!(attached.cursor, cursor, "an attached guest's cursor");
        assert_eq!(attached.resumed, resumed.is_some(), "resumed or not");
        let live = Live {
            attachment: attached.attachment,
            size: clamp(cols, rows),
            cursor,
            acked: cursor,
            acked_messages: 0,
            has_acked: false,
            window: None,
        };
        let index = match resumed {
            Some((i, was_live)) => {
                let g = &mut model.guests[i];
                if was_live {
                    let old = g.live.take().map(|l| l.attachment);
                    g.old.extend(old);
                } else {
                    let at = model.departed.iter().position(|(d, _)| *d == i);
                    let (_, next_seq) = model.departed.remove(at.unwrap_or(0)).unwrap_or_default();
                    g.input = InputModel {
                        next_seq,
                        ..InputModel::default()
                    };
                }
                i
            }
            None => {
                model.joins += 1;
                model.guests.push(GuestModel {
                    id: fresh_id,
                    token: fresh_token,
                    role,
                    joined: model.joins,
                    live: None,
                    old: Vec::new(),
                    input: InputModel::default(),
                });
                fresh
            }
        };
        let g = &mut model.guests[index];
        assert_eq!(attached.guest_id, g.id, "the attached guest's ID");
        assert_eq!(
            attached.next_input_seq, g.input.next_seq,
            "the attached guest's next input seq"
        );
        g.live = Some(live);
        if model.primary.is_none() && role == Role::ReadWrite {
            model.primary = Some(index);
        }
        model.update_size();
        if let Some(bytes) = window {
            let id = model.guests[index].id.clone();
            self.session.set_window(&id, bytes);
            if let Some(live) = self.model.guests[index].live.as_mut() {
                live.window = Some(u64::from(bytes).clamp(MIN_WINDOW_BYTES, MAX_WINDOW_BYTES));
            }
        }
    }

    fn read(&mut self, who: Option<usize>) {
        let id = self.id(who);
        let model = &mut self.model;
        let Some(live) = who.and_then(|i| model.guests[i].live.clone()) else {
            let stale = who
                .and_then(|i| model.guests[i].old.last().copied())
                .unwrap_or(0);
            assert_eq!(
                self.session.read_attached(&id, stale, 0),
                Read::Replaced,
                "a guest that is not attached read something"
            );
            return;
        };
        let read = self
            .session
            .read_attached(&id, live.attachment, live.cursor);
        if std::env::var_os("RENDEZVOUS_FUZZ_STATS").is_some() {
            eprintln!(
                "STAT read {}",
                match &read {
                    Read::Output { .. } => "output",
                    Read::Lagged { .. } => "lagged",
                    Read::Exit(_) => "exit",
                    Read::Nothing => "nothing",
                    Read::Replaced => "replaced",
                }
            );
        }
        let (start, end) = (model.start(), model.end);
        let mut max = model.relay.max_output_message_bytes as u64;
        if !live.has_acked {
            max = max.min(UNACKED_MESSAGE_BYTES as u64);
        }
        let mut blocked = false;
        if let Some(window) = live.window
            && live.cursor >= start
            && live.cursor < end
        {
            let limit = live.acked + window;
            if live.cursor >= limit {
                blocked = true;
            } else {
                max = max.min(limit - live.cursor);
            }
        }
        let live = model.guests[who.unwrap_or_default()]
            .live
            .as_mut()
            .expect("checked above");
        if blocked {
            assert_eq!(read, Read::Nothing, "a guest at its window was sent output");
            return;
        }
        if live.cursor < start {
            assert_eq!(
                read,
                Read::Lagged {
                    missed: start - live.cursor
                },
                "a guest behind the retained output (cursor {}, retained {start}..{end})",
                live.cursor
            );
            live.cursor = start;
            live.acked = live.acked.max(start);
            return;
        }
        if live.cursor >= end {
            let want = model.exit.clone().map_or(Read::Nothing, Read::Exit);
            assert_eq!(read, want, "a guest at the end of the stream");
            return;
        }
        let Read::Output { offset, data } = read else {
            panic!(
                "expected output at {} (retained {start}..{end}), got {read:?}",
                live.cursor
            );
        };
        assert_eq!(
            offset, live.cursor,
            "output at another offset than the cursor"
        );
        let want = (end - live.cursor).min(max);
        assert_eq!(
            data.len() as u64,
            want,
            "output length at {offset} (end {end}, cap {max})"
        );
        assert!(
            pattern::matches(offset, &data),
            "output bytes at {offset} are wrong"
        );
        live.cursor += data.len() as u64;
    }

    fn detach(&mut self, who: Option<usize>) {
        let id = self.id(who);
        let model = &mut self.model;
        let Some(i) = who else {
            self.session.detach(&id, 1);
            return;
        };
        let Some(live) = model.guests[i].live.take() else {
            // Not attached: nothing to detach.
            let stale = model.guests[i].old.last().copied().unwrap_or(0);
            self.session.detach(&id, stale);
            return;
        };
        self.session.detach(&id, live.attachment);
        let g = &mut model.guests[i];
        g.old.push(live.attachment);
        if model.exit.is_none() {
            if model.departed.len() >= MAX_DEPARTED_GUESTS {
                model.departed.pop_front();
            }
            model.departed.push_back((i, g.input.next_seq));
        }
        if model.primary == Some(i) {
            model.primary = model
                .guests
                .iter()
                .enumerate()
                .filter(|(_, g)| g.live.is_some() && g.role == Role::ReadWrite)
                .min_by_key(|(_, g)| g.joined)
                .map(|(i, _)| i);
        }
        model.update_size();
    }

    /// The refusal the session owes a write by `who`, if any.
    fn refusal(&self, who: Option<usize>) -> Option<SessionError> {
        if self.model.exit.is_some() {
            return Some(SessionError::Ended);
        }
        let Some(g) = who.map(|i| &self.model.guests[i]) else {
            return Some(SessionError::UnknownGuest);
        };
        if g.live.is_none() {
            return Some(SessionError::UnknownGuest);
        }
        (g.role != Role::ReadWrite).then_some(SessionError::ReadOnly)
    }

    fn input(&mut self, who: Option<usize>, seq: Seq, len: usize) {
        let id = self.id(who);
        let next = who.map_or(0, |i| self.model.guests[i].input.next_seq);
        let seq = match seq {
            Seq::Next => next,
            Seq::Back(d) => next.saturating_sub(u64::from(d) + 1),
            Seq::Ahead(d) => next.saturating_add(u64::from(d)),
            Seq::Raw(n) => n,
        };
        self.model.inputs_made += 1;
        let data = Bytes::from_static(pattern::run(self.model.inputs_made * 13, len));
        // Unconstrained: tokio's cooperative budget would make a queue
        // with room look full after many operations in one poll.
        let result = tokio::task::unconstrained(self.session.send_input(&id, seq, data.clone()))
            .now_or_never();
        if let Some(refusal) = self.refusal(who) {
            assert_eq!(result, Some(Err(refusal)), "input that must be refused");
            return;
        }
        if self.model.host_queue.len() >= HOST_INPUT_QUEUE_MESSAGES {
            assert_eq!(result, None, "input went past a full host queue");
            return;
        }
        let Some(i) = who else {
            unreachable!("refused above")
        };
        let result = result.expect("input into a queue with room does not wait");
        let g = &mut self.model.guests[i];
        if std::env::var_os("RENDEZVOUS_FUZZ_STATS").is_some() {
            eprintln!("STAT input accepted");
        }
        match g.input.accept(seq, data) {
            Accept::Apply(bytes) => {
                assert_eq!(result, Ok(()), "input in order");
                if !bytes.is_empty() {
                    self.model.host_queue.push_back(bytes);
                }
            }
            Accept::Nothing => assert_eq!(result, Ok(()), "input repeated or waiting"),
            Accept::TooFar => assert_eq!(
                result,
                Err(SessionError::SeqTooFarAhead {
                    seq,
                    expected: g.input.next_seq
                }),
                "input too far ahead"
            ),
        }
    }

    fn ack(&mut self, who: Option<usize>, offset: Offset, messages: u64) {
        let id = self.id(who);
        let cursor = who
            .and_then(|i| self.model.guests[i].live.as_ref())
            .map_or(0, |l| l.cursor);
        let offset = self.model.offset(offset, cursor);
        let result = self.session.ack(&id, offset, messages);
        let Some(live) = who.and_then(|i| self.model.guests[i].live.as_mut()) else {
            assert_eq!(result, Err(SessionError::UnknownGuest), "ack by a stranger");
            return;
        };
        assert_eq!(result, Ok(()), "ack by an attached guest");
        let offset = offset.min(live.cursor);
        let mut moved = false;
        if offset > live.acked {
            live.acked = offset;
            moved = true;
        }
        if messages > live.acked_messages {
            live.acked_messages = messages;
            moved = true;
        }
        if moved {
            live.has_acked = true;
        }
    }

    fn resize(&mut self, who: Option<usize>, cols: u32, rows: u32) {
        let id = self.id(who);
        let result = self.session.resize_guest(&id, cols, rows);
        if let Some(refusal) = self.refusal(who) {
            assert_eq!(result, Err(refusal), "a resize that must be refused");
            return;
        }
        assert_eq!(result, Ok(()), "a read-write guest's resize");
        if let Some(live) = who.and_then(|i| self.model.guests[i].live.as_mut()) {
            live.size = clamp(cols, rows);
        }
        self.model.update_size();
    }

    /// The properties that hold after every step.
    fn check(&self, step: usize, action: &Action) {
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
