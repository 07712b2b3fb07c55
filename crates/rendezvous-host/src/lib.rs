//! The Rendezvous host: what a CI agent embeds to publish shells of its
//! machine under a task ID.
//!
//! A [`Host`] dials out to the server (CI machines sit behind NAT), keeps
//! one gRPC control stream open, and starts one PTY per session the server
//! asks for, each with its own Data stream. Lost connections are retried
//! with backoff; on shutdown every session's process group is ended.
//!
//! ```no_run
//! # async fn example() -> Result<(), rendezvous_host::HostError> {
//! let host = rendezvous_host::Host::builder("http://127.0.0.1:8080")
//!     .task_id("build-42")
//!     .label("job", "42")
//!     .build()?;
//! println!("Open {}", host.guest_url());
//! host.run(async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
//!
//! Modules, one job each: `builder` (settings and their checks), `host`
//! (the reconnect loop), `control` (one control connection), `session` (one
//! PTY and its Data stream; `session/input` its downward half), `credit`
//! (output credit on a Data stream), `pty` (a process on a PTY), `processes`
//! (ending all processes of a session),
//! `id_token` (the CI job's OIDC identity token), `secret`, `status`, `error`; reconnect delays come from `rendezvous_proto::backoff`.
//! `guests` (who is attached, as the server reports it, and their input)
//! and [`hold`] (holding a CI job while a person works in it: wait for a
//! guest, idle and linger rules, continue and extend, and the control
//! socket the shells reach it by) make the CI debugging workflow.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod builder;
mod control;
mod credit;
mod error;
mod guests;
pub mod hold;
mod host;
mod id_token;
mod processes;
mod pty;
mod secret;
mod session;
mod sessions;
mod status;

pub use builder::{GRACE_PERIOD, HostBuilder, MAX_LABEL_BYTES, MAX_LABELS};
pub use control::MAX_SESSIONS;
pub use error::HostError;
pub use guests::{AttachedGuest, GuestRole, Guests};
pub use host::{Host, REREGISTER_WINDOW};
pub use id_token::{
    GITHUB_REQUEST_TOKEN_ENV, GITHUB_REQUEST_URL_ENV, ID_TOKEN_TIMEOUT, IdTokenError,
    IdTokenSource, MAX_ID_TOKEN_RESPONSE_BYTES,
};
pub use pty::{DEFAULT_COLS, DEFAULT_ROWS, TERM};
pub use rendezvous_proto::tls::{Fingerprint, TlsOptions};
pub use secret::GENERATED_SECRET_BYTES;
pub use session::RETAINED_OUTPUT_BYTES;
pub use status::HostStatus;
