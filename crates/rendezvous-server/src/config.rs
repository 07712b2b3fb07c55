//! Server settings: relay bounds and limits, each with its unit and default.

use std::time::Duration;

use rendezvous_proto::message_size::MAX_DATA_BYTES;

use crate::session::{MAX_PENDING_INPUT_BYTES, RelayConfig};

/// How long the server waits for a host to open the Data stream of a new
/// shell before it ends the session, in ms (10 s).
pub const SESSION_START_TIMEOUT: Duration = Duration::from_millis(10_000);

/// How long a guest's input call may wait for room in the host's input
/// queue before it fails with `UNAVAILABLE`, in ms (10 s).
pub const INPUT_TIMEOUT: Duration = Duration::from_millis(10_000);

/// How long a streaming call (`Control`, `Data`, `Terminal`) may take to
/// send its first message before it fails with `DEADLINE_EXCEEDED`, in ms
/// (10 s).
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_millis(10_000);

/// Interval of keepalive Pings on each host's Control stream, in ms (15 s).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(15_000);

/// A host that answers no Ping for this long is dropped, in ms (45 s).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(45_000);

/// How long a task outlives its last host, in ms (10 minutes). Meanwhile
/// guests with its secret are told that no host is connected (an empty
/// host list; the web guest waits for one) instead of `PERMISSION_DENIED`,
/// as for a host that restarts or reconnects. A host of the same owner
/// with other secrets takes the task over at once; a host admitted as
/// another owner never does (it has a task of its own under that ID).
pub const HOSTLESS_TASK_GRACE: Duration = Duration::from_millis(600_000);

/// Most owners that may each have a task of one ID at once (64). Tasks
/// are kept per owner, so a host admitted as another owner makes a task of
/// its own instead of reaching someone else's; this bounds what a guest's
/// secret is compared against.
pub const MAX_OWNERS_PER_TASK_ID: usize = 64;

/// Most tasks kept without a host at a time (10 000, about 200 bytes each);
/// past it, the one whose last host left first is forgotten.
pub const MAX_HOSTLESS_TASKS: usize = 10_000;

/// How long the server remembers a guest whose session ended, in ms (10
/// minutes, as long as a departed guest may resume): its late `SendInput`,
/// `Resize` and `Ack` calls are answered `FAILED_PRECONDITION` "the session
/// has ended". Past it they get `UNAUTHENTICATED`, as an unknown guest.
pub const ENDED_GUEST_GRACE: Duration = Duration::from_millis(600_000);

/// Most guests of ended sessions remembered at a time (10 000, about 200
/// bytes each: 2 MB at most); past it, the one whose session ended first is
/// forgotten.
pub const MAX_ENDED_GUESTS: usize = 10_000;

/// Largest [`Limits::input_bytes`], in bytes (4 MiB − 256 KiB): one input
/// call joined with the input that waited for it
/// ([`MAX_PENDING_INPUT_BYTES`]) still fits one message to the host
/// ([`MAX_DATA_BYTES`]). A larger configured value is taken as this one.
pub const MAX_INPUT_BYTES: usize = MAX_DATA_BYTES - MAX_PENDING_INPUT_BYTES;

/// Bound of the queue of control messages to one host, in messages. Opening
/// a shell waits while it is full.
pub const HOST_CONTROL_QUEUE_MESSAGES: usize = 64;

/// The names of the limits, as `RESOURCE_EXHAUSTED` messages and the
/// `rendezvous_limit_refusals_total{limit}` metric say them.
pub mod limit_name {
    /// [`Limits::hosts_per_task`](super::Limits::hosts_per_task).
    pub const HOSTS_PER_TASK: &str = "hosts per task";
    /// [`Limits::sessions_per_host`](super::Limits::sessions_per_host).
    pub const SESSIONS_PER_HOST: &str = "sessions per host";
    /// [`Limits::guests_per_session`](super::Limits::guests_per_session).
    pub const GUESTS_PER_SESSION: &str = "guests per session";
    /// [`Limits::input_bytes`](super::Limits::input_bytes).
    pub const INPUT_BYTES: &str = "bytes per input call";
    /// [`MAX_OWNERS_PER_TASK_ID`](super::MAX_OWNERS_PER_TASK_ID). Fixed,
    /// not by a flag.
    pub const OWNERS_PER_TASK_ID: &str = "owners per task ID";
    /// [`rendezvous_proto::message_size::MAX_MESSAGE_BYTES`]: one encoded
    /// message on any RPC. Fixed by the protocol, not by a flag.
    pub const MESSAGE_BYTES: &str = "bytes per message";
    /// [`Limits::hosts`](super::Limits::hosts).
    pub const HOSTS: &str = "hosts";
    /// [`Limits::hosts_per_ip`](super::Limits::hosts_per_ip).
    pub const HOSTS_PER_IP: &str = "hosts per client IP";
    /// [`Limits::sessions`](super::Limits::sessions).
    pub const SESSIONS: &str = "sessions";
    /// [`Limits::retained_output_bytes`](super::Limits::retained_output_bytes).
    pub const RETAINED_OUTPUT_BYTES: &str = "retained output bytes";
    /// [`Limits::guests`](super::Limits::guests).
    pub const GUESTS: &str = "guests";
    /// [`Limits::connections`](super::Limits::connections).
    pub const CONNECTIONS: &str = "connections";
    /// [`Limits::connections_per_ip`](super::Limits::connections_per_ip).
    pub const CONNECTIONS_PER_IP: &str = "connections per client IP";
    /// [`Limits::streams_per_ip`](super::Limits::streams_per_ip).
    pub const STREAMS_PER_IP: &str = "streams per client IP";
    /// Every name above.
    pub const ALL: [&str; 14] = [
        CONNECTIONS,
        CONNECTIONS_PER_IP,
        STREAMS_PER_IP,
        HOSTS,
        HOSTS_PER_IP,
        SESSIONS,
        RETAINED_OUTPUT_BYTES,
        GUESTS,
        HOSTS_PER_TASK,
        OWNERS_PER_TASK_ID,
        SESSIONS_PER_HOST,
        GUESTS_PER_SESSION,
        INPUT_BYTES,
        MESSAGE_BYTES,
    ];
}

/// Limits the server enforces. Going over one gives `RESOURCE_EXHAUSTED`
/// with a message that names it; what already runs is not affected. The
/// server-wide defaults are sized for one VM of a few GiB.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Hosts connected at once, server-wide (default 4096).
    pub hosts: usize,
    /// Hosts one client IP may have connected at once (default 256).
    pub hosts_per_ip: usize,
    /// Sessions open at once, server-wide (default 4096).
    pub sessions: usize,
    /// Bytes of retained output all sessions together may hold, in bytes
    /// (default 2 GiB). Each session reserves its whole retained output
    /// ([`RelayConfig::retained_output_bytes`]) when it opens, so with the
    /// default 1 MiB this admits 2048 sessions.
    pub retained_output_bytes: u64,
    /// Guests attached at once, server-wide (default 16384).
    pub guests: usize,
    /// Hosts connected under one task (default 32).
    pub hosts_per_task: usize,
    /// Sessions open on one host (default 64).
    pub sessions_per_host: usize,
    /// Guests attached to one session (default 64).
    pub guests_per_session: usize,
    /// Bytes in one input call (default 64 KiB, at most
    /// [`MAX_INPUT_BYTES`]).
    pub input_bytes: usize,
    /// TCP connections the server serves at once (default 4096). Requests
    /// on further connections get `RESOURCE_EXHAUSTED` (gRPC) or 503 (HTTP).
    pub connections: usize,
    /// TCP connections one client IP may hold at once (default 512);
    /// further ones are closed at once.
    pub connections_per_ip: usize,
    /// Requests (streams) one client IP may have open at once, over all its
    /// connections (default 2048); further ones get `RESOURCE_EXHAUSTED`.
    pub streams_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hosts: 4096,
            hosts_per_ip: 256,
            sessions: 4096,
            retained_output_bytes: 2 * 1024 * 1024 * 1024,
            guests: 16_384,
            hosts_per_task: 32,
            sessions_per_host: 64,
            guests_per_session: 64,
            input_bytes: 64 * 1024,
            connections: 4096,
            connections_per_ip: 512,
            streams_per_ip: 2048,
        }
    }
}

/// Default [`SessionTimeouts::idle`], in ms (30 minutes, as Shell Access
/// and Open WebUI's terminals use).
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_millis(30 * 60 * 1000);

/// When the server ends a session by itself. The guests are told why, in
/// plain words, as the session's exit message.
#[derive(Debug, Clone, Copy)]
pub struct SessionTimeouts {
    /// A session with no host output and no guest input for this long
    /// ends (default [`SESSION_IDLE_TIMEOUT`]). Pings, acks and resizes do
    /// not count.
    pub idle: Duration,
    /// A session ends this long after it started, busy or not (default:
    /// none).
    pub max_lifetime: Option<Duration>,
}

impl Default for SessionTimeouts {
    fn default() -> Self {
        Self {
            idle: SESSION_IDLE_TIMEOUT,
            max_lifetime: None,
        }
    }
}

/// Everything a server needs besides its listener.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Bounds of each session's relay.
    pub relay: RelayConfig,
    /// Resource limits.
    pub limits: Limits,
    /// Web origins (`scheme://host[:port]`) besides the server's own that
    /// may use gRPC-Web and load the web guest, e.g. a CI front end that
    /// embeds the terminal. Others are refused.
    pub allowed_origins: Vec<http::HeaderValue>,
    /// Key for guest tokens (see [`crate::token`]); `None` refuses tokens.
    pub token_key: Option<crate::token::TokenKey>,
    /// Which hosts may register; open registration by default.
    pub host_admission: crate::registry::HostAdmission,
    /// When sessions end by themselves.
    pub timeouts: SessionTimeouts,
    /// How many failed authentications a client IP, or a task, may have
    /// (see [`crate::auth_limit`]).
    pub failure_quotas: crate::auth_limit::FailureQuotas,
    /// When idle connections are closed.
    pub connection_timeouts: crate::connection::ConnectionTimeouts,
    /// Origins (`scheme://host[:port]`) that may frame the task page
    /// (`frame-ancestors`); empty, the default, lets none (and sends
    /// `X-Frame-Options: DENY`).
    pub frame_ancestors: Vec<http::HeaderValue>,
    /// The server's public URL, pinning the `Host` and `Origin` browsers
    /// must send (against DNS rebinding); `None` judges by `Host`.
    pub public_url: Option<crate::origin::PublicUrl>,
    /// Public keys for guest tokens signed by a CI system's own key
    /// (RS256, ES256, EdDSA; see [`crate::jwks`]); `None` accepts only
    /// HS256 tokens under `token_key`.
    pub token_public_keys: Option<crate::jwks::KeySource>,
    /// Where audit events go ([`crate::audit`]); off by default.
    pub audit: crate::audit::AuditLog,
    /// The key resume tickets are signed with ([`crate::state_key`]);
    /// random by default, so tickets work until the server stops.
    pub state_key: crate::state_key::StateKey,
    /// Longest time, in ms, the server keeps a disconnected host's
    /// sessions for it to resume ([`MAX_GRACE_PERIOD`] by default); a host
    /// asks for its own (`Hello.grace_period_ms`) and gets at most this.
    pub max_grace_period: Option<Duration>,
    /// What a graceful stop ([`crate::Server::run`]) waits for.
    pub shutdown: ShutdownTimes,
    /// Where tasks are looked up and claimed: `None`, the default, keeps
    /// them in this process ([`MemoryTaskStore`](crate::registry::MemoryTaskStore));
    /// replicas share a [`RedisTaskStore`](crate::registry::RedisTaskStore)
    /// (`rendezvous serve --redis-url`).
    pub task_store: Option<std::sync::Arc<dyn crate::registry::TaskStore>>,
    /// The key replicas prove themselves to each other with on the link
    /// that relays guests to the replica holding their host
    /// ([`crate::cluster`], `serve --cluster-key-file`). With a shared
    /// [`task_store`](Self::task_store), guests that reach a replica
    /// without their host are relayed; `None` keeps every guest on the
    /// replica it reached.
    pub cluster_key: Option<crate::cluster::ClusterKey>,
}

/// The times of a graceful stop, in the order load balancers expect (as
/// Kubernetes' pod termination, or Envoy's drain): `/readyz` turns false at
/// once, the server goes on serving for `drain_delay` so that load
/// balancers stop sending it new connections, then it stops accepting,
/// tells hosts and guests to reconnect and waits for them to leave, all
/// within `timeout` of the signal. A second signal ends at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownTimes {
    /// How long, in ms, the server goes on serving with `/readyz` false
    /// before it stops accepting. 0 by default in the library (an embedder
    /// behind a load balancer sets it); `rendezvous serve --drain-delay`
    /// defaults to [`DRAIN_DELAY`].
    pub drain_delay: Duration,
    /// Longest time, in ms, from the signal to the end of the stop,
    /// drain delay included ([`SHUTDOWN_TIMEOUT`] by default). Connections
    /// still open then are dropped; their hosts and guests resume as after
    /// a network cut.
    pub timeout: Duration,
}

/// Default of `rendezvous serve --drain-delay`, in ms (5 s: a few
/// readiness probes at Kubernetes' default period of 10 s would be too
/// slow; load balancers that watch endpoints, such as kube-proxy and
/// ingress controllers, take a few seconds).
pub const DRAIN_DELAY: Duration = Duration::from_millis(5_000);

/// Default of [`ShutdownTimes::timeout`], in ms (20 s: within Kubernetes'
/// default termination grace period of 30 s, and systemd's of 90 s).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(20_000);

impl Default for ShutdownTimes {
    fn default() -> Self {
        Self {
            drain_delay: Duration::ZERO,
            timeout: SHUTDOWN_TIMEOUT,
        }
    }
}

/// Default of [`ServerConfig::max_grace_period`], in ms (30 min).
pub const MAX_GRACE_PERIOD: Duration = Duration::from_millis(30 * 60 * 1000);

impl ServerConfig {
    /// The grace period a host that asked for `wanted` gets: at most
    /// [`ServerConfig::max_grace_period`].
    pub fn grace_period(&self, wanted: Duration) -> Duration {
        wanted.min(self.max_grace_period.unwrap_or(MAX_GRACE_PERIOD))
    }
}
