//! The listener: one port for gRPC (HTTP/2), gRPC-Web (HTTP/1.1 and
//! HTTP/2) and plain HTTP, in cleartext or over TLS ([`crate::tls`]), with
//! a cap on connections and a graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rendezvous_proto::guest_service_server::GuestServiceServer;
use rendezvous_proto::host_service_server::HostServiceServer;
use rendezvous_proto::message_size::MAX_MESSAGE_BYTES;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::either::Either;
use tonic::transport::server::TcpConnectInfo;

use crate::config::ServerConfig;
use crate::connection::{ConnectionService, IDLE_CLOSE_GRACE, Idle, PerIp, Streams};
use crate::guest_service::GuestApi;
use crate::host_service::HostApi;
use crate::registry::Registry;
use crate::tls::{TLS_HANDSHAKE_TIMEOUT, TlsConfig};

/// Interval of HTTP/2 PINGs the server sends on each connection, in ms
/// (20 s): finds dead peers, keeps NAT entries open.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(20_000);

/// How long a PING may go unanswered before the connection is closed, in ms.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(20_000);

/// Largest HTTP/2 frame the server accepts, and so offers its peers, in
/// bytes (64 KiB; the protocol's default is 16 KiB).
pub const HTTP2_MAX_FRAME_BYTES: u32 = 64 * 1024;

/// The HTTP/2 connection window the server offers, in bytes (1 MiB,
/// hyper's default, set here so that it cannot move with a dependency).
/// h2 allows half of it for unread small DATA frames on a connection; the
/// credit of [`rendezvous_proto::flow`] keeps a host with 64 paused
/// sessions at about half of that.
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;

/// The HTTP/2 stream window the server offers, in bytes (1 MiB): a host's
/// Data stream may have this much output on its way.
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;

/// Most concurrent streams on one connection (200, hyper's default): a
/// host's Control and Data streams, or one client's guests.
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 200;

/// Most response bytes buffered for one HTTP/2 stream beyond what its
/// peer's window lets through, in bytes (64 KiB; hyper's default is 400
/// KiB). A guest that reads nothing holds about this much, plus one output
/// message (see [`crate::session::UNACKED_MESSAGE_BYTES`]), in the server.
pub const HTTP2_MAX_SEND_BUF_BYTES: usize = 64 * 1024;

/// Largest header list an HTTP/2 request may carry, in bytes (16 KiB;
/// hyper's default is 16 MiB). gRPC and gRPC-Web requests carry a few
/// hundred bytes.
pub const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Most streams a client may open and reset before the server has
/// accepted them, per connection (20, hyper's default, set here so that it
/// cannot move): the bound against rapid-reset floods (CVE-2023-44487).
pub const HTTP2_MAX_PENDING_RESET_STREAMS: usize = 20;

/// How long a drain waits for input queued by guests to reach the hosts,
/// in ms (2 s), before it ends the hosts' streams.
pub const DRAIN_INPUT_TIMEOUT: Duration = Duration::from_millis(2_000);

/// Connections over [`crate::Limits::connections`] that are still served,
/// only to be told `RESOURCE_EXHAUSTED`; more are closed at once.
pub const MAX_REFUSED_CONNECTIONS: usize = 64;

/// How long a refused connection stays open to read its requests, in ms.
pub const REFUSED_CONNECTION_TIME: Duration = Duration::from_millis(5_000);

/// Answers every request with `RESOURCE_EXHAUSTED` (gRPC, gRPC-Web) or 503
/// (plain HTTP), naming the connection limit.
fn refusal_app(limit: usize) -> axum::Router {
    let message = format!(
        "limit reached: connections is {limit}; try again later, or ask the server's operator to raise it"
    );
    let refuse = move |request: axum::extract::Request| {
        let message = message.clone();
        async move { crate::status::refusal(request.headers(), message) }
    };
    axum::Router::new()
        .fallback(refuse)
        .layer(tonic_web::GrpcWebLayer::new())
}

/// Ends every session and disconnects every host when dropped, however
/// [`Server::run`] ends, unless it drained (then the sessions go on at
/// the next server) or [`RunningServer::crash`] stopped it (a crashed
/// process tells no one anything).
struct ShutdownOnDrop {
    registry: Arc<Registry>,
    crashed: Arc<AtomicBool>,
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if !self.registry.is_draining() && !self.crashed.load(Ordering::Acquire) {
            self.registry.shutdown();
        }
    }
}

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    registry: Arc<Registry>,
    /// `Some`: every connection is TLS (see [`Server::with_tls`]).
    tls: Option<TlsConfig>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port).
    ///
    /// # Errors
    /// The bind's I/O error (e.g. the address is in use).
    pub async fn bind(addr: SocketAddr, config: ServerConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            registry: Arc::new(Registry::new(config)),
            tls: None,
        })
    }

    /// Serves TLS with `tls` on every connection, instead of cleartext:
    /// the handshake (at most [`TLS_HANDSHAKE_TIMEOUT`]) runs in each
    /// connection's task, ALPN offers `h2` and `http/1.1`, and every HTTP
    /// response carries `Strict-Transport-Security` (see [`crate::tls`]).
    /// Keep a clone of `tls` to [`reload`](TlsConfig::reload) it.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.registry.metrics().watch_tls(tls.clone());
        self.tls = Some(tls);
        self
    }

    /// The TLS configuration, when the server serves TLS.
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    /// The address the server listens on.
    ///
    /// # Errors
    /// The socket's I/O error.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The server's registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The whole application: gRPC and gRPC-Web services plus HTTP routes.
    /// Every message, both ways, is at most [`MAX_MESSAGE_BYTES`]; a larger
    /// request message fails with `RESOURCE_EXHAUSTED` naming the limit
    /// (see `message_limit`), on both transports.
    pub fn app(registry: Arc<Registry>) -> axum::Router {
        let hosts = HostServiceServer::new(HostApi::new(registry.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let guests = GuestServiceServer::new(GuestApi::new(registry.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // The size check sees gRPC framing: inside gRPC-Web's translation.
        let grpc = tonic::service::Routes::new(hosts)
            .add_service(guests)
            .into_axum_router()
            .layer(axum::middleware::map_request_with_state(
                registry.metrics().clone(),
                crate::message_limit::limit_messages,
            ))
            .layer(axum::middleware::from_fn_with_state(
                registry.metrics().clone(),
                crate::rpc_metrics::meter,
            ))
            .layer(tonic_web::GrpcWebLayer::new());
        let config = registry.config();
        let policy = crate::origin::OriginPolicy {
            allowed: config.allowed_origins.clone(),
            public: config.public_url.clone(),
        };
        let readiness = registry.clone();
        crate::http::router(
            &config.frame_ancestors,
            Arc::new(move || readiness.is_ready()),
        )
        .merge(grpc)
        .layer(crate::origin::cors(&policy.allowed))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(policy),
            crate::origin::check,
        ))
    }

    /// Serves until `shutdown` resolves, then stops gracefully in the
    /// order load balancers expect ([`ServerConfig::shutdown`]): `/readyz`
    /// answers 503 at once while everything is served as before for the
    /// drain delay; then it stops accepting (the listener is closed) and
    /// drains (see [`Registry::drain`]): every host's and guest's stream
    /// ends with UNAVAILABLE ("the server is restarting") so that they
    /// resume, HTTP/2 connections get GOAWAY, and it waits for them to
    /// close (first waiting up to [`DRAIN_INPUT_TIMEOUT`] for the guests'
    /// input to reach the hosts), until the shutdown timeout, counted from
    /// `shutdown`; connections still open then are dropped.
    /// Sessions of hosts with a grace
    /// period are not ended: those hosts resume them on the next server
    /// with the same state key; the others end "the server is shutting
    /// down". At most `limits.connections` connections are served at
    /// once; up to [`MAX_REFUSED_CONNECTIONS`] more are answered
    /// `RESOURCE_EXHAUSTED` for [`REFUSED_CONNECTION_TIME`], and any beyond
    /// those are closed. Dropping the returned future instead stops at once:
    /// every connection is dropped and every session ended.
    ///
    /// With TLS, each connection's handshake runs in its own task, within
    /// [`TLS_HANDSHAKE_TIMEOUT`] (and, for a refused connection, within
    /// [`REFUSED_CONNECTION_TIME`]); a failed handshake closes only that
    /// connection, logged at debug level.
    ///
    /// # Errors
    /// Only a failure to accept that is not about one connection.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        self.run_until(shutdown, std::future::pending(), Arc::default())
            .await
    }

    /// [`Server::run`], with a second future `force` that ends the stop at
    /// once when it resolves (the second SIGTERM): hosts and guests are
    /// still told to reconnect, but nothing is waited for.
    ///
    /// # Errors
    /// As [`Server::run`].
    pub async fn run_or_force(
        self,
        shutdown: impl Future<Output = ()>,
        force: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.run_until(shutdown, force, Arc::default()).await
    }

    /// [`Server::run_or_force`], ending no session when it is dropped once
    /// `crashed` is set.
    async fn run_until(
        self,
        shutdown: impl Future<Output = ()>,
        force: impl Future<Output = ()>,
        crashed: Arc<AtomicBool>,
    ) -> std::io::Result<()> {
        let mut app = Self::app(self.registry.clone());
        let mut refuse = refusal_app(self.registry.config().limits.connections);
        if self.tls.is_some() {
            app = app.layer(crate::tls::hsts_layer());
            refuse = refuse.layer(crate::tls::hsts_layer());
        }
        let connections = Arc::new(Semaphore::new(self.registry.config().limits.connections));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .timer(TokioTimer::new())
            // Larger DATA frames: fewer frames and writes per output
            // message (`rendezvous bench` measured about 12 % less CPU).
            .max_frame_size(HTTP2_MAX_FRAME_BYTES)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
            .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS)
            .max_send_buf_size(HTTP2_MAX_SEND_BUF_BYTES)
            .keep_alive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
        let limits = self.registry.config().limits;
        let timeouts = self.registry.config().connection_timeouts;
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header_read);
        builder
            .http2()
            .max_header_list_size(HTTP2_MAX_HEADER_LIST_BYTES)
            .max_pending_accept_reset_streams(Some(HTTP2_MAX_PENDING_RESET_STREAMS));
        let closing = tokio_util::sync::CancellationToken::new();
        // Connections and open requests per client IP.
        let per_ip = Arc::new(PerIp::default());
        let refusals = Arc::new(Semaphore::new(MAX_REFUSED_CONNECTIONS));
        // Every connection task belongs to this set: dropping `run` (or
        // leaving it) aborts them, and the guard ends every session.
        let mut tasks = JoinSet::new();
        let _guard = ShutdownOnDrop {
            registry: self.registry.clone(),
            crashed,
        };
        let times = self.registry.config().shutdown;
        tokio::pin!(shutdown);
        tokio::pin!(force);
        // Set by the shutdown signal: when to stop accepting, and when the
        // whole stop must be over.
        let mut stop: Option<(Instant, Instant)> = None;
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        loop {
            let (stream, peer) = tokio::select! {
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                () = &mut shutdown, if stop.is_none() => {
                    let now = Instant::now();
                    stop = Some((now + times.drain_delay, now + times.timeout));
                    self.registry.stop_ready();
                    tracing::info!(
                        drain_delay_ms = times.drain_delay.as_millis(),
                        shutdown_timeout_ms = times.timeout.as_millis(),
                        "stopping: /readyz says so; serving on for the drain delay"
                    );
                    continue;
                }
                () = tokio::time::sleep_until(stop.map_or(far, |(at, _)| at)), if stop.is_some() => break,
                () = &mut force => {
                    tracing::warn!("stopping at once (second signal)");
                    self.registry.drain();
                    self.registry.drain_hosts();
                    return Ok(());
                }
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Per-connection errors (a reset before accept, or
                        // out of file descriptors): log, breathe, go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let tls = self.tls.as_ref().map(TlsConfig::acceptor);
            let Some(ip_share) = per_ip.connection(peer.ip(), limits.connections_per_ip) else {
                // One client IP holds its share of connections: close.
                tracing::warn!(%peer, "connection limit per client IP reached");
                self.registry.metrics().connections_refused.inc();
                self.registry
                    .metrics()
                    .refused_at(crate::config::limit_name::CONNECTIONS_PER_IP);
                continue;
            };
            if let Ok(permit) = connections.clone().try_acquire_owned() {
                let served = ServedConnection::new(&self.registry);
                // The peer's address, for `Request::remote_addr` (the
                // failure limits, the logs), and the requests counted for
                // the idle timeout and the per-IP stream limit.
                let info = TcpConnectInfo {
                    local_addr: stream.local_addr().ok(),
                    remote_addr: Some(peer),
                };
                let streams = Streams::default();
                let service = TowerToHyperService::new(
                    ConnectionService::new(
                        app.clone(),
                        info,
                        streams.clone(),
                        per_ip.clone(),
                        limits.streams_per_ip,
                        self.registry.metrics().clone(),
                    )
                    .with_cluster_key(self.registry.config().cluster_key.clone()),
                );
                let (builder, closing) = (builder.clone(), closing.clone());
                let metrics = self.registry.metrics().clone();
                tasks.spawn(async move {
                    let Some(io) = handshake(stream, tls, peer).await else {
                        return;
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(io, service)
                        .into_owned();
                    tokio::pin!(conn);
                    let idle = tokio::select! {
                        result = conn.as_mut() => {
                            if let Err(e) = result {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                            drop((permit, served, ip_share));
                            return;
                        }
                        idle = streams.idle(timeouts) => Some(idle),
                        () = closing.cancelled() => None,
                    };
                    if let Some(idle) = idle {
                        tracing::debug!(%peer, ?idle, "closing an idle connection");
                        metrics.idle_connections_closed.inc();
                        if idle == Idle::NoRequest {
                            // Nothing was asked, so nothing is owed: close.
                            drop((permit, served, ip_share));
                            return;
                        }
                    }
                    conn.as_mut().graceful_shutdown();
                    if idle.is_some() {
                        let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, conn).await;
                    } else {
                        // The stop's own deadline ends this wait.
                        let _ = conn.await;
                    }
                    drop((permit, served, ip_share));
                });
            } else if let Ok(permit) = refusals.clone().try_acquire_owned() {
                // Over the limit: answer what this connection asks with
                // RESOURCE_EXHAUSTED for a short while, then close it.
                tracing::warn!(%peer, "connection limit reached");
                self.registry.metrics().connections_refused.inc();
                self.registry
                    .metrics()
                    .refused_at(crate::config::limit_name::CONNECTIONS);
                let service = TowerToHyperService::new(refuse.clone());
                let (builder, watcher) = (builder.clone(), graceful.watcher());
                tasks.spawn(async move {
                    let _ip_share = ip_share;
                    let served = async move {
                        let Some(io) = handshake(stream, tls, peer).await else {
                            return;
                        };
                        let conn = watcher.watch(
                            builder
                                .serve_connection_with_upgrades(io, service)
                                .into_owned(),
                        );
                        let _ = conn.await;
                    };
                    let _ = tokio::time::timeout(REFUSED_CONNECTION_TIME, served).await;
                    drop(permit);
                });
            } else {
                // Beyond both bounds the connection is closed at once.
                self.registry.metrics().connections_refused.inc();
                self.registry
                    .metrics()
                    .refused_at(crate::config::limit_name::CONNECTIONS);
            }
        }
        // No more connections: new ones are refused by the kernel.
        let Self {
            listener, registry, ..
        } = self;
        drop(listener);
        let deadline = stop.map_or(far, |(_, end)| end);
        tracing::info!("draining: hosts and guests are told to reconnect and resume");
        closing.cancel();
        registry.drain();
        let drained = async {
            // Input the guests were told is taken reaches the hosts first.
            let delivered = async {
                while !registry.input_delivered() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            if tokio::time::timeout(DRAIN_INPUT_TIMEOUT, delivered)
                .await
                .is_err()
            {
                tracing::warn!("input still queued for a host at the end of the drain");
            }
            registry.drain_hosts();
            graceful.shutdown().await;
            while tasks.join_next().await.is_some() {}
        };
        tokio::select! {
            () = drained => tracing::info!("drained: every connection closed"),
            () = tokio::time::sleep_until(deadline) => {
                registry.drain_hosts();
                tracing::warn!(
                    shutdown_timeout_ms = times.timeout.as_millis(),
                    "connections still open at the shutdown timeout; closing them"
                );
            }
            () = &mut force => {
                registry.drain_hosts();
                tracing::warn!("stopping at once (second signal)");
            }
        }
        tasks.shutdown().await;
        Ok(())
    }
}

/// A connection's stream as hyper reads it: TCP, or TLS over TCP.
type ConnectionIo = TokioIo<Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>>;

/// The stream to serve HTTP on: `stream` itself without TLS, else after a
/// TLS handshake of at most [`TLS_HANDSHAKE_TIMEOUT`]; `None` when the
/// handshake failed or took too long (logged at debug level: scanners and
/// clients that distrust the certificate do this all day).
async fn handshake(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    peer: SocketAddr,
) -> Option<ConnectionIo> {
    let Some(acceptor) = tls else {
        return Some(TokioIo::new(Either::Left(stream)));
    };
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(TokioIo::new(Either::Right(stream))),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// A server running on the current tokio runtime, from [`Server::spawn`]:
/// what `demo`, `bench` and the tests run. Dropping it stops the server at
/// once, as [`RunningServer::crash`] does.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    registry: Arc<Registry>,
    /// The TLS configuration, shared with the running server.
    tls: Option<TlsConfig>,
    /// Resolves `run`'s shutdown future.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The task running [`Server::run`].
    task: tokio_util::task::AbortOnDropHandle<std::io::Result<()>>,
    /// Set by [`RunningServer::crash`]: the task ends no session.
    crashed: Arc<AtomicBool>,
}

impl Server {
    /// Runs the server in a task of the current runtime.
    ///
    /// # Errors
    /// The listener's I/O error when its address cannot be read.
    pub fn spawn(self) -> std::io::Result<RunningServer> {
        let addr = self.local_addr()?;
        let registry = self.registry.clone();
        let tls = self.tls.clone();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let crashed = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(self.run_until(
            async move {
                let _ = stopped.await;
            },
            std::future::pending(),
            crashed.clone(),
        ));
        Ok(RunningServer {
            addr,
            registry,
            tls,
            shutdown: Some(shutdown),
            task: tokio_util::task::AbortOnDropHandle::new(task),
            crashed,
        })
    }
}

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's URL for clients: `https://ADDR` with TLS, else
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The TLS configuration, when the server serves TLS: reloading it
    /// changes the certificate of the running server's next handshakes.
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    /// The server's registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Stops gracefully, as on SIGTERM (see [`Server::run`]), and waits
    /// until the server has stopped: at most the shutdown timeout
    /// ([`crate::config::ShutdownTimes`]) for connections to close.
    ///
    /// # Errors
    /// What [`Server::run`] returned.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Stops at once, as a crashed process would: the listener and every
    /// connection are dropped, nothing is said to anyone, and no session
    /// is ended (no Exit goes out on a connection about to drop). Waits
    /// until the server's task has ended.
    pub async fn crash(mut self) {
        self.crashed.store(true, Ordering::Release);
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

/// One served connection in the `connections` gauge, while it lives.
struct ServedConnection(prometheus_client::metrics::gauge::Gauge);

impl ServedConnection {
    fn new(registry: &Registry) -> Self {
        let gauge = registry.metrics().connections.clone();
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for ServedConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
