//! `HostService`: a thin adapter from the hosts' gRPC streams to the
//! registry and sessions.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rendezvous_proto::host_service_server::HostService;
use rendezvous_proto::{
    HostControlRequest, HostControlResponse, HostDataRequest, Ping, Registered,
    host_control_request, host_control_response, host_data_request,
};
use tokio_stream::wrappers::{IntervalStream, ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::audit::{AuditEvent, AuditKind};
use crate::config::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
use crate::first_message::first_message;
use crate::registry::{
    HOST_TOKEN_METADATA, Host, Registry, RegistryError, gone, host_credential_kind,
};
use crate::status::{client_ip, refused};
use crate::task_stream::TaskStream;

/// The response stream type of `Control`.
pub type ControlStream = Pin<Box<dyn Stream<Item = Result<HostControlResponse, Status>> + Send>>;
pub use crate::host_data::DataStream;

/// The host service over a shared registry.
#[derive(Debug, Clone)]
pub struct HostApi {
    registry: Arc<Registry>,
}

impl HostApi {
    /// A service over `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

/// Tells the registry that its connection of the host ended when dropped:
/// the Control stream's reader owns it, so the registry hears of it
/// however the stream ends (see [`Registry::control_ended`]).
struct HostGuard {
    registry: Arc<Registry>,
    host: Arc<Host>,
    /// Which of the host's connections this is.
    generation: u64,
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        self.registry.control_ended(&self.host, self.generation);
    }
}

#[tonic::async_trait]
impl HostService for HostApi {
    type ControlStream = ControlStream;
    type DataStream = DataStream;

    async fn control(
        &self,
        request: Request<Streaming<HostControlRequest>>,
    ) -> Result<Response<ControlStream>, Status> {
        if self.registry.is_draining() {
            return Err(RegistryError::Draining.into());
        }
        // Admission first: a host that is not admitted is refused before
        // the server reads anything it sends.
        let ip = client_ip(&request);
        let token = host_token(request.metadata());
        let audit = self.registry.audit();
        let credential = (
            host_credential_kind(token),
            audit.fingerprint(token.unwrap_or_default()),
        );
        let owner = self
            .registry
            .admit_host(ip, token)
            .await
            .map_err(|e| refused(self.registry.metrics(), e))?;
        let mut inbound = request.into_inner();
        let Some(HostControlRequest {
            message: Some(host_control_request::Message::Hello(hello)),
        }) = first_message(&mut inbound, "Hello").await?
        else {
            return Err(Status::invalid_argument(
                "the first Control message must be Hello",
            ));
        };
        let event = |kind| {
            AuditEvent::new(kind)
                .task(&hello.task_id)
                .host(&hello.host_name)
                .client_ip(ip)
                .credential(credential.0, credential.1.clone())
        };
        let registration = match self.registry.register_host(owner.clone(), ip, &hello).await {
            Ok(registration) => registration,
            Err(e) => {
                audit.record(&event(AuditKind::HostRefused).owner(&owner).reason(&e));
                return Err(refused(self.registry.metrics(), e));
            }
        };
        let host = registration.host;
        tracing::info!(
            task = %host.task_id(), host = %host.name(), owner = %host.owner(),
            client_ip = ip.map(tracing::field::display),
            resumed = registration.resumed, "host registered"
        );
        audit.record(
            &event(AuditKind::HostRegistered)
                .host(host.name())
                .owner(host.owner()),
        );
        let registered = HostControlResponse {
            message: Some(host_control_response::Message::Registered(Registered {
                host_id: host.id().to_owned(),
                host_token: registration.host_token,
                guest_url_path: format!("/t/{}", host.task_id()),
                owner: host.owner().to_string(),
                resume_ticket: registration.resume_ticket,
                grace_period_ms: u64::try_from(host.grace_period().as_millis()).unwrap_or(u64::MAX),
                resumed: registration.resumed,
            })),
        };
        let (generation, connection_closed) = host.connection();
        let guard = HostGuard {
            registry: self.registry.clone(),
            host: host.clone(),
            generation,
        };
        let reader_closed = connection_closed.clone();
        let draining = host.draining();
        // A message the server refuses after Registered (over the size
        // limit, undecodable) ends the call with that status, and so does a
        // host gone silent: both are transient to a host, which reconnects.
        let (ending, ending_rx) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(async move {
            let guard = guard;
            let status = loop {
                // Any message resets the keepalive clock; Pings go out every
                // KEEPALIVE_INTERVAL, so silence means the host is gone.
                let next = tokio::select! {
                    next = tokio::time::timeout(KEEPALIVE_TIMEOUT, inbound.message()) => next,
                    () = reader_closed.cancelled() => break None,
                    // The server drains: the host reconnects and resumes.
                    () = draining.cancelled() => break Some(RegistryError::Draining.into()),
                };
                match next {
                    Ok(Ok(Some(msg))) => match msg.message {
                        Some(host_control_request::Message::SessionFailed(failed)) => {
                            if let Some(session) = guard.host.session(&failed.session_id) {
                                let message = format!(
                                    "the host could not start the shell: {}",
                                    failed.message
                                );
                                guard.host.end_session(&session, gone(&message));
                            }
                        }
                        Some(host_control_request::Message::Pong(_)) => {}
                        Some(host_control_request::Message::Hello(_)) | None => {
                            tracing::warn!(host = %guard.host.name(), "unexpected control message; dropping host");
                            break None;
                        }
                    },
                    Ok(Ok(None)) => break None,
                    Ok(Err(status)) => {
                        tracing::info!(host = %guard.host.name(), %status, "host control stream failed");
                        break Some(status);
                    }
                    Err(_) => {
                        tracing::info!(host = %guard.host.name(), "host missed its keepalives");
                        break Some(Status::deadline_exceeded(format!(
                            "no message from the host within {} s: answer each Ping",
                            KEEPALIVE_TIMEOUT.as_secs()
                        )));
                    }
                }
            };
            // Before the guard unregisters the host, which ends the
            // response stream.
            if let Some(status) = status {
                let _ = ending.send(status);
            }
            drop(guard);
        });
        let mut nonce = 0u64;
        let pings = IntervalStream::new(tokio::time::interval_at(
            tokio::time::Instant::now() + KEEPALIVE_INTERVAL,
            KEEPALIVE_INTERVAL,
        ))
        .map(move |_| {
            nonce += 1;
            HostControlResponse {
                message: Some(host_control_response::Message::Ping(Ping { nonce })),
            }
        });
        let outbound = futures::stream::select(ReceiverStream::new(registration.control), pings)
            .take_until(connection_closed.cancelled_owned());
        let stream = futures::stream::once(async move { registered })
            .chain(outbound)
            .map(Ok)
            .boxed();
        // The reader lives as long as the response stream.
        Ok(Response::new(Box::pin(TaskStream::with_ending(
            stream, reader, ending_rx,
        ))))
    }

    async fn data(
        &self,
        request: Request<Streaming<HostDataRequest>>,
    ) -> Result<Response<DataStream>, Status> {
        // While the drain delivers the guests' last input, a host may still
        // open a Data stream; after that, it resumes on the next server.
        if self.registry.hosts_draining() {
            return Err(RegistryError::Draining.into());
        }
        let mut inbound = request.into_inner();
        let Some(HostDataRequest {
            message: Some(host_data_request::Message::Open(open)),
        }) = first_message(&mut inbound, "DataOpen").await?
        else {
            return Err(Status::invalid_argument(
                "the first Data message must be DataOpen",
            ));
        };
        let (host, session) =
            self.registry
                .data_session(&open.host_id, &open.host_token, &open.session_id)?;
        // Only a host that may resume replaces a live Data stream (it lost
        // the old one); for any other, a second stream is a mistake.
        if !host.may_resume() && session.host_stream().0 {
            return Err(Status::failed_precondition(
                "this session already has a Data stream",
            ));
        }
        let Some(link) = session.attach_host(open.input_applied) else {
            return Err(Status::failed_precondition("this session has ended"));
        };
        Ok(Response::new(crate::host_data::serve(
            host,
            session,
            inbound,
            link,
            self.registry.metrics().clone(),
        )))
    }
}

/// The host token in `metadata` ([`HOST_TOKEN_METADATA`] as `Bearer
/// TOKEN`), if there is one.
fn host_token(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    let value = metadata.get(HOST_TOKEN_METADATA)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}
