//! The Redis URL (`serve --redis-url`), which may carry a password: shown
//! everywhere (Debug, Display, errors, logs) without its credentials.

use std::fmt;

/// A `redis://` or `rediss://` (TLS) URL, e.g.
/// `redis://:PASSWORD@redis.internal:6379/0`. Debug and Display show only
/// the scheme, server and database, never the user name or password.
#[derive(Clone)]
pub struct RedisUrl {
    /// The URL as given, credentials included: only for connecting.
    url: String,
    /// `scheme://host:port/db`, for people.
    shown: String,
}

impl RedisUrl {
    /// Checks `text` as redis-rs reads it, for clap's `value_parser`.
    ///
    /// # Errors
    /// A sentence that says what is wrong and never repeats `text` (it
    /// may hold a password).
    pub fn parse(text: &str) -> Result<Self, String> {
        let scheme = if text.starts_with("redis://") {
            "redis"
        } else if text.starts_with("rediss://") {
            "rediss"
        } else {
            return Err(
                "not a Redis URL: write redis://[:PASSWORD@]HOST[:PORT][/DB], or rediss://… for TLS"
                    .into(),
            );
        };
        let client = redis::Client::open(text).map_err(|e| {
            format!(
                "not a usable Redis URL ({}): write redis://[:PASSWORD@]HOST[:PORT][/DB]",
                url_error(&e)
            )
        })?;
        let info = client.get_connection_info();
        let shown = format!("{scheme}://{}/{}", info.addr(), info.redis_settings().db());
        Ok(Self {
            url: text.to_owned(),
            shown,
        })
    }

    /// A client for this URL (it connects only when used).
    ///
    /// # Errors
    /// redis-rs's, for a URL it read in [`parse`](Self::parse) but cannot
    /// use now (not expected).
    pub(crate) fn client(&self) -> redis::RedisResult<redis::Client> {
        redis::Client::open(self.url.as_str())
    }
}

/// What a redis-rs error of a URL says, without the URL: its detail is a
/// fixed sentence ("Missing hostname", "Invalid database number").
fn url_error(e: &redis::RedisError) -> String {
    e.detail()
        .map_or_else(|| format!("{:?}", e.kind()), str::to_owned)
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_url_is_shown_without_its_credentials() {
        let url = RedisUrl::parse("redis://user:hunter2-password@redis.internal:6380/2").unwrap();
        assert_eq!(url.to_string(), "redis://redis.internal:6380/2");
        assert!(!format!("{url:?}").contains("hunter2"));
        let tls = RedisUrl::parse("rediss://:hunter2-password@redis.internal").unwrap();
        assert_eq!(tls.to_string(), "rediss://redis.internal:6379/0");
    }

    #[test]
    fn a_bad_redis_url_is_refused_without_repeating_it() {
        for bad in [
            "http://:hunter2-password@redis.internal",
            "redis://:hunter2-password@redis.internal/notadb",
            "hunter2-password",
        ] {
            let error = RedisUrl::parse(bad).unwrap_err();
            assert!(error.contains("redis://"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
