//! Command-line conventions (issue 12, point 6): `sessions --json` and
//! `--quiet` for scripts, shell completions and man pages generated from
//! the command definition, `--version` with the git commit.

use rendezvous_guest::{AttachOptions, Client, Secret, TaskId};
use rendezvous_testkit::{DEADLINE, TestHost, TestServer, temp_dir};
use serde_json::Value;
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_rendezvous");

/// Runs the binary with `args`; its exit code, stdout and stderr.
async fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(
        DEADLINE,
        Command::new(BINARY)
            .args(args)
            .env_remove("RENDEZVOUS_SECRET")
            .output(),
    )
    .await
    .expect("the command ends in time")
    .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8(output.stdout).expect("UTF-8"),
        String::from_utf8(output.stderr).expect("UTF-8"),
    )
}

#[tokio::test]
async fn sessions_prints_one_json_document_or_session_ids_only() {
    let server = TestServer::start().await;
    let host = TestHost::start(&server, "cli-sessions").await;
    let options = AttachOptions::new(
        TaskId::new(host.task_id.as_str()).unwrap(),
        Secret::new(host.secret.as_str()).unwrap(),
    );
    let terminal = tokio::time::timeout(DEADLINE, async {
        Client::connect(&server.url).await?.terminal(options).await
    })
    .await
    .expect("attach in time")
    .expect("attach");
    let session = terminal.attached().session_id.clone();
    let guest = [
        "--server",
        server.url.as_str(),
        "--task-id",
        host.task_id.as_str(),
        "--secret",
        host.secret.as_str(),
    ];

    let (code, out, err) = run(&[&["sessions", "--json"], &guest[..]].concat()).await;
    assert_eq!(code, Some(0), "{err}");
    let doc: Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["task_id"], "cli-sessions");
    let sessions = &doc["hosts"][0]["sessions"];
    assert_eq!(sessions[0]["session_id"], session.as_str(), "{doc:#}");
    assert_eq!(sessions[0]["guests"], 1);
    assert!(
        sessions[0]["started_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let (code, out, err) = run(&[&["sessions", "--quiet"], &guest[..]].concat()).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{session}\n"));

    // The table keeps its header.
    let (code, out, _) = run(&[&["sessions"], &guest[..]].concat()).await;
    assert_eq!(code, Some(0));
    assert!(out.starts_with("SESSION"), "{out}");
    assert!(out.contains(&session));

    // Both at once is a usage error.
    let (code, _, err) = run(&[&["sessions", "--json", "--quiet"], &guest[..]].concat()).await;
    assert_eq!(code, Some(2), "{err}");
    drop(terminal);
}

#[tokio::test]
async fn completions_generate_for_every_shell_and_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = run(&["completions", shell]).await;
        assert_eq!(code, Some(0), "{shell}: {err}");
        for word in ["serve", "attach", "task-id"] {
            assert!(out.contains(word), "{shell}'s completions lack {word}");
        }
    }
    let (code, _, err) = run(&["completions", "nosh"]).await;
    assert_eq!(code, Some(2), "{err}");
}

#[tokio::test]
async fn man_writes_a_page_per_subcommand() {
    let dir = temp_dir("man");
    let out_dir = dir.path().join("man1");
    let (code, out, err) = run(&["man", out_dir.to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "{err}");
    for page in ["rendezvous.1", "rendezvous-serve.1", "rendezvous-attach.1"] {
        let path = out_dir.join(page);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is roff"
        );
        assert!(out.contains(page), "{out}");
    }
    let serve = std::fs::read_to_string(out_dir.join("rendezvous-serve.1")).unwrap();
    assert!(
        serve.contains("drain\\-delay"),
        "the serve page documents its flags"
    );
}

#[tokio::test]
async fn version_names_the_git_commit() {
    let (code, out, _) = run(&["--version"]).await;
    assert_eq!(code, Some(0));
    let line = out.trim();
    let commit = line
        .strip_prefix(concat!(
            "rendezvous ",
            env!("CARGO_PKG_VERSION"),
            " (commit "
        ))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `rendezvous VERSION (commit C)`: {line}"));
    let hash = commit.trim_end_matches("-modified");
    // Tests run in a git checkout: the commit is known.
    assert!(
        hash.len() == 12 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{commit}"
    );
}
