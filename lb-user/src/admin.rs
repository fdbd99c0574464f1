//! The admin socket between `pglb run` and the CLI (`status`, `switchover`, `failover`, `node
//! rejoin`, `node drain|undrain|disable|enable`, `pause`, `resume`, `reload`, `debug stall-loop`):
//! a Unix socket at `/run/pglb/<instance>.sock` (root only), one request line in, a reply out.
//! The reply's first line is `ok` or `error`; the rest is for the operator.
//!
//! A Unix socket works across network namespaces, so the CLI reaches a daemon that runs inside
//! a lab host from anywhere on the machine.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::debug;

use crate::failover::MarkKind;

/// Folder of the admin sockets.
pub const SOCKET_DIR: &str = "/run/pglb";

/// How long the CLI waits for a reply (a switchover waits for catch-up and promotion).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("cannot create {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another pglb instance is already running with this name (its admin socket {path} answers)")]
    AlreadyRunning { path: PathBuf },
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no pglb daemon answers on {path}: is `pglb run` running with this config?")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon on {path} did not answer within {limit:?}")]
    Timeout { path: PathBuf, limit: Duration },
}

/// A request from the CLI, with where the answer goes.
pub enum AdminRequest {
    /// The status table, or with `json` the `pglb.status/1` object (docs/JSON.md).
    Status { json: bool, reply: oneshot::Sender<String> },
    Switchover { to: String, reply: oneshot::Sender<Result<String, String>> },
    /// `pglb failover --to NODE [--accept-data-loss] [--json]`: the answer is text, or with
    /// `json` the `pglb.failover/1` object (docs/JSON.md), refusals included.
    Failover { to: String, accept_data_loss: bool, json: bool, reply: oneshot::Sender<Result<String, String>> },
    Rejoined { node: String, reply: oneshot::Sender<Result<String, String>> },
    /// `pglb pause [--for D] [--reason TEXT]`.
    Pause { duration: Option<Duration>, reason: Option<String>, reply: oneshot::Sender<Result<String, String>> },
    /// `pglb resume`.
    Resume { reply: oneshot::Sender<Result<String, String>> },
    /// `pglb node drain|undrain|disable|enable NODE`: the mark of `kind` on `node` turned `on`
    /// or off.
    Mark { node: String, kind: MarkKind, on: bool, reply: oneshot::Sender<Result<String, String>> },
    /// `pglb reload [--json]`: read the config file again; the answer says what changed, or
    /// why nothing did (an error).
    Reload { json: bool, reply: oneshot::Sender<Result<String, String>> },
    /// `pglb debug stall-loop`: block the daemon's main loop for `duration` (fault injection).
    StallLoop { duration: Duration, reply: oneshot::Sender<Result<String, String>> },
}

pub fn socket_path(instance: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{instance}.sock"))
}

/// Binds the socket; a stale socket file (nobody listening) is replaced.
pub fn bind(path: &Path) -> Result<UnixListener, AdminError> {
    let dir = path.parent().unwrap_or(Path::new(SOCKET_DIR));
    fs::create_dir_all(dir).map_err(|source| AdminError::Dir { path: dir.to_owned(), source })?;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(AdminError::AlreadyRunning { path: path.to_owned() });
        }
        let _ = fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| AdminError::Bind { path: path.to_owned(), source })?;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
    Ok(listener)
}

/// Accepts requests forever and forwards them to the daemon's loop.
pub async fn serve(listener: UnixListener, to_daemon: mpsc::Sender<AdminRequest>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let to_daemon = to_daemon.clone();
        // Detached on purpose: one request and one reply; an operator waiting at a stop (for a
        // switchover) must still be told "the daemon stopped before answering".
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &to_daemon).await {
                debug!(error = %e, "admin: connection ended with an error");
            }
        });
    }
}

async fn answer(stream: UnixStream, to_daemon: &mpsc::Sender<AdminRequest>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(1024)).read_line(&mut line).await?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let reply: Result<String, String> = match words.as_slice() {
        ["status"] | ["status", "json"] => {
            let (tx, rx) = oneshot::channel();
            match to_daemon.send(AdminRequest::Status { json: words.len() == 2, reply: tx }).await {
                Ok(()) => rx.await.map_err(|_| "the daemon is shutting down".to_owned()),
                Err(_) => Err("the daemon is shutting down".to_owned()),
            }
        }
        ["switchover", to] => ask(to_daemon, |reply| AdminRequest::Switchover { to: (*to).to_owned(), reply }).await,
        ["failover", to, flags @ ..] => match parse_failover(flags) {
            Ok((accept_data_loss, json)) => {
                ask(to_daemon, |reply| AdminRequest::Failover { to: (*to).to_owned(), accept_data_loss, json, reply }).await
            }
            Err(e) => Err(e),
        },
        ["pause", ms, rest @ ..] => match parse_pause(ms, rest) {
            Ok((duration, reason)) => ask(to_daemon, |reply| AdminRequest::Pause { duration, reason, reply }).await,
            Err(e) => Err(e),
        },
        ["resume"] => ask(to_daemon, |reply| AdminRequest::Resume { reply }).await,
        ["reload"] | ["reload", "json"] => ask(to_daemon, |reply| AdminRequest::Reload { json: words.len() == 2, reply }).await,
        ["rejoined", node] => ask(to_daemon, |reply| AdminRequest::Rejoined { node: (*node).to_owned(), reply }).await,
        ["mark", node, kind, on] => match (MarkKind::parse(kind), *on) {
            (Some(kind), "on" | "off") => {
                let on = *on == "on";
                ask(to_daemon, |reply| AdminRequest::Mark { node: (*node).to_owned(), kind, on, reply }).await
            }
            _ => Err(format!("mark takes NODE drain|disable on|off, not {kind:?} {on:?}")),
        },
        ["stall-loop", ms] => match ms.parse::<u64>() {
            Ok(ms) => ask(to_daemon, |reply| AdminRequest::StallLoop { duration: Duration::from_millis(ms), reply }).await,
            Err(_) => Err(format!("stall-loop takes milliseconds, not {ms:?}")),
        },
        _ => Err(format!("unknown request {:?}: expected `status`, `status json`, `switchover NODE`, `failover NODE [accept-data-loss] [json]`, `rejoined NODE`, `mark NODE drain|disable on|off`, `pause MS|- [REASON]`, `resume`, `reload`, `reload json` or `stall-loop MS`", line.trim())),
    };
    let text = match reply {
        Ok(t) => format!("ok\n{t}"),
        Err(e) => format!("error\n{e}"),
    };
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

/// `pause <ms>|- [reason words]`: the duration of `--for` in milliseconds (`-`: until resumed)
/// and the reason (the rest of the line).
fn parse_pause(ms: &str, rest: &[&str]) -> Result<(Option<Duration>, Option<String>), String> {
    let duration = match ms {
        "-" => None,
        ms => Some(Duration::from_millis(ms.parse::<u64>().map_err(|_| format!("pause takes milliseconds or `-`, not {ms:?}"))?)),
    };
    let reason = (!rest.is_empty()).then(|| rest.join(" "));
    Ok((duration, reason))
}

/// `failover NODE [accept-data-loss] [json]`'s flags, each at most once.
fn parse_failover(flags: &[&str]) -> Result<(bool, bool), String> {
    let (mut accept, mut json) = (false, false);
    for f in flags {
        let seen = match *f {
            "accept-data-loss" => std::mem::replace(&mut accept, true),
            "json" => std::mem::replace(&mut json, true),
            other => return Err(format!("failover takes `accept-data-loss` and `json`, not {other:?}")),
        };
        if seen {
            return Err(format!("failover: {f} given twice"));
        }
    }
    Ok((accept, json))
}

/// The request line of `pglb failover`.
pub fn failover_request(to: &str, accept_data_loss: bool, json: bool) -> String {
    let mut line = format!("failover {to}");
    if accept_data_loss {
        line.push_str(" accept-data-loss");
    }
    if json {
        line.push_str(" json");
    }
    line
}

/// The request line of `pglb pause` (newlines in the reason become spaces: one line).
pub fn pause_request(duration: Option<Duration>, reason: Option<&str>) -> String {
    let ms = duration.map_or_else(|| "-".to_owned(), |d| d.as_millis().to_string());
    let reason = reason.map(|r| r.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|r| !r.is_empty());
    match reason {
        Some(r) => format!("pause {ms} {r}"),
        None => format!("pause {ms}"),
    }
}

async fn ask(
    to_daemon: &mpsc::Sender<AdminRequest>,
    make: impl FnOnce(oneshot::Sender<Result<String, String>>) -> AdminRequest,
) -> Result<String, String> {
    let (tx, rx) = oneshot::channel();
    to_daemon.send(make(tx)).await.map_err(|_| "the daemon is shutting down".to_owned())?;
    rx.await.map_err(|_| "the daemon stopped before answering".to_owned())?
}

/// The CLI side: sends `request`, returns the daemon's reply (`Ok` for `ok`, `Err` for `error`).
pub async fn request(path: &Path, request: &str) -> Result<Result<String, String>, AdminError> {
    let io = |source| AdminError::Io { path: path.to_owned(), source };
    let mut stream = UnixStream::connect(path).await.map_err(|source| AdminError::Connect { path: path.to_owned(), source })?;
    stream.write_all(format!("{request}\n").as_bytes()).await.map_err(io)?;
    let mut text = String::new();
    tokio::time::timeout(REPLY_TIMEOUT, stream.read_to_string(&mut text))
        .await
        .map_err(|_| AdminError::Timeout { path: path.to_owned(), limit: REPLY_TIMEOUT })?
        .map_err(io)?;
    Ok(match text.split_once('\n') {
        Some(("ok", rest)) => Ok(rest.to_owned()),
        Some(("error", rest)) => Err(rest.trim().to_owned()),
        _ => Err(format!("unexpected reply from the daemon: {text:?}")),
    })
}
