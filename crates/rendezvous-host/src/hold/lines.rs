//! The hold's events as the plain lines the job's log shows, one per
//! change of state. No line holds a secret: guests are named by role and
//! their token's `sub`.

use std::fmt;
use std::time::Duration;

use super::{HoldEnd, HoldEvent, Timeout};
use crate::guests::AttachedGuest;

/// `15m`, `1h 30m`, `2s 500ms`.
fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// `(read-write, sub alice)` or `(read-only)`.
struct Who<'a>(&'a AttachedGuest);

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.sub {
            Some(sub) => write!(f, "({}, sub {sub})", self.0.role),
            None => write!(f, "({})", self.0.role),
        }
    }
}

impl fmt::Display for HoldEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Waiting { for_: Some(d) } => {
                write!(f, "waiting for a guest (at most {})", human(*d))
            }
            Self::Waiting { for_: None } => f.write_str("waiting for a guest"),
            Self::GuestAttached(guest) => write!(f, "guest attached {}", Who(guest)),
            Self::GuestDetached { guest, remaining } => {
                write!(
                    f,
                    "guest detached {}; {remaining} still attached",
                    Who(guest)
                )
            }
            Self::Lingering { for_ } => write!(
                f,
                "the last guest left; holding {} for them to come back",
                human(*for_)
            ),
            Self::Extended { by, capped: None } => {
                write!(f, "extended: holding at least {} from now", human(*by))
            }
            Self::Extended {
                by,
                capped: Some(left),
            } => write!(
                f,
                "extended by {}, but --max-hold ends the hold in {}",
                human(*by),
                human(*left)
            ),
            Self::Ended(end) => end.fmt(f),
        }
    }
}

impl fmt::Display for HoldEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Continued { exit_code: None } => f.write_str("continued by a guest"),
            Self::Continued {
                exit_code: Some(code),
            } => write!(f, "continued by a guest, with exit code {code}"),
            Self::TimedOut(Timeout::WaitForGuest(d)) => {
                write!(f, "timed out: no guest attached within {}", human(*d))
            }
            Self::TimedOut(Timeout::Idle(d)) => {
                write!(f, "timed out: no guest for {} (idle timeout)", human(*d))
            }
            Self::TimedOut(Timeout::Linger(d)) => write!(
                f,
                "timed out: no guest came back within {} (linger)",
                human(*d)
            ),
            Self::TimedOut(Timeout::MaxHold(d)) => {
                write!(f, "timed out: held for the maximum of {}", human(*d))
            }
            Self::HostStopped => f.write_str("the host stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GuestRole;

    #[test]
    fn lines_name_the_role_and_sub_and_the_rule() {
        let guest = AttachedGuest {
            guest_id: "g".into(),
            session_id: "s".into(),
            role: GuestRole::ReadWrite,
            sub: Some("alice".into()),
        };
        assert_eq!(
            HoldEvent::GuestAttached(guest).to_string(),
            "guest attached (read-write, sub alice)"
        );
        assert_eq!(
            HoldEnd::TimedOut(Timeout::WaitForGuest(Duration::from_secs(600))).to_string(),
            "timed out: no guest attached within 10m"
        );
        assert_eq!(
            HoldEvent::Extended {
                by: Duration::from_secs(1800),
                capped: None,
            }
            .to_string(),
            "extended: holding at least 30m from now"
        );
        assert_eq!(
            HoldEvent::Extended {
                by: Duration::from_secs(3600),
                capped: Some(Duration::from_secs(600)),
            }
            .to_string(),
            "extended by 1h, but --max-hold ends the hold in 10m"
        );
    }
}
