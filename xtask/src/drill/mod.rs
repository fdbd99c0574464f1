//! `cargo xtask drill SCENARIO [--runs N] [--json FILE] [--client vip|agent]`: failover drills
//! on the lab. SCENARIO is a [`Scenario`], parsed by clap; `all` runs every one in its declared
//! order.
//!
//! Each run starts from a healthy cluster (pg1 primary, pg2 and pg3 streaming from it, pglb on
//! lb1 holding the VIP and routing writes to pg1 and reads to both standbys), injects one fault
//! while a writer (an INSERT every 10 ms through VIP:3000) and a reader (a SELECT every 10 ms
//! through VIP:3001) run in pgha-client, measures, then returns the cluster to healthy (old
//! primaries are rejoined by pglb itself through `rejoin_command`; `pglb switchover --to pg1`
//! under load; and when a drill restarted lb1's pglb, which comes back as backup because a
//! healthy master is not preempted, the VIP is brought home with a graceful restart of lb2's
//! pglb, [`lab::lb::bring_vip_home`]) before the next run.
//!
//! Measured per run (docs/ARCHITECTURE.md, "What is measured"; [`measure`]): write and read
//! RTO, the longest write gap, acknowledged writes lost (on the winner, and again on pg1 after
//! the switch back), split-brain writes (every acknowledgement judged against the winner's
//! timeline history), running primaries once the faults healed, fault → old primary streaming
//! again, and each pglb's CPU over the run and idle after it. Every run is checked
//! ([`RunResult::check_common`]); the command fails when any check failed, after printing and
//! writing everything.
//!
//! The trust drills of issue 18 ([`trust`]: `forged-report`, `forged-advert`, `lb-freeze`,
//! `lb-restart-stale-view`, `state-write-fails`, `main-loop-hang`, `lb-return`) run the same
//! way and add named checks of their own ([`report::Check`]): forged reports and adverts are
//! dropped and counted, a frozen, killed or hung pglb wakes humble (no VIP, no new flow to a
//! node below the floor, not ready until it has heard its peers), no promotion without its
//! record, a returning lb1 stays backup under load; and in each, writes acknowledged again
//! within 2 s after every step of the fault that leaves a healthy path.
//!
//! Modules: [`scenario`] names the drills and says how each runs, [`health`] brings the cluster
//! back to healthy between runs, [`failover`] injects the PostgreSQL and partial-failure faults
//! and checks the recovery, [`trust`] the trust drills' faults (with [`forge`] for
//! forged packets, [`watch`] for who holds the VIP and new flows below the floor, [`metrics`]
//! for pglb's `/metrics`), [`measure`] reads the client logs, [`report`] prints and
//! serializes, [`logs`] reads pglb's logs, [`lb`] runs the VIP takeover drills, [`flood`] the
//! `syn-flood` drill (its figures and report in [`flood_report`]).

mod failover;
mod flood;
mod flood_report;
mod forge;
mod health;
pub mod lb;
mod logs;
mod measure;
mod metrics;
mod plan;
mod report;
mod scenario;
mod trust;
mod watch;

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};

pub use self::scenario::Scenario;
use self::{
    lb::{LbStop, LbTakeover},
    flood_report::{SynFlood, print_flood, summarise_flood},
    measure::{History, Line, read_client_log},
    logs::{decision_lines, keep_logs, log_marks, promotions, promotions_made},
    report::{Cpu, DrillJson, RunResult, print_run, summarise},
    plan::Fault,
    scenario::Kind,
};
use crate::{
    lab::{
        self, LabState,
        lb as lab_lb,
        net::ns_cmd,
        pglb_json::{self, StatusRow},
        postgres::wait_for,
        topology::{Host, READ_PORT, STATE_DIR, VIP, WRITE_PORT, host, load_balancers, secret_path},
    },
    sh,
};

/// Load before the fault, and after recovery, so both sides of the gap are measured.
const WARMUP: Duration = Duration::from_millis(1500);
const COOLDOWN: Duration = Duration::from_millis(2000);
/// The longest a failover may take before the run is declared failed.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// The longest pglb may take to rejoin a returning old primary by itself.
const REJOIN_LIMIT: Duration = Duration::from_secs(60);
/// How long lb-cut-from-primary keeps lb1 cut from pg1.
const HOLD_CUT: Duration = Duration::from_secs(6);
/// The idle window after a run over which each pglb's CPU is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(3);
const PRIMARY: &str = "pg1";
/// Run ids of the writes during a run's switch back to pg1 (the run's id plus this).
const SWITCHBACK_RUN: i32 = 1_000_000;
const NODES: [&str; 3] = ["pg1", "pg2", "pg3"];

/// How the drill clients reach PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientMode {
    /// Through the VIP and the load balancers' XDP data plane.
    Vip,
    /// From the client's cgroup with `pglb agent` running: connects to the VIP are rewritten to
    /// the writer (or a reader) and go straight to PostgreSQL (docs/AGENT.md).
    Agent,
}

impl ClientMode {
    pub fn name(self) -> &'static str {
        match self {
            ClientMode::Vip => "vip",
            ClientMode::Agent => "agent",
        }
    }
}

/// Runs `scenario` (every one of `all`'s, in order) `runs` times each on the lab, brought up if
/// it is down; prints each run and the summaries, writes the JSON, and fails when a check failed.
pub fn drill(scenario: Scenario, runs: u32, json: Option<&Path>, client: ClientMode) -> Result<()> {
    sh::require_root("drill")?;
    let scenarios = scenario.expand(client)?;
    if scenario == Scenario::All && client == ClientMode::Agent {
        println!("drill: --client agent: running the PostgreSQL and partial-failure scenarios; the trust drills, lb-crash, lb-graceful and syn-flood measure the VIP and are not run in this mode");
    }
    let runs = runs.max(1);
    if lab::state()? != LabState::Up {
        println!("drill: the lab is not up; bringing it up");
        lab::up(false, false)?;
    }
    let _agent = match client {
        ClientMode::Agent => Some(lab::agent::Running::start(&lab_lb::stable_binary())?),
        ClientMode::Vip => None,
    };
    let d = Drill::new(client)?;
    d.prepare()?;
    let mut out = Outcomes::default();
    for (s, kind) in scenarios {
        match kind {
            Kind::Fault(fault) => out.failover.extend(d.fault_runs(s, fault, runs)?),
            Kind::Takeover(stop) => out.lb.extend(lb_drills(stop, runs)?),
            Kind::SynFlood => out.floods.extend(d.flood_drills(runs)?),
        }
    }
    out.report(json, client)
}

/// Everything a drill command measured, by kind of drill.
#[derive(Default)]
struct Outcomes {
    failover: Vec<RunResult>,
    lb: Vec<LbTakeover>,
    floods: Vec<SynFlood>,
}

impl Outcomes {
    /// Prints the summaries, writes the JSON to `json`, and fails listing every failed check
    /// (after printing and writing everything).
    fn report(&self, json: Option<&Path>, client: ClientMode) -> Result<()> {
        if !self.failover.is_empty() {
            print!("{}", summarise(&self.failover));
        }
        if !self.floods.is_empty() {
            print!("{}", summarise_flood(&self.floods, flood::AFTER_LIMIT.as_secs()));
        }
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(&DrillJson { client: client.name(), failover: &self.failover, lb: &self.lb, syn_flood: &self.floods })?;
            fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
            println!("drill: results written to {}", path.display());
        }
        let failed: Vec<String> = self
            .failover
            .iter()
            .flat_map(|r| r.failures.iter().map(move |f| format!("{} run {}: {f}", r.scenario, r.run)))
            .chain(self.floods.iter().flat_map(|r| r.failures.iter().map(move |f| format!("{} run {}: {f}", r.scenario, r.run))))
            .collect();
        if !failed.is_empty() {
            bail!("{} failed checks:\n  {}", failed.len(), failed.join("\n  "));
        }
        Ok(())
    }
}

/// A load-balancer takeover drill ([`lb`]) `runs` times, lb1 restored after each; prints each
/// run and the medians.
fn lb_drills(stop: LbStop, runs: u32) -> Result<Vec<LbTakeover>> {
    let mut out = Vec::new();
    for i in 1..=runs {
        println!("drill: {} run {i}/{runs}", stop.scenario());
        let r = lb::lb_drill(stop).with_context(|| format!("drill {} run {i}", stop.scenario()))?;
        println!("  {}", r.summary());
        let back = lb::restore(host(r.from)?).with_context(|| format!("restarting pglb on {}", r.from))?;
        println!("  restored: pglb on {} holds the VIP again after {} ms", r.from, back.as_millis());
        out.push(r);
    }
    let mut taken: Vec<u128> = out.iter().map(|r| r.vip_taken.as_millis()).collect();
    let mut first: Vec<u128> = out.iter().map(|r| r.first_connection.as_millis()).collect();
    taken.sort_unstable();
    first.sort_unstable();
    if let (Some(tm), Some(fm)) = (taken.last(), first.last()) {
        println!(
            "{}: {} runs; VIP taken median {} ms, max {tm} ms; first new connection median {} ms, max {fm} ms",
            stop.scenario(),
            taken.len(),
            taken[taken.len() / 2],
            first[first.len() / 2],
        );
    }
    Ok(out)
}

/// What a PostgreSQL node says about itself (superuser over its socket).
#[derive(Debug, Clone)]
struct NodeView {
    in_recovery: bool,
    timeline: u32,
    /// `pg_stat_wal_receiver`: "streaming from HOST", or empty.
    receiver: String,
}

/// A pglb process's CPU time at one moment.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    pid: i32,
    ticks: u64,
    at: Instant,
}

struct Drill {
    pglb: PathBuf,
    client: PathBuf,
    dir: PathBuf,
    mode: ClientMode,
}

fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros()
}

fn addr_of(node: &str) -> &'static str {
    host(node).map(|h| h.addr).unwrap_or("?")
}

/// Whether `pid` exists at all (a zombie does).
fn process_exists(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the pid exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Whether `pid` runs (exists and is not a zombie).
fn process_alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rfind(')').and_then(|i| s[i + 2..].chars().next()).is_some_and(|state| state != 'Z'))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

impl Drill {
    fn new(mode: ClientMode) -> Result<Self> {
        let dir = PathBuf::from(STATE_DIR).join("drill");
        fs::create_dir_all(&dir)?;
        Ok(Drill { pglb: lab_lb::stable_binary(), client: client_binary()?, dir, mode })
    }

    /// SQL as the superuser over `node`'s Unix socket on database `db`.
    fn sql(&self, node: &str, db: &str, query: &str) -> Result<String> {
        lab::postgres::sql_on(host(node)?, db, query).with_context(|| format!("SQL on {node}"))
    }

    fn view(&self, node: &str) -> Option<NodeView> {
        let out = self
            .sql(node, "postgres", "SELECT pg_is_in_recovery(),
                CASE WHEN pg_is_in_recovery()
                     THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint()))
                     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
                coalesce((SELECT status || ' from ' || sender_host FROM pg_stat_wal_receiver), '')")
            .ok()?;
        let f: Vec<&str> = out.split('|').collect();
        Some(NodeView { in_recovery: f.first() == Some(&"t"), timeline: f.get(1)?.parse().ok()?, receiver: f.get(2).unwrap_or(&"").to_string() })
    }

    /// Running primaries, with their timelines.
    fn primaries(&self) -> Vec<(String, u32)> {
        NODES.iter().filter_map(|n| self.view(n).filter(|v| !v.in_recovery).map(|v| (n.to_string(), v.timeline))).collect()
    }

    /// The winner's timeline history (ancestors and their switch points).
    fn history(&self, node: &str, timeline: u32) -> Result<History> {
        if timeline <= 1 {
            return Ok(History::default());
        }
        let text = self.sql(node, "postgres", &format!("SELECT pg_read_file('pg_wal/{timeline:08X}.history')"))?;
        History::parse(&text)
    }

    /// Standbys streaming from `primary`, by application_name.
    fn streaming_from(&self, primary: &str) -> Vec<String> {
        self.sql(primary, "postgres", "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1")
            .map(|o| o.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The load balancer whose pglb speaks for the cluster: the VIP holder with a running pglb
    /// (the first in topology order, the VIP's home, when several hold the VIP).
    fn holder(&self) -> Result<&'static Host> {
        for lb in load_balancers() {
            if lab_lb::holds_vip(lb)? && lab_lb::running(lb) {
                return Ok(lb);
            }
        }
        bail!("no load balancer with a running pglb holds the VIP")
    }

    fn status_of(&self, lb: &Host) -> Result<Vec<StatusRow>> {
        let config = lab_lb::config_path(lb);
        let out = sh::output(&mut sh::cmd(self.pglb.to_str().unwrap(), ["status", "--json", "--config", config.to_str().unwrap()]))?;
        pglb_json::status_rows(&out).with_context(|| format!("reading {}'s pglb status", lb.name))
    }

    fn status(&self) -> Result<Vec<StatusRow>> {
        self.status_of(self.holder()?)
    }

    /// The node the VIP holder's pglb routes writes to, if any.
    fn writer(&self) -> Option<String> {
        self.status().ok()?.into_iter().find(|r| r.routed.split(',').any(|p| p == WRITE_PORT.to_string())).map(|r| r.node)
    }

    fn pglb_cmd(&self, args: &[&str]) -> Result<String> {
        let mut c = sh::cmd(self.pglb.to_str().unwrap(), args);
        c.env("PGLB_LOG", "warn");
        sh::output(&mut c)
    }

    fn config_of(&self, lb: &Host) -> String {
        lab_lb::config_path(lb).to_string_lossy().into_owned()
    }

    /// Creates the table the writer inserts into (once).
    fn prepare(&self) -> Result<()> {
        let primary = self.find_primary().context("no primary to create the drill table on")?;
        self.sql(&primary, "app", "CREATE TABLE IF NOT EXISTS drill_writes (run int NOT NULL, seq int NOT NULL,
              at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (run, seq));
              ALTER TABLE drill_writes OWNER TO app")?;
        Ok(())
    }

    /// The primary on the highest timeline.
    fn find_primary(&self) -> Option<String> {
        self.primaries().into_iter().max_by_key(|(_, tl)| *tl).map(|(n, _)| n)
    }

    fn next_run_id(&self) -> Result<i32> {
        let primary = self.find_primary().context("no primary")?;
        Ok(self.sql(&primary, "app", &format!("SELECT coalesce(max(run), 0) + 1 FROM drill_writes WHERE run BETWEEN 1 AND {}", SWITCHBACK_RUN - 1))?.parse()?)
    }

    fn spawn_client(&self, mode: &str, port: u16, run: i32) -> Result<(Child, PathBuf)> {
        let out = self.dir.join(format!("run-{run}-{mode}.log"));
        let child = self
            .client_command(mode, port, run, &out)?
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting the drill {mode} client"))?;
        Ok((child, out))
    }

    /// The drill client in pgha-client in `mode` against VIP:`port`, logging to `out` (created
    /// empty now); stdout discarded, stderr to this terminal, stdin left to the caller.
    fn client_command(&self, mode: &str, port: u16, run: i32, out: &Path) -> Result<Command> {
        let _ = fs::remove_file(out);
        fs::write(out, "").with_context(|| format!("creating {}", out.display()))?;
        let client = host("client")?;
        let pw = secret_path("app");
        let args = [mode, VIP, &port.to_string(), pw.to_str().unwrap(), &run.to_string(), out.to_str().unwrap()];
        let mut c = match self.mode {
            ClientMode::Vip => ns_cmd(&client.ns(), self.client.to_str().unwrap(), args),
            // In the agent's cgroup: the same VIP address and port, rewritten at connect().
            ClientMode::Agent => lab::agent::in_cgroup(&client.ns(), self.client.to_str().unwrap(), args),
        };
        c.stdout(Stdio::null()).stderr(Stdio::inherit());
        Ok(c)
    }

    fn postmaster_pid(&self, node: &str) -> Result<i32> {
        let path = host(node)?.dir().join("data/postmaster.pid");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(text.lines().next().unwrap_or("").trim().parse()?)
    }

    fn cpu_marks(&self) -> Vec<(&'static str, Option<CpuMark>)> {
        load_balancers()
            .map(|lb| {
                let mark = lb::pglb_pid(lb).ok().and_then(|pid| Some(CpuMark { pid, ticks: cpu_ticks(pid)?, at: Instant::now() }));
                (lb.name, mark)
            })
            .collect()
    }

    /// Percent of one CPU each pglb used between two marks (`None` when its process changed).
    fn cpu_between(before: &[(&'static str, Option<CpuMark>)], after: &[(&'static str, Option<CpuMark>)]) -> Vec<(String, Option<f64>)> {
        before
            .iter()
            .zip(after)
            .map(|((lb, b), (_, a))| {
                let pct = match (b, a) {
                    (Some(b), Some(a)) if a.pid == b.pid && a.at > b.at => {
                        Some((a.ticks - b.ticks) as f64 / ticks_per_second() / (a.at - b.at).as_secs_f64() * 100.0)
                    }
                    _ => None,
                };
                (lb.to_string(), pct)
            })
            .collect()
    }

    /// Each pglb's CPU over an idle window (no client, the cluster healthy), added to `r`,
    /// with the check that it stays under the idle limit.
    fn measure_idle(&self, r: &mut RunResult) -> Result<()> {
        let before = self.cpu_marks();
        thread::sleep(IDLE_WINDOW);
        let after = self.cpu_marks();
        for (lb, pct) in Self::cpu_between(&before, &after) {
            match r.cpu.iter_mut().find(|c| c.lb == lb) {
                Some(c) => c.idle_pct = pct,
                None => r.cpu.push(Cpu { lb, run_pct: None, idle_pct: pct }),
            }
        }
        r.check_cpu();
        Ok(())
    }

    /// `syn-flood` `runs` times, each from a healthy cluster and followed by a return to it.
    fn flood_drills(&self, runs: u32) -> Result<Vec<SynFlood>> {
        let mut out = Vec::new();
        for i in 1..=runs {
            self.ensure_healthy().with_context(|| format!("bringing the cluster back to healthy before syn-flood run {i}"))?;
            println!("drill: syn-flood run {i}/{runs} ({} s flood against {VIP}:{WRITE_PORT} and :{READ_PORT})", flood::FLOOD.as_secs());
            let r = flood::flood_drill(self, i).with_context(|| format!("drill syn-flood run {i}"))?;
            print_flood(&r, flood::AFTER_LIMIT.as_secs());
            self.ensure_healthy().with_context(|| format!("bringing the cluster back to healthy after syn-flood run {i}"))?;
            out.push(r);
        }
        Ok(out)
    }

    /// `runs` runs of a scenario under the drill's clients, each from a healthy cluster and
    /// followed by a return to it; a run that ends in an error keeps the lab's logs.
    fn fault_runs(&self, scenario: Scenario, fault: Fault, runs: u32) -> Result<Vec<RunResult>> {
        let mut results = Vec::new();
        for i in 1..=runs {
            self.ensure_healthy().with_context(|| format!("bringing the cluster back to healthy before {scenario} run {i}"))?;
            let run = self.next_run_id()?;
            println!("drill: {scenario} run {i}/{runs} (id {run})");
            let mut r = self.run_one(scenario, fault, run).map_err(|e| {
                let kept = keep_logs(scenario).map(|k| format!(" (logs kept in {})", k.display()));
                e.context(format!("drill {scenario} run {i}{}", kept.unwrap_or_default()))
            })?;
            self.ensure_healthy().with_context(|| format!("bringing the cluster back to healthy after {scenario} run {i}"))?;
            self.measure_idle(&mut r)?;
            print_run(&r);
            results.push(r);
        }
        Ok(results)
    }

    /// One run: the clients, the fault, the measurements, the recovery and its checks.
    fn run_one(&self, scenario: Scenario, fault: Fault, run: i32) -> Result<RunResult> {
        let logs = log_marks();
        let cpu_start = self.cpu_marks();
        let (mut writer, wlog) = self.spawn_client("write", WRITE_PORT, run)?;
        let (mut reader, rlog) = self.spawn_client("read", READ_PORT, run)?;
        let stop = |w: &mut Child, r: &mut Child| {
            let _ = w.kill();
            let _ = r.kill();
            let _ = w.wait();
            let _ = r.wait();
        };
        thread::sleep(WARMUP);
        let mut r = RunResult { scenario: scenario.to_string(), run, ..RunResult::default() };
        let outcome = fault.run(self, &wlog, &mut r);
        thread::sleep(COOLDOWN);
        stop(&mut writer, &mut reader);
        let fault_at = outcome?;
        let cpu_end = self.cpu_marks();
        r.cpu = Self::cpu_between(&cpu_start, &cpu_end).into_iter().map(|(lb, run_pct)| Cpu { lb, run_pct, idle_pct: None }).collect();

        let writes = read_client_log(&wlog)?;
        let reads = read_client_log(&rlog)?;
        let winner = self.writer().or_else(|| self.find_primary()).context("no writer after the run")?;
        let winner_tl = self.view(&winner).map(|v| v.timeline).with_context(|| format!("the winner {winner} does not answer"))?;
        let on_winner = self.rows(&winner, run)?;
        let acked: Vec<&Line> = writes.iter().filter(|l| l.ok).collect();
        let lost = measure::lost(&acked, &on_winner);
        let history = self.history(&winner, winner_tl).with_context(|| format!("reading {winner}'s timeline history"))?;
        let split = measure::split_brain(&acked, addr_of(&winner), winner_tl, &history);
        let until = |lines: &[Line]| -> Vec<Line> { lines.iter().filter(|l| r.healed_at_us.is_none_or(|h| l.sent_us < h)).cloned().collect() };
        r.write_rto_ms = measure::recovery_ms(&until(&writes), fault_at);
        r.read_rto_ms = measure::recovery_ms(&until(&reads), fault_at);
        r.max_write_gap_ms = measure::max_gap(&writes, fault_at);
        r.acked_writes = acked.len();
        r.acked_lost = lost.len();
        r.split_brain_writes = split.len();
        r.winner = winner.clone();
        r.winner_timeline = winner_tl;
        r.failover = winner != PRIMARY;
        if fault.recovery.old_primary_must_stay_silent() {
            let mut both = writes.clone();
            both.extend(reads.iter().cloned());
            r.stale_primary_acks = Some(measure::stale_answers(&both, addr_of(PRIMARY), fault_at));
        }
        if !lost.is_empty() {
            println!("drill: LOST acknowledged writes (run {run}): {lost:?}");
        }
        if !split.is_empty() {
            println!("drill: SPLIT-BRAIN writes (run {run}): {split:?}");
        }

        // Return to healthy, checking the failover's promises on the way.
        let mut run_lines = writes.clone();
        run_lines.extend(reads.iter().cloned());
        failover::recover(self, fault.recovery, run, fault_at, &winner, &logs, &run_lines, &mut r)?;
        r.primaries_at_end = self.primaries().len();
        if r.failover {
            self.switch_back_under_load(run, &acked, &mut r)?;
        }
        r.decisions = decision_lines(&logs);
        r.check_common();
        Ok(r)
    }

    /// The sequence numbers of run `run` that `node` holds.
    fn rows(&self, node: &str, run: i32) -> Result<BTreeSet<i32>> {
        Ok(self
            .sql(node, "app", &format!("SELECT seq FROM drill_writes WHERE run = {run}"))?
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect())
    }

    /// `pglb switchover --to pg1` with the writer running (its rows under run id
    /// `SWITCHBACK_RUN + run`); records the command's output, the acknowledged writes pg1
    /// lacks afterwards, and checks the run's own acknowledged writes on pg1 again.
    fn switch_back_under_load(&self, run: i32, run_acked: &[&Line], r: &mut RunResult) -> Result<()> {
        wait_for(Duration::from_secs(30), "pg1 to be routed as a reader before switching back", || {
            Ok(self.status()?.iter().any(|s| s.node == PRIMARY && s.routed == READ_PORT.to_string()))
        })?;
        let id = SWITCHBACK_RUN + run;
        let (mut w, log) = self.spawn_client("write", WRITE_PORT, id)?;
        thread::sleep(Duration::from_millis(500));
        let out = self.pglb_cmd(&["switchover", "--to", PRIMARY, "--config", &self.config_of(self.holder()?)]);
        thread::sleep(Duration::from_millis(1000));
        let _ = w.kill();
        let _ = w.wait();
        // A switchover that fails is a finding of the run, not the end of the drill: the writes
        // are then checked on whichever node is the one primary once things settle, and the
        // cluster is repaired before the next run.
        let holder_of_rows = match out {
            Ok(o) => {
                r.switchback_output = Some(o.trim().to_owned());
                PRIMARY.to_owned()
            }
            Err(e) => {
                r.switchback_output = Some(format!("failed: {e:#}"));
                r.failures.push(format!("the switch back to pg1 failed: {e:#}"));
                wait_for(Duration::from_secs(30), "exactly one primary after the failed switch back", || Ok(self.primaries().len() == 1))?;
                self.find_primary().context("no primary after the failed switch back")?
            }
        };
        let acked: Vec<Line> = read_client_log(&log)?.into_iter().filter(|l| l.ok).collect();
        let refs: Vec<&Line> = acked.iter().collect();
        let lost = measure::lost(&refs, &self.rows(&holder_of_rows, id)?);
        if !lost.is_empty() {
            println!("drill: LOST acknowledged writes during the switch back (run id {id}): {lost:?}");
        }
        r.switchback_acked = Some(acked.len());
        r.switchback_lost = Some(lost.len());
        r.lost_after_switchback = Some(measure::lost(run_acked, &self.rows(&holder_of_rows, run)?).len());
        Ok(())
    }

    /// The returning old primary is fenced until pglb rejoins it: the load balancer logged the
    /// fence, and while a writer and a reader keep connecting through the VIP (until pg1
    /// streams from the winner again, at most 15 s) pg1 acknowledges no write and answers no
    /// read as a primary. (The run's own clients were checked the same way.)
    fn old_primary_fenced(&self, run: i32, winner: &str, logs: &[(PathBuf, u64)], run_lines: &[Line], fault: u128) -> Result<bool> {
        let logged = wait_for(Duration::from_secs(15), "a load balancer to fence pg1", || {
            Ok(logs.iter().any(|(path, start)| {
                let text = fs::read(path).unwrap_or_default();
                let new = String::from_utf8_lossy(text.get(*start as usize..).unwrap_or_default()).into_owned();
                new.lines().any(|l| l.contains("fenced, needs rejoin") && (l.contains("pg1 was replaced") || l.contains("pg1 is a primary on the old timeline")))
            }))
        });
        if logged.is_err() {
            println!("drill: no load balancer logged pg1's fence");
            return Ok(false);
        }
        let (mut w, wlog) = self.spawn_client("write", WRITE_PORT, -run)?;
        let (mut r, rlog) = self.spawn_client("read", READ_PORT, -run)?;
        let _ = wait_for(Duration::from_secs(15), "pg1 to stream from the winner", || Ok(self.streaming_from(winner).iter().any(|n| n == PRIMARY)));
        thread::sleep(Duration::from_millis(300));
        for c in [&mut w, &mut r] {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut lines = read_client_log(&wlog)?;
        lines.extend(read_client_log(&rlog)?);
        lines.extend(run_lines.iter().cloned());
        let stale = measure::stale_answers(&lines, addr_of(PRIMARY), fault);
        if stale > 0 {
            println!("drill: pg1 answered {stale} requests through the VIP before it was rejoined");
        }
        Ok(stale == 0)
    }

    /// `pglb map dump --json` of a load balancer's pinned maps (no daemon needed); read it with
    /// [`pglb_json`].
    fn map_dump(&self, lb: &Host) -> Result<String> {
        self.pglb_cmd(&["map", "dump", "--json", "--config", lab_lb::config_path(lb).to_str().unwrap()])
    }

    /// A reason counter of a load balancer's data plane.
    fn reason_count(&self, lb: &Host, reason: &str) -> Result<u64> {
        pglb_json::reason(&self.map_dump(lb)?, reason).with_context(|| format!("reading {}'s map dump", lb.name))
    }

    /// Waits until pglb routes writes to a node other than pg1 and a write sent after the fault
    /// was acknowledged.
    fn wait_failover(&self, at: u128, wlog: &Path) -> Result<()> {
        wait_for(RECOVERY_LIMIT, "a failover: writes acknowledged by a new primary", || {
            Ok(read_client_log(wlog)?.iter().any(|l| l.ok && l.sent_us > at && l.node != addr_of(PRIMARY)))
        })
    }

    /// Waits until a write sent after `after` was acknowledged.
    fn wait_writes(&self, after: u128, wlog: &Path, what: &str) -> Result<()> {
        wait_for(RECOVERY_LIMIT, what, || Ok(read_client_log(wlog)?.iter().any(|l| l.ok && l.sent_us > after)))
    }
}

/// The drill client (`PGLB_DRILL_CLIENT`, else built now: a no-op when it is current, and never
/// a stale copy whose modes lag behind the drill's).
fn client_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PGLB_DRILL_CLIENT") {
        return Ok(PathBuf::from(p));
    }
    let mut build = sh::cmd("cargo", ["build", "-q", "-p", "pglb-tests", "--bin", "drill_client"]);
    build.current_dir(lab_lb::workspace());
    sh::run_inherit(&mut build).context("building the drill client")?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| lab_lb::workspace().join("target"));
    Ok(target.join("debug/drill_client"))
}

