//! What the scale load sends, and how a guest checks what it receives.
//!
//! Each session carries two streams in one output stream:
//! - the host's printing: lowercase ASCII cut, in order, from one
//!   pseudo-random pool of [`POOL_BYTES`] (the same in every process: it
//!   is made from a fixed seed), so a guest checks each byte against the
//!   pool at its position in the printing;
//! - the echoes of the keystrokes its guests type: guest `g` of a session
//!   types the keys of its own alphabet, [`KEYS_PER_GUEST`] uppercase
//!   letters or digits, in turn; the host echoes each at once.
//!
//! So a guest can split what it receives into the printing and each
//! typist's echoes, and tell a lost, repeated or reordered byte in either.
//! The bytes stay printable ASCII: the server strips terminal replies
//! (escape sequences) from input, and C1 controls could look like them.

use bytes::Bytes;

/// Size of the printing's pool, in bytes (64 KiB).
pub const POOL_BYTES: usize = 64 * 1024;

/// The keys guests type, split into one alphabet per guest of a session.
const KEYS: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Keys in each guest's alphabet.
pub const KEYS_PER_GUEST: usize = 9;

/// Most guests one session can have in the load: the alphabets that fit
/// [`KEYS`].
pub const MAX_GUESTS_PER_SESSION: usize = KEYS.len() / KEYS_PER_GUEST;

/// The printing's pool: lowercase letters from a fixed xorshift64* seed.
pub fn pool() -> Bytes {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut pool = Vec::with_capacity(POOL_BYTES);
    while pool.len() < POOL_BYTES {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        pool.extend(r.to_le_bytes().iter().map(|b| b'a' + b % 26));
    }
    Bytes::from(pool)
}

/// `len` bytes of the printing from position `at` (wrapping in the pool).
pub fn printing(pool: &Bytes, at: u64, len: usize) -> Bytes {
    let start = (at % POOL_BYTES as u64) as usize;
    if start + len <= POOL_BYTES {
        return pool.slice(start..start + len);
    }
    let mut out = Vec::with_capacity(len);
    let mut pos = start;
    while out.len() < len {
        let take = (len - out.len()).min(POOL_BYTES - pos);
        out.extend_from_slice(&pool[pos..pos + take]);
        pos = 0;
    }
    Bytes::from(out)
}

/// The `k`-th key guest `guest` of a session types.
pub fn key(guest: usize, k: u64) -> u8 {
    KEYS[guest * KEYS_PER_GUEST + (k % KEYS_PER_GUEST as u64) as usize]
}

/// Which guest of a session types `byte`, if it is a key.
fn typist(byte: u8) -> Option<usize> {
    KEYS.iter()
        .position(|&k| k == byte)
        .map(|i| i / KEYS_PER_GUEST)
}

/// What went wrong in a guest's output stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// A printing byte differs from the pool at its position.
    #[error("printing differs at byte {at} of the printing")]
    Printing {
        /// Position in the printing (not the output offset).
        at: u64,
    },
    /// A key arrived out of its typist's order (lost, repeated or moved).
    #[error("guest {guest}'s echo {k} is {got:?}, expected {expected:?}")]
    Key {
        /// The typist.
        guest: usize,
        /// Its key's number.
        k: u64,
        /// What arrived.
        got: char,
        /// What should have.
        expected: char,
    },
    /// A byte that is neither printing nor a key of the session's guests.
    #[error("unexpected byte {0:#04x}")]
    Stray(u8),
}

/// One guest's check of its session's output stream.
#[derive(Debug, Clone)]
pub struct StreamCheck {
    pool: Bytes,
    /// Printing bytes received so far.
    pub printed: u64,
    /// Echoes received so far, per typist of the session.
    pub echoes: Vec<u64>,
}

impl StreamCheck {
    /// A check for a session of `guests` typists (at most
    /// [`MAX_GUESTS_PER_SESSION`]).
    pub fn new(pool: Bytes, guests: usize) -> Self {
        Self {
            pool,
            printed: 0,
            echoes: vec![0; guests],
        }
    }

    /// Takes the next output bytes; calls `echoed(guest)` for each echo, in
    /// order.
    pub fn take(&mut self, data: &[u8], mut echoed: impl FnMut(usize)) -> Result<(), Mismatch> {
        let mut rest = data;
        while !rest.is_empty() {
            let run = rest
                .iter()
                .position(|b| !b.is_ascii_lowercase())
                .unwrap_or(rest.len());
            if run > 0 {
                self.check_printing(&rest[..run])?;
                rest = &rest[run..];
                continue;
            }
            let byte = rest[0];
            let guest = typist(byte)
                .filter(|&g| g < self.echoes.len())
                .ok_or(Mismatch::Stray(byte))?;
            let k = self.echoes[guest];
            let expected = key(guest, k);
            if byte != expected {
                return Err(Mismatch::Key {
                    guest,
                    k,
                    got: char::from(byte),
                    expected: char::from(expected),
                });
            }
            self.echoes[guest] += 1;
            echoed(guest);
            rest = &rest[1..];
        }
        Ok(())
    }

    fn check_printing(&mut self, mut run: &[u8]) -> Result<(), Mismatch> {
        while !run.is_empty() {
            let start = (self.printed % POOL_BYTES as u64) as usize;
            let take = run.len().min(POOL_BYTES - start);
            let want = &self.pool[start..start + take];
            if let Some(i) = run[..take].iter().zip(want).position(|(a, b)| a != b) {
                return Err(Mismatch::Printing {
                    at: self.printed + i as u64,
                });
            }
            self.printed += take as u64;
            run = &run[take..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_lowercase_and_the_same_everywhere() {
        let p = pool();
        assert_eq!(p.len(), POOL_BYTES);
        assert!(p.iter().all(u8::is_ascii_lowercase));
        assert_eq!(p, pool());
        assert_ne!(p[..64], p[64..128]);
    }

    #[test]
    fn printing_wraps_around_the_pool() {
        let p = pool();
        let at = POOL_BYTES as u64 - 3;
        let out = printing(&p, at, 10);
        assert_eq!(&out[..3], &p[POOL_BYTES - 3..]);
        assert_eq!(&out[3..], &p[..7]);
    }

    #[test]
    fn printing_and_echoes_interleaved_check_out() {
        let p = pool();
        let mut check = StreamCheck::new(p.clone(), 3);
        let mut seen = Vec::new();
        let mut data = printing(&p, 0, 100).to_vec();
        data.push(key(1, 0));
        data.extend_from_slice(&printing(&p, 100, POOL_BYTES));
        data.push(key(0, 0));
        data.push(key(1, 1));
        check.take(&data, |g| seen.push(g)).unwrap();
        assert_eq!(check.printed, 100 + POOL_BYTES as u64);
        assert_eq!(check.echoes, vec![1, 2, 0]);
        assert_eq!(seen, vec![1, 0, 1]);
    }

    #[test]
    fn a_lost_byte_a_repeated_key_and_a_stray_are_caught() {
        let p = pool();
        let lost = [&p[..10], &p[11..20]].concat();
        let err = StreamCheck::new(p.clone(), 1)
            .take(&lost, |_| {})
            .unwrap_err();
        assert!(matches!(err, Mismatch::Printing { .. }), "{err}");

        let repeated = [key(0, 0), key(0, 0)];
        let err = StreamCheck::new(p.clone(), 1)
            .take(&repeated, |_| {})
            .unwrap_err();
        assert!(matches!(err, Mismatch::Key { k: 1, .. }), "{err}");

        // A key of a guest the session does not have.
        let err = StreamCheck::new(p.clone(), 1)
            .take(&[key(2, 0)], |_| {})
            .unwrap_err();
        assert_eq!(err, Mismatch::Stray(key(2, 0)));

        let err = StreamCheck::new(p, 1).take(b"\n", |_| {}).unwrap_err();
        assert_eq!(err, Mismatch::Stray(b'\n'));
    }

    #[test]
    fn every_guest_has_a_distinct_alphabet() {
        for g in 0..MAX_GUESTS_PER_SESSION {
            for k in 0..KEYS_PER_GUEST as u64 {
                assert_eq!(typist(key(g, k)), Some(g));
            }
        }
    }
}
