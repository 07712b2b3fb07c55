//! One direction of one proxied connection: a reader that takes chunks
//! from the sender as the throttle and the hold bound allow, a queue of
//! chunks stamped with their read time, and a writer that delivers each
//! once no stall holds it and its delay has passed.

use std::num::NonZeroU64;
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;

use super::{Counts, Faults, MAX_CHUNK_BYTES, Stall, THROTTLE_BURST, Way};

/// How a pipe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The sender's end of stream was delivered (a FIN to the receiver).
    Finished,
    /// This direction was cut: the receiver got a FIN, held bytes were
    /// dropped.
    Cut,
    /// The receiver could not be written to, or the proxy is gone: the
    /// whole connection should close.
    Broken,
}

/// One direction of one connection.
pub(super) struct Pipe {
    pub(super) way: Way,
    /// The direction's cut count when the connection was accepted.
    pub(super) cuts: u64,
    pub(super) faults: watch::Receiver<Faults>,
    pub(super) counts: Arc<watch::Sender<Counts>>,
    pub(super) max_held_bytes: usize,
}

/// What the reader queues for the writer.
struct Chunk {
    read_at: Instant,
    /// Bytes, or `None` for the sender's end of stream.
    data: Option<Vec<u8>>,
    /// Its share of the hold bound, and of [`super::Flow::held`].
    _held: Option<Held>,
}

/// Bytes counted as held, from their read until this drops (delivered,
/// or dropped by a cut).
struct Held {
    _room: OwnedSemaphorePermit,
    bytes: u64,
    way: Way,
    counts: Arc<watch::Sender<Counts>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counts
            .send_modify(|c| c.flow(self.way).held -= self.bytes);
    }
}

impl Pipe {
    /// Carries `from`'s bytes to `to` until the end is delivered, this
    /// direction is cut, or `to` breaks.
    pub(super) async fn run(self, from: OwnedReadHalf, to: OwnedWriteHalf) -> End {
        // The queue is bounded in bytes by `room`, not in chunks.
        let (queue, chunks) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(self.max_held_bytes));
        let writer = self.write(to, chunks);
        tokio::pin!(writer);
        tokio::select! {
            end = &mut writer => end,
            // The reader returns after queueing the end of the stream, or
            // on a cut; the writer delivers the rest and sees it.
            () = self.read(from, queue, room) => writer.await,
        }
    }

    /// Resolves once this direction has been cut (or the proxy is gone).
    async fn cut(&self, faults: &mut watch::Receiver<Faults>) {
        let (way, cuts) = (self.way, self.cuts);
        let _ = faults.wait_for(|f| f.of(way).cuts != cuts).await;
    }

    async fn read(
        &self,
        mut from: OwnedReadHalf,
        queue: mpsc::UnboundedSender<Chunk>,
        room: Arc<Semaphore>,
    ) {
        let mut cuts = self.faults.clone();
        let mut faults = self.faults.clone();
        let mut bucket = Bucket::default();
        let chunk_bytes = MAX_CHUNK_BYTES.min(self.max_held_bytes);
        let mut buf = vec![0; chunk_bytes];
        loop {
            let (allowed, mut room) = tokio::select! {
                () = self.cut(&mut cuts) => return,
                ready = async {
                    let allowed = bucket.allowance(&mut faults, self.way, chunk_bytes).await;
                    // `allowed` fits in u32: it is at most MAX_CHUNK_BYTES.
                    let room = room.clone().acquire_many_owned(allowed as u32).await;
                    (allowed, room)
                } => match ready {
                    (allowed, Ok(room)) => (allowed, room),
                    (_, Err(_)) => return,
                },
            };
            let read = tokio::select! {
                () = self.cut(&mut cuts) => return,
                read = from.read(&mut buf[..allowed]) => read,
            };
            let read_at = Instant::now();
            let n = match read {
                Ok(n @ 1..) => n,
                // The end of the stream, or a reset, which ends it too.
                Ok(0) | Err(_) => {
                    self.counts.send_modify(|c| c.flow(self.way).ends += 1);
                    let end = Chunk {
                        read_at,
                        data: None,
                        _held: None,
                    };
                    let _ = queue.send(end);
                    return;
                }
            };
            bucket.spend(n);
            let drop_it = faults.borrow().of(self.way).stall == Some(Stall::Drop);
            self.counts.send_modify(|c| {
                let flow = c.flow(self.way);
                flow.read += n as u64;
                if !drop_it {
                    flow.held += n as u64;
                }
            });
            if drop_it {
                continue;
            }
            let held = Held {
                _room: room.split(n).unwrap_or(room),
                bytes: n as u64,
                way: self.way,
                counts: self.counts.clone(),
            };
            let chunk = Chunk {
                read_at,
                data: Some(buf[..n].to_vec()),
                _held: Some(held),
            };
            if queue.send(chunk).is_err() {
                return;
            }
        }
    }

    async fn write(
        &self,
        mut to: OwnedWriteHalf,
        mut chunks: mpsc::UnboundedReceiver<Chunk>,
    ) -> End {
        let mut cuts = self.faults.clone();
        let mut faults = self.faults.clone();
        loop {
            let chunk = tokio::select! {
                () = self.cut(&mut cuts) => return self.cut_end(&mut to).await,
                chunk = chunks.recv() => chunk,
            };
            // The reader only leaves without queueing the end on a cut.
            let Some(chunk) = chunk else {
                return self.cut_end(&mut to).await;
            };
            // Until it is due: no stall in force, and the delay passed.
            loop {
                let (stalled, due) = {
                    let now = faults.borrow_and_update();
                    let link = now.of(self.way);
                    (link.stall.is_some(), chunk.read_at + link.delay)
                };
                if !stalled && Instant::now() >= due {
                    break;
                }
                tokio::select! {
                    () = self.cut(&mut cuts) => return self.cut_end(&mut to).await,
                    changed = faults.changed() => if changed.is_err() {
                        return End::Broken;
                    },
                    () = tokio::time::sleep_until(due), if !stalled => {}
                }
            }
            let Some(data) = &chunk.data else {
                let _ = to.shutdown().await;
                return End::Finished;
            };
            tokio::select! {
                () = self.cut(&mut cuts) => return self.cut_end(&mut to).await,
                written = to.write_all(data) => if written.is_err() {
                    return End::Broken;
                },
            }
            self.counts
                .send_modify(|c| c.flow(self.way).delivered += data.len() as u64);
        }
    }

    /// Ends the stream for the receiver of a cut direction.
    async fn cut_end(&self, to: &mut OwnedWriteHalf) -> End {
        let _ = to.shutdown().await;
        End::Cut
    }
}

/// A token bucket over tokio time: how many bytes a throttled direction
/// may read next.
#[derive(Debug, Default)]
struct Bucket {
    /// The rate it fills at, in bytes/s; `None` while unthrottled.
    rate: Option<NonZeroU64>,
    /// Bytes it may read now, at most a burst.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Option<Instant>,
}

impl Bucket {
    /// Bytes one burst holds at `rate`: at least one.
    fn burst(rate: NonZeroU64) -> f64 {
        (rate.get() as f64 * THROTTLE_BURST.as_secs_f64()).max(1.0)
    }

    /// Waits until the direction's throttle allows a read of a whole burst
    /// (or `max`, if smaller), and returns how many bytes it may take
    /// (`max` unthrottled).
    async fn allowance(
        &mut self,
        faults: &mut watch::Receiver<Faults>,
        way: Way,
        max: usize,
    ) -> usize {
        loop {
            let rate = faults.borrow_and_update().of(way).rate;
            let Some(rate) = rate else {
                self.rate = None;
                return max;
            };
            let now = Instant::now();
            let burst = Self::burst(rate);
            if self.rate != Some(rate) {
                // A new throttle starts with one burst.
                (self.rate, self.tokens, self.at) = (Some(rate), burst, Some(now));
            }
            let since = self.at.map_or(0.0, |at| (now - at).as_secs_f64());
            self.tokens = (self.tokens + since * rate.get() as f64).min(burst);
            self.at = Some(now);
            let want = burst.min(max as f64);
            if self.tokens >= want {
                return (self.tokens as usize).clamp(1, max);
            }
            let wait = (want - self.tokens) / rate.get() as f64;
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs_f64(wait)) => {}
                changed = faults.changed() => if changed.is_err() {
                    return max;
                },
            }
        }
    }

    /// `n` bytes were read.
    fn spend(&mut self, n: usize) {
        if self.rate.is_some() {
            self.tokens = (self.tokens - n as f64).max(0.0);
        }
    }
}
