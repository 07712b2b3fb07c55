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
use std::time::SystemTime;

use rendezvous_proto::ExitStatus;
use rendezvous_proto::ids::{HostName, TaskId, check_labels};
use rendezvous_proto::message_size::MAX_DATA_BYTES;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
use crate::auth::{Digest, new_token};
use crate::auth_limit::FailureLimits;
use crate::config::{HOST_CONTROL_QUEUE_MESSAGES, MAX_INPUT_BYTES, ServerConfig, limit_name};
use crate::metrics::{Connected, Metrics};

mod admission;
mod ended_guests;
mod error;
mod guests;
mod host;
mod host_admission;
mod store;
#[cfg(test)]
mod tests;
mod watchdog;

pub use admission::Authenticated;
use admission::check_secret;
pub(crate) use admission::{guest_credential, host_credential_kind};
pub use error::RegistryError;
use guests::GuestIndex;
pub use guests::{GuestEntry, GuestHandle, JoinedGuest};
pub use host::{Host, Registration};
pub use host_admission::{
    HOST_TOKEN_METADATA, HostAdmission, HostTokenFile, HostTokenFileError, MAX_HOST_TOKEN_NAME_LEN,
    MAX_HOST_TOKENS, Owner,
};
pub use rendezvous_proto::ids::{MAX_LABEL_BYTES, MAX_LABELS};
pub use store::{MemoryTaskStore, TaskRecord, TaskStore};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
}

impl Registry {
    /// An empty registry. Bounds over what one message can carry are taken
    /// at their largest: [`Limits::input_bytes`](crate::Limits::input_bytes)
    /// at [`MAX_INPUT_BYTES`], and the relay's output messages at
    /// [`MAX_DATA_BYTES`]. Tasks are kept in a [`MemoryTaskStore`].
    pub fn new(config: ServerConfig) -> Self {
        Self::with_store(config, Arc::new(MemoryTaskStore::new()))
    }

    /// An empty registry whose tasks are looked up and claimed in `store`.
    pub fn with_store(mut config: ServerConfig, store: Arc<dyn TaskStore>) -> Self {
        config.limits.input_bytes = config.limits.input_bytes.min(MAX_INPUT_BYTES);
        config.relay.max_output_message_bytes =
            config.relay.max_output_message_bytes.min(MAX_DATA_BYTES);
        let failures = FailureLimits::new(config.failure_quotas);
        let metrics = Arc::new(Metrics::new().with_audit(&config.audit));
        Self {
            config,
            store,
            inner: Mutex::default(),
            guests: Mutex::default(),
            decoy: Digest::of(&new_token()),
            metrics,
            failures,
        }
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
    /// task, owners per task ID).
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
        let host_token = new_token();
        let (control_tx, control_rx) = mpsc::channel(HOST_CONTROL_QUEUE_MESSAGES);
        let host = Arc::new(Host {
            id: uuid::Uuid::new_v4().simple().to_string(),
            owner: owner.clone(),
            ip,
            task_id: task_id.clone(),
            name: name.clone(),
            token: Digest::of(&host_token),
            labels: hello.labels.clone(),
            connected_at: SystemTime::now(),
            control: control_tx,
            sessions: Mutex::default(),
            closed: CancellationToken::new(),
            audit: self.config.audit.clone(),
        });
        self.check_host_limits(ip)?;
        let record = TaskRecord {
            secret: Digest::of(&hello.secret),
            read_only_secret: (!hello.read_only_secret.is_empty())
                .then(|| Digest::of(&hello.read_only_secret)),
        };
        self.store
            .add_host(
                &owner,
                &task_id,
                &name,
                &record,
                self.config.limits.hosts_per_task,
            )
            .await?;
        let mut inner = lock(&self.inner);
        inner
            .tasks
            .entry((owner, task_id))
            .or_default()
            .insert(name, host.clone());
        inner.hosts_by_id.insert(host.id.clone(), host.clone());
        Ok(Registration {
            host,
            host_token,
            control: control_rx,
        })
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
                .remove_host(&host.owner, &host.task_id, &host.name);
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
}

/// An exit status for a session that ended without its process's status.
pub fn gone(message: &str) -> ExitStatus {
    ExitStatus {
        status: None,
        message: message.to_owned(),
    }
}
