//! Keystroke round trip through the rendezvous relay: guest input → server
//! → host's Data stream → the synthetic host echoes it as output → server →
//! the guest's output. The guest uses the bidi `Terminal` RPC (the native
//! guests' path): input goes up the same stream the output comes down.
//! One byte per round trip, one in flight at a time; the clock runs from
//! handing the byte to the stream to receiving its echo. The bench runs
//! the relay's round trips and the baseline's ([`super::baseline::Echo`])
//! in alternating blocks, so that both see the same machine.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use rendezvous_proto::guest_event::Event;

use super::Fixture;
use super::guest::{self, TerminalGuest};
use super::synthetic_host::HostSession;

/// The keys typed, one per round trip, in turn.
static KEYS: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";

/// How long one round trip may take before the bench fails (10 s).
const ONE_LIMIT: Duration = Duration::from_secs(10);

/// The relay's keystroke path: a guest on a new shell of the synthetic
/// host, which echoes its input.
pub struct Echo {
    term: TerminalGuest,
    session: Option<HostSession>,
    next: usize,
}

impl Echo {
    /// Opens a new shell on the fixture's host over `Terminal`.
    pub async fn start(fixture: &mut Fixture) -> anyhow::Result<Self> {
        let url = fixture.url.clone();
        Self::start_via(fixture, &url).await
    }

    /// [`start`](Self::start) with the guest on the server at `url`: another
    /// replica than the host's, for `bench replicas`.
    pub async fn start_via(fixture: &mut Fixture, url: &str) -> anyhow::Result<Self> {
        let mut client = guest::connect(url).await?;
        let term = TerminalGuest::open(&mut client, &fixture.new_shell()).await?;
        let session = fixture.host.take_session(&term.attached.session_id).await?;
        Ok(Self {
            term,
            session: Some(session),
            next: 0,
        })
    }

    /// `count` round trips, each timed into `rtts`.
    pub async fn round_trips(
        &mut self,
        count: usize,
        rtts: &mut Vec<Duration>,
    ) -> anyhow::Result<()> {
        for _ in 0..count {
            let k = self.next % KEYS.len();
            self.next += 1;
            let key = Bytes::from_static(&KEYS[k..=k]);
            let start = Instant::now();
            self.term.send_input(key.clone()).await?;
            tokio::time::timeout(ONE_LIMIT, echo(&mut self.term, &key))
                .await
                .context("no echo within 10 s")??;
            rtts.push(start.elapsed());
        }
        Ok(())
    }

    /// Ends the session.
    pub async fn finish(mut self) {
        if let Some(session) = self.session.take() {
            session.finish().await;
        }
    }
}

async fn echo(term: &mut TerminalGuest, key: &Bytes) -> anyhow::Result<()> {
    loop {
        match term.events.message().await?.and_then(|e| e.event) {
            Some(Event::Output(out)) => {
                if out.data != *key {
                    bail!("echo {:?}, expected {:?}", out.data, key);
                }
                return Ok(());
            }
            Some(Event::Size(_) | Event::Attached(_) | Event::HostState(_)) => {}
            Some(Event::Lagged(_)) => bail!("the round-trip guest lagged"),
            Some(Event::Exit(_)) | None => bail!("the session ended during the round trips"),
        }
    }
}
