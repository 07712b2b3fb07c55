//! Keystroke round trip through the rendezvous relay: guest input → server
//! → host's Data stream → the synthetic host echoes it as output → server →
//! the guest's output. The guest uses the bidi `Terminal` RPC (the native
//! guests' path): input goes up the same stream the output comes down.
//! One byte per round trip, one in flight at a time; the clock runs from
//! handing the byte to the stream to receiving its echo.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use rendezvous_proto::guest_event::Event;

use super::Fixture;
use super::guest::{self, TerminalGuest};

/// The keys typed, one per round trip, in turn.
static KEYS: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";

/// How long one round trip may take before the bench fails (10 s).
const ONE_LIMIT: Duration = Duration::from_secs(10);

/// `warmup` untimed round trips, then `count` timed ones.
pub async fn run(
    fixture: &mut Fixture,
    warmup: usize,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut client = guest::connect(&fixture.url).await?;
    let target = fixture.new_shell();
    let mut term = TerminalGuest::open(&mut client, &target).await?;
    let session = fixture.host.take_session(&term.attached.session_id).await?;
    let mut rtts = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let k = i % KEYS.len();
        let key = Bytes::from_static(&KEYS[k..=k]);
        let start = Instant::now();
        term.send_input(key.clone()).await?;
        tokio::time::timeout(ONE_LIMIT, echo(&mut term, &key))
            .await
            .context("no echo within 10 s")??;
        let rtt = start.elapsed();
        if i >= warmup {
            rtts.push(rtt);
        }
    }
    drop(term);
    session.finish().await;
    Ok(rtts)
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
            Some(Event::Size(_) | Event::Attached(_)) => {}
            Some(Event::Lagged(_)) => bail!("the round-trip guest lagged"),
            Some(Event::Exit(_)) | None => bail!("the session ended during the round trips"),
        }
    }
}
