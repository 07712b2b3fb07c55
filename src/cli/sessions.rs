//! `rendezvous sessions`: print a task's hosts and their sessions.

use rendezvous_guest::{Client, Secret, TaskId};

/// Arguments of `rendezvous sessions`.
#[derive(Debug, clap::Args)]
pub struct SessionsArgs {
    /// URL of the rendezvous server (http:// or https://).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The task whose sessions to list.
    #[arg(long, value_name = "ID")]
    task_id: TaskId,
    /// The task's secret (read-write or read-only). Prefer the environment
    /// variable: other users can see command lines.
    #[arg(long, env = "RENDEZVOUS_SECRET", hide_env_values = true)]
    secret: Secret,
}

/// Runs `rendezvous sessions`: prints a table with a header line and one
/// line per session, session ID first
/// (`SESSION  HOST  SIZE  GUESTS  STARTED  LABELS`). A host with no sessions
/// shows as one line whose SESSION is `-`; see
/// [`rendezvous_guest::listing::format_sessions`].
pub async fn run(args: SessionsArgs) -> anyhow::Result<()> {
    let client = Client::connect(&args.server).await?;
    let hosts = client.list_sessions(&args.task_id, &args.secret).await?;
    print!("{}", rendezvous_guest::listing::format_sessions(&hosts));
    Ok(())
}
