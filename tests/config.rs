//! Configuration in three forms (issue 12, point 1): flags, environment
//! variables `RENDEZVOUS_*` and a TOML file (`--config`), in that order of
//! precedence; `--print-config` shows the result with each value's source
//! and secrets redacted; a bad key or value is named with its source.

use std::path::PathBuf;
use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_rendezvous");

/// A file under the test's own temporary directory.
fn file(test: &str, name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("config")
        .join(test);
    std::fs::create_dir_all(&dir).expect("a directory for the test");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("the file is written");
    path
}

/// Runs the binary with `args` and `env`, and no other RENDEZVOUS_*
/// variable from the test's environment.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BINARY);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RENDEZVOUS_") {
            command.env_remove(name);
        }
    }
    command.args(args).envs(env.iter().copied());
    command.output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}, stderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

/// The refusal's text, after checking it is a usage error (exit code 2).
fn refusal(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(2),
        "a usage error; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr.clone()).expect("UTF-8")
}

/// The line of `key` in `--print-config` output.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key}:")))
        .unwrap_or_else(|| panic!("no line for {key} in:\n{printed}"))
}

#[test]
fn a_flag_wins_over_the_environment_which_wins_over_the_file_which_wins_over_the_default() {
    let config = file(
        "precedence",
        "serve.toml",
        "listen = \"127.0.0.1:7001\"\n\
         max-hosts = 7\n\
         session-idle-timeout = \"5m\"\n\
         allow-open-registration = true\n",
    );
    let path = config.to_str().unwrap();
    let printed = stdout(&run(
        &[
            "serve",
            "--config",
            path,
            "--session-idle-timeout",
            "6m",
            "--print-config",
        ],
        &[("RENDEZVOUS_MAX_HOSTS", "8")],
    ));
    assert_eq!(
        line(&printed, "listen"),
        "listen = \"127.0.0.1:7001\"  # file"
    );
    assert_eq!(
        line(&printed, "max-hosts"),
        "max-hosts = \"8\"  # environment RENDEZVOUS_MAX_HOSTS"
    );
    assert_eq!(
        line(&printed, "session-idle-timeout"),
        "session-idle-timeout = \"6m\"  # flag"
    );
    assert_eq!(
        line(&printed, "allow-open-registration"),
        "allow-open-registration = true  # file"
    );
    assert_eq!(
        line(&printed, "stalled-guest-timeout"),
        "stalled-guest-timeout = \"60s\"  # default"
    );
    assert_eq!(
        line(&printed, "metrics-listen"),
        "# metrics-listen: not set"
    );
    assert!(printed.contains(&format!("# configuration file: {path}")));

    // The file may come from RENDEZVOUS_CONFIG too, and what
    // --print-config prints is a file --config takes back, as it is.
    let again = file("precedence", "printed.toml", &printed);
    let reprinted = stdout(&run(
        &["serve", "--print-config"],
        &[("RENDEZVOUS_CONFIG", again.to_str().unwrap())],
    ));
    for key in [
        "listen",
        "max-hosts",
        "session-idle-timeout",
        "allow-open-registration",
    ] {
        let value = |p: &str| line(p, key).split("  #").next().unwrap().to_owned();
        assert_eq!(value(&reprinted), value(&printed), "{key} read back");
        assert!(
            line(&reprinted, key).ends_with("# file"),
            "{key} now comes from the file"
        );
    }
}

#[test]
fn a_bad_value_is_refused_naming_its_key_its_source_and_what_is_allowed() {
    // From the file.
    let bad = file("bad-value", "serve.toml", "max-hosts = \"many\"\n");
    let path = bad.to_str().unwrap();
    let text = refusal(&run(&["serve", "--config", path, "--print-config"], &[]));
    assert!(
        text.contains("'many'") && text.contains("--max-hosts"),
        "{text}"
    );
    assert!(text.contains("invalid digit"), "what is allowed: {text}");
    assert!(
        text.contains(&format!("key `max-hosts` in the configuration file {path}")),
        "{text}"
    );
    // From the environment.
    let text = refusal(&run(
        &["serve", "--print-config"],
        &[("RENDEZVOUS_LISTEN", "nowhere")],
    ));
    assert!(
        text.contains("'nowhere'") && text.contains("--listen"),
        "{text}"
    );
    assert!(
        text.contains("the environment variable RENDEZVOUS_LISTEN"),
        "{text}"
    );
    // From a flag: clap's own message names the flag.
    let text = refusal(&run(&["serve", "--max-hosts", "x", "--print-config"], &[]));
    assert!(
        text.contains("--max-hosts") && text.contains("'x'"),
        "{text}"
    );
}

#[test]
fn an_unknown_key_a_wrong_type_and_a_file_that_is_not_toml_are_refused() {
    let unknown = file("unknown", "serve.toml", "listn = \"127.0.0.1:1\"\n");
    let text = refusal(&run(
        &[
            "serve",
            "--config",
            unknown.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    ));
    assert!(text.contains("unknown key `listn`"), "{text}");
    assert!(text.contains("listen, "), "the keys it takes: {text}");

    let wrong = file("unknown", "type.toml", "listen = [\"127.0.0.1:1\"]\n");
    let text = refusal(&run(
        &[
            "serve",
            "--config",
            wrong.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    ));
    assert!(
        text.contains("key `listen`") && text.contains("must be a string or a number"),
        "{text}"
    );

    let flag = file(
        "unknown",
        "flag.toml",
        "allow-open-registration = \"yes\"\n",
    );
    let text = refusal(&run(
        &[
            "serve",
            "--config",
            flag.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    ));
    assert!(text.contains("must be true or false"), "{text}");

    let broken = file("unknown", "broken.toml", "listen = \n");
    let text = refusal(&run(
        &[
            "serve",
            "--config",
            broken.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    ));
    assert!(text.contains("is not valid TOML"), "{text}");

    let text = refusal(&run(
        &["serve", "--config", "/nonexistent/rendezvous.toml"],
        &[],
    ));
    assert!(
        text.contains("cannot read the configuration file /nonexistent/rendezvous.toml"),
        "{text}"
    );
}

#[test]
fn secrets_are_redacted_from_the_printed_configuration_and_from_errors() {
    const SECRET: &str = "config-canary-secret-Rw83nQ";
    const TOKEN: &str = "config-canary-token-Zp41xT";
    let config = file(
        "secrets",
        "host.toml",
        &format!("server = \"http://127.0.0.1:9\"\ntask-id = \"t\"\nsecret = \"{SECRET}\"\n"),
    );
    let printed = stdout(&run(
        &[
            "host",
            "--config",
            config.to_str().unwrap(),
            "--print-config",
        ],
        &[("RENDEZVOUS_HOST_TOKEN", TOKEN)],
    ));
    assert!(
        !printed.contains(SECRET) && !printed.contains(TOKEN),
        "{printed}"
    );
    assert_eq!(line(&printed, "secret"), "secret = \"<redacted>\"  # file");
    assert_eq!(
        line(&printed, "host-token"),
        "host-token = \"<redacted>\"  # environment RENDEZVOUS_HOST_TOKEN"
    );
    // Required flags may come from the file: the host's --server and --task-id did.
    assert_eq!(line(&printed, "task-id"), "task-id = \"t\"  # file");
}

#[test]
fn a_global_flag_such_as_log_format_is_a_key_of_the_file_too() {
    let config = file("global", "serve.toml", "log-format = \"json\"\n");
    let printed = stdout(&run(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--print-config",
        ],
        &[],
    ));
    assert_eq!(
        line(&printed, "log-format"),
        "log-format = \"json\"  # file"
    );

    let bad = file("global", "bad.toml", "log-format = \"xml\"\n");
    let text = refusal(&run(
        &["serve", "--config", bad.to_str().unwrap(), "--print-config"],
        &[],
    ));
    assert!(
        text.contains("possible values: text, json") || text.contains("xml"),
        "{text}"
    );
    assert!(
        text.contains("key `log-format` in the configuration file"),
        "{text}"
    );
}

#[test]
fn an_on_off_variable_set_to_off_is_as_if_unset_and_conflicts_with_nothing() {
    // As an image's or a chart's default may set it: with TLS flags too.
    let cert = file("off-switch", "cert.pem", "");
    let printed = stdout(&run(
        &[
            "serve",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            cert.to_str().unwrap(),
            "--print-config",
        ],
        &[("RENDEZVOUS_INSECURE", "false")],
    ));
    assert_eq!(line(&printed, "insecure"), "insecure = false  # default");
    // On is on, and conflicts as the flag does.
    let text = refusal(&run(
        &[
            "serve",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            cert.to_str().unwrap(),
            "--print-config",
        ],
        &[("RENDEZVOUS_INSECURE", "true")],
    ));
    assert!(text.contains("--insecure"), "{text}");
}
