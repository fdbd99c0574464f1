//! HTTP on `[http] listen` (default 127.0.0.1:8404): `/metrics` (Prometheus text), `/stats`
//! (HTML), the health checks of Patroni's REST API for this instance and per node (`health`),
//! and `/node/<name>` (JSON). Who may ask is `access`: an allow-list of networks (403) and basic
//! or bearer credentials (401), on `/stats` or on every endpoint.
//! A deliberately small HTTP/1.1 responder: one request per connection, bounded reads.

mod access;
pub mod health;

pub use access::{Access, Decision};

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tracing::{debug, warn};

use crate::status::{Snapshot, render_html, render_metrics};

use self::health::{CheckError, parse_check};

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

/// Serves until the task is dropped. Each connection is judged by the access rules in force
/// when it is accepted (a reload sends new ones).
pub async fn serve<P: SnapshotProvider>(listener: TcpListener, snapshot: P, access: watch::Receiver<Access>) {
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
        let access = access.borrow().clone();
        // Detached on purpose: one request and one answer (the read bounded by READ_TIMEOUT),
        // holding nothing but a snapshot source; an answer in flight at a stop may finish.
        tokio::spawn(async move {
            if let Err(e) = handle(stream, peer, &snapshot, &access).await {
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
    /// What follows `?`, if anything.
    pub query: Option<String>,
    pub authorization: Option<String>,
}

/// Parses a request head (everything up to the blank line).
pub fn parse_request(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    Some(Request { method, path, query, authorization })
}

/// An answer: status line, content type, extra header lines, body.
#[derive(Debug)]
pub struct Response {
    pub status: &'static str,
    pub kind: &'static str,
    pub headers: String,
    pub body: String,
}

impl Response {
    /// The bytes sent for it: the head, and the body for a GET. A HEAD's Content-Length is the
    /// GET's; an OPTIONS answer has none (HAProxy's `httpchk` reads the status only).
    pub fn wire(&self, method: &str) -> String {
        let length = if method == "OPTIONS" { 0 } else { self.body.len() };
        let body = if method == "GET" { self.body.as_str() } else { "" };
        format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {length}\r\nCache-Control: no-store\r\nConnection: close\r\n{}\r\n{body}",
            self.status, self.kind, self.headers
        )
    }

    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Response { status, kind: "text/plain", headers: String::new(), body: body.into() }
    }
}

/// The response to a request from `peer`: the access rules first (403, 401), then the method
/// (GET, HEAD and OPTIONS, which HAProxy's `httpchk` sends; the latter two get no body), then
/// the path.
pub fn respond(req: &Request, peer: std::net::IpAddr, snapshot: &Snapshot, access: &Access) -> Response {
    match access.decide(peer, &req.path, req.authorization.as_deref()) {
        Decision::Allowed => {}
        Decision::Forbidden => return Response::text("403 Forbidden", "forbidden: this address is not in [http] allow\n"),
        Decision::Unauthorized => {
            return Response { headers: access.challenges(), ..Response::text("401 Unauthorized", "authentication required\n") };
        }
    }
    if !matches!(req.method.as_str(), "GET" | "HEAD" | "OPTIONS") {
        return Response { headers: "Allow: GET, HEAD, OPTIONS\r\n".into(), ..Response::text("405 Method Not Allowed", "only GET, HEAD and OPTIONS\n") };
    }
    match req.path.as_str() {
        "/metrics" => Response { kind: "text/plain; version=0.0.4", ..Response::text("200 OK", render_metrics(snapshot)) },
        "/stats" => Response { kind: "text/html; charset=utf-8", ..Response::text("200 OK", render_html(snapshot)) },
        "/" => Response { headers: "Location: /stats\r\n".into(), ..Response::text("302 Found", "see /stats\n") },
        path => match parse_check(path, req.query.as_deref()) {
            Some(check) => health_response(check, snapshot),
            None => Response::text("404 Not Found", "not found: try /metrics, /stats, /primary, /replica, /read-only, /health or /node/<name>\n"),
        },
    }
}

/// A health check's answer: 200 or 503 with its JSON; 400 or 404 with one line.
fn health_response(check: Result<(health::Scope, health::Check), CheckError>, snapshot: &Snapshot) -> Response {
    match check.and_then(|(scope, check)| health::answer(&scope, check, snapshot)) {
        Ok(v) => {
            let status = if v.ok { "200 OK" } else { "503 Service Unavailable" };
            Response { kind: "application/json", ..Response::text(status, format!("{}\n", v.body)) }
        }
        Err(e) => Response::text(e.status(), format!("{e}\n")),
    }
}

async fn handle<P: SnapshotProvider>(mut stream: TcpStream, peer: SocketAddr, snapshot: &P, access: &Access) -> std::io::Result<()> {
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
    // Refused requests are answered without building a snapshot.
    let snap = match access.decide(peer.ip(), &req.path, req.authorization.as_deref()) {
        Decision::Allowed => snapshot.snapshot().await,
        _ => Snapshot::default(),
    };
    let r = respond(&req, peer.ip(), &snap, access);
    stream.write_all(r.wire(&req.method).as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HttpAuthScope;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
    }

    #[test]
    fn parses_request_line_query_and_authorization() {
        let r = parse_request("GET /replica?lag=16MB HTTP/1.1\r\nHost: a\r\nauthorization: Basic abc").expect("parses");
        assert_eq!(r, Request { method: "GET".into(), path: "/replica".into(), query: Some("lag=16MB".into()), authorization: Some("Basic abc".into()) });
        assert_eq!(parse_request("GET /stats HTTP/1.1").expect("parses").query, None);
        assert_eq!(parse_request(""), None);
    }

    fn get(path: &str, authz: Option<&str>) -> Request {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path.to_owned(), None),
        };
        Request { method: "GET".into(), path, query, authorization: authz.map(Into::into) }
    }

    #[test]
    fn routes_methods_and_auth() {
        let local = std::net::IpAddr::from([127, 0, 0, 1]);
        let snap = Snapshot { instance: "lb1".into(), forwarding: false, ..Snapshot::default() };
        let stats_only = Access::new(Vec::new(), Some(("admin", "secret")), None, HttpAuthScope::Stats);
        let open = Access::default();
        let status = |req: &Request, s: &Snapshot, a: &Access| respond(req, local, s, a).status;
        let denied = respond(&get("/stats", None), local, &snap, &stats_only);
        assert_eq!((denied.status, denied.headers.as_str()), ("401 Unauthorized", "WWW-Authenticate: Basic realm=\"pglb\"\r\n"));
        let good = format!("Basic {}", base64(b"admin:secret"));
        assert_eq!(status(&get("/stats", Some(&good)), &snap, &stats_only), "200 OK");
        assert_eq!(status(&get("/stats", None), &snap, &open), "200 OK");
        let health = respond(&get("/health", None), local, &snap, &open);
        assert_eq!((health.status, health.kind), ("503 Service Unavailable", "application/json"));
        let doc: serde_json::Value = serde_json::from_str(&health.body).expect("JSON");
        assert_eq!((&doc["forwarding"], &doc["instance"]), (&serde_json::json!(false), &serde_json::json!("lb1")));
        let forwarding = Snapshot { forwarding: true, ..snap.clone() };
        assert_eq!(status(&get("/health", None), &forwarding, &open), "200 OK");
        assert_eq!(status(&get("/metrics", None), &snap, &open), "200 OK");
        assert_eq!(status(&get("/nope", None), &snap, &open), "404 Not Found");
        assert_eq!(status(&get("/node/pg9", None), &snap, &open), "404 Not Found");
        let bad = respond(&get("/replica?lag=soon", None), local, &forwarding, &open);
        assert_eq!((bad.status, bad.body.as_str()), ("400 Bad Request", "lag=soon is neither bytes (1048576, 16MB) nor a duration (10s, 500ms)\n"));
        for method in ["HEAD", "OPTIONS"] {
            let r = Request { method: method.into(), ..get("/health", None) };
            assert_eq!(status(&r, &forwarding, &open), "200 OK", "{method}");
        }
        let r = respond(&get("/health", None), local, &forwarding, &open);
        let len = r.body.len();
        assert!(r.wire("GET").starts_with("HTTP/1.1 200 OK\r\n") && r.wire("GET").ends_with(&format!("\r\n\r\n{}", r.body)));
        assert!(r.wire("HEAD").contains(&format!("Content-Length: {len}\r\n")) && r.wire("HEAD").ends_with("\r\n\r\n"));
        assert!(r.wire("OPTIONS").contains("Content-Length: 0\r\n") && r.wire("OPTIONS").ends_with("\r\n\r\n"));
        let post = Request { method: "POST".into(), ..get("/metrics", None) };
        assert_eq!(status(&post, &snap, &open), "405 Method Not Allowed");
        let fenced_off = Access { allow: vec!["10.0.0.0/8".parse().unwrap()], ..open.clone() };
        assert_eq!(status(&get("/metrics", None), &snap, &fenced_off), "403 Forbidden");
    }
}
