//! `rendezvous demo`: a server and a host on loopback, for a first try.

use std::net::SocketAddr;

use anyhow::Context;
use rendezvous_server::{Server, ServerConfig};

/// Arguments of `rendezvous demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Loopback address for the demo server. If the port is taken, a free
    /// port is used instead.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A web origin besides the demo server's own that may embed the
    /// terminal (see `rendezvous serve --allowed-origin`). Repeatable.
    #[arg(long = "allowed-origin", value_name = "ORIGIN", value_parser = crate::cli::serve::parse_origin)]
    pub allowed_origins: Vec<http::HeaderValue>,
    /// Command the host runs for each new shell (default: $SHELL, else your login shell, else /bin/sh).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Runs `rendezvous demo` until Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        // The demo registers hosts without a credential.
        anyhow::bail!(
            "the demo listens on loopback only (got {}): for a server others can reach, run \
             `rendezvous serve` (see \"Run it on the Internet\" in the README)",
            args.listen
        );
    }
    let config = ServerConfig {
        allowed_origins: args.allowed_origins.clone(),
        ..ServerConfig::default()
    };
    let server = match Server::bind(args.listen, config.clone()).await {
        Ok(server) => server,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let any_port = SocketAddr::new(args.listen.ip(), 0);
            eprintln!("rendezvous: {} is in use; using a free port", args.listen);
            Server::bind(any_port, config)
                .await
                .with_context(|| format!("cannot listen on {any_port}"))?
        }
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {}", args.listen)),
    };
    let server = server.spawn()?;
    let url = server.url();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let mut builder = rendezvous_host::Host::builder(&url).task_id("demo");
    if let Some((program, rest)) = args.command.split_first() {
        builder = builder.command(program, rest);
    }
    let host = builder.build()?;
    let guest_url = host.guest_url();
    let mut status = host.status();
    let mut stop_host = stop_rx;
    let host_task = tokio::spawn(host.run(async move {
        let _ = stop_host.wait_for(|stop| *stop).await;
    }));
    // Print the URL once the host is registered, so it works when opened.
    status
        .wait_for(|s| matches!(s, rendezvous_host::HostStatus::Registered { .. }))
        .await
        .context("the demo host stopped before it registered")?;
    println!("Open {guest_url}");
    println!(
        "(or in a terminal: rendezvous attach --server {url} --task-id demo --secret {})",
        secret_of(&guest_url)
    );
    println!("Press Ctrl-C to stop.");

    crate::cli::serve::shutdown_signal().await;
    let _ = stop_tx.send(true);
    host_task.await??;
    server.stop().await?;
    Ok(())
}

fn secret_of(guest_url: &str) -> &str {
    guest_url.rsplit_once("#secret=").map_or("", |(_, s)| s)
}
