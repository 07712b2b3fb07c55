//! gRPC-Web, the browsers' protocol, from a real client (tonic-web's client
//! layer over hyper, built in the test kit) on the server's one port: over
//! HTTP/1.1, as browsers speak it to a cleartext server, and over HTTP/2, as
//! they do behind TLS.

use rendezvous_proto::guest_event::Event;
use rendezvous_proto::{ListSessionsRequest, SendInputRequest};
use rendezvous_testkit::{TestHost, TestServer, Transcript, Transport};

async fn shell_round_trip(server: &TestServer, host: &TestHost, transport: Transport) {
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
    client
        .send_input(SendInputRequest {
            guest_id: attached.guest_id.clone(),
            guest_token: attached.guest_token.clone(),
            seq: 0,
            data: b"echo web-$((7*6))\n".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    events.until("web-42").await;

    let hosts = client
        .list_sessions(ListSessionsRequest {
            task_id: host.task_id.clone(),
            secret: host.secret.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert!(
        hosts[0]
            .sessions
            .iter()
            .any(|s| s.session_id == attached.session_id)
    );
}

#[tokio::test]
async fn grpc_web_over_http1_streams_a_shell() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "web1").await;
    shell_round_trip(&server, &host, Transport::GrpcWebHttp1).await;
}

#[tokio::test]
async fn grpc_web_over_http2_streams_a_shell() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "web2").await;
    shell_round_trip(&server, &host, Transport::GrpcWebHttp2).await;
}
