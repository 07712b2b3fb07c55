//! `rendezvous bench`: how fast the relay is, beside the practical limit of
//! this machine, and how much memory idle peers cost. Like `nats bench` or
//! `redis-benchmark`.
//!
//! By default the bench starts an in-process server on 127.0.0.1 and
//! synthetic hosts that need no PTY ([`synthetic_host`]), so it measures the
//! relay and not a shell. With `--server URL` the throughput and round-trip
//! parts target a running server instead. Everything runs on loopback, in
//! bounded loops, and stops by itself.
//!
//! In one run it measures (each module says how):
//! - (a) [`throughput`]: host → guest MiB/s for one session with one guest,
//!   beside the same bytes through a plain tokio TCP relay ([`baseline`]);
//! - (b) [`throughput`]: fan-out of one session to 1, 10 and 100 guests,
//!   MiB/s per guest and in aggregate;
//! - (c) [`rtt`]: keystroke round trip, p50 and p99 in µs, beside the
//!   baseline relay's round trip;
//! - (d) [`memory`]: growth of the server process's RSS per idle host and
//!   per idle guest, with the server in a child process.
//!
//! It prints a table and, with `--json FILE`, writes the figures as JSON.
//!
//! `bench scale` ([`scale`]) is apart: how many concurrent sessions one
//! server holds at a given load, with the server and the load generators
//! as processes of their own. So is `bench replicas` ([`replicas`]): what
//! a guest on another replica than its host's pays in round trip.

mod baseline;
mod guest;
mod memory;
mod replicas;
mod report;
mod rtt;
mod scale;
mod synthetic_host;
mod throughput;
mod util;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use rendezvous_server::{Limits, Server, ServerConfig};

use self::report::Report;
use self::synthetic_host::SyntheticHost;
use self::throughput::Throughput;
use self::util::{CHUNK_BYTES, Payload, random_name, random_secret};

/// Arguments of `rendezvous bench`. Sizes are in MiB of output, counts in
/// round trips or connections; every default has a smaller `--quick` twin.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// `bench scale`, or a load generator of it; without one, the relay's
    /// throughput, fan-out, round trip and memory.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,

    /// Target a running server (http:// or https:// URL) for throughput,
    /// fan-out and round trip, instead of starting one in-process. It must
    /// allow as many guests per session as the largest --fanout. Memory is
    /// always measured on a child server of this binary.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,

    /// A short run (under 30 s): fewer bytes, fewer round trips, 100 idle
    /// hosts and guests.
    #[arg(long)]
    pub quick: bool,

    /// Also write the figures as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// MiB the host sends for the one-guest throughput (a), through the
    /// relay and through the baseline [default: 1024; quick: 256].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub single_mib: Option<u64>,

    /// MiB the host sends in each fan-out run (b); every guest receives all
    /// of it [default: 128; quick: 32].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub fanout_mib: Option<u64>,

    /// Guest counts of the fan-out runs (b), comma-separated.
    #[arg(long, value_name = "N,N,..", value_delimiter = ',', default_value = "1,10,100",
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub fanout: Vec<u64>,

    /// Timed keystroke round trips (c), for the relay and for the baseline
    /// each, after 200 untimed ones; taken in 10 blocks, relay and baseline
    /// in turn [default: 20000; quick: 5000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub round_trips: Option<u64>,

    /// Runs of each throughput figure, (a) and each fan-out of (b); the
    /// median run is reported. In (a) the baseline and the relay take turns
    /// [default: 3; quick: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100))]
    pub repeat: Option<u64>,

    /// Idle hosts, and idle guests, for the memory figures (d), each on its
    /// own connection [default: 1000; quick: 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub idle: Option<u64>,
}

/// The parts of `rendezvous bench` that are subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// How many concurrent sessions one server holds, each printing
    /// 40 KB/s while its guest types 10 keystrokes/s, at a keystroke round
    /// trip p99 <= 20 ms, with every byte checked.
    Scale(scale::ScaleArgs),
    /// The keystroke round trip of a guest on another replica than its
    /// host's (relayed over the cluster link), beside a guest on the host's
    /// replica: two child replicas on one Redis.
    Replicas(replicas::ReplicasArgs),
    /// The host load generator of `bench scale` (run by it).
    #[command(hide = true)]
    ScaleHosts(scale::HostsArgs),
    /// The guest load generator of `bench scale` (run by it).
    #[command(hide = true)]
    ScaleGuests(scale::GuestsArgs),
}

/// Untimed round trips before the timed ones, for the relay and for the
/// baseline each.
const RTT_WARMUP: usize = 200;

/// The timed round trips are taken in this many blocks, relay and baseline
/// in turn.
const RTT_BLOCKS: usize = 10;

/// The settings of one run, with defaults filled in.
#[derive(Debug, Clone)]
struct Plan {
    single_chunks: u64,
    fanout_chunks: u64,
    fanout: Vec<usize>,
    round_trips: usize,
    idle: usize,
    repeat: usize,
}

impl Plan {
    fn new(args: &BenchArgs) -> Self {
        let pick = |given: Option<u64>, full: u64, quick: u64| {
            given.unwrap_or(if args.quick { quick } else { full })
        };
        let chunks = |mib: u64| Payload::chunks_for(mib * 1024 * 1024);
        Self {
            single_chunks: chunks(pick(args.single_mib, 1024, 256)),
            fanout_chunks: chunks(pick(args.fanout_mib, 128, 32)),
            fanout: args.fanout.iter().map(|&n| n as usize).collect(),
            round_trips: pick(args.round_trips, 20_000, 5_000) as usize,
            idle: pick(args.idle, 1000, 100) as usize,
            repeat: pick(args.repeat, 3, 1) as usize,
        }
    }
}

/// Where the throughput and round-trip parts run: a server URL, and one
/// synthetic host registered under a fresh task there.
#[derive(Debug)]
pub struct Fixture {
    url: String,
    task_id: String,
    secret: String,
    host: SyntheticHost,
}

impl Fixture {
    /// Where a guest asks for a new shell on the fixture's host.
    fn new_shell(&self) -> guest::Target {
        guest::Target {
            task_id: self.task_id.clone(),
            secret: self.secret.clone(),
            host_name: String::new(),
            session_id: None,
        }
    }
}

/// Runs `rendezvous bench`.
///
/// The bench runs on a runtime of its own (one worker thread per core, as
/// the default runtime has), whose threads log only warnings unless
/// RUST_LOG says otherwise: the in-process server would otherwise log every
/// host and guest the bench connects.
pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    match args.command.take() {
        Some(BenchCommand::Scale(scale)) => {
            let result = scale::run(scale).await;
            progress_done();
            return result;
        }
        Some(BenchCommand::Replicas(replicas)) => {
            let result = replicas::run(replicas).await;
            progress_done();
            return result;
        }
        Some(BenchCommand::ScaleHosts(hosts)) => return scale::run_hosts(hosts).await,
        Some(BenchCommand::ScaleGuests(guests)) => return scale::run_guests(guests).await,
        None => {}
    }
    tokio::task::spawn_blocking(move || {
        let _quiet = quiet_logs();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .on_thread_start(|| std::mem::forget(quiet_logs()))
            .build()?;
        let result = runtime.block_on(async { tokio::spawn(bench(args)).await });
        runtime.shutdown_background();
        result.context("the bench panicked")?
    })
    .await
    .context("the bench panicked")?
}

/// Makes this thread's logs go to stderr at `warn`, or as RUST_LOG says.
fn quiet_logs() -> tracing::subscriber::DefaultGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .finish(),
    )
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args);
    let started = Instant::now();
    super::raise_fd_limit();

    // The in-process server, unless --server: limits raised so the largest
    // fan-out fits.
    let largest = plan.fanout.iter().copied().max().unwrap_or(1);
    let (url, in_process) = match &args.server {
        Some(url) => (url.trim_end_matches('/').to_owned(), None),
        None => {
            let config = ServerConfig {
                limits: Limits {
                    guests_per_session: largest + 8,
                    connections: 4 * largest + 256,
                    ..Limits::default()
                },
                ..ServerConfig::default()
            };
            let addr: SocketAddr = "127.0.0.1:0".parse()?;
            let server = Server::bind(addr, config).await?.spawn()?;
            (server.url(), Some(server))
        }
    };
    eprintln!(
        "rendezvous bench{}: relay at {url}{}",
        if args.quick { " --quick" } else { "" },
        if in_process.is_some() {
            " (in-process)"
        } else {
            ""
        },
    );

    let result = measure(&plan, &url).await;
    progress_done();

    if let Some(server) = in_process {
        let _ = server.stop().await;
    }
    let mut report = result?;
    report.elapsed = started.elapsed();
    report.repeat = plan.repeat;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, report.json())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

async fn measure(plan: &Plan, url: &str) -> anyhow::Result<Report> {
    let payload = Payload::new();
    let task_id = random_name("bench");
    let secret = random_secret();
    let host = SyntheticHost::connect(url, &task_id, "", &secret).await?;
    let mut fixture = Fixture {
        url: url.to_owned(),
        task_id,
        secret,
        host,
    };
    let mib = |chunks: u64| chunks * CHUNK_BYTES as u64 / (1024 * 1024);

    // (a) Baseline and relay take turns, so that both see the same machine.
    progress(format_args!(
        "(a) throughput, one guest, {} MiB, {} run(s) each",
        mib(plan.single_chunks),
        plan.repeat
    ));
    let mut baseline_runs = Vec::new();
    let mut relay_runs = Vec::new();
    for _ in 0..plan.repeat {
        baseline_runs.push(baseline::throughput(&payload, plan.single_chunks).await?);
        relay_runs.push(throughput::run(&mut fixture, &payload, 1, plan.single_chunks).await?);
    }
    let baseline_single = median_by(baseline_runs, |(bytes, elapsed)| {
        util::mib_per_s(*bytes, *elapsed)
    });
    let single = median_by(relay_runs, Throughput::aggregate_mib_s);

    // (b)
    let mut fanout = Vec::new();
    for &n in &plan.fanout {
        progress(format_args!(
            "(b) fan-out to {n} guests, {} MiB each, {} run(s)",
            mib(plan.fanout_chunks),
            plan.repeat
        ));
        let mut runs = Vec::new();
        for _ in 0..plan.repeat {
            runs.push(throughput::run(&mut fixture, &payload, n, plan.fanout_chunks).await?);
        }
        fanout.push(median_by(runs, Throughput::aggregate_mib_s));
    }

    // (c) Blocks of relay and baseline round trips, in turn.
    progress(format_args!(
        "(c) keystroke round trip, {} round trips each",
        plan.round_trips
    ));
    let mut base_echo = baseline::Echo::start().await?;
    let mut relay_echo = rtt::Echo::start(&mut fixture).await?;
    let mut warm = Vec::new();
    base_echo.round_trips(RTT_WARMUP, &mut warm).await?;
    relay_echo.round_trips(RTT_WARMUP, &mut warm).await?;
    let mut base_rtt = Vec::with_capacity(plan.round_trips);
    let mut relay_rtt = Vec::with_capacity(plan.round_trips);
    for block in 0..RTT_BLOCKS {
        let n = plan.round_trips / RTT_BLOCKS + usize::from(block < plan.round_trips % RTT_BLOCKS);
        base_echo.round_trips(n, &mut base_rtt).await?;
        relay_echo.round_trips(n, &mut relay_rtt).await?;
    }
    relay_echo.finish().await;
    drop(base_echo);
    drop(fixture);

    // (d)
    progress(format_args!(
        "(d) memory, {} idle hosts and {} idle guests",
        plan.idle, plan.idle
    ));
    let memory = memory::run(plan.idle).await?;

    Ok(Report::new(
        single,
        baseline_single,
        fanout,
        relay_rtt,
        base_rtt,
        memory,
    ))
}

/// The median of `runs` by `key` (the upper one of an even count).
fn median_by<T>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

/// The spinner of the bench's current step, on a terminal.
static STEP: std::sync::Mutex<Option<crate::cli::progress::Spinner>> = std::sync::Mutex::new(None);

/// Says which step runs now: a line on stderr and, on a terminal, a
/// spinner with its time until the next step (or the report).
pub(crate) fn progress(what: std::fmt::Arguments<'_>) {
    let mut step = STEP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *step = None;
    eprintln!("  {what} ...");
    if crate::cli::progress::Spinner::visible() {
        *step = Some(crate::cli::progress::Spinner::new(what.to_string()));
    }
}

/// Clears the step's spinner, before the report is printed.
pub(crate) fn progress_done() {
    STEP.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
}
