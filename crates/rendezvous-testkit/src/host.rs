//! A real host (the `rendezvous-host` crate, PTYs running bash), stopped
//! on drop.

use rendezvous_proto::AttachRequest;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::{DEADLINE, TestServer};

/// A registered host running `command` for each new shell; stopped on drop.
pub struct TestHost {
    /// The task's read-write secret.
    pub secret: String,
    /// The task the host serves.
    pub task_id: String,
    /// The host's status: tests of resuming wait on it.
    pub status: watch::Receiver<rendezvous_host::HostStatus>,
    stop: Option<oneshot::Sender<()>>,
    /// The host's run; it ends after the stop signal of `drop`.
    task: Option<JoinHandle<Result<(), rendezvous_host::HostError>>>,
}

/// A host of `task_id` with `secret` on `url` running [`bash`] with
/// `PS1="$ "`, that keeps its shells for `grace` when it loses its server
/// (the host-resume tests). Add to it, then [`TestHost::from_host`].
pub fn resumable(
    url: &str,
    task_id: &str,
    secret: &str,
    grace: std::time::Duration,
) -> rendezvous_host::HostBuilder {
    rendezvous_host::Host::builder(url)
        .task_id(task_id)
        .secret(secret)
        .command("bash", ["--norc", "--noprofile"])
        .env("PS1", "$ ")
        .grace_period(grace)
}

/// bash without rc files and with a plain prompt, so tests see only what
/// they typed.
pub fn bash() -> Vec<String> {
    ["bash", "--norc", "--noprofile"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl TestHost {
    /// A host of `task_id` running [`bash`], registered.
    pub async fn start(server: &TestServer, task_id: &str) -> Self {
        Self::with_command(server, task_id, bash()).await
    }

    /// A host of `task_id` running `command` for each new shell, with
    /// `PS1="$ "`, registered. It has no grace period: dropping it ends
    /// its sessions at once (tests of resuming build their own host).
    pub async fn with_command(server: &TestServer, task_id: &str, command: Vec<String>) -> Self {
        let host = rendezvous_host::Host::builder(&server.url)
            .tls(server.client_tls.clone())
            .task_id(task_id)
            .command(&command[0], &command[1..])
            .env("PS1", "$ ")
            .env("HISTFILE", "/dev/null")
            .grace_period(std::time::Duration::ZERO)
            .build()
            .expect("build host");
        Self::from_host(host).await
    }

    /// Runs a host built by the test, and waits until it is registered.
    pub async fn from_host(host: rendezvous_host::Host) -> Self {
        let secret = host.secret().to_owned();
        let task_id = host.task_id().to_owned();
        let mut status = host.status();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(host.run(async move {
            let _ = stopped.await;
        }));
        tokio::time::timeout(
            DEADLINE,
            status.wait_for(|s| matches!(s, rendezvous_host::HostStatus::Registered { .. })),
        )
        .await
        .expect("host registers in time")
        .expect("host status");
        Self {
            secret,
            task_id,
            status,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Waits until the host is registered again (after a fault); returns
    /// its host ID.
    pub async fn registered(&mut self) -> String {
        let status = tokio::time::timeout(
            DEADLINE,
            self.status
                .wait_for(|s| matches!(s, rendezvous_host::HostStatus::Registered { .. })),
        )
        .await
        .expect("the host registers in time")
        .expect("the host runs");
        match &*status {
            rendezvous_host::HostStatus::Registered { host_id } => host_id.clone(),
            _ => unreachable!("waited for Registered"),
        }
    }

    /// Stops the host and waits until it has stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("the host stops in time")
                .expect("no panic")
                .expect("the host's run");
        }
    }

    /// The task's hosts and sessions, as ListSessions reports them.
    pub async fn list_hosts(&self, server: &TestServer) -> Vec<rendezvous_proto::HostInfo> {
        server
            .guest_client()
            .await
            .list_sessions(rendezvous_proto::ListSessionsRequest {
                task_id: self.task_id.clone(),
                secret: self.secret.clone(),
                ..Default::default()
            })
            .await
            .expect("list sessions")
            .into_inner()
            .hosts
    }

    /// An attach request for this task with its secret, 100x30: a new
    /// shell for an empty `session_id`, else that session.
    pub fn attach_request(&self, session_id: &str) -> AttachRequest {
        AttachRequest {
            task_id: self.task_id.clone(),
            secret: self.secret.clone(),
            host_name: String::new(),
            session_id: session_id.to_owned(),
            cols: 100,
            rows: 30,
            resume_offset: None,
            ..Default::default()
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
