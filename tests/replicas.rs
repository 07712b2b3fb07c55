//! Replicas on one Redis (issue 13, step 1: the shared directory), as
//! processes: two `rendezvous serve --redis-url` replicas share task
//! ownership and host names; a killed replica's names are free after its
//! lease; `/readyz` follows Redis (stopped, then restarted empty) while
//! the sessions on a replica and the guests another replica relays to
//! them go on, and new guests find the host again once Redis is back.

use std::time::{Duration, Instant};

use rendezvous_host::{Host, HostError, HostStatus};
use rendezvous_proto::guest_service_client::GuestServiceClient;
use rendezvous_proto::{AttachRequest, ListSessionsRequest, TerminalRequest, terminal_request};
use rendezvous_testkit::redis::RedisServer;
use rendezvous_testkit::replicas::{ClusterFiles, Replica};
use rendezvous_testkit::{DEADLINE, Transcript, bash, host_token_file};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tonic::Code;

const ACME_TOKEN: &str = "acme-host-token-7Hq2xZk9Lp";
const MALLORY_TOKEN: &str = "mallory-host-token-Vb3Nw8Rt";
const ACME_SECRET: &str = "acme-task-secret-Qw7Er4Ty9";
const MALLORY_SECRET: &str = "mallory-task-secret-Zx5Cv2Bn";
const TASK: &str = "build-42";
/// The replicas' `--redis-lease` in the kill test: renewed every 2 s, so
/// a name is still held at least 4 s after a kill.
const LEASE: Duration = Duration::from_secs(6);

/// The status code of a plain HTTP/1.1 GET of `path` at `url`.
async fn status(url: &str, path: &str) -> u16 {
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// Waits (at most [`DEADLINE`]) until `done`, polling every 50 ms.
async fn until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    tokio::time::timeout(DEADLINE, async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not in time: {what}"));
}

/// A host of [`TASK`] on `url`, named `name`, with no grace period.
fn host(url: &str, token: Option<&str>, name: &str, secret: &str) -> Host {
    let command = bash();
    let mut builder = Host::builder(url)
        .task_id(TASK)
        .name(name)
        .secret(secret)
        .command(&command[0], &command[1..])
        .env("PS1", "$ ")
        .grace_period(Duration::ZERO);
    if let Some(token) = token {
        builder = builder.host_token(token);
    }
    builder.build().unwrap()
}

/// A host that registered; stopped on drop.
struct Running(Option<oneshot::Sender<()>>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs `host` until it is registered, or returns the server's refusal.
async fn register(host: Host) -> Result<Running, HostError> {
    let mut status = host.status();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut run = tokio::spawn(host.run(async move {
        let _ = stopped.await;
    }));
    let registered = async {
        status
            .wait_for(|s| matches!(s, HostStatus::Registered { .. }))
            .await
            .is_ok()
    };
    tokio::time::timeout(DEADLINE, async {
        tokio::select! {
            true = registered => Ok(Running(Some(stop))),
            ended = &mut run => Err(ended.expect("no panic").expect_err("the host runs until stopped")),
        }
    })
    .await
    .expect("the host registers or is refused in time")
}

/// How many hosts a guest with `secret` sees in [`TASK`] at `url`.
async fn hosts_seen(url: &str, secret: &str) -> Result<usize, tonic::Status> {
    let mut client = GuestServiceClient::connect(url.to_owned()).await.unwrap();
    let request = ListSessionsRequest {
        task_id: TASK.into(),
        secret: secret.into(),
        ..Default::default()
    };
    Ok(client
        .list_sessions(request)
        .await?
        .into_inner()
        .hosts
        .len())
}

/// A new shell of [`TASK`] at `url` on the bidi Terminal call: the input
/// side and what the guest sees.
async fn shell(url: &str, secret: &str) -> (mpsc::Sender<TerminalRequest>, Transcript) {
    let mut client = GuestServiceClient::connect(url.to_owned()).await.unwrap();
    let (input, requests) = mpsc::channel(16);
    let attach = AttachRequest {
        task_id: TASK.into(),
        secret: secret.into(),
        cols: 80,
        rows: 24,
        ..Default::default()
    };
    input
        .send(TerminalRequest {
            message: Some(terminal_request::Message::Attach(attach)),
        })
        .await
        .unwrap();
    let stream = client
        .terminal(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .expect("attach")
        .into_inner();
    (input, Transcript::new(stream))
}

/// Types `text` into the shell.
async fn type_text(input: &mpsc::Sender<TerminalRequest>, text: &str) {
    let message = terminal_request::Message::Input(text.as_bytes().to_vec().into());
    input
        .send(TerminalRequest {
            message: Some(message),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_its_owners_on_every_replica_and_a_killed_replica_frees_its_names() {
    let redis = RedisServer::start().await;
    let files = ClusterFiles::new();
    let (_dir, tokens) = host_token_file(&format!("acme {ACME_TOKEN}\nmallory {MALLORY_TOKEN}\n"));
    let token_file = tokens.path().display().to_string();
    let lease = format!("{}s", LEASE.as_secs());
    let args = ["--redis-lease", &lease, "--host-token-file", &token_file];
    let bin = env!("CARGO_BIN_EXE_rendezvous");
    let mut a = Replica::start(bin, &redis, &files, &args).await;
    let b = Replica::start(bin, &redis, &files, &args).await;
    let (a_url, b_url) = (a.url.clone(), b.url.clone());

    let _acme = register(host(&a_url, Some(ACME_TOKEN), "default", ACME_SECRET))
        .await
        .expect("acme's host registers on A");
    // On B, as on A: the name is taken, and other secrets are refused.
    let taken = register(host(&b_url, Some(ACME_TOKEN), "default", ACME_SECRET)).await;
    assert!(
        matches!(&taken, Err(HostError::AlreadyExists(m)) if m.contains("already connected")),
        "{:?}",
        taken.err()
    );
    let other_secrets = register(host(&b_url, Some(ACME_TOKEN), "mac", MALLORY_SECRET)).await;
    assert!(
        matches!(other_secrets, Err(HostError::PermissionDenied(_))),
        "{:?}",
        other_secrets.err()
    );
    // B knows acme's task (its guests are not refused), and lists A's
    // host (asking A).
    assert_eq!(hosts_seen(&b_url, ACME_SECRET).await.unwrap(), 1);
    assert_eq!(hosts_seen(&a_url, ACME_SECRET).await.unwrap(), 1);
    // Another owner with the same task ID gets a task of its own on B,
    // known on A, and never reaches acme's.
    let _mallory = register(host(&b_url, Some(MALLORY_TOKEN), "default", MALLORY_SECRET))
        .await
        .expect("mallory's own task");
    assert_eq!(hosts_seen(&b_url, MALLORY_SECRET).await.unwrap(), 1);
    assert_eq!(hosts_seen(&b_url, ACME_SECRET).await.unwrap(), 1);
    assert_eq!(hosts_seen(&a_url, MALLORY_SECRET).await.unwrap(), 1);
    assert_eq!(hosts_seen(&a_url, ACME_SECRET).await.unwrap(), 1);

    // A dies (kill -9): its host's name is held until the lease runs out,
    // then free on B.
    a.process.child.start_kill().unwrap();
    a.process.child.wait().await.unwrap();
    let killed = Instant::now();
    let early = register(host(&b_url, Some(ACME_TOKEN), "default", ACME_SECRET)).await;
    assert!(
        matches!(early, Err(HostError::AlreadyExists(_))),
        "the lease still holds the name: {:?}",
        early.err()
    );
    let deadline = killed + DEADLINE;
    let _back = loop {
        assert!(
            Instant::now() < deadline,
            "acme's name never became free on B"
        );
        match register(host(&b_url, Some(ACME_TOKEN), "default", ACME_SECRET)).await {
            Ok(running) => break running,
            Err(HostError::AlreadyExists(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    };
    let waited = killed.elapsed();
    assert!(
        waited <= LEASE + Duration::from_secs(2),
        "free within the lease: {waited:?}"
    );
    assert_eq!(hosts_seen(&b_url, ACME_SECRET).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_redis_while_shells_and_relayed_guests_go_on() {
    let password = "redis-password-canary-5Rt8";
    let mut redis = RedisServer::with_password(password).await;
    let files = ClusterFiles::new();
    let a = Replica::start(env!("CARGO_BIN_EXE_rendezvous"), &redis, &files, &[]).await;
    let a_url = a.url.clone();
    let _host = register(host(&a_url, None, "default", ACME_SECRET))
        .await
        .expect("the host registers");
    let (input, mut guest) = shell(&a_url, ACME_SECRET).await;
    type_text(&input, "echo one-$((40+2))\n").await;
    guest.until("one-42").await;
    assert_eq!(status(&a_url, "/readyz").await, 200);
    // A guest on replica B, relayed to the host on A.
    let b = Replica::start(env!("CARGO_BIN_EXE_rendezvous"), &redis, &files, &[]).await;
    let b_url = b.url.clone();
    let (relayed_input, mut relayed) = shell(&b_url, ACME_SECRET).await;
    type_text(&relayed_input, "echo b-one-$((40+2))\n").await;
    relayed.until("b-one-42").await;

    redis.stop();
    until("/readyz says 503", || async {
        status(&a_url, "/readyz").await == 503
    })
    .await;
    assert_eq!(status(&a_url, "/healthz").await, 200);
    // What needs the directory is refused, saying why; the shell goes on.
    let refused = hosts_seen(&a_url, ACME_SECRET).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("shared directory (Redis) is unreachable"),
        "{refused:?}"
    );
    type_text(&input, "echo two-$((40+2))\n").await;
    guest.until("two-42").await;
    // The relayed stream needs no directory either; a new guest on B,
    // which must look the host up, is refused UNAVAILABLE.
    type_text(&relayed_input, "echo b-two-$((40+2))\n").await;
    relayed.until("b-two-42").await;
    let refused = hosts_seen(&b_url, ACME_SECRET).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // Back on the same port, empty: ready again, and the replica writes
    // its host back into the directory.
    redis.restart().await;
    until("/readyz says 200", || async {
        status(&a_url, "/readyz").await == 200
    })
    .await;
    until("the task is back in the directory", || async {
        matches!(hosts_seen(&a_url, ACME_SECRET).await, Ok(1))
    })
    .await;
    type_text(&input, "echo three-$((40+2))\n").await;
    guest.until("three-42").await;
    // With the directory back, B finds the host on A again, for the guest
    // it relays and for a new one.
    until("B lists A's host again", || async {
        matches!(hosts_seen(&b_url, ACME_SECRET).await, Ok(1))
    })
    .await;
    type_text(&relayed_input, "echo b-three-$((40+2))\n").await;
    relayed.until("b-three-42").await;
    let (new_input, mut new_guest) = shell(&b_url, ACME_SECRET).await;
    type_text(&new_input, "echo b-new-$((40+2))\n").await;
    new_guest.until("b-new-42").await;

    let printed = format!("{}{}", a.process.stdout(), a.process.stderr());
    assert!(
        printed.contains("shared directory (Redis) is unreachable"),
        "{printed}"
    );
    assert!(printed.contains("answers again"), "{printed}");
    assert!(
        !printed.contains(password),
        "the Redis password was printed: {printed}"
    );
}
