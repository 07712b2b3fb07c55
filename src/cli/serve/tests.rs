//! The rules of `rendezvous serve`'s flags.

use clap::Parser;

use super::{ServeArgs, check_cleartext, parse_origin};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: ServeArgs,
}

fn config(args: &[&str]) -> anyhow::Result<rendezvous_server::ServerConfig> {
    Cli::try_parse_from([&["serve"], args].concat())
        .unwrap()
        .args
        .config()
}

#[test]
fn durations_parse_as_people_write_them() {
    use std::time::Duration;
    assert_eq!(super::parse_duration("30m"), Ok(Duration::from_secs(1800)));
    assert_eq!(
        super::parse_duration("1h 30m"),
        Ok(Duration::from_secs(5400))
    );
    assert!(super::parse_duration("0s").unwrap_err().contains("zero"));
    assert!(
        super::parse_duration("soon")
            .unwrap_err()
            .contains("e.g. 90s")
    );
    let c = config(&[
        "--session-idle-timeout",
        "5m",
        "--max-session-lifetime",
        "2h",
    ])
    .unwrap();
    assert_eq!(c.timeouts.idle, Duration::from_secs(300));
    assert_eq!(c.timeouts.max_lifetime, Some(Duration::from_secs(7200)));
    assert_eq!(
        config(&[]).unwrap().timeouts.idle,
        Duration::from_secs(1800)
    );
}

#[test]
fn open_registration_needs_loopback_or_the_flag() {
    let error = config(&["--listen", "0.0.0.0:8080"])
        .unwrap_err()
        .to_string();
    assert!(error.contains("--host-token-file"), "{error}");
    assert!(error.contains("--allow-open-registration"), "{error}");
    let open = config(&["--listen", "0.0.0.0:8080", "--allow-open-registration"]).unwrap();
    assert!(open.host_admission.is_open());
    assert!(
        config(&["--listen", "127.0.0.1:8080"])
            .unwrap()
            .host_admission
            .is_open()
    );
    assert!(
        config(&["--listen", "[::1]:8080"])
            .unwrap()
            .host_admission
            .is_open()
    );
    let dir = std::env::temp_dir().join(format!("rendezvous-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("host-tokens");
    std::fs::write(&file, "ci token-one-0123456789abcdef\n").unwrap();
    let admitted = config(&[
        "--listen",
        "0.0.0.0:8080",
        "--host-token-file",
        file.to_str().unwrap(),
    ])
    .unwrap();
    assert!(!admitted.host_admission.is_open());
}

#[test]
fn guest_token_public_keys_come_from_one_file_or_url() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    std::fs::write(
        &jwks,
        format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{x}"}}]}}"#),
    )
    .unwrap();
    let jwks = jwks.to_str().unwrap();
    assert!(
        config(&["--token-jwks-file", jwks])
            .unwrap()
            .token_public_keys
            .is_some()
    );
    assert!(config(&[]).unwrap().token_public_keys.is_none());
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"keys":[]}"#).unwrap();
    let error = format!(
        "{:#}",
        config(&["--token-jwks-file", empty.to_str().unwrap()]).unwrap_err()
    );
    assert!(error.contains("no usable public key"), "{error}");
    let error = format!(
        "{:#}",
        config(&["--token-jwks-url", "http://ci.example.com/jwks"]).unwrap_err()
    );
    assert!(error.contains("https://"), "{error}");
    assert!(
        config(&["--token-jwks-url", "https://ci.example.com/jwks"])
            .unwrap()
            .token_public_keys
            .is_some()
    );
    assert!(
        Cli::try_parse_from([
            "serve",
            "--token-jwks-file",
            jwks,
            "--token-jwks-url",
            "https://ci.example.com/jwks"
        ])
        .is_err()
    );
}

#[test]
fn oidc_issuers_admit_hosts_off_loopback_and_need_an_audience() {
    let issuer = "https://token.actions.githubusercontent.com";
    let admitted = config(&[
        "--listen",
        "0.0.0.0:8080",
        "--host-oidc-issuer",
        issuer,
        "--host-oidc-audience",
        "https://rendezvous.example.com",
        "--host-oidc-require",
        "repository_owner=acme",
    ])
    .unwrap();
    assert!(!admitted.host_admission.is_open());
    assert_eq!(admitted.host_admission.oidc.len(), 1);
    assert_eq!(admitted.host_admission.oidc[0].issuer(), issuer);
    assert!(Cli::try_parse_from(["serve", "--host-oidc-issuer", issuer]).is_err());
    assert!(
        Cli::try_parse_from([
            "serve",
            "--host-oidc-issuer",
            issuer,
            "--host-oidc-audience",
            "a",
            "--host-oidc-require",
            "no-equals-sign"
        ])
        .is_err()
    );
    let error = format!(
        "{:#}",
        config(&[
            "--host-oidc-issuer",
            "http://issuer.example.com",
            "--host-oidc-audience",
            "a"
        ])
        .unwrap_err()
    );
    assert!(error.contains("https://"), "{error}");
}

#[test]
fn tls_flags_go_together_and_exclude_insecure() {
    use clap::Parser;
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::ServeArgs,
    }
    let parse = |args: &[&str]| Cli::try_parse_from([&["serve"], args].concat());
    let both = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
    assert!(both.args.tls_cert.is_some() && both.args.tls_key.is_some());
    assert!(parse(&["--tls-self-signed"]).unwrap().args.tls_self_signed);
    for bad in [
        &["--tls-cert", "c.pem"][..],
        &["--tls-key", "k.pem"],
        &[
            "--tls-self-signed",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ],
        &["--insecure", "--tls-self-signed"],
        &["--insecure", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn cleartext_off_loopback_needs_tls_or_insecure() {
    for loopback in [
        "127.0.0.1:80",
        "127.1.2.3:80",
        "[::1]:80",
        "[::ffff:127.0.0.1]:80",
    ] {
        assert!(check_cleartext(loopback.parse().unwrap(), false, false).is_ok());
    }
    for exposed in ["0.0.0.0:80", "[::]:80", "192.0.2.1:80", "[2001:db8::1]:80"] {
        let addr = exposed.parse().unwrap();
        let error = check_cleartext(addr, false, false).unwrap_err().to_string();
        for needed in [
            "--tls-cert",
            "--tls-self-signed",
            "--insecure",
            "behind a TLS proxy",
        ] {
            assert!(error.contains(needed), "{error}");
        }
        assert!(check_cleartext(addr, true, false).is_ok());
        assert!(check_cleartext(addr, false, true).is_ok());
    }
}

#[test]
fn origins_are_scheme_host_and_port_only() {
    assert!(parse_origin("https://ci.example.com").is_ok());
    assert!(parse_origin("http://127.0.0.1:9000").is_ok());
    assert!(parse_origin("https://ci.example.com/").is_err());
    assert!(parse_origin("https://ci.example.com/path").is_err());
    assert!(parse_origin("ci.example.com").is_err());
    assert!(parse_origin("ftp://ci.example.com").is_err());
}
