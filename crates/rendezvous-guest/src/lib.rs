//! The native Rendezvous guest: list a task's sessions, open a new shell or
//! join a session, and exchange bytes with it over gRPC. Used by
//! `rendezvous attach`, `rendezvous sessions`, the bench and the tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rendezvous_guest::GuestError> {
//! use rendezvous_guest::{AttachOptions, Client, Event, Secret, TaskId};
//!
//! let client = Client::connect("http://127.0.0.1:8080").await?;
//! let task = TaskId::new("build-42").unwrap();
//! let secret = Secret::new("the-task-secret-from-the-host").unwrap();
//! let hosts = client.list_sessions(&task, &secret).await?;
//! println!("{}", rendezvous_guest::listing::format_sessions(&hosts));
//!
//! // A new shell on the default host, over the bidi Terminal call.
//! let mut terminal = client.terminal(AttachOptions::new(task, secret)).await?;
//! terminal.send_input("echo hi; exit\r").await?;
//! while let Some(event) = terminal.next_event().await? {
//!     match event {
//!         Event::Output(output) => print!("{}", String::from_utf8_lossy(&output.data)),
//!         Event::Exit(status) => println!("{}", rendezvous_guest::describe_exit(&status)),
//!         Event::Lagged(_) | Event::Size(_) | Event::HostState(_) => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! [`ResumingTerminal`] is the same over a connection that may break: it
//! reconnects with backoff and resumes as the same guest, with output
//! byte-exact and input applied once (what `rendezvous attach` uses).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod error;
pub mod escape;
mod events;
pub mod listing;
mod resume;
mod secret;

pub use bytes::Bytes;
pub use client::{
    AttachOptions, AttachStream, Client, MAX_INPUT_CHUNK_BYTES, ResumeGuest,
    TERMINAL_REQUEST_CAPACITY, Terminal, TerminalWriter, UnaryWriter,
};
pub use error::GuestError;
pub use events::{Event, EventReader, describe_exit, exit_code};
pub use rendezvous_proto::ids::{HostName, TaskId};
pub use rendezvous_proto::tls::{Fingerprint, TlsOptions};
pub use rendezvous_proto::v1::{
    Attached, ExitStatus, HostInfo, Lagged, Output, Role, SessionInfo, WindowSize,
};
pub use resume::{MAX_RESEND_BYTES, MAX_RESEND_REQUESTS, ResumingTerminal, Update};
pub use secret::{EmptySecret, REDACTED, Secret};
