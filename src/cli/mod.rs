//! One module per subcommand: its clap arguments and its `run`.

pub mod attach;
pub mod bench;
pub mod demo;
pub mod guest_args;
pub mod host;
pub mod serve;
pub mod sessions;
pub mod tls_args;
pub mod token;
