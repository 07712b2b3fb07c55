//! `rendezvous continue`, `extend` and `wait`: reach the hold over its
//! control socket, from a shell of the task (which names the socket in
//! `RENDEZVOUS_CONTROL_SOCKET`) or from the job (a detached host's socket
//! in the runtime directory).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use rendezvous_host::hold::{self, CONTROL_SOCKET_ENV, ControlRequest, HoldStatus};

use crate::cli::ci::{HoldArgs, log_line};
use crate::cli::serve::parse_duration;

/// Which control socket to reach.
#[derive(Debug, clap::Args)]
pub struct SocketArgs {
    /// The hold's control socket. Default: $RENDEZVOUS_CONTROL_SOCKET
    /// (set in the host's shells), else the detached host's.
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
}

impl SocketArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.control_socket {
            return Ok(path.clone());
        }
        if let Some(path) = std::env::var_os(CONTROL_SOCKET_ENV) {
            return Ok(path.into());
        }
        crate::cli::detach::socket_path()
    }
}

/// Arguments of `rendezvous continue`.
#[derive(Debug, clap::Args)]
pub struct ContinueArgs {
    /// The exit code the held step exits with (default: its own).
    #[arg(long, value_name = "N")]
    exit_code: Option<i32>,
    #[command(flatten)]
    socket: SocketArgs,
}

/// Arguments of `rendezvous extend`.
#[derive(Debug, clap::Args)]
pub struct ExtendArgs {
    /// How long from now the job is held at least, e.g. 30m.
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    by: Duration,
    #[command(flatten)]
    socket: SocketArgs,
}

/// Arguments of `rendezvous wait`.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    #[command(flatten)]
    hold: HoldArgs,
    #[command(flatten)]
    socket: SocketArgs,
}

/// `rendezvous continue`: ends the hold.
pub async fn continue_(args: ContinueArgs) -> anyhow::Result<i32> {
    let path = args.socket.path()?;
    hold::request(
        &path,
        &ControlRequest::Continue {
            exit_code: args.exit_code,
        },
    )
    .await
    .context("cannot continue")?;
    println!("rendezvous: continuing; the job goes on");
    Ok(0)
}

/// `rendezvous extend DURATION`.
pub async fn extend(args: ExtendArgs) -> anyhow::Result<i32> {
    let path = args.socket.path()?;
    let status = hold::request(&path, &ControlRequest::Extend { by: args.by })
        .await
        .context("cannot extend")?;
    println!("rendezvous: {}", describe(&status));
    Ok(0)
}

/// `rendezvous wait`: holds the job on the detached host; exits 0, or
/// with `continue --exit-code N`.
pub async fn wait(args: WaitArgs) -> anyhow::Result<i32> {
    let path = args.socket.path()?;
    if !path.exists() {
        log_line(&format!(
            "no detached host is running ({} is missing); not holding",
            path.display()
        ));
        return Ok(0);
    }
    let end = hold::wait(&path, args.hold.options(), log_line)
        .await
        .context("cannot wait for the detached host")?;
    log_line(&end.to_string());
    Ok(end.exit_code().unwrap_or(0))
}

/// What a hold's `status` means, in a line: how long it goes on.
pub fn describe(status: &HoldStatus) -> String {
    match (status.holding, status.remaining) {
        (false, _) => "no hold is running yet; nothing to extend".to_owned(),
        (true, Some(left)) => format!(
            "holding; the hold ends in {} if nothing changes",
            humantime::format_duration(Duration::from_secs(left.as_secs()))
        ),
        (true, None) => "holding while a guest is attached".to_owned(),
    }
}
