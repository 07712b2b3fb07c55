//! Task lookup and ownership behind [`TaskStore`], so that a shared store
//! (Redis, for replicas) can stand where [`MemoryTaskStore`] stands today.
//!
//! A store knows, per task: its [`TaskRecord`] (the secrets' digests) and
//! the names of its hosts. It does not hold the hosts themselves, their
//! sessions or any output: those stay with the server the host is connected
//! to. The registry asks the store first and keeps its local maps second, so
//! a host is in the registry's maps only while the store has its name.
//!
//! A task whose last host left is kept for [`HOSTLESS_TASK_GRACE`], at most
//! [`MAX_HOSTLESS_TASKS`] of them, so that its guests can wait for a host to
//! come back (a CI job's next step, a restarted agent).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use rendezvous_proto::ids::{HostName, TaskId};

use super::{RegistryError, lock};
use crate::auth::Digest;
use crate::config::{HOSTLESS_TASK_GRACE, MAX_HOSTLESS_TASKS, limit_name};

/// What a store keeps about a task, apart from its hosts' names: what a
/// guest's credential is checked against.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// Digest of the read-write secret.
    pub secret: Digest,
    /// Digest of the read-only secret, if the task has one.
    pub read_only_secret: Option<Digest>,
}

/// Where tasks are looked up and claimed. Every method is one atomic step
/// of the store's own (a mutex here; a script or transaction in a shared
/// store), so two servers or two calls never both claim one host name.
#[async_trait::async_trait]
pub trait TaskStore: Send + Sync + fmt::Debug {
    /// Adds host `name` to task `id`. A task the store does not hold is
    /// created with `record`. A hostless task whose record differs (a
    /// restarted job that generated new secrets) is taken over by `record`.
    ///
    /// # Errors
    /// - [`RegistryError::Denied`]: the task has hosts and another record;
    /// - [`RegistryError::HostNameTaken`]: the task already has a host of
    ///   that name;
    /// - [`RegistryError::Limit`] (`hosts-per-task`): the task has
    ///   `max_hosts` hosts.
    async fn add_host(
        &self,
        id: &TaskId,
        name: &HostName,
        record: &TaskRecord,
        max_hosts: usize,
    ) -> Result<(), RegistryError>;

    /// Takes host `name` out of task `id`; the task becomes hostless when it
    /// was the last. Never blocks: a store that needs I/O does it in the
    /// background. Removing a name the task does not have does nothing.
    fn remove_host(&self, id: &TaskId, name: &HostName);

    /// The task's record, if it has a host or lost its last one within
    /// [`HOSTLESS_TASK_GRACE`].
    async fn task(&self, id: &TaskId) -> Option<TaskRecord>;

    /// How many tasks the store holds, hostless ones included, for the
    /// `rendezvous_tasks` gauge. A shared store may answer from a cache.
    fn len(&self) -> usize;

    /// Whether the store holds no task.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
struct StoredTask {
    record: TaskRecord,
    hosts: BTreeSet<HostName>,
    /// When its last host left; `None` while it has one.
    emptied_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Tasks {
    tasks: HashMap<TaskId, StoredTask>,
    /// Tasks whose last host left, in that order, with when it left.
    hostless: VecDeque<(TaskId, Instant)>,
}

impl Tasks {
    /// Forgets hostless tasks past their grace period or over the bound.
    fn prune(&mut self, now: Instant) {
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
}

/// The in-memory [`TaskStore`]: one server's tasks, lost when it stops.
#[derive(Debug, Default)]
pub struct MemoryTaskStore {
    inner: Mutex<Tasks>,
}

impl MemoryTaskStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the pruning as if it were `now`.
    #[cfg(test)]
    pub(super) fn prune_at(&self, now: Instant) -> usize {
        let mut tasks = lock(&self.inner);
        tasks.prune(now);
        tasks.hostless.len()
    }
}

#[async_trait::async_trait]
impl TaskStore for MemoryTaskStore {
    async fn add_host(
        &self,
        id: &TaskId,
        name: &HostName,
        record: &TaskRecord,
        max_hosts: usize,
    ) -> Result<(), RegistryError> {
        let mut tasks = lock(&self.inner);
        tasks.prune(Instant::now());
        let task = tasks.tasks.entry(id.clone()).or_insert_with(|| StoredTask {
            record: record.clone(),
            hosts: BTreeSet::new(),
            emptied_at: None,
        });
        if !task.record.same_as(record) {
            if !task.hosts.is_empty() {
                return Err(RegistryError::Denied);
            }
            task.record = record.clone();
        }
        if task.hosts.contains(name) {
            return Err(RegistryError::HostNameTaken(name.to_string()));
        }
        if task.hosts.len() >= max_hosts {
            return Err(RegistryError::Limit {
                name: limit_name::HOSTS_PER_TASK,
                value: max_hosts,
            });
        }
        task.hosts.insert(name.clone());
        task.emptied_at = None;
        Ok(())
    }

    fn remove_host(&self, id: &TaskId, name: &HostName) {
        let mut tasks = lock(&self.inner);
        let Some(task) = tasks.tasks.get_mut(id) else {
            return;
        };
        if task.hosts.remove(name) && task.hosts.is_empty() {
            let now = Instant::now();
            task.emptied_at = Some(now);
            tasks.hostless.push_back((id.clone(), now));
            tasks.prune(now);
        }
    }

    async fn task(&self, id: &TaskId) -> Option<TaskRecord> {
        let mut tasks = lock(&self.inner);
        tasks.prune(Instant::now());
        tasks.tasks.get(id).map(|t| t.record.clone())
    }

    fn len(&self) -> usize {
        lock(&self.inner).tasks.len()
    }
}

impl TaskRecord {
    /// Whether both records hold the same digests, in constant time for
    /// each digest.
    fn same_as(&self, other: &TaskRecord) -> bool {
        let read_only = match (&self.read_only_secret, &other.read_only_secret) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_as(b),
            _ => false,
        };
        // Both compared, whatever the first says.
        self.secret.same_as(&other.secret) & read_only
    }
}
