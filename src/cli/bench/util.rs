//! Small helpers shared by the measurements: owned tasks, payload bytes,
//! random names and secrets, percentiles, rates.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// Size of one output chunk a synthetic (or baseline) host writes, in bytes
/// (32 KiB).
pub const CHUNK_BYTES: usize = 32 * 1024;

/// Size of the pool of pseudo-random payload bytes the chunks are cut from,
/// in bytes (1 MiB). The pool is made once; chunks are slices of it.
const POOL_BYTES: usize = 1024 * 1024;

/// Bytes in a MiB.
pub const MIB: f64 = 1024.0 * 1024.0;

/// A spawned task that is aborted when this handle is dropped, so that no
/// bench task outlives its owner.
#[derive(Debug)]
pub struct Owned(tokio::task::JoinHandle<()>);

impl Owned {
    /// Spawns `f` on the runtime, owned by the returned handle.
    pub fn spawn(f: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(f))
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A random u64 from the standard library's per-process random hash keys.
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

/// A fresh secret of 32 hex characters (128 random bits): above the
/// server's 22-character minimum.
pub fn random_secret() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

/// A fresh name prefix such as `bench-1f3a9c0d`, for task IDs.
pub fn random_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", random_u64() as u32)
}

/// Incompressible-ish output: chunks of [`CHUNK_BYTES`] cut from one
/// pseudo-random pool (xorshift64*), shared without copies.
#[derive(Debug, Clone)]
pub struct Payload {
    pool: Bytes,
}

impl Payload {
    /// Makes the pool.
    pub fn new() -> Self {
        let mut state = random_u64() | 1;
        let mut pool = Vec::with_capacity(POOL_BYTES);
        while pool.len() < POOL_BYTES {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            pool.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        Self {
            pool: Bytes::from(pool),
        }
    }

    /// The `i`-th chunk of the output stream (a slice of the pool).
    pub fn chunk(&self, i: u64) -> Bytes {
        let per_pool = (POOL_BYTES / CHUNK_BYTES) as u64;
        let start = (i % per_pool) as usize * CHUNK_BYTES;
        self.pool.slice(start..start + CHUNK_BYTES)
    }

    /// How many chunks make at least `bytes` bytes (at least one).
    pub fn chunks_for(bytes: u64) -> u64 {
        bytes.div_ceil(CHUNK_BYTES as u64).max(1)
    }
}

/// A request stream for tonic fed by a bounded tokio channel.
pub fn channel_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

/// Runs `tasks` as spawned tasks, at most `concurrency` at once, and
/// returns their results in order. The first error wins; the other tasks
/// are aborted with the set.
pub async fn run_all<T, Fut>(
    tasks: impl IntoIterator<Item = Fut>,
    concurrency: usize,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let mut n = 0;
    for (i, fut) in tasks.into_iter().enumerate() {
        let permits = permits.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            fut.await.map(|t| (i, t))
        });
        n = i + 1;
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(done) = set.join_next().await {
        let (i, t) = done??;
        out[i] = Some(t);
    }
    Ok(out.into_iter().flatten().collect())
}

/// `bytes` over `elapsed`, in MiB/s.
pub fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MIB / elapsed.as_secs_f64().max(1e-9)
}

/// The `p`-th percentile (0 < p <= 100, nearest rank) of `sorted`, in µs.
pub fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&v, 50.0), 50.0);
        assert_eq!(percentile_us(&v, 99.0), 99.0);
        assert_eq!(percentile_us(&v, 100.0), 100.0);
    }

    #[test]
    fn chunks_are_full_size_and_vary() {
        let p = Payload::new();
        assert_eq!(p.chunk(0).len(), CHUNK_BYTES);
        assert_ne!(p.chunk(0), p.chunk(1));
        assert_eq!(Payload::chunks_for(1), 1);
        assert_eq!(Payload::chunks_for(CHUNK_BYTES as u64 + 1), 2);
    }
}
