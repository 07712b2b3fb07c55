//! `rendezvous completions SHELL` and `rendezvous man DIR`: shell
//! completions (clap_complete) and man pages (clap_mangen), generated from
//! the same command definition that parses the flags, so they never
//! disagree with `--help`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Command;

/// Arguments of `rendezvous completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for. Install e.g. with
    /// `rendezvous completions bash > /etc/bash_completion.d/rendezvous`.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `rendezvous man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing):
    /// rendezvous.1 and one rendezvous-COMMAND.1 per subcommand.
    #[arg(value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// Prints the completion script of `args.shell` for `cmd` to stdout.
///
/// # Errors
/// Stdout cannot be written, except a closed pipe (`| head`), which ends
/// the output quietly.
pub fn completions(args: &CompletionsArgs, mut cmd: Command) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "rendezvous", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the completion script")
        }
        _ => Ok(()),
    }
}

/// Writes the man pages of `cmd` and its subcommands into `args.out_dir`;
/// prints each file written.
///
/// # Errors
/// A directory or file that cannot be written.
pub fn man(args: &ManArgs, cmd: Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    let written = clap_mangen::generate_to(cmd, &args.out_dir)
        .with_context(|| format!("cannot write the man pages into {}", args.out_dir.display()));
    written?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&args.out_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "1"))
        .collect();
    pages.sort();
    for page in pages {
        println!("{}", page.display());
    }
    Ok(())
}
