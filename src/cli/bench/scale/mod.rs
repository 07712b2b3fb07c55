//! `rendezvous bench scale`: how many concurrent sessions one server holds,
//! each printing `--output-rate` bytes a second (default 40 KB/s, the load
//! Coder publishes its figure for) while its guest types `--keys-per-s`
//! keystrokes a second (default 10), with the keystroke round trip's p99 at
//! most `--p99-ms` (default 20 ms) and no byte lost.
//!
//! Three processes besides this one, so that each is counted apart: the
//! server (`rendezvous serve` of this binary on 127.0.0.1, unless
//! `--server`), the hosts ([`hosts`], `bench scale-hosts`) and the guests
//! ([`guests`], `bench scale-guests`). The bench raises the load in steps
//! (`--steps`, total sessions at each): at each it adds the sessions, lets
//! them settle, times every keystroke's round trip for `--step-secs`, and
//! reads each process's CPU time and the server's RSS. The first step that
//! misses the p99, or whose printing falls below 95 % of its rate, ends the
//! climb; the figure is the last step that held. Then the guests stop
//! typing, the hosts stop printing and exit their sessions, and the bench
//! checks that every guest received every byte of its session's printing
//! and every echo of every typist, once and in order ([`stream`]). A
//! failed check is an error (exit code 1); a missed latency is a figure.

mod control;
mod guests;
mod hosts;
mod stream;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use self::control::Generator;
pub use self::guests::{GuestsArgs, run as run_guests};
pub use self::hosts::{HostsArgs, run as run_hosts};
use super::memory::rss_kib;
use super::util::{random_name, random_secret};

/// Arguments of `rendezvous bench scale`.
#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// Target a running server (http:// URL) instead of starting one. Its
    /// caps must admit every session, host, guest and connection from one
    /// IP; its CPU and memory are then not reported.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,

    /// Total sessions at each step, comma-separated, rising
    /// [default: 500,1000,1500,2000,2500,3000; quick: 100,200].
    #[arg(long, value_name = "N,N,..", value_delimiter = ',',
          value_parser = clap::value_parser!(u64).range(1..=8000))]
    pub steps: Vec<u64>,

    /// Seconds each step is timed, after it settles [default: 15; quick: 5].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub step_secs: Option<u64>,

    /// Seconds between adding a step's sessions and timing it.
    #[arg(long, value_name = "SECS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(0..=600))]
    pub settle_secs: u64,

    /// Bytes each session prints a second.
    #[arg(long, value_name = "BYTES", default_value_t = 40_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub output_rate: u64,

    /// Writes each session's printing takes a second (a shell printing a
    /// build log writes often; fewer, larger writes cost the relay less).
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub writes_per_s: u64,

    /// Keystrokes each guest types a second.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub keys_per_s: u64,

    /// Guests in each session (1 to 4): the first opens it, the others
    /// join it; every guest types and checks every byte.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=stream::MAX_GUESTS_PER_SESSION as u64))]
    pub guests_per_session: u64,

    /// A step holds while the keystroke round trip's p99 is at most this,
    /// in ms.
    #[arg(long, value_name = "MS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub p99_ms: u64,

    /// Run every step, even after one has missed.
    #[arg(long)]
    pub all_steps: bool,

    /// Short steps up to 200 sessions (about 30 s in all).
    #[arg(long)]
    pub quick: bool,

    /// Also write the figures as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The sessions Coder's published figure holds (on two 4-core replicas).
const CODER_SESSIONS: u64 = 2000;

/// A step's printing must reach this share of `--output-rate`.
const RATE_FLOOR: f64 = 0.95;

/// How long adding a step's sessions may take, per 100 sessions (30 s).
const ADD_WAIT_PER_100: Duration = Duration::from_secs(30);

/// How long the generators may take to answer anything else (90 s).
const ANSWER_WAIT: Duration = Duration::from_secs(90);

/// One step's figures.
#[derive(Debug, Clone)]
struct Step {
    sessions: u64,
    guests: u64,
    keystrokes: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Printing per session, in bytes a second.
    output_rate: f64,
    /// CPU of each process, in % of one core: server, hosts, guests.
    cpu: [Option<f64>; 3],
    server_rss_mib: Option<f64>,
    held: bool,
}

impl Step {
    fn json(&self) -> Value {
        json!({
            "sessions": self.sessions,
            "guests": self.guests,
            "keystrokes": self.keystrokes,
            "rtt_ms": { "p50": self.p50_ms, "p99": self.p99_ms, "max": self.max_ms },
            "output_bytes_per_s_per_session": self.output_rate,
            "cpu_percent": {
                "server": self.cpu[0], "hosts": self.cpu[1], "guests": self.cpu[2],
            },
            "server_rss_mib": self.server_rss_mib,
            "held": self.held,
        })
    }
}

/// The server child process, killed when dropped; counts the warnings and
/// errors it logs.
struct ChildServer {
    child: Child,
    url: String,
    warnings: Arc<AtomicU64>,
}

impl ChildServer {
    async fn spawn(exe: &std::path::Path, sessions: u64, guests: u64) -> anyhow::Result<Self> {
        let connections = sessions + guests + 256;
        let streams = 2 * sessions + guests + 256;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--drain-delay", "0s"])
            .args(["--max-hosts", &(sessions + 64).to_string()])
            .args(["--max-hosts-per-ip", &(sessions + 64).to_string()])
            .args(["--max-sessions", &(sessions + 64).to_string()])
            .args(["--max-guests", &(guests + 64).to_string()])
            .args(["--max-connections", &connections.to_string()])
            .args(["--max-connections-per-ip", &connections.to_string()])
            .args(["--max-streams-per-ip", &streams.to_string()])
            .args([
                "--max-retained-output-bytes",
                &((sessions + 64) * 1024 * 1024).to_string(),
            ])
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} serve", exe.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let url = loop {
            let line = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
                .await
                .context("the server did not say where it listens within 10 s")??
                .context("the server exited before it listened")?;
            if let Some(url) = line.trim().strip_prefix("rendezvous: listening on ") {
                break url.to_owned();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        // The server's log goes on to this stderr; its warnings are counted.
        let warnings = Arc::new(AtomicU64::new(0));
        let mut stderr = BufReader::new(child.stderr.take().context("no stderr")?).lines();
        let counted = Arc::clone(&warnings);
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                if line.contains(" WARN ") || line.contains(" ERROR ") {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                eprintln!("server: {line}");
            }
        });
        Ok(Self {
            child,
            url,
            warnings,
        })
    }
}

/// CPU time of each process so far: server (if a child), hosts, guests.
fn cpu_times(pids: [Option<u32>; 3]) -> [Option<Duration>; 3] {
    pids.map(|pid| pid.and_then(|p| control::cpu_time(p).ok()))
}

/// Runs `rendezvous bench scale`.
pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let steps: Vec<u64> = match (&args.steps[..], args.quick) {
        ([], true) => vec![100, 200],
        ([], false) => vec![500, 1000, 1500, 2000, 2500, 3000],
        (given, _) => given.to_vec(),
    };
    if steps.windows(2).any(|w| w[1] <= w[0]) {
        bail!("--steps must rise: each step is the total sessions, e.g. 500,1000,2000");
    }
    let step_secs = args.step_secs.unwrap_or(if args.quick { 5 } else { 15 });
    let most = *steps.last().context("no steps")?;
    let per_session = args.guests_per_session;
    crate::cli::raise_fd_limit();
    let exe = std::env::current_exe().context("cannot find this executable")?;

    let (server, url) = match &args.server {
        Some(url) => (None, url.trim_end_matches('/').to_owned()),
        None => {
            let server = ChildServer::spawn(&exe, most, most * per_session).await?;
            let url = server.url.clone();
            (Some(server), url)
        }
    };
    let prefix = random_name("scale");
    let secret = random_secret();
    let common = |extra: &[String]| {
        let mut a = vec![
            "--server".to_owned(),
            url.clone(),
            "--task-prefix".to_owned(),
            prefix.clone(),
        ];
        a.extend_from_slice(extra);
        a
    };
    let mut hosts = Generator::spawn(
        &exe,
        "scale-hosts",
        &common(&[
            "--output-rate".to_owned(),
            args.output_rate.to_string(),
            "--writes-per-s".to_owned(),
            args.writes_per_s.to_string(),
        ]),
        &secret,
    )?;
    let mut guests = Generator::spawn(
        &exe,
        "scale-guests",
        &common(&[
            "--guests-per-session".to_owned(),
            per_session.to_string(),
            "--keys-per-s".to_owned(),
            args.keys_per_s.to_string(),
        ]),
        &secret,
    )?;
    eprintln!(
        "rendezvous bench scale: relay at {url}{}; each session prints {} B/s, \
         {per_session} guest(s) each type {}/s; a step holds at p99 <= {} ms",
        if server.is_some() {
            " (child process)"
        } else {
            ""
        },
        args.output_rate,
        args.keys_per_s,
        args.p99_ms,
    );
    let pids = [
        server.as_ref().and_then(|s| s.child.id()),
        hosts.pid(),
        guests.pid(),
    ];

    let mut done = Vec::new();
    let mut now_sessions = 0;
    for &target in &steps {
        let add = target - now_sessions;
        let wait = ADD_WAIT_PER_100 * (add.div_ceil(100) as u32).max(1);
        super::progress(format_args!("{target} sessions: adding {add}"));
        hosts.ask(&format!("add {add}"), wait).await?;
        guests.ask(&format!("add {add}"), wait).await?;
        now_sessions = target;
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;

        super::progress(format_args!("{target} sessions: timing for {step_secs} s"));
        guests.ask("mark", ANSWER_WAIT).await?;
        let printed_before = number(&hosts.ask("report", ANSWER_WAIT).await?, "printed")?;
        let (cpu_before, started) = (cpu_times(pids), Instant::now());
        tokio::time::sleep(Duration::from_secs(step_secs)).await;
        let rtt = guests.ask("report", ANSWER_WAIT).await?;
        let printed_after = number(&hosts.ask("report", ANSWER_WAIT).await?, "printed")?;
        let (cpu_after, elapsed) = (cpu_times(pids), started.elapsed());
        if number(&rtt, "errors")? > 0 {
            bail!(
                "guests failed at {target} sessions: {}",
                rtt["first_errors"]
            );
        }
        let ms = |key: &str| rtt[key].as_f64().unwrap_or(f64::NAN) / 1000.0;
        let mut cpu = [None; 3];
        for (i, c) in cpu.iter_mut().enumerate() {
            if let (Some(a), Some(b)) = (cpu_before[i], cpu_after[i]) {
                *c = Some(100.0 * b.saturating_sub(a).as_secs_f64() / elapsed.as_secs_f64());
            }
        }
        let output_rate = printed_after.saturating_sub(printed_before) as f64
            / elapsed.as_secs_f64()
            / target as f64;
        let p99_ms = ms("p99_us");
        let keystrokes = number(&rtt, "count")?;
        let step = Step {
            sessions: target,
            guests: target * per_session,
            keystrokes,
            p50_ms: ms("p50_us"),
            p99_ms,
            max_ms: ms("max_us"),
            output_rate,
            cpu,
            server_rss_mib: pids[0]
                .and_then(|p| rss_kib(p).ok())
                .map(|k| k as f64 / 1024.0),
            held: keystrokes > 0
                && p99_ms <= args.p99_ms as f64
                && output_rate >= RATE_FLOOR * args.output_rate as f64,
        };
        super::progress_done();
        eprintln!(
            "  {target} sessions: p99 {:.1} ms, printing {:.0} B/s a session: {}",
            step.p99_ms,
            step.output_rate,
            if step.held { "held" } else { "missed" }
        );
        let held = step.held;
        done.push(step);
        if !held && !args.all_steps {
            break;
        }
    }

    // Quiet, then the end of the printing, then every byte checked.
    let keys = number(&guests.ask("quiet", ANSWER_WAIT).await?, "keys_sent")?;
    let stopped = hosts.ask("stop", ANSWER_WAIT).await?;
    let printed = number(&stopped, "printed")?;
    let received = number(
        &guests.ask("finish", ANSWER_WAIT).await?,
        "printed_received",
    )?;
    if received != printed * per_session {
        bail!(
            "the hosts printed {printed} bytes to {per_session} guest(s) a session, \
             but the guests received {received}"
        );
    }
    guests.close().await?;
    hosts.close().await?;
    let warnings = server.as_ref().map(|s| s.warnings.load(Ordering::Relaxed));

    let held = done.iter().filter(|s| s.held).map(|s| s.sessions).max();
    print!("{}", table(&done, held, &args));
    let report = json!({
        "output_bytes_per_s": args.output_rate,
        "writes_per_s": args.writes_per_s,
        "keys_per_s": args.keys_per_s,
        "guests_per_session": per_session,
        "p99_target_ms": args.p99_ms,
        "steps": done.iter().map(Step::json).collect::<Vec<_>>(),
        "held_sessions": held,
        "coder_sessions": CODER_SESSIONS,
        "printed_bytes": printed,
        "received_bytes": received,
        "keystrokes": keys,
        "server_warnings": warnings,
    });
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{report:#}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    drop(server);
    Ok(())
}

/// A count in a generator's answer.
fn number(answer: &Value, key: &str) -> anyhow::Result<u64> {
    answer[key]
        .as_u64()
        .with_context(|| format!("a generator's answer {answer} has no count {key:?}"))
}

/// The figures as a table, with the verdict.
fn table(steps: &[Step], held: Option<u64>, args: &ScaleArgs) -> String {
    use std::fmt::Write as _;
    let pct = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:.0}%"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nrendezvous bench scale: {} B/s printing and {} keystrokes/s per session, \
         {} guest(s) a session",
        args.output_rate, args.keys_per_s, args.guests_per_session
    );
    let _ = writeln!(
        out,
        "{:>8} {:>10} {:>10} {:>10} {:>12} {:>8} {:>8} {:>8} {:>9}  verdict",
        "sessions",
        "p50 ms",
        "p99 ms",
        "max ms",
        "B/s/session",
        "server",
        "hosts",
        "guests",
        "RSS MiB"
    );
    for s in steps {
        let _ = writeln!(
            out,
            "{:>8} {:>10.2} {:>10.2} {:>10.1} {:>12.0} {:>8} {:>8} {:>8} {:>9}  {}",
            s.sessions,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.output_rate,
            pct(s.cpu[0]),
            pct(s.cpu[1]),
            pct(s.cpu[2]),
            s.server_rss_mib
                .map_or("-".to_owned(), |m| format!("{m:.0}")),
            if s.held { "held" } else { "missed" },
        );
    }
    let _ = writeln!(
        out,
        "(CPU in % of one core over the timed window; every byte and keystroke checked: none lost)"
    );
    let _ = match held {
        Some(n) => writeln!(
            out,
            "held: {n} sessions at p99 <= {} ms (target {CODER_SESSIONS}: {}; Coder: {CODER_SESSIONS} on two 4-core replicas)",
            args.p99_ms,
            if n >= CODER_SESSIONS {
                "met"
            } else {
                "not met"
            },
        ),
        None => writeln!(out, "held: no step held p99 <= {} ms", args.p99_ms),
    };
    out
}
