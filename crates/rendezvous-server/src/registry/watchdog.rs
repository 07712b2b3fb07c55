//! Each session's watchdog: it ends the session when the host does not
//! start its shell in time, when nobody used it for the idle timeout, or at
//! its maximum lifetime, and tells the guests why in plain words. It holds
//! no strong reference, so it keeps nothing alive, and it ends with its
//! session.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{Host, gone};
use crate::config::{SESSION_START_TIMEOUT, SessionTimeouts};
use crate::session::Session;

/// Watches `session` of `host` until it ends.
pub(super) fn spawn(host: &Arc<Host>, session: &Arc<Session>, timeouts: SessionTimeouts) {
    let (host, weak) = (Arc::downgrade(host), Arc::downgrade(session));
    let ended = session.ended().clone();
    let started = Instant::now();
    tokio::spawn(async move {
        tokio::select! {
            () = watch(&host, &weak, started, timeouts) => {}
            () = ended.cancelled() => {}
        }
    });
}

async fn watch(host: &Weak<Host>, session: &Weak<Session>, started: Instant, t: SessionTimeouts) {
    let end = |message: String| {
        if let (Some(host), Some(session)) = (host.upgrade(), session.upgrade()) {
            host.end_session(&session, gone(&message));
        }
    };
    let start_ends = started + SESSION_START_TIMEOUT;
    let lifetime_ends = t.max_lifetime.map(|max| started + max);
    loop {
        let Some((attached, last_activity)) = session
            .upgrade()
            .map(|s| (s.host_attached(), s.last_activity()))
        else {
            return;
        };
        let idle_ends = last_activity + t.idle;
        let now = Instant::now();
        if !attached && start_ends <= now {
            return end(format!(
                "the host did not start the shell within {} s",
                SESSION_START_TIMEOUT.as_secs()
            ));
        }
        if let Some(at) = lifetime_ends
            && at <= now
        {
            return end(format!(
                "the session reached its maximum lifetime of {} (the server's \
                 --max-session-lifetime)",
                human(t.max_lifetime.unwrap_or_default())
            ));
        }
        if idle_ends <= now {
            return end(format!(
                "no input or output for {} (the server's --session-idle-timeout)",
                human(t.idle)
            ));
        }
        let mut wake = idle_ends;
        if !attached {
            wake = wake.min(start_ends);
        }
        if let Some(at) = lifetime_ends {
            wake = wake.min(at);
        }
        tokio::time::sleep_until(wake.into()).await;
    }
}

/// A duration as people say it: "30 min", "90 s", "2 h".
pub(super) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 || secs == 0 {
        format!("{} ms", d.as_millis())
    } else if secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

#[cfg(test)]
mod tests {
    use super::human;
    use std::time::Duration;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(Duration::from_secs(1800)), "30 min");
        assert_eq!(human(Duration::from_secs(7200)), "2 h");
        assert_eq!(human(Duration::from_secs(90)), "90 s");
        assert_eq!(human(Duration::from_millis(300)), "300 ms");
        assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
        assert_eq!(human(Duration::from_secs(1)), "1 s");
    }
}
