//! The cross-origin policy: the server's own origin and `--allowed-origin`
//! origins may use gRPC-Web and load the web guest; any other origin is
//! refused. Raw HTTP/1.1 requests, as a browser sends them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use rendezvous_proto::ListSessionsRequest;
use rendezvous_server::ServerConfig;
use rendezvous_testkit::{TestHost, TestServer};

const ALLOWED: &str = "http://ci.allowed.test:9000";
const OTHER: &str = "http://evil.test";

async fn server() -> TestServer {
    TestServer::with_config(ServerConfig {
        allowed_origins: vec![http::HeaderValue::from_static(ALLOWED)],
        ..ServerConfig::default()
    })
    .await
}

type Response = http::Response<hyper::body::Incoming>;

async fn send(request: http::Request<Full<Bytes>>) -> Response {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    client.request(request).await.expect("request")
}

fn preflight(url: &str, origin: &str) -> http::Request<Full<Bytes>> {
    http::Request::options(format!("{url}/rendezvous.v1.GuestService/ListSessions"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-user-agent",
        )
        .body(Full::default())
        .unwrap()
}

/// A gRPC-Web ListSessions call, framed by hand as a browser sends it.
fn list_sessions(url: &str, origin: &str, host: &TestHost) -> http::Request<Full<Bytes>> {
    let message = ListSessionsRequest {
        task_id: host.task_id.clone(),
        secret: host.secret.clone(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    http::Request::post(format!("{url}/rendezvous.v1.GuestService/ListSessions"))
        .header("origin", origin)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Full::new(Bytes::from(frame)))
        .unwrap()
}

/// The grpc-status of a gRPC-Web response: in the headers (trailers-only)
/// or in the trailer frame at the end of the body.
async fn grpc_status(response: Response) -> String {
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().unwrap().to_owned();
    }
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    let at = text.find("grpc-status:").expect("a grpc-status trailer");
    text[at + "grpc-status:".len()..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}

fn allow_origin(response: &Response) -> Option<String> {
    response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn an_allowed_origin_gets_cors_and_service() {
    let server = server().await;
    let host = TestHost::start(&server, "embed").await;

    let response = send(preflight(&server.url, ALLOWED)).await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(allow_origin(&response).as_deref(), Some(ALLOWED));

    let response = send(list_sessions(&server.url, ALLOWED, &host)).await;
    assert_eq!(allow_origin(&response).as_deref(), Some(ALLOWED));
    assert_eq!(grpc_status(response).await, "0");

    // The web guest's module is fetched with CORS too.
    let asset = http::Request::get(format!("{}/assets/app.js", server.url))
        .header("origin", ALLOWED)
        .body(Full::default())
        .unwrap();
    let response = send(asset).await;
    assert!(response.status().is_success());
    assert_eq!(allow_origin(&response).as_deref(), Some(ALLOWED));
}

#[tokio::test]
async fn the_servers_own_origin_is_allowed() {
    let server = server().await;
    let host = TestHost::start(&server, "own").await;
    let response = send(list_sessions(&server.url, &server.url, &host)).await;
    assert_eq!(grpc_status(response).await, "0");
}

#[tokio::test]
async fn another_origin_is_refused() {
    let server = server().await;
    let host = TestHost::start(&server, "refuse").await;

    let response = send(preflight(&server.url, OTHER)).await;
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    assert_eq!(allow_origin(&response), None);

    let response = send(list_sessions(&server.url, OTHER, &host)).await;
    assert_eq!(allow_origin(&response), None);
    let message = response
        .headers()
        .get("grpc-message")
        .map(|m| m.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(grpc_status(response).await, "7", "PERMISSION_DENIED");
    assert!(message.contains("allowed-origin"), "{message}");

    let asset = http::Request::get(format!("{}/assets/app.js", server.url))
        .header("origin", OTHER)
        .body(Full::default())
        .unwrap();
    assert_eq!(send(asset).await.status(), http::StatusCode::FORBIDDEN);
}

fn with_host(mut request: http::Request<Full<Bytes>>, host: &str) -> http::Request<Full<Bytes>> {
    request
        .headers_mut()
        .insert("host", http::HeaderValue::from_str(host).unwrap());
    request
}

fn task_page(url: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(format!("{url}/t/frame-test"))
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn no_site_may_frame_the_task_page_unless_listed() {
    let server = server().await;
    let response = send(task_page(&server.url)).await;
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.ends_with("; frame-ancestors 'none'"), "{csp}");
    assert_eq!(response.headers()["x-frame-options"], "DENY");

    let listed = TestServer::with_config(ServerConfig {
        frame_ancestors: vec![http::HeaderValue::from_static("https://ci.example.com")],
        ..ServerConfig::default()
    })
    .await;
    let response = send(task_page(&listed.url)).await;
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.ends_with("; frame-ancestors https://ci.example.com"),
        "{csp}"
    );
    assert!(response.headers().get("x-frame-options").is_none());
}

#[tokio::test]
async fn a_public_url_defeats_dns_rebinding() {
    // A page on evil.test that rebinds its name to the server's address:
    // its requests carry Host and Origin evil.test, so they look
    // same-origin to a server that trusts Host.
    let rebound = "evil.test";
    let rebound_origin = "http://evil.test";
    let trusting = server().await;
    let host = TestHost::start(&trusting, "rebind").await;
    let response = send(with_host(
        list_sessions(&trusting.url, rebound_origin, &host),
        rebound,
    ))
    .await;
    assert_eq!(
        grpc_status(response).await,
        "0",
        "without a public URL, Host is trusted"
    );

    let public = format!("http://rdv.test:{}", 9);
    let pinned = TestServer::with_config(ServerConfig {
        public_url: Some(rendezvous_server::origin::PublicUrl::parse(&public).unwrap()),
        ..ServerConfig::default()
    })
    .await;
    let host = TestHost::start(&pinned, "rebind").await;
    let response = send(with_host(
        list_sessions(&pinned.url, rebound_origin, &host),
        rebound,
    ))
    .await;
    assert_eq!(grpc_status(response).await, "7", "PERMISSION_DENIED");
    let response = send(with_host(task_page(&pinned.url), rebound)).await;
    assert_eq!(response.status(), http::StatusCode::MISDIRECTED_REQUEST);
    // The public name works, from a page and for gRPC-Web.
    let response = send(with_host(task_page(&pinned.url), "rdv.test:9")).await;
    assert!(response.status().is_success(), "{}", response.status());
    let response = send(with_host(
        list_sessions(&pinned.url, &public, &host),
        "rdv.test:9",
    ))
    .await;
    assert_eq!(grpc_status(response).await, "0");
    // Native clients (no Origin) use whatever name they connect with.
    assert_eq!(host.list_hosts(&pinned).await.len(), 1);
}
