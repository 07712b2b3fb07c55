//! The connection to a server and the two ways to attach: the bidi
//! `Terminal` call (native clients) and the server-streaming `Attach` call
//! with unary `SendInput`/`Resize` (the browser's path).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use rendezvous_proto::endpoint::ServerEndpoint;
use rendezvous_proto::flow::GUEST_WINDOW_MESSAGES;
use rendezvous_proto::ids::{HostName, TaskId};
use rendezvous_proto::message_size::MAX_MESSAGE_BYTES;
use rendezvous_proto::tls::TlsOptions;
use rendezvous_proto::v1::guest_service_client::GuestServiceClient;
use rendezvous_proto::v1::{
    AttachRequest, Attached, HostInfo, ListSessionsRequest, ResizeRequest, SendInputRequest,
    TerminalAck, TerminalRequest, WindowSize, terminal_request,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tonic::transport::Channel;

use crate::error::{Call, ErrorContext, GuestError};
use crate::events::{Event, EventReader, Progress};
use crate::secret::Secret;

mod unary;

pub use self::unary::{AttachStream, UnaryWriter};
use self::unary::{Route, send_acks};

/// Requests (input chunks and resizes) a [`TerminalWriter`] may queue
/// before `send_input` waits for the connection to take them, in messages.
/// With [`MAX_INPUT_CHUNK_BYTES`] this bounds queued input to 1 MiB.
pub const TERMINAL_REQUEST_CAPACITY: usize = 16;

/// Largest input one request carries, in bytes: the server's default limit
/// per `SendInput`. Longer input is split into several requests.
pub const MAX_INPUT_CHUNK_BYTES: usize = 64 * 1024;

/// A connection to a Rendezvous server's guest service. Cheap to clone:
/// clones share one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Client {
    /// The generated gRPC client over the shared channel.
    inner: GuestServiceClient<Channel>,
    /// The server URL as given, for error messages.
    server: Arc<str>,
}

/// What to attach to, and how.
#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// The task to attach to.
    pub task_id: TaskId,
    /// The task's read-write or read-only secret.
    pub secret: Secret,
    /// The host within the task; `None` means the default host.
    pub host_name: Option<HostName>,
    /// The session to join; `None` asks the host for a new shell.
    pub session_id: Option<String>,
    /// The guest's terminal width in character cells; 0 means 80.
    pub cols: u32,
    /// The guest's terminal height in character cells; 0 means 24.
    pub rows: u32,
    /// Stream output from this offset; `None` replays all retained output.
    pub resume_offset: Option<u64>,
    /// Carry on as this earlier guest of the same session (its ID, token
    /// and input sequence), e.g. after a broken connection. The server
    /// honours it for 10 minutes after the guest's stream closed; otherwise
    /// a new guest is attached (`Attached.resumed` says which). Ignored
    /// without [`session_id`](Self::session_id).
    pub resume_guest: Option<ResumeGuest>,
}

/// An earlier guest to carry on as: the `guest_id` and `guest_token` of its
/// `Attached`. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct ResumeGuest {
    /// `Attached.guest_id`.
    pub guest_id: String,
    /// `Attached.guest_token`: a capability, never printed.
    pub guest_token: String,
    /// `AttachRequest.resume_input_seq`: the oldest input request the
    /// guest can still send again, for a server that has no record of the
    /// guest (it restarted) but recognises its signed token: it goes on
    /// there, or where its host has the guest's input when that is later.
    /// `None`: at 0.
    pub input_seq: Option<u64>,
}

impl ResumeGuest {
    /// The guest that `attached` announced.
    pub fn of(attached: &Attached) -> Self {
        Self {
            guest_id: attached.guest_id.clone(),
            guest_token: attached.guest_token.clone(),
            input_seq: Some(attached.next_input_seq),
        }
    }
}

impl fmt::Debug for ResumeGuest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumeGuest")
            .field("guest_id", &self.guest_id)
            .finish_non_exhaustive()
    }
}

impl AttachOptions {
    /// Options for a new shell on the default host, at the server's default
    /// size, replaying retained output. Set the public fields to change any.
    pub fn new(task_id: TaskId, secret: Secret) -> Self {
        Self {
            task_id,
            secret,
            host_name: None,
            session_id: None,
            cols: 0,
            rows: 0,
            resume_offset: None,
            resume_guest: None,
        }
    }

    /// The wire request.
    fn request(&self) -> AttachRequest {
        AttachRequest {
            task_id: self.task_id.to_string(),
            secret: self.secret.expose().to_owned(),
            host_name: self
                .host_name
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            session_id: self.session_id.clone().unwrap_or_default(),
            cols: self.cols,
            rows: self.rows,
            resume_offset: self.resume_offset,
            resume_guest_id: self
                .resume_guest
                .as_ref()
                .map(|g| g.guest_id.clone())
                .unwrap_or_default(),
            resume_guest_token: self
                .resume_guest
                .as_ref()
                .map(|g| g.guest_token.clone())
                .unwrap_or_default(),
            resume_input_seq: self.resume_guest.as_ref().and_then(|g| g.input_seq),
            window_messages: GUEST_WINDOW_MESSAGES,
            ..Default::default()
        }
    }
}

impl Client {
    /// Connects to the server at `server` (`http://` or `https://`, which
    /// trusts the platform's root certificates).
    ///
    /// # Errors
    /// [`GuestError::InvalidUrl`] for a bad URL, [`GuestError::Unreachable`]
    /// when no connection can be made.
    pub async fn connect(server: &str) -> Result<Self, GuestError> {
        Self::connect_with(server, &TlsOptions::default()).await
    }

    /// Connects to the `https://` server at `server`, trusting it as `tls`
    /// says: a CA certificate, or a pinned fingerprint of its certificate.
    ///
    /// # Errors
    /// [`GuestError::InvalidUrl`] for a bad URL or unusable TLS options,
    /// [`GuestError::Unreachable`] when no connection can be made; for a
    /// refused certificate its reason starts with "TLS certificate".
    pub async fn connect_with(server: &str, tls: &TlsOptions) -> Result<Self, GuestError> {
        let context = ErrorContext {
            server: server.into(),
            secret: None,
        };
        let channel = ServerEndpoint::new(server, tls)?
            .connect()
            .await
            .map_err(|error| context.unreachable(&error))?;
        Ok(Self::new(channel, context.server))
    }

    /// A client for `server` that connects on its first call (and again
    /// after a broken connection).
    ///
    /// # Errors
    /// [`GuestError::InvalidUrl`] for a bad URL.
    pub fn connect_lazy(server: &str) -> Result<Self, GuestError> {
        Self::connect_lazy_with(server, &TlsOptions::default())
    }

    /// [`connect_lazy`](Self::connect_lazy), trusting the server as `tls`
    /// says (see [`connect_with`](Self::connect_with)).
    ///
    /// # Errors
    /// [`GuestError::InvalidUrl`] for a bad URL or unusable TLS options.
    pub fn connect_lazy_with(server: &str, tls: &TlsOptions) -> Result<Self, GuestError> {
        let channel = ServerEndpoint::new(server, tls)?.connect_lazy();
        Ok(Self::new(channel, server.into()))
    }

    fn new(channel: Channel, server: Arc<str>) -> Self {
        // The protocol's one message limit, both ways (the server sends
        // output in messages of at most 256 KiB by default).
        let inner = GuestServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Self { inner, server }
    }

    /// Error context for a call that carries `secret`.
    fn context(&self, secret: Option<&Secret>) -> ErrorContext {
        ErrorContext {
            server: self.server.clone(),
            secret: secret.cloned(),
        }
    }

    /// The task's hosts, each with its sessions.
    ///
    /// # Errors
    /// [`GuestError::Denied`] for an unknown task or a wrong secret, or a
    /// connection error.
    pub async fn list_sessions(
        &self,
        task_id: &TaskId,
        secret: &Secret,
    ) -> Result<Vec<HostInfo>, GuestError> {
        let request = ListSessionsRequest {
            task_id: task_id.to_string(),
            secret: secret.expose().to_owned(),
            ..Default::default()
        };
        let response = self
            .inner
            .clone()
            .list_sessions(request)
            .await
            .map_err(|status| self.context(Some(secret)).map(&status, Call::Attach))?;
        Ok(response.into_inner().hosts)
    }

    /// Attaches over the bidi `Terminal` call and waits for `Attached`.
    /// Input and resizes then travel on the same stream, in order.
    ///
    /// # Errors
    /// The server's refusal (`Denied`, `NotFound`, `ReadOnly`, ...), a
    /// connection error, or [`GuestError::Protocol`] when the first event is
    /// not `Attached`.
    pub async fn terminal(&self, options: AttachOptions) -> Result<Terminal, GuestError> {
        let context = self.context(Some(&options.secret));
        let (requests, queue) = mpsc::channel(TERMINAL_REQUEST_CAPACITY);
        let (progress, acks) = watch::channel(Progress::default());
        let writer = TerminalWriter { requests };
        writer
            .send(terminal_request::Message::Attach(options.request()))
            .await?;
        let requests = TerminalRequests {
            queue: Some(ReceiverStream::new(queue)),
            acks: Some(WatchStream::from_changes(acks)),
        };
        let response = self
            .inner
            .clone()
            .terminal(requests)
            .await
            .map_err(|status| context.map(&status, Call::Attach))?;
        let events = EventReader::start(
            response.into_inner(),
            context,
            options.resume_offset,
            progress,
        )
        .await?;
        Ok(Terminal { writer, events })
    }

    /// Attaches over the server-streaming `Attach` call (as browsers do)
    /// and waits for `Attached`. Input and resizes go as unary calls.
    ///
    /// # Errors
    /// As for [`Client::terminal`].
    pub async fn attach(&self, options: AttachOptions) -> Result<AttachStream, GuestError> {
        let context = self.context(Some(&options.secret));
        let response = self
            .inner
            .clone()
            .attach(options.request())
            .await
            .map_err(|status| context.map(&status, Call::Attach))?;
        let (progress, acks) = watch::channel(Progress::default());
        let events = EventReader::start(
            response.into_inner(),
            context,
            options.resume_offset,
            progress,
        )
        .await?;
        let attached = events.attached();
        // Acknowledges what the reader took, as Ack calls; it ends with the
        // reader, whose drop closes `acks`.
        let route = Route {
            task_id: options.task_id.to_string(),
            host_name: attached.host_name.clone(),
        };
        tokio::spawn(send_acks(
            self.inner.clone(),
            attached.guest_id.clone(),
            attached.guest_token.clone(),
            route.clone(),
            acks,
        ));
        let writer = UnaryWriter {
            client: self.clone(),
            guest_id: attached.guest_id.clone(),
            guest_token: attached.guest_token.clone(),
            route,
            next_seq: 0,
        };
        Ok(AttachStream { writer, events })
    }

    /// One raw `SendInput` call, with the sequence number given (tests use
    /// it to repeat or skip numbers). [`UnaryWriter`] numbers them for you.
    ///
    /// # Errors
    /// [`GuestError::UnknownGuest`], [`GuestError::ReadOnly`],
    /// [`GuestError::LimitReached`], [`GuestError::SessionEnded`], or a
    /// connection error.
    pub async fn send_input(
        &self,
        guest_id: &str,
        guest_token: &str,
        seq: u64,
        data: impl Into<Bytes>,
    ) -> Result<(), GuestError> {
        let request = SendInputRequest {
            guest_id: guest_id.to_owned(),
            guest_token: guest_token.to_owned(),
            seq,
            data: data.into(),
            ..Default::default()
        };
        self.send_input_request(request).await
    }

    async fn send_input_request(&self, request: SendInputRequest) -> Result<(), GuestError> {
        self.inner
            .clone()
            .send_input(request)
            .await
            .map_err(|status| self.context(None).map(&status, Call::Input))?;
        Ok(())
    }

    /// One raw `Resize` call.
    ///
    /// # Errors
    /// As for [`Client::send_input`].
    pub async fn resize(
        &self,
        guest_id: &str,
        guest_token: &str,
        cols: u32,
        rows: u32,
    ) -> Result<(), GuestError> {
        let request = ResizeRequest {
            guest_id: guest_id.to_owned(),
            guest_token: guest_token.to_owned(),
            cols,
            rows,
            ..Default::default()
        };
        self.resize_request(request).await
    }

    async fn resize_request(&self, request: ResizeRequest) -> Result<(), GuestError> {
        self.inner
            .clone()
            .resize(request)
            .await
            .map_err(|status| self.context(None).map(&status, Call::Input))?;
        Ok(())
    }
}

/// The request stream of a `Terminal` call: the writer's input and resizes,
/// and the reader's acknowledgements. It stays open while either has
/// something to say, so output keeps flowing (and being acknowledged)
/// after every writer is dropped.
struct TerminalRequests {
    queue: Option<ReceiverStream<TerminalRequest>>,
    acks: Option<WatchStream<Progress>>,
}

impl Stream for TerminalRequests {
    type Item = TerminalRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TerminalRequest>> {
        if let Some(queue) = &mut self.queue {
            match Pin::new(queue).poll_next(cx) {
                Poll::Ready(Some(request)) => return Poll::Ready(Some(request)),
                Poll::Ready(None) => self.queue = None,
                Poll::Pending => {}
            }
        }
        if let Some(acks) = &mut self.acks {
            match Pin::new(acks).poll_next(cx) {
                Poll::Ready(Some(progress)) => {
                    return Poll::Ready(Some(TerminalRequest {
                        message: Some(terminal_request::Message::Ack(TerminalAck {
                            offset: progress.offset,
                            messages: progress.messages,
                        })),
                    }));
                }
                Poll::Ready(None) => self.acks = None,
                Poll::Pending => {}
            }
        }
        if self.queue.is_none() && self.acks.is_none() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

/// A guest attached over the bidi `Terminal` call. Use it whole, or
/// [`split`](Terminal::split) it to read and write from separate tasks.
#[derive(Debug)]
pub struct Terminal {
    writer: TerminalWriter,
    events: EventReader,
}

impl Terminal {
    /// The `Attached` event: session ID, guest ID, role, host.
    pub fn attached(&self) -> &Attached {
        self.events.attached()
    }

    /// Sends input bytes to the session; see [`TerminalWriter::send_input`].
    ///
    /// # Errors
    /// [`GuestError::Closed`] when the call has ended.
    pub async fn send_input(&self, data: impl Into<Bytes>) -> Result<(), GuestError> {
        self.writer.send_input(data).await
    }

    /// Reports a new terminal size; see [`TerminalWriter::resize`].
    ///
    /// # Errors
    /// [`GuestError::Closed`] when the call has ended.
    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), GuestError> {
        self.writer.resize(cols, rows).await
    }

    /// The next event; see [`EventReader::next_event`].
    ///
    /// # Errors
    /// As for [`EventReader::next_event`].
    pub async fn next_event(&mut self) -> Result<Option<Event>, GuestError> {
        self.events.next_event().await
    }

    /// The writing half and the reading half.
    pub fn split(self) -> (TerminalWriter, EventReader) {
        (self.writer, self.events)
    }
}

/// The writing half of a [`Terminal`]: input and resizes, in order, on the
/// call's request stream. Clones share the stream. When every clone is
/// dropped no more input goes; output keeps coming (and being
/// acknowledged) until the [`EventReader`] is dropped or the session ends.
#[derive(Debug, Clone)]
pub struct TerminalWriter {
    /// The bounded queue the call's request stream reads from
    /// ([`TERMINAL_REQUEST_CAPACITY`] messages).
    requests: mpsc::Sender<TerminalRequest>,
}

impl TerminalWriter {
    /// Sends input bytes, as they are, split into requests of at most
    /// [`MAX_INPUT_CHUNK_BYTES`]. Waits while the request queue is full.
    /// Input of a read-only guest is refused by the server, which ends the
    /// call.
    ///
    /// # Errors
    /// [`GuestError::Closed`] when the call has ended.
    pub async fn send_input(&self, data: impl Into<Bytes>) -> Result<(), GuestError> {
        let mut data = data.into();
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_INPUT_CHUNK_BYTES));
            self.send(terminal_request::Message::Input(chunk)).await?;
        }
        Ok(())
    }

    /// Reports a new terminal size in character cells.
    ///
    /// # Errors
    /// [`GuestError::Closed`] when the call has ended.
    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), GuestError> {
        self.send(terminal_request::Message::Resize(WindowSize { cols, rows }))
            .await
    }

    async fn send(&self, message: terminal_request::Message) -> Result<(), GuestError> {
        self.requests
            .send(TerminalRequest {
                message: Some(message),
            })
            .await
            .map_err(|_| GuestError::Closed)
    }
}
