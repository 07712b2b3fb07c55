//! What a registry input is made of: the actions of hosts and guests,
//! each built from the fuzzer's bytes.

use arbitrary::Arbitrary;

#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) enum Action {
    Register {
        task: u8,
        name: u8,
        secret: u8,
        read_only: Option<u8>,
        labels: u8,
        other_owner: bool,
        /// The grace period it asks for: see [`grace_period_ms`].
        grace: u8,
    },
    /// A Hello with a resume ticket: the Hello of a host registered
    /// before (live, gone, or the bystander's without its secret), with
    /// its ticket, with at most one thing changed.
    Resume {
        /// Whose Hello, among every host registered so far.
        of: u8,
        change: Change,
        /// The sessions it says it still runs, from the session tickets
        /// handed out so far (how many, and from where).
        sessions: u8,
        /// With made-up session tickets.
        made_up_sessions: bool,
        /// Over the sessions a Hello may name.
        too_many: bool,
    },
    Leave {
        host: u8,
    },
    /// A host's control connection ends: its latest one, or (`stale`)
    /// the one before.
    ControlLost {
        host: u8,
        stale: bool,
    },
    Open {
        host: u8,
        cols: u16,
        rows: u16,
    },
    DataOpen {
        host: u8,
        session: u8,
        right_token: bool,
    },
    Output {
        session: u8,
        len: u16,
        /// Multiplies `len` by 64.
        large: bool,
    },
    Exit {
        session: u8,
        code: i32,
    },
    Attach {
        task: u8,
        secret: u8,
        /// None: a new shell; else a session of the harness's, or an
        /// unknown or malformed ID.
        session: Option<u8>,
        host_name: u8,
        /// The task, secret (read-write or read-only) and host name of a
        /// host of the harness's instead, and one of its sessions.
        known: Option<u8>,
        resume: Option<(u8, bool)>,
        window_bytes: u32,
        window_messages: u8,
    },
    Poll {
        guest: u8,
        times: u8,
    },
    Drop {
        guest: u8,
    },
    Input {
        guest: u8,
        right: bool,
        seq: u8,
        len: u16,
    },
    Resize {
        guest: u8,
        right: bool,
        cols: u32,
        rows: u32,
    },
    Ack {
        guest: u8,
        right: bool,
        offset: u64,
        messages: u64,
    },
    List {
        task: u8,
        secret: u8,
    },
    HostReads {
        session: u8,
    },
    /// Virtual time passes: `tenths % 32` tenths of a second, so that
    /// grace periods run out (at most 300 actions x 3.1 s, well within
    /// the sessions' idle timeout: see `Harness::wait`).
    Wait {
        tenths: u8,
    },
}

/// What a resuming Hello changes in the Hello it repeats.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) enum Change {
    Nothing,
    /// Another owner presents it.
    Owner,
    Task(u8),
    Name(u8),
    Secret(u8),
    /// Another host's ticket, or (None) made-up bytes.
    Ticket(Option<u8>),
    /// Another host's ID, or (None) a made-up one.
    HostId(Option<u8>),
}

/// The grace period a Hello asks for, in ms: none, shorter than the 10 s
/// of virtual time an input to a full host queue waits (so that inputs
/// see it run out), or longer.
pub(super) fn grace_period_ms(grace: u8) -> u64 {
    match grace % 4 {
        0 | 1 => 0,
        2 => 1_000,
        _ => 600_000,
    }
}
