//! `rendezvous serve`: the rendezvous server.

use std::net::SocketAddr;

use anyhow::Context;
use rendezvous_server::session::RelayConfig;
use rendezvous_server::{Limits, Server, ServerConfig};

/// Arguments of `rendezvous serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on for gRPC, gRPC-Web and HTTP (one port).
    #[arg(long, default_value = "127.0.0.1:8080", env = "RENDEZVOUS_LISTEN")]
    pub listen: SocketAddr,
    /// Bytes of output each session keeps for late joiners and resuming
    /// guests.
    #[arg(long, default_value_t = rendezvous_server::session::RETAINED_OUTPUT_BYTES)]
    pub retained_output_bytes: usize,
    /// Hosts one task may connect at once.
    #[arg(long, default_value_t = Limits::default().hosts_per_task)]
    pub max_hosts_per_task: usize,
    /// Sessions one host may have open at once.
    #[arg(long, default_value_t = Limits::default().sessions_per_host)]
    pub max_sessions_per_host: usize,
    /// Guests one session may have attached at once.
    #[arg(long, default_value_t = Limits::default().guests_per_session)]
    pub max_guests_per_session: usize,
    /// Bytes one input call may carry.
    #[arg(long, default_value_t = Limits::default().input_bytes)]
    pub max_input_bytes: usize,
    /// TCP connections served at once; requests on more get
    /// RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = Limits::default().connections)]
    pub max_connections: usize,
}

impl ServeArgs {
    /// The server configuration these flags describe.
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            relay: RelayConfig {
                retained_output_bytes: self.retained_output_bytes,
                ..RelayConfig::default()
            },
            limits: Limits {
                hosts_per_task: self.max_hosts_per_task,
                sessions_per_host: self.max_sessions_per_host,
                guests_per_session: self.max_guests_per_session,
                input_bytes: self.max_input_bytes,
                connections: self.max_connections,
            },
        }
    }
}

/// Runs `rendezvous serve` until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let server = Server::bind(args.listen, args.config())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = server.local_addr()?;
    println!("rendezvous: listening on http://{addr}");
    server.run(shutdown_signal()).await?;
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, the signals a terminal, systemd
/// and container runtimes send.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
