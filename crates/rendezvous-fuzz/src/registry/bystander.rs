//! The bystander: a task of its own, with a host, a session and a guest
//! that the actions never name, checked exact at every step.

use std::sync::Arc;

use futures::FutureExt;
use rendezvous_proto::guest_service_server::GuestService;
use rendezvous_proto::ids::TaskId;
use rendezvous_proto::{
    Hello, HostControlResponse, Role, SendInputRequest, host_control_response, host_data_response,
};
use rendezvous_server::guest_service::GuestApi;
use rendezvous_server::registry::{Host, JoinedGuest, Owner, Registry};
use rendezvous_server::session::{HostInputReader, Read, Session};
use tokio::sync::mpsc;
use tonic::Request;

use super::{BYSTANDER_SECRET, BYSTANDER_TASK};
use crate::fixture::new_guest;
use crate::pattern;

/// The bystander: its own task, host, session and guest.
pub(super) struct Bystander {
    pub(super) host: Arc<Host>,
    pub(super) _control: mpsc::Receiver<HostControlResponse>,
    /// Its host's Data-stream token.
    pub(super) token: String,
    /// Its host's resume ticket.
    pub(super) ticket: String,
    /// Its session's resume ticket.
    pub(super) session_ticket: String,
    pub(super) session: Arc<Session>,
    /// Its host's reader of the session's input.
    pub(super) input: HostInputReader,
    pub(super) guest: JoinedGuest,
    pub(super) cursor: u64,
    pub(super) seq: u64,
}

impl Bystander {
    pub(super) async fn new(registry: &Arc<Registry>) -> Self {
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
        let mut control = registration.control;
        let session_ticket = match control.try_recv().ok().and_then(|m| m.message) {
            Some(host_control_response::Message::OpenSession(open)) => open.ticket,
            other => panic!("the bystander's host was not asked to open its session: {other:?}"),
        };
        let input = session.attach_host(0).expect("a new session").input;
        let guest = registry
            .add_guest(
                &registration.host,
                &session,
                new_guest(Role::ReadWrite),
                None,
            )
            .expect("the bystander's guest attaches");
        Self {
            host: registration.host,
            _control: control,
            token: registration.host_token,
            ticket: registration.resume_ticket,
            session_ticket,
            session,
            input,
            guest,
            cursor: 0,
            seq: 0,
        }
    }

    pub(super) async fn step(&mut self, api: &GuestApi, registry: &Registry) {
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
            ..Default::default()
        })))
        .now_or_never();
        assert!(
            matches!(sent, Some(Ok(_))),
            "bystander: its input was refused: {sent:?}"
        );
        self.seq += 1;
        let got = self
            .input
            .try_next(&self.session)
            .and_then(|m| match m.0.message {
                Some(host_data_response::Message::Input(data)) => Some(data),
                _ => None,
            });
        self.session.ack_host_input(self.input.next_number());
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
        assert_eq!(
            self.host.connection().0,
            1,
            "bystander: its host was resumed"
        );
        assert!(self.host.is_connected(), "bystander: its host is away");
        assert!(
            matches!(
                registry.data_session(self.host.id(), &self.token, self.session.id()),
                Ok((_, ref s)) if Arc::ptr_eq(s, &self.session)
            ),
            "bystander: its host's token no longer opens its session"
        );
    }
}
