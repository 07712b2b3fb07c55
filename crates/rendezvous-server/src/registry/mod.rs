//! The registry: task → hosts → sessions, plus the index of attached guests
//! for the unary input, resize and ack calls. Tasks (their secrets and host
//! names) are looked up and claimed in a [`TaskStore`]; the hosts, their
//! sessions and the guests are held in memory. Every lock
//! here is a short synchronous section: none is held across an `.await`.
//!
//! Names arrive validated ([`TaskId`]): a malformed one is refused at the
//! edge with `INVALID_ARGUMENT`, before any credential is looked at. The
//! registry counts nothing: the services count refusals where they map
//! them to gRPC statuses.
//!
//! # Files
//! - this file: the hosts connected here, by task and by ID;
//! - `store`: task lookup and ownership ([`TaskStore`]), and forgetting
//!   hostless tasks;
//! - `redis_store`: the same in Redis, shared by replicas, with leases
//!   ([`RedisTaskStore`]);
//! - `host`: the host record and the sessions it runs;
//! - `guests`: the guest index for the unary calls, and its drop guard;
//! - `ended_guests`: guests whose session ended, remembered a while so
//!   that their late calls are told so;
//! - `host_admission`: which hosts may register, and the [`Owner`] each is
//!   admitted as;
//! - `watchdog`: each session's start, idle and lifetime timeouts;
//! - `admission`: who may attach: secrets, guest tokens, the decoy digest;
//! - `error`: [`RegistryError`].
//!
//! # Which guest type is what
//! | type | where | what it is |
//! |---|---|---|
//! | `session::Guest` | inside a [`Session`](crate::session::Session)'s lock | the relay's view: cursor, size, role, input order, windows |
//! | [`GuestEntry`] | the registry's guest index | what a unary call (SendInput, Resize, Ack) needs: session, role, token digest, attachment |
//! | [`GuestHandle`] | owned by the guest's stream | the drop guard: detaches the guest and takes it out of the index |
//! | [`GuestStream`](crate::guest_stream::GuestStream) | the response stream | the transport adapter: events at the guest's cursor |

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rendezvous_proto::ExitStatus;
use rendezvous_proto::ids::{HostName, TaskId, check_labels};
use rendezvous_proto::message_size::MAX_DATA_BYTES;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::auth::{Digest, new_token};
use crate::auth_limit::FailureLimits;
use crate::config::{HOST_CONTROL_QUEUE_MESSAGES, MAX_INPUT_BYTES, ServerConfig, limit_name};
use crate::metrics::{Connected, Metrics};
use crate::session::Session;

mod admission;
mod cluster;
mod drain;
mod ended_guests;
mod error;
mod guests;
mod host;
mod host_admission;
pub mod redis_store;
mod store;
#[cfg(test)]
mod tests;
mod watchdog;

pub use admission::Authenticated;
use admission::check_secret;
pub(crate) use admission::{guest_credential, host_credential_kind};
pub use drain::InputCall;
pub use error::RegistryError;
use guests::GuestIndex;
pub use guests::{GuestEntry, GuestHandle, JoinedGuest};
use host::HostConnection;
pub use host::{Host, Registration};
pub use host_admission::{
    HOST_TOKEN_METADATA, HostAdmission, HostTokenFile, HostTokenFileError, MAX_HOST_TOKEN_NAME_LEN,
    MAX_HOST_TOKENS, Owner,
};
pub use redis_store::{RedisStoreConfig, RedisStoreError, RedisTaskStore, RedisUrl};
pub use rendezvous_proto::ids::{MAX_LABEL_BYTES, MAX_LABELS};
pub use store::{MemoryTaskStore, Replica, TaskRecord, TaskStore};

/// Most sessions a resuming host may name in its Hello (64, as many as
/// `rendezvous-host` runs).
pub const MAX_RESUME_SESSIONS: usize = 64;

/// Largest output offset a resuming host may claim, in bytes (2^62, far
/// past any real stream), so that offsets never overflow; also the most
/// Input messages it may claim to have taken (`ResumeSession.input_applied`).
/// A session named past either is not restored: the host is asked to
/// close it.
pub const MAX_RESUME_OFFSET: u64 = 1 << 62;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The hosts connected to this server. A host is here only while the
/// task store has its name (added after the store, removed before it).
#[derive(Debug, Default)]
struct Inner {
    /// By task (owner and ID), then by name.
    tasks: HashMap<(Owner, TaskId), BTreeMap<HostName, Arc<Host>>>,
    hosts_by_id: HashMap<String, Arc<Host>>,
}

impl Inner {
    /// The task's hosts on this server.
    fn hosts(&self, owner: &Owner, id: &TaskId) -> Vec<Arc<Host>> {
        self.tasks
            .get(&(owner.clone(), id.clone()))
            .map(|hosts| hosts.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// The server's state. See the module docs.
#[derive(Debug)]
pub struct Registry {
    config: ServerConfig,
    /// Task lookup and ownership.
    store: Arc<dyn TaskStore>,
    inner: Mutex<Inner>,
    guests: Mutex<GuestIndex>,
    /// Digest compared against when the task is unknown, so that an unknown
    /// task costs the same time as a wrong secret.
    decoy: Digest,
    /// Counters of what passed through, and the gauges' home.
    metrics: Arc<Metrics>,
    /// Failed authentications per client IP and per task.
    failures: FailureLimits,
    /// When this registry was made: a resuming guest's host may come back
    /// within its grace period of this (see [`Registry::resuming_guest`]).
    started: std::time::Instant,
    /// Cancelled by [`Registry::drain`]: ends every guest's stream with
    /// UNAVAILABLE, so that it resumes, and refuses new calls.
    draining: tokio_util::sync::CancellationToken,
    /// Cancelled by [`Registry::drain_hosts`]: ends every host's control
    /// and Data streams with UNAVAILABLE, so that it resumes.
    hosts_draining: tokio_util::sync::CancellationToken,
    /// Set by [`Registry::stop_ready`]: `/readyz` says the server is
    /// stopping.
    stopping: std::sync::atomic::AtomicBool,
    /// Guest input calls between their drain check and their input being
    /// queued (see [`Registry::input_call`]).
    input_calls: Arc<std::sync::atomic::AtomicUsize>,
    /// The link to the other replicas, with a shared store and a cluster
    /// key ([`crate::cluster`]).
    cluster: Option<Arc<crate::cluster::ClusterLink>>,
}

impl Registry {
    /// An empty registry. Bounds over what one message can carry are taken
    /// at their largest: [`Limits::input_bytes`](crate::Limits::input_bytes)
    /// at [`MAX_INPUT_BYTES`], and the relay's output messages at
    /// [`MAX_DATA_BYTES`]. Tasks are kept in the configuration's
    /// [`task_store`](ServerConfig::task_store), else in a new
    /// [`MemoryTaskStore`].
    pub fn new(config: ServerConfig) -> Self {
        let store = config
            .task_store
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryTaskStore::new()));
        Self::with_store(config, store)
    }

    /// An empty registry whose tasks are looked up and claimed in `store`.
    pub fn with_store(mut config: ServerConfig, store: Arc<dyn TaskStore>) -> Self {
        config.limits.input_bytes = config.limits.input_bytes.min(MAX_INPUT_BYTES);
        config.relay.max_output_message_bytes =
            config.relay.max_output_message_bytes.min(MAX_DATA_BYTES);
        let failures = FailureLimits::new(config.failure_quotas);
        let metrics = Arc::new(Metrics::new().with_audit(&config.audit));
        let cluster = config
            .cluster_key
            .clone()
            .zip(store.this_replica())
            .map(|(key, this)| Arc::new(crate::cluster::ClusterLink::new(key, this)));
        Self {
            cluster,
            config,
            store,
            inner: Mutex::default(),
            guests: Mutex::default(),
            decoy: Digest::of(&new_token()),
            metrics,
            failures,
            started: std::time::Instant::now(),
            draining: tokio_util::sync::CancellationToken::new(),
            hosts_draining: tokio_util::sync::CancellationToken::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            input_calls: Arc::default(),
        }
    }

    /// The link to the other replicas, when this server is one of several
    /// sharing a store and a cluster key.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::ClusterLink>> {
        self.cluster.as_ref()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The server's audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.config.audit
    }

    /// What is connected now, for the metrics' gauges.
    pub fn connected(&self) -> Connected {
        let tasks = self.store.len();
        let hosts: Vec<Arc<Host>> = lock(&self.inner).hosts_by_id.values().cloned().collect();
        Connected {
            tasks,
            hosts: hosts.len(),
            sessions: hosts.iter().map(|h| lock(&h.sessions).len()).sum(),
            guests: lock(&self.guests).attached.len(),
            paused_sessions: hosts
                .iter()
                .map(|h| lock(&h.sessions).values().filter(|s| s.is_paused()).count())
                .sum(),
        }
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Registers a host from its Hello, admitted as `owner` (see
    /// [`HostAdmission::admit`]). The first host of `owner`'s task sets the
    /// task's secrets in the task store; later hosts must present the same
    /// secrets.
    ///
    /// # Errors
    /// `Invalid` (names, weak secrets, labels), `Denied` (other secrets),
    /// `HostNameTaken`, `Limit` (hosts, hosts per client IP `ip`, hosts per
    /// task, owners per task ID), `DirectoryUnavailable` (a shared task
    /// store cannot be reached).
    pub async fn register_host(
        &self,
        owner: Owner,
        ip: Option<IpAddr>,
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
        if hello.sessions.len() > MAX_RESUME_SESSIONS {
            return Err(RegistryError::Invalid(format!(
                "a resuming host may name at most {MAX_RESUME_SESSIONS} sessions"
            )));
        }
        let record = TaskRecord {
            secret: Digest::of(&hello.secret),
            read_only_secret: (!hello.read_only_secret.is_empty())
                .then(|| Digest::of(&hello.read_only_secret)),
        };
        let grace = self
            .config
            .grace_period(Duration::from_millis(hello.grace_period_ms));
        let key = &self.config.state_key;
        let ticket_ok = !hello.resume_ticket.is_empty()
            && key.verify_host_ticket(
                &owner,
                task_id.as_str(),
                name.as_str(),
                &hello.resume_host_id,
                &hello.resume_ticket,
            );
        if ticket_ok {
            let existing = lock(&self.inner)
                .tasks
                .get(&(owner.clone(), task_id.clone()))
                .and_then(|hosts| hosts.get(&name).cloned());
            if let Some(existing) = existing
                && existing.id == hello.resume_host_id
            {
                // The same secrets as the task's, or no resume; and the
                // name is this server's again in a shared store (the host
                // may have been on another replica meanwhile).
                self.store
                    .take_over_host(
                        &owner,
                        &task_id,
                        &name,
                        &existing.id,
                        &record,
                        self.config.limits.hosts_per_task,
                    )
                    .await?;
                return Ok(self.resume_host(&existing, hello));
            }
        }
        let host_token = new_token();
        let (control_tx, control_rx) = mpsc::channel(HOST_CONTROL_QUEUE_MESSAGES);
        // A valid ticket for a host this server does not have (it
        // restarted, or the host's grace ran out here): the host keeps its
        // ID, and its sessions are restored below.
        let id = if ticket_ok
            && !lock(&self.inner)
                .hosts_by_id
                .contains_key(&hello.resume_host_id)
        {
            hello.resume_host_id.clone()
        } else {
            uuid::Uuid::new_v4().simple().to_string()
        };
        let restoring = ticket_ok && id == hello.resume_host_id;
        let host = Arc::new(Host {
            id,
            owner: owner.clone(),
            ip,
            task_id: task_id.clone(),
            name: name.clone(),
            labels: hello.labels.clone(),
            connected_at: SystemTime::now(),
            grace,
            connection: Mutex::new(HostConnection {
                generation: 1,
                token: Digest::of(&host_token),
                control: control_tx,
                closed: CancellationToken::new(),
                connected: true,
            }),
            sessions: Mutex::default(),
            closed: CancellationToken::new(),
            audit: self.config.audit.clone(),
            state_key: self.config.state_key.clone(),
            draining: self.hosts_draining.clone(),
        });
        self.check_host_limits(ip)?;
        let max_hosts = self.config.limits.hosts_per_task;
        if restoring {
            // Its ticket proves it is the host that held the name, here
            // before a restart or on another replica: it takes it over.
            self.store
                .take_over_host(&owner, &task_id, &name, &host.id, &record, max_hosts)
                .await?;
        } else {
            self.store
                .add_host(&owner, &task_id, &name, &host.id, &record, max_hosts)
                .await?;
        }
        {
            let mut inner = lock(&self.inner);
            inner
                .tasks
                .entry((owner, task_id))
                .or_default()
                .insert(name, host.clone());
            inner.hosts_by_id.insert(host.id.clone(), host.clone());
        }
        // After the host is visible, so that the limits count the sessions
        // restored so far (the registry fuzzer found the other order).
        let restored = if restoring {
            self.restore_sessions(&host, &hello.sessions)
        } else {
            // None of them can be resumed here: the host ends them.
            for session in &hello.sessions {
                host::close_on_host(&host, &session.session_id);
            }
            false
        };
        Ok(Registration {
            resume_ticket: self.host_ticket(&host),
            resumed: restored,
            host,
            host_token,
            control: control_rx,
        })
    }

    fn host_ticket(&self, host: &Host) -> String {
        self.config.state_key.host_ticket(
            &host.owner,
            host.task_id.as_str(),
            host.name.as_str(),
            &host.id,
        )
    }

    /// Hands `host` a new control connection: its old one (lost, or not
    /// yet known to be) ends, its sessions carry on. Sessions the host no
    /// longer runs end; sessions it runs that this server no longer has
    /// are closed on the host.
    fn resume_host(&self, host: &Arc<Host>, hello: &rendezvous_proto::Hello) -> Registration {
        let host_token = new_token();
        let (control_tx, control_rx) = mpsc::channel(HOST_CONTROL_QUEUE_MESSAGES);
        {
            let mut connection = lock(&host.connection);
            connection.closed.cancel();
            *connection = HostConnection {
                generation: connection.generation + 1,
                token: Digest::of(&host_token),
                control: control_tx,
                closed: CancellationToken::new(),
                connected: true,
            };
        }
        let running: std::collections::HashSet<&str> = hello
            .sessions
            .iter()
            .map(|s| s.session_id.as_str())
            .collect();
        for session in host.sessions() {
            if running.contains(session.id()) {
                session.set_host_state(false, "the host is back");
            } else {
                host.end_session(&session, gone("the host no longer runs this session"));
            }
        }
        for session in &hello.sessions {
            if host.session(&session.session_id).is_none() {
                host::close_on_host(host, &session.session_id);
            }
        }
        Registration {
            resume_ticket: self.host_ticket(host),
            resumed: true,
            host: host.clone(),
            host_token,
            control: control_rx,
        }
    }

    /// Restores the sessions a host resumes with on a server that does not
    /// have them: each one with a valid ticket (and within the limits)
    /// starts again at the host's oldest kept byte; the host is asked to
    /// close the others. Returns whether any was restored.
    fn restore_sessions(
        &self,
        host: &Arc<Host>,
        sessions: &[rendezvous_proto::ResumeSession],
    ) -> bool {
        let mut restored = false;
        for resume in sessions {
            let valid = rendezvous_proto::ids::SessionId::new(&resume.session_id).is_ok()
                && self.config.state_key.verify_session_ticket(
                    &host.owner,
                    host.task_id.as_str(),
                    host.name.as_str(),
                    &resume.session_id,
                    &resume.ticket,
                )
                && resume.start_offset <= resume.end_offset
                && resume.end_offset <= MAX_RESUME_OFFSET
                && resume.input_applied <= MAX_RESUME_OFFSET;
            let within_limits = valid
                && self.check_session_limits().is_ok()
                && lock(&host.sessions).len() < self.config.limits.sessions_per_host;
            if !within_limits || host.session(&resume.session_id).is_some() {
                host::close_on_host(host, &resume.session_id);
                continue;
            }
            let session = Arc::new(Session::restored(self.config.relay, resume));
            lock(&host.sessions).insert(session.id().to_owned(), session.clone());
            watchdog::spawn(host, &session, self.config.timeouts);
            restored = true;
        }
        restored
    }

    /// The control connection `generation` of `host` has ended. A host
    /// with a grace period keeps its sessions, and guests are told it is
    /// reconnecting, until it resumes or the grace period is over; any
    /// other host is unregistered at once. Nothing happens if a newer
    /// connection has already replaced that one.
    pub fn control_ended(self: &Arc<Self>, host: &Arc<Host>, generation: u64) {
        if !host.disconnect(generation) {
            return;
        }
        if !host.may_resume() || host.closed.is_cancelled() {
            self.unregister_host(host);
            return;
        }
        let grace = host.grace_period();
        let message = format!(
            "the host lost its connection; waiting up to {} for it to come back",
            watchdog::human(grace)
        );
        tracing::info!(
            task = %host.task_id, host = %host.name, grace_ms = grace.as_millis() as u64,
            "host disconnected; keeping its sessions for it to resume"
        );
        for session in host.sessions() {
            session.set_host_state(true, &message);
        }
        let (registry, host) = (Arc::downgrade(self), Arc::downgrade(host));
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let (Some(registry), Some(host)) = (registry.upgrade(), host.upgrade())
                && host.lost_since(generation)
            {
                let message = format!(
                    "the host did not come back within its grace period of {}",
                    watchdog::human(grace)
                );
                tracing::info!(task = %host.task_id, host = %host.name, "{message}");
                registry.unregister_host_with(&host, &message);
            }
        });
    }

    /// The server-wide and per-IP host limits, before a host registers.
    fn check_host_limits(&self, ip: Option<IpAddr>) -> Result<(), RegistryError> {
        let limits = self.config.limits;
        let inner = lock(&self.inner);
        if inner.hosts_by_id.len() >= limits.hosts {
            return Err(RegistryError::Limit {
                name: limit_name::HOSTS,
                value: limits.hosts,
            });
        }
        if let Some(ip) = ip
            && inner
                .hosts_by_id
                .values()
                .filter(|h| h.ip == Some(ip))
                .count()
                >= limits.hosts_per_ip
        {
            return Err(RegistryError::Limit {
                name: limit_name::HOSTS_PER_IP,
                value: limits.hosts_per_ip,
            });
        }
        Ok(())
    }

    /// Removes a host and ends its sessions with "host disconnected". Safe
    /// to call more than once.
    pub fn unregister_host(&self, host: &Arc<Host>) {
        self.unregister_host_with(host, "the host disconnected");
    }

    /// Removes a host and ends its sessions with `message`. Safe to call
    /// more than once.
    pub fn unregister_host_with(&self, host: &Arc<Host>, message: &str) {
        let was_registered = {
            let mut inner = lock(&self.inner);
            inner.hosts_by_id.remove(&host.id);
            let mut removed = false;
            let key = (host.owner.clone(), host.task_id.clone());
            if let Some(hosts) = inner.tasks.get_mut(&key) {
                if hosts.get(&host.name).is_some_and(|h| Arc::ptr_eq(h, host)) {
                    hosts.remove(&host.name);
                    removed = true;
                }
                if hosts.is_empty() {
                    inner.tasks.remove(&key);
                }
            }
            removed
        };
        if was_registered {
            // Kept a while in the store, so guests can wait for a host to
            // return.
            self.store
                .remove_host(&host.owner, &host.task_id, &host.name, &host.id);
            tracing::info!(task = %host.task_id, host = %host.name, "host left");
            self.audit().record(
                &AuditEvent::new(AuditKind::HostLeft)
                    .task(&host.task_id)
                    .owner(&host.owner)
                    .host(&host.name)
                    .client_ip(host.ip),
            );
        }
        host.closed.cancel();
        lock(&host.connection).closed.cancel();
        for session in host.sessions() {
            host.end_session(&session, gone(message));
        }
    }

    /// Ends every session ("the server is shutting down") and disconnects
    /// every host: a stop without a drain (the server's future dropped).
    pub fn shutdown(&self) {
        let hosts: Vec<Arc<Host>> = lock(&self.inner).hosts_by_id.values().cloned().collect();
        for host in hosts {
            for session in host.sessions() {
                host.end_session(&session, gone("the server is shutting down"));
            }
            self.unregister_host(&host);
        }
    }
}

/// An exit status for a session that ended without its process's status.
pub fn gone(message: &str) -> ExitStatus {
    ExitStatus {
        status: None,
        message: message.to_owned(),
    }
}
