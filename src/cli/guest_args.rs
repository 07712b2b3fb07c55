//! The arguments every guest command shares: which server (and how to
//! trust it), which task, and the task's secret.

use rendezvous_guest::{Secret, TaskId};

/// `--server` (with `--ca-cert`, `--server-fingerprint`), `--task-id` and
/// `--secret`, flattened into `attach` and `sessions`.
#[derive(Debug, clap::Args)]
pub struct GuestArgs {
    /// URL of the rendezvous server (http:// or https://).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    #[command(flatten)]
    pub tls: crate::cli::tls_args::TlsArgs,
    /// The task: 1-128 characters of A-Z a-z 0-9 . _ : -
    #[arg(long, value_name = "ID")]
    pub task_id: TaskId,
    /// The task's secret (read-write or read-only). Prefer the environment
    /// variable: other users can see command lines.
    #[arg(long, env = "RENDEZVOUS_SECRET", hide_env_values = true)]
    pub secret: Secret,
}
