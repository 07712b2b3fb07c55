//! The session as a whole: its lifecycle, backpressure, input path,
//! resume and the primary writer, through [`Session`]'s own methods.

use super::*;
use futures::FutureExt;
use rendezvous_proto::host_data_response;

fn small() -> RelayConfig {
    RelayConfig {
        retained_output_bytes: 16,
        max_output_message_bytes: 8,
        backpressure_bytes: 100,
        stalled_guest_timeout: STALLED_GUEST_TIMEOUT,
    }
}

fn code(c: i32) -> ExitStatus {
    ExitStatus {
        status: Some(rendezvous_proto::exit_status::Status::Code(c)),
        message: String::new(),
    }
}

pub(super) fn output(read: Read) -> (u64, Bytes) {
    match read {
        Read::Output { offset, data } => (offset, data),
        other => panic!("expected output, got {other:?}"),
    }
}

#[test]
fn output_is_read_at_offsets_and_coalesced() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    s.add_guest("g".into(), Role::ReadWrite, 80, 24, None);
    s.push_output(b"abc");
    s.push_output(&[b'x'; MERGE_CHUNK_BYTES]);
    s.push_output(b"def");
    let (off, data) = output(s.read("g", 0));
    assert_eq!(off, 0);
    assert_eq!(data.len(), 3 + MERGE_CHUNK_BYTES + 3);
    assert_eq!(&data[..3], b"abc");
    assert_eq!(&data[data.len() - 3..], b"def");
    assert_eq!(s.read("g", data.len() as u64), Read::Nothing);
}

#[test]
fn a_chunk_is_shared_by_all_guests_that_keep_up_without_a_copy() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    s.push_output(&[b'a'; 32 * 1024]);
    let (_, first) = output(s.read("g1", 0));
    let (_, second) = output(s.read("g2", 0));
    // Both guests hold the one stored chunk.
    assert_eq!(first.len(), 32 * 1024);
    assert_eq!(first.as_ptr(), second.as_ptr());
    // So does one that reads a chunk larger than a message, in slices.
    s.push_output(&vec![b'b'; MAX_OUTPUT_MESSAGE_BYTES + 1]);
    let (off, third) = output(s.read("g3", 32 * 1024));
    let (_, fourth) = output(s.read("g4", 32 * 1024));
    assert_eq!(off, 32 * 1024);
    assert_eq!(third.len(), MAX_OUTPUT_MESSAGE_BYTES);
    assert_eq!(third.as_ptr(), fourth.as_ptr());
}

#[test]
fn output_that_piled_up_goes_out_joined_up_to_the_message_limit() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    // Host chunks of 32 KiB, as a host under a flood sends them: one
    // message's worth and 48 KiB more.
    let chunks = MAX_OUTPUT_MESSAGE_BYTES / (32 * 1024) + 1;
    for _ in 0..chunks {
        s.push_output(&[b'x'; 32 * 1024]);
    }
    s.push_output(&[b'x'; 16 * 1024]);
    let (_, first) = output(s.read("g", 0));
    assert_eq!(first.len(), MAX_OUTPUT_MESSAGE_BYTES);
    let (off, rest) = output(s.read("g", first.len() as u64));
    assert_eq!(off, MAX_OUTPUT_MESSAGE_BYTES as u64);
    assert_eq!(rest.len(), 48 * 1024);
}

#[test]
fn a_guest_gets_small_messages_until_it_acknowledges_something() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    s.add_guest("g".into(), Role::ReadWrite, 80, 24, None);
    for _ in 0..12 {
        s.push_output(&[b'x'; 32 * 1024]);
    }
    let (_, first) = output(s.read("g", 0));
    assert_eq!(first.len(), UNACKED_MESSAGE_BYTES);
    s.ack("g", first.len() as u64, 1).unwrap();
    let (_, second) = output(s.read("g", first.len() as u64));
    assert_eq!(
        second.len(),
        MAX_OUTPUT_MESSAGE_BYTES,
        "full size once it acked"
    );
}

#[tokio::test]
async fn a_guest_with_a_window_gets_nothing_past_its_acks() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    s.add_guest("g".into(), Role::ReadWrite, 80, 24, None);
    s.set_window("g", 1); // clamped up to MIN_WINDOW_BYTES
    s.push_output(&vec![b'x'; 8 * MIN_WINDOW_BYTES as usize]);
    let (_, first) = output(s.read("g", 0));
    assert_eq!(first.len() as u64, MIN_WINDOW_BYTES);
    assert_eq!(s.read("g", MIN_WINDOW_BYTES), Read::Nothing);
    // A guest stuck at its window holds the host back like a slow one.
    assert!(s.wait_for_room().now_or_never().is_none());
    s.ack("g", 1000, 0).unwrap();
    let (at, more) = output(s.read("g", MIN_WINDOW_BYTES));
    assert_eq!((at, more.len()), (MIN_WINDOW_BYTES, 1000));
    // Acks past what was sent count as all that was sent.
    s.ack("g", u64::MAX, 0).unwrap();
    let (_, rest) = output(s.read("g", MIN_WINDOW_BYTES + 1000));
    assert_eq!(rest.len() as u64, MIN_WINDOW_BYTES);
    assert_eq!(s.ack("nobody", 1, 0), Err(SessionError::UnknownGuest));
}

#[test]
fn messages_are_capped() {
    let s = Session::new("s".into(), 80, 24, small());
    s.push_output(b"0123456789");
    assert_eq!(output(s.read("g", 0)), (0, Bytes::from_static(b"01234567")));
    assert_eq!(output(s.read("g", 8)), (8, Bytes::from_static(b"89")));
}

#[test]
fn retained_output_is_bounded_and_lag_is_reported() {
    let s = Session::new("s".into(), 80, 24, small());
    for _ in 0..5 {
        s.push_output(b"0123456789");
    }
    // 50 bytes written, 16 retained: offsets 34..50.
    assert_eq!(s.read("g", 0), Read::Lagged { missed: 34 });
    assert_eq!(
        output(s.read("g", 34)),
        (34, Bytes::from_static(b"45678901"))
    );
}

#[test]
fn exit_comes_after_the_last_byte() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    s.push_output(b"bye");
    s.finish(code(3));
    s.push_output(b"ignored");
    assert_eq!(output(s.read("g", 0)), (0, Bytes::from_static(b"bye")));
    assert_eq!(s.read("g", 3), Read::Exit(code(3)));
}

#[test]
fn smallest_read_write_guest_sets_the_size() {
    let s = Session::new("s".into(), 100, 50, RelayConfig::default());
    s.add_guest("a".into(), Role::ReadWrite, 100, 50, None);
    s.add_guest("b".into(), Role::ReadWrite, 120, 30, None);
    s.add_guest("r".into(), Role::ReadOnly, 10, 10, None);
    assert_eq!(
        s.size(),
        WindowSize {
            cols: 100,
            rows: 30
        }
    );
    assert_eq!(s.resize_guest("r", 5, 5), Err(SessionError::ReadOnly));
    s.resize_guest("a", 5000, 0).unwrap();
    assert_eq!(
        s.size(),
        WindowSize {
            cols: 120,
            rows: 24
        }
    );
    s.remove_guest("b");
    assert_eq!(
        s.size(),
        WindowSize {
            cols: 1000,
            rows: 24
        }
    );
}

#[tokio::test]
async fn input_is_applied_in_order_exactly_once() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    let mut rx = host_rx(&s);
    s.add_guest("g".into(), Role::ReadWrite, 80, 24, None);
    s.send_input("g", 1, Bytes::from_static(b"b"))
        .await
        .unwrap();
    s.send_input("g", 0, Bytes::from_static(b"a"))
        .await
        .unwrap();
    s.send_input("g", 0, Bytes::from_static(b"a"))
        .await
        .unwrap();
    s.send_input("g", 2, Bytes::from_static(b"c"))
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        match msg.message {
            Some(host_data_response::Message::Input(b)) => got.extend_from_slice(&b),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, b"abc");
    let far = s
        .send_input("g", 3 + MAX_PENDING_INPUTS + 1, Bytes::new())
        .await;
    assert!(matches!(far, Err(SessionError::SeqTooFarAhead { .. })));
    // Held-back bytes are bounded too.
    let big = Bytes::from(vec![b'x'; MAX_PENDING_INPUT_BYTES / 2]);
    s.send_input("g", 5, big.clone()).await.unwrap();
    s.send_input("g", 6, big.clone()).await.unwrap();
    let over = s.send_input("g", 7, Bytes::from_static(b"y")).await;
    assert!(matches!(over, Err(SessionError::SeqTooFarAhead { .. })));
}

pub(super) fn rw<'a>(resume_guest: Option<(&'a str, &'a str)>) -> NewGuest<'a> {
    NewGuest {
        role: Role::ReadWrite,
        cols: 80,
        rows: 24,
        resume_offset: Some(0),
        resume_guest,
        signed_resume: None,
        max_guests: 2,
    }
}

fn inputs(rx: &mut HostRx<'_>) -> Vec<u8> {
    let mut got = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        if let Some(host_data_response::Message::Input(b)) = msg.message {
            got.extend_from_slice(&b);
        }
    }
    got
}

#[tokio::test]
async fn a_resumed_guest_keeps_its_input_sequence_and_replaces_its_old_stream() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    let mut rx = host_rx(&s);
    let first = s
        .attach_guest("g".into(), Digest::of("tok"), rw(None))
        .unwrap();
    assert!(!first.resumed);
    s.send_input("g", 0, Bytes::from_static(b"a"))
        .await
        .unwrap();

    // The old stream is still open (the server has not noticed the cut).
    let second = s
        .attach_guest("other".into(), Digest::of("x"), rw(Some(("g", "tok"))))
        .unwrap();
    assert_eq!(second.guest_id, "g");
    assert!(second.resumed);
    assert_ne!(second.attachment, first.attachment);
    assert_eq!(s.read_attached("g", first.attachment, 0), Read::Replaced);
    assert!(matches!(
        s.read_attached("g", second.attachment, 0),
        Read::Nothing
    ));
    // The retried request is applied once; the next one goes through.
    s.send_input("g", 0, Bytes::from_static(b"a"))
        .await
        .unwrap();
    s.send_input("g", 1, Bytes::from_static(b"b"))
        .await
        .unwrap();
    assert_eq!(inputs(&mut rx), b"ab");
    // The old stream's end does not detach its successor.
    s.detach("g", first.attachment);
    assert_eq!(s.guest_count(), 1);

    // After the stream closes, within the grace period, it resumes again.
    s.detach("g", second.attachment);
    assert_eq!(s.guest_count(), 0);
    let third = s
        .attach_guest("new".into(), Digest::of("y"), rw(Some(("g", "tok"))))
        .unwrap();
    assert!(third.resumed);
    assert_eq!(third.guest_id, "g");
    s.send_input("g", 1, Bytes::from_static(b"b"))
        .await
        .unwrap();
    s.send_input("g", 2, Bytes::from_static(b"c"))
        .await
        .unwrap();
    assert_eq!(inputs(&mut rx), b"c");
    assert_eq!(s.lock_primary().as_deref(), Some("g"));
}

#[test]
fn a_guest_resumes_only_with_its_token_and_role() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    let first = s
        .attach_guest("g".into(), Digest::of("tok"), rw(None))
        .unwrap();
    s.detach("g", first.attachment);
    let wrong = s
        .attach_guest("w".into(), Digest::of("x"), rw(Some(("g", "nope"))))
        .unwrap();
    assert!(!wrong.resumed);
    assert_eq!(wrong.guest_id, "w");
    let read_only = NewGuest {
        role: Role::ReadOnly,
        ..rw(Some(("g", "tok")))
    };
    let other_role = s
        .attach_guest("r".into(), Digest::of("x"), read_only)
        .unwrap();
    assert!(!other_role.resumed);
    // The limit counts guests: at it, a new guest is refused, and a
    // guest that resumes in place of its live self is not.
    assert_eq!(
        s.attach_guest("z".into(), Digest::of("z"), rw(None)),
        Err(SessionError::TooManyGuests(2))
    );
    let again = s
        .attach_guest("z".into(), Digest::of("z"), rw(Some(("w", "x"))))
        .unwrap();
    assert!(again.resumed);
    // A guest that cannot be resumed is not remembered.
    s.add_guest("plain".into(), Role::ReadOnly, 80, 24, None);
    s.remove_guest("plain");
    assert!(s.lock_departed().iter().all(|id| id != "plain"));
}

#[test]
fn departed_guests_are_bounded() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    for i in 0..MAX_DEPARTED_GUESTS + 5 {
        let a = s
            .attach_guest(format!("g{i}"), Digest::of("t"), rw(None))
            .unwrap();
        s.detach(&a.guest_id, a.attachment);
    }
    let departed = s.lock_departed();
    assert_eq!(departed.len(), MAX_DEPARTED_GUESTS);
    assert_eq!(departed[0], "g5");
}

#[tokio::test]
async fn only_the_primary_writer_answers_terminal_queries() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    let mut rx = host_rx(&s);
    for g in ["a", "b", "c"] {
        s.add_guest(g.into(), Role::ReadWrite, 80, 24, None);
    }
    let reply = Bytes::from_static(b"\x1b[?1;2c");
    for g in ["a", "b", "c"] {
        s.send_input(g, 0, reply.clone()).await.unwrap();
    }
    let inputs = |rx: &mut HostRx<'_>| {
        let mut got = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            // Stripped replies go as empty messages (see the next test).
            if let Some(host_data_response::Message::Input(b)) = msg.message
                && !b.is_empty()
            {
                got.push(b);
            }
        }
        got
    };
    assert_eq!(inputs(&mut rx), vec![reply.clone()]);
    // The primary leaves: the next read-write guest answers instead.
    s.remove_guest("a");
    s.send_input("b", 1, reply.clone()).await.unwrap();
    s.send_input("c", 1, Bytes::from_static(b"ls\x1b[?1;2c\r"))
        .await
        .unwrap();
    assert_eq!(inputs(&mut rx), vec![reply, Bytes::from_static(b"ls\r")]);
}

/// A guest whose input was only terminal replies, stripped, still tells
/// the host where its input stands: a restarted server must not ask for
/// those replies again (the guest may be the primary writer by then).
#[tokio::test]
async fn stripped_replies_still_move_the_guests_input_seq_at_the_host() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    let mut rx = host_rx(&s);
    s.add_guest("a".into(), Role::ReadWrite, 80, 24, None);
    s.add_guest("b".into(), Role::ReadWrite, 80, 24, None);
    s.send_input("b", 0, Bytes::from_static(b"\x1b[?1;2c"))
        .await
        .unwrap();
    let msg = rx.try_recv().unwrap();
    assert_eq!(
        msg.message,
        Some(host_data_response::Message::Input(Bytes::new()))
    );
    let origin = msg.input_origin.unwrap();
    assert_eq!((origin.guest_id.as_str(), origin.next_seq), ("b", 1));
}

#[tokio::test]
async fn read_only_guests_cannot_write() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    let mut rx = host_rx(&s);
    s.add_guest("r".into(), Role::ReadOnly, 80, 24, None);
    let res = s.send_input("r", 0, Bytes::from_static(b"x")).await;
    assert_eq!(res, Err(SessionError::ReadOnly));
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn host_pauses_only_when_every_guest_is_behind() {
    // Window: min(100, 16 / 2) = 8 bytes.
    let s = Session::new("s".into(), 80, 24, small());
    // No guest: never paused.
    s.push_output(b"0123456789");
    s.wait_for_room().await;
    s.add_guest("slow".into(), Role::ReadWrite, 80, 24, Some(10));
    s.add_guest("fast".into(), Role::ReadWrite, 80, 24, Some(10));
    s.push_output(b"abcdefghij");
    assert!(
        s.wait_for_room().now_or_never().is_none(),
        "both guests are 10 bytes behind"
    );
    // The fast guest reads: the host may go on although `slow` did not.
    assert_eq!(
        output(s.read("fast", 10)),
        (10, Bytes::from_static(b"abcdefgh"))
    );
    s.wait_for_room().await;
}

#[tokio::test]
async fn a_lag_jump_does_not_count_as_keeping_up() {
    let s = Session::new("s".into(), 80, 24, small());
    s.add_guest("g".into(), Role::ReadWrite, 80, 24, None);
    for _ in 0..4 {
        s.push_output(b"0123456789");
    }
    // 40 written, 16 retained: the guest lags to offset 24, 16 behind.
    assert_eq!(s.read("g", 0), Read::Lagged { missed: 24 });
    assert!(s.wait_for_room().now_or_never().is_none());
}

#[tokio::test]
async fn read_only_guests_never_hold_the_host_back() {
    let s = Session::new("s".into(), 80, 24, small());
    s.add_guest("viewer".into(), Role::ReadOnly, 80, 24, None);
    s.push_output(&[b'x'; 200]);
    // Far behind, yet the host goes on; the viewer lags.
    assert!(s.wait_for_room().now_or_never().is_some());
    assert!(matches!(s.read("viewer", 0), Read::Lagged { .. }));
    // A read-write guest as far behind holds it back.
    s.add_guest("writer".into(), Role::ReadWrite, 80, 24, Some(184));
    s.push_output(&[b'x'; 16]);
    assert!(s.wait_for_room().now_or_never().is_none());
}

#[tokio::test]
async fn a_stalled_writer_stops_holding_the_host_back() {
    let stalled = std::time::Duration::from_millis(300);
    let s = Session::new(
        "s".into(),
        80,
        24,
        RelayConfig {
            stalled_guest_timeout: stalled,
            ..small()
        },
    );
    let attached_at = std::time::Instant::now();
    s.add_guest("tab".into(), Role::ReadWrite, 80, 24, None);
    s.push_output(&[b'x'; 200]);
    assert!(s.wait_for_room().now_or_never().is_none());
    tokio::time::timeout(std::time::Duration::from_secs(20), s.wait_for_room())
        .await
        .expect("the host goes on once the guest has stalled");
    assert!(attached_at.elapsed() >= stalled);
    // Reading again makes it hold the host back again once it is behind.
    assert!(matches!(s.read("tab", 0), Read::Lagged { .. }));
    let (_, _) = output(s.read("tab", 184));
    s.push_output(&[b'y'; 16]);
    assert!(s.wait_for_room().now_or_never().is_none());
}

/// The host's side of a session's input, for tests.
pub(super) struct HostRx<'a> {
    s: &'a Session,
    input: super::HostInputReader,
}

impl HostRx<'_> {
    pub(super) fn try_recv(&mut self) -> Result<rendezvous_proto::HostDataResponse, ()> {
        self.input.try_recv(self.s)
    }
}

pub(super) fn host_rx(s: &Session) -> HostRx<'_> {
    HostRx {
        s,
        input: s.attach_host(0).unwrap().input,
    }
}

/// Found by the session fuzzer: a resume refused at the guest limit must
/// not cost the departed guest its record.
#[test]
fn a_resume_refused_at_the_limit_keeps_the_departed_guest_resumable() {
    let s = Session::new("s".into(), 80, 24, RelayConfig::default());
    let limit = |resume_guest| NewGuest {
        signed_resume: None,
        max_guests: 1,
        ..rw(resume_guest)
    };
    let g = s
        .attach_guest("g".into(), Digest::of("tok"), limit(None))
        .unwrap();
    s.detach(&g.guest_id, g.attachment);
    let other = s
        .attach_guest("other".into(), Digest::of("x"), limit(None))
        .unwrap();
    assert_eq!(
        s.attach_guest("new".into(), Digest::of("y"), limit(Some(("g", "tok")))),
        Err(SessionError::TooManyGuests(1))
    );
    s.detach(&other.guest_id, other.attachment);
    let back = s
        .attach_guest("new".into(), Digest::of("y"), limit(Some(("g", "tok"))))
        .unwrap();
    assert!(back.resumed, "{back:?}");
    assert_eq!(back.guest_id, "g");
}

/// Found by the fault tests: a guest whose stream broke keeps the host's
/// pace for a while, so that it resumes without a `Lagged`; a guest that
/// cannot resume (no token) frees the host at once.
#[tokio::test]
async fn a_broken_read_write_guest_holds_the_host_for_a_while() {
    let s = Session::new("s".into(), 80, 24, small());
    let g = s
        .attach_guest("g".into(), Digest::of("tok"), rw(None))
        .unwrap();
    s.push_output(&[b'x'; 200]);
    assert!(
        s.wait_for_room().now_or_never().is_none(),
        "the attached guest is behind"
    );
    s.detach(&g.guest_id, g.attachment);
    assert!(
        s.wait_for_room().now_or_never().is_none(),
        "the departed guest still sets the pace, for DEPARTED_PACE"
    );
    let plain = Session::new("p".into(), 80, 24, small());
    plain.add_guest("plain".into(), Role::ReadWrite, 80, 24, None);
    plain.push_output(&[b'x'; 200]);
    assert!(plain.wait_for_room().now_or_never().is_none());
    plain.remove_guest("plain");
    assert!(plain.wait_for_room().now_or_never().is_some());
    assert!(DEPARTED_PACE < RESUME_GRACE);
}
