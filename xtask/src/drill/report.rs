//! A drill run's outcome, how it is printed, the summary table pasted into docs/DRILLS.md, and
//! the JSON written with `--json`.

use std::fmt::Write as _;

use serde::Serialize;

use super::{flood_report::SynFlood, lb::LbTakeover, watch::Floor};

/// One load balancer's CPU: over the run (while the fault and recovery happened) and idle
/// afterwards (the cluster healthy again, no client running).
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    pub lb: String,
    /// Percent of one CPU over the run; `None` when the pglb process changed during the run
    /// (a drill restarted it).
    pub run_pct: Option<f64>,
    /// Percent of one CPU over an idle window after the run.
    pub idle_pct: Option<f64>,
}

/// The outcome of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunResult {
    pub scenario: String,
    pub run: i32,
    pub write_rto_ms: Option<f64>,
    pub read_rto_ms: Option<f64>,
    /// The longest gap between two consecutive acknowledged writes around the fault.
    pub max_write_gap_ms: f64,
    pub acked_writes: usize,
    /// Acknowledged writes the winner lacks.
    pub acked_lost: usize,
    /// Acknowledged writes judged one by one against the winner's timeline history.
    pub split_brain_writes: usize,
    /// Writes acknowledged, and reads answered as a primary, by the old primary (pg1) after the
    /// fault (scenarios where it must get none).
    pub stale_primary_acks: Option<usize>,
    pub winner: String,
    pub winner_timeline: u32,
    pub failover: bool,
    /// Running primaries once the run's faults healed (must be exactly 1).
    pub primaries_at_end: usize,
    /// The returning old primary was fenced: logged, and no client reached it until pglb
    /// rejoined it.
    pub fenced_ok: Option<bool>,
    /// The remaining standby streamed from the winner.
    pub standbys_follow: Option<bool>,
    /// Fault → the old primary streaming from the winner again, rejoined by pglb itself
    /// (`rejoin_command`), with no operator step.
    pub rejoin_ms: Option<f64>,
    /// Fault → the peer load balancer holds the VIP (lb-cut-from-primary).
    pub vip_moved_ms: Option<f64>,
    /// When the fault was healed, if recovery is measured only up to then (µs since the epoch).
    #[serde(skip)]
    pub healed_at_us: Option<u128>,
    /// `lbN promoted pgM` lines of every load balancer during the run.
    pub promotions: Vec<String>,
    /// New flows opened by the killed load balancer's data plane after its lease ran out.
    pub old_lb_new_flows: Option<u64>,
    /// What `pglb switchover` printed (the switchover scenarios, and every switch back).
    pub switchover_output: Option<String>,
    pub switchback_output: Option<String>,
    /// Writes acknowledged during the switch back to pg1, and those pg1 lacks after it.
    pub switchback_acked: Option<usize>,
    pub switchback_lost: Option<usize>,
    /// The run's own acknowledged writes checked again on pg1 after the switch back.
    pub lost_after_switchback: Option<usize>,
    pub cpu: Vec<Cpu>,
    pub decisions: Vec<String>,
    /// The trust drills' checks (issue 18), passed and failed, each with what it saw; a check
    /// that could not be evaluated is a failed one.
    pub checks: Vec<Check>,
    /// Trust drills: fault → writes acknowledged again, per step of the fault.
    pub resumed: Vec<Resumed>,
    /// Trust drills: new flows to nodes below the floor ([`super::watch::FloorWatch`]).
    pub below_floor: Option<Floor>,
    /// The longest write gap the run may have (trust drills with a healthy path throughout).
    pub write_gap_limit_ms: Option<f64>,
    /// Checks this run failed (empty: it passed).
    pub failures: Vec<String>,
}

/// One named check of a trust drill and what it saw.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

/// A step of a fault and how long until a write sent after it was acknowledged.
#[derive(Debug, Clone, Serialize)]
pub struct Resumed {
    pub after: String,
    pub ms: Option<f64>,
    pub limit_ms: f64,
}

/// Idle CPU above this (percent of one CPU) fails a run: the daemon must idle.
pub const IDLE_CPU_LIMIT_PCT: f64 = 2.0;

impl RunResult {
    /// Records the checks every run must pass.
    pub fn check_common(&mut self) {
        if self.acked_lost > 0 {
            self.failures.push(format!("{} acknowledged writes lost", self.acked_lost));
        }
        if self.split_brain_writes > 0 {
            self.failures.push(format!("{} split-brain writes", self.split_brain_writes));
        }
        if self.primaries_at_end != 1 {
            self.failures.push(format!("{} primaries once the faults healed (expected exactly 1)", self.primaries_at_end));
        }
        if self.write_rto_ms.is_none() {
            self.failures.push("writes never resumed after the fault".into());
        }
        if let Some(n) = self.stale_primary_acks.filter(|&n| n > 0) {
            self.failures.push(format!("{n} requests answered by the old primary (as a primary) after the fault"));
        }
        for lost in [self.switchback_lost, self.lost_after_switchback].into_iter().flatten().filter(|&n| n > 0) {
            self.failures.push(format!("{lost} acknowledged writes lost around the switch back"));
        }
        if let Some(limit) = self.write_gap_limit_ms.filter(|l| self.max_write_gap_ms > *l) {
            self.failures.push(format!("a write gap of {:.0} ms (limit {limit:.0} ms)", self.max_write_gap_ms));
        }
    }

    /// Records a named check and what it saw; a failed one is a failure of the run too.
    pub fn check(&mut self, name: &str, passed: bool, detail: impl Into<String>) {
        let detail = detail.into();
        if !passed {
            self.failures.push(format!("{name}: {detail}"));
        }
        self.checks.push(Check { check: name.to_owned(), passed, detail });
    }

    /// [`RunResult::check`] of an outcome that may not have been observable: an error fails
    /// the check ("could not be evaluated"), it never passes.
    pub fn check_with(&mut self, name: &str, outcome: anyhow::Result<(bool, String)>) {
        match outcome {
            Ok((passed, detail)) => self.check(name, passed, detail),
            Err(e) => self.check(name, false, format!("could not be evaluated: {e:#}")),
        }
    }

    /// Records the idle-CPU check.
    pub fn check_cpu(&mut self) {
        for c in &self.cpu {
            if let Some(p) = c.idle_pct.filter(|&p| p >= IDLE_CPU_LIMIT_PCT) {
                self.failures.push(format!("pglb on {} used {p:.1}% of a CPU idle (limit {IDLE_CPU_LIMIT_PCT}%)", c.lb));
            }
        }
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

fn cpu_text(cpu: &[Cpu]) -> String {
    cpu.iter()
        .map(|c| {
            let f = |v: Option<f64>| v.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "-".into());
            format!("{} run {} idle {}", c.lb, f(c.run_pct), f(c.idle_pct))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn print_run(r: &RunResult) {
    println!(
        "  write RTO {} ms | read RTO {} ms | max write gap {:.0} ms | acked {} | lost {} | split-brain {} | winner {} (timeline {}) | primaries at end {}{}{}{}",
        opt_ms(r.write_rto_ms),
        opt_ms(r.read_rto_ms),
        r.max_write_gap_ms,
        r.acked_writes,
        r.acked_lost,
        r.split_brain_writes,
        r.winner,
        r.winner_timeline,
        r.primaries_at_end,
        r.fenced_ok.map(|f| format!(" | old primary fenced: {f}")).unwrap_or_default(),
        r.rejoin_ms.map(|v| format!(" | old primary streaming again {v:.0} ms after the fault")).unwrap_or_default(),
        r.vip_moved_ms.map(|v| format!(" | VIP moved after {v:.0} ms")).unwrap_or_default(),
    );
    if let Some(n) = r.stale_primary_acks {
        println!("  requests the old primary answered as a primary after the fault: {n}");
    }
    if let Some(n) = r.old_lb_new_flows {
        println!("  new flows through the killed load balancer after its lease ran out: {n}");
    }
    if !r.promotions.is_empty() {
        println!("  promotions: {}", r.promotions.join("; "));
    }
    for o in [&r.switchover_output, &r.switchback_output].into_iter().flatten() {
        println!("  pglb switchover: {o}");
    }
    if let (Some(a), Some(l)) = (r.switchback_acked, r.switchback_lost) {
        println!("  switch back to pg1 under load: acked {a} | lost {l}");
    }
    if let Some(l) = r.lost_after_switchback {
        println!("  the run's acknowledged writes missing on pg1 after the switch back: {l}");
    }
    for w in &r.resumed {
        println!("  writes acknowledged again after {}: {} (limit {:.0} ms)", w.after, w.ms.map(|m| format!("{m:.0} ms")).unwrap_or_else(|| "never".into()), w.limit_ms);
    }
    if let Some(f) = &r.below_floor {
        if f.nodes_below.is_empty() {
            println!("  floor: no node was below it during the fault ({} samples, floor timeline {}): no new flow could go wrong", f.samples, f.floor);
        } else {
            println!("  floor: {:?} below timeline {} in {} of {} samples ({} intervals); new flows to them: {:?}", f.nodes_below, f.floor, f.samples_below, f.samples, f.intervals_below, f.new_flows);
        }
    }
    for c in &r.checks {
        println!("  {} {}: {}", if c.passed { "ok" } else { "FAILED check" }, c.check, c.detail);
    }
    println!("  pglb CPU: {}", cpu_text(&r.cpu));
    for d in &r.decisions {
        println!("    {d}");
    }
    for f in &r.failures {
        println!("  FAILED: {f}");
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

fn med_max(v: &[f64]) -> String {
    format!("{} / {}", opt_ms(median(v.to_vec())), opt_ms(max(v)))
}

/// The summary table, one row per scenario (Markdown, pasted into docs/DRILLS.md).
pub fn summarise(results: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| scenario | runs | write RTO median / max (ms) | read RTO median / max (ms) | max write gap median / max (ms) | acked writes | lost | split-brain | one primary at end | old primary streaming again median / max (ms) | pglb CPU idle after, max | winners | failed checks |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut names: Vec<&str> = results.iter().map(|r| r.scenario.as_str()).collect();
    names.dedup();
    for s in names {
        let rs: Vec<&RunResult> = results.iter().filter(|r| r.scenario == s).collect();
        let col = |f: fn(&RunResult) -> Option<f64>| rs.iter().filter_map(|r| f(r)).collect::<Vec<f64>>();
        let gaps: Vec<f64> = rs.iter().map(|r| r.max_write_gap_ms).collect();
        let idle = rs.iter().flat_map(|r| r.cpu.iter().filter_map(|c| c.idle_pct)).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let mut winners: Vec<String> = rs.iter().map(|r| r.winner.clone()).collect();
        winners.sort();
        let one_primary = rs.iter().filter(|r| r.primaries_at_end == 1).count();
        let failed: usize = rs.iter().map(|r| r.failures.len()).sum();
        let _ = writeln!(
            out,
            "| {s} | {} | {} | {} | {} | {} | {} | {} | {one_primary} of {} | {} | {} | {} | {failed} |",
            rs.len(),
            med_max(&col(|r| r.write_rto_ms)),
            med_max(&col(|r| r.read_rto_ms)),
            med_max(&gaps),
            rs.iter().map(|r| r.acked_writes).sum::<usize>(),
            rs.iter().map(|r| r.acked_lost).sum::<usize>(),
            rs.iter().map(|r| r.split_brain_writes).sum::<usize>(),
            rs.len(),
            med_max(&col(|r| r.rejoin_ms)),
            idle.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "-".into()),
            winners.join(" ")
        );
    }
    out
}

/// Everything a drill command measured, for `--json`.
#[derive(Debug, Serialize)]
pub struct DrillJson<'a> {
    /// How the drill clients connected: `vip` (through the load balancers' data plane) or
    /// `agent` (from the client's cgroup, rewritten by `pglb agent` at connect()).
    pub client: &'static str,
    pub failover: &'a [RunResult],
    pub lb: &'a [LbTakeover],
    pub syn_flood: &'a [SynFlood],
}
