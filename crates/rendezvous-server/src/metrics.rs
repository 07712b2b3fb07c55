//! The server's Prometheus metrics: what is connected now (gauges, read
//! from the registry when scraped) and what has passed through (counters
//! since the server started), encoded in the OpenMetrics text format.
//! [`crate::metrics_http`] serves them on the address of `rendezvous serve
//! --metrics-listen`, apart from the public port.
//!
//! No metric has a task ID, host name, session ID or secret as a label:
//! the set of series stays fixed however many tasks come and go, and
//! scraping reveals no names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

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
        metrics
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
        let tasks = tokio::runtime::Handle::try_current()
            .map_or(0, |runtime| runtime.metrics().num_alive_tasks());
        set(&self.runtime_tasks, tasks);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
