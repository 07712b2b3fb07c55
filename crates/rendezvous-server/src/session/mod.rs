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
//! Before the host's next output message is taken, [`Session::wait_for_room`]
//! waits until some guest is less than [`RelayConfig::backpressure_bytes`]
//! behind the end of the stream. With one guest that stops reading, the
//! session stops acknowledging the host's output, and the host's credit
//! (see `rendezvous_proto::flow`) carries the pause to its PTY reader. With
//! several guests, the fastest one sets the pace: a slow guest lags, it never
//! slows the host or the others. With no guest at all the host is never
//! paused; old output is dropped from the retained output, as tmux drops old
//! scrollback.
//!
//! Only read-write guests set the pace, and only while they read or
//! acknowledge: a read-only guest (a viewer) never holds the job back, and a
//! read-write guest that is behind and has done neither for
//! [`RelayConfig::stalled_guest_timeout`] (60 s; a stalled page, a
//! background tab) stops holding it back. Both lag instead, and are told
//! how many bytes they missed.

//! # Files
//! - `output`: the retained output (offsets, chunks, lag), without tokio;
//! - `guests`: who is attached, who may resume, the primary writer, the
//!   size policy;
//! - `input`: exactly-once input order for one guest;
//! - `reads`: what one guest is sent, within its windows, and its acks;
//! - `relay_config`: the bounds, with units and defaults;
//! - this file: the [`Session`] that holds them behind one lock, its
//!   signals (output changed, room for the host, ended) and lifecycle.

mod backpressure;
mod guests;
mod host_link;
mod input;
mod output;
#[cfg(test)]
mod proptests;
mod reads;
mod relay_config;
#[cfg(test)]
mod restored_tests;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use rendezvous_proto::input_seqs::InputSeqs;
use rendezvous_proto::{ExitStatus, HostState, ResumeSession, Role, WindowSize};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::auth::Digest;
use crate::terminal_replies;
pub use guests::{DEFAULT_SIZE, DEPARTED_PACE, MAX_DEPARTED_GUESTS, RESUME_GRACE};
use guests::{Guest, Guests, Joining, Pace, clamp_size};
use host_link::HostInputQueue;
pub use host_link::{HostInputReader, HostLink};
use input::Accepted;
pub use input::{MAX_PENDING_INPUT_BYTES, MAX_PENDING_INPUTS};
pub use output::MERGE_CHUNK_BYTES;
use output::RetainedOutput;
pub use relay_config::*;

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
    /// Set only by the registry, once it has checked that `resume_guest`'s
    /// token is signed for this session, guest and role with the server's
    /// state key ([`StateKey::guest_token`](crate::state_key::StateKey::guest_token)).
    /// When this session has no record of that guest (the server
    /// restarted, or the guest was attached on another replica, or left
    /// long ago), it resumes anyway: same ID and token. Its input sequence
    /// starts at this seq (`AttachRequest.resume_input_seq`: the oldest
    /// input the guest still holds and can send again), or where the
    /// session has the guest's input queued up to when that is later (on a
    /// restored session: where the host reported it, `ResumeSession.guest_inputs`).
    pub signed_resume: Option<u64>,
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

/// Everything behind the session's lock. Held only for short, synchronous
/// sections: never across an `.await`.
#[derive(Debug)]
struct State {
    output: RetainedOutput,
    exit: Option<ExitStatus>,
    /// The PTY size: smallest cols and smallest rows among read-write
    /// guests, as in tmux.
    size: WindowSize,
    guests: Guests,
    /// Whether a host Data stream has ever attached.
    host_attached: bool,
    /// The number of the Data stream that serves the session now.
    host_stream: Option<u64>,
    /// Data streams attached so far.
    host_streams: u64,
    /// When `host_stream` last changed (or the session began).
    host_stream_changed: Instant,
    /// Cancelled when that stream is replaced or detached.
    host_stream_token: Option<CancellationToken>,
    /// Input for the host, kept until it has written it.
    host_input: HostInputQueue,
    /// Whether the host is away, as guests are told.
    host_state: HostState,
    /// When the host last sent output or a guest's input was taken (or the
    /// session began): what the idle timeout measures from.
    last_activity: Instant,
    /// The end offset the host held when it restored the session (0 for a
    /// new one): a resuming guest may start anywhere up to it.
    restored_end: u64,
    /// Per guest, the seq after its last input queued for the host (as the
    /// host reported them, on a restored session): where a guest that
    /// resumes with a signed token goes on when this session has no record
    /// of it. See [`NewGuest::signed_resume`].
    input_seqs: InputSeqs,
}

impl State {
    /// The guest `id`, if it may write: the one check behind every input
    /// and resize.
    ///
    /// # Errors
    /// [`SessionError::Ended`], [`SessionError::UnknownGuest`],
    /// [`SessionError::ReadOnly`], in that order.
    fn writer(&mut self, id: &str) -> Result<&mut Guest, SessionError> {
        let guest = self.live_guest(id)?;
        if guest.role != Role::ReadWrite {
            return Err(SessionError::ReadOnly);
        }
        Ok(guest)
    }

    /// The guest `id` of a session that has not ended.
    ///
    /// # Errors
    /// [`SessionError::Ended`], [`SessionError::UnknownGuest`].
    fn live_guest(&mut self, id: &str) -> Result<&mut Guest, SessionError> {
        if self.exit.is_some() {
            return Err(SessionError::Ended);
        }
        self.guests.get_mut(id).ok_or(SessionError::UnknownGuest)
    }
}

/// One PTY on a host, shared by its guests. See the module docs.
#[derive(Debug)]
pub struct Session {
    id: String,
    started_at: SystemTime,
    config: RelayConfig,
    state: Mutex<State>,
    /// Bumped on every change a guest may wait for: output, size, exit,
    /// acks.
    changed: watch::Sender<u64>,
    /// Woken when a guest's cursor moves, for a paused host.
    room: Notify,
    /// Set while the host's output waits in [`Session::wait_for_room`].
    paused: std::sync::atomic::AtomicBool,
    /// Room in the host input queue, in messages
    /// ([`HOST_INPUT_QUEUE_MESSAGES`] when empty); closed when the session
    /// ends.
    input_room: Semaphore,
    /// Bumped when input is queued or acknowledged, for the Data stream.
    input_changed: watch::Sender<u64>,
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
        Self::restored(
            config,
            &ResumeSession {
                session_id: id,
                cols,
                rows,
                ..ResumeSession::default()
            },
        )
    }

    /// A session as its host describes it in `resume` (`ResumeSession`):
    /// one a host resumes on a server that does not have it (restarted, or
    /// another replica). Its output stream starts at `resume.start_offset`
    /// and is empty until the host sends it; the host holds output up to
    /// `resume.end_offset`, has taken `resume.input_applied` Input
    /// messages, and has each guest's input up to its
    /// `resume.guest_inputs` seq. The size is `resume.cols` x `resume.rows`
    /// (clamped as for [`Session::new`]). Guests that resume from an older
    /// offset get `Lagged` for the bytes before it; a guest that resumes
    /// from an offset up to the host's end before the host has sent that
    /// far waits there (it already has the bytes before it). The caller
    /// checks the offsets and `resume.input_applied` first (the registry
    /// bounds them by `MAX_RESUME_OFFSET`).
    pub fn restored(config: RelayConfig, resume: &ResumeSession) -> Self {
        let size = clamp_size(resume.cols, resume.rows);
        let now = Instant::now();
        Self {
            id: resume.session_id.clone(),
            started_at: SystemTime::now(),
            config,
            state: Mutex::new(State {
                output: RetainedOutput::starting_at(
                    config.retained_output_bytes,
                    resume.start_offset,
                ),
                exit: None,
                size,
                guests: Guests::default(),
                host_attached: false,
                host_stream: None,
                host_streams: 0,
                host_stream_changed: now,
                host_stream_token: None,
                host_input: HostInputQueue::starting_at(resume.input_applied),
                host_state: HostState::default(),
                last_activity: now,
                restored_end: resume.end_offset.max(resume.start_offset),
                input_seqs: InputSeqs::from_wire(&resume.guest_inputs),
            }),
            changed: watch::Sender::new(0),
            room: Notify::new(),
            paused: std::sync::atomic::AtomicBool::new(false),
            input_room: Semaphore::new(HOST_INPUT_QUEUE_MESSAGES),
            input_changed: watch::Sender::new(0),
            size: watch::Sender::new(size),
            ended: CancellationToken::new(),
        }
    }

    /// Cancelled when the session ends.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }

    /// The session ID, chosen by the server.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the session was created.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// The current PTY size in cells (each 1..=1000).
    pub fn size(&self) -> WindowSize {
        lock(&self.state).size
    }

    /// Number of attached guests (at most the guests-per-session limit).
    pub fn guest_count(&self) -> usize {
        lock(&self.state).guests.len()
    }

    /// Whether the session has ended.
    pub fn has_ended(&self) -> bool {
        lock(&self.state).exit.is_some()
    }

    /// When the host last sent output or a guest's input was taken (or
    /// the session began). Pings, acks and resizes do not count.
    pub fn last_activity(&self) -> Instant {
        lock(&self.state).last_activity
    }

    /// Whether a host Data stream has attached.
    pub fn host_attached(&self) -> bool {
        lock(&self.state).host_attached
    }

    /// Offset one past the last output byte: bytes the session has written
    /// so far.
    pub fn end_offset(&self) -> u64 {
        lock(&self.state).output.end()
    }

    /// Appends host output. The bytes are copied once into the retained
    /// output, which then drops its oldest bytes to stay within
    /// `retained_output_bytes`. Output after the end is ignored.
    pub fn push_output(&self, data: &[u8]) {
        self.push_output_if(data, |_| true);
    }

    /// [`Session::push_output`], if `current` holds under the lock.
    fn push_output_if(&self, data: &[u8], current: impl FnOnce(&State) -> bool) -> bool {
        if data.is_empty() {
            return true;
        }
        {
            let mut st = lock(&self.state);
            if st.exit.is_some() || !current(&st) {
                return false;
            }
            st.output.push(data);
            st.last_activity = Instant::now();
        }
        self.changed.send_modify(|v| *v += 1);
        true
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
        // Refuse input from now on, and wake everyone who waits.
        self.input_room.close();
        self.ended.cancel();
        self.changed.send_modify(|v| *v += 1);
        self.room.notify_one();
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
        let attachment = self.attach_locked(&mut lock(&self.state), guest_id, Some(token), new)?;
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
        // An offset past the end (or, for a restored session, past what
        // the host holds) is taken as the end: nothing is lost.
        let cursor = new
            .resume_offset
            .unwrap_or_else(|| st.output.start())
            .min(st.output.end().max(st.restored_end));
        let joining = Joining {
            id: guest_id,
            token,
            role: new.role,
            size: clamp_size(new.cols, new.rows),
            cursor,
            resume: new.resume_guest,
            // The later of the guest's oldest held input and where this
            // session (or its host) has it: nothing runs twice.
            signed_resume: new.signed_resume.map(|seq| {
                new.resume_guest
                    .and_then(|(id, _)| st.input_seqs.get(id))
                    .map_or(seq, |queued| queued.max(seq))
            }),
            max_guests: new.max_guests,
        };
        let attached = st
            .guests
            .attach(joining, Instant::now())
            .ok_or(SessionError::TooManyGuests(new.max_guests))?;
        self.update_size(st);
        Ok(Attachment {
            guest_id: attached.id,
            attachment: attached.attachment,
            cursor,
            resumed: attached.resumed,
            next_input_seq: attached.next_seq,
        })
    }

    /// Detaches a guest if `attachment` still serves it (a resumed guest's
    /// old stream does not detach it). A guest with a token is remembered
    /// for [`RESUME_GRACE`] so that it can resume. The PTY may grow back.
    pub fn detach(&self, guest_id: &str, attachment: u64) {
        self.remove(guest_id, Some(attachment));
    }

    fn remove(&self, guest_id: &str, attachment: Option<u64>) {
        let mut st = lock(&self.state);
        let remember = st.exit.is_none();
        if !st
            .guests
            .remove(guest_id, attachment, remember, Instant::now())
        {
            return;
        }
        self.update_size(&mut st);
        drop(st);
        // The guest that left may have been the one holding the host.
        self.room.notify_one();
    }

    /// Records a guest's terminal size (clamped to 1..=1000 cells).
    ///
    /// # Errors
    /// [`SessionError::Ended`], [`SessionError::UnknownGuest`],
    /// [`SessionError::ReadOnly`].
    pub fn resize_guest(&self, guest_id: &str, cols: u32, rows: u32) -> Result<(), SessionError> {
        let mut st = lock(&self.state);
        st.writer(guest_id)?.size = clamp_size(cols, rows);
        self.update_size(&mut st);
        Ok(())
    }

    fn update_size(&self, st: &mut State) {
        if let Some(wanted) = st.guests.wanted_size()
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
    /// from the primary writer (see [`crate::terminal_replies`]). Waits
    /// while the host's input queue is full; holds no lock while it waits.
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
        let received = Instant::now();
        lock(&self.state).writer(guest_id)?;
        let permit = self
            .input_room
            .acquire()
            .await
            .map_err(|_| SessionError::Ended)?;
        let mut st = lock(&self.state);
        let guest = st.writer(guest_id)?;
        let mut out = match guest.input.accept(seq, data) {
            Ok(Accepted::Apply(out)) => out,
            Ok(Accepted::Nothing) => return Ok(()),
            Err(e) => {
                return Err(SessionError::SeqTooFarAhead {
                    seq,
                    expected: e.expected,
                });
            }
        };
        let next_seq = guest.input.next_seq();
        st.last_activity = Instant::now();
        if out.is_empty() {
            // Nothing to write, nothing stripped: the host need not know.
            return Ok(());
        }
        if !st.guests.is_primary(guest_id)
            && let Cow::Owned(kept) = terminal_replies::strip(&out)
        {
            out = Bytes::from(kept);
        }
        // Even when only stripped terminal replies were left, the message
        // goes (empty), so the host knows the guest's input stands past
        // them and a restarted server does not ask for them again. The
        // room is given back when the host acknowledges the message.
        permit.forget();
        st.input_seqs.record(guest_id, next_seq);
        st.host_input.push(
            out,
            rendezvous_proto::GuestInputSeq {
                guest_id: guest_id.to_owned(),
                next_seq,
            },
            received,
        );
        drop(st);
        self.input_changed.send_modify(|v| *v += 1);
        Ok(())
    }

    /// A receiver that changes whenever output, size, exit or acks change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
