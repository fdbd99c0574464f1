//! `cargo xtask bench [--json FILE]`: pgbench direct to the primary, through pglb's VIP and
//! through HAProxy, alternated over rounds, with the CPU time each run cost the machine; plus
//! the XDP ns/packet figures of the `xdp_cost` example.
//!
//! Every run is `pgbench -c 8 -j 2 -T SECONDS` from pgha-client. The order of the targets
//! rotates each round so that no target always runs first or last. CPU: the lab is one kernel,
//! so the load balancer's cost is read as the machine's busy time per transaction (user,
//! system and softirq from /proc/stat — pglb's XDP program runs in softirq) next to the same
//! figure for the direct runs, plus the CPU time of the load balancer's own processes (haproxy,
//! or pglb's control plane) from /proc/PID/stat.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    lab::{
        self, LabState,
        lb::workspace,
        net::{namespace_pids, ns_cmd},
        postgres::wait_for,
        topology::{APP_DB, APP_USER, STATE_DIR, VIP, client_pgpass, host},
    },
    setup::PG_BIN,
    sh,
};

/// Rounds over which the targets alternate.
const ROUNDS: usize = 3;
/// The most of one CPU pglb's control plane may use during a run before the bench refuses to
/// report it (the daemon idles under 2 %; the data plane runs in the kernel, not in it).
const LB_PROCESS_CPU_LIMIT_PCT: f64 = 2.0;
/// pgbench clients and threads.
const CLIENTS: &str = "8";
const THREADS: &str = "2";
/// pgbench scale of the benchmark tables.
const SCALE: &str = "10";
/// HAProxy's listener (tcp mode, one backend: pg1).
const HAPROXY_ADDR: &str = "172.20.0.20";
const HAPROXY_PORT: &str = "3000";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    Pglb,
    Haproxy,
}

impl Target {
    const ALL: [Target; 3] = [Target::Direct, Target::Pglb, Target::Haproxy];

    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct pg1",
            Target::Pglb => "pglb VIP:3000",
            Target::Haproxy => "haproxy",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Pglb => "pglb",
            Target::Haproxy => "haproxy",
        }
    }

    fn addr(self) -> (&'static str, &'static str) {
        match self {
            Target::Direct => ("172.20.0.10", "5432"),
            Target::Pglb => (VIP, "3000"),
            Target::Haproxy => (HAPROXY_ADDR, HAPROXY_PORT),
        }
    }

    fn is_pglb(self) -> bool {
        self == Target::Pglb
    }

    /// The namespace whose processes are the load balancer (none for direct).
    fn lb_namespace(self) -> Option<&'static str> {
        match self {
            Target::Direct => None,
            Target::Pglb => Some("pgha-lb1"),
            Target::Haproxy => Some("pgha-haproxy"),
        }
    }
}

#[derive(Clone, Copy)]
struct Workload {
    key: &'static str,
    name: &'static str,
    args: &'static [&'static str],
}

const WORKLOADS: [Workload; 3] = [
    Workload { key: "select_only", name: "select-only, persistent", args: &["-S"] },
    Workload { key: "select_only_connect", name: "select-only, -C (connect per tx)", args: &["-S", "-C"] },
    Workload { key: "tpcb_like", name: "tpcb-like", args: &["-b", "tpcb-like"] },
];

/// One pgbench run and the CPU it cost.
#[derive(Clone, Copy)]
struct Run {
    tps: f64,
    transactions: u64,
    failed: u64,
    /// Machine-wide CPU seconds during the run, from /proc/stat.
    user_s: f64,
    system_s: f64,
    softirq_s: f64,
    /// CPU seconds of the load balancer's processes (haproxy, or pglb's control plane).
    lb_process_s: f64,
}

impl Run {
    fn busy_us_per_tx(&self) -> f64 {
        (self.user_s + self.system_s + self.softirq_s) * 1e6 / self.transactions.max(1) as f64
    }
}

pub fn bench(json: Option<&Path>) -> Result<()> {
    sh::require_root("bench")?;
    let seconds: u64 = match std::env::var("PGLB_BENCH_SECONDS") {
        Ok(s) => s.parse().with_context(|| format!("PGLB_BENCH_SECONDS={s} is not a whole number of seconds"))?,
        Err(_) => 10,
    };
    match lab::state()? {
        LabState::Up => println!("bench: using the running lab"),
        _ => {
            println!("bench: the lab is not up: bringing it up");
            lab::up(false, false)?;
        }
    }
    println!("bench: XDP per-packet cost (cargo run --release -p lb-user --example xdp_cost)");
    let xdp = xdp_cost()?;
    println!("{xdp}");
    init_tables()?;
    let haproxy = Haproxy::start()?;
    let started = Instant::now();
    let mut results: Vec<(Workload, Target, Vec<Run>)> =
        WORKLOADS.iter().flat_map(|w| Target::ALL.iter().map(move |t| (*w, *t, Vec::new()))).collect();
    for round in 0..ROUNDS {
        for (wi, w) in WORKLOADS.iter().enumerate() {
            for k in 0..Target::ALL.len() {
                let target = Target::ALL[(k + round) % Target::ALL.len()];
                let run = pgbench(target, w, seconds)
                    .with_context(|| format!("pgbench {} against {} (round {})", w.name, target.name(), round + 1))?;
                println!(
                    "bench: round {}/{ROUNDS} {:<34} {:<14} {:>9.0} tps, {} failed, {:.1} µs CPU/tx, lb process {:.2} s",
                    round + 1,
                    w.name,
                    target.name(),
                    run.tps,
                    run.failed,
                    run.busy_us_per_tx(),
                    run.lb_process_s
                );
                // The control plane must idle under load as it does without: a busy loop steals
                // the CPU that PostgreSQL and pgbench are measured with.
                let lb_pct = run.lb_process_s * 100.0 / seconds as f64;
                if target.is_pglb() && lb_pct > LB_PROCESS_CPU_LIMIT_PCT {
                    bail!(
                        "pglb's control plane used {lb_pct:.1}% of a CPU during the {} run against {} (limit {LB_PROCESS_CPU_LIMIT_PCT}%): a busy loop? Not reporting these numbers; see /run/pglb-lab/lb1/pglb.log",
                        w.name,
                        target.name()
                    );
                }
                let slot = wi * Target::ALL.len() + Target::ALL.iter().position(|t| *t == target).unwrap_or(0);
                results[slot].2.push(run);
            }
        }
    }
    drop(haproxy);
    println!("bench: {} runs in {:.0} s\n", results.iter().map(|r| r.2.len()).sum::<usize>(), started.elapsed().as_secs_f64());
    let table = render_table(&results, seconds);
    println!("{table}");
    if let Some(path) = json {
        fs::write(path, render_json(&results, seconds, &xdp)).with_context(|| format!("writing {}", path.display()))?;
        println!("bench: results written to {}", path.display());
    }
    Ok(())
}

/// Runs the `xdp_cost` example and keeps its table lines.
fn xdp_cost() -> Result<String> {
    let mut cmd = sh::cmd("cargo", ["run", "--release", "-q", "-p", "lb-user", "--example", "xdp_cost"]);
    cmd.current_dir(workspace());
    let out = sh::output(&mut cmd).context("measuring the XDP per-packet cost")?;
    Ok(out.lines().filter(|l| l.starts_with('|') || l.starts_with("XDP")).collect::<Vec<_>>().join("\n"))
}

fn client_cmd(program: &str, args: &[&str]) -> Command {
    let mut c = ns_cmd(&host("client").map(|h| h.ns()).unwrap_or_else(|_| "pgha-client".into()), program, args);
    c.env("PGPASSFILE", client_pgpass()).env("PGCONNECT_TIMEOUT", "5");
    c
}

/// Creates the pgbench tables on pg1 (scale [`SCALE`]) and waits for both standbys to have them.
fn init_tables() -> Result<()> {
    println!("bench: pgbench -i -s {SCALE} on pg1");
    let pgbench = format!("{PG_BIN}/pgbench");
    sh::run(&mut client_cmd(&pgbench, &["-h", "172.20.0.10", "-p", "5432", "-U", APP_USER, "-i", "-s", SCALE, "-q", APP_DB]))
        .context("initialising the pgbench tables on pg1")?;
    let psql = format!("{PG_BIN}/psql");
    wait_for(Duration::from_secs(60), "the pgbench tables to reach the standbys", || {
        for addr in ["172.20.0.11", "172.20.0.12"] {
            let out = sh::capture(&mut client_cmd(&psql, &["-X", "-h", addr, "-U", APP_USER, "-d", APP_DB, "-Atc", "SELECT count(*) FROM pgbench_branches"]))?;
            if String::from_utf8_lossy(&out.stdout).trim() != SCALE {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

/// HAProxy in pgha-haproxy with config/haproxy-lab.cfg, stopped when dropped.
struct Haproxy {
    pid_file: String,
}

impl Haproxy {
    fn start() -> Result<Haproxy> {
        let config = workspace().join("config/haproxy-lab.cfg");
        let dir = format!("{STATE_DIR}/haproxy");
        fs::create_dir_all(&dir)?;
        let pid_file = format!("{dir}/haproxy.pid");
        let cfg = config.to_string_lossy().into_owned();
        sh::run(&mut ns_cmd("pgha-haproxy", "haproxy", ["-c", "-q", "-f", &cfg])).context("checking config/haproxy-lab.cfg")?;
        sh::run(&mut ns_cmd("pgha-haproxy", "haproxy", ["-D", "-f", &cfg, "-p", &pid_file]))
            .context("starting haproxy in pgha-haproxy (installed by `cargo xtask setup`)")?;
        let haproxy = Haproxy { pid_file };
        println!("bench: haproxy started in pgha-haproxy ({HAPROXY_ADDR}:{HAPROXY_PORT} -> pg1, option pgsql-check)");
        let psql = format!("{PG_BIN}/psql");
        wait_for(Duration::from_secs(20), "haproxy to pass a query to pg1", || {
            let out = sh::capture(&mut client_cmd(&psql, &[
                "-X", "-h", HAPROXY_ADDR, "-p", HAPROXY_PORT, "-U", APP_USER, "-d", APP_DB, "-Atc", "SELECT 1",
            ]))?;
            Ok(out.status.success())
        })?;
        Ok(haproxy)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let pids = fs::read_to_string(&self.pid_file).unwrap_or_default();
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: kill(2) with a pid haproxy wrote; at worst the process is gone.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = wait_for(Duration::from_secs(5), "haproxy to stop", || {
            Ok(namespace_pids("pgha-haproxy").unwrap_or_default().is_empty())
        });
        let _ = fs::remove_file(&self.pid_file);
        println!("bench: haproxy stopped");
    }
}

/// Machine-wide CPU jiffies from the first line of /proc/stat: (user+nice, system, softirq).
fn proc_stat() -> Result<(u64, u64, u64)> {
    let text = fs::read_to_string("/proc/stat")?;
    let first = text.lines().next().unwrap_or_default();
    let f: Vec<u64> = first.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    if f.len() < 7 {
        bail!("unexpected /proc/stat: {first}");
    }
    Ok((f[0] + f[1], f[2], f[6]))
}

/// utime + stime jiffies of every process in a namespace.
fn namespace_cpu(ns: Option<&str>) -> u64 {
    let Some(ns) = ns else { return 0 };
    namespace_pids(ns)
        .unwrap_or_default()
        .iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|s| {
            // Fields after the command name "(...)": state is field 3, utime 14, stime 15.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn pgbench(target: Target, w: &Workload, seconds: u64) -> Result<Run> {
    let (addr, port) = target.addr();
    let secs = seconds.to_string();
    let mut args = vec!["-h", addr, "-p", port, "-U", APP_USER, "-c", CLIENTS, "-j", THREADS, "-T", &secs, "-n"];
    args.extend_from_slice(w.args);
    args.push(APP_DB);
    let pgbench = format!("{PG_BIN}/pgbench");
    let stat0 = proc_stat()?;
    let lb0 = namespace_cpu(target.lb_namespace());
    let out = sh::capture(&mut client_cmd(&pgbench, &args))?;
    let stat1 = proc_stat()?;
    let lb1 = namespace_cpu(target.lb_namespace());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("pgbench exited with {}:\n{text}", out.status);
    }
    let field = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix)).map(|r| r.trim().to_owned());
    let transactions = field("number of transactions actually processed:")
        .and_then(|s| s.split('/').next().and_then(|n| n.trim().parse().ok()))
        .with_context(|| format!("no transaction count in pgbench's output:\n{text}"))?;
    let failed = field("number of failed transactions:")
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let tps = field("tps =")
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .with_context(|| format!("no tps in pgbench's output:\n{text}"))?;
    let hz = clock_ticks();
    thread::sleep(Duration::from_millis(500)); // let connections close before the next run
    Ok(Run {
        tps,
        transactions,
        failed,
        user_s: (stat1.0 - stat0.0) as f64 / hz,
        system_s: (stat1.1 - stat0.1) as f64 / hz,
        softirq_s: (stat1.2 - stat0.2) as f64 / hz,
        lb_process_s: lb1.saturating_sub(lb0) as f64 / hz,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn summary(runs: &[Run]) -> (f64, f64, f64, f64, u64) {
    (
        median(runs.iter().map(|r| r.tps).collect()),
        median(runs.iter().map(Run::busy_us_per_tx).collect()),
        median(runs.iter().map(|r| r.softirq_s).collect()),
        median(runs.iter().map(|r| r.lb_process_s).collect()),
        runs.iter().map(|r| r.failed).sum(),
    )
}

fn render_table(results: &[(Workload, Target, Vec<Run>)], seconds: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "pgbench -c {CLIENTS} -j {THREADS} -T {seconds}, scale {SCALE}, {ROUNDS} rounds (medians)\n");
    let _ = writeln!(s, "| workload | target | tps (median) | ÷ direct | tps per round | failed | machine CPU µs/tx | softirq s/run | LB process CPU s/run |");
    let _ = writeln!(s, "|---|---|---:|---:|---|---:|---:|---:|---:|");
    for (w, t, runs) in results {
        let direct = results.iter().find(|(w2, t2, _)| w2.key == w.key && *t2 == Target::Direct).map(|r| summary(&r.2).0).unwrap_or(0.0);
        let (tps, us, softirq, lbp, failed) = summary(runs);
        let per_round: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.tps)).collect();
        let lb = if *t == Target::Direct { "–".to_owned() } else { format!("{lbp:.2}") };
        let _ = writeln!(
            s,
            "| {} | {} | {tps:.0} | {:.3} | {} | {failed} | {us:.1} | {softirq:.2} | {lb} |",
            w.name,
            t.name(),
            if direct > 0.0 { tps / direct } else { 0.0 },
            per_round.join(" / ")
        );
    }
    s
}

fn render_json(results: &[(Workload, Target, Vec<Run>)], seconds: u64, xdp: &str) -> String {
    let mut s = String::from("{\n");
    let _ = writeln!(s, "  \"clients\": {CLIENTS}, \"threads\": {THREADS}, \"seconds\": {seconds}, \"scale\": {SCALE}, \"rounds\": {ROUNDS},");
    let _ = writeln!(s, "  \"xdp_cost\": {:?},", xdp);
    s.push_str("  \"results\": [\n");
    let rows: Vec<String> = results
        .iter()
        .map(|(w, t, runs)| {
            let direct = results.iter().find(|(w2, t2, _)| w2.key == w.key && *t2 == Target::Direct).map(|r| summary(&r.2).0).unwrap_or(0.0);
            let (tps, us, softirq, lbp, failed) = summary(runs);
            let per: Vec<String> = runs
                .iter()
                .map(|r| {
                    format!(
                        "{{\"tps\": {:.1}, \"transactions\": {}, \"failed\": {}, \"user_s\": {:.2}, \"system_s\": {:.2}, \"softirq_s\": {:.2}, \"lb_process_s\": {:.2}}}",
                        r.tps, r.transactions, r.failed, r.user_s, r.system_s, r.softirq_s, r.lb_process_s
                    )
                })
                .collect();
            format!(
                "    {{\"workload\": \"{}\", \"target\": \"{}\", \"median_tps\": {tps:.1}, \"ratio_to_direct\": {:.4}, \"failed\": {failed}, \"median_cpu_us_per_tx\": {us:.2}, \"median_softirq_s\": {softirq:.2}, \"median_lb_process_s\": {lbp:.2}, \"runs\": [{}]}}",
                w.key,
                t.key(),
                if direct > 0.0 { tps / direct } else { 0.0 },
                per.join(", ")
            )
        })
        .collect();
    s.push_str(&rows.join(",\n"));
    s.push_str("\n  ]\n}\n");
    s
}
