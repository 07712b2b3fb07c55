//! One control connection: dial, Hello → Registered, then serve the
//! server's OpenSession / CloseSession / Ping until the connection ends.
//! The connection owns the sessions it started and ends them all before it
//! returns.

use std::collections::HashMap;
use std::time::Duration;

use rendezvous_proto::host_service_client::HostServiceClient;
use rendezvous_proto::message_size::MAX_MESSAGE_BYTES;
use rendezvous_proto::{
    DataOpen, Hello, HostControlRequest, OpenSession, Pong, SessionFailed, host_control_request,
    host_control_response,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::builder::Config;
use crate::guests::GuestsTx;
use crate::pty::{self, PtySize};
use crate::session::{self, CloseReason};
use crate::{HostError, HostStatus};

/// Bound of the queue of messages waiting to go up the control stream, in
/// messages (Pongs and SessionFailed, a few bytes each). When it is full,
/// the host stops reading the server's requests until it drains.
pub(crate) const CONTROL_QUEUE_MESSAGES: usize = 16;

/// Most sessions one host runs at once. Further OpenSession requests get
/// SessionFailed ("host session limit reached").
pub const MAX_SESSIONS: usize = 64;

/// How long a connection waits, when it ends, for its sessions to end their
/// processes and send their exit statuses; sessions still running then are
/// aborted (their processes get SIGKILL).
pub(crate) const SESSIONS_END_TIMEOUT: Duration = Duration::from_secs(10);

/// How a control connection ended.
#[derive(Debug)]
pub(crate) enum ConnectionEnd {
    /// The host was asked to stop.
    Stopped,
    /// Connection error, transient status, or the server closed the stream:
    /// reconnect. `registered` tells whether Registered had arrived.
    Lost { reason: String, registered: bool },
    /// The server refused the host with a permanent status.
    Refused(HostError),
}

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Makes one control connection and serves it until it ends; sets
/// `status` to Registered once the server accepts the Hello.
pub(crate) async fn connect(
    config: &Config,
    status: &watch::Sender<HostStatus>,
    guests: &GuestsTx,
    stop: &mut watch::Receiver<bool>,
) -> ConnectionEnd {
    let lost = |reason: String| ConnectionEnd::Lost {
        reason,
        registered: false,
    };
    let channel = tokio::select! {
        channel = config.endpoint.connect() => match channel {
            Ok(channel) => channel,
            Err(e) => return lost(format!("cannot connect to {}: {}", config.server, error_chain(&e))),
        },
        () = stopped(stop) => return ConnectionEnd::Stopped,
    };
    // The protocol's one message limit, both ways: Input from the server
    // may carry up to 4 MiB, above tonic's default for decoding. Data
    // streams use clones of this client.
    let mut client = HostServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (outbound, requests) = mpsc::channel(CONTROL_QUEUE_MESSAGES);
    // The queue is empty and its receiver alive: this cannot fail.
    let _ = outbound.try_send(hello(config));
    let mut request = tonic::Request::new(ReceiverStream::new(requests));
    let id_token = match (&config.host_token, &config.id_token) {
        (None, Some(source)) => tokio::select! {
            token = source.token() => match token {
                Ok(token) => Some(token),
                Err(e) => return lost(e.to_string()),
            },
            () = stopped(stop) => return ConnectionEnd::Stopped,
        },
        _ => None,
    };
    if let Some(token) = config.host_token.as_ref().or(id_token.as_ref()) {
        // `build` checked a host token; an identity token that is not
        // printable ASCII is not sent (the server then says it lacks one).
        if let Ok(mut value) =
            tonic::metadata::MetadataValue::try_from(format!("Bearer {}", token.expose()))
        {
            value.set_sensitive(true);
            request.metadata_mut().insert("authorization", value);
        }
    }
    let response = tokio::select! {
        response = client.control(request) => response,
        () = stopped(stop) => return ConnectionEnd::Stopped,
    };
    let mut inbound = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return status_end(&status, false),
    };
    let first = tokio::select! {
        first = inbound.message() => first,
        () = stopped(stop) => return ConnectionEnd::Stopped,
    };
    let registered = match first {
        Ok(Some(message)) => match message.message {
            Some(host_control_response::Message::Registered(registered)) => registered,
            other => {
                return lost(format!(
                    "protocol error: expected Registered, got {}",
                    message_name(other.as_ref())
                ));
            }
        },
        Ok(None) => return lost("the server closed the control stream before Registered".into()),
        Err(status) => return status_end(&status, false),
    };
    // Never log the host token.
    tracing::info!(
        task_id = %config.task_id,
        host_name = %config.host_name,
        host_id = registered.host_id,
        owner = registered.owner,
        "registered"
    );
    status.send_replace(HostStatus::Registered {
        host_id: registered.host_id.clone(),
    });

    let mut connection = Connection {
        config,
        client,
        outbound,
        host_id: registered.host_id,
        host_token: registered.host_token,
        guests: guests.clone(),
        sessions: JoinSet::new(),
        open: HashMap::new(),
    };
    let (end, reason) = loop {
        tokio::select! {
            () = stopped(stop) => break (ConnectionEnd::Stopped, CloseReason::HostShutdown),
            message = inbound.message() => match message {
                Ok(Some(message)) => connection.handle(message.message).await,
                Ok(None) => break (
                    ConnectionEnd::Lost {
                        reason: "the server closed the control stream".into(),
                        registered: true,
                    },
                    CloseReason::HostDisconnected,
                ),
                Err(status) => break (status_end(&status, true), CloseReason::HostDisconnected),
            },
            Some(done) = connection.sessions.join_next_with_id() => connection.session_done(done),
        }
    };
    connection.end_sessions(reason).await;
    // The server detaches every guest of a lost host; we may not hear it.
    guests.clear();
    end
}

/// The state of one registered control connection.
struct Connection<'a> {
    config: &'a Config,
    /// Cloned into each session for its Data stream (same HTTP/2
    /// connection).
    client: HostServiceClient<Channel>,
    /// Messages up the control stream.
    outbound: mpsc::Sender<HostControlRequest>,
    host_id: String,
    /// Presented on each Data stream; never logged.
    host_token: String,
    /// Who is attached, and their input; told to each session.
    guests: GuestsTx,
    /// The running sessions' tasks; dropping the set aborts them.
    sessions: JoinSet<()>,
    /// Session ID → its task and the sender that closes it. An entry is
    /// removed by CloseSession or when its task ends.
    open: HashMap<String, OpenEntry>,
}

struct OpenEntry {
    task: tokio::task::Id,
    close: oneshot::Sender<CloseReason>,
}

impl Connection<'_> {
    /// Handles one message from the server.
    async fn handle(&mut self, message: Option<host_control_response::Message>) {
        match message {
            Some(host_control_response::Message::OpenSession(open)) => {
                self.open_session(open).await
            }
            Some(host_control_response::Message::CloseSession(close)) => {
                match self.open.remove(&close.session_id) {
                    Some(entry) => {
                        let _ = entry.close.send(CloseReason::ClosedByServer);
                    }
                    None => tracing::debug!(
                        session_id = close.session_id,
                        "CloseSession for a session that is not running"
                    ),
                }
            }
            Some(host_control_response::Message::Ping(ping)) => {
                self.send(host_control_request::Message::Pong(Pong {
                    nonce: ping.nonce,
                }))
                .await;
            }
            Some(host_control_response::Message::Registered(_)) => {
                tracing::debug!("ignoring a second Registered");
            }
            Some(host_control_response::Message::GuestAttached(attached)) => {
                let resumed = attached.resumed;
                let guest = self.guests.attached(attached);
                tracing::info!(
                    session_id = guest.session_id,
                    role = %guest.role,
                    sub = guest.sub.as_deref().unwrap_or(""),
                    resumed,
                    "guest attached"
                );
            }
            Some(host_control_response::Message::GuestDetached(detached)) => {
                tracing::info!(session_id = detached.session_id, "guest detached");
                self.guests.detached(&detached);
            }
            // A message newer than this host.
            None => tracing::debug!("ignoring an unknown control message"),
        }
    }

    /// Starts a PTY for `open` and a task for its Data stream; tells the
    /// server SessionFailed when it cannot.
    async fn open_session(&mut self, open: OpenSession) {
        let session_id = open.session_id;
        let refuse = if session_id.is_empty() {
            Some("empty session ID".to_owned())
        } else if self.open.contains_key(&session_id) {
            Some("session ID already in use on this host".to_owned())
        } else if self.sessions.len() >= MAX_SESSIONS {
            Some(format!("host session limit reached ({MAX_SESSIONS})"))
        } else {
            None
        };
        if let Some(message) = refuse {
            return self.session_failed(session_id, message).await;
        }
        let size = PtySize::from_wire(open.cols, open.rows);
        let process = match pty::spawn(&self.config.command, size) {
            Ok(process) => process,
            Err(e) => {
                let message = format!(
                    "could not start {}: {e}",
                    self.config.command.program.to_string_lossy()
                );
                tracing::warn!(session_id, message, "session failed");
                return self.session_failed(session_id, message).await;
            }
        };
        tracing::info!(
            session_id,
            cols = size.cols,
            rows = size.rows,
            "session started"
        );
        let data_open = DataOpen {
            host_id: self.host_id.clone(),
            host_token: self.host_token.clone(),
            session_id: session_id.clone(),
        };
        let (close, closed) = oneshot::channel();
        let task = self
            .sessions
            .spawn(session::run(
                self.client.clone(),
                data_open,
                process,
                self.guests.clone(),
                closed,
            ))
            .id();
        self.open.insert(session_id, OpenEntry { task, close });
    }

    async fn session_failed(&self, session_id: String, message: String) {
        self.send(host_control_request::Message::SessionFailed(
            SessionFailed {
                session_id,
                message,
            },
        ))
        .await;
    }

    /// Sends a message up the control stream; if the stream is gone, the
    /// receive side notices and ends the connection.
    async fn send(&self, message: host_control_request::Message) {
        let request = HostControlRequest {
            message: Some(message),
        };
        let _ = self.outbound.send(request).await;
    }

    /// Forgets a session whose task ended.
    fn session_done(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let task = match done {
            Ok((task, ())) => task,
            Err(e) => {
                if e.is_panic() {
                    tracing::error!("a session task panicked");
                }
                e.id()
            }
        };
        self.open.retain(|_, entry| entry.task != task);
    }

    /// Closes every session with `reason` and waits up to
    /// [`SESSIONS_END_TIMEOUT`] for them to end; aborts the rest.
    async fn end_sessions(&mut self, reason: CloseReason) {
        for (_, entry) in self.open.drain() {
            let _ = entry.close.send(reason);
        }
        let all_ended = async {
            while let Some(done) = self.sessions.join_next().await {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!("a session task panicked");
                }
            }
        };
        if tokio::time::timeout(SESSIONS_END_TIMEOUT, all_ended)
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = self.sessions.len(),
                "sessions did not end in time; aborting them"
            );
            // Aborting drops each session's `SessionProcesses`, which
            // sends SIGKILL.
            self.sessions.shutdown().await;
        }
    }
}

/// The Hello that opens every control stream.
fn hello(config: &Config) -> HostControlRequest {
    HostControlRequest {
        message: Some(host_control_request::Message::Hello(Hello {
            task_id: config.task_id.as_str().to_owned(),
            host_name: config.host_name.as_str().to_owned(),
            secret: config.secret.expose().to_owned(),
            read_only_secret: config
                .read_only_secret
                .as_ref()
                .map(|s| s.expose().to_owned())
                .unwrap_or_default(),
            labels: config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })),
    }
}

/// What a gRPC status on the control stream means for the connection.
fn status_end(status: &tonic::Status, registered: bool) -> ConnectionEnd {
    match HostError::from_control_status(status) {
        Some(error) => ConnectionEnd::Refused(error),
        None => ConnectionEnd::Lost {
            reason: format!("{:?}: {}", status.code(), status.message()),
            registered,
        },
    }
}

/// The name of a control message, for errors.
fn message_name(message: Option<&host_control_response::Message>) -> &'static str {
    match message {
        Some(host_control_response::Message::Registered(_)) => "Registered",
        Some(host_control_response::Message::OpenSession(_)) => "OpenSession",
        Some(host_control_response::Message::CloseSession(_)) => "CloseSession",
        Some(host_control_response::Message::Ping(_)) => "Ping",
        Some(host_control_response::Message::GuestAttached(_)) => "GuestAttached",
        Some(host_control_response::Message::GuestDetached(_)) => "GuestDetached",
        None => "an unknown message",
    }
}

/// `error` and its sources, joined by ": " (tonic's transport errors say
/// little at the top level).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        // Layers often repeat their source's text; say it once.
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}
