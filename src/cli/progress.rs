//! Progress on a terminal: one spinner line on stderr, with the time spent,
//! while a long operation runs (the host waiting for its server, a CI hold,
//! each step of the bench). indicatif draws it only when stderr is a
//! terminal, so CI logs and pipes get the plain log lines alone.

use std::borrow::Cow;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the spinner redraws, in ms.
const TICK: Duration = Duration::from_millis(120);

/// A spinner line, cleared when dropped.
#[derive(Debug)]
pub struct Spinner(ProgressBar);

impl Spinner {
    /// Starts a spinner saying `message` (hidden unless stderr is a
    /// terminal).
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        // The template is a constant, so it parses; the default style is
        // only a fallback.
        let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_message(message);
        bar.enable_steady_tick(TICK);
        Self(bar)
    }

    /// Whether a spinner would be seen: stderr is a terminal.
    pub fn visible() -> bool {
        !ProgressDrawTarget::stderr().is_hidden()
    }

    /// Says `message` from now on.
    pub fn set_message(&self, message: impl Into<Cow<'static, str>>) {
        self.0.set_message(message);
    }

    /// Prints `line` to stderr above the spinner, which is drawn again
    /// below it.
    pub fn println(&self, line: &str) {
        self.0.suspend(|| eprintln!("{line}"));
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
