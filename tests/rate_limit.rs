//! Guessing is not free: failed authentications are rate-limited per
//! client IP and per task. Past the burst, even the right credential gets
//! RESOURCE_EXHAUSTED until a failure is forgiven; the trip is counted in
//! the metrics, and other tasks and clients are not affected.

use std::time::Duration;

use rendezvous_host::{Host, HostError};
use rendezvous_proto::ListSessionsRequest;
use rendezvous_server::ServerConfig;
use rendezvous_server::auth_limit::{FailureQuota, FailureQuotas};
use rendezvous_testkit::{DEADLINE, TestHost, TestServer, host_token_file};
use tonic::Code;

fn quota(burst: u32, refill_ms: u64) -> FailureQuota {
    FailureQuota {
        burst,
        refill: Duration::from_millis(refill_ms),
    }
}

async fn server(quotas: FailureQuotas) -> TestServer {
    TestServer::with_config(ServerConfig {
        failure_quotas: quotas,
        ..ServerConfig::default()
    })
    .await
}

async fn list(server: &TestServer, task: &str, secret: &str) -> Result<usize, tonic::Status> {
    Ok(server
        .guest_client()
        .await
        .list_sessions(ListSessionsRequest {
            task_id: task.into(),
            secret: secret.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .hosts
        .len())
}

const WRONG: &str = "a-wrong-secret-0123456789";

#[tokio::test]
async fn a_guessing_ip_is_locked_out_then_recovers() {
    // Per task out of the way: every guess is on another task.
    let server = server(FailureQuotas {
        per_ip: quota(3, 1_000),
        per_task: quota(1_000, 1),
    })
    .await;
    let host = TestHost::start(&server, "rl-ip").await;
    for i in 0..3 {
        let status = list(&server, &format!("guess-{i}"), WRONG)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // The fourth failure spends the burst; from then on even the right
    // secret is refused, saying when to come back.
    let status = list(&server, "guess-3", WRONG).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = list(&server, "rl-ip", &host.secret).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("too many failed attempts; try again in"),
        "{status:?}"
    );
    assert!(!status.message().contains(&host.secret));
    // One lock, one trip in the metrics (however many attempts it refuses).
    assert_eq!(server.registry().metrics().rate_limit_trips.get(), 1);
    // Recovers once a failure is forgiven.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match list(&server, "rl-ip", &host.secret).await {
            Ok(hosts) => {
                assert_eq!(hosts, 1);
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "never unlocked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_guessed_task_is_locked_while_other_tasks_work() {
    let server = server(FailureQuotas {
        per_ip: quota(1_000, 1),
        per_task: quota(2, 60_000),
    })
    .await;
    let target = TestHost::start(&server, "rl-target").await;
    let other = TestHost::start(&server, "rl-other").await;
    for _ in 0..3 {
        let status = list(&server, "rl-target", WRONG).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let status = list(&server, "rl-target", &target.secret)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(list(&server, "rl-other", &other.secret).await.unwrap(), 1);
    // An existing session of the locked task goes on: only new attempts
    // are refused.
}

#[tokio::test]
async fn host_tokens_cannot_be_guessed_quickly_either() {
    let (_dir, tokens) = host_token_file("ci the-real-host-token-0123456789\n");
    let server = TestServer::with_config(ServerConfig {
        failure_quotas: FailureQuotas {
            per_ip: quota(2, 60_000),
            per_task: quota(1_000, 1),
        },
        host_admission: rendezvous_server::registry::HostAdmission::with_tokens(tokens),
        ..ServerConfig::default()
    })
    .await;
    let host = |token: &str| {
        Host::builder(&server.url)
            .task_id("rl-host")
            .host_token(token)
            .build()
            .unwrap()
    };
    let run = |h: Host| async move {
        tokio::time::timeout(DEADLINE, h.run(std::future::pending()))
            .await
            .expect("the host gives up in time")
            .unwrap_err()
    };
    for _ in 0..3 {
        assert!(matches!(
            run(host("a-guessed-host-token-012345")).await,
            HostError::NotAdmitted(_)
        ));
    }
    // Locked: the real token is not looked at either. The host hears
    // RESOURCE_EXHAUSTED, which it retries; stop it once it has said so.
    let real = host("the-real-host-token-0123456789");
    let mut status = real.status();
    let running = tokio::spawn(real.run(std::future::pending()));
    let said = tokio::time::timeout(
        DEADLINE,
        status.wait_for(|s| {
            matches!(s, rendezvous_host::HostStatus::Reconnecting { reason, .. }
                if reason.contains("too many failed attempts"))
        }),
    )
    .await;
    running.abort();
    assert!(
        matches!(said, Ok(Ok(_))),
        "the locked host was not told why"
    );
}
