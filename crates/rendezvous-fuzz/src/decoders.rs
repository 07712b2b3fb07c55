//! The decoders harness: the fuzzer's bytes decoded with prost as every
//! message a host or a guest sends, and each message that decodes pushed
//! through the server's own handling of it, without a socket: the
//! services' handlers (`HostApi`, `GuestApi`, called as tonic calls them,
//! request streams included), the registry's checks behind them
//! (names, secrets, labels, host and guest credentials, guest tokens) and
//! the session it lands in.
//!
//! Properties, besides no panic in the handler or any task it spawns:
//! - each message gets the status the proto documents for it, computed
//!   here from the documented rules (`rendezvous_proto::ids` for names,
//!   secrets and labels; the fixture's known credentials): a malformed
//!   name `INVALID_ARGUMENT` before any credential is looked at, a wrong
//!   secret `PERMISSION_DENIED`, an unknown guest `UNAUTHENTICATED`, an
//!   input over its limit `RESOURCE_EXHAUSTED`, and so on;
//! - every error text is bounded and echoes no long field of the request;
//! - what is accepted has exactly its effect: a Hello registers a host
//!   that leaves when its stream ends, input reaches the host's queue
//!   once (stripped of terminal replies for a guest that is not the
//!   primary writer), a resize sets the PTY size, an ack the guest's
//!   count, a host's Exit ends its session with that status.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use prost::Message;
use rendezvous_proto::guest_service_server::GuestService;
use rendezvous_proto::host_service_server::HostService;
use rendezvous_proto::ids::{
    HostName, SessionId, TaskId, check_labels, check_secret_strength, clamp_cells,
};
use rendezvous_proto::{
    AckRequest, AttachRequest, DataOpen, GuestEvent, Hello, HostControlRequest, HostDataRequest,
    ListSessionsRequest, ResizeRequest, Role, SendInputRequest, TerminalRequest, WindowSize,
    guest_event, host_control_request, host_control_response, host_data_request, terminal_request,
};
use rendezvous_server::guest_service::GuestApi;
use rendezvous_server::host_service::HostApi;
use rendezvous_server::session::{DEFAULT_SIZE, Read};
use rendezvous_server::terminal_replies;
use tonic::{Code, Request, Status};

use crate::fixture::{self, Fixture, READ_ONLY_SECRET, SECRET, TASK, streaming};

/// Longest error text any refusal may have, in bytes.
pub const MAX_ERROR_TEXT_BYTES: usize = 512;

/// Fields at least this long must never appear in an error text (shorter
/// ones may match the fixed words by chance).
const ECHO_CHECKED_BYTES: usize = 200;

/// Virtual time a harness lets a stream run before it looks, in ms.
const STREAM_WINDOW: Duration = Duration::from_millis(200);

/// Runs the decoders harness on `data`. See the module docs.
///
/// # Panics
/// When a message is handled otherwise than documented.
pub fn decoders(data: &[u8]) {
    crate::exec::run(async move {
        if let Ok(message) = HostControlRequest::decode(data) {
            control(data, message).await;
        }
        if let Ok(message) = HostDataRequest::decode(data) {
            host_data(data, message).await;
        }
        if let Ok(request) = AttachRequest::decode(data) {
            let fx = Fixture::new().await;
            let result = GuestApi::new(fx.registry.clone())
                .attach(Request::new(request.clone()))
                .await
                .map(|r| r.into_inner());
            attached(&fx, &request, result).await;
        }
        if let Ok(request) = SendInputRequest::decode(data) {
            send_input(request).await;
        }
        if let Ok(request) = ResizeRequest::decode(data) {
            resize(request).await;
        }
        if let Ok(request) = AckRequest::decode(data) {
            ack(request).await;
        }
        if let Ok(request) = TerminalRequest::decode(data) {
            terminal(data, request).await;
        }
        if let Ok(request) = ListSessionsRequest::decode(data) {
            list_sessions(request).await;
        }
    });
}

/// Checks that `status` has `code`, a bounded text, and no echo of
/// `fields`.
fn check_status(status: &Status, code: Code, fields: &[&str], what: &str) {
    assert_eq!(
        status.code(),
        code,
        "{what}: expected {code:?}, got {status:?}"
    );
    check_text(status.message(), fields, what);
}

fn check_text(text: &str, fields: &[&str], what: &str) {
    assert!(
        text.len() <= MAX_ERROR_TEXT_BYTES,
        "{what}: an error text of {} bytes",
        text.len()
    );
    for field in fields {
        assert!(
            field.len() < ECHO_CHECKED_BYTES || !text.contains(field),
            "{what}: the error text echoes a field of the request"
        );
    }
}

/// What the server must answer a Hello, from the documented rules.
fn hello_verdict(hello: &Hello) -> Option<Code> {
    let valid = TaskId::new(hello.task_id.as_str()).is_ok()
        && HostName::or_default(&hello.host_name).is_ok()
        && check_secret_strength(&hello.secret).is_ok()
        && (hello.read_only_secret.is_empty()
            || (check_secret_strength(&hello.read_only_secret).is_ok()
                && hello.read_only_secret != hello.secret))
        && check_labels(hello.labels.iter()).is_ok();
    if !valid {
        return Some(Code::InvalidArgument);
    }
    if hello.task_id != TASK {
        return None;
    }
    // The fixture's task, of the same owner: its secrets must match, and
    // its host is named "default".
    if hello.secret != SECRET || hello.read_only_secret != READ_ONLY_SECRET {
        return Some(Code::PermissionDenied);
    }
    let name = HostName::or_default(&hello.host_name).ok()?;
    (name.as_str() == "default").then_some(Code::AlreadyExists)
}

fn hello_fields(hello: &Hello) -> Vec<&str> {
    let mut fields = vec![
        hello.task_id.as_str(),
        hello.host_name.as_str(),
        hello.secret.as_str(),
        hello.read_only_secret.as_str(),
    ];
    for (k, v) in &hello.labels {
        fields.push(k);
        fields.push(v);
    }
    fields
}

async fn control(data: &[u8], message: HostControlRequest) {
    let fx = Fixture::new().await;
    let api = HostApi::new(fx.registry.clone());
    let result = api.control(Request::new(streaming(&[data]))).await;
    let Some(host_control_request::Message::Hello(hello)) = message.message else {
        let status = result
            .err()
            .expect("a first Control message other than Hello");
        check_status(&status, Code::InvalidArgument, &[], "Control without Hello");
        return;
    };
    let fields = hello_fields(&hello);
    match (hello_verdict(&hello), result) {
        (Some(code), Err(status)) => check_status(&status, code, &fields, "Hello"),
        (None, Ok(response)) => {
            let mut stream = response.into_inner();
            let first = stream.next().await.expect("Control sends Registered");
            let Ok(rendezvous_proto::HostControlResponse {
                message: Some(host_control_response::Message::Registered(registered)),
            }) = first
            else {
                panic!("Control's first message is not Registered: {first:?}");
            };
            assert_eq!(registered.guest_url_path, format!("/t/{}", hello.task_id));
            assert_eq!(registered.owner, "open");
            assert_eq!(fx.registry.connected().hosts, 2, "the host is registered");
            // The request stream has ended: the host leaves.
            crate::exec::settle().await;
            drop(stream);
            crate::exec::settle().await;
            assert_eq!(
                fx.registry.connected().hosts,
                1,
                "the host left with its stream"
            );
        }
        (want, got) => panic!(
            "Hello: expected {want:?}, got {:?}",
            got.map(|_| "a registered host")
        ),
    }
}

async fn host_data(data: &[u8], message: HostDataRequest) {
    let fx = Fixture::new().await;
    let api = HostApi::new(fx.registry.clone());
    // As the first message of a Data stream.
    let result = api.data(Request::new(streaming(&[data]))).await;
    match &message.message {
        Some(host_data_request::Message::Open(open)) => {
            let fields = [
                open.host_id.as_str(),
                open.host_token.as_str(),
                open.session_id.as_str(),
            ];
            let status = result.err().expect("a DataOpen with made-up credentials");
            check_status(&status, Code::Unauthenticated, &fields, "DataOpen");
            // With the host's own credentials, the session ID decides.
            let real = DataOpen {
                host_id: fx.host.id().to_owned(),
                host_token: fx.host_token.clone(),
                session_id: open.session_id.clone(),
            };
            let want = if open.session_id == fx.a.id() {
                Some(Code::FailedPrecondition)
            } else if open.session_id == fx.b.id() {
                None
            } else if SessionId::new(open.session_id.as_str()).is_err() {
                Some(Code::InvalidArgument)
            } else {
                Some(Code::NotFound)
            };
            let opened = HostDataRequest {
                message: Some(host_data_request::Message::Open(real)),
            }
            .encode_to_vec();
            let result = api.data(Request::new(streaming(&[&opened]))).await;
            match (want, result) {
                (Some(code), Err(status)) => check_status(&status, code, &fields, "DataOpen"),
                (None, Ok(_)) => {}
                (want, got) => panic!("DataOpen: expected {want:?}, got {:?}", got.err()),
            }
        }
        _ => {
            let status = result
                .err()
                .expect("a first Data message other than DataOpen");
            check_status(&status, Code::InvalidArgument, &[], "Data without DataOpen");
        }
    }
    // As the second message, after the host's own DataOpen of session b.
    let fx = Fixture::new().await;
    let api = HostApi::new(fx.registry.clone());
    let opened = HostDataRequest {
        message: Some(host_data_request::Message::Open(DataOpen {
            host_id: fx.host.id().to_owned(),
            host_token: fx.host_token.clone(),
            session_id: fx.b.id().to_owned(),
        })),
    }
    .encode_to_vec();
    let mut stream = api
        .data(Request::new(streaming(&[&opened, data])))
        .await
        .expect("the host's own DataOpen")
        .into_inner();
    let mut last = None;
    while let Ok(Some(item)) = tokio::time::timeout(STREAM_WINDOW, stream.next()).await {
        last = Some(item);
    }
    assert!(
        fx.b.has_ended(),
        "a Data stream that ended left its session running"
    );
    // What b's guest reads, to the end.
    let (mut output, mut cursor) = (Vec::new(), 0u64);
    let id = fx.b_guest.handle.id();
    let attachment = fx.b_guest.handle.attachment();
    let exit = loop {
        match fx.b.read_attached(id, attachment, cursor) {
            Read::Output { offset, data } => {
                assert_eq!(offset, cursor, "output at another offset");
                cursor += data.len() as u64;
                output.extend_from_slice(&data);
            }
            Read::Exit(status) => break status,
            other => panic!("b's guest read {other:?} from an ended session"),
        }
    };
    let closed = "the host closed the session without an exit status";
    match message.message {
        Some(host_data_request::Message::Output(data)) => {
            // Output the host sent just before it closed its stream
            // without an Exit may be dropped; if it arrives, it is exact.
            assert!(
                output.is_empty() || output == data[..],
                "b's guest read other bytes than the host sent"
            );
            assert_eq!(exit.message, closed);
        }
        Some(host_data_request::Message::Exit(status)) => {
            assert!(output.is_empty());
            assert_eq!(exit, status, "the session ended with another status");
        }
        Some(host_data_request::Message::Open(_)) => {
            assert!(
                exit.message.contains("second DataOpen"),
                "a second DataOpen ended the session with {exit:?}"
            );
            let status = last
                .and_then(Result::err)
                .expect("the host's call ends with a status");
            check_status(&status, Code::InvalidArgument, &[], "second DataOpen");
        }
        Some(host_data_request::Message::InputAck(_)) | None => {
            assert!(output.is_empty());
            assert_eq!(exit.message, closed);
        }
    }
}

/// What an attach must get, from the documented rules; `Err(())` when
/// the request carries a guest token that verifies (the harness does not
/// model what tokens grant).
fn attach_verdict(fx: &Fixture, req: &AttachRequest) -> Result<Option<Code>, ()> {
    let names = TaskId::new(req.task_id.as_str()).is_ok()
        && HostName::or_default(&req.host_name).is_ok()
        && (req.session_id.is_empty() || SessionId::new(req.session_id.as_str()).is_ok());
    if !names {
        return Ok(Some(Code::InvalidArgument));
    }
    let role = if !req.secret.is_empty() || req.token.is_empty() {
        match (req.task_id == TASK, req.secret.as_str()) {
            (true, SECRET) => Role::ReadWrite,
            (true, READ_ONLY_SECRET) => Role::ReadOnly,
            _ => return Ok(Some(Code::PermissionDenied)),
        }
    } else {
        let key = fixture::config().token_key;
        match rendezvous_server::token::verify(&req.token, key.as_ref(), None).now_or_never() {
            Some(Err(_)) => return Ok(Some(Code::PermissionDenied)),
            _ => return Err(()),
        }
    };
    if HostName::or_default(&req.host_name).is_ok_and(|n| n.as_str() != "default") {
        return Ok(Some(Code::NotFound));
    }
    if req.session_id.is_empty() {
        return Ok((role != Role::ReadWrite).then_some(Code::PermissionDenied));
    }
    let known = req.session_id == fx.a.id() || req.session_id == fx.b.id();
    Ok((!known).then_some(Code::NotFound))
}

fn attach_fields(req: &AttachRequest) -> [&str; 7] {
    [
        &req.task_id,
        &req.secret,
        &req.host_name,
        &req.session_id,
        &req.token,
        &req.resume_guest_id,
        &req.resume_guest_token,
    ]
}

/// Checks an attach's outcome against [`attach_verdict`].
async fn attached(
    fx: &Fixture,
    req: &AttachRequest,
    result: Result<rendezvous_server::guest_stream::EventStream, Status>,
) {
    let Ok(verdict) = attach_verdict(fx, req) else {
        return;
    };
    let fields = attach_fields(req);
    let mut stream = match (verdict, result) {
        (Some(code), Err(status)) => return check_status(&status, code, &fields, "Attach"),
        (None, Ok(stream)) => stream,
        (want, got) => panic!("Attach: expected {want:?}, got {:?}", got.err()),
    };
    let first = stream.next().await;
    let Some(Ok(GuestEvent {
        event: Some(guest_event::Event::Attached(attached)),
    })) = first
    else {
        panic!("an attach's first event is not Attached: {first:?}");
    };
    let role = if req.secret == SECRET {
        Role::ReadWrite
    } else {
        Role::ReadOnly
    };
    assert_eq!(attached.role, i32::from(role), "the attached guest's role");
    assert_eq!(attached.host_name, "default");
    assert!(
        !attached.resumed,
        "a guest resumed with made-up credentials"
    );
    assert_eq!(attached.next_input_seq, 0);
    if !req.session_id.is_empty() {
        assert_eq!(attached.session_id, req.session_id);
    }
    let second = stream.next().await;
    let Some(Ok(GuestEvent {
        event: Some(guest_event::Event::Size(size)),
    })) = second
    else {
        panic!("an attach's second event is not the size: {second:?}");
    };
    assert!((1..=1000).contains(&size.cols) && (1..=1000).contains(&size.rows));
}

/// The fixture's writer's credentials with the request's other fields.
async fn send_input(request: SendInputRequest) {
    let mut fx = Fixture::new().await;
    let api = GuestApi::new(fx.registry.clone());
    let fields = [request.guest_id.as_str(), request.guest_token.as_str()];
    let status = api
        .send_input(Request::new(request.clone()))
        .await
        .expect_err("input with made-up credentials");
    check_status(&status, Code::Unauthenticated, &fields, "SendInput");
    // A read-only guest, with its own credentials.
    let viewer = SendInputRequest {
        guest_id: fx.viewer.handle.id().to_owned(),
        guest_token: fx.viewer.token.clone(),
        ..request.clone()
    };
    let result = api.send_input(Request::new(viewer)).await;
    let limit = fx.registry.config().limits.input_bytes;
    let code = if request.data.len() > limit {
        Code::ResourceExhausted
    } else {
        Code::PermissionDenied
    };
    check_status(
        &result.expect_err("a viewer's input"),
        code,
        &[],
        "SendInput",
    );
    // The writer, with its own credentials.
    let writer = SendInputRequest {
        guest_id: fx.writer.handle.id().to_owned(),
        guest_token: fx.writer.token.clone(),
        ..request.clone()
    };
    let result = api.send_input(Request::new(writer)).await;
    let got = fx.a_inputs();
    if request.data.len() > limit {
        check_status(
            &result.expect_err("input over the limit"),
            Code::ResourceExhausted,
            &[],
            "SendInput",
        );
        assert!(got.is_empty());
    } else if request.seq > rendezvous_server::session::MAX_PENDING_INPUTS {
        check_status(
            &result.expect_err("input too far ahead"),
            Code::ResourceExhausted,
            &[],
            "SendInput",
        );
        assert!(got.is_empty());
    } else {
        assert!(result.is_ok(), "the writer's input: {:?}", result.err());
        // The primary writer's input goes as it is; a later seq waits.
        let want: &[u8] = if request.seq == 0 { &request.data } else { &[] };
        assert_eq!(got, want, "the host received other input than was sent");
    }
}

fn clamped(cols: u32, rows: u32) -> WindowSize {
    WindowSize {
        cols: clamp_cells(cols, DEFAULT_SIZE.cols),
        rows: clamp_cells(rows, DEFAULT_SIZE.rows),
    }
}

async fn resize(request: ResizeRequest) {
    let fx = Fixture::new().await;
    let api = GuestApi::new(fx.registry.clone());
    let fields = [request.guest_id.as_str(), request.guest_token.as_str()];
    let status = api
        .resize(Request::new(request.clone()))
        .await
        .expect_err("a resize with made-up credentials");
    check_status(&status, Code::Unauthenticated, &fields, "Resize");
    let viewer = ResizeRequest {
        guest_id: fx.viewer.handle.id().to_owned(),
        guest_token: fx.viewer.token.clone(),
        ..request.clone()
    };
    let status = api.resize(Request::new(viewer)).await.err();
    check_status(
        &status.expect("a viewer's resize"),
        Code::PermissionDenied,
        &[],
        "Resize",
    );
    let writer = ResizeRequest {
        guest_id: fx.writer.handle.id().to_owned(),
        guest_token: fx.writer.token.clone(),
        ..request.clone()
    };
    let result = api.resize(Request::new(writer)).await;
    assert!(result.is_ok(), "the writer's resize: {:?}", result.err());
    // The writer is the only read-write guest of a.
    assert_eq!(fx.a.size(), clamped(request.cols, request.rows));
}

async fn ack(request: AckRequest) {
    let fx = Fixture::new().await;
    let api = GuestApi::new(fx.registry.clone());
    let fields = [request.guest_id.as_str(), request.guest_token.as_str()];
    let status = api
        .ack(Request::new(request.clone()))
        .await
        .expect_err("an ack with made-up credentials");
    check_status(&status, Code::Unauthenticated, &fields, "Ack");
    for guest in [&fx.viewer, &fx.writer] {
        let own = AckRequest {
            guest_id: guest.handle.id().to_owned(),
            guest_token: guest.token.clone(),
            ..request.clone()
        };
        let result = api.ack(Request::new(own)).await;
        assert!(result.is_ok(), "a guest's own ack: {:?}", result.err());
        let acked =
            fx.a.acked_messages(guest.handle.id(), guest.handle.attachment());
        assert_eq!(acked, Some(request.messages), "the acknowledged count");
    }
}

async fn terminal(data: &[u8], request: TerminalRequest) {
    // As the first request.
    let fx = Fixture::new().await;
    let api = GuestApi::new(fx.registry.clone());
    let result = api
        .terminal(Request::new(streaming(&[data])))
        .await
        .map(|r| r.into_inner());
    match &request.message {
        Some(terminal_request::Message::Attach(attach)) => attached(&fx, attach, result).await,
        _ => {
            let status = result
                .err()
                .expect("a first Terminal request other than attach");
            check_status(&status, Code::InvalidArgument, &[], "Terminal");
        }
    }
    // As the second, after an attach to session a with the secret.
    let mut fx = Fixture::new().await;
    let api = GuestApi::new(fx.registry.clone());
    let attach = TerminalRequest {
        message: Some(terminal_request::Message::Attach(AttachRequest {
            task_id: TASK.into(),
            secret: SECRET.into(),
            session_id: fx.a.id().to_owned(),
            ..AttachRequest::default()
        })),
    }
    .encode_to_vec();
    let mut stream = api
        .terminal(Request::new(streaming(&[&attach, data])))
        .await
        .expect("an attach with the secret")
        .into_inner();
    let mut events = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(STREAM_WINDOW, stream.next()).await {
        events.push(item);
    }
    let ending = events.last().and_then(|e| e.as_ref().err());
    let limit = fx.registry.config().limits.input_bytes;
    match request.message {
        Some(terminal_request::Message::Input(input)) if input.len() > limit => {
            let status = ending.expect("input over the limit ends the call");
            check_status(status, Code::ResourceExhausted, &[], "Terminal input");
            assert!(fx.a_inputs().is_empty());
        }
        Some(terminal_request::Message::Input(input)) => {
            assert!(
                ending.is_none(),
                "Terminal input ended the call: {ending:?}"
            );
            // Not the primary writer (the fixture's writer is): its
            // terminal replies are dropped.
            let want = terminal_replies::strip(&input);
            assert_eq!(fx.a_inputs(), &want[..], "the host received other input");
        }
        Some(terminal_request::Message::Resize(size)) => {
            assert!(ending.is_none(), "a resize ended the call: {ending:?}");
            let asked = clamped(size.cols, size.rows);
            let want = WindowSize {
                cols: asked.cols.min(80),
                rows: asked.rows.min(24),
            };
            assert_eq!(fx.a.size(), want, "the PTY size after a resize");
        }
        Some(terminal_request::Message::Attach(_)) => {
            let status = ending.expect("a second attach ends the call");
            check_status(status, Code::InvalidArgument, &[], "second attach");
        }
        Some(terminal_request::Message::Ack(_)) | None => {
            assert!(ending.is_none(), "an ack ended the call: {ending:?}");
        }
    }
}

async fn list_sessions(request: ListSessionsRequest) {
    let fx = Fixture::new().await;
    let api = GuestApi::new(fx.registry.clone());
    let result = api.list_sessions(Request::new(request.clone())).await;
    let fields = [
        request.task_id.as_str(),
        request.secret.as_str(),
        request.token.as_str(),
    ];
    let want = if TaskId::new(request.task_id.as_str()).is_err() {
        Some(Code::InvalidArgument)
    } else if !request.secret.is_empty() || request.token.is_empty() {
        let known = request.task_id == TASK
            && (request.secret == SECRET || request.secret == READ_ONLY_SECRET);
        (!known).then_some(Code::PermissionDenied)
    } else {
        let key = fixture::config().token_key;
        match rendezvous_server::token::verify(&request.token, key.as_ref(), None).now_or_never() {
            Some(Err(_)) => Some(Code::PermissionDenied),
            _ => return,
        }
    };
    match (want, result) {
        (Some(code), Err(status)) => check_status(&status, code, &fields, "ListSessions"),
        (None, Ok(response)) => {
            let hosts = response.into_inner().hosts;
            assert_eq!(hosts.len(), 1, "the task's hosts");
            assert_eq!(hosts[0].sessions.len(), 2, "the host's sessions");
        }
        (want, got) => panic!("ListSessions: expected {want:?}, got {:?}", got.err()),
    }
}
