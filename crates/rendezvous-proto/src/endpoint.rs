//! Client endpoints for hosts and guests: one place that turns a server URL
//! and its [`TlsOptions`] into something that connects, so `http://` and
//! `https://` behave the same in the host, `attach`, `sessions`, bench and
//! tests.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::tls::{ALPN_H2, TlsConnector, TlsOptions, TlsOptionsError};

/// How long a client waits for a TCP (and TLS) connection, in ms.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(10_000);

/// Interval of HTTP/2 PING frames a client sends on an idle connection, so
/// that NATs and proxies keep it open and a dead peer is found.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(20_000);

/// How long a client waits for a PING's answer before it calls the
/// connection dead, in ms.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(10_000);

/// A server URL, or TLS options for it, that cannot be used.
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
    /// The TLS options cannot be used (see [`TlsOptionsError`]).
    #[error(transparent)]
    Tls(#[from] TlsOptionsError),
}

/// A server to connect to: a tonic [`Endpoint`] with this project's
/// settings and, for `https://`, the TLS connector that checks the server
/// as [`TlsOptions`] say. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ServerEndpoint {
    endpoint: Endpoint,
    /// `Some` for `https://`: tonic then dials through it.
    tls: Option<TlsConnector>,
}

impl ServerEndpoint {
    /// An endpoint for `url` (a trailing `/` is ignored). `https://` uses
    /// rustls, offering ALPN `h2`, and trusts the server as `tls` says
    /// (by default the platform's root certificates, so a server behind a
    /// TLS reverse proxy works). The endpoint has [`CONNECT_TIMEOUT`] (for
    /// TCP and TLS together), HTTP/2 keepalive and the HTTP/2 windows of
    /// [`crate::flow`] set, and TCP_NODELAY.
    ///
    /// # Errors
    /// [`EndpointError`] when the scheme is neither http nor https, the URL
    /// does not parse, TLS options come with an `http://` URL, or the TLS
    /// options cannot be used (see [`TlsOptionsError`]).
    pub fn new(url: &str, tls: &TlsOptions) -> Result<Self, EndpointError> {
        let url = url.trim_end_matches('/');
        let https = if url.starts_with("https://") {
            true
        } else if url.starts_with("http://") {
            false
        } else {
            return Err(EndpointError::Scheme(url.to_owned()));
        };
        if !https && !tls.is_default() {
            return Err(TlsOptionsError::NotHttps(url.to_owned()).into());
        }
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|source| EndpointError::Invalid {
                url: url.to_owned(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .initial_connection_window_size(crate::flow::CLIENT_CONNECTION_WINDOW_BYTES)
            .initial_stream_window_size(crate::flow::CLIENT_STREAM_WINDOW_BYTES)
            .tcp_nodelay(true);
        let tls = if https {
            Some(TlsConnector::new(crate::tls::client_config(
                tls,
                &[ALPN_H2],
            )?))
        } else {
            None
        };
        Ok(Self { endpoint, tls })
    }

    /// Changes the tonic endpoint's settings, e.g. a test's smaller HTTP/2
    /// windows. The URL and TLS stay as they are.
    #[must_use]
    pub fn map_endpoint(self, f: impl FnOnce(Endpoint) -> Endpoint) -> Self {
        Self {
            endpoint: f(self.endpoint),
            tls: self.tls,
        }
    }

    /// Makes a connection now.
    ///
    /// # Errors
    /// tonic's transport error, whose source chain ends in the cause: the
    /// TCP connect's I/O error, or a
    /// [`TlsConnectError`](crate::tls::TlsConnectError) for a refused
    /// certificate or a failed handshake.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector(tls.clone()).await,
            None => self.endpoint.connect().await,
        }
    }

    /// A channel that connects on its first call, and again after a broken
    /// connection.
    pub fn connect_lazy(&self) -> Channel {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector_lazy(tls.clone()),
            None => self.endpoint.connect_lazy(),
        }
    }
}

/// [`ServerEndpoint::new`] with the default [`TlsOptions`] (the platform's
/// root certificates for `https://`).
///
/// # Errors
/// As [`ServerEndpoint::new`].
pub fn endpoint(url: &str) -> Result<ServerEndpoint, EndpointError> {
    ServerEndpoint::new(url, &TlsOptions::default())
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

    #[test]
    fn tls_options_need_https() {
        let pinned = TlsOptions {
            ca_cert_pem: None,
            server_fingerprint: Some(crate::tls::Fingerprint::of(b"cert")),
        };
        let error = ServerEndpoint::new("http://127.0.0.1:1", &pinned).unwrap_err();
        assert!(
            matches!(error, EndpointError::Tls(TlsOptionsError::NotHttps(_))),
            "{error}"
        );
        assert!(ServerEndpoint::new("https://127.0.0.1:1", &pinned).is_ok());
    }
}
