//! Backpressure on the host: its output waits while a guest that holds it
//! back is a window behind (see the module docs of [`super`]), and whether
//! it waits now, for the `rendezvous_paused_sessions` gauge.

use std::time::Instant;

use super::{Pace, Session, lock};

impl Session {
    /// Waits until the host may send more output: no guest holds it back
    /// (see [`Guests::pace`]: read-only guests never do, nor read-write
    /// guests stalled for [`RelayConfig::stalled_guest_timeout`]), or the
    /// fastest guest that does trails the end by at most the backpressure
    /// window, or the session has ended. See the module docs. Cancel-safe.
    pub async fn wait_for_room(&self) {
        /// Clears `paused` however the wait ends (also when cancelled).
        struct Unpause<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Unpause<'_> {
            fn drop(&mut self) {
                self.0.store(false, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _unpause = Unpause(&self.paused);
        loop {
            let stalls_at = {
                let st = lock(&self.state);
                if st.exit.is_some() {
                    return;
                }
                match st
                    .guests
                    .pace(Instant::now(), self.config.stalled_guest_timeout)
                {
                    Pace::Free => return,
                    Pace::Guests { fastest_cursor, .. }
                        if st.output.end().saturating_sub(fastest_cursor)
                            <= self.config.backpressure_window() =>
                    {
                        return;
                    }
                    Pace::Guests { stalls_at, .. } => stalls_at,
                }
            };
            self.paused
                .store(true, std::sync::atomic::Ordering::Relaxed);
            // Only the host's ingest waits here, so a wake-up that came
            // between the check and this line is kept as a permit. Without
            // one, the guests that hold the host back have stalled by
            // `stalls_at`, and it goes on.
            tokio::select! {
                () = self.room.notified() => {}
                () = tokio::time::sleep_until(stalls_at.into()) => {}
            }
        }
    }

    /// Whether the host's output is paused now, waiting for a guest that
    /// holds it back to catch up (see [`Session::wait_for_room`]).
    pub fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::Relaxed)
    }
}
