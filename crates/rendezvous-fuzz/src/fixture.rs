//! A small server state without a socket, for the harnesses that send
//! requests through the server's services: a registry with a token key,
//! one host of a known task, two sessions and two guests.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use rendezvous_proto::message_size::MAX_MESSAGE_BYTES;
use rendezvous_proto::{Hello, HostControlResponse, Role, host_data_response};
use rendezvous_server::ServerConfig;
use rendezvous_server::registry::{Host, JoinedGuest, Owner, Registry};
use rendezvous_server::session::{HostInputReader, NewGuest, Session};
use rendezvous_server::token::TokenKey;
use tokio::sync::mpsc;

/// The task the fixture's host serves.
pub const TASK: &str = "fuzz-task";
/// Its read-write secret.
pub const SECRET: &str = "fuzz-secret-0123456789abcdef";
/// Its read-only secret.
pub const READ_ONLY_SECRET: &str = "fuzz-viewer-0123456789abcdef";
/// The server's key for guest tokens (HS256).
pub const TOKEN_KEY: &[u8] = b"fuzz-token-key-0123456789abcdef-0123456789";

/// The state. Every field is what a harness may look at or use.
pub struct Fixture {
    /// The server's state.
    pub registry: Arc<Registry>,
    /// The known host.
    pub host: Arc<Host>,
    /// The host's Data-stream token.
    pub host_token: String,
    /// The host's control queue (kept, so that new shells can be opened).
    pub control: mpsc::Receiver<HostControlResponse>,
    /// A session whose input the fixture reads (its host side is taken).
    pub a: Arc<Session>,
    /// The host of `a`'s reader of its input (its Data stream's).
    pub a_input: HostInputReader,
    /// A session waiting for its Data stream.
    pub b: Arc<Session>,
    /// The read-write guest of `a`, its primary writer.
    pub writer: JoinedGuest,
    /// A read-only guest of `a`.
    pub viewer: JoinedGuest,
    /// A read-write guest of `b`.
    pub b_guest: JoinedGuest,
}

/// The server configuration of the fixture: defaults, with a token key.
pub fn config() -> ServerConfig {
    ServerConfig {
        token_key: Some(TokenKey::new(TOKEN_KEY).expect("the key is long enough")),
        ..ServerConfig::default()
    }
}

/// A guest of `role` at the oldest retained byte.
pub fn new_guest(role: Role) -> NewGuest<'static> {
    NewGuest {
        role,
        cols: 80,
        rows: 24,
        resume_offset: None,
        resume_guest: None,
        signed_resume: None,
        max_guests: usize::MAX,
    }
}

impl Fixture {
    /// Builds the state, with a host that asked for no grace period (its
    /// sessions end with their Data streams); call it on a tokio runtime
    /// (sessions start their watchdogs).
    pub async fn new() -> Self {
        Self::with_grace_period_ms(0).await
    }

    /// Builds the state with a host whose Hello asked for a grace period
    /// of `grace_period_ms`: above 0, its sessions outlive their Data
    /// streams, waiting for the next one.
    pub async fn with_grace_period_ms(grace_period_ms: u64) -> Self {
        let registry = Arc::new(Registry::new(config()));
        let hello = Hello {
            task_id: TASK.into(),
            secret: SECRET.into(),
            read_only_secret: READ_ONLY_SECRET.into(),
            grace_period_ms,
            ..Hello::default()
        };
        let registration = registry
            .register_host(Owner::open(), None, &hello)
            .await
            .expect("the fixture's host registers");
        let host = registration.host;
        let a = registry
            .open_session(&host, 80, 24)
            .await
            .expect("session a opens");
        let b = registry
            .open_session(&host, 80, 24)
            .await
            .expect("session b opens");
        let a_input = a.attach_host(0).expect("a has not ended").input;
        let writer = registry
            .add_guest(&host, &a, new_guest(Role::ReadWrite), None)
            .expect("the writer attaches");
        let viewer = registry
            .add_guest(&host, &a, new_guest(Role::ReadOnly), None)
            .expect("the viewer attaches");
        let b_guest = registry
            .add_guest(&host, &b, new_guest(Role::ReadWrite), None)
            .expect("b's guest attaches");
        Self {
            registry,
            host,
            host_token: registration.host_token,
            control: registration.control,
            a,
            a_input,
            b,
            writer,
            viewer,
            b_guest,
        }
    }

    /// Every input message the host of `a` has received since the last
    /// call, joined; the host acknowledges them as written, as a host
    /// does, so that they leave the session's queue.
    pub fn a_inputs(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(message) = self.a_input.try_next(&self.a) {
            if let Some(host_data_response::Message::Input(data)) = message.0.message {
                got.extend_from_slice(&data);
            }
        }
        self.a.ack_host_input(self.a_input.next_number());
        got
    }
}

/// `payload` as one gRPC message: uncompressed, with its 5-byte prefix.
pub fn frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 5);
    out.put_u8(0);
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(payload);
    out.freeze()
}

/// A request stream of the messages `payloads` (each already encoded, or
/// any bytes at all), as tonic hands it to a streaming handler.
pub fn streaming<T>(payloads: &[&[u8]]) -> tonic::Streaming<T>
where
    T: prost::Message + Default + Send + 'static,
{
    let mut body = BytesMut::new();
    for payload in payloads {
        body.put_slice(&frame(payload));
    }
    let body = http_body_util::Full::new(body.freeze());
    let decoder = <tonic_prost::ProstCodec<T, T> as tonic::codec::Codec>::decoder(
        &mut tonic_prost::ProstCodec::default(),
    );
    tonic::Streaming::new_request(decoder, body, None, Some(MAX_MESSAGE_BYTES))
}

/// The sending side of [`live_streaming`]'s request stream: the stream
/// stays open until this is dropped.
pub type LiveSender =
    futures::channel::mpsc::UnboundedSender<Result<Bytes, std::convert::Infallible>>;

/// A request stream that starts with the messages `payloads` (each
/// already encoded) and then stays open, as a client's that is still
/// connected, until the returned sender is dropped.
pub fn live_streaming<T>(payloads: &[&[u8]]) -> (LiveSender, tonic::Streaming<T>)
where
    T: prost::Message + Default + Send + 'static,
{
    let (tx, rx) = futures::channel::mpsc::unbounded();
    for payload in payloads {
        // The receiver is alive: this cannot fail.
        let _ = tx.unbounded_send(Ok(frame(payload)));
    }
    let decoder = <tonic_prost::ProstCodec<T, T> as tonic::codec::Codec>::decoder(
        &mut tonic_prost::ProstCodec::default(),
    );
    let body = axum::body::Body::from_stream(rx);
    (
        tx,
        tonic::Streaming::new_request(decoder, body, None, Some(MAX_MESSAGE_BYTES)),
    )
}
