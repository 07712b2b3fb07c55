//! `GET /metrics` on an address of its own (`rendezvous serve
//! --metrics-listen`): the HTTP side of [`crate::metrics`].

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::TEXT_FORMAT;
use crate::registry::Registry;

/// `GET /metrics` for `registry`'s server, in the OpenMetrics text format.
/// Serve it on an address of its own (`--metrics-listen`), not the public
/// port: it needs no secret.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry)
}

/// Serves [`router`] on `listener` until the future is dropped.
///
/// # Errors
/// A failure to accept that is not about one connection.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry)).await
}

async fn scrape(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let text = registry.metrics().encode(registry.connected());
    (StatusCode::OK, [(header::CONTENT_TYPE, TEXT_FORMAT)], text)
}
