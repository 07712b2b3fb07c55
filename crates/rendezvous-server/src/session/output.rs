//! A session's retained output: the last bytes of its output stream, as a
//! queue of shared chunks tagged with their offsets. It knows nothing of
//! guests or locks; [`super::Session`] holds it behind its lock.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Output chunks smaller than this many bytes are merged into the previous
/// retained chunk while that stays under the same size, so that a stream of
/// tiny writes (keystroke echoes) costs one chunk per 4 KiB, not one per
/// write.
pub const MERGE_CHUNK_BYTES: usize = 4 * 1024;

/// The retained output of one session: at most `limit` bytes, oldest
/// dropped first, each byte at the offset it had in the stream.
#[derive(Debug)]
pub(crate) struct RetainedOutput {
    /// (offset of the first byte, chunk), oldest first.
    chunks: VecDeque<(u64, Bytes)>,
    /// Sum of the chunks' lengths, at most `limit`.
    bytes: usize,
    /// Offset one past the last byte of output: the stream's length.
    end: u64,
    /// Bytes kept, at most (`RelayConfig::retained_output_bytes`).
    limit: usize,
}

/// What a read at a cursor finds. Output is still in slices of the retained
/// chunks (reference counts, no copy), so that the caller can join them
/// after releasing its lock ([`Slices::join`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// The cursor is older than the oldest retained byte: this many bytes
    /// are gone.
    Lagged(u64),
    /// The cursor is at the end: nothing to read.
    AtEnd,
    /// Output from the cursor on.
    Output(Slices),
}

/// Output at `offset`: the slice of the chunk that holds it, then slices of
/// the chunks after it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Slices {
    /// Offset of the first byte.
    pub(crate) offset: u64,
    /// The slice of the chunk that holds the cursor.
    head: Bytes,
    /// Slices of the later chunks, in order (empty for a guest that keeps
    /// up).
    rest: Vec<Bytes>,
    /// Their total length, in bytes.
    pub(crate) len: usize,
}

impl Slices {
    /// The bytes as one `Bytes`: the one slice as it is, without a copy (a
    /// guest that keeps up), or output that piled up joined into one
    /// message (coalescing; one copy).
    pub(crate) fn join(self) -> Bytes {
        if self.rest.is_empty() {
            return self.head;
        }
        let mut joined = BytesMut::with_capacity(self.len);
        for part in std::iter::once(self.head).chain(self.rest) {
            joined.extend_from_slice(&part);
        }
        joined.freeze()
    }
}

impl RetainedOutput {
    /// Empty output that will keep at most `limit` bytes.
    #[cfg(test)]
    pub(crate) fn new(limit: usize) -> Self {
        Self::starting_at(limit, 0)
    }

    /// Empty output whose first byte will have offset `start` (a session
    /// restored from its host after a restart).
    pub(crate) fn starting_at(limit: usize, start: u64) -> Self {
        Self {
            chunks: VecDeque::new(),
            bytes: 0,
            end: start,
            limit,
        }
    }

    /// Offset one past the last byte: the stream's length.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Offset of the oldest retained byte.
    pub(crate) fn start(&self) -> u64 {
        self.end - self.bytes as u64
    }

    /// Appends `data` (copied once), then drops the oldest bytes beyond the
    /// limit; a chunk cut in two keeps its tail as a slice.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let offset = self.end;
        match self.chunks.back_mut() {
            Some((_, last)) if last.len() + data.len() <= MERGE_CHUNK_BYTES => {
                let mut joined = BytesMut::with_capacity(last.len() + data.len());
                joined.extend_from_slice(last);
                joined.extend_from_slice(data);
                *last = joined.freeze();
            }
            _ => self
                .chunks
                .push_back((offset, Bytes::copy_from_slice(data))),
        }
        self.end += data.len() as u64;
        self.bytes += data.len();
        while self.bytes > self.limit {
            let excess = self.bytes - self.limit;
            let Some((off, front)) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= excess {
                self.bytes -= front.len();
                self.chunks.pop_front();
            } else {
                *front = front.slice(excess..);
                *off += excess as u64;
                self.bytes -= excess;
            }
        }
    }

    /// What a reader at `cursor` gets: at most `max` bytes from it on, or
    /// how many bytes it missed, or nothing at the end.
    pub(crate) fn read(&self, cursor: u64, max: usize) -> Found {
        let start = self.start();
        if cursor < start {
            return Found::Lagged(start - cursor);
        }
        if cursor >= self.end || max == 0 {
            return Found::AtEnd;
        }
        // The first chunk that holds `cursor`.
        let first = self
            .chunks
            .partition_point(|(off, chunk)| off + chunk.len() as u64 <= cursor);
        let mut slices = self.chunks.range(first..).scan(0, |len, (off, chunk)| {
            if *len == max {
                return None;
            }
            let skip = (cursor.max(*off) - off) as usize;
            let take = (chunk.len() - skip).min(max - *len);
            *len += take;
            Some(chunk.slice(skip..skip + take))
        });
        let Some(head) = slices.next() else {
            return Found::AtEnd;
        };
        // Allocates only when output piled up (a second slice).
        let rest: Vec<Bytes> = slices.collect();
        Found::Output(Slices {
            offset: cursor,
            len: head.len() + rest.iter().map(Bytes::len).sum::<usize>(),
            head,
            rest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(found: Found) -> (u64, Bytes) {
        match found {
            Found::Output(slices) => (slices.offset, slices.join()),
            other => panic!("expected output, got {other:?}"),
        }
    }

    #[test]
    fn output_is_read_at_offsets_and_joined_up_to_the_limit() {
        let mut out = RetainedOutput::new(1024);
        out.push(b"hello ");
        out.push(b"world");
        assert_eq!(
            output(out.read(0, 100)),
            (0, Bytes::from_static(b"hello world"))
        );
        assert_eq!(output(out.read(3, 4)), (3, Bytes::from_static(b"lo w")));
        assert_eq!(out.read(11, 100), Found::AtEnd);
        assert_eq!(out.end(), 11);
    }

    #[test]
    fn a_reader_that_keeps_up_gets_a_slice_of_the_stored_chunk() {
        let mut out = RetainedOutput::new(1 << 20);
        let big = vec![b'x'; MERGE_CHUNK_BYTES * 2];
        out.push(&big);
        let (_, a) = output(out.read(0, usize::MAX));
        let (_, b) = output(out.read(0, usize::MAX));
        // Both are views of one stored chunk: the same memory.
        assert_eq!(a.as_ptr(), b.as_ptr());
    }

    #[test]
    fn tiny_writes_are_merged_into_one_chunk() {
        let mut out = RetainedOutput::new(1 << 20);
        for _ in 0..100 {
            out.push(b"x");
        }
        assert_eq!(out.chunks.len(), 1);
        assert_eq!(output(out.read(0, 1000)).1.len(), 100);
    }

    #[test]
    fn the_oldest_bytes_go_first_and_a_late_reader_is_told_how_many() {
        let mut out = RetainedOutput::new(16);
        out.push(&[b'a'; 10]);
        out.push(&[b'b'; 10]);
        assert_eq!(out.start(), 4);
        assert_eq!(out.bytes, 16);
        assert_eq!(out.read(0, 100), Found::Lagged(4));
        let (offset, data) = output(out.read(4, 100));
        assert_eq!(offset, 4);
        assert_eq!(&data[..], b"aaaaaabbbbbbbbbb");
    }
}
