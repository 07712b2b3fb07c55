//! `rendezvous sessions`: print a task's hosts and their sessions.

use rendezvous_guest::Client;

use crate::cli::guest_args::GuestArgs;

/// Arguments of `rendezvous sessions`.
#[derive(Debug, clap::Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    guest: GuestArgs,
}

/// Runs `rendezvous sessions`: prints a table with a header line and one
/// line per session, session ID first
/// (`SESSION  HOST  SIZE  GUESTS  STARTED  LABELS`). A host with no sessions
/// shows as one line whose SESSION is `-`; see
/// [`rendezvous_guest::listing::format_sessions`].
pub async fn run(args: SessionsArgs) -> anyhow::Result<()> {
    let client = Client::connect_with(&args.guest.server, &args.guest.tls.options()?).await?;
    let hosts = client
        .list_sessions(&args.guest.task_id, &args.guest.secret)
        .await?;
    print!("{}", rendezvous_guest::listing::format_sessions(&hosts));
    Ok(())
}
