//! Client endpoints for hosts and guests: one place that turns a server URL
//! into a tonic [`Endpoint`], so `http://` and `https://` behave the same in
//! the host, `attach`, `sessions`, bench and tests.

use std::time::Duration;

use tonic::transport::{ClientTlsConfig, Endpoint};

/// How long a client waits for a TCP (and TLS) connection, in ms.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(10_000);

/// Interval of HTTP/2 PING frames a client sends on an idle connection, so
/// that NATs and proxies keep it open and a dead peer is found.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(20_000);

/// How long a client waits for a PING's answer before it calls the
/// connection dead, in ms.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(10_000);

/// A server URL that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not an `http://` or `https://` URL.
    #[error("server URL must start with http:// or https:// (got {0:?})")]
    Scheme(String),
    /// The URL did not parse.
    #[error("invalid server URL {url:?}: {source}")]
    Invalid {
        /// The URL as given.
        url: String,
        /// Why it did not parse.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Builds an endpoint for `url`. `https://` uses rustls with the platform's
/// root certificates, so a server behind a TLS reverse proxy works. The
/// endpoint has [`CONNECT_TIMEOUT`], HTTP/2 keepalive and the HTTP/2
/// windows of [`crate::flow`] set.
///
/// # Errors
/// [`EndpointError`] when the scheme is neither http nor https, or the URL
/// does not parse.
pub fn endpoint(url: &str) -> Result<Endpoint, EndpointError> {
    let url = url.trim_end_matches('/');
    let tls = if url.starts_with("https://") {
        true
    } else if url.starts_with("http://") {
        false
    } else {
        return Err(EndpointError::Scheme(url.to_owned()));
    };
    let invalid = |source| EndpointError::Invalid {
        url: url.to_owned(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(invalid)?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_connection_window_size(crate::flow::CLIENT_CONNECTION_WINDOW_BYTES)
        .initial_stream_window_size(crate::flow::CLIENT_STREAM_WINDOW_BYTES)
        .tcp_nodelay(true);
    if tls {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_native_roots())
            .map_err(invalid)?;
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_other_schemes() {
        assert!(matches!(endpoint("ftp://x"), Err(EndpointError::Scheme(_))));
        assert!(endpoint("http://127.0.0.1:1").is_ok());
        assert!(endpoint("https://example.com/").is_ok());
    }
}
