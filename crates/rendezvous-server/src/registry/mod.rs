//! The registry: task → hosts → sessions, plus the index of attached guests
//! for the unary input, resize and ack calls. Held in memory. Every lock
//! here is a short synchronous section: none is held across an `.await`.
//!
//! Names arrive validated ([`TaskId`]): a malformed one is refused at the
//! edge with `INVALID_ARGUMENT`, before any credential is looked at. The
//! registry counts nothing: the services count refusals where they map
//! them to gRPC statuses.
//!
//! # Files
//! - this file: tasks, their hosts, and forgetting hostless tasks;
//! - `host`: the host record and the sessions it runs;
//! - `guests`: the guest index for the unary calls, and its drop guard;
//! - `ended_guests`: guests whose session ended, remembered a while so
//!   that their late calls are told so;
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use rendezvous_proto::ExitStatus;
use rendezvous_proto::ids::{HostName, TaskId, check_labels};
use rendezvous_proto::message_size::MAX_DATA_BYTES;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::{Digest, new_token};
use crate::config::{
    HOST_CONTROL_QUEUE_MESSAGES, HOSTLESS_TASK_GRACE, MAX_HOSTLESS_TASKS, MAX_INPUT_BYTES,
    ServerConfig, limit_name,
};
use crate::metrics::{Connected, Metrics};

mod admission;
mod ended_guests;
mod error;
mod guests;
mod host;
#[cfg(test)]
mod tests;

pub use admission::Authenticated;
use admission::check_secret;
pub use error::RegistryError;
use guests::GuestIndex;
pub use guests::{GuestEntry, GuestHandle, JoinedGuest};
pub use host::{Host, Registration};
pub use rendezvous_proto::ids::{MAX_LABEL_BYTES, MAX_LABELS};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct Task {
    secret: Digest,
    read_only_secret: Option<Digest>,
    hosts: BTreeMap<HostName, Arc<Host>>,
    /// When its last host left; `None` while it has one.
    emptied_at: Option<Instant>,
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
}

/// An exit status for a session that ended without its process's status.
pub fn gone(message: &str) -> ExitStatus {
    ExitStatus {
        status: None,
        message: message.to_owned(),
    }
}
