//! `rendezvous`: live shells inside running CI jobs.
//!
//! One binary, several roles: `serve` (the rendezvous server), `host`
//! (publish a PTY from a CI job), `run`, `wait`, `continue` and `extend`
//! (the CI debugging workflow: hold a job while a person works in it),
//! `attach` and `sessions` (a native guest), `demo` (server + host on
//! loopback, for a first try), `bench` (the relay's speed and memory), and
//! `token` (guest tokens for embedding).
#![forbid(unsafe_code)]

mod cli;

/// The allocator: jemalloc, whose background thread gives freed pages
/// back to the system (dirty pages decay over 10 s). With glibc's, a server
/// that has held a burst of sessions keeps growing RSS round after round
/// of the same load (freed memory stays scattered in per-thread arenas);
/// with jemalloc it stays level, as operators watching memory expect.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Live shells inside running CI jobs, from the browser or the terminal.
///
/// Every flag is also an environment variable RENDEZVOUS_<FLAG> (e.g.
/// RENDEZVOUS_TLS_CERT for --tls-cert) and a key of the TOML file of
/// --config (tls-cert = "..."); a flag wins over the environment, which
/// wins over the file.
#[derive(Debug, Parser)]
#[command(name = "rendezvous", version, about)]
struct Cli {
    /// Read flags from this TOML file too: one key per flag, named as its
    /// long name (listen = "127.0.0.1:8080"). Flag > environment > file >
    /// default.
    #[arg(long, global = true, value_name = "FILE", env = cli::config::CONFIG_ENV)]
    config: Option<PathBuf>,
    /// Print the effective configuration (a TOML file --config takes, each
    /// value with its source; secrets redacted) and exit.
    #[arg(long, global = true)]
    print_config: bool,
    /// How log lines are written: text (for people) or json (one object
    /// per line, for log stacks).
    #[arg(long, global = true, value_enum, default_value_t = cli::LogFormat::Text)]
    log_format: cli::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the rendezvous server: gRPC, gRPC-Web and the web guest on one port.
    Serve(Box<cli::serve::ServeArgs>),
    /// Publish shells of this machine under a task ID.
    Host(Box<cli::host::HostArgs>),
    /// Run a CI step; when it fails (or always), publish shells and hold
    /// the job until `rendezvous continue` or a timeout.
    Run(Box<cli::run::RunArgs>),
    /// Hold the job on the host started by `host --detach`.
    Wait(cli::control::WaitArgs),
    /// End the hold (from a shell of the task): the job goes on.
    Continue(cli::control::ContinueArgs),
    /// Hold the job at least DURATION longer (from a shell of the task).
    Extend(cli::control::ExtendArgs),
    /// Open a shell, or join a session, from this terminal.
    Attach(cli::attach::AttachArgs),
    /// List a task's hosts and their sessions.
    Sessions(cli::sessions::SessionsArgs),
    /// Start a server and a host on loopback and print the URL to open.
    Demo(cli::demo::DemoArgs),
    /// Measure the relay: throughput, fan-out, keystroke round trip, memory.
    Bench(cli::bench::BenchArgs),
    /// Mint a guest token for a task (for CI systems that embed terminals).
    Token(cli::token::TokenArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cli::docs::CompletionsArgs),
    /// Write man pages (rendezvous.1, rendezvous-serve.1, ...) into DIR.
    Man(cli::docs::ManArgs),
}

/// `--version`: the crate's version and the git commit it was built from
/// (`-modified` when the work tree had changes; `unknown` outside git).
fn version() -> String {
    format!("{} (commit {})", env!("CARGO_PKG_VERSION"), cli::GIT_COMMIT)
}

fn main() {
    let (matches, command, file) = cli::config::parse(
        Cli::command().version(version()),
        std::env::args_os().collect(),
    )
    .unwrap_or_else(|e| e.exit());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if cli.print_config {
        print!("{}", cli::config::render(&command, &matches, &file));
        return;
    }
    let written = match &cli.command {
        Command::Completions(args) => Some(cli::docs::completions(args, command)),
        Command::Man(args) => Some(cli::docs::man(args, command)),
        _ => None,
    };
    if let Some(written) = written {
        if let Err(e) = written {
            eprintln!("rendezvous: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    // `attach` owns the terminal: its logs would corrupt the screen, so it
    // logs only warnings, to stderr, and only when RUST_LOG asks for more.
    let default_filter = match cli.command {
        Command::Attach(_)
        | Command::Sessions(_)
        | Command::Token(_)
        | Command::Bench(_)
        | Command::Continue(_)
        | Command::Extend(_)
        | Command::Wait(_)
        // The step's log gets the workflow's own lines, not the host's.
        | Command::Run(_) => "warn",
        _ => "info",
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Text => logs.init(),
        // The event's fields beside timestamp, level, target and message,
        // not nested: what log stacks index.
        cli::LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }

    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One readable sentence with its causes; no backtrace.
            eprintln!("rendezvous: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cli::serve::run(*args).await.map(|()| 0),
            Command::Host(args) => cli::host::run(*args).await,
            Command::Run(args) => cli::run::run(*args).await,
            Command::Wait(args) => cli::control::wait(args).await,
            Command::Continue(args) => cli::control::continue_(args).await,
            Command::Extend(args) => cli::control::extend(args).await,
            Command::Attach(args) => cli::attach::run(args).await,
            Command::Sessions(args) => cli::sessions::run(args).await.map(|()| 0),
            Command::Demo(args) => cli::demo::run(args).await.map(|()| 0),
            Command::Bench(args) => cli::bench::run(args).await.map(|()| 0),
            Command::Token(args) => cli::token::run(args).await.map(|()| 0),
            // Handled before the runtime starts.
            Command::Completions(_) | Command::Man(_) => Ok(0),
        }
    });
    // Leave the runtime before exiting, so its tasks are dropped first (a
    // blocked stdin reader thread does not hold the exit).
    runtime.shutdown_background();
    code
}
