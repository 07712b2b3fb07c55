//! Hellos: a new host's, and a resuming host's with a resume ticket (its
//! own, a stale one, another host's or made-up bytes), each checked for
//! what it may do to the hosts already here: only a host's own owner,
//! task, name, ID, secrets and ticket together hand its registration
//! over; anything else registers a new host or is refused, and leaves
//! every other host as it was.

use std::sync::Arc;

use rendezvous_proto::ids::{HostName, TaskId};
use rendezvous_proto::input_seqs::{MAX_GUEST_ID_BYTES, MAX_GUEST_INPUT_SEQS, MAX_INPUT_SEQ};
use rendezvous_proto::{
    GuestInputSeq, Hello, HostControlResponse, ResumeSession, host_control_response,
};
use rendezvous_server::config::MAX_GRACE_PERIOD;
use rendezvous_server::registry::{Host, MAX_RESUME_SESSIONS, Owner, RegistryError};
use rendezvous_server::session::Session;
use tokio::sync::mpsc;

use super::actions::{Change, grace_period_ms};
use super::{
    BYSTANDER_TASK, Harness, HostEntry, NAMES, SECRETS, SessionEntry, TASKS, UNKNOWN_SESSION,
};

/// A host registration the harness saw, with the Hello fields that made
/// it: what a later Hello may repeat, and the ticket it was handed.
#[derive(Debug, Clone)]
pub(super) struct Issued {
    pub(super) owner: Owner,
    pub(super) task: String,
    /// As the server names it ("default" for an empty name).
    pub(super) name: String,
    pub(super) host_id: String,
    pub(super) secret: String,
    pub(super) read_only: String,
    pub(super) ticket: String,
}

/// A session's resume ticket, as its OpenSession carried it, with whose
/// session it is.
#[derive(Debug, Clone)]
pub(super) struct SessionTicket {
    pub(super) owner: Owner,
    pub(super) task: String,
    pub(super) name: String,
    pub(super) session_id: String,
    pub(super) ticket: String,
}

/// A Hello to send, with who sends it and whether the documented rules
/// refuse it as malformed.
struct Attempt {
    owner: Owner,
    hello: Hello,
    invalid: bool,
}

/// The name a Hello's host name stands for, if it is a valid one.
fn host_name(name: &str) -> Option<String> {
    HostName::or_default(name)
        .ok()
        .map(|n| n.as_str().to_owned())
}

impl Harness {
    #[expect(clippy::too_many_arguments, reason = "one per field of the action")]
    pub(super) async fn register(
        &mut self,
        task: u8,
        name: u8,
        secret: u8,
        read_only: Option<u8>,
        labels: u8,
        other_owner: bool,
        grace: u8,
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
            grace_period_ms: grace_period_ms(grace),
            ..Hello::default()
        };
        let owner = if other_owner {
            Owner::token("other")
        } else {
            Owner::open()
        };
        let invalid = malformed(&hello) || long_value;
        self.hello(Attempt {
            owner,
            hello,
            invalid,
        })
        .await;
    }

    /// A Hello with a resume ticket, built from the registration `of`
    /// with `change` (see [`super::actions::Action::Resume`]).
    pub(super) async fn resume(
        &mut self,
        of: u8,
        change: Change,
        sessions: u8,
        made_up_sessions: bool,
        too_many: bool,
    ) {
        let Some(base) = super::pick(&self.issued, of).cloned() else {
            return;
        };
        let mut owner = base.owner.clone();
        let mut hello = Hello {
            task_id: base.task.clone(),
            host_name: base.name.clone(),
            secret: base.secret.clone(),
            read_only_secret: base.read_only.clone(),
            grace_period_ms: grace_period_ms(3),
            resume_ticket: base.ticket.clone(),
            resume_host_id: base.host_id.clone(),
            ..Hello::default()
        };
        let ids: Vec<String> = self
            .issued
            .iter()
            .map(|i| i.host_id.clone())
            .chain(self.hosts.iter().map(|h| h.host.id().to_owned()))
            .collect();
        match change {
            Change::Nothing => {}
            Change::Owner => {
                owner = if owner == Owner::open() {
                    Owner::token("other")
                } else {
                    Owner::open()
                };
            }
            Change::Task(t) => hello.task_id = TASKS[usize::from(t) % TASKS.len()].into(),
            Change::Name(n) => hello.host_name = NAMES[usize::from(n) % NAMES.len()].into(),
            Change::Secret(s) => hello.secret = SECRETS[usize::from(s) % SECRETS.len()].into(),
            Change::Ticket(Some(t)) => {
                hello.resume_ticket =
                    super::pick(&self.issued, t).map_or_else(String::new, |i| i.ticket.clone());
            }
            Change::Ticket(None) => {
                hello.resume_ticket = "bWFkZS11cC10aWNrZXQtb2YtNDMtY2hhcmFjdGVycy4uLg".into();
            }
            Change::HostId(Some(i)) => {
                hello.resume_host_id = super::pick(&ids, i).cloned().unwrap_or_default();
            }
            Change::HostId(None) => {
                hello.resume_host_id = "0123456789abcdef0123456789abcdef".into()
            }
        }
        let count = if too_many {
            MAX_RESUME_SESSIONS + 1
        } else {
            usize::from(sessions % 4)
        };
        let from = usize::from(sessions / 4);
        hello.sessions = (0..count)
            .filter_map(|k| {
                let t = (!self.session_tickets.is_empty())
                    .then(|| &self.session_tickets[(from + k) % self.session_tickets.len()]);
                let (session_id, ticket) = match t {
                    Some(t) if !made_up_sessions => (t.session_id.clone(), t.ticket.clone()),
                    Some(t) => (t.session_id.clone(), base.ticket.clone()),
                    None if too_many => (UNKNOWN_SESSION.into(), String::new()),
                    None => return None,
                };
                Some(ResumeSession {
                    session_id,
                    ticket,
                    start_offset: 0,
                    end_offset: (k as u64) * 100,
                    cols: 80,
                    rows: 24,
                    input_applied: 0,
                    guest_inputs: guest_inputs(k + usize::from(sessions)),
                })
            })
            .collect();
        let invalid = malformed(&hello);
        self.hello(Attempt {
            owner,
            hello,
            invalid,
        })
        .await;
    }

    /// Whether a Hello's ticket is the one the harness saw handed out for
    /// exactly its owner, task, name and the host ID it names.
    fn ticket_is_valid(&self, owner: &Owner, hello: &Hello) -> bool {
        let name = host_name(&hello.host_name);
        !hello.resume_ticket.is_empty()
            && self.issued.iter().any(|i| {
                i.ticket == hello.resume_ticket
                    && &i.owner == owner
                    && i.task == hello.task_id
                    && Some(&i.name) == name.as_ref()
                    && i.host_id == hello.resume_host_id
            })
    }

    /// Sends `attempt`'s Hello and checks what it did, to the new host
    /// and to every other.
    async fn hello(&mut self, attempt: Attempt) {
        let Attempt {
            owner,
            hello,
            invalid,
        } = attempt;
        let name = host_name(&hello.host_name);
        let valid_ticket = self.ticket_is_valid(&owner, &hello);
        // Every host here, with its connection's number: only a resume
        // with its own ticket may change it.
        let before: Vec<(Arc<Host>, u64)> = self
            .hosts
            .iter()
            .map(|h| h.host.clone())
            .chain([self.bystander.host.clone()])
            .map(|h| {
                let generation = h.connection().0;
                (h, generation)
            })
            .collect();
        // The host that has this Hello's owner, task and name, if any.
        let holder = before
            .iter()
            .map(|(h, _)| h)
            .find(|h| {
                h.owner() == &owner
                    && h.task_id().as_str() == hello.task_id
                    && Some(h.name().as_str()) == name.as_deref()
            })
            .cloned();
        let same_secrets = holder.as_ref().is_some_and(|h| {
            self.hosts.iter().any(|e| {
                Arc::ptr_eq(&e.host, h)
                    && e.secret == hello.secret
                    && e.read_only == hello.read_only_secret
            })
        });
        let resumes = !invalid
            && valid_ticket
            && holder
                .as_ref()
                .is_some_and(|h| h.id() == hello.resume_host_id);
        let result = self
            .registry
            .register_host(owner.clone(), None, &hello)
            .await;
        let mut taken_over = None;
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
                assert!(
                    !(resumes && same_secrets),
                    "a host's own resume refused: {e:?}"
                );
                if resumes {
                    assert!(
                        matches!(e, RegistryError::Denied),
                        "a resume with other secrets: {e:?}"
                    );
                }
            }
            Ok(registration) => {
                assert!(!invalid, "an invalid Hello registered");
                assert!(
                    !(hello.task_id == BYSTANDER_TASK && owner == Owner::open()),
                    "a host joined the bystander's task without its secret"
                );
                assert_eq!(registration.host.task_id().as_str(), hello.task_id);
                assert!(!registration.resume_ticket.is_empty(), "no resume ticket");
                let host = registration.host.clone();
                if let Some((old, generation)) = before.iter().find(|(h, _)| Arc::ptr_eq(h, &host))
                {
                    // A takeover: the host's own resume, and nothing else.
                    assert!(
                        resumes,
                        "a Hello took over host {} (owner {}, task {}, name {}) \
                         with another's ticket or fields: {hello:?} by {owner}",
                        old.id(),
                        old.owner(),
                        old.task_id(),
                        old.name()
                    );
                    assert!(same_secrets, "a resume with other secrets took the host");
                    assert!(registration.resumed, "a resume not said to be one");
                    assert_eq!(host.connection().0, generation + 1, "a new connection");
                    assert!(host.is_connected());
                    taken_over = Some(host.clone());
                } else {
                    assert!(
                        !(resumes && same_secrets),
                        "a host's own resume made a new host"
                    );
                    assert!(
                        before.iter().all(|(h, _)| h.id() != host.id()),
                        "two hosts with one ID"
                    );
                    if host.id() == hello.resume_host_id {
                        assert!(valid_ticket, "a host took an ID its ticket does not name");
                    } else {
                        assert!(
                            !valid_ticket,
                            "a valid ticket of a host not here did not restore its ID"
                        );
                    }
                    let granted = hello
                        .grace_period_ms
                        .min(u64::try_from(MAX_GRACE_PERIOD.as_millis()).unwrap_or(u64::MAX));
                    assert_eq!(
                        u64::try_from(host.grace_period().as_millis()).unwrap_or(u64::MAX),
                        granted,
                        "the granted grace period"
                    );
                    self.check_restored(&owner, &hello, &host, registration.resumed);
                }
                self.issued.push(Issued {
                    owner: owner.clone(),
                    task: hello.task_id.clone(),
                    name: host.name().as_str().to_owned(),
                    host_id: host.id().to_owned(),
                    secret: hello.secret.clone(),
                    read_only: hello.read_only_secret.clone(),
                    ticket: registration.resume_ticket.clone(),
                });
                self.took(
                    registration.host,
                    registration.host_token,
                    registration.control,
                    &hello,
                );
            }
        }
        if let Some(host) = &taken_over {
            self.check_resumed(host, &hello);
        }
        for (host, generation) in &before {
            if taken_over.as_ref().is_some_and(|t| Arc::ptr_eq(t, host)) {
                continue;
            }
            assert_eq!(
                host.connection().0,
                *generation,
                "a Hello replaced the connection of host {} (owner {}, task {}): {hello:?} by {owner}",
                host.id(),
                host.owner(),
                host.task_id()
            );
        }
    }

    /// Keeps a registered host: a new entry, or the resumed host's entry
    /// with its new token and control queue. The sessions it came with
    /// (restored) join the harness's.
    fn took(
        &mut self,
        host: Arc<Host>,
        token: String,
        control: mpsc::Receiver<HostControlResponse>,
        hello: &Hello,
    ) {
        if let Some(entry) = self.hosts.iter_mut().find(|e| Arc::ptr_eq(&e.host, &host)) {
            // The old token is the old connection's.
            assert!(
                matches!(
                    self.registry
                        .data_session(host.id(), &entry.token, UNKNOWN_SESSION),
                    Err(RegistryError::BadHost)
                ),
                "a resumed host's old token still opens Data streams"
            );
            entry.token = token;
            entry.control = control;
        } else {
            self.hosts.push(HostEntry {
                host: host.clone(),
                token,
                secret: hello.secret.clone(),
                read_only: hello.read_only_secret.clone(),
                control,
            });
        }
        let entry = self
            .hosts
            .iter()
            .find(|e| Arc::ptr_eq(&e.host, &host))
            .expect("just kept");
        assert!(
            matches!(
                self.registry
                    .data_session(host.id(), &entry.token, UNKNOWN_SESSION),
                Err(RegistryError::NoSuchSession(_))
            ),
            "a registered host's token does not open Data streams"
        );
        for session in host.sessions() {
            adopt(&mut self.sessions, &host, session);
        }
        self.drain_control();
    }

    /// A new host (not a takeover): it came with sessions only if its
    /// ticket restored its ID, and each one it came with was named in
    /// the Hello with that session's own ticket, and starts where the
    /// Hello said the host's kept output starts.
    fn check_restored(&self, owner: &Owner, hello: &Hello, host: &Host, resumed: bool) {
        let sessions = host.sessions();
        assert_eq!(resumed, !sessions.is_empty(), "resumed, or not");
        if sessions.is_empty() {
            return;
        }
        assert_eq!(
            host.id(),
            hello.resume_host_id,
            "a new host came with sessions"
        );
        for session in sessions {
            let named = hello
                .sessions
                .iter()
                .find(|s| s.session_id == session.id())
                .expect("a restored session the Hello did not name");
            assert!(
                self.session_tickets.iter().any(|t| {
                    t.session_id == named.session_id
                        && t.ticket == named.ticket
                        && &t.owner == owner
                        && t.task == hello.task_id
                        && t.name == host.name().as_str()
                }),
                "a session restored without its own ticket"
            );
            assert_eq!(session.end_offset(), named.start_offset);
            assert!(!session.has_ended());
        }
    }

    /// A host's own resume: the sessions its Hello does not name have
    /// ended, those it names are told the host is back.
    fn check_resumed(&self, host: &Arc<Host>, hello: &Hello) {
        for s in self.sessions.iter().filter(|s| Arc::ptr_eq(&s.host, host)) {
            let named = hello
                .sessions
                .iter()
                .any(|n| n.session_id == s.session.id());
            if !named {
                assert!(
                    s.session.has_ended(),
                    "a resumed host's session it no longer runs goes on"
                );
            } else if !s.session.has_ended() {
                assert!(!s.session.host_state().reconnecting);
            }
        }
    }

    /// Empties every host's control queue (so that opening a session
    /// never waits on it), keeping the session tickets its OpenSessions
    /// carry; the host opens a Data stream for each session it is asked
    /// to (a guest's new shell).
    pub(super) fn drain_control(&mut self) {
        for entry in &mut self.hosts {
            while let Ok(message) = entry.control.try_recv() {
                if let Some(host_control_response::Message::OpenSession(open)) = message.message {
                    if let Some(session) = entry.host.session(&open.session_id) {
                        adopt(&mut self.sessions, &entry.host, session);
                    }
                    self.session_tickets.push(SessionTicket {
                        owner: entry.host.owner().clone(),
                        task: entry.host.task_id().as_str().to_owned(),
                        name: entry.host.name().as_str().to_owned(),
                        session_id: open.session_id,
                        ticket: open.ticket,
                    });
                }
            }
        }
    }
}

/// Takes `session` of `host` into the harness's sessions, with a Data
/// stream, unless it is there already. Every session gets its stream at
/// once: the start timeout of one without (a std clock's deadline, slept
/// for on tokio's paused clock) would wake in a loop once the paused
/// clock passed it.
fn adopt(sessions: &mut Vec<SessionEntry>, host: &Arc<Host>, session: Arc<Session>) {
    if sessions.iter().any(|s| Arc::ptr_eq(&s.session, &session)) {
        return;
    }
    let input = session.attach_host(0);
    sessions.push(SessionEntry {
        host: host.clone(),
        session,
        input,
    });
}

/// Whether the documented rules refuse `hello` as malformed (labels
/// aside: the caller knows what it put in them).
fn malformed(hello: &Hello) -> bool {
    let secret = hello.secret.as_str();
    let read_only = hello.read_only_secret.as_str();
    TaskId::new(hello.task_id.as_str()).is_err()
        || HostName::or_default(&hello.host_name).is_err()
        || rendezvous_proto::ids::check_secret_strength(secret).is_err()
        || (!read_only.is_empty()
            && (rendezvous_proto::ids::check_secret_strength(read_only).is_err()
                || read_only == secret))
        || hello.labels.len() > rendezvous_server::registry::MAX_LABELS
        || hello.sessions.len() > MAX_RESUME_SESSIONS
}

/// What a resuming host says of its guests' input (by `shape`): nothing, a
/// few entries, or a list past the bound with empty and too long guest
/// IDs and seqs at and past the largest taken.
fn guest_inputs(shape: usize) -> Vec<GuestInputSeq> {
    let count = match shape % 4 {
        0 => 0,
        1 => 3,
        2 => 40,
        _ => MAX_GUEST_INPUT_SEQS + 5,
    };
    (0..count)
        .map(|i| GuestInputSeq {
            guest_id: match i % 9 {
                0 => "x".repeat(MAX_GUEST_ID_BYTES + 1),
                1 => String::new(),
                _ => format!("{i:032x}"),
            },
            next_seq: match i % 5 {
                0 => u64::MAX,
                1 => MAX_INPUT_SEQ,
                _ => i as u64,
            },
        })
        .collect()
}
