//! `rendezvous serve`: the rendezvous server.
//!
//! - this file: the flags, the configuration they make, and running;
//! - `parsers`: the flags' value checks (durations, URLs, origins, cleartext);
//! - `signals`: SIGHUP's reloads, SIGTERM's stop;
//! - `credentials`: what the flags name for admitting hosts and checking
//!   guest tokens (key files, host token files, OIDC issuers);
//! - `tests`: the flags' rules.

mod credentials;
mod parsers;
mod signals;

pub use credentials::read_token_key;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use rendezvous_server::audit::{AuditFormat, AuditKey, AuditLog};
use rendezvous_server::auth_limit::FailureQuotas;
use rendezvous_server::config::{MAX_INPUT_BYTES, SessionTimeouts};
use rendezvous_server::connection::ConnectionTimeouts;
use rendezvous_server::origin::PublicUrl;
use rendezvous_server::registry::{RedisStoreConfig, RedisTaskStore, RedisUrl};
use rendezvous_server::session::RelayConfig;
use rendezvous_server::tls::TlsConfig;
use rendezvous_server::{Limits, Server, ServerConfig};

pub use parsers::{
    check_cleartext, parse_advertise_url, parse_duration, parse_duration_or_zero, parse_lease,
    parse_origin,
};
pub use signals::shutdown_signal;
use signals::{Reloadable, key_files, reload_on_hangup, stop_signals};

/// Arguments of `rendezvous serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on for gRPC, gRPC-Web and HTTP (one port).
    #[arg(long, default_value = "127.0.0.1:8080", env = "RENDEZVOUS_LISTEN")]
    pub listen: SocketAddr,
    /// Also serve Prometheus metrics at http://ADDR/metrics. Keep ADDR off
    /// the Internet (e.g. 127.0.0.1:9090): the endpoint needs no secret.
    #[arg(long, value_name = "ADDR", env = "RENDEZVOUS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bytes of output each session keeps for late joiners and resuming
    /// guests.
    #[arg(long, default_value_t = rendezvous_server::session::RETAINED_OUTPUT_BYTES)]
    pub retained_output_bytes: usize,
    /// Hosts connected at once, server-wide.
    #[arg(long, default_value_t = Limits::default().hosts)]
    pub max_hosts: usize,
    /// Hosts one client IP may have connected at once.
    #[arg(long, default_value_t = Limits::default().hosts_per_ip)]
    pub max_hosts_per_ip: usize,
    /// Sessions open at once, server-wide.
    #[arg(long, default_value_t = Limits::default().sessions)]
    pub max_sessions: usize,
    /// Bytes of retained output all sessions together may hold (each
    /// session reserves --retained-output-bytes when it opens).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().retained_output_bytes)]
    pub max_retained_output_bytes: u64,
    /// Guests attached at once, server-wide.
    #[arg(long, default_value_t = Limits::default().guests)]
    pub max_guests: usize,
    /// TCP connections one client IP may hold at once; more are closed.
    #[arg(long, default_value_t = Limits::default().connections_per_ip)]
    pub max_connections_per_ip: usize,
    /// Requests (streams) one client IP may have open at once.
    #[arg(long, default_value_t = Limits::default().streams_per_ip)]
    pub max_streams_per_ip: usize,
    /// HTTP/1.1 request headers must arrive within this (slowloris).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A new connection must start its first request within this.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub first_request_timeout: Duration,
    /// A connection with no open request is closed after this.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_connection_timeout: Duration,
    /// Hosts one task may connect at once.
    #[arg(long, default_value_t = Limits::default().hosts_per_task)]
    pub max_hosts_per_task: usize,
    /// Sessions one host may have open at once.
    #[arg(long, default_value_t = Limits::default().sessions_per_host)]
    pub max_sessions_per_host: usize,
    /// Guests one session may have attached at once.
    #[arg(long, default_value_t = Limits::default().guests_per_session)]
    pub max_guests_per_session: usize,
    /// Bytes one input call may carry (at most 4 MiB - 256 KiB, so that
    /// input joined for the host fits one message).
    #[arg(long, default_value_t = Limits::default().input_bytes)]
    pub max_input_bytes: usize,
    /// A web origin (scheme://host[:port]) besides this server's own that may
    /// use gRPC-Web and load the web guest, e.g. a CI front end that embeds
    /// the terminal. Repeatable. Requests from other origins are refused.
    #[arg(long = "allowed-origin", value_name = "ORIGIN", value_parser = parse_origin)]
    pub allowed_origins: Vec<http::HeaderValue>,
    /// An origin (scheme://host[:port]) that may show the task page in a
    /// frame, e.g. a CI front end. Repeatable. Default: none may
    /// (frame-ancestors 'none', X-Frame-Options DENY).
    #[arg(long = "frame-ancestor", value_name = "ORIGIN", value_parser = parse_origin)]
    pub frame_ancestors: Vec<http::HeaderValue>,
    /// The URL people open (scheme://host[:port]), e.g.
    /// https://rendezvous.example.com: browsers' requests must name it in
    /// Host and Origin, against DNS rebinding. Native clients may use any
    /// name. Default: judge by the Host header.
    #[arg(long, value_name = "URL", value_parser = PublicUrl::parse, env = "RENDEZVOUS_PUBLIC_URL")]
    pub public_url: Option<PublicUrl>,
    /// A file holding the key (at least 32 bytes; surrounding whitespace is
    /// ignored) that signs guest tokens: with it, guests may present a
    /// token from `rendezvous token` instead of the task's secret.
    #[arg(long, value_name = "PATH", env = "RENDEZVOUS_TOKEN_KEY_FILE")]
    pub token_key_file: Option<std::path::PathBuf>,
    /// A JWKS file (JSON `{"keys": [...]}`) of public keys that check guest
    /// tokens signed by your CI system's own key (RS256, ES256, EdDSA; the
    /// token's `kid` picks the key). Reloaded on SIGHUP.
    #[arg(
        long,
        value_name = "FILE",
        env = "RENDEZVOUS_TOKEN_JWKS_FILE",
        conflicts_with_all = ["token_public_key_file", "token_jwks_url"]
    )]
    pub token_jwks_file: Option<PathBuf>,
    /// One PEM public key (BEGIN PUBLIC KEY: RSA, EC P-256 or Ed25519)
    /// that checks guest tokens signed by its private key. Reloaded on
    /// SIGHUP.
    #[arg(
        long,
        value_name = "FILE",
        env = "RENDEZVOUS_TOKEN_PUBLIC_KEY_FILE",
        conflicts_with = "token_jwks_url"
    )]
    pub token_public_key_file: Option<PathBuf>,
    /// A JWKS URL (https://, or http:// on loopback) whose keys check guest
    /// tokens signed by your CI system. Cached; fetched again for an
    /// unknown `kid` at most once a minute, and hourly.
    #[arg(long, value_name = "URL", env = "RENDEZVOUS_TOKEN_JWKS_URL")]
    pub token_jwks_url: Option<String>,
    /// A file of host tokens, one per line as `NAME TOKEN` (or a bare
    /// TOKEN): only hosts presenting one of them (`host --host-token`)
    /// register, and each task belongs to the token's NAME. Reloaded on
    /// SIGHUP. Without it, registration is open, which is allowed only on a
    /// loopback --listen address or with --allow-open-registration.
    #[arg(long, value_name = "PATH", env = "RENDEZVOUS_HOST_TOKEN_FILE")]
    pub host_token_file: Option<std::path::PathBuf>,
    /// Admit hosts that present a CI identity token (OIDC ID token) from
    /// this issuer, e.g. https://token.actions.githubusercontent.com or
    /// https://gitlab.com; repeatable. Each is admitted as the owner
    /// `oidc:{iss}:{sub}`. Needs --host-oidc-audience.
    #[arg(
        long = "host-oidc-issuer",
        value_name = "URL",
        requires = "host_oidc_audience"
    )]
    pub host_oidc_issuers: Vec<String>,
    /// The audience (`aud`) identity tokens must name: e.g. this server's
    /// URL; hosts request their token for it (`host --oidc-audience`).
    #[arg(long, value_name = "AUD", requires = "host_oidc_issuers")]
    pub host_oidc_audience: Option<String>,
    /// A claim every identity token must have with this value, e.g.
    /// repository_owner=acme; repeatable, all must hold.
    #[arg(
        long = "host-oidc-require",
        value_name = "CLAIM=VALUE",
        requires = "host_oidc_issuers"
    )]
    pub host_oidc_require: Vec<rendezvous_server::oidc::ClaimRule>,
    /// The issuers' keys as a JWKS file, for set-ups that cannot reach
    /// them (reloaded on SIGHUP); otherwise they come from
    /// ISSUER/.well-known/openid-configuration.
    #[arg(long, value_name = "FILE", requires = "host_oidc_issuers")]
    pub host_oidc_jwks_file: Option<PathBuf>,
    /// Let any host register, for any task ID, on a non-loopback --listen
    /// address (without --host-token-file). Only for a network where every
    /// client is trusted: anyone who reaches the server can publish a shell
    /// under a task ID its guests expect.
    #[arg(long, env = "RENDEZVOUS_ALLOW_OPEN_REGISTRATION")]
    pub allow_open_registration: bool,
    /// End a session after this long with no host output and no guest
    /// input (e.g. 30m, 1h; pings, acks and resizes do not count). Its
    /// guests are told why.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration, env = "RENDEZVOUS_SESSION_IDLE_TIMEOUT")]
    pub session_idle_timeout: Duration,
    /// End every session this long after it started, busy or not (e.g.
    /// 8h). Default: no limit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "RENDEZVOUS_MAX_SESSION_LIFETIME")]
    pub max_session_lifetime: Option<Duration>,
    /// A read-write guest that is behind and has not read or acknowledged
    /// for this long stops holding the host back (a stalled page, a
    /// background tab); read-only guests never hold it back.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration, env = "RENDEZVOUS_STALLED_GUEST_TIMEOUT")]
    pub stalled_guest_timeout: Duration,
    /// Write the audit log (host registrations, attaches and detaches,
    /// failed authentications, rate-limit trips, session ends) to FILE as
    /// JSON lines, or with `-` into this log (target rendezvous::audit).
    /// FILE is appended to, created with mode 0600, and reopened on SIGHUP
    /// (for logrotate). Credentials appear only as keyed fingerprints.
    #[arg(long, value_name = "FILE|-", env = "RENDEZVOUS_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// The key (at least 32 bytes, raw) of the audit log's credential
    /// fingerprints (HMAC-SHA256), so that they compare across restarts
    /// and replicas. Default: a random key per start.
    #[arg(
        long,
        value_name = "FILE",
        requires = "audit_log",
        env = "RENDEZVOUS_AUDIT_KEY_FILE"
    )]
    pub audit_key_file: Option<PathBuf>,
    /// How the audit file is written: json (one object per line, the
    /// default: what audit tooling reads) or text (logfmt lines). Events
    /// that go into the log (`--audit-log -`) follow --log-format.
    #[arg(long, value_enum, default_value_t = super::LogFormat::Json)]
    pub audit_log_format: super::LogFormat,
    /// The key (at least 32 bytes, raw; e.g. `head -c 32 /dev/urandom >
    /// FILE`) that signs resume tickets, so that hosts resume their
    /// sessions after this server restarts, or on another replica with
    /// the same file. Default: a random key per start (hosts then resume
    /// only while this process runs).
    #[arg(long, value_name = "FILE", env = "RENDEZVOUS_STATE_KEY_FILE")]
    pub state_key_file: Option<PathBuf>,
    /// Longest time a disconnected host's sessions are kept for it to
    /// resume (each host asks for its own, `host --grace-period`, and gets
    /// at most this). Guests stay attached meanwhile and are told that the
    /// host is reconnecting.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration, env = "RENDEZVOUS_MAX_GRACE_PERIOD")]
    pub max_grace_period: Duration,
    /// On SIGTERM, how long the server goes on serving with /readyz
    /// answering 503 before it stops accepting, so that load balancers
    /// stop sending it new connections first (0s: stop accepting at once).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration_or_zero)]
    pub drain_delay: Duration,
    /// Longest time from SIGTERM to exit, the drain delay included.
    /// Connections still open then are dropped; their hosts and guests
    /// resume as after a network cut. A second SIGTERM or Ctrl-C exits at
    /// once.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// TCP connections served at once; requests on more get
    /// RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = Limits::default().connections)]
    pub max_connections: usize,
    /// Serve TLS with this certificate chain (PEM, leaf first). Needs
    /// --tls-key. Both files are read again on SIGHUP: new connections get
    /// the new certificate, open ones go on; a bad file keeps the old one.
    #[arg(
        long,
        value_name = "FILE",
        env = "RENDEZVOUS_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        value_name = "FILE",
        env = "RENDEZVOUS_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with an ephemeral self-signed certificate, for trials
    /// (valid for localhost, 127.0.0.1, ::1 and the listen address). Prints
    /// its SHA-256 fingerprint for clients' --server-fingerprint.
    #[arg(long)]
    pub tls_self_signed: bool,
    /// Serve cleartext on an address that is not loopback: only for a
    /// server behind a TLS proxy (e.g. Caddy) that terminates TLS for it.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_self_signed"])]
    pub insecure: bool,
    /// Replica mode: keep the directory of tasks (which replica holds each
    /// host, the secrets' digests, the owners; never output or secrets) in
    /// this Redis, shared with the other replicas:
    /// redis://[:PASSWORD@]HOST[:PORT][/DB], or rediss://… for TLS. Needs
    /// --advertise-url and --cluster-key-file. Without it, tasks are kept
    /// in this process.
    #[arg(
        long,
        value_name = "URL",
        value_parser = RedisUrl::parse,
        env = "RENDEZVOUS_REDIS_URL",
        hide_env_values = true,
        requires_all = ["advertise_url", "cluster_key_file"]
    )]
    pub redis_url: Option<RedisUrl>,
    /// This replica's own address for the other replicas
    /// (scheme://host:port), kept in Redis beside its hosts. Needs
    /// --redis-url.
    #[arg(
        long,
        value_name = "URL",
        value_parser = parse_advertise_url,
        env = "RENDEZVOUS_ADVERTISE_URL",
        requires = "redis_url"
    )]
    pub advertise_url: Option<String>,
    /// With --redis-url: the file (at least 32 random bytes, the same on
    /// every replica) whose key replicas prove themselves with when one
    /// relays a guest to the replica that holds its host. Make one with
    /// `head -c 32 /dev/urandom > FILE`.
    #[arg(
        long,
        value_name = "FILE",
        env = "RENDEZVOUS_CLUSTER_KEY_FILE",
        requires = "redis_url"
    )]
    pub cluster_key_file: Option<PathBuf>,
    /// With --redis-url: how long a host's name stays this replica's in
    /// Redis after its last renewal (renewed every third of it), and so how
    /// soon a replica that dies frees its hosts' names for the others. At
    /// least 3s.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_lease)]
    pub redis_lease: Duration,
}

impl ServeArgs {
    /// The server configuration these flags describe.
    ///
    /// # Errors
    /// When the token key file or host token file cannot be read or is
    /// invalid, `--max-input-bytes` is over [`MAX_INPUT_BYTES`], or
    /// registration would be open on a non-loopback address without
    /// `--allow-open-registration`.
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        if self.max_input_bytes > MAX_INPUT_BYTES {
            anyhow::bail!(
                "--max-input-bytes {} is over {MAX_INPUT_BYTES}, the most one message to a host can carry",
                self.max_input_bytes
            );
        }
        let token_key = self
            .token_key_file
            .as_deref()
            .map(read_token_key)
            .transpose()?;
        let host_admission = self.host_admission()?;
        let token_public_keys = self.token_public_keys()?;
        Ok(ServerConfig {
            relay: RelayConfig {
                retained_output_bytes: self.retained_output_bytes,
                stalled_guest_timeout: self.stalled_guest_timeout,
                ..RelayConfig::default()
            },
            limits: Limits {
                hosts: self.max_hosts,
                hosts_per_ip: self.max_hosts_per_ip,
                sessions: self.max_sessions,
                retained_output_bytes: self.max_retained_output_bytes,
                guests: self.max_guests,
                hosts_per_task: self.max_hosts_per_task,
                sessions_per_host: self.max_sessions_per_host,
                guests_per_session: self.max_guests_per_session,
                input_bytes: self.max_input_bytes,
                connections: self.max_connections,
                connections_per_ip: self.max_connections_per_ip,
                streams_per_ip: self.max_streams_per_ip,
            },
            allowed_origins: self.allowed_origins.clone(),
            token_key,
            host_admission,
            timeouts: SessionTimeouts {
                idle: self.session_idle_timeout,
                max_lifetime: self.max_session_lifetime,
            },
            failure_quotas: FailureQuotas::default(),
            connection_timeouts: ConnectionTimeouts {
                header_read: self.header_read_timeout,
                first_request: self.first_request_timeout,
                idle: self.idle_connection_timeout,
            },
            frame_ancestors: self.frame_ancestors.clone(),
            public_url: self.public_url.clone(),
            token_public_keys,
            audit: self.audit_log()?,
            state_key: match &self.state_key_file {
                Some(path) => rendezvous_server::state_key::StateKey::from_file(path)?,
                None => rendezvous_server::state_key::StateKey::random(),
            },
            max_grace_period: Some(self.max_grace_period),
            shutdown: rendezvous_server::config::ShutdownTimes {
                drain_delay: self.drain_delay,
                timeout: self.shutdown_timeout,
            },
            // Connected in `run`, which can wait for Redis.
            task_store: None,
            cluster_key: self
                .cluster_key_file
                .as_deref()
                .map(rendezvous_server::cluster::ClusterKey::from_file)
                .transpose()?,
        })
    }

    /// The shared directory in Redis that --redis-url names, connected;
    /// `None` without it.
    ///
    /// # Errors
    /// When Redis cannot be reached (the message names the server, never
    /// the URL's password).
    pub async fn task_store(&self) -> anyhow::Result<Option<Arc<RedisTaskStore>>> {
        let (Some(url), Some(advertise_url)) = (&self.redis_url, &self.advertise_url) else {
            return Ok(None);
        };
        let mut config = RedisStoreConfig::new(url.clone(), advertise_url);
        config.lease = self.redis_lease;
        let store = RedisTaskStore::connect(config)
            .await
            .context("--redis-url: the shared directory")?;
        tracing::info!(
            redis = %url,
            replica = %store.replica().id,
            advertise_url = %advertise_url,
            lease_ms = self.redis_lease.as_millis() as u64,
            "replica mode: tasks are kept in the shared directory (Redis)"
        );
        Ok(Some(Arc::new(store)))
    }

    /// The audit log the flags name; off without --audit-log.
    fn audit_log(&self) -> anyhow::Result<AuditLog> {
        let Some(path) = &self.audit_log else {
            return Ok(AuditLog::default());
        };
        let key = match &self.audit_key_file {
            Some(file) => AuditKey::from_file(file)?,
            None => AuditKey::random(),
        };
        if path.as_os_str() == "-" {
            return Ok(AuditLog::to_log(key));
        }
        let format = match self.audit_log_format {
            super::LogFormat::Text => AuditFormat::Text,
            super::LogFormat::Json => AuditFormat::Json,
        };
        Ok(AuditLog::to_file_as(path, key, format)?)
    }
}

/// What the start line of the log says.
struct StartLine<'a> {
    listen: String,
    tls: &'static str,
    config: &'a ServerConfig,
    metrics: Option<SocketAddr>,
    audit: Option<&'a std::path::Path>,
}

/// Logs one line at start with what an operator checks first: where the
/// server listens and with what TLS, who may register hosts and present
/// guest tokens, the main caps, and where metrics and audit events go.
fn log_start(start: &StartLine<'_>) {
    let c = start.config;
    let admission = &c.host_admission;
    let mut hosts = Vec::new();
    if admission.tokens.is_some() {
        hosts.push("host tokens".to_owned());
    }
    for issuer in &admission.oidc {
        hosts.push(format!("OIDC {}", issuer.issuer()));
    }
    if admission.is_open() {
        hosts.push("open".to_owned());
    }
    let mut guests = vec!["task secrets"];
    if c.token_key.is_some() {
        guests.push("guest tokens (HS256)");
    }
    if c.token_public_keys.is_some() {
        guests.push("guest tokens (public keys)");
    }
    let limits = &c.limits;
    tracing::info!(
        listen = %start.listen,
        tls = %start.tls,
        host_admission = %hosts.join(", "),
        guest_admission = %guests.join(", "),
        metrics = %start.metrics.map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics")),
        audit = %start.audit.map_or_else(
            || "off".to_owned(),
            |p| if p.as_os_str() == "-" { "this log".to_owned() } else { p.display().to_string() },
        ),
        max_hosts = limits.hosts,
        max_sessions = limits.sessions,
        max_guests = limits.guests,
        max_connections = limits.connections,
        max_connections_per_ip = limits.connections_per_ip,
        retained_output_bytes = c.relay.retained_output_bytes,
        "server started"
    );
}

impl ServeArgs {
    /// The TLS configuration these flags describe: the certificate files,
    /// a new self-signed certificate, or none.
    ///
    /// # Errors
    /// The [`TlsError`] of a file that cannot be used.
    pub fn tls(&self) -> anyhow::Result<Option<TlsConfig>> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            return Ok(Some(TlsConfig::from_files(cert, key)?));
        }
        if self.tls_self_signed {
            return Ok(Some(TlsConfig::self_signed(self.listen.ip())?));
        }
        Ok(None)
    }
}

/// Runs `rendezvous serve` until Ctrl-C or SIGTERM; SIGHUP reloads the
/// TLS certificate files and the host token file.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    super::raise_fd_limit();
    // Before binding: a refused address is never exposed, not even briefly.
    let tls_wanted = args.tls_cert.is_some() || args.tls_self_signed;
    check_cleartext(args.listen, tls_wanted, args.insecure)?;
    let mut config = args.config()?;
    if let Some(store) = args.task_store().await? {
        println!(
            "rendezvous: replica {} of the shared directory in Redis at {} (lease {})",
            store.replica().id,
            args.redis_url
                .as_ref()
                .map_or_else(String::new, ToString::to_string),
            humantime::format_duration(args.redis_lease)
        );
        config.task_store = Some(store);
    }
    let tls = args.tls()?;
    // Installed before anything is printed, so that a SIGHUP sent once the
    // address is known reloads (the TLS files, the host token file) rather
    // than kills.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    // Likewise SIGTERM and SIGINT: one sent as soon as the address is
    // printed drains the server rather than killing it.
    let (stop, force) = stop_signals()?;
    let host_tokens = config.host_admission.tokens.clone();
    let key_files = key_files(&config);
    let mut server = Server::bind(args.listen, config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if let Some(tls) = &tls {
        server = server.with_tls(tls.clone());
    }
    let addr = server.local_addr()?;
    server.registry().metrics().set_commit(super::GIT_COMMIT);
    let mut metrics_at = None;
    let metrics_listener = match args.metrics_listen {
        Some(metrics_addr) => {
            let listener = tokio::net::TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("cannot listen on {metrics_addr} for metrics"))?;
            let at = listener.local_addr()?;
            println!("rendezvous: metrics on http://{at}/metrics");
            metrics_at = Some(at);
            Some(listener)
        }
        None => None,
    };
    let registry = server.registry().clone();
    // Metrics are served as long as the server runs, and no longer.
    let metrics = async move {
        match metrics_listener {
            Some(listener) => rendezvous_server::metrics_http::serve(listener, registry).await,
            None => std::future::pending().await,
        }
    };
    let admission = &server.registry().config().host_admission;
    if admission.is_open() {
        if args.allow_open_registration {
            tracing::warn!(
                "open host registration: any client that reaches this server can publish a \
                 shell under any task ID (--allow-open-registration)"
            );
        }
        println!("rendezvous: host registration is open (loopback or --allow-open-registration)");
    }
    let scheme = match &tls {
        Some(tls) => {
            match tls.files() {
                Some((cert, _)) => println!(
                    "rendezvous: TLS certificate {}, SHA-256 fingerprint {}",
                    cert.display(),
                    tls.fingerprint()
                ),
                None => println!(
                    "rendezvous: self-signed TLS certificate (for trials); \
                     clients pin it with --server-fingerprint {}",
                    tls.fingerprint()
                ),
            }
            "https"
        }
        None => "http",
    };
    // Before the address is printed: whoever waits for it finds the
    // start line written.
    log_start(&StartLine {
        listen: format!("{scheme}://{addr}"),
        tls: match &tls {
            None => "off",
            Some(tls) if tls.files().is_some() => "certificate files",
            Some(_) => "self-signed",
        },
        config: server.registry().config(),
        metrics: metrics_at,
        audit: args.audit_log.as_deref(),
    });
    println!("rendezvous: listening on {scheme}://{addr}");
    let audit = server.registry().audit().clone();
    match &args.audit_log {
        Some(path) if path.as_os_str() == "-" => {
            println!("rendezvous: audit events go to this log")
        }
        Some(path) => println!("rendezvous: audit log {}", path.display()),
        None => {}
    }
    let reloads = reload_on_hangup(
        Reloadable {
            tls,
            host_tokens,
            key_files,
            audit,
        },
        hangups,
    );
    tokio::select! {
        result = server.run_or_force(stop, force) => result?,
        result = metrics => result.context("the metrics endpoint failed")?,
        () = reloads => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
