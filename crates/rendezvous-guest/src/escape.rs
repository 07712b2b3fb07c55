//! ssh-style escape sequences in typed input: `~.` at the start of a line
//! detaches, `~?` asks for help, `~~` sends one `~`.
//!
//! A pure state machine over input bytes, so the terminal front end only
//! feeds it what it reads and acts on what it returns.

/// The escape character. Recognised only at the start of a line.
pub const ESCAPE_CHAR: u8 = b'~';

/// The help text for `~?`, with `\r\n` line ends so it prints right in raw
/// mode.
pub const ESCAPE_HELP: &str = "Supported escape sequences (after a newline):\r\n \
    ~.  - detach\r\n \
    ~?  - this message\r\n \
    ~~  - send the escape character\r\n";

/// An escape sequence the user typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `~.`: leave the session (it keeps running).
    Detach,
    /// `~?`: show [`ESCAPE_HELP`].
    Help,
}

/// Where in a line the input is, as far as escapes care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of input or right after `\r` or `\n`: `~` starts an
    /// escape.
    LineStart,
    /// Inside a line: `~` is an ordinary byte.
    MidLine,
    /// After a `~` at the start of a line, which is held back until the
    /// next byte says what it means.
    Tilde,
}

/// Finds escape sequences in a stream of typed bytes.
#[derive(Debug, Clone)]
pub struct EscapeDetector {
    state: State,
}

impl Default for EscapeDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl EscapeDetector {
    /// A detector at the start of a line.
    pub fn new() -> Self {
        Self {
            state: State::LineStart,
        }
    }

    /// Feeds typed bytes. Returns the bytes to send to the session and the
    /// escape found, if any. After [`Escape::Detach`] the rest of `input` is
    /// dropped; after [`Escape::Help`] it is still processed, and a later
    /// `Detach` in the same input wins.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, Option<Escape>) {
        let mut send = Vec::with_capacity(input.len() + 1);
        let mut escape = None;
        for &byte in input {
            self.state = match (self.state, byte) {
                (State::LineStart, ESCAPE_CHAR) => State::Tilde,
                (State::Tilde, b'.') => return (send, Some(Escape::Detach)),
                (State::Tilde, b'?') => {
                    escape = Some(Escape::Help);
                    State::LineStart
                }
                (State::Tilde, ESCAPE_CHAR) => {
                    send.push(ESCAPE_CHAR);
                    State::MidLine
                }
                (State::Tilde, other) => {
                    send.extend_from_slice(&[ESCAPE_CHAR, other]);
                    after(other)
                }
                (_, other) => {
                    send.push(other);
                    after(other)
                }
            };
        }
        (send, escape)
    }
}

/// The state after sending an ordinary byte.
fn after(byte: u8) -> State {
    if byte == b'\r' || byte == b'\n' {
        State::LineStart
    } else {
        State::MidLine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(input: &[u8]) -> (Vec<u8>, Option<Escape>) {
        EscapeDetector::new().feed(input)
    }

    #[test]
    fn tilde_dot_at_the_very_start_detaches() {
        assert_eq!(feed(b"~."), (vec![], Some(Escape::Detach)));
    }

    #[test]
    fn tilde_dot_after_a_newline_detaches_and_drops_the_rest() {
        assert_eq!(
            feed(b"ls\r~.more"),
            (b"ls\r".to_vec(), Some(Escape::Detach))
        );
        assert_eq!(feed(b"ls\n~."), (b"ls\n".to_vec(), Some(Escape::Detach)));
    }

    #[test]
    fn tilde_dot_mid_line_is_ordinary_input() {
        assert_eq!(feed(b"a~."), (b"a~.".to_vec(), None));
    }

    #[test]
    fn double_tilde_sends_one_tilde() {
        assert_eq!(feed(b"~~"), (b"~".to_vec(), None));
        // The line is no longer at its start: a following "~." is ordinary.
        assert_eq!(feed(b"~~~."), (b"~~.".to_vec(), None));
    }

    #[test]
    fn tilde_then_another_byte_sends_both() {
        assert_eq!(feed(b"~x"), (b"~x".to_vec(), None));
        assert_eq!(feed(b"~\r~."), (b"~\r".to_vec(), Some(Escape::Detach)));
    }

    #[test]
    fn escape_may_span_reads() {
        let mut detector = EscapeDetector::new();
        assert_eq!(detector.feed(b"echo\r"), (b"echo\r".to_vec(), None));
        assert_eq!(detector.feed(b"~"), (vec![], None));
        assert_eq!(detector.feed(b"."), (vec![], Some(Escape::Detach)));

        let mut detector = EscapeDetector::new();
        assert_eq!(detector.feed(b"~"), (vec![], None));
        assert_eq!(detector.feed(b"q"), (b"~q".to_vec(), None));
    }

    #[test]
    fn tilde_question_mark_asks_for_help_and_stays_at_line_start() {
        assert_eq!(feed(b"~?"), (vec![], Some(Escape::Help)));
        assert_eq!(feed(b"~?~."), (vec![], Some(Escape::Detach)));
        assert_eq!(feed(b"~?ab"), (b"ab".to_vec(), Some(Escape::Help)));
    }

    #[test]
    fn plain_input_passes_through_unchanged() {
        let input: Vec<u8> = (0..=255).filter(|&b| b != ESCAPE_CHAR).collect();
        let mut detector = EscapeDetector::new();
        detector.feed(b"x");
        assert_eq!(detector.feed(&input), (input.clone(), None));
    }
}
