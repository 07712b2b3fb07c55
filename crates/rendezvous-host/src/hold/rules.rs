//! The hold's arithmetic, without I/O: which phase it is in, and when and
//! why it ends (see the table in [`super`]).

use std::time::Duration;

use tokio::time::Instant;

use super::{HoldEvent, HoldOptions, Timeout};

/// Where a hold is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// No guest has attached yet.
    Waiting,
    /// At least one guest is attached.
    Attached,
    /// The last guest left at `since`.
    Lingering { since: Instant },
}

/// A hold's rules and state; changed only by [`Hold::run`](super::Hold::run).
#[derive(Debug)]
pub(super) struct Rules {
    options: HoldOptions,
    started: Instant,
    pub(super) phase: Phase,
    /// `extend`: no rule ends the hold before this.
    not_before: Option<Instant>,
}

impl Rules {
    pub(super) fn new(options: HoldOptions, started: Instant) -> Self {
        Self {
            options,
            started,
            phase: Phase::Waiting,
            not_before: None,
        }
    }

    /// When the hold ends if nothing happens, and by which rule; `None`
    /// when no rule limits it.
    pub(super) fn deadline(&self) -> Option<(Instant, Timeout)> {
        let o = &self.options;
        let phase = match self.phase {
            Phase::Waiting => Some(match o.wait_for_guest {
                Some(d) => (self.started + d, Timeout::WaitForGuest(d)),
                None => (self.started + o.idle_timeout, Timeout::Idle(o.idle_timeout)),
            }),
            Phase::Attached => None,
            Phase::Lingering { since } => Some(match o.linger {
                Some(d) => (since + d, Timeout::Linger(d)),
                None => (since + o.idle_timeout, Timeout::Idle(o.idle_timeout)),
            }),
        };
        // `extend` pushes the phase's rule back, never the cap.
        let cap = o.max_hold.map(|d| (self.started + d, Timeout::MaxHold(d)));
        let later = |(at, why): (Instant, Timeout)| match self.not_before {
            Some(nb) if nb > at => (nb, why),
            _ => (at, why),
        };
        match (phase.map(later), cap) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Time left at `now` until [`deadline`](Self::deadline).
    pub(super) fn remaining(&self, now: Instant) -> Option<Duration> {
        self.deadline()
            .map(|(at, _)| at.saturating_duration_since(now))
    }

    /// `count` guests are attached at `now`: moves the phase; returns
    /// [`HoldEvent::Lingering`] when the last one has just left.
    pub(super) fn guests_now(&mut self, count: usize, now: Instant) -> Option<HoldEvent> {
        match (self.phase, count) {
            (_, 1..) => {
                self.phase = Phase::Attached;
                None
            }
            (Phase::Attached, 0) => {
                self.phase = Phase::Lingering { since: now };
                Some(HoldEvent::Lingering {
                    for_: self.options.linger.unwrap_or(self.options.idle_timeout),
                })
            }
            _ => None,
        }
    }

    /// Holds at least `by` from `now`, up to the cap; returns the time
    /// left to the cap when it cuts the extension short.
    pub(super) fn extend(&mut self, now: Instant, by: Duration) -> Option<Duration> {
        let until = now + by;
        self.not_before = Some(self.not_before.map_or(until, |nb| nb.max(until)));
        let cap = self.started + self.options.max_hold?;
        (cap < until).then(|| cap.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn options() -> HoldOptions {
        HoldOptions {
            idle_timeout: 100 * S,
            ..HoldOptions::default()
        }
    }

    #[test]
    fn waiting_ends_at_wait_for_guest_or_else_the_idle_timeout() {
        let t0 = Instant::now();
        assert_eq!(
            Rules::new(options(), t0).deadline(),
            Some((t0 + 100 * S, Timeout::Idle(100 * S)))
        );
        let o = HoldOptions {
            wait_for_guest: Some(5 * S),
            ..options()
        };
        assert_eq!(
            Rules::new(o, t0).deadline(),
            Some((t0 + 5 * S, Timeout::WaitForGuest(5 * S)))
        );
    }

    #[test]
    fn an_attached_guest_holds_until_the_cap_only() {
        let t0 = Instant::now();
        let mut rules = Rules::new(options(), t0);
        assert_eq!(rules.guests_now(1, t0 + S), None);
        assert_eq!(rules.deadline(), None);
        let capped = HoldOptions {
            max_hold: Some(60 * S),
            ..options()
        };
        let mut rules = Rules::new(capped, t0);
        rules.guests_now(2, t0);
        assert_eq!(
            rules.deadline(),
            Some((t0 + 60 * S, Timeout::MaxHold(60 * S)))
        );
    }

    #[test]
    fn the_last_detach_starts_the_linger_and_a_return_ends_it() {
        let t0 = Instant::now();
        let o = HoldOptions {
            linger: Some(10 * S),
            ..options()
        };
        let mut rules = Rules::new(o, t0);
        rules.guests_now(1, t0);
        assert_eq!(
            rules.guests_now(0, t0 + 3 * S),
            Some(HoldEvent::Lingering { for_: 10 * S })
        );
        assert_eq!(
            rules.deadline(),
            Some((t0 + 13 * S, Timeout::Linger(10 * S)))
        );
        rules.guests_now(1, t0 + 4 * S);
        assert_eq!(rules.deadline(), None);
        // Without --linger, the idle timeout applies after the last detach.
        let mut rules = Rules::new(options(), t0);
        rules.guests_now(1, t0);
        rules.guests_now(0, t0 + S);
        assert_eq!(
            rules.deadline(),
            Some((t0 + 101 * S, Timeout::Idle(100 * S)))
        );
    }

    #[test]
    fn extend_goes_past_the_phase_rules_and_never_shortens() {
        let t0 = Instant::now();
        let o = HoldOptions {
            wait_for_guest: Some(5 * S),
            ..options()
        };
        let mut rules = Rules::new(o, t0);
        assert_eq!(rules.remaining(t0), Some(5 * S));
        assert_eq!(rules.extend(t0 + 2 * S, 30 * S), None);
        assert_eq!(rules.remaining(t0 + 2 * S), Some(30 * S));
        assert_eq!(rules.extend(t0 + 2 * S, S), None);
        assert_eq!(rules.remaining(t0 + 2 * S), Some(30 * S));
    }

    #[test]
    fn max_hold_is_a_hard_cap_that_extend_cannot_pass() {
        let t0 = Instant::now();
        let o = HoldOptions {
            wait_for_guest: Some(5 * S),
            max_hold: Some(8 * S),
            ..options()
        };
        let mut rules = Rules::new(o, t0);
        assert_eq!(rules.extend(t0 + 2 * S, 30 * S), Some(6 * S), "cut short");
        assert_eq!(
            rules.deadline(),
            Some((t0 + 8 * S, Timeout::MaxHold(8 * S)))
        );
        assert_eq!(rules.extend(t0 + 2 * S, 3 * S), None, "within the cap");
    }
}
