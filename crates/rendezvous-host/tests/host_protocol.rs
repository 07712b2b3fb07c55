//! The host library against the real server on `127.0.0.1:0`, observed from
//! the guest side through the real guest client: a new shell's output, a
//! resize and the exit code; shutdown; the permanent refusals; a lost
//! connection and the reconnect; a command that cannot start.
//!
//! The server is the test kit's, which a test can also crash (the listener
//! and every connection closed at once, nothing said).

use std::path::Path;
use std::time::Duration;

use rendezvous_guest::{
    AttachOptions, Client, Event, ExitStatus, GuestError, HostName, Secret, TaskId, Terminal,
    WindowSize,
};
use rendezvous_host::{Host, HostBuilder, HostError, HostStatus};
use rendezvous_proto::exit_status;
use rendezvous_server::ServerConfig;
use rendezvous_testkit::{Stop, TestServer};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// Upper bound for anything a test waits for.
const DEADLINE: Duration = Duration::from_secs(20);

/// How often a test looks again at something it cannot be told about (a
/// process in `/proc`).
const POLL: Duration = Duration::from_millis(20);

const TASK: &str = "build-42";
const SECRET: &str = "host-protocol-test-secret-0123";
const HOST_NAME: &str = "linux";

/// A host's `run` in a task. Dropping it aborts the run (which kills its
/// sessions' processes).
struct TestHost {
    status: watch::Receiver<HostStatus>,
    shutdown: Option<oneshot::Sender<()>>,
    run: JoinHandle<Result<(), HostError>>,
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.run.abort();
    }
}

impl TestHost {
    fn spawn(builder: HostBuilder) -> Self {
        let host = builder.build().expect("build host");
        let status = host.status();
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let run = tokio::spawn(host.run(async move {
            let _ = shutdown_rx.await;
        }));
        Self {
            status,
            shutdown: Some(shutdown),
            run,
        }
    }

    /// Waits until the host is registered with an ID other than `not`;
    /// returns the ID.
    async fn registered_other_than(&mut self, not: Option<&str>) -> String {
        let is_new = |status: &HostStatus| match status {
            HostStatus::Registered { host_id } => Some(host_id.as_str()) != not,
            _ => false,
        };
        // A clone waits, so that the original can show the last state.
        let mut status = self.status.clone();
        match timeout(DEADLINE, status.wait_for(is_new)).await {
            Ok(Ok(registered)) => match &*registered {
                HostStatus::Registered { host_id } => host_id.clone(),
                _ => unreachable!(),
            },
            Ok(Err(_)) => panic!("run ended before registering"),
            Err(_) => panic!("not registered in time: {:?}", *self.status.borrow()),
        }
    }

    async fn registered(&mut self) -> String {
        self.registered_other_than(None).await
    }

    /// What `run` returns, without resolving its shutdown future: it must
    /// return by itself.
    async fn result(mut self) -> Result<(), HostError> {
        let result = timeout(DEADLINE, &mut self.run)
            .await
            .expect("run returns in time")
            .expect("run did not panic");
        assert_eq!(*self.status.borrow(), HostStatus::Stopped);
        result
    }

    /// Resolves the shutdown future; returns what `run` returned.
    async fn shut_down(mut self) -> Result<(), HostError> {
        let _ = self.shutdown.take().unwrap().send(());
        self.result().await
    }
}

/// A host of [`TASK`] named [`HOST_NAME`] with [`SECRET`], running bash
/// without rc files.
fn host(server: &TestServer) -> HostBuilder {
    Host::builder(&server.url)
        .task_id(TASK)
        .name(HOST_NAME)
        .secret(SECRET)
        .command("bash", ["--norc", "--noprofile"])
        .env("PS1", "$ ")
}

/// A guest on a new shell, through the real guest client.
struct Guest {
    /// Kept so its connection lives as long as the terminal.
    _client: Client,
    terminal: Terminal,
    /// All output so far.
    output: Vec<u8>,
    /// Size events so far.
    sizes: Vec<WindowSize>,
    /// HostState events so far: whether the host was reconnecting.
    host_states: Vec<bool>,
}

impl Guest {
    /// Asks the host named [`HOST_NAME`] for a new shell of `cols` x `rows`.
    async fn new_shell(server: &TestServer, cols: u32, rows: u32) -> Self {
        let client = Client::connect(&server.url).await.expect("guest connects");
        let options = AttachOptions {
            host_name: Some(HostName::new(HOST_NAME).unwrap()),
            cols,
            rows,
            ..AttachOptions::new(TaskId::new(TASK).unwrap(), Secret::new(SECRET).unwrap())
        };
        let terminal = timeout(DEADLINE, client.terminal(options))
            .await
            .expect("attached in time")
            .expect("attached");
        assert_eq!(terminal.attached().host_name, HOST_NAME);
        Self {
            _client: client,
            terminal,
            output: Vec::new(),
            sizes: Vec::new(),
            host_states: Vec::new(),
        }
    }

    async fn type_text(&self, text: &str) {
        self.terminal
            .send_input(text.to_owned())
            .await
            .expect("send input");
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// The next event, recorded.
    async fn next(&mut self) -> Result<Option<Event>, GuestError> {
        let event = timeout(DEADLINE, self.terminal.next_event())
            .await
            .unwrap_or_else(|_| panic!("no event in time; output so far: {:?}", self.text()))?;
        match &event {
            Some(Event::Output(output)) => self.output.extend_from_slice(&output.data),
            Some(Event::Size(size)) => self.sizes.push(*size),
            Some(Event::HostState(state)) => self.host_states.push(state.reconnecting),
            _ => {}
        }
        Ok(event)
    }

    /// Reads until `find` finds something in the output; returns it.
    async fn until<T>(&mut self, what: &str, find: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(found) = find(&self.text()) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in output: {:?}",
                self.text()
            );
            match self.next().await {
                Ok(Some(Event::Exit(exit))) => {
                    panic!("session ended ({exit:?}) before {what}: {:?}", self.text())
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("stream ended before {what}: {:?}", self.text()),
                Err(e) => panic!("stream failed before {what} ({e}): {:?}", self.text()),
            }
        }
    }

    /// Reads until the output contains `needle`.
    async fn until_text(&mut self, needle: &str) {
        self.until(needle, |text| text.contains(needle).then_some(()))
            .await;
    }

    /// Runs `stty size` in the shell and returns its answer, `"ROWS COLS"`.
    /// `tag` tells this answer from earlier ones.
    async fn stty_size(&mut self, tag: u32) -> String {
        // The echo of this line shows `size%d`, never `size{tag}:`.
        self.type_text(&format!("printf 'size%d:%s;\\n' {tag} \"$(stty size)\"\n"))
            .await;
        let marker = format!("size{tag}:");
        self.until(&marker.clone(), move |text| {
            let start = text.find(&marker)? + marker.len();
            let len = text[start..].find(';')?;
            Some(text[start..start + len].to_owned())
        })
        .await
    }

    /// Types `echo {name}-$…-end` and returns the number the shell printed.
    async fn shell_number(&mut self, name: &str, expression: &str) -> u32 {
        self.type_text(&format!("echo {name}-{expression}-end\n"))
            .await;
        let prefix = format!("{name}-");
        self.until(name, move |text| number_between(text, &prefix, "-end"))
            .await
    }

    /// Reads until a Size event says `size`.
    async fn until_size(&mut self, size: WindowSize) {
        while !self.sizes.contains(&size) {
            match self.next().await {
                Ok(Some(Event::Exit(exit))) => panic!("session ended ({exit:?}) before {size:?}"),
                Ok(Some(_)) => {}
                Ok(None) => panic!("stream ended before {size:?}"),
                Err(e) => panic!("stream failed before {size:?}: {e}"),
            }
        }
    }

    /// Reads until Exit and checks that the stream then ends.
    async fn until_exit(&mut self) -> ExitStatus {
        loop {
            match self.next().await {
                Ok(Some(Event::Exit(exit))) => {
                    let after = self.next().await;
                    assert!(matches!(after, Ok(None)), "after Exit: {after:?}");
                    return exit;
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("stream ended without Exit: {:?}", self.text()),
                Err(e) => panic!("stream failed without Exit ({e}): {:?}", self.text()),
            }
        }
    }

    /// Reads until the stream is over, whichever way: `Some` when it ended
    /// with Exit, `None` when it ended or failed without one.
    async fn until_over(&mut self) -> Option<ExitStatus> {
        loop {
            match self.next().await {
                Ok(Some(Event::Exit(exit))) => return Some(exit),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// The first number in `text` right after `prefix` and right before
/// `suffix`.
fn number_between(text: &str, prefix: &str, suffix: &str) -> Option<u32> {
    text.match_indices(prefix).find_map(|(at, _)| {
        let rest = &text[at + prefix.len()..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && rest[digits..].starts_with(suffix) {
            rest[..digits].parse().ok()
        } else {
            None
        }
    })
}

/// Whether process `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until `/proc/{pid}` is gone: the process has ended and been
/// reaped (the host reaps its shells).
async fn gone(pid: u32) {
    let path = format!("/proc/{pid}");
    let deadline = Instant::now() + DEADLINE;
    while Path::new(&path).exists() {
        assert!(Instant::now() < deadline, "process {pid} still exists");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until process `pid` has ended (it may stay a zombie: an orphan is
/// reaped by init, which the test does not control).
async fn ended(pid: u32) {
    let deadline = Instant::now() + DEADLINE;
    while running(pid) {
        assert!(Instant::now() < deadline, "process {pid} still running");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn new_shell_output_resize_and_exit_code_reach_the_guest() {
    let server = TestServer::start().await;
    let mut host = TestHost::spawn(host(&server).label("job", "42"));
    host.registered().await;

    // The Hello's name and labels reach guests.
    let client = Client::connect(&server.url).await.unwrap();
    let hosts = client
        .list_sessions(&TaskId::new(TASK).unwrap(), &Secret::new(SECRET).unwrap())
        .await
        .unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0].host_name, HOST_NAME);
    assert_eq!(hosts[0].labels.get("job").map(String::as_str), Some("42"));

    let mut guest = Guest::new_shell(&server, 100, 30).await;
    guest.type_text("echo hi-$((1+1))\n").await;
    guest.until_text("hi-2").await;
    assert_eq!(guest.stty_size(1).await, "30 100");

    // The server tells guests the new size; then the PTY has it (the
    // resize and the next input travel on separate queues, so look again
    // until the shell sees it).
    guest.terminal.resize(120, 40).await.unwrap();
    guest
        .until_size(WindowSize {
            cols: 120,
            rows: 40,
        })
        .await;
    let deadline = Instant::now() + DEADLINE;
    let mut tag = 2;
    loop {
        let size = guest.stty_size(tag).await;
        if size == "40 120" {
            break;
        }
        assert!(Instant::now() < deadline, "stty size still says {size}");
        tag += 1;
    }

    guest.type_text("exit 7\n").await;
    let exit = guest.until_exit().await;
    assert_eq!(exit.status, Some(exit_status::Status::Code(7)), "{exit:?}");

    host.shut_down().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_running_sessions_and_their_processes() {
    let server = TestServer::start().await;
    let mut host = TestHost::spawn(host(&server));
    host.registered().await;

    let mut guest = Guest::new_shell(&server, 100, 30).await;
    // A background job (a process group of its own) and the shell.
    guest.type_text("sleep 1000 &\n").await;
    let job = guest.shell_number("job", "$!").await;
    let shell = guest.shell_number("shell", "$$").await;
    assert!(running(job) && running(shell));
    guest.type_text("sleep 1000\n").await;

    let run = tokio::spawn(host.shut_down());
    let exit = guest.until_exit().await;
    assert_eq!(exit.message, "host shut down", "{exit:?}");
    // SIGHUP, or SIGKILL when the shell was too busy (forking) to die of
    // SIGHUP within the grace period.
    assert!(
        matches!(exit.status, Some(exit_status::Status::Signal(1 | 9))),
        "{exit:?}"
    );
    timeout(DEADLINE, run).await.unwrap().unwrap().unwrap();
    gone(shell).await;
    ended(job).await;
}

#[tokio::test]
async fn permission_denied_is_permanent() {
    let server = TestServer::start().await;
    let mut first = TestHost::spawn(host(&server));
    let first_id = first.registered().await;

    let other_secret = "another-secret-for-this-task-0123";
    let second = TestHost::spawn(host(&server).name("other").secret(other_secret));
    // `run` returns by itself: the host does not retry.
    let result = second.result().await;
    match &result {
        Err(HostError::PermissionDenied(message)) => {
            assert!(!message.contains(SECRET) && !message.contains(other_secret));
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }

    // The task's first host is untouched.
    assert_eq!(
        *first.status.borrow(),
        HostStatus::Registered { host_id: first_id }
    );
    let mut guest = Guest::new_shell(&server, 80, 24).await;
    guest.type_text("echo still-$((6*7))\n").await;
    guest.until_text("still-42").await;
    first.shut_down().await.unwrap();
}

#[tokio::test]
async fn already_exists_is_permanent_on_the_first_connection() {
    let server = TestServer::start().await;
    let mut first = TestHost::spawn(host(&server));
    let first_id = first.registered().await;

    // Same task, secret and name.
    let second = TestHost::spawn(host(&server));
    let result = second.result().await;
    assert!(
        matches!(result, Err(HostError::AlreadyExists(_))),
        "{result:?}"
    );

    assert_eq!(
        *first.status.borrow(),
        HostStatus::Registered { host_id: first_id }
    );
    first.shut_down().await.unwrap();
}

/// Starts a server and a host with one running session, stops the server
/// `how`, checks that the session ended on both sides, starts a server on
/// the same port and checks that the host registers with it and serves
/// shells again.
async fn lost_connection_ends_sessions_and_reconnects(how: Stop) {
    let server = TestServer::start().await;
    let addr = server.addr;
    // Without a grace period, as before resuming existed.
    let mut host = TestHost::spawn(host(&server).grace_period(Duration::ZERO));
    let first_id = host.registered().await;

    let mut guest = Guest::new_shell(&server, 100, 30).await;
    let shell = guest.shell_number("shell", "$$").await;
    guest.type_text("sleep 1000\n").await;

    server.stop(how).await;
    let exit = guest.until_over().await;
    if let Stop::Graceful = how {
        assert!(exit.is_some(), "a graceful stop sends Exit");
    }
    // The host ended the session's process.
    gone(shell).await;
    timeout(
        DEADLINE,
        host.status
            .wait_for(|status| !matches!(status, HostStatus::Registered { .. })),
    )
    .await
    .expect("the host notices the lost connection")
    .unwrap();

    let server = TestServer::start_at(addr, ServerConfig::default())
        .await
        .expect("bind the same port again");
    host.registered_other_than(Some(&first_id)).await;
    let mut guest = Guest::new_shell(&server, 100, 30).await;
    guest.type_text("echo back-$((6*7))\n").await;
    guest.until_text("back-42").await;
    host.shut_down().await.unwrap();
}

#[tokio::test]
async fn without_a_grace_period_a_server_crash_ends_sessions_and_the_host_reconnects() {
    lost_connection_ends_sessions_and_reconnects(Stop::Crash).await;
}

#[tokio::test]
async fn without_a_grace_period_a_server_restart_ends_sessions_and_the_host_reconnects() {
    lost_connection_ends_sessions_and_reconnects(Stop::Graceful).await;
}

/// A server that crashes and comes back with the same state key: the host
/// keeps its shell, resumes the session under the same ID, refills the
/// server with the output it kept (output made while the server was away
/// included), and a guest that joins the session sees all of it in order.
#[tokio::test]
async fn a_crashed_server_with_the_same_state_key_gets_the_session_back_from_the_host() {
    let key = rendezvous_server::state_key::StateKey::random();
    let config = || ServerConfig {
        state_key: key.clone(),
        ..ServerConfig::default()
    };
    let server = TestServer::with_config(config()).await;
    let addr = server.addr;
    let mut host = TestHost::spawn(host(&server));
    let first_id = host.registered().await;

    let mut guest = Guest::new_shell(&server, 100, 30).await;
    let session_id = guest.terminal.attached().session_id.clone();
    let shell = guest.shell_number("shell", "$$").await;
    // Output that goes on while the server is away.
    guest
        .type_text("stty -echo; echo started-$((2*3)); sleep 1; seq 1 3000; echo done-$((6*7))\n")
        .await;
    guest.until_text("started-6").await;
    server.stop(Stop::Crash).await;
    drop(guest);
    timeout(
        DEADLINE,
        host.status
            .wait_for(|status| !matches!(status, HostStatus::Registered { .. })),
    )
    .await
    .expect("the host notices the lost connection")
    .unwrap();

    let server = TestServer::start_at(addr, config())
        .await
        .expect("bind the same port again");
    let second_id = host.registered_other_than(None).await;
    assert_eq!(second_id, first_id, "the host keeps its ID");
    assert!(running(shell), "the shell survived the server crash");
    let client = Client::connect(&server.url).await.unwrap();
    let options = AttachOptions {
        host_name: Some(HostName::new(HOST_NAME).unwrap()),
        session_id: Some(session_id.clone()),
        resume_offset: Some(0),
        ..AttachOptions::new(TaskId::new(TASK).unwrap(), Secret::new(SECRET).unwrap())
    };
    let terminal = timeout(DEADLINE, client.terminal(options))
        .await
        .expect("attached in time")
        .expect("the restored session accepts guests");
    let mut joined = Guest {
        _client: client,
        terminal,
        output: Vec::new(),
        sizes: Vec::new(),
        host_states: Vec::new(),
    };
    joined.until_text("done-42").await;
    let text = String::from_utf8_lossy(&joined.output).into_owned();
    let numbers: Vec<u32> = text
        .split("\r\n")
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    let from = numbers.iter().position(|&n| n == 1).expect("seq starts");
    assert_eq!(
        numbers[from..],
        (1..=3000).collect::<Vec<u32>>()[..],
        "every line once, in order"
    );
    assert!(
        text.contains(&format!("shell-{shell}-end")),
        "output from before the crash"
    );
    // The same shell takes input.
    joined.type_text("echo again-$$\n").await;
    joined.until_text(&format!("again-{shell}")).await;
    host.shut_down().await.unwrap();
}

#[tokio::test]
async fn unstartable_command_is_reported_to_the_guest() {
    let server = TestServer::start().await;
    let mut host = TestHost::spawn(host(&server).command("/nonexistent/cmd", Vec::<String>::new()));
    host.registered().await;

    let mut guest = Guest::new_shell(&server, 80, 24).await;
    let exit = guest.until_exit().await;
    assert_eq!(exit.status, None, "{exit:?}");
    assert!(
        exit.message.contains("the host could not start the shell")
            && exit.message.contains("/nonexistent/cmd"),
        "{exit:?}"
    );

    // The host stays registered and keeps serving.
    assert!(matches!(
        *host.status.borrow(),
        HostStatus::Registered { .. }
    ));
    host.shut_down().await.unwrap();
}

/// The host's connection is cut (through a TCP proxy) while a command
/// writes: the guest, attached directly, stays attached, is told that the
/// host is reconnecting and then back, and gets every line once and in
/// order; input typed during the cut reaches the same shell once.
#[tokio::test]
async fn a_cut_host_connection_resumes_with_no_gap_no_duplicate_and_input_once() {
    let server = TestServer::start().await;
    let proxy = rendezvous_testkit::proxy::CutProxy::start(&server.url).await;
    let mut host = TestHost::spawn(
        Host::builder(&proxy.url)
            .task_id(TASK)
            .name(HOST_NAME)
            .secret(SECRET)
            .command("bash", ["--norc", "--noprofile"])
            .env("PS1", "$ "),
    );
    let first_id = host.registered().await;
    let mut guest = Guest::new_shell(&server, 100, 30).await;
    let shell = guest.shell_number("shell", "$$").await;
    guest
        .type_text("stty -echo; echo started-$((2*3)); sleep 1; seq 1 20000; echo done-$((6*7))\n")
        .await;
    guest.until_text("started-6").await;
    proxy.cut();
    // Typed while the host is away: it waits in the server's queue.
    guest.type_text("echo typed-$((7*8))\n").await;
    guest.until_text("done-42").await;
    guest.until_text("typed-56").await;
    let text = String::from_utf8_lossy(&guest.output).into_owned();
    let numbers: Vec<u32> = text
        .split("\r\n")
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    let from = numbers.iter().position(|&n| n == 1).expect("seq starts");
    assert_eq!(
        numbers[from..from + 20000],
        (1..=20000).collect::<Vec<u32>>()[..],
        "every line once, in order"
    );
    assert_eq!(
        text.matches("typed-56").count(),
        1,
        "the input was applied once"
    );
    assert_eq!(
        guest.host_states,
        [true, false],
        "told the host was reconnecting, then back"
    );
    assert_eq!(
        host.registered_other_than(None).await,
        first_id,
        "the same registration resumed"
    );
    assert!(running(shell));
    host.shut_down().await.unwrap();
}

/// A host that cannot get back within its grace period: the server ends
/// its sessions and tells the guest why, and the host ends the shell.
#[tokio::test]
async fn past_the_grace_period_the_session_ends_in_plain_words_on_both_sides() {
    let server = TestServer::start().await;
    let proxy = rendezvous_testkit::proxy::FaultProxy::start(&server.url).await;
    let mut host = TestHost::spawn(
        Host::builder(proxy.url())
            .task_id(TASK)
            .name(HOST_NAME)
            .secret(SECRET)
            .command("bash", ["--norc", "--noprofile"])
            .env("PS1", "$ ")
            .grace_period(Duration::from_secs(2)),
    );
    host.registered().await;
    let mut guest = Guest::new_shell(&server, 100, 30).await;
    let shell = guest.shell_number("shell", "$$").await;
    // The host's connection breaks, and it cannot reach the server again.
    proxy.both().blackhole();
    proxy.cut();
    let exit = guest.until_exit().await;
    assert_eq!(exit.status, None, "{exit:?}");
    assert_eq!(
        exit.message, "the host did not come back within its grace period of 2 s",
        "{exit:?}"
    );
    assert_eq!(guest.host_states, [true], "told the host was reconnecting");
    // The host gives up on its side too, and ends the shell.
    gone(shell).await;
    assert!(!matches!(
        *host.status.borrow(),
        HostStatus::Registered { .. }
    ));
}
