//! The Rendezvous test kit (not published): the real parts a test needs,
//! each started on loopback and stopped on drop.
//!
//! - [`TestServer`]: a real server on `127.0.0.1:0`, stopped gracefully or
//!   crashed ([`Stop`]);
//! - [`TestHost`]: a real host whose shells run bash on PTYs;
//! - [`Transcript`]: a guest's events with `until(marker)`, `until_exit()`
//!   and one deadline; [`TermGuest`]: a native guest on the Terminal call;
//! - [`proxy::FaultProxy`]: a TCP proxy that cuts, stalls, blackholes,
//!   delays and throttles each direction ([`proxy::CutProxy`]: its
//!   earlier API, mute and cut);
//! - [`ProcessOutput`]: a `rendezvous` binary as a child process, what it
//!   prints kept for the test;
//! - [`metrics`]: scrapes `serve --metrics-listen` and reads a series;
//! - [`held_output`]: waits until a session's output stops growing;
//! - [`tls`]: a test CA and its certificates, for servers started with
//!   [`TestServer::with_tls`];
//! - [`WebhookServer`]: a loopback HTTP server that keeps the JSON bodies
//!   POSTed to it (`--notify-url`);
//! - [`jwt`]: signing keys (RSA, P-256, Ed25519), their JWKS, and a
//!   loopback HTTP server for JWKS, discovery documents and token
//!   endpoints;
//! - [`redis::RedisServer`]: Debian's `redis-server` on a free loopback
//!   port, without persistence, stopped and restarted on the same port;
//! - [`replicas`]: `rendezvous serve` replicas on one Redis with shared
//!   keys, and a round-robin TCP load balancer in front of them;
//! - [`seq_stream`]: a known `seq` stream and the native guests that check
//!   it arrives byte-exact.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod host;
pub mod jwt;
pub mod metrics;
mod process;
pub mod proxy;
pub mod pty;
pub mod redis;
pub mod replicas;
pub mod reverse_proxy;
pub mod seq_stream;
mod server;
pub mod tls;
mod transcript;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use rendezvous_server::registry::HostTokenFile;

pub use host::{TestHost, bash, resumable};
pub use process::ProcessOutput;
pub use server::{AnyGuestClient, Stop, TRANSPORTS, TestServer, Transport};
pub use transcript::{TermGuest, Transcript};
pub use webhook::WebhookServer;

/// The resident set (VmRSS) of process `pid`, in KiB, from
/// `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A new temporary directory, removed when the returned guard drops; its
/// name starts with `rendezvous-{what}-`.
pub fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("rendezvous-{what}-"))
        .tempdir()
        .expect("create a temporary directory")
}

/// A host token file (`serve --host-token-file`) holding `lines`, each
/// `NAME TOKEN`, in a temporary directory that lives as long as the
/// returned guard; rewrite [`HostTokenFile::path`] and reload to change it.
pub fn host_token_file(lines: &str) -> (tempfile::TempDir, Arc<HostTokenFile>) {
    let dir = temp_dir("host-tokens");
    let path = dir.path().join("host-tokens");
    std::fs::write(&path, lines).expect("write the host token file");
    let file = HostTokenFile::load(&path).expect("load the host token file");
    (dir, Arc::new(file))
}

/// How long any wait in a test may take before the test fails (20 s).
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until a session's output offset, as `sample` reads it, stops
/// growing (the same non-zero value for five samples 100 ms apart), and
/// returns it; fails after the deadline.
pub async fn held_output<F, Fut>(mut sample: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut last = sample().await;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "output never stopped growing"
        );
        let mut steady = true;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = sample().await;
            steady &= now == last;
            last = now;
        }
        if steady && last > 0 {
            return last;
        }
    }
}
