//! Plain HTTP routes on the same port as gRPC: the task page, the web
//! guest's assets (embedded in the binary), and health checks.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rendezvous_proto::ids::TaskId;
use rust_embed::RustEmbed;

/// The built web guest (web-guest/dist), embedded at compile time.
#[derive(RustEmbed)]
#[folder = "../../web-guest/dist/"]
struct WebGuest;

/// Content-Security-Policy of the task page, before `frame-ancestors`:
/// everything from this server; xterm.js sets inline styles.
const TASK_PAGE_CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'";

/// The task page's framing headers: CSP with `frame-ancestors` (the listed
/// origins, or `'none'`), and `X-Frame-Options: DENY` for old browsers when
/// none may frame it.
#[derive(Debug, Clone)]
struct Framing {
    csp: HeaderValue,
    deny: bool,
}

impl Framing {
    fn new(ancestors: &[HeaderValue]) -> Self {
        let list = if ancestors.is_empty() {
            "'none'".to_owned()
        } else {
            ancestors
                .iter()
                .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let csp = format!("{TASK_PAGE_CSP}; frame-ancestors {list}");
        Self {
            csp: HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static(TASK_PAGE_CSP)),
            deny: ancestors.is_empty(),
        }
    }
}

/// The HTTP routes: `/`, `/t/{task_id}`, `/assets/{*file}`, `/healthz`,
/// `/readyz`. `frame_ancestors` may frame the task page (none when
/// empty).
///
/// `/healthz` is the liveness probe: 200 `ok` while the process serves
/// HTTP at all. `/readyz` is the readiness probe: 200 `ok`, or 503
/// `stopping` once `ready` says false (from the start of a graceful stop,
/// see [`crate::config::ShutdownTimes`]). Neither says anything else.
pub fn router(
    frame_ancestors: &[HeaderValue],
    ready: std::sync::Arc<dyn Fn() -> bool + Send + Sync>,
) -> Router {
    let framing = std::sync::Arc::new(Framing::new(frame_ancestors));
    Router::new()
        .route("/", get(index))
        .route(
            "/t/{task_id}",
            get(move |path| task_page(path, framing.clone())),
        )
        .route("/assets/{*file}", get(asset))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
                    }
                }
            }),
        )
}

async fn index() -> &'static str {
    "Rendezvous server. Open the link a host printed: /t/TASK_ID#secret=SECRET\n"
}

/// The task page. It is the same page for every task, so it reveals nothing
/// about which tasks exist; the secret stays in the URL fragment, which
/// browsers never send.
async fn task_page(Path(task_id): Path<String>, framing: std::sync::Arc<Framing>) -> Response {
    if TaskId::new(task_id).is_err() {
        return (StatusCode::NOT_FOUND, "invalid task ID\n").into_response();
    }
    let Some(file) = WebGuest::get("index.html") else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "web guest missing from build\n",
        )
            .into_response();
    };
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::CONTENT_SECURITY_POLICY, framing.csp.clone()),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        file.data,
    )
        .into_response();
    if framing.deny {
        response
            .headers_mut()
            .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

async fn asset(Path(file): Path<String>) -> Response {
    match WebGuest::get(&format!("assets/{file}")) {
        Some(content) => {
            let mime = content.metadata.mimetype().to_owned();
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_str(&mime)
                            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                    (
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    ),
                ],
                content.data,
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
