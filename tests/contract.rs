//! The proto's documented errors, RPC by RPC, through the real server: each
//! test sends what the proto names and checks the status code it promises,
//! and a fragment of its message. Guest calls run over every transport a
//! guest may use (gRPC, gRPC-Web over HTTP/1.1 and over HTTP/2), except
//! `Terminal`, which only native clients speak; host calls run over gRPC.
//!
//! Sections follow the proto: rules for every RPC first, then each
//! service's calls in order.

use rendezvous_proto::guest_event::Event;
use rendezvous_proto::host_service_client::HostServiceClient;
use rendezvous_proto::message_size::{MAX_DATA_BYTES, MAX_MESSAGE_BYTES};
use rendezvous_proto::{
    AckRequest, AttachRequest, Attached, DataOpen, ExitStatus, Hello, HostControlRequest,
    HostControlResponse, HostDataRequest, HostDataResponse, ListSessionsRequest, OpenSession, Pong,
    Registered, ResizeRequest, SendInputRequest, SessionFailed, TerminalRequest, exit_status,
    host_control_request, host_control_response, host_data_request, terminal_request,
};
use rendezvous_server::ServerConfig;
use rendezvous_server::session::RelayConfig;
use rendezvous_testkit::{
    AnyGuestClient, DEADLINE, TRANSPORTS, TermGuest, TestHost, TestServer, Transcript, Transport,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// A request stream of `messages`, kept open afterwards (as a host or
/// guest keeps its stream open while it waits for an answer).
fn open_stream<T: Send + 'static>(messages: Vec<T>) -> impl tokio_stream::Stream<Item = T> {
    tokio_stream::iter(messages).chain(tokio_stream::pending())
}

/// A host client with tonic's default message limits, as a careless
/// third-party host would have.
async fn host_client(server: &TestServer) -> HostServiceClient<Channel> {
    HostServiceClient::new(server.channel().await)
}

/// Asserts that `status` has `code` and a message containing `fragment`.
#[track_caller]
fn assert_status(status: &Status, code: Code, fragment: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(fragment),
        "{:?} lacks {fragment:?}",
        status.message()
    );
}

/// What the message limit says when refusing (its name and value).
fn message_limit_text() -> String {
    format!("limit reached: bytes per message is {MAX_MESSAGE_BYTES}")
}

/// Bytes that make any message carrying them go over the message limit.
fn oversize() -> String {
    "x".repeat(MAX_MESSAGE_BYTES + 1)
}

/// Names that break the rule (1–128 characters of `[A-Za-z0-9._:-]`).
fn malformed_names() -> [String; 3] {
    ["a/b".to_owned(), "é".to_owned(), "x".repeat(129)]
}

/// A secret that is no task's.
const WRONG_SECRET: &str = "wrong-secret-wrong-secret-0123";

/// The status of the first answer of a streaming call.
async fn first_status<T>(response: Result<tonic::Response<Streaming<T>>, Status>) -> Status {
    match response {
        Ok(response) => match response.into_inner().message().await {
            Ok(_) => Status::ok("answered"),
            Err(status) => status,
        },
        Err(status) => status,
    }
}

/// How an Attach call ended before any event: its status.
async fn attach_status(client: &mut AnyGuestClient, request: AttachRequest) -> Status {
    first_status(client.attach(request).await).await
}

/// Opens a new shell over `transport`; returns the client, Attached and
/// the events that follow.
async fn attach_new_shell(
    server: &TestServer,
    host: &TestHost,
    transport: Transport,
) -> (AnyGuestClient, Attached, Transcript) {
    let mut client = server.guest_client_over(transport).await;
    let stream = client
        .attach(host.attach_request(""))
        .await
        .unwrap()
        .into_inner();
    let mut events = Transcript::new(stream);
    let Some(Event::Attached(attached)) = events.next().await else {
        panic!("expected Attached first");
    };
    (client, attached, events)
}

// ---------------------------------------------------------------------------
// A host speaking the protocol by hand
// ---------------------------------------------------------------------------

/// A host registered by hand on the Control stream, which opens Data
/// streams and sends what a test tells it.
struct RawHost {
    client: HostServiceClient<Channel>,
    control: mpsc::Sender<HostControlRequest>,
    inbound: Streaming<HostControlResponse>,
    registered: Registered,
    task_id: String,
    secret: String,
}

impl RawHost {
    async fn register(server: &TestServer, task_id: &str) -> Self {
        let mut client = host_client(server).await;
        let secret = "raw-host-secret-0123456789".to_owned();
        let (control, requests) = mpsc::channel(16);
        control
            .send(HostControlRequest {
                message: Some(host_control_request::Message::Hello(Hello {
                    task_id: task_id.into(),
                    secret: secret.clone(),
                    ..Hello::default()
                })),
            })
            .await
            .unwrap();
        let mut inbound = client
            .control(ReceiverStream::new(requests))
            .await
            .expect("Control")
            .into_inner();
        let Some(HostControlResponse {
            message: Some(host_control_response::Message::Registered(registered)),
        }) = inbound.message().await.expect("Registered")
        else {
            panic!("expected Registered");
        };
        Self {
            client,
            control,
            inbound,
            registered,
            task_id: task_id.into(),
            secret,
        }
    }

    fn attach_request(&self, session_id: &str) -> AttachRequest {
        AttachRequest {
            task_id: self.task_id.clone(),
            secret: self.secret.clone(),
            session_id: session_id.into(),
            ..AttachRequest::default()
        }
    }

    /// The next OpenSession the server sends (Pings are skipped).
    async fn open_session(&mut self) -> OpenSession {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.inbound.message())
                .await
                .expect("OpenSession within the deadline")
                .expect("control stream");
            match message.and_then(|m| m.message) {
                Some(host_control_response::Message::OpenSession(open)) => return open,
                Some(_) => {}
                None => panic!("the control stream ended"),
            }
        }
    }

    /// Opens the Data stream of `session_id`; returns its request sender
    /// and response stream.
    async fn open_data(
        &self,
        session_id: &str,
    ) -> (
        mpsc::Sender<HostDataRequest>,
        Result<Streaming<HostDataResponse>, Status>,
    ) {
        let (data, requests) = mpsc::channel(4);
        data.send(HostDataRequest {
            message: Some(host_data_request::Message::Open(DataOpen {
                host_id: self.registered.host_id.clone(),
                host_token: self.registered.host_token.clone(),
                session_id: session_id.into(),
                input_applied: 0,
            })),
        })
        .await
        .unwrap();
        let response = self
            .client
            .clone()
            .data(ReceiverStream::new(requests))
            .await
            .map(tonic::Response::into_inner);
        (data, response)
    }

    /// A guest asks for a new shell and this host opens its Data stream:
    /// returns the guest's events (after Attached) and the Data stream.
    async fn new_session(
        &mut self,
        server: &TestServer,
    ) -> (
        Transcript,
        mpsc::Sender<HostDataRequest>,
        Streaming<HostDataResponse>,
    ) {
        let mut guest = server.guest_client().await;
        let request = self.attach_request("");
        let attach = tokio::spawn(async move { guest.attach(request).await });
        let open = self.open_session().await;
        let (data, responses) = self.open_data(&open.session_id).await;
        let stream = attach.await.unwrap().expect("Attach").into_inner();
        let mut events = Transcript::new(stream);
        let Some(Event::Attached(_)) = events.next().await else {
            panic!("expected Attached first");
        };
        (events, data, responses.expect("Data"))
    }
}

/// Reads a host's Data stream until it ends; returns its status.
async fn data_end(mut responses: Streaming<HostDataResponse>) -> Status {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match responses.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Status::ok("the Data stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the Data stream ends within the deadline")
}

/// Reads a guest's events until Exit.
async fn guest_exit(events: &mut Transcript) -> ExitStatus {
    loop {
        match events.next().await {
            Some(Event::Exit(exit)) => return exit,
            Some(_) => {}
            None => panic!("the guest's stream ended without Exit"),
        }
    }
}

// ---------------------------------------------------------------------------
// Names: a malformed one is INVALID_ARGUMENT on every RPC, before auth
// ---------------------------------------------------------------------------

#[tokio::test]
async fn attach_refuses_a_malformed_task_id_before_the_secret_on_every_transport() {
    let server = TestServer::start().await;
    for transport in TRANSPORTS {
        let mut client = server.guest_client_over(transport).await;
        for task_id in malformed_names() {
            let request = AttachRequest {
                task_id: task_id.clone(),
                secret: WRONG_SECRET.into(),
                ..AttachRequest::default()
            };
            let status = attach_status(&mut client, request).await;
            assert_status(&status, Code::InvalidArgument, "invalid task ID");
            assert!(!status.message().contains(&task_id), "{transport:?}");
        }
    }
}

#[tokio::test]
async fn attach_refuses_a_malformed_host_name_before_the_secret_on_every_transport() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "contract-host-name").await;
    for transport in TRANSPORTS {
        let mut client = server.guest_client_over(transport).await;
        let request = AttachRequest {
            host_name: "a b".into(),
            secret: WRONG_SECRET.into(),
            ..host.attach_request("")
        };
        let status = attach_status(&mut client, request).await;
        assert_status(&status, Code::InvalidArgument, "invalid host name");
    }
}

#[tokio::test]
async fn attach_refuses_a_malformed_session_id_and_echoes_none_of_it() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "contract-session-id").await;
    for transport in TRANSPORTS {
        let mut client = server.guest_client_over(transport).await;
        for session_id in ["../x".to_owned(), "s".repeat(256 * 1024)] {
            let status = attach_status(&mut client, host.attach_request(&session_id)).await;
            assert_status(&status, Code::InvalidArgument, "invalid session ID");
            assert!(status.message().len() < 128, "{transport:?}: {status:?}");
        }
        // A well-formed ID that names nothing stays NOT_FOUND.
        let status = attach_status(&mut client, host.attach_request("no-such-session")).await;
        assert_status(&status, Code::NotFound, "no session \"no-such-session\"");
    }
}

#[tokio::test]
async fn terminal_refuses_a_malformed_task_id_before_the_secret() {
    let server = TestServer::start().await;
    let request = AttachRequest {
        task_id: "a/b".into(),
        secret: WRONG_SECRET.into(),
        ..AttachRequest::default()
    };
    let status = TermGuest::open(&server, request)
        .await
        .err()
        .expect("refused");
    assert_status(&status, Code::InvalidArgument, "invalid task ID");
}

#[tokio::test]
async fn list_sessions_refuses_a_malformed_task_id_before_the_secret_on_every_transport() {
    let server = TestServer::start().await;
    for transport in TRANSPORTS {
        let mut client = server.guest_client_over(transport).await;
        for task_id in malformed_names() {
            let status = client
                .list_sessions(ListSessionsRequest {
                    task_id,
                    secret: WRONG_SECRET.into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_status(&status, Code::InvalidArgument, "invalid task ID");
        }
    }
}

#[tokio::test]
async fn data_refuses_a_malformed_session_id() {
    let server = TestServer::start().await;
    let host = RawHost::register(&server, "contract-data-id").await;
    let (_data, response) = host.open_data(&"s".repeat(256 * 1024)).await;
    let status = response.expect_err("refused");
    assert_status(&status, Code::InvalidArgument, "invalid session ID");
    assert!(status.message().len() < 128, "{status:?}");
    // A well-formed ID that names nothing stays NOT_FOUND.
    let (_data, response) = host.open_data("no-such-session").await;
    assert_status(
        &response.expect_err("refused"),
        Code::NotFound,
        "no session",
    );
}

#[tokio::test]
async fn unknown_task_and_wrong_secret_are_denied_alike_on_every_transport() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "contract-denied").await;
    for transport in TRANSPORTS {
        let mut client = server.guest_client_over(transport).await;
        let wrong_secret = AttachRequest {
            secret: WRONG_SECRET.into(),
            ..host.attach_request("")
        };
        let unknown_task = AttachRequest {
            task_id: "no-such-task".into(),
            ..host.attach_request("")
        };
        let a = attach_status(&mut client, wrong_secret).await;
        let b = attach_status(&mut client, unknown_task).await;
        let c = client
            .list_sessions(ListSessionsRequest {
                task_id: "no-such-task".into(),
                secret: host.secret.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        for status in [&a, &b, &c] {
            assert_status(
                status,
                Code::PermissionDenied,
                "unknown task or wrong secret",
            );
            assert_eq!(status.message(), a.message(), "{transport:?}");
            assert!(!status.message().contains(&host.secret));
        }
    }
}

// ---------------------------------------------------------------------------
// The message limit: RESOURCE_EXHAUSTED naming it, on every RPC
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_unary_and_attach_call_over_the_message_limit_is_resource_exhausted() {
    let server = TestServer::start().await;
    let limit = message_limit_text();
    for transport in TRANSPORTS {
        let mut client = server.guest_client_over(transport).await;
        let status = client
            .send_input(SendInputRequest {
                data: oversize().into_bytes().into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_status(&status, Code::ResourceExhausted, &limit);
        let status = client
            .resize(ResizeRequest {
                guest_id: oversize(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_status(&status, Code::ResourceExhausted, &limit);
        let status = client
            .ack(AckRequest {
                guest_token: oversize(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_status(&status, Code::ResourceExhausted, &limit);
        let status = client
            .list_sessions(ListSessionsRequest {
                task_id: "t".into(),
                secret: oversize(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_status(&status, Code::ResourceExhausted, &limit);
        let request = AttachRequest {
            task_id: "t".into(),
            secret: oversize(),
            ..Default::default()
        };
        let status = attach_status(&mut client, request).await;
        assert_status(&status, Code::ResourceExhausted, &limit);
    }
}

#[tokio::test]
async fn a_first_stream_message_over_the_message_limit_is_resource_exhausted() {
    let server = TestServer::start().await;
    let limit = message_limit_text();
    let hello = HostControlRequest {
        message: Some(host_control_request::Message::Hello(Hello {
            task_id: "contract-big-hello".into(),
            secret: oversize(),
            ..Hello::default()
        })),
    };
    let response = host_client(&server)
        .await
        .control(open_stream(vec![hello]))
        .await;
    assert_status(
        &first_status(response).await,
        Code::ResourceExhausted,
        &limit,
    );

    let open = HostDataRequest {
        message: Some(host_data_request::Message::Open(DataOpen {
            host_token: oversize(),
            ..DataOpen::default()
        })),
    };
    let response = host_client(&server)
        .await
        .data(open_stream(vec![open]))
        .await;
    assert_status(
        &first_status(response).await,
        Code::ResourceExhausted,
        &limit,
    );

    let attach = TerminalRequest {
        message: Some(terminal_request::Message::Attach(AttachRequest {
            secret: oversize(),
            ..AttachRequest::default()
        })),
    };
    let response = server
        .guest_client()
        .await
        .terminal(open_stream(vec![attach]))
        .await;
    assert_status(
        &first_status(response).await,
        Code::ResourceExhausted,
        &limit,
    );
}

#[tokio::test]
async fn control_ends_with_resource_exhausted_for_a_later_message_over_the_limit() {
    let server = TestServer::start().await;
    let mut host = RawHost::register(&server, "contract-big-control").await;
    host.control
        .send(HostControlRequest {
            message: Some(host_control_request::Message::SessionFailed(
                SessionFailed {
                    session_id: "s".into(),
                    message: oversize(),
                },
            )),
        })
        .await
        .unwrap();
    let status = loop {
        match tokio::time::timeout(DEADLINE, host.inbound.message())
            .await
            .expect("the Control stream ends within the deadline")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the Control stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_status(&status, Code::ResourceExhausted, &message_limit_text());
}

#[tokio::test]
async fn terminal_ends_with_resource_exhausted_for_input_over_the_message_limit() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "contract-big-input").await;
    let mut guest = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    guest.type_text(&oversize()).await;
    let status = loop {
        match guest.events.next_result().await {
            Ok(Some(Event::Exit(exit))) => panic!("the session ended: {exit:?}"),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_status(&status, Code::ResourceExhausted, &message_limit_text());
}

// ---------------------------------------------------------------------------
// Control
// ---------------------------------------------------------------------------

async fn control_code(server: &TestServer, first: host_control_request::Message) -> Code {
    let request = open_stream(vec![HostControlRequest {
        message: Some(first),
    }]);
    first_status(host_client(server).await.control(request).await)
        .await
        .code()
}

#[tokio::test]
async fn control_refuses_a_first_message_that_is_not_hello() {
    let server = TestServer::start().await;
    let pong = host_control_request::Message::Pong(Pong { nonce: 1 });
    assert_eq!(control_code(&server, pong).await, Code::InvalidArgument);
}

#[tokio::test]
async fn control_refuses_a_secret_of_22_bytes_but_11_characters() {
    let server = TestServer::start().await;
    let hello = host_control_request::Message::Hello(Hello {
        task_id: "contract".into(),
        secret: "é".repeat(11),
        ..Hello::default()
    });
    assert_eq!(control_code(&server, hello).await, Code::InvalidArgument);
}

#[tokio::test]
async fn control_refuses_a_malformed_task_id_or_host_name() {
    let server = TestServer::start().await;
    for name in malformed_names() {
        for (task_id, host_name) in [(name.clone(), String::new()), ("t".into(), name.clone())] {
            let hello = host_control_request::Message::Hello(Hello {
                task_id,
                host_name,
                secret: "a-secret-of-at-least-22-chars".into(),
                ..Hello::default()
            });
            assert_eq!(control_code(&server, hello).await, Code::InvalidArgument);
        }
    }
}

#[tokio::test]
async fn control_refuses_a_taken_host_name_with_already_exists() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "contract-taken").await;
    let hello = host_control_request::Message::Hello(Hello {
        task_id: host.task_id.clone(),
        secret: host.secret.clone(),
        ..Hello::default()
    });
    assert_eq!(control_code(&server, hello).await, Code::AlreadyExists);
}

// ---------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------

async fn data_code(server: &TestServer, first: host_data_request::Message) -> Code {
    let request = open_stream(vec![HostDataRequest {
        message: Some(first),
    }]);
    match host_client(server).await.data(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn data_refuses_a_first_message_that_is_not_data_open() {
    let server = TestServer::start().await;
    let output = host_data_request::Message::Output(b"x".to_vec().into());
    assert_eq!(data_code(&server, output).await, Code::InvalidArgument);
}

#[tokio::test]
async fn data_refuses_an_unknown_host_or_a_bad_host_token_as_unauthenticated() {
    let server = TestServer::start().await;
    let open = host_data_request::Message::Open(DataOpen {
        host_id: "no-such-host".into(),
        host_token: "not-a-token".into(),
        session_id: "s".into(),
        input_applied: 0,
    });
    assert_eq!(data_code(&server, open).await, Code::Unauthenticated);
}

#[tokio::test]
async fn an_output_of_4_mib_reaches_the_guest_whole() {
    // Retained output large enough that the guest lags nothing.
    let config = ServerConfig {
        relay: RelayConfig {
            retained_output_bytes: 2 * MAX_DATA_BYTES,
            ..RelayConfig::default()
        },
        ..ServerConfig::default()
    };
    let server = TestServer::with_config(config).await;
    let mut host = RawHost::register(&server, "contract-4mib").await;
    let (mut events, data, _responses) = host.new_session(&server).await;
    let output: Vec<u8> = (0..MAX_DATA_BYTES).map(|i| (i % 251) as u8).collect();
    for message in [
        host_data_request::Message::Output(output.clone().into()),
        host_data_request::Message::Exit(ExitStatus {
            status: Some(exit_status::Status::Code(0)),
            message: String::new(),
        }),
    ] {
        data.send(HostDataRequest {
            message: Some(message),
        })
        .await
        .unwrap();
    }
    let exit = guest_exit(&mut events).await;
    assert_eq!(exit.status, Some(exit_status::Status::Code(0)), "{exit:?}");
    assert_eq!(events.lagged, 0);
    assert!(events.output == output, "the 4 MiB arrived changed");
}

#[tokio::test]
async fn an_output_over_the_limit_ends_the_data_stream_and_tells_the_guests() {
    let server = TestServer::start().await;
    let mut host = RawHost::register(&server, "contract-big-output").await;
    let (mut events, data, responses) = host.new_session(&server).await;
    data.send(HostDataRequest {
        message: Some(host_data_request::Message::Output(
            oversize().into_bytes().into(),
        )),
    })
    .await
    .unwrap();
    let limit = message_limit_text();
    assert_status(&data_end(responses).await, Code::ResourceExhausted, &limit);
    let exit = guest_exit(&mut events).await;
    assert_eq!(exit.status, None);
    assert!(
        exit.message.contains("the server ended the session") && exit.message.contains(&limit),
        "{exit:?}"
    );
}

#[tokio::test]
async fn a_second_data_open_ends_the_data_stream_with_invalid_argument() {
    let server = TestServer::start().await;
    let mut host = RawHost::register(&server, "contract-second-open").await;
    let (mut events, data, responses) = host.new_session(&server).await;
    data.send(HostDataRequest {
        message: Some(host_data_request::Message::Open(DataOpen::default())),
    })
    .await
    .unwrap();
    assert_status(
        &data_end(responses).await,
        Code::InvalidArgument,
        "second DataOpen",
    );
    let exit = guest_exit(&mut events).await;
    assert!(
        exit.message.contains("the server ended the session"),
        "{exit:?}"
    );
}

// ---------------------------------------------------------------------------
// Attach
// ---------------------------------------------------------------------------

#[tokio::test]
async fn attach_when_the_host_cannot_start_a_shell_gets_attached_then_exit() {
    let server = TestServer::start().await;
    let host = TestHost::with_command(
        &server,
        "contract-no-shell",
        vec!["/nonexistent/cmd".into()],
    )
    .await;
    for transport in [Transport::Grpc, Transport::GrpcWebHttp1] {
        let (_client, _attached, mut events) = attach_new_shell(&server, &host, transport).await;
        let exit = events.until_exit().await;
        assert_eq!(exit.status, None, "{exit:?}");
        assert!(
            exit.message.contains("the host could not start the shell"),
            "{exit:?}"
        );
    }
}

#[tokio::test]
async fn attach_names_what_it_cannot_find_on_every_transport() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "contract-not-found").await;
    for transport in TRANSPORTS {
        let mut client = server.guest_client_over(transport).await;
        let no_such_host = AttachRequest {
            host_name: "other".into(),
            ..host.attach_request("")
        };
        let status = attach_status(&mut client, no_such_host).await;
        assert_status(&status, Code::NotFound, "no host named \"other\"");
        let status = attach_status(&mut client, host.attach_request("0123abcd")).await;
        assert_status(&status, Code::NotFound, "no session \"0123abcd\"");
    }
}

// ---------------------------------------------------------------------------
// SendInput, Resize, Ack
// ---------------------------------------------------------------------------

#[tokio::test]
async fn input_resize_and_ack_after_the_session_ended_are_failed_precondition() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "contract-ended").await;
    for transport in TRANSPORTS {
        let (mut client, guest, mut events) = attach_new_shell(&server, &host, transport).await;
        client
            .send_input(SendInputRequest {
                guest_id: guest.guest_id.clone(),
                guest_token: guest.guest_token.clone(),
                seq: 0,
                data: b"exit 3\n".to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap();
        // The stream ends after Exit: the guest is no longer attached.
        let exit = events.until_exit().await;
        assert_eq!(exit.status, Some(exit_status::Status::Code(3)));

        let ended = "the session has ended";
        let input = |token: &str| SendInputRequest {
            guest_id: guest.guest_id.clone(),
            guest_token: token.to_owned(),
            seq: 1,
            data: b"x".to_vec().into(),
            ..Default::default()
        };
        let status = client.send_input(input(&guest.guest_token)).await;
        assert_status(&status.unwrap_err(), Code::FailedPrecondition, ended);
        let status = client
            .resize(ResizeRequest {
                guest_id: guest.guest_id.clone(),
                guest_token: guest.guest_token.clone(),
                cols: 90,
                rows: 30,
                ..Default::default()
            })
            .await;
        assert_status(&status.unwrap_err(), Code::FailedPrecondition, ended);
        let status = client
            .ack(AckRequest {
                guest_id: guest.guest_id.clone(),
                guest_token: guest.guest_token.clone(),
                offset: 1,
                messages: 1,
                ..Default::default()
            })
            .await;
        assert_status(&status.unwrap_err(), Code::FailedPrecondition, ended);
        // Without its token, the guest is still nobody.
        let status = client.send_input(input("not-the-token")).await;
        assert_status(&status.unwrap_err(), Code::Unauthenticated, "unknown guest");
    }
}

#[tokio::test]
async fn send_input_authenticates_before_it_measures_the_input() {
    let server = TestServer::start().await;
    for transport in TRANSPORTS {
        let mut client = server.guest_client_over(transport).await;
        let status = client
            .send_input(SendInputRequest {
                guest_id: "no-such-guest".into(),
                guest_token: "not-a-token".into(),
                seq: 0,
                data: vec![b'a'; 65 * 1024].into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_status(&status, Code::Unauthenticated, "unknown guest");
    }
}

// ---------------------------------------------------------------------------
// Terminal
// ---------------------------------------------------------------------------

#[tokio::test]
async fn terminal_refuses_a_first_request_that_is_not_attach() {
    let server = TestServer::start().await;
    let request = open_stream(vec![TerminalRequest {
        message: Some(terminal_request::Message::Input(b"x".to_vec().into())),
    }]);
    let response = server.guest_client().await.terminal(request).await;
    assert_eq!(first_status(response).await.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn terminal_ends_with_invalid_argument_for_a_second_attach() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "contract-second-attach").await;
    let mut client = server.guest_client().await;
    let attach = || TerminalRequest {
        message: Some(terminal_request::Message::Attach(host.attach_request(""))),
    };
    let mut stream = client
        .terminal(open_stream(vec![attach(), attach()]))
        .await
        .unwrap()
        .into_inner();
    let status = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("a status within the deadline");
    assert_status(
        &status,
        Code::InvalidArgument,
        "attach may only be the first",
    );
}
