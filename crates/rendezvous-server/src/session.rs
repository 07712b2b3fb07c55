//! One session's relay state: its output stream (offsets and retained
//! output), its guests and their read positions, its PTY size, and its input
//! path to the host. It knows nothing of gRPC or HTTP; the services are thin
//! adapters over it, so every rule here is unit-testable without a socket.
//!
//! # How output reaches guests
//! The host's output is appended once to the retained output, a queue of
//! `Bytes` chunks, each tagged with the offset of its first byte. A guest is
//! a cursor: the offset of the next byte it will be sent. When its transport
//! can take more, it asks the session for the bytes from its cursor on, up to
//! [`RelayConfig::max_output_message_bytes`]. So:
//! - each chunk is stored once and shared (a guest that keeps up is sent
//!   slices of the stored chunk, without a copy);
//! - output that piled up while the previous message was in flight goes out
//!   as one message (coalescing, with no timer);
//! - a guest whose cursor fell behind the oldest retained byte skips ahead
//!   and is told how many bytes it missed ([`Read::Lagged`]);
//! - a late joiner or a resuming guest starts from any retained offset.
//!
//! # Backpressure
//! Before the host's next output message is read, [`Session::wait_for_room`]
//! waits until some guest is less than [`RelayConfig::backpressure_bytes`]
//! behind the end of the stream. With one guest that stops reading, the
//! session stops reading from the host, and HTTP/2 flow control carries the
//! pause to the host's PTY reader. With several guests, the fastest one sets
//! the pace: a slow guest lags, it never slows the host or the others. With
//! no guest at all the host is never paused; old output is dropped from the
//! retained output, as tmux drops old scrollback.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use rendezvous_proto::ids::clamp_cells;
use rendezvous_proto::{ExitStatus, HostDataResponse, Role, WindowSize, host_data_response};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::auth::Digest;
use crate::terminal_replies;

/// Default bound of a session's retained output, in bytes (1 MiB).
pub const RETAINED_OUTPUT_BYTES: usize = 1024 * 1024;

/// Default largest output message sent to a guest, in bytes (256 KiB).
/// Output that piled up at a guest's cursor goes out joined up to this. A
/// browser pays for every message (a read of the response, gRPC-Web
/// framing, protobuf decoding, a `terminal.write`), so fewer, larger
/// messages render a flood faster; 64 KiB rendered 20 MB about 10 % slower
/// (`tests/browser/measure-render.mjs`).
pub const MAX_OUTPUT_MESSAGE_BYTES: usize = 256 * 1024;

/// Default distance, in bytes, by which the fastest guest may trail the end
/// of the output stream before the host is paused (256 KiB).
pub const BACKPRESSURE_BYTES: u64 = 256 * 1024;

/// Output chunks smaller than this many bytes are merged into the previous
/// retained chunk while that stays under the same size, so that a stream of
/// tiny writes (keystroke echoes) costs one chunk per 4 KiB, not one per
/// write.
pub const MERGE_CHUNK_BYTES: usize = 4 * 1024;

/// Smallest and largest acknowledged window a guest may ask for, in bytes
/// (64 KiB and 64 MiB); see [`Session::set_window`].
pub const MIN_WINDOW_BYTES: u64 = 64 * 1024;
/// See [`MIN_WINDOW_BYTES`].
pub const MAX_WINDOW_BYTES: u64 = 64 * 1024 * 1024;

/// Bound of the queue of input messages waiting for the host's Data stream,
/// in messages. A guest's input call waits while it is full.
pub const HOST_INPUT_QUEUE_MESSAGES: usize = 64;

/// Most input requests of one guest that may wait for a missing earlier
/// sequence number; a request further ahead is refused.
pub const MAX_PENDING_INPUTS: u64 = 64;

/// Most bytes of one guest's input that may wait for a missing earlier
/// sequence number (256 KiB); a request that would exceed it is refused.
pub const MAX_PENDING_INPUT_BYTES: usize = 256 * 1024;

/// How long a guest whose stream ended may still be resumed, in ms (10
/// minutes): a guest that attaches again within it, with its guest ID and
/// token, keeps its input sequence, so the request that was in flight when
/// the stream broke is applied once. Longer than the web guest's reconnect
/// backoff (capped at 30 s) many times over; after it, the guest attaches
/// as a new one.
pub const RESUME_GRACE: Duration = Duration::from_millis(600_000);

/// Most guests whose stream ended a session remembers for resuming; past
/// it, the one that left first is forgotten (64, about 100 bytes each).
pub const MAX_DEPARTED_GUESTS: usize = 64;

/// Size a session starts with when the guest gives none, in cells.
pub const DEFAULT_SIZE: WindowSize = WindowSize { cols: 80, rows: 24 };

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
        }
    }
}

/// Why a guest's request was refused by the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The session's process has ended, or its host has gone.
    #[error("the session has ended")]
    Ended,
    /// The guest is not attached to this session (any more).
    #[error("unknown guest: attach again")]
    UnknownGuest,
    /// A read-only guest tried to write.
    #[error("read-only guests cannot send input or resize the terminal")]
    ReadOnly,
    /// The sequence number is too far ahead of the next expected one, or
    /// too many bytes already wait for the gap before it to fill.
    #[error("input sequence number {seq} is too far ahead of {expected}: send input in order")]
    SeqTooFarAhead {
        /// The refused sequence number.
        seq: u64,
        /// The next sequence number the session expects.
        expected: u64,
    },
    /// The session has as many guests as it may have.
    #[error("limit reached: guests per session is {0}; ask the server's operator to raise it")]
    TooManyGuests(usize),
}

/// A guest to attach with [`Session::attach_guest`].
#[derive(Debug, Clone, Copy)]
pub struct NewGuest<'a> {
    /// The guest's role, from its credentials.
    pub role: Role,
    /// The guest's terminal size in cells (each clamped to 1..=1000; 0
    /// means 80x24).
    pub cols: u32,
    /// See `cols`.
    pub rows: u32,
    /// Where its output starts: this offset, or the oldest retained byte
    /// when `None`.
    pub resume_offset: Option<u64>,
    /// An earlier guest of this session to resume: its guest ID and guest
    /// token. It must have the same role, and be attached or have left less
    /// than [`RESUME_GRACE`] ago; otherwise a new guest is attached.
    pub resume_guest: Option<(&'a str, &'a str)>,
    /// Most guests the session may have (the guests-per-session limit).
    pub max_guests: usize,
}

/// What [`Session::attach_guest`] attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The guest's ID: the resumed guest's, or the new one given.
    pub guest_id: String,
    /// The stream's attachment number, for [`Session::read_attached`] and
    /// [`Session::detach`].
    pub attachment: u64,
    /// Offset of the first byte the guest will be sent.
    pub cursor: u64,
    /// Whether an earlier guest was resumed: its ID, token and input
    /// sequence carry on, and its token is the one it presented.
    pub resumed: bool,
    /// The input sequence number the guest's next input must carry: 0 for
    /// a new guest, the resumed guest's next one otherwise.
    pub next_input_seq: u64,
}

/// What a guest gets when it asks for output at its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Bytes starting at `offset` (the guest's cursor).
    Output {
        /// Offset of `data`'s first byte.
        offset: u64,
        /// At most `max_output_message_bytes` bytes.
        data: Bytes,
    },
    /// The cursor was older than the retained output: `missed` bytes are
    /// gone, and the cursor moves to the oldest retained byte.
    Lagged {
        /// Bytes skipped.
        missed: u64,
    },
    /// Everything up to the end of the stream has been read, and the session
    /// has ended with this status.
    Exit(ExitStatus),
    /// Nothing new yet.
    Nothing,
    /// The guest resumed on another stream, or left: this stream is done.
    Replaced,
}

/// What [`Session::read_locked`] found: a [`Read`], or output still in
/// slices of the retained chunks, to be joined outside the lock.
#[derive(Debug)]
enum Found {
    Read(Read),
    Output {
        offset: u64,
        /// The slice of the chunk that holds the cursor.
        head: Bytes,
        /// Slices of the chunks after it, in order (empty for a guest that
        /// keeps up).
        rest: Vec<Bytes>,
        /// Their total length, in bytes.
        len: usize,
    },
}

impl Found {
    /// The Read to send. A single slice goes as it is, without a copy (a
    /// guest that keeps up); output that piled up at the guest's cursor is
    /// joined into one message (coalescing).
    fn into_read(self) -> Read {
        match self {
            Found::Read(read) => read,
            Found::Output {
                offset,
                head,
                rest,
                len,
            } => {
                if rest.is_empty() {
                    return Read::Output { offset, data: head };
                }
                let mut joined = BytesMut::with_capacity(len);
                for part in std::iter::once(head).chain(rest) {
                    joined.extend_from_slice(&part);
                }
                Read::Output {
                    offset,
                    data: joined.freeze(),
                }
            }
        }
    }
}

/// One attached guest, as the session sees it.
#[derive(Debug)]
struct Guest {
    role: Role,
    size: WindowSize,
    /// Offset of the next byte this guest will be sent. Changed by the
    /// guest's own reads; read by backpressure.
    cursor: u64,
    /// Next input sequence number to apply.
    next_seq: u64,
    /// Input requests that arrived ahead of `next_seq`, by sequence number.
    pending: BTreeMap<u64, Bytes>,
    /// Sum of `pending`'s lengths, at most [`MAX_PENDING_INPUT_BYTES`].
    pending_bytes: usize,
    /// The guest's acknowledged window in bytes, if it asked for one: it is
    /// sent nothing at or past `acked + window`.
    window: Option<u64>,
    /// One past the last byte the guest acknowledged having processed (or
    /// where its stream started). Moved by its acks and by lag jumps.
    acked: u64,
    /// How many events after `Attached` the guest acknowledged on its
    /// current stream (see `AttachRequest.window_messages`); 0 when it
    /// attaches. The guest's stream enforces the window; only the
    /// guest's acks change this.
    acked_messages: u64,
    /// Attach order within the session: the earliest read-write guest
    /// becomes the primary writer when the current one leaves. Kept when
    /// the guest resumes.
    joined: u64,
    /// Digest of the guest token, when the guest may be resumed.
    token: Option<Digest>,
    /// Which stream serves the guest: a new number each time it attaches
    /// or resumes, so a replaced stream stops reading and does not detach
    /// its successor.
    attachment: u64,
}

/// A guest whose stream ended, remembered for [`RESUME_GRACE`] so that it
/// can resume with its input sequence.
#[derive(Debug)]
struct Departed {
    id: String,
    token: Digest,
    role: Role,
    next_seq: u64,
    joined: u64,
    left_at: Instant,
}

/// Everything behind the session's lock. Held only for short, synchronous
/// sections: never across an `.await`.
#[derive(Debug)]
struct State {
    /// Retained output: (offset of first byte, chunk), oldest first.
    retained: VecDeque<(u64, Bytes)>,
    /// Sum of the retained chunks' lengths, in bytes.
    retained_bytes: usize,
    /// Offset one past the last byte of output: the stream's length.
    end: u64,
    exit: Option<ExitStatus>,
    /// The PTY size: smallest cols and smallest rows among read-write
    /// guests, as in tmux.
    size: WindowSize,
    guests: HashMap<String, Guest>,
    /// Whether a host Data stream has taken the input queue.
    host_attached: bool,
    /// The primary writer: the only guest whose automatic terminal replies
    /// reach the PTY. The guest that opened the session, then the earliest
    /// read-write guest still attached.
    primary: Option<String>,
    /// Attach counter, for `Guest::joined`.
    joins: u64,
    /// Attachment counter, for `Guest::attachment`.
    attachments: u64,
    /// Guests whose stream ended, oldest first, at most
    /// [`MAX_DEPARTED_GUESTS`].
    departed: VecDeque<Departed>,
}

impl State {
    fn start(&self) -> u64 {
        self.end - self.retained_bytes as u64
    }

    /// The PTY size the read-write guests call for, if any is attached.
    fn wanted_size(&self) -> Option<WindowSize> {
        self.guests
            .values()
            .filter(|g| g.role == Role::ReadWrite)
            .map(|g| g.size)
            .reduce(|a, b| WindowSize {
                cols: a.cols.min(b.cols),
                rows: a.rows.min(b.rows),
            })
    }
}

/// One PTY on a host, shared by its guests. See the module docs.
#[derive(Debug)]
pub struct Session {
    id: String,
    started_at: SystemTime,
    config: RelayConfig,
    state: Mutex<State>,
    /// Bumped on every change a guest may wait for: output, size, exit.
    changed: watch::Sender<u64>,
    /// Woken when a guest's cursor moves, for a paused host.
    room: Notify,
    /// Input for the host's Data stream.
    input: mpsc::Sender<HostDataResponse>,
    /// The receiving end, until the host's Data stream takes it.
    input_rx: Mutex<Option<mpsc::Receiver<HostDataResponse>>>,
    /// The PTY size, for the host's Data stream.
    size: watch::Sender<WindowSize>,
    /// Cancelled when the session ends; ends the host's Data stream.
    ended: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the state half-written in
    // a way later readers could not handle, so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Session {
    /// A new session of `cols` x `rows` cells (each clamped to 1..=1000; 0
    /// means 80x24), with no output yet.
    pub fn new(id: String, cols: u32, rows: u32, config: RelayConfig) -> Self {
        let size = WindowSize {
            cols: clamp_cells(cols, DEFAULT_SIZE.cols),
            rows: clamp_cells(rows, DEFAULT_SIZE.rows),
        };
        let (input, input_rx) = mpsc::channel(HOST_INPUT_QUEUE_MESSAGES);
        Self {
            id,
            started_at: SystemTime::now(),
            config,
            state: Mutex::new(State {
                retained: VecDeque::new(),
                retained_bytes: 0,
                end: 0,
                exit: None,
                size,
                guests: HashMap::new(),
                host_attached: false,
                primary: None,
                joins: 0,
                attachments: 0,
                departed: VecDeque::new(),
            }),
            changed: watch::Sender::new(0),
            room: Notify::new(),
            input,
            input_rx: Mutex::new(Some(input_rx)),
            size: watch::Sender::new(size),
            ended: CancellationToken::new(),
        }
    }

    /// Cancelled when the session ends.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }

    /// The session ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the session was created.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// The current PTY size in cells.
    pub fn size(&self) -> WindowSize {
        lock(&self.state).size
    }

    /// Number of attached guests.
    pub fn guest_count(&self) -> usize {
        lock(&self.state).guests.len()
    }

    /// Whether the session has ended.
    pub fn has_ended(&self) -> bool {
        lock(&self.state).exit.is_some()
    }

    /// Whether a host Data stream has attached.
    pub fn host_attached(&self) -> bool {
        lock(&self.state).host_attached
    }

    /// Offset one past the last output byte.
    pub fn end_offset(&self) -> u64 {
        lock(&self.state).end
    }

    /// Hands the input queue and the PTY size to the host's Data stream.
    /// Returns `None` when a Data stream already took them or the session
    /// has ended.
    pub fn attach_host(
        &self,
    ) -> Option<(
        mpsc::Receiver<HostDataResponse>,
        watch::Receiver<WindowSize>,
    )> {
        let mut st = lock(&self.state);
        if st.exit.is_some() {
            return None;
        }
        let rx = lock(&self.input_rx).take()?;
        st.host_attached = true;
        Some((rx, self.size.subscribe()))
    }

    /// Appends host output. The bytes are copied once into the retained
    /// output, which then drops its oldest bytes to stay within
    /// `retained_output_bytes`. Output after the end is ignored.
    pub fn push_output(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        {
            let mut st = lock(&self.state);
            if st.exit.is_some() {
                return;
            }
            let offset = st.end;
            let merged = match st.retained.back_mut() {
                Some((_, last)) if last.len() + data.len() <= MERGE_CHUNK_BYTES => {
                    let mut joined = BytesMut::with_capacity(last.len() + data.len());
                    joined.extend_from_slice(last);
                    joined.extend_from_slice(data);
                    *last = joined.freeze();
                    true
                }
                _ => false,
            };
            if !merged {
                st.retained
                    .push_back((offset, Bytes::copy_from_slice(data)));
            }
            st.end += data.len() as u64;
            st.retained_bytes += data.len();
            let limit = self.config.retained_output_bytes;
            while st.retained_bytes > limit {
                let excess = st.retained_bytes - limit;
                let Some((off, front)) = st.retained.front_mut() else {
                    break;
                };
                if front.len() <= excess {
                    st.retained_bytes -= front.len();
                    st.retained.pop_front();
                } else {
                    // Keep the tail of the oldest chunk: a slice, no copy.
                    *front = front.slice(excess..);
                    *off += excess as u64;
                    st.retained_bytes -= excess;
                }
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Waits until the host may send more output: the session has no guest,
    /// or some guest trails the end by at most `backpressure_bytes`, or the
    /// session has ended. See the module docs.
    pub async fn wait_for_room(&self) {
        loop {
            {
                let st = lock(&self.state);
                let fastest = st.guests.values().map(|g| g.cursor).max();
                match fastest {
                    None => return,
                    Some(_) if st.exit.is_some() => return,
                    Some(c) if st.end - c <= self.config.backpressure_window() => return,
                    Some(_) => {}
                }
            }
            // Only the host's ingest waits here, so a wake-up that came
            // between the check and this line is kept as a permit.
            self.room.notified().await;
        }
    }

    /// Ends the session with `status`, once; later calls are ignored. Guests
    /// get the rest of the output, then the status. Pending input is
    /// dropped.
    pub fn finish(&self, status: ExitStatus) {
        {
            let mut st = lock(&self.state);
            if st.exit.is_some() {
                return;
            }
            st.exit = Some(status);
        }
        // Drop input nobody will read, and wake everyone who waits.
        lock(&self.input_rx).take();
        self.ended.cancel();
        self.changed.send_modify(|v| *v += 1);
        self.room.notify_one();
    }

    /// Attaches a new guest of `role` that cannot be resumed, with no
    /// limit on guests; see [`Session::attach_guest`]. Returns its cursor.
    pub fn add_guest(
        &self,
        guest_id: String,
        role: Role,
        cols: u32,
        rows: u32,
        resume_offset: Option<u64>,
    ) -> u64 {
        let new = NewGuest {
            role,
            cols,
            rows,
            resume_offset,
            resume_guest: None,
            max_guests: usize::MAX,
        };
        self.attach_locked(&mut lock(&self.state), guest_id, None, new)
            .map_or(0, |a| a.cursor)
    }

    /// Attaches a guest with terminal size `new.cols` x `new.rows`. It reads
    /// from `new.resume_offset`, or from the oldest retained byte when
    /// `None`. Read-write guests may shrink the PTY (smallest wins, as in
    /// tmux); read-only guests never change it.
    ///
    /// With `new.resume_guest`, an earlier guest of the session carries on:
    /// same ID and token, same input sequence, same place as primary writer.
    /// If it is still attached (its old stream may be broken without the
    /// server knowing yet), that stream ends with [`Read::Replaced`]. If it
    /// cannot be resumed (unknown, other role, token mismatch, or gone for
    /// longer than [`RESUME_GRACE`]), a new guest `guest_id` with `token` is
    /// attached instead, and [`Attachment::resumed`] is false.
    ///
    /// # Errors
    /// [`SessionError::TooManyGuests`] when a new guest would exceed
    /// `new.max_guests` (a resumed one replaces itself).
    pub fn attach_guest(
        &self,
        guest_id: String,
        token: Digest,
        new: NewGuest<'_>,
    ) -> Result<Attachment, SessionError> {
        let attachment = {
            let mut st = lock(&self.state);
            self.attach_locked(&mut st, guest_id, Some(token), new)?
        };
        // A replaced stream reads once more and ends.
        self.changed.send_modify(|v| *v += 1);
        Ok(attachment)
    }

    fn attach_locked(
        &self,
        st: &mut State,
        guest_id: String,
        token: Option<Digest>,
        new: NewGuest<'_>,
    ) -> Result<Attachment, SessionError> {
        let size = WindowSize {
            cols: clamp_cells(new.cols, DEFAULT_SIZE.cols),
            rows: clamp_cells(new.rows, DEFAULT_SIZE.rows),
        };
        let now = Instant::now();
        st.departed
            .retain(|d| now.duration_since(d.left_at) < RESUME_GRACE);
        // What carries over from a resumed guest: ID, token, input, order.
        let mut carried = None;
        if let Some((id, presented)) = new.resume_guest {
            let live = st.guests.get(id).filter(|g| {
                g.role == new.role && g.token.as_ref().is_some_and(|t| t.matches(presented))
            });
            if let Some(g) = live {
                carried = Some((
                    id.to_owned(),
                    g.token.clone(),
                    g.next_seq,
                    g.pending.clone(),
                    g.pending_bytes,
                    g.joined,
                ));
            } else if let Some(at) = st
                .departed
                .iter()
                .position(|d| d.id == id && d.role == new.role && d.token.matches(presented))
                && let Some(d) = st.departed.remove(at)
            {
                carried = Some((
                    d.id,
                    Some(d.token),
                    d.next_seq,
                    BTreeMap::new(),
                    0,
                    d.joined,
                ));
            }
        }
        let replacing = carried
            .as_ref()
            .is_some_and(|c| st.guests.contains_key(&c.0));
        if !replacing && st.guests.len() >= new.max_guests {
            return Err(SessionError::TooManyGuests(new.max_guests));
        }
        let resumed = carried.is_some();
        let (guest_id, token, next_seq, pending, pending_bytes, joined) =
            carried.unwrap_or_else(|| {
                st.joins += 1;
                (guest_id, token, 0, BTreeMap::new(), 0, st.joins)
            });
        // An offset past the end is taken as the end: nothing is lost.
        let cursor = new.resume_offset.unwrap_or_else(|| st.start()).min(st.end);
        st.attachments += 1;
        let attachment = st.attachments;
        if st.primary.is_none() && new.role == Role::ReadWrite {
            st.primary = Some(guest_id.clone());
        }
        st.guests.insert(
            guest_id.clone(),
            Guest {
                role: new.role,
                size,
                cursor,
                next_seq,
                pending,
                pending_bytes,
                window: None,
                acked: cursor,
                acked_messages: 0,
                joined,
                token,
                attachment,
            },
        );
        self.update_size(st);
        Ok(Attachment {
            guest_id,
            attachment,
            cursor,
            resumed,
            next_input_seq: next_seq,
        })
    }

    /// Detaches a guest whatever stream serves it; the PTY may grow back.
    /// Unknown IDs are ignored.
    pub fn remove_guest(&self, guest_id: &str) {
        self.remove(guest_id, None);
    }

    /// Detaches a guest if `attachment` still serves it (a resumed guest's
    /// old stream does not detach it). A guest with a token is remembered
    /// for [`RESUME_GRACE`] so that it can resume. The PTY may grow back.
    pub fn detach(&self, guest_id: &str, attachment: u64) {
        self.remove(guest_id, Some(attachment));
    }

    fn remove(&self, guest_id: &str, attachment: Option<u64>) {
        let mut st = lock(&self.state);
        let current = st
            .guests
            .get(guest_id)
            .is_some_and(|g| attachment.is_none_or(|a| a == g.attachment));
        if !current {
            return;
        }
        let Some(gone) = st.guests.remove(guest_id) else {
            return;
        };
        if let Some(token) = gone.token
            && st.exit.is_none()
        {
            if st.departed.len() >= MAX_DEPARTED_GUESTS {
                st.departed.pop_front();
            }
            st.departed.push_back(Departed {
                id: guest_id.to_owned(),
                token,
                role: gone.role,
                next_seq: gone.next_seq,
                joined: gone.joined,
                left_at: Instant::now(),
            });
        }
        if st.primary.as_deref() == Some(guest_id) {
            st.primary = st
                .guests
                .iter()
                .filter(|(_, g)| g.role == Role::ReadWrite)
                .min_by_key(|(_, g)| g.joined)
                .map(|(id, _)| id.clone());
        }
        self.update_size(&mut st);
        drop(st);
        // The guest that left may have been the one holding the host.
        self.room.notify_one();
    }

    /// Records a guest's terminal size (clamped to 1..=1000 cells).
    ///
    /// # Errors
    /// [`SessionError::UnknownGuest`], [`SessionError::ReadOnly`],
    /// [`SessionError::Ended`].
    pub fn resize_guest(&self, guest_id: &str, cols: u32, rows: u32) -> Result<(), SessionError> {
        let mut st = lock(&self.state);
        if st.exit.is_some() {
            return Err(SessionError::Ended);
        }
        let guest = st
            .guests
            .get_mut(guest_id)
            .ok_or(SessionError::UnknownGuest)?;
        if guest.role != Role::ReadWrite {
            return Err(SessionError::ReadOnly);
        }
        guest.size = WindowSize {
            cols: clamp_cells(cols, DEFAULT_SIZE.cols),
            rows: clamp_cells(rows, DEFAULT_SIZE.rows),
        };
        self.update_size(&mut st);
        Ok(())
    }

    fn update_size(&self, st: &mut State) {
        if let Some(wanted) = st.wanted_size()
            && wanted != st.size
        {
            st.size = wanted;
            self.size.send_replace(wanted);
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// Sends input from a guest to the PTY, applied in `seq` order exactly
    /// once: a `seq` already applied is acknowledged and dropped; one ahead
    /// of the next expected waits (at most [`MAX_PENDING_INPUTS`] ahead)
    /// until the gap is filled. Automatic terminal replies are kept only
    /// from the primary writer (see [`crate::terminal_replies`]). Waits while the host's input queue is full;
    /// holds no lock while it waits.
    ///
    /// # Errors
    /// [`SessionError::Ended`], [`SessionError::UnknownGuest`],
    /// [`SessionError::ReadOnly`], [`SessionError::SeqTooFarAhead`].
    pub async fn send_input(
        &self,
        guest_id: &str,
        seq: u64,
        data: Bytes,
    ) -> Result<(), SessionError> {
        self.check_writer(guest_id)?;
        let permit = self
            .input
            .reserve()
            .await
            .map_err(|_| SessionError::Ended)?;
        let mut st = lock(&self.state);
        if st.exit.is_some() {
            return Err(SessionError::Ended);
        }
        let guest = st
            .guests
            .get_mut(guest_id)
            .ok_or(SessionError::UnknownGuest)?;
        if seq < guest.next_seq {
            return Ok(());
        }
        if seq > guest.next_seq {
            if seq - guest.next_seq > MAX_PENDING_INPUTS
                || guest.pending_bytes + data.len() > MAX_PENDING_INPUT_BYTES
            {
                return Err(SessionError::SeqTooFarAhead {
                    seq,
                    expected: guest.next_seq,
                });
            }
            guest.pending_bytes += data.len();
            if let Some(replaced) = guest.pending.insert(seq, data) {
                guest.pending_bytes -= replaced.len();
            }
            return Ok(());
        }
        // In order: apply it and whatever was waiting for it, as one message
        // (the PTY sees the same bytes either way).
        guest.next_seq += 1;
        let mut out = data;
        if guest
            .pending
            .first_key_value()
            .is_some_and(|(s, _)| *s == guest.next_seq)
        {
            let mut joined = BytesMut::from(&out[..]);
            while let Some(next) = guest.pending.remove(&guest.next_seq) {
                guest.pending_bytes -= next.len();
                joined.extend_from_slice(&next);
                guest.next_seq += 1;
            }
            out = joined.freeze();
        }
        if st.primary.as_deref() != Some(guest_id)
            && let Cow::Owned(kept) = terminal_replies::strip(&out)
        {
            out = Bytes::from(kept);
        }
        if out.is_empty() {
            return Ok(());
        }
        permit.send(HostDataResponse {
            message: Some(host_data_response::Message::Input(out)),
        });
        Ok(())
    }

    fn check_writer(&self, guest_id: &str) -> Result<(), SessionError> {
        let st = lock(&self.state);
        if st.exit.is_some() {
            return Err(SessionError::Ended);
        }
        match st.guests.get(guest_id) {
            None => Err(SessionError::UnknownGuest),
            Some(g) if g.role != Role::ReadWrite => Err(SessionError::ReadOnly),
            Some(_) => Ok(()),
        }
    }

    /// Reads output for a guest at `cursor`, and records the guest's new
    /// cursor for backpressure.
    pub fn read(&self, guest_id: &str, cursor: u64) -> Read {
        self.read_inner(guest_id, None, cursor)
    }

    /// As [`Session::read`], for the stream with this `attachment` number:
    /// [`Read::Replaced`] once the guest has resumed on another stream or
    /// left.
    pub fn read_attached(&self, guest_id: &str, attachment: u64, cursor: u64) -> Read {
        self.read_inner(guest_id, Some(attachment), cursor)
    }

    fn read_inner(&self, guest_id: &str, attachment: Option<u64>, cursor: u64) -> Read {
        let mut st = lock(&self.state);
        if let Some(attachment) = attachment
            && st
                .guests
                .get(guest_id)
                .is_none_or(|g| g.attachment != attachment)
        {
            return Read::Replaced;
        }
        let mut max = self.config.max_output_message_bytes;
        if let Some(guest) = st.guests.get(guest_id)
            && let Some(window) = guest.window
            && cursor >= st.start()
            && cursor < st.end
        {
            // Acknowledged flow control: nothing at or past acked + window.
            let limit = guest.acked + window;
            if cursor >= limit {
                return Read::Nothing;
            }
            max = max.min(usize::try_from(limit - cursor).unwrap_or(usize::MAX));
        }
        let found = Self::read_locked(&st, cursor, max);
        let moved_to = match &found {
            Found::Output { offset, len, .. } => Some(offset + *len as u64),
            Found::Read(Read::Lagged { missed }) => Some(cursor + missed),
            Found::Read(_) => None,
        };
        if let Some(to) = moved_to
            && let Some(guest) = st.guests.get_mut(guest_id)
        {
            guest.cursor = to;
            // Skipped bytes need no acknowledgement.
            if matches!(found, Found::Read(Read::Lagged { .. })) {
                guest.acked = guest.acked.max(to);
            }
        }
        drop(st);
        if moved_to.is_some() {
            self.room.notify_one();
        }
        found.into_read()
    }

    /// Gives a guest an acknowledged window of `window_bytes` (clamped to
    /// [`MIN_WINDOW_BYTES`]..=[`MAX_WINDOW_BYTES`]): from now on it is sent
    /// nothing at or past its last [`Session::ack`] offset plus the window,
    /// and a guest at its window stops moving, so it counts as behind for
    /// backpressure. For clients whose transport reads ahead of what they
    /// render, as a browser's fetch does. Unknown guests are ignored.
    pub fn set_window(&self, guest_id: &str, window_bytes: u32) {
        let window = u64::from(window_bytes).clamp(MIN_WINDOW_BYTES, MAX_WINDOW_BYTES);
        if let Some(guest) = lock(&self.state).guests.get_mut(guest_id) {
            guest.window = Some(window);
        }
    }

    /// Records that a guest has processed output up to `offset`
    /// (exclusive), which opens its byte window, and `messages` events of
    /// its current stream, which opens its message window. Both only move
    /// forward; an offset past what was sent counts as all that was sent.
    ///
    /// # Errors
    /// [`SessionError::UnknownGuest`].
    pub fn ack(&self, guest_id: &str, offset: u64, messages: u64) -> Result<(), SessionError> {
        let mut st = lock(&self.state);
        let guest = st
            .guests
            .get_mut(guest_id)
            .ok_or(SessionError::UnknownGuest)?;
        let offset = offset.min(guest.cursor);
        let mut moved = false;
        if offset > guest.acked {
            guest.acked = offset;
            moved = true;
        }
        if messages > guest.acked_messages {
            guest.acked_messages = messages;
            moved = true;
        }
        drop(st);
        if moved {
            // Wake the guest's stream, which may be waiting at its window.
            self.changed.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    /// How many events the guest has acknowledged on the stream with this
    /// `attachment` number; `None` when that stream is no longer the
    /// guest's (it resumed elsewhere, or left).
    pub fn acked_messages(&self, guest_id: &str, attachment: u64) -> Option<u64> {
        lock(&self.state)
            .guests
            .get(guest_id)
            .filter(|g| g.attachment == attachment)
            .map(|g| g.acked_messages)
    }

    /// What a read finds under the session's lock. Output is only sliced
    /// here (reference counts); joining several slices into one message is
    /// a copy of up to `max` bytes, done by [`Found::into_read`] after the
    /// lock is released, so the host's output and other guests never wait
    /// on it.
    fn read_locked(st: &State, cursor: u64, max: usize) -> Found {
        let start = st.start();
        if cursor < start {
            return Found::Read(Read::Lagged {
                missed: start - cursor,
            });
        }
        if cursor >= st.end {
            return Found::Read(match &st.exit {
                Some(status) => Read::Exit(status.clone()),
                None => Read::Nothing,
            });
        }
        // The first chunk that holds `cursor`.
        let first = st
            .retained
            .partition_point(|(off, chunk)| off + chunk.len() as u64 <= cursor);
        let mut slices = st.retained.range(first..).scan(0, |len, (off, chunk)| {
            if *len == max {
                return None;
            }
            let skip = (cursor.max(*off) - off) as usize;
            let take = (chunk.len() - skip).min(max - *len);
            *len += take;
            Some(chunk.slice(skip..skip + take))
        });
        let Some(head) = slices.next() else {
            return Found::Read(Read::Nothing);
        };
        // Allocates only when output piled up (a second slice).
        let rest: Vec<Bytes> = slices.collect();
        Found::Output {
            offset: cursor,
            len: head.len() + rest.iter().map(Bytes::len).sum::<usize>(),
            head,
            rest,
        }
    }

    /// A receiver that changes whenever output, size or exit change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
impl Session {
    fn lock_primary(&self) -> Option<String> {
        lock(&self.state).primary.clone()
    }

    fn lock_departed(&self) -> Vec<String> {
        lock(&self.state)
            .departed
            .iter()
            .map(|d| d.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn small() -> RelayConfig {
        RelayConfig {
            retained_output_bytes: 16,
            max_output_message_bytes: 8,
            backpressure_bytes: 100,
        }
    }

    fn code(c: i32) -> ExitStatus {
        ExitStatus {
            status: Some(rendezvous_proto::exit_status::Status::Code(c)),
            message: String::new(),
        }
    }

    fn output(read: Read) -> (u64, Bytes) {
        match read {
            Read::Output { offset, data } => (offset, data),
            other => panic!("expected output, got {other:?}"),
        }
    }

    #[test]
    fn output_is_read_at_offsets_and_coalesced() {
        let s = Session::new("s".into(), 80, 24, RelayConfig::default());
        s.add_guest("g".into(), Role::ReadWrite, 80, 24, None);
        s.push_output(b"abc");
        s.push_output(&[b'x'; MERGE_CHUNK_BYTES]);
        s.push_output(b"def");
        let (off, data) = output(s.read("g", 0));
        assert_eq!(off, 0);
        assert_eq!(data.len(), 3 + MERGE_CHUNK_BYTES + 3);
        assert_eq!(&data[..3], b"abc");
        assert_eq!(&data[data.len() - 3..], b"def");
        assert_eq!(s.read("g", data.len() as u64), Read::Nothing);
    }

    #[test]
    fn a_chunk_is_shared_by_all_guests_that_keep_up_without_a_copy() {
        let s = Session::new("s".into(), 80, 24, RelayConfig::default());
        s.push_output(&[b'a'; 32 * 1024]);
        let (_, first) = output(s.read("g1", 0));
        let (_, second) = output(s.read("g2", 0));
        // Both guests hold the one stored chunk.
        assert_eq!(first.len(), 32 * 1024);
        assert_eq!(first.as_ptr(), second.as_ptr());
        // So does one that reads a chunk larger than a message, in slices.
        s.push_output(&vec![b'b'; MAX_OUTPUT_MESSAGE_BYTES + 1]);
        let (off, third) = output(s.read("g3", 32 * 1024));
        let (_, fourth) = output(s.read("g4", 32 * 1024));
        assert_eq!(off, 32 * 1024);
        assert_eq!(third.len(), MAX_OUTPUT_MESSAGE_BYTES);
        assert_eq!(third.as_ptr(), fourth.as_ptr());
    }

    #[test]
    fn output_that_piled_up_goes_out_joined_up_to_the_message_limit() {
        let s = Session::new("s".into(), 80, 24, RelayConfig::default());
        // Host chunks of 32 KiB, as a host under a flood sends them.
        for _ in 0..10 {
            s.push_output(&[b'x'; 32 * 1024]);
        }
        let (_, first) = output(s.read("g", 0));
        assert_eq!(first.len(), MAX_OUTPUT_MESSAGE_BYTES);
        let (off, rest) = output(s.read("g", first.len() as u64));
        assert_eq!(off, MAX_OUTPUT_MESSAGE_BYTES as u64);
        assert_eq!(rest.len(), 10 * 32 * 1024 - MAX_OUTPUT_MESSAGE_BYTES);
    }

    #[test]
    fn a_guest_with_a_window_gets_nothing_past_its_acks() {
        let s = Session::new("s".into(), 80, 24, RelayConfig::default());
        s.add_guest("g".into(), Role::ReadOnly, 80, 24, None);
        s.set_window("g", 1); // clamped up to MIN_WINDOW_BYTES
        s.push_output(&vec![b'x'; 8 * MIN_WINDOW_BYTES as usize]);
        let (_, first) = output(s.read("g", 0));
        assert_eq!(first.len() as u64, MIN_WINDOW_BYTES);
        assert_eq!(s.read("g", MIN_WINDOW_BYTES), Read::Nothing);
        // A guest stuck at its window holds the host back like a slow one.
        assert!(s.wait_for_room().now_or_never().is_none());
        s.ack("g", 1000, 0).unwrap();
        let (at, more) = output(s.read("g", MIN_WINDOW_BYTES));
        assert_eq!((at, more.len()), (MIN_WINDOW_BYTES, 1000));
        // Acks past what was sent count as all that was sent.
        s.ack("g", u64::MAX, 0).unwrap();
        let (_, rest) = output(s.read("g", MIN_WINDOW_BYTES + 1000));
        assert_eq!(rest.len() as u64, MIN_WINDOW_BYTES);
        assert_eq!(s.ack("nobody", 1, 0), Err(SessionError::UnknownGuest));
    }

    #[test]
    fn messages_are_capped() {
        let s = Session::new("s".into(), 80, 24, small());
        s.push_output(b"0123456789");
        assert_eq!(output(s.read("g", 0)), (0, Bytes::from_static(b"01234567")));
        assert_eq!(output(s.read("g", 8)), (8, Bytes::from_static(b"89")));
    }

    #[test]
    fn retained_output_is_bounded_and_lag_is_reported() {
        let s = Session::new("s".into(), 80, 24, small());
        for _ in 0..5 {
            s.push_output(b"0123456789");
        }
        // 50 bytes written, 16 retained: offsets 34..50.
        assert_eq!(s.read("g", 0), Read::Lagged { missed: 34 });
        assert_eq!(
            output(s.read("g", 34)),
            (34, Bytes::from_static(b"45678901"))
        );
    }

    #[test]
    fn exit_comes_after_the_last_byte() {
        let s = Session::new("s".into(), 80, 24, RelayConfig::default());
        s.push_output(b"bye");
        s.finish(code(3));
        s.push_output(b"ignored");
        assert_eq!(output(s.read("g", 0)), (0, Bytes::from_static(b"bye")));
        assert_eq!(s.read("g", 3), Read::Exit(code(3)));
    }

    #[test]
    fn smallest_read_write_guest_sets_the_size() {
        let s = Session::new("s".into(), 100, 50, RelayConfig::default());
        s.add_guest("a".into(), Role::ReadWrite, 100, 50, None);
        s.add_guest("b".into(), Role::ReadWrite, 120, 30, None);
        s.add_guest("r".into(), Role::ReadOnly, 10, 10, None);
        assert_eq!(
            s.size(),
            WindowSize {
                cols: 100,
                rows: 30
            }
        );
        assert_eq!(s.resize_guest("r", 5, 5), Err(SessionError::ReadOnly));
        s.resize_guest("a", 5000, 0).unwrap();
        assert_eq!(
            s.size(),
            WindowSize {
                cols: 120,
                rows: 24
            }
        );
        s.remove_guest("b");
        assert_eq!(
            s.size(),
            WindowSize {
                cols: 1000,
                rows: 24
            }
        );
    }

    #[tokio::test]
    async fn input_is_applied_in_order_exactly_once() {
        let s = Session::new("s".into(), 80, 24, RelayConfig::default());
        let (mut rx, _) = s.attach_host().unwrap();
        s.add_guest("g".into(), Role::ReadWrite, 80, 24, None);
        s.send_input("g", 1, Bytes::from_static(b"b"))
            .await
            .unwrap();
        s.send_input("g", 0, Bytes::from_static(b"a"))
            .await
            .unwrap();
        s.send_input("g", 0, Bytes::from_static(b"a"))
            .await
            .unwrap();
        s.send_input("g", 2, Bytes::from_static(b"c"))
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            match msg.message {
                Some(host_data_response::Message::Input(b)) => got.extend_from_slice(&b),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, b"abc");
        let far = s
            .send_input("g", 3 + MAX_PENDING_INPUTS + 1, Bytes::new())
            .await;
        assert!(matches!(far, Err(SessionError::SeqTooFarAhead { .. })));
        // Held-back bytes are bounded too.
        let big = Bytes::from(vec![b'x'; MAX_PENDING_INPUT_BYTES / 2]);
        s.send_input("g", 5, big.clone()).await.unwrap();
        s.send_input("g", 6, big.clone()).await.unwrap();
        let over = s.send_input("g", 7, Bytes::from_static(b"y")).await;
        assert!(matches!(over, Err(SessionError::SeqTooFarAhead { .. })));
    }

    fn rw<'a>(resume_guest: Option<(&'a str, &'a str)>) -> NewGuest<'a> {
        NewGuest {
            role: Role::ReadWrite,
            cols: 80,
            rows: 24,
            resume_offset: Some(0),
            resume_guest,
            max_guests: 2,
        }
    }

    fn inputs(rx: &mut mpsc::Receiver<HostDataResponse>) -> Vec<u8> {
        let mut got = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            if let Some(host_data_response::Message::Input(b)) = msg.message {
                got.extend_from_slice(&b);
            }
        }
        got
    }

    #[tokio::test]
    async fn a_resumed_guest_keeps_its_input_sequence_and_replaces_its_old_stream() {
        let s = Session::new("s".into(), 80, 24, RelayConfig::default());
        let (mut rx, _) = s.attach_host().unwrap();
        let first = s
            .attach_guest("g".into(), Digest::of("tok"), rw(None))
            .unwrap();
        assert!(!first.resumed);
        s.send_input("g", 0, Bytes::from_static(b"a"))
            .await
            .unwrap();

        // The old stream is still open (the server has not noticed the cut).
        let second = s
            .attach_guest("other".into(), Digest::of("x"), rw(Some(("g", "tok"))))
            .unwrap();
        assert_eq!(second.guest_id, "g");
        assert!(second.resumed);
        assert_ne!(second.attachment, first.attachment);
        assert_eq!(s.read_attached("g", first.attachment, 0), Read::Replaced);
        assert!(matches!(
            s.read_attached("g", second.attachment, 0),
            Read::Nothing
        ));
        // The retried request is applied once; the next one goes through.
        s.send_input("g", 0, Bytes::from_static(b"a"))
            .await
            .unwrap();
        s.send_input("g", 1, Bytes::from_static(b"b"))
            .await
            .unwrap();
        assert_eq!(inputs(&mut rx), b"ab");
        // The old stream's end does not detach its successor.
        s.detach("g", first.attachment);
        assert_eq!(s.guest_count(), 1);

        // After the stream closes, within the grace period, it resumes again.
        s.detach("g", second.attachment);
        assert_eq!(s.guest_count(), 0);
        let third = s
            .attach_guest("new".into(), Digest::of("y"), rw(Some(("g", "tok"))))
            .unwrap();
        assert!(third.resumed);
        assert_eq!(third.guest_id, "g");
        s.send_input("g", 1, Bytes::from_static(b"b"))
            .await
            .unwrap();
        s.send_input("g", 2, Bytes::from_static(b"c"))
            .await
            .unwrap();
        assert_eq!(inputs(&mut rx), b"c");
        assert_eq!(s.lock_primary().as_deref(), Some("g"));
    }

    #[test]
    fn a_guest_resumes_only_with_its_token_and_role() {
        let s = Session::new("s".into(), 80, 24, RelayConfig::default());
        let first = s
            .attach_guest("g".into(), Digest::of("tok"), rw(None))
            .unwrap();
        s.detach("g", first.attachment);
        let wrong = s
            .attach_guest("w".into(), Digest::of("x"), rw(Some(("g", "nope"))))
            .unwrap();
        assert!(!wrong.resumed);
        assert_eq!(wrong.guest_id, "w");
        let read_only = NewGuest {
            role: Role::ReadOnly,
            ..rw(Some(("g", "tok")))
        };
        let other_role = s
            .attach_guest("r".into(), Digest::of("x"), read_only)
            .unwrap();
        assert!(!other_role.resumed);
        // The limit counts guests: at it, a new guest is refused, and a
        // guest that resumes in place of its live self is not.
        assert_eq!(
            s.attach_guest("z".into(), Digest::of("z"), rw(None)),
            Err(SessionError::TooManyGuests(2))
        );
        let again = s
            .attach_guest("z".into(), Digest::of("z"), rw(Some(("w", "x"))))
            .unwrap();
        assert!(again.resumed);
        // A guest that cannot be resumed is not remembered.
        s.add_guest("plain".into(), Role::ReadOnly, 80, 24, None);
        s.remove_guest("plain");
        assert!(s.lock_departed().iter().all(|id| id != "plain"));
    }

    #[test]
    fn departed_guests_are_bounded() {
        let s = Session::new("s".into(), 80, 24, RelayConfig::default());
        for i in 0..MAX_DEPARTED_GUESTS + 5 {
            let a = s
                .attach_guest(format!("g{i}"), Digest::of("t"), rw(None))
                .unwrap();
            s.detach(&a.guest_id, a.attachment);
        }
        let departed = s.lock_departed();
        assert_eq!(departed.len(), MAX_DEPARTED_GUESTS);
        assert_eq!(departed[0], "g5");
    }

    #[tokio::test]
    async fn only_the_primary_writer_answers_terminal_queries() {
        let s = Session::new("s".into(), 80, 24, RelayConfig::default());
        let (mut rx, _) = s.attach_host().unwrap();
        for g in ["a", "b", "c"] {
            s.add_guest(g.into(), Role::ReadWrite, 80, 24, None);
        }
        let reply = Bytes::from_static(b"\x1b[?1;2c");
        for g in ["a", "b", "c"] {
            s.send_input(g, 0, reply.clone()).await.unwrap();
        }
        let inputs = |rx: &mut mpsc::Receiver<HostDataResponse>| {
            let mut got = Vec::new();
            while let Ok(msg) = rx.try_recv() {
                if let Some(host_data_response::Message::Input(b)) = msg.message {
                    got.push(b);
                }
            }
            got
        };
        assert_eq!(inputs(&mut rx), vec![reply.clone()]);
        // The primary leaves: the next read-write guest answers instead.
        s.remove_guest("a");
        s.send_input("b", 1, reply.clone()).await.unwrap();
        s.send_input("c", 1, Bytes::from_static(b"ls\x1b[?1;2c\r"))
            .await
            .unwrap();
        assert_eq!(inputs(&mut rx), vec![reply, Bytes::from_static(b"ls\r")]);
    }

    #[tokio::test]
    async fn read_only_guests_cannot_write() {
        let s = Session::new("s".into(), 80, 24, RelayConfig::default());
        let (mut rx, _) = s.attach_host().unwrap();
        s.add_guest("r".into(), Role::ReadOnly, 80, 24, None);
        let res = s.send_input("r", 0, Bytes::from_static(b"x")).await;
        assert_eq!(res, Err(SessionError::ReadOnly));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn host_pauses_only_when_every_guest_is_behind() {
        // Window: min(100, 16 / 2) = 8 bytes.
        let s = Session::new("s".into(), 80, 24, small());
        // No guest: never paused.
        s.push_output(b"0123456789");
        s.wait_for_room().await;
        s.add_guest("slow".into(), Role::ReadWrite, 80, 24, Some(10));
        s.add_guest("fast".into(), Role::ReadWrite, 80, 24, Some(10));
        s.push_output(b"abcdefghij");
        assert!(
            s.wait_for_room().now_or_never().is_none(),
            "both guests are 10 bytes behind"
        );
        // The fast guest reads: the host may go on although `slow` did not.
        assert_eq!(
            output(s.read("fast", 10)),
            (10, Bytes::from_static(b"abcdefgh"))
        );
        s.wait_for_room().await;
    }

    #[test]
    fn a_lag_jump_does_not_count_as_keeping_up() {
        let s = Session::new("s".into(), 80, 24, small());
        s.add_guest("g".into(), Role::ReadWrite, 80, 24, None);
        for _ in 0..4 {
            s.push_output(b"0123456789");
        }
        // 40 written, 16 retained: the guest lags to offset 24, 16 behind.
        assert_eq!(s.read("g", 0), Read::Lagged { missed: 24 });
        assert!(s.wait_for_room().now_or_never().is_none());
    }
}
