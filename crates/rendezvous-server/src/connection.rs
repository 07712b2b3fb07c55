//! One connection's life: the requests (streams) open on it, the client
//! IP's share of connections and streams, and when it is closed for
//! idling. A connection that holds no stream costs memory and a slot of
//! [`Limits::connections`](crate::Limits::connections), so:
//! - one with no request within [`ConnectionTimeouts::first_request`]
//!   (an idle socket, or an HTTP/2 client that never sends its preface) is
//!   closed;
//! - one whose last stream ended [`ConnectionTimeouts::idle`] ago is closed
//!   gracefully (HTTP/2 GOAWAY; HTTP/1.1 closes after the response);
//! - an HTTP/1.1 request's headers must arrive within
//!   [`ConnectionTimeouts::header_read`] (slowloris), which hyper enforces.
//!
//! A host's Control stream and a guest's Attach stream are requests that
//! stay open, so connections that carry them never idle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http_body::Frame;
use tokio::sync::watch;

/// When idle connections are closed; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// HTTP/1.1 request headers must be complete within this, in ms
    /// (default 10 s).
    pub header_read: Duration,
    /// The first request (after TLS) must start within this, in ms
    /// (default 10 s).
    pub first_request: Duration,
    /// A connection with no open request is closed after this, in ms
    /// (default 60 s).
    pub idle: Duration,
}

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_millis(10_000),
            first_request: Duration::from_millis(10_000),
            idle: Duration::from_millis(60_000),
        }
    }
}

/// How long a connection closed for idling may take to finish its
/// goodbye (HTTP/2 GOAWAY, a response being written) before it is dropped,
/// in ms (5 s).
pub const IDLE_CLOSE_GRACE: Duration = Duration::from_millis(5_000);

/// Counts of what each client IP holds now: connections and open
/// requests. Entries leave at zero.
#[derive(Debug, Default)]
pub struct PerIp {
    counts: Mutex<HashMap<IpAddr, IpCounts>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct IpCounts {
    connections: usize,
    streams: usize,
}

/// Which count a [`PerIpGuard`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Connection,
    Stream,
}

/// One connection or one open request of a client IP, counted until
/// dropped.
#[derive(Debug)]
pub struct PerIpGuard {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
    what: Counted,
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut counts = self
            .per_ip
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = counts.get_mut(&self.ip) {
            match self.what {
                Counted::Connection => c.connections = c.connections.saturating_sub(1),
                Counted::Stream => c.streams = c.streams.saturating_sub(1),
            }
            if c.connections == 0 && c.streams == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, what: Counted, max: usize) -> Option<PerIpGuard> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let c = counts.entry(ip).or_default();
        let count = match what {
            Counted::Connection => &mut c.connections,
            Counted::Stream => &mut c.streams,
        };
        if *count >= max {
            if c.connections == 0 && c.streams == 0 {
                counts.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(PerIpGuard {
            per_ip: self.clone(),
            ip,
            what,
        })
    }

    /// One more connection of `ip`, unless it has `max` already.
    pub fn connection(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        self.take(ip, Counted::Connection, max)
    }

    /// One more open request of `ip`, unless it has `max` already.
    pub fn stream(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        self.take(ip, Counted::Stream, max)
    }
}

/// The requests open on one connection, and how many ever started.
#[derive(Debug, Clone)]
pub struct Streams {
    /// (open now, started so far).
    counts: Arc<watch::Sender<(usize, u64)>>,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            counts: Arc::new(watch::Sender::new((0, 0))),
        }
    }
}

/// One open request, until its response body ends or is dropped.
#[derive(Debug)]
pub struct StreamGuard {
    counts: Arc<watch::Sender<(usize, u64)>>,
    _per_ip: Option<PerIpGuard>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.counts.send_modify(|(open, _)| *open -= 1);
    }
}

impl Streams {
    /// Counts a request that starts now; `per_ip` is the client IP's share.
    pub fn start(&self, per_ip: Option<PerIpGuard>) -> StreamGuard {
        self.counts.send_modify(|(open, started)| {
            *open += 1;
            *started += 1;
        });
        StreamGuard {
            counts: self.counts.clone(),
            _per_ip: per_ip,
        }
    }

    /// Resolves once the connection has had no open request for
    /// `timeouts.idle`, or saw no request at all within
    /// `timeouts.first_request`. Returns which.
    pub async fn idle(&self, timeouts: ConnectionTimeouts) -> Idle {
        let mut counts = self.counts.subscribe();
        loop {
            let (open, started) = *counts.borrow_and_update();
            if open > 0 {
                if counts.changed().await.is_err() {
                    return std::future::pending().await;
                }
                continue;
            }
            let (wait, why) = if started == 0 {
                (timeouts.first_request, Idle::NoRequest)
            } else {
                (timeouts.idle, Idle::NoStream)
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => return why,
                changed = counts.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }
}

/// Why a connection was idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// No request within the first-request timeout.
    NoRequest,
    /// No open request for the idle timeout.
    NoStream,
}

/// A response body that holds a [`StreamGuard`] until it ends.
pub struct GuardedBody {
    inner: Body,
    guard: Option<StreamGuard>,
}

impl GuardedBody {
    /// `inner`, counted by `guard` until it ends.
    pub fn new(inner: Body, guard: StreamGuard) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_counts_are_bounded_and_released() {
        let per_ip = Arc::new(PerIp::default());
        let ip = IpAddr::from([192, 0, 2, 7]);
        let a = per_ip.connection(ip, 2).unwrap();
        let _b = per_ip.connection(ip, 2).unwrap();
        assert!(per_ip.connection(ip, 2).is_none());
        assert!(per_ip.connection(IpAddr::from([192, 0, 2, 8]), 2).is_some());
        let _s = per_ip.stream(ip, 1).unwrap();
        assert!(per_ip.stream(ip, 1).is_none());
        drop(a);
        assert!(per_ip.connection(ip, 2).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_without_open_requests() {
        let streams = Streams::default();
        let timeouts = ConnectionTimeouts {
            header_read: Duration::from_secs(1),
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        };
        let started = tokio::time::Instant::now();
        assert_eq!(streams.idle(timeouts).await, Idle::NoRequest);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        let guard = streams.start(None);
        let waiting = {
            let streams = streams.clone();
            tokio::spawn(async move { streams.idle(timeouts).await })
        };
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiting.is_finished(), "idle while a request is open");
        let ended = tokio::time::Instant::now();
        drop(guard);
        assert_eq!(waiting.await.unwrap(), Idle::NoStream);
        assert_eq!(ended.elapsed(), Duration::from_secs(60));
    }
}

/// The application as one connection serves it: each request gets the
/// connection's peer (`TcpConnectInfo`, for `Request::remote_addr`) and is
/// counted, for the idle timeout and the client IP's stream limit. A
/// request over that limit is answered `RESOURCE_EXHAUSTED` (gRPC) or 503.
#[derive(Clone)]
pub struct ConnectionService {
    app: axum::Router,
    info: tonic::transport::server::TcpConnectInfo,
    streams: Streams,
    per_ip: Arc<PerIp>,
    max_streams_per_ip: usize,
    /// Counts refusals at `max_streams_per_ip`.
    metrics: Arc<crate::metrics::Metrics>,
    /// Checks the credential of requests relayed by other replicas.
    cluster_key: Option<crate::cluster::ClusterKey>,
}

impl ConnectionService {
    /// `app` for the connection described by `info`.
    pub fn new(
        app: axum::Router,
        info: tonic::transport::server::TcpConnectInfo,
        streams: Streams,
        per_ip: Arc<PerIp>,
        max_streams_per_ip: usize,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            app,
            info,
            streams,
            per_ip,
            max_streams_per_ip,
            metrics,
            cluster_key: None,
        }
    }

    /// Trusts requests relayed by replicas that share `key`: their guest's
    /// IP stands for the connection's peer ([`crate::cluster`]).
    #[must_use]
    pub fn with_cluster_key(mut self, key: Option<crate::cluster::ClusterKey>) -> Self {
        self.cluster_key = key;
        self
    }
}

impl<B> tower::Service<http::Request<B>> for ConnectionService
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        use crate::cluster::LinkHeaders;
        use axum::response::IntoResponse;
        use tower::ServiceExt;
        // A request another replica relayed counts as its guest's, from
        // the guest's IP; a forged credential is refused before anything.
        let mut info = self.info.clone();
        match crate::cluster::link_headers(request.headers(), self.cluster_key.as_ref()) {
            LinkHeaders::Absent => {}
            LinkHeaders::Relayed(ip) => {
                if let Some(ip) = ip {
                    info.remote_addr = Some(std::net::SocketAddr::new(ip, 0));
                }
                request.extensions_mut().insert(crate::cluster::Relayed);
            }
            LinkHeaders::BadKey => {
                tracing::warn!(peer = ?self.info.remote_addr, "a relayed request with a wrong cluster key");
                self.metrics.auth_failures.inc();
                let response = crate::status::refusal_with(
                    request.headers(),
                    tonic::Code::Unauthenticated,
                    "wrong cluster key: every replica needs the same --cluster-key-file".into(),
                );
                return Box::pin(async move { Ok(response.into_response()) });
            }
        }
        let per_ip = match info.remote_addr {
            Some(peer) => match self.per_ip.stream(peer.ip(), self.max_streams_per_ip) {
                Some(guard) => Some(guard),
                None => {
                    self.metrics
                        .refused_at(crate::config::limit_name::STREAMS_PER_IP);
                    let message = format!(
                        "limit reached: streams per client IP is {}; close some, or ask the \
                         server's operator to raise it",
                        self.max_streams_per_ip
                    );
                    let response = crate::status::refusal(request.headers(), message);
                    return Box::pin(async move { Ok(response.into_response()) });
                }
            },
            None => None,
        };
        let guard = self.streams.start(per_ip);
        request.extensions_mut().insert(info);
        let app = self.app.clone();
        Box::pin(async move {
            let response = app.oneshot(request.map(Body::new)).await?;
            Ok(response.map(|body| Body::new(GuardedBody::new(body, guard))))
        })
    }
}
