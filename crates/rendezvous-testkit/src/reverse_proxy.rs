//! nginx and Caddy in front of a server, run from the examples in
//! `deploy/` (`deploy/nginx/rendezvous.conf`, `deploy/caddy/Caddyfile`)
//! with only what a deployment changes replaced: the listen port, the
//! upstream address and the certificate paths ([`render`]). Each runs as
//! a child process on a free loopback port, with its pid, logs, temporary
//! files and (Caddy) home in a temporary directory, and is stopped on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rendezvous_proto::endpoint::ServerEndpoint;
use rendezvous_proto::guest_service_client::GuestServiceClient;
use rendezvous_proto::tls::{TlsOptions, client_config};
use tower::util::BoxCloneService;

use crate::tls::TestCert;
use crate::{AnyGuestClient, DEADLINE, Transport};

/// Which reverse proxy, with the example `deploy/` has for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Debian's nginx (`/usr/sbin/nginx`), `deploy/nginx/rendezvous.conf`.
    Nginx,
    /// Debian's Caddy (`/usr/bin/caddy`), `deploy/caddy/Caddyfile`.
    Caddy,
}

/// Where a rendered example listens, what it proxies to, and its
/// certificate: what an operator sets when copying it.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The loopback port the proxy listens on (TLS).
    pub port: u16,
    /// The Rendezvous server's cleartext address.
    pub upstream: SocketAddr,
    /// The certificate file (PEM).
    pub cert: PathBuf,
    /// Its key file (PEM).
    pub key: PathBuf,
}

impl Kind {
    /// Lower-case name, for messages and file names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Caddy => "caddy",
        }
    }

    /// The program, as Debian's package installs it.
    pub fn program(self) -> &'static str {
        match self {
            Kind::Nginx => "/usr/sbin/nginx",
            Kind::Caddy => "/usr/bin/caddy",
        }
    }

    /// The example configuration's path in the repository.
    pub fn example_path(self) -> PathBuf {
        let file = match self {
            Kind::Nginx => "deploy/nginx/rendezvous.conf",
            Kind::Caddy => "deploy/caddy/Caddyfile",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(file)
    }

    /// The example configuration, as committed.
    pub fn example(self) -> String {
        let path = self.example_path();
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read the {} example {}: {e}", self.name(), path.display()))
    }
}

/// Replaces, in `text`, each `from` with `to`, and checks that it occurs
/// exactly `count` times: a changed example must fail loudly here rather
/// than run with the example's address.
fn replace_exactly(text: &str, from: &str, to: &str, count: usize, kind: Kind) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found,
        count,
        "the {} example should have {from:?} {count} time(s), has it {found} time(s)",
        kind.name()
    );
    text.replace(from, to)
}

/// `config` with the value of every line whose first word is one of
/// `directives` set to `value` (`ssl_certificate /path;` becomes
/// `ssl_certificate VALUE;` in nginx's syntax, `read_timeout 0` becomes
/// `read_timeout VALUE` in Caddy's), and how many lines that changed.
pub fn set_directives(
    kind: Kind,
    config: &str,
    directives: &[&str],
    value: &str,
) -> (String, usize) {
    let mut changed = 0;
    let end = if kind == Kind::Nginx { ";" } else { "" };
    let lines: Vec<String> = config
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            match directives
                .iter()
                .find(|d| trimmed.split_whitespace().next() == Some(**d))
            {
                Some(directive) => {
                    changed += 1;
                    let indent = &line[..line.len() - trimmed.len()];
                    format!("{indent}{directive} {value}{end}")
                }
                None => line.to_owned(),
            }
        })
        .collect();
    (lines.join("\n") + "\n", changed)
}

/// The values of every line of `config` (comments aside) whose first word
/// is `directive`, without nginx's trailing `;`.
pub fn directive_values<'a>(config: &'a str, directive: &str) -> Vec<&'a str> {
    config
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter_map(|line| line.strip_prefix(directive))
        .filter(|rest| rest.starts_with([' ', '\t']))
        .map(|rest| rest.trim().trim_end_matches(';').trim())
        .collect()
}

/// A duration as nginx (`90s`, `1h30m`, `1d`, `500ms`, bare seconds) or
/// Caddy (Go's `1h30m`, `500ms`; `0` for none, [`Duration::MAX`]) writes
/// it.
pub fn parse_duration(text: &str) -> Duration {
    if text == "0" {
        return Duration::MAX;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let number: u32 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("not a duration: {text:?}"));
        rest = &rest[digits..];
        let units = [
            ("ms", 0.001),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
            ("d", 86_400.0),
        ];
        let (unit, seconds) = units
            .iter()
            .find(|(unit, _)| rest.starts_with(unit))
            .copied()
            .unwrap_or(("", 1.0)); // nginx: bare seconds
        total += Duration::from_secs_f64(f64::from(number) * seconds);
        rest = &rest[unit.len()..];
    }
    total
}

/// The example `example` (normally [`Kind::example`]) as `placement`
/// puts it: only the listen port, the upstream address and the
/// certificate paths differ. nginx's example is a file of the `http`
/// block (upstreams and a server); Caddy's gets its site address and a
/// `tls CERT KEY` line, as its example leaves certificates to Caddy.
pub fn render(kind: Kind, example: &str, placement: &Placement) -> String {
    let upstream = placement.upstream.to_string();
    let (cert, key) = (placement.cert.display(), placement.key.display());
    match kind {
        Kind::Nginx => {
            let text = replace_exactly(
                example,
                "listen 443 ssl http2;",
                &format!("listen 127.0.0.1:{} ssl http2;", placement.port),
                1,
                kind,
            );
            // One upstream block for grpc_pass, one for proxy_pass.
            let text = replace_exactly(
                &text,
                "server 127.0.0.1:8080;",
                &format!("server {upstream};"),
                2,
                kind,
            );
            let mut text = text;
            for (directive, path) in [("ssl_certificate", cert), ("ssl_certificate_key", key)] {
                let changed;
                (text, changed) = set_directives(kind, &text, &[directive], &path.to_string());
                assert_eq!(
                    changed, 1,
                    "the nginx example should have one {directive} line"
                );
            }
            text
        }
        Kind::Caddy => {
            let text = replace_exactly(
                example,
                "\nrendezvous.example.com {\n",
                &format!(
                    "\nhttps://127.0.0.1:{} {{\n\ttls {cert} {key}\n",
                    placement.port
                ),
                1,
                kind,
            );
            replace_exactly(
                &text,
                "reverse_proxy h2c://127.0.0.1:8080",
                &format!("reverse_proxy h2c://{upstream}"),
                1,
                kind,
            )
        }
    }
}

/// A reverse proxy running a rendered example on a loopback port; stopped
/// (SIGTERM, then SIGKILL after [`DEADLINE`]) on drop.
pub struct ReverseProxy {
    /// Which proxy.
    pub kind: Kind,
    /// `https://127.0.0.1:PORT`: what hosts and guests are given.
    pub url: String,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The configuration it runs, as written to its file.
    pub config: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A free loopback port, as the kernel picks it (free when this returns;
/// [`ReverseProxy::start_with`] tries again should another take it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl ReverseProxy {
    /// `kind` running its `deploy/` example in front of `upstream`, with
    /// `cert` (issued for `127.0.0.1`); returns once it accepts
    /// connections.
    pub async fn start(kind: Kind, upstream: SocketAddr, cert: &TestCert) -> Self {
        Self::start_with(kind, &kind.example(), upstream, cert).await
    }

    /// As [`ReverseProxy::start`], from `example` instead of the committed
    /// file (a test's variant of it).
    pub async fn start_with(
        kind: Kind,
        example: &str,
        upstream: SocketAddr,
        cert: &TestCert,
    ) -> Self {
        let mut last_log = String::new();
        // Another process may take the free port before the proxy binds it.
        for _ in 0..3 {
            match Self::try_start(kind, example, upstream, cert).await {
                Ok(proxy) => return proxy,
                Err(log) if log.contains("in use") => last_log = log,
                Err(log) => panic!("{} did not start:\n{log}", kind.name()),
            }
        }
        panic!("{} found no free port:\n{last_log}", kind.name())
    }

    async fn try_start(
        kind: Kind,
        example: &str,
        upstream: SocketAddr,
        cert: &TestCert,
    ) -> Result<Self, String> {
        let dir = crate::temp_dir(kind.name());
        // nginx's workers run as `nobody` when the tests run as root; they
        // must reach the temporary files' directories.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("open up the proxy's directory");
        let placement = Placement {
            port: free_port(),
            upstream,
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        cert.write_to(&placement.cert, &placement.key);
        let config = render(kind, example, &placement);
        let log = dir.path().join("log");
        // Appended to by the proxy itself (nginx's error log) and by its
        // stdout and stderr.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("create the proxy's log");
        let mut command = match kind {
            Kind::Nginx => nginx_command(dir.path(), &config),
            Kind::Caddy => caddy_command(dir.path(), &config),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("the log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} ({e}); is it installed?", kind.program()));
        let addr = SocketAddr::from(([127, 0, 0, 1], placement.port));
        let mut proxy = Self {
            kind,
            url: format!("https://{addr}"),
            addr,
            config,
            child,
            log,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(format!("{status}\n{}", proxy.log()));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(proxy);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} does not listen on {addr}:\n{}",
                kind.name(),
                proxy.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the proxy logged so far (its error log, or Caddy's log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A guest client through the proxy over `transport`, trusting the
    /// proxy's certificate as `trust` says: gRPC (ALPN h2), or gRPC-Web
    /// offering only HTTP/1.1 or only HTTP/2, as browsers may.
    pub async fn guest_client_over(
        &self,
        transport: Transport,
        trust: &TlsOptions,
    ) -> AnyGuestClient {
        guest_client(&self.url, transport, trust).await
    }
}

/// nginx with the rendered example as its `http` block's one include, its
/// files in `dir`: `nginx -p DIR -c DIR/nginx.conf -g 'daemon off; …'`.
fn nginx_command(dir: &Path, site: &str) -> Command {
    let d = dir.display();
    std::fs::write(dir.join("rendezvous.conf"), site).expect("write the site");
    // What Debian's /etc/nginx/nginx.conf sets around conf.d/*.conf, with
    // its paths in `dir`.
    let main = format!(
        "worker_processes 1;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \taccess_log {d}/access.log;\n\
         \tclient_body_temp_path {d}/client_body;\n\
         \tproxy_temp_path {d}/proxy;\n\
         \tfastcgi_temp_path {d}/fastcgi;\n\
         \tuwsgi_temp_path {d}/uwsgi;\n\
         \tscgi_temp_path {d}/scgi;\n\
         \tinclude {d}/rendezvous.conf;\n\
         }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).expect("write nginx.conf");
    let mut command = Command::new(Kind::Nginx.program());
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("log"))
        .arg("-g")
        .arg(format!(
            "daemon off; pid {d}/nginx.pid; error_log {d}/log info;"
        ));
    command
}

/// Caddy with the rendered example, after global options that keep it to
/// the test: no admin endpoint, no automatic HTTPS (so no port 80 and no
/// ACME), nothing installed in the system's trust store, loopback only,
/// no HTTP/3 (UDP), and its storage and home in `dir`.
fn caddy_command(dir: &Path, site: &str) -> Command {
    let d = dir.display();
    let config = format!(
        "{{\n\
         \tadmin off\n\
         \tauto_https off\n\
         \tskip_install_trust\n\
         \tdefault_bind 127.0.0.1\n\
         \tstorage file_system {d}/storage\n\
         \tservers {{\n\
         \t\tprotocols h1 h2\n\
         \t}}\n\
         }}\n\n{site}"
    );
    let file = dir.join("Caddyfile");
    std::fs::write(&file, config).expect("write the Caddyfile");
    let home = dir.join("home");
    let mut command = Command::new(Kind::Caddy.program());
    command
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&file)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"));
    command
}

impl Drop for ReverseProxy {
    fn drop(&mut self) {
        // nginx: SIGTERM, a fast shutdown in which the master stops its
        // workers (SIGKILL would leave them running). Caddy: SIGQUIT, at
        // once (its SIGTERM waits for idle client connections to go).
        let signal = match self.kind {
            Kind::Nginx => "-TERM",
            Kind::Caddy => "-QUIT",
        };
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + DEADLINE;
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A guest client for `url` over `transport`, trusting it as `trust` says.
async fn guest_client(url: &str, transport: Transport, trust: &TlsOptions) -> AnyGuestClient {
    let service = match transport {
        Transport::Grpc => {
            let channel = ServerEndpoint::new(url, trust)
                .expect("the proxy's URL")
                .connect()
                .await
                .expect("connect through the proxy");
            BoxCloneService::new(
                tower::ServiceBuilder::new()
                    .map_err(tonic::codegen::StdError::from)
                    .service(channel),
            )
        }
        Transport::GrpcWebHttp1 | Transport::GrpcWebHttp2 => {
            let http2 = transport == Transport::GrpcWebHttp2;
            let mut builder =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
            builder.http2_only(http2);
            // ALPN offers the one protocol used (hyper-rustls sets it from
            // enable_http1/enable_http2).
            let config = client_config(trust, &[]).expect("the proxy's TLS options");
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_only();
            let connector = if http2 {
                connector.enable_http2().build()
            } else {
                connector.enable_http1().build()
            };
            let http = builder.build::<_, tonic_web::GrpcWebCall<tonic::body::Body>>(connector);
            BoxCloneService::new(
                tower::ServiceBuilder::new()
                    .map_response(|r: http::Response<_>| r.map(tonic::body::Body::new))
                    .map_err(tonic::codegen::StdError::from)
                    .layer(tonic_web::GrpcWebClientLayer::new())
                    .service(http),
            )
        }
    };
    GuestServiceClient::with_origin(service, url.parse().expect("the proxy's URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_nginx_and_caddy_write_them() {
        assert_eq!(parse_duration("1d"), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1h30m"), Duration::from_secs(5400));
        assert_eq!(parse_duration("60"), Duration::from_secs(60));
        assert_eq!(parse_duration("500ms"), Duration::from_millis(500));
        assert_eq!(parse_duration("0"), Duration::MAX);
    }

    #[test]
    fn directives_are_read_and_set_by_their_first_word() {
        let config = "a 1;\n  grpc_read_timeout 2h; # x\n#grpc_read_timeout 1s;\n";
        assert_eq!(directive_values(config, "grpc_read_timeout"), ["2h"]);
        let (set, changed) = set_directives(Kind::Nginx, config, &["grpc_read_timeout"], "1s");
        assert_eq!(changed, 1);
        assert_eq!(directive_values(&set, "grpc_read_timeout"), ["1s"]);
        let (set, _) = set_directives(Kind::Caddy, "\t\tread_timeout 0\n", &["read_timeout"], "2s");
        assert_eq!(set, "\t\tread_timeout 2s\n");
    }
}
