//! Replicas relay guests to the replica that holds their host (issue 13,
//! step 2), as processes: three `rendezvous serve --redis-url` replicas on
//! one real Redis with shared key files, a host on A, and native guests on
//! B and C, over the Terminal call and over Attach with unary calls (the
//! browser's path). The `seq` stream arrives byte-exact at every guest;
//! roles, input exactly once (also for a unary call that reaches a third
//! replica), listings and guest tokens hold across the hop; a slow guest
//! on B does not slow a guest on A; the owner sees a relayed guest's own
//! IP, and no client can claim one; SIGTERM and kill -9 of A move the host
//! (through a round-robin load balancer) and every guest goes on
//! byte-exact.

use std::time::Duration;

use rendezvous_guest::{
    AttachOptions, AttachStream, Client, Event, GuestError, ResumingTerminal, Secret, TaskId,
};
use rendezvous_proto::guest_service_client::GuestServiceClient;
use rendezvous_proto::{AttachRequest, ListSessionsRequest, SendInputRequest, guest_event};
use rendezvous_testkit::proxy::FaultProxy;
use rendezvous_testkit::redis::RedisServer;
use rendezvous_testkit::replicas::{Balancer, ClusterFiles, Replica};
use rendezvous_testkit::seq_stream::{
    END, STREAM_COMMAND, Seen, StreamGuest, assert_exact, expected_stream, stream_in,
};
use rendezvous_testkit::{DEADLINE, TestHost, bash};
use tokio::time::Instant;
use tonic::Code;

const SECRET: &str = "relay-task-secret-Hw4Jk8Lm2";
const READ_ONLY_SECRET: &str = "relay-read-only-Qz7Xc3Vb9";
/// The guest token key every replica of the first test reads (HS256).
const TOKEN_KEY: &[u8] = b"relay-token-key-0123456789abcdef0123456789";
/// Bytes each session retains here (4 MiB): more than the stream, so that
/// a guest that resumes catches up from retained output.
const RETAINED: [&str; 2] = ["--retained-output-bytes", "4194304"];

async fn replica(redis: &RedisServer, files: &ClusterFiles) -> Replica {
    Replica::start(env!("CARGO_BIN_EXE_rendezvous"), redis, files, &RETAINED).await
}

/// A host of `task` on `url` running bash with a plain prompt, registered.
async fn host(url: &str, task: &str) -> TestHost {
    let command = bash();
    let host = rendezvous_host::Host::builder(url)
        .task_id(task)
        .secret(SECRET)
        .read_only_secret(READ_ONLY_SECRET)
        .command(&command[0], &command[1..])
        .env("PS1", "$ ")
        .env("HISTFILE", "/dev/null")
        .build()
        .unwrap();
    TestHost::from_host(host).await
}

fn options(task: &str, secret: &str, session: Option<&str>) -> AttachOptions {
    let mut options = AttachOptions::new(TaskId::new(task).unwrap(), Secret::new(secret).unwrap());
    options.session_id = session.map(str::to_owned);
    (options.cols, options.rows) = (100, 30);
    options
}

/// Reads `guest`'s events until its output contains `needle` (within
/// [`DEADLINE`]); all its output so far.
async fn attach_until(guest: &mut AttachStream, output: &mut Vec<u8>, needle: &str) {
    tokio::time::timeout(DEADLINE, async {
        while !String::from_utf8_lossy(output).contains(needle) {
            match guest.next_event().await.expect("events").expect("open") {
                Event::Output(o) => output.extend_from_slice(&o.data),
                Event::Exit(exit) => panic!("unexpected {exit:?}"),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in time"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_on_any_replica_reach_a_host_on_another_byte_exact() {
    const TASK: &str = "relay-every-replica";
    let redis = RedisServer::start().await;
    let files = ClusterFiles::new();
    // One guest token key on every replica, as their configuration.
    let token_key = files.cluster_key.with_file_name("token.key");
    std::fs::write(&token_key, TOKEN_KEY).unwrap();
    let token_key = token_key.display().to_string();
    let args = [RETAINED[0], RETAINED[1], "--token-key-file", &token_key];
    let bin = env!("CARGO_BIN_EXE_rendezvous");
    let a = Replica::start(bin, &redis, &files, &args).await;
    let b = Replica::start(bin, &redis, &files, &args).await;
    let c = Replica::start(bin, &redis, &files, &args).await;
    let _host = host(&a.url, TASK).await;

    // A new shell through B, shared through C.
    let mut through_b = StreamGuest::attach(&b.url, options(TASK, SECRET, None)).await;
    through_b.until("$ ").await;
    let session = through_b.session_id();
    let mut through_c = StreamGuest::attach(&c.url, options(TASK, SECRET, Some(&session))).await;
    assert_eq!(through_c.session_id(), session);
    // The browser's path through C: Attach, and unary SendInput and Ack.
    let c_client = Client::connect(&c.url).await.unwrap();
    let mut unary = c_client
        .attach(options(TASK, SECRET, Some(&session)))
        .await
        .expect("attach over Attach through C");
    let mut unary_output = Vec::new();
    // A read-only guest through C is refused input at the owner.
    let mut watcher = c_client
        .attach(options(TASK, READ_ONLY_SECRET, Some(&session)))
        .await
        .expect("a read-only guest attaches");
    let refused = watcher.send_input("echo no\r").await.unwrap_err();
    assert!(matches!(refused, GuestError::ReadOnly), "{refused:?}");

    // Input through C's unary path is applied once, and seen everywhere.
    unary.send_input("echo v$((6*7))v\r").await.unwrap();
    through_b.until("v42v\r\n").await;
    through_c.until("v42v\r\n").await;
    attach_until(&mut unary, &mut unary_output, "v42v\r\n").await;
    // A balancer that sends that guest's next call to B, which neither
    // holds the host nor relays the guest: B finds the host by the task and
    // host the call names, and A applies it once. Without them B cannot
    // know the guest.
    let attached = unary.attached().clone();
    let input = |seq: u64, text: &str, routed: bool| SendInputRequest {
        guest_id: attached.guest_id.clone(),
        guest_token: attached.guest_token.clone(),
        seq,
        data: text.as_bytes().to_vec().into(),
        task_id: if routed { TASK.into() } else { String::new() },
        host_name: if routed {
            attached.host_name.clone()
        } else {
            String::new()
        },
    };
    let mut via_b = GuestServiceClient::connect(b.url.clone()).await.unwrap();
    let unknown = via_b
        .send_input(input(1, "echo x$((6*7))x\r", false))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");
    via_b
        .send_input(input(1, "echo w$((6*7))w\r", true))
        .await
        .expect("routed through B by task and host");
    // The same seq again, through B: a duplicate, applied once.
    via_b
        .send_input(input(1, "echo w$((6*7))w\r", true))
        .await
        .expect("a repeated seq is ignored, not refused");
    attach_until(&mut unary, &mut unary_output, "w42w\r\n").await;

    through_b.type_text(STREAM_COMMAND).await;
    through_b.until(END).await;
    through_c.until(END).await;
    attach_until(&mut unary, &mut unary_output, END).await;
    assert_exact("guest through B", stream_in(&through_b.output));
    assert_exact("guest through C", stream_in(&through_c.output));
    assert_exact("Attach guest through C", stream_in(&unary_output));
    assert_eq!((through_b.lagged, through_c.lagged), (0, 0));
    for (who, output) in [("B", &through_b.output), ("C", &through_c.output)] {
        let text = String::from_utf8_lossy(output);
        assert_eq!(
            text.matches("v42v\r\n").count(),
            1,
            "input applied once ({who})"
        );
        assert_eq!(
            text.matches("w42w\r\n").count(),
            1,
            "routed input once ({who})"
        );
        assert!(!text.contains("x42x"), "unrouted input applied ({who})");
    }

    // Listings on every replica name A's host and its session.
    for url in [&a.url, &b.url, &c.url] {
        let hosts = Client::connect(url)
            .await
            .unwrap()
            .list_sessions(
                &TaskId::new(TASK).unwrap(),
                &Secret::new(READ_ONLY_SECRET).unwrap(),
            )
            .await
            .expect("listed");
        assert_eq!(hosts.len(), 1, "{url}: {hosts:?}");
        assert_eq!(hosts[0].sessions.len(), 1, "{url}: {hosts:?}");
        assert_eq!(hosts[0].sessions[0].session_id, session);
        assert_eq!(hosts[0].sessions[0].guest_count, 4, "{url}: {hosts:?}");
    }

    // A wrong secret is refused on every replica, and nothing is relayed
    // for it.
    for url in [&a.url, &b.url, &c.url] {
        let wrong = Client::connect(url)
            .await
            .unwrap()
            .terminal(options(TASK, "not-the-secret-Pp0Oo9Ii8", None))
            .await
            .unwrap_err();
        assert!(matches!(wrong, GuestError::Denied), "{url}: {wrong:?}");
    }
    // A request that claims to be relayed with a credential that is not
    // the cluster's is refused before anything.
    let mut forged = tonic::Request::new(AttachRequest {
        task_id: TASK.into(),
        secret: SECRET.into(),
        session_id: session.clone(),
        ..Default::default()
    });
    forged.metadata_mut().insert(
        rendezvous_server::cluster::CLUSTER_KEY_HEADER,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            .parse()
            .unwrap(),
    );
    let refused = GuestServiceClient::connect(a.url.clone())
        .await
        .unwrap()
        .attach(forged)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("cluster key"), "{refused:?}");
    let mut listing = tonic::Request::new(ListSessionsRequest {
        task_id: TASK.into(),
        secret: SECRET.into(),
        ..Default::default()
    });
    listing.metadata_mut().insert(
        rendezvous_server::cluster::CLUSTER_KEY_HEADER,
        "forged".parse().unwrap(),
    );
    let refused = GuestServiceClient::connect(b.url.clone())
        .await
        .unwrap()
        .list_sessions(listing)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // A guest token minted for the task (`rendezvous token`, as a CI
    // system would) joins the session on every replica.
    let minted = std::process::Command::new(bin)
        .args([
            "token",
            "--task-id",
            TASK,
            "--ttl-secs",
            "600",
            "--key-file",
        ])
        .arg(&token_key)
        .output()
        .expect("run rendezvous token");
    assert!(minted.status.success(), "{minted:?}");
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    for url in [&a.url, &b.url, &c.url] {
        let mut events = GuestServiceClient::connect(url.clone())
            .await
            .unwrap()
            .attach(AttachRequest {
                task_id: TASK.into(),
                token: token.clone(),
                session_id: session.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("{url}: {s:?}"))
            .into_inner();
        match events.message().await.unwrap().and_then(|e| e.event) {
            Some(guest_event::Event::Attached(attached)) => {
                assert_eq!(attached.session_id, session, "{url}");
            }
            other => panic!("{url}: expected Attached, got {other:?}"),
        }
    }

    // The session still answers every guest.
    through_b.answers("AFTER").await;
    through_c.until("AFTER-42\r\n").await;
    let printed = format!("{}{}", b.process.stdout(), b.process.stderr());
    assert!(!printed.contains(SECRET), "a secret was printed: {printed}");
}

/// A resuming guest through `url`, and what it saw up to its prompt.
async fn resuming(url: &str, task: &str, session: Option<&str>) -> (ResumingTerminal, Seen) {
    let client = Client::connect(url).await.unwrap();
    let mut terminal = tokio::time::timeout(
        DEADLINE,
        ResumingTerminal::attach(client, options(task, SECRET, session)),
    )
    .await
    .expect("attach in time")
    .expect("attach");
    let mut seen = Seen::default();
    if session.is_none() {
        seen.until(&mut terminal, "$ ").await;
    }
    (terminal, seen)
}

/// [`STREAM_COMMAND`]'s bytes in two halves, the second once `gate`
/// exists.
fn gated_stream_command(gate: &std::path::Path) -> String {
    let gate = gate.display();
    format!(
        "echo BEGIN-$((1+1)); seq 1 100000; until [ -e '{gate}' ]; do sleep 0.05; done; \
         seq 100001 200000; echo END-$((2+2))\r"
    )
}

/// How A leaves in [`a_replica_that_leaves_hands_on_its_host_and_guests`].
#[derive(Debug, Clone, Copy)]
enum Leaves {
    /// SIGTERM: it drains.
    Drains,
    /// kill -9.
    Dies,
}

/// A host on A (through the balancer), guests through B and C mid-stream
/// when A leaves: the host resumes on B or C, the guests resume through
/// the replicas they reached, and the stream is byte-exact at both, with
/// input after it applied once.
async fn a_replica_that_leaves_hands_on_its_host_and_guests(leaves: Leaves) {
    let task = format!("relay-{leaves:?}").to_lowercase();
    let redis = RedisServer::start().await;
    let files = ClusterFiles::new();
    let mut a = replica(&redis, &files).await;
    let b = replica(&redis, &files).await;
    let c = replica(&redis, &files).await;
    let balancer = Balancer::start(vec![a.addr, b.addr, c.addr]).await;
    // The balancer's first connection goes to A.
    let _host = host(&balancer.url(), &task).await;
    assert_eq!(balancer.accepted(), 1);

    let (mut via_b, mut seen_b) = resuming(&b.url, &task, None).await;
    let session = via_b.attached().session_id.clone();
    let (mut via_c, mut seen_c) = resuming(&c.url, &task, Some(&session)).await;
    // The stream's first half is printed while A holds the host; the
    // second half waits for a gate file that the test makes once A has
    // left, so that the break is mid-stream on any machine.
    let gate = std::env::temp_dir().join(format!("rendezvous-{task}-{}", std::process::id()));
    let _ = std::fs::remove_file(&gate);
    via_b.send_input(gated_stream_command(&gate)).await.unwrap();
    seen_b.until(&mut via_b, "\r\n100000\r\n").await;

    // A leaves mid-stream; the balancer stops sending it connections.
    balancer.remove(a.addr);
    match leaves {
        Leaves::Drains => a.process.terminate().await,
        Leaves::Dies => {
            a.process.child.start_kill().unwrap();
            a.process.child.wait().await.unwrap();
        }
    }
    std::fs::write(&gate, b"").unwrap();
    seen_b.until(&mut via_b, END).await;
    seen_c.until(&mut via_c, END).await;
    assert_exact("guest through B", stream_in(&seen_b.output));
    assert_exact("guest through C", stream_in(&seen_c.output));
    assert_eq!((seen_b.lagged, seen_c.lagged), (0, 0));
    assert!(seen_b.disconnects >= 1, "B's guest lost its relayed stream");
    assert!(seen_c.disconnects >= 1, "C's guest lost its relayed stream");
    for (resumed, lost) in seen_b.reconnects.iter().chain(&seen_c.reconnects) {
        assert!(resumed, "resumed as the same guest");
        assert_eq!(*lost, 0, "no input lost");
    }
    assert_eq!(via_b.attached().session_id, session);
    let _ = std::fs::remove_file(&gate);

    // The shell is the same one, and takes input once.
    via_c.send_input("echo w$((6*7))w\r").await.unwrap();
    seen_b.until(&mut via_b, "w42w\r\n").await;
    seen_c.until(&mut via_c, "w42w\r\n").await;
    let text = String::from_utf8_lossy(&seen_b.output);
    assert_eq!(text.matches("w42w\r\n").count(), 1, "input applied once");
    assert!(
        balancer.accepted() >= 2,
        "the host came back through the balancer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_hosts_replica_moves_it_and_every_guest_goes_on_byte_exact() {
    a_replica_that_leaves_hands_on_its_host_and_guests(Leaves::Drains).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_hosts_replica_moves_it_and_every_guest_goes_on_byte_exact() {
    a_replica_that_leaves_hands_on_its_host_and_guests(Leaves::Dies).await;
}

/// Backpressure across the hop: a guest on B behind a 128 KiB/s link (a
/// throttled proxy in front of B) gets the whole stream at its pace, and
/// does not slow a guest on A, the host's replica. B reads A's stream only
/// as fast as its guest takes it, so the slow guest is slow at A, where
/// the session's flow control sees it as it sees a slow direct guest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_guest_on_another_replica_does_not_slow_the_hosts_replica() {
    const TASK: &str = "relay-slow";
    const RATE: u64 = 128 * 1024;
    let redis = RedisServer::start().await;
    let files = ClusterFiles::new();
    let a = replica(&redis, &files).await;
    let b = replica(&redis, &files).await;
    let _host = host(&a.url, TASK).await;
    let proxy = FaultProxy::start(&b.url).await;

    let mut direct = StreamGuest::attach(&a.url, options(TASK, SECRET, None)).await;
    direct.until("$ ").await;
    let session = direct.session_id();
    let mut slow = StreamGuest::attach(proxy.url(), options(TASK, SECRET, Some(&session))).await;
    slow.until("$ ").await;
    proxy.downstream().throttle(RATE);

    direct.type_text(STREAM_COMMAND).await;
    let started = Instant::now();
    let direct = tokio::spawn(async move {
        direct.until(END).await;
        (direct, started.elapsed())
    });
    let slow = tokio::spawn(async move {
        slow.until_within(END, 2 * DEADLINE).await;
        (slow, started.elapsed())
    });
    let (direct, direct_took) = direct.await.unwrap();
    let slow_had = proxy.counts().downstream.delivered;
    let (slow, slow_took) = slow.await.unwrap();
    eprintln!("guest on A: {direct_took:?}; guest on B at 128 KiB/s: {slow_took:?}");

    assert_eq!((direct.lagged, slow.lagged), (0, 0));
    assert_exact("guest on A", stream_in(&direct.output));
    assert_exact("slow guest on B", stream_in(&slow.output));
    let least = Duration::from_secs_f64(expected_stream().len() as f64 / RATE as f64);
    assert!(slow_took >= least.mul_f64(0.9), "{slow_took:?}");
    // Paced by the slow guest, the direct one would end within one
    // backpressure window (256 KiB) of it.
    assert!(
        slow_had < expected_stream().len() as u64 * 2 / 3,
        "the slow guest had {slow_had} bytes when the guest on A was done \
         ({direct_took:?} against {slow_took:?})"
    );
}

/// The owner counts a relayed guest by the guest's own IP (its limits and
/// audit log per client IP), which only a replica may tell it: a client
/// that sends the link's IP header itself, without the cluster
/// credential, is still its own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_sees_a_relayed_guests_ip_and_no_client_can_claim_one() {
    const TASK: &str = "relay-client-ip";
    let redis = RedisServer::start().await;
    let files = ClusterFiles::new();
    let audit = files.cluster_key.with_file_name("audit-a.jsonl");
    let audit_arg = audit.display().to_string();
    let bin = env!("CARGO_BIN_EXE_rendezvous");
    let a = Replica::start(bin, &redis, &files, &["--audit-log", &audit_arg]).await;
    let b = replica(&redis, &files).await;
    let _host = host(&a.url, TASK).await;

    // From 127.0.0.2 through B, and from 127.0.0.3 straight to A with a
    // forged IP header.
    let from = |url: &str, ip: &str| {
        tonic::transport::Endpoint::from_shared(url.to_owned())
            .unwrap()
            .local_address(Some(ip.parse().unwrap()))
    };
    let attach = AttachRequest {
        task_id: TASK.into(),
        secret: SECRET.into(),
        ..Default::default()
    };
    let mut relayed = GuestServiceClient::new(from(&b.url, "127.0.0.2").connect().await.unwrap());
    let _relayed = relayed
        .attach(attach.clone())
        .await
        .expect("attach through B");
    let mut spoofed = tonic::Request::new(attach);
    spoofed.metadata_mut().insert(
        rendezvous_server::cluster::CLIENT_IP_HEADER,
        "203.0.113.9".parse().unwrap(),
    );
    let mut direct = GuestServiceClient::new(from(&a.url, "127.0.0.3").connect().await.unwrap());
    let _direct = direct.attach(spoofed).await.expect("attach to A");

    let deadline = Instant::now() + DEADLINE;
    let attached_from = |log: &str, ip: &str| {
        log.lines().any(|l| {
            l.contains("\"guest_attached\"") && l.contains(&format!("\"client_ip\":\"{ip}\""))
        })
    };
    loop {
        let log = std::fs::read_to_string(&audit).unwrap_or_default();
        if attached_from(&log, "127.0.0.2") && attached_from(&log, "127.0.0.3") {
            assert!(
                !log.contains("203.0.113.9"),
                "a client claimed an IP: {log}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A's audit log lacks a guest from 127.0.0.2 and from 127.0.0.3: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
