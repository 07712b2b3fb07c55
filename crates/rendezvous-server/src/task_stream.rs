//! A response stream that owns the task serving its request stream: the
//! task is aborted when the stream is dropped (the call ended or was
//! cancelled), so no reader outlives its call.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio_util::task::AbortOnDropHandle;

/// `stream`, plus the task that reads the call's requests.
pub(crate) struct TaskStream<S> {
    stream: S,
    /// Aborted on drop; never polled.
    _task: AbortOnDropHandle<()>,
}

impl<S> TaskStream<S> {
    /// Ties `task` to `stream`'s lifetime.
    pub(crate) fn new(stream: S, task: tokio::task::JoinHandle<()>) -> Self {
        Self {
            stream,
            _task: AbortOnDropHandle::new(task),
        }
    }
}

impl<S: Stream + Unpin> Stream for TaskStream<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}
