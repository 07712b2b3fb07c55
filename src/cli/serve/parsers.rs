//! The checks of `rendezvous serve`'s flag values: durations, the
//! Redis lease, the advertise URL, origins, and cleartext on a public
//! address.

use std::net::SocketAddr;
use std::time::Duration;

use rendezvous_server::registry::redis_store::MIN_LEASE;

/// Parses a duration as people write it: `90s`, `30m`, `1h 30m`, `500ms`
/// (humantime's format). Zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}): write e.g. 90s, 30m or 1h30m"))?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero: give a positive duration"));
    }
    Ok(d)
}

/// A duration as [`parse_duration`] takes it, or zero (`0`, `0s`), for
/// flags where zero turns something off (`host --grace-period 0`).
///
/// # Errors
/// A text that is not a duration.
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}): write e.g. 0, 90s, 30m or 1h30m"))
}

/// A lease for `--redis-lease`: a duration as [`parse_duration`] takes
/// it, at least [`MIN_LEASE`].
///
/// # Errors
/// A text that is not a duration, or a shorter one.
pub fn parse_lease(s: &str) -> Result<Duration, String> {
    let lease = parse_duration(s)?;
    if lease < MIN_LEASE {
        return Err(format!(
            "{s:?} is shorter than {}, the shortest lease",
            humantime::format_duration(MIN_LEASE)
        ));
    }
    Ok(lease)
}

/// Checks `--advertise-url`: `http` or `https`, a host, an optional port,
/// nothing after (as [`parse_origin`]); returned as given.
///
/// # Errors
/// The sentence that says what to write.
pub fn parse_advertise_url(s: &str) -> Result<String, String> {
    parse_origin(s).map(|_| s.to_owned()).map_err(|_| {
        format!(
            "{s:?} is not this replica's address: use scheme://host[:port], e.g. http://10.0.0.7:8080"
        )
    })
}

/// Checks an origin as browsers send it: `http` or `https`, a host, an
/// optional port, nothing after.
pub fn parse_origin(s: &str) -> Result<http::HeaderValue, String> {
    let bad =
        || format!("{s:?} is not an origin: use scheme://host[:port], e.g. https://ci.example.com");
    let uri: http::Uri = s.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/") && !s.ends_with('/');
    if !scheme_ok || uri.authority().is_none() || !bare {
        return Err(bad());
    }
    http::HeaderValue::from_str(s).map_err(|_| bad())
}

/// Refuses cleartext on an address that is not loopback (127.0.0.0/8,
/// ::1) unless `insecure` says a TLS proxy is in front.
///
/// # Errors
/// The sentence that names the ways out: `--tls-cert`/`--tls-key`,
/// `--tls-self-signed`, or `--insecure` behind a TLS proxy.
pub fn check_cleartext(listen: SocketAddr, tls: bool, insecure: bool) -> anyhow::Result<()> {
    if tls || insecure || listen.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve cleartext on {listen}, which is not a loopback address: \
         serve TLS with --tls-cert FILE --tls-key FILE (or --tls-self-signed for a trial), \
         or pass --insecure if this server is behind a TLS proxy that terminates TLS for it"
    )
}
