//! `rendezvous host`: publish shells of this machine under a task ID.
//!
//! Thin over [`rendezvous_host::Host`]: parse flags, build the host, print
//! the guest URL once the server has accepted it, run until Ctrl-C or
//! SIGTERM.

use std::fmt;
use std::io::Write as _;
use std::str::FromStr;

use anyhow::Context as _;
use rendezvous_host::{
    GITHUB_REQUEST_TOKEN_ENV, GITHUB_REQUEST_URL_ENV, Host, HostStatus, IdTokenSource,
};

/// Environment variable that may carry `--secret`. Removed from the
/// environment of the shells the host starts.
const SECRET_ENV: &str = "RENDEZVOUS_SECRET";
/// Environment variable that may carry `--read-only-secret`; removed like
/// [`SECRET_ENV`].
const READ_ONLY_SECRET_ENV: &str = "RENDEZVOUS_READ_ONLY_SECRET";
/// Environment variable that may carry `--host-token`; removed like
/// [`SECRET_ENV`].
const HOST_TOKEN_ENV: &str = "RENDEZVOUS_HOST_TOKEN";

/// Arguments of `rendezvous host`.
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    /// URL of the rendezvous server (http:// or https://).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    #[command(flatten)]
    tls: crate::cli::tls_args::TlsArgs,
    /// The task to publish: 1-128 characters of A-Z a-z 0-9 . _ : -
    #[arg(long, value_name = "ID")]
    task_id: String,
    /// The read-write secret guests present (at least 22 characters).
    /// Generated when absent. Prefer the environment variable: other users
    /// can see command lines.
    #[arg(long, env = SECRET_ENV, hide_env_values = true)]
    secret: Option<SecretArg>,
    /// An optional read-only secret: its guests may watch, not type.
    #[arg(long, env = READ_ONLY_SECRET_ENV, hide_env_values = true)]
    read_only_secret: Option<SecretArg>,
    /// The host token the server's operator gave you, for a server that
    /// admits only hosts with one (`serve --host-token-file`). Prefer the
    /// environment variable: other users can see command lines.
    #[arg(long, env = HOST_TOKEN_ENV, hide_env_values = true)]
    host_token: Option<SecretArg>,
    /// Without --host-token, present the CI job's identity token for this
    /// audience (the server's --host-oidc-audience). On GitHub Actions the
    /// host requests it itself, anew for each connection (the job needs
    /// `permissions: id-token: write`).
    #[arg(long, value_name = "AUD", env = "RENDEZVOUS_OIDC_AUDIENCE")]
    oidc_audience: Option<String>,
    /// Without --host-token, present the identity token held in this
    /// environment variable (GitLab CI: the name of an `id_tokens:` entry,
    /// whose `aud` is set there). The variable is removed from the
    /// shells' environment.
    #[arg(long, value_name = "VAR", conflicts_with = "oidc_audience")]
    oidc_token_env: Option<String>,
    /// This host's name within the task, when a task has several hosts.
    #[arg(long, value_name = "NAME", default_value = "default")]
    name: String,
    /// A label shown to guests; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Command each new shell runs (default: $SHELL, else your login shell, else /bin/sh).
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// A secret from the command line or environment; `Debug` hides it.
#[derive(Clone)]
struct SecretArg(String);

impl FromStr for SecretArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Where the CI identity token comes from, by `--oidc-token-env` or
/// `--oidc-audience` (GitHub Actions' endpoint); `None` without either.
///
/// # Errors
/// When the variable named is unset, or `--oidc-audience` is given
/// outside GitHub Actions.
fn id_token_source(args: &HostArgs) -> anyhow::Result<Option<IdTokenSource>> {
    if let Some(var) = &args.oidc_token_env {
        let token = std::env::var(var).map_err(|_| {
            anyhow::anyhow!(
                "--oidc-token-env {var}: the variable is not set; on GitLab CI, add \
                 `id_tokens: {var}: aud: AUDIENCE` to the job"
            )
        })?;
        return Ok(Some(IdTokenSource::fixed(token)));
    }
    let Some(audience) = &args.oidc_audience else {
        return Ok(None);
    };
    IdTokenSource::github_actions_from_env(audience)
        .map(Some)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--oidc-audience needs GitHub Actions' {GITHUB_REQUEST_URL_ENV} and \
                 {GITHUB_REQUEST_TOKEN_ENV}: give the job `permissions: id-token: write`, \
                 or use --oidc-token-env VAR elsewhere"
            )
        })
}

/// Runs `rendezvous host` until Ctrl-C or SIGTERM (then ends every session
/// and returns), or until the server refuses the host for good.
pub async fn run(args: HostArgs) -> anyhow::Result<()> {
    let id_token = match args.host_token {
        Some(_) => None,
        None => id_token_source(&args)?,
    };
    let mut builder = Host::builder(args.server)
        .tls(args.tls.options()?)
        .task_id(args.task_id)
        .name(args.name)
        // The shells must not inherit the secrets from our environment.
        .env_remove(SECRET_ENV)
        .env_remove(READ_ONLY_SECRET_ENV)
        .env_remove(HOST_TOKEN_ENV)
        // Nor the means to mint the job's identity tokens.
        .env_remove(GITHUB_REQUEST_URL_ENV)
        .env_remove(GITHUB_REQUEST_TOKEN_ENV);
    if let Some(var) = &args.oidc_token_env {
        builder = builder.env_remove(var);
    }
    if let Some(SecretArg(token)) = args.host_token {
        builder = builder.host_token(token);
    } else if let Some(source) = id_token {
        builder = builder.id_token(source);
    }
    if let Some(SecretArg(secret)) = args.secret {
        builder = builder.secret(secret);
    }
    if let Some(SecretArg(secret)) = args.read_only_secret {
        builder = builder.read_only_secret(secret);
    }
    for (key, value) in args.labels {
        builder = builder.label(key, value);
    }
    if let Some((program, rest)) = args.command.split_first() {
        builder = builder.command(program, rest);
    }
    let host = builder.build().context("invalid host settings")?;
    let guest_url = host.guest_url();
    let mut status = host.status();

    let run = host.run(crate::cli::serve::shutdown_signal());
    tokio::pin!(run);
    // Print the URL once, when the server first accepts the host, so that
    // it works when opened. Later registrations (after a reconnect) are
    // logged by the library.
    let mut printed = false;
    loop {
        tokio::select! {
            result = &mut run => {
                return result.context("the rendezvous server refused this host");
            }
            changed = status.changed(), if !printed => {
                if changed.is_err() {
                    printed = true; // The host is gone; `run` ends next.
                } else if matches!(*status.borrow_and_update(), HostStatus::Registered { .. }) {
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "Open {guest_url}")?;
                    stdout.flush()?;
                    printed = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: HostArgs,
    }

    #[test]
    fn flags_parse_and_debug_hides_secrets() {
        let cli = Cli::try_parse_from([
            "host",
            "--task-id",
            "build-42",
            "--secret",
            "a-secret-of-enough-length",
            "--host-token",
            "a-host-token-of-enough-length",
            "--label",
            "job=42",
            "--label",
            "os=linux=x",
            "--",
            "bash",
            "-l",
        ])
        .unwrap();
        assert_eq!(cli.args.server, "http://127.0.0.1:8080");
        assert_eq!(cli.args.name, "default");
        assert_eq!(
            cli.args.labels,
            [("job".into(), "42".into()), ("os".into(), "linux=x".into())]
        );
        assert_eq!(cli.args.command, ["bash", "-l"]);
        assert!(!format!("{cli:?}").contains("a-secret-of-enough-length"));
        assert!(!format!("{cli:?}").contains("a-host-token-of-enough-length"));
    }

    #[test]
    fn identity_tokens_come_from_the_named_variable_or_github_actions() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from([&["host", "--task-id", "t"], args].concat())
                .unwrap()
                .args
        };
        let error = id_token_source(&parse(&["--oidc-token-env", "RENDEZVOUS_TEST_UNSET_VAR"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("id_tokens:"), "{error}");
        assert!(id_token_source(&parse(&[])).unwrap().is_none());
        // Outside GitHub Actions (the test's environment has no
        // ACTIONS_ID_TOKEN_REQUEST_URL), an audience alone says what is
        // missing.
        if std::env::var_os(GITHUB_REQUEST_URL_ENV).is_none() {
            let error = id_token_source(&parse(&["--oidc-audience", "aud"]))
                .unwrap_err()
                .to_string();
            assert!(error.contains("id-token: write"), "{error}");
        }
        assert!(
            Cli::try_parse_from([
                "host",
                "--task-id",
                "t",
                "--oidc-audience",
                "a",
                "--oidc-token-env",
                "V"
            ])
            .is_err()
        );
    }

    #[test]
    fn labels_need_a_key_and_equals_sign() {
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=v").is_err());
        assert_eq!(parse_label("k=").unwrap(), ("k".into(), String::new()));
    }
}
