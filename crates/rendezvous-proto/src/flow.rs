//! Flow control in messages, on top of HTTP/2's flow control in bytes.
//!
//! HTTP/2 bounds the bytes a peer may send ahead of what the receiver has
//! read, not the number of frames. h2 0.4.16 and later (the HTTP/2 crate
//! under hyper and tonic) also bound the memory that *unread small* DATA
//! frames cost a connection: each frame under 256 bytes spends
//! `256 - len` of a per-connection budget (half the connection window,
//! at least 25,600 bytes), and a connection over it is closed with GOAWAY
//! `ENHANCE_YOUR_CALM` "too_many_data_frames". Backpressure means leaving
//! a stream unread, and a terminal's output is mostly small writes
//! (prompts, keystroke echoes, progress lines), so without a bound in
//! messages a paused reader would lose its whole connection: a host every
//! session, a guest client every guest it carries.
//!
//! So every stream whose reader may pause carries credit in messages:
//! - host → server Output: the server acknowledges the output it has taken
//!   (`HostDataResponse.output_ack`, an offset); the host keeps at most
//!   [`HOST_OUTPUT_CREDIT_MESSAGES`] Output messages past it. A paused
//!   session stops acknowledging, not reading; a host that sends past its
//!   credit is refused with `RESOURCE_EXHAUSTED`.
//! - server → host Input: the host acknowledges the Input messages it has
//!   written to the PTY (`HostDataRequest.input_ack`, a count); the server
//!   sends at most [`HOST_INPUT_CREDIT_MESSAGES`] past it.
//! - server → guest events: a guest that asks for it
//!   (`AttachRequest.window_messages`) is sent at most that many events
//!   past its acknowledged count; the native guest asks for
//!   [`GUEST_WINDOW_MESSAGES`].
//!
//! The bounds keep the worst case well inside h2's budget: a host with 64
//! paused sessions holds at most 64 × 16 unread frames on the server
//! (about 261 KB of budget against 512 KiB for the server's 1 MiB
//! connection window), and a guest connection with 200 paused streams
//! (the server's stream limit) holds at most 200 × 32 (about 1.6 MB
//! against 2.5 MiB for the client's 5 MiB window).

/// Most Output messages a host sends past the server's last
/// `output_ack` (16). With the host's 32 KiB messages, up to 512 KiB are
/// on their way, enough to keep a loopback relay at full speed.
pub const HOST_OUTPUT_CREDIT_MESSAGES: usize = 16;

/// Most Input messages the server sends a host past its last `input_ack`
/// (16). Input beyond it waits in the session's input queue.
pub const HOST_INPUT_CREDIT_MESSAGES: u64 = 16;

/// Smallest and largest message window a guest may ask for, in events
/// (8 and 1024); `AttachRequest.window_messages` is clamped to them.
pub const MIN_WINDOW_MESSAGES: u32 = 8;
/// See [`MIN_WINDOW_MESSAGES`].
pub const MAX_WINDOW_MESSAGES: u32 = 1024;

/// The message window the native guest asks for, in events (32).
pub const GUEST_WINDOW_MESSAGES: u32 = 32;

/// The native guest acknowledges after this many events (8): a quarter of
/// [`GUEST_WINDOW_MESSAGES`], so the server never waits for an ack while
/// the guest reads.
pub const GUEST_ACK_EVERY_MESSAGES: u64 = 8;

/// The HTTP/2 connection window the clients (host and guest) offer, in
/// bytes (5 MiB, hyper's default, set here so that the budget above does
/// not move with a dependency). h2 allows half of it for unread small
/// frames.
pub const CLIENT_CONNECTION_WINDOW_BYTES: u32 = 5 * 1024 * 1024;

/// The HTTP/2 stream window the clients offer, in bytes (2 MiB, hyper's
/// default).
pub const CLIENT_STREAM_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
