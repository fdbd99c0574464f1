//! HTTP on `[http] listen` (default 127.0.0.1:8404): `/metrics` (Prometheus text), `/stats`
//! (HTML, basic auth when configured) and `/health` (JSON; 200 only while this instance forwards).
//! A deliberately small HTTP/1.1 responder: one request per connection, bounded reads.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, warn};

use crate::status::{Snapshot, render_html, render_metrics};

/// The largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// A client that has not sent its request head after this is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen for HTTP on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Basic-auth credentials for `/stats`, kept as the expected header value.
#[derive(Clone)]
pub struct StatsAuth {
    expected: String,
}

impl StatsAuth {
    pub fn new(user: &str, password: &str) -> Self {
        StatsAuth { expected: format!("Basic {}", base64(format!("{user}:{password}").as_bytes())) }
    }
}

/// Standard base64 with padding (RFC 4648), enough for a basic-auth header.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })
}

/// Where the server gets a snapshot for each request (built when asked, off the daemon's loop).
pub trait SnapshotProvider: Clone + Send + Sync + 'static {
    fn snapshot(&self) -> impl std::future::Future<Output = Snapshot> + Send;
}

/// Serves until the task is dropped.
pub async fn serve<P: SnapshotProvider>(listener: TcpListener, snapshot: P, auth: Option<StatsAuth>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let snapshot = snapshot.clone();
        let auth = auth.clone();
        // Detached on purpose: one request and one answer (the read bounded by READ_TIMEOUT),
        // holding nothing but a snapshot source; an answer in flight at a stop may finish.
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &snapshot, auth.as_ref()).await {
                debug!(%peer, error = %e, "http: connection ended with an error");
            }
        });
    }
}

/// What a request head asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

/// Parses a request head (everything up to the blank line).
pub fn parse_request(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    Some(Request { method, path, authorization })
}

/// The response for a request: (status line, content type, extra headers, body).
pub fn respond(req: &Request, snapshot: &Snapshot, auth: Option<&StatsAuth>) -> (&'static str, &'static str, &'static str, String) {
    if req.method != "GET" && req.method != "HEAD" {
        return ("405 Method Not Allowed", "text/plain", "Allow: GET, HEAD\r\n", "only GET\n".into());
    }
    match req.path.as_str() {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", "", render_metrics(snapshot)),
        "/stats" => {
            if let Some(a) = auth
                && req.authorization.as_deref() != Some(a.expected.as_str())
            {
                return ("401 Unauthorized", "text/plain", "WWW-Authenticate: Basic realm=\"pglb\"\r\n", "authentication required\n".into());
            }
            ("200 OK", "text/html; charset=utf-8", "", render_html(snapshot))
        }
        "/health" => {
            let writer = snapshot.writer.as_deref();
            let body = format!(
                "{{\"instance\":\"{}\",\"forwarding\":{},\"vrrp\":\"{}\",\"phase\":\"{}\",\"writer\":{}}}\n",
                snapshot.instance,
                snapshot.forwarding,
                snapshot.vrrp_state,
                snapshot.phase,
                writer.map(|w| format!("\"{w}\"")).unwrap_or_else(|| "null".into()),
            );
            let status = if snapshot.forwarding { "200 OK" } else { "503 Service Unavailable" };
            (status, "application/json", "", body)
        }
        "/" => ("302 Found", "text/plain", "Location: /stats\r\n", "see /stats\n".into()),
        _ => ("404 Not Found", "text/plain", "", "not found: try /metrics, /stats or /health\n".into()),
    }
}

async fn handle<P: SnapshotProvider>(mut stream: TcpStream, snapshot: &P, auth: Option<&StatsAuth>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()));
            }
            if buf.len() > MAX_REQUEST {
                return Ok(None);
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head not received in time"))??;
    let Some(req) = head.as_deref().and_then(parse_request) else {
        stream.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").await?;
        return Ok(());
    };
    let snap = snapshot.snapshot().await;
    let (status, kind, extra, body) = respond(&req, &snap, auth);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if req.method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
    }

    #[test]
    fn parses_request_line_and_authorization() {
        let r = parse_request("GET /stats?x=1 HTTP/1.1\r\nHost: a\r\nauthorization: Basic abc").expect("parses");
        assert_eq!(r, Request { method: "GET".into(), path: "/stats".into(), authorization: Some("Basic abc".into()) });
        assert_eq!(parse_request(""), None);
    }

    #[test]
    fn routes_and_auth() {
        let snap = Snapshot { instance: "lb1".into(), forwarding: false, ..Snapshot::default() };
        let auth = StatsAuth::new("admin", "secret");
        let get = |path: &str, authz: Option<&str>| Request { method: "GET".into(), path: path.into(), authorization: authz.map(Into::into) };
        assert_eq!(respond(&get("/stats", None), &snap, Some(&auth)).0, "401 Unauthorized");
        let good = format!("Basic {}", base64(b"admin:secret"));
        assert_eq!(respond(&get("/stats", Some(&good)), &snap, Some(&auth)).0, "200 OK");
        assert_eq!(respond(&get("/stats", None), &snap, None).0, "200 OK");
        let health = respond(&get("/health", None), &snap, None);
        assert_eq!(health.0, "503 Service Unavailable");
        assert!(health.3.contains("\"forwarding\":false"), "{}", health.3);
        let forwarding = Snapshot { forwarding: true, ..snap.clone() };
        assert_eq!(respond(&get("/health", None), &forwarding, None).0, "200 OK");
        assert_eq!(respond(&get("/metrics", None), &snap, None).0, "200 OK");
        assert_eq!(respond(&get("/nope", None), &snap, None).0, "404 Not Found");
        let post = Request { method: "POST".into(), ..get("/metrics", None) };
        assert_eq!(respond(&post, &snap, None).0, "405 Method Not Allowed");
    }
}
