//! Peer reports: every advert interval each pglb tells its `[vrrp] peers`, by UDP unicast to
//! `report_port`, what a VRRP advert cannot carry: its timeline floor and the writer it reaches
//! ([`PeerReport`]), its VRRP role and the priority it advertises (which vouch for its adverts,
//! [`super::trust`]).
//!
//! A source address is not an identity (docs/ARCHITECTURE.md, "Trust model"): every report
//! carries an HMAC-SHA256 over the peers' shared key (`[vrrp] key_file`) and proves its
//! freshness without a clock shared between hosts. Each report has an id, `<boot>.<seq>` (`boot`: the sender's
//! start, nanoseconds of its wall clock; `seq`: counts its reports), and echoes the id of the
//! newest report it has from the receiver. A receiver believes a report only when that echo is
//! one of its own last [`WINDOW`] ids, sent at most `max_age` ago: the report was written after
//! the receiver sent that id, so it is at most `max_age` old, and a recorded report replayed
//! later echoes an id long gone (or too old: reports that queued up while the receiver was
//! frozen are not believed after it resumes). Ids only grow, so a report replayed within the
//! window is refused too. The
//! first report after either side starts echoes nothing the receiver knows: it is not believed,
//! but its id is echoed back, and the next one is (one interval later).
//!
//! On the wire, one ASCII line, then ` mac=<64 hex>` over every byte before it:
//!
//! ```text
//! pglb-report 2 from=<sender address> id=<boot>.<seq> echo=<boot>.<seq>|- role=master|backup|initialize
//!     priority=<0-255> healthy=yes|no timeline=<u32> writer=<node name>|-
//!     [pause=on|off pause_at=<ms> pause_by=<instance> pause_until=<ms>|- pause_reason=<text>|-]
//!     [mark=<drain|disable>:<on|off>:<ms>:<node>:<instance>]...
//! ```
//!
//! The `pause*` fields carry the newest pause or resume the sender knows
//! ([`crate::failover::Maintenance`]; `<ms>`: wall clock, milliseconds since the Unix epoch);
//! `pause_by` and `pause_reason` are percent-encoded (every byte outside `A-Z a-z 0-9 - . _ ~`).
//! They are optional and a receiver ignores fields it does not know, so version 2 stands: a
//! report without them (an older pglb) says nothing about maintenance, and an older pglb reads
//! a report with them as before.
//!
//! Each `mark` field is one node mark ([`crate::failover::NodeMark`]: `pglb node drain`,
//! `undrain`, `disable`, `enable`), the newest the sender knows for its node and kind; the node
//! and the instance are percent-encoded, so `:` only separates. Optional like the pause: a
//! report without them says nothing about marks. A report with marks may be longer than the 512
//! bytes a pglb from before maintenance mode reads (it refuses it as a bad MAC): upgrade both
//! load balancers before marking nodes.
//!
//! `from` must be the datagram's source. Every report that is refused is counted by reason
//! ([`Rejection`], `pglb_peer_reports_dropped_total`).

use std::{
    collections::VecDeque,
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::net::UdpSocket;
use tracing::warn;

use super::vrrp::VrrpState;
use crate::{
    failover::{Maintenance, MarkKind, NodeMark, PeerReport},
    key::Key,
};

const MAGIC: &str = "pglb-report 2";
const MAC_SEP: &str = " mac=";
/// Longer than any valid report: a node name is at most 63 bytes, a pause's reason at most
/// `PAUSE_REASON_MAX` bytes, percent-encoded, and the node marks take at most two fields of
/// 40 bytes and two percent-encoded names per node (64 backends: under 55 KiB; a few nodes:
/// under 1 KiB). A report without a pause or marks stays under 512, what an older pglb reads.
const MAX_REPORT: usize = 64 * 1024;
/// How many of its own latest ids a receiver accepts as an echo.
pub const WINDOW: usize = 8;
/// A refused report is logged at most once per reason in this long (a flood of forged
/// reports is counted, not logged one by one).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A report's id: ordered by `boot`, then `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReportId {
    pub boot: u64,
    pub seq: u64,
}

/// One report as sent and received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The sender's own address (must be the datagram's source).
    pub from: Ipv4Addr,
    pub id: ReportId,
    /// The newest id the sender has from the receiver.
    pub echo: Option<ReportId>,
    /// The sender's VRRP state and the priority it advertises now.
    pub role: VrrpState,
    pub priority: u8,
    /// Its VRRP tracking verdict: it reaches the writer and can write its state file (a master
    /// that is not healthy may be preempted, `super::vrrp`'s "Trust").
    pub healthy: bool,
    /// What the failover machine tells its peers.
    pub body: PeerReport,
}

/// Why a report was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Not a version-2 report, or a field is missing or malformed.
    Malformed,
    /// From an address that is not in `[vrrp] peers`.
    NotAPeer,
    /// The MAC does not verify (another key, or the text was altered).
    BadMac,
    /// Its `from` is not the datagram's source.
    WrongSource,
    /// An id not newer than one already seen from that peer.
    Replay,
    /// Its echo is none of our last [`WINDOW`] ids: the first after a start, or an old report.
    Stale,
}

impl Rejection {
    pub const ALL: [Rejection; 6] =
        [Rejection::Malformed, Rejection::NotAPeer, Rejection::BadMac, Rejection::WrongSource, Rejection::Replay, Rejection::Stale];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::NotAPeer => "not_a_peer",
            Rejection::BadMac => "bad_mac",
            Rejection::WrongSource => "wrong_source",
            Rejection::Replay => "replay",
            Rejection::Stale => "stale",
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ReportCounters {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub dropped: [AtomicU64; Rejection::ALL.len()],
}

impl ReportCounters {
    pub fn dropped(&self, r: Rejection) -> u64 {
        self.dropped[r.index()].load(Ordering::Relaxed)
    }
}

fn role_str(role: VrrpState) -> &'static str {
    role.as_str()
}

/// The datagram: the line and its MAC.
pub fn encode(r: &Report, key: &Key) -> String {
    let mut text = String::from(MAGIC);
    let _ = write!(text, " from={} id={}.{} echo=", r.from, r.id.boot, r.id.seq);
    match r.echo {
        Some(e) => {
            let _ = write!(text, "{}.{}", e.boot, e.seq);
        }
        None => text.push('-'),
    }
    let _ = write!(
        text,
        " role={} priority={} healthy={} timeline={} writer={}",
        role_str(r.role),
        r.priority,
        if r.healthy { "yes" } else { "no" },
        r.body.timeline,
        r.body.writer.as_deref().unwrap_or("-")
    );
    if let Some(m) = &r.body.maintenance {
        let _ = write!(
            text,
            " pause={} pause_at={} pause_by={} pause_until={} pause_reason={}",
            if m.paused { "on" } else { "off" },
            m.at_ms,
            pct_encode(&m.by),
            m.until_ms.map_or_else(|| "-".to_owned(), |u| u.to_string()),
            m.reason.as_deref().map_or_else(|| "-".to_owned(), pct_encode)
        );
    }
    for m in &r.body.marks {
        let on = if m.on { "on" } else { "off" };
        let _ = write!(text, " mark={}:{on}:{}:{}:{}", m.kind.as_str(), m.at_ms, pct_encode(&m.node), pct_encode(&m.by));
    }
    let tag = key.tag_hex(text.as_bytes());
    text.push_str(MAC_SEP);
    text.push_str(&tag);
    text
}

/// Checks the MAC, then parses; a datagram whose MAC fails is not parsed further.
pub fn decode(datagram: &[u8], key: &Key) -> Result<Report, Rejection> {
    let text = std::str::from_utf8(datagram).map_err(|_| Rejection::Malformed)?.trim_end_matches(['\n', '\r']);
    let Some(rest) = text.strip_prefix(MAGIC) else { return Err(Rejection::Malformed) };
    let (body, hex) = text.rsplit_once(MAC_SEP).ok_or(Rejection::Malformed)?;
    if !key.verify_hex(body.as_bytes(), hex) {
        return Err(Rejection::BadMac);
    }
    let rest = &rest[..rest.len() - MAC_SEP.len() - hex.len()];
    let fields: Vec<(&str, &str)> = rest.split_ascii_whitespace().map(|w| w.split_once('=').ok_or(Rejection::Malformed)).collect::<Result<_, _>>()?;
    let get = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v).ok_or(Rejection::Malformed);
    let id = |v: &str| -> Result<ReportId, Rejection> {
        let (b, s) = v.split_once('.').ok_or(Rejection::Malformed)?;
        Ok(ReportId { boot: b.parse().map_err(|_| Rejection::Malformed)?, seq: s.parse().map_err(|_| Rejection::Malformed)? })
    };
    let role = match get("role")? {
        "master" => VrrpState::Master,
        "backup" => VrrpState::Backup,
        "initialize" => VrrpState::Initialize,
        _ => return Err(Rejection::Malformed),
    };
    Ok(Report {
        from: get("from")?.parse().map_err(|_| Rejection::Malformed)?,
        id: id(get("id")?)?,
        echo: match get("echo")? {
            "-" => None,
            e => Some(id(e)?),
        },
        role,
        priority: get("priority")?.parse().map_err(|_| Rejection::Malformed)?,
        healthy: match get("healthy")? {
            "yes" => true,
            "no" => false,
            _ => return Err(Rejection::Malformed),
        },
        body: PeerReport {
            timeline: get("timeline")?.parse().map_err(|_| Rejection::Malformed)?,
            writer: match get("writer")? {
                "-" => None,
                w => Some(w.to_owned()),
            },
            maintenance: match get("pause") {
                Err(_) => None,
                Ok(on) => Some(Maintenance {
                    paused: match on {
                        "on" => true,
                        "off" => false,
                        _ => return Err(Rejection::Malformed),
                    },
                    at_ms: get("pause_at")?.parse().map_err(|_| Rejection::Malformed)?,
                    by: pct_decode(get("pause_by")?)?,
                    until_ms: match get("pause_until")? {
                        "-" => None,
                        u => Some(u.parse().map_err(|_| Rejection::Malformed)?),
                    },
                    reason: match get("pause_reason")? {
                        "-" => None,
                        r => Some(pct_decode(r)?),
                    },
                }),
            },
            marks: fields.iter().filter(|(k, _)| *k == "mark").map(|(_, v)| decode_mark(v)).collect::<Result<_, _>>()?,
        },
    })
}

/// One `mark` field: `<kind>:<on|off>:<ms>:<node>:<instance>`.
fn decode_mark(field: &str) -> Result<NodeMark, Rejection> {
    let parts: Vec<&str> = field.split(':').collect();
    let [kind, on, at, node, by] = parts.as_slice() else { return Err(Rejection::Malformed) };
    Ok(NodeMark {
        node: pct_decode(node)?,
        kind: MarkKind::parse(kind).ok_or(Rejection::Malformed)?,
        on: match *on {
            "on" => true,
            "off" => false,
            _ => return Err(Rejection::Malformed),
        },
        at_ms: at.parse().map_err(|_| Rejection::Malformed)?,
        by: pct_decode(by)?,
    })
}

/// Every byte outside `A-Z a-z 0-9 - . _ ~` as `%XX`: the text is one field without spaces.
fn pct_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn pct_decode(field: &str) -> Result<String, Rejection> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = field.get(i + 1..i + 3).ok_or(Rejection::Malformed)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| Rejection::Malformed)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Rejection::Malformed)
}

/// The ids this instance sends and what it has from each peer: the freshness check, sans-IO.
#[derive(Debug)]
pub struct Freshness {
    boot: u64,
    seq: u64,
    /// Our last [`WINDOW`] ids' sequence numbers and when they went out.
    sent: VecDeque<(u64, Duration)>,
    /// Per peer: the newest id seen (what we echo).
    newest: Vec<Option<ReportId>>,
    /// The oldest an echoed id may be.
    max_age: Duration,
}

impl Freshness {
    pub fn new(boot: u64, peers: usize, max_age: Duration) -> Self {
        Freshness { boot, seq: 0, sent: VecDeque::with_capacity(WINDOW + 1), newest: vec![None; peers], max_age }
    }

    /// The id of the next round of reports, sent at `now`.
    pub fn stamp(&mut self, now: Duration) -> ReportId {
        self.seq += 1;
        self.sent.push_back((self.seq, now));
        while self.sent.len() > WINDOW {
            self.sent.pop_front();
        }
        ReportId { boot: self.boot, seq: self.seq }
    }

    /// What reports to `peer` echo.
    pub fn echo(&self, peer: usize) -> Option<ReportId> {
        self.newest[peer]
    }

    /// Judges a report (MAC already verified) from `peer`; `Ok` with an upper bound of its age.
    pub fn check(&mut self, peer: usize, id: ReportId, echo: Option<ReportId>, now: Duration) -> Result<Duration, Rejection> {
        let age = echo
            .filter(|e| e.boot == self.boot)
            .and_then(|e| self.sent.iter().find(|(seq, _)| *seq == e.seq))
            .map(|(_, at)| now.saturating_sub(*at))
            .filter(|age| *age <= self.max_age);
        let newest = self.newest[peer];
        let newer = newest.is_none_or(|n| id > n);
        // A peer restarted with its clock behind its last start: its echo proves it live.
        let restarted = newest.is_some_and(|n| id.boot != n.boot) && age.is_some();
        if !(newer || restarted) {
            return Err(Rejection::Replay);
        }
        self.newest[peer] = Some(id);
        age.ok_or(Rejection::Stale)
    }
}

/// A report that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub peer: Ipv4Addr,
    pub report: Report,
    /// At most this old when it arrived.
    pub age: Duration,
}

/// The UDP socket reports go out of and come in on, with the key and the freshness state.
pub struct ReportLink {
    socket: UdpSocket,
    /// The same socket for sends: a plain non-blocking send never waits for the reactor.
    sender: std::net::UdpSocket,
    own: Ipv4Addr,
    peers: Vec<Ipv4Addr>,
    port: u16,
    key: Key,
    fresh: Freshness,
    counters: Arc<ReportCounters>,
    logged: [Option<Duration>; Rejection::ALL.len()],
}

impl ReportLink {
    /// Binds `own:port`; reports are sent every `interval`, and believed when they echo an id
    /// sent at most [`WINDOW`] intervals ago.
    pub async fn bind(own: Ipv4Addr, port: u16, peers: Vec<Ipv4Addr>, key: Key, interval: Duration) -> std::io::Result<Self> {
        let std_socket = std::net::UdpSocket::bind(SocketAddrV4::new(own, port))?;
        std_socket.set_nonblocking(true)?;
        let sender = std_socket.try_clone()?;
        let socket = UdpSocket::from_std(std_socket)?;
        let boot = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let fresh = Freshness::new(boot, peers.len(), interval * WINDOW as u32);
        Ok(ReportLink { socket, sender, own, port, key, fresh, counters: Arc::new(ReportCounters::default()), logged: [None; Rejection::ALL.len()], peers })
    }

    pub fn counters(&self) -> Arc<ReportCounters> {
        Arc::clone(&self.counters)
    }

    /// Sends one report to every peer (each echoing that peer's newest id). A send that fails
    /// (no route while a link is down) is the peer's silence, which it handles: nothing to retry.
    pub fn send(&mut self, role: VrrpState, priority: u8, healthy: bool, body: &PeerReport, now: Duration) {
        let id = self.fresh.stamp(now);
        for (i, peer) in self.peers.iter().enumerate() {
            let report = Report { from: self.own, id, echo: self.fresh.echo(i), role, priority, healthy, body: body.clone() };
            let line = encode(&report, &self.key);
            if self.sender.send_to(line.as_bytes(), SocketAddr::V4(SocketAddrV4::new(*peer, self.port))).is_ok() {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The next datagram (its source and bytes); receive errors are logged and skipped. The
    /// buffer is taken only once a datagram is there: the main loop polls this anew every turn.
    pub async fn recv(&self) -> (SocketAddrV4, Vec<u8>) {
        loop {
            if let Err(e) = self.socket.readable().await {
                warn!(error = %e, "peer report: waiting for a datagram failed");
                continue;
            }
            let mut buf = vec![0u8; MAX_REPORT];
            match self.socket.try_recv_from(&mut buf) {
                Ok((len, SocketAddr::V4(from))) => {
                    buf.truncate(len);
                    return (from, buf);
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => warn!(error = %e, "peer report: receiving failed"),
            }
        }
    }

    /// Judges a datagram received at `now`: the report if every check passes; otherwise
    /// counted (and logged, at most once per reason every `LOG_EVERY`).
    pub fn accept(&mut self, from: SocketAddrV4, datagram: &[u8], now: Duration) -> Option<Verified> {
        match self.judge(from, datagram, now) {
            Ok(v) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Err(r) => {
                self.counters.dropped[r.index()].fetch_add(1, Ordering::Relaxed);
                let quiet = self.logged[r.index()].is_some_and(|at| now.saturating_sub(at) < LOG_EVERY);
                // The first report after a start is stale by design: not worth a warning.
                if !quiet && r != Rejection::Stale {
                    self.logged[r.index()] = Some(now);
                    warn!(from = %from, reason = r.as_str(), "peer report refused (counted in pglb_peer_reports_dropped_total; further ones for 10 s only counted)");
                }
                None
            }
        }
    }

    fn judge(&mut self, from: SocketAddrV4, datagram: &[u8], now: Duration) -> Result<Verified, Rejection> {
        let peer = self.peers.iter().position(|p| p == from.ip()).ok_or(Rejection::NotAPeer)?;
        let report = decode(datagram, &self.key)?;
        if report.from != *from.ip() {
            return Err(Rejection::WrongSource);
        }
        let age = self.fresh.check(peer, report.id, report.echo, now)?;
        Ok(Verified { peer: *from.ip(), report, age })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LB1: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 21);

    fn key() -> Key {
        Key::new(b"0123456789abcdef".to_vec())
    }

    fn report(id: ReportId, echo: Option<ReportId>) -> Report {
        Report {
            from: LB1,
            id,
            echo,
            role: VrrpState::Master,
            priority: 150,
            healthy: true,
            body: PeerReport { timeline: 3, writer: Some("pg1".into()), maintenance: None, marks: vec![] },
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_report_survives_the_wire_and_reads_as_one_line() {
        let r = report(ReportId { boot: 7, seq: 2 }, Some(ReportId { boot: 9, seq: 40 }));
        let wire = encode(&r, &key());
        assert_eq!(decode(wire.as_bytes(), &key()), Ok(r));
        let (body, mac) = wire.rsplit_once(" mac=").expect("a mac");
        assert_eq!(body, "pglb-report 2 from=172.20.0.21 id=7.2 echo=9.40 role=master priority=150 healthy=yes timeline=3 writer=pg1");
        assert_eq!(mac.len(), 64);
        let none = Report { echo: None, body: PeerReport { timeline: 1, writer: None, maintenance: None, marks: vec![] }, role: VrrpState::Initialize, priority: 0, healthy: false, ..report(ReportId { boot: 1, seq: 1 }, None) };
        assert_eq!(decode(encode(&none, &key()).as_bytes(), &key()), Ok(none));
    }

    /// A pause rides on the report (reason with spaces and non-ASCII intact); an older pglb's
    /// report without the fields reads as "nothing said about maintenance".
    #[test]
    fn a_pause_survives_the_wire_and_old_reports_still_read() {
        let pause = Maintenance {
            paused: true,
            at_ms: 1_796_000_000_123,
            by: "lb1".into(),
            reason: Some("shared_buffers 128MB, 재시작 100%".into()),
            until_ms: Some(1_796_000_600_000),
        };
        let mut r = report(ReportId { boot: 7, seq: 3 }, None);
        r.body.maintenance = Some(pause);
        let wire = encode(&r, &key());
        assert!(wire.len() < MAX_REPORT, "{} bytes", wire.len());
        assert!(wire.contains(" pause=on pause_at=1796000000123 pause_by=lb1 pause_until=1796000600000 pause_reason=shared_buffers%20128MB%2C%20"), "{wire}");
        assert_eq!(decode(wire.as_bytes(), &key()), Ok(r.clone()));
        let resume = Maintenance { paused: false, reason: None, until_ms: None, ..r.body.maintenance.clone().unwrap() };
        r.body.maintenance = Some(resume);
        let wire = encode(&r, &key());
        assert!(wire.contains(" pause=off pause_at=1796000000123 pause_by=lb1 pause_until=- pause_reason=- mac="), "{wire}");
        assert_eq!(decode(wire.as_bytes(), &key()), Ok(r));
        // What a pglb from before maintenance mode sends, MAC and all.
        let old = "pglb-report 2 from=172.20.0.21 id=7.2 echo=- role=master priority=150 healthy=yes timeline=3 writer=pg1";
        let wire = format!("{old} mac={}", key().tag_hex(old.as_bytes()));
        assert_eq!(decode(wire.as_bytes(), &key()).map(|r| r.body.maintenance), Ok(None));
        let bad = "pglb-report 2 from=172.20.0.21 id=7.2 echo=- role=master priority=150 healthy=yes timeline=3 writer=pg1 pause=maybe pause_at=1 pause_by=lb1 pause_until=- pause_reason=-";
        let wire = format!("{bad} mac={}", key().tag_hex(bad.as_bytes()));
        assert_eq!(decode(wire.as_bytes(), &key()), Err(Rejection::Malformed), "pause=maybe");
    }

    /// Node marks ride on the report, names percent-encoded so `:` only separates; a report
    /// without them says nothing about marks; a bad one is malformed.
    #[test]
    fn node_marks_survive_the_wire() {
        let mut r = report(ReportId { boot: 7, seq: 4 }, None);
        r.body.marks = vec![
            NodeMark { node: "pg2".into(), kind: MarkKind::Drain, on: true, at_ms: 1_796_000_000_123, by: "lb1".into() },
            NodeMark { node: "db:3".into(), kind: MarkKind::Disable, on: false, at_ms: 1_796_000_000_456, by: "lb 2".into() },
        ];
        let wire = encode(&r, &key());
        assert!(wire.contains(" mark=drain:on:1796000000123:pg2:lb1 mark=disable:off:1796000000456:db%3A3:lb%202 mac="), "{wire}");
        assert!(wire.len() < 512, "a few marks stay under what an older pglb reads: {} bytes", wire.len());
        assert_eq!(decode(wire.as_bytes(), &key()), Ok(r));
        for bad in ["mark=drain:on:1:pg2", "mark=halt:on:1:pg2:lb1", "mark=drain:yes:1:pg2:lb1", "mark=drain:on:soon:pg2:lb1"] {
            let text = format!("pglb-report 2 from=172.20.0.21 id=7.2 echo=- role=master priority=150 healthy=yes timeline=3 writer=pg1 {bad}");
            let wire = format!("{text} mac={}", key().tag_hex(text.as_bytes()));
            assert_eq!(decode(wire.as_bytes(), &key()), Err(Rejection::Malformed), "{bad}");
        }
    }

    #[test]
    fn forged_altered_and_foreign_reports_are_refused() {
        let wire = encode(&report(ReportId { boot: 7, seq: 2 }, None), &key());
        let cases: Vec<(&str, String, Rejection)> = vec![
            ("the issue's forged v1 report", "pglb-report 1 timeline=99 writer=-".into(), Rejection::Malformed),
            ("v2 without a mac", "pglb-report 2 from=172.20.0.22 id=1.1 echo=- role=master priority=254 timeline=99 writer=-".into(), Rejection::Malformed),
            ("timeline raised", wire.replace("timeline=3", "timeline=99"), Rejection::BadMac),
            ("writer removed", wire.replace("writer=pg1", "writer=-"), Rejection::BadMac),
            ("priority raised", wire.replace("priority=150", "priority=254"), Rejection::BadMac),
            ("mac cut", wire[..wire.len() - 2].to_owned(), Rejection::BadMac),
            ("not utf-8", String::from_utf8_lossy(&[0xff, 0xfe]).into_owned(), Rejection::Malformed),
        ];
        for (what, text, want) in cases {
            assert_eq!(decode(text.as_bytes(), &key()), Err(want), "{what}");
        }
        assert_eq!(decode(wire.as_bytes(), &Key::new(b"another key, 16+".to_vec())), Err(Rejection::BadMac), "another key");
    }

    #[test]
    fn freshness_believes_only_reports_that_echo_a_recent_id() {
        let mut us = Freshness::new(100, 1, ms(800));
        let peer = |seq| ReportId { boot: 200, seq };
        let ours = |seq| Some(ReportId { boot: 100, seq });
        // The peer's first report echoes nothing we know: not believed, but echoed back.
        assert_eq!(us.check(0, peer(1), None, ms(0)), Err(Rejection::Stale));
        assert_eq!(us.echo(0), Some(peer(1)));
        let mine = us.stamp(ms(10));
        assert_eq!(mine, ReportId { boot: 100, seq: 1 });
        assert_eq!(us.check(0, peer(2), ours(1), ms(110)), Ok(ms(100)), "echoes our id 1, sent 100 ms ago");
        assert_eq!(us.check(0, peer(2), ours(1), ms(120)), Err(Rejection::Replay), "the same id again");
        assert_eq!(us.check(0, peer(1), ours(1), ms(130)), Err(Rejection::Replay), "an older id");
        for t in 2..=20 {
            us.stamp(ms(10 * t));
        }
        assert_eq!(us.check(0, peer(3), ours(1), ms(210)), Err(Rejection::Stale), "id 1 left the window of 8");
        assert_eq!(us.check(0, peer(4), ours(13), ms(211)), Ok(ms(81)), "id 13 is one of the last 8");
        assert_eq!(us.check(0, peer(5), Some(ReportId { boot: 99, seq: 20 }), ms(212)), Err(Rejection::Stale), "an id of our previous start");
        // The peer restarts: a new boot, newer, believed once it echoes us.
        assert_eq!(us.check(0, ReportId { boot: 300, seq: 1 }, None, ms(220)), Err(Rejection::Stale));
        assert_eq!(us.check(0, ReportId { boot: 300, seq: 2 }, ours(20), ms(230)), Ok(ms(30)));
        // ... and with its clock behind: an older boot, believed because it echoes us.
        assert_eq!(us.check(0, ReportId { boot: 250, seq: 1 }, None, ms(240)), Err(Rejection::Replay), "older and no echo: a replay");
        assert_eq!(us.check(0, ReportId { boot: 250, seq: 2 }, ours(20), ms(250)), Ok(ms(50)));
        // We froze for 3 s (sending nothing): what the peer sent meanwhile echoes our last id,
        // still in the window but too old to be believed.
        assert_eq!(us.check(0, ReportId { boot: 250, seq: 3 }, ours(20), ms(3200)), Err(Rejection::Stale));
        let fresh = us.stamp(ms(3201));
        assert_eq!(us.check(0, ReportId { boot: 250, seq: 4 }, Some(fresh), ms(3250)), Ok(ms(49)));
    }

    /// Two links on loopback: lb1 and lb2 reach each other's trust in two rounds; a stranger, a
    /// forged source, another key and a replayed datagram are each refused and counted.
    #[tokio::test]
    async fn two_peers_trust_each_other_after_one_round_and_nothing_else() {
        let (a_addr, b_addr) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
        let port = 39_411;
        let mut a = ReportLink::bind(a_addr, port, vec![b_addr], key(), ms(100)).await.expect("bind a");
        let mut b = ReportLink::bind(b_addr, port, vec![a_addr], key(), ms(100)).await.expect("bind b");
        let body = PeerReport { timeline: 4, writer: Some("pg1".into()), maintenance: None, marks: vec![] };
        let next = async |link: &ReportLink| tokio::time::timeout(Duration::from_secs(5), link.recv()).await.expect("a datagram within 5 s");
        a.send(VrrpState::Master, 150, true, &body, ms(0));
        let (from, first) = next(&b).await;
        assert_eq!(b.accept(from, &first, ms(1)), None, "a's first report echoes nothing b sent");
        b.send(VrrpState::Backup, 100, true, &body, ms(2));
        let (from, d) = next(&a).await;
        let v = a.accept(from, &d, ms(3)).expect("b's report echoes a's first id");
        assert_eq!((v.peer, v.report.role, v.report.priority, v.report.body.clone()), (b_addr, VrrpState::Backup, 100, body.clone()));
        assert_eq!(v.age, ms(3));
        a.send(VrrpState::Master, 150, true, &body, ms(4));
        let (from, d) = next(&b).await;
        assert!(b.accept(from, &d, ms(5)).is_some(), "a's second report echoes b's");
        assert_eq!(b.accept(from, &d, ms(6)), None, "the same datagram again");
        assert_eq!(b.accept(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), port), &d, ms(7)), None, "a stranger");
        assert_eq!(b.accept(SocketAddrV4::new(b_addr, port), &d, ms(8)), None, "its own address is not a");
        let other = Report { from: a_addr, ..decode(&d, &key()).expect("valid") };
        let foreign = encode(&Report { id: ReportId { boot: other.id.boot, seq: other.id.seq + 1 }, ..other }, &Key::new(b"another key, 16+".to_vec()));
        assert_eq!(b.accept(from, foreign.as_bytes(), ms(9)), None, "another key");
        let c = b.counters();
        let counts: Vec<u64> = Rejection::ALL.iter().map(|r| c.dropped(*r)).collect();
        assert_eq!(counts, [0, 2, 1, 0, 1, 1], "malformed, not_a_peer (stranger, wrong peer), bad_mac, wrong_source, replay, stale");
        assert_eq!(c.accepted.load(Ordering::Relaxed), 1);
    }
}
