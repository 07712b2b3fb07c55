//! Each guest action, taken on the session and on the model, and
//! checked against what the model expects.

use bytes::Bytes;
use futures::FutureExt;
use rendezvous_proto::Role;
use rendezvous_server::auth::Digest;
use rendezvous_server::session::{
    HOST_INPUT_QUEUE_MESSAGES, MAX_DEPARTED_GUESTS, MAX_WINDOW_BYTES, MIN_WINDOW_BYTES, NewGuest,
    Read, SessionError, UNACKED_MESSAGE_BYTES,
};

use super::Harness;
use super::actions::{Offset, Seq};
use super::model::{Accept, Departed, GuestModel, InputModel, Live, Span, cells, clamp};
use crate::pattern;

impl Harness {
    pub(super) fn attach(
        &mut self,
        read_write: bool,
        cols: u16,
        rows: u16,
        from: Option<Offset>,
        resume: Option<(u8, bool)>,
        window: Option<u32>,
    ) {
        let resume = resume.map(|(who, right)| {
            let who = self.who(who);
            let token = match (who, right) {
                (Some(i), true) => self.model.guests[i].token.clone(),
                _ => "a-token-nobody-was-given".to_owned(),
            };
            (self.id(who), token)
        });
        let Some(index) = self.attach_as(read_write, cols, rows, from, resume, None) else {
            return;
        };
        if let Some(bytes) = window {
            let id = self.model.guests[index].id.clone();
            self.session.set_window(&id, bytes);
            if let Some(live) = self.model.guests[index].live.as_mut() {
                live.window = Some(u64::from(bytes).clamp(MIN_WINDOW_BYTES, MAX_WINDOW_BYTES));
            }
        }
    }

    /// Attaches a guest, resuming the one `resume` names (its ID and the
    /// token presented) if the session takes it, or (`signed`: the
    /// guest's token is signed for it, and it holds its input from that
    /// seq) resuming it under its own ID when the session has no record
    /// of it. Checks the attachment against the model; returns the
    /// attached guest's index, or `None` when it was refused.
    pub(super) fn attach_as(
        &mut self,
        read_write: bool,
        cols: u16,
        rows: u16,
        from: Option<Offset>,
        resume: Option<(String, String)>,
        signed: Option<u64>,
    ) -> Option<usize> {
        let role = if read_write {
            Role::ReadWrite
        } else {
            Role::ReadOnly
        };
        // A new guest's ID: never one a guest has had (the server makes
        // random ones; signed resumes bring IDs of their own).
        let fresh = (self.model.guests.len()..)
            .map(|n| format!("g{n}"))
            .find(|id| self.model.guests.iter().all(|g| &g.id != id))
            .expect("an unused ID");
        let fresh_token = format!("token-{fresh}");
        let (cols, rows) = (cells(u32::from(cols)), cells(u32::from(rows)));
        let requested = from.map(|o| self.model.offset(o, 0));
        let result = self.session.attach_guest(
            fresh.clone(),
            Digest::of(&fresh_token),
            NewGuest {
                role,
                cols,
                rows,
                resume_offset: requested,
                resume_guest: resume.as_ref().map(|(id, t)| (id.as_str(), t.as_str())),
                signed_resume: signed,
                max_guests: self.model.max_guests,
            },
        );
        // The model's answer: which guest carries on, if any.
        let model = &mut self.model;
        let named = resume
            .as_ref()
            .map(|(id, token)| (model.guests.iter().position(|g| &g.id == id), id, token));
        let resumed = named.and_then(|(i, _, token)| {
            let g = &model.guests[i?];
            if &g.token != token || g.role != role {
                return None;
            }
            if g.live.is_some() {
                return Some((i?, true));
            }
            model
                .departed
                .iter()
                .any(|d| Some(d.guest) == i)
                .then_some((i?, false))
        });
        // A guest the session has no record of, vouched for by its
        // signed token, resumes under its own ID.
        let vouched = match (resumed, named, signed) {
            (None, Some((i, id, token)), Some(held)) => {
                let known = i.is_some_and(|i| {
                    model.guests[i].live.is_some() || model.departed.iter().any(|d| d.guest == i)
                });
                let next_seq = model.input_seqs.get(id).map_or(held, |q| q.max(held));
                (!known).then(|| (i, id.clone(), token.clone(), next_seq))
            }
            _ => None,
        };
        let replacing = resumed.is_some_and(|(_, live)| live);
        if !replacing && model.attached() >= model.max_guests {
            // Refused; a departed guest that asked to resume keeps its
            // record, and may resume once there is room.
            assert_eq!(
                result,
                Err(SessionError::TooManyGuests(model.max_guests)),
                "a guest over the limit was attached"
            );
            return None;
        }
        let attached = result.expect("a guest within the limit attaches");
        if std::env::var_os("RENDEZVOUS_FUZZ_STATS").is_some() {
            eprintln!(
                "STAT attach resumed={} replacing={} vouched={}",
                resumed.is_some(),
                replacing,
                vouched.is_some()
            );
        }
        // Past what the host holds (the end, or on a restored session
        // the end it reported) is taken as that end.
        let cursor = requested
            .unwrap_or(model.start())
            .min(model.end.max(model.restored_end));
        model.attachments += 1;
        assert_eq!(attached.attachment, model.attachments, "attachment numbers");
        assert_eq!(attached.cursor, cursor, "an attached guest's cursor");
        assert_eq!(
            attached.resumed,
            resumed.is_some() || vouched.is_some(),
            "resumed or not"
        );
        let live = Live {
            attachment: attached.attachment,
            size: clamp(cols, rows),
            cursor,
            acked: cursor,
            acked_messages: 0,
            has_acked: false,
            window: None,
        };
        let index = match (resumed, vouched) {
            (Some((i, was_live)), _) => {
                let g = &mut model.guests[i];
                if was_live {
                    let old = g.live.take().map(|l| l.attachment);
                    g.old.extend(old);
                } else {
                    let at = model.departed.iter().position(|d| d.guest == i);
                    let next_seq = at
                        .and_then(|at| model.departed.remove(at))
                        .map_or(0, |d| d.next_seq);
                    g.input = InputModel {
                        next_seq,
                        ..InputModel::default()
                    };
                }
                i
            }
            (None, Some((known, id, token, next_seq))) => {
                // At the end of the attach order, with the token it
                // presented.
                model.joins += 1;
                let input = InputModel {
                    next_seq,
                    ..InputModel::default()
                };
                match known {
                    Some(i) => {
                        let g = &mut model.guests[i];
                        (g.token, g.role, g.joined, g.input) = (token, role, model.joins, input);
                        i
                    }
                    None => {
                        model.guests.push(GuestModel {
                            id,
                            token,
                            role,
                            joined: model.joins,
                            live: None,
                            old: Vec::new(),
                            input,
                        });
                        model.guests.len() - 1
                    }
                }
            }
            (None, None) => {
                model.joins += 1;
                model.guests.push(GuestModel {
                    id: fresh,
                    token: fresh_token,
                    role,
                    joined: model.joins,
                    live: None,
                    old: Vec::new(),
                    input: InputModel::default(),
                });
                model.guests.len() - 1
            }
        };
        let g = &mut model.guests[index];
        assert_eq!(attached.guest_id, g.id, "the attached guest's ID");
        assert_eq!(
            attached.next_input_seq, g.input.next_seq,
            "the attached guest's next input seq"
        );
        g.live = Some(live);
        if model.primary.is_none() && role == Role::ReadWrite {
            model.primary = Some(index);
        }
        model.update_size();
        Some(index)
    }

    pub(super) fn read(&mut self, who: Option<usize>) {
        let id = self.id(who);
        let model = &mut self.model;
        let Some(live) = who.and_then(|i| model.guests[i].live.clone()) else {
            let stale = who
                .and_then(|i| model.guests[i].old.last().copied())
                .unwrap_or(0);
            assert_eq!(
                self.session.read_attached(&id, stale, 0),
                Read::Replaced,
                "a guest that is not attached read something"
            );
            return;
        };
        let read = self
            .session
            .read_attached(&id, live.attachment, live.cursor);
        if std::env::var_os("RENDEZVOUS_FUZZ_STATS").is_some() {
            eprintln!(
                "STAT read {}",
                match &read {
                    Read::Output { .. } => "output",
                    Read::Lagged { .. } => "lagged",
                    Read::Exit(_) => "exit",
                    Read::Nothing => "nothing",
                    Read::Replaced => "replaced",
                }
            );
        }
        let (start, end) = (model.start(), model.end);
        let mut max = model.relay.max_output_message_bytes as u64;
        if !live.has_acked {
            max = max.min(UNACKED_MESSAGE_BYTES as u64);
        }
        let mut blocked = false;
        if let Some(window) = live.window
            && live.cursor >= start
            && live.cursor < end
        {
            let limit = live.acked + window;
            if live.cursor >= limit {
                blocked = true;
            } else {
                max = max.min(limit - live.cursor);
            }
        }
        let live = model.guests[who.unwrap_or_default()]
            .live
            .as_mut()
            .expect("checked above");
        if blocked {
            assert_eq!(read, Read::Nothing, "a guest at its window was sent output");
            return;
        }
        if live.cursor < start {
            assert_eq!(
                read,
                Read::Lagged {
                    missed: start - live.cursor
                },
                "a guest behind the retained output (cursor {}, retained {start}..{end})",
                live.cursor
            );
            live.cursor = start;
            live.acked = live.acked.max(start);
            return;
        }
        if live.cursor >= end {
            let want = model.exit.clone().map_or(Read::Nothing, Read::Exit);
            assert_eq!(read, want, "a guest at the end of the stream");
            return;
        }
        let Read::Output { offset, data } = read else {
            panic!(
                "expected output at {} (retained {start}..{end}), got {read:?}",
                live.cursor
            );
        };
        assert_eq!(
            offset, live.cursor,
            "output at another offset than the cursor"
        );
        let want = (end - live.cursor).min(max);
        assert_eq!(
            data.len() as u64,
            want,
            "output length at {offset} (end {end}, cap {max})"
        );
        assert!(
            pattern::matches(offset, &data),
            "output bytes at {offset} are wrong"
        );
        live.cursor += data.len() as u64;
    }

    pub(super) fn detach(&mut self, who: Option<usize>) {
        let id = self.id(who);
        let model = &mut self.model;
        let Some(i) = who else {
            self.session.detach(&id, 1);
            return;
        };
        let Some(live) = model.guests[i].live.take() else {
            // Not attached: nothing to detach.
            let stale = model.guests[i].old.last().copied().unwrap_or(0);
            self.session.detach(&id, stale);
            return;
        };
        let ((), left) = Span::around(|| self.session.detach(&id, live.attachment));
        let g = &mut model.guests[i];
        g.old.push(live.attachment);
        if model.exit.is_none() {
            if model.departed.len() >= MAX_DEPARTED_GUESTS {
                model.departed.pop_front();
            }
            model.departed.push_back(Departed {
                guest: i,
                next_seq: g.input.next_seq,
                cursor: live.cursor,
                left,
            });
        }
        if model.primary == Some(i) {
            model.primary = model
                .guests
                .iter()
                .enumerate()
                .filter(|(_, g)| g.live.is_some() && g.role == Role::ReadWrite)
                .min_by_key(|(_, g)| g.joined)
                .map(|(i, _)| i);
        }
        model.update_size();
    }

    /// The refusal the session owes a write by `who`, if any.
    pub(super) fn refusal(&self, who: Option<usize>) -> Option<SessionError> {
        if self.model.exit.is_some() {
            return Some(SessionError::Ended);
        }
        let Some(g) = who.map(|i| &self.model.guests[i]) else {
            return Some(SessionError::UnknownGuest);
        };
        if g.live.is_none() {
            return Some(SessionError::UnknownGuest);
        }
        (g.role != Role::ReadWrite).then_some(SessionError::ReadOnly)
    }

    pub(super) fn input(&mut self, who: Option<usize>, seq: Seq, len: usize) {
        let id = self.id(who);
        let next = who.map_or(0, |i| self.model.guests[i].input.next_seq);
        let seq = match seq {
            Seq::Next => next,
            Seq::Back(d) => next.saturating_sub(u64::from(d) + 1),
            Seq::Ahead(d) => next.saturating_add(u64::from(d)),
            Seq::Raw(n) => n,
        };
        self.model.inputs_made += 1;
        let data = Bytes::from_static(pattern::run(self.model.inputs_made * 13, len));
        // Unconstrained: tokio's cooperative budget would make a queue
        // with room look full after many operations in one poll.
        let result = tokio::task::unconstrained(self.session.send_input(&id, seq, data.clone()))
            .now_or_never();
        if let Some(refusal) = self.refusal(who) {
            assert_eq!(result, Some(Err(refusal)), "input that must be refused");
            return;
        }
        if self.model.host.unacked.len() >= HOST_INPUT_QUEUE_MESSAGES {
            assert_eq!(
                result, None,
                "input went past a queue full of input the host has not acknowledged"
            );
            return;
        }
        let Some(i) = who else {
            unreachable!("refused above")
        };
        let result = result.expect("input into a queue with room does not wait");
        let g = &mut self.model.guests[i];
        if std::env::var_os("RENDEZVOUS_FUZZ_STATS").is_some() {
            eprintln!("STAT input accepted");
        }
        match g.input.accept(seq, data) {
            Accept::Apply(bytes) => {
                assert_eq!(result, Ok(()), "input in order");
                if !bytes.is_empty() {
                    self.model.host.unacked.push_back(bytes);
                    // Where a signed resume of this guest goes on.
                    self.model.input_seqs.record(&id, g.input.next_seq);
                }
            }
            Accept::Nothing => assert_eq!(result, Ok(()), "input repeated or waiting"),
            Accept::TooFar => assert_eq!(
                result,
                Err(SessionError::SeqTooFarAhead {
                    seq,
                    expected: g.input.next_seq
                }),
                "input too far ahead"
            ),
        }
    }

    pub(super) fn ack(&mut self, who: Option<usize>, offset: Offset, messages: u64) {
        let id = self.id(who);
        let cursor = who
            .and_then(|i| self.model.guests[i].live.as_ref())
            .map_or(0, |l| l.cursor);
        let offset = self.model.offset(offset, cursor);
        let result = self.session.ack(&id, offset, messages);
        let Some(live) = who.and_then(|i| self.model.guests[i].live.as_mut()) else {
            assert_eq!(result, Err(SessionError::UnknownGuest), "ack by a stranger");
            return;
        };
        assert_eq!(result, Ok(()), "ack by an attached guest");
        let offset = offset.min(live.cursor);
        let mut moved = false;
        if offset > live.acked {
            live.acked = offset;
            moved = true;
        }
        if messages > live.acked_messages {
            live.acked_messages = messages;
            moved = true;
        }
        if moved {
            live.has_acked = true;
        }
    }

    pub(super) fn resize(&mut self, who: Option<usize>, cols: u32, rows: u32) {
        let id = self.id(who);
        let result = self.session.resize_guest(&id, cols, rows);
        if let Some(refusal) = self.refusal(who) {
            assert_eq!(result, Err(refusal), "a resize that must be refused");
            return;
        }
        assert_eq!(result, Ok(()), "a read-write guest's resize");
        if let Some(live) = who.and_then(|i| self.model.guests[i].live.as_mut()) {
            live.size = clamp(cols, rows);
        }
        self.model.update_size();
    }
}
