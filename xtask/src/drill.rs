//! `cargo xtask drill SCENARIO [--runs N] [--json FILE]`: failover drills on the lab.
//!
//! Each run starts from a healthy cluster (pg1 primary, pg2 and pg3 streaming from it, pglb on
//! lb1 routing writes to pg1 and reads to both standbys), injects one fault while a writer
//! (an INSERT every 10 ms through VIP:3000) and a reader (a SELECT every 10 ms through
//! VIP:3001) run in pgha-client, measures, then returns the cluster to healthy (restart,
//! `pglb node rejoin`, `pglb switchover --to pg1`) before the next run.
//!
//! Measured per run (DESIGN.md "Measurements"):
//! - write RTO: fault → the first acknowledged INSERT sent after the last failed one (after
//!   the fault), or after the fault when none failed;
//! - read RTO: the same for the reader's SELECTs;
//! - acknowledged writes lost: sequence numbers the writer saw acknowledged that the winning
//!   primary does not have;
//! - split-brain writes: acknowledged rows that the acknowledging server (the client records
//!   `inet_server_addr()`) holds but the winner does not, from a node off the winning timeline;
//! - the winner, and pglb's decision log lines on lb1 during the run.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    drill_lb::{self, LbStop, LbTakeover},
    lab::{
        self, LabState, lb,
        net::ns_cmd,
        postgres::wait_for,
        topology::{READ_PORT, STATE_DIR, VIP, WRITE_PORT, host, secret_path},
    },
    setup::PG_BIN,
    sh,
};

/// The PostgreSQL scenarios `all` runs, in order; `all` then runs the load-balancer takeover
/// drills `lb-crash` and `lb-graceful` (`drill_lb`).
const SCENARIOS: &[&str] = &[
    "primary-crash",
    "primary-hang",
    "primary-host-down",
    "primary-isolated",
    "primary-isolated-standbys",
    "standby-crash",
    "switchover",
];

/// How long a cut that must not cause a failover is held.
const HOLD: Duration = Duration::from_secs(5);
/// Load before the fault, and after recovery, so both sides of the gap are measured.
const WARMUP: Duration = Duration::from_millis(1500);
const COOLDOWN: Duration = Duration::from_millis(2000);
/// The longest a failover may take before the run is declared failed.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
const PRIMARY: &str = "pg1";
/// Run ids of the writes during a run's switch back to pg1 (the run's id plus this).
const SWITCHBACK_RUN: i32 = 1_000_000;

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub scenario: String,
    pub run: i32,
    pub write_rto_ms: Option<f64>,
    pub read_rto_ms: Option<f64>,
    /// The longest gap between two consecutive acknowledged writes around the fault.
    pub max_write_gap_ms: f64,
    pub acked_writes: usize,
    pub acked_lost: usize,
    pub split_brain_writes: usize,
    pub winner: String,
    pub failover: bool,
    /// The old primary came back reported `needs-rejoin`, unrouted, with no flows.
    pub fenced_ok: Option<bool>,
    /// The remaining standby streamed from the winner.
    pub standbys_follow: Option<bool>,
    /// What `pglb switchover` printed (the switchover scenario, and every switch back).
    pub switchover_output: Option<String>,
    pub switchback_output: Option<String>,
    /// Writes acknowledged during the switch back to pg1, and those pg1 lacks after it.
    pub switchback_acked: Option<usize>,
    pub switchback_lost: Option<usize>,
    pub decisions: Vec<String>,
}

pub fn drill(scenario: &str, runs: u32, json: Option<&Path>) -> Result<()> {
    sh::require_root("drill")?;
    let (scenarios, lb_stops): (Vec<&str>, Vec<LbStop>) = match scenario {
        "all" => (SCENARIOS.to_vec(), vec![LbStop::Crash, LbStop::Graceful]),
        "lb-crash" => (vec![], vec![LbStop::Crash]),
        "lb-graceful" => (vec![], vec![LbStop::Graceful]),
        s if SCENARIOS.contains(&s) => (vec![s], vec![]),
        other => bail!("unknown drill scenario `{other}`: one of {}, lb-crash, lb-graceful, all", SCENARIOS.join(", ")),
    };
    let runs = runs.max(1);
    if lab::state()? != LabState::Up {
        println!("drill: the lab is not up; bringing it up");
        lab::up(false, false)?;
    }
    let d = Drill::new()?;
    d.prepare()?;
    let mut results = Vec::new();
    for s in &scenarios {
        for i in 0..runs {
            d.ensure_healthy().with_context(|| format!("bringing the cluster back to healthy before {s} run {}", i + 1))?;
            let run = d.next_run_id()?;
            println!("drill: {s} run {}/{runs} (id {run})", i + 1);
            let r = d.run_one(s, run).with_context(|| format!("drill {s} run {}", i + 1))?;
            print_run(&r);
            results.push(r);
        }
    }
    d.ensure_healthy().context("returning the cluster to healthy after the last run")?;
    let lb_results = lb_drills(&lb_stops, runs)?;
    if !results.is_empty() {
        print!("{}", summarise(&results));
    }
    if let Some(path) = json {
        let text = if lb_stops.is_empty() {
            to_json(&results)
        } else if scenarios.is_empty() {
            lb_json(&lb_results)
        } else {
            format!("{{\"failover\": {}, \"lb\": {}}}\n", to_json(&results).trim_end(), lb_json(&lb_results).trim_end())
        };
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("drill: results written to {}", path.display());
    }
    Ok(())
}

/// The load-balancer takeover drills (`drill_lb`), `runs` times each, lb1 restored after each.
fn lb_drills(stops: &[LbStop], runs: u32) -> Result<Vec<LbTakeover>> {
    let mut out = Vec::new();
    for stop in stops {
        for i in 0..runs {
            println!("drill: {} run {}/{runs}", stop.scenario(), i + 1);
            let r = drill_lb::lb_drill(*stop).with_context(|| format!("drill {} run {}", stop.scenario(), i + 1))?;
            println!("  {}", r.summary());
            let back = drill_lb::restore(host(r.from)?).with_context(|| format!("restarting pglb on {}", r.from))?;
            println!("  restored: pglb on {} holds the VIP again after {} ms", r.from, back.as_millis());
            out.push(r);
        }
        let mut taken: Vec<u128> = out.iter().filter(|r| r.stop == *stop).map(|r| r.vip_taken.as_millis()).collect();
        let mut first: Vec<u128> = out.iter().filter(|r| r.stop == *stop).map(|r| r.first_connection.as_millis()).collect();
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
    }
    Ok(out)
}

fn lb_json(runs: &[LbTakeover]) -> String {
    let rows: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{{\"scenario\": \"{}\", \"from\": \"{}\", \"to\": \"{}\", \"vip_taken_ms\": {}, \"vip_released_ms\": {}, \"first_connection_ms\": {}, \"failed_attempts\": {}, \"via_old_master\": {}}}",
                r.stop.scenario(),
                r.from,
                r.to,
                r.vip_taken.as_secs_f64() * 1000.0,
                r.vip_released.map(|d| format!("{}", d.as_secs_f64() * 1000.0)).unwrap_or_else(|| "null".into()),
                r.first_connection.as_secs_f64() * 1000.0,
                r.failed_attempts,
                r.via_old_master,
            )
        })
        .collect();
    format!("[\n  {}\n]\n", rows.join(",\n  "))
}

/// One row of `pglb status`.
#[derive(Debug, Clone)]
struct StatusRow {
    node: String,
    state: String,
    routed: String,
}

/// What a PostgreSQL node says about itself (superuser over its socket).
#[derive(Debug, Clone)]
struct NodeView {
    in_recovery: bool,
    timeline: u32,
    /// `pg_stat_wal_receiver`: "streaming from HOST", or empty.
    receiver: String,
}

struct Drill {
    pglb: PathBuf,
    client: PathBuf,
    config: PathBuf,
    dir: PathBuf,
}

fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros()
}

fn addr_of(node: &str) -> &'static str {
    host(node).map(|h| h.addr).unwrap_or("?")
}

fn node_of_addr(addr: &str) -> String {
    ["pg1", "pg2", "pg3"].into_iter().find(|n| addr_of(n) == addr).map(str::to_owned).unwrap_or_else(|| addr.to_owned())
}

impl Drill {
    fn new() -> Result<Self> {
        let lb1 = host("lb1")?;
        let dir = PathBuf::from(STATE_DIR).join("drill");
        fs::create_dir_all(&dir)?;
        Ok(Drill { pglb: lb::stable_binary(), client: client_binary()?, config: lb::config_path(lb1), dir })
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

    /// Standbys streaming from `primary`, by application_name.
    fn streaming_from(&self, primary: &str) -> Vec<String> {
        self.sql(primary, "postgres", "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1")
            .map(|o| o.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn status(&self) -> Result<Vec<StatusRow>> {
        let out = sh::output(&mut sh::cmd(self.pglb.to_str().unwrap(), ["status", "--config", self.config.to_str().unwrap()]))?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('|').map(str::trim).collect();
                (f.len() == 9 && f[0].starts_with("pg")).then(|| StatusRow {
                    node: f[0].to_owned(),
                    state: f[3].to_owned(),
                    routed: f[7].to_owned(),
                })
            })
            .collect())
    }

    /// The node pglb routes writes to, if any.
    fn writer(&self) -> Option<String> {
        self.status().ok()?.into_iter().find(|r| r.routed.split(',').any(|p| p == WRITE_PORT.to_string())).map(|r| r.node)
    }

    fn pglb_cmd(&self, args: &[&str]) -> Result<String> {
        let mut c = sh::cmd(self.pglb.to_str().unwrap(), args);
        c.env("PGLB_LOG", "warn");
        sh::output(&mut c)
    }

    /// Creates the table the writer inserts into (once).
    fn prepare(&self) -> Result<()> {
        let primary = self.find_primary().context("no primary to create the drill table on")?;
        self.sql(&primary, "app", "CREATE TABLE IF NOT EXISTS drill_writes (run int NOT NULL, seq int NOT NULL,
              at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (run, seq));
              ALTER TABLE drill_writes OWNER TO app")?;
        Ok(())
    }

    fn find_primary(&self) -> Option<String> {
        let mut best: Option<(u32, String)> = None;
        for n in ["pg1", "pg2", "pg3"] {
            if let Some(v) = self.view(n)
                && !v.in_recovery
                && best.as_ref().is_none_or(|(t, _)| v.timeline > *t)
            {
                best = Some((v.timeline, n.to_owned()));
            }
        }
        best.map(|(_, n)| n)
    }

    fn next_run_id(&self) -> Result<i32> {
        let primary = self.find_primary().context("no primary")?;
        Ok(self.sql(&primary, "app", &format!("SELECT coalesce(max(run), 0) + 1 FROM drill_writes WHERE run BETWEEN 1 AND {}", SWITCHBACK_RUN - 1))?.parse()?)
    }

    fn healthy(&self) -> bool {
        let Some(v) = self.view(PRIMARY) else { return false };
        if v.in_recovery {
            return false;
        }
        if self.streaming_from(PRIMARY) != ["pg2", "pg3"] {
            return false;
        }
        let Ok(rows) = self.status() else { return false };
        rows.len() == 3
            && rows.iter().all(|r| {
                let want = if r.node == PRIMARY { WRITE_PORT.to_string() } else { READ_PORT.to_string() };
                r.state == "up" && r.routed == want
            })
    }

    /// Waits for a healthy cluster; repairs what a drill leaves behind (a stopped node, a
    /// fenced old primary, pg1 a standby).
    fn ensure_healthy(&self) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.stably_healthy() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(200));
        }
        println!("drill: the cluster is not healthy: repairing");
        for n in ["pg1", "pg2", "pg3"] {
            if self.view(n).is_none() {
                self.start_node(n)?;
            }
        }
        let primary = self.find_primary().context("no primary left to repair from")?;
        for n in ["pg1", "pg2", "pg3"] {
            if n == primary {
                continue;
            }
            match self.view(n) {
                Some(v) if v.in_recovery && v.receiver.contains(addr_of(&primary)) => {}
                _ => self.rejoin(n, &primary)?,
            }
        }
        if primary != PRIMARY {
            wait_for(Duration::from_secs(30), "pg1 to be routed as a reader before switching back", || {
                Ok(self.status()?.iter().any(|r| r.node == PRIMARY && r.routed == READ_PORT.to_string()))
            })?;
            self.pglb_cmd(&["switchover", "--to", PRIMARY, "--config", self.config.to_str().unwrap()])?;
        }
        wait_for(Duration::from_secs(60), "a healthy cluster (pg1 writer, pg2 and pg3 streaming readers)", || Ok(self.stably_healthy()))
    }

    /// Healthy, and still healthy 2 s later (right after a switch back, the standbys' timeline
    /// and lag settle for a moment).
    fn stably_healthy(&self) -> bool {
        if !self.healthy() {
            return false;
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            thread::sleep(Duration::from_millis(250));
            if !self.healthy() {
                return false;
            }
        }
        true
    }

    fn start_node(&self, node: &str) -> Result<()> {
        lab::postgres::start(host(node)?)
    }

    /// `pglb node rejoin` on `node` against `primary`, run inside the node's namespace.
    fn rejoin(&self, node: &str, primary: &str) -> Result<()> {
        let h = host(node)?;
        let data = h.dir().join("data");
        let pass = h.dir().join("pgpass");
        let mut c = ns_cmd(&h.ns(), self.pglb.to_str().unwrap(), [
            "node", "rejoin", "--primary", addr_of(primary), "--name", node, "--data-dir", data.to_str().unwrap(),
            "--passfile", pass.to_str().unwrap(), "--pg-bin", PG_BIN,
        ]);
        c.env("PGLB_LOG", "warn");
        sh::run(&mut c).with_context(|| format!("pglb node rejoin of {node} onto {primary}"))
    }

    fn spawn_client(&self, mode: &str, port: u16, run: i32) -> Result<(Child, PathBuf)> {
        let out = self.dir.join(format!("run-{run}-{mode}.log"));
        let _ = fs::remove_file(&out);
        let client = host("client")?;
        let pw = secret_path("app");
        let child = ns_cmd(&client.ns(), self.client.to_str().unwrap(), [
            mode, VIP, &port.to_string(), pw.to_str().unwrap(), &run.to_string(), out.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting the drill {mode} client"))?;
        Ok((child, out))
    }

    fn pg1_pids(&self) -> Result<Vec<i32>> {
        lab::net::namespace_pids(&host(PRIMARY)?.ns())
    }

    fn postmaster_pid(&self, node: &str) -> Result<i32> {
        let path = host(node)?.dir().join("data/postmaster.pid");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(text.lines().next().unwrap_or("").trim().parse()?)
    }

    fn run_one(&self, scenario: &str, run: i32) -> Result<RunResult> {
        let log_path = lb::log_path(host("lb1")?);
        let log_start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let (mut writer, wlog) = self.spawn_client("write", WRITE_PORT, run)?;
        let (mut reader, rlog) = self.spawn_client("read", READ_PORT, run)?;
        let stop = |w: &mut Child, r: &mut Child| {
            let _ = w.kill();
            let _ = r.kill();
            let _ = w.wait();
            let _ = r.wait();
        };
        thread::sleep(WARMUP);
        let outcome = self.inject(scenario, &wlog);
        thread::sleep(COOLDOWN);
        stop(&mut writer, &mut reader);
        let (fault_at, switchover_output) = outcome?;

        let writes = read_client_log(&wlog)?;
        let reads = read_client_log(&rlog)?;
        let winner = self.writer().or_else(|| self.find_primary()).context("no writer after the run")?;
        let failover = winner != PRIMARY;

        let on_winner: BTreeSet<i32> = self
            .sql(&winner, "app", &format!("SELECT seq FROM drill_writes WHERE run = {run}"))?
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        let acked: Vec<&Line> = writes.iter().filter(|l| l.ok).collect();
        let lost: Vec<i32> = acked.iter().filter(|l| !on_winner.contains(&l.seq)).map(|l| l.seq).collect();
        let winner_tl = self.view(&winner).map(|v| v.timeline);
        let split_brain = acked
            .iter()
            .filter(|l| !on_winner.contains(&l.seq) && l.node != addr_of(&winner))
            .filter(|l| {
                let n = node_of_addr(&l.node);
                self.view(&n).is_none_or(|v| Some(v.timeline) != winner_tl || !v.in_recovery)
            })
            .count();

        let mut r = RunResult {
            scenario: scenario.to_owned(),
            run,
            write_rto_ms: write_rto(&writes, fault_at),
            read_rto_ms: read_rto(&reads, fault_at),
            max_write_gap_ms: max_gap(&writes, fault_at),
            acked_writes: acked.len(),
            acked_lost: lost.len(),
            split_brain_writes: split_brain,
            winner: winner.clone(),
            failover,
            fenced_ok: None,
            standbys_follow: None,
            switchover_output,
            switchback_output: None,
            switchback_acked: None,
            switchback_lost: None,
            decisions: Vec::new(),
        };
        if !lost.is_empty() {
            println!("drill: LOST acknowledged writes (run {run}): {lost:?}");
        }

        // Return to healthy, checking the failover's promises on the way.
        match scenario {
            "primary-crash" | "primary-hang" | "primary-host-down" if failover => {
                let other = ["pg2", "pg3"].into_iter().find(|n| *n != winner).expect("two standbys");
                wait_for(Duration::from_secs(20), &format!("{other} to stream from {winner}"), || {
                    Ok(self.streaming_from(&winner).iter().any(|n| n == other))
                })?;
                r.standbys_follow = Some(true);
                if self.view(PRIMARY).is_none() {
                    self.start_node(PRIMARY)?;
                }
                r.fenced_ok = Some(self.old_primary_fenced(run)?);
                self.rejoin(PRIMARY, &winner)?;
                wait_for(Duration::from_secs(30), "pg1 to stream from the new primary and be routed as a reader", || {
                    Ok(self.streaming_from(&winner).iter().any(|n| n == PRIMARY)
                        && self.status()?.iter().any(|s| s.node == PRIMARY && s.routed == READ_PORT.to_string()))
                })?;
                self.switch_back_under_load(run, &mut r)?;
            }
            "standby-crash" => {
                self.start_node("pg3")?;
            }
            "switchover" if failover => self.switch_back_under_load(run, &mut r)?,
            _ => {}
        }
        r.decisions = decision_lines(&log_path, log_start);
        Ok(r)
    }

    /// `pglb switchover --to pg1` with the writer running (its rows under run id
    /// `SWITCHBACK_RUN + run`); records the command's output and the acknowledged writes pg1
    /// lacks afterwards.
    fn switch_back_under_load(&self, run: i32, r: &mut RunResult) -> Result<()> {
        let id = SWITCHBACK_RUN + run;
        let (mut w, log) = self.spawn_client("write", WRITE_PORT, id)?;
        thread::sleep(Duration::from_millis(500));
        let out = self.pglb_cmd(&["switchover", "--to", PRIMARY, "--config", self.config.to_str().unwrap()]);
        thread::sleep(Duration::from_millis(1000));
        let _ = w.kill();
        let _ = w.wait();
        r.switchback_output = Some(out?.trim().to_owned());
        let on_pg1: BTreeSet<i32> = self
            .sql(PRIMARY, "app", &format!("SELECT seq FROM drill_writes WHERE run = {id}"))?
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        let acked: Vec<i32> = read_client_log(&log)?.iter().filter(|l| l.ok).map(|l| l.seq).collect();
        let lost: Vec<i32> = acked.iter().copied().filter(|s| !on_pg1.contains(s)).collect();
        if !lost.is_empty() {
            println!("drill: LOST acknowledged writes during the switch back (run id {id}): {lost:?}");
        }
        r.switchback_acked = Some(acked.len());
        r.switchback_lost = Some(lost.len());
        Ok(())
    }

    /// The returning old primary: `needs-rejoin` and no routed port (waits up to 15 s), then no
    /// new flow to it while a client keeps connecting through both ports for 2 s. (Flows to it
    /// from before the fault may linger in the table until swept; they get RSTs, not traffic.)
    fn old_primary_fenced(&self, run: i32) -> Result<bool> {
        let fenced = wait_for(Duration::from_secs(15), "pg1 reported needs-rejoin", || {
            Ok(self.status()?.iter().any(|s| s.node == PRIMARY && s.state == "needs-rejoin" && s.routed == "-"))
        });
        if fenced.is_err() {
            println!("drill: pg1 not reported needs-rejoin and unrouted: {:?}", self.status());
            return Ok(false);
        }
        let before = self.new_flows(PRIMARY)?;
        let (mut w, _) = self.spawn_client("write", WRITE_PORT, -run)?;
        let (mut r, _) = self.spawn_client("read", READ_PORT, -run)?;
        thread::sleep(Duration::from_secs(2));
        for c in [&mut w, &mut r] {
            let _ = c.kill();
            let _ = c.wait();
        }
        let after = self.new_flows(PRIMARY)?;
        if after != before {
            println!("drill: {} new flows reached the fenced pg1", after - before);
        }
        Ok(after == before)
    }

    /// The `new flows` counter of a backend in `pglb map dump`.
    fn new_flows(&self, node: &str) -> Result<u64> {
        let dump = self.pglb_cmd(&["map", "dump", "--config", self.config.to_str().unwrap()])?;
        let addr = format!(" {}:", addr_of(node));
        let line = dump.lines().find(|l| l.contains(&addr) && l.contains("new flows")).context("no backend line in pglb map dump")?;
        let n = line.split(',').find(|f| f.contains("new flows")).and_then(|f| f.split_whitespace().next()).and_then(|n| n.parse().ok());
        n.with_context(|| format!("no new-flows count in {line:?}"))
    }

    /// Injects the fault; returns its time (µs since the epoch) once the scenario's outcome is
    /// reached (failover done, or the hold time over), and the switchover's output if any.
    fn inject(&self, scenario: &str, wlog: &Path) -> Result<(u128, Option<String>)> {
        let pg1 = host(PRIMARY)?;
        let ns = pg1.ns();
        match scenario {
            "primary-crash" => {
                let pid = self.postmaster_pid(PRIMARY)?;
                let at = now_us();
                // SAFETY: kill has no memory preconditions; pid is pg1's postmaster.
                if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
                    bail!("kill -9 {pid}: {}", std::io::Error::last_os_error());
                }
                self.wait_failover(at, wlog)?;
                Ok((at, None))
            }
            "primary-hang" => {
                let pids = self.pg1_pids()?;
                let at = now_us();
                signal_all(&pids, libc::SIGSTOP);
                let waited = self.wait_failover(at, wlog);
                signal_all(&pids, libc::SIGCONT);
                waited?;
                Ok((at, None))
            }
            "primary-host-down" => {
                let at = now_us();
                sh::run(&mut sh::cmd("ip", ["-n", &ns, "link", "set", "eth0", "down"]))?;
                let waited = self.wait_failover(at, wlog);
                sh::run(&mut sh::cmd("ip", ["-n", &ns, "link", "set", "eth0", "up"]))?;
                waited?;
                Ok((at, None))
            }
            "primary-isolated" | "primary-isolated-standbys" => {
                let peers: &[&str] = if scenario == "primary-isolated" { &["lb1", "lb2"] } else { &["pg2", "pg3"] };
                let at = now_us();
                for p in peers {
                    sh::run(&mut sh::cmd("ip", ["-n", &ns, "route", "add", "blackhole", &format!("{}/32", addr_of_host(p)?)]))?;
                }
                thread::sleep(HOLD);
                for p in peers {
                    let _ = sh::run(&mut sh::cmd("ip", ["-n", &ns, "route", "del", "blackhole", &format!("{}/32", addr_of_host(p)?)]));
                }
                // Writes must flow again before the measurement window closes.
                wait_for(RECOVERY_LIMIT, "writes to be acknowledged again after the cut", || {
                    Ok(read_client_log(wlog)?.iter().any(|l| l.ok && l.sent_us > now_us().saturating_sub(500_000)))
                })?;
                Ok((at, None))
            }
            "standby-crash" => {
                let pid = self.postmaster_pid("pg3")?;
                let at = now_us();
                // SAFETY: as above; pid is pg3's postmaster.
                if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
                    bail!("kill -9 {pid}: {}", std::io::Error::last_os_error());
                }
                wait_for(Duration::from_secs(15), "pg3 to be taken out of the readers", || {
                    Ok(self.status()?.iter().any(|s| s.node == "pg3" && s.routed == "-"))
                })?;
                thread::sleep(Duration::from_secs(1));
                Ok((at, None))
            }
            "switchover" => {
                let at = now_us();
                let out = self.pglb_cmd(&["switchover", "--to", "pg2", "--config", self.config.to_str().unwrap()])?;
                Ok((at, Some(out.trim().to_owned())))
            }
            other => bail!("scenario `{other}` has no fault injection"),
        }
    }

    /// Waits until pglb routes writes to a node other than pg1 and a write sent after the fault
    /// was acknowledged.
    fn wait_failover(&self, at: u128, wlog: &Path) -> Result<()> {
        wait_for(RECOVERY_LIMIT, "a failover: writes acknowledged by a new primary", || {
            Ok(read_client_log(wlog)?.iter().any(|l| l.ok && l.sent_us > at && l.node != addr_of(PRIMARY)))
        })
    }
}

fn addr_of_host(name: &str) -> Result<&'static str> {
    Ok(host(name)?.addr)
}

fn signal_all(pids: &[i32], sig: libc::c_int) {
    for pid in pids {
        // SAFETY: kill has no memory preconditions; these are the pg1 namespace's processes.
        unsafe {
            libc::kill(*pid, sig);
        }
    }
}

/// The drill client: next to this xtask binary (built with it by `cargo xtask test`), else
/// built now.
fn client_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PGLB_DRILL_CLIENT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let beside = exe.parent().context("xtask has a folder")?.join("drill_client");
    if beside.exists() {
        return Ok(beside);
    }
    let mut build = sh::cmd("cargo", ["build", "-q", "-p", "pglb-tests", "--bin", "drill_client"]);
    build.current_dir(lb::workspace());
    sh::run_inherit(&mut build).context("building the drill client")?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| lb::workspace().join("target"));
    Ok(target.join("debug/drill_client"))
}

/// One line of a client log.
#[derive(Debug, Clone)]
struct Line {
    ok: bool,
    seq: i32,
    sent_us: u128,
    at_us: u128,
    node: String,
}

fn read_client_log(path: &Path) -> Result<Vec<Line>> {
    let text = fs::read_to_string(path).unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(5, ' ');
            let ok = match f.next()? {
                "ok" => true,
                "err" => false,
                _ => return None,
            };
            Some(Line {
                ok,
                seq: f.next()?.parse().ok()?,
                sent_us: f.next()?.parse().ok()?,
                at_us: f.next()?.parse().ok()?,
                node: f.next().unwrap_or("").to_owned(),
            })
        })
        .collect())
}

fn ms(us: u128) -> f64 {
    us as f64 / 1000.0
}

/// Fault → the first success sent after the last failure that followed the fault (or after the
/// fault itself when nothing failed). Counting only requests sent after the last failure
/// matters: a SIGKILLed postmaster's backends live on for a moment and still acknowledge
/// (replicated) commits, which is not recovery.
fn recovery_ms(lines: &[Line], fault: u128) -> Option<f64> {
    let last_err = lines.iter().filter(|l| !l.ok && l.sent_us >= fault).map(|l| l.sent_us).max().unwrap_or(fault);
    lines.iter().find(|l| l.ok && l.sent_us > last_err).map(|l| ms(l.at_us - fault))
}

fn write_rto(lines: &[Line], fault: u128) -> Option<f64> {
    recovery_ms(lines, fault)
}

fn read_rto(lines: &[Line], fault: u128) -> Option<f64> {
    recovery_ms(lines, fault)
}

fn max_gap(lines: &[Line], fault: u128) -> f64 {
    let acks: Vec<u128> = lines.iter().filter(|l| l.ok && l.at_us + 1_000_000 >= fault).map(|l| l.at_us).collect();
    acks.windows(2).map(|w| ms(w[1] - w[0])).fold(0.0, f64::max)
}

/// pglb's decision lines on lb1 since `start`: routing, failover, fencing, alerts, switchover.
fn decision_lines(path: &Path, start: u64) -> Vec<String> {
    let text = fs::read(path).unwrap_or_default();
    let new = String::from_utf8_lossy(text.get(start as usize..).unwrap_or_default()).into_owned();
    let keys = ["route:", "failover", "promot", "fence", "alert", "switchover", "demote", "re-point", "blocked", "writer", "does not answer"];
    new.lines()
        .filter(|l| keys.iter().any(|k| l.contains(k)))
        .map(|l| l.chars().take(300).collect())
        .take(40)
        .collect()
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

fn print_run(r: &RunResult) {
    println!(
        "  write RTO {} ms | read RTO {} ms | max write gap {:.0} ms | acked {} | lost {} | split-brain {} | winner {}{}",
        opt_ms(r.write_rto_ms),
        opt_ms(r.read_rto_ms),
        r.max_write_gap_ms,
        r.acked_writes,
        r.acked_lost,
        r.split_brain_writes,
        r.winner,
        r.fenced_ok.map(|f| format!(" | old primary fenced: {f}")).unwrap_or_default()
    );
    for o in [&r.switchover_output, &r.switchback_output].into_iter().flatten() {
        println!("  pglb switchover: {o}");
    }
    if let (Some(a), Some(l)) = (r.switchback_acked, r.switchback_lost) {
        println!("  switch back to pg1 under load: acked {a} | lost {l}");
    }
    for d in &r.decisions {
        println!("    {d}");
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

/// The summary table, one row per scenario (Markdown, pasted into docs/DRILLS.md).
pub fn summarise(results: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n| scenario | runs | write RTO median / max (ms) | read RTO median / max (ms) | max write gap median / max (ms) | acked writes | lost | split-brain | winners |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let mut names: Vec<&str> = results.iter().map(|r| r.scenario.as_str()).collect();
    names.dedup();
    for s in names {
        let rs: Vec<&RunResult> = results.iter().filter(|r| r.scenario == s).collect();
        let w: Vec<f64> = rs.iter().filter_map(|r| r.write_rto_ms).collect();
        let rd: Vec<f64> = rs.iter().filter_map(|r| r.read_rto_ms).collect();
        let g: Vec<f64> = rs.iter().map(|r| r.max_write_gap_ms).collect();
        let mut winners: Vec<String> = rs.iter().map(|r| r.winner.clone()).collect();
        winners.sort();
        let _ = writeln!(
            out,
            "| {s} | {} | {} / {} | {} / {} | {} / {} | {} | {} | {} | {} |",
            rs.len(),
            opt_ms(median(w.clone())),
            opt_ms(max(&w)),
            opt_ms(median(rd.clone())),
            opt_ms(max(&rd)),
            opt_ms(median(g.clone())),
            opt_ms(max(&g)),
            rs.iter().map(|r| r.acked_writes).sum::<usize>(),
            rs.iter().map(|r| r.acked_lost).sum::<usize>(),
            rs.iter().map(|r| r.split_brain_writes).sum::<usize>(),
            winners.join(" ")
        );
    }
    out
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_opt_f(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "null".into())
}

fn json_opt_b(v: Option<bool>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "null".into())
}

fn json_opt_s(v: &Option<String>) -> String {
    v.as_deref().map(json_str).unwrap_or_else(|| "null".into())
}

/// The results as JSON: `{"runs": [...]}`, one object per run.
pub fn to_json(results: &[RunResult]) -> String {
    let runs: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{{\"scenario\":{},\"run\":{},\"write_rto_ms\":{},\"read_rto_ms\":{},\"max_write_gap_ms\":{:.1},\"acked_writes\":{},\"acked_lost\":{},\"split_brain_writes\":{},\"winner\":{},\"failover\":{},\"fenced_ok\":{},\"standbys_follow\":{},\"switchover_output\":{},\"switchback_output\":{},\"switchback_acked\":{},\"switchback_lost\":{},\"decisions\":[{}]}}",
                json_str(&r.scenario),
                r.run,
                json_opt_f(r.write_rto_ms),
                json_opt_f(r.read_rto_ms),
                r.max_write_gap_ms,
                r.acked_writes,
                r.acked_lost,
                r.split_brain_writes,
                json_str(&r.winner),
                r.failover,
                json_opt_b(r.fenced_ok),
                json_opt_b(r.standbys_follow),
                json_opt_s(&r.switchover_output),
                json_opt_s(&r.switchback_output),
                r.switchback_acked.map(|v| v.to_string()).unwrap_or_else(|| "null".into()),
                r.switchback_lost.map(|v| v.to_string()).unwrap_or_else(|| "null".into()),
                r.decisions.iter().map(|d| json_str(d)).collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    format!("{{\"runs\":[\n{}\n]}}\n", runs.join(",\n"))
}
