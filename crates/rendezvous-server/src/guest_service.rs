//! `GuestService`: a thin adapter from gRPC (and gRPC-Web) to the registry
//! and sessions.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use rendezvous_proto::guest_service_server::GuestService;
use rendezvous_proto::ids::{HostName, InvalidName, SessionId, TaskId};
use rendezvous_proto::{
    AckRequest, AckResponse, AttachRequest, Attached, HostInfo, ListSessionsRequest,
    ListSessionsResponse, ResizeRequest, ResizeResponse, Role, SendInputRequest, SendInputResponse,
    SessionInfo, TerminalRequest, terminal_request,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;
use tonic::{Request, Response, Status, Streaming};

use crate::audit::{AuditEvent, AuditKind};
use crate::cluster::{ClusterLink, Relayed};

mod unary_relay;
use crate::config::{INPUT_TIMEOUT, limit_name};
use crate::first_message::first_message;
use crate::guest_stream::{EventStream, GuestStream};
use crate::metrics::Metrics;
use crate::registry::{
    Authenticated, JoinedGuest, Registry, RegistryError, Replica, guest_credential,
};
use crate::session::{NewGuest, Session};
use crate::status::{client_ip, refused};

/// Input of one `Terminal` call read but waiting for the host's input
/// queue, in messages (16). Past it the call's requests are left unread.
pub const TERMINAL_INPUT_QUEUE_MESSAGES: usize = 16;

/// The guest service over a shared registry.
#[derive(Debug, Clone)]
pub struct GuestApi {
    registry: Arc<Registry>,
}

impl GuestApi {
    /// A service over `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    /// The cluster link, which a route to another replica implies.
    fn link(&self) -> Result<Arc<ClusterLink>, Status> {
        self.registry
            .cluster()
            .cloned()
            .ok_or_else(|| Status::internal("a route to another replica without a cluster link"))
    }

    /// Adds to `listing` the task's hosts on other replicas, each asked
    /// with the guest's own credential. A replica that does not answer is
    /// left out (and logged): its hosts are resuming elsewhere.
    ///
    /// # Errors
    /// UNAVAILABLE when the shared directory cannot be reached.
    async fn add_remote_hosts(
        &self,
        listing: &mut ListSessionsResponse,
        owner: &crate::registry::Owner,
        task_id: &TaskId,
        req: &ListSessionsRequest,
        ip: Option<IpAddr>,
    ) -> Result<(), Status> {
        let Some(link) = self.registry.cluster() else {
            return Ok(());
        };
        let replicas = self
            .registry
            .replicas_of(owner, task_id)
            .await
            .map_err(|e| refused(self.registry.metrics(), e))?;
        let answers = futures::future::join_all(
            replicas
                .iter()
                .map(|replica| link.list_sessions(replica, req.clone(), ip)),
        )
        .await;
        for (replica, answer) in replicas.iter().zip(answers) {
            match answer {
                Ok(remote) => {
                    for host in remote.hosts {
                        if !listing.hosts.iter().any(|h| h.host_name == host.host_name) {
                            listing.hosts.push(host);
                        }
                    }
                }
                Err(status) => tracing::info!(
                    replica = %replica.advertise_url, code = ?status.code(),
                    "a replica did not list its hosts"
                ),
            }
        }
        listing.hosts.sort_by(|a, b| a.host_name.cmp(&b.host_name));
        Ok(())
    }

    /// Validates the request's names, authenticates, finds or opens the
    /// session, and attaches the guest; or, on a replica without the host,
    /// names the replica that holds it. A request `relayed` by another
    /// replica is served here or not at all.
    async fn attach_guest(
        &self,
        ip: Option<IpAddr>,
        req: &AttachRequest,
        relayed: bool,
    ) -> Result<Route, Status> {
        // A malformed name cannot name a task, host or session that exists,
        // so refusing it before authentication tells nothing about them.
        let task_id = TaskId::new(req.task_id.as_str()).map_err(invalid)?;
        let name = HostName::or_default(&req.host_name).map_err(invalid)?;
        let session_id = (!req.session_id.is_empty())
            .then(|| SessionId::new(req.session_id.as_str()))
            .transpose()
            .map_err(invalid)?;
        let refused = |e| refused(self.registry.metrics(), e);
        if self.registry.is_draining() {
            return Err(refused(RegistryError::Draining));
        }
        // A guest resuming on a server that restarted (or on a replica
        // that never saw it) before its host is back: told to wait, before
        // its secret is checked against a task that is not here yet.
        let resuming = session_id.as_ref().is_some_and(|id| {
            self.registry.resuming_guest(
                &task_id,
                &name,
                id,
                &req.resume_guest_id,
                &req.resume_guest_token,
            )
        });
        // A replica without the host asks the shared directory who has it,
        // once the guest has shown a credential.
        let mut authenticated = None;
        if !relayed
            && self.registry.cluster().is_some()
            && !self.registry.holds_host(&task_id, &name)
        {
            let auth = match self
                .registry
                .authenticate_guest(ip, &task_id, &req.secret, &req.token)
                .await
            {
                Ok(auth) => auth,
                Err(_) if resuming => return Err(RegistryError::HostReconnecting.into()),
                Err(e) => return Err(refused(e)),
            };
            check_bound(&auth, &name, session_id.as_ref())?;
            if let Some(replica) = self
                .registry
                .owner_elsewhere(&auth.owner, &task_id, &name)
                .await
                .map_err(refused)?
            {
                return Ok(Route::Owner(replica));
            }
            authenticated = Some(auth);
        }
        if resuming {
            return Err(RegistryError::HostReconnecting.into());
        }
        let auth = match authenticated {
            Some(auth) => auth,
            None => self
                .registry
                .authenticate_guest(ip, &task_id, &req.secret, &req.token)
                .await
                .map_err(refused)?,
        };
        check_bound(&auth, &name, session_id.as_ref())?;
        let Authenticated {
            role,
            hosts,
            owner,
            sub,
            ..
        } = auth;
        let no_host = hosts.is_empty();
        let Some(host) = hosts.into_iter().find(|h| *h.name() == name) else {
            // A replica relayed this guest to a host that has just left:
            // it is on its way to another replica.
            return Err(if relayed {
                RegistryError::HostReconnecting
            } else if no_host {
                RegistryError::NoHost
            } else {
                RegistryError::NoSuchHost(name.to_string())
            }
            .into());
        };
        let session = match &session_id {
            None => {
                if role != Role::ReadWrite {
                    return Err(RegistryError::ReadOnly.into());
                }
                self.registry
                    .open_session(&host, req.cols, req.rows)
                    .await
                    .map_err(refused)?
            }
            Some(id) => host
                .session(id.as_str())
                .ok_or_else(|| RegistryError::NoSuchSession(id.to_string()))?,
        };
        let resume_guest = (!req.resume_guest_id.is_empty() && session_id.is_some()).then_some((
            req.resume_guest_id.as_str(),
            req.resume_guest_token.as_str(),
        ));
        let new = NewGuest {
            role,
            cols: req.cols,
            rows: req.rows,
            resume_offset: req.resume_offset,
            resume_guest,
            signed_resume: None,
            max_guests: usize::MAX,
        };
        let JoinedGuest {
            handle: mut guest,
            token,
            attachment,
        } = self
            .registry
            .add_guest(&host, &session, new, req.resume_input_seq)
            .map_err(refused)?;
        let cursor = attachment.cursor;
        guest.tell_host(&host, role, sub.as_deref(), attachment.resumed);
        tracing::info!(
            task = %host.task_id(), host = %host.name(), session = session.id(),
            guest = guest.id(), ?role, client_ip = ip.map(tracing::field::display),
            resumed = attachment.resumed, "guest attached"
        );
        let audit = self.registry.audit();
        if audit.is_on() {
            let (kind, credential) = guest_credential(&req.secret, &req.token);
            let event = AuditEvent::new(AuditKind::GuestAttached)
                .task(&task_id)
                .owner(&owner)
                .host(host.name())
                .session(session.id())
                .guest(guest.id())
                .role(role)
                .client_ip(ip)
                .token_sub(sub.as_deref())
                .credential(kind, audit.fingerprint(credential));
            let attached = if attachment.resumed {
                event.clone().reason("resumed")
            } else {
                event.clone()
            };
            audit.record(&attached);
            guest.audit_detach(event);
        }
        if req.window_bytes > 0 {
            session.set_window(guest.id(), req.window_bytes);
        }
        let attached = Attached {
            session_id: session.id().to_owned(),
            guest_id: guest.id().to_owned(),
            guest_token: token,
            role: role.into(),
            host_name: host.name().to_string(),
            resumed: attachment.resumed,
            next_input_seq: attachment.next_input_seq,
        };
        Ok(Route::Local(Box::new(
            GuestStream::new(guest, attached, cursor, self.registry.metrics().clone())
                .with_window_messages(req.window_messages),
        )))
    }
}

/// Where a guest's Attach is served.
enum Route {
    /// Here: its stream.
    Local(Box<GuestStream>),
    /// At this other replica, which holds its host.
    Owner(Replica),
}

/// A guest token bound to one host or session reaches nothing else (and,
/// bound to a session, opens no new shell).
fn check_bound(
    auth: &Authenticated,
    name: &HostName,
    session_id: Option<&SessionId>,
) -> Result<(), Status> {
    if auth
        .only_host
        .as_deref()
        .is_some_and(|h| h != name.as_str())
        || auth
            .only_session
            .as_deref()
            .is_some_and(|s| session_id.is_none_or(|id| id.as_str() != s))
    {
        return Err(RegistryError::Denied.into());
    }
    Ok(())
}

/// `INVALID_ARGUMENT` for a malformed name; the text says what is allowed
/// and echoes nothing of what was sent.
fn invalid(e: InvalidName) -> Status {
    RegistryError::Invalid(e.to_string()).into()
}

/// Counts `len` input bytes, and refuses them over `limit` (bytes per
/// input call): for `SendInput` and each input of a `Terminal` call alike.
fn check_input_len(metrics: &Metrics, limit: usize, len: usize) -> Result<(), Status> {
    metrics.guest_input_bytes.inc_by(len as u64);
    if len > limit {
        metrics.refused_at(limit_name::INPUT_BYTES);
        return Err(RegistryError::Limit {
            name: limit_name::INPUT_BYTES,
            value: limit,
        }
        .into());
    }
    Ok(())
}

async fn send_input(
    session: &Session,
    guest_id: &str,
    seq: u64,
    data: bytes::Bytes,
) -> Result<(), Status> {
    match tokio::time::timeout(INPUT_TIMEOUT, session.send_input(guest_id, seq, data)).await {
        Ok(result) => result.map_err(Status::from),
        Err(_) => Err(Status::unavailable(format!(
            "the host took no input for {} s: it may be overloaded or gone; try again",
            INPUT_TIMEOUT.as_secs()
        ))),
    }
}

fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[tonic::async_trait]
impl GuestService for GuestApi {
    type AttachStream = EventStream;
    type TerminalStream = EventStream;

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let ip = client_ip(&request);
        let relayed = request.extensions().get::<Relayed>().is_some();
        let req = request.into_inner();
        match self.attach_guest(ip, &req, relayed).await? {
            Route::Local(stream) => Ok(Response::new((*stream).into_stream())),
            Route::Owner(owner) => {
                let link = self.link()?;
                Ok(Response::new(link.attach(&owner, req, ip).await?))
            }
        }
    }

    async fn send_input(
        &self,
        request: Request<SendInputRequest>,
    ) -> Result<Response<SendInputResponse>, Status> {
        // Refused, not lost: the guest sends it again after it resumes. A
        // call that got past this is waited for by the drain.
        let Some(_call) = self.registry.input_call() else {
            return Err(RegistryError::Draining.into());
        };
        // Who asks comes first: an unknown caller learns nothing of limits.
        let guest = match self
            .registry
            .guest(&request.get_ref().guest_id, &request.get_ref().guest_token)
        {
            Ok(guest) => guest,
            Err(e) => {
                return self
                    .relay_unary(request, e.into(), |mut c, r| async move {
                        c.send_input(r).await
                    })
                    .await;
            }
        };
        let req = request.into_inner();
        check_input_len(
            self.registry.metrics(),
            self.registry.config().limits.input_bytes,
            req.data.len(),
        )?;
        send_input(&guest.session, &req.guest_id, req.seq, req.data).await?;
        Ok(Response::new(SendInputResponse {}))
    }

    async fn resize(
        &self,
        request: Request<ResizeRequest>,
    ) -> Result<Response<ResizeResponse>, Status> {
        let guest = match self
            .registry
            .guest(&request.get_ref().guest_id, &request.get_ref().guest_token)
        {
            Ok(guest) => guest,
            Err(e) => {
                return self
                    .relay_unary(
                        request,
                        e.into(),
                        |mut c, r| async move { c.resize(r).await },
                    )
                    .await;
            }
        };
        let req = request.into_inner();
        guest
            .session
            .resize_guest(&req.guest_id, req.cols, req.rows)?;
        Ok(Response::new(ResizeResponse {}))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let guest = match self
            .registry
            .guest(&request.get_ref().guest_id, &request.get_ref().guest_token)
        {
            Ok(guest) => guest,
            Err(e) => {
                return self
                    .relay_unary(request, e.into(), |mut c, r| async move { c.ack(r).await })
                    .await;
            }
        };
        let req = request.into_inner();
        guest.session.ack(&req.guest_id, req.offset, req.messages)?;
        Ok(Response::new(AckResponse {}))
    }

    async fn terminal(
        &self,
        request: Request<Streaming<TerminalRequest>>,
    ) -> Result<Response<EventStream>, Status> {
        let ip = client_ip(&request);
        let relayed = request.extensions().get::<Relayed>().is_some();
        let mut inbound = request.into_inner();
        let Some(TerminalRequest {
            message: Some(terminal_request::Message::Attach(attach)),
        }) = first_message(&mut inbound, "attach request").await?
        else {
            return Err(Status::invalid_argument(
                "the first Terminal request must be attach",
            ));
        };
        let stream = match self.attach_guest(ip, &attach, relayed).await? {
            Route::Local(stream) => *stream,
            Route::Owner(owner) => {
                let link = self.link()?;
                return Ok(Response::new(
                    link.terminal(&owner, attach, inbound, ip).await?,
                ));
            }
        };
        // A resumed guest's input goes on from where its session is.
        let mut seq = stream.next_input_seq();
        let guest_id = stream.guest_id().to_owned();
        let session = stream.session().clone();
        let input_limit = self.registry.config().limits.input_bytes;
        let metrics = self.registry.metrics().clone();
        let (abort_tx, abort_rx) = oneshot::channel();
        let registry = self.registry.clone();
        let reader = tokio::spawn(async move {
            // Input waits for the host in a task of its own, so that acks
            // and resizes are read while it waits: a guest's output never
            // stalls behind its input.
            let (inputs, mut queue) = mpsc::channel::<bytes::Bytes>(TERMINAL_INPUT_QUEUE_MESSAGES);
            let input_session = session.clone();
            let input_guest = guest_id.clone();
            let apply = async move {
                while let Some(data) = queue.recv().await {
                    let Some(_call) = registry.input_call() else {
                        return Err(RegistryError::Draining.into());
                    };
                    send_input(&input_session, &input_guest, seq, data).await?;
                    seq += 1;
                }
                Ok::<(), Status>(())
            };
            let read = async {
                while let Some(req) = inbound.message().await? {
                    match req.message {
                        Some(terminal_request::Message::Input(data)) => {
                            check_input_len(&metrics, input_limit, data.len())?;
                            if inputs.send(data).await.is_err() {
                                break;
                            }
                        }
                        Some(terminal_request::Message::Resize(size)) => {
                            session.resize_guest(&guest_id, size.cols, size.rows)?;
                        }
                        Some(terminal_request::Message::Ack(ack)) => {
                            session.ack(&guest_id, ack.offset, ack.messages)?;
                        }
                        Some(terminal_request::Message::Attach(_)) => {
                            return Err(Status::invalid_argument(
                                "attach may only be the first Terminal request",
                            ));
                        }
                        // A request kind newer than this server.
                        None => {}
                    }
                }
                // The guest half-closed: apply what it sent, then stop.
                drop(inputs);
                std::future::pending::<()>().await;
                Ok(())
            };
            let result = tokio::select! {
                r = read => r,
                r = apply => r,
            };
            // Input that races the session's end is dropped quietly: the
            // guest still gets the rest of the output and the exit status.
            if let Err(status) = result
                && !session.has_ended()
            {
                let _ = abort_tx.send(status);
            }
        });
        let stream = stream.with_reader(AbortOnDropHandle::new(reader), abort_rx);
        Ok(Response::new(stream.into_stream()))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let ip = client_ip(&request);
        let relayed = request.extensions().get::<Relayed>().is_some();
        let req = request.into_inner();
        let task_id = TaskId::new(req.task_id.as_str()).map_err(invalid)?;
        let Authenticated {
            hosts,
            only_host,
            only_session,
            owner,
            ..
        } = self
            .registry
            .authenticate_guest(ip, &task_id, &req.secret, &req.token)
            .await
            .map_err(|e| refused(self.registry.metrics(), e))?;
        // A token bound to one host or session lists only what it may
        // attach to.
        let hosts = hosts
            .iter()
            .filter(|host| {
                only_host
                    .as_deref()
                    .is_none_or(|h| h == host.name().as_str())
            })
            .map(|host| HostInfo {
                host_name: host.name().to_string(),
                labels: host.labels().clone(),
                connected_at_unix_ms: unix_ms(host.connected_at()),
                sessions: host
                    .sessions()
                    .iter()
                    .filter(|s| only_session.as_deref().is_none_or(|id| id == s.id()))
                    .map(|s| {
                        let size = s.size();
                        SessionInfo {
                            session_id: s.id().to_owned(),
                            cols: size.cols,
                            rows: size.rows,
                            started_at_unix_ms: unix_ms(s.started_at()),
                            guest_count: u32::try_from(s.guest_count()).unwrap_or(u32::MAX),
                            output_offset: s.end_offset(),
                        }
                    })
                    .collect(),
            })
            .collect();
        let mut listing = ListSessionsResponse { hosts };
        if !relayed {
            self.add_remote_hosts(&mut listing, &owner, &task_id, &req, ip)
                .await?;
        }
        Ok(Response::new(listing))
    }
}
