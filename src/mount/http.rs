//! The smallest HTTP server that serves one page: `GET /metrics` (SPEC §14), on one thread of
//! its own over std's `TcpListener`, one connection at a time, every other path 404.
//!
//! Why no HTTP crate: tiny_http, the small one, starts four pool threads and an acceptor and
//! spawns another thread whenever every pool thread is busy, without a bound; for one route
//! answered from atomics, a request line, a head size limit and timeouts are all it takes, and
//! a flood of connections then costs one thread's time, not the FUSE workers' cores.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use tracing::debug;

/// A client gets this long to send its request head, and to take the answer: a stuck client
/// holds up the next scrape at most this long.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest request head read; Prometheus sends a few hundred bytes.
const HEAD_MAX: usize = 8 * 1024;

/// The text exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A bound listener, not yet served: bound at start-up so that a bad address or a port in use
/// stops `cachetta mount` before it mounts (and before `--daemon` forks: the daemon inherits
/// the socket).
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Endpoint {
    /// Listen on `addr` (`host:port`; a name such as `localhost` is resolved, port 0 picks a
    /// free port). The error says why, for a start-up refusal.
    pub fn bind(addr: &str) -> io::Result<Endpoint> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Endpoint { listener, addr })
    }

    /// The address bound (with the port chosen, for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answer requests on a thread named `metrics` for as long as the process lives; `page`
    /// renders the body of each `GET /metrics`.
    pub fn spawn(self, page: impl Fn() -> String + Send + 'static) -> io::Result<()> {
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for stream in self.listener.incoming() {
                    match stream {
                        Ok(stream) => {
                            if let Err(e) = answer(stream, &page) {
                                debug!("metrics: a client went away: {e}");
                            }
                        }
                        Err(e) => {
                            debug!("metrics: cannot accept a connection: {e}");
                            // Out of file descriptors, say: do not spin on it.
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(())
    }
}

/// Read one request head from `stream`, answer it, close the connection.
fn answer(mut stream: TcpStream, page: &dyn Fn() -> String) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let response = respond(&head, page);
    stream.write_all(&response)?;
    stream.flush()
}

/// Bytes up to the blank line that ends the head (or all there are, at most [`HEAD_MAX`]).
fn read_head(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0; 1024];
    while head.len() < HEAD_MAX && !ends_head(&head) {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}

fn ends_head(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// The whole response to a request head: 200 with the page for `GET /metrics` (headers only
/// for `HEAD`), 405 for another method there, 404 for any other path, 400 for a head that is
/// not HTTP.
fn respond(head: &[u8], page: &dyn Fn() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return response("400 Bad Request", "", "not an HTTP request\n");
    };
    if !version.starts_with("HTTP/") {
        return response("400 Bad Request", "", "not an HTTP request\n");
    }
    // The query (`?name[]=...`, which Prometheus federation sends) selects nothing here.
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return response(
            "404 Not Found",
            "",
            "not found; the metrics are at /metrics\n",
        );
    }
    match method {
        "GET" => response("200 OK", "", &page()),
        "HEAD" => {
            let mut full = response("200 OK", "", &page());
            let end = full.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
            full.truncate(end);
            full
        }
        _ => response(
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "only GET and HEAD\n",
        ),
    }
}

fn response(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\
         {headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_to(head: &str) -> String {
        String::from_utf8(respond(head.as_bytes(), &|| "up 1\n".to_string())).unwrap()
    }

    #[test]
    fn get_metrics_is_the_page_in_the_text_format() {
        let text = answer_to("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nContent-Length: 5\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nup 1\n"), "{text}");
    }

    #[test]
    fn a_query_string_still_finds_the_page() {
        let text = answer_to("GET /metrics?name[]=up HTTP/1.1\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    }

    #[test]
    fn other_paths_are_404() {
        for path in ["/", "/other", "/metrics/", "/metricsx"] {
            let text = answer_to(&format!("GET {path} HTTP/1.1\r\n\r\n"));
            assert!(
                text.starts_with("HTTP/1.1 404 Not Found\r\n"),
                "{path}: {text}"
            );
        }
    }

    #[test]
    fn head_gets_the_headers_alone_and_other_methods_405() {
        let text = answer_to("HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 5\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        let text = answer_to("POST /metrics HTTP/1.1\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 405 "), "{text}");
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
    }

    #[test]
    fn what_is_not_http_is_400() {
        for head in [
            "",
            "hello\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics SMTP\r\n\r\n",
        ] {
            let text = answer_to(head);
            assert!(text.starts_with("HTTP/1.1 400 "), "{head:?}: {text}");
        }
    }

    #[test]
    fn the_head_is_read_up_to_its_blank_line_and_no_further_than_the_limit() {
        let mut input: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(read_head(&mut input).unwrap().len(), 34);
        let endless = vec![b'a'; HEAD_MAX * 4];
        let head = read_head(&mut endless.as_slice()).unwrap();
        assert!(head.len() >= HEAD_MAX && head.len() < HEAD_MAX + 1024);
    }

    #[test]
    fn a_real_connection_is_answered_and_closed() {
        let endpoint = Endpoint::bind("127.0.0.1:0").unwrap();
        let addr = endpoint.addr();
        endpoint.spawn(|| "up 1\n".to_string()).unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        client.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("up 1\n"), "{text}");
    }

    #[test]
    fn a_port_in_use_cannot_be_bound() {
        let taken = Endpoint::bind("127.0.0.1:0").unwrap();
        let err = Endpoint::bind(&taken.addr().to_string()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(Endpoint::bind("not an address").is_err());
    }
}
