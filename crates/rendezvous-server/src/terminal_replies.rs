//! Recognises the replies a terminal emulator sends by itself to queries in
//! the output, so that a shared session forwards them from one guest only.
//!
//! When a program prints a query such as DA (`ESC [ c`) or DSR/CPR
//! (`ESC [ 6 n`), every attached terminal (each browser's xterm.js, each
//! native terminal) answers it through the same path as keystrokes. With N
//! guests the program would read N answers. The session therefore strips
//! these replies from every guest's input except its primary writer's.
//!
//! Stripped (what xterm.js and common terminals send unprompted):
//! - every OSC string (`ESC ] … BEL` or `ESC ] … ESC \`), e.g. OSC 10/11
//!   colour replies: keyboards do not produce OSC;
//! - every DCS string (`ESC P … ESC \`), e.g. DECRQSS replies (`ESC P 1 $ r
//!   … ESC \`);
//! - CSI replies: DA1/DA2 (`ESC [ ? … c`, `ESC [ > … c`), CPR and DECXCPR
//!   (`ESC [ row ; col R`), DSR status (`ESC [ … n`), DECRPM mode reports
//!   (`ESC [ … $ y`) and window reports (`ESC [ … t`).
//!
//! Everything else passes: keys (arrows, function keys, bracketed paste
//! markers), mouse and focus reports, which belong to the guest that made
//! them. One ambiguity is known: Shift/Ctrl/Alt+F3 in xterm's encoding
//! (`ESC [ 1 ; m R`) has the form of a CPR, so a non-primary guest's
//! modified F3 is dropped. A sequence cut off at the end of one input
//! request passes unchanged (it cannot be classified).

use std::borrow::Cow;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// Whether a complete CSI sequence is a terminal's reply rather than a key.
fn is_csi_reply(params: &[u8], intermediates: &[u8], final_byte: u8) -> bool {
    let private = params.first().copied();
    match (final_byte, intermediates) {
        // DA1 (`?`) and DA2 (`>`) replies; a bare `ESC [ c` is the query.
        (b'c', []) => matches!(private, Some(b'?' | b'>')),
        // CPR `row;col R`, DECXCPR `? row;col R`.
        (b'R', []) => params.contains(&b';'),
        // DSR replies (`0 n` status OK, `3 n` malfunction, …).
        (b'n', []) => !params.is_empty(),
        // DECRPM: mode reports.
        (b'y', [b'$']) => true,
        // XTWINOPS reports (size in cells or pixels, position, state).
        (b't', []) => params.contains(&b';') || params == b"1" || params == b"2",
        _ => false,
    }
}

/// Finds the end (exclusive) of a string control sequence (OSC or DCS)
/// whose body starts at `from`: after BEL (OSC only) or `ESC \`.
fn string_end(input: &[u8], from: usize, bel_ends: bool) -> Option<usize> {
    let mut i = from;
    while i < input.len() {
        match input[i] {
            BEL if bel_ends => return Some(i + 1),
            ESC if input.get(i + 1) == Some(&b'\\') => return Some(i + 2),
            _ => i += 1,
        }
    }
    None
}

/// Finds the end (exclusive) of a CSI sequence whose parameters start at
/// `from`, if it is a reply.
fn csi_reply_end(input: &[u8], from: usize) -> Option<usize> {
    let params_end = from
        + input[from..]
            .iter()
            .take_while(|b| (0x30..=0x3f).contains(*b))
            .count();
    let inter_end = params_end
        + input[params_end..]
            .iter()
            .take_while(|b| (0x20..=0x2f).contains(*b))
            .count();
    let final_byte = *input.get(inter_end)?;
    if !(0x40..=0x7e).contains(&final_byte) {
        return None;
    }
    is_csi_reply(
        &input[from..params_end],
        &input[params_end..inter_end],
        final_byte,
    )
    .then_some(inter_end + 1)
}

/// `input` without the terminal's automatic replies (see the module docs).
/// Borrows when nothing was stripped.
pub fn strip(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.contains(&ESC) {
        return Cow::Borrowed(input);
    }
    let mut out: Option<Vec<u8>> = None;
    let mut kept_until = 0;
    let mut i = 0;
    while i < input.len() {
        if input[i] != ESC {
            i += 1;
            continue;
        }
        let end = match input.get(i + 1) {
            Some(b']') => string_end(input, i + 2, true),
            Some(b'P') => string_end(input, i + 2, false),
            Some(b'[') => csi_reply_end(input, i + 2),
            _ => None,
        };
        match end {
            Some(end) => {
                let buf = out.get_or_insert_with(|| Vec::with_capacity(input.len()));
                buf.extend_from_slice(&input[kept_until..i]);
                kept_until = end;
                i = end;
            }
            None => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(input),
        Some(mut buf) => {
            buf.extend_from_slice(&input[kept_until..]);
            Cow::Owned(buf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripped(input: &[u8]) -> Vec<u8> {
        strip(input).into_owned()
    }

    #[test]
    fn replies_are_stripped() {
        assert_eq!(stripped(b"\x1b[?1;2c"), b"");
        assert_eq!(stripped(b"\x1b[>0;276;0c"), b"");
        assert_eq!(stripped(b"a\x1b[12;40Rb"), b"ab");
        assert_eq!(stripped(b"\x1b[0n"), b"");
        assert_eq!(stripped(b"\x1b[?2004;1$y"), b"");
        assert_eq!(stripped(b"\x1b[8;24;80t"), b"");
        assert_eq!(stripped(b"\x1b]11;rgb:0000/0000/0000\x07x"), b"x");
        assert_eq!(stripped(b"\x1b]10;rgb:ffff/ffff/ffff\x1b\\"), b"");
        assert_eq!(stripped(b"\x1bP1$r0m\x1b\\ls\r"), b"ls\r");
    }

    #[test]
    fn keys_pass() {
        for key in [
            &b"\x1b[A"[..],
            b"\x1b[1;5C",
            b"\x1b[3~",
            b"\x1b[15~",
            b"\x1bOP",
            b"\x1b[200~pasted\x1b[201~",
            b"\x1b[<0;10;5M",
            b"\x1b[I",
            b"\x1b",
            b"echo hi\r",
        ] {
            assert_eq!(stripped(key), key, "{key:?}");
            assert!(matches!(strip(key), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn cut_off_sequences_pass_unchanged() {
        assert_eq!(stripped(b"\x1b[?1;2"), b"\x1b[?1;2");
        assert_eq!(stripped(b"\x1b]11;rgb:00"), b"\x1b]11;rgb:00");
    }
}
