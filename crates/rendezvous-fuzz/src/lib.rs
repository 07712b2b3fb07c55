//! Fuzz harnesses for the Rendezvous server (issue 11, point 5: bad input,
//! fuzzed). Each harness is a function of the fuzzer's bytes, so that the
//! same code runs under cargo-fuzz (`fuzz/` at the repository root, one
//! target per harness) and in stable `cargo test` runs (`tests/`, seeded
//! pseudo-random inputs plus the committed regression inputs in
//! `regressions/<harness>/`).
//!
//! - [`decoders`]: bytes decoded as every message a host or a guest
//!   sends, each pushed through the server's own handlers and checks;
//! - [`session`]: one session driven by random host and guest actions,
//!   checked against a model of what it documents;
//! - [`restored`]: the same on a session a host restored on a server that
//!   lost it, with guests resuming by signed tokens (unknown, forgotten,
//!   stale, another role);
//! - [`registry`]: the registry with its services' unary calls and guest
//!   streams, driven by random hosts and guests, beside a bystander task
//!   that must never notice;
//! - [`wire`]: whole HTTP requests with framed (and misframed) gRPC and
//!   gRPC-Web bodies through the server's whole application, in process:
//!   the message-size limit's own reading of the framing, tonic-web,
//!   tonic, the handlers;
//! - [`parsers`]: guest and CI identity tokens, JWKS and PEM keys, and
//!   the stripping of terminal replies from guest input.
//!
//! Shared parts: [`exec`] runs an input on a fresh runtime and fails it
//! when any task panicked; [`pattern`] is host output whose bytes are
//! known by offset; [`fixture`] is a server state without a socket;
//! [`Mode`] lists the known server bugs the harnesses follow.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod decoders;
pub mod exec;
pub mod fixture;
pub mod parsers;
pub mod pattern;
pub mod registry;
pub mod session;
pub mod wire;

pub use decoders::decoders;
pub use parsers::parsers;
pub use registry::registry;
pub use session::{restored, session};
pub use wire::wire;

/// Up to `max` actions from `u`, as many as its bytes make: every byte
/// counts (no "keep going" flag per element, which would make random
/// bytes stop after two actions on average).
pub(crate) fn actions<'a, A: arbitrary::Arbitrary<'a>>(
    u: &mut arbitrary::Unstructured<'a>,
    max: usize,
) -> Vec<A> {
    let mut actions = Vec::new();
    while !u.is_empty() && actions.len() < max {
        match A::arbitrary(u) {
            Ok(action) => actions.push(action),
            Err(_) => break,
        }
    }
    actions
}

/// Whether `RENDEZVOUS_FUZZ_TRACE` is set: the harnesses then print each
/// action as they take it, to read what a failing input did.
pub(crate) fn tracing() -> bool {
    static TRACING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACING.get_or_init(|| std::env::var_os("RENDEZVOUS_FUZZ_TRACE").is_some())
}

/// What a harness expects where the server has a known bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// What the documentation says, everywhere.
    Documented,
    /// What the server does today where a bug a harness found is not
    /// fixed yet, so that fuzzing goes on looking for other ones (the
    /// harnesses' default). The known bugs (all fixed now; their inputs
    /// stay in `known-bugs/`, replayed in the documented mode by the
    /// `known_bugs_are_fixed` test):
    ///
    /// 1. `decoders`: a second DataOpen for a running session of a host
    ///    without a grace period is accepted (the server answers it with
    ///    its `output_ack`), and then the session ends, "the host closed
    ///    the session without an exit status": the replaced stream's
    ///    `SessionGuard` (the server's `host_data.rs`) ends the session
    ///    of a host that may not resume, though the new stream serves it
    ///    now. The proto documents `FAILED_PRECONDITION` for a session
    ///    that already has a Data stream, as before host resume; that, or
    ///    keeping the session for the new stream, is what the documented
    ///    mode accepts. Input: `regressions/decoders/known-bugs/`.
    FollowKnownBugs,
}

/// A harness: one input of fuzzer bytes.
pub type Harness = fn(&[u8]);

/// Every harness by its name, which is also its cargo-fuzz target's and
/// its regression directory's.
pub const HARNESSES: &[(&str, Harness)] = &[
    ("decoders", decoders),
    ("session", session),
    ("restored", restored),
    ("registry", registry),
    ("wire", wire),
    ("parsers", parsers),
];

/// The harnesses that follow a known bug (see [`Mode`]), as they run
/// expecting what the documentation says instead.
pub const DOCUMENTED: &[(&str, Harness)] = &[("decoders", decoders::decoders_documented)];
