//! The registry harness: the [`Registry`] core with its services' unary
//! calls and guest streams, driven by random host and guest actions,
//! without a socket; beside them, a bystander task whose session and guest
//! must never notice.
//!
//! Hosts register (duplicate names, other secrets, weak secrets, malformed
//! IDs, other owners, labels over their bounds, grace periods), resume
//! with resume tickets (their own, stale ones, other hosts', made-up
//! ones, with the owner, task, name, secret or host ID changed, naming
//! sessions with their tickets or others), lose their control connection,
//! open sessions and Data streams (a new one replaces the old), send
//! output of any size, end sessions and leave; guests attach (with right and
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
//! - a host that left has no running session; its guests read Exit; a
//!   host that lost its connection keeps its sessions only with a grace
//!   period, and its guests are told it is away;
//! - a Hello takes over a host here only with that host's own owner,
//!   task, name, ID, secrets and ticket, and then ends the sessions it
//!   no longer names; any other Hello leaves every host's connection as
//!   it was (the bystander's above all); a host gets a ticket's host ID
//!   only with a valid ticket, and sessions only with their own tickets;
//!   no two hosts share an ID;
//! - every guest stream is exact: each Output starts where the previous
//!   one ended (or after a Lagged of exactly the bytes missed), holds the
//!   bytes the host wrote at those offsets, and nothing follows Exit;
//! - the bystander's output, input, guest and credentials stay exact and
//!   valid throughout.
//!
//! # Files
//! - `actions`: what an input is made of;
//! - `hello`: Hellos, new and resuming, and what each did to the hosts;
//! - `calls`: the other calls with a verdict of their own (Data stream,
//!   attach, unary calls);
//! - `streams`: guest streams, read and checked event by event;
//! - `bystander`: the task nothing touches;
//! - this file: the entry point, the bounds, the rest of the actions, and
//!   the properties checked after every step.

mod actions;
mod bystander;
mod calls;
mod hello;
mod streams;

use std::sync::Arc;

use arbitrary::Unstructured;
use rendezvous_proto::guest_service_server::GuestService;
use rendezvous_proto::ids::TaskId;
use rendezvous_proto::{AckRequest, HostControlResponse, ListSessionsRequest, ResizeRequest, Role};
use rendezvous_server::guest_service::GuestApi;
use rendezvous_server::registry::{Host, Owner, Registry, RegistryError};
use rendezvous_server::session::{HostLink, RelayConfig, Session};
use rendezvous_server::{Limits, ServerConfig};
use tokio::sync::mpsc;
use tonic::{Code, Request, Status};

use crate::pattern;

use actions::Action;
use bystander::Bystander;
use hello::{Issued, SessionTicket};
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
/// A well-formed session ID no session has.
const UNKNOWN_SESSION: &str = "0123456789abcdef0123456789abcdef";

/// A host of the harness's, while it is registered.
struct HostEntry {
    host: Arc<Host>,
    /// Its current connection's Data-stream token.
    token: String,
    /// The secrets it registered with.
    secret: String,
    read_only: String,
    /// Its current connection's control queue: kept open, and drained
    /// for the session tickets (see `Harness::drain_control`).
    control: mpsc::Receiver<HostControlResponse>,
}

struct SessionEntry {
    host: Arc<Host>,
    session: Arc<Session>,
    /// The host side, when the harness took it: its latest Data stream's.
    input: Option<HostLink>,
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
        let bystander = Bystander::new(&registry).await;
        // Its tickets, which others may present, with a secret the
        // actions use (they never know its own).
        let issued = Issued {
            owner: Owner::open(),
            task: BYSTANDER_TASK.into(),
            name: bystander.host.name().as_str().to_owned(),
            host_id: bystander.host.id().to_owned(),
            secret: SECRETS[0].into(),
            read_only: String::new(),
            ticket: bystander.ticket.clone(),
        };
        let session_ticket = SessionTicket {
            owner: Owner::open(),
            task: BYSTANDER_TASK.into(),
            name: issued.name.clone(),
            session_id: bystander.session.id().to_owned(),
            ticket: bystander.session_ticket.clone(),
        };
        let mut harness = Harness {
            api: GuestApi::new(registry.clone()),
            bystander,
            registry,
            hosts: Vec::new(),
            sessions: Vec::new(),
            guests: Vec::new(),
            issued: vec![issued],
            session_tickets: vec![session_ticket],
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
    /// Every registration so far (the bystander's first), for resuming
    /// Hellos to repeat.
    issued: Vec<Issued>,
    /// Every session ticket handed out so far.
    session_tickets: Vec<SessionTicket>,
}

fn pick<T>(items: &[T], i: u8) -> Option<&T> {
    pick_index(items, i).map(|i| &items[i])
}

fn pick_index<T>(items: &[T], i: u8) -> Option<usize> {
    (!items.is_empty()).then(|| usize::from(i) % items.len())
}

fn status_of<T>(result: &Result<T, Status>) -> Option<Code> {
    result.as_ref().err().map(Status::code)
}

impl Harness {
    async fn apply(&mut self, action: Action) {
        self.forget_gone_hosts();
        self.drain_control();
        match action {
            Action::Register {
                task,
                name,
                secret,
                read_only,
                labels,
                other_owner,
                grace,
            } => {
                self.register(task, name, secret, read_only, labels, other_owner, grace)
                    .await;
            }
            Action::Resume {
                of,
                change,
                sessions,
                made_up_sessions,
                too_many,
            } => {
                self.resume(of, change, sessions, made_up_sessions, too_many)
                    .await;
            }
            Action::ControlLost { host, stale } => self.control_lost(host, stale),
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
                // Room in its control queue, so that the open never waits.
                self.drain_control();
                match self
                    .registry
                    .open_session(&host, u32::from(cols), u32::from(rows))
                    .await
                {
                    Ok(session) => {
                        assert!(host.is_connected(), "a session opened on an absent host");
                        let input = session.attach_host(0);
                        assert!(input.is_some(), "a new session has ended");
                        self.sessions.push(SessionEntry {
                            host,
                            session,
                            input,
                        });
                    }
                    Err(RegistryError::Limit { .. }) => {}
                    Err(RegistryError::HostReconnecting) if !host.is_connected() => {}
                    Err(e) => panic!("opening a session on a live host: {e:?}"),
                }
                self.drain_control();
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
                known,
                resume,
                window_bytes,
                window_messages,
            } => {
                self.attach(
                    task,
                    secret,
                    session,
                    host_name,
                    known,
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
                        ..Default::default()
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
                        ..Default::default()
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
            Action::Wait { tenths } => self.wait(tenths).await,
            Action::HostReads { session } => {
                if self.sessions.is_empty() {
                    return;
                }
                let i = usize::from(session) % self.sessions.len();
                let s = &mut self.sessions[i];
                if let Some(link) = s.input.as_mut() {
                    // The host writes all it was sent, and says so.
                    while link.input.try_next(&s.session).is_some() {}
                    s.session.ack_host_input(link.input.next_number());
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
            } else {
                assert_eq!(
                    s.session.host_state().reconnecting,
                    !s.host.is_connected(),
                    "guests are told the host is away exactly while it is"
                );
            }
        }
    }

    /// Lets virtual time pass. Never as long as the sessions' idle
    /// timeout (30 min) over a whole input: the watchdogs sleep on
    /// tokio's paused clock for deadlines of the std clock, which does not
    /// move with it, and one that wakes before its std deadline sleeps
    /// again at once, forever.
    async fn wait(&mut self, tenths: u8) {
        tokio::time::sleep(std::time::Duration::from_millis(
            u64::from(tenths % 32) * 100,
        ))
        .await;
        self.forget_gone_hosts();
    }

    /// Forgets the hosts the registry let go by itself (their grace
    /// period ran out): none of their sessions runs on.
    fn forget_gone_hosts(&mut self) {
        for entry in self.hosts.iter().filter(|e| e.host.closed().is_cancelled()) {
            assert!(
                entry.host.sessions().is_empty(),
                "a host that left kept sessions"
            );
        }
        self.hosts.retain(|e| !e.host.closed().is_cancelled());
    }

    /// A host's control connection ends (or, `stale`, an older one
    /// does, which changes nothing): without a grace period the host
    /// leaves; with one it stays, away, with its sessions.
    fn control_lost(&mut self, host: u8, stale: bool) {
        let Some(i) = pick_index(&self.hosts, host) else {
            return;
        };
        let host = self.hosts[i].host.clone();
        let (generation, _) = host.connection();
        let was_connected = host.is_connected();
        let running: Vec<Arc<Session>> = host.sessions();
        self.registry
            .control_ended(&host, generation - u64::from(stale));
        if stale {
            assert_eq!(host.is_connected(), was_connected, "a stale end counted");
            assert_eq!(host.sessions().len(), running.len());
            return;
        }
        if host.may_resume() {
            assert!(
                !host.closed().is_cancelled(),
                "a host with a grace period left at once"
            );
            assert!(!host.is_connected());
            for session in &running {
                assert!(
                    !session.has_ended(),
                    "a session ended with its host's connection"
                );
                assert!(
                    session.host_state().reconnecting,
                    "guests not told the host is away"
                );
            }
        } else {
            assert!(
                host.closed().is_cancelled(),
                "a host without a grace period stayed"
            );
            assert!(
                running.iter().all(|s| s.has_ended()),
                "a gone host's session runs on"
            );
            self.hosts.remove(i);
        }
    }
}
