//! The drills' load client, run inside `pgha-client` by `cargo xtask drill`.
//!
//! `drill_client write|read HOST PORT PASSWORD_FILE RUN OUT_FILE`: every 10 ms, one INSERT of
//! the next sequence number into `drill_writes` (write) or one `SELECT` (read) through
//! HOST:PORT, reconnecting at once after any error. One line per outcome is appended to
//! OUT_FILE, flushed at once so a killed client loses nothing:
//!
//! ```text
//! ok   SEQ SENT_US ACK_US NODE TL LSN   (write acknowledged: NODE = inet_server_addr(), TL the
//!                                        server's timeline and LSN its WAL position then)
//! ok   0   SENT_US ACK_US NODE REC      (read answered; REC = pg_is_in_recovery(), t or f)
//! err  SEQ SENT_US AT_US  MESSAGE
//! ```
//!
//! The timeline and position of every acknowledgement let the drill judge each acknowledged
//! write against the winning timeline's history on its own (split-brain writes), not only by
//! whether the winner has the row.
//!
//! `drill_client connect-probe HOST PORT PASSWORD_FILE RUN OUT_FILE` (the `syn-flood` drill):
//! every 100 ms, a NEW connection to HOST:PORT (1 s limit), `SELECT 1`, close. Attempts run
//! concurrently, so one hanging for its full second does not delay the next: the drill needs
//! the 100 ms resolution to time the first success after a flood. RUN is ignored. Lines:
//!
//! ```text
//! ok   SENT_US CONNECTED_US DONE_US     (connected at CONNECTED_US, SELECT 1 answered at DONE_US)
//! err  SENT_US AT_US MESSAGE
//! ```
//!
//! `drill_client idle HOST PORT PASSWORD_FILE RUN OUT_FILE` (the `syn-flood` drill's idle
//! session): connects, writes `ready PID` (the server's backend pid) and then sends nothing
//! until a line arrives on stdin; then asks `SELECT pg_backend_pid()` on the SAME connection,
//! writes `ok PID` or `err MESSAGE`, and exits. A failed first connection writes `err MESSAGE`.
//!
//! Times are microseconds since the Unix epoch (CLOCK_REALTIME, the same clock xtask reads).
//! The write, read and connect-probe clients run until they are killed.

use std::{
    fs::File,
    io::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_postgres::{Client, NoTls};

/// How often a request is sent.
const EVERY: Duration = Duration::from_millis(10);
/// A connection attempt or a statement taking longer than this counts as failed (a hung
/// server must not stall the client: it reconnects).
const LIMIT: Duration = Duration::from_millis(1000);
/// How often connect-probe opens a new connection.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long the idle session's final query may take (the servers may still be busy right
/// after a flood; a broken connection fails at once or never, and the drill has its own limit).
const IDLE_QUERY_LIMIT: Duration = Duration::from_secs(5);

/// The write, answering with the server, its current timeline (from the WAL file name, exact
/// right after a promotion) and its WAL position, in the same transaction as the row.
const INSERT: &str = "INSERT INTO drill_writes (run, seq) VALUES ($1, $2)
    RETURNING host(inet_server_addr()),
              ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int,
              pg_current_wal_lsn()::text";

fn now_us() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_micros()
}

async fn connect(host: &str, port: u16, password: &str) -> Result<Client, String> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(host).port(port).user("app").password(password).dbname("app").application_name("drill").connect_timeout(LIMIT);
    match tokio::time::timeout(LIMIT, pg.connect(NoTls)).await {
        Err(_) => Err("connect timed out".into()),
        Ok(Err(e)) => Err(format!("connect: {}", text(&e))),
        Ok(Ok((client, conn))) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(client)
        }
    }
}

fn text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_owned();
    }
    let mut t = e.to_string();
    let mut s = std::error::Error::source(e);
    while let Some(x) = s {
        t = format!("{t}: {x}");
        s = x.source();
    }
    t.replace('\n', " ")
}

async fn once(client: &Client, write: bool, run: i32, seq: i32) -> Result<String, String> {
    let work = async {
        if write {
            let row = client.query_one(INSERT, &[&run, &seq]).await.map_err(|e| text(&e))?;
            let node: Option<String> = row.get(0);
            let tl: i32 = row.get(1);
            let lsn: String = row.get(2);
            Ok(format!("{} {tl} {lsn}", node.unwrap_or_default()))
        } else {
            let row = client.query_one("SELECT host(inet_server_addr()), pg_is_in_recovery()", &[]).await.map_err(|e| text(&e))?;
            let recovery: bool = row.get(1);
            Ok(format!("{} {}", row.get::<_, Option<String>>(0).unwrap_or_default(), if recovery { "t" } else { "f" }))
        }
    };
    tokio::time::timeout(LIMIT, work).await.map_err(|_| "statement timed out".to_owned())?
}

/// Appends one line to the log, flushed at once so a killed client loses nothing.
fn log_line(out: &Mutex<File>, line: &str) {
    let mut f = out.lock().expect("the log lock is never poisoned: writers do not panic while holding it");
    f.write_all(line.as_bytes()).expect("writing the client log");
}

/// write and read: one request every 10 ms on a kept connection, reconnecting after any error.
async fn load(host: &str, port: u16, password: &str, write: bool, run: i32, out: &Mutex<File>) {
    let mut client: Option<Client> = None;
    let mut seq: i32 = 0;
    let mut ticker = tokio::time::interval(EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if write {
            seq += 1;
        }
        let sent = now_us();
        let result = match &client {
            Some(c) if !c.is_closed() => once(c, write, run, seq).await,
            _ => match connect(host, port, password).await {
                Ok(c) => {
                    let r = once(&c, write, run, seq).await;
                    client = Some(c);
                    r
                }
                Err(e) => Err(e),
            },
        };
        let line = match result {
            Ok(node) => format!("ok {seq} {sent} {} {node}\n", now_us()),
            Err(e) => {
                client = None;
                format!("err {seq} {sent} {} {e}\n", now_us())
            }
        };
        log_line(out, &line);
    }
}

/// One connect-probe attempt: a new connection, `SELECT 1`, close (the client is dropped).
async fn probe_once(host: String, port: u16, password: String, out: Arc<Mutex<File>>) {
    let sent = now_us();
    let line = match connect(&host, port, &password).await {
        Err(e) => format!("err {sent} {} {e}\n", now_us()),
        Ok(client) => {
            let connected = now_us();
            match tokio::time::timeout(LIMIT, client.simple_query("SELECT 1")).await {
                Ok(Ok(_)) => format!("ok {sent} {connected} {}\n", now_us()),
                Ok(Err(e)) => format!("err {sent} {} SELECT 1: {}\n", now_us(), text(&e)),
                Err(_) => format!("err {sent} {} SELECT 1 timed out\n", now_us()),
            }
        }
    };
    log_line(&out, &line);
}

/// connect-probe: a new attempt every 100 ms, each in its own task.
async fn probe(host: &str, port: u16, password: &str, out: Arc<Mutex<File>>) {
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        tokio::spawn(probe_once(host.to_owned(), port, password.to_owned(), Arc::clone(&out)));
    }
}

/// The server's backend pid, asked on `client`'s connection.
async fn backend_pid(client: &Client, limit: Duration) -> Result<i32, String> {
    match tokio::time::timeout(limit, client.query_one("SELECT pg_backend_pid()", &[])).await {
        Ok(Ok(row)) => Ok(row.get(0)),
        Ok(Err(e)) => Err(text(&e)),
        Err(_) => Err("statement timed out".into()),
    }
}

/// idle: one connection that sends nothing between `ready` and the line on stdin.
async fn idle(host: &str, port: u16, password: &str, out: &Mutex<File>) {
    let first = match connect(host, port, password).await {
        Ok(c) => backend_pid(&c, LIMIT).await.map(|pid| (c, pid)),
        Err(e) => Err(e),
    };
    let client = match first {
        Ok((c, pid)) => {
            log_line(out, &format!("ready {pid}\n"));
            c
        }
        Err(e) => {
            log_line(out, &format!("err {e}\n"));
            std::process::exit(1);
        }
    };
    let waited = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
    if !matches!(waited, Ok(Ok(n)) if n > 0) {
        log_line(out, "err stdin closed before the drill asked for the query\n");
        std::process::exit(1);
    }
    let line = match backend_pid(&client, IDLE_QUERY_LIMIT).await {
        Ok(pid) => format!("ok {pid}\n"),
        Err(e) => format!("err {e}\n"),
    };
    log_line(out, &line);
}

/// What the client does.
enum Mode {
    Load { write: bool },
    Probe,
    Idle,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, host, port, password_file, run, out] = &args[..] else {
        eprintln!("error: usage: drill_client write|read|connect-probe|idle HOST PORT PASSWORD_FILE RUN OUT_FILE");
        std::process::exit(2);
    };
    let mode = match mode.as_str() {
        "write" => Mode::Load { write: true },
        "read" => Mode::Load { write: false },
        "connect-probe" => Mode::Probe,
        "idle" => Mode::Idle,
        other => {
            eprintln!("error: unknown mode {other:?}: write, read, connect-probe or idle");
            std::process::exit(2);
        }
    };
    let port: u16 = port.parse().expect("PORT is a number");
    let run: i32 = run.parse().expect("RUN is a number");
    let password = std::fs::read_to_string(password_file).unwrap_or_else(|e| panic!("reading {password_file}: {e}"));
    let password = password.trim();
    let out = std::fs::OpenOptions::new().create(true).append(true).open(out).unwrap_or_else(|e| panic!("opening {out}: {e}"));
    let out = Arc::new(Mutex::new(out));
    match mode {
        Mode::Load { write } => load(host, port, password, write, run, &out).await,
        Mode::Probe => probe(host, port, password, out).await,
        Mode::Idle => idle(host, port, password, &out).await,
    }
}
