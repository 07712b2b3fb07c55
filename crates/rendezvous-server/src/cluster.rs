//! The link between replicas (`serve --redis-url`): a guest that reaches
//! a replica that does not hold its host is relayed, over gRPC, to the
//! replica that does, found by its `--advertise-url` in the shared
//! directory. (As sshx's mesh proxies a browser to the node that owns its
//! session.)
//!
//! - **The owner does everything a guest needs**: it authenticates the
//!   guest again, and keeps offsets, resume, roles, exactly-once input,
//!   backpressure and lag as for its own guests. The replica in between
//!   only passes messages on, one stream for one stream, and reads the
//!   owner's stream only as fast as its guest takes it: a slow guest is
//!   slow at the owner, and lags there. Nothing is buffered here past the
//!   link's HTTP/2 windows ([`rendezvous_proto::flow`]).
//! - **Requests on the link carry the cluster credential**
//!   ([`CLUSTER_KEY_HEADER`]): HMAC-SHA256 of a fixed label under the
//!   cluster key that every replica reads from `--cluster-key-file`, so
//!   that the key itself never travels. They also carry the guest's own IP
//!   ([`CLIENT_IP_HEADER`]), so that the owner's limits per client IP
//!   (streams, failed authentications) count the guest, not the replica.
//!   The owner trusts that IP only under a valid credential, answers a
//!   wrong credential UNAUTHENTICATED, and never relays a relayed request
//!   again (a host that moved meanwhile is UNAVAILABLE: try again).
//! - **Unary calls** (SendInput, Resize, Ack) are relayed for the guests
//!   whose Attach stream this replica relays: a browser's calls share its
//!   one HTTP/2 connection, so they reach the same replica behind a TCP
//!   load balancer. `ListSessions` asks every replica that holds one of
//!   the task's hosts, and merges their answers.
//! - **The link is plain gRPC to each replica's advertise URL**
//!   (`https://` trusts the platform's roots), over [`LINK_CONNECTIONS`]
//!   connections per replica, since each HTTP/2 connection carries at most
//!   the server's 200 streams.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{Stream, StreamExt};
use hmac::{Hmac, Mac};
use rendezvous_proto::guest_service_client::GuestServiceClient;
use rendezvous_proto::{
    AttachRequest, GuestEvent, ListSessionsRequest, ListSessionsResponse, TerminalRequest,
    guest_event, terminal_request,
};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

use crate::guest_stream::EventStream;
use crate::registry::{Replica, lock};

/// The request header that carries the cluster credential on the link.
pub const CLUSTER_KEY_HEADER: &str = "x-rendezvous-cluster-key";

/// The request header that carries the relayed guest's IP address on the
/// link; trusted only beside a valid [`CLUSTER_KEY_HEADER`].
pub const CLIENT_IP_HEADER: &str = "x-rendezvous-client-ip";

/// Shortest cluster key file, in bytes (32).
pub const MIN_CLUSTER_KEY_BYTES: usize = 32;

/// HTTP/2 connections a replica opens to each other replica it relays to
/// (4): each carries at most the server's 200 concurrent streams, so one
/// replica relays at most 800 streams to another at a time. A stream over
/// that waits for a free one.
pub const LINK_CONNECTIONS: usize = 4;

/// Replicas whose connections are kept (64); past it, one of them (any)
/// is dropped and made again when next needed.
pub const MAX_LINKED_REPLICAS: usize = 64;

/// Why a cluster key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ClusterKeyError {
    /// The file could not be read.
    #[error("cannot read the cluster key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds fewer than [`MIN_CLUSTER_KEY_BYTES`] bytes.
    #[error(
        "the cluster key file {0} is shorter than {MIN_CLUSTER_KEY_BYTES} bytes; make one \
         with `head -c 32 /dev/urandom > FILE` and give every replica the same file"
    )]
    Short(PathBuf),
}

/// The key replicas prove to each other that a relayed request comes from
/// one of them. Only a credential derived from it travels. Its `Debug`
/// output shows nothing of it.
#[derive(Clone)]
pub struct ClusterKey {
    /// base64url of HMAC-SHA256("rendezvous/v1/cluster-link") under the
    /// key: what [`CLUSTER_KEY_HEADER`] carries.
    credential: Arc<str>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// The key of these bytes (at least [`MIN_CLUSTER_KEY_BYTES`]); `None`
    /// when shorter.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < MIN_CLUSTER_KEY_BYTES {
            return None;
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(bytes)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"rendezvous/v1/cluster-link");
        let credential = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Some(Self {
            credential: credential.into(),
        })
    }

    /// The key in `path`: its raw bytes, the same file on every replica
    /// (`serve --cluster-key-file`).
    ///
    /// # Errors
    /// [`ClusterKeyError::Read`], [`ClusterKeyError::Short`].
    pub fn from_file(path: &Path) -> Result<Self, ClusterKeyError> {
        let bytes = std::fs::read(path).map_err(|source| ClusterKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::new(&bytes).ok_or_else(|| ClusterKeyError::Short(path.to_owned()))
    }

    /// Whether `presented` is this key's credential, in constant time.
    fn verifies(&self, presented: &[u8]) -> bool {
        presented.ct_eq(self.credential.as_bytes()).into()
    }
}

/// Set on a request that another replica relayed (see the module docs):
/// the server never relays it again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Relayed;

/// What a request's link headers say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LinkHeaders {
    /// None: a client's own request.
    Absent,
    /// A replica relayed it, for a guest at this IP (if it said).
    Relayed(Option<IpAddr>),
    /// A cluster credential that is not this server's (or this server has
    /// no cluster key).
    BadKey,
}

/// Reads the link headers of a request, checking the credential against
/// `key`.
pub(crate) fn link_headers(headers: &http::HeaderMap, key: Option<&ClusterKey>) -> LinkHeaders {
    let Some(presented) = headers.get(CLUSTER_KEY_HEADER) else {
        return LinkHeaders::Absent;
    };
    if !key.is_some_and(|k| k.verifies(presented.as_bytes())) {
        return LinkHeaders::BadKey;
    }
    let ip = headers
        .get(CLIENT_IP_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    LinkHeaders::Relayed(ip)
}

/// This replica's side of the link: connections to the other replicas,
/// and the guests whose streams it relays (for their unary calls).
#[derive(Debug)]
pub struct ClusterLink {
    key: ClusterKey,
    this: Replica,
    /// By advertise URL: the connections, and the next one to use.
    channels: Mutex<HashMap<String, (Vec<Channel>, usize)>>,
    /// Guest ID to (advertise URL, relayed streams of that guest): a guest
    /// that resumes may have its old stream open beside its new one.
    guests: Mutex<HashMap<String, (String, usize)>>,
}

impl ClusterLink {
    /// The link of replica `this`, whose requests carry `key`'s
    /// credential.
    pub fn new(key: ClusterKey, this: Replica) -> Self {
        Self {
            key,
            this,
            channels: Mutex::default(),
            guests: Mutex::default(),
        }
    }

    /// This replica, as the shared directory names it.
    pub fn this(&self) -> &Replica {
        &self.this
    }

    /// How many guests' streams this replica relays now.
    pub fn relayed_guests(&self) -> usize {
        lock(&self.guests).len()
    }

    /// A client over one of the connections to the replica at `url`.
    fn client(&self, url: &str) -> Result<GuestServiceClient<Channel>, Status> {
        let mut channels = lock(&self.channels);
        if !channels.contains_key(url) {
            let endpoint = rendezvous_proto::endpoint::endpoint(url).map_err(|e| {
                tracing::warn!(replica = url, error = %e, "a replica's advertise URL is unusable");
                Status::internal("the replica that holds this host cannot be reached")
            })?;
            if channels.len() >= MAX_LINKED_REPLICAS
                && let Some(oldest) = channels.keys().next().cloned()
            {
                channels.remove(&oldest);
            }
            let pool = (0..LINK_CONNECTIONS)
                .map(|_| endpoint.connect_lazy())
                .collect();
            channels.insert(url.to_owned(), (pool, 0));
        }
        let (pool, next) = channels
            .get_mut(url)
            .unwrap_or_else(|| unreachable!("inserted above"));
        let channel = pool[*next % pool.len()].clone();
        *next = next.wrapping_add(1);
        Ok(GuestServiceClient::new(channel))
    }

    /// `message` as a request on the link, for a guest at `ip`.
    fn request<T>(&self, message: T, ip: Option<IpAddr>) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        if let Ok(value) = self.key.credential.parse() {
            metadata.insert(CLUSTER_KEY_HEADER, value);
        }
        if let Some(ip) = ip
            && let Ok(value) = ip.to_string().parse()
        {
            metadata.insert(CLIENT_IP_HEADER, value);
        }
        request
    }

    /// Relays an Attach to `owner`: its events, as they come.
    ///
    /// # Errors
    /// The owner's answer as it is (e.g. PERMISSION_DENIED, NOT_FOUND), or
    /// UNAVAILABLE when it cannot be reached: the guest tries again.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        owner: &Replica,
        req: AttachRequest,
        ip: Option<IpAddr>,
    ) -> Result<EventStream, Status> {
        let mut client = self.client(&owner.advertise_url)?;
        let events = client
            .attach(self.request(req, ip))
            .await
            .map_err(|s| link_status(&owner.advertise_url, s))?
            .into_inner();
        Ok(self.relay(owner, events))
    }

    /// Relays a Terminal call to `owner`: `first`, then the guest's
    /// requests as they come; the owner's events back.
    ///
    /// # Errors
    /// As [`attach`](Self::attach).
    pub(crate) async fn terminal(
        self: &Arc<Self>,
        owner: &Replica,
        first: AttachRequest,
        rest: Streaming<TerminalRequest>,
        ip: Option<IpAddr>,
    ) -> Result<EventStream, Status> {
        let first = TerminalRequest {
            message: Some(terminal_request::Message::Attach(first)),
        };
        // The guest's requests until it half-closes or its call breaks;
        // read only as fast as the link takes them.
        let rest = rest
            .take_while(|r| std::future::ready(r.is_ok()))
            .filter_map(|r| std::future::ready(r.ok()));
        let outbound = futures::stream::once(std::future::ready(first)).chain(rest);
        let mut client = self.client(&owner.advertise_url)?;
        let events = client
            .terminal(self.request(outbound, ip))
            .await
            .map_err(|s| link_status(&owner.advertise_url, s))?
            .into_inner();
        Ok(self.relay(owner, events))
    }

    /// The owner's events as this server's stream: the guest is recorded
    /// (for its unary calls) from its Attached event until the stream
    /// ends, and a broken link ends it UNAVAILABLE.
    fn relay(self: &Arc<Self>, owner: &Replica, events: Streaming<GuestEvent>) -> EventStream {
        Box::pin(RelayedEvents {
            events,
            link: self.clone(),
            owner: owner.clone(),
            guest: None,
            done: false,
        })
    }

    /// The replica whose stream carries guest `guest_id`, if this replica
    /// relays one.
    pub(crate) fn guest_route(&self, guest_id: &str) -> Option<String> {
        lock(&self.guests).get(guest_id).map(|(url, _)| url.clone())
    }

    /// A unary call relayed to the replica at `url`, for a guest at `ip`.
    ///
    /// # Errors
    /// The owner's answer, or UNAVAILABLE when it cannot be reached.
    pub(crate) async fn unary<T, R, F, Fut>(
        &self,
        url: &str,
        message: T,
        ip: Option<IpAddr>,
        call: F,
    ) -> Result<R, Status>
    where
        F: FnOnce(GuestServiceClient<Channel>, Request<T>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let client = self.client(url)?;
        call(client, self.request(message, ip))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| link_status(url, s))
    }

    /// `ListSessions` at `owner`.
    ///
    /// # Errors
    /// As [`unary`](Self::unary).
    pub(crate) async fn list_sessions(
        &self,
        owner: &Replica,
        req: ListSessionsRequest,
        ip: Option<IpAddr>,
    ) -> Result<ListSessionsResponse, Status> {
        self.unary(&owner.advertise_url, req, ip, |mut c, r| async move {
            c.list_sessions(r).await
        })
        .await
    }

    fn add_guest(&self, guest_id: &str, owner: &Replica) {
        let mut guests = lock(&self.guests);
        let entry = guests
            .entry(guest_id.to_owned())
            .or_insert_with(|| (owner.advertise_url.clone(), 0));
        // The newest stream's owner wins: a guest that resumed elsewhere.
        entry.0.clone_from(&owner.advertise_url);
        entry.1 += 1;
    }

    fn remove_guest(&self, guest_id: &str) {
        let mut guests = lock(&self.guests);
        if let Some(entry) = guests.get_mut(guest_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                guests.remove(guest_id);
            }
        }
    }
}

/// A status from the link as the guest gets it: the owner's own answers
/// (a status it sent) as they are; a broken or refused connection (a
/// status tonic made from a transport error, which has a source)
/// UNAVAILABLE, which guests retry. The owner's address stays in the log.
fn link_status(url: &str, status: Status) -> Status {
    let broken = std::error::Error::source(&status).is_some() || status.code() == Code::Unknown;
    if !broken {
        return status;
    }
    tracing::info!(
        replica = url, code = ?status.code(), message = status.message(),
        "the link to a replica failed"
    );
    Status::unavailable("lost the replica that holds this host; it may be restarting: try again")
}

/// The events of a relayed stream; see [`ClusterLink::relay`].
struct RelayedEvents {
    events: Streaming<GuestEvent>,
    link: Arc<ClusterLink>,
    owner: Replica,
    /// The guest's ID once its Attached event passed.
    guest: Option<String>,
    done: bool,
}

impl Stream for RelayedEvents {
    type Item = Result<GuestEvent, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = self.get_mut();
        if me.done {
            return Poll::Ready(None);
        }
        let item = match me.events.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        match item {
            Some(Ok(event)) => {
                if me.guest.is_none()
                    && let Some(guest_event::Event::Attached(attached)) = &event.event
                {
                    me.link.add_guest(&attached.guest_id, &me.owner);
                    me.guest = Some(attached.guest_id.clone());
                }
                Poll::Ready(Some(Ok(event)))
            }
            Some(Err(status)) => {
                me.done = true;
                Poll::Ready(Some(Err(link_status(&me.owner.advertise_url, status))))
            }
            None => {
                me.done = true;
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for RelayedEvents {
    fn drop(&mut self) {
        if let Some(guest) = &self.guest {
            self.link.remove_guest(guest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_enough_and_show_nothing() {
        assert!(ClusterKey::new(&[1; 31]).is_none());
        let key = ClusterKey::new(&[1; 32]).unwrap();
        assert_eq!(format!("{key:?}"), "ClusterKey(..)");
        assert_eq!(key.credential.len(), 43);
        assert!(!key.credential.contains(&*URL_SAFE_NO_PAD.encode([1u8; 32])));
    }

    #[test]
    fn only_the_same_key_relays_and_only_then_is_the_ip_trusted() {
        let key = ClusterKey::new(&[7; 32]).unwrap();
        let other = ClusterKey::new(&[8; 32]).unwrap();
        let headers = |credential: &str, ip: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(CLUSTER_KEY_HEADER, credential.parse().unwrap());
            h.insert(CLIENT_IP_HEADER, ip.parse().unwrap());
            h
        };
        let good = headers(&key.credential, "203.0.113.9");
        assert_eq!(
            link_headers(&good, Some(&key)),
            LinkHeaders::Relayed(Some("203.0.113.9".parse().unwrap()))
        );
        assert_eq!(link_headers(&good, Some(&other)), LinkHeaders::BadKey);
        assert_eq!(link_headers(&good, None), LinkHeaders::BadKey);
        let short = headers(&key.credential[..42], "203.0.113.9");
        assert_eq!(link_headers(&short, Some(&key)), LinkHeaders::BadKey);
        let bad_ip = headers(&key.credential, "not an ip");
        assert_eq!(
            link_headers(&bad_ip, Some(&key)),
            LinkHeaders::Relayed(None)
        );
        let mut ip_only = http::HeaderMap::new();
        ip_only.insert(CLIENT_IP_HEADER, "203.0.113.9".parse().unwrap());
        assert_eq!(link_headers(&ip_only, Some(&key)), LinkHeaders::Absent);
    }

    #[test]
    fn a_guest_is_routed_while_any_of_its_streams_is_relayed() {
        let link = ClusterLink::new(
            ClusterKey::new(&[7; 32]).unwrap(),
            Replica {
                id: "b".into(),
                advertise_url: "http://b".into(),
            },
        );
        let a = Replica {
            id: "a".into(),
            advertise_url: "http://a".into(),
        };
        let c = Replica {
            id: "c".into(),
            advertise_url: "http://c".into(),
        };
        link.add_guest("g", &a);
        link.add_guest("g", &c);
        assert_eq!(link.guest_route("g").as_deref(), Some("http://c"));
        link.remove_guest("g");
        assert!(link.guest_route("g").is_some());
        link.remove_guest("g");
        assert!(link.guest_route("g").is_none());
        assert_eq!(link.relayed_guests(), 0);
    }
}
