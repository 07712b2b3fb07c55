//! Over 650 lines, one job: one harness whose eight message kinds share
//! one fixture and one set of status checks. To be split next stop into
//! decoders/{host,guest}.rs along the host and guest messages.
//!
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
//! - what is accepted has exactly its effect: a Hello registers a new
//!   host (a made-up resume ticket resumes nothing and leaves the
//!   fixture's host as it was) that leaves when its stream ends, at once
//!   or after the grace period it was granted; a Data stream starts with
//!   an `output_ack` at the session's end, and its end without an exit
//!   status ends the session of a host without a grace period and
//!   leaves it to the next stream of one with; a DataOpen for a session
//!   another stream serves replaces that stream for a host with a grace
//!   period, and for one without is refused (`FAILED_PRECONDITION`, as
//!   before host resume) or replaces it, the session going on either way
//!   (but see [`Mode`]); input reaches the host's queue once (stripped
//!   of terminal replies for a guest that is not the primary writer), a
//!   resize sets the PTY size, an ack the guest's count, a host's Exit
//!   ends its session with that status.

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
    HostDataResponse, ListSessionsRequest, ResizeRequest, Role, SendInputRequest, TerminalRequest,
    WindowSize, guest_event, host_control_request, host_control_response, host_data_request,
    host_data_response, terminal_request,
};
use rendezvous_server::config::MAX_GRACE_PERIOD;
use rendezvous_server::guest_service::GuestApi;
use rendezvous_server::host_service::HostApi;
use rendezvous_server::registry::MAX_RESUME_SESSIONS;
use rendezvous_server::session::{DEFAULT_SIZE, Read};
use rendezvous_server::terminal_replies;
use tonic::{Code, Request, Status};

use crate::Mode;
use crate::fixture::{self, Fixture, READ_ONLY_SECRET, SECRET, TASK, live_streaming, streaming};

/// Longest error text any refusal may have, in bytes.
pub const MAX_ERROR_TEXT_BYTES: usize = 512;

/// Fields at least this long must never appear in an error text (shorter
/// ones may match the fixed words by chance).
const ECHO_CHECKED_BYTES: usize = 200;

/// Virtual time a harness lets a stream run before it looks, in ms.
const STREAM_WINDOW: Duration = Duration::from_millis(200);

/// Runs the decoders harness on `data`, following the server's known
/// bugs (see [`Mode`]). See the module docs.
///
/// # Panics
/// When a message is handled otherwise than documented.
pub fn decoders(data: &[u8]) {
    decoders_in(Mode::FollowKnownBugs, data);
}

/// Runs the decoders harness on `data`, expecting what the documentation
/// says everywhere: fails on inputs that show a known bug.
///
/// # Panics
/// As [`decoders`], and on the known bugs.
pub fn decoders_documented(data: &[u8]) {
    decoders_in(Mode::Documented, data);
}

fn decoders_in(mode: Mode, data: &[u8]) {
    crate::exec::run(async move {
        if let Ok(message) = HostControlRequest::decode(data) {
            control(data, message).await;
        }
        if let Ok(message) = HostDataRequest::decode(data) {
            host_data(data, message, mode).await;
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
        && check_labels(hello.labels.iter()).is_ok()
        && hello.sessions.len() <= MAX_RESUME_SESSIONS;
    if !valid {
        return Some(Code::InvalidArgument);
    }
    if hello.task_id != TASK {
        return None;
    }
    // The fixture's task, of the same owner: its secrets must match, and
    // its host is named "default". A resume ticket changes none of this:
    // the fuzzer cannot make one that verifies.
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
    fixture_host_kept(&fx, "a Hello");
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
            assert!(!registered.resumed, "a host resumed with a made-up ticket");
            assert_ne!(
                registered.host_id, hello.resume_host_id,
                "a host took the ID a made-up ticket named"
            );
            assert!(!registered.resume_ticket.is_empty(), "no resume ticket");
            let granted = hello
                .grace_period_ms
                .min(u64::try_from(MAX_GRACE_PERIOD.as_millis()).unwrap_or(u64::MAX));
            assert_eq!(registered.grace_period_ms, granted, "the granted grace");
            assert_eq!(fx.registry.connected().hosts, 2, "the host is registered");
            // The request stream has ended: the host leaves, at once or
            // once its grace period is over.
            crate::exec::settle().await;
            drop(stream);
            crate::exec::settle().await;
            if granted > 0 {
                assert_eq!(
                    fx.registry.connected().hosts,
                    2,
                    "a host with a grace period left with its stream"
                );
                tokio::time::sleep(Duration::from_millis(granted)).await;
                crate::exec::settle().await;
            }
            assert_eq!(
                fx.registry.connected().hosts,
                1,
                "the host left with its stream (after a grace period of {granted} ms)"
            );
        }
        (want, got) => panic!(
            "Hello: expected {want:?}, got {:?}",
            got.map(|_| "a registered host")
        ),
    }
}

/// Checks that the fixture's host is as it was: registered, on its first
/// connection, its Data-stream token valid.
fn fixture_host_kept(fx: &Fixture, what: &str) {
    assert_eq!(
        fx.host.connection().0,
        1,
        "{what} replaced the fixture's host"
    );
    assert!(
        fx.host.is_connected(),
        "{what} disconnected the fixture's host"
    );
    assert!(
        fx.registry
            .data_session(fx.host.id(), &fx.host_token, fx.b.id())
            .is_ok(),
        "{what} took the fixture's host its token or session"
    );
}

/// A DataOpen of the fixture's host for `session_id`, with its own
/// credentials, encoded.
fn own_open(fx: &Fixture, session_id: &str, input_applied: u64) -> Vec<u8> {
    HostDataRequest {
        message: Some(host_data_request::Message::Open(DataOpen {
            host_id: fx.host.id().to_owned(),
            host_token: fx.host_token.clone(),
            session_id: session_id.to_owned(),
            input_applied,
        })),
    }
    .encode_to_vec()
}

/// Checks that the first message of a Data stream, if the stream sent
/// any, is the session's end offset as an output_ack.
fn check_first_ack(first: Option<&Result<HostDataResponse, Status>>, end: u64, what: &str) {
    if let Some(Ok(first)) = first {
        assert_eq!(
            first.message,
            Some(host_data_response::Message::OutputAck(end)),
            "{what}: the first message of a Data stream"
        );
    }
}

async fn host_data(data: &[u8], message: HostDataRequest, mode: Mode) {
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
            // With the host's own credentials, the session ID decides: a
            // running session takes the stream, whether or not another
            // stream serves it (a has one: it is replaced).
            let want = if open.session_id == fx.a.id() || open.session_id == fx.b.id() {
                None
            } else if SessionId::new(open.session_id.as_str()).is_err() {
                Some(Code::InvalidArgument)
            } else {
                Some(Code::NotFound)
            };
            let opened = own_open(&fx, &open.session_id, open.input_applied);
            let result = api.data(Request::new(streaming(&[&opened]))).await;
            match (want, result) {
                (Some(code), Err(status)) => check_status(&status, code, &fields, "DataOpen"),
                (None, Ok(response)) => {
                    let first = response.into_inner().next().await;
                    check_first_ack(first.as_ref(), 0, "DataOpen");
                }
                (want, got) => panic!("DataOpen: expected {want:?}, got {:?}", got.err()),
            }
            // While another Data stream of b's host still serves b.
            data_open_while_served(open, 0, mode).await;
            data_open_while_served(open, 60_000, mode).await;
        }
        _ => {
            let status = result
                .err()
                .expect("a first Data message other than DataOpen");
            check_status(&status, Code::InvalidArgument, &[], "Data without DataOpen");
        }
    }
    // As the second message, after the host's own DataOpen of session b:
    // by a host without a grace period, and by one with.
    second_data_message(data, &message, 0).await;
    second_data_message(data, &message, 60_000).await;
}

/// A DataOpen of session b, with `open`'s input count, while another
/// Data stream of its host (whose Hello asked for `grace_period_ms`)
/// still serves b: a host that may resume gets the new stream, which
/// replaces the old; one that may not is refused, as before host resume,
/// or gets the new stream. Either way b goes on.
async fn data_open_while_served(open: &DataOpen, grace_period_ms: u64, mode: Mode) {
    let fx = Fixture::with_grace_period_ms(grace_period_ms).await;
    let api = HostApi::new(fx.registry.clone());
    let (_first_open, first) = live_streaming(&[&own_open(&fx, fx.b.id(), 0)]);
    let mut first = api
        .data(Request::new(first))
        .await
        .expect("the host's own DataOpen")
        .into_inner();
    check_first_ack(first.next().await.as_ref(), 0, "the first Data stream");
    let (_second_open, second) = live_streaming(&[&own_open(&fx, fx.b.id(), open.input_applied)]);
    let result = api.data(Request::new(second)).await;
    let accepted = result.is_ok();
    if let Err(status) = &result {
        check_status(status, Code::FailedPrecondition, &[], "a second DataOpen");
    }
    // Kept until the end: a response stream dropped ends its Data stream.
    let mut second = result.ok().map(tonic::Response::into_inner);
    let second_first = match second.as_mut() {
        Some(stream) => stream.next().await,
        None => None,
    };
    crate::exec::settle().await;
    let what = format!("a second DataOpen (grace {grace_period_ms} ms, accepted: {accepted})");
    if grace_period_ms == 0 && accepted && mode == Mode::FollowKnownBugs && fx.b.has_ended() {
        // Known bug 1 (see `Mode`): the replaced stream ended b.
        check_first_ack(second_first.as_ref(), 0, &what);
        let exit = read_to_exit(&fx);
        assert_eq!(
            exit.message, "the host closed the session without an exit status",
            "{what}"
        );
        return;
    }
    assert!(!fx.b.has_ended(), "{what} ended the session");
    assert!(
        fx.b.host_stream().0,
        "{what}: no Data stream serves the session"
    );
    if accepted {
        check_first_ack(second_first.as_ref(), fx.b.end_offset(), &what);
        // The replaced stream ends.
        let old = tokio::time::timeout(STREAM_WINDOW, first.next()).await;
        assert!(
            matches!(old, Ok(None | Some(Err(_)))),
            "{what}: the replaced stream goes on: {old:?}"
        );
    } else {
        assert!(
            grace_period_ms == 0,
            "a host with a grace period could not replace its stream"
        );
    }
}

/// What b's guest reads until the Exit of an ended session b.
fn read_to_exit(fx: &Fixture) -> rendezvous_proto::ExitStatus {
    let mut cursor = 0u64;
    let id = fx.b_guest.handle.id();
    let attachment = fx.b_guest.handle.attachment();
    loop {
        match fx.b.read_attached(id, attachment, cursor) {
            Read::Output { offset, data } => cursor = offset + data.len() as u64,
            Read::Exit(status) => return status,
            other => panic!("b's guest read {other:?} from an ended session"),
        }
    }
}

/// `data` (decoded: `message`) as the second message of a Data stream of
/// session b, whose host asked for a grace period of `grace_period_ms`;
/// then the stream ends.
async fn second_data_message(data: &[u8], message: &HostDataRequest, grace_period_ms: u64) {
    let fx = Fixture::with_grace_period_ms(grace_period_ms).await;
    let api = HostApi::new(fx.registry.clone());
    let opened = own_open(&fx, fx.b.id(), 0);
    let mut stream = api
        .data(Request::new(streaming(&[&opened, data])))
        .await
        .expect("the host's own DataOpen")
        .into_inner();
    let mut items = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(STREAM_WINDOW, stream.next()).await {
        items.push(item);
    }
    check_first_ack(items.first(), 0, "DataOpen of b");
    let last = items.pop();
    // A stream that ends without an exit status ends the session of a
    // host without a grace period, and leaves it to the next stream of
    // one with; an exit status or a refused message ends it either way.
    let ends = grace_period_ms == 0
        || matches!(
            message.message,
            Some(host_data_request::Message::Exit(_) | host_data_request::Message::Open(_))
        );
    assert_eq!(
        fx.b.has_ended(),
        ends,
        "a Data stream that ended (grace {grace_period_ms} ms): has b ended?"
    );
    assert!(
        ends || !fx.b.host_stream().0,
        "a Data stream that ended still serves b"
    );
    // What b's guest reads, to the end or to what there is.
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
            Read::Exit(status) => break Some(status),
            Read::Nothing if !ends => break None,
            other => panic!("b's guest read {other:?} (grace {grace_period_ms} ms)"),
        }
    };
    let closed = "the host closed the session without an exit status";
    match &message.message {
        Some(host_data_request::Message::Output(data)) => {
            // Output the host sent just before it closed its stream
            // without an Exit may be dropped (the next stream sends it
            // again); if it arrives, it is exact.
            assert!(
                output.is_empty() || output == data[..],
                "b's guest read other bytes than the host sent"
            );
            assert_eq!(exit.map(|e| e.message), ends.then(|| closed.to_owned()));
        }
        Some(host_data_request::Message::Exit(status)) => {
            assert!(output.is_empty());
            assert_eq!(
                exit.as_ref(),
                Some(status),
                "the session ended with another status"
            );
        }
        Some(host_data_request::Message::Open(_)) => {
            let exit = exit.expect("a second DataOpen ends the session");
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
            assert_eq!(exit.map(|e| e.message), ends.then(|| closed.to_owned()));
        }
    }
    if ends {
        return;
    }
    // The session waits for its host's next Data stream, which starts at
    // the session's end.
    let reopened = own_open(&fx, fx.b.id(), 0);
    let mut next = api
        .data(Request::new(streaming(&[&reopened])))
        .await
        .expect("a Data stream for a session that waits for one")
        .into_inner();
    let first = next.next().await;
    check_first_ack(first.as_ref(), fx.b.end_offset(), "a second Data stream");
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
