//! What the Prometheus example (`src/main.rs`) and its test (`tests/scrape.rs`) share: the
//! address the exporter listens on, and a minimal scrape client over loopback.
//!
//! The serving itself is `metrics-exporter-prometheus`'s own HTTP listener
//! (`PrometheusBuilder::with_http_listener`); nothing here is a server.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long a scrape may take before it is an error rather than a hang.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket address `spec` names (`host:port`). Port 0 means "any free port": the exporter
/// does not report the port it bound, so a free one is picked here first (bound, read, and
/// released) and the exporter then binds it.
pub fn listen_addr(spec: &str) -> io::Result<SocketAddr> {
    let addr = spec.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{spec}: no address"))
    })?;
    if addr.port() != 0 {
        return Ok(addr);
    }
    TcpListener::bind(addr)?.local_addr()
}

/// Fetches `http://{addr}/metrics` (HTTP/1.1, one connection) and returns the body.
pub fn scrape(addr: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!(
            "scrape failed: {}",
            status.trim_end()
        )));
    }
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::other("the response ended inside its headers"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let length = length.ok_or_else(|| io::Error::other("no Content-Length in the response"))?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    String::from_utf8(body).map_err(io::Error::other)
}

/// The value of the series `name{labels}` in a scrape in Prometheus's text format, if present.
pub fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}
