//! One PTY and the process running in it: spawn, write, resize, and read
//! to the end.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

use rendezvous_proto::ids::clamp_cells;
use rustix::process::Pid;
use tokio::process::Child;

use crate::processes::SessionProcesses;

/// `TERM` of every session's process; the web guest is xterm.js. A
/// [`HostBuilder::env`](crate::HostBuilder::env) entry overrides it.
pub const TERM: &str = "xterm-256color";

/// Columns of a PTY whose requested width is 0.
pub const DEFAULT_COLS: u32 = 80;
/// Rows of a PTY whose requested height is 0.
pub const DEFAULT_ROWS: u32 = 24;

/// What to run in each session's PTY.
#[derive(Debug, Clone)]
pub(crate) struct CommandSpec {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    /// Variables set for the process, after [`TERM`], in order.
    pub(crate) env: Vec<(OsString, OsString)>,
    /// Variables removed from the inherited environment (e.g. the variable
    /// that carried the secret to the CLI).
    pub(crate) env_remove: Vec<OsString>,
    pub(crate) current_dir: Option<PathBuf>,
}

impl CommandSpec {
    /// The user's shell, with no arguments: `$SHELL`, else the login shell
    /// in the passwd database, else `/bin/sh` (as tmux chooses its
    /// default-shell). CI containers and services often run without `$SHELL`;
    /// their user's login shell is still the one people expect.
    pub(crate) fn user_shell() -> Self {
        Self::new(
            choose_shell(std::env::var_os("SHELL"), login_shell()),
            Vec::new(),
        )
    }

    pub(crate) fn new(program: OsString, args: Vec<OsString>) -> Self {
        Self {
            program,
            args,
            env: Vec::new(),
            env_remove: Vec::new(),
            current_dir: None,
        }
    }
}

/// The first usable of `$SHELL` and the login shell, else `/bin/sh`.
fn choose_shell(env: Option<OsString>, login: Option<PathBuf>) -> OsString {
    env.filter(|s| !s.is_empty())
        .or_else(|| login.map(PathBuf::into_os_string).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "/bin/sh".into())
}

/// This process's user's login shell from the passwd database; `None` when
/// the user has no entry (e.g. an arbitrary UID in a container).
fn login_shell() -> Option<PathBuf> {
    match nix::unistd::User::from_uid(nix::unistd::getuid()) {
        Ok(user) => user.map(|u| u.shell),
        Err(err) => {
            tracing::debug!(error = %err, "cannot read the passwd entry for the login shell");
            None
        }
    }
}

/// A PTY size in character cells, each within `1..=1000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PtySize {
    pub(crate) cols: u16,
    pub(crate) rows: u16,
}

impl PtySize {
    /// A size from the wire: each dimension clamped to `1..=1000`, and 0
    /// replaced by [`DEFAULT_COLS`] x [`DEFAULT_ROWS`].
    pub(crate) fn from_wire(cols: u32, rows: u32) -> Self {
        let cells = |value, default| {
            u16::try_from(clamp_cells(value, default)).unwrap_or(u16::MAX) // never: clamped to 1000
        };
        Self {
            cols: cells(cols, DEFAULT_COLS),
            rows: cells(rows, DEFAULT_ROWS),
        }
    }

    fn to_pty(self) -> pty_process::Size {
        pty_process::Size::new(self.rows, self.cols)
    }
}

/// A running process on its own PTY, in its own session and process group.
#[derive(Debug)]
pub(crate) struct PtyProcess {
    /// Output of the process (read side of the PTY master).
    pub(crate) reader: pty_process::OwnedReadPty,
    /// Input of the process, and the PTY's size.
    pub(crate) writer: PtyWriter,
    /// The process itself (the session leader); killed if dropped.
    pub(crate) child: Child,
    /// Every process of the PTY's session; SIGKILLed if dropped before
    /// [`SessionProcesses::terminate`] ran.
    pub(crate) processes: SessionProcesses,
}

/// Starts `spec` on a new PTY of `size`, as the leader of a new session and
/// process group (pty-process calls `setsid` and makes the PTY its
/// controlling terminal).
///
/// # Errors
/// The PTY cannot be allocated, or the program cannot be started (not
/// found, not executable, bad working directory).
pub(crate) fn spawn(spec: &CommandSpec, size: PtySize) -> io::Result<PtyProcess> {
    let (pty, pts) = pty_process::open().map_err(into_io)?;
    pty.resize(size.to_pty()).map_err(into_io)?;
    let mut command = pty_process::Command::new(&spec.program)
        .args(&spec.args)
        .kill_on_drop(true);
    for key in &spec.env_remove {
        command = command.env_remove(key);
    }
    command = command.env("TERM", TERM);
    for (key, value) in &spec.env {
        command = command.env(key, value);
    }
    if let Some(dir) = &spec.current_dir {
        command = command.current_dir(dir);
    }
    // `spawn` consumes (and so closes) our copy of the PTY's slave side:
    // once the process and its children have closed theirs, reads of the
    // master end with EIO.
    let child = command.spawn(pts).map_err(into_io)?;
    let leader = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::other("the new process has no process ID"))?;
    let (reader, writer) = pty.into_split();
    Ok(PtyProcess {
        reader,
        writer: PtyWriter(writer),
        child,
        processes: SessionProcesses::new(leader),
    })
}

/// The write side of a session's PTY.
#[derive(Debug)]
pub(crate) struct PtyWriter(pty_process::OwnedWritePty);

impl PtyWriter {
    /// Writes all of `data` to the PTY's input. Waits while the PTY's input
    /// buffer is full (the process is not reading).
    ///
    /// # Errors
    /// The PTY is gone (EIO once the process has exited).
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        self.0.write_all(data).await
    }

    /// Sets the PTY's size; the process gets SIGWINCH.
    ///
    /// # Errors
    /// The resize ioctl failed.
    pub(crate) fn resize(&self, size: PtySize) -> io::Result<()> {
        self.0.resize(size.to_pty()).map_err(into_io)
    }
}

/// True when `error` means the PTY has no more output: Linux returns EIO
/// from a read of the master once every slave descriptor is closed.
pub(crate) fn is_end_of_output(error: &io::Error) -> bool {
    rustix::io::Errno::from_io_error(error) == Some(rustix::io::Errno::IO)
}

fn into_io(error: pty_process::Error) -> io::Error {
    match error {
        pty_process::Error::Io(e) => e,
        pty_process::Error::Rustix(errno) => errno.into(),
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt as _;
    use tokio::time::timeout;

    use super::*;

    /// Upper bound for anything a test waits for.
    const TEST_DEADLINE: Duration = Duration::from_secs(20);

    pub(crate) fn bash() -> CommandSpec {
        CommandSpec::new("bash".into(), vec!["--norc".into(), "--noprofile".into()])
    }

    /// Reads the PTY until `found` picks something out of all output so far.
    pub(crate) async fn read_until_found<T>(
        process: &mut PtyProcess,
        found: impl Fn(&str) -> Option<T>,
    ) -> T {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let result = timeout(TEST_DEADLINE, async {
            loop {
                if let Some(value) = found(&String::from_utf8_lossy(&seen)) {
                    return value;
                }
                let n = process.reader.read(&mut buf).await.unwrap();
                assert!(n > 0, "PTY closed");
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        result.unwrap_or_else(|_| panic!("not found in {:?}", String::from_utf8_lossy(&seen)))
    }

    /// Reads the PTY until its output contains `needle`.
    async fn read_until(process: &mut PtyProcess, needle: &str) {
        read_until_found(process, |s| s.contains(needle).then_some(())).await;
    }

    #[test]
    fn the_shell_is_shell_else_the_login_shell_else_bin_sh() {
        let login = Some(PathBuf::from("/bin/bash"));
        assert_eq!(
            choose_shell(Some("/bin/zsh".into()), login.clone()),
            "/bin/zsh"
        );
        assert_eq!(choose_shell(Some("".into()), login.clone()), "/bin/bash");
        assert_eq!(choose_shell(None, login), "/bin/bash");
        assert_eq!(choose_shell(None, Some(PathBuf::new())), "/bin/sh");
        assert_eq!(choose_shell(None, None), "/bin/sh");
    }

    #[test]
    fn the_login_shell_is_the_passwd_entry_of_this_user() {
        let uid = nix::unistd::getuid().as_raw().to_string();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let entry = passwd
            .lines()
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|fields| fields.get(2) == Some(&uid.as_str()))
            .expect("this test runs as a user listed in /etc/passwd");
        assert_eq!(login_shell(), Some(PathBuf::from(entry[6])));
    }

    #[test]
    fn sizes_are_clamped_and_zero_is_default() {
        assert_eq!(PtySize::from_wire(0, 0), PtySize { cols: 80, rows: 24 });
        assert_eq!(
            PtySize::from_wire(5000, 7),
            PtySize {
                cols: 1000,
                rows: 7
            }
        );
    }

    #[tokio::test]
    async fn bash_runs_input_and_reports_exit_code() {
        let mut process = spawn(&bash(), PtySize::from_wire(80, 24)).unwrap();
        process
            .writer
            .write_all(b"echo hi-$((1+1))\n")
            .await
            .unwrap();
        read_until(&mut process, "hi-2").await;
        process.writer.write_all(b"exit 3\n").await.unwrap();
        // Read to the end of output: EIO once bash has exited.
        timeout(TEST_DEADLINE, async {
            let mut buf = [0u8; 4096];
            loop {
                match process.reader.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if is_end_of_output(&e) => break,
                    Err(e) => panic!("read failed: {e}"),
                }
            }
        })
        .await
        .unwrap();
        let status = timeout(TEST_DEADLINE, process.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(3));
    }

    #[tokio::test]
    async fn environment_has_term_and_removed_variables_are_gone() {
        let mut spec = bash();
        spec.env.push(("RDV_TEST_VAR".into(), "set-by-test".into()));
        spec.env_remove.push("HOME".into());
        let mut process = spawn(&spec, PtySize::from_wire(80, 24)).unwrap();
        process
            .writer
            .write_all(b"echo \"[$TERM|$RDV_TEST_VAR|${HOME-unset}]\"\n")
            .await
            .unwrap();
        read_until(&mut process, "[xterm-256color|set-by-test|unset]").await;
    }

    #[tokio::test]
    async fn resize_is_seen_by_the_process() {
        let mut process = spawn(&bash(), PtySize::from_wire(80, 24)).unwrap();
        process.writer.write_all(b"stty size\n").await.unwrap();
        read_until(&mut process, "24 80").await;
        process.writer.resize(PtySize::from_wire(123, 45)).unwrap();
        process.writer.write_all(b"stty size\n").await.unwrap();
        read_until(&mut process, "45 123").await;
    }

    #[tokio::test]
    async fn spawn_failure_is_an_error() {
        let spec = CommandSpec::new("/nonexistent/program".into(), Vec::new());
        assert!(spawn(&spec, PtySize::from_wire(80, 24)).is_err());
    }
}
