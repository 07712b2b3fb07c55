//! One control connection: dial, Hello → Registered (resuming the last
//! registration and its sessions when there was one), then serve the
//! server's OpenSession / CloseSession / Ping until the connection ends.
//! The sessions belong to the host ([`Sessions`]), not to the connection:
//! the connection runs one Data stream per session, and a lost connection
//! leaves the sessions running for the next one to resume.

use std::time::Duration;

use rendezvous_proto::host_service_client::HostServiceClient;
use rendezvous_proto::message_size::MAX_MESSAGE_BYTES;
use rendezvous_proto::{
    DataOpen, Hello, HostControlRequest, OpenSession, Pong, SessionFailed, host_control_request,
    host_control_response,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::builder::Config;
use crate::guests::GuestsTx;
use crate::pty::{self, PtySize};
use crate::session::stream::{self, StreamEnd};
use crate::session::{CloseReason, live};
use crate::sessions::Sessions;
use crate::{HostError, HostStatus};

/// How long a connection may take from dialling to Registered (30 s);
/// past it, the host gives up on that attempt and retries.
pub(crate) const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a broken Data stream waits before it is opened again while its
/// control connection still stands (1 s).
const STREAM_RETRY: Duration = Duration::from_millis(1_000);

/// What the last registration gave for resuming it.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub(crate) host_id: String,
    /// Never logged.
    pub(crate) ticket: String,
}

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
/// `status` to Registered once the server accepts the Hello. With
/// `resume`, the Hello resumes that registration and `sessions`. An
/// attempt that is not registered by `give_up_at` (or within
/// [`REGISTER_TIMEOUT`]) ends as lost.
pub(crate) async fn connect(
    config: &Config,
    status: &watch::Sender<HostStatus>,
    guests: &GuestsTx,
    stop: &mut watch::Receiver<bool>,
    sessions: &mut Sessions,
    resume: &mut Option<Resume>,
    give_up_at: Option<tokio::time::Instant>,
) -> ConnectionEnd {
    let lost = |reason: String| ConnectionEnd::Lost {
        reason,
        registered: false,
    };
    // Registration must finish within REGISTER_TIMEOUT (a server behind a
    // stalled link never answers), and before `give_up_at` (the end of the
    // grace period of sessions waiting to resume).
    let register_by = tokio::time::Instant::now() + REGISTER_TIMEOUT;
    let give_up_reason = match give_up_at {
        Some(at) if at < register_by => "the grace period ended while registering".to_owned(),
        _ => format!(
            "no answer from the server within {} s",
            REGISTER_TIMEOUT.as_secs()
        ),
    };
    let give_up =
        tokio::time::sleep_until(give_up_at.map_or(register_by, |at| at.min(register_by)));
    tokio::pin!(give_up);
    let channel = tokio::select! {
        channel = config.endpoint.connect() => match channel {
            Ok(channel) => channel,
            Err(e) => return lost(format!("cannot connect to {}: {}", config.server, error_chain(&e))),
        },
        () = stopped(stop) => return ConnectionEnd::Stopped,
        () = &mut give_up => return lost(give_up_reason.clone()),
    };
    // The protocol's one message limit, both ways: Input from the server
    // may carry up to 4 MiB, above tonic's default for decoding. Data
    // streams use clones of this client.
    let mut client = HostServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (outbound, requests) = mpsc::channel(CONTROL_QUEUE_MESSAGES);
    // The queue is empty and its receiver alive: this cannot fail.
    let _ = outbound.try_send(hello(config, resume.as_ref(), sessions));
    let mut request = tonic::Request::new(ReceiverStream::new(requests));
    let id_token = match (&config.host_token, &config.id_token) {
        (None, Some(source)) => tokio::select! {
            token = source.token() => match token {
                Ok(token) => Some(token),
                Err(e) => return lost(e.to_string()),
            },
            () = stopped(stop) => return ConnectionEnd::Stopped,
            () = &mut give_up => return lost(give_up_reason.clone()),
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
        () = &mut give_up => return lost(give_up_reason.clone()),
    };
    let mut inbound = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return status_end(&status, false),
    };
    let first = tokio::select! {
        first = inbound.message() => first,
        () = stopped(stop) => return ConnectionEnd::Stopped,
        () = &mut give_up => return lost(give_up_reason.clone()),
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
    // Never log the host token or the ticket.
    tracing::info!(
        task_id = %config.task_id,
        host_name = %config.host_name,
        host_id = registered.host_id,
        owner = registered.owner,
        resumed = registered.resumed,
        sessions = sessions.len(),
        "registered"
    );
    *resume = (registered.grace_period_ms > 0 && !config.grace_period.is_zero()).then(|| Resume {
        host_id: registered.host_id.clone(),
        ticket: registered.resume_ticket.clone(),
    });
    if !registered.resumed && !sessions.is_empty() {
        tracing::warn!(
            sessions = sessions.len(),
            "the server did not resume this host's sessions; ending them"
        );
        sessions
            .end_all(CloseReason::NotResumed, SESSIONS_END_TIMEOUT)
            .await;
        guests.clear();
    }
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
        sessions,
        streams: JoinSet::new(),
    };
    for live in connection.sessions.all() {
        connection.start_stream(live, Duration::ZERO);
    }
    let end = loop {
        tokio::select! {
            () = stopped(stop) => break ConnectionEnd::Stopped,
            message = inbound.message() => match message {
                Ok(Some(message)) => connection.handle(message.message).await,
                Ok(None) => break ConnectionEnd::Lost {
                    reason: "the server closed the control stream".into(),
                    registered: true,
                },
                Err(status) => break status_end(&status, true),
            },
            Some(done) = connection.streams.join_next() => connection.stream_done(done),
        }
        connection.sessions.reap();
    };
    match &end {
        ConnectionEnd::Stopped => connection.end_sessions(CloseReason::HostShutdown).await,
        _ if resume.is_none() => connection.end_sessions(CloseReason::HostDisconnected).await,
        _ => {
            // Resumed by the next connection, within the grace period.
            connection.streams.shutdown().await;
            connection.sessions.disconnected();
        }
    }
    if resume.is_none() {
        // The server detaches every guest of a lost host; we may not hear
        // it. A host that resumes keeps its guests.
        guests.clear();
    }
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
    /// The host's sessions, which outlive this connection.
    sessions: &'a mut Sessions,
    /// One Data stream per session, each ending with its session ID;
    /// dropping the set aborts them.
    streams: JoinSet<(String, StreamEnd)>,
}

impl Connection<'_> {
    /// Handles one message from the server.
    async fn handle(&mut self, message: Option<host_control_response::Message>) {
        match message {
            Some(host_control_response::Message::OpenSession(open)) => {
                self.open_session(open).await
            }
            Some(host_control_response::Message::CloseSession(close)) => {
                if self.sessions.contains(&close.session_id) {
                    self.sessions
                        .close(&close.session_id, CloseReason::ClosedByServer);
                } else {
                    tracing::debug!(
                        session_id = close.session_id,
                        "CloseSession for a session that is not running"
                    );
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

    /// Starts a PTY for `open` and a Data stream for it; tells the server
    /// SessionFailed when it cannot.
    async fn open_session(&mut self, open: OpenSession) {
        let session_id = open.session_id;
        let refuse = if session_id.is_empty() {
            Some("empty session ID".to_owned())
        } else if self.sessions.contains(&session_id) {
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
        let (live, close, task) = live::start(
            session_id,
            open.ticket,
            process,
            size,
            self.config.retained_output_bytes,
        );
        self.sessions.insert(live.clone(), close, task);
        self.start_stream(live, Duration::ZERO);
    }

    /// Opens a Data stream for `live` after `delay`.
    fn start_stream(&mut self, live: live::LiveSession, delay: Duration) {
        let client = self.client.clone();
        let open = DataOpen {
            host_id: self.host_id.clone(),
            host_token: self.host_token.clone(),
            session_id: live.id.clone(),
            input_applied: 0,
        };
        let guests = self.guests.clone();
        self.streams.spawn(async move {
            tokio::time::sleep(delay).await;
            let end = stream::run(client, open, &live, &guests).await;
            (live.id.clone(), end)
        });
    }

    /// A session's Data stream ended.
    fn stream_done(&mut self, done: Result<(String, StreamEnd), tokio::task::JoinError>) {
        let (session_id, end) = match done {
            Ok(done) => done,
            Err(e) => {
                if e.is_panic() {
                    tracing::error!("a session's data stream panicked");
                }
                return;
            }
        };
        match end {
            StreamEnd::Finished => self.sessions.remove(&session_id),
            StreamEnd::Gone(reason) => {
                tracing::warn!(
                    session_id,
                    reason,
                    "ending a session the server cannot continue"
                );
                self.sessions.close(&session_id, CloseReason::NotResumed);
                self.sessions.remove(&session_id);
            }
            StreamEnd::Broken => {
                if let Some(live) = self.sessions.get(&session_id) {
                    tracing::info!(session_id, "data stream broke; opening it again");
                    self.start_stream(live, STREAM_RETRY);
                }
            }
        }
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

    /// Closes every session with `reason`, and lets their Data streams send
    /// the exit statuses for up to [`SESSIONS_END_TIMEOUT`]; then ends
    /// what is left (SIGKILL) and forgets every session.
    async fn end_sessions(&mut self, reason: CloseReason) {
        self.sessions.close_all(reason);
        let deadline = tokio::time::Instant::now() + SESSIONS_END_TIMEOUT;
        let streams_done = async {
            while let Some(done) = self.streams.join_next().await {
                if let Ok((session_id, StreamEnd::Finished)) = done {
                    self.sessions.remove(&session_id);
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, streams_done).await;
        self.streams.shutdown().await;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.sessions.end_all(reason, left).await;
    }
}

/// The Hello that opens every control stream; with `resume`, it resumes
/// that registration and `sessions`.
fn hello(config: &Config, resume: Option<&Resume>, sessions: &Sessions) -> HostControlRequest {
    let (resume_ticket, resume_host_id, sessions) = match resume {
        Some(resume) => (
            resume.ticket.clone(),
            resume.host_id.clone(),
            sessions.resume_list(),
        ),
        None => Default::default(),
    };
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
            grace_period_ms: u64::try_from(config.grace_period.as_millis()).unwrap_or(u64::MAX),
            resume_ticket,
            resume_host_id,
            sessions,
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
