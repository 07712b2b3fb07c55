//! The audit log: one structured event for each host registration
//! (accepted or refused), guest attach and detach, failed authentication,
//! rate-limit trip and session end (`rendezvous serve --audit-log
//! FILE|-`).
//!
//! Each event names what it is about (task, owner, host, session, guest,
//! role, client IP, the guest token's `sub`) and carries a keyed
//! fingerprint of the credential that was presented: the first 16 bytes of
//! HMAC-SHA256 under the server's audit key, in hex. The fingerprint lets
//! an operator tell which credential was used, or that two failures used
//! the same one, and tells nothing of the credential to whoever reads the
//! log without the key. The credential itself is never written.
//!
//! Events go to a file as JSON lines (one object per line, appended; the
//! file is created mode 0600 and reopened by [`AuditLog::reopen`], for
//! logrotate), or into the server's log as events of target
//! [`AUDIT_TARGET`]. Writing a file happens on a thread of its own, behind
//! a queue of [`AUDIT_QUEUE_EVENTS`] events: a slow disk never slows the
//! relay. When the queue is full the event is dropped and counted
//! (`rendezvous_audit_events_dropped_total`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use prometheus_client::metrics::counter::Counter;
use rendezvous_proto::Role;
use serde::Serialize;
use sha2::Sha256;

/// The `tracing` target of audit events when they go into the log
/// (`--audit-log -`).
pub const AUDIT_TARGET: &str = "rendezvous::audit";

/// Events waiting to be written to the audit file (4096); past it, events
/// are dropped and counted.
pub const AUDIT_QUEUE_EVENTS: usize = 4096;

/// Bytes of the fingerprint's HMAC that are kept (16, 32 hex digits).
pub const FINGERPRINT_BYTES: usize = 16;

/// Smallest audit key from a file, in bytes (32).
pub const MIN_AUDIT_KEY_BYTES: usize = 32;

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A host registered under a task.
    HostRegistered,
    /// A host was refused: not admitted, or its Hello was refused.
    HostRefused,
    /// A registered host left (its Control stream ended).
    HostLeft,
    /// A guest attached to a session (or resumed its attachment).
    GuestAttached,
    /// A guest's stream ended.
    GuestDetached,
    /// A guest presented a wrong secret, or a token that is invalid or for
    /// another task.
    AuthFailed,
    /// A client IP or a task reached its limit of failed authentications
    /// and is locked for a while ([`crate::auth_limit`]).
    RateLimited,
    /// A session ended, with its reason.
    SessionEnded,
}

/// One audit event. Fields that do not apply are left out of the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// When, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// What happened.
    pub event: AuditKind,
    /// The task ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Whose task it is ([`crate::registry::Owner`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The host's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The session ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The guest ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// The guest's role: `read_write` or `read_only`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// The client's IP address (the TCP peer's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<IpAddr>,
    /// The guest token's `sub` claim: whom it was given to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// What kind of credential was presented: `secret`, `guest_token`,
    /// `host_token`, `oidc_token`, or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_kind: Option<&'static str>,
    /// Keyed fingerprint of the credential (see the module docs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Why: the error a refusal was answered with, or why a session ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` now, with no other field set.
    pub fn new(kind: AuditKind) -> Self {
        Self {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            event: kind,
            task: None,
            owner: None,
            host: None,
            session: None,
            guest: None,
            role: None,
            client_ip: None,
            sub: None,
            credential_kind: None,
            credential: None,
            reason: None,
        }
    }

    /// The same event as `kind`, now: e.g. a guest's detach from its
    /// attach.
    pub fn with_kind(mut self, kind: AuditKind) -> Self {
        self.time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        self.event = kind;
        self
    }

    /// Sets the task ID.
    pub fn task(mut self, task: impl ToString) -> Self {
        self.task = Some(task.to_string());
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, owner: impl ToString) -> Self {
        self.owner = Some(owner.to_string());
        self
    }

    /// Sets the host's name.
    pub fn host(mut self, host: impl ToString) -> Self {
        self.host = Some(host.to_string());
        self
    }

    /// Sets the session ID.
    pub fn session(mut self, session: impl ToString) -> Self {
        self.session = Some(session.to_string());
        self
    }

    /// Sets the guest ID.
    pub fn guest(mut self, guest: impl ToString) -> Self {
        self.guest = Some(guest.to_string());
        self
    }

    /// Sets the role.
    pub fn role(mut self, role: Role) -> Self {
        self.role = Some(match role {
            Role::ReadOnly => "read_only",
            _ => "read_write",
        });
        self
    }

    /// Sets the client IP, when known.
    pub fn client_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.client_ip = ip;
        self
    }

    /// Sets the token's `sub`, when it has one.
    pub fn token_sub(mut self, sub: Option<&str>) -> Self {
        self.sub = sub.map(str::to_owned);
        self
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl ToString) -> Self {
        self.reason = Some(reason.to_string());
        self
    }

    /// Sets the credential's kind and fingerprint (from
    /// [`AuditLog::fingerprint`]).
    pub fn credential(mut self, kind: &'static str, fingerprint: Option<String>) -> Self {
        self.credential_kind = Some(kind);
        self.credential = fingerprint;
        self
    }

    /// The event as one JSON line, without the newline.
    pub fn to_json(&self) -> String {
        // Every field is a string, an address or a unit enum: this cannot
        // fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The event as one logfmt line (`key=value`, as Heroku's and
    /// Grafana Loki's logfmt), without the newline: the fields of
    /// [`AuditEvent::to_json`] in the same order, those that do not apply
    /// left out; a value with a space, a quote, `=` or a control character
    /// is quoted, with `"` and `\` escaped.
    pub fn to_text(&self) -> String {
        let event = serde_json::to_value(self.event)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let fields: [(&str, Option<String>); 13] = [
            ("time", Some(self.time.clone())),
            ("event", Some(event)),
            ("task", self.task.clone()),
            ("owner", self.owner.clone()),
            ("host", self.host.clone()),
            ("session", self.session.clone()),
            ("guest", self.guest.clone()),
            ("role", self.role.map(str::to_owned)),
            ("client_ip", self.client_ip.map(|ip| ip.to_string())),
            ("sub", self.sub.clone()),
            ("credential_kind", self.credential_kind.map(str::to_owned)),
            ("credential", self.credential.clone()),
            ("reason", self.reason.clone()),
        ];
        let mut line = String::new();
        for (key, value) in fields {
            let Some(value) = value else { continue };
            if !line.is_empty() {
                line.push(' ');
            }
            let plain = !value.is_empty()
                && !value
                    .chars()
                    .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
            if plain {
                let _ = write!(line, "{key}={value}");
            } else {
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                let escaped: String = escaped
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                let _ = write!(line, "{key}=\"{escaped}\"");
            }
        }
        line
    }
}

/// Errors opening the audit log or reading its key.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit file cannot be opened for appending.
    #[error("cannot open the audit log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file cannot be read.
    #[error("cannot read the audit key file {path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file holds fewer than [`MIN_AUDIT_KEY_BYTES`] bytes.
    #[error(
        "the audit key file {0} holds fewer than {MIN_AUDIT_KEY_BYTES} bytes: make one with `head -c 32 /dev/urandom > FILE`"
    )]
    ShortKey(PathBuf),
}

/// The key of credential fingerprints.
#[derive(Clone)]
pub struct AuditKey(Arc<[u8]>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    /// A random key (32 bytes from the OS): fingerprints then compare
    /// within one run of the server only.
    ///
    /// # Panics
    /// Only if the operating system has no source of randomness.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random number generator failed");
        Self(bytes.into())
    }

    /// The key in `path` (its raw bytes, at least [`MIN_AUDIT_KEY_BYTES`]),
    /// so that fingerprints compare across restarts and replicas.
    ///
    /// # Errors
    /// [`AuditError::Key`] when the file cannot be read,
    /// [`AuditError::ShortKey`] when it is too short.
    pub fn from_file(path: &Path) -> Result<Self, AuditError> {
        let bytes = std::fs::read(path).map_err(|source| AuditError::Key {
            path: path.to_owned(),
            source,
        })?;
        if bytes.len() < MIN_AUDIT_KEY_BYTES {
            return Err(AuditError::ShortKey(path.to_owned()));
        }
        Ok(Self(bytes.into()))
    }

    /// The fingerprint of `credential`: HMAC-SHA256 under this key, its
    /// first [`FINGERPRINT_BYTES`] bytes in hex.
    pub fn fingerprint(&self, credential: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(credential.as_bytes());
        let tag = mac.finalize().into_bytes();
        tag[..FINGERPRINT_BYTES].iter().fold(
            String::with_capacity(2 * FINGERPRINT_BYTES),
            |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            },
        )
    }
}

/// How audit events are written to a file (`--log-format`, as the
/// server's log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditFormat {
    /// One JSON object per line ([`AuditEvent::to_json`]).
    #[default]
    Json,
    /// One logfmt line per event ([`AuditEvent::to_text`]).
    Text,
}

/// Where audit events go.
enum Sink {
    /// Into the server's log, target [`AUDIT_TARGET`].
    Log,
    /// To the writer thread of a file, in a format.
    File(SyncSender<Write>, AuditFormat),
}

/// What the writer thread is asked to do.
enum Write {
    Line(String),
    Reopen,
}

struct Inner {
    key: AuditKey,
    sink: Sink,
}

/// The audit log of one server; cheap to clone. The default records
/// nothing.
#[derive(Clone, Default)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
    /// Events dropped because the file's queue was full.
    dropped: Counter,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let to = match self.inner.as_deref() {
            None => "off",
            Some(Inner {
                sink: Sink::Log, ..
            }) => "log",
            Some(Inner {
                sink: Sink::File(..),
                ..
            }) => "file",
        };
        write!(f, "AuditLog({to})")
    }
}

impl AuditLog {
    /// Events go into the server's log, as events of target
    /// [`AUDIT_TARGET`] at level INFO.
    pub fn to_log(key: AuditKey) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                key,
                sink: Sink::Log,
            })),
            dropped: Counter::default(),
        }
    }

    /// Events are appended to `path` as JSON lines, by a thread of its
    /// own. The file is created if missing, with mode 0600.
    ///
    /// # Errors
    /// [`AuditError::Open`] when the file cannot be opened.
    pub fn to_file(path: &Path, key: AuditKey) -> Result<Self, AuditError> {
        Self::to_file_as(path, key, AuditFormat::Json)
    }

    /// Events are appended to `path` in `format`, as [`AuditLog::to_file`]
    /// does.
    ///
    /// # Errors
    /// [`AuditError::Open`] when the file cannot be opened.
    pub fn to_file_as(path: &Path, key: AuditKey, format: AuditFormat) -> Result<Self, AuditError> {
        let file = open_append(path)?;
        let (tx, rx) = sync_channel(AUDIT_QUEUE_EVENTS);
        let writer_path = path.to_owned();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_lines(&writer_path, file, &rx))
            .map_err(|source| AuditError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                key,
                sink: Sink::File(tx, format),
            })),
            dropped: Counter::default(),
        })
    }

    /// Whether events are recorded at all.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The count of events dropped because the file's queue was full or
    /// its writer had stopped (`rendezvous_audit_events_dropped_total`).
    pub fn dropped(&self) -> &Counter {
        &self.dropped
    }

    /// The fingerprint of `credential` (see [`AuditKey::fingerprint`]);
    /// `None` when the log is off or the credential is empty.
    pub fn fingerprint(&self, credential: &str) -> Option<String> {
        let inner = self.inner.as_ref()?;
        (!credential.is_empty()).then(|| inner.key.fingerprint(credential))
    }

    /// Records `event`. Returns `false` if it was dropped (and counted)
    /// because the file's queue is full or its writer has stopped.
    pub fn record(&self, event: &AuditEvent) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        match &inner.sink {
            Sink::Log => {
                tracing::info!(target: AUDIT_TARGET,
                    event = ?event.event,
                    task = event.task.as_deref(),
                    owner = event.owner.as_deref(),
                    host = event.host.as_deref(),
                    session = event.session.as_deref(),
                    guest = event.guest.as_deref(),
                    role = event.role,
                    client_ip = event.client_ip.map(tracing::field::display),
                    sub = event.sub.as_deref(),
                    credential_kind = event.credential_kind,
                    credential = event.credential.as_deref(),
                    reason = event.reason.as_deref(),
                    "audit"
                );
                true
            }
            Sink::File(tx, format) => match tx.try_send(Write::Line(match format {
                AuditFormat::Json => event.to_json(),
                AuditFormat::Text => event.to_text(),
            })) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.dropped.inc();
                    false
                }
            },
        }
    }

    /// Reopens the audit file (after logrotate moved it), once the events
    /// before are written. Does nothing when events go to the log.
    pub fn reopen(&self) {
        if let Some(Inner {
            sink: Sink::File(tx, _),
            ..
        }) = self.inner.as_deref()
        {
            // A full queue drops the request; the next SIGHUP asks again.
            let _ = tx.try_send(Write::Reopen);
        }
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, AuditError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| AuditError::Open {
            path: path.to_owned(),
            source,
        })
}

/// The writer thread: one line per event, flushed at once, until every
/// [`AuditLog`] clone is gone.
fn write_lines(path: &Path, file: std::fs::File, rx: &Receiver<Write>) {
    let mut out = std::io::LineWriter::new(file);
    while let Ok(write) = rx.recv() {
        match write {
            Write::Line(mut line) => {
                line.push('\n');
                if let Err(error) = out.write_all(line.as_bytes()) {
                    tracing::error!(path = %path.display(), %error, "cannot write the audit log");
                }
            }
            Write::Reopen => match open_append(path) {
                Ok(file) => {
                    let _ = out.flush();
                    out = std::io::LineWriter::new(file);
                    tracing::info!(path = %path.display(), "reopened the audit log");
                }
                Err(error) => {
                    tracing::error!(%error, "cannot reopen the audit log; writing to the old file");
                }
            },
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_keyed_and_tell_nothing_of_the_credential() {
        let (a, b) = (AuditKey::random(), AuditKey::random());
        let credential = "correct-horse-battery-staple-1234";
        let fa = a.fingerprint(credential);
        assert_eq!(fa.len(), 2 * FINGERPRINT_BYTES);
        assert_eq!(fa, a.fingerprint(credential), "stable under one key");
        assert_ne!(fa, b.fingerprint(credential), "another key, another print");
        assert_ne!(fa, a.fingerprint("correct-horse-battery-staple-1235"));
        assert!(!fa.contains("horse"));
        assert_eq!(format!("{a:?}"), "AuditKey(..)");
    }

    #[test]
    fn the_text_form_is_logfmt_in_the_json_forms_order() {
        let line = AuditEvent::new(AuditKind::AuthFailed)
            .task("t1")
            .client_ip(Some(IpAddr::from([127, 0, 0, 1])))
            .reason("wrong \"secret\" = no\nnext")
            .to_text();
        let rest = line.split_once(' ').map(|(time, rest)| {
            assert!(time.starts_with("time=") && time.ends_with('Z'), "{time}");
            rest
        });
        assert_eq!(
            rest,
            Some(
                r#"event=auth_failed task=t1 client_ip=127.0.0.1 reason="wrong \"secret\" = no next""#
            )
        );
    }

    #[test]
    fn events_leave_out_what_does_not_apply() {
        let json = AuditEvent::new(AuditKind::AuthFailed)
            .task("t1")
            .client_ip(Some(IpAddr::from([127, 0, 0, 1])))
            .credential("secret", Some("ab".into()))
            .to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["event"], "auth_failed");
        assert_eq!(value["task"], "t1");
        assert_eq!(value["client_ip"], "127.0.0.1");
        assert_eq!(value["credential_kind"], "secret");
        assert!(value.get("host").is_none());
        assert!(value["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_file_gets_one_line_per_event_and_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::to_file(&path, AuditKey::random()).unwrap();
        assert!(log.record(&AuditEvent::new(AuditKind::HostLeft).task("a")));
        std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
        log.reopen();
        assert!(log.record(&AuditEvent::new(AuditKind::HostLeft).task("b")));
        drop(log);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let old = std::fs::read_to_string(dir.path().join("audit.jsonl.1")).unwrap();
            let new = std::fs::read_to_string(&path).unwrap_or_default();
            if old.contains("\"task\":\"a\"") && new.contains("\"task\":\"b\"") {
                assert_eq!(old.lines().count(), 1);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "old {old:?} new {new:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
