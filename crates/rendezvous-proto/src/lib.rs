//! Rendezvous wire types: the messages and gRPC stubs generated from
//! `proto/rendezvous/v1/rendezvous.proto`, plus the small helpers every party
//! shares (ID validation, message sizes, flow control, and the client's
//! connection: `endpoint`, with TLS in `tls`; one bounded HTTP GET in `fetch`). No relay logic lives here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Generated code for package `rendezvous.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("rendezvous.v1");
}

pub mod backoff;
pub mod endpoint;
pub mod fetch;
pub mod flow;
pub mod ids;
pub mod input_seqs;
pub mod message_size;
pub mod tls;

pub use v1::*;
