//! Rendezvous behind a TLS reverse proxy (issue 12, point 5): Debian's
//! nginx and Caddy, each running its example from `deploy/` with only the
//! listen port, upstream address and certificate paths replaced (see
//! `rendezvous_testkit::reverse_proxy`), with a certificate from a test CA,
//! in front of `rendezvous serve` as a process. Through each:
//!
//! - the real `rendezvous host` registers, `rendezvous sessions` lists its
//!   session and `rendezvous attach` on a PTY relays, all with `--ca-cert`;
//! - every guest transport (gRPC, gRPC-Web over HTTP/1.1 and HTTP/2)
//!   relays, gRPC-Web messages arrive as they are sent (no buffering), and
//!   a session's output passes the 1 MiB that nginx allows a request body
//!   by default (a host's Data stream is one request);
//! - plain HTTP gets HSTS, and the Origin check sees the browser's Host;
//! - silent streams stay open. The example must set its proxy's timeouts
//!   to an hour or more (checked in its text), and a live check makes
//!   that mean something: with those same directives set to
//!   [`SHORT_TIMEOUT`] instead, a silent guest's streams are cut within
//!   [`SILENCE`]; with the example's, they last [`SILENCE`] in silence and
//!   then still relay. So the test runs in seconds, fails if the example
//!   drops a timeout or sets it short, and shows that the directives it
//!   checks are the ones that end these streams.
//!
//! The browser over HTTP/2 through both: tests/browser/proxies.test.mjs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use rendezvous_guest::{AttachOptions, Client, Event, Secret, TaskId};
use rendezvous_proto::guest_event;
use rendezvous_proto::tls::{ALPN_H2, ALPN_HTTP1, client_config};
use rendezvous_testkit::pty::until;
use rendezvous_testkit::reverse_proxy::{self, Kind, ReverseProxy};
use rendezvous_testkit::tls::TestCa;
use rendezvous_testkit::{DEADLINE, ProcessOutput, TRANSPORTS, TestHost, Transcript, Transport};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_rendezvous");

/// How long the live check keeps a guest's streams silent: more than
/// twice the timeouts of the variant that must cut them
/// ([`SHORT_TIMEOUT`]), and far below the hour the example's must allow.
const SILENCE: Duration = Duration::from_secs(5);

/// The timeout the cutting variant sets, in each proxy's syntax: long
/// enough for the set-up (attach, a first echo) on a busy machine.
const SHORT_TIMEOUT: &str = "2s";

/// The nginx directives that end a silent stream (each 60 s by default):
/// between two reads of a client's request body, and between two reads
/// from the upstream, for grpc_pass and proxy_pass. (The send timeouts
/// run only while a write to the server waits, and the server reads
/// every stream at once.)
const NGINX_TIMEOUTS: [&str; 3] = [
    "client_body_timeout",
    "grpc_read_timeout",
    "proxy_read_timeout",
];

/// The timeouts of Caddy's `reverse_proxy` transport (none by default):
/// 0 (none) or at least an hour. The example states `read_timeout`.
const CADDY_TIMEOUTS: [&str; 2] = ["read_timeout", "write_timeout"];

/// `rendezvous serve` on a free loopback port, and nginx or Caddy in front
/// of it with TLS from a CA of the test's own.
struct Site {
    ca: TestCa,
    /// The CA's certificate, for `--ca-cert`.
    ca_file: PathBuf,
    proxy: ReverseProxy,
    /// The server's own (cleartext) URL, behind the proxy.
    upstream_url: String,
    /// Declared after the proxy: it outlives it.
    serve: ProcessOutput,
    _dir: tempfile::TempDir,
}

impl Site {
    /// The proxy running its `deploy/` example.
    async fn start(kind: Kind) -> Self {
        Self::with_config(kind, &kind.example()).await
    }

    /// The proxy running `example`, a variant of the committed one.
    async fn with_config(kind: Kind, example: &str) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--drain-delay", "0s"])
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        let mut serve = ProcessOutput::spawn(command);
        let url = serve.stdout_line("rendezvous: listening on ").await;
        let upstream: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("serve's address {url:?}: {e}"));
        let ca = TestCa::new("Rendezvous reverse proxy test CA");
        let dir = rendezvous_testkit::temp_dir("proxies");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let proxy = ReverseProxy::start_with(kind, example, upstream, &ca.issue_loopback()).await;
        Self {
            ca,
            ca_file,
            proxy,
            upstream_url: url,
            serve,
            _dir: dir,
        }
    }

    /// A host (the library, running bash with `PS1="$ "`) of `task`
    /// through the proxy, registered; it keeps its shells for `grace`.
    async fn host(&self, task: &str, grace: Duration) -> TestHost {
        let secret = format!("{task}-secret-0123456789abcdef");
        let host = rendezvous_testkit::resumable(&self.proxy.url, task, &secret, grace)
            .tls(self.ca.trust())
            .build()
            .expect("build the host");
        TestHost::from_host(host).await
    }

    /// As [`Site::host`], connected to the server itself, not through the
    /// proxy.
    async fn direct_host(&self, task: &str) -> TestHost {
        let secret = format!("{task}-secret-0123456789abcdef");
        let host = rendezvous_testkit::resumable(&self.upstream_url, task, &secret, Duration::ZERO)
            .build()
            .expect("build the host");
        TestHost::from_host(host).await
    }

    /// What the proxy and the server logged, for a failure's message.
    fn logs(&self) -> String {
        format!(
            "{} log:\n{}\nserve's stderr:\n{}",
            self.proxy.kind.name(),
            self.proxy.log(),
            self.serve.stderr()
        )
    }
}

/// `rendezvous host`, `rendezvous sessions` and `rendezvous attach`, the
/// binaries, through the proxy with `--ca-cert`.
async fn the_binaries_register_list_and_attach(kind: Kind) {
    let site = Site::start(kind).await;
    let url = site.proxy.url.as_str();
    let ca = site.ca_file.to_str().unwrap();
    let (task, secret) = ("proxied-binaries", "proxied-binaries-secret-0123456789");
    let mut host = Command::new(BIN);
    host.args(["host", "--server", url, "--ca-cert", ca, "--task-id", task])
        .args(["--secret", secret, "--grace-period", "0"])
        .args(["--", "bash", "--norc", "--noprofile"])
        .env("PS1", "$ ")
        .env_remove("RUST_LOG");
    let mut host = ProcessOutput::spawn(host);
    // Printed once the server, behind the proxy, has registered it.
    let link = host.stdout_line("Open ").await;
    assert!(
        link.starts_with(&format!("{url}/t/{task}#")),
        "the link names the proxy: {link}"
    );

    let (mut pty, pts) = pty_process::open().unwrap();
    pty.resize(pty_process::Size::new(30, 100)).unwrap();
    let mut attach = pty_process::Command::new(BIN)
        .args([
            "attach",
            "--server",
            url,
            "--ca-cert",
            ca,
            "--task-id",
            task,
        ])
        .env("RENDEZVOUS_SECRET", secret)
        .kill_on_drop(true)
        .spawn(pts)
        .expect("start rendezvous attach on the PTY");
    let mut seen = Vec::new();
    until(&mut pty, &mut seen, "$ ").await;
    pty.write_all(b"echo proxied-$((6*7))\r").await.unwrap();
    until(&mut pty, &mut seen, "proxied-42").await;

    let listed = Command::new(BIN)
        .args([
            "sessions",
            "--server",
            url,
            "--ca-cert",
            ca,
            "--task-id",
            task,
        ])
        .args(["--secret", secret, "--json"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "sessions: {stdout}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let sessions = &listed["hosts"][0]["sessions"];
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(sessions[0]["guests"], 1, "the attached guest: {listed}");
    assert_eq!(sessions[0]["cols"], 100, "attach's terminal size: {listed}");

    pty.write_all(b"\r~.").await.unwrap();
    until(&mut pty, &mut seen, "[rendezvous: detached]").await;
    let status = tokio::time::timeout(DEADLINE, attach.wait())
        .await
        .expect("attach exits in time")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", site.logs());
    host.terminate().await;
}

#[tokio::test]
async fn through_nginx_the_binaries_register_list_and_attach() {
    the_binaries_register_list_and_attach(Kind::Nginx).await;
}

#[tokio::test]
async fn through_caddy_the_binaries_register_list_and_attach() {
    the_binaries_register_list_and_attach(Kind::Caddy).await;
}

/// A new shell over `transport`, through the proxy, that echoes; returns
/// its transcript, the client and the guest's ID and token.
async fn new_shell(
    site: &Site,
    host: &TestHost,
    transport: Transport,
) -> (
    Transcript,
    rendezvous_testkit::AnyGuestClient,
    String,
    String,
) {
    let mut client = site
        .proxy
        .guest_client_over(transport, &site.ca.trust())
        .await;
    let stream = tokio::time::timeout(DEADLINE, client.attach(host.attach_request("")))
        .await
        .expect("attach in time")
        .unwrap_or_else(|status| panic!("{transport:?}: {status:?}\n{}", site.logs()))
        .into_inner();
    let mut events = Transcript::new(stream);
    let attached = match events.next().await {
        Some(guest_event::Event::Attached(attached)) => attached,
        other => panic!("{transport:?}: expected Attached, got {other:?}"),
    };
    (events, client, attached.guest_id, attached.guest_token)
}

/// Sends `text` as the guest's input number `seq`.
async fn send(
    client: &mut rendezvous_testkit::AnyGuestClient,
    guest: (&str, &str),
    seq: u64,
    text: &str,
) {
    client
        .send_input(rendezvous_proto::SendInputRequest {
            guest_id: guest.0.to_owned(),
            guest_token: guest.1.to_owned(),
            seq,
            data: text.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("send input: {status:?}"));
}

/// `GET path` through the proxy on a connection offering `alpn` only,
/// with `Origin: origin`: the response's status, HTTP version and HSTS
/// header.
async fn get(
    site: &Site,
    alpn: &[u8],
    path: &str,
    origin: &str,
) -> (http::StatusCode, http::Version, Option<String>) {
    let config = client_config(&site.ca.trust(), &[alpn]).unwrap();
    let tcp = tokio::net::TcpStream::connect(site.proxy.addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("the proxy's TLS handshake");
    let io = TokioIo::new(tls);
    let mut request = http::Request::get(path)
        .header(http::header::ORIGIN, origin)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = if alpn == ALPN_H2 {
        // HTTP/2 carries the authority in the URI, as browsers send it.
        *request.uri_mut() = format!("{}{path}", site.proxy.url).parse().unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let host = site.proxy.addr.to_string();
        request
            .headers_mut()
            .insert(http::header::HOST, host.parse().unwrap());
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    };
    let (status, version) = (response.status(), response.version());
    let hsts = response
        .headers()
        .get(http::header::STRICT_TRANSPORT_SECURITY)
        .map(|v| v.to_str().unwrap().to_owned());
    response.into_body().collect().await.unwrap();
    (status, version, hsts)
}

/// Every guest transport relays through the proxy, a session writes more
/// than a MiB through it, and plain HTTP is as the server serves it.
async fn every_transport_relays_and_output_passes_a_mebibyte(kind: Kind) {
    let site = Site::start(kind).await;
    let host = site.host("proxied-transports", Duration::ZERO).await;
    for (n, transport) in TRANSPORTS.into_iter().enumerate() {
        let (mut events, mut client, id, token) = new_shell(&site, &host, transport).await;
        send(
            &mut client,
            (&id, &token),
            0,
            &format!("echo via-{n}-$((6*7))\n"),
        )
        .await;
        events.until(&format!("via-{n}-42")).await;
        if transport == Transport::GrpcWebHttp1 {
            // 3 MB of output: the host's Data stream, one request through
            // the proxy, outgrows nginx's default client_max_body_size
            // (1m); the browser's HTTP/1.1 stream carries it all.
            send(
                &mut client,
                (&id, &token),
                1,
                "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo big-$((1+1))\n",
            )
            .await;
            let text = events.until("big-2").await;
            assert!(text.matches('x').count() >= 3_000_000, "{}", site.logs());
        }
    }
    let listed = host_sessions(&site, &host).await;
    assert_eq!(listed, TRANSPORTS.len(), "one session per transport");

    let own = site.proxy.url.as_str();
    for alpn in [ALPN_HTTP1, ALPN_H2] {
        let (status, version, hsts) = get(&site, alpn, "/healthz", own).await;
        assert_eq!(status, http::StatusCode::OK, "{version:?}\n{}", site.logs());
        let expected = if alpn == ALPN_H2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(version, expected);
        assert_eq!(
            hsts.as_deref(),
            Some("max-age=31536000"),
            "HSTS, as serve's TLS sends it"
        );
        // The server judges Origin by the Host the browser sent, which the
        // proxy must pass on (nginx's default is the upstream's address).
        let (status, ..) = get(&site, alpn, "/healthz", "https://elsewhere.example").await;
        assert_eq!(
            status,
            http::StatusCode::FORBIDDEN,
            "{version:?}: a foreign origin"
        );
        let (status, ..) = get(&site, alpn, "/t/proxied-transports", own).await;
        assert_eq!(status, http::StatusCode::OK, "{version:?}: the task page");
    }
    host.stop().await;
}

/// The sessions of `host`'s task, listed through the proxy.
async fn host_sessions(site: &Site, host: &TestHost) -> usize {
    let client = Client::connect_with(&site.proxy.url, &site.ca.trust())
        .await
        .unwrap();
    let task = TaskId::new(host.task_id.as_str()).unwrap();
    let secret = Secret::new(host.secret.as_str()).unwrap();
    let hosts = client.list_sessions(&task, &secret).await.unwrap();
    hosts.iter().map(|h| h.sessions.len()).sum()
}

#[tokio::test]
async fn through_nginx_every_transport_relays_and_output_passes_a_mebibyte() {
    every_transport_relays_and_output_passes_a_mebibyte(Kind::Nginx).await;
}

#[tokio::test]
async fn through_caddy_every_transport_relays_and_output_passes_a_mebibyte() {
    every_transport_relays_and_output_passes_a_mebibyte(Kind::Caddy).await;
}

/// The example's timeouts allow an hour of silence or more, each stated
/// (Caddy's `write_timeout` may be left out: none, its default).
fn assert_long_timeouts(kind: Kind, example: &str) {
    for name in timeouts(kind) {
        let values = reverse_proxy::directive_values(example, name);
        if values.is_empty() && *name == "write_timeout" {
            continue;
        }
        assert_eq!(
            values.len(),
            1,
            "the {} example sets {name} once",
            kind.name()
        );
        assert!(
            reverse_proxy::parse_duration(values[0]) >= Duration::from_secs(3600),
            "the {} example's {name} {} cuts silent terminal streams",
            kind.name(),
            values[0]
        );
    }
}

/// The timeouts [`assert_long_timeouts`] checks.
fn timeouts(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Nginx => &NGINX_TIMEOUTS,
        Kind::Caddy => &CADDY_TIMEOUTS,
    }
}

/// What became of a silent stream (its texts are for failure messages).
#[derive(Debug)]
#[allow(dead_code)]
enum Silence {
    /// Nothing came for [`SILENCE`].
    Kept,
    /// The stream ended after this long, with this.
    Cut(Duration, String),
    /// Events came, and the stream stood (e.g. the host reconnecting).
    Spoke(Vec<String>),
}

/// A guest's stream of events, each shown as text.
trait Events {
    /// The next event; `Ok(None)` when the stream has ended.
    async fn next_shown(&mut self) -> Result<Option<String>, String>;
}

impl Events for rendezvous_guest::EventReader {
    async fn next_shown(&mut self) -> Result<Option<String>, String> {
        let next = self.next_event().await;
        next.map(|e| e.map(|e| format!("{e:?}")))
            .map_err(|e| format!("{e:?}"))
    }
}

impl Events for Transcript {
    async fn next_shown(&mut self) -> Result<Option<String>, String> {
        let next = self.next_result().await;
        next.map(|e| e.map(|e| format!("{e:?}")))
            .map_err(|e| format!("{e:?}"))
    }
}

/// Reads `events` for [`SILENCE`]: what became of the stream.
async fn silence(events: &mut impl Events) -> Silence {
    let started = tokio::time::Instant::now();
    let mut heard = Vec::new();
    loop {
        match tokio::time::timeout_at(started + SILENCE, events.next_shown()).await {
            Err(_) if heard.is_empty() => return Silence::Kept,
            Err(_) => return Silence::Spoke(heard),
            Ok(Ok(Some(event))) => heard.push(event),
            Ok(end) => return Silence::Cut(started.elapsed(), format!("{end:?}")),
        }
    }
}

/// Whether the shell printed its prompt after `marker`: the echo is done
/// and the shell has nothing more to say.
fn prompt_after(text: &str, marker: &str) -> bool {
    text.rsplit_once(marker)
        .is_some_and(|(_, after)| after.contains("$ "))
}

/// A native guest (`Terminal`, as `rendezvous attach`) and a browser's
/// (gRPC-Web over HTTP/1.1: the proxy_pass path of nginx) through the
/// proxy running `example`, on a host through the proxy too
/// (`host_behind_proxy`) or connected to the server itself: each guest
/// echoes, then is left silent for [`SILENCE`] and reports what became of
/// it. Kept streams must then still relay.
async fn silent_guests(kind: Kind, example: &str, host_behind_proxy: bool) -> [Silence; 2] {
    let site = Site::with_config(kind, example).await;
    let host = if host_behind_proxy {
        site.host("proxied-silence", Duration::ZERO).await
    } else {
        site.direct_host("proxied-silence").await
    };
    let client = Client::connect_with(&site.proxy.url, &site.ca.trust())
        .await
        .unwrap();
    let options = AttachOptions::new(
        TaskId::new(host.task_id.as_str()).unwrap(),
        Secret::new(host.secret.as_str()).unwrap(),
    );
    let (native, mut native_events) = client.terminal(options).await.unwrap().split();
    native.send_input("echo native-$((6*7))\n").await.unwrap();
    let mut native_output = String::new();
    let native_silence = async {
        tokio::time::timeout(DEADLINE, async {
            while !prompt_after(&native_output, "native-42") {
                match native_events.next_event().await.unwrap() {
                    Some(Event::Output(chunk)) => {
                        native_output.push_str(&String::from_utf8_lossy(&chunk.data))
                    }
                    Some(Event::Exit(status)) => panic!("native guest: {status:?}"),
                    None => panic!("the native guest's stream ended"),
                    // Its size; the host reconnecting (the cutting variant
                    // may cut the host's streams already).
                    Some(_) => {}
                }
            }
        })
        .await
        .expect("the native guest's echo");
        silence(&mut native_events).await
    };
    let (mut web_events, mut web, id, token) =
        new_shell(&site, &host, Transport::GrpcWebHttp1).await;
    send(&mut web, (&id, &token), 0, "echo web-$((6*7))\n").await;
    let web_silence = async {
        let what = "the prompt after web-42";
        web_events
            .until_match(what, |t| prompt_after(t, "web-42"))
            .await;
        silence(&mut web_events).await
    };
    let outcome = tokio::join!(native_silence, web_silence);
    if matches!(outcome, (Silence::Kept, Silence::Kept)) {
        // The same streams, after the silence, still relay both ways.
        native.send_input("echo after-$((6*7))\n").await.unwrap();
        tokio::time::timeout(DEADLINE, async {
            while !native_output.contains("after-42") {
                match native_events.next_event().await {
                    Ok(Some(Event::Output(chunk))) => {
                        native_output.push_str(&String::from_utf8_lossy(&chunk.data))
                    }
                    other => panic!("native guest after the silence: {other:?}\n{}", site.logs()),
                }
            }
        })
        .await
        .expect("the native guest's echo after the silence");
        send(&mut web, (&id, &token), 1, "echo after-$((6*7))\n").await;
        web_events.until("after-42").await;
    }
    [outcome.0, outcome.1]
}

/// The example keeps silent streams, a host's and its guests'; the same
/// with its timeouts at [`SHORT_TIMEOUT`] cuts both guests' streams within
/// [`SILENCE`]. There the host is connected to the server itself: behind
/// the proxy, its own streams would be cut and come back, and the news of
/// it on the guests' streams would break their silence.
async fn silent_streams_outlast_the_timeouts_the_example_lifts(kind: Kind) {
    let example = kind.example();
    assert_long_timeouts(kind, &example);
    let (short, changed) =
        reverse_proxy::set_directives(kind, &example, timeouts(kind), SHORT_TIMEOUT);
    assert!(
        changed > 0,
        "no timeout to shorten in the {} example",
        kind.name()
    );
    let (kept, cut) = tokio::join!(
        silent_guests(kind, &example, true),
        silent_guests(kind, &short, false)
    );
    eprintln!(
        "{}: the example: {kept:?}; with short timeouts: {cut:?}",
        kind.name()
    );
    for (guest, silence) in ["native", "gRPC-Web"].iter().zip(&kept) {
        assert!(
            matches!(silence, Silence::Kept),
            "{}'s example: the {guest} guest's silent stream: {silence:?}",
            kind.name()
        );
    }
    for (guest, silence) in ["native", "gRPC-Web"].iter().zip(&cut) {
        assert!(
            matches!(silence, Silence::Cut(after, _) if *after < SILENCE),
            "{} with {SHORT_TIMEOUT} timeouts: the {guest} guest's silent stream is cut, \
             got {silence:?}",
            kind.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_silent_streams_outlast_the_timeouts_the_example_lifts() {
    silent_streams_outlast_the_timeouts_the_example_lifts(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_caddy_silent_streams_outlast_the_timeouts_the_example_lifts() {
    silent_streams_outlast_the_timeouts_the_example_lifts(Kind::Caddy).await;
}
