//! A TCP proxy between clients and a test server that can hold and cut
//! connections, to test what survives a broken network.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What every connection of the proxy obeys.
#[derive(Debug, Clone, Copy, Default)]
struct Rule {
    /// Connections accepted before the latest cut have an older number:
    /// they close.
    generation: u64,
    /// Connections of this generation hold every byte they read.
    muted: bool,
}

/// A TCP proxy on 127.0.0.1:0 in front of a server. `mute` holds every
/// byte from then on (in both directions) without closing anything; `cut`
/// closes every connection open now, dropping what was held. Connections
/// made after a cut are let through.
pub struct CutProxy {
    /// `http://ADDR` of the proxy: give it to clients instead of the
    /// server's.
    pub url: String,
    rule: watch::Sender<Rule>,
    task: JoinHandle<()>,
}

impl CutProxy {
    /// A proxy on a free loopback port in front of `server_url`.
    pub async fn start(server_url: &str) -> Self {
        let upstream = server_url.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let rule = watch::Sender::new(Rule::default());
        let rules = rule.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let rule = rules.subscribe();
                let generation = rule.borrow().generation;
                tokio::spawn(async move {
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        () = pump(ri, wo, rule.clone(), generation) => {}
                        () = pump(ro, wi, rule, generation) => {}
                    }
                });
            }
        });
        Self { url, rule, task }
    }

    /// Holds every byte of every connection from now on.
    pub fn mute(&self) {
        self.rule.send_modify(|r| r.muted = true);
    }

    /// Closes every connection open now; later ones go through.
    pub fn cut(&self) {
        self.rule.send_modify(|r| {
            r.generation += 1;
            r.muted = false;
        });
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Copies `from` to `to` while the connection's `generation` is current;
/// bytes read while muted wait, and are dropped if a cut comes first.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut rule: watch::Receiver<Rule>,
    generation: u64,
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = cut(&mut rule, generation) => return,
        };
        let current = rule
            .wait_for(|r| r.generation != generation || !r.muted)
            .await
            .is_ok_and(|r| r.generation == generation);
        if !current {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Returns once a cut has closed connections of `generation`.
async fn cut(rule: &mut watch::Receiver<Rule>, generation: u64) {
    let _ = rule.wait_for(|r| r.generation != generation).await;
}
