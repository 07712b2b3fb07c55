//! TLS on the one port, end to end on loopback: hosts and guests that trust
//! a CA or pin a fingerprint, the refusals when they should not trust the
//! server, ALPN and HSTS as a raw client sees them, certificate reloads
//! (the function SIGHUP calls, and SIGHUP to the real binary), and the
//! binary's rules for cleartext and self-signed certificates.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use rendezvous_guest::{
    AttachOptions, Client, Event, Fingerprint, GuestError, Secret, TaskId, TlsOptions,
};
use rendezvous_proto::endpoint::ServerEndpoint;
use rendezvous_proto::tls::{ALPN_H2, ALPN_HTTP1, client_config, crypto_provider};
use rendezvous_server::ServerConfig;
use rendezvous_server::tls::{HSTS_VALUE, TlsConfig, TlsError};
use rendezvous_testkit::tls::{TestCa, TestCert};
use rendezvous_testkit::{DEADLINE, TRANSPORTS, TestHost, TestServer};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;

const TASK: &str = "tls-task";

/// A secret no task has: an attempt with it is answered `PERMISSION_DENIED`,
/// which proves that the TLS connection stands and the server answers.
const NO_SUCH_SECRET: &str = "no-such-secret-0123456789";

/// A TLS server with a certificate for loopback issued by `ca`, whose kit
/// clients trust `ca`.
async fn tls_server(ca: &TestCa) -> TestServer {
    let cert = ca.issue_loopback();
    TestServer::with_tls(ServerConfig::default(), cert.tls_config(), ca.trust()).await
}

/// Lists the sessions of a task nobody published: `Ok(())` when the
/// server answered (with `Denied`), the error otherwise.
async fn server_answers(client: &Client) -> Result<(), GuestError> {
    let task = TaskId::new("nobody-published-this").unwrap();
    let secret = Secret::new(NO_SUCH_SECRET).unwrap();
    match tokio::time::timeout(DEADLINE, client.list_sessions(&task, &secret))
        .await
        .expect("the server answers in time")
    {
        Err(GuestError::Denied) => Ok(()),
        Ok(hosts) => panic!("an unknown task listed {hosts:?}"),
        Err(other) => Err(other),
    }
}

/// The reason of an `Unreachable` error; panics on any other result.
fn unreachable_reason(result: Result<Client, GuestError>) -> String {
    match result {
        Err(GuestError::Unreachable { reason, .. }) => reason,
        Err(other) => panic!("expected an unreachable server, got {other:?}"),
        Ok(_) => panic!("expected the connection to be refused"),
    }
}

/// A raw TLS connection to `addr` offering `alpn`, trusting as `trust` says.
async fn tls_connect(
    addr: SocketAddr,
    trust: &TlsOptions,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = client_config(trust, alpn).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(
        DEADLINE,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("the handshake ends in time")
    .expect("the handshake succeeds")
}

/// The fingerprint of the certificate a new connection to `addr` gets.
async fn served_fingerprint(addr: SocketAddr, trust: &TlsOptions) -> Fingerprint {
    let tls = tls_connect(addr, trust, &[ALPN_H2]).await;
    let leaf = &tls.get_ref().1.peer_certificates().expect("a certificate")[0];
    Fingerprint::of(leaf)
}

/// Waits until new connections to `addr` get the certificate `wanted`.
async fn until_served(addr: SocketAddr, trust: &TlsOptions, wanted: Fingerprint) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if served_fingerprint(addr, trust).await == wanted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new connections never got the certificate {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /healthz` over HTTP/1.1 on `io`, with an `Origin` header.
async fn get_healthz<I>(io: I, addr: SocketAddr, origin: &str) -> http::Response<String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get("/healthz")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::ORIGIN, origin)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    drop(sender);
    let _ = connection.await;
    http::Response::from_parts(parts, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_host_and_a_guest_relay_over_tls_with_a_ca_cert() {
    let ca = TestCa::new("Rendezvous test CA");
    let server = tls_server(&ca).await;
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    // The kit's host is built with `.tls(ca.trust())`.
    let host = TestHost::start(&server, TASK).await;

    let client = Client::connect_with(&server.url, &ca.trust())
        .await
        .unwrap();
    let options = AttachOptions::new(
        TaskId::new(TASK).unwrap(),
        Secret::new(host.secret.as_str()).unwrap(),
    );
    let terminal = client.terminal(options).await.unwrap();
    let (writer, mut events) = terminal.split();
    writer.send_input("echo tls-$((6 * 7))\n").await.unwrap();
    let mut output = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while !String::from_utf8_lossy(&output).contains("tls-42") {
            match events.next_event().await.unwrap() {
                Some(Event::Output(chunk)) => output.extend_from_slice(&chunk.data),
                Some(Event::Exit(status)) => panic!("the shell ended: {status:?}"),
                Some(_) => {}
                None => panic!("the stream ended"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no tls-42 in {:?}", String::from_utf8_lossy(&output)));
}

#[tokio::test]
async fn every_guest_transport_works_over_tls() {
    let ca = TestCa::new("Rendezvous test CA");
    let server = tls_server(&ca).await;
    let host = TestHost::start(&server, TASK).await;
    for transport in TRANSPORTS {
        // gRPC offers h2; gRPC-Web offers http/1.1 or h2, as a browser.
        let mut client = server.guest_client_over(transport).await;
        let hosts = client
            .list_sessions(rendezvous_proto::ListSessionsRequest {
                task_id: TASK.to_owned(),
                secret: host.secret.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("{transport:?}: {status:?}"))
            .into_inner()
            .hosts;
        assert_eq!(hosts.len(), 1, "{transport:?}");
    }
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused_as_a_certificate_problem() {
    let ca = TestCa::new("The server's CA");
    let other = TestCa::new("Another CA");
    let server = tls_server(&ca).await;

    let reason = unreachable_reason(Client::connect_with(&server.url, &other.trust()).await);
    assert!(reason.contains("TLS certificate"), "{reason}");
    assert!(reason.contains("not trusted"), "{reason}");
    assert!(reason.contains("--ca-cert"), "{reason}");

    // The host says the same while it retries.
    let host = rendezvous_host::Host::builder(&server.url)
        .tls(other.trust())
        .task_id(TASK)
        .build()
        .unwrap();
    let mut status = host.status();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let _run = tokio::spawn(host.run(async move {
        let _ = stopped.await;
    }));
    let seen = tokio::time::timeout(
        DEADLINE,
        status.wait_for(|s| matches!(s, rendezvous_host::HostStatus::Reconnecting { .. })),
    )
    .await
    .expect("the host gives up on this attempt in time")
    .unwrap()
    .clone();
    let rendezvous_host::HostStatus::Reconnecting { reason, .. } = seen else {
        unreachable!()
    };
    assert!(reason.contains("TLS certificate"), "{reason}");
}

#[tokio::test]
async fn a_pinned_fingerprint_is_trusted_without_a_ca() {
    let ca = TestCa::new("A CA nobody trusts");
    let cert = ca.issue_loopback();
    let server = TestServer::with_tls(ServerConfig::default(), cert.tls_config(), cert.pin()).await;
    // The kit's host pins the certificate too.
    let host = TestHost::start(&server, TASK).await;
    let client = Client::connect_with(&server.url, &cert.pin())
        .await
        .unwrap();
    let hosts = client
        .list_sessions(
            &TaskId::new(TASK).unwrap(),
            &Secret::new(host.secret.as_str()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(hosts.len(), 1);
    // The plain-hex form pins the same certificate.
    let plain: Fingerprint = cert.fingerprint.to_plain_hex().parse().unwrap();
    let pinned = TlsOptions {
        server_fingerprint: Some(plain),
        ..TlsOptions::default()
    };
    let client = Client::connect_with(&server.url, &pinned).await.unwrap();
    server_answers(&client).await.unwrap();
}

#[tokio::test]
async fn a_wrong_pin_is_refused_naming_both_fingerprints() {
    let ca = TestCa::new("Rendezvous test CA");
    let served = ca.issue_loopback();
    let other = ca.issue_loopback();
    let server =
        TestServer::with_tls(ServerConfig::default(), served.tls_config(), ca.trust()).await;
    // Pinned to another certificate of the same CA: refused all the same.
    let reason = unreachable_reason(Client::connect_with(&server.url, &other.pin()).await);
    assert!(reason.contains("TLS certificate"), "{reason}");
    assert!(reason.contains(&served.fingerprint.to_string()), "{reason}");
    assert!(reason.contains(&other.fingerprint.to_string()), "{reason}");
}

/// Serves one TLS handshake on a loopback port with `cert`'s certificate
/// but another key: a server that does not hold the pinned certificate's
/// key.
async fn impostor(cert: &TestCert) -> SocketAddr {
    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for Fixed {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    use rustls::pki_types::pem::PemObject as _;
    let chain =
        vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other_key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(other_key.serialize_pem().as_bytes())
            .unwrap();
    let provider = crypto_provider();
    let signing = provider.key_provider.load_private_key(other_key).unwrap();
    let resolver = Fixed(Arc::new(rustls::sign::CertifiedKey::new(chain, signing)));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        if let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    addr
}

#[tokio::test]
async fn a_pinned_certificate_without_its_key_is_refused() {
    let cert = TestCa::new("Rendezvous test CA").issue_loopback();
    let addr = impostor(&cert).await;
    let url = format!("https://{addr}");
    let error = ServerEndpoint::new(&url, &cert.pin())
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    let reason = root_cause(&error);
    assert!(reason.contains("signature does not verify"), "{reason}");
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[tokio::test]
async fn alpn_gives_h2_to_h2_clients_and_http1_to_http1_clients() {
    let ca = TestCa::new("Rendezvous test CA");
    let server = tls_server(&ca).await;
    let h2 = tls_connect(server.addr, &ca.trust(), &[ALPN_H2]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(ALPN_H2));
    let http1 = tls_connect(server.addr, &ca.trust(), &[ALPN_HTTP1]).await;
    assert_eq!(http1.get_ref().1.alpn_protocol(), Some(ALPN_HTTP1));
    // A browser offers both and gets HTTP/2.
    let both = tls_connect(server.addr, &ca.trust(), &[ALPN_HTTP1, ALPN_H2]).await;
    assert_eq!(both.get_ref().1.alpn_protocol(), Some(ALPN_H2));
}

#[tokio::test]
async fn an_http1_client_over_tls_gets_hsts_and_its_own_https_origin_is_allowed() {
    let ca = TestCa::new("Rendezvous test CA");
    let server = tls_server(&ca).await;
    let same_origin = format!("https://{}", server.addr);
    let tls = tls_connect(server.addr, &ca.trust(), &[ALPN_HTTP1]).await;
    let response = get_healthz(tls, server.addr, &same_origin).await;
    assert_eq!(response.status(), http::StatusCode::OK, "{response:?}");
    assert_eq!(response.version(), http::Version::HTTP_11);
    assert_eq!(
        response
            .headers()
            .get(http::header::STRICT_TRANSPORT_SECURITY),
        Some(&http::HeaderValue::from_static(HSTS_VALUE))
    );
    // Another origin is refused, and the refusal carries HSTS too.
    let tls = tls_connect(server.addr, &ca.trust(), &[ALPN_HTTP1]).await;
    let response = get_healthz(tls, server.addr, "https://evil.example").await;
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    assert!(
        response
            .headers()
            .contains_key(http::header::STRICT_TRANSPORT_SECURITY)
    );
}

#[tokio::test]
async fn a_cleartext_server_sends_no_hsts() {
    let server = TestServer::start().await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let response = get_healthz(tcp, server.addr, &server.url).await;
    assert_eq!(response.status(), http::StatusCode::OK);
    assert!(
        !response
            .headers()
            .contains_key(http::header::STRICT_TRANSPORT_SECURITY),
        "{response:?}"
    );
}

/// A temporary directory with `cert.pem` and `key.pem`.
struct CertFiles {
    dir: tempfile::TempDir,
}

impl CertFiles {
    fn new(cert: &TestCert) -> Self {
        let files = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        cert.write_to(&files.cert(), &files.key());
        files
    }

    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("key.pem")
    }
}

#[tokio::test]
async fn a_reload_gives_new_connections_the_new_certificate_and_keeps_open_ones() {
    let ca = TestCa::new("Rendezvous test CA");
    let (old, new) = (ca.issue_loopback_until(2100), ca.issue_loopback_until(2101));
    let files = CertFiles::new(&old);
    let tls = TlsConfig::from_files(files.cert(), files.key()).unwrap();
    assert_eq!(tls.fingerprint(), old.fingerprint);
    let server = TestServer::with_tls(ServerConfig::default(), tls.clone(), ca.trust()).await;
    // The metrics show when the certificate in use expires.
    let expiry = || {
        let text = server.metrics_text();
        rendezvous_testkit::metrics::value(
            &text,
            "rendezvous_tls_certificate_expiry_timestamp_seconds",
        )
    };
    // 2100-01-01T00:00:00Z
    assert_eq!(expiry(), 4_102_444_800.0);

    // Pinned to the old certificate: it could not connect again after the
    // reload, so if it still works, its connection is the one it had.
    let open = Client::connect_with(&server.url, &old.pin()).await.unwrap();
    server_answers(&open).await.unwrap();

    new.write_to(&files.cert(), &files.key());
    assert_eq!(tls.reload().unwrap(), new.fingerprint);
    assert_eq!(tls.fingerprint(), new.fingerprint);
    // 2101-01-01T00:00:00Z
    assert_eq!(expiry(), 4_133_980_800.0);
    assert_eq!(
        served_fingerprint(server.addr, &ca.trust()).await,
        new.fingerprint
    );
    server_answers(&open).await.unwrap();
    let reason = unreachable_reason(Client::connect_with(&server.url, &old.pin()).await);
    assert!(reason.contains("pinned"), "{reason}");
}

#[tokio::test]
async fn a_reload_of_bad_files_keeps_the_old_certificate() {
    let ca = TestCa::new("Rendezvous test CA");
    let (old, new) = (ca.issue_loopback(), ca.issue_loopback());
    let files = CertFiles::new(&old);
    let tls = TlsConfig::from_files(files.cert(), files.key()).unwrap();
    let server = TestServer::with_tls(ServerConfig::default(), tls.clone(), ca.trust()).await;

    // A key that is not PEM.
    std::fs::write(files.key(), "not a key\n").unwrap();
    let error = tls.reload().unwrap_err();
    assert!(matches!(error, TlsError::Key { .. }), "{error}");
    assert!(error.to_string().contains("key.pem"), "{error}");
    // A new certificate with the old key.
    std::fs::write(files.cert(), &new.cert_pem).unwrap();
    std::fs::write(files.key(), &old.key_pem).unwrap();
    let error = tls.reload().unwrap_err();
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
    // A file that went away.
    std::fs::remove_file(files.cert()).unwrap();
    assert!(matches!(tls.reload(), Err(TlsError::Read { .. })));

    assert_eq!(tls.fingerprint(), old.fingerprint);
    assert_eq!(
        served_fingerprint(server.addr, &ca.trust()).await,
        old.fingerprint
    );
}

/// `rendezvous serve ARGS` with piped stdout and stderr, killed on drop.
fn serve(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .arg("serve")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start rendezvous serve")
}

/// Reads `child`'s stdout until `listening on URL`; returns the URL and
/// the lines before it.
async fn listening(child: &mut tokio::process::Child) -> (String, Vec<String>) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut before = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("serve prints its address");
            if let Some(url) = line.strip_prefix("rendezvous: listening on ") {
                return (url.to_owned(), before);
            }
            before.push(line);
        }
    })
    .await
    .expect("serve starts in time")
}

fn addr_of(url: &str) -> SocketAddr {
    url.strip_prefix("https://")
        .expect("an https:// URL")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn sighup_makes_the_binary_reload_its_certificate_files() {
    let ca = TestCa::new("Rendezvous test CA");
    let (old, new) = (ca.issue_loopback(), ca.issue_loopback());
    let files = CertFiles::new(&old);
    let (cert, key) = (files.cert(), files.key());
    let mut child = serve(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let (url, before) = listening(&mut child).await;
    let addr = addr_of(&url);
    assert!(
        before
            .iter()
            .any(|line| line.contains(&old.fingerprint.to_string())),
        "{before:?}"
    );
    let open = Client::connect_with(&url, &old.pin()).await.unwrap();
    server_answers(&open).await.unwrap();

    new.write_to(&cert, &key);
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap().try_into().unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    until_served(addr, &ca.trust(), new.fingerprint).await;
    // The connection pinned to the old certificate goes on.
    server_answers(&open).await.unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "serve exited on SIGHUP"
    );
}

#[tokio::test]
async fn cleartext_on_all_interfaces_is_refused_without_insecure() {
    // A port nobody listens on; serve must refuse before it binds.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for listen in [format!("0.0.0.0:{port}"), format!("[::]:{port}")] {
        let child = serve(&["--listen", &listen]);
        let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .expect("serve exits in time")
            .unwrap();
        assert!(!output.status.success(), "{listen}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for needed in [
            "--tls-cert",
            "--tls-self-signed",
            "--insecure",
            "behind a TLS proxy",
        ] {
            assert!(stderr.contains(needed), "{listen}: {stderr}");
        }
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("listening"),
            "{listen}: {output:?}"
        );
    }
}

#[tokio::test]
async fn a_self_signed_server_prints_a_fingerprint_that_clients_can_pin() {
    let mut child = serve(&["--listen", "127.0.0.1:0", "--tls-self-signed"]);
    let (url, before) = listening(&mut child).await;
    let printed = before
        .iter()
        .find_map(|line| line.split("--server-fingerprint ").nth(1))
        .unwrap_or_else(|| panic!("no fingerprint in {before:?}"));
    let fingerprint: Fingerprint = printed.trim().parse().unwrap();
    assert_eq!(printed.trim(), fingerprint.to_string(), "colon-separated");
    assert_eq!(
        served_fingerprint(
            addr_of(&url),
            &TlsOptions {
                server_fingerprint: Some(fingerprint),
                ..TlsOptions::default()
            }
        )
        .await,
        fingerprint
    );

    // `rendezvous sessions` pins it, in plain hex from the environment: the
    // server answers (an unknown task), so the TLS connection stood.
    let sessions = |pin: String| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_rendezvous"))
            .args(["sessions", "--server", &url, "--task-id", "some-task"])
            .env("RENDEZVOUS_SECRET", NO_SUCH_SECRET)
            .env("RENDEZVOUS_SERVER_FINGERPRINT", pin)
            .env_remove("RENDEZVOUS_CA_CERT")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
    };
    let output = tokio::time::timeout(DEADLINE, sessions(fingerprint.to_plain_hex()))
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown task or wrong secret"), "{stderr}");
    // Another pin is refused, naming the fingerprints.
    let wrong = Fingerprint::of(b"another certificate");
    let output = tokio::time::timeout(DEADLINE, sessions(wrong.to_string()))
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TLS certificate"), "{stderr}");
    assert!(stderr.contains(&fingerprint.to_string()), "{stderr}");
}
