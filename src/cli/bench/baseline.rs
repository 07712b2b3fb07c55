//! The baseline: the same bytes through a plain tokio TCP relay on
//! loopback. A TCP "host" connects to a relay task, a TCP "guest" connects
//! to it too, and the relay copies bytes both ways with
//! `tokio::io::copy_bidirectional_with_sizes` and 256 KiB buffers. No
//! framing, no HTTP/2, no fan-out: the practical ceiling of any relay on
//! this machine, measured in this same process and runtime.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::util::{Owned, Payload};

/// Buffer of each copy direction in the relay, and of the guest's reads,
/// in bytes (256 KiB, like the rendezvous relay's largest guest message).
const RELAY_BUFFER_BYTES: usize = 256 * 1024;

/// A relay listening on 127.0.0.1 with one connected host and guest.
struct Relay {
    host: TcpStream,
    guest: TcpStream,
    _relay: Owned,
}

impl Relay {
    /// Starts the relay and connects the host, then the guest (each
    /// announces itself with one byte, so the relay tells them apart).
    async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let relay = Owned::spawn(async move {
            let mut host = None;
            let mut guest = None;
            while host.is_none() || guest.is_none() {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let _ = s.set_nodelay(true);
                let mut role = [0u8];
                if s.read_exact(&mut role).await.is_err() {
                    return;
                }
                if role[0] == b'h' {
                    host = Some(s);
                } else {
                    guest = Some(s);
                }
            }
            let (Some(mut h), Some(mut g)) = (host, guest) else {
                return;
            };
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut h,
                &mut g,
                RELAY_BUFFER_BYTES,
                RELAY_BUFFER_BYTES,
            )
            .await;
        });
        let connect = |role: u8| async move {
            let mut s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            s.write_all(&[role]).await?;
            anyhow::Ok(s)
        };
        let host = connect(b'h').await?;
        let guest = connect(b'g').await?;
        Ok(Self {
            host,
            guest,
            _relay: relay,
        })
    }
}

/// Host → relay → guest: `chunks` chunks of 32 KiB. Returns the bytes the
/// guest received and the time from the host's first write to the guest's
/// last read.
pub async fn throughput(payload: &Payload, chunks: u64) -> anyhow::Result<(u64, Duration)> {
    let Relay {
        mut host,
        mut guest,
        _relay,
    } = Relay::start().await?;
    let total = chunks * super::util::CHUNK_BYTES as u64;
    let payload = payload.clone();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for i in 0..chunks {
            host.write_all(&payload.chunk(i)).await?;
        }
        host.flush().await?;
        anyhow::Ok(host)
    });
    let mut buf = vec![0u8; RELAY_BUFFER_BYTES];
    let mut received = 0u64;
    while received < total {
        let n = guest.read(&mut buf).await?;
        if n == 0 {
            bail!("the baseline relay closed after {received} of {total} bytes");
        }
        received += n as u64;
    }
    let elapsed = start.elapsed();
    writer.await.context("baseline writer panicked")??;
    Ok((received, elapsed))
}

/// The baseline's keystroke path: guest → relay → host, which echoes →
/// relay → guest; one byte, one in flight.
pub struct Echo {
    guest: TcpStream,
    next: usize,
    _echo: Owned,
    _relay: Owned,
}

impl Echo {
    /// Starts a relay with an echoing host and a connected guest.
    pub async fn start() -> anyhow::Result<Self> {
        let Relay {
            mut host,
            guest,
            _relay,
        } = Relay::start().await?;
        let echo = Owned::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = host.read(&mut buf).await {
                if n == 0 || host.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            guest,
            next: 0,
            _echo: echo,
            _relay,
        })
    }

    /// `count` round trips, each timed into `rtts`.
    pub async fn round_trips(
        &mut self,
        count: usize,
        rtts: &mut Vec<Duration>,
    ) -> anyhow::Result<()> {
        let mut got = [0u8];
        for _ in 0..count {
            let key = b'a' + (self.next % 26) as u8;
            self.next += 1;
            let start = Instant::now();
            self.guest.write_all(&[key]).await?;
            self.guest.read_exact(&mut got).await?;
            rtts.push(start.elapsed());
            if got[0] != key {
                bail!("the baseline echo sent {:?}, expected {:?}", got[0], key);
            }
        }
        Ok(())
    }
}
