//! A session's guests: who is attached, where each one reads, who left
//! recently enough to resume, who the primary writer is, and the PTY size
//! they call for. No I/O and no lock: [`super::Session`] holds this behind
//! its lock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rendezvous_proto::ids::clamp_cells;
use rendezvous_proto::{Role, WindowSize};

use super::input::InputOrder;
use crate::auth::Digest;

/// How long a guest whose stream ended may still be resumed, in ms (10
/// minutes): a guest that attaches again within it, with its guest ID and
/// token, keeps its input sequence, so the request that was in flight when
/// the stream broke is applied once. Longer than the web guest's reconnect
/// backoff (capped at 30 s) many times over; after it, the guest attaches
/// as a new one, unless the registry vouches for its signed token (then it
/// resumes with the input seq it gives: see `NewGuest::signed_resume`).
pub const RESUME_GRACE: Duration = Duration::from_millis(600_000);

/// How long a read-write guest whose stream broke keeps setting the host's
/// pace, in ms (10 s): long enough for a guest to reconnect and resume
/// (the native guest retries after 0.5 s, the web guest at once), so that
/// a blip does not let the host run more than the retained output ahead of
/// it and cost it a `Lagged`. After it, the guest counts as gone, as a
/// stalled one does.
pub const DEPARTED_PACE: Duration = Duration::from_millis(10_000);

/// Most guests whose stream ended a session remembers for resuming; past
/// it, the one that left first is forgotten (64, about 100 bytes each).
pub const MAX_DEPARTED_GUESTS: usize = 64;

/// Size a session starts with when the guest gives none, in cells.
pub const DEFAULT_SIZE: WindowSize = WindowSize { cols: 80, rows: 24 };

/// A terminal size from a guest: each dimension clamped to 1..=1000
/// cells, 0 meaning the default (80x24).
pub(crate) fn clamp_size(cols: u32, rows: u32) -> WindowSize {
    WindowSize {
        cols: clamp_cells(cols, DEFAULT_SIZE.cols),
        rows: clamp_cells(rows, DEFAULT_SIZE.rows),
    }
}

/// One attached guest, as the session sees it.
#[derive(Debug)]
pub(crate) struct Guest {
    pub(crate) role: Role,
    /// The guest's terminal size; read-write guests' sizes set the PTY's.
    pub(crate) size: WindowSize,
    /// Offset of the next byte this guest will be sent. Changed by the
    /// guest's own reads; read by backpressure.
    pub(crate) cursor: u64,
    /// Its input sequence.
    pub(crate) input: InputOrder,
    /// The guest's acknowledged window in bytes, if it asked for one: it
    /// is sent nothing at or past `acked + window`.
    pub(crate) window: Option<u64>,
    /// One past the last byte the guest acknowledged having processed (or
    /// where its stream started). Moved by its acks and by lag jumps.
    pub(crate) acked: u64,
    /// How many events after `Attached` the guest acknowledged on its
    /// current stream (see `AttachRequest.window_messages`); 0 when it
    /// attaches. The guest's stream enforces the window; only the guest's
    /// acks change this.
    pub(crate) acked_messages: u64,
    /// Whether the guest has acknowledged anything on its current stream:
    /// until it does, its output messages are at most
    /// [`UNACKED_MESSAGE_BYTES`](super::UNACKED_MESSAGE_BYTES).
    pub(crate) has_acked: bool,
    /// When the guest last acknowledged something, or (without a byte
    /// window) was sent output, or attached; a lag jump does not count. A
    /// read-write guest that is behind stops holding the host back
    /// [`RelayConfig::stalled_guest_timeout`](super::RelayConfig::stalled_guest_timeout)
    /// after it.
    pub(crate) last_progress: Instant,
    /// Attach order within the session: the earliest read-write guest
    /// becomes the primary writer when the current one leaves. Kept when
    /// the guest resumes.
    joined: u64,
    /// Digest of the guest token, when the guest may be resumed.
    token: Option<Digest>,
    /// Which stream serves the guest: a new number each time it attaches
    /// or resumes, so a replaced stream stops reading and does not detach
    /// its successor.
    pub(crate) attachment: u64,
}

/// A guest whose stream ended, remembered for [`RESUME_GRACE`] so that it
/// can resume with its input sequence.
#[derive(Debug)]
struct Departed {
    id: String,
    token: Digest,
    role: Role,
    next_seq: u64,
    joined: u64,
    left_at: Instant,
    /// Its cursor when it left, for [`DEPARTED_PACE`].
    cursor: u64,
}

/// What carries over when a guest resumes: its ID, token, input sequence
/// and place in the attach order.
#[derive(Debug)]
struct ResumedGuest {
    id: String,
    token: Option<Digest>,
    input: InputOrder,
    joined: u64,
}

/// A guest to attach: see [`Guests::attach`].
#[derive(Debug)]
pub(crate) struct Joining<'a> {
    /// The ID and token digest of a new guest.
    pub(crate) id: String,
    pub(crate) token: Option<Digest>,
    pub(crate) role: Role,
    pub(crate) size: WindowSize,
    /// Where its output starts.
    pub(crate) cursor: u64,
    /// An earlier guest to resume: its ID and presented token.
    pub(crate) resume: Option<(&'a str, &'a str)>,
    /// The resume's token is signed for this guest (checked by the
    /// registry): with no record of it here, it resumes anyway, its input
    /// starting at this seq. See `NewGuest::signed_resume`.
    pub(crate) signed_resume: Option<u64>,
    /// Most guests the session may have.
    pub(crate) max_guests: usize,
}

/// What [`Guests::attach`] did.
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) id: String,
    pub(crate) attachment: u64,
    pub(crate) resumed: bool,
    pub(crate) next_seq: u64,
}

/// Who sets the host's pace: see [`Guests::pace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// No guest holds the host back.
    Free,
    /// The guests that do: the cursor of the one furthest ahead, and when
    /// the last of them stalls if none of them moves.
    Guests {
        fastest_cursor: u64,
        stalls_at: Instant,
    },
}

/// The guests of one session.
#[derive(Debug, Default)]
pub(crate) struct Guests {
    attached: HashMap<String, Guest>,
    /// Guests whose stream ended, oldest first, at most
    /// [`MAX_DEPARTED_GUESTS`].
    departed: VecDeque<Departed>,
    /// The primary writer: the only guest whose automatic terminal replies
    /// reach the PTY. The guest that opened the session, then the earliest
    /// read-write guest still attached.
    primary: Option<String>,
    /// Attach counter, for `Guest::joined`.
    joins: u64,
    /// Attachment counter, for `Guest::attachment`.
    attachments: u64,
}

impl Guests {
    /// Number of attached guests.
    pub(crate) fn len(&self) -> usize {
        self.attached.len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Guest> {
        self.attached.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Guest> {
        self.attached.get_mut(id)
    }

    /// Whether `id` is the primary writer.
    pub(crate) fn is_primary(&self, id: &str) -> bool {
        self.primary.as_deref() == Some(id)
    }

    /// Who holds the host back now, at `now`: the read-write guests that
    /// read or acknowledged something within `stalled`. Read-only guests
    /// never do: they lag instead.
    ///
    /// A read-write guest whose stream broke keeps holding it back for
    /// [`DEPARTED_PACE`] from where it was, so that it can resume exactly.
    pub(crate) fn pace(&self, now: Instant, stalled: Duration) -> Pace {
        let attached = self
            .attached
            .values()
            .filter(|g| {
                g.role == Role::ReadWrite
                    && now.saturating_duration_since(g.last_progress) < stalled
            })
            .map(|g| (g.cursor, g.last_progress + stalled));
        let departed = self
            .departed
            .iter()
            .filter(|d| {
                d.role == Role::ReadWrite
                    && now.saturating_duration_since(d.left_at) < DEPARTED_PACE
            })
            .map(|d| (d.cursor, d.left_at + DEPARTED_PACE));
        attached
            .chain(departed)
            .fold(Pace::Free, |pace, (cursor, stalls_at)| match pace {
                Pace::Free => Pace::Guests {
                    fastest_cursor: cursor,
                    stalls_at,
                },
                Pace::Guests {
                    fastest_cursor,
                    stalls_at: at,
                } => Pace::Guests {
                    fastest_cursor: fastest_cursor.max(cursor),
                    stalls_at: at.max(stalls_at),
                },
            })
    }

    /// The PTY size the read-write guests call for: the smallest cols and
    /// the smallest rows among them, as in tmux; `None` without one.
    pub(crate) fn wanted_size(&self) -> Option<WindowSize> {
        self.attached
            .values()
            .filter(|g| g.role == Role::ReadWrite)
            .map(|g| g.size)
            .reduce(|a, b| WindowSize {
                cols: a.cols.min(b.cols),
                rows: a.rows.min(b.rows),
            })
    }

    /// Attaches `joining`, or resumes the earlier guest it names when that
    /// one is attached (its old stream is replaced) or departed within
    /// [`RESUME_GRACE`], with the same role and token. Returns `None` when
    /// a new guest would exceed `max_guests`.
    pub(crate) fn attach(&mut self, joining: Joining<'_>, now: Instant) -> Option<Attached> {
        self.departed
            .retain(|d| now.duration_since(d.left_at) < RESUME_GRACE);
        // The limit first: a refused resume must keep a departed guest's
        // record, so that it can resume once there is room.
        let replacing = joining.resume.is_some_and(|(id, presented)| {
            self.attached.get(id).is_some_and(|g| {
                g.role == joining.role && g.token.as_ref().is_some_and(|t| t.matches(presented))
            })
        });
        if !replacing && self.attached.len() >= joining.max_guests {
            return None;
        }
        let resumed = joining
            .resume
            .and_then(|(id, presented)| self.resumable(id, presented, joining.role))
            .or_else(|| {
                // A guest this session has no record of, vouched for by
                // its signed token: it resumes with the input sequence it
                // holds, at the end of the attach order.
                let (id, presented) = joining.resume?;
                let seq = joining.signed_resume?;
                let known =
                    self.attached.contains_key(id) || self.departed.iter().any(|d| d.id == id);
                (!known).then(|| {
                    self.joins += 1;
                    ResumedGuest {
                        id: id.to_owned(),
                        token: Some(Digest::of(presented)),
                        input: InputOrder::starting_at(seq),
                        joined: self.joins,
                    }
                })
            });
        let was_resumed = resumed.is_some();
        let carried = resumed.unwrap_or_else(|| {
            self.joins += 1;
            ResumedGuest {
                id: joining.id,
                token: joining.token,
                input: InputOrder::default(),
                joined: self.joins,
            }
        });
        self.attachments += 1;
        let attachment = self.attachments;
        if self.primary.is_none() && joining.role == Role::ReadWrite {
            self.primary = Some(carried.id.clone());
        }
        let next_seq = carried.input.next_seq();
        self.attached.insert(
            carried.id.clone(),
            Guest {
                role: joining.role,
                size: joining.size,
                cursor: joining.cursor,
                input: carried.input,
                window: None,
                acked: joining.cursor,
                acked_messages: 0,
                has_acked: false,
                last_progress: now,
                joined: carried.joined,
                token: carried.token,
                attachment,
            },
        );
        Some(Attached {
            id: carried.id,
            attachment,
            resumed: was_resumed,
            next_seq,
        })
    }

    /// The guest `id` to resume with `presented` as its token and `role`:
    /// attached, or departed (and then no longer departed).
    fn resumable(&mut self, id: &str, presented: &str, role: Role) -> Option<ResumedGuest> {
        if let Some(g) = self.attached.get(id) {
            let matches = g.role == role && g.token.as_ref().is_some_and(|t| t.matches(presented));
            return matches.then(|| ResumedGuest {
                id: id.to_owned(),
                token: g.token.clone(),
                input: g.input.clone(),
                joined: g.joined,
            });
        }
        let at = self
            .departed
            .iter()
            .position(|d| d.id == id && d.role == role && d.token.matches(presented))?;
        let d = self.departed.remove(at)?;
        Some(ResumedGuest {
            id: d.id,
            token: Some(d.token),
            input: InputOrder::starting_at(d.next_seq),
            joined: d.joined,
        })
    }

    /// Detaches `id` if `attachment` still serves it (or whatever serves
    /// it, for `None`); a guest with a token is remembered for resuming
    /// unless `remember` is false (the session has ended). Returns whether
    /// a guest left.
    pub(crate) fn remove(
        &mut self,
        id: &str,
        attachment: Option<u64>,
        remember: bool,
        now: Instant,
    ) -> bool {
        let current = self
            .attached
            .get(id)
            .is_some_and(|g| attachment.is_none_or(|a| a == g.attachment));
        if !current {
            return false;
        }
        let Some(gone) = self.attached.remove(id) else {
            return false;
        };
        if let Some(token) = gone.token
            && remember
        {
            if self.departed.len() >= MAX_DEPARTED_GUESTS {
                self.departed.pop_front();
            }
            self.departed.push_back(Departed {
                id: id.to_owned(),
                token,
                role: gone.role,
                next_seq: gone.input.next_seq(),
                joined: gone.joined,
                left_at: now,
                cursor: gone.cursor,
            });
        }
        if self.is_primary(id) {
            self.primary = self
                .attached
                .iter()
                .filter(|(_, g)| g.role == Role::ReadWrite)
                .min_by_key(|(_, g)| g.joined)
                .map(|(id, _)| id.clone());
        }
        true
    }
}

#[cfg(test)]
impl Guests {
    pub(crate) fn primary(&self) -> Option<String> {
        self.primary.clone()
    }

    pub(crate) fn departed_ids(&self) -> Vec<String> {
        self.departed.iter().map(|d| d.id.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joining(
        id: &str,
        role: Role,
        resume: Option<(&'static str, &'static str)>,
    ) -> Joining<'static> {
        Joining {
            id: id.to_owned(),
            token: Some(Digest::of(&format!("{id}-token"))),
            role,
            size: clamp_size(80, 24),
            cursor: 0,
            resume,
            signed_resume: None,
            max_guests: 4,
        }
    }

    #[test]
    fn the_earliest_read_write_guest_becomes_primary_when_the_primary_leaves() {
        let mut guests = Guests::default();
        let now = Instant::now();
        guests
            .attach(joining("ro", Role::ReadOnly, None), now)
            .unwrap();
        assert_eq!(guests.primary(), None);
        guests
            .attach(joining("a", Role::ReadWrite, None), now)
            .unwrap();
        guests
            .attach(joining("b", Role::ReadWrite, None), now)
            .unwrap();
        guests
            .attach(joining("c", Role::ReadWrite, None), now)
            .unwrap();
        assert_eq!(guests.primary().as_deref(), Some("a"));
        assert!(guests.remove("a", None, true, now));
        assert_eq!(guests.primary().as_deref(), Some("b"));
    }

    #[test]
    fn a_departed_guest_resumes_within_the_grace_period_only() {
        let mut guests = Guests::default();
        let start = Instant::now();
        let first = guests
            .attach(joining("g", Role::ReadWrite, None), start)
            .unwrap();
        assert!(guests.remove("g", Some(first.attachment), true, start));
        let later = start + RESUME_GRACE;
        let again = guests
            .attach(
                joining("new", Role::ReadWrite, Some(("g", "g-token"))),
                later,
            )
            .unwrap();
        assert!(!again.resumed, "resumed after the grace period");
        assert_eq!(again.id, "new");
    }

    #[test]
    fn a_guest_vouched_for_by_its_signed_token_resumes_with_the_seq_it_gives() {
        let mut guests = Guests::default();
        let now = Instant::now();
        let signed = |id, seq| Joining {
            signed_resume: Some(seq),
            ..joining(id, Role::ReadWrite, Some(("old", "old-token")))
        };
        // No record of "old" here (the server restarted): it resumes.
        let back = guests.attach(signed("fresh-1", 7), now).unwrap();
        assert!(back.resumed);
        assert_eq!((back.id.as_str(), back.next_seq), ("old", 7));
        assert_eq!(guests.primary().as_deref(), Some("old"));
        // Attached now: a second resume with the same token replaces it
        // and keeps its input sequence, whatever seq it gives.
        let again = guests.attach(signed("fresh-2", 99), now).unwrap();
        assert!(again.resumed);
        assert_eq!((again.id.as_str(), again.next_seq), ("old", 7));
        assert_eq!(guests.len(), 1);
        // Not vouched for, no record: a new guest.
        let other = guests
            .attach(
                joining("fresh-3", Role::ReadWrite, Some(("gone", "x"))),
                now,
            )
            .unwrap();
        assert!(!other.resumed);
        assert_eq!((other.id.as_str(), other.next_seq), ("fresh-3", 0));
    }

    #[test]
    fn the_size_is_the_smallest_of_the_read_write_guests() {
        let mut guests = Guests::default();
        let now = Instant::now();
        let mut big = joining("big", Role::ReadWrite, None);
        big.size = clamp_size(200, 20);
        let mut tall = joining("tall", Role::ReadWrite, None);
        tall.size = clamp_size(100, 50);
        let mut tiny = joining("viewer", Role::ReadOnly, None);
        tiny.size = clamp_size(10, 5);
        for g in [big, tall, tiny] {
            guests.attach(g, now).unwrap();
        }
        assert_eq!(
            guests.wanted_size(),
            Some(WindowSize {
                cols: 100,
                rows: 20
            })
        );
    }
}
