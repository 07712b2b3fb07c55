//! How `bench scale` drives its load generators, each a child process of
//! this binary (`bench scale-hosts`, `bench scale-guests`): one command a
//! line on the child's stdin, one JSON object a line on its stdout in
//! answer. An answer `{"error": "..."}` is a failure. The child ends when
//! its stdin closes. Also: reading a process's CPU time and RSS from
//! `/proc`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The environment variable that hands the bench's task secret to the
/// generators (not their command line, which `ps` shows).
pub const SECRET_ENV: &str = "RENDEZVOUS_BENCH_SECRET";

/// A load generator child process, killed when dropped.
pub struct Generator {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Generator {
    /// Starts `exe bench <subcommand> <args>` with the secret in its
    /// environment.
    pub fn spawn(
        exe: &Path,
        name: &'static str,
        args: &[String],
        secret: &str,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .arg("bench")
            .arg(name)
            .args(args)
            .env(SECRET_ENV, secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} bench {name}", exe.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        Ok(Self {
            name,
            child,
            stdin: Some(stdin),
            stdout,
        })
    }

    /// The child's process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `command` and waits at most `wait` for its answer.
    pub async fn ask(&mut self, command: &str, wait: Duration) -> anyhow::Result<Value> {
        let name = self.name;
        let stdin = self.stdin.as_mut().context("the generator was closed")?;
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .with_context(|| format!("bench {name} has exited"))?;
        stdin.flush().await?;
        let line = tokio::time::timeout(wait, self.stdout.next_line())
            .await
            .with_context(|| format!("bench {name} did not answer {command:?} within {wait:?}"))?
            .with_context(|| format!("cannot read from bench {name}"))?
            .with_context(|| format!("bench {name} exited before answering {command:?}"))?;
        let answer: Value = serde_json::from_str(&line)
            .with_context(|| format!("bench {name} answered {line:?}, not JSON"))?;
        if let Some(error) = answer.get("error").and_then(Value::as_str) {
            bail!("bench {name}: {error}");
        }
        Ok(answer)
    }

    /// Closes the child's stdin and waits (at most 30 s) for it to exit.
    pub async fn close(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .with_context(|| format!("bench {} did not exit within 30 s", self.name))??;
        if !status.success() {
            bail!("bench {} exited with {status}", self.name);
        }
        Ok(())
    }
}

/// The child's side: the commands on stdin, one line each, until it
/// closes.
pub struct Commands(Lines<BufReader<tokio::io::Stdin>>);

impl Commands {
    /// Reads this process's stdin.
    pub fn stdin() -> Self {
        Self(BufReader::new(tokio::io::stdin()).lines())
    }

    /// The next command, split into its words; `None` once stdin closes.
    pub async fn next(&mut self) -> anyhow::Result<Option<Vec<String>>> {
        loop {
            let Some(line) = self.0.next_line().await? else {
                return Ok(None);
            };
            let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if !words.is_empty() {
                return Ok(Some(words));
            }
        }
    }
}

/// Writes one answer line on stdout.
pub fn answer(value: &Value) {
    println!("{value}");
}

/// Writes an error answer (the command failed; the child goes on).
pub fn answer_error(error: &anyhow::Error) {
    answer(&serde_json::json!({ "error": format!("{error:#}") }));
}

/// CPU time process `pid` has used so far (user plus system), from
/// `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no command name in /proc/PID/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("a short /proc/PID/stat")
    };
    let total = ticks(11)? + ticks(12)?;
    let per_s = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_secs_f64(total as f64 / per_s as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_moves() {
        let pid = std::process::id();
        let before = cpu_time(pid).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_time(pid).unwrap() <= before && start.elapsed() < Duration::from_secs(10) {
            for i in 0..1_000_000u64 {
                x = x.wrapping_add(i * i);
            }
            std::hint::black_box(x);
        }
        assert!(cpu_time(pid).unwrap() > before);
    }
}
