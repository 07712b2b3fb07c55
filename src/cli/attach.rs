//! `rendezvous attach`: a shell inside a CI job, in this terminal.
//!
//! Opens a new shell (or joins a session) over the bidi `Terminal` call,
//! then relays stdin to the session and the session's output to stdout
//! until the session ends, the user types `~.`, or the process is told to
//! stop. A broken connection is retried with backoff, resuming as the same
//! guest: output goes on where it stopped, and input typed meanwhile is
//! sent after the reconnect, each byte once. With stdin on a terminal, the
//! terminal is put in raw mode for the whole relay and restored on every
//! way out: return, error, panic, signal.

use std::io::{IsTerminal, Read, Write};
use std::sync::Once;

use anyhow::Context;
use rendezvous_guest::escape::{ESCAPE_HELP, Escape, EscapeDetector};
use rendezvous_guest::{
    AttachOptions, Client, Event, ExitStatus, HostName, ResumingTerminal, Role, Update,
    describe_exit, exit_code,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::cli::guest_args::GuestArgs;

/// Largest read from stdin, in bytes. A keystroke arrives as its own read
/// in raw mode; pasted or piped input comes in reads of up to this size.
const STDIN_READ_BYTES: usize = 8 * 1024;

/// Reads the stdin thread may queue before it waits for the relay, in
/// reads (so at most 4 × [`STDIN_READ_BYTES`] bytes).
const STDIN_QUEUE_READS: usize = 4;

/// Signal numbers for the exit code 128 + N when a signal stops `attach`
/// (the same on Linux and macOS).
const SIGHUP: i32 = 1;
/// See [`SIGHUP`].
const SIGTERM: i32 = 15;

/// Arguments of `rendezvous attach`.
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// The host within the task [default: the host named "default"].
    #[arg(long, value_name = "NAME")]
    host: Option<HostName>,
    /// Join this session (see `rendezvous sessions`) instead of opening a
    /// new shell.
    #[arg(long, value_name = "ID")]
    session: Option<String>,
}

/// How the relay ended.
enum Ending {
    /// The session's process ended.
    Exited(ExitStatus),
    /// The user typed `~.`.
    Detached,
    /// This process got the signal with this number.
    Signalled(i32),
}

/// Runs `rendezvous attach`; returns the process exit code: the session's
/// exit code when it ends (128 + N for signal N), 0 on detach.
pub async fn run(args: AttachArgs) -> anyhow::Result<i32> {
    // Without a terminal on stdin (a pipe, a test) there is no raw mode and
    // no escape sequences: stdin bytes all go to the session.
    let interactive = std::io::stdin().is_terminal();
    let (cols, rows) = terminal_size().unwrap_or((0, 0));
    let client = Client::connect_with(&args.guest.server, &args.guest.tls.options()?).await?;
    let options = AttachOptions {
        host_name: args.host,
        session_id: args.session,
        cols,
        rows,
        ..AttachOptions::new(args.guest.task_id, args.guest.secret)
    };
    let terminal = ResumingTerminal::attach(client, options).await?;
    let attached = terminal.attached();
    let may_write = attached.role() != Role::ReadOnly;
    eprintln!(
        "[rendezvous: attached to session {} on host {}{}{}]",
        attached.session_id,
        if attached.host_name.is_empty() {
            "default"
        } else {
            &attached.host_name
        },
        if may_write { "" } else { ", read-only" },
        if interactive {
            "; type ~. at the start of a line to detach, ~? for help"
        } else {
            ""
        },
    );

    let raw_mode = if interactive {
        Some(RawMode::enable()?)
    } else {
        None
    };
    let ending = relay(terminal, interactive, may_write).await;
    drop(raw_mode);

    match ending? {
        Ending::Exited(status) => {
            eprintln!("[rendezvous: {}]", describe_exit(&status));
            Ok(exit_code(&status))
        }
        Ending::Detached => {
            eprintln!("[rendezvous: detached]");
            Ok(0)
        }
        Ending::Signalled(number) => Ok(128 + number),
    }
}

/// Relays stdin → session and session → stdout until the session ends,
/// the user detaches, or SIGTERM/SIGHUP arrives.
async fn relay(
    mut terminal: ResumingTerminal,
    interactive: bool,
    may_write: bool,
) -> anyhow::Result<Ending> {
    let mut stdin = spawn_stdin_reader()?;
    let mut stdin_open = true;
    let mut escapes = EscapeDetector::new();
    let mut window_changes = signal(SignalKind::window_change())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    // Written synchronously: when stdout is slow this loop stops reading
    // events, and the server lets this guest lag instead of buffering.
    let mut stdout = std::io::stdout();

    loop {
        tokio::select! {
            update = terminal.next_update() => match update? {
                Some(Update::Event(Event::Output(output))) => write_all(&mut stdout, &output.data)?,
                Some(Update::Event(Event::Lagged(lagged))) => {
                    let marker = format!(
                        "\r\n[rendezvous: {} bytes skipped]\r\n",
                        lagged.missed_bytes
                    );
                    write_all(&mut stdout, marker.as_bytes())?;
                }
                // Another guest resized the session; this terminal's size is
                // its user's to choose.
                Some(Update::Event(Event::Size(_))) => {}
                Some(Update::Event(Event::HostState(state))) => {
                    let line = if state.reconnecting {
                        format!("\r\n[rendezvous: {}]\r\n", state.message)
                    } else {
                        "\r\n[rendezvous: the host is back]\r\n".to_owned()
                    };
                    write_all(&mut std::io::stderr(), line.as_bytes())?;
                }
                Some(Update::Event(Event::Exit(status))) => return Ok(Ending::Exited(status)),
                Some(Update::Disconnected { reason, retry_in }) => {
                    let line = format!(
                        "\r\n[rendezvous: connection lost ({reason}); reconnecting in {:.1} s{}]\r\n",
                        retry_in.as_secs_f64(),
                        if interactive { "; ~. detaches" } else { "" },
                    );
                    write_all(&mut std::io::stderr(), line.as_bytes())?;
                }
                Some(Update::Reconnected { resumed, lost_inputs }) => {
                    let line = if !resumed {
                        "[rendezvous: reconnected as a new guest; input typed just before the break may be lost]\r\n".to_owned()
                    } else if lost_inputs > 0 {
                        format!("[rendezvous: reconnected; {lost_inputs} inputs from before the break were lost]\r\n")
                    } else {
                        "[rendezvous: reconnected]\r\n".to_owned()
                    };
                    write_all(&mut std::io::stderr(), line.as_bytes())?;
                }
                None => anyhow::bail!("the server ended the stream before the session ended"),
            },
            read = stdin.recv(), if stdin_open => {
                // At EOF the session keeps running until it exits: a piped
                // script ends with its own `exit`.
                let Some(bytes) = read else {
                    stdin_open = false;
                    continue;
                };
                let (input, escape) = if interactive {
                    escapes.feed(&bytes)
                } else {
                    (bytes, None)
                };
                if may_write && !input.is_empty() {
                    terminal.send_input(input).await?;
                }
                match escape {
                    Some(Escape::Detach) => return Ok(Ending::Detached),
                    Some(Escape::Help) => {
                        let mut stderr = std::io::stderr();
                        write_all(&mut stderr, ESCAPE_HELP.as_bytes())?;
                    }
                    None => {}
                }
            }
            _ = window_changes.recv() => {
                if may_write && let Some((cols, rows)) = terminal_size() {
                    terminal.resize(cols, rows).await;
                }
            }
            _ = terminate.recv() => return Ok(Ending::Signalled(SIGTERM)),
            _ = hangup.recv() => return Ok(Ending::Signalled(SIGHUP)),
        }
    }
}

/// The local terminal's size in character cells, if there is a terminal.
fn terminal_size() -> Option<(u32, u32)> {
    crossterm::terminal::size()
        .ok()
        .map(|(cols, rows)| (u32::from(cols), u32::from(rows)))
}

/// Writes `data` and flushes, so output shows as it arrives.
fn write_all(out: &mut impl Write, data: &[u8]) -> anyhow::Result<()> {
    out.write_all(data)
        .and_then(|()| out.flush())
        .context("cannot write to the terminal")
}

/// Reads stdin on a thread of its own and hands the bytes over a bounded
/// channel ([`STDIN_QUEUE_READS`] reads). A plain thread, not
/// `spawn_blocking`: a read from a terminal cannot be cancelled, and the
/// runtime would wait for it on shutdown. The thread ends at EOF, on a read
/// error, when the receiver is gone (after its next read), or with the
/// process.
fn spawn_stdin_reader() -> anyhow::Result<mpsc::Receiver<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(STDIN_QUEUE_READS);
    std::thread::Builder::new()
        .name("attach-stdin".to_owned())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0; STDIN_READ_BYTES];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })
        .context("cannot start the stdin reader")?;
    Ok(rx)
}

/// The terminal in raw mode while this lives. Dropping it restores the
/// terminal; a panic hook restores it too, before the panic message prints.
struct RawMode;

impl RawMode {
    fn enable() -> anyhow::Result<Self> {
        static PANIC_HOOK: Once = Once::new();
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // A no-op when raw mode is already off.
                let _ = crossterm::terminal::disable_raw_mode();
                previous(info);
            }));
        });
        crossterm::terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        Ok(Self)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}
