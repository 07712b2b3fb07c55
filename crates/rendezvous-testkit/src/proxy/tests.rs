//! The proxy's faults against real TCP peers on loopback: an echo server
//! (or a sink) behind it, a client in front.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::*;

/// A TCP server behind the proxy: counts what it reads and, as an echo
/// server, writes it back; at a client's end of stream it writes `EOF`
/// (echo only) and closes.
struct Peer {
    addr: SocketAddr,
    /// Bytes read, all connections.
    received: watch::Receiver<u64>,
    /// Ends of stream seen, all connections.
    ends: watch::Receiver<u64>,
    _task: AbortOnDropHandle<()>,
}

impl Peer {
    async fn echo() -> Self {
        Self::start(true).await
    }

    async fn sink() -> Self {
        Self::start(false).await
    }

    async fn start(echo: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (received_tx, received) = watch::channel(0u64);
        let (ends_tx, ends) = watch::channel(0u64);
        let (received_tx, ends_tx) = (Arc::new(received_tx), Arc::new(ends_tx));
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                let (received, ends) = (received_tx.clone(), ends_tx.clone());
                connections.spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(n @ 1..) => {
                                received.send_modify(|r| *r += n as u64);
                                if echo && socket.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                            _ => {
                                ends.send_modify(|e| *e += 1);
                                if echo {
                                    let _ = socket.write_all(b"EOF").await;
                                }
                                let _ = socket.shutdown().await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            received,
            ends,
            _task: AbortOnDropHandle::new(task),
        }
    }

    fn received(&self) -> u64 {
        *self.received.borrow()
    }

    async fn until_received(&mut self, bytes: u64) {
        let waited = tokio::time::timeout(DEADLINE, self.received.wait_for(|r| *r >= bytes))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(
            waited,
            "the server received {} of {bytes} bytes",
            self.received()
        );
    }

    async fn until_ends(&mut self, ends: u64) {
        let waited = tokio::time::timeout(DEADLINE, self.ends.wait_for(|e| *e >= ends)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "no end of stream at the server"
        );
    }
}

async fn start(peer: &Peer) -> FaultProxy {
    FaultProxy::start(&peer.addr.to_string()).await
}

async fn connect(proxy: &FaultProxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads exactly `n` bytes, within the deadline.
async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut buf))
        .await
        .expect("the bytes arrive in time")
        .expect("the bytes arrive");
    buf
}

/// Reads to the end of the stream (a reset counts as the end), within the
/// deadline, and returns what came before it.
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    tokio::time::timeout(DEADLINE, async {
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            all.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the stream ends in time");
    all
}

/// `len` bytes of a pattern that shows a shift, a gap or a repeat.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Writes `len` bytes of zeros to `stream` in 64 KiB writes.
async fn write_zeros(stream: &mut (impl tokio::io::AsyncWrite + Unpin), len: usize) {
    let block = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        stream.write_all(&block[..n]).await.unwrap();
        left -= n;
    }
}

#[tokio::test]
async fn bytes_pass_both_ways_and_connections_are_counted() {
    let peer = Peer::echo().await;
    let proxy = start(&peer).await;
    let mut client = connect(&proxy).await;
    client.write_all(b"hello").await.unwrap();
    assert_eq!(read_n(&mut client, 5).await, b"hello");
    // Counted once written, which may be just after the client read it.
    let counts = proxy
        .until("5 bytes each way", |c| {
            (c.upstream.delivered, c.downstream.delivered) == (5, 5)
        })
        .await;
    assert_eq!((counts.accepted, counts.open), (1, 1));

    // The client's end of stream reaches the server, whose goodbye and
    // end come back.
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await, b"EOF");
    proxy.until("closed connection", |c| c.open == 0).await;
}

#[tokio::test]
async fn a_cut_closes_every_open_connection_and_lets_new_ones_through() {
    let mut peer = Peer::echo().await;
    let proxy = start(&peer).await;
    let mut first = connect(&proxy).await;
    let mut second = connect(&proxy).await;
    for client in [&mut first, &mut second] {
        client.write_all(b"one").await.unwrap();
        assert_eq!(read_n(client, 3).await, b"one");
    }

    proxy.cut();
    // Closed both ways: the server's goodbye to the end of stream it was
    // sent never reaches the clients.
    assert_eq!(read_to_end(&mut first).await, b"");
    assert_eq!(read_to_end(&mut second).await, b"");
    peer.until_ends(2).await;
    proxy.until("closed connections", |c| c.open == 0).await;

    let mut later = connect(&proxy).await;
    later.write_all(b"two").await.unwrap();
    assert_eq!(read_n(&mut later, 3).await, b"two");
    assert_eq!(proxy.counts().accepted, 3);
}

#[tokio::test]
async fn an_upstream_cut_ends_the_stream_towards_the_server_only() {
    let mut peer = Peer::echo().await;
    let proxy = start(&peer).await;
    let mut client = connect(&proxy).await;
    client.write_all(b"abc").await.unwrap();
    assert_eq!(read_n(&mut client, 3).await, b"abc");

    proxy.upstream().cut();
    peer.until_ends(1).await;
    // Downstream still carries what the server says after the end.
    assert_eq!(read_to_end(&mut client).await, b"EOF");
}

#[tokio::test]
async fn a_downstream_cut_ends_the_stream_towards_the_client_only() {
    let mut peer = Peer::echo().await;
    let proxy = start(&peer).await;
    let mut client = connect(&proxy).await;
    client.write_all(b"abc").await.unwrap();
    assert_eq!(read_n(&mut client, 3).await, b"abc");

    proxy.downstream().cut();
    assert_eq!(read_to_end(&mut client).await, b"");
    // Upstream still carries what the client sends.
    client.write_all(b"defg").await.unwrap();
    peer.until_received(7).await;
    assert_eq!(peer.ends.borrow().to_owned(), 0, "the server saw no end");
}

#[tokio::test]
async fn a_stalled_upstream_holds_what_the_client_writes_until_released() {
    let peer = Peer::echo().await;
    let proxy = start(&peer).await;
    let mut client = connect(&proxy).await;
    proxy.upstream().stall();

    let sent = pattern(100_000);
    tokio::time::timeout(DEADLINE, client.write_all(&sent))
        .await
        .expect("the client's writes complete")
        .unwrap();
    // All of it read from the client and held: none can have reached the
    // server.
    proxy
        .until("100 000 bytes held", |c| c.upstream.held == 100_000)
        .await;
    assert_eq!(peer.received(), 0);
    assert_eq!(proxy.counts().upstream.delivered, 0);

    proxy.upstream().release();
    assert_eq!(read_n(&mut client, sent.len()).await, sent);
    proxy
        .until("all delivered", |c| {
            (c.upstream.held, c.upstream.delivered) == (0, 100_000)
        })
        .await;
}

#[tokio::test]
async fn a_stalled_downstream_holds_what_the_server_writes_until_released() {
    let mut peer = Peer::echo().await;
    let proxy = start(&peer).await;
    let mut client = connect(&proxy).await;
    proxy.downstream().stall();

    client.write_all(b"ping").await.unwrap();
    peer.until_received(4).await;
    proxy
        .until("the echo held", |c| c.downstream.held == 4)
        .await;
    let mut buf = [0u8; 16];
    assert!(
        matches!(client.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing reached the client"
    );

    proxy.downstream().release();
    assert_eq!(read_n(&mut client, 4).await, b"ping");
}

#[tokio::test]
async fn a_long_stall_holds_at_most_its_bound_and_then_stops_reading() {
    const BOUND: usize = 256 * 1024;
    const SENT: usize = 64 << 20;
    let mut peer = Peer::sink().await;
    let proxy = FaultProxy::with_max_held_bytes(&peer.addr.to_string(), BOUND).await;
    let client = connect(&proxy).await;
    proxy.upstream().stall();
    let writer = tokio::spawn(async move {
        let mut client = client;
        write_zeros(&mut client, SENT).await;
        client
    });

    // The bound is spent but for less than one chunk (a read takes room
    // for a whole chunk before it reads).
    let counts = proxy
        .until("a full hold", |c| {
            c.upstream.held > (BOUND - MAX_CHUNK_BYTES) as u64
        })
        .await;
    assert!(counts.upstream.held <= BOUND as u64, "{counts:?}");
    assert_eq!(
        counts.upstream.read, counts.upstream.held,
        "nothing more read"
    );
    assert_eq!(peer.received(), 0);
    // 64 MiB cannot fit in the sockets' buffers: the client is held back.
    assert!(!writer.is_finished(), "the client wrote past a full hold");

    proxy.upstream().release();
    peer.until_received(SENT as u64).await;
    let _client = tokio::time::timeout(DEADLINE, writer)
        .await
        .expect("the client's writes complete")
        .unwrap();
    assert_eq!(peer.received(), SENT as u64);
}

#[tokio::test]
async fn a_blackhole_reads_everything_and_delivers_nothing() {
    const SENT: usize = 32 << 20;
    let mut peer = Peer::sink().await;
    let proxy = start(&peer).await;
    let mut client = connect(&proxy).await;
    proxy.upstream().blackhole();

    // 128 times the hold bound, all read by the proxy and none held.
    tokio::time::timeout(DEADLINE, write_zeros(&mut client, SENT))
        .await
        .expect("the client's writes complete");
    let counts = proxy
        .until("everything read", |c| c.upstream.read == SENT as u64)
        .await;
    assert_eq!((counts.upstream.delivered, counts.upstream.held), (0, 0));
    assert_eq!(peer.received(), 0);

    // Lifted: new bytes flow (the stream has a gap where the hole was).
    proxy.upstream().release();
    client.write_all(b"after").await.unwrap();
    peer.until_received(5).await;
    assert_eq!(peer.received(), 5);
}

#[tokio::test]
async fn a_blackhole_holds_the_end_of_the_stream_until_released() {
    let mut peer = Peer::sink().await;
    let proxy = start(&peer).await;
    let mut client = connect(&proxy).await;
    client.write_all(b"x").await.unwrap();
    peer.until_received(1).await;
    proxy.both().blackhole();

    client.shutdown().await.unwrap();
    proxy
        .until("the client's end read", |c| c.upstream.ends == 1)
        .await;
    // A fixed look, as a check that nothing arrives: a leaking hole would
    // have delivered the end at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*peer.ends.borrow(), 0, "the end went through the hole");
    assert_eq!(proxy.counts().open, 1);
    proxy.both().release();
    peer.until_ends(1).await;
    proxy.until("closed connection", |c| c.open == 0).await;
}

#[tokio::test]
async fn a_delay_delivers_each_chunk_its_latency_after_it_was_read_in_order() {
    const LATENCY: Duration = Duration::from_millis(300);
    let peer = Peer::echo().await;
    let proxy = start(&peer).await;
    let mut client = connect(&proxy).await;
    proxy.upstream().delay(LATENCY);

    let started = Instant::now();
    client.write_all(b"x").await.unwrap();
    assert_eq!(read_n(&mut client, 1).await, b"x");
    let round_trip = started.elapsed();
    assert!(round_trip >= LATENCY, "echoed after {round_trip:?}");

    // Twenty writes 20 ms apart come back in order, and overlap in flight:
    // one after the other they would take 20 latencies (6 s).
    let (mut reader, mut writer) = client.into_split();
    let started = Instant::now();
    let sending = tokio::spawn(async move {
        for i in 0..20 {
            writer
                .write_all(format!("[{i:02}]").as_bytes())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer
    });
    let mut echoed = vec![0u8; 20 * 4];
    tokio::time::timeout(DEADLINE, reader.read_exact(&mut echoed))
        .await
        .expect("the echo arrives in time")
        .unwrap();
    let took = started.elapsed();
    let expected: String = (0..20).map(|i| format!("[{i:02}]")).collect();
    assert_eq!(String::from_utf8(echoed).unwrap(), expected);
    assert!(took >= LATENCY, "{took:?}");
    assert!(took < Duration::from_secs(3), "not pipelined: {took:?}");
    let _writer = sending.await.unwrap();
}

#[tokio::test]
async fn a_delay_both_ways_adds_up_in_a_round_trip() {
    const LATENCY: Duration = Duration::from_millis(150);
    let peer = Peer::echo().await;
    let proxy = start(&peer).await;
    let mut client = connect(&proxy).await;
    proxy.both().delay(LATENCY);
    for _ in 0..3 {
        let started = Instant::now();
        client.write_all(b"rt").await.unwrap();
        assert_eq!(read_n(&mut client, 2).await, b"rt");
        let round_trip = started.elapsed();
        assert!(round_trip >= 2 * LATENCY, "round trip {round_trip:?}");
    }
}

#[tokio::test]
async fn a_throttle_caps_each_connection_and_direction_at_its_rate() {
    const RATE: u64 = 64 * 1024;
    const SENT: usize = 256 * 1024;
    let peer = Peer::echo().await;
    let proxy = start(&peer).await;
    proxy.both().throttle(RATE);

    // Two connections at once, each echoing 256 KiB through 64 KiB/s both
    // ways: about 4 s each if the rate is per connection, 8 s if shared.
    let started = Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let client = connect(&proxy).await;
        runs.spawn(async move {
            let (mut reader, mut writer) = client.into_split();
            let sent = pattern(SENT);
            let expected = sent.clone();
            let writing =
                tokio::spawn(async move { writer.write_all(&sent).await.map(|_| writer) });
            let mut echoed = vec![0u8; SENT];
            tokio::time::timeout(DEADLINE, reader.read_exact(&mut echoed))
                .await
                .expect("the echo arrives in time")
                .unwrap();
            assert!(echoed == expected, "the echo differs");
            writing.await.unwrap().unwrap();
            started.elapsed()
        });
    }
    let min = Duration::from_secs_f64((SENT as f64 - 2.0 * RATE as f64 * 0.05) / RATE as f64);
    while let Some(took) = runs.join_next().await {
        let took = took.unwrap();
        assert!(took >= min.mul_f64(0.95), "256 KiB in {took:?}");
        // Generous: a loaded machine is late, never early.
        assert!(
            took < Duration::from_secs(7),
            "the rate is shared: {took:?}"
        );
    }
    let all = 2 * SENT as u64;
    proxy
        .until("all delivered", |c| {
            (c.upstream.delivered, c.downstream.delivered) == (all, all)
        })
        .await;
}

#[tokio::test]
async fn clear_lifts_every_fault() {
    let peer = Peer::echo().await;
    let proxy = start(&peer).await;
    let mut client = connect(&proxy).await;
    proxy.upstream().stall();
    proxy.both().delay(Duration::from_secs(3600)).throttle(1);
    client.write_all(&pattern(64 * 1024)).await.unwrap();
    // A byte a second: the first is held, the rest wait to be read.
    proxy.until("a byte held", |c| c.upstream.held >= 1).await;

    proxy.clear();
    assert_eq!(read_n(&mut client, 64 * 1024).await, pattern(64 * 1024));
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_connections() {
    let peer = Peer::echo().await;
    let proxy = start(&peer).await;
    let mut client = connect(&proxy).await;
    client.write_all(b"abc").await.unwrap();
    assert_eq!(read_n(&mut client, 3).await, b"abc");
    drop(proxy);
    assert_eq!(read_to_end(&mut client).await, b"");
}

#[tokio::test]
async fn a_refused_connection_to_the_server_closes_the_clients() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let proxy = FaultProxy::start(&format!("http://{addr}")).await;
    assert!(proxy.url().starts_with("http://127.0.0.1:"));
    let mut client = connect(&proxy).await;
    assert_eq!(read_to_end(&mut client).await, b"");
    let counts = proxy.until("closed connection", |c| c.open == 0).await;
    assert_eq!(counts.accepted, 1);
}
