//! What `rendezvous serve` does on signals: SIGHUP reloads the TLS
//! certificate, the host token file and the key files and reopens the
//! audit file; SIGTERM or Ctrl-C stops (a second one at once).

use std::sync::Arc;

use anyhow::Context;
use rendezvous_server::ServerConfig;
use rendezvous_server::audit::AuditLog;
use rendezvous_server::jwks::{KeyFile, KeySource};
use rendezvous_server::registry::HostTokenFile;
use rendezvous_server::tls::{TlsConfig, TlsError};

/// The public key files of `config` (guest tokens', identity tokens'),
/// each once.
pub(super) fn key_files(config: &ServerConfig) -> Vec<Arc<KeyFile>> {
    let mut files: Vec<Arc<KeyFile>> = Vec::new();
    let token_keys = match &config.token_public_keys {
        Some(KeySource::File(file)) => Some(file),
        _ => None,
    };
    let oidc = config
        .host_admission
        .oidc
        .iter()
        .filter_map(|i| i.key_file());
    for file in token_keys.into_iter().chain(oidc) {
        if !files.iter().any(|f| Arc::ptr_eq(f, file)) {
            files.push(file.clone());
        }
    }
    files
}

/// What SIGHUP reloads.
pub(super) struct Reloadable {
    pub(super) tls: Option<TlsConfig>,
    pub(super) host_tokens: Option<Arc<HostTokenFile>>,
    pub(super) key_files: Vec<Arc<KeyFile>>,
    pub(super) audit: AuditLog,
}

/// Reloads what can be reloaded on each SIGHUP, for as long as the
/// server runs: the TLS certificate files (as [`TlsConfig::reload`] does),
/// the host token file and the public key files; and reopens the audit
/// file. A file that cannot be used is logged, and what was loaded before
/// stays in force. Returns only if the signal stream ends.
pub(super) async fn reload_on_hangup(
    reloadable: Reloadable,
    mut hangups: tokio::signal::unix::Signal,
) {
    let Reloadable {
        tls,
        host_tokens,
        key_files,
        audit,
    } = reloadable;
    while hangups.recv().await.is_some() {
        audit.reopen();
        if let Some(tls) = &tls {
            let reloading = tls.clone();
            // Reading the files blocks: off the runtime's threads.
            match tokio::task::spawn_blocking(move || reloading.reload()).await {
                Ok(Ok(fingerprint)) => tracing::info!(
                    %fingerprint,
                    "SIGHUP: reloaded the TLS certificate; new connections use it"
                ),
                Ok(Err(TlsError::NotFromFiles)) => tracing::info!(
                    "SIGHUP: a self-signed certificate has no files to reload; keeping it"
                ),
                Ok(Err(error)) => tracing::error!(
                    %error,
                    "SIGHUP: cannot reload the TLS certificate; keeping the old one"
                ),
                Err(error) => tracing::error!(%error, "SIGHUP: the reload failed"),
            }
        }
        if let Some(file) = host_tokens.clone() {
            let path = file.path().display().to_string();
            match tokio::task::spawn_blocking(move || file.reload()).await {
                Ok(Ok(count)) => tracing::info!(
                    %path, tokens = count, "SIGHUP: reloaded the host token file"
                ),
                Ok(Err(error)) => tracing::error!(
                    %error,
                    "SIGHUP: cannot reload the host token file; the previous tokens stay in force"
                ),
                Err(error) => tracing::error!(%error, "SIGHUP: the reload failed"),
            }
        }
        for file in &key_files {
            let (path, file) = (file.path().display().to_string(), file.clone());
            match tokio::task::spawn_blocking(move || file.reload()).await {
                Ok(Ok(count)) => {
                    tracing::info!(%path, keys = count, "SIGHUP: reloaded the public key file");
                }
                Ok(Err(error)) => tracing::error!(
                    %error,
                    "SIGHUP: cannot reload the public key file; the previous keys stay in force"
                ),
                Err(error) => tracing::error!(%error, "SIGHUP: the reload failed"),
            }
        }
    }
}

/// The stop signals, SIGTERM or Ctrl-C (SIGINT), as a terminal, systemd
/// and container runtimes send them, handled from now on (not only once
/// awaited): the first future resolves on the first signal (stop
/// gracefully), the second on the second one (stop at once).
///
/// # Errors
/// When the handlers cannot be installed.
pub(super) fn stop_signals() -> anyhow::Result<(
    impl std::future::Future<Output = ()>,
    impl std::future::Future<Output = ()>,
)> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let (count, counted) = tokio::sync::watch::channel(0_u32);
    tokio::spawn(async move {
        loop {
            let got = tokio::select! {
                got = term.recv() => got,
                got = int.recv() => got,
            };
            if got.is_none() {
                return;
            }
            count.send_modify(|n| *n += 1);
        }
    });
    let nth = move |n: u32| {
        let mut counted = counted.clone();
        async move {
            if counted.wait_for(|c| *c >= n).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    Ok((nth(1), nth(2)))
}

/// Ctrl-C or SIGTERM, handled once awaited.
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
