//! One connected host: its record, the sessions it runs, and how a new
//! session is opened on it and found by its Data stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rendezvous_proto::ids::{HostName, SessionId, TaskId};
use rendezvous_proto::{
    CloseSession, ExitStatus, HostControlResponse, OpenSession, host_control_response,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Owner, Registry, RegistryError, gone, lock, watchdog};
use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::auth::Digest;
use crate::config::limit_name;
use crate::session::Session;

/// One connected host.
#[derive(Debug)]
pub struct Host {
    pub(super) id: String,
    /// Who the host was admitted as, and so whose task it serves.
    pub(super) owner: Owner,
    /// The client IP it registered from, when known.
    pub(super) ip: Option<std::net::IpAddr>,
    pub(super) task_id: TaskId,
    pub(super) name: HostName,
    pub(super) labels: HashMap<String, String>,
    pub(super) connected_at: SystemTime,
    /// How long the server keeps the host's sessions after its connection
    /// is lost ([`Duration::ZERO`]: not at all).
    pub(super) grace: Duration,
    /// The control connection that serves the host now; a resume
    /// replaces it.
    pub(super) connection: Mutex<HostConnection>,
    /// Running sessions by ID. Sessions leave when they end.
    pub(super) sessions: Mutex<BTreeMap<String, Arc<Session>>>,
    /// Cancelled when the host is unregistered; ends its streams.
    pub(super) closed: CancellationToken,
    /// Where the end of each session is recorded.
    pub(super) audit: AuditLog,
    /// Signs the sessions' resume tickets.
    pub(super) state_key: crate::state_key::StateKey,
    /// The registry's drain token (see [`Registry::drain`]).
    pub(super) draining: CancellationToken,
}

/// One control connection of a host.
#[derive(Debug)]
pub(super) struct HostConnection {
    /// Counts the host's connections: 1 for the first.
    pub(super) generation: u64,
    /// Digest of the Data-stream token handed out with this connection.
    pub(super) token: Digest,
    /// Control messages to the host (bounded).
    pub(super) control: mpsc::Sender<HostControlResponse>,
    /// Cancelled when this connection is replaced or lost: ends its
    /// control stream.
    pub(super) closed: CancellationToken,
    /// False once the connection is lost, until the host resumes.
    pub(super) connected: bool,
}

impl Host {
    /// Cancelled when the server drains (see [`Registry::drain`]).
    pub fn draining(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// The host's server-chosen ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host's name within its task.
    pub fn name(&self) -> &HostName {
        &self.name
    }

    /// Who the host was admitted as: the owner of its task.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// The host's task.
    pub fn task_id(&self) -> &TaskId {
        &self.task_id
    }

    /// Cancelled when the host leaves the registry.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Whether a lost connection leaves the host's sessions running for it
    /// to resume: it asked for a grace period, and the server granted one.
    pub fn may_resume(&self) -> bool {
        !self.grace.is_zero()
    }

    /// The grace period the host was granted ([`Duration::ZERO`]: none).
    pub fn grace_period(&self) -> Duration {
        self.grace
    }

    /// The current connection's number and its end token (cancelled when
    /// it is lost or replaced).
    pub fn connection(&self) -> (u64, CancellationToken) {
        let connection = lock(&self.connection);
        (connection.generation, connection.closed.clone())
    }

    /// Whether the host's control connection is up (false while the
    /// server waits for it to resume).
    pub fn is_connected(&self) -> bool {
        lock(&self.connection).connected
    }

    /// Marks connection `generation` as lost; false if a newer connection
    /// had already replaced it.
    pub(super) fn disconnect(&self, generation: u64) -> bool {
        let mut connection = lock(&self.connection);
        if connection.generation != generation {
            return false;
        }
        connection.connected = false;
        connection.closed.cancel();
        true
    }

    /// Whether connection `generation` is still the latest and is lost.
    pub(super) fn lost_since(&self, generation: u64) -> bool {
        let connection = lock(&self.connection);
        connection.generation == generation && !connection.connected
    }

    /// Whether `token` is the current connection's Data-stream token.
    pub(super) fn token_matches(&self, token: &str) -> bool {
        lock(&self.connection).token.matches(token)
    }

    /// The resume ticket of session `session_id` of this host.
    pub(super) fn session_ticket(&self, session_id: &str) -> String {
        self.state_key.session_ticket(
            &self.owner,
            self.task_id.as_str(),
            self.name.as_str(),
            session_id,
        )
    }

    /// The session with this ID, if it is running.
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }

    /// The host's running sessions, by ID.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        lock(&self.sessions).values().cloned().collect()
    }

    /// The client IP the host registered from, when known.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.ip
    }

    /// The labels the host published.
    pub fn labels(&self) -> &HashMap<String, String> {
        &self.labels
    }

    /// When the host registered.
    pub fn connected_at(&self) -> SystemTime {
        self.connected_at
    }

    /// A sender into the host's bounded control queue (64 messages), for
    /// notices such as GuestAttached; use `try_send`, never wait on it.
    pub(super) fn control_sender(&self) -> mpsc::Sender<HostControlResponse> {
        lock(&self.connection).control.clone()
    }

    /// Ends a session with `status` and forgets it. The host is told to
    /// close it (best effort: a full control queue means the host is gone
    /// or stuck, and its Data stream ends anyway).
    pub fn end_session(&self, session: &Session, status: ExitStatus) {
        let reason = end_reason(&status);
        session.finish(status);
        if lock(&self.sessions).remove(session.id()).is_some() {
            self.audit.record(
                &AuditEvent::new(AuditKind::SessionEnded)
                    .task(&self.task_id)
                    .owner(&self.owner)
                    .host(&self.name)
                    .session(session.id())
                    .reason(reason),
            );
            let _ = self.control_sender().try_send(HostControlResponse {
                message: Some(host_control_response::Message::CloseSession(CloseSession {
                    session_id: session.id().to_owned(),
                })),
            });
        }
    }
}

/// Why a session ended, in words: the server's message, or how the
/// process exited.
fn end_reason(status: &ExitStatus) -> String {
    use rendezvous_proto::exit_status::Status;
    match (&status.status, status.message.is_empty()) {
        (_, false) => status.message.clone(),
        (Some(Status::Code(code)), true) => format!("the process exited with code {code}"),
        (Some(Status::Signal(signal)), true) => {
            format!("the process was killed by signal {signal}")
        }
        (None, true) => "the session ended".into(),
    }
}

/// Asks `host` to end session `session_id`, which the server does not
/// have (best effort, as [`Host::end_session`]).
pub(super) fn close_on_host(host: &Host, session_id: &str) {
    let _ = host.control_sender().try_send(HostControlResponse {
        message: Some(host_control_response::Message::CloseSession(CloseSession {
            session_id: session_id.to_owned(),
        })),
    });
}

/// What a host gets back from [`Registry::register_host`].
#[derive(Debug)]
pub struct Registration {
    /// The registered host.
    pub host: Arc<Host>,
    /// The host's resume ticket, sent in Registered.
    pub resume_ticket: String,
    /// Whether the host resumed (or was restored with) its earlier
    /// registration.
    pub resumed: bool,
    /// The host's Data-stream token, sent once in Registered.
    pub host_token: String,
    /// Control messages for the host's stream.
    pub control: mpsc::Receiver<HostControlResponse>,
}

impl Registry {
    /// Asks `host` for a new shell of `cols` x `rows` cells. The session is
    /// registered at once; if the host has not opened its Data stream within
    /// [`SESSION_START_TIMEOUT`](crate::config::SESSION_START_TIMEOUT), the session ends, as it does when idle or
    /// at its maximum lifetime ([`SessionTimeouts`](crate::config::SessionTimeouts)).
    ///
    /// # Errors
    /// `Limit` (sessions, retained output bytes, sessions per host),
    /// `HostGone`.
    pub async fn open_session(
        &self,
        host: &Arc<Host>,
        cols: u32,
        rows: u32,
    ) -> Result<Arc<Session>, RegistryError> {
        let session = Arc::new(Session::new(
            uuid::Uuid::new_v4().simple().to_string(),
            cols,
            rows,
            self.config.relay,
        ));
        self.check_session_limits()?;
        {
            let mut sessions = lock(&host.sessions);
            if sessions.len() >= self.config.limits.sessions_per_host {
                return Err(RegistryError::Limit {
                    name: limit_name::SESSIONS_PER_HOST,
                    value: self.config.limits.sessions_per_host,
                });
            }
            sessions.insert(session.id().to_owned(), session.clone());
        }
        let size = session.size();
        let open = HostControlResponse {
            message: Some(host_control_response::Message::OpenSession(OpenSession {
                session_id: session.id().to_owned(),
                cols: size.cols,
                rows: size.rows,
                ticket: host.session_ticket(session.id()),
            })),
        };
        if !host.is_connected() {
            host.end_session(&session, gone("the host is reconnecting"));
            return Err(RegistryError::HostReconnecting);
        }
        if host.control_sender().send(open).await.is_err() {
            host.end_session(&session, gone("the host disconnected"));
            return Err(RegistryError::HostGone);
        }
        watchdog::spawn(host, &session, self.config.timeouts);
        Ok(session)
    }

    /// The server-wide session limits, before a session opens: the count,
    /// and the retained output each session reserves.
    pub(super) fn check_session_limits(&self) -> Result<(), RegistryError> {
        let limits = self.config.limits;
        let hosts: Vec<Arc<Host>> = lock(&self.inner).hosts_by_id.values().cloned().collect();
        let open: usize = hosts.iter().map(|h| lock(&h.sessions).len()).sum();
        if open >= limits.sessions {
            return Err(RegistryError::Limit {
                name: limit_name::SESSIONS,
                value: limits.sessions,
            });
        }
        let each = self.config.relay.retained_output_bytes as u64;
        if (open as u64 + 1).saturating_mul(each) > limits.retained_output_bytes {
            return Err(RegistryError::Limit {
                name: limit_name::RETAINED_OUTPUT_BYTES,
                value: usize::try_from(limits.retained_output_bytes).unwrap_or(usize::MAX),
            });
        }
        Ok(())
    }

    /// Finds the session a host's Data stream serves.
    ///
    /// # Errors
    /// `BadHost` (unknown host or token), `Invalid` (a malformed session
    /// ID), `NoSuchSession`.
    pub fn data_session(
        &self,
        host_id: &str,
        token: &str,
        session_id: &str,
    ) -> Result<(Arc<Host>, Arc<Session>), RegistryError> {
        let host = lock(&self.inner)
            .hosts_by_id
            .get(host_id)
            .cloned()
            .filter(|h| h.token_matches(token))
            .ok_or(RegistryError::BadHost)?;
        let session_id =
            SessionId::new(session_id).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let session = host
            .session(session_id.as_str())
            .ok_or_else(|| RegistryError::NoSuchSession(session_id.to_string()))?;
        Ok((host, session))
    }
}
