//! Reading what a PTY shows, as a person at the terminal would: the real
//! binary runs on the PTY's other side (`pty_process::Command`).

use tokio::io::AsyncReadExt as _;

use crate::DEADLINE;

/// Reads `pty` until what it showed since the last call (kept in `seen`)
/// contains `needle`, at most [`DEADLINE`]; returns that output up to the
/// end of `needle` and keeps the rest in `seen` for the next call. Panics
/// with what the PTY showed when `needle` does not come.
pub async fn until(pty: &mut pty_process::Pty, seen: &mut Vec<u8>, needle: &str) -> String {
    let found = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(seen).into_owned();
            if let Some(at) = text.find(needle) {
                seen.drain(..at + needle.len());
                return text[..at + needle.len()].to_owned();
            }
            match pty.read(&mut buf).await {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => panic!("the PTY closed before {needle:?}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "no {needle:?} in time; the PTY showed {:?}",
            String::from_utf8_lossy(seen)
        )
    })
}
