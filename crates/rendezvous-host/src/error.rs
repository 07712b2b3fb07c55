//! The one error type of this crate: what `build()` and `run()` return.

use rendezvous_proto::endpoint::EndpointError;
use rendezvous_proto::ids::{InvalidName, WeakSecret};

/// Why a host could not be built, or why [`Host::run`](crate::Host::run)
/// stopped for good.
///
/// The texts never contain a secret or the host token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// `build()` was called without
    /// [`HostBuilder::task_id`](crate::HostBuilder::task_id).
    #[error("no task ID given")]
    MissingTaskId,

    /// The task ID or host name is not 1–128 characters of
    /// `[A-Za-z0-9._:-]`.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),

    /// A secret given to the builder is shorter than [`MIN_SECRET_LEN`]
    /// characters, or too repetitive to be random
    /// ([`check_secret_strength`](rendezvous_proto::ids::check_secret_strength)).
    #[error("the {which} {why}; omit it to have one generated")]
    WeakSecret {
        /// Which one: "secret" or "read-only secret".
        which: &'static str,
        /// The rule it breaks.
        why: WeakSecret,
    },

    /// The host token is empty or has a character other than printable
    /// ASCII (it travels in an HTTP header).
    #[error("the host token must be printable ASCII without spaces")]
    InvalidHostToken,

    /// The read-only secret equals the read-write secret, which would make
    /// the role of a guest ambiguous.
    #[error("the read-only secret must differ from the secret")]
    SameSecrets,

    /// More than [`MAX_LABELS`](crate::MAX_LABELS) labels, or a key or
    /// value longer than [`MAX_LABEL_BYTES`](crate::MAX_LABEL_BYTES) bytes.
    /// The text names the bound.
    #[error("invalid labels: {0}")]
    InvalidLabel(String),

    /// The server URL is not a usable `http://` or `https://` URL, or the
    /// TLS options for it cannot be used.
    #[error(transparent)]
    InvalidServerUrl(#[from] EndpointError),

    /// The operating system's random source failed while generating a
    /// secret.
    #[error("could not generate a secret: {0}")]
    Random(String),

    /// The server ended the control stream with `INVALID_ARGUMENT`: it
    /// refused the task ID, host name, secrets or labels. Permanent.
    #[error("the server refused this host's Hello (invalid argument): {0}")]
    InvalidArgument(String),

    /// The server ended the control stream with `PERMISSION_DENIED`: the
    /// task is already published with another secret. Permanent.
    #[error("the server refused the secret for this task (permission denied): {0}")]
    PermissionDenied(String),

    /// The server ended the control stream with `UNAUTHENTICATED`: it
    /// admits only hosts with a host token, and this host has none or one
    /// it does not know. Permanent.
    #[error("the server did not admit this host (unauthenticated): {0}")]
    NotAdmitted(String),

    /// The server ended the control stream with `ALREADY_EXISTS`: another
    /// host of this task already uses this host name. Permanent on the
    /// first connection; after a lost connection it is retried for
    /// [`REREGISTER_WINDOW`](crate::REREGISTER_WINDOW), because the server
    /// may not have noticed yet that the old connection is gone.
    #[error("the host name is already in use in this task (already exists): {0}")]
    AlreadyExists(String),
}

impl HostError {
    /// Maps a gRPC status on the control stream to a permanent error, or
    /// `None` when the status is transient (everything but
    /// `INVALID_ARGUMENT`, `UNAUTHENTICATED`, `PERMISSION_DENIED` and
    /// `ALREADY_EXISTS`) and the host should reconnect.
    pub(crate) fn from_control_status(status: &tonic::Status) -> Option<Self> {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::InvalidArgument => Some(Self::InvalidArgument(message)),
            tonic::Code::PermissionDenied => Some(Self::PermissionDenied(message)),
            tonic::Code::Unauthenticated => Some(Self::NotAdmitted(message)),
            tonic::Code::AlreadyExists => Some(Self::AlreadyExists(message)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_four_codes_are_permanent() {
        use tonic::{Code, Status};
        assert!(matches!(
            HostError::from_control_status(&Status::invalid_argument("x")),
            Some(HostError::InvalidArgument(_))
        ));
        assert!(matches!(
            HostError::from_control_status(&Status::permission_denied("x")),
            Some(HostError::PermissionDenied(_))
        ));
        assert!(matches!(
            HostError::from_control_status(&Status::unauthenticated("x")),
            Some(HostError::NotAdmitted(_))
        ));
        assert!(matches!(
            HostError::from_control_status(&Status::already_exists("x")),
            Some(HostError::AlreadyExists(_))
        ));
        for code in [
            Code::Unavailable,
            Code::Internal,
            Code::Unknown,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Cancelled,
        ] {
            assert!(HostError::from_control_status(&Status::new(code, "x")).is_none());
        }
    }
}
