//! One module per subcommand: its clap arguments and its `run`.

pub mod attach;
pub mod bench;
pub mod ci;
pub mod config;
pub mod control;
pub mod demo;
pub mod detach;
pub mod docs;
pub mod guest_args;
pub mod host;
pub mod progress;
pub mod publish;
pub mod run;
pub mod serve;
pub mod sessions;
pub mod tls_args;
pub mod token;

/// The git commit this binary was built from, 12 hex digits
/// (`-modified` when the work tree had changes; `unknown` outside git):
/// in `--version` and the server's `rendezvous_build_info`.
pub const GIT_COMMIT: &str = git_version::git_version!(
    args = [
        "--always",
        "--dirty=-modified",
        "--abbrev=12",
        "--exclude",
        "*"
    ],
    fallback = "unknown"
);

/// How log lines are written: the server's log (`--log-format`, default
/// text) and the audit file (`serve --audit-log-format`, default json).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people: time, level, target, message, then the fields
    /// as key=value (the audit file: logfmt).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message, and
    /// the fields where they apply (task, host, session, guest,
    /// client_ip, ...), for log stacks (Loki, Elasticsearch, CloudWatch).
    Json,
}

/// Raises the soft limit on open files to the hard limit, as servers do
/// (Go programs do it at start): a server holds a socket per host and per
/// guest, and the bench as many of its own; the soft limit is often 1024.
pub fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-files limit");
    }
}
