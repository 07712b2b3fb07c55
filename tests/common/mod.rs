//! Test harness: a real server on 127.0.0.1:0, real hosts running bash in
//! PTYs, and guests over real gRPC. Everything stops on drop.
#![allow(dead_code)]

pub mod proxy;

use std::time::Duration;

use rendezvous_proto::guest_service_client::GuestServiceClient;
use rendezvous_proto::{
    AttachRequest, Attached, ExitStatus, GuestEvent, TerminalRequest, WindowSize, guest_event,
    terminal_request,
};
use rendezvous_server::{Server, ServerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tower::util::BoxCloneService;

/// How long any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A server on a free loopback port; shut down on drop.
pub struct TestServer {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_config(ServerConfig::default()).await
    }

    pub async fn with_config(config: ServerConfig) -> Self {
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), config)
            .await
            .expect("bind");
        let url = format!("http://{}", server.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            url,
            stop: Some(stop),
            task,
        }
    }

    pub async fn channel(&self) -> Channel {
        rendezvous_proto::endpoint::endpoint(&self.url)
            .unwrap()
            .connect()
            .await
            .expect("connect to test server")
    }

    pub async fn guest_client(&self) -> GuestServiceClient<Channel> {
        GuestServiceClient::new(self.channel().await)
    }

    /// A guest client over `transport`, on a connection of its own (for
    /// gRPC-Web, a pool of them). It has tonic's defaults for message
    /// sizes, so that tests can send what a careless client would.
    pub async fn guest_client_over(&self, transport: Transport) -> AnyGuestClient {
        let service = match transport {
            Transport::Grpc => {
                let channel = self.channel().await;
                BoxCloneService::new(
                    tower::ServiceBuilder::new()
                        .map_err(tonic::codegen::StdError::from)
                        .service(channel),
                )
            }
            Transport::GrpcWebHttp1 | Transport::GrpcWebHttp2 => {
                let http = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .http2_only(transport == Transport::GrpcWebHttp2)
                .build_http::<tonic_web::GrpcWebCall<tonic::body::Body>>();
                BoxCloneService::new(
                    tower::ServiceBuilder::new()
                        .map_response(|r: http::Response<_>| r.map(tonic::body::Body::new))
                        .map_err(tonic::codegen::StdError::from)
                        .layer(tonic_web::GrpcWebClientLayer::new())
                        .service(http),
                )
            }
        };
        GuestServiceClient::with_origin(service, self.url.parse().unwrap())
    }
}

/// How a test guest reaches the server: gRPC (HTTP/2, native clients), or
/// gRPC-Web over HTTP/1.1 (browsers on a cleartext server) or HTTP/2
/// (browsers behind TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    GrpcWebHttp1,
    GrpcWebHttp2,
}

/// Every transport a guest may use.
pub const TRANSPORTS: [Transport; 3] = [
    Transport::Grpc,
    Transport::GrpcWebHttp1,
    Transport::GrpcWebHttp2,
];

/// A guest client whatever its transport (see [`TestServer::guest_client_over`]).
pub type AnyGuestClient = GuestServiceClient<
    BoxCloneService<
        http::Request<tonic::body::Body>,
        http::Response<tonic::body::Body>,
        tonic::codegen::StdError,
    >,
>;

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// A registered host running `command` for each new shell; stopped on drop.
pub struct TestHost {
    pub secret: String,
    pub task_id: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), rendezvous_host::HostError>>,
}

/// bash without rc files and with a plain prompt, so tests see only what
/// they typed.
pub fn bash() -> Vec<String> {
    ["bash", "--norc", "--noprofile"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl TestHost {
    pub async fn start(server: &TestServer, task_id: &str) -> Self {
        Self::with_command(server, task_id, bash()).await
    }

    pub async fn with_command(server: &TestServer, task_id: &str, command: Vec<String>) -> Self {
        let host = rendezvous_host::Host::builder(&server.url)
            .task_id(task_id)
            .command(&command[0], &command[1..])
            .env("PS1", "$ ")
            .build()
            .expect("build host");
        Self::from_host(host).await
    }

    /// Runs a host built by the test, and waits until it is registered.
    pub async fn from_host(host: rendezvous_host::Host) -> Self {
        let secret = host.secret().to_owned();
        let task_id = host.task_id().to_owned();
        let mut status = host.status();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(host.run(async move {
            let _ = stopped.await;
        }));
        tokio::time::timeout(
            DEADLINE,
            status.wait_for(|s| matches!(s, rendezvous_host::HostStatus::Registered { .. })),
        )
        .await
        .expect("host registers in time")
        .expect("host status");
        Self {
            secret,
            task_id,
            stop: Some(stop),
            task,
        }
    }

    /// The task's hosts and sessions, as ListSessions reports them.
    pub async fn list_hosts(&self, server: &TestServer) -> Vec<rendezvous_proto::HostInfo> {
        server
            .guest_client()
            .await
            .list_sessions(rendezvous_proto::ListSessionsRequest {
                task_id: self.task_id.clone(),
                secret: self.secret.clone(),
                ..Default::default()
            })
            .await
            .expect("list sessions")
            .into_inner()
            .hosts
    }

    pub fn attach_request(&self, session_id: &str) -> AttachRequest {
        AttachRequest {
            task_id: self.task_id.clone(),
            secret: self.secret.clone(),
            host_name: String::new(),
            session_id: session_id.to_owned(),
            cols: 100,
            rows: 30,
            resume_offset: None,
            ..Default::default()
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A native guest on the bidi Terminal stream.
pub struct TermGuest {
    pub attached: Attached,
    input: mpsc::Sender<TerminalRequest>,
    pub events: EventReader,
}

/// Reads a guest's events and keeps the output seen so far.
pub struct EventReader {
    stream: tonic::Streaming<GuestEvent>,
    /// All output bytes, in order.
    pub output: Vec<u8>,
    /// Offset the next output must carry.
    pub next_offset: Option<u64>,
    pub sizes: Vec<WindowSize>,
    /// Bytes reported missed by Lagged events.
    pub lagged: u64,
    /// Acknowledges events as they are read, for a stream attached with a
    /// message window (`AttachRequest.window_messages`).
    acks: Option<Acks>,
}

/// How an [`EventReader`] acknowledges the events it reads: it counts them,
/// and a task sends each new count as an Ack call, so that the reader
/// never waits on a call's answer (whose DATA may need the very
/// connection window its unread events hold).
struct Acks {
    /// Events read after Attached.
    received: u64,
    /// The count the task acknowledges; the task ends when this drops.
    count: tokio::sync::watch::Sender<u64>,
}
impl EventReader {
    pub fn new(stream: tonic::Streaming<GuestEvent>) -> Self {
        Self {
            stream,
            output: Vec::new(),
            next_offset: None,
            sizes: Vec::new(),
            lagged: 0,
            acks: None,
        }
    }

    /// Acknowledges every 8 events read (as the native guest does), by
    /// count only, so that a byte window is left to the test.
    pub fn acking(mut self, mut client: GuestServiceClient<Channel>, attached: &Attached) -> Self {
        let (count, mut counts) = tokio::sync::watch::channel(0u64);
        let (guest_id, guest_token) = (attached.guest_id.clone(), attached.guest_token.clone());
        tokio::spawn(async move {
            while counts.changed().await.is_ok() {
                let messages = *counts.borrow_and_update();
                let ack = rendezvous_proto::AckRequest {
                    guest_id: guest_id.clone(),
                    guest_token: guest_token.clone(),
                    offset: 0,
                    messages,
                };
                if client.ack(ack).await.is_err() {
                    return;
                }
            }
        });
        self.acks = Some(Acks { received: 0, count });
        self
    }

    /// The next event, with offsets checked: each output starts where the
    /// last one ended.
    pub async fn next(&mut self) -> Option<guest_event::Event> {
        tokio::time::timeout(DEADLINE, self.next_result())
            .await
            .expect("an event within the deadline")
            .expect("stream error")
    }

    /// The next event or the stream's error status.
    pub async fn next_result(&mut self) -> Result<Option<guest_event::Event>, tonic::Status> {
        let Some(event) = self.stream.message().await? else {
            return Ok(None);
        };
        let event = event.event.expect("event set");
        if let Some(acks) = &mut self.acks
            && !matches!(event, guest_event::Event::Attached(_))
        {
            acks.received += 1;
            if acks
                .received
                .is_multiple_of(rendezvous_proto::flow::GUEST_ACK_EVERY_MESSAGES)
            {
                acks.count.send_replace(acks.received);
            }
        }
        match &event {
            guest_event::Event::Output(out) => {
                if let Some(expected) = self.next_offset {
                    assert_eq!(out.offset, expected, "output offsets are contiguous");
                }
                self.next_offset = Some(out.offset + out.data.len() as u64);
                self.output.extend_from_slice(&out.data);
            }
            guest_event::Event::Size(size) => self.sizes.push(*size),
            guest_event::Event::Lagged(lagged) => {
                self.lagged += lagged.missed_bytes;
                if let Some(next) = &mut self.next_offset {
                    *next += lagged.missed_bytes;
                }
            }
            _ => {}
        }
        Ok(Some(event))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// Reads until the output contains `needle`; returns the text so far.
    /// Scans only the bytes that are new since the last look, so that
    /// following a long stream costs linear time.
    pub async fn until(&mut self, needle: &str) -> String {
        let needle = needle.as_bytes();
        let mut scanned = 0usize;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let from = scanned.saturating_sub(needle.len());
            if self.output[from..]
                .windows(needle.len())
                .any(|w| w == needle)
            {
                return self.text();
            }
            scanned = self.output.len();
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {:?} in output: {:?}",
                String::from_utf8_lossy(needle),
                self.text()
            );
            match self.next().await {
                Some(guest_event::Event::Exit(status)) => panic!(
                    "session ended ({status:?}) before {:?}: {:?}",
                    String::from_utf8_lossy(needle),
                    self.text()
                ),
                Some(_) => {}
                None => panic!("stream ended before {:?}", String::from_utf8_lossy(needle)),
            }
        }
    }

    /// Reads until `done(text so far)`; `what` names the wait in failures.
    pub async fn until_match(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !done(&self.text()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what:?} in output: {:?}",
                self.text()
            );
            match self.next().await {
                Some(guest_event::Event::Exit(status)) => {
                    panic!(
                        "session ended ({status:?}) before {what:?}: {:?}",
                        self.text()
                    )
                }
                Some(_) => {}
                None => panic!("stream ended before {what:?}: {:?}", self.text()),
            }
        }
        self.text()
    }

    /// Reads until Exit; returns it and checks that the stream then ends.
    pub async fn until_exit(&mut self) -> ExitStatus {
        loop {
            match self.next().await {
                Some(guest_event::Event::Exit(status)) => {
                    assert!(self.next().await.is_none(), "the stream ends after Exit");
                    return status;
                }
                Some(_) => {}
                None => panic!("stream ended without Exit"),
            }
        }
    }
}

impl TermGuest {
    pub async fn open(server: &TestServer, request: AttachRequest) -> Result<Self, tonic::Status> {
        let mut client = server.guest_client().await;
        let (input, rx) = mpsc::channel(16);
        input
            .send(TerminalRequest {
                message: Some(terminal_request::Message::Attach(request)),
            })
            .await
            .unwrap();
        let stream = client
            .terminal(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut events = EventReader::new(stream);
        let attached = match events.next().await {
            Some(guest_event::Event::Attached(a)) => a,
            other => panic!("expected Attached first, got {other:?}"),
        };
        Ok(Self {
            attached,
            input,
            events,
        })
    }

    pub async fn type_text(&self, text: &str) {
        self.input
            .send(TerminalRequest {
                message: Some(terminal_request::Message::Input(
                    text.as_bytes().to_vec().into(),
                )),
            })
            .await
            .expect("send input");
    }
}

/// Waits until a session's output offset, as `sample` reads it, stops
/// growing (the same non-zero value for five samples 100 ms apart), and
/// returns it; fails after the deadline.
pub async fn held_output<F, Fut>(mut sample: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut last = sample().await;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "output never stopped growing"
        );
        let mut steady = true;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = sample().await;
            steady &= now == last;
            last = now;
        }
        if steady && last > 0 {
            return last;
        }
    }
}
