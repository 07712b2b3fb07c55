//! Debian's `redis-server` (`/usr/bin/redis-server`) as a child process on
//! a free loopback port, with no persistence (`--save "" --appendonly no`)
//! and its files in a temporary directory: started and restarted on the
//! same port, each time waited for until it answers PING, and killed on
//! drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::DEADLINE;

/// Where Debian's package installs the server.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A running (or stopped) `redis-server` of the test's own; killed on drop.
pub struct RedisServer {
    /// The loopback port it listens on, the same across restarts.
    pub port: u16,
    /// The password it requires (`--requirepass`), if any.
    pub password: Option<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits (at most
    /// [`DEADLINE`]) until it answers PING; tries other ports if one was
    /// taken meanwhile.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// [`start`](Self::start), requiring `password` (`--requirepass`), as
    /// a deployment's Redis would.
    pub async fn with_password(password: &str) -> Self {
        Self::start_with(Some(password.to_owned())).await
    }

    async fn start_with(password: Option<String>) -> Self {
        let mut server = Self {
            port: 0,
            password,
            dir: crate::temp_dir("redis"),
            child: None,
        };
        for _ in 0..5 {
            server.port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            if server.try_start().await {
                return server;
            }
        }
        panic!(
            "redis-server did not start on any of 5 free ports: {}",
            server.log()
        );
    }

    /// `redis://127.0.0.1:PORT`, or `redis://:PASSWORD@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Kills the server (SIGKILL, as a crash) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (nothing was
    /// saved), and waits until it answers PING.
    pub async fn restart(&mut self) {
        self.stop();
        assert!(
            self.try_start().await,
            "redis-server did not start again on port {}: {}",
            self.port,
            self.log()
        );
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts `redis-server` on `self.port`; true once it answers PING,
    /// false if it exited first (the port was taken) or never answered.
    async fn try_start(&mut self) -> bool {
        assert!(
            std::path::Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} is missing: apt-get install redis-server (tests/run does)"
        );
        let log = std::fs::File::create(self.log_path()).expect("create the redis log");
        let mut command = Command::new(REDIS_SERVER);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no", "--loglevel", "notice"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while tokio::time::Instant::now() < deadline {
            if self.answers_ping().await {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.child = None;
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop();
        false
    }

    /// Whether the server answers `PING` with `+PONG` (within 1 s), after
    /// `AUTH` when it has a password.
    pub async fn answers_ping(&self) -> bool {
        let (request, expected) = match &self.password {
            Some(password) => (format!("AUTH {password}\r\nPING\r\n"), "+OK\r\n+PONG\r\n"),
            None => ("PING\r\n".to_owned(), "+PONG\r\n"),
        };
        let ping = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut answer = vec![0u8; expected.len()];
            stream.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(answer == expected.as_bytes())
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), ping).await,
            Ok(Ok(true))
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
