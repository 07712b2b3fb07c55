//! The flags every command that publishes shells shares (`host`, `run`):
//! server, credentials, task and host names, labels; and the
//! [`HostBuilder`] they make.

use std::fmt;
use std::str::FromStr;

use rendezvous_host::{
    GITHUB_REQUEST_TOKEN_ENV, GITHUB_REQUEST_URL_ENV, Host, HostBuilder, IdTokenSource,
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

/// Longest task ID, in characters (the wire rule).
const MAX_TASK_ID_CHARS: usize = 128;

/// Where to publish, and as whom.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// URL of the rendezvous server (http:// or https://).
    #[arg(
        long,
        value_name = "URL",
        env = "RENDEZVOUS_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    #[command(flatten)]
    pub tls: crate::cli::tls_args::TlsArgs,
    /// How long the shells keep running after the connection to the
    /// server is lost, while the host reconnects; it then resumes them
    /// where they were (guests see no gap). 0 ends them at once. The
    /// server keeps them at most its --max-grace-period (30m by default).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::cli::serve::parse_duration_or_zero, env = "RENDEZVOUS_GRACE_PERIOD")]
    pub grace_period: std::time::Duration,
    /// Bytes of each shell's output the host keeps beyond what the server
    /// has confirmed (default 1 MiB, the server's retained output), to
    /// refill a restarted server; when that much is unconfirmed the shell
    /// waits. Nothing is dropped.
    #[arg(long, value_name = "BYTES", default_value_t = rendezvous_host::RETAINED_OUTPUT_BYTES, env = "RENDEZVOUS_HOST_RETAINED_OUTPUT_BYTES")]
    pub retained_output_bytes: usize,
    /// The task to publish: 1-128 characters of A-Z a-z 0-9 . _ : -
    /// Default on GitHub Actions `github-RUN_ID-ATTEMPT-JOB`, on GitLab CI
    /// `gitlab-CI_JOB_ID`.
    #[arg(long, value_name = "ID", env = "RENDEZVOUS_TASK_ID")]
    pub task_id: Option<String>,
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
    pub name: String,
    /// A label shown to guests; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
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

/// A task ID from the CI system's variables (`get` reads one), with
/// characters outside the task ID charset replaced by `-`.
fn ci_task_id(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let raw = if let (Some(run), Some(job)) = (get("GITHUB_RUN_ID"), get("GITHUB_JOB")) {
        let attempt = get("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into());
        format!("github-{run}-{attempt}-{job}")
    } else if let Some(job) = get("CI_JOB_ID") {
        format!("gitlab-{job}")
    } else {
        return None;
    };
    Some(
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(MAX_TASK_ID_CHARS)
            .collect(),
    )
}

impl PublishArgs {
    /// The task ID given, or the CI system's.
    ///
    /// # Errors
    /// Neither given nor in a known CI system.
    pub fn task_id(&self) -> anyhow::Result<String> {
        self.task_id
            .clone()
            .or_else(|| ci_task_id(|name| std::env::var(name).ok()))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "give --task-id (or RENDEZVOUS_TASK_ID): outside GitHub Actions and GitLab \
                     CI there is no default"
                )
            })
    }

    /// A host builder with these settings; the shells lose the variables
    /// that carried secrets and the means to mint identity tokens.
    ///
    /// # Errors
    /// As [`id_token_source`], and bad TLS options or no task ID.
    pub fn builder(&self) -> anyhow::Result<HostBuilder> {
        let id_token = match self.host_token {
            Some(_) => None,
            None => id_token_source(self)?,
        };
        let mut builder = Host::builder(self.server.clone())
            .tls(self.tls.options()?)
            .task_id(self.task_id()?)
            .name(self.name.clone())
            .grace_period(self.grace_period)
            .retained_output_bytes(self.retained_output_bytes)
            // The shells must not inherit the secrets from our environment.
            .env_remove(SECRET_ENV)
            .env_remove(READ_ONLY_SECRET_ENV)
            .env_remove(HOST_TOKEN_ENV)
            // Nor the means to mint the job's identity tokens.
            .env_remove(GITHUB_REQUEST_URL_ENV)
            .env_remove(GITHUB_REQUEST_TOKEN_ENV);
        if let Some(var) = &self.oidc_token_env {
            builder = builder.env_remove(var);
        }
        if let Some(SecretArg(token)) = &self.host_token {
            builder = builder.host_token(token);
        } else if let Some(source) = id_token {
            builder = builder.id_token(source);
        }
        if let Some(SecretArg(secret)) = &self.secret {
            builder = builder.secret(secret);
        }
        if let Some(SecretArg(secret)) = &self.read_only_secret {
            builder = builder.read_only_secret(secret);
        }
        for (key, value) in &self.labels {
            builder = builder.label(key, value);
        }
        Ok(builder)
    }
}

/// Where the CI identity token comes from, by `--oidc-token-env` or
/// `--oidc-audience` (GitHub Actions' endpoint); `None` without either.
///
/// # Errors
/// When the variable named is unset, or `--oidc-audience` is given
/// outside GitHub Actions.
fn id_token_source(args: &PublishArgs) -> anyhow::Result<Option<IdTokenSource>> {
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: PublishArgs,
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
        ])
        .unwrap();
        assert_eq!(cli.args.name, "default");
        assert_eq!(
            cli.args.labels,
            [("job".into(), "42".into()), ("os".into(), "linux=x".into())]
        );
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

    #[test]
    fn ci_systems_name_the_task() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            ci_task_id(env(&[
                ("GITHUB_RUN_ID", "123"),
                ("GITHUB_RUN_ATTEMPT", "2"),
                ("GITHUB_JOB", "test linux")
            ])),
            Some("github-123-2-test-linux".into())
        );
        assert_eq!(
            ci_task_id(env(&[("CI_JOB_ID", "77")])),
            Some("gitlab-77".into())
        );
        assert_eq!(ci_task_id(env(&[])), None);
    }
}
