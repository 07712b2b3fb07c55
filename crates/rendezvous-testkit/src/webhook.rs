//! A webhook receiver on loopback: keeps each JSON body POSTed to it, in
//! order, for `--notify-url` tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::DEADLINE;

/// An HTTP server on `127.0.0.1:0` that answers every POST with 200 and
/// keeps its body as JSON. Stops on drop.
pub struct WebhookServer {
    /// Its address.
    pub addr: SocketAddr,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    count: watch::Receiver<usize>,
    _server: tokio_util::task::AbortOnDropHandle<()>,
}

impl WebhookServer {
    /// Starts one.
    pub async fn start() -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (count_tx, count) = watch::channel(0);
        let state = (bodies.clone(), Arc::new(count_tx));
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (bodies, count) = state.clone();
            async move {
                let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let n = {
                    let mut bodies = bodies.lock().unwrap();
                    bodies.push(value);
                    bodies.len()
                };
                count.send_replace(n);
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            bodies,
            count,
            _server: tokio_util::task::AbortOnDropHandle::new(server),
        }
    }

    /// `http://ADDR/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The bodies received so far.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Waits (at most [`DEADLINE`]) until a body has `"event": event`, and
    /// returns it.
    pub async fn until_event(&mut self, event: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(body) = self.bodies().into_iter().find(|b| b["event"] == event) {
                return body;
            }
            let changed = tokio::time::timeout_at(deadline, self.count.changed()).await;
            assert!(
                matches!(changed, Ok(Ok(()))),
                "no {event:?} event; got {:?}",
                self.bodies()
            );
        }
    }
}
