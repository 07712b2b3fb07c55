//! A TCP proxy between clients and a server under test that breaks the
//! network on demand, each direction on its own: **upstream** is client →
//! server, **downstream** is server → client.
//!
//! [`FaultProxy`] listens on `127.0.0.1:0`; point clients at
//! [`FaultProxy::url`] instead of the server. Each fault is set on a
//! [`Link`] ([`FaultProxy::upstream`], [`FaultProxy::downstream`] or
//! [`FaultProxy::both`]) and applies to every connection, open now or made
//! later, until it is lifted:
//!
//! | fault | what the sender sees | what the receiver sees |
//! |---|---|---|
//! | [`Link::stall`] | its bytes are read (its TCP window stays open up to the hold bound) | nothing, until [`Link::release`]; then every held byte, in order |
//! | [`Link::blackhole`] | its bytes are read, always | nothing, ever: those bytes are dropped |
//! | [`Link::delay`] | its bytes are read at once | each chunk a fixed latency after it was read, in order |
//! | [`Link::throttle`] | its bytes are read at most N bytes/s per connection | the same pace |
//! | [`Link::cut`] | nothing more is read from it on connections open now | the end of the stream (FIN) at once; held bytes are dropped |
//!
//! [`FaultProxy::cut`] cuts both directions, which closes every connection
//! open now; connections made after a cut go through (with the faults in
//! force). A cut does not lift the other faults: [`FaultProxy::clear`]
//! does.
//!
//! # Bounds
//! Every connection holds at most [`FaultProxy::max_held_bytes`] per
//! direction ([`DEFAULT_MAX_HELD_BYTES`], 1 MiB, unless started with
//! [`FaultProxy::with_max_held_bytes`]): what a stall holds and what a
//! delay has in flight. At the bound the proxy stops reading that
//! direction (it caps, it does not drop), so the sender's TCP window
//! closes and a long stall costs bounded memory. A blackhole holds nothing.
//!
//! # How one direction works
//! A reader takes at most [`MAX_CHUNK_BYTES`] at a time from the sender,
//! as the throttle allows and while there is room under the hold bound,
//! and queues it with the instant it was read. A writer delivers each
//! chunk once no stall is in force and the delay has passed since it was
//! read. The end of the stream (the sender's FIN) travels the same queue,
//! so a stall or a blackhole holds it too: a peer that gives up behind a
//! blackhole is not seen to leave. A sender's reset counts as its end. A
//! receiver that cannot be written to any more closes the connection.
//!
//! [`CutProxy`] is the earlier, smaller API (`mute`, `cut`) over the same
//! proxy.

mod pipe;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

use crate::DEADLINE;

/// Default bound of what one connection holds in one direction, in bytes
/// (1 MiB): stalled bytes and bytes in flight on a delayed link. A delayed
/// link carries at most this much per latency (1 MiB per 150 ms is about
/// 6.7 MiB/s).
pub const DEFAULT_MAX_HELD_BYTES: usize = 1024 * 1024;

/// Largest chunk read from a sender at once, in bytes (64 KiB), and so the
/// largest write to a receiver. At most [`FaultProxy::max_held_bytes`].
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// Burst a throttled direction may send at once, as time at its rate
/// (50 ms): at 64 KiB/s, reads of at most 3.2 KiB, 20 a second. Over any
/// span `t` a throttled connection carries at most `rate * (t + 50 ms)`
/// bytes per direction.
pub const THROTTLE_BURST: Duration = Duration::from_millis(50);

/// A TCP proxy on `127.0.0.1:0` in front of a server, that stalls,
/// blackholes, delays, throttles and cuts each direction on demand (see
/// the [module docs](self)). Dropping it closes every connection at once.
pub struct FaultProxy {
    url: String,
    addr: SocketAddr,
    max_held_bytes: usize,
    /// The faults in force; every pipe of every connection watches it.
    faults: watch::Sender<Faults>,
    /// What went through; changed by the accept loop and every pipe.
    counts: Arc<watch::Sender<Counts>>,
    /// The accept loop, which owns every connection's task.
    _accept: AbortOnDropHandle<()>,
}

/// One or both directions of a [`FaultProxy`], to set faults on. Each call
/// applies to every connection, open now or made later (except
/// [`Link::cut`], which only meets connections open now), and returns the
/// link, so that calls chain: `proxy.downstream().delay(d).throttle(n)`.
#[derive(Clone, Copy)]
pub struct Link<'a> {
    proxy: &'a FaultProxy,
    upstream: bool,
    downstream: bool,
}

/// Connections and bytes that went through a [`FaultProxy`] since it
/// started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections accepted from clients, ever.
    pub accepted: u64,
    /// Connections accepted and not yet closed by the proxy (including
    /// one whose connection to the server is still being made, and one
    /// the server refused, until the proxy closes it).
    pub open: u64,
    /// Client → server.
    pub upstream: Flow,
    /// Server → client.
    pub downstream: Flow,
}

/// Bytes of one direction, summed over all connections, since the proxy
/// started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    /// Bytes read from senders (including those a blackhole dropped).
    pub read: u64,
    /// Bytes written to receivers.
    pub delivered: u64,
    /// Bytes read and not yet delivered, now: held by a stall, in flight
    /// on a delay, or waiting for a slow receiver. At most
    /// [`FaultProxy::max_held_bytes`] per open connection. A cut drops
    /// them; they never count as delivered.
    pub held: u64,
    /// Ends of stream read from senders (a FIN, or a reset), whether
    /// delivered yet or held.
    pub ends: u64,
}

/// What a direction's stall does with the bytes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// Keeps them (up to the hold bound) for when the stall is lifted.
    Hold,
    /// Drops them.
    Drop,
}

/// The faults in force on one direction.
#[derive(Debug, Clone, Copy, Default)]
struct LinkFaults {
    /// Cuts so far: a pipe started when this was lower ends.
    cuts: u64,
    stall: Option<Stall>,
    /// Time from a chunk's read to its delivery.
    delay: Duration,
    /// Most bytes a second per connection; `None` is unthrottled.
    rate: Option<NonZeroU64>,
}

impl LinkFaults {
    /// Lifts every fault but the cuts.
    fn clear(&mut self) {
        *self = Self {
            cuts: self.cuts,
            ..Self::default()
        };
    }
}

/// The faults in force on both directions.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    upstream: LinkFaults,
    downstream: LinkFaults,
}

/// Which way a pipe carries bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Upstream,
    Downstream,
}

impl Faults {
    fn of(&self, way: Way) -> &LinkFaults {
        match way {
            Way::Upstream => &self.upstream,
            Way::Downstream => &self.downstream,
        }
    }
}

impl Counts {
    fn flow(&mut self, way: Way) -> &mut Flow {
        match way {
            Way::Upstream => &mut self.upstream,
            Way::Downstream => &mut self.downstream,
        }
    }
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `target`: a server URL
    /// (`http://ADDR` or `https://ADDR`; TLS passes through untouched) or
    /// a bare `ADDR`. It holds at most [`DEFAULT_MAX_HELD_BYTES`] per
    /// connection and direction.
    pub async fn start(target: &str) -> Self {
        Self::with_max_held_bytes(target, DEFAULT_MAX_HELD_BYTES).await
    }

    /// [`FaultProxy::start`] with another hold bound, in bytes per
    /// connection and direction (at least 1).
    pub async fn with_max_held_bytes(target: &str, max_held_bytes: usize) -> Self {
        assert!(max_held_bytes > 0, "a proxy must be able to hold a byte");
        let (scheme, address) = match target.split_once("://") {
            Some((scheme, rest)) => (scheme, rest.trim_end_matches('/')),
            None => ("http", target),
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the proxy's address");
        let faults = watch::Sender::new(Faults::default());
        let counts = Arc::new(watch::Sender::new(Counts::default()));
        let accept = tokio::spawn(accept(
            listener,
            address.to_owned(),
            faults.clone(),
            counts.clone(),
            max_held_bytes,
        ));
        Self {
            url: format!("{scheme}://{addr}"),
            addr,
            max_held_bytes,
            faults,
            counts,
            _accept: AbortOnDropHandle::new(accept),
        }
    }

    /// `SCHEME://ADDR` of the proxy (the target's scheme, `http` for a
    /// bare address): give it to clients instead of the server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The most one connection holds in one direction, in bytes.
    pub fn max_held_bytes(&self) -> usize {
        self.max_held_bytes
    }

    /// Client → server.
    pub fn upstream(&self) -> Link<'_> {
        self.link(true, false)
    }

    /// Server → client.
    pub fn downstream(&self) -> Link<'_> {
        self.link(false, true)
    }

    /// Both directions: each gets the fault on its own (a throttle of N
    /// bytes/s is N each way, a delay of D is D each way, 2 D a round
    /// trip).
    pub fn both(&self) -> Link<'_> {
        self.link(true, true)
    }

    fn link(&self, upstream: bool, downstream: bool) -> Link<'_> {
        Link {
            proxy: self,
            upstream,
            downstream,
        }
    }

    /// Closes every connection open now, dropping what they held; later
    /// connections go through. Faults stay in force.
    pub fn cut(&self) {
        self.both().cut();
    }

    /// Lifts every fault in both directions: stalls (delivering what they
    /// held), blackholes, delays and throttles.
    pub fn clear(&self) {
        self.both().clear();
    }

    /// Connections and bytes so far.
    pub fn counts(&self) -> Counts {
        *self.counts.borrow()
    }

    /// Waits until `done(counts)` holds and returns those counts; fails
    /// the test after [`DEADLINE`]. `what` names the wait in the failure.
    pub async fn until(&self, what: &str, mut done: impl FnMut(&Counts) -> bool) -> Counts {
        let mut counts = self.counts.subscribe();
        match tokio::time::timeout(DEADLINE, counts.wait_for(|c| done(c))).await {
            Ok(Ok(counts)) => *counts,
            _ => panic!("proxy: no {what} in time: {:?}", self.counts()),
        }
    }
}

impl Link<'_> {
    /// Applies `change` to the selected directions, in one step that every
    /// pipe sees at once.
    fn modify(self, change: impl Fn(&mut LinkFaults)) -> Self {
        self.proxy.faults.send_modify(|faults| {
            if self.upstream {
                change(&mut faults.upstream);
            }
            if self.downstream {
                change(&mut faults.downstream);
            }
        });
        self
    }

    /// Reads what the senders send but delivers nothing, holding it (at
    /// most [`FaultProxy::max_held_bytes`] per connection, then reading
    /// stops) until [`Link::release`] or [`Link::clear`] delivers it, or a
    /// cut drops it.
    pub fn stall(self) -> Self {
        self.modify(|l| l.stall = Some(Stall::Hold))
    }

    /// Reads what the senders send and drops it, without bound in time or
    /// bytes; the end of a stream is held, as by [`Link::stall`]. After
    /// [`Link::release`] bytes flow again, but the streams have a gap: the
    /// peers usually need a cut too.
    pub fn blackhole(self) -> Self {
        self.modify(|l| l.stall = Some(Stall::Drop))
    }

    /// Lifts a stall or a blackhole: held bytes are delivered, in order,
    /// after any delay.
    pub fn release(self) -> Self {
        self.modify(|l| l.stall = None)
    }

    /// Delivers each chunk `latency` after it was read (`Duration::ZERO`
    /// for none), in order. Changing it applies to the chunks in flight
    /// too. In flight per connection: at most
    /// [`FaultProxy::max_held_bytes`].
    pub fn delay(self, latency: Duration) -> Self {
        self.modify(|l| l.delay = latency)
    }

    /// Reads at most `bytes_per_sec` bytes a second on each connection,
    /// in bursts of at most [`THROTTLE_BURST`] at that rate; the sender's
    /// TCP window closes when it sends faster. A rate of 0 is a stall: use
    /// [`Link::stall`].
    pub fn throttle(self, bytes_per_sec: u64) -> Self {
        let rate = NonZeroU64::new(bytes_per_sec).expect("a throttle of 0 bytes/s: use stall()");
        self.modify(|l| l.rate = Some(rate))
    }

    /// Lifts a throttle.
    pub fn unthrottle(self) -> Self {
        self.modify(|l| l.rate = None)
    }

    /// Lifts every fault of this link: stall or blackhole, delay, throttle.
    pub fn clear(self) -> Self {
        self.modify(LinkFaults::clear)
    }

    /// On every connection open now, ends the stream at once: its receiver
    /// sees a FIN (what was held for it is dropped) and nothing more is
    /// read from its sender. The other direction carries on, unless it is
    /// cut too (then the proxy closes the connection). Later connections
    /// go through.
    pub fn cut(self) -> Self {
        self.modify(|l| l.cuts += 1)
    }
}

/// Accepts connections and gives each its task, in a set that ends them
/// all when this future is dropped.
async fn accept(
    listener: TcpListener,
    target: String,
    faults: watch::Sender<Faults>,
    counts: Arc<watch::Sender<Counts>>,
    max_held_bytes: usize,
) {
    let mut connections = JoinSet::new();
    loop {
        let inbound = tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => {
                counts.send_modify(|c| c.open -= 1);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((inbound, _)) => inbound,
                // A client that reset before its accept, or no descriptor
                // left: that connection is lost, the others go on.
                Err(_) => continue,
            },
        };
        counts.send_modify(|c| {
            c.accepted += 1;
            c.open += 1;
        });
        // The cuts it must obey are those after its accept.
        let generation = *faults.borrow();
        let relay = Relay {
            faults: faults.subscribe(),
            counts: counts.clone(),
            max_held_bytes,
        };
        let target = target.clone();
        connections.spawn(async move {
            let Ok(outbound) = TcpStream::connect(&target).await else {
                return;
            };
            relay
                .run(
                    inbound,
                    outbound,
                    generation.upstream.cuts,
                    generation.downstream.cuts,
                )
                .await;
        });
    }
}

/// What a connection's pipes share.
struct Relay {
    faults: watch::Receiver<Faults>,
    counts: Arc<watch::Sender<Counts>>,
    max_held_bytes: usize,
}

impl Relay {
    /// Carries one connection both ways until both directions have ended,
    /// or one receiver is gone.
    async fn run(self, inbound: TcpStream, outbound: TcpStream, up_cuts: u64, down_cuts: u64) {
        // Small writes go out at once, as a delay's timing expects.
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let (from_client, to_client) = inbound.into_split();
        let (from_server, to_server) = outbound.into_split();
        let pipe = |way, cuts| pipe::Pipe {
            way,
            cuts,
            faults: self.faults.clone(),
            counts: self.counts.clone(),
            max_held_bytes: self.max_held_bytes,
        };
        let up = pipe(Way::Upstream, up_cuts).run(from_client, to_server);
        let down = pipe(Way::Downstream, down_cuts).run(from_server, to_client);
        tokio::pin!(up, down);
        let (mut up_ended, mut down_ended) = (false, false);
        while !(up_ended && down_ended) {
            let end = tokio::select! {
                end = &mut up, if !up_ended => { up_ended = true; end }
                end = &mut down, if !down_ended => { down_ended = true; end }
            };
            if end == pipe::End::Broken {
                return;
            }
        }
    }
}

/// The earlier proxy API, kept for its tests: a [`FaultProxy`] whose
/// `mute` stalls both directions holding at most 64 KiB each (about what a
/// single read takes, so a muted peer's TCP window closes soon), and whose
/// `cut` lifts the mute and closes every connection, dropping what was
/// held, in one step.
pub struct CutProxy {
    /// `http://ADDR` of the proxy: give it to clients instead of the
    /// server's.
    pub url: String,
    proxy: FaultProxy,
}

/// What a [`CutProxy`] holds per connection and direction while muted, in
/// bytes (64 KiB).
pub const CUT_PROXY_HELD_BYTES: usize = 64 * 1024;

impl CutProxy {
    /// A proxy on a free loopback port in front of `server_url`.
    pub async fn start(server_url: &str) -> Self {
        let proxy = FaultProxy::with_max_held_bytes(server_url, CUT_PROXY_HELD_BYTES).await;
        Self {
            url: proxy.url().to_owned(),
            proxy,
        }
    }

    /// Holds every byte of every connection from now on.
    pub fn mute(&self) {
        self.proxy.both().stall();
    }

    /// Closes every connection open now, dropping what was held, and lifts
    /// the mute; later ones go through.
    pub fn cut(&self) {
        // One step: a pipe that saw the mute lifted before the cut would
        // deliver what the cut must drop.
        self.proxy.both().modify(|l| {
            l.cuts += 1;
            l.clear();
        });
    }

    /// The [`FaultProxy`] underneath, for faults beyond mute and cut.
    pub fn faults(&self) -> &FaultProxy {
        &self.proxy
    }
}
