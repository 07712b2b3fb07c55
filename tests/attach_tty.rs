//! `rendezvous attach` on a terminal, as a person runs it: a PTY around
//! the real binary. Raw mode while attached and restored after, SIGWINCH
//! sends the new size, and `~.` after a newline detaches.

use rendezvous_testkit::pty::until;
use rendezvous_testkit::{DEADLINE, TestHost, TestServer};
use tokio::io::AsyncWriteExt as _;

/// Whether the PTY's line discipline is in canonical (cooked) mode with
/// local echo, as a shell leaves it; raw mode turns both off.
fn cooked(pty: &pty_process::Pty) -> bool {
    let termios = rustix::termios::tcgetattr(pty).expect("termios of the PTY");
    let local = termios.local_modes;
    local.contains(rustix::termios::LocalModes::ICANON)
        && local.contains(rustix::termios::LocalModes::ECHO)
}

#[tokio::test]
async fn attach_on_a_terminal_goes_raw_resizes_and_detaches_with_tilde_dot() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "tty").await;
    let (mut pty, pts) = pty_process::open().unwrap();
    pty.resize(pty_process::Size::new(30, 100)).unwrap();
    assert!(cooked(&pty), "a new PTY starts cooked");
    let mut child = pty_process::Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args(["attach", "--server", &server.url, "--task-id", "tty"])
        .env("RENDEZVOUS_SECRET", &host.secret)
        .kill_on_drop(true)
        .spawn(pts)
        .expect("start rendezvous attach on the PTY");
    let mut seen = Vec::new();

    until(&mut pty, &mut seen, "~. at the start of a line to detach").await;
    until(&mut pty, &mut seen, "$ ").await;
    assert!(!cooked(&pty), "attached, the terminal is in raw mode");
    // The host's shell started at this terminal's size.
    pty.write_all(b"stty size\r").await.unwrap();
    until(&mut pty, &mut seen, "30 100").await;

    // The kernel sends SIGWINCH to attach, which sends the new size.
    pty.resize(pty_process::Size::new(40, 120)).unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        pty.write_all(b"stty size\r").await.unwrap();
        until(&mut pty, &mut seen, "stty size\r\n").await;
        let answer = until(&mut pty, &mut seen, "$ ").await;
        if answer.contains("40 120") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the size never reached the shell: {answer:?}"
        );
    }

    // `~.` after a newline detaches: attach exits 0, the terminal is cooked again.
    pty.write_all(b"\r~.").await.unwrap();
    until(&mut pty, &mut seen, "[rendezvous: detached]").await;
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("attach exits in time")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(cooked(&pty), "the terminal is restored after detaching");
}

/// `attach` on a terminal across a server crash: it says the connection
/// was lost and that it reconnects, keeps what is typed meanwhile, and
/// once the restarted server (same state key) has its host back it goes on
/// in the same shell, the typed line run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_on_a_terminal_rides_out_a_server_crash_in_the_same_shell() {
    use rendezvous_server::ServerConfig;
    use rendezvous_server::state_key::StateKey;
    use rendezvous_testkit::Stop;

    let key = StateKey::shared([3; 32]);
    let config = || ServerConfig {
        state_key: key.clone(),
        ..ServerConfig::default()
    };
    let server = TestServer::with_config(config()).await;
    let addr = server.addr;
    let secret = "tty-restart-secret-0123456789";
    let host = rendezvous_testkit::resumable(
        &server.url,
        "tty-restart",
        secret,
        std::time::Duration::from_secs(60),
    )
    .build()
    .expect("build host");
    let host = TestHost::from_host(host).await;

    let (mut pty, pts) = pty_process::open().unwrap();
    pty.resize(pty_process::Size::new(30, 100)).unwrap();
    let mut child = pty_process::Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args([
            "attach",
            "--server",
            &server.url,
            "--task-id",
            "tty-restart",
        ])
        .env("RENDEZVOUS_SECRET", secret)
        .kill_on_drop(true)
        .spawn(pts)
        .expect("start rendezvous attach on the PTY");
    let mut seen = Vec::new();
    until(&mut pty, &mut seen, "$ ").await;
    // Not idempotent: run twice, it would show.
    pty.write_all(b"N=$((N+1)); X=kept-$((40+2))\r")
        .await
        .unwrap();
    until(&mut pty, &mut seen, "$ ").await;

    server.stop(Stop::Crash).await;
    until(&mut pty, &mut seen, "connection lost").await;
    until(&mut pty, &mut seen, "reconnecting in").await;
    // Typed while no server runs.
    pty.write_all(b"echo typed-$((6*7))\r").await.unwrap();
    let server = TestServer::start_at(addr, config())
        .await
        .expect("bind the same port again");
    let mut after = until(&mut pty, &mut seen, "typed-42\r\n").await;
    pty.write_all(b"echo \"$X n=$N\"\r").await.unwrap();
    after += &until(&mut pty, &mut seen, "kept-42 n=1\r\n").await;
    assert!(
        after.contains("[rendezvous: reconnected]"),
        "resumed as the same guest: {after:?}"
    );
    assert_eq!(after.matches("typed-42\r\n").count(), 1, "{after:?}");

    pty.write_all(b"\r~.").await.unwrap();
    until(&mut pty, &mut seen, "[rendezvous: detached]").await;
    let exited = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("attach exits in time")
        .unwrap();
    assert_eq!(exited.code(), Some(0));
    host.stop().await;
    drop(server);
}
