//! Throughput from host to guests through the rendezvous relay: (a) one
//! session with one guest, and (b) fan-out of one session to N guests.
//!
//! How: N guests, each on its own connection, attach to one fresh session
//! (the first opens it as a new shell, the others join it by ID) before any
//! output exists. Then the synthetic host writes the bytes in 32 KiB output
//! messages as fast as the relay takes them (its backpressure holds the
//! host), while each guest counts the output bytes it receives and stops at
//! the end offset. The clock runs from the host's first message to the last
//! guest's last byte.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rendezvous_proto::guest_event::Event;
use tokio::task::JoinSet;

use super::Fixture;
use super::guest;
use super::util::{CHUNK_BYTES, Payload, mib_per_s, run_all};

/// Guests that connect at once while a run is set up.
const CONNECT_CONCURRENCY: usize = 32;

/// A run's time limit, beyond which the bench fails rather than hangs
/// (10 min).
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// The outcome of one throughput run.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Guests attached to the session.
    pub guests: usize,
    /// Bytes the host sent.
    pub sent: u64,
    /// Output bytes all guests received together (less than
    /// `guests * sent` when some guest lagged and skipped bytes).
    pub received: u64,
    /// Bytes guests skipped because they lagged, all guests together.
    pub lagged: u64,
    /// From the host's first message to the last guest's last byte.
    pub elapsed: Duration,
}

impl Throughput {
    /// All guests' received bytes over the elapsed time, in MiB/s.
    pub fn aggregate_mib_s(&self) -> f64 {
        mib_per_s(self.received, self.elapsed)
    }

    /// The aggregate divided by the number of guests: what one guest saw on
    /// average, in MiB/s.
    pub fn per_guest_mib_s(&self) -> f64 {
        self.aggregate_mib_s() / self.guests as f64
    }
}

/// One run: `guests` guests on one session, `chunks` 32 KiB chunks.
pub async fn run(
    fixture: &mut Fixture,
    payload: &Payload,
    guests: usize,
    chunks: u64,
) -> anyhow::Result<Throughput> {
    tokio::time::timeout(RUN_LIMIT, run_inner(fixture, payload, guests, chunks))
        .await
        .with_context(|| format!("a throughput run with {guests} guests took over 10 min"))?
}

async fn run_inner(
    fixture: &mut Fixture,
    payload: &Payload,
    guests: usize,
    chunks: u64,
) -> anyhow::Result<Throughput> {
    let url = fixture.url.clone();
    let connects = (0..guests).map(|_| {
        let url = url.clone();
        async move { guest::connect(&url).await }
    });
    let mut clients = run_all(connects, CONNECT_CONCURRENCY).await?;
    // The first guest opens the session; the others join it by ID.
    let mut first = clients.pop().context("no guests")?;
    let target = fixture.new_shell();
    let (attached, first_events) = guest::attach(&mut first, &target).await?;
    let session = fixture.host.take_session(&attached.session_id).await?;
    let join = target.join(&attached.session_id);
    let joins = clients.into_iter().enumerate().map(|(i, mut client)| {
        let join = join.clone();
        async move {
            let (_, events) = guest::attach(&mut client, &join).await.with_context(|| {
                format!(
                    "guest {} could not join the session (a server given with --server \
                     must allow this many guests per session: --max-guests-per-session)",
                    i + 2
                )
            })?;
            anyhow::Ok((client, events))
        }
    });
    let mut streams = run_all(joins, CONNECT_CONCURRENCY).await?;
    streams.push((first, first_events));

    let total = chunks * CHUNK_BYTES as u64;
    let mut readers = JoinSet::new();
    for (client, mut events) in streams {
        readers.spawn(async move {
            let _client = client;
            let mut received = 0u64;
            let mut lagged = 0u64;
            loop {
                let Some(event) = events.message().await?.and_then(|e| e.event) else {
                    bail!("a guest's stream ended after {received} of {total} bytes");
                };
                match event {
                    Event::Output(out) => {
                        received += out.data.len() as u64;
                        if out.offset + out.data.len() as u64 >= total {
                            break;
                        }
                    }
                    Event::Lagged(l) => lagged += l.missed_bytes,
                    Event::Exit(_) => bail!("the session ended after {received} bytes"),
                    Event::Attached(_) | Event::Size(_) | Event::HostState(_) => {}
                }
            }
            anyhow::Ok((received, lagged, Instant::now()))
        });
    }

    let start = Instant::now();
    for i in 0..chunks {
        session.send(payload.chunk(i)).await?;
    }
    let mut result = Throughput {
        guests,
        sent: total,
        received: 0,
        lagged: 0,
        elapsed: Duration::ZERO,
    };
    while let Some(done) = readers.join_next().await {
        let (received, lagged, at) = done.context("a guest reader panicked")??;
        result.received += received;
        result.lagged += lagged;
        result.elapsed = result.elapsed.max(at - start);
    }
    session.finish().await;
    Ok(result)
}
