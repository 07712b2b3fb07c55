//! Which web origins may use the server from a browser.
//!
//! The task page is served by the server itself, so its requests are
//! same-origin and always allowed. A CI front end on another origin that
//! embeds the web guest must be listed with `--allowed-origin`: those
//! origins get CORS headers on gRPC-Web and on the web guest's assets
//! (module scripts are fetched with CORS). A request whose `Origin` is
//! neither gets `PERMISSION_DENIED` (gRPC) or 403 (HTTP), so a page on an
//! unlisted origin cannot drive a guest even where CORS would not stop it.
//! Requests without an `Origin` header (hosts, `rendezvous attach`, curl)
//! are not browsers' cross-origin requests and pass.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// How long browsers may cache a preflight answer, in seconds (1 day).
pub const PREFLIGHT_MAX_AGE_SECS: u64 = 86_400;

/// The CORS layer for `allowed` origins (exact `scheme://host[:port]`).
pub fn cors(allowed: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed.iter().cloned()))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(std::time::Duration::from_secs(PREFLIGHT_MAX_AGE_SECS))
}

/// Whether `origin` is the server's own, judged by the `Host` header the
/// browser sent (a reverse proxy must pass it through, as Caddy and nginx
/// do by default).
fn same_origin(origin: &[u8], host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.map(HeaderValue::as_bytes) else {
        return false;
    };
    [&b"http://"[..], b"https://"]
        .iter()
        .any(|scheme| origin.strip_prefix(*scheme) == Some(host))
}

/// Middleware: refuses requests from origins that are neither the server's
/// own nor in the allowed list.
pub async fn check(
    State(allowed): State<Arc<Vec<HeaderValue>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return next.run(request).await;
    };
    // HTTP/1.1 carries Host; HTTP/2 carries the :authority in the URI.
    let host = request.headers().get(header::HOST).cloned().or_else(|| {
        request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    if same_origin(origin.as_bytes(), host.as_ref()) || allowed.contains(origin) {
        return next.run(request).await;
    }
    let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let message = format!(
        "origin {shown} may not use this server: its operator can allow it with --allowed-origin {shown}"
    );
    tracing::info!(origin = %shown, "refused a request from an origin that is not allowed");
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        tonic::Status::permission_denied(message)
            .into_http::<axum::body::Body>()
            .into_response()
    } else {
        (StatusCode::FORBIDDEN, format!("{message}\n")).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_compares_with_the_host_header() {
        let host = HeaderValue::from_static("127.0.0.1:8080");
        assert!(same_origin(b"http://127.0.0.1:8080", Some(&host)));
        assert!(same_origin(b"https://127.0.0.1:8080", Some(&host)));
        assert!(!same_origin(b"http://127.0.0.1:9090", Some(&host)));
        assert!(!same_origin(
            b"http://evil.example/127.0.0.1:8080",
            Some(&host)
        ));
        assert!(!same_origin(b"null", Some(&host)));
        assert!(!same_origin(b"http://127.0.0.1:8080", None));
    }
}
