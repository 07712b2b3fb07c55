//! The bounds of one session's relay, each with its unit and default.

use std::time::Duration;

/// Default bound of a session's retained output, in bytes (1 MiB).
pub const RETAINED_OUTPUT_BYTES: usize = 1024 * 1024;

/// Default largest output message sent to a guest, in bytes (256 KiB).
/// Output that piled up at a guest's cursor goes out joined up to this. A
/// browser pays for every message (a read of the response, gRPC-Web
/// framing, protobuf decoding, a `terminal.write`), so fewer, larger
/// messages render a flood faster: 64 KiB rendered 20 MB 1.5 to 1.7 times
/// as slowly (`tests/browser/measure-render.mjs`). Until a guest has
/// acknowledged output (`Ack`, as the web guest and `rendezvous attach`
/// do), its messages are at most [`UNACKED_MESSAGE_BYTES`].
pub const MAX_OUTPUT_MESSAGE_BYTES: usize = 256 * 1024;

/// Largest output message to a guest that has not acknowledged anything
/// yet, in bytes (64 KiB). A stream that reads nothing holds one message
/// in the server (hyper takes a whole message from the stream before the
/// guest's HTTP/2 window stops it), so a client that opens streams and
/// never reads or acks holds a quarter of what it would with full-size
/// messages.
pub const UNACKED_MESSAGE_BYTES: usize = 64 * 1024;

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
