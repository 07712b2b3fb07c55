//! Why the registry refused a request.

use crate::token::TokenError;

/// Why the registry refused a request. `crate::status` maps each variant
/// to one gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Unknown task or wrong secret (one error for both).
    #[error("unknown task or wrong secret: check the task ID and secret you were given")]
    Denied,
    /// A malformed request; the text says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// The host name is taken within the task.
    #[error("a host named {0:?} is already connected for this task: pick another --name")]
    HostNameTaken(String),
    /// No host of that name in the task.
    #[error("no host named {0:?} in this task: list hosts with `rendezvous sessions`")]
    NoSuchHost(String),
    /// The task has no host at all: its last one left a short while ago.
    #[error("no host is connected to this task right now: wait for the CI job to start one again")]
    NoHost,
    /// No such running session on the host. The ID is one the edge
    /// validated ([`SessionId`](rendezvous_proto::ids::SessionId)), so the text echoes at most 128 characters.
    #[error(
        "no session {0:?} on this host: it has ended, or list sessions with `rendezvous sessions`"
    )]
    NoSuchSession(String),
    /// A limit was reached; names the limit and its value.
    #[error("limit reached: {name} is {value}; ask the server's operator to raise it")]
    Limit {
        /// The limit's name, as in the server's flags.
        name: &'static str,
        /// Its value.
        value: usize,
    },
    /// A read-only guest asked for something only writers may do.
    #[error("read-only guests can only join existing sessions")]
    ReadOnly,
    /// Unknown guest, or a token that does not match.
    #[error("unknown guest or bad guest token: attach again")]
    BadGuest,
    /// The guest's session has ended (its guest ID and token are right).
    #[error("the session has ended")]
    SessionEnded,
    /// An invalid or expired guest token.
    #[error("{0}")]
    Token(TokenError),
    /// Bad host ID or token on a Data stream.
    #[error("unknown host or bad host token: reconnect the host")]
    BadHost,
    /// The host is not admitted (no host token, or an unknown one); the
    /// text says what to do.
    #[error("{0}")]
    HostNotAdmitted(String),
    /// Too many failed authentications from this client IP, or on this
    /// task: locked for a while, whatever the credential.
    #[error("{0}")]
    TooManyFailures(crate::auth_limit::TooManyFailures),
    /// The host has gone.
    #[error("the host has disconnected")]
    HostGone,
    /// The host lost its connection and the server waits for it to
    /// resume.
    #[error("the host is reconnecting; try again in a moment")]
    HostReconnecting,
    /// The server is draining (SIGTERM): reconnect, to it once it is back
    /// or to another replica, and resume.
    #[error("the server is restarting; reconnect in a moment to resume")]
    Draining,
    /// The task store shared by replicas (Redis, `serve --redis-url`) did
    /// not answer in time; the call may succeed when tried again.
    #[error("the shared directory (Redis) is unreachable; try again")]
    DirectoryUnavailable,
}
