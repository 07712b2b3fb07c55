//! `rendezvous bench replicas`: what the hop between replicas adds to a
//! keystroke. Two `rendezvous serve` replicas of this binary (child
//! processes on loopback, one Redis, shared key files) and one synthetic
//! host on replica A; a guest on A (the owner) and a guest on B (relayed
//! to A over the cluster link) each time keystroke round trips as
//! [`super::rtt`] does, in alternating blocks so that both see the same
//! machine. The report gives both, and what the hop adds at p50 and p99.
//!
//! Without `--redis-url` it starts `redis-server` from `PATH` on a free
//! loopback port, without persistence, and stops it at the end.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::synthetic_host::SyntheticHost;
use super::util::{percentile_us, random_name, random_secret, random_u64};
use super::{Fixture, RTT_BLOCKS, RTT_WARMUP, progress, rtt};

/// Arguments of `rendezvous bench replicas`.
#[derive(Debug, clap::Args)]
pub struct ReplicasArgs {
    /// The Redis the two replicas share (redis://HOST:PORT[/DB]). Default:
    /// a `redis-server` from PATH on a free loopback port, without
    /// persistence, stopped at the end.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,

    /// Timed keystroke round trips through each replica, after 200
    /// untimed ones; taken in 10 blocks, owner and other replica in turn.
    #[arg(long, value_name = "N", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(10..=10_000_000))]
    pub round_trips: u64,

    /// Also write the figures as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// How long a child process may take to start listening (10 s).
const START_LIMIT: Duration = Duration::from_secs(10);

/// Runs `rendezvous bench replicas`.
///
/// # Errors
/// When redis-server or a replica does not start, or a round trip fails.
pub async fn run(args: ReplicasArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let keys = KeyDir::new()?;
    let (redis_url, _redis) = match &args.redis_url {
        Some(url) => (url.clone(), None),
        None => {
            let (url, child) = start_redis(keys.path()).await?;
            (url, Some(child))
        }
    };
    progress(format_args!("starting two replicas on {redis_url}"));
    let a = start_replica(&exe, &redis_url, &keys).await?;
    let b = start_replica(&exe, &redis_url, &keys).await?;

    let task_id = random_name("bench-replicas");
    let secret = random_secret();
    let host = SyntheticHost::connect(&a.url, &task_id, "", &secret).await?;
    let mut fixture = Fixture {
        url: a.url.clone(),
        task_id,
        secret,
        host,
    };
    let n = usize::try_from(args.round_trips).unwrap_or(usize::MAX);
    progress(format_args!(
        "keystroke round trip, {n} each: on the host's replica, and through the other"
    ));
    let mut owner = rtt::Echo::start(&mut fixture).await?;
    let mut hop = rtt::Echo::start_via(&mut fixture, &b.url).await?;
    let mut warm = Vec::new();
    owner.round_trips(RTT_WARMUP, &mut warm).await?;
    hop.round_trips(RTT_WARMUP, &mut warm).await?;
    let mut owner_rtt = Vec::with_capacity(n);
    let mut hop_rtt = Vec::with_capacity(n);
    for block in 0..RTT_BLOCKS {
        let count = n / RTT_BLOCKS + usize::from(block < n % RTT_BLOCKS);
        owner.round_trips(count, &mut owner_rtt).await?;
        hop.round_trips(count, &mut hop_rtt).await?;
    }
    owner.finish().await;
    hop.finish().await;
    drop(fixture);
    super::progress_done();

    owner_rtt.sort_unstable();
    hop_rtt.sort_unstable();
    let figures = Figures::of(&owner_rtt, &hop_rtt);
    print!("{}", figures.table(n, started.elapsed()));
    if let Some(path) = &args.json {
        std::fs::write(path, figures.json(n))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The figures, in µs.
#[derive(Debug)]
struct Figures {
    owner_p50: f64,
    owner_p99: f64,
    hop_p50: f64,
    hop_p99: f64,
}

impl Figures {
    fn of(owner: &[Duration], hop: &[Duration]) -> Self {
        Self {
            owner_p50: percentile_us(owner, 50.0),
            owner_p99: percentile_us(owner, 99.0),
            hop_p50: percentile_us(hop, 50.0),
            hop_p99: percentile_us(hop, 99.0),
        }
    }

    fn table(&self, n: usize, elapsed: Duration) -> String {
        format!(
            "rendezvous bench replicas: keystroke round trip, {n} each ({:.0} s)\n\
             | guest on | p50 µs | p99 µs |\n\
             |---|---:|---:|\n\
             | the host's replica (A) | {:.0} | {:.0} |\n\
             | another replica (B, relayed to A) | {:.0} | {:.0} |\n\
             | the hop adds | {:.0} | {:.0} |\n",
            elapsed.as_secs_f64(),
            self.owner_p50,
            self.owner_p99,
            self.hop_p50,
            self.hop_p99,
            self.hop_p50 - self.owner_p50,
            self.hop_p99 - self.owner_p99,
        )
    }

    fn json(&self, n: usize) -> String {
        serde_json::json!({
            "round_trips": n,
            "owner_p50_us": self.owner_p50,
            "owner_p99_us": self.owner_p99,
            "hop_p50_us": self.hop_p50,
            "hop_p99_us": self.hop_p99,
        })
        .to_string()
    }
}

/// A temporary directory with the cluster and state key files (32 bytes
/// from /dev/urandom each); removed on drop.
struct KeyDir(PathBuf);

impl KeyDir {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("rendezvous-bench-{:016x}", random_u64()));
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let me = Self(dir);
        for name in ["cluster.key", "state.key"] {
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut key))
                .context("cannot read /dev/urandom")?;
            std::fs::write(me.0.join(name), key).context("cannot write a key file")?;
        }
        Ok(me)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (it may be taken again before it is used: the
/// callers then fail to start, and say so).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `redis-server` on a free loopback port, without persistence, its
/// working directory `dir`; its URL.
async fn start_redis(dir: &Path) -> anyhow::Result<(String, Child)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start redis-server: install it (apt-get install redis-server) or pass --redis-url")?;
    let deadline = Instant::now() + START_LIMIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("redis-server did not listen on 127.0.0.1:{port} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((format!("redis://127.0.0.1:{port}"), child))
}

/// A `rendezvous serve` replica on a free loopback port that it also
/// advertises; killed on drop.
struct ChildReplica {
    _child: Child,
    url: String,
}

async fn start_replica(exe: &Path, redis_url: &str, keys: &KeyDir) -> anyhow::Result<ChildReplica> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let url = format!("http://{addr}");
    let mut child = Command::new(exe)
        .args(["serve", "--listen", &addr, "--advertise-url", &url])
        .args(["--redis-url", redis_url, "--drain-delay", "0s"])
        .arg("--cluster-key-file")
        .arg(keys.path().join("cluster.key"))
        .arg("--state-key-file")
        .arg(keys.path().join("state.key"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {} serve", exe.display()))?;
    let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    tokio::time::timeout(START_LIMIT, async {
        loop {
            match stdout.next_line().await? {
                Some(line) if line.starts_with("rendezvous: listening on ") => return Ok(()),
                Some(_) => {}
                None => bail!("the replica on {addr} exited before it listened"),
            }
        }
    })
    .await
    .with_context(|| format!("the replica on {addr} did not listen within 10 s"))??;
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    Ok(ChildReplica { _child: child, url })
}
