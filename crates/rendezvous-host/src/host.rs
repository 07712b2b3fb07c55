//! [`Host`]: a built host, and its run loop (connect, and reconnect with
//! backoff until shutdown or a permanent error).

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::builder::{Config, HostBuilder};
use crate::control::{self, ConnectionEnd, Resume, SESSIONS_END_TIMEOUT};
use crate::guests::{Guests, GuestsTx};
use crate::session::CloseReason;
use crate::sessions::Sessions;
use crate::{HostError, HostStatus};
use rendezvous_proto::backoff::Backoff;

/// After a registered connection is lost, how long `ALREADY_EXISTS` from
/// the server is taken for our own stale registration (which the server
/// has not dropped yet) and retried, rather than for another host holding
/// the name. Longer than the server's HTTP/2 keepalive interval plus
/// timeout.
pub const REREGISTER_WINDOW: Duration = Duration::from_secs(60);

/// A host of one task: publishes this machine's shells on a Rendezvous
/// server. Build it with [`Host::builder`], start it with [`Host::run`].
///
/// Its `Debug` output shows no secret.
#[derive(Debug)]
pub struct Host {
    config: Config,
    /// The current state; `run` changes it, [`Host::status`] subscribers
    /// read it.
    status: watch::Sender<HostStatus>,
    /// Who is attached and their input; the control connection and the
    /// sessions change it, [`Host::guests`] subscribers read it.
    guests: GuestsTx,
}

impl Host {
    /// Starts building a host for the server at `server`, an `http://` or
    /// `https://` URL such as `http://127.0.0.1:8080` (`https` uses the
    /// platform's root certificates).
    pub fn builder(server: impl Into<String>) -> HostBuilder {
        HostBuilder::new(server.into())
    }

    pub(crate) fn new(config: Config) -> Self {
        Self {
            config,
            status: watch::Sender::new(HostStatus::Connecting),
            guests: GuestsTx(watch::Sender::new(Guests::default())),
        }
    }

    /// The URL a person opens to reach this task:
    /// `{server}/t/{task_id}#secret={secret}`. The secret is in the fragment
    /// only, which browsers never send to the server; characters outside
    /// `[A-Za-z0-9._~-]` are percent-encoded.
    ///
    /// The URL holds the read-write secret: treat it as one.
    pub fn guest_url(&self) -> String {
        guest_url(
            &self.config.server,
            self.config.task_id.as_str(),
            self.config.secret.expose(),
        )
    }

    /// The read-write secret (given or generated).
    pub fn secret(&self) -> &str {
        self.config.secret.expose()
    }

    /// The task ID.
    pub fn task_id(&self) -> &str {
        self.config.task_id.as_str()
    }

    /// The host name within the task.
    pub fn name(&self) -> &str {
        self.config.host_name.as_str()
    }

    /// Watches the host's state. The channel keeps only the latest state;
    /// it ends (`changed()` returns an error) when the host is dropped.
    pub fn status(&self) -> watch::Receiver<HostStatus> {
        self.status.subscribe()
    }

    /// Watches who is attached to this host's sessions (as the server
    /// reports it) and how much input they sent: what a
    /// [`Hold`](crate::hold::Hold) decides by. Only the latest state is
    /// kept; the channel ends when the host is dropped.
    pub fn guests(&self) -> watch::Receiver<Guests> {
        self.guests.0.subscribe()
    }

    /// Connects, registers, and serves sessions until `shutdown` resolves
    /// or the server refuses the host for good. Lost connections are
    /// retried with backoff (0.5 s doubling up to 30 s, with jitter). The
    /// sessions keep running meanwhile, for the
    /// [grace period](HostBuilder::grace_period) (5 min by default), and
    /// the next connection resumes them at exact offsets: output the
    /// server missed is sent, input is applied once. When the grace period
    /// is over (or it is zero), they end: their process groups get SIGHUP,
    /// then SIGKILL after 2 s.
    ///
    /// On `shutdown`, every session's process group is ended, guests are
    /// told "host shut down" (waiting at most a few seconds for the server),
    /// and `run` returns `Ok(())`.
    ///
    /// First, `run` makes this process non-dumpable
    /// (`prctl(PR_SET_DUMPABLE, 0)`, as ssh-agent and gpg-agent do): a shell
    /// it starts, running as the same user, then cannot read the process's
    /// environment or memory (`/proc/PID/environ`, `/proc/PID/mem`, ptrace),
    /// where the secrets and the host token are. It also means no core
    /// dumps and no debugger attaching without privilege, for the whole
    /// process that embeds the host. Root, or a user with `CAP_SYS_PTRACE`,
    /// can still read them. A failure to set it is logged, not fatal.
    ///
    /// # Errors
    /// When the server ends the control stream with:
    /// - `INVALID_ARGUMENT`: [`HostError::InvalidArgument`];
    /// - `PERMISSION_DENIED`: [`HostError::PermissionDenied`];
    /// - `UNAUTHENTICATED`: [`HostError::NotAdmitted`] (no host token, or
    ///   one the server does not admit);
    /// - `ALREADY_EXISTS`: [`HostError::AlreadyExists`] (except within
    ///   [`REREGISTER_WINDOW`] after a lost registered connection, when it
    ///   is retried).
    ///
    /// Every other status, and every connection error, is retried.
    pub async fn run<F>(self, shutdown: F) -> Result<(), HostError>
    where
        F: Future<Output = ()>,
    {
        if let Err(e) =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        {
            tracing::warn!(error = %e, "cannot make the host process non-dumpable");
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let serve = self.serve(stop_rx);
        tokio::pin!(serve, shutdown);
        let result = tokio::select! {
            result = &mut serve => result,
            () = &mut shutdown => {
                tracing::info!("shutting down");
                stop_tx.send_replace(true);
                serve.await
            }
        };
        self.status.send_replace(HostStatus::Stopped);
        result
    }

    /// Connects again and again until `stop` or a permanent error.
    async fn serve(&self, mut stop: watch::Receiver<bool>) -> Result<(), HostError> {
        let mut sessions = Sessions::default();
        let result = self.connect_loop(&mut stop, &mut sessions).await;
        // Whatever is left (refused, or stopped while disconnected).
        sessions
            .end_all(CloseReason::HostShutdown, SESSIONS_END_TIMEOUT)
            .await;
        result
    }

    async fn connect_loop(
        &self,
        stop: &mut watch::Receiver<bool>,
        sessions: &mut Sessions,
    ) -> Result<(), HostError> {
        let mut backoff = Backoff::new();
        // When the last registered connection was lost.
        let mut lost_registration: Option<Instant> = None;
        let mut resume: Option<Resume> = None;
        loop {
            self.status.send_replace(HostStatus::Connecting);
            // Sessions waiting to resume end with the grace period, even
            // while an attempt to register hangs.
            let grace_ends = lost_registration
                .filter(|_| !sessions.is_empty())
                .map(|lost| lost + self.config.grace_period);
            let end = control::connect(
                &self.config,
                &self.status,
                &self.guests,
                stop,
                sessions,
                &mut resume,
                grace_ends,
            )
            .await;
            let reason = match end {
                ConnectionEnd::Stopped => return Ok(()),
                ConnectionEnd::Lost { reason, registered } => {
                    if registered {
                        backoff.reset();
                        lost_registration = Some(Instant::now());
                    }
                    reason
                }
                ConnectionEnd::Refused(error) if !sessions.is_empty() && resume.is_some() => {
                    // Not for good while sessions wait: the server may
                    // be a replica or a restart still coming up.
                    format!("the server refused the resume: {error}")
                }
                ConnectionEnd::Refused(HostError::AlreadyExists(message))
                    if lost_registration.is_some_and(|t| t.elapsed() < REREGISTER_WINDOW) =>
                {
                    format!("host name still registered from the lost connection: {message}")
                }
                ConnectionEnd::Refused(error) => {
                    tracing::debug!(%error, "the server refused this host");
                    return Err(error);
                }
            };
            let after = backoff.next_delay();
            tracing::warn!(%reason, ?after, sessions = sessions.len(), "not connected; retrying");
            self.status
                .send_replace(HostStatus::Reconnecting { after, reason });
            // The grace period runs from the loss of the last registered
            // connection; past it, the sessions end.
            let grace_ends = lost_registration
                .filter(|_| !sessions.is_empty())
                .map(|lost| lost + self.config.grace_period);
            tokio::select! {
                () = tokio::time::sleep(after) => {}
                () = control::stopped(stop) => return Ok(()),
                () = async {
                    match grace_ends {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::warn!(
                        sessions = sessions.len(),
                        grace = ?self.config.grace_period,
                        "the server did not come back within the grace period; ending the sessions"
                    );
                    sessions.end_all(CloseReason::GraceExpired, SESSIONS_END_TIMEOUT).await;
                    self.guests.clear();
                }
            }
        }
    }
}

/// `{server}/t/{task_id}#secret={secret}`, with the secret percent-encoded
/// outside `[A-Za-z0-9._~-]`.
fn guest_url(server: &str, task_id: &str, secret: &str) -> String {
    let mut url = format!("{}/t/{task_id}#secret=", server.trim_end_matches('/'));
    for byte in secret.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            url.push(char::from(byte));
        } else {
            let _ = write!(url, "%{byte:02X}");
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_url_has_the_secret_in_the_fragment_only() {
        let host = Host::builder("http://127.0.0.1:8080/")
            .task_id("build-42")
            .secret("abcdefghijklmnopqrstuvwxyz_-")
            .build()
            .unwrap();
        assert_eq!(
            host.guest_url(),
            "http://127.0.0.1:8080/t/build-42#secret=abcdefghijklmnopqrstuvwxyz_-"
        );
    }

    #[test]
    fn guest_url_escapes_unusual_secrets() {
        assert_eq!(
            guest_url("https://rdv.example", "t", "a b#c%d+é&"),
            "https://rdv.example/t/t#secret=a%20b%23c%25d%2B%C3%A9%26"
        );
    }

    #[test]
    fn generated_secret_appears_in_the_guest_url() {
        let host = Host::builder("https://rdv.example")
            .task_id("t")
            .build()
            .unwrap();
        assert_eq!(
            host.guest_url(),
            format!("https://rdv.example/t/t#secret={}", host.secret())
        );
    }
}
