//! The drain on SIGTERM, in two steps: guests first (their streams end
//! with UNAVAILABLE, new calls are refused, input on its way is waited
//! for), then hosts, so that both resume on the next server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Host, Registry, gone, lock};

impl Registry {
    /// Starts a drain (SIGTERM), the first of its two steps: from now on
    /// new calls get UNAVAILABLE ([`RegistryError::Draining`]), and every
    /// guest's stream ends with UNAVAILABLE, so that the guest reconnects
    /// and resumes (after a restart with the same `--state-key-file`, or
    /// on another replica). Sessions are kept, not ended, except those of
    /// hosts that cannot resume (no grace period): those end now, "the
    /// server is shutting down", as on [`shutdown`](Self::shutdown).
    ///
    /// Then wait for [`input_delivered`](Self::input_delivered), so that
    /// no keystroke already acknowledged to a guest is lost, and end with
    /// [`drain_hosts`](Self::drain_hosts).
    pub fn drain(&self) {
        // Ended first, so that their guests get the Exit, not the drain.
        // With a random state key no later server can check the tickets,
        // so nothing can resume: every session ends, as on `shutdown`.
        let persistent = self.config.state_key.is_persistent();
        let hosts: Vec<Arc<Host>> = lock(&self.inner).hosts_by_id.values().cloned().collect();
        for host in hosts.into_iter().filter(|h| !persistent || !h.may_resume()) {
            for session in host.sessions() {
                host.end_session(&session, gone("the server is shutting down"));
            }
            self.unregister_host(&host);
        }
        self.draining.cancel();
    }

    /// Whether every session's queued input has reached its host (the host
    /// acknowledged it), or can no longer: its host is away; and no input
    /// call is still on its way into a queue.
    pub fn input_delivered(&self) -> bool {
        if self.input_calls.load(Ordering::Acquire) > 0 {
            return false;
        }
        let hosts: Vec<Arc<Host>> = lock(&self.inner).hosts_by_id.values().cloned().collect();
        hosts
            .iter()
            .flat_map(|h| h.sessions())
            .all(|session| session.unacked_host_input() == 0 || !session.host_stream().0)
    }

    /// The drain's second step: every host's control and Data streams end
    /// with UNAVAILABLE ("the server is restarting"); hosts with a grace
    /// period keep their shells and resume.
    pub fn drain_hosts(&self) {
        self.draining.cancel();
        self.hosts_draining.cancel();
    }

    /// Counts a guest's input call from now until the guard drops (after
    /// its input is queued, or refused), so that a drain waits for it;
    /// `None` once the drain has begun: refuse the call with
    /// [`RegistryError::Draining`].
    pub fn input_call(&self) -> Option<InputCall> {
        self.input_calls.fetch_add(1, Ordering::AcqRel);
        let call = InputCall(self.input_calls.clone());
        // Checked after counting: a drain that began meanwhile either sees
        // the count or is seen here.
        (!self.is_draining()).then_some(call)
    }

    /// Whether the hosts' streams are draining (see
    /// [`drain_hosts`](Self::drain_hosts)).
    pub fn hosts_draining(&self) -> bool {
        self.hosts_draining.is_cancelled()
    }

    /// Marks the server as stopping: from now on [`is_ready`](Self::is_ready)
    /// is false, while everything goes on as before (the drain delay).
    pub fn stop_ready(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether `/readyz` says ready: false once a stop has begun
    /// ([`stop_ready`](Self::stop_ready), [`drain`](Self::drain)), and
    /// while the task store is not healthy (a shared store that cannot
    /// reach Redis: see [`RedisTaskStore`](super::RedisTaskStore), which
    /// checks every [`HEALTH_INTERVAL`](super::redis_store::HEALTH_INTERVAL) and so
    /// turns ready again by itself when Redis is back).
    pub fn is_ready(&self) -> bool {
        !self.stopping.load(Ordering::Acquire) && !self.is_draining() && self.store.is_healthy()
    }

    /// Whether [`drain`](Self::drain) has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Cancelled when [`drain`](Self::drain) begins.
    pub fn draining(&self) -> &tokio_util::sync::CancellationToken {
        &self.draining
    }
}

/// A guest input call in progress: see [`Registry::input_call`].
#[derive(Debug)]
pub struct InputCall(Arc<AtomicUsize>);

impl Drop for InputCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
