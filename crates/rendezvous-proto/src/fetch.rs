//! One bounded HTTP GET, for the small documents the server and the host
//! fetch from other services: a JWKS or an OpenID discovery document (the
//! server), a CI job's identity token (the host); and one bounded POST of
//! a JSON body ([`post_json`]), for the CI workflow's webhooks.
//!
//! Each call opens one HTTP/1.1 connection, sends one request, reads at
//! most `max_bytes` of the body and gives up after `timeout` in all. No
//! redirect is followed. `https://` URLs are checked against the platform's
//! root certificates (see [`crate::tls`]); `http://` is allowed only for a
//! loopback host (127.0.0.0/8, `::1`, `localhost`), as a test's or a
//! sidecar's endpoint, since keys or tokens fetched in clear could be
//! swapped on the way.

use std::net::IpAddr;
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::tls::{ALPN_HTTP1, TlsConnector, TlsOptions, client_config};

/// Why a fetch failed. The texts name the URL's host, never a header's
/// value (which may be a credential) nor the URL's query.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not `http(s)://host…`, or `http://` names a host that is
    /// not loopback.
    #[error("{0}")]
    Url(String),
    /// Connecting, TLS, or the HTTP exchange failed.
    #[error("cannot fetch from {host}: {why}")]
    Transport {
        /// The URL's host and port.
        host: String,
        /// What went wrong.
        why: String,
    },
    /// The answer's status is not 200 (for a POST: not 2xx).
    #[error("{host} answered HTTP {status}")]
    Status {
        /// The URL's host and port.
        host: String,
        /// The status received.
        status: StatusCode,
    },
    /// The body is longer than allowed.
    #[error("{host} sent more than {max_bytes} bytes")]
    TooLarge {
        /// The URL's host and port.
        host: String,
        /// The bound, in bytes.
        max_bytes: usize,
    },
    /// No answer within the time allowed.
    #[error("{host} did not answer within {timeout:?}")]
    Timeout {
        /// The URL's host and port.
        host: String,
        /// The bound.
        timeout: Duration,
    },
}

/// Whether `host` (as in a URL, IPv6 in brackets) is a loopback name or
/// address.
fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Checks that `url` may be fetched: `https://`, or `http://` on loopback.
///
/// # Errors
/// [`FetchError::Url`] saying what to write instead.
pub fn check_url(url: &str) -> Result<Uri, FetchError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| FetchError::Url(format!("{url:?} is not a URL: write https://host/path")))?;
    let Some(host) = uri.host() else {
        return Err(FetchError::Url(format!(
            "{url:?} has no host: write https://host/path"
        )));
    };
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback_host(host) => Ok(uri),
        Some("http") => Err(FetchError::Url(format!(
            "http://{host} is not loopback: use https://, so that what is fetched cannot be \
             swapped on the way"
        ))),
        _ => Err(FetchError::Url(format!(
            "{url:?} is not an http(s) URL: write https://host/path"
        ))),
    }
}

/// GETs `url` with `headers`, and returns the body of a 200 answer.
///
/// # Errors
/// [`FetchError`]: a URL [`check_url`] refuses, a transport failure, a
/// status other than 200, a body over `max_bytes`, or no complete answer
/// within `timeout`.
pub async fn get(
    url: &str,
    headers: HeaderMap,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Bytes, FetchError> {
    let request = Request::get("/").body(Empty::<Bytes>::new());
    send(url, request, headers, max_bytes, timeout, |s| {
        s == StatusCode::OK
    })
    .await
}

/// POSTs `body` as `application/json` to `url` (with `headers`), and
/// returns the body of a 2xx answer (at most 64 KiB is read).
///
/// # Errors
/// As [`get`], with any 2xx status taken for success.
pub async fn post_json(
    url: &str,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes, FetchError> {
    let request = Request::post("/")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body));
    send(url, request, headers, 64 * 1024, timeout, |s| {
        s.is_success()
    })
    .await
}

/// Sends `request` (its URI is replaced by `url`'s path) with `headers`.
async fn send<B>(
    url: &str,
    request: Result<Request<B>, http::Error>,
    headers: HeaderMap,
    max_bytes: usize,
    timeout: Duration,
    accept: fn(StatusCode) -> bool,
) -> Result<Bytes, FetchError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let uri = check_url(url)?;
    let authority = uri
        .authority()
        .map_or_else(String::new, ToString::to_string);
    let host = authority.clone();
    let mut request = request.map_err(|e| FetchError::Transport {
        host: host.clone(),
        why: e.to_string(),
    })?;
    request.headers_mut().extend(headers);
    let exchange = send_once(uri, authority, request, max_bytes, accept);
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FetchError::Timeout { host, timeout })?
}

async fn send_once<B>(
    uri: Uri,
    authority: String,
    mut request: Request<B>,
    max_bytes: usize,
    accept: fn(StatusCode) -> bool,
) -> Result<Bytes, FetchError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let transport = |why: String| FetchError::Transport {
        host: authority.clone(),
        why,
    };
    let path = uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    *request.uri_mut() = path
        .parse()
        .map_err(|e: http::uri::InvalidUri| transport(e.to_string()))?;
    let headers = request.headers_mut();
    headers.insert(
        http::header::HOST,
        http::HeaderValue::from_str(&authority).map_err(|e| transport(e.to_string()))?,
    );
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("rendezvous"),
    );
    if uri.scheme_str() == Some("https") {
        let config = client_config(&TlsOptions::default(), &[ALPN_HTTP1])
            .map_err(|e| transport(e.to_string()))?;
        let tls = TlsConnector::new(config)
            .connect(&uri)
            .await
            .map_err(|e| transport(e.to_string()))?;
        exchange(TokioIo::new(tls), request, &authority, max_bytes, accept).await
    } else {
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, uri.port_u16().unwrap_or(80)))
            .await
            .map_err(|e| transport(e.to_string()))?;
        exchange(TokioIo::new(tcp), request, &authority, max_bytes, accept).await
    }
}

/// Sends `request` on a new HTTP/1.1 connection over `io` and reads the
/// answer, driving the connection in this task (nothing is spawned).
async fn exchange<I, B>(
    io: I,
    request: Request<B>,
    authority: &str,
    max_bytes: usize,
    accept: fn(StatusCode) -> bool,
) -> Result<Bytes, FetchError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let transport = |why: String| FetchError::Transport {
        host: authority.to_owned(),
        why,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| transport(e.to_string()))?;
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = response.status();
        if !accept(status) {
            return Err(FetchError::Status {
                host: authority.to_owned(),
                status,
            });
        }
        Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge {
                        host: authority.to_owned(),
                        max_bytes,
                    }
                } else {
                    transport(e.to_string())
                }
            })
    };
    let mut answer = pin!(answer);
    tokio::select! {
        biased;
        result = &mut answer => result,
        // The connection may end (the server closed it) before the
        // buffered answer has been read: read it then.
        ended = connection => {
            ended.map_err(|e| transport(e.to_string()))?;
            answer.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_may_be_fetched() {
        for ok in [
            "https://token.actions.githubusercontent.com/.well-known/jwks",
            "http://127.0.0.1:9000/jwks",
            "http://[::1]:9000/jwks",
            "http://localhost/jwks",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://127.0.0.1/jwks",
            "jwks.json",
        ] {
            assert!(matches!(check_url(bad), Err(FetchError::Url(_))), "{bad}");
        }
    }
}
