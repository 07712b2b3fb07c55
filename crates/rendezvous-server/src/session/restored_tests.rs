//! Tests of sessions a host restored on a server that lost them (a
//! restart, another replica), and of guests resuming on them with a signed
//! token: offsets ahead of the refill, and where their input goes on.

use super::tests::{host_rx, output, rw};
use super::*;
use futures::FutureExt;

#[test]
fn a_guest_resuming_a_restored_session_ahead_of_its_refill_waits_at_its_own_offset() {
    // Restored at 1000..=1500: the host holds up to 1500, none sent yet.
    let s = Session::restored(
        RelayConfig::default(),
        &ResumeSession {
            session_id: "s".into(),
            cols: 80,
            rows: 24,
            start_offset: 1000,
            end_offset: 1500,
            ..ResumeSession::default()
        },
    );
    // It had everything before 1200: it starts there, not at the end so
    // far (1000), which would give it bytes again.
    assert_eq!(
        s.add_guest("back".into(), Role::ReadWrite, 80, 24, Some(1200)),
        1200
    );
    // Past what the host holds is taken as that end.
    assert_eq!(
        s.add_guest("ahead".into(), Role::ReadWrite, 80, 24, Some(9999)),
        1500
    );
    // A late joiner starts at the oldest byte.
    assert_eq!(
        s.add_guest("late".into(), Role::ReadOnly, 80, 24, None),
        1000
    );
    assert_eq!(s.read("back", 1200), Read::Nothing);
    // The host refills: the resumed guest gets exactly what follows 1200.
    let refill: Vec<u8> = (0..500u32).map(|i| (i % 251) as u8).collect();
    s.push_output(&refill);
    let (offset, data) = output(s.read("back", 1200));
    assert_eq!(offset, 1200);
    assert_eq!(&data[..], &refill[200..]);
    let (offset, data) = output(s.read("late", 1000));
    assert_eq!((offset, data.len()), (1000, 500));
    // The host is not held back by a guest ahead of the end.
    assert!(s.wait_for_room().now_or_never().is_some());
}

/// A guest resuming with a signed token on a session that has no record of
/// it goes on where the host has its input (so nothing the host has is
/// applied twice), or where the guest's own input starts, when that is
/// later.
#[test]
fn a_signed_resume_goes_on_where_the_host_has_the_guests_input() {
    let seq = |guest_id: &str, next_seq| rendezvous_proto::GuestInputSeq {
        guest_id: guest_id.into(),
        next_seq,
    };
    let s = Session::restored(
        RelayConfig::default(),
        &ResumeSession {
            session_id: "s".into(),
            cols: 80,
            rows: 24,
            input_applied: 7,
            guest_inputs: vec![seq("g", 5), seq("k", 1)],
            ..ResumeSession::default()
        },
    );
    let resume = |id, held| {
        s.attach_guest(
            "fresh".into(),
            Digest::of("x"),
            NewGuest {
                signed_resume: Some(held),
                max_guests: 8,
                ..rw(Some((id, "tok")))
            },
        )
        .unwrap()
    };
    let g = resume("g", 3);
    assert!(g.resumed);
    assert_eq!(g.next_input_seq, 5, "the host has 3 and 4 already");
    let k = resume("k", 4);
    assert_eq!(k.next_input_seq, 4, "k no longer holds 1..4");
    let h = resume("h", 2);
    assert_eq!((h.guest_id.as_str(), h.next_input_seq), ("h", 2));
}

/// The same on a session that forgot the guest (it left long ago): what
/// was queued for the host goes on from where it was.
#[tokio::test]
async fn a_signed_resume_of_a_forgotten_guest_goes_on_after_its_queued_input() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    let g = s
        .attach_guest("g".into(), Digest::of("tok"), rw(None))
        .unwrap();
    for seq in 0..3 {
        s.send_input("g", seq, Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    s.detach(&g.guest_id, g.attachment);
    for i in 0..MAX_DEPARTED_GUESTS {
        let other = s
            .attach_guest(format!("o{i}"), Digest::of("t"), rw(None))
            .unwrap();
        s.detach(&other.guest_id, other.attachment);
    }
    assert!(!s.lock_departed().contains(&"g".to_owned()));
    let back = s
        .attach_guest(
            "fresh".into(),
            Digest::of("x"),
            NewGuest {
                signed_resume: Some(0),
                ..rw(Some(("g", "tok")))
            },
        )
        .unwrap();
    assert!(back.resumed);
    assert_eq!(back.next_input_seq, 3);
    let mut host = host_rx(&s);
    let origin = host.try_recv().unwrap().input_origin.unwrap();
    assert_eq!((origin.guest_id.as_str(), origin.next_seq), ("g", 1));
}
