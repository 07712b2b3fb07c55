//! A `rendezvous` binary run as a child process, with all it prints kept
//! for the test to read: `rendezvous serve` as operators start it.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::DEADLINE;

/// A child process whose stdout and stderr are read into memory as they
/// come; killed on drop.
pub struct ProcessOutput {
    /// The child.
    pub child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// Bumped on each line read, from either stream.
    lines: watch::Receiver<u64>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl ProcessOutput {
    /// Starts `command` with stdin closed and its output read.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the child process");
        let (tx, lines) = watch::channel(0);
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let readers = vec![
            read_into(
                child.stdout.take().unwrap(),
                Arc::clone(&stdout),
                tx.clone(),
            ),
            read_into(child.stderr.take().unwrap(), Arc::clone(&stderr), tx),
        ];
        Self {
            child,
            stdout,
            stderr,
            lines,
            readers,
        }
    }

    /// What the child printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What the child printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until a stdout line starts with `prefix`, and returns the rest
    /// of that line.
    pub async fn stdout_line(&mut self, prefix: &str) -> String {
        self.line(prefix, Self::stdout).await
    }

    /// Waits until a stderr line starts with `prefix`, and returns the rest
    /// of that line.
    pub async fn stderr_line(&mut self, prefix: &str) -> String {
        self.line(prefix, Self::stderr).await
    }

    async fn line(&mut self, prefix: &str, text: fn(&Self) -> String) -> String {
        let found = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(str::to_owned)
        };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(rest) = found(&text(self)) {
                return rest;
            }
            // Err: both streams ended; Elapsed: the deadline passed.
            if !matches!(
                tokio::time::timeout_at(deadline, self.lines.changed()).await,
                Ok(Ok(()))
            ) {
                panic!(
                    "no line {prefix:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
        }
    }

    /// Waits (at most [`DEADLINE`]) for the child to exit by itself and
    /// its output to be read to the end; returns its exit status.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let status = match tokio::time::timeout(DEADLINE, self.child.wait()).await {
            Ok(status) => status.expect("wait for the child"),
            Err(_) => panic!(
                "the child did not exit in time; stdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            ),
        };
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(DEADLINE, reader).await;
        }
        status
    }

    /// Sends SIGTERM and waits for the child to exit and its output to be
    /// read to the end.
    pub async fn terminate(&mut self) {
        if let Some(pid) = self.child.id() {
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(sent.success(), "kill -TERM {pid}");
        }
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the child exits in time after SIGTERM")
            .expect("wait for the child");
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(DEADLINE, reader).await;
        }
    }
}

fn read_into(
    stream: impl AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<String>>,
    lines: watch::Sender<u64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            {
                let mut text = into.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
            lines.send_modify(|n| *n += 1);
        }
    })
}
