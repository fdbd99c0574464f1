//! What a drill run measures, from the drill clients' logs: recovery times, the longest write
//! gap, acknowledged writes lost, and split-brain writes judged against the winning timeline's
//! history. Pure functions over parsed lines, tested here.

use std::{collections::BTreeSet, fs, path::Path};

use anyhow::{Context as _, Result, bail};

/// One line of a drill client's log (see `tests/drill_client.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub ok: bool,
    pub seq: i32,
    pub sent_us: u128,
    pub at_us: u128,
    /// The server that answered (`inet_server_addr()`), or the error message.
    pub node: String,
    /// A write's acknowledgement: the server's timeline and WAL position then.
    pub timeline: Option<u32>,
    pub lsn: Option<u64>,
    /// A read's answer: whether the server was a standby.
    pub in_recovery: Option<bool>,
}

/// Parses a client log. A missing or unreadable log, or a line that is not the client's, is an
/// error: a run must never count as "0 acknowledged, 0 lost" because its log went missing.
pub fn read_client_log(path: &Path) -> Result<Vec<Line>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading the drill client log {}", path.display()))?;
    text.lines().enumerate().map(|(i, l)| parse_line(l).with_context(|| format!("{}:{}: {l:?}", path.display(), i + 1))).collect()
}

fn parse_line(l: &str) -> Result<Line> {
    let mut f = l.splitn(5, ' ');
    let ok = match f.next() {
        Some("ok") => true,
        Some("err") => false,
        other => bail!("a client log line starts with ok or err, not {other:?}"),
    };
    let num = |v: Option<&str>, what: &str| -> Result<u128> { v.with_context(|| format!("no {what}"))?.parse().with_context(|| format!("bad {what}")) };
    let seq = num(f.next(), "sequence number")? as i32;
    let sent_us = num(f.next(), "send time")?;
    let at_us = num(f.next(), "answer time")?;
    let rest = f.next().unwrap_or("");
    let (node, timeline, lsn, in_recovery) = if ok && seq > 0 {
        let mut parts = rest.split(' ');
        let node = parts.next().unwrap_or("").to_owned();
        let tl = parts.next().context("an acknowledged write without its timeline")?.parse().context("bad timeline")?;
        let lsn = parse_lsn(parts.next().context("an acknowledged write without its LSN")?).context("bad LSN")?;
        (node, Some(tl), Some(lsn), None)
    } else if ok {
        let (node, rec) = rest.split_once(' ').context("a read answer without the server's recovery state")?;
        let rec = match rec {
            "t" => true,
            "f" => false,
            other => bail!("a read's recovery state is t or f, not {other:?}"),
        };
        (node.to_owned(), None, None, Some(rec))
    } else {
        (rest.to_owned(), None, None, None)
    };
    Ok(Line { ok, seq, sent_us, at_us, node, timeline, lsn, in_recovery })
}

/// PostgreSQL's `X/Y` LSN text.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn ms(us: u128) -> f64 {
    us as f64 / 1000.0
}

/// Fault → the first success sent after the last failure that followed the fault (or after the
/// fault itself when nothing failed). Counting only requests sent after the last failure
/// matters: a SIGKILLed postmaster's backends live on for a moment and still acknowledge
/// (replicated) commits, which is not recovery.
pub fn recovery_ms(lines: &[Line], fault: u128) -> Option<f64> {
    let last_err = lines.iter().filter(|l| !l.ok && l.sent_us >= fault).map(|l| l.sent_us).max().unwrap_or(fault);
    lines.iter().find(|l| l.ok && l.sent_us > last_err).map(|l| ms(l.at_us - fault))
}

/// [`recovery_ms`] for one step of a fault: only requests sent in `[from, until)` count, and of
/// the failures only those that also ended before `until` (a request in flight when the next
/// step began fails because of that step), so a later step's failures do not hide this one's
/// recovery. `None` when no request sent in the window after its last failure was acknowledged.
pub fn resumed_ms(lines: &[Line], from: u128, until: u128) -> Option<f64> {
    let window: Vec<Line> = lines.iter().filter(|l| l.sent_us >= from && l.sent_us < until && (l.ok || l.at_us < until)).cloned().collect();
    recovery_ms(&window, from)
}

/// The longest gap between two acknowledgements from a second before the fault on.
pub fn max_gap(lines: &[Line], fault: u128) -> f64 {
    let acks: Vec<u128> = lines.iter().filter(|l| l.ok && l.at_us + 1_000_000 >= fault).map(|l| l.at_us).collect();
    acks.windows(2).map(|w| ms(w[1] - w[0])).fold(0.0, f64::max)
}

/// Answers a fenced old primary must never give: once another node acknowledged a write after
/// `fault` (the failover happened), any write `node_addr` acknowledges, or any read it answers
/// as a primary (not in recovery, so not rejoined yet), for requests sent after that. (Right
/// after a `kill -9` the dying postmaster's backends may still acknowledge replicated commits;
/// those precede the failover and are judged by the split-brain measure.)
pub fn stale_answers(lines: &[Line], node_addr: &str, fault: u128) -> usize {
    let Some(failover) = lines.iter().filter(|l| l.ok && l.seq > 0 && l.sent_us > fault && l.node != node_addr).map(|l| l.sent_us).min() else {
        return 0;
    };
    lines
        .iter()
        .filter(|l| l.ok && l.sent_us > failover && l.node == node_addr)
        .filter(|l| l.seq > 0 || l.in_recovery == Some(false))
        .count()
}

/// Acknowledged sequence numbers that `present` (the rows a primary has) lacks.
pub fn lost(acked: &[&Line], present: &BTreeSet<i32>) -> Vec<i32> {
    acked.iter().filter(|l| !present.contains(&l.seq)).map(|l| l.seq).collect()
}

/// A timeline's history as the winner's `.history` file gives it: every ancestor timeline and
/// the WAL position where its child branched off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub switchpoints: Vec<(u32, u64)>,
}

impl History {
    /// Parses a `0000000N.history` file: `parentTLI <tab> X/Y <tab> reason` per line.
    pub fn parse(text: &str) -> Result<History> {
        let mut switchpoints = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let mut f = line.split_whitespace();
            let tl = f.next().and_then(|t| t.parse().ok()).with_context(|| format!("bad history line {line:?}"))?;
            let at = f.next().and_then(parse_lsn).with_context(|| format!("bad history line {line:?}"))?;
            switchpoints.push((tl, at));
        }
        Ok(History { switchpoints })
    }

    fn switchpoint(&self, tl: u32) -> Option<u64> {
        self.switchpoints.iter().find(|(t, _)| *t == tl).map(|(_, at)| *at)
    }
}

/// Split-brain writes, judged one acknowledgement at a time against the winner and its
/// timeline's history, independently of whether the winner has the row: an acknowledgement
/// is sound when it came from the winner on the winner's timeline, or on an ancestor timeline
/// (from any node) at a position before that timeline's switch point. Anything else (a second
/// primary on the winning timeline, a timeline off the winner's history, or an old timeline
/// written past its switch point) landed where the winner's history does not go.
pub fn split_brain(acked: &[&Line], winner_addr: &str, winner_tl: u32, history: &History) -> Vec<i32> {
    acked
        .iter()
        .filter(|l| {
            let (Some(tl), Some(lsn)) = (l.timeline, l.lsn) else { return true };
            let sound = if tl == winner_tl {
                l.node == winner_addr
            } else {
                tl < winner_tl && history.switchpoint(tl).is_some_and(|at| lsn < at)
            };
            !sound
        })
        .map(|l| l.seq)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: i32, node: &str, tl: u32, lsn: u64) -> Line {
        Line { ok: true, seq, sent_us: 0, at_us: 0, node: node.into(), timeline: Some(tl), lsn: Some(lsn), in_recovery: None }
    }

    #[test]
    fn client_lines_parse_and_bad_ones_are_errors() {
        assert_eq!(
            parse_line("ok 7 100 150 172.20.0.10 2 0/3000060").unwrap(),
            ack(7, "172.20.0.10", 2, 0x300_0060).clone_with(100, 150)
        );
        let read = parse_line("ok 0 100 150 172.20.0.11 t").unwrap();
        assert_eq!((read.node.as_str(), read.timeline, read.in_recovery), ("172.20.0.11", None, Some(true)));
        assert!(parse_line("ok 0 100 150 172.20.0.11").is_err(), "a read answer needs the recovery state");
        let err = parse_line("err 8 100 1100 statement timed out").unwrap();
        assert_eq!((err.ok, err.node.as_str()), (false, "statement timed out"));
        for bad in ["", "maybe 1 2 3", "ok x 1 2 n", "ok 7 100 150 172.20.0.10", "ok 7 100 150 172.20.0.10 2 nolsn"] {
            assert!(parse_line(bad).is_err(), "{bad:?} must not parse");
        }
    }

    impl Line {
        fn clone_with(mut self, sent: u128, at: u128) -> Line {
            self.sent_us = sent;
            self.at_us = at;
            self
        }
    }

    #[test]
    fn a_missing_log_is_an_error() {
        let e = read_client_log(Path::new("/nonexistent/pglb-drill.log")).unwrap_err();
        assert!(format!("{e:#}").contains("reading the drill client log"), "{e:#}");
    }

    #[test]
    fn history_files_parse() {
        let h = History::parse("1\t0/3000000\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n").unwrap();
        assert_eq!(h.switchpoints, [(1, 0x300_0000), (2, 0x500_0000)]);
        assert!(History::parse("1\tnot-an-lsn\treason").is_err());
    }

    #[test]
    fn split_brain_is_judged_per_acknowledgement() {
        // Winner pg2 (.11) on timeline 3; timeline 1 branched at 0/3000000, 2 at 0/5000000.
        let h = History { switchpoints: vec![(1, 0x300_0000), (2, 0x500_0000)] };
        let acks = [
            ack(1, "172.20.0.10", 1, 0x200_0000), // old primary before its switch point: sound
            ack(2, "172.20.0.10", 1, 0x300_0000), // old primary at/after the switch point: split
            ack(3, "172.20.0.12", 2, 0x400_0000), // timeline 2 before its switch point: sound
            ack(4, "172.20.0.11", 3, 0x600_0000), // the winner: sound
            ack(5, "172.20.0.12", 3, 0x600_0000), // a second primary on the winning timeline
            ack(6, "172.20.0.10", 4, 0x600_0000), // a timeline the winner's history lacks
            ack(7, "172.20.0.10", 9, 0x100),      // ditto, newer than the winner
        ];
        let refs: Vec<&Line> = acks.iter().collect();
        assert_eq!(split_brain(&refs, "172.20.0.11", 3, &h), [2, 5, 6, 7]);
        let no_fork = History::default();
        assert_eq!(split_brain(&refs[..1], "172.20.0.10", 1, &no_fork), Vec::<i32>::new());
    }

    #[test]
    fn stale_answers_are_writes_and_primary_reads_of_the_old_primary() {
        let lines: Vec<Line> = [
            "ok 5 10 11 172.20.0.10 1 0/10",   // before the fault
            "ok 6 105 106 172.20.0.10 1 0/20", // a dying backend's last ack: before the failover
            "ok 7 120 121 172.20.0.11 2 0/30", // the failover
            "ok 8 125 126 172.20.0.10 1 0/40", // a write on the old primary after it
            "ok 0 130 131 172.20.0.10 f",      // a read answered by it as a primary
            "ok 0 140 141 172.20.0.10 t",      // a read once it is a standby again: fine
            "err 9 150 160 connection refused",
        ]
        .iter()
        .map(|l| parse_line(l).unwrap())
        .collect();
        assert_eq!(stale_answers(&lines, "172.20.0.10", 100), 2);
    }

    #[test]
    fn recovery_and_gap() {
        let l = |ok: bool, sent: u128, at: u128| Line { ok, seq: 1, sent_us: sent, at_us: at, node: String::new(), timeline: None, lsn: None, in_recovery: None };
        let lines = [l(true, 0, 5), l(false, 1000, 2000), l(true, 1500, 1600), l(false, 3000, 4000), l(true, 5000, 5200)];
        assert_eq!(recovery_ms(&lines, 900), Some(4.3), "the first success sent after the last failure");
        assert_eq!(recovery_ms(&lines[..1], 0), None);
        assert_eq!(max_gap(&lines, 0), 3.6);
        assert_eq!(resumed_ms(&lines, 900, 2000), Some(0.7), "the later failure at 3000 is another step's");
        assert_eq!(resumed_ms(&lines, 2500, 9000), Some(2.7));
        assert_eq!(resumed_ms(&lines, 900, 1400), None, "nothing acknowledged in the window");
        assert_eq!(resumed_ms(&lines, 1200, 2900), Some(0.4), "sent before the next step, failed after it: that step's");
        assert_eq!(resumed_ms(&lines, 1200, 3500), Some(0.4), "the failure sent at 3000 ended at 4000, in the next step");
        assert_eq!(resumed_ms(&lines, 1200, 4500), None, "sent and failed within the window, nothing acknowledged after it");
        let acked: Vec<&Line> = lines.iter().filter(|x| x.ok).collect();
        assert_eq!(lost(&acked, &BTreeSet::from([1])), Vec::<i32>::new());
        assert_eq!(lost(&acked, &BTreeSet::new()), [1, 1, 1]);
    }
}
