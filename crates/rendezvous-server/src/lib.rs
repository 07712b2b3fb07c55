//! The Rendezvous server: pairs hosts (CI jobs publishing PTYs) with guests
//! (browsers over gRPC-Web, native clients over gRPC) and relays their byte
//! streams. It never runs shells itself.
//!
//! - [`session`]: the relay core (offsets, retained output, fan-out,
//!   backpressure, input order), free of any transport, one job per file;
//! - [`terminal_replies`]: which guest input is a terminal's automatic
//!   reply, forwarded from the primary writer only;
//! - [`token`]: guest tokens (JWT) a CI system mints instead of sharing
//!   the secret; [`jwks`]: the public keys that check tokens signed by
//!   other parties (guest tokens, CI identity tokens);
//! - [`registry`]: task → hosts → sessions, the guest index, and
//!   admission (secrets, tokens); [`oidc`]: hosts admitted by their CI
//!   job's identity token;
//! - [`host_service`], [`guest_service`]: thin gRPC adapters; a host's
//!   Data stream, with its credit in messages, is `host_data`, a guest's
//!   event stream [`guest_stream`];
//! - [`http`]: the task page, web assets and health checks;
//! - `message_limit`: the size of one gRPC message, refused by name;
//! - `rpc_metrics`: every RPC timed and counted by method and status code;
//! - [`metrics`], [`metrics_http`]: what is counted, and `GET /metrics`
//!   on an address of its own;
//! - [`origin`]: which web origins may use the server (CORS);
//! - [`server`]: one listener for all of it; [`Server::spawn`] runs it
//!   as a [`RunningServer`] (demo, bench, tests);
//! - [`audit`]: the audit log, one event per registration, attach,
//!   detach, failed authentication, rate-limit trip and session end;
//! - [`tls`]: the listener's certificate (files reloaded on SIGHUP, or
//!   self-signed), ALPN and HSTS.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let server = rendezvous_server::Server::bind(
//!     "127.0.0.1:8080".parse().unwrap(),
//!     rendezvous_server::ServerConfig::default(),
//! ).await?;
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod auth;
pub mod auth_limit;
pub mod cluster;
pub mod config;
pub mod connection;

mod first_message;
pub mod guest_service;
pub mod guest_stream;
mod host_data;
pub mod host_service;
pub mod http;
pub mod jwks;
mod message_limit;
pub mod metrics;
pub mod metrics_http;
pub mod oidc;
pub mod origin;
pub mod registry;
mod rpc_metrics;
pub mod server;
pub mod session;
pub mod state_key;
mod status;
mod task_stream;
pub mod terminal_replies;
pub mod tls;
pub mod token;

pub use config::{Limits, ServerConfig};
pub use server::{RunningServer, Server};
