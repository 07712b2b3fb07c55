//! `rendezvous host`: publish shells of this machine under a task ID.
//!
//! Thin over [`rendezvous_host::Host`]: parse flags, build the host, print
//! the guest URL once the server has accepted it, run until Ctrl-C or
//! SIGTERM. With `--detach`, leave a host running in the background for a
//! later `rendezvous wait` (see [`crate::cli::detach`]).

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use rendezvous_host::HostStatus;

use crate::cli::progress::Spinner;

use crate::cli::ci::TellArgs;
use crate::cli::publish::PublishArgs;

/// Arguments of `rendezvous host`.
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    #[command(flatten)]
    pub publish: PublishArgs,
    /// Print the link, leave the host running in the background, and
    /// return; a later `rendezvous wait` holds the job (the host ends with
    /// it, or with the job).
    #[arg(long)]
    pub detach: bool,
    /// Internal: this process is the background host of `--detach`.
    #[arg(long, hide = true)]
    pub detached_child: bool,
    #[command(flatten)]
    pub tell: TellArgs,
    /// Command each new shell runs (default: $SHELL, else your login shell, else /bin/sh).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Runs `rendezvous host` until Ctrl-C or SIGTERM (then ends every session
/// and returns), or until the server refuses the host for good.
pub async fn run(args: HostArgs) -> anyhow::Result<i32> {
    if args.detach {
        return crate::cli::detach::start(&args).await;
    }
    if args.detached_child {
        return crate::cli::detach::child(args).await;
    }
    let mut builder = args.publish.builder()?;
    if let Some((program, rest)) = args.command.split_first() {
        builder = builder.command(program, rest);
    }
    let host = builder.build().context("invalid host settings")?;
    let guest_url = host.guest_url();
    let mut status = host.status();

    let server = args.publish.server.clone();
    let run = host.run(crate::cli::serve::shutdown_signal());
    tokio::pin!(run);
    // Print the URL once, when the server first accepts the host, so that
    // it works when opened. Later registrations (after a reconnect) are
    // logged by the library. On a terminal, a spinner says what the host
    // waits for while it is not registered.
    let mut printed = false;
    let mut gone = false;
    let mut waiting: Option<Spinner> = None;
    loop {
        tokio::select! {
            result = &mut run => {
                drop(waiting);
                return result.context("the rendezvous server refused this host").map(|()| 0);
            }
            changed = status.changed(), if !gone => {
                if changed.is_err() {
                    gone = true; // The host is gone; `run` ends next.
                    continue;
                }
                let now = status.borrow_and_update().clone();
                waiting = waiting_for(&server, &now, waiting);
                if !printed && matches!(now, HostStatus::Registered { .. }) {
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "Open {guest_url}")?;
                    stdout.flush()?;
                    printed = true;
                }
            }
        }
    }
}

/// The spinner for the host's `status`: shown (reusing `spinner`) while it
/// connects or waits to reconnect to `server`, gone once registered.
pub fn waiting_for(server: &str, status: &HostStatus, spinner: Option<Spinner>) -> Option<Spinner> {
    let message = match status {
        HostStatus::Connecting => format!("connecting to the server at {server}"),
        HostStatus::Reconnecting { after, reason } => format!(
            "waiting for the server at {server} ({reason}); next try in {}",
            humantime::format_duration(Duration::from_millis(
                u64::try_from(after.as_millis()).unwrap_or(u64::MAX)
            ))
        ),
        _ => return None,
    };
    match spinner {
        Some(spinner) => {
            spinner.set_message(message);
            Some(spinner)
        }
        None => Some(Spinner::new(message)),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: HostArgs,
    }

    #[test]
    fn the_command_follows_the_flags() {
        let cli =
            Cli::try_parse_from(["host", "--task-id", "build-42", "--", "bash", "-l"]).unwrap();
        assert_eq!(cli.args.publish.server, "http://127.0.0.1:8080");
        assert_eq!(cli.args.command, ["bash", "-l"]);
        assert!(!cli.args.detach);
        assert_eq!(
            cli.args.publish.grace_period,
            std::time::Duration::from_secs(300)
        );
        assert_eq!(cli.args.publish.retained_output_bytes, 1 << 20);
    }

    #[test]
    fn resume_flags_reach_the_host() {
        let cli = Cli::try_parse_from([
            "host",
            "--task-id",
            "build-42",
            "--grace-period",
            "90s",
            "--retained-output-bytes",
            "4096",
        ])
        .unwrap();
        assert_eq!(
            cli.args.publish.grace_period,
            std::time::Duration::from_secs(90)
        );
        assert_eq!(cli.args.publish.retained_output_bytes, 4096);
        assert!(cli.args.publish.builder().is_ok());
        // 0 turns resuming off.
        for zero in ["0", "0s"] {
            let cli =
                Cli::try_parse_from(["host", "--task-id", "t", "--grace-period", zero]).unwrap();
            assert_eq!(cli.args.publish.grace_period, std::time::Duration::ZERO);
        }
        assert!(Cli::try_parse_from(["host", "--task-id", "t", "--grace-period", "soon"]).is_err());
    }
}
