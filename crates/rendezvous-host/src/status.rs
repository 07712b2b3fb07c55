//! What a running host is doing, for callers that watch it.

use std::time::Duration;

/// The state of a [`Host`](crate::Host), published on the
/// [`watch`](tokio::sync::watch) channel that
/// [`Host::status`](crate::Host::status) returns. Only the latest state is
/// kept: a slow watcher skips states, it never delays the host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostStatus {
    /// Dialing the server and sending Hello (the first attempt, or the next
    /// one after a [`Reconnecting`](Self::Reconnecting) delay).
    Connecting,
    /// The server accepted Hello; guests can open sessions now.
    Registered {
        /// The server-chosen ID of this connection (not a secret).
        host_id: String,
    },
    /// The connection was lost or refused for a transient reason; the next
    /// attempt starts after `after`.
    Reconnecting {
        /// Delay before the next attempt (0.5 s doubling up to 30 s, with
        /// jitter).
        after: Duration,
        /// Why the last attempt ended, for display.
        reason: String,
    },
    /// [`Host::run`](crate::Host::run) has returned.
    Stopped,
}
