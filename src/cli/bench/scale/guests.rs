//! `rendezvous bench scale-guests`: the guest side of the scale load, as a
//! process of its own, with the native guest client (`rendezvous-guest`'s
//! `Terminal`, as `rendezvous attach` uses). Driven by `bench scale` (see
//! [`super::control`]):
//!
//! - `add N`: for N more tasks (`PREFIX-i`, in order), one guest opens a
//!   new shell on the task's host and `--guests-per-session - 1` more join
//!   it, each on its own connection; answers `{"guests": total}`.
//! - `mark`: forgets the round trips timed so far; answers `{}`.
//! - `report`: the keystroke round trips timed since `mark`, in µs
//!   (`{"count", "p50_us", "p99_us", "max_us"}`), and the errors so far.
//! - `quiet`: every guest stops typing; answers `{"keys_sent": n}` once
//!   every key typed has come back as its echo.
//! - `finish`: waits until every guest has seen its session exit, checks
//!   that each saw every typist's echoes exactly once and all of the
//!   printing; answers `{"guests", "printed_received"}` (printing bytes,
//!   summed over guests) or an error naming what was lost.
//!
//! Every guest checks every byte it receives ([`StreamCheck`]) and the
//! client checks every offset; a `Lagged`, a host reconnecting, a refused
//! call or a broken stream is an error. A keystroke's round trip runs from
//! handing the key to the client to checking its echo.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use rendezvous_guest::{AttachOptions, Client, Event, EventReader, Secret, TaskId, TerminalWriter};
use serde_json::json;
use tokio::sync::watch;

use super::control::{Commands, SECRET_ENV, answer, answer_error};
use super::stream::{self, MAX_GUESTS_PER_SESSION, StreamCheck};
use crate::cli::bench::util::{Owned, random_u64, run_all};

/// Arguments of the hidden `bench scale-guests`.
#[derive(Debug, clap::Args)]
pub struct GuestsArgs {
    /// The server (http:// URL).
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// Guests attach to tasks `PREFIX-0`, `PREFIX-1`, ...
    #[arg(long, value_name = "PREFIX")]
    pub task_prefix: String,
    /// Guests of each session; each types.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_GUESTS_PER_SESSION as u64))]
    pub guests_per_session: u64,
    /// Keystrokes each guest types a second.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub keys_per_s: u64,
}

/// Sessions being joined at once while a step is added.
const ATTACH_CONCURRENCY: usize = 32;

/// How long `quiet` waits for the last echoes, and `finish` for every
/// session's exit (60 s).
const WAIT: Duration = Duration::from_secs(60);

/// Errors kept word for word; beyond these only counted.
const KEPT_ERRORS: usize = 10;

/// Keystrokes one guest may have waiting for their echo; past this it
/// stops typing with an error (the echoes have stopped coming).
const MAX_PENDING_KEYS: usize = 10_000;

/// The longest round trip the histogram tells apart, in µs (60 s); longer
/// ones count as this.
const MAX_RTT_US: u64 = 60_000_000;

/// What all guests share.
struct Load {
    pool: Bytes,
    keys_per_s: u64,
    /// Round trips since `mark`, in µs (3 significant digits).
    rtts: Mutex<Histogram<u64>>,
    /// Set to stop typing.
    quiet: watch::Receiver<bool>,
    /// Typists still typing.
    typing: watch::Sender<u64>,
    /// Keys typed and not echoed yet, all guests.
    in_flight: watch::Sender<u64>,
    /// Guests whose stream has not ended.
    live: watch::Sender<u64>,
    errors: Mutex<(u64, Vec<String>)>,
}

impl Load {
    fn error(&self, what: String) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        errors.0 += 1;
        if errors.1.len() < KEPT_ERRORS {
            errors.1.push(what);
        }
    }

    fn errors(&self) -> (u64, Vec<String>) {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One session as its guests see it.
struct Session {
    /// Keys each typist of the session has sent.
    sent: Vec<AtomicU64>,
    /// What each guest had received when the session exited.
    done: Mutex<Vec<StreamCheck>>,
}

/// Runs the guest generator until its stdin closes.
pub async fn run(args: GuestsArgs) -> anyhow::Result<()> {
    crate::cli::raise_fd_limit();
    let secret = std::env::var(SECRET_ENV).with_context(|| format!("{SECRET_ENV} is not set"))?;
    let secret = Secret::new(secret).context("an empty secret")?;
    let per_session = args.guests_per_session as usize;
    let (quiet_tx, quiet) = watch::channel(false);
    let load = Arc::new(Load {
        pool: stream::pool(),
        keys_per_s: args.keys_per_s,
        rtts: Mutex::new(Histogram::new_with_max(MAX_RTT_US, 3)?),
        quiet,
        typing: watch::Sender::new(0),
        in_flight: watch::Sender::new(0),
        live: watch::Sender::new(0),
        errors: Mutex::new((0, Vec::new())),
    });
    let mut sessions: Vec<Arc<Session>> = Vec::new();
    let mut guests: Vec<Owned> = Vec::new();
    let mut commands = Commands::stdin();
    while let Some(words) = commands.next().await? {
        match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["add", n] => {
                let n: usize = n.parse().context("add N: N is a count")?;
                let first = sessions.len();
                let joins = (first..first + n).map(|i| {
                    let url = args.server.clone();
                    let task = format!("{}-{i}", args.task_prefix);
                    let (secret, load) = (secret.clone(), Arc::clone(&load));
                    async move { open_session(&url, &task, secret, per_session, load).await }
                });
                match run_all(joins, ATTACH_CONCURRENCY).await {
                    Ok(opened) => {
                        for (session, tasks) in opened {
                            sessions.push(session);
                            guests.extend(tasks);
                        }
                        answer(&json!({ "guests": sessions.len() * per_session }));
                    }
                    Err(e) => answer_error(&e.context("attaching guests")),
                }
            }
            ["mark"] => {
                load.rtts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .reset();
                answer(&json!({}));
            }
            ["report"] => {
                let rtts = load
                    .rtts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let (errors, first) = load.errors();
                answer(&json!({
                    "count": rtts.len(),
                    "p50_us": rtts.value_at_quantile(0.5),
                    "p99_us": rtts.value_at_quantile(0.99),
                    "max_us": rtts.max(),
                    "errors": errors,
                    "first_errors": first,
                }));
            }
            ["quiet"] => {
                let _ = quiet_tx.send(true);
                // Every typist has stopped (none is between a tick and its
                // send), and then every key typed has come back.
                let (mut typing, mut in_flight) =
                    (load.typing.subscribe(), load.in_flight.subscribe());
                let drained = async {
                    let _ = typing.wait_for(|n| *n == 0).await;
                    let _ = in_flight.wait_for(|n| *n == 0).await;
                };
                match tokio::time::timeout(WAIT, drained).await {
                    Ok(_) => {
                        let sent: u64 = sessions
                            .iter()
                            .flat_map(|s| &s.sent)
                            .map(|n| n.load(Ordering::Relaxed))
                            .sum();
                        answer(&json!({ "keys_sent": sent }));
                    }
                    Err(_) => answer(&json!({
                        "error": format!(
                            "{} keystrokes got no echo within 60 s; errors: {:?}",
                            *load.in_flight.borrow(),
                            load.errors(),
                        ),
                    })),
                }
            }
            ["finish"] => match finish(&sessions, per_session, &load).await {
                Ok(printed) => answer(&json!({
                    "guests": sessions.len() * per_session,
                    "printed_received": printed,
                })),
                Err(e) => answer_error(&e),
            },
            _ => answer(&json!({ "error": format!("unknown command {words:?}") })),
        }
    }
    Ok(())
}

/// Attaches a session's guests: the first opens a new shell, the others
/// join it. Returns the session and its guests' tasks (a reader and a
/// typist each).
async fn open_session(
    url: &str,
    task: &str,
    secret: Secret,
    guests: usize,
    load: Arc<Load>,
) -> anyhow::Result<(Arc<Session>, Vec<Owned>)> {
    let task_id = TaskId::new(task).context("a bad task ID")?;
    let session = Arc::new(Session {
        sent: (0..guests).map(|_| AtomicU64::new(0)).collect(),
        done: Mutex::new(Vec::new()),
    });
    let mut tasks = Vec::with_capacity(2 * guests);
    let mut session_id = None;
    for me in 0..guests {
        let client = Client::connect(url).await?;
        let mut options = AttachOptions::new(task_id.clone(), secret.clone());
        options.session_id = session_id.clone();
        // From offset 0, where the check starts: a guest that joins after
        // the retained output moved on gets a Lagged (an error), not a
        // stream that starts mid-way.
        options.resume_offset = Some(0);
        let terminal = client
            .terminal(options)
            .await
            .with_context(|| format!("guest {me} of task {task}"))?;
        session_id = Some(terminal.attached().session_id.clone());
        let (writer, reader) = terminal.split();
        let pending = Arc::new(Mutex::new(VecDeque::new()));
        load.live.send_modify(|n| *n += 1);
        load.typing.send_modify(|n| *n += 1);
        tasks.push(Owned::spawn(read(
            reader,
            me,
            Arc::clone(&session),
            Arc::clone(&pending),
            Arc::clone(&load),
            client,
        )));
        tasks.push(Owned::spawn(type_keys(
            writer,
            me,
            Arc::clone(&session),
            pending,
            Arc::clone(&load),
        )));
    }
    Ok((session, tasks))
}

/// Types guest `me`'s keys, `keys_per_s` a second, until told to be quiet.
async fn type_keys(
    writer: TerminalWriter,
    me: usize,
    session: Arc<Session>,
    pending: Arc<Mutex<VecDeque<Instant>>>,
    load: Arc<Load>,
) {
    type_until_quiet(writer, me, &session, &pending, &load).await;
    load.typing.send_modify(|n| *n -= 1);
}

async fn type_until_quiet(
    writer: TerminalWriter,
    me: usize,
    session: &Session,
    pending: &Mutex<VecDeque<Instant>>,
    load: &Load,
) {
    let period = Duration::from_micros(1_000_000 / load.keys_per_s);
    let phase = Duration::from_micros(random_u64() % period.as_micros() as u64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    // Late ticks are made up at once: the rate holds by elapsed time even
    // when this process is short of CPU.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut quiet = load.quiet.clone();
    let mut k = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = quiet.wait_for(|q| *q) => return,
            _ = tick.tick() => {}
        }
        // Counted before it is sent, so that its echo always finds it.
        {
            let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.len() >= MAX_PENDING_KEYS {
                drop(pending);
                load.error(format!(
                    "guest {me}: {MAX_PENDING_KEYS} keystrokes got no echo"
                ));
                return;
            }
            pending.push_back(Instant::now());
        }
        load.in_flight.send_modify(|n| *n += 1);
        session.sent[me].fetch_add(1, Ordering::Relaxed);
        if let Err(e) = writer.send_input(vec![stream::key(me, k)]).await {
            load.error(format!("guest {me} cannot type: {e}"));
            return;
        }
        k += 1;
    }
}

/// Reads and checks guest `me`'s stream until the session exits.
async fn read(
    mut reader: EventReader,
    me: usize,
    session: Arc<Session>,
    pending: Arc<Mutex<VecDeque<Instant>>>,
    load: Arc<Load>,
    _client: Client,
) {
    let mut check = StreamCheck::new(load.pool.clone(), session.sent.len());
    let outcome = loop {
        match reader.next_event().await {
            Ok(Some(Event::Output(out))) => {
                let taken = check.take(&out.data, |typist| {
                    if typist != me {
                        return;
                    }
                    let sent = pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    if let Some(sent) = sent {
                        let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        load.rtts
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .saturating_record(us.clamp(1, MAX_RTT_US));
                        load.in_flight.send_modify(|n| *n = n.saturating_sub(1));
                    }
                });
                if let Err(e) = taken {
                    break Err(format!("at offset {}: {e}", out.offset));
                }
            }
            Ok(Some(Event::Size(_))) => {}
            Ok(Some(Event::Lagged(l))) => {
                break Err(format!("lagged: {} bytes skipped", l.missed_bytes));
            }
            Ok(Some(Event::HostState(_))) => break Err("the host reconnected".to_owned()),
            Ok(Some(Event::Exit(_))) => break Ok(()),
            Ok(None) => break Err("the stream ended without an exit".to_owned()),
            Err(e) => break Err(e.to_string()),
        }
    };
    match outcome {
        Ok(()) => session
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(check),
        Err(e) => load.error(format!("guest {me}: {e}")),
    }
    load.live.send_modify(|n| *n -= 1);
}

/// Waits for every guest's exit; checks what each session's guests saw.
/// Returns the printing bytes received, summed over guests.
async fn finish(sessions: &[Arc<Session>], per_session: usize, load: &Load) -> anyhow::Result<u64> {
    let mut live = load.live.subscribe();
    if tokio::time::timeout(WAIT, live.wait_for(|n| *n == 0))
        .await
        .is_err()
    {
        bail!("{} guests saw no exit within 60 s", *load.live.borrow());
    }
    let (errors, first) = load.errors();
    if errors > 0 {
        bail!("{errors} guests failed; the first: {}", first.join("; "));
    }
    let mut printed = 0;
    for (i, session) in sessions.iter().enumerate() {
        let sent: Vec<u64> = session
            .sent
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        let done = session.done.lock().unwrap_or_else(PoisonError::into_inner);
        if done.len() != per_session {
            bail!(
                "session {i}: {} of {per_session} guests saw its exit",
                done.len()
            );
        }
        for check in done.iter() {
            if check.echoes != sent {
                bail!(
                    "session {i}: a guest saw echoes {:?} of keys typed {sent:?}",
                    check.echoes
                );
            }
            if check.printed != done[0].printed {
                bail!(
                    "session {i}: its guests saw {} and {} bytes of printing",
                    check.printed,
                    done[0].printed
                );
            }
            printed += check.printed;
        }
    }
    Ok(printed)
}
