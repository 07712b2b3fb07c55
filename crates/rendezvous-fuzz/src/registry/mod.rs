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
//!
//! # Files
//! - `actions`: what an input is made of;
//! - `calls`: the calls with a verdict of their own (register, Data
//!   stream, attach, unary calls);
//! - `streams`: guest streams, read and checked event by event;
//! - `bystander`: the task nothing touches;
//! - this file: the entry point, the bounds, the rest of the actions, and
//!   the properties checked after every step.

mod actions;
mod bystander;
mod calls;
mod streams;

use std::sync::Arc;

use arbitrary::Unstructured;
use rendezvous_proto::guest_service_server::GuestService;
use rendezvous_proto::ids::TaskId;
use rendezvous_proto::{
    AckRequest, HostControlResponse, HostDataResponse, ListSessionsRequest, ResizeRequest, Role,
};
use rendezvous_server::guest_service::GuestApi;
use rendezvous_server::registry::{Host, Owner, Registry, RegistryError};
use rendezvous_server::session::{RelayConfig, Session};
use rendezvous_server::{Limits, ServerConfig};
use tokio::sync::mpsc;
use tonic::{Code, Request, Status};

use crate::pattern;

use actions::Action;
use bystander::Bystander;
use streams::{GuestEntry, poll};

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
