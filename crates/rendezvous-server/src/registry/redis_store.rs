//! The task store shared by replicas, in Redis (`serve --redis-url`): the
//! directory of which replica holds each task's host names, and what any
//! replica needs to admit a host or a guest (the secrets' digests, the
//! owner). Never output, never a secret.
//!
//! # Data in Redis
//! Under a prefix ([`DEFAULT_PREFIX`]), three keys (the scripts in
//! `redis_store/*.lua` say the details, `prelude.lua` the shape):
//! - `{prefix}task:{task ID}`: a hash, one field per owner (the owner as
//!   printed), each a JSON task: its digests (hex), and its hosts as name →
//!   host ID, replica ID, the replica's advertise URL and the lease's end.
//!   The task ID is the key's only variable part and comes last, so an ID
//!   with `:` cannot name another key; owners are hash fields, not parts
//!   of a key. The key expires with its last task.
//! - `{prefix}tasks`: a sorted set of every task, scored by when it is
//!   forgotten; [`TaskStore::len`] counts it.
//! - `{prefix}hostless`: a sorted set of the tasks whose last host left, by
//!   when they are forgotten ([`HOSTLESS_TASK_GRACE`] later). Past
//!   [`MAX_HOSTLESS_TASKS`] the oldest are forgotten at once, as the memory
//!   store does. A task whose hosts' leases ran out (its replica died) is
//!   not in this set: it is forgotten [`HOSTLESS_TASK_GRACE`] after its last
//!   lease ended, and there are at most as many of those as the dead
//!   replicas had hosts.
//!
//! Every [`TaskStore`] method is one Lua script (one atomic step in Redis),
//! on Redis's own clock. One Redis server (or a primary with replicas),
//! not Redis Cluster: the scripts' keys do not share a hash slot.
//!
//! # Leases
//! A host's name is a lease of [`RedisStoreConfig::lease`] ([`DEFAULT_LEASE`]);
//! this replica renews the leases of all its hosts every third of it, in
//! one round trip per [`RENEW_BATCH`] hosts. A lease that ran out counts
//! as absent, so a dead replica's host names are free again at most one
//! lease after its last renewal. A host that resumes elsewhere takes its
//! name over with its verified resume ticket ([`TaskStore::take_over_host`]);
//! the replica it left then finds its renewal refused and stops renewing.
//!
//! # Failures
//! Each call waits at most [`CALL_TIMEOUT`] (reconnecting included), then
//! fails with [`RegistryError::DirectoryUnavailable`]. A failed call or
//! health check ([`HEALTH_INTERVAL`]) makes [`TaskStore::is_healthy`]
//! false, so `/readyz` says 503, until a check succeeds again.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use rendezvous_proto::ids::{HostName, TaskId};
use tokio::sync::{mpsc, watch};
use tokio_util::task::AbortOnDropHandle;

use super::store::Replica;
use super::{Owner, RegistryError, TaskRecord, TaskStore, lock};
#[cfg(doc)]
use crate::config::{HOSTLESS_TASK_GRACE, MAX_HOSTLESS_TASKS};
use crate::config::{MAX_OWNERS_PER_TASK_ID, limit_name};

mod backend;
#[cfg(test)]
mod tests;
mod url;

use backend::{Core, Held, Mode, Release, SCRIPTS, malformed, run};

pub use url::RedisUrl;

/// Default lease of a host's name, in ms (15 s): a dead replica's hosts
/// may register elsewhere at most this long after its last renewal; kept
/// well above a renewal's round trip and a Redis failover's pause.
pub const DEFAULT_LEASE: Duration = Duration::from_millis(15_000);

/// Shortest lease, in ms (3 s): renewals, a third of it apart, stay a
/// second apart at least, above [`CALL_TIMEOUT`]'s half.
pub const MIN_LEASE: Duration = Duration::from_millis(3_000);

/// How often the store checks that Redis answers, in ms (1 s), and so how
/// soon `/readyz` follows Redis going away and coming back.
pub const HEALTH_INTERVAL: Duration = Duration::from_millis(1_000);

/// Longest wait for a TCP (and TLS) connection to Redis, in ms (1 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Longest wait for Redis's answer to one command, in ms (1 s).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Longest a store call waits in all, reconnecting included, in ms (2 s),
/// before it fails with [`RegistryError::DirectoryUnavailable`].
pub const CALL_TIMEOUT: Duration = Duration::from_millis(2_000);

/// Removals waiting for the background task (1024 messages). When full, a
/// removal is dropped and its lease frees the name instead.
pub const RELEASE_QUEUE: usize = 1024;

/// Leases renewed per round trip (256 scripts in one pipeline).
pub const RENEW_BATCH: usize = 256;

/// Default prefix of every key (`rendezvous:`).
pub const DEFAULT_PREFIX: &str = "rendezvous:";

/// Reconnection attempts per lost connection, 100 ms to 1 s apart; then
/// the next call tries again.
const RECONNECT_RETRIES: usize = 2;

/// What a [`RedisTaskStore`] connects to and how it names itself.
#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    /// The Redis server (`redis://` or `rediss://`).
    pub url: RedisUrl,
    /// This replica, as its leases name it.
    pub replica: Replica,
    /// How long a host's name is held after its last renewal, in ms (at
    /// least [`MIN_LEASE`]).
    pub lease: Duration,
    /// Prefix of every key, so that deployments may share a Redis.
    pub prefix: String,
}

impl RedisStoreConfig {
    /// A replica with a new random ID reached at `advertise_url`, with the
    /// default lease and prefix.
    pub fn new(url: RedisUrl, advertise_url: &str) -> Self {
        Self {
            url,
            replica: Replica {
                id: uuid::Uuid::new_v4().simple().to_string(),
                advertise_url: advertise_url.to_owned(),
            },
            lease: DEFAULT_LEASE,
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// Why a [`RedisTaskStore`] could not start. The texts never hold the
/// URL's password.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// The lease is below [`MIN_LEASE`].
    #[error("the lease of {0:?} is shorter than the shortest, {MIN_LEASE:?}")]
    LeaseTooShort(Duration),
    /// Redis did not answer within [`CALL_TIMEOUT`], or refused.
    #[error("cannot reach Redis at {at}: {reason}")]
    Unreachable {
        /// The server, without credentials.
        at: String,
        /// What failed.
        reason: String,
    },
}

/// The [`TaskStore`] in Redis, shared by replicas: see the module docs.
/// Its background task (renewals, removals, health checks) ends when it
/// drops.
pub struct RedisTaskStore {
    core: Arc<Core>,
    releases: mpsc::Sender<Release>,
    _background: AbortOnDropHandle<()>,
}

impl std::fmt::Debug for RedisTaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTaskStore")
            .field("replica", &self.core.replica)
            .field("lease", &self.core.lease)
            .field("prefix", &self.core.prefix)
            .field("healthy", &self.core.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisTaskStore {
    /// Connects to Redis (within [`CALL_TIMEOUT`]), checks that it runs the
    /// scripts, and starts the background task. Must be called inside a
    /// Tokio runtime.
    ///
    /// # Errors
    /// [`RedisStoreError::LeaseTooShort`], or [`RedisStoreError::Unreachable`]
    /// when Redis does not answer (or refuses the credentials).
    pub async fn connect(config: RedisStoreConfig) -> Result<Self, RedisStoreError> {
        if config.lease < MIN_LEASE {
            return Err(RedisStoreError::LeaseTooShort(config.lease));
        }
        let unreachable = |reason: String| RedisStoreError::Unreachable {
            at: config.url.to_string(),
            reason,
        };
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(1));
        let client = config
            .url
            .client()
            .map_err(|e| unreachable(e.to_string()))?;
        let con = tokio::time::timeout(
            CALL_TIMEOUT,
            ConnectionManager::new_with_config(client, manager),
        )
        .await
        .map_err(|_| unreachable("no answer in time".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let core = Arc::new(Core {
            con,
            prefix: config.prefix,
            replica: config.replica,
            lease: config.lease,
            healthy: AtomicBool::new(true),
            tasks: AtomicUsize::new(0),
            held: Mutex::default(),
            releases_sent: AtomicU64::new(0),
            releases_done: watch::Sender::new(0),
        });
        core.check_health()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (releases, queue) = mpsc::channel(RELEASE_QUEUE);
        let background = AbortOnDropHandle::new(tokio::spawn(run(core.clone(), queue)));
        Ok(Self {
            core,
            releases,
            _background: background,
        })
    }

    /// This replica, as its leases name it.
    pub fn replica(&self) -> &Replica {
        &self.core.replica
    }

    /// Queues a removal for the background task; never waits.
    fn send_release(&self, release: Release) {
        self.core.releases_sent.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.releases.try_send(release) {
            // Counted as handled: the lease frees the name instead.
            self.core.releases_done.send_modify(|done| *done += 1);
            let release = e.into_inner();
            tracing::warn!(
                task = %release.id, host = %release.name,
                "the shared directory's removal queue is full: the host's name is freed when its lease ends"
            );
        }
    }

    /// [`TaskStore::add_host`] and [`TaskStore::take_over_host`].
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &self,
        mode: Mode,
        owner: &Owner,
        id: &TaskId,
        name: &HostName,
        host_id: &str,
        record: &TaskRecord,
        max_hosts: usize,
    ) -> Result<(), RegistryError> {
        // Names freed here before this call are free for it.
        let target = self.core.releases_sent.load(Ordering::Acquire);
        let mut done = self.core.releases_done.subscribe();
        let _ = tokio::time::timeout(CALL_TIMEOUT, done.wait_for(|d| *d >= target)).await;
        let key = (owner.clone(), id.clone(), name.clone());
        let outcome = self
            .core
            .claim(mode, owner, id, name, host_id, record, max_hosts)
            .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                // The claim may have happened without its answer: free it
                // unless the name was already this host's here.
                let ours = lock(&self.core.held)
                    .get(&key)
                    .is_some_and(|h| h.host_id == host_id);
                if !ours {
                    self.send_release(Release {
                        owner: owner.clone(),
                        id: id.clone(),
                        name: name.clone(),
                        host_id: host_id.to_owned(),
                    });
                }
                return Err(e);
            }
        };
        match outcome.as_str() {
            "ok" => {
                let held = Held {
                    host_id: host_id.to_owned(),
                    record: record.clone(),
                };
                lock(&self.core.held).insert(key, held);
                Ok(())
            }
            "denied" => Err(RegistryError::Denied),
            "taken" => Err(RegistryError::HostNameTaken(name.to_string())),
            "hosts" => Err(RegistryError::Limit {
                name: limit_name::HOSTS_PER_TASK,
                value: max_hosts,
            }),
            "owners" => Err(RegistryError::Limit {
                name: limit_name::OWNERS_PER_TASK_ID,
                value: MAX_OWNERS_PER_TASK_ID,
            }),
            other => Err(malformed("claim", other)),
        }
    }
}

#[async_trait::async_trait]
impl TaskStore for RedisTaskStore {
    async fn add_host(
        &self,
        owner: &Owner,
        id: &TaskId,
        name: &HostName,
        host_id: &str,
        record: &TaskRecord,
        max_hosts: usize,
    ) -> Result<(), RegistryError> {
        self.claim(Mode::Add, owner, id, name, host_id, record, max_hosts)
            .await
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
        self.claim(Mode::TakeOver, owner, id, name, host_id, record, max_hosts)
            .await
    }

    fn remove_host(&self, owner: &Owner, id: &TaskId, name: &HostName, host_id: &str) {
        let key = (owner.clone(), id.clone(), name.clone());
        {
            let mut held = lock(&self.core.held);
            if held.get(&key).is_some_and(|h| h.host_id == host_id) {
                held.remove(&key);
            }
        }
        self.send_release(Release {
            owner: owner.clone(),
            id: id.clone(),
            name: name.clone(),
            host_id: host_id.to_owned(),
        });
    }

    async fn task(&self, owner: &Owner, id: &TaskId) -> Result<Option<TaskRecord>, RegistryError> {
        Ok(self
            .core
            .read(id, owner.as_str())
            .await?
            .pop()
            .map(|(_, record)| record))
    }

    async fn tasks_with_id(&self, id: &TaskId) -> Result<Vec<(Owner, TaskRecord)>, RegistryError> {
        self.core.read(id, "").await
    }

    async fn owner_of(
        &self,
        owner: &Owner,
        id: &TaskId,
        name: &HostName,
    ) -> Result<Option<Replica>, RegistryError> {
        let mut invocation = SCRIPTS.owner_of.key(self.core.task_key(id));
        invocation.arg(owner.as_str()).arg(name.as_str());
        let answer: Vec<String> = self.core.call(&invocation).await?;
        match <[String; 2]>::try_from(answer) {
            Ok([id, advertise_url]) => Ok(Some(Replica { id, advertise_url })),
            Err(answer) if answer.is_empty() => Ok(None),
            Err(_) => Err(malformed("owner_of", "not two fields")),
        }
    }

    async fn hosts_of(
        &self,
        owner: &Owner,
        id: &TaskId,
    ) -> Result<Vec<(String, Replica)>, RegistryError> {
        let mut invocation = SCRIPTS.hosts_of.key(self.core.task_key(id));
        invocation.arg(owner.as_str());
        let answer: Vec<String> = self.core.call(&invocation).await?;
        if !answer.len().is_multiple_of(3) {
            return Err(malformed("hosts_of", "not three fields a host"));
        }
        let mut fields = answer.into_iter();
        let mut hosts = Vec::new();
        while let (Some(name), Some(id), Some(advertise_url)) =
            (fields.next(), fields.next(), fields.next())
        {
            hosts.push((name, Replica { id, advertise_url }));
        }
        Ok(hosts)
    }

    async fn holders_of(
        &self,
        id: &TaskId,
        name: &HostName,
    ) -> Result<Vec<Replica>, RegistryError> {
        let mut invocation = SCRIPTS.holders_of.key(self.core.task_key(id));
        invocation.arg(name.as_str());
        let answer: Vec<String> = self.core.call(&invocation).await?;
        if !answer.len().is_multiple_of(2) {
            return Err(malformed("holders_of", "not two fields a replica"));
        }
        let mut fields = answer.into_iter();
        let mut replicas: Vec<Replica> = Vec::new();
        while let (Some(id), Some(advertise_url)) = (fields.next(), fields.next()) {
            let replica = Replica { id, advertise_url };
            if !replicas.contains(&replica) {
                replicas.push(replica);
            }
        }
        Ok(replicas)
    }

    fn this_replica(&self) -> Option<Replica> {
        Some(self.core.replica.clone())
    }

    fn is_healthy(&self) -> bool {
        self.core.healthy.load(Ordering::Acquire)
    }

    fn len(&self) -> usize {
        self.core.tasks.load(Ordering::Relaxed)
    }
}
