//! The wire harness: whole HTTP requests, with request bodies of gRPC
//! messages framed (and misframed) from the fuzzer's bytes, sent through
//! the server's whole application (`Server::app`: origin check, CORS,
//! gRPC-Web translation, the message-size limit that reads gRPC's
//! framing as the body streams by, tonic's decoding, the handlers), in
//! process, without a socket. Bodies arrive in chunks of random sizes, so
//! message prefixes are split everywhere.
//!
//! Properties, besides no panic in any layer or task:
//! - every gRPC and gRPC-Web answer carries a `grpc-status` (in the
//!   headers, the trailers or gRPC-Web's trailer frame) with a known code
//!   and a bounded message;
//! - a request whose first message declares more than
//!   [`MAX_MESSAGE_BYTES`] is refused with `RESOURCE_EXHAUSTED` naming
//!   the limit, on every RPC and every transport, before any handler
//!   reads it.

use std::convert::Infallible;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Version};
use http_body_util::BodyExt;
use prost::Message;
use rendezvous_proto::message_size::MAX_MESSAGE_BYTES;
use rendezvous_proto::{
    AttachRequest, DataOpen, Hello, HostControlRequest, HostDataRequest, SendInputRequest,
    TerminalRequest, host_control_request, host_data_request, terminal_request,
};
use rendezvous_server::Server;
use tower::ServiceExt;

use crate::decoders::MAX_ERROR_TEXT_BYTES;
use crate::fixture::{Fixture, SECRET, TASK};

/// The server's paths: every RPC, one that does not exist, and plain
/// HTTP routes.
const PATHS: [&str; 12] = [
    "/rendezvous.v1.HostService/Control",
    "/rendezvous.v1.HostService/Data",
    "/rendezvous.v1.GuestService/Attach",
    "/rendezvous.v1.GuestService/SendInput",
    "/rendezvous.v1.GuestService/Resize",
    "/rendezvous.v1.GuestService/Ack",
    "/rendezvous.v1.GuestService/Terminal",
    "/rendezvous.v1.GuestService/ListSessions",
    "/rendezvous.v1.GuestService/NoSuchCall",
    "/rendezvous.v1.NoSuchService/Call",
    "/healthz",
    "/t/fuzz-task",
];

/// How many of [`PATHS`] are the server's RPCs.
const RPCS: usize = 8;

/// Virtual time the harness reads a response for, in ms.
const READ_WINDOW: Duration = Duration::from_millis(2_000);

/// Most response bytes the harness reads.
const MAX_READ_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Transport {
    /// `application/grpc` over HTTP/2.
    Grpc,
    /// `application/grpc-web+proto` over HTTP/1.1.
    GrpcWeb,
    /// `application/grpc-web-text`: base64 of the framing.
    GrpcWebText,
    /// Another content type.
    Other,
}

#[derive(Debug, Arbitrary)]
enum Frame<'a> {
    /// A message with its true length.
    Message { compressed: bool, payload: &'a [u8] },
    /// A prefix whose length lies, then the payload.
    Lying {
        flag: u8,
        declared: u32,
        payload: &'a [u8],
    },
    /// A prefix over the message-size limit, by up to 4 GiB.
    Huge { over: u32 },
    /// A valid message for the call, so that streams go further.
    Valid(u8),
    /// Bytes without framing.
    Raw(&'a [u8]),
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    path: u8,
    transport: Transport,
    /// None: no Origin header; else the server's own or a foreign one.
    origin: Option<bool>,
    chunks: Vec<u8>,
    frames: Vec<Frame<'a>>,
}

/// Runs the wire harness on `data`. See the module docs.
///
/// # Panics
/// When a response breaks a property the module docs list.
pub fn wire(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    if crate::tracing() {
        eprintln!("{input:?}");
    }
    crate::exec::run(async move {
        let fx = Fixture::new().await;
        send(&fx, &input).await;
    });
}

/// Encodes prefix + payload.
fn framed(flag: u8, declared: u32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 5);
    out.put_u8(flag);
    out.put_u32(declared);
    out.put_slice(payload);
    out.freeze()
}

/// A valid message for the RPC at `path`, with the fixture's credentials.
fn valid(fx: &Fixture, path: usize, which: u8) -> Vec<u8> {
    let attach = AttachRequest {
        task_id: TASK.into(),
        secret: SECRET.into(),
        session_id: fx.a.id().to_owned(),
        ..AttachRequest::default()
    };
    match (path, which % 2) {
        (0, 0) => HostControlRequest {
            message: Some(host_control_request::Message::Hello(Hello {
                task_id: "wire-task".into(),
                secret: "wire-secret-0123456789abcdef".into(),
                ..Hello::default()
            })),
        }
        .encode_to_vec(),
        (1, 0) => HostDataRequest {
            message: Some(host_data_request::Message::Open(DataOpen {
                host_id: fx.host.id().to_owned(),
                host_token: fx.host_token.clone(),
                session_id: fx.b.id().to_owned(),
                input_applied: 0,
            })),
        }
        .encode_to_vec(),
        (1, _) => HostDataRequest {
            message: Some(host_data_request::Message::Output(Bytes::from_static(
                b"hello",
            ))),
        }
        .encode_to_vec(),
        (2, _) => attach.encode_to_vec(),
        (3, _) => SendInputRequest {
            guest_id: fx.writer.handle.id().to_owned(),
            guest_token: fx.writer.token.clone(),
            seq: u64::from(which),
            data: Bytes::from_static(b"ls\r"),
            ..Default::default()
        }
        .encode_to_vec(),
        (6, 0) => TerminalRequest {
            message: Some(terminal_request::Message::Attach(attach)),
        }
        .encode_to_vec(),
        (6, _) => TerminalRequest {
            message: Some(terminal_request::Message::Input(Bytes::from_static(b"x"))),
        }
        .encode_to_vec(),
        _ => Vec::new(),
    }
}

async fn send(fx: &Fixture, input: &Input<'_>) {
    let path = usize::from(input.path) % PATHS.len();
    let mut body = BytesMut::new();
    let mut first_declared = None;
    for frame in &input.frames {
        let bytes = match frame {
            Frame::Message {
                compressed,
                payload,
            } => framed(
                u8::from(*compressed),
                u32::try_from(payload.len()).unwrap_or(u32::MAX),
                payload,
            ),
            Frame::Lying {
                flag,
                declared,
                payload,
            } => framed(*flag, *declared, payload),
            Frame::Huge { over } => framed(
                0,
                u32::try_from(MAX_MESSAGE_BYTES)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1)
                    .saturating_add(*over),
                &[],
            ),
            Frame::Valid(which) => {
                let payload = valid(fx, path, *which);
                framed(0, payload.len() as u32, &payload)
            }
            Frame::Raw(bytes) => Bytes::copy_from_slice(bytes),
        };
        if body.is_empty() && bytes.len() >= 5 {
            first_declared = Some(u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]));
        }
        body.put_slice(&bytes);
    }
    let body = body.freeze();
    let (content_type, version, body) = match input.transport {
        Transport::Grpc => ("application/grpc", Version::HTTP_2, body),
        Transport::GrpcWeb => ("application/grpc-web+proto", Version::HTTP_11, body),
        Transport::GrpcWebText => (
            "application/grpc-web-text",
            Version::HTTP_11,
            Bytes::from(base64::engine::general_purpose::STANDARD.encode(&body)),
        ),
        Transport::Other => ("application/json", Version::HTTP_11, body),
    };
    // The body in chunks of the fuzzer's sizes (1..=256 bytes each, the
    // last one taking the rest).
    let mut chunks = Vec::new();
    let mut rest = body.clone();
    for size in &input.chunks {
        if rest.is_empty() {
            break;
        }
        let n = (usize::from(*size) + 1).min(rest.len());
        chunks.push(rest.split_to(n));
    }
    if !rest.is_empty() {
        chunks.push(rest);
    }
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://127.0.0.1:8080{}", PATHS[path]))
        .version(version)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::HOST, "127.0.0.1:8080")
        .header("te", "trailers");
    if matches!(input.transport, Transport::GrpcWebText) && input.chunks.len().is_multiple_of(2) {
        request = request.header(http::header::ACCEPT, "application/grpc-web-text");
    }
    match input.origin {
        Some(true) => request = request.header(http::header::ORIGIN, "http://127.0.0.1:8080"),
        Some(false) => request = request.header(http::header::ORIGIN, "https://evil.example"),
        None => {}
    }
    let request = request
        .body(axum::body::Body::from_stream(stream))
        .expect("a well-formed request");
    let app = Server::app(fx.registry.clone());
    let response = app.oneshot(request).await.expect("the router never fails");
    let grpc = !matches!(input.transport, Transport::Other) && path < PATHS.len() - 2;
    let (parts, body) = response.into_parts();
    // Read the response for a while: a stream that stays open (an
    // attached guest, a registered host) is read until the window ends.
    let mut data = BytesMut::new();
    let mut trailers = HeaderMap::new();
    let mut body = body;
    let mut failed = None;
    while data.len() < MAX_READ_BYTES {
        match tokio::time::timeout(READ_WINDOW, body.frame()).await {
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(bytes) => data.put_slice(&bytes),
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers.extend(t);
                    }
                }
            },
            Ok(Some(Err(e))) => {
                failed = Some(e.to_string());
                break;
            }
            Ok(None) => break,
            // Still open.
            Err(_) => return,
        }
    }
    if !grpc || input.origin == Some(false) || parts.status != http::StatusCode::OK {
        return;
    }
    // tonic-web answers in binary unless the request accepts text.
    let web_text = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc-web-text"));
    let data = if web_text {
        let text: Vec<u8> = data
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        // Each chunk of the answer is base64 of its own, with padding.
        let mut decoded = Vec::new();
        for part in text.split_inclusive(|b| *b == b'=') {
            let part: Vec<u8> = part.iter().copied().filter(|b| *b != b'=').collect();
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(&part) {
                decoded.extend_from_slice(&bytes);
            }
        }
        Bytes::from(decoded)
    } else {
        data.freeze()
    };
    let status = grpc_status(&parts.headers, &trailers, &data);
    let Some((code, message)) = status else {
        if data.len() >= MAX_READ_BYTES {
            return;
        }
        panic!(
            "{} over {:?}: no grpc-status in the answer ({} body bytes, body error {failed:?}, headers {:?})",
            PATHS[path],
            input.transport,
            data.len(),
            parts.headers
        );
    };
    assert!(code <= 16, "grpc-status {code} is no gRPC code");
    assert!(
        message.len() <= MAX_ERROR_TEXT_BYTES * 3,
        "a grpc-message of {} bytes",
        message.len()
    );
    let limit = u32::try_from(MAX_MESSAGE_BYTES).unwrap_or(u32::MAX);
    if path < RPCS && first_declared.is_some_and(|n| n > limit) {
        assert_eq!(
            code,
            tonic::Code::ResourceExhausted as u16,
            "{} over {:?}: a first message over the limit got status {code} {message:?}",
            PATHS[path],
            input.transport
        );
        assert!(
            message.contains("bytes per message is 4259840"),
            "the refusal does not name the limit: {message:?}"
        );
    }
}

/// The answer's `grpc-status` and `grpc-message`: from the headers
/// (trailers-only), the trailers (gRPC), or gRPC-Web's trailer frame.
fn grpc_status(headers: &HeaderMap, trailers: &HeaderMap, body: &[u8]) -> Option<(u16, String)> {
    let from = |map: &HeaderMap| {
        let code = map.get("grpc-status")?.to_str().ok()?.parse().ok()?;
        let message = map
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .map(percent_decode)
            .unwrap_or_default();
        Some((code, message))
    };
    if let Some(found) = from(headers).or_else(|| from(trailers)) {
        return Some(found);
    }
    // gRPC-Web: frames with flag 0x80 carry the trailers as text.
    let mut at = 0;
    while at + 5 <= body.len() {
        let flag = body[at];
        let len = u32::from_be_bytes([body[at + 1], body[at + 2], body[at + 3], body[at + 4]]);
        let end = (at + 5).saturating_add(len as usize).min(body.len());
        if flag & 0x80 != 0 {
            let text = String::from_utf8_lossy(&body[at + 5..end]).into_owned();
            let mut map = HeaderMap::new();
            for line in text.split("\r\n") {
                if let Some((name, value)) = line.split_once(':')
                    && let (Ok(name), Ok(value)) = (
                        http::HeaderName::from_bytes(name.trim().as_bytes()),
                        http::HeaderValue::from_str(value.trim()),
                    )
                {
                    map.insert(name, value);
                }
            }
            return from(&map);
        }
        at = end;
    }
    None
}

/// gRPC's percent-encoding of `grpc-message`, undone.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len() + 1
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
