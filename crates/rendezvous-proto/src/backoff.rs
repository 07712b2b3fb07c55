//! Reconnect delays: exponential backoff with jitter, the same for hosts
//! and guests (and the web guest, in TypeScript).

use std::time::Duration;

/// First reconnect delay, before jitter.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);

/// Longest reconnect delay, before jitter.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Delays between connection attempts: [`INITIAL_BACKOFF`] doubling up to
/// [`MAX_BACKOFF`]. Each delay is drawn uniformly from the upper half of the
/// current step (`step/2..=step`), so clients that lost the server at the same
/// moment do not all come back at the same moment.
#[derive(Debug)]
pub struct Backoff {
    /// The step the next delay is drawn from; doubled by each `next_delay`,
    /// reset by a successful connection.
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// A schedule whose first delay is drawn from [`INITIAL_BACKOFF`].
    pub fn new() -> Self {
        Self {
            step: INITIAL_BACKOFF,
        }
    }

    /// The delay before the next attempt; later calls return longer delays.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(MAX_BACKOFF);
        let half = step / 2;
        // Without randomness, fall back to the full step: still bounded.
        let fraction = getrandom::u32().map_or(1.0, |r| f64::from(r) / f64::from(u32::MAX));
        half + half.mul_f64(fraction)
    }

    /// Starts over at [`INITIAL_BACKOFF`]; call it once a connection has
    /// succeeded (a host registered, a guest attached).
    pub fn reset(&mut self) {
        self.step = INITIAL_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new();
        let mut step = INITIAL_BACKOFF;
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(delay >= step / 2 && delay <= step, "{delay:?} for {step:?}");
            step = (step * 2).min(MAX_BACKOFF);
        }
        assert!(backoff.next_delay() <= MAX_BACKOFF);
        backoff.reset();
        assert!(backoff.next_delay() <= INITIAL_BACKOFF);
    }
}
