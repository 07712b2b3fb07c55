//! Telling the person where the shell is: the job's log, GitHub Actions'
//! job summary and a `::notice` annotation, GitLab CI's collapsible
//! section, and a link file.
//!
//! The link holds the task's secret (in its `#fragment`). With
//! `--no-link-in-log`, the log and the annotation show only the page
//! (`/t/TASK`, useless without the secret or a guest token), and the link
//! goes to the link file and the job summary only.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use rendezvous_host::Host;

use super::{TellArgs, log_line};

/// GitHub Actions sets this to `true`.
const GITHUB_ACTIONS_ENV: &str = "GITHUB_ACTIONS";
/// The file GitHub Actions shows as the step's summary (Markdown).
pub const GITHUB_STEP_SUMMARY_ENV: &str = "GITHUB_STEP_SUMMARY";
/// GitLab CI sets this to `true`.
const GITLAB_CI_ENV: &str = "GITLAB_CI";

/// What is announced: the link, and what may be said without its secret.
#[derive(Debug, Clone)]
pub struct Announcement {
    guest_url: String,
    /// The task ID.
    pub task: String,
    /// The host's name within the task.
    pub host: String,
}

impl Announcement {
    /// The announcement of `host`.
    pub fn new(host: &Host) -> Self {
        Self::from_parts(host.guest_url(), host.task_id(), host.name())
    }

    /// From a link as [`Host::guest_url`] makes it.
    pub fn from_parts(guest_url: String, task: &str, host: &str) -> Self {
        Self {
            guest_url,
            task: task.to_owned(),
            host: host.to_owned(),
        }
    }

    /// The link, with the secret in its fragment.
    pub fn guest_url(&self) -> &str {
        &self.guest_url
    }

    /// The task page without the secret (the link up to `#`).
    pub fn page_url(&self) -> &str {
        self.guest_url
            .split_once('#')
            .map_or(self.guest_url.as_str(), |(page, _)| page)
    }

    /// Tells the person: the log (and on GitLab a collapsible section),
    /// the GitHub summary and annotation, the link file. Failures to
    /// write a file are logged, not fatal: the job goes on.
    pub fn tell(&self, tell: &TellArgs) {
        let env = |name: &str| std::env::var(name).ok();
        let in_log = if tell.no_link_in_log {
            self.page_url()
        } else {
            self.guest_url()
        };
        let gitlab = env(GITLAB_CI_ENV).as_deref() == Some("true");
        if gitlab {
            gitlab_section(in_log, tell.no_link_in_log);
        } else {
            log_line(&format!("Open {in_log}"));
        }
        if tell.no_link_in_log {
            log_line("the link with its secret is not shown here (--no-link-in-log)");
        }
        if env(GITHUB_ACTIONS_ENV).as_deref() == Some("true") {
            // An annotation shows on the run's page, as public as the log.
            println!(
                "::notice title=Rendezvous::A shell is open in this job: {}",
                escape_annotation(in_log)
            );
        }
        if let Some(summary) = env(GITHUB_STEP_SUMMARY_ENV) {
            let text = summary_markdown(self);
            if let Err(e) = append(Path::new(&summary), &text, None) {
                log_line(&format!("cannot write the job summary {summary}: {e}"));
            }
        }
        if let Some(file) = &tell.link_file
            && let Err(e) = append(file, &format!("{}\n", self.guest_url), Some(0o600))
        {
            log_line(&format!("cannot write {}: {e}", file.display()));
        }
    }
}

/// The Markdown appended to GitHub's job summary.
pub fn summary_markdown(a: &Announcement) -> String {
    format!(
        "### Rendezvous: a shell in this job\n\n\
         [Open the shell]({url}) (task `{task}`, host `{host}`).\n\n\
         In the shell, `rendezvous continue` lets the job go on, \
         `rendezvous extend 30m` holds it longer.\n\n",
        url = a.guest_url,
        task = a.task,
        host = a.host,
    )
}

/// Prints a collapsed GitLab section holding the link.
fn gitlab_section(link: &str, page_only: bool) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "\x1b[0Ksection_start:{now}:rendezvous[collapsed=true]\r\x1b[0KRendezvous: a shell in this job\n"
    );
    let _ = writeln!(out, "rendezvous: Open {link}");
    if page_only {
        let _ = writeln!(out, "rendezvous: (the secret is not in the log)");
    }
    let _ = write!(out, "\x1b[0Ksection_end:{now}:rendezvous\r\x1b[0K\n");
    let _ = out.flush();
}

/// GitHub workflow commands end at a newline and treat `%` specially.
fn escape_annotation(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Appends `text` to `path`, creating it (with `mode` if given).
fn append(path: &Path, text: &str, mode: Option<u32>) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    if let Some(mode) = mode {
        options.mode(mode);
    }
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_url_has_no_secret() {
        let a = Announcement::from_parts(
            "https://rdv.example/t/build-1#secret=abc".into(),
            "build-1",
            "default",
        );
        assert_eq!(a.page_url(), "https://rdv.example/t/build-1");
        assert!(summary_markdown(&a).contains("(https://rdv.example/t/build-1#secret=abc)"));
        assert_eq!(escape_annotation("a%b\nc"), "a%25b%0Ac");
    }
}
