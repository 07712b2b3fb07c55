//! The host's running sessions, kept across control connections: a lost
//! connection leaves them running for the grace period, and the next
//! connection resumes them.

use std::collections::HashMap;
use std::time::Duration;

use rendezvous_proto::ResumeSession;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::session::CloseReason;
use crate::session::live::LiveSession;

/// One running session and the sender that ends it.
#[derive(Debug)]
struct Entry {
    live: LiveSession,
    close: Option<oneshot::Sender<CloseReason>>,
}

/// The host's sessions. Dropping it aborts their tasks, which SIGKILLs
/// their processes.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    entries: HashMap<String, Entry>,
    /// Each session's task: it owns the PTY process.
    tasks: JoinSet<()>,
}

impl Sessions {
    /// Number of sessions kept.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `id` is kept.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Adds a started session, with its task.
    pub(crate) fn insert(
        &mut self,
        live: LiveSession,
        close: oneshot::Sender<CloseReason>,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.spawn(task);
        let id = live.id.clone();
        self.entries.insert(
            id,
            Entry {
                live,
                close: Some(close),
            },
        );
    }

    /// The sessions, for their Data streams.
    pub(crate) fn all(&self) -> Vec<LiveSession> {
        self.entries.values().map(|e| e.live.clone()).collect()
    }

    /// The session `id`.
    pub(crate) fn get(&self, id: &str) -> Option<LiveSession> {
        self.entries.get(id).map(|e| e.live.clone())
    }

    /// Ends session `id` with `reason` (its exit status goes up on its
    /// Data stream, if it has one); it stays kept until [`Sessions::remove`].
    pub(crate) fn close(&mut self, id: &str, reason: CloseReason) {
        if let Some(close) = self.entries.get_mut(id).and_then(|e| e.close.take()) {
            let _ = close.send(reason);
        }
    }

    /// Ends every session with `reason`.
    pub(crate) fn close_all(&mut self, reason: CloseReason) {
        for entry in self.entries.values_mut() {
            if let Some(close) = entry.close.take() {
                let _ = close.send(reason);
            }
        }
    }

    /// Forgets session `id` (its exit status reached the server, or the
    /// server no longer has it).
    pub(crate) fn remove(&mut self, id: &str) {
        self.entries.remove(id);
    }

    /// What a resuming Hello says of each session.
    pub(crate) fn resume_list(&self) -> Vec<ResumeSession> {
        self.entries
            .values()
            .map(|e| {
                let log = e.live.log.borrow();
                let size = *e.live.size.borrow();
                ResumeSession {
                    session_id: e.live.id.clone(),
                    ticket: e.live.ticket.clone(),
                    start_offset: log.start(),
                    end_offset: log.end(),
                    cols: u32::from(size.cols),
                    rows: u32::from(size.rows),
                    input_applied: e.live.input_received(),
                    guest_inputs: e.live.guest_inputs(),
                }
            })
            .collect()
    }

    /// Every session's Data stream is gone: keep all output until the next
    /// server says what it has.
    pub(crate) fn disconnected(&self) {
        for entry in self.entries.values() {
            entry.live.log.send_modify(|log| log.disconnected());
        }
    }

    /// Ends every session with `reason`, waits up to `within` for their
    /// processes to end, aborts the rest (SIGKILL), and forgets them all.
    pub(crate) async fn end_all(&mut self, reason: CloseReason, within: Duration) {
        self.close_all(reason);
        let all_ended = async {
            while let Some(done) = self.tasks.join_next().await {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!("a session task panicked");
                }
            }
        };
        if tokio::time::timeout(within, all_ended).await.is_err() {
            tracing::warn!(
                sessions = self.tasks.len(),
                "sessions did not end in time; aborting them"
            );
            self.tasks.shutdown().await;
        }
        self.entries.clear();
    }

    /// Reaps session tasks that have ended (their processes are gone;
    /// their exit status waits in the log for a Data stream).
    pub(crate) fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                tracing::error!("a session task panicked");
            }
        }
    }
}
