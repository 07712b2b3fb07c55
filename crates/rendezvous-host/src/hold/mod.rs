//! The hold: keeping a CI job alive while a person works in it, and
//! letting it go on.
//!
//! A [`Hold`] reads the host's [`Guests`] and its [`HoldHandle`]'s
//! commands, and ends by one rule per phase:
//!
//! | phase | ends after |
//! |---|---|
//! | waiting: no guest has attached yet | [`HoldOptions::wait_for_guest`] (default: the idle timeout) |
//! | a guest is attached | never: an attached guest holds the job |
//! | lingering: the last guest left | [`HoldOptions::linger`] after the last detach (default: the idle timeout); a guest that comes back ends it |
//! | any | [`HoldOptions::max_hold`] after the start, if set |
//!
//! [`HoldHandle::continue_job`] ends it at once (optionally with an exit
//! code for the job's step); [`HoldHandle::extend`] keeps it at least that
//! long from now, past the phase's rule, but never past
//! [`HoldOptions::max_hold`], a hard cap. Every change is a [`HoldEvent`].
//!
//! `socket` serves the handle on a Unix socket, so that
//! `rendezvous continue` and `rendezvous extend` work from any shell of
//! the task (see [`ControlSocket`]); `rules` holds the phase arithmetic.

mod lines;
mod rules;
mod socket;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::guests::{AttachedGuest, Guests};
use rules::{Phase, Rules};

pub use socket::{
    CONTROL_SOCKET_ENV, ControlReply, ControlRequest, ControlSocket, MAX_CONTROL_LINE_BYTES,
    request, wait,
};

/// The idle timeout when none is given: 15 minutes, as Cirrus CI's
/// `CIRRUS_TERMINAL_EXPIRATION_WINDOW`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Commands waiting for the hold, in commands (16); past it a
/// [`HoldHandle`] call waits.
pub const HOLD_COMMAND_QUEUE: usize = 16;

/// Events kept for [`HoldHandle::events`] subscribers that fall behind, in
/// events (64); a slower subscriber skips the oldest.
pub const HOLD_EVENT_QUEUE: usize = 64;

/// The rules of a hold. All durations are wall-clock time; `Default`
/// gives a 15-minute idle timeout and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldOptions {
    /// How long to wait for the first guest; `None`: the idle timeout.
    pub wait_for_guest: Option<Duration>,
    /// How long the job is held with nobody attached, when no more
    /// specific rule says (15 min by default).
    pub idle_timeout: Duration,
    /// A hard cap on the whole hold, from its start; `None`: no cap.
    /// [`HoldHandle::extend`] may go past it.
    pub max_hold: Option<Duration>,
    /// How long to go on after the last guest detached, for them to come
    /// back; `None`: the idle timeout.
    pub linger: Option<Duration>,
}

impl Default for HoldOptions {
    fn default() -> Self {
        Self {
            wait_for_guest: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_hold: None,
            linger: None,
        }
    }
}

/// Which rule ended a hold, with its duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timeout {
    /// No guest attached within `--wait-for-guest`.
    WaitForGuest(Duration),
    /// Nobody attached for the idle timeout (no `--wait-for-guest`, or no
    /// `--linger`, given).
    Idle(Duration),
    /// Nobody came back within `--linger` after the last guest left.
    Linger(Duration),
    /// `--max-hold` since the hold started.
    MaxHold(Duration),
}

/// How a hold ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldEnd {
    /// Someone ran `continue` ([`HoldHandle::continue_job`]); the step
    /// should exit with `exit_code` when given.
    Continued {
        /// The exit code asked for, if any.
        exit_code: Option<i32>,
    },
    /// A rule's time ran out.
    TimedOut(Timeout),
    /// The host stopped (its [`Guests`] channel closed).
    HostStopped,
}

impl HoldEnd {
    /// The exit code a `continue --exit-code N` asked for.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::Continued { exit_code } => *exit_code,
            _ => None,
        }
    }
}

/// A change of the hold's state, one line each in the job's log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HoldEvent {
    /// The hold started and nobody is attached: waiting for a guest at
    /// most `for_` (`None`: until `--max-hold` or a `continue`).
    Waiting {
        /// How long at most.
        for_: Option<Duration>,
    },
    /// A guest attached.
    GuestAttached(AttachedGuest),
    /// A guest detached; `remaining` are still attached.
    GuestDetached {
        /// Who left.
        guest: AttachedGuest,
        /// Guests still attached.
        remaining: usize,
    },
    /// The last guest left; the hold goes on for `for_` for them to come
    /// back.
    Lingering {
        /// How long.
        for_: Duration,
    },
    /// `extend`: the hold goes on at least `by` from now, or until
    /// [`HoldOptions::max_hold`] if that comes first.
    Extended {
        /// The extension asked for.
        by: Duration,
        /// Time left to `max_hold` when it cut the extension short.
        capped: Option<Duration>,
    },
    /// The hold ended.
    Ended(HoldEnd),
}

/// The hold's state as [`HoldHandle::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldStatus {
    /// Whether a hold runs now (`false` for a [`Hold::parked`] one not yet
    /// started).
    pub holding: bool,
    /// Guests attached now.
    pub guests: usize,
    /// Time until the hold ends unless something happens; `None` when no
    /// rule limits it now (a guest is attached and there is no cap).
    pub remaining: Option<Duration>,
}

/// Why a [`HoldHandle`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HoldError {
    /// The hold has ended (or its task was dropped).
    #[error("the hold has ended")]
    Ended,
    /// [`HoldHandle::start`] on a hold that already holds.
    #[error("already holding")]
    AlreadyHolding,
    /// The control socket could not be made or reached; the text says
    /// which path and why.
    #[error("{0}")]
    Socket(String),
    /// The other side answered with an error, or not as expected.
    #[error("{0}")]
    Refused(String),
}

/// What a [`HoldHandle`] asks the hold.
#[derive(Debug)]
enum Command {
    Continue(Option<i32>),
    Extend(Duration, oneshot::Sender<HoldStatus>),
    Status(oneshot::Sender<HoldStatus>),
    Start(HoldOptions, oneshot::Sender<Result<(), HoldError>>),
}

/// Asks a [`Hold`] to continue or extend, from anywhere; cheap to clone.
/// Commands sent before the hold runs wait for it (at most
/// [`HOLD_COMMAND_QUEUE`]; then the call waits). A `continue` given to a
/// [`Hold::parked`] hold before it starts makes it end at once when it
/// starts (a detached host's `wait`).
#[derive(Debug, Clone)]
pub struct HoldHandle {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<HoldEvent>,
}

impl HoldHandle {
    /// Ends the hold; the step exits with `exit_code` if given.
    ///
    /// # Errors
    /// [`HoldError::Ended`] when the hold is over.
    pub async fn continue_job(&self, exit_code: Option<i32>) -> Result<(), HoldError> {
        self.commands
            .send(Command::Continue(exit_code))
            .await
            .map_err(|_| HoldError::Ended)
    }

    /// Holds at least `by` from now, past the wait, idle and linger rules
    /// but not past `max_hold`; returns the state after.
    ///
    /// # Errors
    /// [`HoldError::Ended`] when the hold is over.
    pub async fn extend(&self, by: Duration) -> Result<HoldStatus, HoldError> {
        self.ask(|reply| Command::Extend(by, reply)).await
    }

    /// The hold's state now.
    ///
    /// # Errors
    /// [`HoldError::Ended`] when the hold is over.
    pub async fn status(&self) -> Result<HoldStatus, HoldError> {
        self.ask(Command::Status).await
    }

    /// Starts a [`Hold::parked`] hold with `options` (a detached host's
    /// `wait`).
    ///
    /// # Errors
    /// [`HoldError::AlreadyHolding`] when it runs already,
    /// [`HoldError::Ended`] when it is over.
    pub async fn start(&self, options: HoldOptions) -> Result<(), HoldError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Start(options, reply))
            .await
            .map_err(|_| HoldError::Ended)?;
        answer.await.map_err(|_| HoldError::Ended)?
    }

    /// Subscribes to the hold's events from now on (at most
    /// [`HOLD_EVENT_QUEUE`] kept for a slow subscriber).
    pub fn events(&self) -> broadcast::Receiver<HoldEvent> {
        self.events.subscribe()
    }

    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<HoldStatus>) -> Command,
    ) -> Result<HoldStatus, HoldError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| HoldError::Ended)?;
        answer.await.map_err(|_| HoldError::Ended)
    }
}

/// A hold over a host's guests; see the [module](self) for its rules.
/// Make it with [`Hold::new`] (holds when run) or [`Hold::parked`] (holds
/// once [`HoldHandle::start`] says), then [`Hold::run`] it beside
/// [`Host::run`](crate::Host::run):
///
/// ```no_run
/// # async fn example() -> Result<(), rendezvous_host::HostError> {
/// use rendezvous_host::hold::{Hold, HoldOptions};
/// let host = rendezvous_host::Host::builder("http://127.0.0.1:8080")
///     .task_id("build-42")
///     .build()?;
/// let hold = Hold::new(host.guests(), HoldOptions::default());
/// host.run(async {
///     let end = hold.run(|event| println!("rendezvous: {event:?}")).await;
///     println!("rendezvous: hold ended: {end:?}");
/// })
/// .await
/// # }
/// ```
#[derive(Debug)]
pub struct Hold {
    guests: watch::Receiver<Guests>,
    /// `None` while parked.
    options: Option<HoldOptions>,
    commands: mpsc::Receiver<Command>,
    handle: HoldHandle,
}

impl Hold {
    /// A hold with `options` over `guests` (from
    /// [`Host::guests`](crate::Host::guests)); it starts when run.
    pub fn new(guests: watch::Receiver<Guests>, options: HoldOptions) -> Self {
        let mut hold = Self::parked(guests);
        hold.options = Some(options);
        hold
    }

    /// A hold that, when run, waits for [`HoldHandle::start`] before any
    /// rule applies; a `continue` before then ends it as soon as it
    /// starts.
    pub fn parked(guests: watch::Receiver<Guests>) -> Self {
        let (commands_tx, commands) = mpsc::channel(HOLD_COMMAND_QUEUE);
        let (events, _) = broadcast::channel(HOLD_EVENT_QUEUE);
        Self {
            guests,
            options: None,
            commands,
            handle: HoldHandle {
                commands: commands_tx,
                events,
            },
        }
    }

    /// A handle for `continue`, `extend`, `status` and events.
    pub fn handle(&self) -> HoldHandle {
        self.handle.clone()
    }

    /// Holds until a rule ends it, `continue`, or the host stops; calls
    /// `on_event` (and tells [`HoldHandle::events`] subscribers) on each
    /// change, in order, ending with [`HoldEvent::Ended`].
    pub async fn run(mut self, mut on_event: impl FnMut(&HoldEvent)) -> HoldEnd {
        let events = self.handle.events.clone();
        let mut emit = |event: HoldEvent| {
            on_event(&event);
            let _ = events.send(event);
        };
        let options = match self.options {
            Some(options) => options,
            None => match self.wait_for_start().await {
                Ok((options, None)) => options,
                Ok((_, Some(exit_code))) => {
                    let end = HoldEnd::Continued { exit_code };
                    emit(HoldEvent::Ended(end.clone()));
                    return end;
                }
                Err(end) => {
                    emit(HoldEvent::Ended(end.clone()));
                    return end;
                }
            },
        };
        let started = Instant::now();
        let mut rules = Rules::new(options, started);
        let mut known = self.guests.borrow_and_update().clone();
        if known.count() == 0 {
            emit(HoldEvent::Waiting {
                for_: rules.remaining(started),
            });
        } else {
            rules.phase = Phase::Attached;
            for guest in known.attached() {
                emit(HoldEvent::GuestAttached(guest.clone()));
            }
        }
        let end = loop {
            let deadline = rules.deadline();
            let timer = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = timer => {
                    if let Some((_, timeout)) = deadline {
                        break HoldEnd::TimedOut(timeout);
                    }
                }
                changed = self.guests.changed() => {
                    if changed.is_err() {
                        break HoldEnd::HostStopped;
                    }
                    let now = self.guests.borrow_and_update().clone();
                    diff(&known, &now, &mut emit);
                    if let Some(event) = rules.guests_now(now.count(), Instant::now()) {
                        emit(event);
                    }
                    known = now;
                }
                Some(command) = self.commands.recv() => match command {
                    Command::Continue(exit_code) => break HoldEnd::Continued { exit_code },
                    Command::Extend(by, reply) => {
                        let now = Instant::now();
                        let capped = rules.extend(now, by);
                        emit(HoldEvent::Extended { by, capped });
                        let _ = reply.send(status(true, &known, rules.remaining(now)));
                    }
                    Command::Status(reply) => {
                        let _ = reply.send(status(true, &known, rules.remaining(Instant::now())));
                    }
                    Command::Start(_, reply) => {
                        let _ = reply.send(Err(HoldError::AlreadyHolding));
                    }
                },
            }
        };
        emit(HoldEvent::Ended(end.clone()));
        end
    }

    /// While parked: answers status and extend (nothing to extend yet:
    /// both report the state unchanged), remembers a `continue`, and
    /// returns the options of the first `start` with the exit code of a
    /// `continue` given before it, if any (the hold then ends at once).
    async fn wait_for_start(&mut self) -> Result<(HoldOptions, Option<Option<i32>>), HoldEnd> {
        let mut continued = None;
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Start(options, reply)) => {
                        let _ = reply.send(Ok(()));
                        return Ok((options, continued));
                    }
                    Some(Command::Continue(exit_code)) => continued = Some(exit_code),
                    Some(Command::Extend(_, reply) | Command::Status(reply)) => {
                        let guests = self.guests.borrow().clone();
                        let _ = reply.send(status(false, &guests, None));
                    }
                    None => return Err(HoldEnd::HostStopped),
                },
                changed = self.guests.changed() => {
                    if changed.is_err() {
                        return Err(HoldEnd::HostStopped);
                    }
                }
            }
        }
    }
}

fn status(holding: bool, guests: &Guests, remaining: Option<Duration>) -> HoldStatus {
    HoldStatus {
        holding,
        guests: guests.count(),
        remaining,
    }
}

/// Emits GuestAttached for guests in `now` but not `before`, and
/// GuestDetached for the reverse.
fn diff(before: &Guests, now: &Guests, emit: &mut impl FnMut(HoldEvent)) {
    for guest in now.attached() {
        if !before.attached().any(|g| g.guest_id == guest.guest_id) {
            emit(HoldEvent::GuestAttached(guest.clone()));
        }
    }
    for guest in before.attached() {
        if !now.attached().any(|g| g.guest_id == guest.guest_id) {
            emit(HoldEvent::GuestDetached {
                guest: guest.clone(),
                remaining: now.count(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
