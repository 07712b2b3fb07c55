//! Ending every process of a session: SIGHUP, a grace period, SIGKILL.
//!
//! A session's command runs as the leader of its own POSIX session (and
//! process group), whose ID is the leader's PID. Killing that one process
//! group is not enough: an interactive shell puts each job (foreground or
//! `&`) in a process group of its own, and when the shell dies of SIGHUP
//! those jobs survive it. So on Linux we find every process group of the
//! session in `/proc` and signal each. Elsewhere only the leader's group is
//! signalled. A process that left the session (`setsid`, daemons) is out
//! of reach by design.

use std::collections::BTreeSet;
use std::io;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::process::Child;
use tokio::time::Instant;

/// How long a session's processes have, after SIGHUP, to exit before they
/// get SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_millis(2_000);

/// How often [`SessionProcesses::terminate`] checks, during
/// [`KILL_GRACE`], whether processes are left.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The processes of one PTY session.
#[derive(Debug)]
pub(crate) struct SessionProcesses {
    /// The session ID: the leader's PID, also its process group ID.
    sid: Pid,
    /// True until [`terminate`](Self::terminate) has finished; while true,
    /// dropping this value sends SIGKILL (the session's task was aborted).
    armed: bool,
}

impl SessionProcesses {
    /// The session led by the process `leader`.
    pub(crate) fn new(leader: Pid) -> Self {
        Self {
            sid: leader,
            armed: true,
        }
    }

    /// Ends every process of the session: SIGHUP (and SIGCONT, so stopped
    /// jobs see it), then SIGKILL to whatever is left after [`KILL_GRACE`].
    /// Reaps the leader and returns how it ended. Fine to call after the
    /// leader has exited: leftover processes get the same treatment.
    ///
    /// # Errors
    /// Waiting for the leader failed.
    pub(crate) async fn terminate(
        mut self,
        leader: &mut Child,
    ) -> io::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + KILL_GRACE;
        self.signal(Signal::HUP);
        self.signal(Signal::CONT);
        // Reap the leader first, so it stops counting as a live process.
        let mut status = tokio::time::timeout_at(deadline, leader.wait()).await.ok();
        while self.any_alive() && Instant::now() < deadline {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        if self.any_alive() {
            tracing::debug!(
                sid = self.sid.as_raw_nonzero(),
                "SIGKILL after grace period"
            );
            self.signal(Signal::KILL);
        }
        self.armed = false;
        if status.is_none() {
            status = Some(leader.wait().await);
        }
        status.unwrap_or_else(|| Err(io::Error::other("the leader was not reaped")))
    }

    /// Sends `signal` to every process group of the session. Groups that
    /// are already gone are fine.
    fn signal(&self, signal: Signal) {
        for pgid in self.groups().into_iter().filter_map(Pid::from_raw) {
            match rustix::process::kill_process_group(pgid, signal) {
                Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                Err(e) => tracing::debug!(
                    pgid = pgid.as_raw_nonzero(),
                    error = %e,
                    "killpg failed"
                ),
            }
        }
    }

    /// The session's process groups: the leader's, and (on Linux) every
    /// other group a live process of the session is in. A process group
    /// never spans two sessions, so signalling these reaches no one else.
    fn groups(&self) -> BTreeSet<i32> {
        let mut groups = BTreeSet::from([self.sid.as_raw_nonzero().get()]);
        if let Some(members) = members(self.sid) {
            groups.extend(members.into_iter().map(|m| m.pgid));
        }
        groups
    }

    /// True while a process of the session is alive (zombies excepted,
    /// where `/proc` tells them apart).
    fn any_alive(&self) -> bool {
        match members(self.sid) {
            Some(members) => !members.is_empty(),
            None => !matches!(
                rustix::process::test_kill_process_group(self.sid),
                Err(rustix::io::Errno::SRCH)
            ),
        }
    }
}

impl Drop for SessionProcesses {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::KILL);
        }
    }
}

/// A live process of a session.
struct Member {
    /// Its process group ID.
    pgid: i32,
}

/// The live (not zombie) processes whose session ID is `sid`, from
/// `/proc`; `None` where there is no `/proc` (not Linux).
fn members(sid: Pid) -> Option<Vec<Member>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let mut members = Vec::new();
    for entry in entries.flatten() {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        // The process may be gone by now: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((state, pgid, session)) = parse_stat(&stat)
            && session == sid.as_raw_nonzero().get()
            && state != 'Z'
        {
            members.push(Member { pgid });
        }
    }
    Some(members)
}

/// State, process group and session from a `/proc/PID/stat` line:
/// `pid (comm) state ppid pgrp session ...`. The command name may contain
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32, i32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgid = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some((state, pgid, session))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pty::tests::{bash, read_until_found};
    use crate::pty::{PtyProcess, PtySize, spawn};

    /// Upper bound for anything a test waits for.
    const TEST_DEADLINE: Duration = Duration::from_secs(20);

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        assert_eq!(
            parse_stat("42 (a) b (c)) S 1 40 39 0 -1"),
            Some(('S', 40, 39))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    /// True once `pid` has exited (gone, or a zombie nobody reaped yet).
    fn is_dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => parse_stat(&stat).is_none_or(|(state, ..)| state == 'Z'),
        }
    }

    /// Waits until `pid` has exited: SIGKILL lands asynchronously.
    async fn wait_dead(pid: i32) {
        tokio::time::timeout(TEST_DEADLINE, async {
            while !is_dead(pid) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("pid {pid} survived"));
    }

    /// Runs `script` in bash; it must print `pid=N.` for each process the
    /// test then expects `terminate` to end. Returns those PIDs.
    async fn start(script: &str, count: usize) -> (PtyProcess, Vec<i32>) {
        let mut process = spawn(&bash(), PtySize::from_wire(200, 24)).unwrap();
        process.writer.write_all(script.as_bytes()).await.unwrap();
        let pids = read_until_found(&mut process, |output| {
            let pids: Vec<i32> = output
                .split("pid=")
                .skip(1)
                .filter_map(|rest| rest.split('.').next()?.parse().ok())
                .collect();
            (pids.len() >= count).then_some(pids)
        })
        .await;
        for &pid in &pids {
            assert!(!is_dead(pid));
        }
        (process, pids)
    }

    async fn terminate_and_check(process: PtyProcess, pids: &[i32]) -> std::process::ExitStatus {
        let PtyProcess {
            mut child,
            processes,
            ..
        } = process;
        let status = tokio::time::timeout(TEST_DEADLINE, processes.terminate(&mut child))
            .await
            .unwrap()
            .unwrap();
        for &pid in pids {
            wait_dead(pid).await;
        }
        status
    }

    #[tokio::test]
    async fn a_child_ignoring_sighup_gets_sigkill() {
        // Without job control the child stays in the leader's group.
        let (process, pids) = start(
            "set +m; (trap '' HUP; echo \"pid=$BASHPID.\"; exec sleep 1000) & wait\n",
            1,
        )
        .await;
        let status = terminate_and_check(process, &pids).await;
        assert!(!status.success());
    }

    #[tokio::test]
    async fn foreground_and_background_jobs_in_their_own_groups_end_too() {
        // With job control (bash's default on a terminal) each job gets its
        // own process group, which the shell's SIGHUP death leaves alive.
        let (process, pids) = start(
            "sleep 1000 & echo \"pid=$!.\"; sh -c 'echo \"pid=$$.\"; exec sleep 1000'\n",
            2,
        )
        .await;
        let groups = process.processes.groups();
        assert!(groups.len() >= 3, "{groups:?}");
        terminate_and_check(process, &pids).await;
    }
}
