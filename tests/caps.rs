//! Server-wide caps: hosts, hosts per client IP, sessions, the retained
//! output all sessions reserve, and guests. Each gives RESOURCE_EXHAUSTED
//! naming it, and what already runs goes on.

use rendezvous_host::{Host, HostStatus};
use rendezvous_server::session::RelayConfig;
use rendezvous_server::{Limits, ServerConfig};
use rendezvous_testkit::{DEADLINE, TermGuest, TestHost, TestServer};
use tonic::Code;

async fn server(limits: Limits, relay: RelayConfig) -> TestServer {
    TestServer::with_config(ServerConfig {
        limits,
        relay,
        ..ServerConfig::default()
    })
    .await
}

/// A host that the server refuses at a limit: its status says so as it
/// retries (RESOURCE_EXHAUSTED is worth retrying).
async fn refused_host(server: &TestServer, task: &str, fragment: &str) {
    let host = Host::builder(&server.url).task_id(task).build().unwrap();
    let mut status = host.status();
    let run = tokio::spawn(host.run(std::future::pending()));
    let said = tokio::time::timeout(
        DEADLINE,
        status.wait_for(
            |s| matches!(s, HostStatus::Reconnecting { reason, .. } if reason.contains(fragment)),
        ),
    )
    .await;
    run.abort();
    assert!(matches!(said, Ok(Ok(_))), "no refusal naming {fragment:?}");
}

#[tokio::test]
async fn hosts_are_capped_server_wide_and_per_ip() {
    let server = server(
        Limits {
            hosts: 2,
            ..Limits::default()
        },
        RelayConfig::default(),
    )
    .await;
    let first = TestHost::start(&server, "cap-a").await;
    let _second = TestHost::start(&server, "cap-b").await;
    refused_host(&server, "cap-c", "limit reached: hosts is 2").await;
    // The others go on.
    let mut guest = TermGuest::open(&server, first.attach_request(""))
        .await
        .unwrap();
    guest.type_text("echo on-$((2+2))\n").await;
    guest.events.until("on-4").await;

    let per_ip = server_with_hosts_per_ip().await;
    let _one = TestHost::start(&per_ip, "ip-a").await;
    refused_host(&per_ip, "ip-b", "limit reached: hosts per client IP is 1").await;
}

async fn server_with_hosts_per_ip() -> TestServer {
    server(
        Limits {
            hosts_per_ip: 1,
            ..Limits::default()
        },
        RelayConfig::default(),
    )
    .await
}

#[tokio::test]
async fn sessions_and_their_retained_output_are_capped() {
    let capped = server(
        Limits {
            sessions: 2,
            ..Limits::default()
        },
        RelayConfig::default(),
    )
    .await;
    let host = TestHost::start(&capped, "cap-sessions").await;
    let _a = TermGuest::open(&capped, host.attach_request(""))
        .await
        .unwrap();
    let _b = TermGuest::open(&capped, host.attach_request(""))
        .await
        .unwrap();
    let refused = TermGuest::open(&capped, host.attach_request(""))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("sessions is 2"), "{refused:?}");

    // 3 MiB for sessions that keep 1 MiB each: the fourth is refused.
    let retained = server(
        Limits {
            retained_output_bytes: 3 * 1024 * 1024,
            ..Limits::default()
        },
        RelayConfig::default(),
    )
    .await;
    let host = TestHost::start(&retained, "cap-retained").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            TermGuest::open(&retained, host.attach_request(""))
                .await
                .unwrap(),
        );
    }
    let refused = TermGuest::open(&retained, host.attach_request(""))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .contains("retained output bytes is 3145728"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn guests_are_capped_server_wide() {
    let server = server(
        Limits {
            guests: 2,
            ..Limits::default()
        },
        RelayConfig::default(),
    )
    .await;
    let host = TestHost::start(&server, "cap-guests").await;
    let a = TermGuest::open(&server, host.attach_request(""))
        .await
        .unwrap();
    let _b = TermGuest::open(&server, host.attach_request(&a.attached.session_id))
        .await
        .unwrap();
    let refused = TermGuest::open(&server, host.attach_request(&a.attached.session_id))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("guests is 2"), "{refused:?}");
}
