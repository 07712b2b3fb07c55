//! What can go wrong for a guest, in words a person can act on.
//!
//! The server answers with gRPC status codes (see the proto's `GuestService`
//! for which call returns which); [`ErrorContext::map`] turns each into one
//! [`GuestError`] variant. No variant ever holds the secret: messages that
//! come from elsewhere are passed through [`Secret::redact`] first.

use std::error::Error as _;
use std::sync::Arc;

use rendezvous_proto::endpoint::EndpointError;
use tonic::{Code, Status};

use crate::secret::Secret;

/// An error of the guest client. Its `Display` is a sentence for the user.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The server URL, or the TLS options for it, cannot be used.
    #[error(transparent)]
    InvalidUrl(#[from] EndpointError),

    /// No connection to the server, or it broke: refused, DNS, TLS, timeout,
    /// reset, keepalive expired.
    #[error("cannot reach the server at {server}: {reason}")]
    Unreachable {
        /// The server URL as given.
        server: String,
        /// The lowest-level cause, e.g. "Connection refused (os error 111)".
        reason: String,
    },

    /// `PERMISSION_DENIED` on attach or list: the task is unknown or the
    /// secret is wrong (the server does not say which, on purpose).
    #[error("unknown task or wrong secret: check the task ID and secret")]
    Denied,

    /// `PERMISSION_DENIED` because this guest is read-only and asked to
    /// write: send input, resize, or open a new shell.
    #[error(
        "a read-only guest can only watch existing sessions: \
         use the read-write secret to type, resize or open a new shell"
    )]
    ReadOnly,

    /// `NOT_FOUND`: the host or session does not exist (or no longer does).
    #[error("no such host or session: list them with `rendezvous sessions`")]
    NotFound,

    /// `INVALID_ARGUMENT`: the server refused a malformed request.
    #[error("the server refused the request: {0}")]
    InvalidArgument(String),

    /// `RESOURCE_EXHAUSTED`: a server limit; the text names it.
    #[error("a server limit was reached: {0}")]
    LimitReached(String),

    /// `UNAUTHENTICATED` on input or resize: the server does not know this
    /// guest ID, or the guest token is wrong (e.g. the guest was detached).
    #[error("the server does not know this guest (it may have been detached): attach again")]
    UnknownGuest,

    /// `FAILED_PRECONDITION` on input, resize or ack: the session has
    /// ended (the server says so for a while after the guest's stream
    /// closed with the Exit). A
    /// [`ResumingTerminal`](crate::ResumingTerminal) also returns it when
    /// the session went while it was disconnected.
    #[error("the session has ended")]
    SessionEnded,

    /// `UNAVAILABLE` sent by the server (or a proxy): e.g. the host
    /// disconnected while a new shell was being opened, or took no input
    /// for a while. The text says why. (A host that cannot start a shell is
    /// reported as the session's Exit, after Attached.)
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// The request stream of a `Terminal` is closed, because the call ended;
    /// the event reader returns the reason.
    #[error("the terminal stream to the server is closed")]
    Closed,

    /// The server broke the protocol, e.g. its first event was not
    /// `Attached`, or output skipped or repeated bytes.
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),

    /// Any other status from the server.
    #[error("the server answered {code:?}: {message}")]
    Other {
        /// The gRPC status code.
        code: Code,
        /// The status message, with the secret redacted.
        message: String,
    },
}

/// Which kind of call a status answers: the same code means different
/// things on attach and on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// `Attach`, `Terminal` or `ListSessions`: authenticated by the secret.
    Attach,
    /// `SendInput` or `Resize`: authenticated by the guest token.
    Input,
}

/// What error mapping needs to know besides the status: the server's URL
/// for messages, and the secret to scrub from any text shown.
#[derive(Clone)]
pub(crate) struct ErrorContext {
    /// The server URL as the user gave it.
    pub(crate) server: Arc<str>,
    /// The secret of the call, if it carried one.
    pub(crate) secret: Option<Secret>,
}

impl ErrorContext {
    /// Text from outside this process, with the secret removed.
    fn scrub(&self, text: &str) -> String {
        match &self.secret {
            Some(secret) => secret.redact(text),
            None => text.to_owned(),
        }
    }

    /// A connection that could not be made or broke, from its error chain.
    pub(crate) fn unreachable(&self, error: &(dyn std::error::Error + 'static)) -> GuestError {
        GuestError::Unreachable {
            server: self.server.to_string(),
            reason: self.scrub(&root_cause(error)),
        }
    }

    /// Maps a status that answers `call` to the error a user can act on.
    pub(crate) fn map(&self, status: &Status, call: Call) -> GuestError {
        // Statuses made on this side of the wire (connect errors, a broken
        // connection, an expired keepalive) carry their cause as a source;
        // statuses the server sends never do.
        if let Some(source) = status.source() {
            return self.unreachable(source);
        }
        let message = self.scrub(status.message());
        match status.code() {
            Code::PermissionDenied if call == Call::Input || mentions_read_only(&message) => {
                GuestError::ReadOnly
            }
            Code::PermissionDenied => GuestError::Denied,
            Code::NotFound => GuestError::NotFound,
            Code::InvalidArgument => GuestError::InvalidArgument(message),
            Code::ResourceExhausted => GuestError::LimitReached(message),
            Code::Unauthenticated => GuestError::UnknownGuest,
            Code::FailedPrecondition => GuestError::SessionEnded,
            Code::Unavailable if message.is_empty() => GuestError::Unreachable {
                server: self.server.to_string(),
                reason: "the service is unavailable".to_owned(),
            },
            Code::Unavailable => GuestError::Unavailable(message),
            code => GuestError::Other { code, message },
        }
    }
}

/// The server says "read-only" when a read-only guest asks for a new shell;
/// otherwise PERMISSION_DENIED on attach means unknown task or wrong secret.
fn mentions_read_only(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("read-only") || message.contains("read only")
}

/// The deepest error in a chain: "Connection refused (os error 111)" rather
/// than "transport error".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    let text = current.to_string();
    if text.is_empty() {
        error.to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "AAAAsecretsecretsecretZZ";

    fn context() -> ErrorContext {
        ErrorContext {
            server: "http://127.0.0.1:8080".into(),
            secret: Some(Secret::new(SECRET).unwrap()),
        }
    }

    fn mapped(status: Status, call: Call) -> GuestError {
        context().map(&status, call)
    }

    #[test]
    fn permission_denied_on_attach_means_unknown_task_or_wrong_secret() {
        let error = mapped(Status::permission_denied("denied"), Call::Attach);
        assert!(matches!(error, GuestError::Denied));
        assert_eq!(
            error.to_string(),
            "unknown task or wrong secret: check the task ID and secret"
        );
    }

    #[test]
    fn permission_denied_for_a_read_only_guest_says_so() {
        let error = mapped(
            Status::permission_denied("read-only guests cannot open a new shell"),
            Call::Attach,
        );
        assert!(matches!(error, GuestError::ReadOnly));
        let error = mapped(Status::permission_denied(""), Call::Input);
        assert!(matches!(error, GuestError::ReadOnly));
    }

    #[test]
    fn not_found_points_at_the_sessions_command() {
        let error = mapped(Status::not_found("no session s-1"), Call::Attach);
        assert!(matches!(error, GuestError::NotFound));
        assert!(error.to_string().contains("rendezvous sessions"));
    }

    #[test]
    fn other_codes_map_to_their_variants() {
        let cases = [
            (
                Status::invalid_argument("bad task ID"),
                "the server refused",
            ),
            (
                Status::resource_exhausted("too many guests"),
                "too many guests",
            ),
            (Status::unauthenticated("bad token"), "attach again"),
            (
                Status::failed_precondition("ended"),
                "the session has ended",
            ),
            (
                Status::unavailable("the host has disconnected"),
                "the host has disconnected",
            ),
            (Status::internal("boom"), "Internal"),
        ];
        for (status, expected) in cases {
            let text = mapped(status, Call::Attach).to_string();
            assert!(text.contains(expected), "{text:?} lacks {expected:?}");
        }
    }

    #[test]
    fn statuses_with_a_local_cause_mean_the_server_is_unreachable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let status = Status::from_error(Box::new(io));
        let error = mapped(status, Call::Attach);
        assert!(matches!(error, GuestError::Unreachable { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "cannot reach the server at http://127.0.0.1:8080: Connection refused"
        );
        let error = mapped(Status::unavailable(""), Call::Attach);
        assert!(matches!(error, GuestError::Unreachable { .. }));
    }

    #[test]
    fn error_messages_never_contain_the_secret() {
        let statuses = || {
            [
                Status::permission_denied(format!("wrong secret {SECRET}")),
                Status::not_found(SECRET),
                Status::invalid_argument(format!("secret={SECRET}")),
                Status::resource_exhausted(SECRET),
                Status::unauthenticated(SECRET),
                Status::failed_precondition(SECRET),
                Status::unavailable(SECRET),
                Status::internal(SECRET),
                Status::unknown(SECRET),
                Status::from_error(Box::new(std::io::Error::other(SECRET))),
            ]
        };
        for call in [Call::Attach, Call::Input] {
            for status in statuses() {
                let error = mapped(status, call);
                assert!(!error.to_string().contains(SECRET), "{error}");
                assert!(!format!("{error:?}").contains(SECRET), "{error:?}");
            }
        }
    }
}
