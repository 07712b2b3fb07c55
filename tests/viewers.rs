//! Viewers never stall the job: a read-only guest that never acknowledges,
//! and a page that stopped acknowledging (a stalled tab), leave the shell
//! running. Both guests speak gRPC-Web with an acknowledged window, as the
//! browser does; the host is real, on a PTY.

use std::time::Duration;

use rendezvous_proto::{AttachRequest, SendInputRequest, guest_event};
use rendezvous_server::ServerConfig;
use rendezvous_server::session::RelayConfig;
use rendezvous_testkit::{DEADLINE, TestHost, TestServer, Transcript, Transport};

/// Bytes the shell prints: well past the retained output and every window.
const FLOOD: u64 = 4_000_000;

fn flood() -> String {
    format!("head -c {FLOOD} /dev/zero | tr '\\0' y; echo END\"-\"OF-FLOOD\n")
}

/// The session's output offset, as ListSessions reports it.
async fn output_offset(server: &TestServer, host: &TestHost) -> u64 {
    let hosts = host.list_hosts(server).await;
    hosts
        .first()
        .and_then(|h| h.sessions.first())
        .map_or(0, |s| s.output_offset)
}

/// Waits until the session has written the whole flood.
async fn until_flood_done(server: &TestServer, host: &TestHost) {
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    loop {
        let offset = output_offset(server, host).await;
        if offset > FLOOD {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shell was held back: {offset} of {FLOOD} bytes written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A page-like guest: gRPC-Web, a 64 KiB acknowledged window.
fn page(host: &TestHost, session_id: &str, secret: &str) -> AttachRequest {
    AttachRequest {
        window_bytes: 64 * 1024,
        secret: secret.to_owned(),
        ..host.attach_request(session_id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_guest_that_never_acks_leaves_the_shell_running() {
    let server = TestServer::start().await;
    let read_only_secret = "viewers-read-only-secret-0123456789";
    let host = TestHost::from_host(
        rendezvous_host::Host::builder(&server.url)
            .task_id("viewers-ro")
            .read_only_secret(read_only_secret)
            .command("bash", ["--norc", "--noprofile"])
            .build()
            .unwrap(),
    )
    .await;
    let mut writer = server.guest_client_over(Transport::GrpcWebHttp1).await;
    let mut writer_events = Transcript::new(
        writer
            .attach(host.attach_request(""))
            .await
            .unwrap()
            .into_inner(),
    );
    let Some(guest_event::Event::Attached(attached)) = writer_events.next().await else {
        panic!("expected Attached first");
    };
    let mut viewer = server.guest_client_over(Transport::GrpcWebHttp1).await;
    let mut viewer_events = Transcript::new(
        viewer
            .attach(page(&host, &attached.session_id, read_only_secret))
            .await
            .unwrap()
            .into_inner(),
    );
    let Some(guest_event::Event::Attached(viewer_attached)) = viewer_events.next().await else {
        panic!("expected Attached first");
    };
    assert_eq!(viewer_attached.role(), rendezvous_proto::Role::ReadOnly);
    writer
        .send_input(SendInputRequest {
            guest_id: attached.guest_id.clone(),
            guest_token: attached.guest_token.clone(),
            seq: 0,
            data: flood().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The writer leaves: only the viewer, who never acknowledges, remains.
    drop(writer_events);
    until_flood_done(&server, &host).await;
    // The viewer is told it lagged when it reads on.
    viewer
        .ack(rendezvous_proto::AckRequest {
            guest_id: viewer_attached.guest_id.clone(),
            guest_token: viewer_attached.guest_token.clone(),
            offset: u64::MAX,
            messages: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while viewer_events.lagged == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no Lagged in time");
        tokio::time::timeout(DEADLINE, viewer_events.next())
            .await
            .expect("an event in time")
            .expect("the viewer's stream goes on");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_page_stops_holding_the_shell_back() {
    let server = TestServer::with_config(ServerConfig {
        relay: RelayConfig {
            stalled_guest_timeout: Duration::from_millis(1_000),
            ..RelayConfig::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let host = TestHost::start(&server, "viewers-stalled").await;
    let secret = host.secret.clone();
    let mut client = server.guest_client_over(Transport::GrpcWebHttp1).await;
    let mut events = Transcript::new(
        client
            .attach(page(&host, "", &secret))
            .await
            .unwrap()
            .into_inner(),
    );
    let Some(guest_event::Event::Attached(attached)) = events.next().await else {
        panic!("expected Attached first");
    };
    let started = std::time::Instant::now();
    client
        .send_input(SendInputRequest {
            guest_id: attached.guest_id.clone(),
            guest_token: attached.guest_token.clone(),
            seq: 0,
            data: flood().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The page never acknowledges: the shell is held for the stall
    // timeout, then goes on to the end.
    until_flood_done(&server, &host).await;
    assert!(started.elapsed() >= Duration::from_millis(1_000));
}
