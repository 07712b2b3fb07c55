//! Detached mode: `rendezvous host --detach` starts this same binary as a
//! background host (`--detached-child`), waits until the server has
//! accepted it, prints the link, and returns. The background host holds
//! nothing until `rendezvous wait` starts a hold on its control socket;
//! it ends with that hold, or with the job (the CI system ends the job's
//! processes), or on SIGTERM.
//!
//! Its socket and log live in the runtime directory:
//! `$RENDEZVOUS_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/rendezvous`, else
//! `/tmp/rendezvous-UID`, made with mode 0700.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt as _;

use crate::cli::ci::{Announcement, HoldMode, log_line, publish_and_hold};
use crate::cli::host::HostArgs;

/// Overrides the runtime directory.
const RUNTIME_DIR_ENV: &str = "RENDEZVOUS_RUNTIME_DIR";

/// How long `host --detach` waits for the background host to be
/// registered (60 s).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The line the background host prints when it is registered.
const READY_PREFIX: &str = "READY ";

/// The runtime directory (not created).
fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(RUNTIME_DIR_ENV) {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("rendezvous");
    }
    let uid = rustix::process::getuid().as_raw();
    std::env::temp_dir().join(format!("rendezvous-{uid}"))
}

/// The detached host's control socket.
///
/// # Errors
/// None today; a `Result` for the callers' `?`.
pub fn socket_path() -> anyhow::Result<PathBuf> {
    Ok(runtime_dir().join("detached.sock"))
}

/// Makes the runtime directory (mode 0700) if missing; refuses one that
/// is not this user's or is open to others.
fn make_runtime_dir() -> anyhow::Result<PathBuf> {
    let dir = runtime_dir();
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    let uid = rustix::process::getuid().as_raw();
    anyhow::ensure!(
        meta.is_dir() && meta.uid() == uid && meta.mode() & 0o077 == 0,
        "{} must be a directory of this user with mode 0700",
        dir.display()
    );
    Ok(dir)
}

/// This process's arguments with the first `--detach` (before `--`)
/// replaced by `--detached-child`.
fn child_args() -> Vec<OsString> {
    let mut replaced = false;
    let mut past_flags = false;
    std::env::args_os()
        .skip(1)
        .map(|arg| {
            if arg == "--" {
                past_flags = true;
            }
            if !replaced && !past_flags && arg == "--detach" {
                replaced = true;
                return OsString::from("--detached-child");
            }
            arg
        })
        .collect()
}

/// `host --detach`: starts the background host and prints its link.
pub async fn start(args: &HostArgs) -> anyhow::Result<i32> {
    // Fails fast on bad settings, before anything runs in the background.
    let task = args.publish.task_id()?;
    args.publish
        .builder()?
        .build()
        .context("invalid host settings")?;
    let dir = make_runtime_dir()?;
    let socket = dir.join("detached.sock");
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        anyhow::bail!(
            "a detached host is already running ({}); end it with `rendezvous wait` or \
             `rendezvous continue` first",
            socket.display()
        );
    }
    let log_path = dir.join("detached.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find this program")?;
    // Stays in the job's process group, so that the CI system's end of
    // the job ends it too.
    let mut child = tokio::process::Command::new(exe)
        .args(child_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start the background host")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(READY_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = line.strip_prefix(READY_PREFIX) {
                return Some(url.to_owned());
            }
        }
        None
    })
    .await;
    match ready {
        Ok(Some(url)) => {
            Announcement::from_parts(url, &task, &args.publish.name).tell(&args.tell);
            log_line(&format!(
                "a host runs in the background (log: {}); `rendezvous wait` holds the job",
                log_path.display()
            ));
            Ok(0)
        }
        other => {
            let _ = child.start_kill();
            let why = if other.is_err() {
                format!("not registered within {} s", READY_TIMEOUT.as_secs())
            } else {
                "it ended".to_owned()
            };
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            anyhow::bail!("the background host failed ({why}); its log:\n{tail}")
        }
    }
}

/// `host --detached-child`: the background host itself.
pub async fn child(args: HostArgs) -> anyhow::Result<i32> {
    let mut builder = args.publish.builder()?;
    if let Some((program, rest)) = args.command.split_first() {
        builder = builder.command(program, rest);
    }
    let socket = make_runtime_dir()?.join("detached.sock");
    let ready = Box::new(|url: &str| {
        use std::io::Write as _;
        // The parent reads this one line, then closes the pipe: nothing
        // else goes to stdout.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{READY_PREFIX}{url}");
        let _ = out.flush();
    });
    let end = publish_and_hold(builder, HoldMode::Parked { socket, ready }, &args.tell).await?;
    log_line(&format!("the background host ends: {end}"));
    Ok(0)
}
