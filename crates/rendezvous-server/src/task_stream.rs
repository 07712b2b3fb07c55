//! A response stream that owns the task serving its request stream: the
//! task is aborted when the stream is dropped (the call ended or was
//! cancelled), so no reader outlives its call. The task may also end the
//! call with a status (a message it refused), which the peer then
//! receives instead of a plain end of stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;
use tonic::Status;

/// `stream`, plus the task that reads the call's requests.
pub(crate) struct TaskStream<S> {
    stream: S,
    /// Aborted on drop; never polled.
    _task: AbortOnDropHandle<()>,
    /// A status the task ends the call with; `None` once the task has let
    /// it go without one.
    ending: Option<oneshot::Receiver<Status>>,
    /// Set once the ending status has been sent: nothing follows it.
    ended: bool,
}

impl<S> TaskStream<S> {
    /// Ties `task` to `stream`'s lifetime.
    pub(crate) fn new(stream: S, task: tokio::task::JoinHandle<()>) -> Self {
        Self {
            stream,
            _task: AbortOnDropHandle::new(task),
            ending: None,
            ended: false,
        }
    }

    /// Ties `task` to `stream`'s lifetime; a status the task sends on
    /// `ending` is the call's last item. The task sends it before it ends
    /// what `stream` waits for, so the status always goes out.
    pub(crate) fn with_ending(
        stream: S,
        task: tokio::task::JoinHandle<()>,
        ending: oneshot::Receiver<Status>,
    ) -> Self {
        Self {
            ending: Some(ending),
            ..Self::new(stream, task)
        }
    }
}

impl<S, T> Stream for TaskStream<S>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        // The ending first: it was sent before the stream could see why.
        if let Some(ending) = &mut self.ending {
            match Pin::new(ending).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Err(_)) => self.ending = None,
                Poll::Pending => {}
            }
        }
        Pin::new(&mut self.stream).poll_next(cx)
    }
}
