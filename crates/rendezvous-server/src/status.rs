//! The one mapping from the server's errors to gRPC status codes.

use tonic::{Code, Status};

use crate::metrics::Metrics;
use crate::registry::RegistryError;
use crate::session::SessionError;

/// A `RESOURCE_EXHAUSTED` answer with `message` for a request with
/// `headers`: a gRPC status for gRPC and gRPC-Web, else 503 with the text.
pub(crate) fn refusal(headers: &http::HeaderMap, message: String) -> axum::response::Response {
    refusal_with(headers, Code::ResourceExhausted, message)
}

/// As [`refusal`], with gRPC status `code` (503 for other requests all the
/// same).
pub(crate) fn refusal_with(
    headers: &http::HeaderMap,
    code: Code,
    message: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        Status::new(code, message)
            .into_http::<axum::body::Body>()
            .into_response()
    } else {
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            format!("{message}\n"),
        )
            .into_response()
    }
}

/// The client's IP address, when the listener recorded the connection's
/// peer (tonic's `TcpConnectInfo`). Behind a proxy, it is the proxy's.
pub(crate) fn client_ip<T>(request: &tonic::Request<T>) -> Option<std::net::IpAddr> {
    request.remote_addr().map(|a| a.ip())
}

/// Counts `e` where the metrics show it (an unknown task, wrong secret,
/// bad token or a host not admitted in `auth_failures`; a locked client IP
/// or task in `auth_rate_limited`; a limit in `limit_refusals{limit}`), and
/// maps it: the services call this where they turn a registry refusal into
/// their answer, so the registry itself counts nothing.
pub(crate) fn refused(metrics: &Metrics, e: RegistryError) -> Status {
    match &e {
        RegistryError::Denied | RegistryError::Token(_) => {
            metrics.auth_failures.inc();
        }
        RegistryError::Limit { name, .. } => metrics.refused_at(name),
        RegistryError::TooManyFailures(_) => {
            metrics.auth_rate_limited.inc();
        }
        RegistryError::HostNotAdmitted(_) => {
            metrics.auth_failures.inc();
        }
        _ => {}
    }
    Status::from(e)
}

impl From<RegistryError> for Status {
    fn from(e: RegistryError) -> Self {
        let code = match &e {
            RegistryError::Denied | RegistryError::ReadOnly | RegistryError::Token(_) => {
                Code::PermissionDenied
            }
            RegistryError::Invalid(_) => Code::InvalidArgument,
            RegistryError::HostNameTaken(_) => Code::AlreadyExists,
            RegistryError::NoSuchHost(_)
            | RegistryError::NoHost
            | RegistryError::NoSuchSession(_) => Code::NotFound,
            RegistryError::Limit { .. } | RegistryError::TooManyFailures(_) => {
                Code::ResourceExhausted
            }
            RegistryError::BadGuest
            | RegistryError::BadHost
            | RegistryError::HostNotAdmitted(_) => Code::Unauthenticated,
            RegistryError::HostGone
            | RegistryError::HostReconnecting
            | RegistryError::Draining
            | RegistryError::DirectoryUnavailable => Code::Unavailable,
            RegistryError::SessionEnded => Code::FailedPrecondition,
        };
        Status::new(code, e.to_string())
    }
}

impl From<SessionError> for Status {
    fn from(e: SessionError) -> Self {
        let code = match &e {
            SessionError::Ended => Code::FailedPrecondition,
            SessionError::UnknownGuest => Code::Unauthenticated,
            SessionError::ReadOnly => Code::PermissionDenied,
            SessionError::SeqTooFarAhead { .. } | SessionError::TooManyGuests(_) => {
                Code::ResourceExhausted
            }
        };
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::limit_name;

    #[test]
    fn denied_is_permission_denied_with_one_message() {
        let s = Status::from(RegistryError::Denied);
        assert_eq!(s.code(), Code::PermissionDenied);
        assert!(s.message().contains("unknown task or wrong secret"));
    }

    #[test]
    fn limits_name_themselves() {
        let s = Status::from(RegistryError::Limit {
            name: limit_name::GUESTS_PER_SESSION,
            value: 64,
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("guests per session is 64"));
    }

    #[test]
    fn an_unreachable_directory_is_unavailable_and_says_to_try_again() {
        let s = Status::from(RegistryError::DirectoryUnavailable);
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.message(),
            "the shared directory (Redis) is unreachable; try again"
        );
    }
}
