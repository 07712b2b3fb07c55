//! `rendezvous bench scale-hosts`: the host side of the scale load, as a
//! process of its own. Driven by `bench scale` (see [`super::control`]):
//!
//! - `add N`: connects N more synthetic hosts ([`SyntheticHost`]), each on
//!   its own connection, host `i` under task `PREFIX-i`; answers
//!   `{"hosts": total}` once all are registered.
//! - `report`: answers `{"printed": bytes}`, the printing queued so far.
//! - `stop`: every session stops printing and exits (code 0) after its
//!   last output; answers `{"printed": bytes, "sessions": n}` once all
//!   have.
//!
//! Each session a guest opens prints [`super::stream`]'s printing, at
//! `--output-rate` bytes a second in `--writes-per-s` writes (each session
//! at its own phase), and echoes its input at once, as a shell with echo on
//! does. Output waits for the server's credit: under backpressure the
//! printing falls behind, and `bench scale` sees it in the rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::control::{Commands, SECRET_ENV, answer, answer_error};
use super::stream;
use crate::cli::bench::synthetic_host::{HostSession, SyntheticHost};
use crate::cli::bench::util::{Owned, random_u64, run_all};

/// Arguments of the hidden `bench scale-hosts`.
#[derive(Debug, clap::Args)]
pub struct HostsArgs {
    /// The server (http:// URL).
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// Host `i` registers under task `PREFIX-i`.
    #[arg(long, value_name = "PREFIX")]
    pub task_prefix: String,
    /// Bytes each session prints a second.
    #[arg(long, value_name = "BYTES")]
    pub output_rate: u64,
    /// Writes each session's printing takes a second.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub writes_per_s: u64,
}

/// Hosts connecting at once while a step is added.
const CONNECT_CONCURRENCY: usize = 64;

/// How long `stop` waits for every session to exit (60 s).
const STOP_WAIT: Duration = Duration::from_secs(60);

/// What the printers share.
struct Load {
    pool: Bytes,
    /// Bytes of each write.
    write_bytes: usize,
    /// Time between writes.
    period: Duration,
    /// Printing bytes queued toward the server, all sessions.
    printed: AtomicU64,
    /// Set to stop printing.
    stop: watch::Receiver<bool>,
    /// Sessions still printing.
    printing: watch::Sender<u64>,
    /// Sessions opened.
    sessions: AtomicU64,
}

/// Runs the host generator until its stdin closes.
pub async fn run(args: HostsArgs) -> anyhow::Result<()> {
    crate::cli::raise_fd_limit();
    let secret = std::env::var(SECRET_ENV).with_context(|| format!("{SECRET_ENV} is not set"))?;
    let (stop_tx, stop) = watch::channel(false);
    let load = Arc::new(Load {
        pool: stream::pool(),
        write_bytes: (args.output_rate / args.writes_per_s).max(1) as usize,
        period: Duration::from_micros(1_000_000 / args.writes_per_s),
        printed: AtomicU64::new(0),
        stop,
        printing: watch::Sender::new(0),
        sessions: AtomicU64::new(0),
    });
    let mut hosts: Vec<Owned> = Vec::new();
    let mut commands = Commands::stdin();
    while let Some(words) = commands.next().await? {
        match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["add", n] => {
                let n: usize = n.parse().context("add N: N is a count")?;
                let first = hosts.len();
                let connects = (first..first + n).map(|i| {
                    let url = args.server.clone();
                    let task = format!("{}-{i}", args.task_prefix);
                    let secret = secret.clone();
                    async move { SyntheticHost::connect(&url, &task, "", &secret).await }
                });
                match run_all(connects, CONNECT_CONCURRENCY).await {
                    Ok(connected) => {
                        hosts.extend(
                            connected
                                .into_iter()
                                .map(|h| Owned::spawn(serve_host(h, Arc::clone(&load)))),
                        );
                        answer(&json!({ "hosts": hosts.len() }));
                    }
                    Err(e) => answer_error(&e.context("connecting hosts")),
                }
            }
            ["report"] => answer(&json!({ "printed": load.printed.load(Ordering::Relaxed) })),
            ["stop"] => {
                let _ = stop_tx.send(true);
                let mut printing = load.printing.subscribe();
                match tokio::time::timeout(STOP_WAIT, printing.wait_for(|n| *n == 0)).await {
                    Ok(_) => answer(&json!({
                        "printed": load.printed.load(Ordering::Relaxed),
                        "sessions": load.sessions.load(Ordering::Relaxed),
                    })),
                    Err(_) => answer(&json!({
                        "error": format!("{} sessions did not exit within 60 s", *load.printing.borrow()),
                    })),
                }
            }
            _ => answer(&json!({ "error": format!("unknown command {words:?}") })),
        }
    }
    Ok(())
}

/// Serves one host's sessions: a printer for each session opened.
async fn serve_host(mut host: SyntheticHost, load: Arc<Load>) {
    let mut printers = JoinSet::new();
    loop {
        tokio::select! {
            session = host.next_session() => match session {
                Some(session) => {
                    load.sessions.fetch_add(1, Ordering::Relaxed);
                    load.printing.send_modify(|n| *n += 1);
                    printers.spawn(print(session, Arc::clone(&load)));
                }
                None => break,
            },
            Some(_) = printers.join_next(), if !printers.is_empty() => {}
        }
    }
    // The Control stream ended: the server is gone; the printers end as
    // their Data streams do.
    while printers.join_next().await.is_some() {}
}

/// Prints one session's printing until told to stop, then exits it.
async fn print(session: HostSession, load: Arc<Load>) {
    let period = load.period;
    let phase = Duration::from_micros(random_u64() % period.as_micros() as u64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    // Late ticks are made up at once: the rate holds by elapsed time even
    // when this process is short of CPU; only the server's backpressure
    // (waiting for credit) slows the printing.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut stop = load.stop.clone();
    let mut at = 0u64;
    let finished = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break true,
        }
        let data = stream::printing(&load.pool, at, load.write_bytes);
        if session.send(data).await.is_err() {
            break false;
        }
        at += load.write_bytes as u64;
        load.printed
            .fetch_add(load.write_bytes as u64, Ordering::Relaxed);
    };
    if finished {
        session.finish().await;
    }
    load.printing.send_modify(|n| *n -= 1);
}
