//! Times every RPC, gRPC and gRPC-Web alike, and counts it by method and
//! status code in [`Metrics::rpcs`]: a middleware inside the gRPC-Web
//! translation, so that both transports look the same to it (status in
//! the response headers for a trailers-only answer, else in the trailers).
//!
//! A streaming RPC ends when its response body does: a call the client
//! drops before the trailers counts as `CANCELLED`, as gRPC's clients say.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::metrics::Metrics;

/// The middleware (`axum::middleware::from_fn_with_state`, state
/// `metrics`).
pub async fn meter(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let method = Metrics::rpc_method(request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let mut done = Done {
        metrics,
        method,
        started,
        recorded: false,
    };
    if let Some(code) = status_in(&parts.headers) {
        // Trailers-only: the call is over with its headers.
        done.record(code);
        return Response::from_parts(parts, body);
    }
    Response::from_parts(parts, Body::new(MeteredBody { inner: body, done }))
}

/// The gRPC status code in `headers`, if they carry one.
fn status_in(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(tonic::Code::from)
}

/// One call's record, made once: at its status, or as `CANCELLED` when
/// dropped before it.
struct Done {
    metrics: Arc<Metrics>,
    method: &'static str,
    started: Instant,
    recorded: bool,
}

impl Done {
    fn record(&mut self, code: tonic::Code) {
        if !self.recorded {
            self.recorded = true;
            self.metrics
                .rpc_done(self.method, code, self.started.elapsed());
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.record(tonic::Code::Cancelled);
    }
}

/// A response body that records its call's end.
struct MeteredBody {
    inner: Body,
    done: Done,
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    self.done.record(code);
                }
            }
            // A body that fails, or ends with no status: the client sees
            // an error it cannot name.
            Poll::Ready(Some(Err(_)) | None) => self.done.record(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
