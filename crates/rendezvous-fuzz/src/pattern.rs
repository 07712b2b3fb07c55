//! Host output whose every byte is known by its offset, so that a reader
//! can check any chunk it gets, at any offset, without keeping a copy of
//! the stream.

use std::sync::OnceLock;

use rendezvous_proto::message_size::MAX_DATA_BYTES;

/// The period of the pattern, in bytes: a prime, so that chunk boundaries
/// at powers of two never line up with it.
const PERIOD: usize = 251;

/// Longest run of output one call hands out: one host message's data
/// (4 MiB) and 64 KiB more, for oversized writes.
pub const MAX_RUN_BYTES: usize = MAX_DATA_BYTES + 64 * 1024;

fn buffer() -> &'static [u8] {
    static BUFFER: OnceLock<Vec<u8>> = OnceLock::new();
    BUFFER.get_or_init(|| (0..MAX_RUN_BYTES + PERIOD).map(byte_at_index).collect())
}

fn byte_at_index(i: usize) -> u8 {
    // Never ESC (0x1b), so the bytes pass through terminal-reply stripping
    // unchanged when they are used as input.
    let b = ((i % PERIOD) * 7 + 1) as u8;
    if b == 0x1b { b'x' } else { b }
}

/// The byte at `offset` of every pattern stream.
pub fn byte_at(offset: u64) -> u8 {
    byte_at_index((offset % PERIOD as u64) as usize)
}

/// The `len` bytes of the stream from `offset` on (`len` at most
/// [`MAX_RUN_BYTES`]).
pub fn run(offset: u64, len: usize) -> &'static [u8] {
    let start = (offset % PERIOD as u64) as usize;
    &buffer()[start..start + len.min(MAX_RUN_BYTES)]
}

/// Whether `data` is the stream's bytes from `offset` on.
pub fn matches(offset: u64, data: &[u8]) -> bool {
    data.len() <= MAX_RUN_BYTES && data == run(offset, data.len())
}
