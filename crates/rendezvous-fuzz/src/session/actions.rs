//! The shape of a session input: the relay bounds it runs under and the
//! actions it takes, each built from the fuzzer's bytes.

use arbitrary::Arbitrary;
use rendezvous_server::session::{MAX_PENDING_INPUT_BYTES, RelayConfig};

/// A size of host output or guest input, from nothing to past one
/// message's data.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) enum Len {
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
    pub(super) fn bytes(self) -> usize {
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
pub(super) enum InputLen {
    Zero,
    Byte(u8),
    Small(u16),
    OverPending,
}

impl InputLen {
    pub(super) fn bytes(self) -> usize {
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
pub(super) enum Offset {
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
pub(super) enum Seq {
    Next,
    /// An earlier one (a retry).
    Back(u8),
    /// Ahead of the next, by up to 255 (the bound is 64).
    Ahead(u8),
    Raw(u64),
}

/// An input count a new host Data stream opens with
/// (`DataOpen.input_applied`) other than what the host has taken (which
/// `rendezvous-host` sends).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) enum Applied {
    /// Fewer: the host would take some input twice.
    Fewer(u8),
    /// More: the host skips input it was never sent.
    More(u8),
    /// Past anything queued.
    Max,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) enum Action {
    /// Host output on the Data stream that serves the session, or on the
    /// last one when none does.
    Output(Len),
    /// Host output on a Data stream that does not serve the session: an
    /// older one, or one never handed out.
    StaleOutput {
        len: Len,
        which: u8,
    },
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
    /// The host's latest Data stream reads input.
    HostReadsInput {
        count: u8,
    },
    /// The host counts the input it has taken as written (`input_ack`),
    /// or `fewer` less than that.
    HostAcksInput {
        fewer: Option<u8>,
    },
    /// A new Data stream for the session: it replaces the one that
    /// serves it, if any. It opens with what the host has taken, or (a
    /// host that is wrong about it) `wrong`.
    HostReattach {
        wrong: Option<Applied>,
    },
    /// A Data stream is gone without an exit status: the current one, or
    /// (`stale`) an older one.
    HostDetach {
        stale: bool,
    },
    /// The session's host is marked away or back.
    HostState {
        reconnecting: bool,
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
pub(super) struct Config {
    pub(super) retained: u8,
    pub(super) message: u8,
    pub(super) backpressure: u8,
    pub(super) max_guests: u8,
    pub(super) cols: u16,
    pub(super) rows: u16,
}

impl Config {
    pub(super) fn relay(self) -> RelayConfig {
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
