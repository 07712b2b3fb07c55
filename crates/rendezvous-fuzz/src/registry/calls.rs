//! The actions that are calls with a verdict of their own: opening a
//! Data stream, attaching a guest, and a guest's unary calls, each
//! checked against the status the proto gives it (Hellos are in
//! `hello`).

use std::sync::Arc;

use futures::FutureExt;
use futures::StreamExt;
use rendezvous_proto::guest_service_server::GuestService;
use rendezvous_proto::ids::{HostName, TaskId};
use rendezvous_proto::{AttachRequest, GuestEvent, Role, SendInputRequest, guest_event};
use rendezvous_server::registry::RegistryError;
use tonic::{Code, Request};

use super::streams::GuestEntry;
use super::{Harness, NAMES, SECRETS, TASKS, UNKNOWN_SESSION, pick, status_of};
use crate::pattern;

impl Harness {
    pub(super) fn data_open(&mut self, host: u8, session: u8, right_token: bool) {
        let Some(entry) = pick(&self.hosts, host) else {
            return;
        };
        let host = entry.host.clone();
        let token = if right_token {
            entry.token.clone()
        } else {
            "made-up-host-token".into()
        };
        let id = pick(&self.sessions, session).map_or_else(
            || "no-such-session".to_owned(),
            |s| s.session.id().to_owned(),
        );
        let result = self.registry.data_session(host.id(), &token, &id);
        // The host's running session of that ID, if any: a session
        // restored on a restarted host has the ID of one that ended.
        let ours = self.sessions.iter().position(|s| {
            s.session.id() == id && Arc::ptr_eq(&s.host, &host) && !s.session.has_ended()
        });
        match (right_token, ours, result) {
            (false, _, Err(RegistryError::BadHost)) => {}
            (true, Some(i), Ok((found, session))) => {
                assert!(Arc::ptr_eq(&found, &host));
                assert!(Arc::ptr_eq(&session, &self.sessions[i].session));
                // The new stream replaces the one the harness holds, and
                // goes on from what that one's host took.
                let applied = self.sessions[i]
                    .input
                    .as_ref()
                    .map_or(0, |link| link.input.next_number());
                let link = session
                    .attach_host(applied)
                    .expect("a running session takes a new Data stream");
                assert_eq!(
                    link.input.next_number(),
                    applied.max(session.host_input_acked()),
                    "a new Data stream's first input message"
                );
                if let Some(old) = self.sessions[i].input.replace(link) {
                    assert!(
                        old.replaced.is_cancelled(),
                        "a replaced Data stream goes on"
                    );
                    assert!(
                        !session.push_host_output(old.stream, b"x"),
                        "a replaced Data stream's output was taken"
                    );
                }
            }
            (true, None, Err(RegistryError::NoSuchSession(_))) => {}
            (right, ours, got) => panic!(
                "data_session (right token {right}, own running session {}): {got:?}",
                ours.is_some()
            ),
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one per field of the action")]
    pub(super) async fn attach(
        &mut self,
        task: u8,
        secret: u8,
        session: Option<u8>,
        host_name: u8,
        known: Option<u8>,
        resume: Option<(u8, bool)>,
        window_bytes: u32,
        window_messages: u8,
    ) {
        let mut task = TASKS[usize::from(task) % TASKS.len()].to_owned();
        let mut secret = SECRETS[usize::from(secret) % SECRETS.len()].to_owned();
        let mut host_name = NAMES[usize::from(host_name) % NAMES.len()].to_owned();
        let mut session_id = match session {
            None => String::new(),
            Some(i) => match i % 4 {
                0 => "not/a/session".into(),
                1 => UNKNOWN_SESSION.into(),
                _ => {
                    pick(&self.sessions, i).map_or_else(String::new, |s| s.session.id().to_owned())
                }
            },
        };
        // With a host's own credentials, and one of its sessions: made-up
        // ones rarely meet a host.
        if let Some(e) = known.and_then(|k| pick(&self.hosts, k)) {
            task = e.host.task_id().as_str().to_owned();
            let read_only = known.is_some_and(|k| k & 1 == 1) && !e.read_only.is_empty();
            secret = if read_only { &e.read_only } else { &e.secret }.clone();
            host_name = e.host.name().as_str().to_owned();
            let its: Vec<&str> = self
                .sessions
                .iter()
                .filter(|s| Arc::ptr_eq(&s.host, &e.host))
                .map(|s| s.session.id())
                .collect();
            if session.is_some() {
                session_id = pick(&its, session.unwrap_or_default() / 4)
                    .map_or_else(String::new, |id| (*id).to_owned());
            }
        }
        let (task, secret, host_name) = (task.as_str(), secret.as_str(), host_name.as_str());
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
            reconnecting: false,
        });
    }

    /// A guest's ID, token (its own, or a made-up one) and role.
    pub(super) fn credentials(&self, guest: u8, right: bool) -> Option<(String, String, Role)> {
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
    pub(super) fn check_guest_call(
        &self,
        id: &str,
        token: &str,
        role: Role,
        got: Option<Code>,
        what: &str,
    ) {
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

    pub(super) async fn input(&mut self, guest: u8, right: bool, seq: u8, len: u16) {
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
                ..Default::default()
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
}
