//! `cargo xtask bench [--rounds N] [--json FILE]`: pgbench direct to the primary, routed to it
//! through lb1 as a plain kernel router, through pglb's VIP and through HAProxy, alternated over
//! rounds, with the CPU time each run cost the machine; plus the XDP ns/packet figures of the
//! `xdp_cost` example.
//!
//! Every run is `pgbench -c 8 -j 2 -T SECONDS` from pgha-client. The order of the targets
//! rotates each round so that no target always runs first or last.
//!
//! "Routed via lb1" is the physical limit of a one-arm load balancer in this lab: the client's
//! packets to pg1 and pg1's replies go through lb1's kernel (routes via 172.20.0.21 on
//! pgha-client and pgha-pg1, ICMP redirects off, forwarding on): the same two extra veth/bridge
//! passes as the VIP, and no load balancing at all. The routes exist only during that target's
//! runs; lb1's forwarded-datagram counter proves each run went through it.
//!
//! "agent" is the zero-hop path (docs/AGENT.md): pgbench runs in the client's cgroup with
//! `pglb agent` running, so its connects to VIP:3000 are rewritten to pg1 and its packets go
//! straight there. The bench starts the agent before the rounds and stops it after; lb1's
//! data-plane counters prove each agent run bypassed the VIP (and each VIP run used it).
//!
//! Throughput is paired by round: a target's tps in round N ÷ the direct (or routed) tps of
//! round N (same workload), because the machine's background load drifts between rounds more
//! than between the runs of one round. The table and the JSON give each round's ratio and their
//! median and range (min–max); a ratio of medians would pair runs from different rounds. Failed
//! transactions are pgbench's "number of failed transactions", per run and in total; a run
//! whose output lacks the line is an error, not a zero.
//!
//! CPU: the lab is one kernel, so the load balancer's cost is read as the machine's busy time
//! per transaction (user, system and softirq from /proc/stat — pglb's XDP program runs in
//! softirq) next to the same figure for the direct runs, plus the CPU time of the load
//! balancer's own processes (haproxy, or pglb's control plane) from /proc/PID/stat.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::{
    lab::{
        self, LabState,
        lb::workspace,
        net::{namespace_pids, ns_cmd},
        pgbench::{pgbench_counts, pgbench_field},
        pglb_json,
        postgres::wait_for,
        topology::{APP_DB, APP_USER, STATE_DIR, VIP, client_pgpass, host},
    },
    setup::PG_BIN,
    sh,
};

/// Rounds over which the targets alternate, unless `--rounds` says otherwise.
pub const DEFAULT_ROUNDS: usize = 5;
/// The most of one CPU pglb's control plane may use during a run before the bench refuses to
/// report it (the daemon idles under 2 %; the data plane runs in the kernel, not in it).
const LB_PROCESS_CPU_LIMIT_PCT: f64 = 2.0;
/// pgbench clients and threads.
const CLIENTS: u32 = 8;
const THREADS: u32 = 2;
/// pgbench scale of the benchmark tables.
const SCALE: u32 = 10;
/// HAProxy's listener (tcp mode, one backend: pg1).
const HAPROXY_ADDR: &str = "172.20.0.20";
const HAPROXY_PORT: &str = "3000";
/// The router of the routed-hop target: lb1, and the hosts whose routes go through it.
const ROUTER_NS: &str = "pgha-lb1";
const ROUTER_ADDR: &str = "172.20.0.21";
const CLIENT_ADDR: &str = "172.20.0.50";
const PG1_ADDR: &str = "172.20.0.10";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    /// pg1 through lb1's kernel as a plain router (see [`RoutedHop`]).
    Routed,
    Pglb,
    Haproxy,
    /// VIP:3000 from the client's cgroup, rewritten by `pglb agent` to pg1 at connect().
    Agent,
}

impl Target {
    const ALL: [Target; 5] = [Target::Direct, Target::Routed, Target::Pglb, Target::Haproxy, Target::Agent];

    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct pg1",
            Target::Routed => "routed via lb1",
            Target::Pglb => "pglb VIP:3000",
            Target::Haproxy => "haproxy",
            Target::Agent => "pglb agent (zero-hop)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Routed => "routed",
            Target::Pglb => "pglb",
            Target::Haproxy => "haproxy",
            Target::Agent => "agent",
        }
    }

    fn addr(self) -> (&'static str, &'static str) {
        match self {
            Target::Direct | Target::Routed => (PG1_ADDR, "5432"),
            Target::Pglb | Target::Agent => (VIP, "3000"),
            Target::Haproxy => (HAPROXY_ADDR, HAPROXY_PORT),
        }
    }

    fn is_pglb(self) -> bool {
        self == Target::Pglb
    }

    /// The namespace whose processes are the load balancer (none for direct).
    fn lb_namespace(self) -> Option<&'static str> {
        match self {
            // The router's work is the kernel's (softirq); pglb's process in lb1 does nothing for it.
            Target::Direct | Target::Routed | Target::Agent => None,
            Target::Pglb => Some("pgha-lb1"),
            Target::Haproxy => Some("pgha-haproxy"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
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
#[derive(Clone, Copy, Debug, Serialize)]
struct Run {
    /// The round it ran in, from 1.
    round: usize,
    tps: f64,
    transactions: u64,
    /// pgbench's "number of failed transactions".
    failed: u64,
    /// Machine-wide CPU seconds during the run, from /proc/stat.
    user_s: f64,
    system_s: f64,
    softirq_s: f64,
    /// CPU seconds of the load balancer's processes (haproxy, or pglb's control plane).
    lb_process_s: f64,
    /// Datagrams lb1's kernel forwarded during the run (`Ip: ForwDatagrams`).
    router_forwarded: u64,
}

impl Run {
    fn busy_us_per_tx(&self) -> f64 {
        (self.user_s + self.system_s + self.softirq_s) * 1e6 / self.transactions.max(1) as f64
    }
}

/// The runs of one workload against one target, in round order.
struct Series {
    workload: Workload,
    target: Target,
    runs: Vec<Run>,
}

/// The workloads `--workload` names (all when none is named); an unknown name is an error.
fn chosen_workloads(names: &[String]) -> Result<Vec<Workload>> {
    if names.is_empty() {
        return Ok(WORKLOADS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            WORKLOADS.iter().copied().find(|w| w.key == n.as_str()).with_context(|| {
                let known: Vec<&str> = WORKLOADS.iter().map(|w| w.key).collect();
                format!("unknown workload {n:?}: known are {}", known.join(", "))
            })
        })
        .collect()
}

pub fn bench(rounds: usize, workloads: &[String], json: Option<&Path>) -> Result<()> {
    sh::require_root("bench")?;
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let workloads = chosen_workloads(workloads)?;
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
    let agent = lab::agent::Running::start(&lab::lb::stable_binary())?;
    let started = Instant::now();
    let mut results: Vec<Series> = workloads
        .iter()
        .flat_map(|w| Target::ALL.iter().map(move |t| Series { workload: *w, target: *t, runs: Vec::new() }))
        .collect();
    for round in 1..=rounds {
        for w in &workloads {
            for k in 0..Target::ALL.len() {
                let target = Target::ALL[(k + round - 1) % Target::ALL.len()];
                let run = pgbench(target, w, seconds, round)
                    .with_context(|| format!("pgbench {} against {} (round {round})", w.name, target.name()))?;
                println!(
                    "bench: round {round}/{rounds} {:<34} {:<14} {:>9.0} tps, {} failed, {:.1} µs CPU/tx, lb process {:.2} s",
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
                results
                    .iter_mut()
                    .find(|s| s.workload.key == w.key && s.target == target)
                    .expect("a series for every workload and target")
                    .runs
                    .push(run);
            }
        }
    }
    drop(agent);
    drop(haproxy);
    println!("bench: {} runs in {:.0} s\n", results.iter().map(|r| r.runs.len()).sum::<usize>(), started.elapsed().as_secs_f64());
    let summaries = summarise(&results);
    println!("{}", render_table(&summaries, seconds, rounds));
    println!("{}", headline(&summaries));
    if let Some(path) = json {
        let doc = BenchJson { clients: CLIENTS, threads: THREADS, seconds, scale: SCALE, rounds, xdp_cost: &xdp, results: summaries };
        let text = serde_json::to_string_pretty(&doc).context("encoding the bench results as JSON")?;
        fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
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

/// [`client_cmd`] inside the client's cgroup, where `pglb agent` rewrites connects.
fn agent_client_cmd(program: &str, args: &[&str]) -> Command {
    let mut c = lab::agent::in_cgroup(&host("client").map(|h| h.ns()).unwrap_or_else(|_| "pgha-client".into()), program, args);
    c.env("PGPASSFILE", client_pgpass()).env("PGCONNECT_TIMEOUT", "5");
    c
}

/// Packets lb1's data plane rewrote and sent (the `tx_*` reasons of `pglb map dump --json`).
fn lb1_tx_packets() -> Result<u64> {
    let lb1 = host("lb1")?;
    let config = lab::lb::config_path(lb1);
    let mut c = sh::cmd(lab::lb::stable_binary().to_str().context("a UTF-8 path")?, ["map", "dump", "--json", "--config"]);
    c.arg(&config).env("PGLB_LOG", "warn");
    let text = sh::output(&mut c).context("pglb map dump --json on lb1")?;
    Ok(pglb_json::reasons(&text)?.iter().filter(|(k, _)| k.starts_with("tx_")).map(|(_, v)| v).sum())
}

/// Creates the pgbench tables on pg1 (scale [`SCALE`]) and waits for both standbys to have them.
fn init_tables() -> Result<()> {
    println!("bench: pgbench -i -s {SCALE} on pg1");
    let pgbench = format!("{PG_BIN}/pgbench");
    let scale = SCALE.to_string();
    sh::run(&mut client_cmd(&pgbench, &["-h", "172.20.0.10", "-p", "5432", "-U", APP_USER, "-i", "-s", &scale, "-q", APP_DB]))
        .context("initialising the pgbench tables on pg1")?;
    let psql = format!("{PG_BIN}/psql");
    wait_for(Duration::from_secs(60), "the pgbench tables to reach the standbys", || {
        for addr in ["172.20.0.11", "172.20.0.12"] {
            let out = sh::capture(&mut client_cmd(&psql, &["-X", "-h", addr, "-U", APP_USER, "-d", APP_DB, "-Atc", "SELECT count(*) FROM pgbench_branches"]))?;
            if String::from_utf8_lossy(&out.stdout).trim() != scale {
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

fn pgbench(target: Target, w: &Workload, seconds: u64, round: usize) -> Result<Run> {
    let (addr, port) = target.addr();
    let (clients, threads, secs) = (CLIENTS.to_string(), THREADS.to_string(), seconds.to_string());
    let mut args = vec!["-h", addr, "-p", port, "-U", APP_USER, "-c", &clients, "-j", &threads, "-T", &secs, "-n"];
    args.extend_from_slice(w.args);
    args.push(APP_DB);
    let pgbench = format!("{PG_BIN}/pgbench");
    let hop = if target == Target::Routed { Some(RoutedHop::install()?) } else { None };
    let forwarded0 = forwarded_datagrams(ROUTER_NS)?;
    let tx0 = lb1_tx_packets()?;
    let stat0 = proc_stat()?;
    let lb0 = namespace_cpu(target.lb_namespace());
    let mut cmd = if target == Target::Agent { agent_client_cmd(&pgbench, &args) } else { client_cmd(&pgbench, &args) };
    let out = sh::capture(&mut cmd)?;
    let stat1 = proc_stat()?;
    let lb1 = namespace_cpu(target.lb_namespace());
    let router_forwarded = forwarded_datagrams(ROUTER_NS)?.saturating_sub(forwarded0);
    let vip_tx = lb1_tx_packets()?.saturating_sub(tx0);
    drop(hop);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("pgbench exited with {}:\n{text}", out.status);
    }
    let (transactions, failed) = pgbench_counts(&text)?;
    // Each transaction is at least a query and its answer: both cross the router on the routed
    // hop, and neither does on any other target (the VIP's packets are rewritten by XDP, never
    // forwarded by lb1's kernel).
    match target {
        Target::Routed if router_forwarded < 2 * transactions => bail!(
            "the routed-hop run sent {transactions} transactions but lb1 forwarded only {router_forwarded} datagrams: the traffic did not go through lb1"
        ),
        Target::Direct | Target::Pglb | Target::Haproxy | Target::Agent if router_forwarded > transactions / 100 + 100 => bail!(
            "lb1's kernel forwarded {router_forwarded} datagrams during the {} run: a routed-hop route was left behind",
            target.name()
        ),
        _ => {}
    }
    // The VIP's runs go through lb1's data plane (a query and its answer at least); the agent's
    // must not: its connects were rewritten to pg1 before the SYN left.
    match target {
        Target::Pglb if vip_tx < 2 * transactions => {
            bail!("the VIP run sent {transactions} transactions but lb1's data plane sent only {vip_tx} packets")
        }
        Target::Agent if vip_tx > transactions / 10 => bail!(
            "the agent run sent {transactions} transactions and lb1's data plane sent {vip_tx} packets: the connects went through the VIP, not straight to pg1 (agent log: {})",
            lab::agent::log_path().display()
        ),
        _ => {}
    }
    let tps = pgbench_field(&text, "tps =")
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .with_context(|| format!("no tps in pgbench's output:\n{text}"))?;
    let hz = clock_ticks();
    thread::sleep(Duration::from_millis(500)); // let connections close before the next run
    Ok(Run {
        round,
        tps,
        transactions,
        failed,
        user_s: (stat1.0 - stat0.0) as f64 / hz,
        system_s: (stat1.1 - stat0.1) as f64 / hz,
        softirq_s: (stat1.2 - stat0.2) as f64 / hz,
        lb_process_s: lb1.saturating_sub(lb0) as f64 / hz,
        router_forwarded,
    })
}

/// lb1 as a plain router between pgha-client and pg1, for one run: host routes via lb1 on both
/// ends, IPv4 forwarding on and ICMP redirects off on lb1 (a redirect would tell the client to
/// go straight to pg1 and skip the hop). Dropping it puts every setting back.
struct RoutedHop {
    /// (namespace, sysctl key, value before).
    sysctls: Vec<(&'static str, String, String)>,
}

impl RoutedHop {
    /// Host routes this installs: (namespace, destination).
    const ROUTES: [(&'static str, &'static str); 2] = [("pgha-client", PG1_ADDR), ("pgha-pg1", CLIENT_ADDR)];

    fn install() -> Result<RoutedHop> {
        let mut hop = RoutedHop { sysctls: Vec::new() };
        for (ns, key, value) in [
            // Not net.ipv4.ip_forward: writing it rewrites every interface's forwarding flag, and
            // putting it back to 0 would turn off eth0's, which pglb's XDP program needs (its FIB
            // lookups answer "forwarding disabled" without it).
            (ROUTER_NS, "net.ipv4.conf.eth0.forwarding", "1"),
            (ROUTER_NS, "net.ipv4.conf.all.send_redirects", "0"),
            (ROUTER_NS, "net.ipv4.conf.eth0.send_redirects", "0"),
            ("pgha-client", "net.ipv4.conf.all.accept_redirects", "0"),
            ("pgha-pg1", "net.ipv4.conf.all.accept_redirects", "0"),
        ] {
            let before = sh::output(&mut sh::cmd("ip", ["netns", "exec", ns, "sysctl", "-n", key]))?.trim().to_owned();
            sh::run(&mut sh::cmd("ip", ["netns", "exec", ns, "sysctl", "-qw", &format!("{key}={value}")]))?;
            hop.sysctls.push((ns, key.to_owned(), before));
        }
        for (ns, dest) in Self::ROUTES {
            sh::run(&mut sh::cmd("ip", ["-n", ns, "route", "replace", &format!("{dest}/32"), "via", ROUTER_ADDR, "dev", "eth0"]))
                .with_context(|| format!("routing {dest} via lb1 in {ns}"))?;
            let via = sh::output(&mut sh::cmd("ip", ["-n", ns, "route", "get", dest]))?;
            if !via.contains(&format!("via {ROUTER_ADDR}")) {
                bail!("{ns}: the route to {dest} does not go via lb1: {via}");
            }
        }
        Ok(hop)
    }
}

impl Drop for RoutedHop {
    fn drop(&mut self) {
        for (ns, dest) in Self::ROUTES {
            if let Err(e) = sh::run(&mut sh::cmd("ip", ["-n", ns, "route", "del", &format!("{dest}/32"), "via", ROUTER_ADDR])) {
                eprintln!("bench: removing the routed-hop route to {dest} in {ns}: {e:#}");
            }
            // Forget any redirect a host learned (none should: redirects are off).
            let _ = sh::run(&mut sh::cmd("ip", ["-n", ns, "route", "flush", "cache"]));
        }
        for (ns, key, before) in self.sysctls.drain(..).rev() {
            if let Err(e) = sh::run(&mut sh::cmd("ip", ["netns", "exec", ns, "sysctl", "-qw", &format!("{key}={before}")])) {
                eprintln!("bench: restoring {key}={before} in {ns}: {e:#}");
            }
        }
    }
}

/// `Ip: ForwDatagrams` of a namespace's kernel (/proc/net/snmp as seen inside it).
fn forwarded_datagrams(ns: &str) -> Result<u64> {
    let snmp = sh::output(&mut sh::cmd("ip", ["netns", "exec", ns, "cat", "/proc/net/snmp"]))?;
    snmp_field(&snmp, "Ip:", "ForwDatagrams").with_context(|| format!("no Ip ForwDatagrams in {ns}'s /proc/net/snmp"))
}

/// A field of /proc/net/snmp: the header line and the value line share a prefix.
fn snmp_field(snmp: &str, prefix: &str, field: &str) -> Option<u64> {
    let mut lines = snmp.lines().filter(|l| l.starts_with(prefix));
    let header = lines.next()?;
    let values = lines.next()?;
    let i = header.split_whitespace().position(|h| h == field)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median and range of one figure over rounds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    /// `None` for no values.
    fn of(values: &[f64]) -> Option<Spread> {
        let min = values.iter().copied().reduce(f64::min)?;
        let max = values.iter().copied().reduce(f64::max)?;
        Some(Spread { median: median(values.to_vec()), min, max })
    }
}

/// Each round's `tps ÷ reference tps` of the same round, as (round, ratio) in the order of
/// `target`'s runs. A round without a reference run, or whose reference run did nothing, has no
/// ratio.
fn paired_ratios(target: &[Run], reference: &[Run]) -> Vec<(usize, f64)> {
    target
        .iter()
        .filter_map(|t| {
            let d = reference.iter().find(|d| d.round == t.round)?;
            (d.tps > 0.0).then(|| (t.round, t.tps / d.tps))
        })
        .collect()
}

/// What the table and the JSON report for one workload against one target.
#[derive(Debug, Serialize)]
struct Summary {
    workload: &'static str,
    #[serde(skip)]
    workload_name: &'static str,
    target: &'static str,
    #[serde(skip)]
    target_name: &'static str,
    #[serde(skip)]
    is_direct: bool,
    median_tps: f64,
    /// Each round's tps ÷ the direct tps of that round: median and range; `null` for direct.
    ratio_to_direct: Option<Spread>,
    /// Each round's tps ÷ the routed-hop tps of that round; `null` for direct and routed.
    ratio_to_routed: Option<Spread>,
    failed_total: u64,
    median_cpu_us_per_tx: f64,
    median_softirq_s: f64,
    median_lb_process_s: f64,
    runs: Vec<RoundResult>,
}

/// One run with its paired ratios.
#[derive(Debug, Serialize)]
struct RoundResult {
    #[serde(flatten)]
    run: Run,
    /// tps ÷ the direct tps of the same round; `null` for direct (or no direct run that round).
    ratio_to_direct: Option<f64>,
    /// tps ÷ the routed-hop tps of the same round; `null` for direct and routed.
    ratio_to_routed: Option<f64>,
}

/// Everything `--json` writes.
#[derive(Serialize)]
struct BenchJson<'a> {
    clients: u32,
    threads: u32,
    seconds: u64,
    scale: u32,
    rounds: usize,
    /// The table lines of the `xdp_cost` example.
    xdp_cost: &'a str,
    results: Vec<Summary>,
}

fn summarise(results: &[Series]) -> Vec<Summary> {
    results
        .iter()
        .map(|s| {
            let runs_of = |target: Target| {
                results
                    .iter()
                    .find(|d| d.workload.key == s.workload.key && d.target == target)
                    .map_or(&[][..], |d| &d.runs[..])
            };
            let to_direct = if s.target == Target::Direct { Vec::new() } else { paired_ratios(&s.runs, runs_of(Target::Direct)) };
            let to_routed = if matches!(s.target, Target::Direct | Target::Routed) {
                Vec::new()
            } else {
                paired_ratios(&s.runs, runs_of(Target::Routed))
            };
            let spread = |ratios: &[(usize, f64)]| Spread::of(&ratios.iter().map(|(_, r)| *r).collect::<Vec<_>>());
            let in_round = |ratios: &[(usize, f64)], round: usize| ratios.iter().find(|(n, _)| *n == round).map(|(_, v)| *v);
            let of = |f: fn(&Run) -> f64| median(s.runs.iter().map(f).collect());
            Summary {
                workload: s.workload.key,
                workload_name: s.workload.name,
                target: s.target.key(),
                target_name: s.target.name(),
                is_direct: s.target == Target::Direct,
                median_tps: of(|r| r.tps),
                ratio_to_direct: spread(&to_direct),
                ratio_to_routed: spread(&to_routed),
                failed_total: s.runs.iter().map(|r| r.failed).sum(),
                median_cpu_us_per_tx: of(Run::busy_us_per_tx),
                median_softirq_s: of(|r| r.softirq_s),
                median_lb_process_s: of(|r| r.lb_process_s),
                runs: s
                    .runs
                    .iter()
                    .map(|r| RoundResult {
                        run: *r,
                        ratio_to_direct: in_round(&to_direct, r.round),
                        ratio_to_routed: in_round(&to_routed, r.round),
                    })
                    .collect(),
            }
        })
        .collect()
}

fn render_table(summaries: &[Summary], seconds: u64, rounds: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "pgbench -c {CLIENTS} -j {THREADS} -T {seconds}, scale {SCALE}, {rounds} rounds; tps and CPU are medians over the rounds;");
    let _ = writeln!(
        s,
        "÷ direct and ÷ routed are each round's tps over the direct (routed-hop) tps of the same round, then their median (min–max)\n"
    );
    let _ = writeln!(
        s,
        "| workload | target | tps (median) | tps per round | ÷ direct per round | ÷ direct: median (min–max) | ÷ routed per round | ÷ routed: median (min–max) | failed per run (total) | machine CPU µs/tx | softirq s/run | LB process CPU s/run |"
    );
    let _ = writeln!(s, "|---|---|---:|---|---|---:|---|---:|---|---:|---:|---:|");
    for m in summaries {
        let per_round = |f: &dyn Fn(&RoundResult) -> String| m.runs.iter().map(f).collect::<Vec<_>>().join(" / ");
        let tps = per_round(&|r| format!("{:.0}", r.run.tps));
        let ratio_cells = |spread: Option<Spread>, pick: fn(&RoundResult) -> Option<f64>| match spread {
            None => ("–".to_owned(), "–".to_owned()),
            Some(Spread { median, min, max }) => (
                per_round(&|r| pick(r).map_or_else(|| "–".to_owned(), |v| format!("{v:.3}"))),
                format!("{median:.3} ({min:.3}–{max:.3})"),
            ),
        };
        let (direct_ratios, direct_ratio) = ratio_cells(m.ratio_to_direct, |r| r.ratio_to_direct);
        let (routed_ratios, routed_ratio) = ratio_cells(m.ratio_to_routed, |r| r.ratio_to_routed);
        let failed = format!("{} ({})", per_round(&|r| r.run.failed.to_string()), m.failed_total);
        let lb = if m.is_direct || m.target == "routed" || m.target == "agent" { "–".to_owned() } else { format!("{:.2}", m.median_lb_process_s) };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {tps} | {direct_ratios} | {direct_ratio} | {routed_ratios} | {routed_ratio} | {failed} | {:.1} | {:.2} | {lb} |",
            m.workload_name, m.target_name, m.median_tps, m.median_cpu_us_per_tx, m.median_softirq_s
        );
    }
    s
}

/// The headline: pglb ÷ the routed hop on each workload (goal ≥ 1.0: no per-packet cost beyond
/// the hop itself), with direct and HAProxy beside it.
fn headline(summaries: &[Summary]) -> String {
    let mut s = String::from("headline (paired per round, median (min–max)):\n");
    let fmt = |v: Option<Spread>| v.map_or_else(|| "–".to_owned(), |x| format!("{:.3} ({:.3}–{:.3})", x.median, x.min, x.max));
    for w in &WORKLOADS {
        let find = |t: Target| summaries.iter().find(|m| m.workload == w.key && m.target == t.key());
        let (Some(pglb), Some(routed), Some(haproxy)) = (find(Target::Pglb), find(Target::Routed), find(Target::Haproxy)) else {
            continue;
        };
        let agent = find(Target::Agent).and_then(|a| a.ratio_to_direct);
        let _ = writeln!(
            s,
            "  {:<34} pglb ÷ routed hop {}   agent ÷ direct {}   (routed ÷ direct {}, pglb ÷ direct {}, haproxy ÷ direct {})",
            w.name,
            fmt(pglb.ratio_to_routed),
            fmt(agent),
            fmt(routed.ratio_to_direct),
            fmt(pglb.ratio_to_direct),
            fmt(haproxy.ratio_to_direct)
        );
    }
    s
}


#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: usize, tps: f64) -> Run {
        Run { round, tps, transactions: 1000, failed: 0, user_s: 1.0, system_s: 1.0, softirq_s: 0.5, lb_process_s: 0.1, router_forwarded: 0 }
    }

    fn series(workload: Workload, target: Target, tps: &[f64]) -> Series {
        Series { workload, target, runs: tps.iter().enumerate().map(|(i, t)| run(i + 1, *t)).collect() }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        // The second-quiet-run figures of docs/BENCHMARKS.md (select-only, persistent).
        let direct = [run(1, 28328.0), run(2, 29502.0), run(3, 29884.0)];
        let pglb = [run(1, 24725.0), run(2, 21736.0), run(3, 25370.0)];
        let ratios = paired_ratios(&pglb, &direct);
        let want = [(1, 24725.0 / 28328.0), (2, 21736.0 / 29502.0), (3, 25370.0 / 29884.0)];
        assert_eq!(ratios.len(), 3);
        for ((round, got), (want_round, want)) in ratios.iter().zip(want) {
            assert_eq!(*round, want_round);
            assert!(close(*got, want), "round {round}: {got} != {want}");
        }
    }

    #[test]
    fn ratios_follow_the_round_not_the_position() {
        // Runs listed out of round order still pair by round; a round without a direct run, or
        // with a direct run of 0 tps, has no ratio.
        let direct = [run(2, 200.0), run(1, 100.0), run(4, 0.0)];
        let target = [run(1, 90.0), run(2, 150.0), run(3, 80.0), run(4, 70.0)];
        assert_eq!(paired_ratios(&target, &direct), vec![(1, 0.9), (2, 0.75)]);
    }

    #[test]
    fn spread_is_median_min_and_max() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[0.8]), Some(Spread { median: 0.8, min: 0.8, max: 0.8 }));
        assert_eq!(Spread::of(&[0.9, 0.7, 0.8]), Some(Spread { median: 0.8, min: 0.7, max: 0.9 }));
        assert_eq!(Spread::of(&[0.75, 0.25, 0.5, 1.0]), Some(Spread { median: 0.625, min: 0.25, max: 1.0 }));
    }

    #[test]
    fn paired_median_differs_from_the_ratio_of_medians() {
        // Round 2 ran on a busier machine (direct 500 tps). Paired, pglb kept 0.6, 0.9 and 0.95
        // of direct: median 0.9. The ratio of medians takes pglb's median from round 1 and
        // direct's from round 3: 600 / 800 = 0.75, a figure no round showed.
        let w = WORKLOADS[0];
        let results = [series(w, Target::Direct, &[1000.0, 500.0, 800.0]), series(w, Target::Pglb, &[600.0, 450.0, 760.0])];
        let summaries = summarise(&results);
        let pglb = &summaries[1];
        let spread = pglb.ratio_to_direct.expect("a ratio for pglb");
        assert!(close(spread.median, 0.9) && close(spread.min, 0.6) && close(spread.max, 0.95), "{spread:?}");
        assert!(close(pglb.median_tps / summaries[0].median_tps, 0.75), "the unpaired figure this replaces");
        assert_eq!(summaries[0].ratio_to_direct, None, "direct has no ratio to itself");
    }

    #[test]
    fn failed_transactions_are_reported_per_run_and_in_total() {
        let w = WORKLOADS[2];
        let mut s = series(w, Target::Haproxy, &[100.0, 100.0, 100.0]);
        s.runs[0].failed = 2;
        s.runs[2].failed = 5;
        let results = [series(w, Target::Direct, &[100.0, 100.0, 100.0]), s];
        let summaries = summarise(&results);
        assert_eq!(summaries[1].failed_total, 7);
        let table = render_table(&summaries, 10, 3);
        assert!(table.contains("| 2 / 0 / 5 (7) |"), "{table}");
        assert!(table.contains("| 0 / 0 / 0 (0) |"), "{table}");
    }

    #[test]
    fn pglb_pairs_with_the_routed_hop_of_its_round() {
        // Round 2 is slow for every target; paired, pglb kept 1.0 and 1.1 of the routed hop.
        let w = WORKLOADS[0];
        let results = [
            series(w, Target::Direct, &[1000.0, 500.0]),
            series(w, Target::Routed, &[800.0, 400.0]),
            series(w, Target::Pglb, &[800.0, 440.0]),
            series(w, Target::Haproxy, &[600.0, 300.0]),
        ];
        let summaries = summarise(&results);
        let pglb = summaries.iter().find(|m| m.target == "pglb").expect("pglb");
        let routed = summaries.iter().find(|m| m.target == "routed").expect("routed");
        let to_routed = pglb.ratio_to_routed.expect("pglb has a ratio to the routed hop");
        assert!(close(to_routed.min, 1.0) && close(to_routed.max, 1.1) && close(to_routed.median, 1.05), "{to_routed:?}");
        assert_eq!(pglb.runs[1].ratio_to_routed, Some(1.1));
        assert_eq!(routed.ratio_to_routed, None, "the routed hop has no ratio to itself");
        let to_direct = routed.ratio_to_direct.expect("routed has a ratio to direct");
        assert!(close(to_direct.median, 0.8), "{to_direct:?}");
        let headline = headline(&summaries);
        assert!(headline.contains("pglb ÷ routed hop 1.050 (1.000–1.100)"), "{headline}");
        assert!(headline.contains("haproxy ÷ direct 0.600 (0.600–0.600)"), "{headline}");
        let table = render_table(&summaries, 10, 2);
        assert!(table.contains("| routed via lb1 | 600 | 800 / 400 | 0.800 / 0.800 | 0.800 (0.800–0.800) | – | – |"), "{table}");
    }

    #[test]
    fn workloads_are_chosen_by_key() {
        assert_eq!(chosen_workloads(&[]).expect("all").len(), WORKLOADS.len());
        let one = chosen_workloads(&["select_only".to_owned()]).expect("known");
        assert_eq!(one.iter().map(|w| w.key).collect::<Vec<_>>(), ["select_only"]);
        let err = chosen_workloads(&["selectonly".to_owned()]).expect_err("unknown").to_string();
        assert!(err.contains("unknown workload \"selectonly\"") && err.contains("select_only, select_only_connect, tpcb_like"), "{err}");
    }

    #[test]
    fn forwarded_datagrams_come_from_the_ip_lines_of_snmp() {
        let snmp = "Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos\n\
                    Ip: 1 64 5230 0 0 4411 0\n\
                    Icmp: InMsgs InErrors\n\
                    Icmp: 3 0\n";
        assert_eq!(snmp_field(snmp, "Ip:", "ForwDatagrams"), Some(4411));
        assert_eq!(snmp_field(snmp, "Icmp:", "InMsgs"), Some(3));
        assert_eq!(snmp_field(snmp, "Ip:", "NoSuchField"), None);
        assert_eq!(snmp_field("", "Ip:", "ForwDatagrams"), None);
    }

    #[test]
    fn json_has_the_paired_ratios_and_failures() {
        let w = WORKLOADS[0];
        let results = [series(w, Target::Direct, &[100.0, 200.0]), series(w, Target::Pglb, &[50.0, 150.0])];
        let doc = BenchJson { clients: CLIENTS, threads: THREADS, seconds: 10, scale: SCALE, rounds: 2, xdp_cost: "| x |", results: summarise(&results) };
        let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&doc).expect("encodes")).expect("decodes");
        let pglb = &v["results"][1];
        assert_eq!(pglb["target"], "pglb");
        assert_eq!(pglb["ratio_to_direct"], serde_json::json!({ "median": 0.625, "min": 0.5, "max": 0.75 }));
        assert_eq!(pglb["runs"][1]["round"], 2);
        assert_eq!(pglb["runs"][1]["ratio_to_direct"], 0.75);
        assert_eq!(pglb["runs"][1]["failed"], 0);
        assert_eq!(pglb["failed_total"], 0);
        assert_eq!(v["results"][0]["ratio_to_direct"], serde_json::Value::Null);
        assert_eq!(v["xdp_cost"], "| x |");
    }
}
