//! Failed authentications, rate-limited per client IP and per task, so
//! that guessing secrets, guest tokens or host tokens costs time.
//!
//! Each failure (unknown task or wrong secret, a bad guest or host token, an
//! unknown guest on a unary call, a host that is not admitted) takes one
//! cell from a burst that refills at a steady rate (governor's GCRA, as a
//! token bucket). A key whose burst is spent is locked until a cell is back:
//! meanwhile every attempt from that IP, or on that task, gets
//! `RESOURCE_EXHAUSTED` "too many failed attempts; try again in N s", even
//! with the right credential, so a guesser learns nothing from it. Successes
//! cost nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use rendezvous_proto::ids::TaskId;

/// Most keys (client IPs, or tasks) tracked at once (100 000, about 100
/// bytes each); past it, keys that are whole again are forgotten first, and
/// locks that have expired.
pub const MAX_TRACKED_KEYS: usize = 100_000;

/// Failed attempts one client IP may make in a burst (default 20), and how
/// long each one takes to come back (default 6 s, so 10 a minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureQuota {
    /// Failures allowed at once.
    pub burst: u32,
    /// Time for one failure to be forgiven, in ms.
    pub refill: Duration,
}

/// The quotas of [`FailureLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureQuotas {
    /// Per client IP (default: 20, one back every 6 s).
    pub per_ip: FailureQuota,
    /// Per task (default: 50, one back every 2 s), against many IPs
    /// guessing one task's secret.
    pub per_task: FailureQuota,
}

impl Default for FailureQuotas {
    fn default() -> Self {
        Self {
            per_ip: FailureQuota {
                burst: 20,
                refill: Duration::from_millis(6_000),
            },
            per_task: FailureQuota {
                burst: 50,
                refill: Duration::from_millis(2_000),
            },
        }
    }
}

/// Too many failures: locked for `retry_after` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many failed attempts; try again in {} s",
    retry_after.as_secs().max(1)
)]
pub struct TooManyFailures {
    /// How long until an attempt is looked at again.
    pub retry_after: Duration,
}

/// One kind of key: its burst and refill, and the keys locked now.
#[derive(Debug)]
struct Limit<K: Hash + Eq + Clone> {
    failures: DefaultKeyedRateLimiter<K>,
    /// Keys whose burst is spent, until when.
    locked: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(quota: FailureQuota) -> Self {
        let burst = NonZeroU32::new(quota.burst).unwrap_or(NonZeroU32::MIN);
        let refill = quota.refill.max(Duration::from_millis(1));
        let quota = Quota::with_period(refill)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            failures: DefaultKeyedRateLimiter::keyed(quota),
            locked: Mutex::default(),
        }
    }

    fn check(&self, key: &K, now: Instant) -> Result<(), TooManyFailures> {
        let mut locked = self.locked.lock().unwrap_or_else(PoisonError::into_inner);
        match locked.get(key) {
            Some(until) if *until > now => Err(TooManyFailures {
                retry_after: *until - now,
            }),
            Some(_) => {
                locked.remove(key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failure; returns the lock it starts, if the burst is spent.
    fn failed(&self, key: &K, now: Instant) -> Option<TooManyFailures> {
        if self.failures.len() > MAX_TRACKED_KEYS {
            self.failures.retain_recent();
        }
        let Err(not_until) = self.failures.check_key(key) else {
            return None;
        };
        let retry_after = not_until.wait_time_from(self.failures.clock().now());
        let mut locked = self.locked.lock().unwrap_or_else(PoisonError::into_inner);
        if locked.len() >= MAX_TRACKED_KEYS {
            locked.retain(|_, until| *until > now);
        }
        if locked.len() < MAX_TRACKED_KEYS {
            locked.insert(key.clone(), now + retry_after);
        }
        Some(TooManyFailures { retry_after })
    }
}

/// The server's failed-authentication limits. See the module docs.
#[derive(Debug)]
pub struct FailureLimits {
    per_ip: Limit<IpAddr>,
    per_task: Limit<TaskId>,
}

impl FailureLimits {
    /// Limits with `quotas`.
    pub fn new(quotas: FailureQuotas) -> Self {
        Self {
            per_ip: Limit::new(quotas.per_ip),
            per_task: Limit::new(quotas.per_task),
        }
    }

    /// Whether an attempt from `ip` (when known) on `task` (when it names
    /// one) is looked at.
    ///
    /// # Errors
    /// [`TooManyFailures`] while either is locked.
    pub fn check(&self, ip: Option<IpAddr>, task: Option<&TaskId>) -> Result<(), TooManyFailures> {
        let now = Instant::now();
        if let Some(ip) = ip {
            self.per_ip.check(&ip, now)?;
        }
        if let Some(task) = task {
            self.per_task.check(task, now)?;
        }
        Ok(())
    }

    /// Counts a failed attempt from `ip` on `task`; returns the lock it
    /// starts, if it spent a burst.
    pub fn failed(&self, ip: Option<IpAddr>, task: Option<&TaskId>) -> Option<TooManyFailures> {
        let now = Instant::now();
        let by_ip = ip.and_then(|ip| self.per_ip.failed(&ip, now));
        let by_task = task.and_then(|task| self.per_task.failed(task, now));
        by_ip.or(by_task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(burst: u32, refill_ms: u64) -> FailureLimits {
        let quota = FailureQuota {
            burst,
            refill: Duration::from_millis(refill_ms),
        };
        FailureLimits::new(FailureQuotas {
            per_ip: quota,
            per_task: FailureQuota {
                burst: 1000,
                ..quota
            },
        })
    }

    #[test]
    fn a_spent_burst_locks_the_ip_until_a_failure_is_forgiven() {
        let limits = limits(3, 200);
        let ip = Some(IpAddr::from([192, 0, 2, 1]));
        let other = Some(IpAddr::from([192, 0, 2, 2]));
        for _ in 0..3 {
            assert!(limits.check(ip, None).is_ok());
            assert_eq!(limits.failed(ip, None), None);
        }
        let locked = limits.failed(ip, None).expect("the fourth failure locks");
        assert!(locked.retry_after <= Duration::from_millis(200));
        assert!(limits.check(ip, None).is_err());
        assert!(
            limits.check(other, None).is_ok(),
            "other IPs are not affected"
        );
        assert!(
            locked
                .to_string()
                .starts_with("too many failed attempts; try again in")
        );
        // Recovers once the refill has passed.
        let deadline = Instant::now() + Duration::from_secs(5);
        while limits.check(ip, None).is_err() {
            assert!(Instant::now() < deadline, "never unlocked");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_task_is_locked_against_many_ips() {
        let quota = FailureQuota {
            burst: 1000,
            refill: Duration::from_millis(1),
        };
        let limits = FailureLimits::new(FailureQuotas {
            per_ip: quota,
            per_task: FailureQuota {
                burst: 2,
                refill: Duration::from_secs(60),
            },
        });
        let task = TaskId::new("guessed").unwrap();
        for i in 0..2u8 {
            assert_eq!(
                limits.failed(Some(IpAddr::from([10, 0, 0, i])), Some(&task)),
                None
            );
        }
        assert!(
            limits
                .failed(Some(IpAddr::from([10, 0, 0, 9])), Some(&task))
                .is_some()
        );
        let error = limits
            .check(Some(IpAddr::from([10, 0, 0, 10])), Some(&task))
            .unwrap_err();
        assert!(error.retry_after > Duration::from_secs(50));
        let elsewhere = TaskId::new("other").unwrap();
        assert!(
            limits
                .check(Some(IpAddr::from([10, 0, 0, 10])), Some(&elsewhere))
                .is_ok()
        );
    }
}
