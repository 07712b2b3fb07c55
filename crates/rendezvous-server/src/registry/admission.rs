//! Who may attach: a task's secrets (read-write, read-only) or a guest
//! token, checked in constant time, with a decoy digest so that an unknown
//! task costs what a wrong secret does and says the same.

use std::sync::Arc;

use rendezvous_proto::Role;
use rendezvous_proto::ids::{MIN_SECRET_LEN, TaskId, secret_long_enough};

use super::{Host, Registry, RegistryError, lock};
use crate::token::TokenError;

/// Who a guest's credential makes it.
#[derive(Debug)]
pub struct Authenticated {
    /// Read-write (the secret, or a read-write token) or read-only.
    pub role: Role,
    /// The task's hosts now; empty while it waits for one.
    pub hosts: Vec<Arc<Host>>,
}

pub(super) fn check_secret(secret: &str, what: &str) -> Result<(), RegistryError> {
    if !secret_long_enough(secret) {
        return Err(RegistryError::Invalid(format!(
            "the {what} must be at least {MIN_SECRET_LEN} characters (128 random bits); \
             omit --secret to have one generated"
        )));
    }
    Ok(())
}

impl Registry {
    /// Checks a guest's credential for `task_id`: the task's secret, or,
    /// when `secret` is empty, a guest token (see [`crate::token`]).
    ///
    /// # Errors
    /// `Denied` for an unknown task, a wrong secret, or a token for another
    /// task alike; `Token` for an invalid or expired token.
    pub async fn authenticate_guest(
        &self,
        task_id: &TaskId,
        secret: &str,
        token: &str,
    ) -> Result<Authenticated, RegistryError> {
        if !secret.is_empty() || token.is_empty() {
            return self.authenticate(task_id, secret).await;
        }
        let key = self
            .config
            .token_key
            .as_ref()
            .ok_or(RegistryError::Token(TokenError::Invalid))?;
        let (token_task, token_role) = key.verify(token).map_err(RegistryError::Token)?;
        if task_id.as_str() != token_task {
            return Err(RegistryError::Denied);
        }
        if self.store.task(task_id).await.is_none() {
            return Err(RegistryError::Denied);
        }
        Ok(Authenticated {
            role: token_role,
            hosts: lock(&self.inner).hosts(task_id),
        })
    }

    /// Checks a guest's task ID and secret and returns its role and the
    /// task's hosts.
    ///
    /// # Errors
    /// `Denied` for an unknown task or a wrong secret alike.
    pub async fn authenticate(
        &self,
        task_id: &TaskId,
        secret: &str,
    ) -> Result<Authenticated, RegistryError> {
        let Some(task) = self.store.task(task_id).await else {
            // Spend the same work as a wrong secret would.
            let _ = self.decoy.matches(secret);
            return Err(RegistryError::Denied);
        };
        let role = if task.secret.matches(secret) {
            Role::ReadWrite
        } else if task
            .read_only_secret
            .as_ref()
            .is_some_and(|d| d.matches(secret))
        {
            Role::ReadOnly
        } else {
            return Err(RegistryError::Denied);
        };
        Ok(Authenticated {
            role,
            hosts: lock(&self.inner).hosts(task_id),
        })
    }
}
