//! A minimal `/metrics` endpoint over loopback, for the prometheus example and its test: one
//! thread, one request per connection, `GET /metrics` answered with the exporter's text.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

use metrics_exporter_prometheus::PrometheusHandle;

/// Serves `handle.render()` at `http://{addr}/metrics` on a background thread.
pub fn serve(addr: &str, handle: PrometheusHandle) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                // A broken client connection only loses that scrape.
                let _ = answer(stream, &handle);
            }
        })?;
    Ok(local)
}

fn answer(stream: TcpStream, handle: &PrometheusHandle) -> io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let (status, body) = match request_line.split_whitespace().nth(1) {
        Some("/metrics") => ("200 OK", handle.render()),
        _ => ("404 Not Found", String::from("not found\n")),
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Fetches `http://{addr}/metrics` and returns the body.
pub fn scrape(addr: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("no end of headers"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("scrape failed: {head}")));
    }
    Ok(body.to_owned())
}

/// The value of the series `name{labels}` in a scrape, if present.
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
