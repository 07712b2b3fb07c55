//! Process hygiene: a shell that `rendezvous host` starts cannot read the
//! host process's environment, where its secret and host token are
//! (`prctl(PR_SET_DUMPABLE, 0)`). The host runs as an ordinary user (as
//! `nobody` when the tests run as root, whom nothing stops).

use std::process::Stdio;

use rendezvous_proto::AttachRequest;
use rendezvous_testkit::{DEADLINE, TermGuest, TestServer};
use tokio::io::AsyncBufReadExt as _;

const SECRET: &str = "hygiene-canary-secret-Xq7Lp2Vz";

#[tokio::test]
async fn a_shell_cannot_read_the_host_process_environment() {
    let server = TestServer::start().await;
    let binary = env!("CARGO_BIN_EXE_rendezvous");
    let args = [
        "host",
        "--server",
        &server.url,
        "--task-id",
        "hygiene",
        "--",
        "bash",
        "--norc",
        "--noprofile",
    ];
    let mut command = if rustix_is_root() {
        let mut c = tokio::process::Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            binary,
        ]);
        c
    } else {
        tokio::process::Command::new(binary)
    };
    let mut child = command
        .args(args)
        .env("RENDEZVOUS_SECRET", SECRET)
        .env("HOME", "/tmp")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start rendezvous host");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("Open ") {
                return;
            }
        }
        panic!("the host ended before registering");
    })
    .await
    .expect("the host registers in time");
    let mut guest = TermGuest::open(
        &server,
        AttachRequest {
            task_id: "hygiene".into(),
            secret: SECRET.into(),
            cols: 100,
            rows: 30,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    guest
        .type_text("id -un; cat /proc/$PPID/environ > /dev/null; echo \"read=$?.\"\n")
        .await;
    let text = guest
        .events
        .until_match("read=N.", |t| {
            t.contains("read=0.") || t.contains("read=1.")
        })
        .await;
    assert!(
        text.contains("read=1."),
        "the shell read the host's environment: {text}"
    );
    assert!(text.contains("Permission denied"), "{text}");
    // Its own environment does not carry the secret either.
    guest
        .type_text("env | grep -c RENDEZVOUS_SECRET; echo \"env=$?.\"\n")
        .await;
    let text = guest.events.until("env=").await;
    assert!(!text.contains(SECRET));
}

/// Whether this test runs as root (who may read any process's memory).
fn rustix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
