//! Replicas of `rendezvous serve` on one Redis, as a deployment runs them:
//! each on its own loopback port and advertising that address, all with
//! the same cluster key and state key files ([`ClusterFiles`]); and
//! [`Balancer`], a round-robin TCP load balancer in front of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

use crate::ProcessOutput;
use crate::redis::RedisServer;

/// The key files every replica of a test shares: `--cluster-key-file` and
/// `--state-key-file`, 32 random bytes each, in a temporary directory.
pub struct ClusterFiles {
    /// The cluster key file.
    pub cluster_key: PathBuf,
    /// The state key file.
    pub state_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl ClusterFiles {
    /// New random keys.
    ///
    /// # Panics
    /// When the files cannot be written.
    pub fn new() -> Self {
        let dir = crate::temp_dir("cluster-keys");
        let write = |name: &str| {
            let path = dir.path().join(name);
            let mut key = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
            std::fs::write(&path, key).expect("write a key file");
            path
        };
        Self {
            cluster_key: write("cluster.key"),
            state_key: write("state.key"),
            _dir: dir,
        }
    }
}

impl Default for ClusterFiles {
    fn default() -> Self {
        Self::new()
    }
}

/// One `rendezvous serve` replica; killed on drop.
pub struct Replica {
    /// The process, and what it printed.
    pub process: ProcessOutput,
    /// Where it listens, and what it advertises: `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its listening address.
    pub addr: SocketAddr,
}

impl Replica {
    /// Starts `bin serve` (the `rendezvous` binary: a test's
    /// `env!("CARGO_BIN_EXE_rendezvous")`) on a free loopback port with
    /// `--redis-url`, `--advertise-url` (its own address), the keys in
    /// `files`, no drain delay, and `args`; returns once it listens.
    ///
    /// # Panics
    /// When it does not start listening within [`crate::DEADLINE`].
    pub async fn start(
        bin: &str,
        redis: &RedisServer,
        files: &ClusterFiles,
        args: &[&str],
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let url = format!("http://{addr}");
        let mut command = Command::new(bin);
        command
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--drain-delay",
                "0s",
            ])
            .args(["--redis-url", &redis.url(), "--advertise-url", &url])
            .arg("--cluster-key-file")
            .arg(&files.cluster_key)
            .arg("--state-key-file")
            .arg(&files.state_key)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let mut process = ProcessOutput::spawn(command);
        process.stdout_line("rendezvous: listening on ").await;
        Self { process, url, addr }
    }
}

/// A round-robin TCP load balancer on `127.0.0.1:0`, as a deployment puts
/// in front of its replicas: each new connection goes to the next backend
/// in turn, skipping one that refuses it. Stopped, with every connection
/// it carries, on drop.
pub struct Balancer {
    addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    /// Connections carried so far, by backend index at the time.
    accepted: Arc<AtomicUsize>,
    _task: AbortOnDropHandle<()>,
}

impl Balancer {
    /// Starts balancing over `backends`.
    ///
    /// # Panics
    /// When it cannot listen.
    pub async fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let addr = listener.local_addr().expect("local address");
        let backends = Arc::new(Mutex::new(backends));
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(listener, backends.clone(), accepted.clone()));
        Self {
            addr,
            backends,
            accepted,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Takes `backend` out of the rotation for new connections, as a load
    /// balancer does for a replica whose `/readyz` fails.
    pub fn remove(&self, backend: SocketAddr) {
        self.backends.lock().unwrap().retain(|b| *b != backend);
    }

    /// How many connections it accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

async fn serve(
    listener: TcpListener,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    accepted: Arc<AtomicUsize>,
) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let turn = accepted.fetch_add(1, Ordering::Relaxed);
        let order: Vec<SocketAddr> = {
            let backends = backends.lock().unwrap();
            let n = backends.len().max(1);
            (0..backends.len())
                .map(|i| backends[(turn + i) % n])
                .collect()
        };
        connections.spawn(async move {
            for backend in order {
                if let Ok(mut server) = TcpStream::connect(backend).await {
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
            }
        });
        // Forget the connections that ended.
        while connections.try_join_next().is_some() {}
    }
}
