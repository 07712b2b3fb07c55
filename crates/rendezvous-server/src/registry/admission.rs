//! Who may attach: a task's secrets (read-write, read-only) or a guest
//! token, checked in constant time, with a decoy digest so that an unknown
//! task costs what a wrong secret does and says the same.

use std::net::IpAddr;
use std::sync::Arc;

use rendezvous_proto::Role;
use rendezvous_proto::ids::{TaskId, check_secret_strength};

use super::{Host, Owner, Registry, RegistryError, lock};
use crate::audit::{AuditEvent, AuditKind};
use crate::auth::Digest;

/// Who a guest's credential makes it.
#[derive(Debug)]
pub struct Authenticated {
    /// Read-write (the secret, or a read-write token) or read-only.
    pub role: Role,
    /// The task's hosts now; empty while it waits for one.
    pub hosts: Vec<Arc<Host>>,
    /// Whose task it is.
    pub owner: Owner,
    /// Who a guest token was given to (its `sub`), if it says.
    pub sub: Option<String>,
    /// The only host name a guest token attaches to (its `host`), if it
    /// says; the caller enforces it.
    pub only_host: Option<String>,
    /// The only session ID a guest token attaches to (its `session`), if
    /// it says; the caller enforces it.
    pub only_session: Option<String>,
}

/// The kind of a guest's credential, for the audit log, and the
/// credential itself: the secret, unless only a token was sent.
pub(crate) fn guest_credential<'a>(secret: &'a str, token: &'a str) -> (&'static str, &'a str) {
    if !secret.is_empty() || token.is_empty() {
        ("secret", secret)
    } else {
        ("guest_token", token)
    }
}

/// The kind of a host's admission credential, for the audit log.
pub(crate) fn host_credential_kind(token: Option<&str>) -> &'static str {
    match token {
        None => "none",
        Some(t) if crate::oidc::looks_like_jwt(t) => "oidc_token",
        Some(_) => "host_token",
    }
}

pub(super) fn check_secret(secret: &str, what: &str) -> Result<(), RegistryError> {
    check_secret_strength(secret).map_err(|why| {
        RegistryError::Invalid(format!(
            "the {what} {why}; omit --secret to have one generated"
        ))
    })
}

impl Registry {
    /// Checks a guest's credential for `task_id`: the task's secret, or,
    /// when `secret` is empty, a guest token (see [`crate::token`]). Failures
    /// count against `ip` and the task ([`crate::auth_limit`]).
    ///
    /// # Errors
    /// `Denied` for an unknown task, a wrong secret, or a token for another
    /// task alike; `Token` for an invalid or expired token;
    /// `TooManyFailures` while `ip` or the task is locked, whatever the
    /// credential; `DirectoryUnavailable` when a shared task store cannot
    /// be reached (not counted as a failure).
    pub async fn authenticate_guest(
        &self,
        ip: Option<IpAddr>,
        task_id: &TaskId,
        secret: &str,
        token: &str,
    ) -> Result<Authenticated, RegistryError> {
        self.failures
            .check(ip, Some(task_id))
            .map_err(RegistryError::TooManyFailures)?;
        let result = self.check_guest_credential(task_id, secret, token).await;
        if let Err(error @ (RegistryError::Denied | RegistryError::Token(_))) = &result {
            let (kind, credential) = guest_credential(secret, token);
            self.audit().record(
                &AuditEvent::new(AuditKind::AuthFailed)
                    .task(task_id)
                    .client_ip(ip)
                    .credential(kind, self.audit().fingerprint(credential))
                    .reason(error),
            );
            if let Some(locked) = self.failures.failed(ip, Some(task_id)) {
                tracing::warn!(
                    client_ip = ?ip, task = %task_id, retry_after_ms = locked.retry_after.as_millis(),
                    "too many failed authentications: locked"
                );
                self.metrics.rate_limit_trips.inc();
                self.audit().record(
                    &AuditEvent::new(AuditKind::RateLimited)
                        .task(task_id)
                        .client_ip(ip)
                        .reason(locked),
                );
            }
        }
        result
    }

    /// Admits a host that presented `token` (see
    /// [`HostAdmission::admit`](super::HostAdmission::admit)),
    /// under the same limits on failures as guests, per client IP.
    ///
    /// # Errors
    /// `HostNotAdmitted`, or `TooManyFailures` while `ip` is locked.
    pub async fn admit_host(
        &self,
        ip: Option<IpAddr>,
        token: Option<&str>,
    ) -> Result<Owner, RegistryError> {
        self.failures
            .check(ip, None)
            .map_err(RegistryError::TooManyFailures)?;
        let result = self.config.host_admission.admit(token).await;
        if let Err(error) = &result {
            self.audit().record(
                &AuditEvent::new(AuditKind::HostRefused)
                    .client_ip(ip)
                    .credential(
                        host_credential_kind(token),
                        self.audit().fingerprint(token.unwrap_or_default()),
                    )
                    .reason(error),
            );
            if let Some(locked) = self.failures.failed(ip, None) {
                tracing::warn!(
                    client_ip = ?ip, retry_after_ms = locked.retry_after.as_millis(),
                    "too many refused host registrations: locked"
                );
                self.metrics.rate_limit_trips.inc();
                self.audit().record(
                    &AuditEvent::new(AuditKind::RateLimited)
                        .client_ip(ip)
                        .reason(locked),
                );
            }
        }
        result
    }

    async fn check_guest_credential(
        &self,
        task_id: &TaskId,
        secret: &str,
        token: &str,
    ) -> Result<Authenticated, RegistryError> {
        if !secret.is_empty() || token.is_empty() {
            return self.authenticate(task_id, secret).await;
        }
        let grant = crate::token::verify(
            token,
            self.config.token_key.as_ref(),
            self.config.token_public_keys.as_ref(),
        )
        .await
        .map_err(RegistryError::Token)?;
        if task_id.as_str() != grant.task_id
            || self.store.task(&grant.owner, task_id).await?.is_none()
        {
            return Err(RegistryError::Denied);
        }
        Ok(Authenticated {
            role: grant.role,
            hosts: lock(&self.inner).hosts(&grant.owner, task_id),
            owner: grant.owner,
            sub: grant.sub,
            only_host: grant.host,
            only_session: grant.session,
        })
    }

    /// Checks a guest's task ID and secret against every owner's task of
    /// that ID, and returns its role, the task's owner and its hosts.
    ///
    /// # Errors
    /// `Denied` for an unknown task or a wrong secret alike;
    /// `DirectoryUnavailable` when a shared task store cannot be reached.
    pub async fn authenticate(
        &self,
        task_id: &TaskId,
        secret: &str,
    ) -> Result<Authenticated, RegistryError> {
        let presented = Digest::of(secret);
        let tasks = self.store.tasks_with_id(task_id).await?;
        if tasks.is_empty() {
            // Spend the same work as a wrong secret would.
            let _ = self.decoy.same_as(&presented);
            return Err(RegistryError::Denied);
        }
        for (owner, task) in tasks {
            let role = if task.secret.same_as(&presented) {
                Role::ReadWrite
            } else if task
                .read_only_secret
                .as_ref()
                .is_some_and(|d| d.same_as(&presented))
            {
                Role::ReadOnly
            } else {
                continue;
            };
            return Ok(Authenticated {
                role,
                hosts: lock(&self.inner).hosts(&owner, task_id),
                owner,
                sub: None,
                only_host: None,
                only_session: None,
            });
        }
        Err(RegistryError::Denied)
    }
}
