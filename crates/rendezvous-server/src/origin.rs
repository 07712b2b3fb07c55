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

/// The server's public address (`--public-url`), pinned against DNS
/// rebinding: browsers' requests must name it, whatever `Host` says.
#[derive(Debug, Clone)]
pub struct PublicUrl {
    /// `scheme://host[:port]`, as browsers send it in `Origin`.
    pub origin: HeaderValue,
    /// `host[:port]`, as `Host` (or HTTP/2's `:authority`) carries it.
    pub authority: String,
}

impl PublicUrl {
    /// Parses `scheme://host[:port]` (a trailing `/` is allowed).
    ///
    /// # Errors
    /// A text saying what is wrong, when `url` is not `http(s)://host[:port]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{url:?} is not a public URL: use scheme://host[:port], e.g. https://rendezvous.example.com"
            )
        };
        let trimmed = url.trim_end_matches('/');
        let uri: http::Uri = trimmed.parse().map_err(|_| bad())?;
        let authority = uri.authority().ok_or_else(bad)?.as_str().to_owned();
        if !matches!(uri.scheme_str(), Some("http" | "https"))
            || uri
                .path_and_query()
                .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
        {
            return Err(bad());
        }
        Ok(Self {
            origin: HeaderValue::from_str(trimmed).map_err(|_| bad())?,
            authority,
        })
    }
}

/// Who may use the server from a browser: its own origin (judged by the
/// `Host` header, or pinned to [`PublicUrl`]) and the allowed ones.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    /// `--allowed-origin` origins.
    pub allowed: Vec<HeaderValue>,
    /// `--public-url`, when set.
    pub public: Option<PublicUrl>,
}

fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Middleware: refuses requests from origins that are neither the server's
/// own nor in the allowed list. With a public URL, the server's own origin
/// is that URL's, and a plain HTTP request (the task page, assets) that
/// names another host gets 421 Misdirected Request: a page reached by DNS
/// rebinding, under the attacker's name, gets nothing. Native gRPC clients
/// (hosts, `rendezvous attach`) send no `Origin` and may use any name.
pub async fn check(
    State(policy): State<Arc<OriginPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    // HTTP/1.1 carries Host; HTTP/2 carries the :authority in the URI.
    let host = request.headers().get(header::HOST).cloned().or_else(|| {
        request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        if let Some(public) = &policy.public
            && !is_grpc(&request)
            && host.as_ref().map(HeaderValue::as_bytes) != Some(public.authority.as_bytes())
        {
            let message = format!(
                "this server answers as {}: open that address",
                String::from_utf8_lossy(public.origin.as_bytes())
            );
            return (StatusCode::MISDIRECTED_REQUEST, format!("{message}\n")).into_response();
        }
        return next.run(request).await;
    };
    let own = match &policy.public {
        Some(public) => origin == public.origin,
        None => same_origin(origin.as_bytes(), host.as_ref()),
    };
    if own || policy.allowed.contains(origin) {
        return next.run(request).await;
    }
    let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let message = format!(
        "origin {shown} may not use this server: its operator can allow it with --allowed-origin {shown}"
    );
    tracing::info!(origin = %shown, "refused a request from an origin that is not allowed");
    if is_grpc(&request) {
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
    fn public_urls_are_scheme_host_and_port() {
        let public = PublicUrl::parse("https://rdv.example.com/").unwrap();
        assert_eq!(public.origin, "https://rdv.example.com");
        assert_eq!(public.authority, "rdv.example.com");
        assert_eq!(
            PublicUrl::parse("http://127.0.0.1:8080").unwrap().authority,
            "127.0.0.1:8080"
        );
        assert!(PublicUrl::parse("rdv.example.com").is_err());
        assert!(PublicUrl::parse("https://rdv.example.com/t/x").is_err());
        assert!(PublicUrl::parse("ftp://rdv.example.com").is_err());
    }

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
