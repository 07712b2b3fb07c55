//! A real server on a loopback port, stopped gracefully, crashed, or
//! dropped (which crashes it).

use std::io;
use std::net::SocketAddr;

use rendezvous_proto::endpoint::ServerEndpoint;
use rendezvous_proto::guest_service_client::GuestServiceClient;
use rendezvous_proto::tls::{TlsOptions, client_config};
use rendezvous_server::tls::TlsConfig;
use rendezvous_server::{RunningServer, Server, ServerConfig};
use tonic::transport::Channel;
use tower::util::BoxCloneService;

use crate::DEADLINE;

/// How a [`TestServer`] stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// As on SIGTERM: sessions end, connections close gracefully.
    Graceful,
    /// As a crashed process: the listener and every connection are dropped
    /// at once, nothing said.
    Crash,
}

/// A `rendezvous-server` on `127.0.0.1:0` (or an address of the test's),
/// in this process, in cleartext or (see [`TestServer::with_tls`]) TLS.
/// Dropping it crashes it.
#[derive(Debug)]
pub struct TestServer {
    /// `http://ADDR`, or `https://ADDR` with TLS.
    pub url: String,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// How the kit's clients (channels, guests, [`crate::TestHost`]) trust
    /// this server: the default for cleartext.
    pub client_tls: TlsOptions,
    /// The server's TLS configuration, for a test to reload.
    pub tls: Option<TlsConfig>,
    running: Option<RunningServer>,
}

impl TestServer {
    /// A server with the default configuration on a free loopback port.
    pub async fn start() -> Self {
        Self::with_config(ServerConfig::default()).await
    }

    /// A server with `config` on a free loopback port.
    pub async fn with_config(config: ServerConfig) -> Self {
        Self::start_at("127.0.0.1:0".parse().expect("an address"), config)
            .await
            .expect("bind 127.0.0.1:0")
    }

    /// A server with `config` on `addr` (e.g. the address of a server that
    /// was stopped, to restart it).
    ///
    /// # Errors
    /// The bind's error.
    pub async fn start_at(addr: SocketAddr, config: ServerConfig) -> io::Result<Self> {
        // A crashed server's listener closes when its aborted task is
        // dropped, which may be just after `stop` returned: retry the bind
        // while the port is still held, up to the kit's deadline.
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        let server = loop {
            match Server::bind(addr, config.clone()).await {
                Err(e)
                    if e.kind() == io::ErrorKind::AddrInUse
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => break other?,
            }
        };
        let running = server.spawn()?;
        Ok(Self {
            url: running.url(),
            addr: running.local_addr(),
            client_tls: TlsOptions::default(),
            tls: None,
            running: Some(running),
        })
    }

    /// A TLS server with `config` and `tls` on a free loopback port, whose
    /// clients in the kit trust it as `client_tls` says (e.g.
    /// [`crate::tls::TestCa::trust`]). Its URL is `https://127.0.0.1:PORT`,
    /// so the certificate must name `127.0.0.1` (or be pinned).
    pub async fn with_tls(config: ServerConfig, tls: TlsConfig, client_tls: TlsOptions) -> Self {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let running = Server::bind(addr, config)
            .await
            .expect("bind 127.0.0.1:0")
            .with_tls(tls.clone())
            .spawn()
            .expect("spawn the server");
        Self {
            url: running.url(),
            addr: running.local_addr(),
            client_tls,
            tls: Some(tls),
            running: Some(running),
        }
    }

    /// The running server's registry (its metrics, its counts).
    pub fn registry(&self) -> &std::sync::Arc<rendezvous_server::registry::Registry> {
        self.running
            .as_ref()
            .expect("the server runs until stopped")
            .registry()
    }

    /// The server's metrics as a scrape shows them (OpenMetrics text),
    /// for [`crate::metrics::value`].
    pub fn metrics_text(&self) -> String {
        let registry = self.registry();
        registry.metrics().encode(registry.connected())
    }

    /// Stops the server and waits until it has stopped.
    pub async fn stop(mut self, how: Stop) {
        let Some(running) = self.running.take() else {
            return;
        };
        let stopped = async move {
            match how {
                Stop::Graceful => running.stop().await.expect("the server stops cleanly"),
                Stop::Crash => running.crash().await,
            }
        };
        tokio::time::timeout(DEADLINE, stopped)
            .await
            .expect("the server stops in time");
    }

    /// A new HTTP/2 connection to the server, as the clients make them.
    pub async fn channel(&self) -> Channel {
        ServerEndpoint::new(&self.url, &self.client_tls)
            .expect("the test server's URL")
            .connect()
            .await
            .expect("connect to the test server")
    }

    /// A raw guest client on a connection of its own.
    pub async fn guest_client(&self) -> GuestServiceClient<Channel> {
        GuestServiceClient::new(self.channel().await)
    }

    /// A guest client over `transport`, on a connection of its own (for
    /// gRPC-Web, a pool of them). It has tonic's defaults for message
    /// sizes, so that tests can send what a careless client would.
    pub async fn guest_client_over(&self, transport: Transport) -> AnyGuestClient {
        let service = match transport {
            Transport::Grpc => {
                let channel = self.channel().await;
                BoxCloneService::new(
                    tower::ServiceBuilder::new()
                        .map_err(tonic::codegen::StdError::from)
                        .service(channel),
                )
            }
            Transport::GrpcWebHttp1 | Transport::GrpcWebHttp2 => {
                let http2 = transport == Transport::GrpcWebHttp2;
                let mut builder = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                );
                builder.http2_only(http2);
                let layers = || {
                    tower::ServiceBuilder::new()
                        .map_response(|r: http::Response<_>| r.map(tonic::body::Body::new))
                        .map_err(tonic::codegen::StdError::from)
                        .layer(tonic_web::GrpcWebClientLayer::new())
                };
                if self.tls.is_some() {
                    // ALPN offers the one protocol used (hyper-rustls sets
                    // it from enable_http1/enable_http2).
                    let config = client_config(&self.client_tls, &[])
                        .expect("the test server's TLS options");
                    let connector = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(config)
                        .https_only();
                    let connector = if http2 {
                        connector.enable_http2().build()
                    } else {
                        connector.enable_http1().build()
                    };
                    let http =
                        builder.build::<_, tonic_web::GrpcWebCall<tonic::body::Body>>(connector);
                    BoxCloneService::new(layers().service(http))
                } else {
                    let http = builder.build_http::<tonic_web::GrpcWebCall<tonic::body::Body>>();
                    BoxCloneService::new(layers().service(http))
                }
            }
        };
        GuestServiceClient::with_origin(service, self.url.parse().expect("the test server's URL"))
    }
}

/// How a test guest reaches the server: gRPC (HTTP/2, native clients), or
/// gRPC-Web over HTTP/1.1 (browsers on a cleartext server) or HTTP/2
/// (browsers behind TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// gRPC over HTTP/2.
    Grpc,
    /// gRPC-Web over HTTP/1.1.
    GrpcWebHttp1,
    /// gRPC-Web over HTTP/2.
    GrpcWebHttp2,
}

/// Every transport a guest may use.
pub const TRANSPORTS: [Transport; 3] = [
    Transport::Grpc,
    Transport::GrpcWebHttp1,
    Transport::GrpcWebHttp2,
];

/// A guest client whatever its transport (see
/// [`TestServer::guest_client_over`]).
pub type AnyGuestClient = GuestServiceClient<
    BoxCloneService<
        http::Request<tonic::body::Body>,
        http::Response<tonic::body::Body>,
        tonic::codegen::StdError,
    >,
>;
