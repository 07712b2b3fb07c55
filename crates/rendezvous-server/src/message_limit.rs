//! The message-size limit of every RPC, said by name.
//!
//! tonic refuses a request message over its decoding limit with
//! `OUT_OF_RANGE` and a text of its own, before any handler runs, so a
//! client cannot tell which limit it hit or what it is. This layer sits
//! between gRPC-Web's translation and tonic, reads the 5-byte prefix of
//! each gRPC message as the request body streams by, and refuses a message
//! whose length is over [`MAX_MESSAGE_BYTES`] before tonic sees its prefix:
//! the body fails with a `RESOURCE_EXHAUSTED` [`Status`] naming the limit
//! and its value, and tonic hands that status on as it is. A unary or
//! server-streaming call fails with it; a streaming handler reads it from
//! its request stream and ends the call with it. Messages before the
//! refused one are delivered whole. tonic's own limit, set to the same
//! value, stays behind it as a backstop.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::{Request, State};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use rendezvous_proto::message_size::MAX_MESSAGE_BYTES;
use tonic::Status;

use crate::config::limit_name;
use crate::metrics::Metrics;

/// Bytes of gRPC's message prefix: a compression flag, then the message's
/// length as a big-endian `u32`.
const PREFIX_BYTES: usize = 5;

/// The `RESOURCE_EXHAUSTED` status for a message of `len` bytes.
fn too_large(len: u64) -> Status {
    Status::resource_exhausted(format!(
        "limit reached: {} is {MAX_MESSAGE_BYTES}; this message has {len} bytes: \
         send less in one message",
        limit_name::MESSAGE_BYTES
    ))
}

/// Axum middleware for the gRPC routes: gives the request a body that
/// refuses messages over [`MAX_MESSAGE_BYTES`], counted in `metrics`.
pub(crate) async fn limit_messages(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
) -> Request {
    request.map(|body| Body::new(LimitedBody::new(body, metrics)))
}

/// A gRPC request body that fails at the first message over the limit.
struct LimitedBody {
    inner: Body,
    /// The prefix of the message being read, `prefix_len` bytes of it so
    /// far (it may span chunks).
    prefix: [u8; PREFIX_BYTES],
    prefix_len: usize,
    /// Bytes of the current message still to come after its prefix.
    remaining: u64,
    /// The refusal, returned after the bytes that came before it.
    refused: Option<Status>,
    /// Set once the refusal has been returned: the body ends there.
    failed: bool,
    metrics: Arc<Metrics>,
}

impl LimitedBody {
    fn new(inner: Body, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            prefix: [0; PREFIX_BYTES],
            prefix_len: 0,
            remaining: 0,
            refused: None,
            failed: false,
            metrics,
        }
    }

    /// Follows the framing through `data`. Returns where to cut it when a
    /// message in it is over the limit: the start of that message's prefix
    /// in `data` (0 when the prefix began in an earlier chunk), with the
    /// refusal.
    fn scan(&mut self, data: &[u8]) -> Option<(usize, Status)> {
        let mut at = 0;
        // Where the current prefix began in this chunk.
        let mut prefix_start = 0;
        while at < data.len() {
            if self.remaining > 0 {
                let left = (data.len() - at) as u64;
                let take = self.remaining.min(left);
                // `take` is at most `left`, a usize.
                at += usize::try_from(take).unwrap_or(data.len() - at);
                self.remaining -= take;
                continue;
            }
            if self.prefix_len == 0 {
                prefix_start = at;
            }
            self.prefix[self.prefix_len] = data[at];
            self.prefix_len += 1;
            at += 1;
            if self.prefix_len == PREFIX_BYTES {
                self.prefix_len = 0;
                let [_, a, b, c, d] = self.prefix;
                let len = u64::from(u32::from_be_bytes([a, b, c, d]));
                if len > MAX_MESSAGE_BYTES as u64 {
                    return Some((prefix_start, too_large(len)));
                }
                self.remaining = len;
            }
        }
        None
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(status) = this.refused.take() {
            this.failed = true;
            return Poll::Ready(Some(Err(Box::new(status))));
        }
        if this.failed {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        let Some((cut, status)) = this.scan(&data) else {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        };
        tracing::info!(%status, "request message refused");
        this.metrics.refused_at(limit_name::MESSAGE_BYTES);
        if cut == 0 {
            this.failed = true;
            return Poll::Ready(Some(Err(Box::new(status))));
        }
        this.refused = Some(status);
        Poll::Ready(Some(Ok(Frame::data(data.slice(..cut)))))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || (self.refused.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        // A refusal cuts the body short: only the upper bound holds.
        let mut hint = SizeHint::new();
        if let Some(upper) = self.inner.size_hint().upper() {
            hint.set_upper(upper);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(len: u32) -> Vec<u8> {
        let mut frame = vec![0u8];
        frame.extend_from_slice(&len.to_be_bytes());
        frame
    }

    fn body() -> LimitedBody {
        LimitedBody::new(Body::empty(), Arc::new(Metrics::new()))
    }

    #[test]
    fn messages_within_the_limit_pass_across_chunks() {
        let mut body = body();
        let mut stream = framed(3);
        stream.extend_from_slice(b"abc");
        stream.extend(framed(MAX_MESSAGE_BYTES as u32));
        // Split everywhere, including inside a prefix.
        for chunk in stream.chunks(2) {
            assert!(body.scan(chunk).is_none());
        }
        assert_eq!(body.remaining, MAX_MESSAGE_BYTES as u64);
    }

    #[test]
    fn a_message_over_the_limit_is_cut_at_its_prefix_and_named() {
        let mut body = body();
        let mut stream = framed(2);
        stream.extend_from_slice(b"ok");
        stream.extend(framed(MAX_MESSAGE_BYTES as u32 + 1));
        let (cut, status) = body.scan(&stream).expect("refused");
        assert_eq!(cut, 7);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status
                .message()
                .contains(&format!("bytes per message is {MAX_MESSAGE_BYTES}")),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_prefix_split_across_chunks_is_cut_at_the_chunk_start() {
        let mut body = body();
        let prefix = framed(u32::MAX);
        assert!(body.scan(&prefix[..3]).is_none());
        let (cut, _) = body.scan(&prefix[3..]).expect("refused");
        assert_eq!(cut, 0);
    }
}
