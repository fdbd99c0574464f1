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
//! Times are microseconds since the Unix epoch (CLOCK_REALTIME, the same clock xtask reads).
//! The client runs until it is killed.

use std::{io::Write as _, time::Duration};

use tokio_postgres::{Client, NoTls};

/// How often a request is sent.
const EVERY: Duration = Duration::from_millis(10);
/// A connection attempt or a statement taking longer than this counts as failed (a hung
/// server must not stall the client: it reconnects).
const LIMIT: Duration = Duration::from_millis(1000);

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

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, host, port, password_file, run, out] = &args[..] else {
        eprintln!("error: usage: drill_client write|read HOST PORT PASSWORD_FILE RUN OUT_FILE");
        std::process::exit(2);
    };
    let write = match mode.as_str() {
        "write" => true,
        "read" => false,
        other => {
            eprintln!("error: unknown mode {other:?}: write or read");
            std::process::exit(2);
        }
    };
    let port: u16 = port.parse().expect("PORT is a number");
    let run: i32 = run.parse().expect("RUN is a number");
    let password = std::fs::read_to_string(password_file).unwrap_or_else(|e| panic!("reading {password_file}: {e}"));
    let password = password.trim();
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(out).unwrap_or_else(|e| panic!("opening {out}: {e}"));
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
        out.write_all(line.as_bytes()).expect("writing the client log");
    }
}
