//! The server's Prometheus metrics: what is connected now (gauges, read
//! from the registry when scraped) and what has passed through (counters
//! since the server started), encoded in the OpenMetrics text format.
//! [`crate::metrics_http`] serves them on the address of `rendezvous serve
//! --metrics-listen`, apart from the public port.
//!
//! No metric has a task ID, host name, session ID or secret as a label:
//! the set of series stays fixed however many tasks come and go, and
//! scraping reveals no names.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Content type of the OpenMetrics text format, which Prometheus reads
/// (and which `prometheus-client` writes).
pub const TEXT_FORMAT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label of [`Metrics::limit_refusals`]: which limit was reached, as
/// its `RESOURCE_EXHAUSTED` message names it (e.g. "guests per session").
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// The limit's name.
    pub limit: &'static str,
}

/// The labels of [`Metrics::rpcs`]: which RPC, and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabel {
    /// `Service/Method`, e.g. `GuestService/Attach`; `unknown` for a path
    /// that names no RPC of ours (so that the label's values stay few).
    pub method: &'static str,
    /// The gRPC status code's name, e.g. `OK`, `UNAVAILABLE`; `CANCELLED`
    /// when the client went away before the end.
    pub code: &'static str,
}

/// Every RPC of the protocol, as [`RpcLabel::method`] names it.
pub const RPC_METHODS: [&str; 8] = [
    "HostService/Control",
    "HostService/Data",
    "GuestService/Attach",
    "GuestService/SendInput",
    "GuestService/Resize",
    "GuestService/Terminal",
    "GuestService/Ack",
    "GuestService/ListSessions",
];

/// Buckets of [`Metrics::rpcs`], in seconds: 1 ms to about 70 min, each 4
/// times the last (streams live for hours, unary calls take ms).
fn rpc_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

/// What [`Metrics`] shows of the build and of the TLS certificate, set
/// after the metrics are made.
#[derive(Debug, Default)]
struct Facts {
    /// The git commit the binary was built from.
    commit: Option<String>,
    /// When the TLS certificate in use expires.
    tls: Option<crate::tls::TlsConfig>,
}

/// Encodes [`Facts`] at each scrape: `rendezvous_build_info` and, with
/// TLS, `rendezvous_tls_certificate_expiry_timestamp_seconds`.
#[derive(Debug)]
struct FactsCollector(Arc<Mutex<Facts>>);

impl Collector for FactsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (commit, tls) = {
            let facts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            (
                facts.commit.clone().unwrap_or_else(|| "unknown".to_owned()),
                facts.tls.clone(),
            )
        };
        let labels = [
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("commit", commit),
        ];
        let mut metric = encoder.encode_descriptor(
            "build_info",
            "The server's version and the git commit it was built from (value 1)",
            None,
            MetricType::Gauge,
        )?;
        let metric = metric.encode_family(&labels)?;
        ConstGauge::new(1_i64).encode(metric)?;
        if let Some(expiry) = tls.and_then(|tls| tls.not_after()) {
            let seconds = expiry
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs();
            let metric = encoder.encode_descriptor(
                "tls_certificate_expiry_timestamp_seconds",
                "When the TLS certificate in use expires, in seconds since the Unix epoch (reloaded on SIGHUP)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::try_from(seconds).unwrap_or(i64::MAX)).encode(metric)?;
        }
        Ok(())
    }
}

/// Counts of what is connected, taken from the registry at a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connected {
    /// Tasks with at least one host, or waiting for one (hostless grace).
    pub tasks: usize,
    /// Hosts registered.
    pub hosts: usize,
    /// Sessions running.
    pub sessions: usize,
    /// Guests attached.
    pub guests: usize,
    /// Sessions whose host is paused now: a guest that holds it back is a
    /// backpressure window behind (see [`crate::session`]).
    pub paused_sessions: usize,
}

/// Every metric of one server. Counters are atomics: counting costs one
/// relaxed add on the paths that count.
#[derive(Debug)]
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    tasks: Gauge,
    hosts: Gauge,
    sessions: Gauge,
    guests: Gauge,
    /// Tokio tasks alive in the server's runtime, at the scrape.
    runtime_tasks: Gauge,
    /// Connections served now (HTTP/1.1 and HTTP/2, hosts and guests).
    pub connections: Gauge,
    /// Connections refused or answered `RESOURCE_EXHAUSTED` because of the
    /// connection limit.
    pub connections_refused: Counter,
    /// Connections closed for idling (no request within the first-request
    /// timeout, or none open for the idle timeout).
    pub idle_connections_closed: Counter,
    /// Output bytes received from hosts.
    pub host_output_bytes: Counter,
    /// Output bytes sent to guests (each guest counts its own copy).
    pub guest_output_bytes: Counter,
    /// Input bytes from guests, as received (before repeats are skipped).
    pub guest_input_bytes: Counter,
    /// Output bytes guests skipped because they fell behind the retained
    /// output (`Lagged`).
    pub lagged_bytes: Counter,
    /// Attach, list and host registrations refused for an unknown task or
    /// a wrong secret or token.
    pub auth_failures: Counter,
    /// Attempts refused because their client IP or task had too many
    /// failed authentications (see [`crate::auth_limit`]).
    pub auth_rate_limited: Counter,
    /// Requests refused with `RESOURCE_EXHAUSTED`, by limit.
    pub limit_refusals: Family<LimitLabel, Counter>,
    /// Times a client IP or a task was locked for too many failed
    /// authentications.
    pub rate_limit_trips: Counter,
    /// Times a guest fell behind the retained output and was told
    /// `Lagged` (it skips [`Metrics::lagged_bytes`]).
    pub guest_lags: Counter,
    /// Duration of each finished RPC, in seconds, by method and status
    /// code; its `_count` counts the RPCs.
    pub rpcs: Family<RpcLabel, Histogram, fn() -> Histogram>,
    /// Time from a guest's input reaching the server to its going out to
    /// the host, in seconds (first sends only, not resends after a host
    /// reconnects).
    pub input_relay_seconds: Histogram,
    paused_sessions: Gauge,
    facts: Arc<Mutex<Facts>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics at zero, registered under the `rendezvous_` prefix.
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: prometheus_client::registry::Registry::with_prefix("rendezvous"),
            tasks: Gauge::default(),
            hosts: Gauge::default(),
            sessions: Gauge::default(),
            guests: Gauge::default(),
            runtime_tasks: Gauge::default(),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            idle_connections_closed: Counter::default(),
            host_output_bytes: Counter::default(),
            guest_output_bytes: Counter::default(),
            guest_input_bytes: Counter::default(),
            lagged_bytes: Counter::default(),
            auth_failures: Counter::default(),
            auth_rate_limited: Counter::default(),
            limit_refusals: Family::default(),
            rate_limit_trips: Counter::default(),
            guest_lags: Counter::default(),
            rpcs: Family::new_with_constructor(rpc_buckets),
            // 50 us to about 1.6 s, each twice the last.
            input_relay_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            paused_sessions: Gauge::default(),
            facts: Arc::default(),
        };
        let gauges = [
            (
                "tasks",
                "Tasks known: with a host, or waiting for one",
                &metrics.tasks,
            ),
            ("hosts", "Hosts registered", &metrics.hosts),
            ("sessions", "Sessions running", &metrics.sessions),
            ("guests", "Guests attached", &metrics.guests),
            (
                "runtime_tasks",
                "Tokio tasks alive in the server: back at its idle level once clients have left, unless something leaks",
                &metrics.runtime_tasks,
            ),
            ("connections", "Connections served", &metrics.connections),
            (
                "paused_sessions",
                "Sessions whose host is paused by backpressure: a guest that holds it back is a window behind",
                &metrics.paused_sessions,
            ),
        ];
        for (name, help, gauge) in gauges {
            metrics.registry.register(name, help, gauge.clone());
        }
        let counters = [
            (
                "connections_refused",
                "Connections refused at the connection limit",
                &metrics.connections_refused,
            ),
            (
                "idle_connections_closed",
                "Connections closed for idling: no request in time, or none open for the idle timeout",
                &metrics.idle_connections_closed,
            ),
            (
                "host_output_bytes",
                "Output bytes received from hosts",
                &metrics.host_output_bytes,
            ),
            (
                "guest_output_bytes",
                "Output bytes sent to guests, each guest's copy counted",
                &metrics.guest_output_bytes,
            ),
            (
                "guest_input_bytes",
                "Input bytes received from guests",
                &metrics.guest_input_bytes,
            ),
            (
                "lagged_bytes",
                "Output bytes guests skipped after falling behind the retained output",
                &metrics.lagged_bytes,
            ),
            (
                "auth_failures",
                "Requests refused for an unknown task, a wrong secret or token, or a host not admitted",
                &metrics.auth_failures,
            ),
            (
                "auth_rate_limited",
                "Attempts refused because their client IP or task had too many failed authentications",
                &metrics.auth_rate_limited,
            ),
            (
                "rate_limit_trips",
                "Times a client IP or task was locked for too many failed authentications",
                &metrics.rate_limit_trips,
            ),
            (
                "guest_lags",
                "Times a guest fell behind the retained output and skipped bytes (Lagged)",
                &metrics.guest_lags,
            ),
        ];
        for (name, help, counter) in counters {
            metrics.registry.register(name, help, counter.clone());
        }
        metrics.registry.register(
            "limit_refusals",
            "Requests refused with RESOURCE_EXHAUSTED, by limit",
            metrics.limit_refusals.clone(),
        );
        // Each series exists from the start, at 0.
        for limit in crate::config::limit_name::ALL {
            drop(metrics.limit_refusals.get_or_create(&LimitLabel { limit }));
        }
        metrics.registry.register(
            "rpc_duration_seconds",
            "Duration of finished RPCs (gRPC and gRPC-Web), by method and status code",
            metrics.rpcs.clone(),
        );
        metrics.registry.register(
            "input_relay_seconds",
            "Time from a guest's input reaching the server to its going out to the host",
            metrics.input_relay_seconds.clone(),
        );
        metrics
            .registry
            .register_collector(Box::new(FactsCollector(metrics.facts.clone())));
        metrics
    }

    /// Names the git commit in `rendezvous_build_info` (`unknown` until
    /// set).
    pub fn set_commit(&self, commit: &str) {
        self.facts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .commit = Some(commit.to_owned());
    }

    /// Shows the expiry of `tls`'s current certificate, read at each
    /// scrape (so a reload on SIGHUP shows at the next one).
    pub fn watch_tls(&self, tls: crate::tls::TlsConfig) {
        self.facts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tls = Some(tls);
    }

    /// The [`RpcLabel::method`] of a request `path`
    /// (`/rendezvous.v1.Service/Method`): one of [`RPC_METHODS`], or
    /// `unknown`.
    pub fn rpc_method(path: &str) -> &'static str {
        path.strip_prefix("/rendezvous.v1.")
            .and_then(|m| RPC_METHODS.iter().find(|known| **known == m))
            .copied()
            .unwrap_or("unknown")
    }

    /// Counts one finished RPC of `method` (see [`Metrics::rpc_method`])
    /// that took `duration` and ended with `code`.
    pub fn rpc_done(&self, method: &'static str, code: tonic::Code, duration: Duration) {
        self.rpcs
            .get_or_create(&RpcLabel {
                method,
                code: code_name(code),
            })
            .observe(duration.as_secs_f64());
    }

    /// Registers `audit`'s count of dropped events, as
    /// `rendezvous_audit_events_dropped_total`.
    pub fn with_audit(mut self, audit: &crate::audit::AuditLog) -> Self {
        self.registry.register(
            "audit_events_dropped",
            "Audit events dropped because the audit file's queue was full",
            audit.dropped().clone(),
        );
        self
    }

    /// Counts one refusal at `limit`.
    pub fn refused_at(&self, limit: &'static str) {
        self.limit_refusals
            .get_or_create(&LimitLabel { limit })
            .inc();
    }

    /// The metrics in the OpenMetrics text format, with the gauges set from
    /// `connected`, and `rendezvous_runtime_tasks` from the tokio runtime
    /// this is called on (0 outside one).
    pub fn encode(&self, connected: Connected) -> String {
        let set = |gauge: &Gauge, value: usize| {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set(&self.tasks, connected.tasks);
        set(&self.hosts, connected.hosts);
        set(&self.sessions, connected.sessions);
        set(&self.guests, connected.guests);
        set(&self.paused_sessions, connected.paused_sessions);
        let tasks = tokio::runtime::Handle::try_current()
            .map_or(0, |runtime| runtime.metrics().num_alive_tasks());
        set(&self.runtime_tasks, tasks);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The name of `code` as gRPC's documentation writes it (`OK`,
/// `UNAVAILABLE`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
