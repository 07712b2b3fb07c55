//! [`HostBuilder`]: collects a host's settings and checks them at the edge,
//! so that a built [`Host`] holds only valid ones.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use rendezvous_proto::endpoint::ServerEndpoint;
use rendezvous_proto::ids::{
    DEFAULT_HOST_NAME, HostName, TaskId, check_labels, check_secret_strength,
};
use rendezvous_proto::tls::TlsOptions;

use crate::pty::CommandSpec;
use crate::secret::Secret;
use crate::session::RETAINED_OUTPUT_BYTES;
use crate::{Host, HostError};

pub use rendezvous_proto::ids::{MAX_LABEL_BYTES, MAX_LABELS};

/// Settings of a [`Host`]; create it with [`Host::builder`], finish it
/// with [`build`](Self::build).
///
/// Its `Debug` output shows no secret.
#[derive(Debug)]
#[must_use]
pub struct HostBuilder {
    server: String,
    task_id: Option<String>,
    secret: Option<Secret>,
    read_only_secret: Option<Secret>,
    host_token: Option<Secret>,
    id_token: Option<crate::IdTokenSource>,
    name: Option<String>,
    command: Option<(OsString, Vec<OsString>)>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    current_dir: Option<PathBuf>,
    labels: BTreeMap<String, String>,
    tls: TlsOptions,
    grace_period: Duration,
    retained_output_bytes: usize,
}

/// Default of [`HostBuilder::grace_period`], in ms (5 min): how long a host
/// keeps its sessions' processes running after it lost its server.
pub const GRACE_PERIOD: Duration = Duration::from_millis(5 * 60 * 1000);

/// Everything a built host knows; only valid values.
#[derive(Debug)]
pub(crate) struct Config {
    /// The server URL as given, without a trailing `/`.
    pub(crate) server: String,
    pub(crate) endpoint: ServerEndpoint,
    pub(crate) task_id: TaskId,
    pub(crate) host_name: HostName,
    pub(crate) secret: Secret,
    pub(crate) read_only_secret: Option<Secret>,
    /// Presented on every Control call, as `authorization: Bearer TOKEN`.
    pub(crate) host_token: Option<Secret>,
    /// Asked for a token on every Control call when there is no
    /// `host_token`.
    pub(crate) id_token: Option<crate::IdTokenSource>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) command: CommandSpec,
    /// See [`HostBuilder::grace_period`].
    pub(crate) grace_period: Duration,
    /// See [`HostBuilder::retained_output_bytes`].
    pub(crate) retained_output_bytes: usize,
}

impl HostBuilder {
    pub(crate) fn new(server: String) -> Self {
        Self {
            server,
            task_id: None,
            secret: None,
            read_only_secret: None,
            host_token: None,
            id_token: None,
            name: None,
            command: None,
            env: Vec::new(),
            env_remove: Vec::new(),
            current_dir: None,
            labels: BTreeMap::new(),
            tls: TlsOptions::default(),
            grace_period: GRACE_PERIOD,
            retained_output_bytes: RETAINED_OUTPUT_BYTES,
        }
    }

    /// How long the host keeps its sessions' processes running after it
    /// loses its connection to the server, reconnecting meanwhile, so that
    /// it resumes them where they were (default [`GRACE_PERIOD`], 5 min;
    /// the server grants at most its own `--max-grace-period`, 30 min by
    /// default). Guests stay attached and are told that the host is
    /// reconnecting. When it is over, the sessions end, and their guests
    /// are told why. [`Duration::ZERO`] turns resuming off: a lost
    /// connection ends every session at once.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// How many bytes of each session's output the host keeps beyond what
    /// the server has confirmed taking (default [`RETAINED_OUTPUT_BYTES`],
    /// 1 MiB, the server's default retained output): enough to refill a
    /// restarted server for late joiners. While that many bytes are
    /// unconfirmed (the server is away, or its guests are behind), the host
    /// stops reading the PTY and the program waits; nothing is dropped.
    /// Taken as at least 1.
    pub fn retained_output_bytes(mut self, bytes: usize) -> Self {
        self.retained_output_bytes = bytes.max(1);
        self
    }

    /// Which `https://` server to trust: a CA certificate (PEM) or a
    /// pinned SHA-256 fingerprint of the server's certificate (see
    /// [`TlsOptions`]). Default: the platform's root certificates. Only
    /// for an `https://` server URL.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// The task this host serves (required): 1–128 characters of
    /// `[A-Za-z0-9._:-]`.
    pub fn task_id(mut self, task_id: impl Into<String>) -> Self {
        self.task_id = Some(task_id.into());
        self
    }

    /// The read-write secret guests present: at least
    /// [`MIN_SECRET_LEN`](rendezvous_proto::ids::MIN_SECRET_LEN) (22) characters. When not set, `build` generates
    /// one with 192 random bits (32 base64url characters).
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(Secret::new(secret.into()));
        self
    }

    /// An optional read-only secret: guests presenting it may watch
    /// sessions but not type, resize or open shells. At least
    /// [`MIN_SECRET_LEN`](rendezvous_proto::ids::MIN_SECRET_LEN) characters, and different from the secret.
    pub fn read_only_secret(mut self, secret: impl Into<String>) -> Self {
        self.read_only_secret = Some(Secret::new(secret.into()));
        self
    }

    /// The host token a server with host admission wants
    /// (`serve --host-token-file`): the host presents it on its Control
    /// call as `authorization: Bearer TOKEN`, and the task belongs to the
    /// identity it names. Printable ASCII without spaces.
    pub fn host_token(mut self, token: impl Into<String>) -> Self {
        self.host_token = Some(Secret::new(token.into()));
        self
    }

    /// Where to get the CI job's identity token, for a server that admits
    /// hosts by it (`serve --host-oidc-issuer`): asked anew on every
    /// Control call (GitHub's tokens live minutes), presented as
    /// `authorization: Bearer TOKEN`. Ignored when a
    /// [`host_token`](Self::host_token) is given.
    pub fn id_token(mut self, source: crate::IdTokenSource) -> Self {
        self.id_token = Some(source);
        self
    }

    /// This host's name within the task (default `default`), for tasks with
    /// several hosts: 1–128 characters of `[A-Za-z0-9._:-]`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The program each session runs, with its arguments. Default: the
    /// user's shell (`$SHELL`, else the login shell from the passwd database,
    /// else `/bin/sh`, as tmux) with no arguments.
    pub fn command<I, S>(mut self, program: impl Into<OsString>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.command = Some((program.into(), args.into_iter().map(Into::into).collect()));
        self
    }

    /// Sets a variable in each session's environment (which otherwise is
    /// this process's, plus `TERM=xterm-256color`). Later calls win.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Removes an inherited variable from each session's environment, e.g.
    /// the one that carried the secret to this process.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// The working directory of each session's process. Default: this
    /// process's. A directory that does not exist makes each session fail
    /// to start (reported to the guest), not `build`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Adds a label shown to guests, e.g. `("job", "42")`. At most
    /// [`MAX_LABELS`] labels, keys and values of at most
    /// [`MAX_LABEL_BYTES`] bytes. A repeated key replaces the earlier value.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Checks the settings and builds the host; generates the secret when
    /// none was given. Does not connect.
    ///
    /// # Errors
    /// - [`HostError::InvalidServerUrl`]: the URL is not `http://` or
    ///   `https://`, or does not parse; or the [`tls`](Self::tls) options
    ///   cannot be used (both a CA and a pin, a CA PEM without a
    ///   certificate, options for an `http://` URL, or, for `https://`
    ///   without options, a machine without root certificates).
    /// - [`HostError::MissingTaskId`]: no task ID.
    /// - [`HostError::InvalidName`]: the task ID or host name breaks the
    ///   charset or length rule.
    /// - [`HostError::WeakSecret`]: a secret under
    ///   [`MIN_SECRET_LEN`](rendezvous_proto::ids::MIN_SECRET_LEN) characters,
    ///   or with fewer than
    ///   [`MIN_SECRET_DISTINCT_CHARS`](rendezvous_proto::ids::MIN_SECRET_DISTINCT_CHARS)
    ///   distinct ones.
    /// - [`HostError::SameSecrets`]: the read-only secret equals the secret.
    /// - [`HostError::InvalidLabel`]: too many labels, or one too long.
    /// - [`HostError::InvalidHostToken`]: an empty host token, or one with
    ///   a character other than printable ASCII.
    /// - [`HostError::Random`]: generating the secret failed.
    pub fn build(self) -> Result<Host, HostError> {
        let server = self.server.trim_end_matches('/').to_owned();
        let endpoint = ServerEndpoint::new(&server, &self.tls)?;
        let task_id = TaskId::new(self.task_id.ok_or(HostError::MissingTaskId)?)?;
        let host_name = HostName::new(self.name.unwrap_or_else(|| DEFAULT_HOST_NAME.to_owned()))?;
        let secret = match self.secret {
            Some(secret) => {
                check_secret(&secret, "secret")?;
                secret
            }
            None => Secret::generate()?,
        };
        if let Some(read_only) = &self.read_only_secret {
            check_secret(read_only, "read-only secret")?;
            if *read_only == secret {
                return Err(HostError::SameSecrets);
            }
        }
        check_labels(self.labels.iter()).map_err(|e| HostError::InvalidLabel(e.to_string()))?;
        if let Some(token) = &self.host_token
            && (token.expose().is_empty() || !token.expose().bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(HostError::InvalidHostToken);
        }
        let mut command = match self.command {
            Some((program, args)) => CommandSpec::new(program, args),
            None => CommandSpec::user_shell(),
        };
        command.env = self.env;
        command.env_remove = self.env_remove;
        command.current_dir = self.current_dir;
        Ok(Host::new(Config {
            server,
            endpoint,
            task_id,
            host_name,
            secret,
            read_only_secret: self.read_only_secret,
            host_token: self.host_token,
            id_token: self.id_token,
            labels: self.labels,
            command,
            grace_period: self.grace_period,
            retained_output_bytes: self.retained_output_bytes,
        }))
    }
}

fn check_secret(secret: &Secret, which: &'static str) -> Result<(), HostError> {
    check_secret_strength(secret.expose()).map_err(|why| HostError::WeakSecret { which, why })
}

#[cfg(test)]
mod tests {
    use rendezvous_proto::ids::{MIN_SECRET_LEN, WeakSecret};

    use super::*;

    const SECRET: &str = "0123456789abcdefghijkl"; // exactly 22 characters

    fn builder() -> HostBuilder {
        Host::builder("http://127.0.0.1:8080").task_id("build-42")
    }

    #[test]
    fn minimal_builder_generates_a_secret() {
        let host = builder().build().unwrap();
        assert!(host.secret().len() >= MIN_SECRET_LEN);
        assert_eq!(host.task_id(), "build-42");
        assert_eq!(host.name(), "default");
    }

    #[test]
    fn task_id_is_required_and_checked() {
        assert!(matches!(
            Host::builder("http://x").build(),
            Err(HostError::MissingTaskId)
        ));
        for bad in ["", "a/b", "a b", "é"] {
            assert!(
                matches!(
                    builder().task_id(bad).build(),
                    Err(HostError::InvalidName(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            builder().task_id("x".repeat(129)).build(),
            Err(HostError::InvalidName(_))
        ));
        assert!(builder().task_id("x".repeat(128)).build().is_ok());
    }

    #[test]
    fn host_name_is_checked() {
        assert!(matches!(
            builder().name("svc/db").build(),
            Err(HostError::InvalidName(_))
        ));
        assert_eq!(builder().name("db-1").build().unwrap().name(), "db-1");
    }

    #[test]
    fn secrets_need_22_characters_and_must_differ() {
        assert!(matches!(
            builder().secret(&SECRET[..21]).build(),
            Err(HostError::WeakSecret {
                which: "secret",
                why: WeakSecret::Short
            })
        ));
        assert!(matches!(
            builder().secret("a".repeat(22)).build(),
            Err(HostError::WeakSecret {
                which: "secret",
                why: WeakSecret::Repetitive
            })
        ));
        assert_eq!(builder().secret(SECRET).build().unwrap().secret(), SECRET);
        assert!(matches!(
            builder().secret(SECRET).read_only_secret("short").build(),
            Err(HostError::WeakSecret {
                which: "read-only secret",
                ..
            })
        ));
        assert!(matches!(
            builder().secret(SECRET).read_only_secret(SECRET).build(),
            Err(HostError::SameSecrets)
        ));
        assert!(
            builder()
                .secret(SECRET)
                .read_only_secret("read-only-secret-0123456789")
                .build()
                .is_ok()
        );
    }

    #[test]
    fn server_url_must_be_http_or_https() {
        assert!(matches!(
            Host::builder("ftp://x").task_id("t").build(),
            Err(HostError::InvalidServerUrl(_))
        ));
        assert!(
            Host::builder("https://rdv.example.com/")
                .task_id("t")
                .build()
                .is_ok()
        );
    }

    #[test]
    fn labels_are_bounded() {
        let many = (0..=MAX_LABELS).fold(builder(), |b, i| b.label(format!("k{i}"), "v"));
        assert!(matches!(many.build(), Err(HostError::InvalidLabel(_))));
        let long_value = builder().label("k", "v".repeat(MAX_LABEL_BYTES + 1));
        assert!(matches!(
            long_value.build(),
            Err(HostError::InvalidLabel(_))
        ));
        let long_key = builder().label("k".repeat(MAX_LABEL_BYTES + 1), "v");
        assert!(matches!(long_key.build(), Err(HostError::InvalidLabel(_))));
        let fine = (0..MAX_LABELS).fold(builder(), |b, i| b.label(format!("k{i}"), "v"));
        assert!(fine.build().is_ok());
    }

    #[test]
    fn debug_output_has_no_secret() {
        let b = builder()
            .secret("the-read-write-secret-xyz")
            .read_only_secret("the-read-only-secret-xyz");
        let shown = format!("{b:?}");
        assert!(!shown.contains("secret-xyz"), "{shown}");
        let host = b.build().unwrap();
        let shown = format!("{host:?}");
        assert!(!shown.contains("secret-xyz"), "{shown}");
    }
}
