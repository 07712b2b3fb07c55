//! A TCP proxy between clients and a test server that can hold and cut
//! connections, to test what survives a broken network.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP proxy on 127.0.0.1:0 in front of a server. `mute` holds every
/// byte from then on (in both directions) without closing anything; `cut`
/// closes every connection open now, dropping what was held. New
/// connections are let through as usual.
pub struct CutProxy {
    pub url: String,
    muted: Arc<watch::Sender<bool>>,
    cuts: Arc<watch::Sender<u64>>,
    task: JoinHandle<()>,
}

impl CutProxy {
    pub async fn start(server_url: &str) -> Self {
        let upstream = server_url.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let muted = Arc::new(watch::Sender::new(false));
        let cuts = Arc::new(watch::Sender::new(0u64));
        let (m, c) = (muted.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (muted, mut cut) = (m.subscribe(), c.subscribe());
                let generation = *cut.borrow_and_update();
                tokio::spawn(async move {
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        _ = pump(ri, wo, muted.clone()) => {}
                        _ = pump(ro, wi, muted) => {}
                        _ = cut.wait_for(|g| *g != generation) => {}
                    }
                });
            }
        });
        Self {
            url,
            muted,
            cuts,
            task,
        }
    }

    pub fn mute(&self) {
        self.muted.send_replace(true);
    }

    pub fn cut(&self) {
        self.muted.send_replace(false);
        self.cuts.send_modify(|g| *g += 1);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Copies `from` to `to`; bytes read while muted wait until unmuted.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut muted: watch::Receiver<bool>,
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if muted.wait_for(|m| !*m).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
