//! The registry: task → hosts → sessions, plus the index of attached guests
//! for the unary input, resize and ack calls (and a bounded record of guests
//! whose session ended, see [`crate::ended_guests`]). Held in memory. Every
//! lock here is a short synchronous section: none is held across an
//! `.await`.
//!
//! Authentication lives here too, in [`Registry::authenticate`]: an unknown
//! task and a wrong secret give the same [`RegistryError::Denied`]. Names
//! arrive validated ([`TaskId`]): a malformed one is refused at the edge
//! with `INVALID_ARGUMENT`, before any credential is looked at.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Instant, SystemTime};

use rendezvous_proto::ids::{
    HostName, MIN_SECRET_LEN, SessionId, TaskId, check_labels, secret_long_enough,
};
use rendezvous_proto::message_size::MAX_DATA_BYTES;
use rendezvous_proto::{
    CloseSession, ExitStatus, HostControlResponse, OpenSession, Role, host_control_response,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::{Digest, new_token};
use crate::config::{
    HOST_CONTROL_QUEUE_MESSAGES, HOSTLESS_TASK_GRACE, MAX_HOSTLESS_TASKS, MAX_INPUT_BYTES,
    SESSION_START_TIMEOUT, ServerConfig, limit_name,
};
use crate::ended_guests::EndedGuests;
use crate::metrics::{Connected, Metrics};
use crate::session::{NewGuest, Session, SessionError};
use crate::token::TokenError;

pub use rendezvous_proto::ids::{MAX_LABEL_BYTES, MAX_LABELS};

/// Why the registry refused a request. [`crate::status`] maps each variant
/// to one gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Unknown task or wrong secret (one error for both).
    #[error("unknown task or wrong secret: check the task ID and secret you were given")]
    Denied,
    /// A malformed request; the text says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// The host name is taken within the task.
    #[error("a host named {0:?} is already connected for this task: pick another --name")]
    HostNameTaken(String),
    /// No host of that name in the task.
    #[error("no host named {0:?} in this task: list hosts with `rendezvous sessions`")]
    NoSuchHost(String),
    /// The task has no host at all: its last one left a short while ago.
    #[error("no host is connected to this task right now: wait for the CI job to start one again")]
    NoHost,
    /// No such running session on the host. The ID is one the edge
    /// validated ([`SessionId`]), so the text echoes at most 128 characters.
    #[error(
        "no session {0:?} on this host: it has ended, or list sessions with `rendezvous sessions`"
    )]
    NoSuchSession(String),
    /// A limit was reached; names the limit and its value.
    #[error("limit reached: {name} is {value}; ask the server's operator to raise it")]
    Limit {
        /// The limit's name, as in the server's flags.
        name: &'static str,
        /// Its value.
        value: usize,
    },
    /// A read-only guest asked for something only writers may do.
    #[error("read-only guests can only join existing sessions")]
    ReadOnly,
    /// Unknown guest, or a token that does not match.
    #[error("unknown guest or bad guest token: attach again")]
    BadGuest,
    /// The guest's session has ended (its guest ID and token are right).
    #[error("the session has ended")]
    SessionEnded,
    /// An invalid or expired guest token.
    #[error("{0}")]
    Token(TokenError),
    /// Bad host ID or token on a Data stream.
    #[error("unknown host or bad host token: reconnect the host")]
    BadHost,
    /// The host has gone.
    #[error("the host has disconnected")]
    HostGone,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connected host.
#[derive(Debug)]
pub struct Host {
    id: String,
    task_id: TaskId,
    name: HostName,
    token: Digest,
    labels: HashMap<String, String>,
    connected_at: SystemTime,
    /// Control messages to the host (bounded).
    control: mpsc::Sender<HostControlResponse>,
    /// Running sessions by ID. Sessions leave when they end.
    sessions: Mutex<BTreeMap<String, Arc<Session>>>,
    /// Cancelled when the host is unregistered; ends its streams.
    closed: CancellationToken,
}

impl Host {
    /// The host's server-chosen ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host's name within its task.
    pub fn name(&self) -> &HostName {
        &self.name
    }

    /// The host's task.
    pub fn task_id(&self) -> &TaskId {
        &self.task_id
    }

    /// Cancelled when the host leaves the registry.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// The session with this ID, if it is running.
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }

    /// The host's running sessions, by ID.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        lock(&self.sessions).values().cloned().collect()
    }

    /// The labels the host published.
    pub fn labels(&self) -> &HashMap<String, String> {
        &self.labels
    }

    /// When the host registered.
    pub fn connected_at(&self) -> SystemTime {
        self.connected_at
    }

    /// Ends a session with `status` and forgets it. The host is told to
    /// close it (best effort: a full control queue means the host is gone
    /// or stuck, and its Data stream ends anyway).
    pub fn end_session(&self, session: &Session, status: ExitStatus) {
        session.finish(status);
        if lock(&self.sessions).remove(session.id()).is_some() {
            let _ = self.control.try_send(HostControlResponse {
                message: Some(host_control_response::Message::CloseSession(CloseSession {
                    session_id: session.id().to_owned(),
                })),
            });
        }
    }
}

/// What a host gets back from [`Registry::register_host`].
#[derive(Debug)]
pub struct Registration {
    /// The registered host.
    pub host: Arc<Host>,
    /// The host's Data-stream token, sent once in Registered.
    pub host_token: String,
    /// Control messages for the host's stream.
    pub control: mpsc::Receiver<HostControlResponse>,
}

#[derive(Debug)]
struct Task {
    secret: Digest,
    read_only_secret: Option<Digest>,
    hosts: BTreeMap<HostName, Arc<Host>>,
    /// When its last host left; `None` while it has one.
    emptied_at: Option<Instant>,
}

/// The guests the unary calls can name: those attached, and those whose
/// session ended a short while ago.
#[derive(Debug, Default)]
struct GuestIndex {
    /// Attached guests by guest ID. An entry goes when its stream does.
    attached: HashMap<String, GuestEntry>,
    /// Guests whose stream ended after their session did.
    ended: EndedGuests,
}

/// An attached guest, for its unary calls.
#[derive(Debug, Clone)]
pub struct GuestEntry {
    /// The session it is attached to.
    pub session: Arc<Session>,
    /// Its role.
    pub role: Role,
    token: Digest,
    /// The stream serving it (see [`crate::session::Attachment`]).
    attachment: u64,
}

#[derive(Debug, Default)]
struct Inner {
    tasks: HashMap<TaskId, Task>,
    hosts_by_id: HashMap<String, Arc<Host>>,
    /// Tasks whose last host left, in that order, with when it left: kept
    /// for [`HOSTLESS_TASK_GRACE`], at most [`MAX_HOSTLESS_TASKS`].
    hostless: VecDeque<(TaskId, Instant)>,
}

impl Inner {
    /// Forgets hostless tasks past their grace period or over the bound.
    fn prune_hostless(&mut self, now: Instant) {
        while let Some((id, left_at)) = self.hostless.front() {
            let expired = now.duration_since(*left_at) >= HOSTLESS_TASK_GRACE;
            if !expired && self.hostless.len() <= MAX_HOSTLESS_TASKS {
                break;
            }
            // The entry is stale if a host came back (and maybe left again).
            if self
                .tasks
                .get(id)
                .is_some_and(|t| t.emptied_at == Some(*left_at))
            {
                self.tasks.remove(id);
            }
            self.hostless.pop_front();
        }
    }

    /// The task, if it has a host or lost its last one within the grace
    /// period.
    fn task(&mut self, id: &TaskId) -> Option<&Task> {
        self.prune_hostless(Instant::now());
        self.tasks.get(id)
    }
}

/// The server's state. See the module docs.
#[derive(Debug)]
pub struct Registry {
    config: ServerConfig,
    inner: Mutex<Inner>,
    guests: Mutex<GuestIndex>,
    /// Digest compared against when the task is unknown, so that an unknown
    /// task costs the same time as a wrong secret.
    decoy: Digest,
    /// Counters of what passed through, and the gauges' home.
    metrics: Arc<Metrics>,
}

/// Removes a guest from its session and the guest index when dropped: the
/// guest's stream owns it, so a closed stream always detaches its guest. A
/// guest whose session has ended moves to the index's ended record.
#[derive(Debug)]
pub struct GuestHandle {
    registry: Weak<Registry>,
    session: Arc<Session>,
    guest_id: String,
    attachment: u64,
}

impl GuestHandle {
    /// The guest's ID.
    pub fn id(&self) -> &str {
        &self.guest_id
    }

    /// The session the guest is attached to.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The attachment number of the stream that owns this handle.
    pub fn attachment(&self) -> u64 {
        self.attachment
    }
}

impl Drop for GuestHandle {
    fn drop(&mut self) {
        self.session.detach(&self.guest_id, self.attachment);
        let ended = self.session.has_ended();
        if let Some(registry) = self.registry.upgrade() {
            let mut guests = lock(&registry.guests);
            // A guest that resumed on another stream stays indexed.
            if guests
                .attached
                .get(&self.guest_id)
                .is_some_and(|e| e.attachment == self.attachment)
                && let Some(entry) = guests.attached.remove(&self.guest_id)
                && ended
            {
                guests
                    .ended
                    .insert(&self.guest_id, entry.token, Instant::now());
            }
        }
    }
}

fn check_secret(secret: &str, what: &str) -> Result<(), RegistryError> {
    if !secret_long_enough(secret) {
        return Err(RegistryError::Invalid(format!(
            "the {what} must be at least {MIN_SECRET_LEN} characters (128 random bits); \
             omit --secret to have one generated"
        )));
    }
    Ok(())
}

impl Registry {
    /// An empty registry. Bounds over what one message can carry are taken
    /// at their largest: [`Limits::input_bytes`](crate::Limits::input_bytes)
    /// at [`MAX_INPUT_BYTES`], and the relay's output messages at
    /// [`MAX_DATA_BYTES`].
    pub fn new(mut config: ServerConfig) -> Self {
        config.limits.input_bytes = config.limits.input_bytes.min(MAX_INPUT_BYTES);
        config.relay.max_output_message_bytes =
            config.relay.max_output_message_bytes.min(MAX_DATA_BYTES);
        Self {
            config,
            inner: Mutex::default(),
            guests: Mutex::default(),
            decoy: Digest::of(&new_token()),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What is connected now, for the metrics' gauges.
    pub fn connected(&self) -> Connected {
        let (tasks, hosts) = {
            let inner = lock(&self.inner);
            (
                inner.tasks.len(),
                inner.hosts_by_id.values().cloned().collect::<Vec<_>>(),
            )
        };
        Connected {
            tasks,
            hosts: hosts.len(),
            sessions: hosts.iter().map(|h| lock(&h.sessions).len()).sum(),
            guests: lock(&self.guests).attached.len(),
        }
    }

    /// Counts a refusal in the metrics, and passes `result` on.
    fn counted<T>(&self, result: Result<T, RegistryError>) -> Result<T, RegistryError> {
        match &result {
            Err(RegistryError::Denied | RegistryError::Token(_)) => {
                self.metrics.auth_failures.inc();
            }
            Err(RegistryError::Limit { name, .. }) => self.metrics.refused_at(name),
            _ => {}
        }
        result
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Registers a host from its Hello. The first host of a task sets the
    /// task's secrets; later hosts must present the same secret.
    ///
    /// # Errors
    /// `Invalid` (names, short secrets, labels), `Denied` (other secret),
    /// `HostNameTaken`, `Limit` (hosts per task).
    pub fn register_host(
        &self,
        hello: &rendezvous_proto::Hello,
    ) -> Result<Registration, RegistryError> {
        let result = self.register_host_unmetered(hello);
        self.counted(result)
    }

    fn register_host_unmetered(
        &self,
        hello: &rendezvous_proto::Hello,
    ) -> Result<Registration, RegistryError> {
        let task_id = TaskId::new(hello.task_id.as_str())
            .map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let name = HostName::or_default(&hello.host_name)
            .map_err(|e| RegistryError::Invalid(e.to_string()))?;
        check_secret(&hello.secret, "secret")?;
        if !hello.read_only_secret.is_empty() {
            check_secret(&hello.read_only_secret, "read-only secret")?;
            if hello.read_only_secret == hello.secret {
                return Err(RegistryError::Invalid(
                    "the read-only secret must differ from the secret".into(),
                ));
            }
        }
        check_labels(hello.labels.iter())
            .map_err(|e| RegistryError::Invalid(format!("invalid labels: {e}")))?;
        let host_token = new_token();
        let (control_tx, control_rx) = mpsc::channel(HOST_CONTROL_QUEUE_MESSAGES);
        let host = Arc::new(Host {
            id: uuid::Uuid::new_v4().simple().to_string(),
            task_id: task_id.clone(),
            name: name.clone(),
            token: Digest::of(&host_token),
            labels: hello.labels.clone(),
            connected_at: SystemTime::now(),
            control: control_tx,
            sessions: Mutex::default(),
            closed: CancellationToken::new(),
        });
        let mut inner = lock(&self.inner);
        inner.prune_hostless(Instant::now());
        let new_task = || Task {
            secret: Digest::of(&hello.secret),
            read_only_secret: (!hello.read_only_secret.is_empty())
                .then(|| Digest::of(&hello.read_only_secret)),
            hosts: BTreeMap::new(),
            emptied_at: None,
        };
        let task = inner.tasks.entry(task_id).or_insert_with(new_task);
        let same_read_only = match &task.read_only_secret {
            None => hello.read_only_secret.is_empty(),
            Some(d) => d.matches(&hello.read_only_secret),
        };
        if !task.secret.matches(&hello.secret) || !same_read_only {
            if task.hosts.is_empty() {
                // A task kept only for its guests: a host with other secrets
                // (e.g. a restarted job that generated new ones) takes it.
                *task = new_task();
            } else {
                return Err(RegistryError::Denied);
            }
        }
        if task.hosts.contains_key(&name) {
            return Err(RegistryError::HostNameTaken(name.to_string()));
        }
        if task.hosts.len() >= self.config.limits.hosts_per_task {
            return Err(RegistryError::Limit {
                name: limit_name::HOSTS_PER_TASK,
                value: self.config.limits.hosts_per_task,
            });
        }
        task.hosts.insert(name, host.clone());
        task.emptied_at = None;
        inner.hosts_by_id.insert(host.id.clone(), host.clone());
        Ok(Registration {
            host,
            host_token,
            control: control_rx,
        })
    }

    /// Removes a host and ends its sessions with "host disconnected". Safe
    /// to call more than once.
    pub fn unregister_host(&self, host: &Arc<Host>) {
        {
            let mut inner = lock(&self.inner);
            inner.hosts_by_id.remove(&host.id);
            if let Some(task) = inner.tasks.get_mut(&host.task_id) {
                if task
                    .hosts
                    .get(&host.name)
                    .is_some_and(|h| Arc::ptr_eq(h, host))
                {
                    task.hosts.remove(&host.name);
                }
                if task.hosts.is_empty() && task.emptied_at.is_none() {
                    // Kept a while, so guests can wait for a host to return.
                    let now = Instant::now();
                    task.emptied_at = Some(now);
                    inner.hostless.push_back((host.task_id.clone(), now));
                    inner.prune_hostless(now);
                }
            }
        }
        host.closed.cancel();
        for session in host.sessions() {
            host.end_session(&session, gone("the host disconnected"));
        }
    }

    /// Ends every session ("the server is shutting down") and disconnects
    /// every host. Used by graceful shutdown.
    pub fn shutdown(&self) {
        let hosts: Vec<Arc<Host>> = lock(&self.inner).hosts_by_id.values().cloned().collect();
        for host in hosts {
            for session in host.sessions() {
                host.end_session(&session, gone("the server is shutting down"));
            }
            self.unregister_host(&host);
        }
    }

    /// Checks a guest's credential for `task_id`: the task's secret, or,
    /// when `secret` is empty, a guest token (see [`crate::token`]). Returns
    /// the guest's role and the task's hosts.
    ///
    /// # Errors
    /// `Denied` for an unknown task, a wrong secret, or a token for another
    /// task alike; `Token` for an invalid or expired token.
    pub fn authenticate_guest(
        &self,
        task_id: &TaskId,
        secret: &str,
        token: &str,
    ) -> Result<(Role, Vec<Arc<Host>>), RegistryError> {
        let result = self.authenticate_guest_unmetered(task_id, secret, token);
        self.counted(result)
    }

    fn authenticate_guest_unmetered(
        &self,
        task_id: &TaskId,
        secret: &str,
        token: &str,
    ) -> Result<(Role, Vec<Arc<Host>>), RegistryError> {
        if !secret.is_empty() || token.is_empty() {
            return self.authenticate(task_id, secret);
        }
        let key = self
            .config
            .token_key
            .as_ref()
            .ok_or(RegistryError::Token(TokenError::Invalid))?;
        let (token_task, token_role) = key.verify(token).map_err(RegistryError::Token)?;
        if task_id.as_str() != token_task {
            return Err(RegistryError::Denied);
        }
        let mut inner = lock(&self.inner);
        let task = inner.task(task_id).ok_or(RegistryError::Denied)?;
        Ok((token_role, task.hosts.values().cloned().collect()))
    }

    /// Checks a guest's task ID and secret and returns its role and the
    /// task's hosts.
    ///
    /// # Errors
    /// `Denied` for an unknown task or a wrong secret alike.
    pub fn authenticate(
        &self,
        task_id: &TaskId,
        secret: &str,
    ) -> Result<(Role, Vec<Arc<Host>>), RegistryError> {
        let mut inner = lock(&self.inner);
        let Some(task) = inner.task(task_id) else {
            // Spend the same work as a wrong secret would.
            let _ = self.decoy.matches(secret);
            return Err(RegistryError::Denied);
        };
        let role = if task.secret.matches(secret) {
            Role::ReadWrite
        } else if task
            .read_only_secret
            .as_ref()
            .is_some_and(|d| d.matches(secret))
        {
            Role::ReadOnly
        } else {
            return Err(RegistryError::Denied);
        };
        Ok((role, task.hosts.values().cloned().collect()))
    }

    /// Asks `host` for a new shell of `cols` x `rows` cells. The session is
    /// registered at once; if the host has not opened its Data stream within
    /// [`SESSION_START_TIMEOUT`], the session ends.
    ///
    /// # Errors
    /// `Limit` (sessions per host), `HostGone`.
    pub async fn open_session(
        &self,
        host: &Arc<Host>,
        cols: u32,
        rows: u32,
    ) -> Result<Arc<Session>, RegistryError> {
        let result = self.open_session_unmetered(host, cols, rows).await;
        self.counted(result)
    }

    async fn open_session_unmetered(
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
            })),
        };
        if host.control.send(open).await.is_err() {
            host.end_session(&session, gone("the host disconnected"));
            return Err(RegistryError::HostGone);
        }
        // The watchdog ends at the deadline or with the session, whichever
        // comes first; it holds no strong reference, so it keeps nothing
        // alive.
        let (weak_host, weak_session) = (Arc::downgrade(host), Arc::downgrade(&session));
        let ended = session.ended().clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(SESSION_START_TIMEOUT) => {}
                () = ended.cancelled() => return,
            }
            if let (Some(host), Some(session)) = (weak_host.upgrade(), weak_session.upgrade())
                && !session.host_attached()
            {
                let message = format!(
                    "the host did not start the shell within {} s",
                    SESSION_START_TIMEOUT.as_secs()
                );
                host.end_session(&session, gone(&message));
            }
        });
        Ok(session)
    }

    /// Attaches a guest to `session` and indexes it for unary calls, or
    /// resumes the guest `resume` names (ID and token; see
    /// [`Session::attach_guest`]). The returned handle detaches it when
    /// dropped. Also returns the guest token (new, or the resumed guest's own)
    /// and the session's answer.
    ///
    /// # Errors
    /// `Limit` (guests per session).
    pub fn add_guest(
        self: &Arc<Self>,
        session: &Arc<Session>,
        new: NewGuest<'_>,
    ) -> Result<(GuestHandle, String, crate::session::Attachment), RegistryError> {
        let result = self.add_guest_unmetered(session, new);
        self.counted(result)
    }

    fn add_guest_unmetered(
        self: &Arc<Self>,
        session: &Arc<Session>,
        new: NewGuest<'_>,
    ) -> Result<(GuestHandle, String, crate::session::Attachment), RegistryError> {
        let new = NewGuest {
            max_guests: self.config.limits.guests_per_session,
            ..new
        };
        let fresh_token = new_token();
        let digest = Digest::of(&fresh_token);
        let fresh_id = uuid::Uuid::new_v4().simple().to_string();
        let attached = session
            .attach_guest(fresh_id, digest.clone(), new)
            .map_err(|e| match e {
                SessionError::TooManyGuests(value) => RegistryError::Limit {
                    name: limit_name::GUESTS_PER_SESSION,
                    value,
                },
                _ => RegistryError::NoSuchSession(session.id().to_owned()),
            })?;
        let token = match new.resume_guest {
            Some((_, presented)) if attached.resumed => presented.to_owned(),
            _ => fresh_token,
        };
        {
            let mut guests = lock(&self.guests);
            // Two resumes of one guest may race here: the later attachment wins.
            let newer = guests
                .attached
                .get(&attached.guest_id)
                .is_none_or(|e| e.attachment < attached.attachment);
            if newer {
                guests.attached.insert(
                    attached.guest_id.clone(),
                    GuestEntry {
                        session: session.clone(),
                        role: new.role,
                        token: Digest::of(&token),
                        attachment: attached.attachment,
                    },
                );
            }
        }
        let handle = GuestHandle {
            registry: Arc::downgrade(self),
            session: session.clone(),
            guest_id: attached.guest_id.clone(),
            attachment: attached.attachment,
        };
        Ok((handle, token, attached))
    }

    /// Looks up an attached guest by ID and token.
    ///
    /// # Errors
    /// `SessionEnded` when the guest's session has ended, whether its
    /// stream is still open or closed less than
    /// [`ENDED_GUEST_GRACE`](crate::config::ENDED_GUEST_GRACE) ago;
    /// `BadGuest` when the guest is unknown or the token does not match.
    pub fn guest(&self, guest_id: &str, token: &str) -> Result<GuestEntry, RegistryError> {
        let entry = {
            let mut guests = lock(&self.guests);
            match guests.attached.get(guest_id) {
                Some(entry) if entry.token.matches(token) => entry.clone(),
                Some(_) => return Err(RegistryError::BadGuest),
                None => {
                    let ended = guests.ended.contains(guest_id, token, Instant::now());
                    return Err(if ended {
                        RegistryError::SessionEnded
                    } else {
                        RegistryError::BadGuest
                    });
                }
            }
        };
        // Checked after the index's lock is released: the session has a
        // lock of its own.
        if entry.session.has_ended() {
            return Err(RegistryError::SessionEnded);
        }
        Ok(entry)
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
            .filter(|h| h.token.matches(token))
            .ok_or(RegistryError::BadHost)?;
        let session_id =
            SessionId::new(session_id).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let session = host
            .session(session_id.as_str())
            .ok_or_else(|| RegistryError::NoSuchSession(session_id.to_string()))?;
        Ok((host, session))
    }
}

/// An exit status for a session that ended without its process's status.
pub fn gone(message: &str) -> ExitStatus {
    ExitStatus {
        status: None,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> TaskId {
        TaskId::new(id).unwrap()
    }

    fn hello(task_id: &str) -> rendezvous_proto::Hello {
        rendezvous_proto::Hello {
            task_id: task_id.into(),
            secret: "a-secret-of-at-least-22-chars".into(),
            ..Default::default()
        }
    }

    #[test]
    fn hostless_tasks_are_bounded_and_the_oldest_goes_first() {
        let registry = Registry::new(ServerConfig::default());
        for i in 0..MAX_HOSTLESS_TASKS + 3 {
            let registration = registry.register_host(&hello(&format!("t{i}"))).unwrap();
            registry.unregister_host(&registration.host);
        }
        let secret = "a-secret-of-at-least-22-chars";
        assert_eq!(lock(&registry.inner).tasks.len(), MAX_HOSTLESS_TASKS);
        for gone in ["t0", "t1", "t2"] {
            assert_eq!(
                registry.authenticate(&task(gone), secret).unwrap_err(),
                RegistryError::Denied
            );
        }
        let (role, hosts) = registry.authenticate(&task("t3"), secret).unwrap();
        assert_eq!(role, Role::ReadWrite);
        assert!(hosts.is_empty());
    }

    #[test]
    fn a_host_that_returns_keeps_its_task_past_the_grace_period() {
        let registry = Registry::new(ServerConfig::default());
        let first = registry.register_host(&hello("t")).unwrap();
        registry.unregister_host(&first.host);
        let _second = registry.register_host(&hello("t")).unwrap();
        // The stale hostless entry (from the first host) is pruned later
        // without removing the task, which has a host again.
        let stale_at = Instant::now() + HOSTLESS_TASK_GRACE;
        lock(&registry.inner).prune_hostless(stale_at);
        assert!(lock(&registry.inner).hostless.is_empty());
        let (_, hosts) = registry
            .authenticate(&task("t"), "a-secret-of-at-least-22-chars")
            .unwrap();
        assert_eq!(hosts.len(), 1);
    }

    #[tokio::test]
    async fn a_guest_is_told_its_session_ended_before_and_after_its_stream_closes() {
        let registry = Arc::new(Registry::new(ServerConfig::default()));
        let registration = registry.register_host(&hello("t")).unwrap();
        let host = registration.host;
        let session = registry.open_session(&host, 80, 24).await.unwrap();
        let new = NewGuest {
            role: Role::ReadWrite,
            cols: 80,
            rows: 24,
            resume_offset: None,
            resume_guest: None,
            max_guests: usize::MAX,
        };
        let (handle, token, _) = registry.add_guest(&session, new).unwrap();
        let id = handle.id().to_owned();
        assert!(registry.guest(&id, &token).is_ok());

        host.end_session(&session, gone("done"));
        // The stream is still open (it has output or the Exit to send).
        assert_eq!(
            registry.guest(&id, &token).unwrap_err(),
            RegistryError::SessionEnded
        );
        drop(handle);
        assert_eq!(
            registry.guest(&id, &token).unwrap_err(),
            RegistryError::SessionEnded
        );
        assert_eq!(
            registry.guest(&id, "another token").unwrap_err(),
            RegistryError::BadGuest
        );
        assert_eq!(registry.connected().guests, 0);
    }

    #[test]
    fn a_secret_is_measured_in_characters_as_the_host_measures_it() {
        let registry = Registry::new(ServerConfig::default());
        // 22 bytes, but 11 characters: too short on both sides.
        let short = rendezvous_proto::Hello {
            secret: "é".repeat(11),
            ..hello("t")
        };
        assert!(matches!(
            registry.register_host(&short),
            Err(RegistryError::Invalid(_))
        ));
        let long = rendezvous_proto::Hello {
            secret: "é".repeat(22),
            ..hello("t")
        };
        assert!(registry.register_host(&long).is_ok());
    }

    #[test]
    fn labels_over_a_bound_are_refused_naming_it() {
        let registry = Registry::new(ServerConfig::default());
        let mut many = hello("t");
        many.labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        let Err(RegistryError::Invalid(message)) = registry.register_host(&many) else {
            panic!("too many labels were accepted");
        };
        assert!(message.contains("33 labels"), "{message}");
        let mut long = hello("t");
        long.labels = [("k".to_owned(), "v".repeat(MAX_LABEL_BYTES + 1))].into();
        let Err(RegistryError::Invalid(message)) = registry.register_host(&long) else {
            panic!("a long label was accepted");
        };
        assert!(message.contains("257 bytes"), "{message}");
    }
}
