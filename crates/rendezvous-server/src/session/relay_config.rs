//! The bounds of one session's relay, each with its unit and default.

use std::time::Duration;

/// Default bound of a session's retained output, in bytes (1 MiB).
pub const RETAINED_OUTPUT_BYTES: usize = 1024 * 1024;

/// Default largest output message sent to a guest, in bytes (64 KiB).
/// Output that piled up at a guest's cursor goes out joined up to this.
/// It is also what a guest that reads nothing holds in the server: hyper
/// takes one whole message from the stream before the guest's HTTP/2
/// window stops it, so each never-read stream holds one message plus the
/// send buffer ([`crate::server::HTTP2_MAX_SEND_BUF_BYTES`]). 256 KiB
/// rendered a 20 MB flood in a browser about 10 % faster
/// (`tests/browser/measure-render.mjs`), for four times the memory per
/// stalled stream; library users may raise it.
pub const MAX_OUTPUT_MESSAGE_BYTES: usize = 64 * 1024;

/// Default distance, in bytes, by which the fastest guest may trail the end
/// of the output stream before the host is paused (256 KiB).
pub const BACKPRESSURE_BYTES: u64 = 256 * 1024;

/// Default time after which a read-write guest that is behind and has
/// neither read nor acknowledged anything stops holding the host back, in
/// ms (60 s): a stalled page or a background tab never holds the job for
/// longer. The guest lags and is told so once it reads again.
pub const STALLED_GUEST_TIMEOUT: Duration = Duration::from_millis(60_000);

/// Smallest and largest acknowledged window a guest may ask for, in bytes
/// (64 KiB and 64 MiB); see [`Session::set_window`](super::Session::set_window).
pub const MIN_WINDOW_BYTES: u64 = 64 * 1024;
/// See [`MIN_WINDOW_BYTES`].
pub const MAX_WINDOW_BYTES: u64 = 64 * 1024 * 1024;

/// Bound of the queue of input messages waiting for the host's Data stream,
/// in messages. A guest's input call waits while it is full.
pub const HOST_INPUT_QUEUE_MESSAGES: usize = 64;

/// Bounds of one session's relay, each with its unit.
#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// Bytes of output kept for late joiners and resuming guests.
    pub retained_output_bytes: usize,
    /// Largest output message sent to a guest, in bytes.
    pub max_output_message_bytes: usize,
    /// How far, in bytes, the fastest guest may trail before the host pauses.
    /// At most half of `retained_output_bytes` takes effect (see
    /// [`RelayConfig::backpressure_window`]).
    pub backpressure_bytes: u64,
    /// How long a read-write guest may go without reading or acknowledging
    /// before it stops holding the host back (default
    /// [`STALLED_GUEST_TIMEOUT`]). Read-only guests never hold it back.
    pub stalled_guest_timeout: Duration,
}

impl RelayConfig {
    /// The backpressure window in effect, in bytes: `backpressure_bytes`,
    /// but at most half the retained output. A guest that lags lands at the
    /// oldest retained byte, a whole retained output behind; the window
    /// must be smaller, or that jump would count as keeping up and let the
    /// host run on.
    pub fn backpressure_window(&self) -> u64 {
        self.backpressure_bytes
            .min(self.retained_output_bytes as u64 / 2)
            .max(1)
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            retained_output_bytes: RETAINED_OUTPUT_BYTES,
            max_output_message_bytes: MAX_OUTPUT_MESSAGE_BYTES,
            backpressure_bytes: BACKPRESSURE_BYTES,
            stalled_guest_timeout: STALLED_GUEST_TIMEOUT,
        }
    }
}
