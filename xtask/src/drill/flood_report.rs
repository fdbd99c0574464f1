//! The `syn-flood` drill's outcome ([`SynFlood`]): the parsers of what its processes print
//! (connect-probe logs, pgbench, hping3; `pglb map dump --json` is read by
//! [`crate::lab::pglb_json`]), the figures computed from them, the checks against the goals,
//! the printed report and the summary table. Pure functions over text, tested here;
//! [`super::flood`] runs the drill.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::lab::pgbench::pgbench_counts;

/// Flood end → first successful new connection must be at most this (the goal).
pub const FIRST_CONNECTION_GOAL_MS: f64 = 1000.0;

/// One connect-probe attempt (see `tests/drill_client.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub sent_us: u128,
    /// When the connection was ready (successes only).
    pub connected_us: Option<u128>,
    /// When the attempt ended: `SELECT 1` answered, or the error.
    pub at_us: u128,
    /// The error message (failures only).
    pub error: Option<String>,
}

/// Parses a connect-probe log; a missing log or a foreign line is an error (a run must never
/// count as "no attempt failed" because its log went missing).
pub fn read_probe_log(path: &Path) -> Result<Vec<Probe>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading the connect-probe log {}", path.display()))?;
    text.lines().enumerate().map(|(i, l)| parse_probe_line(l).with_context(|| format!("{}:{}: {l:?}", path.display(), i + 1))).collect()
}

fn parse_probe_line(l: &str) -> Result<Probe> {
    let num = |v: Option<&str>, what: &str| -> Result<u128> { v.with_context(|| format!("no {what}"))?.parse().with_context(|| format!("bad {what}")) };
    match l.split_once(' ') {
        Some(("ok", rest)) => {
            let mut f = rest.split(' ');
            let sent_us = num(f.next(), "send time")?;
            let connected_us = num(f.next(), "connect time")?;
            let at_us = num(f.next(), "answer time")?;
            if f.next().is_some() {
                bail!("an ok probe line has three times, no more");
            }
            Ok(Probe { sent_us, connected_us: Some(connected_us), at_us, error: None })
        }
        Some(("err", rest)) => {
            let mut f = rest.splitn(3, ' ');
            let sent_us = num(f.next(), "send time")?;
            let at_us = num(f.next(), "error time")?;
            Ok(Probe { sent_us, connected_us: None, at_us, error: Some(f.next().unwrap_or("").to_owned()) })
        }
        _ => bail!("a probe line starts with ok or err"),
    }
}

/// The nearest-rank percentile `p` (0–100) of `values`.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// New legitimate connections to one VIP port, around the flood.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PortFigures {
    pub port: u16,
    /// Connect latency p50 of the attempts sent before the flood, for comparison.
    pub before_connect_p50_ms: Option<f64>,
    /// Attempts sent during the flood, and those that succeeded.
    pub attempts: usize,
    pub succeeded: usize,
    pub success_rate_pct: Option<f64>,
    /// Connect latency (attempt → session ready) of the successes sent during the flood.
    pub connect_p50_ms: Option<f64>,
    pub connect_p99_ms: Option<f64>,
    /// Flood end → the first attempt sent after it was connected; `None`: none within the
    /// drill's post-flood limit.
    pub first_after_flood_ms: Option<f64>,
    /// Failure messages during the flood, with their counts.
    pub errors: BTreeMap<String, usize>,
}

fn ms(us: u128) -> f64 {
    us as f64 / 1000.0
}

fn connect_ms(p: &Probe) -> Option<f64> {
    p.connected_us.map(|c| ms(c.saturating_sub(p.sent_us)))
}

/// The figures of one port from its probes and the flood's window (µs since the epoch).
pub fn port_figures(port: u16, probes: &[Probe], flood_start_us: u128, flood_end_us: u128) -> PortFigures {
    let before: Vec<f64> = probes.iter().filter(|p| p.sent_us < flood_start_us).filter_map(connect_ms).collect();
    let during: Vec<&Probe> = probes.iter().filter(|p| (flood_start_us..flood_end_us).contains(&p.sent_us)).collect();
    let latencies: Vec<f64> = during.iter().copied().filter_map(connect_ms).collect();
    let mut errors = BTreeMap::new();
    for e in during.iter().filter_map(|p| p.error.as_deref()) {
        *errors.entry(e.to_owned()).or_insert(0) += 1;
    }
    PortFigures {
        port,
        before_connect_p50_ms: percentile(&before, 50.0),
        attempts: during.len(),
        succeeded: latencies.len(),
        success_rate_pct: (!during.is_empty()).then(|| latencies.len() as f64 * 100.0 / during.len() as f64),
        connect_p50_ms: percentile(&latencies, 50.0),
        connect_p99_ms: percentile(&latencies, 99.0),
        first_after_flood_ms: first_after(probes, flood_end_us),
        errors,
    }
}

/// `end` → the connect time of the first attempt sent at or after `end` that succeeded.
pub fn first_after(probes: &[Probe], end_us: u128) -> Option<f64> {
    probes.iter().filter(|p| p.sent_us >= end_us).filter_map(|p| p.connected_us).min().map(|c| ms(c.saturating_sub(end_us)))
}

/// The count of hping3's closing "N packets transmitted, M packets received, …" line.
pub fn hping_transmitted(output: &str) -> Option<u64> {
    output.lines().find_map(|l| l.trim().split_once(" packets transmitted").and_then(|(n, _)| n.trim().parse().ok()))
}

/// `after − before` of every reason whose count changed (a reason absent on one side counts 0
/// there).
pub fn reason_deltas(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, i64> {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter_map(|n| {
            let d = *after.get(n).unwrap_or(&0) as i64 - *before.get(n).unwrap_or(&0) as i64;
            (d != 0).then(|| (n.clone(), d))
        })
        .collect()
}

/// What pgbench reported over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PgbenchOutcome {
    pub transactions: u64,
    /// pgbench's "number of failed transactions".
    pub failed: u64,
    /// Clients pgbench reports as aborted ("client N aborted …"): their connection broke.
    pub aborted_clients: usize,
    /// The lowest per-second tps of pgbench's `-P 1` progress lines (a stall shows here even
    /// when nothing fails).
    pub lowest_tps: Option<f64>,
}

/// Parses pgbench's output (stdout and stderr together). The transaction and failed-transaction
/// counts must be there: without them a 0 would be a guess.
pub fn parse_pgbench(text: &str) -> Result<PgbenchOutcome> {
    let (transactions, failed) = pgbench_counts(text)?;
    let lowest_tps = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("progress:")?.split(',').nth(1)?.trim().strip_suffix(" tps")?.parse::<f64>().ok())
        .reduce(f64::min);
    Ok(PgbenchOutcome { transactions, failed, aborted_clients: aborted_clients(text).len(), lowest_tps })
}

/// The ids of the clients pgbench reports as aborted ("client 3 aborted in command 0 …",
/// "client 3 aborted while establishing connection", "client 3 script 0 aborted …").
fn aborted_clients(text: &str) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for l in text.lines() {
        let words: Vec<&str> = l.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let Some(id) = (*w == "client").then(|| words.get(i + 1).and_then(|n| n.parse::<u32>().ok())).flatten() else { continue };
            let aborted = |k: usize| words.get(k).is_some_and(|w| w.trim_end_matches(':') == "aborted");
            if aborted(i + 2) || (words.get(i + 2) == Some(&"script") && aborted(i + 4)) {
                ids.insert(id);
            }
        }
    }
    ids
}

/// The idle session's fate: it sent nothing during the flood, then `SELECT pg_backend_pid()`
/// on the same connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IdleOutcome {
    pub answered: bool,
    /// What it answered, or why not.
    pub detail: String,
}

/// One hping3 process: the port it flooded and the count it printed when interrupted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HpingSent {
    pub port: u16,
    /// `None`: hping3 printed no "packets transmitted" line.
    pub transmitted: Option<u64>,
}

/// One run of `syn-flood`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SynFlood {
    /// `syn-flood` ([`super::Scenario::SynFlood`]).
    pub scenario: String,
    pub run: u32,
    /// From the first hping3 start to the SIGINT that stopped them.
    pub flood_s: f64,
    /// pgha-client's eth0 tx packets over the flood window (flood and legitimate traffic
    /// together), and per second.
    pub client_tx_packets: u64,
    pub client_tx_packets_per_s: f64,
    /// What each hping3 said it sent, and their sum per second of the flood.
    pub hping3: Vec<HpingSent>,
    pub hping3_syns_per_s: Option<f64>,
    /// Established flows (pgbench's clients and the idle session) that broke.
    pub established_total: usize,
    pub established_broken: usize,
    pub idle_session: IdleOutcome,
    pub pgbench: PgbenchOutcome,
    pub ports: Vec<PortFigures>,
    /// lb1's data-plane reason counters that changed over the run (after − before).
    pub reasons: BTreeMap<String, i64>,
    /// Checks this run failed (empty: it passed).
    pub failures: Vec<String>,
}

impl SynFlood {
    /// Records the goals as checks.
    pub fn check(&mut self) {
        let mut failed = Vec::new();
        if self.established_broken > 0 {
            failed.push(format!(
                "{} of {} established flows broken ({} pgbench clients aborted; idle session: {})",
                self.established_broken, self.established_total, self.pgbench.aborted_clients, self.idle_session.detail
            ));
        }
        if !self.idle_session.answered {
            failed.push(format!("the idle session did not answer after the flood: {}", self.idle_session.detail));
        }
        if self.pgbench.failed > 0 {
            failed.push(format!("pgbench: {} failed transactions", self.pgbench.failed));
        }
        for p in &self.ports {
            if p.succeeded == 0 {
                failed.push(format!("no new connection to VIP:{} succeeded during the flood ({} attempts)", p.port, p.attempts));
            }
            match p.first_after_flood_ms {
                Some(v) if v <= FIRST_CONNECTION_GOAL_MS => {}
                Some(v) => failed.push(format!("VIP:{}: first new connection {v:.0} ms after the flood (goal ≤ {FIRST_CONNECTION_GOAL_MS:.0} ms)", p.port)),
                None => failed.push(format!("VIP:{}: no new connection within the post-flood limit after the flood ended", p.port)),
            }
        }
        if self.client_tx_packets == 0 || self.hping3.iter().any(|h| h.transmitted == Some(0)) {
            failed.push(format!("the flood sent nothing: {} packets out of pgha-client, hping3 counts {:?}", self.client_tx_packets, self.hping3));
        }
        self.failures.extend(failed);
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{v:.0}{unit}")).unwrap_or_else(|| "-".into())
}

/// "ok 98.0% (49/50), connect p50 3 ms p99 12 ms (before the flood p50 2 ms)".
fn port_text(p: &PortFigures) -> String {
    format!(
        "{} ({}/{}), connect p50 {} p99 {} (before the flood p50 {})",
        p.success_rate_pct.map(|r| format!("{r:.1}%")).unwrap_or_else(|| "-".into()),
        p.succeeded,
        p.attempts,
        opt(p.connect_p50_ms, " ms"),
        opt(p.connect_p99_ms, " ms"),
        opt(p.before_connect_p50_ms, " ms"),
    )
}

fn first_text(p: &PortFigures, limit_s: u64) -> String {
    p.first_after_flood_ms.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| format!("> {limit_s} s"))
}

fn hping_text(r: &SynFlood) -> String {
    let each: Vec<String> = r.hping3.iter().map(|h| format!("{}: {}", h.port, h.transmitted.map_or_else(|| "no count printed".into(), |n| n.to_string()))).collect();
    format!("{} SYNs/s ({})", opt(r.hping3_syns_per_s, ""), each.join(", "))
}

/// The run's figures against the goals, one line each, then lb1's reason deltas.
pub fn print_flood(r: &SynFlood, after_limit_s: u64) {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!("  | figure | goal | measured |");
    println!("  |---|---|---|");
    println!("  | established flows broken | 0 | {} of {} ({} pgbench clients aborted) |", r.established_broken, r.established_total, r.pgbench.aborted_clients);
    println!("  | the idle session still answers afterwards | yes | {} ({}) |", yes_no(r.idle_session.answered), r.idle_session.detail);
    println!(
        "  | pgbench failed transactions | 0 | {} of {} (lowest per-second tps {}) |",
        r.pgbench.failed,
        r.pgbench.transactions,
        opt(r.pgbench.lowest_tps, "")
    );
    for p in &r.ports {
        println!("  | new connections to VIP:{} during the flood | succeed | {} |", p.port, port_text(p));
    }
    for p in &r.ports {
        println!("  | flood end → first new connection to VIP:{} | ≤ 1 s | {} |", p.port, first_text(p, after_limit_s));
    }
    println!(
        "  | SYNs/s actually sent | reported | hping3: {}; pgha-client eth0: {:.0} tx packets/s (all traffic) over {:.1} s |",
        hping_text(r),
        r.client_tx_packets_per_s,
        r.flood_s
    );
    let reasons: Vec<String> = r.reasons.iter().map(|(n, d)| format!("{n} {d:+}")).collect();
    println!("  lb1 reason counters changed: {}", if reasons.is_empty() { "none".into() } else { reasons.join(", ") });
    for p in &r.ports {
        for (e, n) in &p.errors {
            println!("  VIP:{} failure during the flood ×{n}: {e}", p.port);
        }
    }
    for f in &r.failures {
        println!("  FAILED: {f}");
    }
}

/// The summary table, one row per run (Markdown, for docs/DRILLS.md).
pub fn summarise_flood(runs: &[SynFlood], after_limit_s: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| syn-flood run | SYNs/s (hping3) | tx packets/s (pgha-client) | established broken | idle session answers | pgbench failed tx | VIP:3000 new conn. ok, p50 / p99 | VIP:3001 new conn. ok, p50 / p99 | flood end → first conn. 3000 / 3001 | failed checks |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let port = |n: u16| r.ports.iter().find(|p| p.port == n);
        let conn = |n: u16| {
            port(n).map_or_else(
                || "-".into(),
                |p| format!("{} ({}/{}), {} / {}", p.success_rate_pct.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "-".into()), p.succeeded, p.attempts, opt(p.connect_p50_ms, " ms"), opt(p.connect_p99_ms, " ms")),
            )
        };
        let first = |n: u16| port(n).map_or_else(|| "-".into(), |p| first_text(p, after_limit_s));
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} of {} | {} | {} of {} | {} | {} | {} / {} | {} |",
            r.run,
            opt(r.hping3_syns_per_s, ""),
            r.client_tx_packets_per_s,
            r.established_broken,
            r.established_total,
            if r.idle_session.answered { "yes" } else { "no" },
            r.pgbench.failed,
            r.pgbench.transactions,
            conn(3000),
            conn(3001),
            first(3000),
            first(3001),
            r.failures.len(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sent: u128, connected: u128) -> Probe {
        Probe { sent_us: sent, connected_us: Some(connected), at_us: connected + 100, error: None }
    }

    fn err(sent: u128) -> Probe {
        Probe { sent_us: sent, connected_us: None, at_us: sent + 1_000_000, error: Some("connect timed out".into()) }
    }

    #[test]
    fn probe_lines_parse_and_foreign_ones_are_errors() {
        assert_eq!(parse_probe_line("ok 100 150 170").unwrap(), Probe { sent_us: 100, connected_us: Some(150), at_us: 170, error: None });
        let e = parse_probe_line("err 100 1100 connect: connection refused (os error 111)").unwrap();
        assert_eq!(e.error.as_deref(), Some("connect: connection refused (os error 111)"));
        for bad in ["", "ok", "ok 1 2", "ok 1 2 3 4", "err 1", "maybe 1 2 3", "ok 7 100 150 172.20.0.10 2 0/3"] {
            assert!(parse_probe_line(bad).is_err(), "{bad:?} must not parse");
        }
        assert!(read_probe_log(Path::new("/nonexistent/probe.log")).is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn port_figures_split_before_during_and_after_the_flood() {
        // Flood from 1_000_000 to 2_000_000 µs.
        let probes = [
            ok(500_000, 502_000),
            ok(1_000_000, 1_004_000),
            err(1_100_000),
            ok(1_200_000, 1_210_000),
            err(1_900_000), // sent during the flood, failed after it
            err(2_000_000),
            ok(2_100_000, 2_103_000),
            ok(2_200_000, 2_201_000),
        ];
        let f = port_figures(3000, &probes, 1_000_000, 2_000_000);
        assert_eq!((f.attempts, f.succeeded), (4, 2));
        assert_eq!(f.success_rate_pct, Some(50.0));
        assert_eq!((f.connect_p50_ms, f.connect_p99_ms), (Some(4.0), Some(10.0)));
        assert_eq!(f.before_connect_p50_ms, Some(2.0));
        assert_eq!(f.first_after_flood_ms, Some(103.0));
        assert_eq!(f.errors.get("connect timed out"), Some(&2));
        let none = port_figures(3001, &[err(1_500_000), err(2_500_000)], 1_000_000, 2_000_000);
        assert_eq!((none.success_rate_pct, none.connect_p50_ms, none.first_after_flood_ms), (Some(0.0), None, None));
        assert_eq!(port_figures(3001, &[], 0, 1).success_rate_pct, None);
    }

    #[test]
    fn hping_summary_is_read() {
        let out = "HPING 172.20.0.100 (eth0 172.20.0.100): S set, 40 headers + 0 data bytes\nhping in flood mode, no replies will be shown\n\n--- 172.20.0.100 hping statistic ---\n2741853 packets transmitted, 0 packets received, 100% packet loss\nround-trip min/avg/max = 0.0/0.0/0.0 ms\n";
        assert_eq!(hping_transmitted(out), Some(2_741_853));
        assert_eq!(hping_transmitted("hping in flood mode, no replies will be shown\n"), None);
    }

    #[test]
    fn reason_deltas_keep_changes_only() {
        let before: BTreeMap<String, u64> = [("pass_not_ipv4", 3), ("tx_new_flow", 10), ("drop_flow_table", 0)].map(|(n, c)| (n.to_owned(), c)).into();
        let after: BTreeMap<String, u64> =
            [("tx_new_flow", 5010), ("drop_flow_table", 7), ("pass_half_open_reclaimed", 4)].map(|(n, c)| (n.to_owned(), c)).into();
        let d = reason_deltas(&before, &after);
        assert_eq!(d.into_iter().collect::<Vec<_>>(), [
            ("drop_flow_table".to_owned(), 7),
            ("pass_half_open_reclaimed".to_owned(), 4),
            ("pass_not_ipv4".to_owned(), -3),
            ("tx_new_flow".to_owned(), 5000),
        ]);
    }

    #[test]
    fn pgbench_output_is_read_with_aborted_clients() {
        let text = "pgbench (15.20)\nprogress: 1.0 s, 812.0 tps, lat 4.9 ms stddev 1.2, 0 failed\nprogress: 2.0 s, 95.5 tps, lat 40.1 ms stddev 9.0, 0 failed\n\
            pgbench: error: client 2 aborted in command 0 (SQL) of script 0; perhaps the backend died while processing\n\
            pgbench: error: client 3 script 0 aborted in command 0 query 0: server closed the connection\n\
            pgbench: error: client 2 aborted while establishing connection\n\
            transaction type: flood.sql\nnumber of transactions actually processed: 9071\nnumber of failed transactions: 0 (0.000%)\nRun was aborted; the above results are incomplete.\n";
        let o = parse_pgbench(text).unwrap();
        assert_eq!(o, PgbenchOutcome { transactions: 9071, failed: 0, aborted_clients: 2, lowest_tps: Some(95.5) });
        assert!(parse_pgbench("number of transactions actually processed: 5\n").is_err(), "the failed count must be there");
        assert_eq!(aborted_clients("client 1 connected; nothing aborted here at all"), BTreeSet::new());
    }

    #[test]
    fn checks_follow_the_goals() {
        let good_port = |port| PortFigures { port, attempts: 100, succeeded: 90, success_rate_pct: Some(90.0), first_after_flood_ms: Some(120.0), ..PortFigures::default() };
        let mut r = SynFlood {
            scenario: "syn-flood".into(),
            run: 1,
            client_tx_packets: 1_000_000,
            hping3: vec![HpingSent { port: 3000, transmitted: Some(500_000) }, HpingSent { port: 3001, transmitted: None }],
            established_total: 5,
            idle_session: IdleOutcome { answered: true, detail: "ok".into() },
            ports: vec![good_port(3000), good_port(3001)],
            ..SynFlood::default()
        };
        r.check();
        assert_eq!(r.failures, Vec::<String>::new());
        r.ports[1].succeeded = 0;
        r.ports[0].first_after_flood_ms = Some(1500.0);
        r.ports[1].first_after_flood_ms = None;
        r.pgbench.failed = 2;
        r.established_broken = 1;
        r.hping3[1].transmitted = Some(0);
        r.check();
        assert_eq!(r.failures.len(), 6, "{:#?}", r.failures);
        assert!(summarise_flood(&[r], 10).contains("| 1 of 5 |"));
    }
}
