//! One module per subcommand: its clap arguments and its `run`.

pub mod attach;
pub mod bench;
pub mod ci;
pub mod control;
pub mod demo;
pub mod detach;
pub mod guest_args;
pub mod host;
pub mod publish;
pub mod run;
pub mod serve;
pub mod sessions;
pub mod tls_args;
pub mod token;
