//! (d) Memory: the growth of the server process's resident set (VmRSS) per
//! idle host and per idle guest.
//!
//! How: the server runs as a child process (`rendezvous serve` of this same
//! binary, on 127.0.0.1 with a free port), so the bench's own clients are
//! not counted. After a warm-up (one host, one session, one guest), the
//! bench
//! 1. reads VmRSS from `/proc/<pid>/status`, connects `n` synthetic hosts,
//!    each on its own connection, [`HOSTS_PER_TASK`] to a task, waits until
//!    all are registered and idle, reads VmRSS again: the growth over `n` is
//!    the figure per idle host;
//! 2. opens one session per [`GUESTS_PER_SESSION`] guests (each by one
//!    opener guest, not counted), reads VmRSS, attaches `n` guests with the
//!    server-streaming `Attach` RPC (the browsers' path), each on its own
//!    connection, spread over those sessions, waits until all are attached
//!    and idle, and reads VmRSS again: the growth over `n` is the figure per
//!    idle guest.
//!
//! Hosts answer the server's keepalive Pings; guests only hold their
//! streams open.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::guest::{self, Target};
use super::synthetic_host::SyntheticHost;
use super::util::{random_name, random_secret, run_all};

/// Idle hosts per task, under the server's default hosts-per-task limit.
pub const HOSTS_PER_TASK: usize = 25;

/// Idle guests per session, under the guests-per-session limit the child
/// server is given.
pub const GUESTS_PER_SESSION: usize = 100;

/// Connections opened at once while hosts or guests are set up.
const CONNECT_CONCURRENCY: usize = 64;

/// Pause before each RSS reading, so that the server has finished handling
/// what was just opened (500 ms).
const SETTLE: Duration = Duration::from_millis(500);

/// The outcome of the memory measurement.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Idle hosts connected.
    pub hosts: usize,
    /// Idle guests attached.
    pub guests: usize,
    /// VmRSS before and after the hosts, in KiB.
    pub hosts_rss_kib: (u64, u64),
    /// VmRSS before and after the guests, in KiB.
    pub guests_rss_kib: (u64, u64),
}

impl Memory {
    /// RSS growth per idle host, in KiB.
    pub fn kib_per_idle_host(&self) -> f64 {
        growth(self.hosts_rss_kib) / self.hosts as f64
    }

    /// RSS growth per idle guest, in KiB.
    pub fn kib_per_idle_guest(&self) -> f64 {
        growth(self.guests_rss_kib) / self.guests as f64
    }
}

fn growth((before, after): (u64, u64)) -> f64 {
    after as f64 - before as f64
}

/// The server as a child process, killed when dropped.
struct ChildServer {
    child: Child,
    url: String,
    _stdout: BufReader<ChildStdout>,
}

impl ChildServer {
    async fn spawn(exe: &Path, n: usize) -> anyhow::Result<Self> {
        let sessions = n.div_ceil(GUESTS_PER_SESSION) + 1;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--drain-delay", "0s"])
            .args(["--max-hosts-per-task", &HOSTS_PER_TASK.to_string()])
            .args(["--max-sessions-per-host", "64"])
            // Each session also holds its opener guest.
            .args([
                "--max-guests-per-session",
                &(GUESTS_PER_SESSION + 1).to_string(),
            ])
            .args(["--max-connections", &(2 * n + sessions + 64).to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} serve", exe.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        let url = loop {
            line.clear();
            let n = tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line))
                .await
                .context("the child server did not say where it listens within 10 s")??;
            if n == 0 {
                bail!("the child server exited before it listened");
            }
            if let Some(url) = line.trim().strip_prefix("rendezvous: listening on ") {
                break url.to_owned();
            }
        };
        Ok(Self {
            child,
            url,
            _stdout: stdout,
        })
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the child server has exited")?;
        rss_kib(pid)
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// VmRSS of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// Measures with `n` idle hosts and `n` idle guests.
pub async fn run(n: usize) -> anyhow::Result<Memory> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let server = ChildServer::spawn(&exe, n).await?;
    let result = measure(&server, n).await;
    server.stop().await;
    result
}

async fn measure(server: &ChildServer, n: usize) -> anyhow::Result<Memory> {
    let url = server.url.clone();
    let run = random_name("idle");

    // Warm-up: the first host, session and guest pay for one-off
    // allocations (runtime, registry maps, buffers) that are not per
    // connection.
    let warm = Target {
        task_id: format!("{run}-warm"),
        secret: random_secret(),
        host_name: "h".to_owned(),
        session_id: None,
    };
    let mut warm_host = SyntheticHost::connect(&url, &warm.task_id, "h", &warm.secret).await?;
    let mut warm_client = guest::connect(&url).await?;
    let (warm_attached, _warm_events) = guest::attach(&mut warm_client, &warm).await?;
    let _warm_session = warm_host.take_session(&warm_attached.session_id).await?;

    // 1. Idle hosts, HOSTS_PER_TASK to a task; host i is "h{i % 25}" of
    // task i / 25.
    let tasks: Vec<(String, String)> = (0..n.div_ceil(HOSTS_PER_TASK))
        .map(|t| (format!("{run}-{t}"), random_secret()))
        .collect();
    let host_target = |i: usize| {
        let (task_id, secret) = tasks[i / HOSTS_PER_TASK].clone();
        Target {
            task_id,
            secret,
            host_name: format!("h{}", i % HOSTS_PER_TASK),
            session_id: None,
        }
    };
    tokio::time::sleep(SETTLE).await;
    let before_hosts = server.rss_kib()?;
    let connects = (0..n).map(|i| {
        let t = host_target(i);
        let url = url.clone();
        async move { SyntheticHost::connect(&url, &t.task_id, &t.host_name, &t.secret).await }
    });
    let mut hosts = run_all(connects, CONNECT_CONCURRENCY)
        .await
        .context("connecting idle hosts")?;
    tokio::time::sleep(SETTLE).await;
    let after_hosts = server.rss_kib()?;

    // 2. Sessions for the idle guests, one on each of the first hosts, each
    // opened by one opener guest.
    let session_count = n.div_ceil(GUESTS_PER_SESSION);
    let mut openers = Vec::with_capacity(session_count);
    let mut sessions = Vec::with_capacity(session_count);
    let mut host_sessions = Vec::with_capacity(session_count);
    for (i, host) in hosts.iter_mut().enumerate().take(session_count) {
        let target = host_target(i);
        let mut client = guest::connect(&url).await?;
        let (attached, events) = guest::attach(&mut client, &target).await?;
        host_sessions.push(host.take_session(&attached.session_id).await?);
        sessions.push(target.join(&attached.session_id));
        openers.push((client, events));
    }
    tokio::time::sleep(SETTLE).await;
    let before_guests = server.rss_kib()?;
    let attaches = (0..n).map(|j| {
        let target = sessions[j % session_count].clone();
        let url = url.clone();
        async move {
            let mut client = guest::connect(&url).await?;
            let (_, events) = guest::attach(&mut client, &target).await?;
            anyhow::Ok((client, events))
        }
    });
    let guests = run_all(attaches, CONNECT_CONCURRENCY)
        .await
        .context("attaching idle guests")?;
    tokio::time::sleep(SETTLE).await;
    let after_guests = server.rss_kib()?;

    drop(guests);
    drop(openers);
    drop(host_sessions);
    drop(hosts);
    Ok(Memory {
        hosts: n,
        guests: n,
        hosts_rss_kib: (before_hosts, after_hosts),
        guests_rss_kib: (before_guests, after_guests),
    })
}
