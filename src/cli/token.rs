//! `rendezvous token`: mint a guest token, as a CI system does to embed a
//! terminal in its own web UI without handing out the task's secret.

use std::path::PathBuf;
use std::time::Duration;

use rendezvous_proto::Role;
use rendezvous_proto::ids::TaskId;
use rendezvous_server::registry::Owner;
use rendezvous_server::token::GuestClaims;

/// Arguments of `rendezvous token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The server's token key file (the one given to `serve --token-key-file`).
    #[arg(long, value_name = "PATH", env = "RENDEZVOUS_TOKEN_KEY_FILE")]
    pub key_file: PathBuf,
    /// The task the token grants access to.
    #[arg(long, value_name = "ID")]
    pub task_id: TaskId,
    /// Who owns the task, as its host was admitted: `token:NAME` for a host
    /// token named NAME in the server's host token file, `open` under open
    /// registration. The host logs it when it registers.
    #[arg(long, value_name = "OWNER", default_value = "open")]
    pub owner: String,
    /// Who the token is for (its `sub` claim), e.g. the person's login.
    #[arg(long, value_name = "NAME")]
    pub subject: Option<String>,
    /// Grant read-only access: the guest may watch sessions, not type.
    #[arg(long)]
    pub read_only: bool,
    /// Reach only the host of this name (its `host` claim): other hosts of
    /// the task refuse the token.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Only join this session ID (its `session` claim): no new shell, no
    /// other session.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// Lifetime in seconds (1 to 604800, i.e. 7 days).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub ttl_secs: u64,
}

/// Prints a guest token for the task to stdout.
pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    let key = crate::cli::serve::read_token_key(&args.key_file)?;
    let role = if args.read_only {
        Role::ReadOnly
    } else {
        Role::ReadWrite
    };
    let mut claims = GuestClaims::new(
        args.task_id.as_str(),
        &Owner::from_claim(&args.owner),
        role,
        Duration::from_secs(args.ttl_secs),
    )?;
    claims.sub = args.subject;
    claims.host = args.host;
    claims.session = args.session;
    let token = key.sign(&claims)?;
    println!("{token}");
    Ok(())
}
