//! Reading a server's Prometheus endpoint (`serve --metrics-listen`), as a
//! scraper would: plain HTTP/1.1, the OpenMetrics text.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The text of `GET /metrics` at `addr` (`host:port`), over plain
/// HTTP/1.1. Panics unless the answer is 200 with the OpenMetrics type.
pub async fn scrape(addr: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("application/openmetrics-text; version=1.0.0"),
        "{response}"
    );
    response
}

/// The value of the series named exactly `series` (name and labels) in a
/// scrape. Panics when it is missing.
pub fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in {text}"))
        .parse()
        .unwrap()
}
