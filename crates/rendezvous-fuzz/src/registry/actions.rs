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
    },
    Leave {
        host: u8,
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
}
