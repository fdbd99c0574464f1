//! End to end through the XDP data plane in the lab: the write and read ports reach the right
//! nodes, new read connections spread over the standbys, pgbench runs through the VIP without
//! errors, `pglb map dump` shows live flows, and an open session survives a restart of pglb.
//!
//! One lab serves every check (a `lab up` takes ~20 s); each check is a function with its own
//! messages, run in order from the single test.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver},
    },
    thread,
    time::{Duration, Instant},
};

use pglb_tests::{Lab, holds_vip, lb_config, ok, pglb_bin, pglb_pid, pglb_pids, process_gone, signal, start_pglb, wait_until};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// [`pglb_tests::VIP`] as text, for command lines.
const VIP: &str = "172.20.0.100";
const PG1: &str = "172.20.0.10";
const STANDBYS: [&str; 2] = ["172.20.0.11", "172.20.0.12"];
const PGPASS: &str = "/run/pglb-lab/secrets/client.pgpass";

#[test]
fn dataplane_end_to_end() {
    let _lab = Lab::up();
    write_port_reaches_the_primary();
    read_port_spreads_new_connections_over_the_standbys();
    pgbench_through_the_vip_has_no_errors();
    held_session_shows_in_map_dump_and_survives_a_pglb_restart();
}

/// A command in pgha-client with the lab's client pgpass.
fn client(args: &[&str]) -> Command {
    let mut c = Command::new(pglb_tests::xtask_bin());
    c.args(["lab", "exec", "client", "--", "env", &format!("PGPASSFILE={PGPASS}"), "PGCONNECT_TIMEOUT=5"]);
    c.args(args).stdin(Stdio::null());
    c
}

fn vip_sql(port: u16, sql: &str) -> String {
    ok(&["lab", "psql", "--port", &port.to_string(), "--", "-v", "ON_ERROR_STOP=1", "-At", "-F", "|", "-c", sql])
        .trim()
        .to_owned()
}

fn write_port_reaches_the_primary() {
    let answer = vip_sql(3000, "SELECT inet_server_addr(), pg_is_in_recovery()");
    assert_eq!(answer, format!("{PG1}|f"), "VIP:3000 must reach pg1, the primary, not in recovery");
}

fn read_port_spreads_new_connections_over_the_standbys() {
    let script = format!(
        "for i in $(seq 100); do {PG_BIN}/psql -X -h {VIP} -p 3001 -U app -d app -At -F '|' \
         -c 'SELECT inet_server_addr(), pg_is_in_recovery()' || echo failed; done"
    );
    let out = client(&["bash", "-c", &script]).output().expect("starting the connection loop in pgha-client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "connection loop failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        *per_node.entry(line.trim().to_owned()).or_default() += 1;
    }
    let total: usize = per_node.values().sum();
    assert_eq!(total, 100, "expected 100 answers, got {per_node:?}");
    for (answer, n) in &per_node {
        let (addr, recovery) = answer.split_once('|').unwrap_or((answer, ""));
        assert!(STANDBYS.contains(&addr) && recovery == "t", "a VIP:3001 connection landed on {answer:?} ({n}x): all {per_node:?}");
    }
    for standby in STANDBYS {
        let n = per_node.get(&format!("{standby}|t")).copied().unwrap_or(0);
        // Each connection is a fair coin between two equal readers: 100 of them give 50 ± 5
        // (one standard deviation). 40..=60 (2σ) failed about one run in thirty by chance
        // alone; 30..=70 (4σ) fails one in 16,000, while a reader left out or a skewed table
        // still fails it.
        assert!((30..=70).contains(&n), "{standby} got {n} of 100 new read connections, outside 50 ± 20 (4σ): {per_node:?}");
    }
    eprintln!("read port split over 100 new connections: {per_node:?}");
}

/// pgbench's summary: (transactions processed, failed transactions, tps).
fn pgbench(args: &[&str]) -> (u64, u64, f64) {
    let pgbench = format!("{PG_BIN}/pgbench");
    let mut full = vec![pgbench.as_str()];
    full.extend_from_slice(args);
    let out = client(&full).output().expect("starting pgbench in pgha-client");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pgbench {args:?} exited with {}:\n{text}", out.status);
    let field = |prefix: &str| -> Option<String> {
        text.lines().find_map(|l| l.trim().strip_prefix(prefix)).map(|rest| rest.trim().to_owned())
    };
    let processed = field("number of transactions actually processed:")
        .and_then(|s| s.split('/').next().and_then(|n| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no transaction count in pgbench's output:\n{text}"));
    // pgbench 15 prints "number of failed transactions: N (x%)"; older ones print nothing.
    let failed = field("number of failed transactions:")
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let tps = field("tps =")
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| panic!("no tps in pgbench's output:\n{text}"));
    (processed, failed, tps)
}

fn pgbench_through_the_vip_has_no_errors() {
    let init = client(&[&format!("{PG_BIN}/pgbench"), "-h", VIP, "-p", "3000", "-U", "app", "-i", "-s", "1", "-q", "app"])
        .output()
        .expect("starting pgbench -i");
    assert!(init.status.success(), "pgbench -i through VIP:3000 failed:\n{}{}",
        String::from_utf8_lossy(&init.stdout), String::from_utf8_lossy(&init.stderr));
    // The standbys must have the tables before the select-only run reads them there.
    wait_until(Duration::from_secs(20), "pgbench_accounts to reach both standbys", || {
        ["pg2", "pg3"].iter().all(|n| {
                pglb_tests::run(&["lab", "psql", "--node", n, "--", "-At", "-c", "SELECT count(*) FROM pgbench_accounts"])
                    .stdout
                    .starts_with(b"100000")
            })
    });
    for (port, script) in [("3001", "select-only"), ("3000", "tpcb-like")] {
        let args = ["-h", VIP, "-p", port, "-U", "app", "-c", "8", "-j", "2", "-T", "20", "-b", script, "app"];
        let (processed, failed, tps) = pgbench(&args);
        eprintln!("pgbench {script} through VIP:{port}: {processed} transactions, {failed} failed, {tps:.0} tps");
        assert_eq!(failed, 0, "pgbench {script} through VIP:{port} had failed transactions");
        assert!(processed > 0 && tps > 0.0, "pgbench {script} through VIP:{port} processed nothing ({processed}, {tps} tps)");
    }
}

/// A psql process in pgha-client connected to VIP:3000, fed queries on stdin.
struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Session {
    fn open() -> Session {
        // stdbuf: psql writes to a pipe through a stdio buffer, which would hold the answers.
        let mut c = client(&["stdbuf", "-o0", &format!("{PG_BIN}/psql"), "-X", "-h", VIP, "-p", "3000", "-U", "app", "-d", "app", "-At", "-F", "|", "-q"]);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("starting a psql session in pgha-client");
        let stdin = child.stdin.take().expect("psql stdin");
        let (tx, lines) = mpsc::channel();
        for stream in [Box::new(child.stdout.take().expect("psql stdout")) as Box<dyn std::io::Read + Send>,
                       Box::new(child.stderr.take().expect("psql stderr"))] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Session { child, stdin, lines }
    }

    /// Runs one query; returns its single output line (or the error psql printed).
    fn query(&mut self, sql: &str) -> String {
        writeln!(self.stdin, "{sql};").and_then(|()| self.stdin.flush()).expect("writing to psql");
        self.lines.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|e| panic!("no answer from psql to {sql:?}: {e}"))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pglb map dump --json` of lb1 (schema `pglb.map-dump/1`, docs/JSON.md).
fn map_dump() -> serde_json::Value {
    let out = Command::new(pglb_bin())
        .args(["map", "dump", "--json", "--config"])
        .arg(lb_config("lb1"))
        .output()
        .expect("running pglb map dump --json");
    assert!(out.status.success(), "pglb map dump --json failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let dump: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("pglb map dump --json printed no JSON ({e}):\n{text}"));
    assert_eq!(dump["schema"], "pglb.map-dump/1", "{dump:#}");
    dump
}

/// The live flows of a map dump.
fn flows(dump: &serde_json::Value) -> &[serde_json::Value] {
    dump["flows"].as_array().map(Vec::as_slice).unwrap_or_else(|| panic!("no flows array in the map dump:\n{dump:#}"))
}

/// Packets forwarded to pg1 (its per-backend `to_backend_packets`) in a map dump.
fn pg1_packets(dump: &serde_json::Value) -> u64 {
    dump["counters"]["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["addr"] == format!("{PG1}:5432").as_str()))
        .and_then(|b| b["to_backend_packets"].as_u64())
        .unwrap_or_else(|| panic!("no per-backend counters for pg1 in the map dump:\n{dump:#}"))
}

/// Restarts pglb on lb1 as an operator would for an upgrade: SIGUSR2 (exit keeping the VIP and
/// the pinned XDP program), `while_down` runs with no pglb process on lb1, then the same
/// command line as `lab up` starts it again.
fn restart_lb1_pglb(while_down: impl FnOnce()) {
    let pid = pglb_pid("lb1");
    signal(pid, libc::SIGUSR2);
    wait_until(Duration::from_secs(10), "the old pglb on lb1 to exit", || process_gone(pid));
    while_down();
    start_pglb("lb1");
    wait_until(Duration::from_secs(10), "the new pglb on lb1 to run", || pglb_pids("lb1").iter().any(|p| *p != pid));
}

fn held_session_shows_in_map_dump_and_survives_a_pglb_restart() {
    let mut session = Session::open();
    let before_pid = session.query("SELECT pg_backend_pid()");
    assert!(before_pid.parse::<u32>().is_ok(), "psql through VIP:3000 answered {before_pid:?}");

    let dump = map_dump();
    let established = flows(&dump).iter().filter(|f| f["half_open"] == false).count();
    assert!(established >= 1, "no live established flow in the map dump during a held session:\n{dump:#}");
    assert!(flows(&dump).iter().any(|f| f["vip"] == format!("{VIP}:3000").as_str() && f["backend"] == format!("{PG1}:5432").as_str() && f["state"] == "ESTABLISHED"),
        "the held session's flow (client -> {VIP}:3000 -> {PG1}:5432, ESTABLISHED) is missing:\n{dump:#}");
    let packets_before = pg1_packets(&dump);
    assert_eq!(session.query("SELECT count(*) FROM generate_series(1, 1000)"), "1000");
    let packets_after = pg1_packets(&map_dump());
    assert!(packets_after > packets_before, "pg1's packet counter did not move with a query ({packets_before} -> {packets_after})");

    // Watch who holds the VIP while pglb restarts on lb1.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut lb2_held = Duration::ZERO;
            let mut lb1_missing = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (lb1, lb2) = (holds_vip("lb1"), holds_vip("lb2"));
                thread::sleep(Duration::from_millis(10));
                if lb2 {
                    lb2_held += t.elapsed();
                }
                if !lb1 {
                    lb1_missing += t.elapsed();
                }
            }
            (lb2_held, lb1_missing)
        })
    };
    let restart_started = Instant::now();
    restart_lb1_pglb(|| {
        let during = session.query("SELECT pg_backend_pid()");
        assert_eq!(during, before_pid, "with no pglb process on lb1, the pinned XDP program must keep the session forwarding");
    });
    wait_until(Duration::from_secs(20), "lb1 to hold the VIP after the restart", || holds_vip("lb1") && !holds_vip("lb2"));
    // The thing tested: the VIP stays on lb1 for 1 s more (over two of lb2's Master_Down_Intervals),
    // while the watcher keeps looking.
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (lb2_held, lb1_missing) = watcher.join().expect("vip watcher");
    eprintln!("restart took {:?}; VIP on lb2 for {lb2_held:?}, absent from lb1 for {lb1_missing:?}", restart_started.elapsed());

    assert_eq!(lb2_held, Duration::ZERO, "lb2 took the VIP during a restart of lb1's pglb (restart must not move the VIP)");
    let after_pid = session.query("SELECT pg_backend_pid()");
    assert_eq!(after_pid, before_pid, "the held session through the VIP did not survive the pglb restart (same backend pid expected)");
    assert_eq!(session.query("SELECT inet_server_addr()"), PG1);
    let dump = map_dump();
    assert!(flows(&dump).iter().any(|f| f["backend"] == format!("{PG1}:5432").as_str()), "the restarted pglb lost the flows:\n{dump:#}");
}
