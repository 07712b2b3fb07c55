//! The actions that are calls with a verdict of their own: registering a
//! host, opening a Data stream, attaching a guest, and a guest's unary
//! calls, each checked against the status the proto gives it.

use std::sync::Arc;

use futures::FutureExt;
use futures::StreamExt;
use rendezvous_proto::guest_service_server::GuestService;
use rendezvous_proto::ids::{HostName, TaskId};
use rendezvous_proto::{AttachRequest, GuestEvent, Hello, Role, SendInputRequest, guest_event};
use rendezvous_server::registry::{Owner, RegistryError};
use tonic::{Code, Request};

use super::streams::GuestEntry;
use super::{BYSTANDER_TASK, Harness, HostEntry, NAMES, SECRETS, TASKS, pick, status_of};
use crate::pattern;

impl Harness {
    pub(super) async fn register(
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

    pub(super) fn data_open(&mut self, host: u8, session: u8, right_token: bool) {
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
    pub(super) async fn attach(
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
