//! Connections cannot be held for free: a slowloris request, an idle
//! socket, an HTTP/2 client that never asks anything and a keep-alive
//! connection left open are all closed in time; one client IP holds at most
//! its share of connections and streams. A host's and a guest's long-lived
//! streams keep their connections.

use std::time::{Duration, Instant};

use rendezvous_proto::ListSessionsRequest;
use rendezvous_server::connection::ConnectionTimeouts;
use rendezvous_server::{Limits, ServerConfig};
use rendezvous_testkit::{DEADLINE, TermGuest, TestHost, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

fn timeouts(header_read_ms: u64, first_request_ms: u64, idle_ms: u64) -> ConnectionTimeouts {
    ConnectionTimeouts {
        header_read: Duration::from_millis(header_read_ms),
        first_request: Duration::from_millis(first_request_ms),
        idle: Duration::from_millis(idle_ms),
    }
}

async fn server(connection_timeouts: ConnectionTimeouts, limits: Limits) -> TestServer {
    TestServer::with_config(ServerConfig {
        connection_timeouts,
        limits,
        ..ServerConfig::default()
    })
    .await
}

/// Reads until the server closes `stream`; returns what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_slowloris_request_is_closed_after_the_header_timeout() {
    let server = server(timeouts(1_000, 10_000, 60_000), Limits::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    // One header byte every 100 ms, never finishing: the client's side of
    // the attack, not a wait for the server.
    let trickle = async {
        for byte in b"X-Slow: ".iter().cycle() {
            if stream.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(DEADLINE, trickle)
        .await
        .expect("the server closes the connection");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "held for {elapsed:?}");
    let answer = String::from_utf8_lossy(&until_closed(&mut stream).await).into_owned();
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test]
async fn an_idle_socket_and_a_silent_http2_client_are_closed() {
    let server = server(timeouts(10_000, 1_000, 60_000), Limits::default()).await;
    // Says nothing at all.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Sends the HTTP/2 preface and SETTINGS, then no request.
    let mut preface = TcpStream::connect(server.addr).await.unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = Instant::now();
    tokio::time::timeout(DEADLINE, until_closed(&mut silent))
        .await
        .expect("the idle socket is closed");
    tokio::time::timeout(DEADLINE, until_closed(&mut preface))
        .await
        .expect("the silent HTTP/2 client is closed");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed too early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "held for {elapsed:?}");
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_after_its_last_request() {
    let server = server(timeouts(10_000, 10_000, 1_000), Limits::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    let answered = Instant::now();
    tokio::time::timeout(DEADLINE, until_closed(&mut stream))
        .await
        .expect("the idle keep-alive connection is closed");
    let elapsed = answered.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn long_lived_streams_keep_their_connections() {
    let server = server(timeouts(300, 300, 300), Limits::default()).await;
    let host = TestHost::start(&server, "conn-keep").await;
    let mut guest = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    let connected_at = host.list_hosts(&server).await[0].connected_at_unix_ms;
    // Several idle timeouts pass with nothing typed.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    guest.type_text("echo still-$((40+2))\n").await;
    guest.events.until("still-42").await;
    let hosts = host.list_hosts(&server).await;
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        hosts[0].connected_at_unix_ms, connected_at,
        "the host reconnected"
    );
}

#[tokio::test]
async fn one_ip_holds_at_most_its_share_of_connections() {
    let limits = Limits {
        connections_per_ip: 3,
        ..Limits::default()
    };
    let server = server(timeouts(10_000, 30_000, 60_000), limits).await;
    let held: Vec<TcpStream> =
        futures::future::join_all((0..3).map(|_| TcpStream::connect(server.addr)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let mut fourth = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(DEADLINE, until_closed(&mut fourth))
        .await
        .expect("the fourth connection is closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    let refusals = |limit| {
        let text = server.metrics_text();
        rendezvous_testkit::metrics::value(
            &text,
            &format!("rendezvous_limit_refusals_total{{limit=\"{limit}\"}}"),
        )
    };
    assert_eq!(refusals("connections per client IP"), 1.0);
    assert_eq!(refusals("connections"), 0.0);
    drop(held);
    // Once they are gone, the IP connects again.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        if String::from_utf8_lossy(&until_closed(&mut stream).await).contains("200 OK") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_ip_holds_at_most_its_share_of_streams() {
    let limits = Limits {
        streams_per_ip: 3,
        ..Limits::default()
    };
    let server = server(ConnectionTimeouts::default(), limits).await;
    let host = TestHost::start(&server, "conn-streams").await;
    // The host's Control stream, a guest's Attach and the session's Data
    // stream: three, all from loopback.
    let mut guest = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    guest.type_text("echo open-$((1+2))\n").await;
    guest.events.until("open-3").await;
    let refused = server
        .guest_client()
        .await
        .list_sessions(ListSessionsRequest {
            task_id: host.task_id.clone(),
            secret: host.secret.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("streams per client IP is 3"),
        "{refused:?}"
    );
    let text = server.metrics_text();
    assert_eq!(
        rendezvous_testkit::metrics::value(
            &text,
            "rendezvous_limit_refusals_total{limit=\"streams per client IP\"}"
        ),
        1.0
    );
}
