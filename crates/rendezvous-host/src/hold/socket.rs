//! The hold's control socket: a Unix socket that only the job's user can
//! open (mode 0600 in a 0700 directory, and the peer's uid checked), over
//! which `rendezvous continue`, `extend`, `wait` and `status` reach the
//! hold from any shell of the task. The host names it in its shells'
//! environment as [`CONTROL_SOCKET_ENV`].
//!
//! The protocol is one JSON line each way ([`ControlRequest`],
//! [`ControlReply`]); `wait` gets one reply per event, then `ended`.

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use super::{HoldEnd, HoldError, HoldEvent, HoldHandle, HoldOptions, HoldStatus};

/// The variable naming the control socket in each shell of the host.
pub const CONTROL_SOCKET_ENV: &str = "RENDEZVOUS_CONTROL_SOCKET";

/// Longest request or reply line, in bytes (4 KiB); a longer request is
/// refused.
pub const MAX_CONTROL_LINE_BYTES: usize = 4096;

/// How long a client may take to send its request, and a `request` to get
/// its answer (10 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connections may take to finish once the hold has ended (2 s).
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections served at once (16); more wait in the listen backlog.
const MAX_CONTROL_CONNECTIONS: usize = 16;

/// What a client asks over the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlRequest {
    /// End the hold; the step exits with `exit_code` if given.
    Continue {
        /// `continue --exit-code N`.
        exit_code: Option<i32>,
    },
    /// Hold at least `by` from now.
    Extend {
        /// The extension.
        by: Duration,
    },
    /// The hold's state.
    Status,
    /// Start a parked hold with these rules and follow it to its end
    /// (`rendezvous wait` for a detached host).
    Wait {
        /// The rules.
        options: HoldOptions,
    },
}

/// What the control socket answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlReply {
    /// Done; the state after.
    Ok {
        /// The hold's state.
        status: HoldStatus,
    },
    /// Refused, with a sentence saying why.
    Error {
        /// Why.
        message: String,
    },
    /// For `wait`: one event, as its log line.
    Event {
        /// The line ([`HoldEvent`]'s `Display`).
        line: String,
    },
    /// For `wait`: the hold ended.
    Ended {
        /// How.
        end: HoldEnd,
    },
}

/// A listening control socket; its file (and the private directory made
/// for it, if any) is removed when it drops.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// A directory made by [`bind_private`](Self::bind_private), removed
    /// with the socket.
    own_dir: Option<PathBuf>,
}

impl ControlSocket {
    /// Binds `control.sock` in a new directory of mode 0700 under
    /// `$XDG_RUNTIME_DIR` (when set), else the system's temporary
    /// directory; the socket file gets mode 0600.
    ///
    /// # Errors
    /// [`HoldError::Socket`] when the directory or socket cannot be made.
    pub fn bind_private() -> Result<Self, HoldError> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| HoldError::Socket(e.to_string()))?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = base.join(format!("rendezvous-{name}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| socket_error(&dir, &e))?;
        let mut socket = Self::bind_at(&dir.join("control.sock")).inspect_err(|_| {
            let _ = std::fs::remove_dir(&dir);
        })?;
        socket.own_dir = Some(dir);
        Ok(socket)
    }

    /// Binds the socket at `path`, whose directory must exist, belong to
    /// this user and be closed to others (no group or other permission
    /// bits); a socket left there by an earlier run is replaced. The file
    /// gets mode 0600.
    ///
    /// # Errors
    /// [`HoldError::Socket`] when the directory is not private or the
    /// socket cannot be bound.
    pub fn bind_at(path: &Path) -> Result<Self, HoldError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        check_private_dir(dir)?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() || meta.is_dir() => {
                return Err(HoldError::Socket(format!(
                    "{}: exists and is not a socket",
                    path.display()
                )));
            }
            Ok(_) => std::fs::remove_file(path).map_err(|e| socket_error(path, &e))?,
            Err(_) => {}
        }
        let listener = UnixListener::bind(path).map_err(|e| socket_error(path, &e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| socket_error(path, &e))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            own_dir: None,
        })
    }

    /// The socket's path, for [`CONTROL_SOCKET_ENV`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests for `hold` until dropped (run it in a `select!` or
    /// a task its owner aborts). Connections from another uid are closed
    /// unanswered; each connection carries one request.
    pub async fn serve(&self, hold: HoldHandle) {
        self.serve_until(hold, std::future::pending::<()>()).await;
    }

    /// Serves requests for `hold` until `until` resolves; then stops
    /// accepting and gives the connections open (a `wait` following the
    /// hold to its end) up to 2 s to finish. Returns `until`'s output.
    pub async fn serve_until<F: std::future::Future>(
        &self,
        hold: HoldHandle,
        until: F,
    ) -> F::Output {
        let uid = rustix::process::getuid().as_raw();
        let mut connections = JoinSet::new();
        tokio::pin!(until);
        let output = loop {
            tokio::select! {
                output = &mut until => break output,
                accepted = self.listener.accept(), if connections.len() < MAX_CONTROL_CONNECTIONS => {
                    let Ok((stream, _)) = accepted else { continue };
                    if stream.peer_cred().map(|c| c.uid()).ok() != Some(uid) {
                        tracing::warn!("control socket: refused a connection from another user");
                        continue;
                    }
                    connections.spawn(serve_one(stream, hold.clone()));
                }
                Some(_) = connections.join_next() => {}
            }
        };
        drop(hold);
        let _ = tokio::time::timeout(FINISH_TIMEOUT, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        output
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.own_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn check_private_dir(dir: &Path) -> Result<(), HoldError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| socket_error(dir, &e))?;
    let uid = rustix::process::getuid().as_raw();
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(HoldError::Socket(format!(
            "{}: must be a directory of this user with mode 0700",
            dir.display()
        )));
    }
    Ok(())
}

fn socket_error(path: &Path, e: &std::io::Error) -> HoldError {
    HoldError::Socket(format!("control socket {}: {e}", path.display()))
}

/// Serves one connection: reads its request, answers it.
async fn serve_one(stream: UnixStream, hold: HoldHandle) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_CONTROL_LINE_BYTES as u64);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    let request = match read {
        Ok(Ok(_)) => serde_json::from_str::<ControlRequest>(&line)
            .map_err(|e| format!("not a control request: {e}")),
        _ => return,
    };
    let reply = match request {
        Err(message) => ControlReply::Error { message },
        Ok(ControlRequest::Continue { exit_code }) => match hold.continue_job(exit_code).await {
            Ok(()) => ControlReply::Ok {
                status: HoldStatus {
                    holding: false,
                    guests: 0,
                    remaining: Some(Duration::ZERO),
                },
            },
            Err(e) => error(&e),
        },
        Ok(ControlRequest::Extend { by }) => hold
            .extend(by)
            .await
            .map_or_else(|e| error(&e), |status| ControlReply::Ok { status }),
        Ok(ControlRequest::Status) => hold
            .status()
            .await
            .map_or_else(|e| error(&e), |status| ControlReply::Ok { status }),
        Ok(ControlRequest::Wait { options }) => {
            let events = hold.events();
            match hold.start(options).await {
                Ok(()) => return follow(events, &mut write).await,
                Err(e) => error(&e),
            }
        }
    };
    let _ = send(&mut write, &reply).await;
}

fn error(e: &HoldError) -> ControlReply {
    ControlReply::Error {
        message: e.to_string(),
    }
}

/// Sends each event of `events` as a line until the hold ends.
async fn follow(
    mut events: broadcast::Receiver<HoldEvent>,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) {
    loop {
        let reply = match events.recv().await {
            Ok(HoldEvent::Ended(end)) => ControlReply::Ended { end },
            Ok(event) => ControlReply::Event {
                line: event.to_string(),
            },
            Err(broadcast::error::RecvError::Lagged(n)) => ControlReply::Event {
                line: format!("({n} events skipped)"),
            },
            Err(broadcast::error::RecvError::Closed) => ControlReply::Ended {
                end: HoldEnd::HostStopped,
            },
        };
        let last = matches!(reply, ControlReply::Ended { .. });
        if send(write, &reply).await.is_err() || last {
            return;
        }
    }
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &ControlReply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_string(reply).map_err(std::io::Error::other)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await
}

/// Connects to the control socket at `path` and sends `request`.
async fn connect(path: &Path, request: &ControlRequest) -> Result<UnixStream, HoldError> {
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        HoldError::Socket(format!(
            "cannot reach the host's control socket {}: {e}",
            path.display()
        ))
    })?;
    let mut line = serde_json::to_string(request).map_err(|e| HoldError::Socket(e.to_string()))?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(|e| socket_error(path, &e))?;
    Ok(stream)
}

/// Reads one reply line.
async fn reply(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    path: &Path,
) -> Result<ControlReply, HoldError> {
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .await
        .map_err(|e| socket_error(path, &e))?;
    if n == 0 {
        return Err(HoldError::Refused(
            "the host closed the control socket without an answer".into(),
        ));
    }
    serde_json::from_str(&line)
        .map_err(|e| HoldError::Refused(format!("unexpected answer from the host: {e}")))
}

/// Sends `request` (not `Wait`; see [`wait`]) to the control socket at
/// `path` and returns the hold's state after it.
///
/// # Errors
/// [`HoldError::Socket`] when the socket cannot be reached or takes more
/// than 10 s; [`HoldError::Refused`] with the host's sentence when it
/// refuses.
pub async fn request(path: &Path, request: &ControlRequest) -> Result<HoldStatus, HoldError> {
    let exchange = async {
        let stream = connect(path, request).await?;
        let mut reader = BufReader::new(stream);
        reply(&mut reader, path).await
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Err(_) => Err(HoldError::Socket(format!(
            "the host's control socket {} did not answer within {} s",
            path.display(),
            REQUEST_TIMEOUT.as_secs()
        ))),
        Ok(Ok(ControlReply::Ok { status })) => Ok(status),
        Ok(Ok(ControlReply::Error { message })) => Err(HoldError::Refused(message)),
        Ok(Ok(other)) => Err(HoldError::Refused(format!("unexpected answer: {other:?}"))),
        Ok(Err(e)) => Err(e),
    }
}

/// Starts the parked hold behind the socket at `path` with `options` and
/// follows it: calls `on_line` with each event's log line, returns how it
/// ended. Waits as long as the hold does.
///
/// # Errors
/// As [`request`]; the connection breaking before the end is
/// [`HoldError::Refused`].
pub async fn wait(
    path: &Path,
    options: HoldOptions,
    mut on_line: impl FnMut(&str),
) -> Result<HoldEnd, HoldError> {
    let stream = tokio::time::timeout(
        REQUEST_TIMEOUT,
        connect(path, &ControlRequest::Wait { options }),
    )
    .await
    .map_err(|_| HoldError::Socket(format!("{}: no answer", path.display())))??;
    let mut reader = BufReader::new(stream);
    loop {
        match reply(&mut reader, path).await? {
            ControlReply::Event { line } => on_line(&line),
            ControlReply::Ended { end } => return Ok(end),
            ControlReply::Error { message } => return Err(HoldError::Refused(message)),
            ControlReply::Ok { .. } => {}
        }
    }
}
