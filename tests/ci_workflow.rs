//! The CI debugging workflow, end to end: a CI job played as a shell
//! script the way a runner runs it (`sh -c`, no TTY, stdin closed, CI
//! variables), against a real server on loopback and the real binary on
//! the job's PATH. A guest attaches natively and types `rendezvous
//! continue` (or `extend`) into the shell the job opened for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rendezvous_proto::{AttachRequest, Role};
use rendezvous_server::ServerConfig;
use rendezvous_server::registry::Owner;
use rendezvous_server::token::TokenKey;
use rendezvous_testkit::{ProcessOutput, TermGuest, TestServer, WebhookServer, temp_dir};
use yaml_rust2::{Yaml, YamlLoader};

/// The task's secret; the job gets it as `RENDEZVOUS_SECRET`.
const SECRET: &str = "ci-workflow-secret-0123456789";

/// The directory of the binary under test, for the job's PATH.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rendezvous"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A CI job: a script run by `sh -c` in a directory of its own, with the
/// variables GitHub Actions sets (or GitLab CI's, with [`Job::gitlab`]).
struct Job {
    dir: tempfile::TempDir,
    command: tokio::process::Command,
    task: String,
}

impl Job {
    fn new(server: &TestServer, task: &str, script: &str) -> Self {
        let dir = temp_dir("ci-job");
        let runtime = dir.path().join("runtime");
        let mut command = tokio::process::Command::new("sh");
        command
            .args(["-c", script])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir().display()))
            .env("HOME", dir.path())
            .env("SHELL", "/bin/bash")
            .env("CI", "true")
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_RUN_ID", "4242")
            .env("GITHUB_JOB", "test")
            .env("GITHUB_STEP_SUMMARY", dir.path().join("summary.md"))
            .env("GITHUB_OUTPUT", dir.path().join("output"))
            .env("RUNNER_TEMP", dir.path())
            .env("RENDEZVOUS_RUNTIME_DIR", &runtime)
            .env("RENDEZVOUS_SERVER", &server.url)
            .env("RENDEZVOUS_TASK_ID", task)
            .env("RENDEZVOUS_SECRET", SECRET);
        Self {
            dir,
            command,
            task: task.to_owned(),
        }
    }

    /// GitLab CI's variables instead of GitHub's.
    fn gitlab(mut self) -> Self {
        self.command
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env("GITLAB_CI", "true")
            .env("CI_JOB_ID", "77")
            .env("CI_PROJECT_DIR", self.dir.path());
        self
    }

    fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn start(self) -> (Running, tempfile::TempDir) {
        let Self { dir, command, task } = self;
        (
            Running {
                out: ProcessOutput::spawn(command),
                task,
            },
            dir,
        )
    }
}

/// A job that runs.
struct Running {
    out: ProcessOutput,
    task: String,
}

impl Running {
    /// Waits until the job prints the link, then opens a new shell in it.
    async fn guest(&mut self, server: &TestServer) -> TermGuest {
        let link = self.out.stderr_line("rendezvous: Open ").await;
        assert!(link.contains("#secret="), "{link}");
        self.attach(server, SECRET, "").await
    }

    async fn attach(&self, server: &TestServer, secret: &str, token: &str) -> TermGuest {
        let request = AttachRequest {
            task_id: self.task.clone(),
            secret: secret.to_owned(),
            token: token.to_owned(),
            cols: 100,
            rows: 30,
            ..Default::default()
        };
        TermGuest::open(server, request).await.expect("attach")
    }

    /// Waits for the job to end; returns its exit code.
    async fn code(&mut self) -> i32 {
        self.out.exited().await.code().expect("an exit code")
    }
}

/// Types `rendezvous continue ARGS` into the guest's shell. The hold
/// ends at once, and with it the host and this shell: nothing to wait
/// for in its output.
async fn continue_in(guest: &TermGuest, args: &str) {
    guest
        .type_text(&format!("rendezvous continue{args}\n"))
        .await;
}

/// Types `line` into the guest's shell and waits for `marker` in its
/// output.
async fn type_in(guest: &mut TermGuest, line: &str, marker: &str) {
    guest.type_text(&format!("{line}\n")).await;
    guest.events.until(marker).await;
}

const FAILING_STEP: &str = "echo 'step 1: ok'\n\
    rendezvous run --on-failure --wait-for-guest 60s -- sh -c 'echo compiling; exit 3'\n\
    echo \"after the step: $?\"\n";

#[tokio::test]
async fn a_failing_step_opens_a_shell_and_continue_lets_the_job_go_on_with_its_code() {
    let server = TestServer::start().await;
    let (mut job, dir) = Job::new(&server, "ci-continue", FAILING_STEP).start();
    let mut guest = job.guest(&server).await;
    job.out
        .stderr_line("rendezvous: guest attached (read-write)")
        .await;
    // The shell knows the step's exit code, and reaches the hold with no
    // flags.
    type_in(&mut guest, "echo code=$RENDEZVOUS_STEP_EXIT_CODE", "code=3").await;
    continue_in(&guest, "").await;
    assert_eq!(job.code().await, 0, "the script goes on after the step");
    let stdout = job.out.stdout();
    assert!(stdout.contains("step 1: ok\ncompiling\n"), "{stdout}");
    assert!(stdout.contains("after the step: 3"), "{stdout}");
    let stderr = job.out.stderr();
    for line in [
        "rendezvous: the step failed with exit code 3",
        "rendezvous: waiting for a guest (at most 1m)",
        "rendezvous: continued by a guest",
        "rendezvous: the job goes on; exit code 3",
    ] {
        assert!(stderr.contains(line), "{line:?} missing:\n{stderr}");
    }
    // On GitHub Actions: the summary has the link, the log an annotation.
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(
        summary.contains(&format!("]({}/t/ci-continue#secret={SECRET})", server.url)),
        "{summary}"
    );
    assert!(stdout.contains("::notice title=Rendezvous::"), "{stdout}");
}

#[tokio::test]
async fn the_posix_snippet_installs_nothing_when_rendezvous_is_there_and_runs_the_step() {
    let snippet = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ci/rendezvous.sh");
    let script = format!(
        ". '{}'\n\
         rendezvous_install || exit 9\n\
         rendezvous run --on-failure --wait-for-guest 60s -- sh -c 'exit 6'\n\
         echo \"after the step: $?\"\n",
        snippet.display()
    );
    let server = TestServer::start().await;
    let (mut job, _dir) = Job::new(&server, "ci-snippet", &script).start();
    let guest = job.guest(&server).await;
    continue_in(&guest, "").await;
    assert_eq!(job.code().await, 0);
    assert!(
        job.out.stdout().contains("after the step: 6"),
        "{}",
        job.out.stderr()
    );

    // Without the binary and without a way to get it, it says what to set.
    let script = format!(
        "PATH=/usr/bin:/bin\n. '{}'\nrendezvous_install\necho \"install: $?\"\n",
        snippet.display()
    );
    let (mut job, _dir) = Job::new(&server, "ci-snippet-2", &script).start();
    assert_eq!(job.code().await, 0);
    assert!(
        job.out.stdout().contains("install: 1"),
        "{}",
        job.out.stdout()
    );
    assert!(
        job.out.stderr().contains("set RENDEZVOUS_BINARY_URL"),
        "{}",
        job.out.stderr()
    );
}

#[tokio::test]
async fn continue_with_an_exit_code_replaces_the_steps() {
    let server = TestServer::start().await;
    let (mut job, _dir) = Job::new(&server, "ci-exit-code", FAILING_STEP).start();
    let guest = job.guest(&server).await;
    continue_in(&guest, " --exit-code 0").await;
    assert_eq!(job.code().await, 0);
    assert!(job.out.stdout().contains("after the step: 0"));
    assert!(
        job.out
            .stderr()
            .contains("continued by a guest, with exit code 0")
    );
}

#[tokio::test]
async fn nobody_attaching_within_wait_for_guest_lets_the_job_fail_as_it_would() {
    let server = TestServer::start().await;
    let script = "rendezvous run --wait-for-guest 1s -- sh -c 'exit 7'";
    let (mut job, _dir) = Job::new(&server, "ci-nobody", script).start();
    assert_eq!(job.code().await, 7);
    let stderr = job.out.stderr();
    assert!(
        stderr.contains("rendezvous: timed out: no guest attached within 1s"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_passing_step_holds_only_with_always_and_the_idle_timeout_ends_it() {
    let server = TestServer::start().await;
    let script = "rendezvous run -- true && echo passed-through\n\
                  rendezvous run --always --idle-timeout 1s -- true; echo \"always: $?\"";
    let (mut job, _dir) = Job::new(&server, "ci-idle", script).start();
    assert_eq!(job.code().await, 0);
    let stdout = job.out.stdout();
    assert!(stdout.contains("passed-through\n"), "{stdout}");
    assert!(stdout.contains("always: 0\n"), "{stdout}");
    let stderr = job.out.stderr();
    assert_eq!(stderr.matches("opening a shell").count(), 1, "{stderr}");
    assert!(
        stderr.contains("timed out: no guest for 1s (idle timeout)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_hold_lingers_after_the_last_guest_leaves_and_then_ends() {
    let server = TestServer::start().await;
    let script = "rendezvous run --wait-for-guest 60s --linger 1s -- false";
    let (mut job, _dir) = Job::new(&server, "ci-linger", script).start();
    let guest = job.guest(&server).await;
    job.out.stderr_line("rendezvous: guest attached").await;
    drop(guest);
    job.out
        .stderr_line("rendezvous: guest detached (read-write); 0 still attached")
        .await;
    job.out
        .stderr_line("rendezvous: the last guest left; holding 1s")
        .await;
    assert_eq!(job.code().await, 1);
    assert!(
        job.out
            .stderr()
            .contains("timed out: no guest came back within 1s (linger)")
    );
}

#[tokio::test]
async fn extend_holds_the_job_past_the_linger() {
    let server = TestServer::start().await;
    let script = "rendezvous run --wait-for-guest 60s --linger 1s -- false";
    let (mut job, _dir) = Job::new(&server, "ci-extend", script).start();
    let mut guest = job.guest(&server).await;
    type_in(&mut guest, "rendezvous extend 4s", "rendezvous: holding").await;
    job.out
        .stderr_line("rendezvous: extended: holding at least 4s from now")
        .await;
    drop(guest);
    let left = std::time::Instant::now();
    job.out
        .stderr_line("rendezvous: the last guest left; holding 1s")
        .await;
    assert_eq!(job.code().await, 1);
    // A lower bound only: a slow machine makes it longer, never shorter.
    assert!(
        left.elapsed() >= Duration::from_secs(3),
        "the 1s linger ended the hold after {:?}, inside the extension",
        left.elapsed()
    );
}

#[tokio::test]
async fn max_hold_is_a_hard_cap_that_extend_cannot_pass() {
    let server = TestServer::start().await;
    let script = "rendezvous run --max-hold 4s -- false";
    let (mut job, _dir) = Job::new(&server, "ci-max-hold", script).start();
    let mut guest = job.guest(&server).await;
    type_in(&mut guest, "rendezvous extend 60s", "rendezvous: holding").await;
    job.out
        .stderr_line("rendezvous: extended by 1m, but --max-hold ends the hold in")
        .await;
    // A guest is attached and asked for a minute more: the cap ends the
    // hold anyway.
    assert_eq!(job.code().await, 1);
    assert!(
        job.out
            .stderr()
            .contains("timed out: held for the maximum of 4s"),
        "{}",
        job.out.stderr()
    );
}

#[tokio::test]
async fn a_detached_host_serves_the_whole_job_and_wait_holds_it_at_the_end() {
    let server = TestServer::start().await;
    let script = "rendezvous host --detach || exit 9\n\
                  echo 'the job runs'\n\
                  rendezvous wait --wait-for-guest 60s\n\
                  echo \"after wait: $?\"";
    let job = Job::new(&server, "ci-detached", script);
    let socket = job.dir.path().join("runtime/detached.sock");
    let (mut job, _dir) = job.start();
    let guest = job.guest(&server).await;
    job.out.stdout_line("the job runs").await;
    // `wait` has started the hold and names the guest attached (a
    // `continue` typed before that would end the hold at once, without
    // the line).
    job.out
        .stderr_line("rendezvous: guest attached (read-write)")
        .await;
    continue_in(&guest, " --exit-code 5").await;
    assert_eq!(job.code().await, 0);
    assert!(
        job.out.stdout().contains("after wait: 5"),
        "{}{}",
        job.out.stdout(),
        job.out.stderr()
    );
    // The background host ends with the wait.
    let deadline = tokio::time::Instant::now() + rendezvous_testkit::DEADLINE;
    while socket.exists() {
        assert!(tokio::time::Instant::now() < deadline, "the host stays");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn webhooks_tell_ready_attached_continued_and_ended_without_the_secret() {
    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-ci-key";
    let server = TestServer::with_config(ServerConfig {
        token_key: Some(TokenKey::new(KEY).unwrap()),
        ..ServerConfig::default()
    })
    .await;
    let mut hook = WebhookServer::start().await;
    let script = "rendezvous run --no-link-in-log --wait-for-guest 60s -- false";
    let job = Job::new(&server, "ci-hook", script).env("RENDEZVOUS_NOTIFY_URL", hook.url());
    let (mut job, dir) = job.start();
    let ready = hook.until_event("ready").await;
    assert_eq!(ready["task"], "ci-hook");
    assert_eq!(ready["host"], "default");
    assert_eq!(ready["state"], "waiting");
    assert_eq!(ready["url"], format!("{}/t/ci-hook", server.url));
    let token = TokenKey::new(KEY)
        .unwrap()
        .mint(
            "ci-hook",
            &Owner::open(),
            Role::ReadWrite,
            Duration::from_secs(600),
            Some("alice"),
        )
        .unwrap();
    let guest = job.attach(&server, "", &token).await;
    let attached = hook.until_event("attached").await;
    assert_eq!(attached["sub"], "alice");
    assert_eq!(attached["role"], "read-write");
    job.out
        .stderr_line("rendezvous: guest attached (read-write, sub alice)")
        .await;
    continue_in(&guest, "").await;
    assert_eq!(job.code().await, 1);
    hook.until_event("continued").await;
    assert_eq!(hook.until_event("ended").await["state"], "ended");
    // --no-link-in-log: neither the log nor any event holds the secret;
    // the summary does.
    let everything = format!(
        "{}{}{:?}",
        job.out.stdout(),
        job.out.stderr(),
        hook.bodies()
    );
    assert!(!everything.contains(SECRET), "{everything}");
    assert!(everything.contains(&format!("Open {}/t/ci-hook", server.url)));
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(summary.contains(SECRET));
}

/// The YAML document at `path` in the repository.
fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
        .remove(0)
}

#[tokio::test]
async fn the_github_action_runs_the_step_and_sets_its_outputs() {
    let action = yaml("deploy/ci/github/action.yml");
    assert_eq!(action["runs"]["using"].as_str(), Some("composite"));
    for output in ["url", "task-id"] {
        assert!(!action["outputs"][output].is_badvalue(), "output {output}");
    }
    let step = action["runs"]["steps"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|s| s["id"].as_str() == Some("rendezvous"))
        .expect("the rendezvous step")
        .clone();
    let script = step["run"].as_str().unwrap();
    assert!(
        script.contains("rendezvous run \"--$RDV_MODE\""),
        "{script}"
    );
    // Every input the step reads is an input of the action.
    for (var, value) in step["env"].as_hash().unwrap() {
        let value = value.as_str().unwrap();
        let input = value
            .trim_start_matches("${{ inputs.")
            .trim_end_matches(" }}");
        assert!(
            !action["inputs"][input].is_badvalue(),
            "{var:?} reads an unknown input {input}"
        );
    }
    let install = action["runs"]["steps"][0]["run"].as_str().unwrap();
    let server = TestServer::start().await;
    // As GitHub runs it: inputs as variables, the install step first.
    let job = Job::new(&server, "ci-action", &format!("{install}\n{script}"))
        .env("RDV_MODE", "on-failure")
        .env("RDV_RUN", "echo testing; exit 4")
        .env("RDV_WAIT_FOR_GUEST", "1s")
        .env("RDV_IDLE_TIMEOUT", "15m")
        .env("RDV_MAX_HOLD", "")
        .env("RDV_LINGER", "")
        .env("RDV_NO_LINK_IN_LOG", "true")
        .env("RDV_BINARY_URL", "")
        .env("RDV_GIT_URL", "")
        .env("RENDEZVOUS_HOST_TOKEN", "")
        .env("RENDEZVOUS_NOTIFY_URL", "");
    let (mut running, dir) = job.start();
    assert_eq!(running.code().await, 4, "{}", running.out.stderr());
    assert!(running.out.stdout().contains("testing"));
    let outputs = std::fs::read_to_string(dir.path().join("output")).unwrap();
    assert!(
        outputs.contains(&format!("url={}/t/ci-action\n", server.url)),
        "{outputs}"
    );
    assert!(outputs.contains("task-id=ci-action\n"), "{outputs}");
    assert!(!running.out.stderr().contains(SECRET));
}

#[tokio::test]
async fn the_gitlab_template_and_example_job_run_with_a_collapsed_section() {
    let template = yaml("deploy/ci/gitlab/rendezvous.gitlab-ci.yml");
    let example = yaml("deploy/ci/gitlab/example.gitlab-ci.yml");
    assert_eq!(
        example["include"][0]["local"].as_str(),
        Some("deploy/ci/gitlab/rendezvous.gitlab-ci.yml")
    );
    assert_eq!(example["test"]["extends"].as_str(), Some(".rendezvous"));
    let lines = |y: &Yaml| -> String {
        y.as_vec()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = lines(&template[".rendezvous"]["before_script"]);
    let script = lines(&example["test"]["script"]);
    assert!(script.contains("rendezvous run --on-failure $RENDEZVOUS_HOLD_FLAGS"));
    let server = TestServer::start().await;
    let job = Job::new(&server, "ci-gitlab", &format!("set -e\n{before}\n{script}"))
        .gitlab()
        .env("RENDEZVOUS_HOLD_FLAGS", "--wait-for-guest 1s")
        .env("RENDEZVOUS_BINARY_URL", "");
    std::fs::create_dir(job.dir.path().join("ci")).unwrap();
    let test_sh = job.dir.path().join("ci/test.sh");
    std::fs::write(&test_sh, "#!/bin/sh\necho gitlab-step\nexit 6\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&test_sh, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert!(job.file("summary.md").is_empty());
    let (mut running, _dir) = job.start();
    assert_eq!(running.code().await, 6);
    let stdout = running.out.stdout();
    assert!(stdout.contains("gitlab-step"), "{stdout}");
    assert!(
        stdout.contains("section_start:") && stdout.contains(":rendezvous[collapsed=true]"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("Open {}/t/ci-gitlab#secret=", server.url)));
    assert!(stdout.contains("section_end:"), "{stdout}");
}
