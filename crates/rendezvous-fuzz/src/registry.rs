//! The registry harness: the [`Registry`] core with its services' unary
//! calls and guest streams, driven by random host and guest actions,
//! without a socket; beside them, a bystander task whose session and guest
//! must never notice.
//!
//! Hosts register (duplicate names, other secrets, weak secrets, malformed
//! IDs, other owners, labels over their bounds), open sessions, send output
//! of any size, end sessions and leave; guests attach (with right and
//! wrong secrets, to new shells, known, unknown and malformed sessions,
//! resuming others' IDs with right and wrong tokens), read their streams,
//! send input, resizes and acks with their own and made-up credentials,
//! and leave.
//!
//! Properties, after every step:
//! - every refusal has the code the proto gives it (a malformed name
//!   `INVALID_ARGUMENT` before credentials, made-up guest credentials
//!   `UNAUTHENTICATED` before any limit, an ended session
//!   `FAILED_PRECONDITION`, a read-only guest `PERMISSION_DENIED`);
//! - every documented limit holds: hosts, sessions, guests server-wide,
//!   hosts per task, sessions per host, guests per session, the retained
//!   output all sessions reserve;
//! - a host that left has no running session; its guests read Exit;
//! - every guest stream is exact: each Output starts where the previous
//!   one ended (or after a Lagged of exactly the bytes missed), holds the
//!   bytes the host wrote at those offsets, and nothing follows Exit;
//! - the bystander's output, input, guest and credentials stay exact and
//!   valid throughout.

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use futures::{FutureExt, StreamExt};
use rendezvous_proto::guest_service_server::GuestService;
use rendezvous_proto::ids::{HostName, TaskId};
use rendezvous_proto::{
    AckRequest, AttachRequest, GuestEvent, Hello, HostControlResponse, HostDataResponse,
    ListSessionsRequest, ResizeRequest, Role, SendInputRequest, guest_event, host_data_response,
};
use rendezvous_server::guest_service::GuestApi;
use rendezvous_server::guest_stream::EventStream;
use rendezvous_server::registry::{Host, JoinedGuest, Owner, Registry, RegistryError};
use rendezvous_server::session::{Read, RelayConfig, Session};
use rendezvous_server::{Limits, ServerConfig};
use tokio::sync::mpsc;
use tonic::{Code, Request, Status};

use crate::fixture::new_guest;
use crate::pattern;

/// Most actions one input runs.
pub const MAX_ACTIONS: usize = 300;

/// The limits the harness runs under: small, so that inputs reach them.
pub fn limits() -> Limits {
    Limits {
        hosts: 6,
        hosts_per_ip: 6,
        sessions: 6,
        retained_output_bytes: 5 * RETAINED,
        guests: 8,
        hosts_per_task: 3,
        sessions_per_host: 3,
        guests_per_session: 3,
        input_bytes: 4096,
        ..Limits::default()
    }
}

/// Retained output per session, in bytes.
const RETAINED: u64 = 4096;

const TASKS: [&str; 6] = ["t0", "t1", BYSTANDER_TASK, "", "bad/task", "t0 "];
const NAMES: [&str; 5] = ["", "h1", "h2", "bad name", "default"];
const SECRETS: [&str; 5] = [
    "secret-of-t-0123456789abcdef",
    "other-secret-0123456789abcdef",
    "viewer-of-t-0123456789abcdef",
    "short",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];
const BYSTANDER_TASK: &str = "bystander";
/// The bystander's secret: one the actions never use.
const BYSTANDER_SECRET: &str = "bystander-secret-0123456789abcdef";

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Action {
    Register {
        task: u8,
        name: u8,
        secret: u8,
        read_only: Option<u8>,
        labels: u8,
        other_owner: bool,
    },
    Leave {
        host: u8,
    },
    Open {
        host: u8,
        cols: u16,
        rows: u16,
    },
    DataOpen {
        host: u8,
        session: u8,
        right_token: bool,
    },
    Output {
        session: u8,
        len: u16,
        /// Multiplies `len` by 64.
        large: bool,
    },
    Exit {
        session: u8,
        code: i32,
    },
    Attach {
        task: u8,
        secret: u8,
        /// None: a new shell; else a session of the harness's, or an
        /// unknown or malformed ID.
        session: Option<u8>,
        host_name: u8,
        resume: Option<(u8, bool)>,
        window_bytes: u32,
        window_messages: u8,
    },
    Poll {
        guest: u8,
        times: u8,
    },
    Drop {
        guest: u8,
    },
    Input {
        guest: u8,
        right: bool,
        seq: u8,
        len: u16,
    },
    Resize {
        guest: u8,
        right: bool,
        cols: u32,
        rows: u32,
    },
    Ack {
        guest: u8,
        right: bool,
        offset: u64,
        messages: u64,
    },
    List {
        task: u8,
        secret: u8,
    },
    HostReads {
        session: u8,
    },
}

/// A host of the harness's, while it is registered.
struct HostEntry {
    host: Arc<Host>,
    token: String,
    /// Kept, so that the host's control queue stays open.
    _control: mpsc::Receiver<HostControlResponse>,
}

struct SessionEntry {
    host: Arc<Host>,
    session: Arc<Session>,
    /// The host side, when the harness took it.
    input: Option<mpsc::Receiver<HostDataResponse>>,
}

struct GuestEntry {
    stream: EventStream,
    guest_id: String,
    token: String,
    role: Role,
    /// Offset of the next byte the stream must send; `None` until the
    /// first Output or Lagged (a stream starts where it was asked to).
    cursor: Option<u64>,
    /// The stream sent Exit: only its end may follow.
    exited: bool,
    /// The stream has ended.
    done: bool,
}

/// The bystander: its own task, host, session and guest.
struct Bystander {
    host: Arc<Host>,
    _control: mpsc::Receiver<HostControlResponse>,
    session: Arc<Session>,
    input: mpsc::Receiver<HostDataResponse>,
    guest: JoinedGuest,
    cursor: u64,
    seq: u64,
}

impl Bystander {
    async fn new(registry: &Arc<Registry>) -> Self {
        let hello = Hello {
            task_id: BYSTANDER_TASK.into(),
            secret: BYSTANDER_SECRET.into(),
            ..Hello::default()
        };
        let registration = registry
            .register_host(Owner::open(), None, &hello)
            .await
            .expect("the bystander's host registers");
        let session = registry
            .open_session(&registration.host, 80, 24)
            .await
            .expect("the bystander's session opens");
        let (input, _) = session.attach_host().expect("its host side is free");
        let guest = registry
            .add_guest(&session, new_guest(Role::ReadWrite))
            .expect("the bystander's guest attaches");
        Self {
            host: registration.host,
            _control: registration.control,
            session,
            input,
            guest,
            cursor: 0,
            seq: 0,
        }
    }

    async fn step(&mut self, api: &GuestApi, registry: &Registry) {
        let end = self.session.end_offset();
        self.session.push_output(pattern::run(end, 31));
        let (id, attachment) = (self.guest.handle.id(), self.guest.handle.attachment());
        loop {
            match self.session.read_attached(id, attachment, self.cursor) {
                Read::Output { offset, data } => {
                    assert_eq!(offset, self.cursor, "bystander: output at a wrong offset");
                    assert!(pattern::matches(offset, &data), "bystander: wrong bytes");
                    self.cursor += data.len() as u64;
                }
                Read::Nothing => break,
                other => panic!("bystander: its guest read {other:?}"),
            }
        }
        assert_eq!(self.cursor, self.session.end_offset(), "bystander: behind");
        assert!(!self.session.has_ended(), "bystander: its session ended");
        assert!(registry.guest(id, &self.guest.token).is_ok());
        let data = pattern::run(self.seq * 7, 5).to_vec();
        // Unconstrained: tokio's cooperative budget would make a ready
        // queue look full after many operations in one poll.
        let sent = tokio::task::unconstrained(api.send_input(Request::new(SendInputRequest {
            guest_id: id.to_owned(),
            guest_token: self.guest.token.clone(),
            seq: self.seq,
            data: data.clone().into(),
        })))
        .now_or_never();
        assert!(
            matches!(sent, Some(Ok(_))),
            "bystander: its input was refused: {sent:?}"
        );
        self.seq += 1;
        let got = self.input.try_recv().ok().and_then(|m| match m.message {
            Some(host_data_response::Message::Input(data)) => Some(data),
            _ => None,
        });
        assert_eq!(
            got.as_deref(),
            Some(&data[..]),
            "bystander: its host's input"
        );
        let task = TaskId::new(BYSTANDER_TASK).expect("a valid ID");
        let auth = registry
            .authenticate(&task, BYSTANDER_SECRET)
            .now_or_never()
            .expect("authenticating does not wait")
            .expect("the bystander's secret");
        assert_eq!(auth.role, Role::ReadWrite);
        assert!(
            auth.hosts.iter().any(|h| Arc::ptr_eq(h, &self.host)),
            "bystander: its host is gone from its task"
        );
    }
}

/// Runs the registry harness on `data`. See the module docs.
///
/// # Panics
/// When the registry breaks a property the module docs list.
pub fn registry(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let actions = crate::actions::<Action>(&mut u, MAX_ACTIONS);
    crate::exec::run(async move {
        let config = ServerConfig {
            limits: limits(),
            relay: RelayConfig {
                retained_output_bytes: RETAINED as usize,
                max_output_message_bytes: 1024,
                ..RelayConfig::default()
            },
            ..crate::fixture::config()
        };
        let registry = Arc::new(Registry::new(config));
        let mut harness = Harness {
            api: GuestApi::new(registry.clone()),
            bystander: Bystander::new(&registry).await,
            registry,
            hosts: Vec::new(),
            sessions: Vec::new(),
            guests: Vec::new(),
        };
        for (step, action) in actions.iter().enumerate() {
            if crate::tracing() {
                eprintln!("{step}: {action:?}");
            }
            harness.apply(*action).await;
            harness.check();
            harness
                .bystander
                .step(&harness.api, &harness.registry)
                .await;
        }
    });
}

struct Harness {
    registry: Arc<Registry>,
    api: GuestApi,
    bystander: Bystander,
    hosts: Vec<HostEntry>,
    sessions: Vec<SessionEntry>,
    guests: Vec<GuestEntry>,
}

fn pick<T>(items: &[T], i: u8) -> Option<&T> {
    (!items.is_empty()).then(|| &items[usize::from(i) % items.len()])
}

fn status_of<T>(result: &Result<T, Status>) -> Option<Code> {
    result.as_ref().err().map(Status::code)
}

impl Harness {
    async fn apply(&mut self, action: Action) {
        match action {
            Action::Register {
                task,
                name,
                secret,
                read_only,
                labels,
                other_owner,
            } => {
                self.register(task, name, secret, read_only, labels, other_owner)
                    .await;
            }
            Action::Leave { host } => {
                if self.hosts.is_empty() {
                    return;
                }
                let entry = self.hosts.remove(usize::from(host) % self.hosts.len());
                self.registry.unregister_host(&entry.host);
                assert!(
                    entry.host.sessions().is_empty(),
                    "a host left with sessions"
                );
                for s in self
                    .sessions
                    .iter()
                    .filter(|s| Arc::ptr_eq(&s.host, &entry.host))
                {
                    assert!(s.session.has_ended(), "a gone host's session runs on");
                }
            }
            Action::Open { host, cols, rows } => {
                let Some(entry) = pick(&self.hosts, host) else {
                    return;
                };
                let host = entry.host.clone();
                match self
                    .registry
                    .open_session(&host, u32::from(cols), u32::from(rows))
                    .await
                {
                    Ok(session) => {
                        let input = session.attach_host().map(|(rx, _)| rx);
                        self.sessions.push(SessionEntry {
                            host,
                            session,
                            input,
                        });
                    }
                    Err(RegistryError::Limit { .. }) => {}
                    Err(e) => panic!("opening a session on a live host: {e:?}"),
                }
            }
            Action::DataOpen {
                host,
                session,
                right_token,
            } => self.data_open(host, session, right_token),
            Action::Output {
                session,
                len,
                large,
            } => {
                let Some(s) = pick(&self.sessions, session) else {
                    return;
                };
                let len = usize::from(len) * if large { 64 } else { 1 };
                let end = s.session.end_offset();
                s.session.push_output(pattern::run(end, len));
            }
            Action::Exit { session, code } => {
                let Some(s) = pick(&self.sessions, session) else {
                    return;
                };
                let status = rendezvous_proto::ExitStatus {
                    status: Some(rendezvous_proto::exit_status::Status::Code(code)),
                    message: String::new(),
                };
                s.host.end_session(&s.session, status);
                assert!(s.session.has_ended());
                assert!(s.host.session(s.session.id()).is_none());
            }
            Action::Attach {
                task,
                secret,
                session,
                host_name,
                resume,
                window_bytes,
                window_messages,
            } => {
                self.attach(
                    task,
                    secret,
                    session,
                    host_name,
                    resume,
                    window_bytes,
                    window_messages,
                )
                .await;
            }
            Action::Poll { guest, times } => {
                if self.guests.is_empty() {
                    return;
                }
                let i = usize::from(guest) % self.guests.len();
                for _ in 0..=times % 8 {
                    poll(&mut self.guests[i]);
                }
            }
            Action::Drop { guest } => {
                if !self.guests.is_empty() {
                    let i = usize::from(guest) % self.guests.len();
                    self.guests.remove(i);
                }
            }
            Action::Input {
                guest,
                right,
                seq,
                len,
            } => self.input(guest, right, seq, len).await,
            Action::Resize {
                guest,
                right,
                cols,
                rows,
            } => {
                let Some((id, token, role)) = self.credentials(guest, right) else {
                    return;
                };
                let result = self
                    .api
                    .resize(Request::new(ResizeRequest {
                        guest_id: id.clone(),
                        guest_token: token.clone(),
                        cols,
                        rows,
                    }))
                    .await;
                self.check_guest_call(&id, &token, role, status_of(&result), "Resize");
            }
            Action::Ack {
                guest,
                right,
                offset,
                messages,
            } => {
                let Some((id, token, _)) = self.credentials(guest, right) else {
                    return;
                };
                let result = self
                    .api
                    .ack(Request::new(AckRequest {
                        guest_id: id.clone(),
                        guest_token: token.clone(),
                        offset,
                        messages,
                    }))
                    .await;
                // Read-only guests may ack.
                self.check_guest_call(&id, &token, Role::ReadWrite, status_of(&result), "Ack");
            }
            Action::List { task, secret } => {
                let task = TASKS[usize::from(task) % TASKS.len()];
                let secret = SECRETS[usize::from(secret) % SECRETS.len()];
                let result = self
                    .api
                    .list_sessions(Request::new(ListSessionsRequest {
                        task_id: task.into(),
                        secret: secret.into(),
                        token: String::new(),
                    }))
                    .await;
                if TaskId::new(task).is_err() {
                    assert_eq!(status_of(&result), Some(Code::InvalidArgument));
                }
                // Another owner's task of the same ID is its own: it never
                // lists the bystander's session.
                if let Ok(response) = result {
                    let bystander = self.bystander.session.id();
                    assert!(
                        response
                            .into_inner()
                            .hosts
                            .iter()
                            .flat_map(|h| &h.sessions)
                            .all(|s| s.session_id != bystander),
                        "the bystander's session listed without its secret"
                    );
                }
            }
            Action::HostReads { session } => {
                if self.sessions.is_empty() {
                    return;
                }
                let i = usize::from(session) % self.sessions.len();
                if let Some(input) = self.sessions[i].input.as_mut() {
                    while input.try_recv().is_ok() {}
                }
            }
        }
    }

    async fn register(
        &mut self,
        task: u8,
        name: u8,
        secret: u8,
        read_only: Option<u8>,
        labels: u8,
        other_owner: bool,
    ) {
        let task = TASKS[usize::from(task) % TASKS.len()];
        let name = NAMES[usize::from(name) % NAMES.len()];
        let secret = SECRETS[usize::from(secret) % SECRETS.len()];
        let read_only = read_only.map_or("", |r| SECRETS[usize::from(r) % SECRETS.len()]);
        let labels = match labels % 4 {
            0 => 0,
            1 => 3,
            2 => rendezvous_server::registry::MAX_LABELS + 1,
            _ => 1,
        };
        let long_value = labels == 1;
        let hello = Hello {
            task_id: task.into(),
            host_name: name.into(),
            secret: secret.into(),
            read_only_secret: read_only.into(),
            labels: (0..labels)
                .map(|i| {
                    let value = if long_value {
                        "v".repeat(rendezvous_server::registry::MAX_LABEL_BYTES + 1)
                    } else {
                        "v".into()
                    };
                    (format!("k{i}"), value)
                })
                .collect(),
        };
        let owner = if other_owner {
            Owner::token("other")
        } else {
            Owner::open()
        };
        let invalid = TaskId::new(task).is_err()
            || HostName::or_default(name).is_err()
            || rendezvous_proto::ids::check_secret_strength(secret).is_err()
            || (!read_only.is_empty()
                && (rendezvous_proto::ids::check_secret_strength(read_only).is_err()
                    || read_only == secret))
            || long_value
            || labels > rendezvous_server::registry::MAX_LABELS;
        let result = self
            .registry
            .register_host(owner.clone(), None, &hello)
            .await;
        match result {
            Err(RegistryError::Invalid(text)) => {
                assert!(invalid, "a valid Hello refused as invalid: {text}");
            }
            Err(e) => {
                assert!(!invalid, "an invalid Hello got {e:?}");
                assert!(
                    matches!(
                        e,
                        RegistryError::Denied
                            | RegistryError::HostNameTaken(_)
                            | RegistryError::Limit { .. }
                    ),
                    "Hello refused with {e:?}"
                );
            }
            Ok(registration) => {
                assert!(!invalid, "an invalid Hello registered");
                assert!(
                    !(task == BYSTANDER_TASK && owner == Owner::open()),
                    "a host joined the bystander's task without its secret"
                );
                assert_eq!(registration.host.task_id().as_str(), task);
                self.hosts.push(HostEntry {
                    host: registration.host,
                    token: registration.host_token,
                    _control: registration.control,
                });
            }
        }
    }

    fn data_open(&mut self, host: u8, session: u8, right_token: bool) {
        let Some(entry) = pick(&self.hosts, host) else {
            return;
        };
        let token = if right_token {
            entry.token.clone()
        } else {
            "made-up-host-token".into()
        };
        let (id, want_session) = match pick(&self.sessions, session) {
            Some(s) => (s.session.id().to_owned(), Some(s)),
            None => ("no-such-session".to_owned(), None),
        };
        let result = self.registry.data_session(entry.host.id(), &token, &id);
        let ours =
            want_session.filter(|s| Arc::ptr_eq(&s.host, &entry.host) && !s.session.has_ended());
        match (right_token, ours, result) {
            (false, _, Err(RegistryError::BadHost)) => {}
            (true, Some(s), Ok((host, session))) => {
                assert!(Arc::ptr_eq(&host, &entry.host));
                assert!(Arc::ptr_eq(&session, &s.session));
            }
            (true, None, Err(RegistryError::NoSuchSession(_))) => {}
            (right, ours, got) => panic!(
                "data_session (right token {right}, own running session {}): {got:?}",
                ours.is_some()
            ),
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one per field of the action")]
    async fn attach(
        &mut self,
        task: u8,
        secret: u8,
        session: Option<u8>,
        host_name: u8,
        resume: Option<(u8, bool)>,
        window_bytes: u32,
        window_messages: u8,
    ) {
        let task = TASKS[usize::from(task) % TASKS.len()];
        let secret = SECRETS[usize::from(secret) % SECRETS.len()];
        let host_name = NAMES[usize::from(host_name) % NAMES.len()];
        let session_id = match session {
            None => String::new(),
            Some(i) => match i % 4 {
                0 => "not/a/session".into(),
                1 => "0123456789abcdef0123456789abcdef".into(),
                _ => {
                    pick(&self.sessions, i).map_or_else(String::new, |s| s.session.id().to_owned())
                }
            },
        };
        let (resume_id, resume_token) = resume
            .and_then(|(g, right)| {
                pick(&self.guests, g).map(|g| {
                    let token = if right {
                        g.token.clone()
                    } else {
                        "made-up-guest-token".into()
                    };
                    (g.guest_id.clone(), token)
                })
            })
            .unwrap_or_default();
        let request = AttachRequest {
            task_id: task.into(),
            secret: secret.into(),
            host_name: host_name.into(),
            session_id: session_id.clone(),
            resume_guest_id: resume_id,
            resume_guest_token: resume_token,
            window_bytes,
            window_messages: u32::from(window_messages),
            ..AttachRequest::default()
        };
        let result = self.api.attach(Request::new(request)).await;
        let malformed = TaskId::new(task).is_err()
            || HostName::or_default(host_name).is_err()
            || session_id == "not/a/session";
        if malformed {
            assert_eq!(status_of(&result), Some(Code::InvalidArgument), "{task:?}");
            return;
        }
        let Ok(response) = result else {
            return;
        };
        let mut stream = response.into_inner();
        let first = stream.next().now_or_never().flatten();
        let Some(Ok(GuestEvent {
            event: Some(guest_event::Event::Attached(attached)),
        })) = first
        else {
            panic!("an attach's first event is not Attached: {first:?}");
        };
        assert_ne!(
            attached.session_id,
            self.bystander.session.id(),
            "attached to the bystander's session without its secret"
        );
        let role = Role::try_from(attached.role).unwrap_or(Role::Unspecified);
        assert_ne!(role, Role::Unspecified, "an attached guest without a role");
        if session_id.is_empty() {
            assert_eq!(role, Role::ReadWrite, "a read-only guest opened a shell");
        }
        self.guests.push(GuestEntry {
            stream,
            guest_id: attached.guest_id,
            token: attached.guest_token,
            role,
            cursor: None,
            exited: false,
            done: false,
        });
    }

    /// A guest's ID, token (its own, or a made-up one) and role.
    fn credentials(&self, guest: u8, right: bool) -> Option<(String, String, Role)> {
        let g = pick(&self.guests, guest)?;
        let token = if right {
            g.token.clone()
        } else {
            "made-up-guest-token".into()
        };
        Some((g.guest_id.clone(), token, g.role))
    }

    /// Checks the status of a unary call by a guest: made-up credentials
    /// are refused first, then an ended session, then a read-only writer.
    fn check_guest_call(&self, id: &str, token: &str, role: Role, got: Option<Code>, what: &str) {
        match self.registry.guest(id, token) {
            Err(RegistryError::BadGuest) => {
                assert_eq!(got, Some(Code::Unauthenticated), "{what} by a stranger");
            }
            Err(RegistryError::SessionEnded) => {
                assert_eq!(got, Some(Code::FailedPrecondition), "{what} after the end");
            }
            Err(e) => panic!("guest lookup: {e:?}"),
            Ok(_) if role == Role::ReadOnly => {
                assert_eq!(got, Some(Code::PermissionDenied), "{what} by a viewer");
            }
            Ok(_) => assert!(
                got.is_none() || got == Some(Code::FailedPrecondition),
                "{what} by its guest: {got:?}"
            ),
        }
    }

    async fn input(&mut self, guest: u8, right: bool, seq: u8, len: u16) {
        let Some((id, token, role)) = self.credentials(guest, right) else {
            return;
        };
        let data = pattern::run(u64::from(seq), usize::from(len)).to_vec();
        let result = self
            .api
            .send_input(Request::new(SendInputRequest {
                guest_id: id.clone(),
                guest_token: token.clone(),
                seq: u64::from(seq),
                data: data.into(),
            }))
            .await;
        let got = status_of(&result);
        let limit = self.registry.config().limits.input_bytes;
        match self.registry.guest(&id, &token) {
            Err(RegistryError::BadGuest) => {
                assert_eq!(got, Some(Code::Unauthenticated), "input by a stranger");
            }
            Err(RegistryError::SessionEnded) => {
                assert_eq!(got, Some(Code::FailedPrecondition), "input after the end");
            }
            Ok(_) if usize::from(len) > limit => {
                assert_eq!(got, Some(Code::ResourceExhausted), "input over the limit");
            }
            Err(e) => panic!("guest lookup: {e:?}"),
            Ok(_) if role == Role::ReadOnly => {
                assert_eq!(got, Some(Code::PermissionDenied), "input by a viewer");
            }
            // Applied, waiting, too far ahead, a host that reads nothing
            // (UNAVAILABLE after 10 s), or the session ended meanwhile.
            Ok(_) => assert!(
                matches!(
                    got,
                    None | Some(
                        Code::ResourceExhausted | Code::Unavailable | Code::FailedPrecondition
                    )
                ),
                "input by its guest: {got:?}"
            ),
        }
    }

    fn check(&self) {
        let limits = limits();
        let connected = self.registry.connected();
        assert!(connected.hosts <= limits.hosts, "hosts over the limit");
        assert!(
            connected.sessions <= limits.sessions,
            "sessions over the limit"
        );
        assert!(connected.guests <= limits.guests, "guests over the limit");
        assert!(
            connected.sessions as u64 * RETAINED <= limits.retained_output_bytes,
            "retained output over the limit"
        );
        for entry in &self.hosts {
            assert!(entry.host.sessions().len() <= limits.sessions_per_host);
            for session in entry.host.sessions() {
                assert!(session.guest_count() <= limits.guests_per_session);
                assert!(!session.has_ended(), "an ended session is still listed");
            }
        }
        let mut tasks: Vec<(&Owner, &str)> = self
            .hosts
            .iter()
            .map(|h| (h.host.owner(), h.host.task_id().as_str()))
            .collect();
        tasks.sort();
        for group in tasks.chunk_by(|a, b| a == b) {
            assert!(group.len() <= limits.hosts_per_task, "hosts per task");
        }
        for s in &self.sessions {
            if s.session.has_ended() {
                assert!(s.host.session(s.session.id()).is_none());
            }
        }
    }
}

/// Reads one event from a guest's stream if one is ready, and checks it
/// continues the stream exactly.
fn poll(g: &mut GuestEntry) {
    // Like tonic, never poll a stream again once it has ended.
    if g.done {
        return;
    }
    let Some(item) = tokio::task::unconstrained(g.stream.next()).now_or_never() else {
        return;
    };
    let Some(item) = item else {
        g.done = true;
        return;
    };
    assert!(!g.exited, "an event after Exit: {item:?}");
    let event = match item {
        Ok(GuestEvent { event: Some(event) }) => event,
        Ok(GuestEvent { event: None }) => panic!("an empty event"),
        Err(status) => {
            // A stream replaced by a resume ends with ABORTED.
            assert_eq!(
                status.code(),
                Code::Aborted,
                "a guest stream failed: {status:?}"
            );
            g.done = true;
            return;
        }
    };
    match event {
        guest_event::Event::Output(output) => {
            if let Some(cursor) = g.cursor {
                assert_eq!(output.offset, cursor, "output does not continue the stream");
            }
            assert!(!output.data.is_empty(), "an empty Output");
            assert!(
                pattern::matches(output.offset, &output.data),
                "output bytes differ from what the host wrote"
            );
            g.cursor = Some(output.offset + output.data.len() as u64);
        }
        guest_event::Event::Lagged(lagged) => {
            assert!(lagged.missed_bytes > 0, "a Lagged of nothing");
            g.cursor = g.cursor.map(|c| c + lagged.missed_bytes);
        }
        guest_event::Event::Exit(_) => g.exited = true,
        guest_event::Event::Size(size) => {
            assert!((1..=1000).contains(&size.cols) && (1..=1000).contains(&size.rows));
        }
        guest_event::Event::Attached(_) => panic!("a second Attached"),
    }
}
