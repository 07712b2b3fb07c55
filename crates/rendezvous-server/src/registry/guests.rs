//! The guest index: which guest a unary call (SendInput, Resize, Ack)
//! names, and the drop guard that takes a guest out of it with its stream.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use rendezvous_proto::ids::{HostName, SessionId, TaskId};
use rendezvous_proto::{
    GuestAttached, GuestDetached, HostControlResponse, Role, host_control_response,
};
use tokio::sync::mpsc;

use super::ended_guests::EndedGuests;
use super::host::Host;
use super::{Registry, RegistryError, lock};
use crate::audit::{AuditEvent, AuditKind};
use crate::auth::Digest;
use crate::config::limit_name;
use crate::session::{Attachment, NewGuest, Session, SessionError};
use crate::state_key::GuestClaims;

/// What [`Registry::add_guest`] attached.
#[derive(Debug)]
pub struct JoinedGuest {
    /// Detaches the guest when dropped; its stream owns it.
    pub handle: GuestHandle,
    /// The guest token: new, or the resumed guest's own. Sent once, in
    /// `Attached`.
    pub token: String,
    /// The session's answer: guest ID, cursor, resumed or not, next input
    /// sequence number.
    pub attachment: Attachment,
}

/// The guests the unary calls can name: those attached, and those whose
/// session ended a short while ago.
#[derive(Debug, Default)]
pub(super) struct GuestIndex {
    /// Attached guests by guest ID. An entry goes when its stream does.
    pub(super) attached: HashMap<String, GuestEntry>,
    /// Guests whose stream ended after their session did.
    pub(super) ended: EndedGuests,
}

/// An attached guest, for its unary calls.
#[derive(Debug, Clone)]
pub struct GuestEntry {
    /// The session it is attached to.
    pub session: Arc<Session>,
    /// Its role.
    pub role: Role,
    token: Digest,
    /// The stream serving it (see [`crate::session::Attachment`]).
    attachment: u64,
}

/// Removes a guest from its session and the guest index when dropped: the
/// guest's stream owns it, so a closed stream always detaches its guest. A
/// guest whose session has ended moves to the index's ended record.
#[derive(Debug)]
pub struct GuestHandle {
    registry: Weak<Registry>,
    session: Arc<Session>,
    guest_id: String,
    attachment: u64,
    /// Recorded in the audit log when the guest detaches.
    detach_event: Option<Box<AuditEvent>>,
    /// The host's control queue, told GuestDetached when the guest
    /// detaches (set by [`GuestHandle::tell_host`]).
    host_control: Option<mpsc::Sender<HostControlResponse>>,
}

impl GuestHandle {
    /// The guest's ID.
    pub fn id(&self) -> &str {
        &self.guest_id
    }

    /// Cancelled when the server drains (a fresh token, never cancelled,
    /// once the registry is gone).
    pub fn draining(&self) -> tokio_util::sync::CancellationToken {
        self.registry
            .upgrade()
            .map_or_else(Default::default, |r| r.draining().clone())
    }

    /// The session the guest is attached to.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The attachment number of the stream that owns this handle.
    pub fn attachment(&self) -> u64 {
        self.attachment
    }

    /// Records `event`, as [`AuditKind::GuestDetached`], when the guest
    /// detaches.
    pub fn audit_detach(&mut self, event: AuditEvent) {
        self.detach_event = Some(Box::new(event));
    }

    /// Tells `host` that this guest attached (GuestAttached on its control
    /// stream, with `role`, the guest token's `sub` and whether it
    /// resumed), and that it detached when this handle drops. Best effort:
    /// a full control queue drops the message (the host is stuck or gone),
    /// and never delays the guest.
    pub fn tell_host(&mut self, host: &Host, role: Role, sub: Option<&str>, resumed: bool) {
        // `sub` is bounded by the token's check (token::MAX_SUB_BYTES).
        let sub = sub.unwrap_or_default();
        let control = host.control_sender();
        let _ = control.try_send(HostControlResponse {
            message: Some(host_control_response::Message::GuestAttached(
                GuestAttached {
                    guest_id: self.guest_id.clone(),
                    session_id: self.session.id().to_owned(),
                    role: role.into(),
                    sub: sub.to_owned(),
                    resumed,
                },
            )),
        });
        self.host_control = Some(control);
    }
}

impl Drop for GuestHandle {
    fn drop(&mut self) {
        self.session.detach(&self.guest_id, self.attachment);
        if let Some(control) = self.host_control.take() {
            let _ = control.try_send(HostControlResponse {
                message: Some(host_control_response::Message::GuestDetached(
                    GuestDetached {
                        guest_id: self.guest_id.clone(),
                        session_id: self.session.id().to_owned(),
                    },
                )),
            });
        }
        let ended = self.session.has_ended();
        if let Some(registry) = self.registry.upgrade() {
            if let Some(event) = self.detach_event.take() {
                let reason = if ended {
                    "the session ended"
                } else {
                    "the guest's stream closed"
                };
                registry
                    .audit()
                    .record(&event.with_kind(AuditKind::GuestDetached).reason(reason));
            }
            let mut guests = lock(&registry.guests);
            // A guest that resumed on another stream stays indexed.
            if guests
                .attached
                .get(&self.guest_id)
                .is_some_and(|e| e.attachment == self.attachment)
                && let Some(entry) = guests.attached.remove(&self.guest_id)
                && ended
            {
                guests
                    .ended
                    .insert(&self.guest_id, entry.token, Instant::now());
            }
        }
    }
}

impl Registry {
    /// Attaches a guest to `session` and indexes it for unary calls, or
    /// resumes the guest `resume` names (ID and token; see
    /// [`Session::attach_guest`]). The returned handle detaches it when
    /// dropped; see [`JoinedGuest`].
    ///
    /// # Errors
    /// `Limit` (guests per session).
    pub fn add_guest(
        self: &Arc<Self>,
        host: &Host,
        session: &Arc<Session>,
        new: NewGuest<'_>,
        resume_input_seq: Option<u64>,
    ) -> Result<JoinedGuest, RegistryError> {
        let key = &self.config.state_key;
        let claims = |guest| GuestClaims {
            task: host.task_id().as_str(),
            host: host.name().as_str(),
            session: session.id(),
            guest,
            role: new.role,
        };
        // A resume this server has no record of may still be vouched for
        // by the guest token's signature (the server restarted).
        let signed_resume = new.resume_guest.and_then(|(id, presented)| {
            key.verify_guest_token(&claims(id), presented)
                // Bounded, so that numbering on from it never overflows.
                .map(|_| resume_input_seq.unwrap_or(0).min(super::MAX_RESUME_OFFSET))
        });
        let new = NewGuest {
            max_guests: self.config.limits.guests_per_session,
            signed_resume,
            ..new
        };
        // Only a guest attached now replaces itself; any other counts.
        let replacing = new
            .resume_guest
            .is_some_and(|(id, _)| lock(&self.guests).attached.contains_key(id));
        if !replacing && lock(&self.guests).attached.len() >= self.config.limits.guests {
            return Err(RegistryError::Limit {
                name: limit_name::GUESTS,
                value: self.config.limits.guests,
            });
        }
        let fresh_id = uuid::Uuid::new_v4().simple().to_string();
        // Signed, so that a restarted server or another replica with the
        // same state key recognises the guest (see `resuming_guest`).
        let fresh_token = key.guest_token(&claims(&fresh_id), host.grace_period());
        let digest = Digest::of(&fresh_token);
        let attached = session
            .attach_guest(fresh_id, digest.clone(), new)
            .map_err(|e| match e {
                SessionError::TooManyGuests(value) => RegistryError::Limit {
                    name: limit_name::GUESTS_PER_SESSION,
                    value,
                },
                _ => RegistryError::NoSuchSession(session.id().to_owned()),
            })?;
        let token = match new.resume_guest {
            Some((_, presented)) if attached.resumed => presented.to_owned(),
            _ => fresh_token,
        };
        {
            let mut guests = lock(&self.guests);
            // Two resumes of one guest may race here: the later attachment wins.
            let newer = guests
                .attached
                .get(&attached.guest_id)
                .is_none_or(|e| e.attachment < attached.attachment);
            if newer {
                guests.attached.insert(
                    attached.guest_id.clone(),
                    GuestEntry {
                        session: session.clone(),
                        role: new.role,
                        token: Digest::of(&token),
                        attachment: attached.attachment,
                    },
                );
            }
        }
        let handle = GuestHandle {
            registry: Arc::downgrade(self),
            session: session.clone(),
            guest_id: attached.guest_id.clone(),
            attachment: attached.attachment,
            detach_event: None,
            host_control: None,
        };
        Ok(JoinedGuest {
            handle,
            token,
            attachment: attached,
        })
    }

    /// Whether a guest that asks to resume as `guest_id` (with `token`) in
    /// `session` of host `host` in `task` is one this server cannot place
    /// now but soon may: its token is signed for it with the state key
    /// (either role), that session is not running here, the guest's
    /// session did not end here, and the host's grace period (signed into
    /// the token), counted from this server's start, has not run out. That
    /// is a restarted server, or another replica, that the host has not
    /// resumed on yet. Such a guest gets UNAVAILABLE ("the host is
    /// reconnecting") and tries again, instead of PERMISSION_DENIED or
    /// NOT_FOUND, and no failed authentication is counted against it.
    pub fn resuming_guest(
        &self,
        task: &TaskId,
        host: &HostName,
        session: &SessionId,
        guest_id: &str,
        token: &str,
    ) -> bool {
        if guest_id.is_empty() || token.is_empty() {
            return false;
        }
        let key = &self.config.state_key;
        let grace = [Role::ReadWrite, Role::ReadOnly]
            .into_iter()
            .find_map(|role| {
                let claims = GuestClaims {
                    task: task.as_str(),
                    host: host.as_str(),
                    session: session.as_str(),
                    guest: guest_id,
                    role,
                };
                key.verify_guest_token(&claims, token)
            });
        if grace.is_none_or(|grace| self.started.elapsed() >= grace) {
            return false;
        }
        if lock(&self.guests)
            .ended
            .contains(guest_id, token, Instant::now())
        {
            return false;
        }
        let running = lock(&self.inner)
            .tasks
            .iter()
            .filter(|((_, id), _)| id == task)
            .filter_map(|(_, hosts)| hosts.get(host))
            .any(|h| h.session(session.as_str()).is_some());
        !running
    }

    /// Looks up an attached guest by ID and token.
    ///
    /// # Errors
    /// `SessionEnded` when the guest's session has ended, whether its
    /// stream is still open or closed less than
    /// [`ENDED_GUEST_GRACE`](crate::config::ENDED_GUEST_GRACE) ago;
    /// `BadGuest` when the guest is unknown or the token does not match.
    pub fn guest(&self, guest_id: &str, token: &str) -> Result<GuestEntry, RegistryError> {
        let entry = {
            let mut guests = lock(&self.guests);
            match guests.attached.get(guest_id) {
                Some(entry) if entry.token.matches(token) => entry.clone(),
                Some(_) => return Err(RegistryError::BadGuest),
                None => {
                    let ended = guests.ended.contains(guest_id, token, Instant::now());
                    return Err(if ended {
                        RegistryError::SessionEnded
                    } else {
                        RegistryError::BadGuest
                    });
                }
            }
        };
        // Checked after the index's lock is released: the session has a
        // lock of its own.
        if entry.session.has_ended() {
            return Err(RegistryError::SessionEnded);
        }
        Ok(entry)
    }
}
