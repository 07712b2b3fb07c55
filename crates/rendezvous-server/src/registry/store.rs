//! Task lookup and ownership behind [`TaskStore`], so that a shared store
//! (Redis, for replicas) can stand where [`MemoryTaskStore`] stands today.
//!
//! A task is named by its owner (the identity its first host was admitted
//! as, see [`Owner`]) and its ID: two owners may each have a task
//! `build-42`, and neither reaches the other's. A store knows, per task:
//! its [`TaskRecord`] (the secrets' digests) and the names of its hosts,
//! each with the ID of the host that holds it. It does not hold the hosts
//! themselves, their sessions or any output: those stay with the server the
//! host is connected to. The registry asks the store first and keeps its
//! local maps second, so a host is in the registry's maps only while the
//! store has its name.
//!
//! Two stores: [`MemoryTaskStore`], one server's; and
//! [`RedisTaskStore`](super::RedisTaskStore), shared by replicas, where a
//! name is a lease that its replica renews and a host that resumes on
//! another replica takes over ([`TaskStore::take_over_host`]).
//!
//! A task whose last host left is kept for [`HOSTLESS_TASK_GRACE`], at most
//! [`MAX_HOSTLESS_TASKS`] of them, so that its guests can wait for a host to
//! come back (a CI job's next step, a restarted agent).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use rendezvous_proto::ids::{HostName, TaskId};

use super::{Owner, RegistryError, lock};
use crate::auth::Digest;
use crate::config::{HOSTLESS_TASK_GRACE, MAX_HOSTLESS_TASKS, MAX_OWNERS_PER_TASK_ID, limit_name};

/// What a store keeps about a task, apart from its hosts' names: what a
/// guest's credential is checked against.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// Digest of the read-write secret.
    pub secret: Digest,
    /// Digest of the read-only secret, if the task has one.
    pub read_only_secret: Option<Digest>,
}

/// A server that shares a store with others, as the store names it: who
/// holds a host's name (see [`TaskStore::owner_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// The replica's ID, random per process start.
    pub id: String,
    /// Where the other replicas reach it (`serve --advertise-url`).
    pub advertise_url: String,
}

/// Where tasks are looked up and claimed. Every method is one atomic step
/// of the store's own (a mutex here; a script in a shared store), so two
/// servers or two calls never both claim one host name.
///
/// A shared store can fail where the memory store cannot: its methods
/// that return a `Result` then fail with [`RegistryError::DirectoryUnavailable`].
#[async_trait::async_trait]
pub trait TaskStore: Send + Sync + fmt::Debug {
    /// Adds host `name`, the host of ID `host_id`, to `owner`'s task `id`.
    /// A task the store does not hold is created with `record`. A hostless
    /// task whose record differs (the same owner's restarted job, with new
    /// secrets) is taken over by `record`.
    ///
    /// # Errors
    /// - [`RegistryError::Denied`]: the task has hosts and another record;
    /// - [`RegistryError::HostNameTaken`]: the task already has a host of
    ///   that name;
    /// - [`RegistryError::Limit`]: the task has `max_hosts` hosts
    ///   (`hosts per task`), or [`MAX_OWNERS_PER_TASK_ID`] other owners have
    ///   a task of this ID (`owners per task ID`);
    /// - [`RegistryError::DirectoryUnavailable`]: a shared store cannot be
    ///   reached.
    async fn add_host(
        &self,
        owner: &Owner,
        id: &TaskId,
        name: &HostName,
        host_id: &str,
        record: &TaskRecord,
        max_hosts: usize,
    ) -> Result<(), RegistryError>;

    /// As [`add_host`](Self::add_host), for a host that resumes with a
    /// verified resume ticket for `host_id`: when `name` is held by that
    /// same host ID (this server's, or another replica's that the host
    /// left), this server takes it over instead of refusing it.
    ///
    /// # Errors
    /// As [`add_host`](Self::add_host); `HostNameTaken` when another host
    /// ID holds the name.
    async fn take_over_host(
        &self,
        owner: &Owner,
        id: &TaskId,
        name: &HostName,
        host_id: &str,
        record: &TaskRecord,
        max_hosts: usize,
    ) -> Result<(), RegistryError>;

    /// Takes host `name` out of `owner`'s task `id` if the host of ID
    /// `host_id` holds it here (not if another server took it over); the
    /// task becomes hostless when it was the last. Never blocks: a store
    /// that needs I/O does it in the background. Removing a name the task
    /// does not have does nothing.
    fn remove_host(&self, owner: &Owner, id: &TaskId, name: &HostName, host_id: &str);

    /// `owner`'s task `id`, if it has a host or lost its last one within
    /// [`HOSTLESS_TASK_GRACE`].
    ///
    /// # Errors
    /// [`RegistryError::DirectoryUnavailable`] from a shared store.
    async fn task(&self, owner: &Owner, id: &TaskId) -> Result<Option<TaskRecord>, RegistryError>;

    /// Every owner's task of ID `id` (at most [`MAX_OWNERS_PER_TASK_ID`]),
    /// for a guest that presents a secret: the secret tells which one it
    /// is.
    ///
    /// # Errors
    /// [`RegistryError::DirectoryUnavailable`] from a shared store.
    async fn tasks_with_id(&self, id: &TaskId) -> Result<Vec<(Owner, TaskRecord)>, RegistryError>;

    /// The server that holds host `name` of `owner`'s task `id`, for a
    /// guest that reached a server without it (the relay between
    /// replicas). `None`: no server holds it, or the store is not shared
    /// (the memory store's answer: its hosts are all in the registry).
    ///
    /// # Errors
    /// [`RegistryError::DirectoryUnavailable`] from a shared store.
    async fn owner_of(
        &self,
        _owner: &Owner,
        _id: &TaskId,
        _name: &HostName,
    ) -> Result<Option<Replica>, RegistryError> {
        Ok(None)
    }

    /// The task's host names that a server holds now, and which server:
    /// for a guest's `ListSessions` on a replica that holds only some of
    /// them. Empty for the memory store (its hosts are all in the
    /// registry).
    ///
    /// # Errors
    /// [`RegistryError::DirectoryUnavailable`] from a shared store.
    async fn hosts_of(
        &self,
        _owner: &Owner,
        _id: &TaskId,
    ) -> Result<Vec<(String, Replica)>, RegistryError> {
        Ok(Vec::new())
    }

    /// The servers that hold a host named `name` of a task `id`, under any
    /// owner, each once: for a guest's unary call on a replica that does
    /// not relay its stream (the call names only the task and host; the
    /// replica it is relayed to checks the guest itself). Empty for the
    /// memory store.
    ///
    /// # Errors
    /// [`RegistryError::DirectoryUnavailable`] from a shared store.
    async fn holders_of(
        &self,
        _id: &TaskId,
        _name: &HostName,
    ) -> Result<Vec<Replica>, RegistryError> {
        Ok(Vec::new())
    }

    /// This server, as a shared store names it in its leases; `None` for
    /// the memory store.
    fn this_replica(&self) -> Option<Replica> {
        None
    }

    /// Whether the store answers: false while a shared store cannot reach
    /// its server, so that `/readyz` says 503 ([`Registry::is_ready`](super::Registry::is_ready)).
    /// Always true for the memory store.
    fn is_healthy(&self) -> bool {
        true
    }

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
    owner: Owner,
    record: TaskRecord,
    /// Host names, each with the ID of the host that holds it.
    hosts: BTreeMap<HostName, String>,
    /// When its last host left; `None` while it has one.
    emptied_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Tasks {
    /// By ID, then one per owner (at most [`MAX_OWNERS_PER_TASK_ID`]).
    tasks: HashMap<TaskId, Vec<StoredTask>>,
    /// How many tasks `tasks` holds.
    count: usize,
    /// Tasks whose last host left, in that order, with when it left.
    hostless: VecDeque<(Owner, TaskId, Instant)>,
}

impl Tasks {
    /// Forgets hostless tasks past their grace period or over the bound.
    fn prune(&mut self, now: Instant) {
        while let Some((owner, id, left_at)) = self.hostless.front() {
            let expired = now.duration_since(*left_at) >= HOSTLESS_TASK_GRACE;
            if !expired && self.hostless.len() <= MAX_HOSTLESS_TASKS {
                break;
            }
            // The entry is stale if a host came back (and maybe left again).
            if let Some(tasks) = self.tasks.get_mut(id) {
                let before = tasks.len();
                tasks.retain(|t| !(t.owner == *owner && t.emptied_at == Some(*left_at)));
                self.count -= before - tasks.len();
                if tasks.is_empty() {
                    self.tasks.remove(id);
                }
            }
            self.hostless.pop_front();
        }
    }

    fn get(&self, owner: &Owner, id: &TaskId) -> Option<&StoredTask> {
        self.tasks.get(id)?.iter().find(|t| t.owner == *owner)
    }

    fn get_mut(&mut self, owner: &Owner, id: &TaskId) -> Option<&mut StoredTask> {
        self.tasks
            .get_mut(id)?
            .iter_mut()
            .find(|t| t.owner == *owner)
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

impl MemoryTaskStore {
    /// [`TaskStore::add_host`], or with `take_over`
    /// [`TaskStore::take_over_host`].
    #[allow(clippy::too_many_arguments)]
    fn claim(
        &self,
        owner: &Owner,
        id: &TaskId,
        name: &HostName,
        host_id: &str,
        record: &TaskRecord,
        max_hosts: usize,
        take_over: bool,
    ) -> Result<(), RegistryError> {
        let mut tasks = lock(&self.inner);
        tasks.prune(Instant::now());
        if tasks.get(owner, id).is_none() {
            let of_id = tasks.tasks.entry(id.clone()).or_default();
            if of_id.len() >= MAX_OWNERS_PER_TASK_ID {
                return Err(RegistryError::Limit {
                    name: limit_name::OWNERS_PER_TASK_ID,
                    value: MAX_OWNERS_PER_TASK_ID,
                });
            }
            of_id.push(StoredTask {
                owner: owner.clone(),
                record: record.clone(),
                hosts: BTreeMap::new(),
                emptied_at: None,
            });
            tasks.count += 1;
        }
        let Some(task) = tasks.get_mut(owner, id) else {
            unreachable!("the task was just found or added");
        };
        if !task.record.same_as(record) {
            if !task.hosts.is_empty() {
                return Err(RegistryError::Denied);
            }
            task.record = record.clone();
        }
        match task.hosts.get(name) {
            Some(held) if take_over && held == host_id => {}
            Some(_) => return Err(RegistryError::HostNameTaken(name.to_string())),
            None if task.hosts.len() >= max_hosts => {
                return Err(RegistryError::Limit {
                    name: limit_name::HOSTS_PER_TASK,
                    value: max_hosts,
                });
            }
            None => {}
        }
        task.hosts.insert(name.clone(), host_id.to_owned());
        task.emptied_at = None;
        Ok(())
    }
}

#[async_trait::async_trait]
impl TaskStore for MemoryTaskStore {
    async fn add_host(
        &self,
        owner: &Owner,
        id: &TaskId,
        name: &HostName,
        host_id: &str,
        record: &TaskRecord,
        max_hosts: usize,
    ) -> Result<(), RegistryError> {
        self.claim(owner, id, name, host_id, record, max_hosts, false)
    }

    async fn take_over_host(
        &self,
        owner: &Owner,
        id: &TaskId,
        name: &HostName,
        host_id: &str,
        record: &TaskRecord,
        max_hosts: usize,
    ) -> Result<(), RegistryError> {
        self.claim(owner, id, name, host_id, record, max_hosts, true)
    }

    fn remove_host(&self, owner: &Owner, id: &TaskId, name: &HostName, host_id: &str) {
        let mut tasks = lock(&self.inner);
        let Some(task) = tasks.get_mut(owner, id) else {
            return;
        };
        if task.hosts.get(name).is_none_or(|held| held != host_id) {
            return;
        }
        task.hosts.remove(name);
        if task.hosts.is_empty() {
            let now = Instant::now();
            task.emptied_at = Some(now);
            tasks.hostless.push_back((owner.clone(), id.clone(), now));
            tasks.prune(now);
        }
    }

    async fn task(&self, owner: &Owner, id: &TaskId) -> Result<Option<TaskRecord>, RegistryError> {
        let mut tasks = lock(&self.inner);
        tasks.prune(Instant::now());
        Ok(tasks.get(owner, id).map(|t| t.record.clone()))
    }

    async fn tasks_with_id(&self, id: &TaskId) -> Result<Vec<(Owner, TaskRecord)>, RegistryError> {
        let mut tasks = lock(&self.inner);
        tasks.prune(Instant::now());
        Ok(tasks
            .tasks
            .get(id)
            .map(|of_id| {
                of_id
                    .iter()
                    .map(|t| (t.owner.clone(), t.record.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn len(&self) -> usize {
        lock(&self.inner).count
    }
}

impl TaskRecord {
    /// Whether both records hold the same digests, in constant time for
    /// each digest.
    pub(crate) fn same_as(&self, other: &TaskRecord) -> bool {
        let read_only = match (&self.read_only_secret, &other.read_only_secret) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_as(b),
            _ => false,
        };
        // Both compared, whatever the first says.
        self.secret.same_as(&other.secret) & read_only
    }
}
