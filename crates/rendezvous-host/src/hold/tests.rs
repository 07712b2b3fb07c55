//! The hold against a guest list the test drives, on tokio's paused
//! clock (timers fire when every task waits), and its control socket on a
//! real Unix socket.

use std::time::Duration;

use rendezvous_proto::{GuestAttached, GuestDetached, Role};
use tokio::sync::{mpsc, watch};

use super::*;
use crate::guests::GuestsTx;

const S: Duration = Duration::from_secs(1);

fn guests() -> GuestsTx {
    GuestsTx(watch::Sender::new(Guests::default()))
}

fn attached(id: &str) -> GuestAttached {
    GuestAttached {
        guest_id: id.into(),
        session_id: "s1".into(),
        role: Role::ReadWrite.into(),
        sub: "alice".into(),
        resumed: false,
    }
}

fn detached(id: &str) -> GuestDetached {
    GuestDetached {
        guest_id: id.into(),
        session_id: "s1".into(),
    }
}

/// Runs `hold` in a task; its events come on the returned channel.
fn spawn(
    hold: Hold,
) -> (
    tokio::task::JoinHandle<HoldEnd>,
    mpsc::UnboundedReceiver<HoldEvent>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(hold.run(move |e| {
        let _ = tx.send(e.clone());
    }));
    (task, rx)
}

#[tokio::test(start_paused = true)]
async fn nobody_attaching_ends_the_hold_at_wait_for_guest() {
    let tx = guests();
    let options = HoldOptions {
        wait_for_guest: Some(30 * S),
        ..HoldOptions::default()
    };
    let started = tokio::time::Instant::now();
    let (task, mut events) = spawn(Hold::new(tx.0.subscribe(), options));
    let end = task.await.unwrap();
    assert_eq!(end, HoldEnd::TimedOut(Timeout::WaitForGuest(30 * S)));
    assert_eq!(started.elapsed(), 30 * S);
    assert_eq!(
        events.recv().await,
        Some(HoldEvent::Waiting { for_: Some(30 * S) })
    );
    assert_eq!(events.recv().await, Some(HoldEvent::Ended(end)));
}

#[tokio::test(start_paused = true)]
async fn a_guest_holds_the_job_and_the_linger_ends_it_after_they_leave() {
    let tx = guests();
    let options = HoldOptions {
        wait_for_guest: Some(5 * S),
        linger: Some(10 * S),
        ..HoldOptions::default()
    };
    let (task, mut events) = spawn(Hold::new(tx.0.subscribe(), options));
    assert!(matches!(
        events.recv().await,
        Some(HoldEvent::Waiting { .. })
    ));
    tx.attached(attached("g1"));
    assert!(matches!(
        events.recv().await,
        Some(HoldEvent::GuestAttached(g)) if g.sub.as_deref() == Some("alice")
    ));
    // Far past --wait-for-guest: the attached guest holds.
    tokio::time::sleep(3600 * S).await;
    assert!(!task.is_finished());
    let left = tokio::time::Instant::now();
    tx.detached(&detached("g1"));
    assert!(matches!(
        events.recv().await,
        Some(HoldEvent::GuestDetached { remaining: 0, .. })
    ));
    assert_eq!(
        events.recv().await,
        Some(HoldEvent::Lingering { for_: 10 * S })
    );
    assert_eq!(
        task.await.unwrap(),
        HoldEnd::TimedOut(Timeout::Linger(10 * S))
    );
    assert_eq!(left.elapsed(), 10 * S);
}

#[tokio::test(start_paused = true)]
async fn continue_ends_the_hold_with_its_exit_code_and_extend_pushes_the_end() {
    let tx = guests();
    let options = HoldOptions {
        wait_for_guest: Some(5 * S),
        ..HoldOptions::default()
    };
    let hold = Hold::new(tx.0.subscribe(), options);
    let handle = hold.handle();
    let (task, _events) = spawn(hold);
    let status = handle.extend(60 * S).await.unwrap();
    assert_eq!(status.remaining, Some(60 * S));
    tokio::time::sleep(30 * S).await;
    assert!(!task.is_finished(), "extend holds past --wait-for-guest");
    handle.continue_job(Some(0)).await.unwrap();
    let end = task.await.unwrap();
    assert_eq!(end.exit_code(), Some(0));
    assert!(matches!(handle.status().await, Err(HoldError::Ended)));
}

#[tokio::test(start_paused = true)]
async fn a_parked_hold_applies_no_rule_until_started_and_continue_ends_it_early() {
    let tx = guests();
    let hold = Hold::parked(tx.0.subscribe());
    let handle = hold.handle();
    let (task, _events) = spawn(hold);
    tokio::time::sleep(7200 * S).await;
    assert!(!handle.status().await.unwrap().holding);
    handle
        .start(HoldOptions {
            wait_for_guest: Some(S),
            ..HoldOptions::default()
        })
        .await
        .unwrap();
    assert!(matches!(
        handle.start(HoldOptions::default()).await,
        Err(HoldError::AlreadyHolding)
    ));
    assert_eq!(
        task.await.unwrap(),
        HoldEnd::TimedOut(Timeout::WaitForGuest(S))
    );

    let hold = Hold::parked(tx.0.subscribe());
    let handle = hold.handle();
    let (task, _events) = spawn(hold);
    handle.continue_job(Some(4)).await.unwrap();
    tokio::time::sleep(3600 * S).await;
    assert!(!task.is_finished(), "a continue waits for the start");
    handle.start(HoldOptions::default()).await.unwrap();
    assert_eq!(
        task.await.unwrap(),
        HoldEnd::Continued { exit_code: Some(4) }
    );
}

#[tokio::test(start_paused = true)]
async fn a_stopped_host_ends_the_hold() {
    let tx = guests();
    let (task, _events) = spawn(Hold::new(tx.0.subscribe(), HoldOptions::default()));
    drop(tx);
    assert_eq!(task.await.unwrap(), HoldEnd::HostStopped);
}

#[tokio::test]
async fn the_control_socket_is_private_and_carries_continue_extend_and_wait() {
    let tx = guests();
    let hold = Hold::parked(tx.0.subscribe());
    let handle = hold.handle();
    let socket = ControlSocket::bind_private().unwrap();
    let path = socket.path().to_owned();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
    let serving = tokio::spawn(async move { socket.serve(handle).await });
    let (task, _events) = spawn(hold);
    let status = request(&path, &ControlRequest::Status).await.unwrap();
    assert!(!status.holding);
    let options = HoldOptions {
        wait_for_guest: Some(3600 * S),
        ..HoldOptions::default()
    };
    let waiter = tokio::spawn({
        let path = path.clone();
        async move {
            let mut lines = Vec::new();
            let end = wait(&path, options, |l| lines.push(l.to_owned())).await;
            (end, lines)
        }
    });
    // Extend answers once the wait has started the hold.
    let deadline = tokio::time::Instant::now() + rendezvous_testkit::DEADLINE;
    loop {
        let status = request(&path, &ControlRequest::Extend { by: 7200 * S })
            .await
            .unwrap();
        if status.holding {
            assert!(status.remaining.unwrap() > 3600 * S);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hold never started"
        );
        tokio::task::yield_now().await;
    }
    request(&path, &ControlRequest::Continue { exit_code: Some(3) })
        .await
        .unwrap();
    let (end, lines) = waiter.await.unwrap();
    assert_eq!(end.unwrap(), HoldEnd::Continued { exit_code: Some(3) });
    assert!(
        lines.iter().any(|l| l.starts_with("waiting for a guest")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("extended")), "{lines:?}");
    assert_eq!(task.await.unwrap().exit_code(), Some(3));
    let refused = request(&path, &ControlRequest::Status).await.unwrap_err();
    assert!(refused.to_string().contains("ended"), "{refused}");
    serving.abort();
    let _ = serving.await;
    assert!(!path.exists(), "the socket goes with its server");
}
