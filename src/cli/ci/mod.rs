//! The CI debugging workflow's shared parts: the hold's flags, telling
//! the person (log, job summary, webhooks), and publishing shells while
//! a [`Hold`] keeps the job alive. Used by `run`, `host --detach` and
//! `wait`.
//!
//! - `tell`: the link in the job's log, GitHub's job summary and
//!   annotation, GitLab's collapsible section, a link file;
//! - `notify`: `--notify-url` webhooks.

mod notify;
mod tell;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use rendezvous_host::hold::{CONTROL_SOCKET_ENV, ControlSocket, Hold, HoldEnd, HoldOptions};
use rendezvous_host::{HostBuilder, HostStatus};

use crate::cli::progress::Spinner;
use crate::cli::serve::parse_duration;
pub use notify::Notifier;
pub use tell::Announcement;

/// The hold's rules, as flags (`run`, `wait`).
#[derive(Debug, Clone, clap::Args)]
pub struct HoldArgs {
    /// Stop holding if no guest has attached by then (e.g. 10m). Default:
    /// the idle timeout.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait_for_guest: Option<Duration>,
    /// Stop holding after this long with nobody attached (as Cirrus CI).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "15m")]
    pub idle_timeout: Duration,
    /// Never hold longer than this in all (`rendezvous extend` may go past it).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_hold: Option<Duration>,
    /// After the last guest detaches, hold this long for them to come back
    /// (as GitLab's session_timeout). Default: the idle timeout.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub linger: Option<Duration>,
}

impl HoldArgs {
    /// The library's options.
    pub fn options(&self) -> HoldOptions {
        HoldOptions {
            wait_for_guest: self.wait_for_guest,
            idle_timeout: self.idle_timeout,
            max_hold: self.max_hold,
            linger: self.linger,
        }
    }
}

/// Where the link and the hold's events go besides the log.
#[derive(Debug, Clone, clap::Args)]
pub struct TellArgs {
    /// POST a JSON event to this URL on ready, attached, detached,
    /// continued and ended (task, state, page URL without the secret, host
    /// name; with a `text` for Slack). https://, or http:// on loopback.
    #[arg(long, value_name = "URL", env = "RENDEZVOUS_NOTIFY_URL")]
    pub notify_url: Option<String>,
    /// Keep the link's secret out of the job's log (anyone who can read a
    /// public project's log could open the shell): the log shows the page
    /// without it, the link goes only to --link-file and GitHub's job
    /// summary.
    #[arg(long)]
    pub no_link_in_log: bool,
    /// Also write the link to this file (created with mode 0600).
    #[arg(long, value_name = "FILE")]
    pub link_file: Option<PathBuf>,
}

/// Prints one line of the workflow to the job's log (stderr, so that the
/// step's own stdout stays as it was).
pub fn log_line(line: &str) {
    eprintln!("rendezvous: {line}");
}

/// Where a parked hold's socket goes and how the link is announced.
pub enum HoldMode {
    /// Hold now with these rules, on a socket of its own (`run`).
    Now(HoldOptions),
    /// Wait for `rendezvous wait` on the socket at this path (a detached
    /// host); the link is handed to `ready` instead of the log.
    Parked {
        /// The socket's path.
        socket: PathBuf,
        /// Called once with the link when the host is registered.
        ready: Box<dyn FnOnce(&str) + Send>,
    },
}

/// Publishes shells with `builder` while a hold keeps the job; the shells
/// find the hold by [`CONTROL_SOCKET_ENV`]. Returns how the hold ended;
/// SIGTERM or Ctrl-C end it as [`HoldEnd::HostStopped`].
///
/// # Errors
/// The control socket cannot be made, the settings are invalid, or the
/// server refuses the host for good.
pub async fn publish_and_hold(
    builder: HostBuilder,
    mode: HoldMode,
    tell: &TellArgs,
) -> anyhow::Result<HoldEnd> {
    let (socket, options, mut ready) = match mode {
        HoldMode::Now(options) => (ControlSocket::bind_private()?, Some(options), None),
        HoldMode::Parked { socket, ready } => (ControlSocket::bind_at(&socket)?, None, Some(ready)),
    };
    let host = builder
        .env(CONTROL_SOCKET_ENV, socket.path())
        .build()
        .context("invalid host settings")?;
    let announcement = Announcement::new(&host);
    let notifier = Notifier::start(tell.notify_url.as_deref(), &announcement)?;
    let hold = match options {
        Some(options) => Hold::new(host.guests(), options),
        None => Hold::parked(host.guests()),
    };
    let handle = hold.handle();
    let mut status = host.status();
    let status_for_progress = host.status();
    let mut end = None;
    // On a terminal: a spinner with the hold's state, the events above it.
    let spinner = Spinner::visible().then(|| Spinner::new("connecting to the server"));
    let say = |line: &str| match &spinner {
        Some(spinner) => spinner.println(&format!("rendezvous: {line}")),
        None => log_line(line),
    };
    let progress = async {
        let Some(spinner) = &spinner else {
            return std::future::pending::<()>().await;
        };
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticks.tick().await;
            let registered = matches!(*status_for_progress.borrow(), HostStatus::Registered { .. });
            if !registered {
                spinner.set_message("waiting for the server");
            } else if let Ok(now) = handle.status().await {
                spinner.set_message(format!(
                    "{}; `rendezvous continue` in a shell of the task ends it",
                    crate::cli::control::describe(&now)
                ));
            }
        }
    };
    let body = async {
        let announce = async {
            let registered = status
                .wait_for(|s| matches!(s, HostStatus::Registered { .. }))
                .await
                .is_ok();
            if registered {
                match ready.take() {
                    Some(ready) => ready(announcement.guest_url()),
                    None => announcement.tell(tell),
                }
                notifier.send("ready", "the shell is ready");
            }
            std::future::pending::<()>().await;
        };
        let held = hold.run(|event| {
            say(&event.to_string());
            notifier.event(event);
        });
        let ended = async {
            tokio::select! {
                e = held => Some(e),
                () = announce => None,
                () = progress => None,
                () = crate::cli::serve::shutdown_signal() => Some(HoldEnd::HostStopped),
            }
        };
        // `wait` clients get the end before the socket goes.
        end = socket.serve_until(handle.clone(), ended).await;
    };
    let result = host.run(body).await;
    notifier.finish().await;
    result.context("the rendezvous server refused this host")?;
    Ok(end.unwrap_or(HoldEnd::HostStopped))
}
