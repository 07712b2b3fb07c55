//! `--notify-url`: one JSON POST per event (ready, attached, detached,
//! extended, continued, ended), for Slack-style webhooks.
//!
//! Each body carries `event`, `state`, `task`, `host`, `url` (the task
//! page *without* the secret), `message` (the log line) and `text` (the
//! same for Slack's incoming webhooks), and for guests `role` and `sub`.
//! Posts go out one at a time from a bounded queue, each with a 10 s
//! timeout; a failure is logged and the job goes on.

use std::time::Duration;

use rendezvous_host::hold::{HoldEnd, HoldEvent};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Announcement, log_line};

/// Events waiting to be posted, in events (32); past it an event is
/// dropped (and logged) rather than hold the job.
const NOTIFY_QUEUE_EVENTS: usize = 32;

/// How long one POST may take (10 s).
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long, at the end, the queue may take to drain (15 s).
const NOTIFY_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Posts events to the webhook, if one was given.
pub struct Notifier {
    queue: Option<mpsc::Sender<Value>>,
    task: Option<JoinHandle<()>>,
    base: Value,
}

impl Notifier {
    /// Starts posting to `url` (nothing when `None`).
    ///
    /// # Errors
    /// A URL that is neither https:// nor loopback http://.
    pub fn start(url: Option<&str>, a: &Announcement) -> anyhow::Result<Self> {
        let base = json!({ "task": a.task, "host": a.host, "url": a.page_url() });
        let Some(url) = url else {
            return Ok(Self {
                queue: None,
                task: None,
                base,
            });
        };
        rendezvous_proto::fetch::check_url(url)
            .map_err(|e| anyhow::anyhow!("--notify-url: {e}"))?;
        let (queue, mut events) = mpsc::channel::<Value>(NOTIFY_QUEUE_EVENTS);
        let url = url.to_owned();
        let task = tokio::spawn(async move {
            while let Some(body) = events.recv().await {
                let body = bytes::Bytes::from(body.to_string());
                let posted = rendezvous_proto::fetch::post_json(
                    &url,
                    http::HeaderMap::new(),
                    body,
                    NOTIFY_TIMEOUT,
                )
                .await;
                if let Err(e) = posted {
                    log_line(&format!("--notify-url: {e}"));
                }
            }
        });
        Ok(Self {
            queue: Some(queue),
            task: Some(task),
            base,
        })
    }

    /// Queues the event `event` in `state` with `message`.
    pub fn send(&self, event: &str, message: &str) {
        self.send_with(event, state_of(event), message, Value::Null);
    }

    fn send_with(&self, event: &str, state: &str, message: &str, extra: Value) {
        let Some(queue) = &self.queue else { return };
        let mut body = self.base.clone();
        let text = format!(
            "Rendezvous: task {}: {message} ({})",
            self.base["task"].as_str().unwrap_or_default(),
            self.base["url"].as_str().unwrap_or_default()
        );
        if let Some(map) = body.as_object_mut() {
            map.insert("event".into(), event.into());
            map.insert("state".into(), state.into());
            map.insert("message".into(), message.into());
            map.insert("text".into(), text.into());
            if let Value::Object(extra) = extra {
                map.extend(extra);
            }
        }
        if queue.try_send(body).is_err() {
            log_line(&format!(
                "--notify-url: too many events waiting; dropped {event}"
            ));
        }
    }

    /// Queues the webhook event for a hold event (none for `Waiting`).
    pub fn event(&self, event: &HoldEvent) {
        let message = event.to_string();
        match event {
            HoldEvent::GuestAttached(g) => self.send_with(
                "attached",
                "holding",
                &message,
                json!({ "role": g.role.as_str(), "sub": g.sub }),
            ),
            HoldEvent::GuestDetached { guest, remaining } => self.send_with(
                "detached",
                if *remaining > 0 {
                    "holding"
                } else {
                    "lingering"
                },
                &message,
                json!({ "role": guest.role.as_str(), "sub": guest.sub }),
            ),
            HoldEvent::Extended { .. } => self.send("extended", &message),
            HoldEvent::Ended(end) => {
                if let HoldEnd::Continued { exit_code } = end {
                    self.send_with(
                        "continued",
                        "ended",
                        &message,
                        json!({ "exit_code": exit_code }),
                    );
                }
                self.send("ended", &message);
            }
            _ => {}
        }
    }

    /// Posts what is queued (at most 15 s more), then stops.
    pub async fn finish(mut self) {
        drop(self.queue.take());
        if let Some(task) = self.task.take()
            && tokio::time::timeout(NOTIFY_DRAIN_TIMEOUT, task)
                .await
                .is_err()
        {
            log_line("--notify-url: gave up on events still waiting");
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The hold's state after an event without a more precise one.
fn state_of(event: &str) -> &'static str {
    match event {
        "ready" => "waiting",
        "ended" => "ended",
        _ => "holding",
    }
}
