//! What the session documents, as a model the harness checks it
//! against: offsets, retained output, guests and their streams, input
//! order, the host's Data streams and input queue, and backpressure.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use rendezvous_proto::ids::clamp_cells;
use rendezvous_proto::input_seqs::InputSeqs;
use rendezvous_proto::{ExitStatus, HostState, Role, WindowSize};
use rendezvous_server::session::{
    DEFAULT_SIZE, DEPARTED_PACE, MAX_PENDING_INPUT_BYTES, MAX_PENDING_INPUTS, RelayConfig,
};

use super::actions::Offset;

/// One guest's input order, as the session documents it.
#[derive(Debug, Default, Clone)]
pub(super) struct InputModel {
    pub(super) next_seq: u64,
    pub(super) pending: BTreeMap<u64, Bytes>,
    pub(super) pending_bytes: usize,
}

/// What accepting an input does, in the model.
pub(super) enum Accept {
    Apply(Bytes),
    Nothing,
    TooFar,
}

impl InputModel {
    pub(super) fn accept(&mut self, seq: u64, data: Bytes) -> Accept {
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
pub(super) struct Live {
    pub(super) attachment: u64,
    pub(super) size: WindowSize,
    /// The stream's cursor, which is also the session's cursor for the
    /// guest (what backpressure reads).
    pub(super) cursor: u64,
    pub(super) acked: u64,
    pub(super) acked_messages: u64,
    pub(super) has_acked: bool,
    pub(super) window: Option<u64>,
}

#[derive(Debug)]
pub(super) struct GuestModel {
    pub(super) id: String,
    pub(super) token: String,
    pub(super) role: Role,
    pub(super) joined: u64,
    pub(super) live: Option<Live>,
    /// Attachment numbers of streams that served it and no longer do.
    pub(super) old: Vec<u64>,
    pub(super) input: InputModel,
}

/// A guest whose stream ended, remembered for resuming.
#[derive(Debug, Clone, Copy)]
pub(super) struct Departed {
    /// Index into `Model::guests`.
    pub(super) guest: usize,
    pub(super) next_seq: u64,
    /// Its cursor when it left: a read-write guest holds the host there
    /// for [`DEPARTED_PACE`].
    pub(super) cursor: u64,
    /// When it left: between these two instants (the session reads the
    /// clock itself).
    pub(super) left: Span,
}

/// A moment the session read the clock at, known to lie between two
/// instants the harness read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) from: Instant,
    pub(super) to: Instant,
}

impl Span {
    /// Runs `f`, and the span of instants it ran within.
    pub(super) fn around<T>(f: impl FnOnce() -> T) -> (T, Span) {
        let from = Instant::now();
        let out = f();
        (
            out,
            Span {
                from,
                to: Instant::now(),
            },
        )
    }
}

/// The host's side of the session: its Data streams, the input queued
/// for it, and what it has taken.
#[derive(Debug)]
pub(super) struct HostModel {
    /// Input messages the host has not counted as written, oldest first;
    /// the front one has number `acked`.
    pub(super) unacked: VecDeque<Bytes>,
    /// Input messages the host counted as written (its latest
    /// `input_ack`, or its latest `input_applied`).
    pub(super) acked: u64,
    /// Number of the Data stream that serves the session, if one does.
    pub(super) stream: Option<u64>,
    /// Data streams handed out so far (the latest is number `streams`).
    pub(super) streams: u64,
    /// Number of the next message the latest stream's reader returns.
    pub(super) next: u64,
    /// Input messages the host has taken, over all its streams: one past
    /// the last one's number.
    pub(super) taken: u64,
    /// Whether the latest stream opened with `input_applied` at `taken`,
    /// as `rendezvous-host` opens them, and the host had not counted
    /// more than that before: then it takes each message exactly once,
    /// however many streams came before.
    pub(super) honest: bool,
    /// What guests are told about the host.
    pub(super) state: HostState,
}

impl HostModel {
    pub(super) fn new() -> Self {
        Self {
            unacked: VecDeque::new(),
            acked: 0,
            stream: None,
            streams: 0,
            next: 0,
            taken: 0,
            honest: true,
            state: HostState::default(),
        }
    }

    /// One past the number of the last message queued.
    pub(super) fn end(&self) -> u64 {
        self.acked + self.unacked.len() as u64
    }

    /// The host counts `count` messages as written: older counts change
    /// nothing, counts past the queue are all of it.
    pub(super) fn ack(&mut self, count: u64) {
        let count = count.min(self.end());
        while self.acked < count {
            self.unacked.pop_front();
            self.acked += 1;
        }
    }
}

#[derive(Debug)]
pub(super) struct Model {
    pub(super) relay: RelayConfig,
    pub(super) max_guests: usize,
    /// Where the stream starts: 0, or on a restored session the host's
    /// `start_offset`.
    pub(super) origin: u64,
    pub(super) end: u64,
    /// On a restored session, the end of the output the host holds
    /// (`end_offset`): guests may resume up to it before it is refilled.
    pub(super) restored_end: u64,
    /// Per guest, the seq after its last input queued for the host (from
    /// the host's report on a restored session, then as input is
    /// applied): where a signed resume goes on at the earliest. The
    /// proto's own bookkeeping (tested on its own), bounds and all.
    pub(super) input_seqs: InputSeqs,
    pub(super) exit: Option<ExitStatus>,
    pub(super) size: WindowSize,
    pub(super) guests: Vec<GuestModel>,
    /// Departed guests that may resume, oldest first.
    pub(super) departed: VecDeque<Departed>,
    pub(super) primary: Option<usize>,
    pub(super) joins: u64,
    pub(super) attachments: u64,
    /// The host's side.
    pub(super) host: HostModel,
    /// Distinguishes the bytes of each input.
    pub(super) inputs_made: u64,
}

/// A terminal dimension from the fuzzer's number: often 0 (the default)
/// or the largest there is, else the number itself.
pub(super) fn cells(n: u32) -> u32 {
    match n % 4 {
        0 => 0,
        1 => u32::MAX,
        _ => n,
    }
}

pub(super) fn clamp(cols: u32, rows: u32) -> WindowSize {
    WindowSize {
        cols: clamp_cells(cols, DEFAULT_SIZE.cols),
        rows: clamp_cells(rows, DEFAULT_SIZE.rows),
    }
}

impl Model {
    pub(super) fn start(&self) -> u64 {
        self.end - (self.end - self.origin).min(self.relay.retained_output_bytes as u64)
    }

    pub(super) fn attached(&self) -> usize {
        self.guests.iter().filter(|g| g.live.is_some()).count()
    }

    pub(super) fn update_size(&mut self) {
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

    pub(super) fn offset(&self, offset: Offset, cursor: u64) -> u64 {
        match offset {
            Offset::Zero => 0,
            Offset::Start(d) => self.start().saturating_add_signed(i64::from(d)),
            Offset::End(d) => self.end.saturating_add_signed(i64::from(d)),
            Offset::Cursor(d) => cursor.saturating_add_signed(i64::from(d)),
            Offset::Raw(n) => n,
            Offset::Max => u64::MAX,
        }
    }

    /// Whether the host may send more output at a moment within
    /// `checked`: the fastest of the guests that set its pace is within
    /// the backpressure window, or none does. Read-write guests set it
    /// while attached (the model takes every input to run within their
    /// stall timeout, 60 s) and for [`DEPARTED_PACE`] after they left.
    /// `None` when a departed guest's pace may or may not have run out
    /// within `checked`.
    pub(super) fn room(&self, checked: Span) -> Option<bool> {
        if self.exit.is_some() {
            return Some(true);
        }
        let live = self
            .guests
            .iter()
            .filter(|g| g.role == Role::ReadWrite)
            .filter_map(|g| g.live.as_ref().map(|l| l.cursor))
            .max();
        // The fastest pace-setter if every departed guest whose pace may
        // hold still holds, and if only those that surely hold do.
        let (mut surely, mut maybe) = (live, live);
        for d in &self.departed {
            if self.guests[d.guest].role != Role::ReadWrite {
                continue;
            }
            if checked.to.saturating_duration_since(d.left.from) < DEPARTED_PACE {
                surely = surely.max(Some(d.cursor));
                maybe = maybe.max(Some(d.cursor));
            } else if checked.from.saturating_duration_since(d.left.to) < DEPARTED_PACE {
                maybe = maybe.max(Some(d.cursor));
            }
        }
        let room = |fastest: Option<u64>| {
            fastest.is_none_or(|c| self.end.saturating_sub(c) <= self.relay.backpressure_window())
        };
        (room(surely) == room(maybe)).then(|| room(surely))
    }
}
