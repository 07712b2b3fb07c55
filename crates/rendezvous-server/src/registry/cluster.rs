//! What the relay between replicas asks of the registry
//! ([`crate::cluster`]): where a task's hosts are, when not here.

use rendezvous_proto::ids::{HostName, TaskId};

use super::{Owner, Registry, RegistryError, Replica, lock};

impl Registry {
    /// Whether a host named `name` of a task `task_id` (any owner's) is
    /// connected to this server.
    pub fn holds_host(&self, task_id: &TaskId, name: &HostName) -> bool {
        lock(&self.inner)
            .tasks
            .iter()
            .any(|((_, id), hosts)| id == task_id && hosts.contains_key(name))
    }

    /// The other replica that holds host `name` of `owner`'s task
    /// `task_id`, when this server is a replica with a cluster link and
    /// that host is elsewhere; `None` otherwise.
    ///
    /// # Errors
    /// `DirectoryUnavailable` when the shared store cannot be reached.
    pub async fn owner_elsewhere(
        &self,
        owner: &Owner,
        task_id: &TaskId,
        name: &HostName,
    ) -> Result<Option<Replica>, RegistryError> {
        let Some(link) = &self.cluster else {
            return Ok(None);
        };
        let holder = self.store.owner_of(owner, task_id, name).await?;
        Ok(holder.filter(|r| r.id != link.this().id))
    }

    /// The other replicas that hold a host named `name` of a task
    /// `task_id` under any owner, when this server has a cluster link.
    ///
    /// # Errors
    /// `DirectoryUnavailable` when the shared store cannot be reached.
    pub async fn holders_elsewhere(
        &self,
        task_id: &TaskId,
        name: &HostName,
    ) -> Result<Vec<Replica>, RegistryError> {
        let Some(link) = &self.cluster else {
            return Ok(Vec::new());
        };
        let mut holders = self.store.holders_of(task_id, name).await?;
        holders.retain(|r| r.id != link.this().id);
        Ok(holders)
    }

    /// The other replicas that hold some of `owner`'s task `task_id`'s
    /// hosts, each once, when this server has a cluster link.
    ///
    /// # Errors
    /// `DirectoryUnavailable` when the shared store cannot be reached.
    pub async fn replicas_of(
        &self,
        owner: &Owner,
        task_id: &TaskId,
    ) -> Result<Vec<Replica>, RegistryError> {
        let Some(link) = &self.cluster else {
            return Ok(Vec::new());
        };
        let mut replicas: Vec<Replica> = Vec::new();
        for (_, replica) in self.store.hosts_of(owner, task_id).await? {
            if replica.id != link.this().id && !replicas.contains(&replica) {
                replicas.push(replica);
            }
        }
        Ok(replicas)
    }
}
