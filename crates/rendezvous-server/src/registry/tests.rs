//! The registry's rules, without a socket.

use rendezvous_proto::{OpenSession, Role, host_control_response};

use std::time::Instant;

use super::*;
use crate::auth::Digest;
use crate::config::{HOSTLESS_TASK_GRACE, MAX_HOSTLESS_TASKS, MAX_OWNERS_PER_TASK_ID, limit_name};
use crate::session::NewGuest;

pub(super) fn task(id: &str) -> TaskId {
    TaskId::new(id).unwrap()
}

fn hello(task_id: &str) -> rendezvous_proto::Hello {
    rendezvous_proto::Hello {
        task_id: task_id.into(),
        secret: "a-secret-of-at-least-22-chars".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn hostless_tasks_are_bounded_and_the_oldest_goes_first() {
    let registry = Registry::new(ServerConfig::default());
    for i in 0..MAX_HOSTLESS_TASKS + 3 {
        let registration = registry
            .register_host(Owner::open(), None, &hello(&format!("t{i}")))
            .await
            .unwrap();
        registry.unregister_host(&registration.host);
    }
    let secret = "a-secret-of-at-least-22-chars";
    assert_eq!(registry.store.len(), MAX_HOSTLESS_TASKS);
    for gone in ["t0", "t1", "t2"] {
        assert_eq!(
            registry
                .authenticate(&task(gone), secret)
                .await
                .unwrap_err(),
            RegistryError::Denied
        );
    }
    let Authenticated { role, hosts, .. } =
        registry.authenticate(&task("t3"), secret).await.unwrap();
    assert_eq!(role, Role::ReadWrite);
    assert!(hosts.is_empty());
}

#[tokio::test]
async fn a_host_that_returns_keeps_its_task_past_the_grace_period() {
    let store = Arc::new(MemoryTaskStore::new());
    let registry = Registry::with_store(ServerConfig::default(), store.clone());
    let first = registry
        .register_host(Owner::open(), None, &hello("t"))
        .await
        .unwrap();
    registry.unregister_host(&first.host);
    let _second = registry
        .register_host(Owner::open(), None, &hello("t"))
        .await
        .unwrap();
    // The stale hostless entry (from the first host) is pruned later
    // without removing the task, which has a host again.
    let stale_at = Instant::now() + HOSTLESS_TASK_GRACE;
    assert_eq!(store.prune_at(stale_at), 0);
    let Authenticated { hosts, .. } = registry
        .authenticate(&task("t"), "a-secret-of-at-least-22-chars")
        .await
        .unwrap();
    assert_eq!(hosts.len(), 1);
}

#[tokio::test]
async fn a_guest_is_told_its_session_ended_before_and_after_its_stream_closes() {
    let registry = Arc::new(Registry::new(ServerConfig::default()));
    let registration = registry
        .register_host(Owner::open(), None, &hello("t"))
        .await
        .unwrap();
    let host = registration.host;
    let session = registry.open_session(&host, 80, 24).await.unwrap();
    let new = NewGuest {
        role: Role::ReadWrite,
        cols: 80,
        rows: 24,
        resume_offset: None,
        resume_guest: None,
        signed_resume: None,
        max_guests: usize::MAX,
    };
    let JoinedGuest { handle, token, .. } = registry.add_guest(&host, &session, new, None).unwrap();
    let id = handle.id().to_owned();
    assert!(registry.guest(&id, &token).is_ok());

    host.end_session(&session, gone("done"));
    // The stream is still open (it has output or the Exit to send).
    assert_eq!(
        registry.guest(&id, &token).unwrap_err(),
        RegistryError::SessionEnded
    );
    drop(handle);
    assert_eq!(
        registry.guest(&id, &token).unwrap_err(),
        RegistryError::SessionEnded
    );
    assert_eq!(
        registry.guest(&id, "another token").unwrap_err(),
        RegistryError::BadGuest
    );
    assert_eq!(registry.connected().guests, 0);
}

#[tokio::test]
async fn a_secret_is_measured_in_characters_as_the_host_measures_it() {
    let registry = Registry::new(ServerConfig::default());
    // 22 bytes, but 11 characters: too short on both sides.
    let short = rendezvous_proto::Hello {
        secret: "é".repeat(11),
        ..hello("t")
    };
    assert!(matches!(
        registry.register_host(Owner::open(), None, &short).await,
        Err(RegistryError::Invalid(_))
    ));
    let long = rendezvous_proto::Hello {
        secret: "éèêëàâäôöûü".repeat(2),
        ..hello("t")
    };
    assert!(
        registry
            .register_host(Owner::open(), None, &long)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn labels_over_a_bound_are_refused_naming_it() {
    let registry = Registry::new(ServerConfig::default());
    let mut many = hello("t");
    many.labels = (0..=MAX_LABELS)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let Err(RegistryError::Invalid(message)) =
        registry.register_host(Owner::open(), None, &many).await
    else {
        panic!("too many labels were accepted");
    };
    assert!(message.contains("33 labels"), "{message}");
    let mut long = hello("t");
    long.labels = [("k".to_owned(), "v".repeat(MAX_LABEL_BYTES + 1))].into();
    let Err(RegistryError::Invalid(message)) =
        registry.register_host(Owner::open(), None, &long).await
    else {
        panic!("a long label was accepted");
    };
    assert!(message.contains("257 bytes"), "{message}");
}

/// A record whose read-write secret is `secret`, without a read-only one.
pub(super) fn record(secret: &str) -> TaskRecord {
    TaskRecord {
        secret: Digest::of(secret),
        read_only_secret: None,
    }
}

/// What every [`TaskStore`] must do; a shared store runs the same checks
/// (`redis_store::tests`). Names are taken with host IDs `h1`, `h2`, ….
pub(super) async fn task_store_contract(store: &dyn TaskStore) {
    let (id, linux, mac) = (
        task("contract"),
        HostName::or_default("linux").unwrap(),
        HostName::or_default("mac").unwrap(),
    );
    let (acme, mallory) = (Owner::token("acme"), Owner::token("mallory"));
    let (first, other) = (record("first-secret"), record("other-secret"));
    let secret_of = async |owner: &Owner| {
        let record = store.task(owner, &id).await.unwrap().expect("the task");
        if record.secret.matches("first-secret") {
            "first"
        } else if record.secret.matches("other-secret") {
            "other"
        } else {
            "unknown"
        }
    };
    assert!(store.task(&acme, &id).await.unwrap().is_none());
    store
        .add_host(&acme, &id, &linux, "h1", &first, 2)
        .await
        .unwrap();
    assert_eq!(secret_of(&acme).await, "first");
    // A task with a host keeps its record and its names.
    assert_eq!(
        store.add_host(&acme, &id, &mac, "h2", &other, 2).await,
        Err(RegistryError::Denied)
    );
    assert_eq!(
        store.add_host(&acme, &id, &linux, "h3", &first, 2).await,
        Err(RegistryError::HostNameTaken("linux".into()))
    );
    // A resuming host takes over only its own name, with the task's record.
    assert_eq!(
        store
            .take_over_host(&acme, &id, &linux, "h3", &first, 2)
            .await,
        Err(RegistryError::HostNameTaken("linux".into()))
    );
    assert_eq!(
        store
            .take_over_host(&acme, &id, &linux, "h1", &other, 2)
            .await,
        Err(RegistryError::Denied)
    );
    store
        .take_over_host(&acme, &id, &linux, "h1", &first, 2)
        .await
        .unwrap();
    store
        .add_host(&acme, &id, &mac, "h2", &first, 2)
        .await
        .unwrap();
    let third = HostName::or_default("windows").unwrap();
    assert!(matches!(
        store.add_host(&acme, &id, &third, "h4", &first, 2).await,
        Err(RegistryError::Limit { value: 2, .. })
    ));
    // Another owner gets a task of its own under the same ID, and the
    // first one's record is untouched.
    store
        .add_host(&mallory, &id, &linux, "h5", &other, 2)
        .await
        .unwrap();
    assert_eq!(secret_of(&mallory).await, "other");
    assert_eq!(secret_of(&acme).await, "first");
    assert_eq!(store.tasks_with_id(&id).await.unwrap().len(), 2);
    // A name is removed only by the host that holds it.
    store.remove_host(&acme, &id, &linux, "h3");
    assert_eq!(
        store.add_host(&acme, &id, &linux, "h6", &first, 2).await,
        Err(RegistryError::HostNameTaken("linux".into()))
    );
    // Hostless, it is still there for its guests; only the same owner's
    // new secrets take it, another owner's never do.
    store.remove_host(&acme, &id, &linux, "h1");
    store.remove_host(&acme, &id, &mac, "h2");
    store.remove_host(&acme, &id, &mac, "h2");
    assert_eq!(secret_of(&acme).await, "first");
    store
        .add_host(&mallory, &id, &mac, "h7", &other, 2)
        .await
        .unwrap();
    assert_eq!(secret_of(&acme).await, "first");
    assert_eq!(store.len(), 2);
    store
        .add_host(&acme, &id, &linux, "h8", &other, 2)
        .await
        .unwrap();
    assert_eq!(secret_of(&acme).await, "other");
}

#[tokio::test]
async fn the_memory_task_store_keeps_the_task_store_contract() {
    task_store_contract(&MemoryTaskStore::new()).await;
}

#[tokio::test]
async fn owners_of_one_task_id_are_bounded() {
    let store = MemoryTaskStore::new();
    let (id, name) = (task("popular"), HostName::or_default("h").unwrap());
    for i in 0..MAX_OWNERS_PER_TASK_ID {
        let owner = Owner::token(&format!("o{i}"));
        store
            .add_host(&owner, &id, &name, "h", &record("s"), 1)
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .add_host(&Owner::token("late"), &id, &name, "h", &record("s"), 1)
            .await,
        Err(RegistryError::Limit {
            name: limit_name::OWNERS_PER_TASK_ID,
            ..
        })
    ));
}

fn token_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rendezvous-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn host_token_files_name_their_tokens_and_refuse_bad_lines() {
    let path = token_file(
        "good",
        "# comment\n\n  ci-runners  token-one-0123456789abcdef  \ntoken-two-0123456789abcdef\nci-runners token-three-0123456789abcdef\n",
    );
    let file = HostTokenFile::load(&path).unwrap();
    let admission = HostAdmission {
        tokens: Some(Arc::new(file)),
        open: true,
        oidc: Vec::new(),
    };
    assert!(!admission.is_open());
    let admit = async |t| admission.admit(Some(t)).await.map(|o| o.to_string());
    assert_eq!(
        admit("token-one-0123456789abcdef").await.unwrap(),
        "token:ci-runners"
    );
    // Two tokens of one name (rotation) admit the same owner.
    assert_eq!(
        admit("token-three-0123456789abcdef").await.unwrap(),
        "token:ci-runners"
    );
    let bare = admit("token-two-0123456789abcdef").await.unwrap();
    let hex = Digest::of("token-two-0123456789abcdef").short_hex();
    assert_eq!(bare, format!("token:{hex}"));
    assert!(matches!(
        admission.admit(Some("token-four-0123456789abcdef")).await,
        Err(RegistryError::HostNotAdmitted(_))
    ));
    assert!(matches!(
        admission.admit(None).await,
        Err(RegistryError::HostNotAdmitted(_))
    ));
    for (name, text, fragment) in [
        ("weak", "ci aaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", "distinct"),
        ("short", "ci abc123\n", "at least 22"),
        (
            "three",
            "ci token-one-0123456789abcdef extra\n",
            "NAME TOKEN",
        ),
        ("name", "c/i token-one-0123456789abcdef\n", "[A-Za-z0-9._-]"),
        ("empty", "# nothing\n", "no host token"),
    ] {
        let error = HostTokenFile::load(&token_file(name, text))
            .unwrap_err()
            .to_string();
        assert!(error.contains(fragment), "{name}: {error}");
        assert!(
            !error.contains("aaaaaaaa") && !error.contains("abc123"),
            "{error}"
        );
    }
    assert!(
        HostTokenFile::load(std::path::Path::new("/nonexistent/tokens"))
            .unwrap_err()
            .to_string()
            .contains("cannot read the host token file")
    );
}

#[tokio::test]
async fn closed_registration_admits_nobody() {
    let closed = HostAdmission {
        tokens: None,
        open: false,
        oidc: Vec::new(),
    };
    assert!(matches!(
        closed.admit(Some("anything-at-all-0123456789")).await,
        Err(RegistryError::HostNotAdmitted(_))
    ));
    assert_eq!(
        HostAdmission::default().admit(None).await.unwrap(),
        Owner::open()
    );
}

/// A host resuming on a server that lost it (a restart: a new registry
/// with the same state key) names its sessions with their tickets. One
/// that claims more input taken than any host can have (past
/// `MAX_RESUME_OFFSET`, where numbering on from it would overflow) is not
/// restored: the host is asked to close it, and the others are restored.
#[tokio::test]
async fn a_restored_session_claiming_input_past_the_bound_is_closed_on_the_host() {
    let config = ServerConfig::default();
    let first = Registry::new(config.clone());
    let mut registration = first
        .register_host(Owner::open(), None, &hello("t"))
        .await
        .unwrap();
    let mut tickets = Vec::new();
    for _ in 0..2 {
        let session = first
            .open_session(&registration.host, 80, 24)
            .await
            .unwrap();
        let Some(host_control_response::Message::OpenSession(open)) =
            registration.control.recv().await.unwrap().message
        else {
            panic!("the host is asked to open the session");
        };
        assert_eq!(open.session_id, session.id());
        tickets.push(open);
    }
    let resume = |open: &OpenSession, input_applied| rendezvous_proto::ResumeSession {
        session_id: open.session_id.clone(),
        ticket: open.ticket.clone(),
        cols: 80,
        rows: 24,
        input_applied,
        ..Default::default()
    };
    let restarted = Registry::new(config);
    let mut back = restarted
        .register_host(
            Owner::open(),
            None,
            &rendezvous_proto::Hello {
                resume_ticket: registration.resume_ticket.clone(),
                resume_host_id: registration.host.id().to_owned(),
                sessions: vec![
                    resume(&tickets[0], MAX_RESUME_OFFSET + 1),
                    resume(&tickets[1], MAX_RESUME_OFFSET),
                ],
                ..hello("t")
            },
        )
        .await
        .unwrap();
    assert!(back.resumed, "the host is restored");
    let ids: Vec<String> = back
        .host
        .sessions()
        .iter()
        .map(|s| s.id().to_owned())
        .collect();
    assert_eq!(ids, [tickets[1].session_id.clone()]);
    let Some(host_control_response::Message::CloseSession(close)) =
        back.control.try_recv().unwrap().message
    else {
        panic!("the host is asked to close the session that was not restored");
    };
    assert_eq!(close.session_id, tickets[0].session_id);
}
