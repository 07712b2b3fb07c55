//! `rendezvous sessions`: print a task's hosts and their sessions, as a
//! table for people, one JSON document (`--json`) or session IDs only
//! (`--quiet`) for scripts.

use rendezvous_guest::Client;
use rendezvous_proto::v1::HostInfo;
use serde_json::{Value, json};

use crate::cli::guest_args::GuestArgs;

/// Arguments of `rendezvous sessions`.
#[derive(Debug, clap::Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// Print one JSON document instead of the table:
    /// {"task_id": ..., "hosts": [{"host", "labels", "connected_at",
    /// "sessions": [{"session_id", "cols", "rows", "guests", "started_at",
    /// "output_bytes"}]}]}; times are RFC 3339 UTC.
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Print only the session IDs, one a line (nothing when there are
    /// none), e.g. for `rendezvous attach --session "$(... | head -1)"`.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `rendezvous sessions`. By default prints a table with a header
/// line and one line per session, session ID first
/// (`SESSION  HOST  SIZE  GUESTS  STARTED  LABELS`); a host with no
/// sessions shows as one line whose SESSION is `-` (see
/// [`rendezvous_guest::listing::format_sessions`]).
pub async fn run(args: SessionsArgs) -> anyhow::Result<()> {
    let client = Client::connect_with(&args.guest.server, &args.guest.tls.options()?).await?;
    let hosts = client
        .list_sessions(&args.guest.task_id, &args.guest.secret)
        .await?;
    if args.json {
        println!("{:#}", to_json(args.guest.task_id.as_str(), &hosts));
    } else if args.quiet {
        print!("{}", session_ids(&hosts));
    } else {
        print!("{}", rendezvous_guest::listing::format_sessions(&hosts));
    }
    Ok(())
}

/// The session IDs of `hosts`, one a line, in the table's order (hosts by
/// name, sessions by start time).
fn session_ids(hosts: &[HostInfo]) -> String {
    let mut out = String::new();
    for host in sorted(hosts) {
        for session in sessions(host) {
            out.push_str(&session.session_id);
            out.push('\n');
        }
    }
    out
}

/// `hosts` as `--json` prints them, in the table's order.
fn to_json(task_id: &str, hosts: &[HostInfo]) -> Value {
    let time = |unix_ms: i64| match rendezvous_guest::listing::format_unix_ms(unix_ms).as_str() {
        "-" => Value::Null,
        t => Value::String(t.to_owned()),
    };
    let hosts: Vec<Value> = sorted(hosts)
        .into_iter()
        .map(|host| {
            let sessions: Vec<Value> = sessions(host)
                .into_iter()
                .map(|s| {
                    json!({
                        "session_id": s.session_id,
                        "cols": s.cols,
                        "rows": s.rows,
                        "guests": s.guest_count,
                        "started_at": time(s.started_at_unix_ms),
                        "output_bytes": s.output_offset,
                    })
                })
                .collect();
            json!({
                "host": host_name(host),
                "labels": host.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
                "connected_at": time(host.connected_at_unix_ms),
                "sessions": sessions,
            })
        })
        .collect();
    json!({ "task_id": task_id, "hosts": hosts })
}

/// The host's name; the wire's empty name is the default host.
fn host_name(host: &HostInfo) -> &str {
    match host.host_name.as_str() {
        "" => rendezvous_proto::ids::DEFAULT_HOST_NAME,
        name => name,
    }
}

fn sorted(hosts: &[HostInfo]) -> Vec<&HostInfo> {
    let mut hosts: Vec<&HostInfo> = hosts.iter().collect();
    hosts.sort_by_key(|h| host_name(h));
    hosts
}

fn sessions(host: &HostInfo) -> Vec<&rendezvous_proto::v1::SessionInfo> {
    let mut sessions: Vec<_> = host.sessions.iter().collect();
    sessions.sort_by(|a, b| {
        (a.started_at_unix_ms, &a.session_id).cmp(&(b.started_at_unix_ms, &b.session_id))
    });
    sessions
}

#[cfg(test)]
mod tests {
    use rendezvous_proto::v1::SessionInfo;

    use super::*;

    fn hosts() -> Vec<HostInfo> {
        let session = |id: &str, started: i64| SessionInfo {
            session_id: id.to_owned(),
            cols: 80,
            rows: 24,
            started_at_unix_ms: started,
            guest_count: 2,
            output_offset: 1234,
        };
        vec![
            HostInfo {
                host_name: "web".to_owned(),
                labels: [("os".to_owned(), "linux".to_owned())].into(),
                connected_at_unix_ms: 1_700_000_000_000,
                sessions: vec![
                    session("s-late", 1_700_000_002_000),
                    session("s-early", 1_700_000_001_000),
                ],
            },
            HostInfo {
                host_name: String::new(),
                labels: Default::default(),
                connected_at_unix_ms: 1_700_000_000_000,
                sessions: vec![],
            },
        ]
    }

    #[test]
    fn quiet_prints_session_ids_only_in_the_tables_order() {
        assert_eq!(session_ids(&hosts()), "s-early\ns-late\n");
        assert_eq!(session_ids(&[]), "");
    }

    #[test]
    fn json_is_one_document_with_hosts_sessions_and_rfc3339_times() {
        let doc = to_json("build-42", &hosts());
        assert_eq!(doc["task_id"], "build-42");
        assert_eq!(doc["hosts"][0]["host"], "default");
        assert_eq!(doc["hosts"][0]["sessions"], json!([]));
        let web = &doc["hosts"][1];
        assert_eq!(web["host"], "web");
        assert_eq!(web["labels"]["os"], "linux");
        assert_eq!(web["connected_at"], "2023-11-14T22:13:20Z");
        assert_eq!(web["sessions"][0]["session_id"], "s-early");
        assert_eq!(web["sessions"][0]["guests"], 2);
        assert_eq!(web["sessions"][0]["cols"], 80);
        assert_eq!(web["sessions"][0]["output_bytes"], 1234);
    }
}
