//! PostgreSQL role probes: one task per node, a persistent connection, one query per round with a
//! hard timeout. A connection that stops answering is dropped and the node reported as failed:
//! a hung server is down, however healthy its TCP connection looks.

use std::{future::Future, net::SocketAddrV4, pin::Pin, sync::Arc, time::Duration};

use tokio::{
    sync::{Notify, mpsc, watch},
    time::Instant,
};
use tokio_postgres::{Client, Connection, Row, Socket, Statement};
use tracing::{debug, info};

use crate::{
    failover::{NodeId, NodeStatus, Observation, ProbeFailure, WalReceiver},
    pgtls::{PgStream, PgTls},
};

/// One round trip: role, timeline, positions and the WAL receiver, all in one row.
///
/// The timeline of a primary is read from its current WAL file name (exact right after a
/// promotion, unlike the last checkpoint's); a standby reports the timeline it receives on, or,
/// with no WAL receiver (its upstream just died), the newest of its last restartpoint's and its
/// minimum recovery point's. Those lag behind a timeline switch until the next restartpoint, so
/// [`run_node`] also never lets a standby's timeline go backwards.
const PROBE_SQL: &str = "
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery()
            THEN greatest(r.received_tli, (SELECT timeline_id FROM pg_control_checkpoint()),
                          (SELECT min_recovery_end_timeline FROM pg_control_recovery()))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
       -- A standby that just (re)started streaming reports the segment start it asked for as
       -- received, below what it has replayed: never report less than the replay position
       -- (rule 3 picks the candidate by received LSN).
       greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0::float8
            -- Nothing received waits for replay: idle, not lagging. (A standby that just
            -- (re)started streaming reports the segment start it asked for, below its replay
            -- position; the age of its last replayed commit says nothing then.)
            WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0::float8
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END AS replay_lag_s,
       r.status AS wal_status, r.sender_host, r.sender_port
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true";

/// Parses PostgreSQL's `X/Y` LSN text into a 64-bit position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX)).then_some((hi << 32) | lo)
}

/// Formats a 64-bit position the way PostgreSQL prints it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Connection settings shared by every probe task (a reload hands new ones to each).
#[derive(Clone, PartialEq)]
pub struct ProbeSettings {
    pub user: String,
    pub password: String,
    pub dbname: String,
    pub application_name: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// `[probe] sslmode` and its certificates: the one connector of every connection.
    pub tls: PgTls,
}

impl ProbeSettings {
    /// Whether a connection made with `other` is one this would make (a reload that changes
    /// none of these keeps the probes' connections).
    pub fn connects_like(&self, other: &ProbeSettings) -> bool {
        (&self.user, &self.password, &self.dbname, &self.application_name, self.connect_timeout, &self.tls)
            == (&other.user, &other.password, &other.dbname, &other.application_name, other.connect_timeout, &other.tls)
    }

    /// A tokio-postgres config for one node (also used by the executor's SQL actions).
    pub fn pg_config(&self, addr: SocketAddrV4, connect_timeout: Duration) -> tokio_postgres::Config {
        let mut pg = tokio_postgres::Config::new();
        pg.host(addr.ip().to_string())
            .port(addr.port())
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5));
        self.tls.configure(&mut pg);
        pg
    }
}

/// Opens a connection (TLS as `tls` says) with a hard limit on the whole handshake; the
/// connection task is spawned.
pub async fn connect(pg: &tokio_postgres::Config, tls: &PgTls, limit: Duration) -> Result<Client, ProbeFailure> {
    match tokio::time::timeout(limit, pg.connect(tls.connector())).await {
        Err(_) => Err(ProbeFailure::Timeout),
        Ok(Err(e)) => Err(ProbeFailure::Unreachable(error_text(&e))),
        Ok(Ok((client, connection))) => {
            // Detached on purpose: the connection's driver ends when its `Client` is dropped
            // (or the server goes away), so the client's owner bounds its life.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
    }
}

/// The innermost message of a tokio-postgres error (its Display alone is often just "db error").
pub fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_owned();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

fn status_from_row(row: &Row) -> Result<NodeStatus, ProbeFailure> {
    let bad = |what: &str, e: tokio_postgres::Error| ProbeFailure::QueryFailed(format!("reading {what}: {e}"));
    let lsn = |col: &str| -> Result<Option<u64>, ProbeFailure> {
        let text: Option<String> = row.try_get(col).map_err(|e| bad(col, e))?;
        Ok(text.as_deref().and_then(parse_lsn))
    };
    let timeline: i32 = row.try_get("timeline").map_err(|e| bad("timeline", e))?;
    let lag: Option<f64> = row.try_get("replay_lag_s").map_err(|e| bad("replay_lag_s", e))?;
    let wal_status: Option<String> = row.try_get("wal_status").map_err(|e| bad("wal_status", e))?;
    let sender_host: Option<String> = row.try_get("sender_host").map_err(|e| bad("sender_host", e))?;
    let sender_port: Option<i32> = row.try_get("sender_port").map_err(|e| bad("sender_port", e))?;
    Ok(NodeStatus {
        in_recovery: row.try_get("in_recovery").map_err(|e| bad("in_recovery", e))?,
        timeline: u32::try_from(timeline).unwrap_or(0),
        current_lsn: lsn("current_lsn")?,
        receive_lsn: lsn("receive_lsn")?,
        replay_lsn: lsn("replay_lsn")?,
        replay_lag: lag.map(|s| Duration::from_secs_f64(s.max(0.0))),
        wal_receiver: wal_status.map(|status| WalReceiver {
            status,
            sender_host,
            sender_port: sender_port.and_then(|p| u16::try_from(p).ok()),
        }),
    })
}

/// Probes one node forever, sending one observation per round, and one more whenever `now` is
/// notified (the failover machine's `Action::Probe`; the round then starts again from it).
/// `since` is the daemon's clock origin; `at` of each observation is measured from it. New
/// `settings` (a reload) apply from the next round: a new interval restarts the round, new
/// credentials or timeouts a new connection.
pub async fn run_node(
    node: NodeId,
    name: String,
    addr: SocketAddrV4,
    mut settings_rx: watch::Receiver<ProbeSettings>,
    since: Instant,
    out: mpsc::Sender<Observation>,
    now: Arc<Notify>,
) {
    let mut settings = settings_rx.borrow_and_update().clone();
    let mut pg = settings.pg_config(addr, settings.connect_timeout);
    let mut session: Option<Session> = None;
    let mut ticker = ticker(settings.interval);
    let mut last_ok: Option<bool> = None;
    let mut standby_timeline = 0u32;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = now.notified() => ticker.reset(),
        }
        if settings_rx.has_changed().unwrap_or(false) {
            let new = settings_rx.borrow_and_update().clone();
            if new.interval != settings.interval {
                ticker = self::ticker(new.interval);
                ticker.tick().await; // the first tick is at once: this round
            }
            if !new.connects_like(&settings) {
                debug!(node = %name, "probe: new connection settings from a reload; this round connects anew");
                pg = new.pg_config(addr, new.connect_timeout);
                session = None;
            }
            settings = new;
        }
        let started = Instant::now();
        let mut result = probe_once(&pg, &settings, &mut session).await;
        if let Ok(s) = &mut result {
            if s.in_recovery {
                // A standby that loses its upstream right after a timeline switch would report
                // the old timeline and drop out of the failover candidates (rule 3).
                standby_timeline = standby_timeline.max(s.timeline);
                s.timeline = standby_timeline;
            } else {
                standby_timeline = s.timeline;
            }
        }
        let latency = started.elapsed();
        let ok = result.is_ok();
        if last_ok != Some(ok) {
            match &result {
                Ok(s) => info!(node = %name, in_recovery = s.in_recovery, timeline = s.timeline, "probe: node answers"),
                Err(e) => info!(node = %name, error = %e, "probe: node does not answer"),
            }
            last_ok = Some(ok);
        } else if let Err(e) = &result {
            debug!(node = %name, error = %e, "probe failed");
        }
        let obs = Observation { node, at: started.duration_since(since), latency, result };
        if out.send(obs).await.is_err() {
            return; // the daemon is shutting down
        }
    }
}

/// A round every `interval`; a late round does not bunch the next ones up.
fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// A probe's connection, driven by the probe's own task (no connection task: between two
/// rounds nothing wakes; what the server sent meanwhile, a shutdown notice say, is read with
/// the next round's answer and fails it), and its query, prepared once: each round is then one
/// round trip (Bind, Execute, Sync) and one wake of this task.
struct Session {
    client: Client,
    connection: Pin<Box<Connection<Socket, PgStream>>>,
    query: Statement,
}

async fn probe_once(
    pg: &tokio_postgres::Config,
    settings: &ProbeSettings,
    session: &mut Option<Session>,
) -> Result<NodeStatus, ProbeFailure> {
    if session.is_none() {
        let (client, connection) = answer(tokio::time::timeout(settings.connect_timeout, pg.connect(settings.tls.connector())).await)
            .map_err(|e| match e {
                ProbeFailure::QueryFailed(text) => ProbeFailure::Unreachable(text),
                other => other,
            })?;
        let mut connection = Box::pin(connection);
        let query = drive(&mut connection, settings.timeout, client.prepare(PROBE_SQL)).await?;
        *session = Some(Session { client, connection, query });
    }
    let s = session.as_mut().expect("connected above");
    match drive(&mut s.connection, settings.timeout, s.client.query_one(&s.query, &[])).await {
        Ok(row) => status_from_row(&row),
        Err(e) => {
            *session = None; // a connection that stopped answering, or failed, is not trusted again
            Err(e)
        }
    }
}

/// Waits for `request` at most `limit`, driving `connection` meanwhile (its messages are read
/// and written only while a request waits). The connection ending first fails the request.
async fn drive<T>(
    connection: &mut Pin<Box<Connection<Socket, PgStream>>>,
    limit: Duration,
    request: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, ProbeFailure> {
    let work = async {
        tokio::select! {
            r = request => r.map_err(|e| ProbeFailure::QueryFailed(error_text(&e))),
            ended = connection.as_mut() => Err(ProbeFailure::QueryFailed(match ended {
                Ok(()) => "the server closed the connection".to_owned(),
                Err(e) => error_text(&e),
            })),
        }
    };
    tokio::time::timeout(limit, work).await.unwrap_or(Err(ProbeFailure::Timeout))
}

/// A bounded request's outcome as a probe's: a timeout, a failed query, or the answer.
fn answer<T>(outcome: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>) -> Result<T, ProbeFailure> {
    match outcome {
        Err(_) => Err(ProbeFailure::Timeout),
        Ok(Err(e)) => Err(ProbeFailure::QueryFailed(error_text(&e))),
        Ok(Ok(v)) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips() {
        for (text, value) in [("0/0", 0u64), ("0/3000060", 0x300_0060), ("16/B374D848", 0x16_B374_D848), ("FFFFFFFF/FFFFFFFF", u64::MAX)] {
            assert_eq!(parse_lsn(text), Some(value), "{text}");
            assert_eq!(format_lsn(value), text);
        }
        for bad in ["", "0", "x/1", "1/", "/1", "100000000/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }
}
