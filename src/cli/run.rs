//! `rendezvous run [--on-failure | --always] -- COMMAND ARGS...`: run the
//! CI step, and when it fails (or always) publish shells in the job's
//! environment and hold the job while a person works in them. Exits with
//! COMMAND's exit code, or the one `rendezvous continue --exit-code N`
//! gives.

use std::process::Stdio;

use anyhow::Context as _;

use crate::cli::ci::{HoldArgs, HoldMode, TellArgs, log_line, publish_and_hold};
use crate::cli::publish::PublishArgs;

/// The variable the shells get with the step's exit code.
const STEP_EXIT_CODE_ENV: &str = "RENDEZVOUS_STEP_EXIT_CODE";

/// Arguments of `rendezvous run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Open shells only when COMMAND fails (the default).
    #[arg(long, conflicts_with = "always")]
    pub on_failure: bool,
    /// Open shells whatever COMMAND's exit code.
    #[arg(long)]
    pub always: bool,
    #[command(flatten)]
    pub publish: PublishArgs,
    #[command(flatten)]
    pub hold: HoldArgs,
    #[command(flatten)]
    pub tell: TellArgs,
    /// The program each shell runs (default: $SHELL, else your login
    /// shell, else /bin/sh).
    #[arg(long, value_name = "PROGRAM")]
    pub shell: Option<String>,
    /// The CI step to run, with its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Runs the step, then holds if asked; returns the exit code.
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    // Checked before the step runs, so that a typo fails fast.
    let builder = args.publish.builder()?;
    let (program, rest) = args
        .command
        .split_first()
        .context("no COMMAND given after --")?;
    let status = tokio::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::inherit())
        .status()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    let code = exit_code(status);
    if code == 0 && !args.always {
        return Ok(0);
    }
    if code == 0 {
        log_line("the step succeeded; opening a shell (--always)");
    } else {
        log_line(&format!(
            "the step failed with exit code {code}; opening a shell in this job"
        ));
    }
    let mut builder = builder.env(STEP_EXIT_CODE_ENV, code.to_string());
    if let Some(shell) = &args.shell {
        builder = builder.command(shell, Vec::<String>::new());
    }
    let end = match publish_and_hold(builder, HoldMode::Now(args.hold.options()), &args.tell).await
    {
        Ok(end) => end,
        Err(e) => {
            // The step's result matters more than the debugging aid.
            log_line(&format!("{e:#}"));
            return Ok(code);
        }
    };
    let exit = end.exit_code().unwrap_or(code);
    log_line(&format!("the job goes on; exit code {exit}"));
    Ok(exit)
}

/// The shell's convention: the code, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
