//! The store's side that talks to Redis: the scripts, one call each
//! within [`CALL_TIMEOUT`], the health flag, and the background task
//! (removals, renewals, health checks). [`RedisTaskStore`](super::RedisTaskStore)
//! is the [`TaskStore`](super::TaskStore) face of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script, ScriptInvocation};
use rendezvous_proto::ids::{HostName, TaskId};
use tokio::sync::{mpsc, watch};

use super::super::store::Replica;
use super::super::{Owner, RegistryError, TaskRecord, lock};
use super::{CALL_TIMEOUT, HEALTH_INTERVAL, RENEW_BATCH};
use crate::auth::Digest;
use crate::config::{HOSTLESS_TASK_GRACE, MAX_HOSTLESS_TASKS, MAX_OWNERS_PER_TASK_ID};

/// The Lua scripts, each with the prelude.
pub(super) struct Scripts {
    pub(super) claim: Script,
    pub(super) release: Script,
    pub(super) evict: Script,
    pub(super) read: Script,
    pub(super) owner_of: Script,
    pub(super) hosts_of: Script,
    pub(super) holders_of: Script,
    pub(super) count: Script,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let with_prelude =
        |body: &str| Script::new(&format!("{}\n{body}", include_str!("prelude.lua")));
    Scripts {
        claim: with_prelude(include_str!("claim.lua")),
        release: with_prelude(include_str!("release.lua")),
        evict: with_prelude(include_str!("evict.lua")),
        read: with_prelude(include_str!("read.lua")),
        owner_of: with_prelude(include_str!("owner_of.lua")),
        hosts_of: with_prelude(include_str!("hosts_of.lua")),
        holders_of: with_prelude(include_str!("holders_of.lua")),
        count: with_prelude(include_str!("count.lua")),
    }
});

/// A host name this replica holds, by owner, task ID and name.
pub(super) type HeldKey = (Owner, TaskId, HostName);

/// What renewing a held name needs.
#[derive(Debug, Clone)]
pub(super) struct Held {
    /// The host that holds the name.
    pub(super) host_id: String,
    /// Its task's digests, to create the task again if Redis lost it.
    pub(super) record: TaskRecord,
}

/// A removal for the background task.
#[derive(Debug)]
pub(super) struct Release {
    pub(super) owner: Owner,
    pub(super) id: TaskId,
    pub(super) name: HostName,
    pub(super) host_id: String,
}

/// How a claim asks for a name (`claim.lua`'s modes).
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    /// A new host: refused if the name is held.
    Add,
    /// A resuming host: takes the name from the same host ID anywhere.
    TakeOver,
    /// This replica's renewal: only its own host's name, or a free one.
    Renew,
}

/// What the store's calls and its background task share.
pub(super) struct Core {
    /// The reconnecting connection (cloned per call: one multiplexed
    /// connection underneath).
    pub(super) con: ConnectionManager,
    /// Prefix of every key ([`DEFAULT_PREFIX`](super::DEFAULT_PREFIX)).
    pub(super) prefix: String,
    /// This replica, as its leases name it.
    pub(super) replica: Replica,
    /// How long a name is held after its last renewal.
    pub(super) lease: Duration,
    /// Whether the last call or check reached Redis; read by `/readyz`.
    pub(super) healthy: AtomicBool,
    /// Tasks in the index, as the last script counted them.
    pub(super) tasks: AtomicUsize,
    /// The names this replica's hosts hold: what renewals renew. Added by
    /// a successful claim, removed by `remove_host` or a refused renewal.
    pub(super) held: Mutex<HashMap<HeldKey, Held>>,
    /// Removals queued so far, and (below) handled so far: a claim waits
    /// for those queued before it, so that a name freed here is free for
    /// the next host here.
    pub(super) releases_sent: AtomicU64,
    pub(super) releases_done: watch::Sender<u64>,
}

/// An answer the scripts never give (another program's data under our
/// prefix, or a bug): logged, and the call fails as if Redis were away.
pub(super) fn malformed(what: &str, detail: &str) -> RegistryError {
    tracing::error!(
        script = what,
        detail,
        "unexpected data in the shared directory (Redis)"
    );
    RegistryError::DirectoryUnavailable
}

/// Whether `e` says Redis cannot be reached (rather than a script's error).
fn is_unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl Core {
    pub(super) fn task_key(&self, id: &TaskId) -> String {
        format!("{}task:{id}", self.prefix)
    }

    pub(super) fn index_key(&self) -> String {
        format!("{}tasks", self.prefix)
    }

    pub(super) fn hostless_key(&self) -> String {
        format!("{}hostless", self.prefix)
    }

    /// Records whether Redis answered, and logs when that changes.
    pub(super) fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Ordering::AcqRel) != healthy {
            if healthy {
                tracing::info!("the shared directory (Redis) answers again: /readyz says ready");
            } else {
                tracing::warn!(
                    "the shared directory (Redis) is unreachable: /readyz says 503, and calls that need it fail with UNAVAILABLE until it answers"
                );
            }
        }
    }

    pub(super) fn set_count(&self, count: i64) {
        self.tasks
            .store(usize::try_from(count).unwrap_or(0), Ordering::Relaxed);
    }

    /// Runs one script within [`CALL_TIMEOUT`].
    pub(super) async fn call<T: redis::FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RegistryError> {
        let mut con = self.con.clone();
        match tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async(&mut con)).await {
            Ok(Ok(answer)) => {
                self.set_healthy(true);
                Ok(answer)
            }
            Ok(Err(e)) if !is_unreachable(&e) => {
                tracing::error!(error = %e, "the shared directory (Redis) refused a script");
                Err(RegistryError::DirectoryUnavailable)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the shared directory (Redis) did not answer");
                self.set_healthy(false);
                Err(RegistryError::DirectoryUnavailable)
            }
            Err(_) => {
                self.set_healthy(false);
                Err(RegistryError::DirectoryUnavailable)
            }
        }
    }

    /// `claim.lua`'s invocation for one name.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn claim_invocation(
        &self,
        mode: Mode,
        owner: &Owner,
        id: &TaskId,
        name: &HostName,
        host_id: &str,
        record: &TaskRecord,
        max_hosts: usize,
    ) -> ScriptInvocation<'static> {
        let mode = match mode {
            Mode::Add => "add",
            Mode::TakeOver => "takeover",
            Mode::Renew => "renew",
        };
        let mut invocation = SCRIPTS.claim.key(self.task_key(id));
        invocation
            .key(self.index_key())
            .key(self.hostless_key())
            .arg(mode)
            .arg(id.as_str())
            .arg(owner.as_str())
            .arg(name.as_str())
            .arg(host_id)
            .arg(record.secret.to_hex())
            .arg(
                record
                    .read_only_secret
                    .as_ref()
                    .map(Digest::to_hex)
                    .unwrap_or_default(),
            )
            .arg(max_hosts)
            .arg(MAX_OWNERS_PER_TASK_ID)
            .arg(&self.replica.id)
            .arg(&self.replica.advertise_url)
            .arg(millis(self.lease))
            .arg(millis(HOSTLESS_TASK_GRACE));
        invocation
    }

    /// Claims a name; returns the script's outcome.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn claim(
        &self,
        mode: Mode,
        owner: &Owner,
        id: &TaskId,
        name: &HostName,
        host_id: &str,
        record: &TaskRecord,
        max_hosts: usize,
    ) -> Result<String, RegistryError> {
        let invocation = self.claim_invocation(mode, owner, id, name, host_id, record, max_hosts);
        let (outcome, count): (String, i64) = self.call(&invocation).await?;
        self.set_count(count);
        Ok(outcome)
    }

    /// The tasks of ID `id` not yet forgotten: `owner`'s, or with `""`
    /// every owner's.
    pub(super) async fn read(
        &self,
        id: &TaskId,
        owner: &str,
    ) -> Result<Vec<(Owner, TaskRecord)>, RegistryError> {
        let mut invocation = SCRIPTS.read.key(self.task_key(id));
        invocation.arg(owner).arg(millis(HOSTLESS_TASK_GRACE));
        let flat: Vec<String> = self.call(&invocation).await?;
        if !flat.len().is_multiple_of(3) || flat.len() / 3 > MAX_OWNERS_PER_TASK_ID {
            return Err(malformed("read", "not owner, secret, read-only triples"));
        }
        flat.chunks_exact(3)
            .map(|triple| {
                let secret = Digest::from_hex(&triple[1])
                    .ok_or_else(|| malformed("read", "a secret digest"))?;
                let read_only_secret = match triple[2].as_str() {
                    "" => None,
                    hex => Some(
                        Digest::from_hex(hex)
                            .ok_or_else(|| malformed("read", "a read-only digest"))?,
                    ),
                };
                let record = TaskRecord {
                    secret,
                    read_only_secret,
                };
                Ok((Owner::from_claim(&triple[0]), record))
            })
            .collect()
    }

    /// The health check: counts the tasks (forgetting those past their
    /// time), which tells that Redis answers and runs scripts.
    pub(super) async fn check_health(&self) -> Result<(), RegistryError> {
        let invocation = SCRIPTS.count.key(self.index_key());
        // Any failure here is unhealthy, a refusal too (e.g. a password
        // Redis no longer takes after a restart).
        let count: i64 = self
            .call(&invocation)
            .await
            .inspect_err(|_| self.set_healthy(false))?;
        self.set_count(count);
        Ok(())
    }

    /// Frees a name (the background task's part of `remove_host`), and
    /// forgets the hostless tasks past [`MAX_HOSTLESS_TASKS`].
    pub(super) async fn release(&self, release: Release) {
        let mut invocation = SCRIPTS.release.key(self.task_key(&release.id));
        invocation
            .key(self.index_key())
            .key(self.hostless_key())
            .arg(release.id.as_str())
            .arg(release.owner.as_str())
            .arg(release.name.as_str())
            .arg(&release.host_id)
            .arg(&self.replica.id)
            .arg(millis(HOSTLESS_TASK_GRACE))
            .arg(MAX_HOSTLESS_TASKS);
        let Ok(answer) = self.call::<Vec<String>>(&invocation).await else {
            return; // Its lease frees the name.
        };
        let mut answer = answer.into_iter();
        if let Some(count) = answer.next().and_then(|c| c.parse().ok()) {
            self.set_count(count);
        }
        for member in answer {
            let Some((owner, id)) = parse_member(&member) else {
                let _ = malformed("release", "an index member");
                continue;
            };
            let mut invocation = SCRIPTS.evict.key(self.task_key(&id));
            invocation
                .key(self.index_key())
                .arg(id.as_str())
                .arg(owner.as_str())
                .arg(millis(HOSTLESS_TASK_GRACE));
            if let Ok(count) = self.call::<i64>(&invocation).await {
                self.set_count(count);
            }
        }
    }

    /// Renews every name this replica holds, [`RENEW_BATCH`] per round
    /// trip; a name another host holds now is no longer renewed.
    pub(super) async fn renew_all(&self) {
        let held: Vec<(HeldKey, Held)> = lock(&self.held)
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        for batch in held.chunks(RENEW_BATCH) {
            let mut pipe = redis::pipe();
            pipe.load_script(&SCRIPTS.claim).ignore();
            for ((owner, id, name), held) in batch {
                let invocation = self.claim_invocation(
                    Mode::Renew,
                    owner,
                    id,
                    name,
                    &held.host_id,
                    &held.record,
                    usize::MAX,
                );
                pipe.invoke_script(&invocation);
            }
            let mut con = self.con.clone();
            let answers: Vec<(String, i64)> = match tokio::time::timeout(
                CALL_TIMEOUT,
                pipe.query_async(&mut con),
            )
            .await
            {
                Ok(Ok(answers)) => answers,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "renewing leases in the shared directory failed");
                    self.set_healthy(!is_unreachable(&e));
                    return;
                }
                Err(_) => return self.set_healthy(false),
            };
            self.set_healthy(true);
            for (((owner, id, name), held), (outcome, count)) in batch.iter().zip(answers) {
                self.set_count(count);
                if outcome == "ok" {
                    continue;
                }
                tracing::warn!(
                    task = %id, host = %name,
                    "the host's name in the shared directory is no longer this replica's (it resumed elsewhere, or its lease ran out while Redis was unreachable and another host took it)"
                );
                let key = (owner.clone(), id.clone(), name.clone());
                let mut map = lock(&self.held);
                if map.get(&key).is_some_and(|h| h.host_id == held.host_id) {
                    map.remove(&key);
                }
            }
        }
    }
}

/// A duration in whole ms, as the scripts take it.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An index member (`{owner's length}:{owner}{task ID}`, see `prelude.lua`)
/// as the owner and task ID; `None` for anything else.
pub(super) fn parse_member(member: &str) -> Option<(Owner, TaskId)> {
    let (len, rest) = member.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let owner = rest.get(..len)?;
    let id = TaskId::new(rest.get(len..)?).ok()?;
    Some((Owner::from_claim(owner), id))
}

/// The background task: removals in order, renewals every third of the
/// lease, health checks every [`HEALTH_INTERVAL`]. Ends when the store's
/// sender drops (or the store aborts it).
pub(super) async fn run(core: Arc<Core>, mut releases: mpsc::Receiver<Release>) {
    use tokio::time::MissedTickBehavior;
    let mut renew = tokio::time::interval(core.lease / 3);
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut health = tokio::time::interval(HEALTH_INTERVAL);
    health.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            release = releases.recv() => {
                let Some(release) = release else { return };
                // While Redis is away, removals are not tried: the leases
                // free those names (they are no longer renewed).
                if core.healthy.load(Ordering::Acquire) {
                    core.release(release).await;
                }
                core.releases_done.send_modify(|done| *done += 1);
            }
            _ = renew.tick() => core.renew_all().await,
            _ = health.tick() => {
                let _ = core.check_health().await;
            }
        }
    }
}
