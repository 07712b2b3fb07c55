//! End-to-end tests of the walking skeleton: a real server, real hosts
//! running bash in PTYs, guests over gRPC (bidi Terminal, and Attach with
//! unary SendInput as browsers use it).

use futures::StreamExt;
use rendezvous_proto::{
    ListSessionsRequest, SendInputRequest, exit_status::Status as Exit, guest_event::Event,
};
use rendezvous_testkit::{TermGuest, TestHost, TestServer, Transcript};
use tonic::Code;

#[tokio::test]
async fn native_guest_echo_round_trip_on_a_new_shell() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "echo-task").await;
    let mut guest = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    assert!(!guest.attached.session_id.is_empty());
    guest.type_text("echo $((6*7))-round-trip\n").await;
    guest.events.until("42-round-trip").await;
}

#[tokio::test]
async fn two_guests_share_one_session() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "shared").await;
    let mut first = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    let session_id = first.attached.session_id.clone();

    // The second guest joins as a browser does: Attach + unary SendInput.
    let mut client = server.guest_client().await;
    let stream = client
        .attach(host.attach_request(&session_id))
        .await
        .unwrap()
        .into_inner();
    let mut second = Transcript::new(stream);
    let Some(Event::Attached(attached)) = second.next().await else {
        panic!("expected Attached");
    };
    assert_eq!(attached.session_id, session_id);

    first.type_text("echo from-first-$((1+2))\n").await;
    first.events.until("from-first-3").await;
    second.until("from-first-3").await;

    for (seq, chunk) in ["echo from-", "second-$((2+3))\n"].iter().enumerate() {
        client
            .send_input(SendInputRequest {
                guest_id: attached.guest_id.clone(),
                guest_token: attached.guest_token.clone(),
                seq: seq as u64,
                data: chunk.as_bytes().to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    second.until("from-second-5").await;
    first.events.until("from-second-5").await;
}

#[tokio::test]
async fn late_joiner_receives_retained_output() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "late").await;
    let mut first = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    first.type_text("echo early-$((2+2))\n").await;
    first.events.until("early-4").await;

    let mut late = TermGuest::open(&server, host.attach_request(&first.attached.session_id))
        .await
        .unwrap();
    // Nothing new is typed: the late joiner sees the earlier output, from
    // offset 0.
    late.events.until("early-4").await;
    assert!(late.events.output.starts_with(&first.events.output[..16]));
}

#[tokio::test]
async fn wrong_secret_and_unknown_task_are_denied_alike() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "guarded").await;

    let mut wrong_secret = host.attach_request("");
    wrong_secret.secret = "x".repeat(host.secret.len());
    let mut unknown_task = host.attach_request("");
    unknown_task.task_id = "no-such-task".into();

    let a = TermGuest::open(&server, wrong_secret)
        .await
        .err()
        .expect("denied");
    let b = TermGuest::open(&server, unknown_task)
        .await
        .err()
        .expect("denied");
    assert_eq!(a.code(), Code::PermissionDenied);
    assert_eq!(b.code(), Code::PermissionDenied);
    assert_eq!(a.message(), b.message());
    assert!(!a.message().contains(&host.secret));

    let mut client = server.guest_client().await;
    let c = client
        .list_sessions(ListSessionsRequest {
            task_id: "no-such-task".into(),
            secret: host.secret.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(c.code(), Code::PermissionDenied);
    assert_eq!(c.message(), a.message());
}

#[tokio::test]
async fn guests_get_the_exit_status_and_the_stream_ends() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "exit").await;
    let mut first = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    let mut second = TermGuest::open(&server, host.attach_request(&first.attached.session_id))
        .await
        .unwrap();
    first.type_text("exit 7\n").await;
    for guest in [&mut first, &mut second] {
        let status = guest.events.until_exit().await;
        assert_eq!(status.status, Some(Exit::Code(7)));
    }
    // The ended session is gone from the listing.
    let hosts = host.list_hosts(&server).await;
    assert_eq!(hosts.len(), 1);
    assert!(hosts[0].sessions.is_empty());
}

#[tokio::test]
async fn a_command_that_exits_by_itself_reports_its_status() {
    let server = TestServer::start().await;
    let command = ["sh", "-c", "echo bye-now; exit 3"]
        .map(String::from)
        .to_vec();
    let host = TestHost::with_command(&server, "short", command).await;
    let mut guest = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    let status = guest.events.until_exit().await;
    assert_eq!(status.status, Some(Exit::Code(3)));
    assert!(guest.events.text().contains("bye-now"));
}

#[tokio::test]
async fn each_new_shell_gets_its_own_pty() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "two-shells").await;
    let mut a = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    let mut b = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    assert_ne!(a.attached.session_id, b.attached.session_id);
    let mut ttys = Vec::new();
    for guest in [&mut a, &mut b] {
        guest.type_text("echo \"tty=$(tty)=\"\n").await;
        let text = guest.events.until("=\r\n").await;
        let tty = text
            .split("tty=")
            .filter_map(|rest| rest.split('=').next())
            .find(|t| t.starts_with("/dev/"))
            .unwrap_or_else(|| panic!("no tty in {text:?}"))
            .to_owned();
        ttys.push(tty);
    }
    assert_ne!(ttys[0], ttys[1]);

    let hosts = host.list_hosts(&server).await;
    assert_eq!(hosts[0].host_name, "default");
    assert_eq!(hosts[0].sessions.len(), 2);
    assert!(hosts[0].sessions.iter().all(|s| s.guest_count == 1));
}

#[tokio::test]
async fn a_short_host_secret_is_invalid_argument() {
    use rendezvous_proto::host_service_client::HostServiceClient;
    use rendezvous_proto::{Hello, HostControlRequest, host_control_request};

    let server = TestServer::start().await;
    let mut client = HostServiceClient::new(server.channel().await);
    let short = "x".repeat(21);
    let hello = HostControlRequest {
        message: Some(host_control_request::Message::Hello(Hello {
            task_id: "short-secret".into(),
            secret: short.clone(),
            ..Default::default()
        })),
    };
    let err = client
        .control(futures::stream::iter([hello]).chain(futures::stream::pending()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("at least 22 characters"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains(&short));
}

/// Lists the task's hosts with `secret`.
async fn list(
    server: &TestServer,
    task_id: &str,
    secret: &str,
) -> Result<Vec<rendezvous_proto::HostInfo>, tonic::Status> {
    let mut client = server.guest_client().await;
    let reply = client
        .list_sessions(ListSessionsRequest {
            task_id: task_id.into(),
            secret: secret.into(),
            ..Default::default()
        })
        .await?;
    Ok(reply.into_inner().hosts)
}

/// A task outlives its last host for a while: its guests hear "no host"
/// (and can wait for one) rather than "unknown task", and the host that
/// comes back, with the same secret or new ones, takes it again.
#[tokio::test]
async fn a_task_whose_host_left_waits_for_one() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "host-restarts").await;
    let secret = host.secret.clone();
    assert_eq!(
        list(&server, "host-restarts", &secret).await.unwrap().len(),
        1
    );
    drop(host);

    let deadline = tokio::time::Instant::now() + rendezvous_testkit::DEADLINE;
    loop {
        let hosts = list(&server, "host-restarts", &secret)
            .await
            .expect("the task is still known to its guests");
        if hosts.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the host never left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Still nothing for a wrong secret: the same denial as an unknown task.
    let wrong = list(&server, "host-restarts", &"x".repeat(secret.len()))
        .await
        .unwrap_err();
    let unknown = list(&server, "never-had-a-host", &secret)
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    assert_eq!(wrong.message(), unknown.message());
    // Attaching meanwhile says there is no host.
    let mut request = rendezvous_proto::AttachRequest {
        task_id: "host-restarts".into(),
        secret: secret.clone(),
        ..Default::default()
    };
    let none = TermGuest::open(&server, request.clone())
        .await
        .err()
        .expect("no host");
    assert_eq!(none.code(), Code::NotFound);
    assert!(none.message().contains("no host is connected"), "{none:?}");

    // The job restarts its host with a newly generated secret: it takes the
    // task over, and the old secret no longer works.
    let restarted = TestHost::start(&server, "host-restarts").await;
    assert_ne!(restarted.secret, secret);
    assert_eq!(
        list(&server, "host-restarts", &restarted.secret)
            .await
            .unwrap()
            .len(),
        1
    );
    let old = list(&server, "host-restarts", &secret).await.unwrap_err();
    assert_eq!(old.code(), Code::PermissionDenied);
    request.secret = restarted.secret.clone();
    let mut guest = TermGuest::open(&server, request).await.expect("attached");
    guest.type_text("echo back-$((1+1))\r").await;
    guest.events.until("back-2").await;
}
