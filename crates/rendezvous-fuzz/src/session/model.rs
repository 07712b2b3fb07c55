//! What the session documents, as a model the harness checks it
//! against: offsets, retained output, guests and their streams, input
//! order, the host's input queue and backpressure.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rendezvous_proto::ids::clamp_cells;
use rendezvous_proto::{ExitStatus, Role, WindowSize};
use rendezvous_server::session::{
    DEFAULT_SIZE, MAX_PENDING_INPUT_BYTES, MAX_PENDING_INPUTS, RelayConfig,
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

#[derive(Debug)]
pub(super) struct Model {
    pub(super) relay: RelayConfig,
    pub(super) max_guests: usize,
    pub(super) end: u64,
    pub(super) exit: Option<ExitStatus>,
    pub(super) size: WindowSize,
    pub(super) guests: Vec<GuestModel>,
    /// Departed guests that may resume (indexes into `guests`), oldest
    /// first, with their next input seq.
    pub(super) departed: VecDeque<(usize, u64)>,
    pub(super) primary: Option<usize>,
    pub(super) joins: u64,
    pub(super) attachments: u64,
    /// Input messages the host's queue holds, oldest first.
    pub(super) host_queue: VecDeque<Bytes>,
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
        self.end - self.end.min(self.relay.retained_output_bytes as u64)
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

    /// Whether the host may send more output now.
    pub(super) fn room(&self) -> bool {
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
