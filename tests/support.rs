//! Helpers for the end-to-end tests: the xtask binary, lab guards, SQL on lab hosts.
//!
//! These tests run through `cargo xtask test`, which builds the workspace and passes the xtask
//! binary in `PGLB_XTASK`; they need root and share one lab, so they run one at a time.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

/// The lab's state folder (kept in step with xtask's topology).
pub const STATE_DIR: &str = "/run/pglb-lab";

/// The xtask binary under test.
pub fn xtask_bin() -> PathBuf {
    let path = std::env::var_os("PGLB_XTASK")
        .expect("PGLB_XTASK is not set: run the end-to-end tests with `cargo xtask test`");
    PathBuf::from(path)
}

pub fn xtask(args: &[&str]) -> Command {
    let mut c = Command::new(xtask_bin());
    c.args(args).stdin(Stdio::null());
    c
}

/// Runs xtask and returns its output; panics when it cannot start.
pub fn run(args: &[&str]) -> Output {
    xtask(args).output().unwrap_or_else(|e| panic!("could not start xtask {args:?}: {e}"))
}

/// Runs xtask and panics with its output unless it succeeds; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "xtask {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running lab, torn down when dropped (also when the test panics).
pub struct Lab(());

impl Lab {
    /// Builds a new lab (`lab up --fresh`).
    pub fn up() -> Lab {
        assert_root();
        let lab = Lab(());
        ok(&["lab", "up", "--fresh"]);
        lab
    }

    /// Only the guard, for tests that run `lab up` themselves.
    pub fn guard() -> Lab {
        assert_root();
        Lab(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = run(&["lab", "down"]);
        if !out.status.success() {
            eprintln!("lab down failed in a test guard:\n{}{}", stdout(&out), stderr(&out));
        }
    }
}

pub fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the end-to-end tests need root (network namespaces, BPF, PostgreSQL): run `sudo cargo xtask test`");
}

/// SQL as the superuser on a PostgreSQL host over its Unix socket; unaligned tuples-only.
pub fn superuser_sql(node: &str, query: &str) -> String {
    let sock = format!("{STATE_DIR}/{node}/sock");
    ok(&["lab", "exec", node, "--", "runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/psql",
         "-X", "-h", &sock, "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-At", "-F", "|", "-c", query])
        .trim()
        .to_owned()
}

/// SQL as the application user on the `app` database of one node (bypassing the VIP).
pub fn app_sql(node: &str, query: &str) -> String {
    ok(&["lab", "psql", "--node", node, "--", "-v", "ON_ERROR_STOP=1", "-At", "-F", "|", "-c", query])
        .trim()
        .to_owned()
}

/// Polls `check` every 100 ms until it returns true or `limit` passes; panics naming `what`.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Network namespaces whose names start with the lab's prefix.
pub fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("running ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("pgha-"))
        .map(str::to_owned)
        .collect()
}

/// Command lines of processes that belong to the lab (they mention its state folder).
pub fn lab_processes() -> Vec<String> {
    let out = Command::new("ps").args(["-eo", "pid,args"]).output().expect("running ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(STATE_DIR) || l.contains("postgres: pg"))
        .map(str::to_owned)
        .collect()
}

/// Asserts that nothing of the lab is left: no namespace, no process, no state folder.
pub fn assert_lab_gone() {
    assert_eq!(lab_namespaces(), Vec::<String>::new(), "lab namespaces left behind");
    assert_eq!(lab_processes(), Vec::<String>::new(), "lab processes left behind");
    assert!(!std::path::Path::new(STATE_DIR).exists(), "{STATE_DIR} left behind");
}

// ----- drills ------------------------------------------------------------------------------

use std::fs;

use serde_json::Value;

/// Runs `xtask drill SCENARIO --runs 1 --json …` with the drill client `drill_client` (the
/// test binary's `env!("CARGO_BIN_EXE_drill_client")`); returns the run's JSON object.
pub fn drill(scenario: &str, drill_client: &str) -> Value {
    let json = std::env::temp_dir().join(format!("pglb-drill-{scenario}-{}.json", std::process::id()));
    let out = xtask(&["drill", scenario, "--runs", "1", "--json", json.to_str().unwrap()])
        .env("PGLB_DRILL_CLIENT", drill_client)
        .output()
        .expect("running xtask drill");
    println!("{}", stdout(&out));
    let text = fs::read_to_string(&json).unwrap_or_else(|e| panic!("reading {} ({}):\n{}{}", json.display(), e, stdout(&out), stderr(&out)));
    let _ = fs::remove_file(&json);
    assert!(out.status.success(), "xtask drill {scenario} failed ({}):\n{}{}", out.status, stdout(&out), stderr(&out));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("the drill's JSON does not parse ({e}):\n{text}"));
    let runs = doc["failover"].as_array().unwrap_or_else(|| panic!("no failover runs in {text}"));
    assert_eq!(runs.len(), 1, "one run expected in {text}");
    runs[0].clone()
}

pub fn num(run: &Value, key: &str) -> f64 {
    run[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in the drill result:\n{run:#}"))
}

/// Every acknowledged write is on the winner, nothing was acknowledged off the winner's
/// history, exactly one primary is left once the faults healed, every check passed, and each
/// pglb idled under 2 % of a CPU after the run.
pub fn assert_no_loss(run: &Value) {
    assert!(num(run, "acked_writes") > 100.0, "the writer hardly wrote: {run:#}");
    assert_eq!(num(run, "acked_lost"), 0.0, "acknowledged writes lost: {run:#}");
    assert_eq!(num(run, "split_brain_writes"), 0.0, "split-brain writes: {run:#}");
    assert_eq!(num(run, "primaries_at_end"), 1.0, "exactly one primary once the faults healed: {run:#}");
    assert_eq!(run["failures"].as_array().map(Vec::len), Some(0), "failed checks: {run:#}");
    let cpu = run["cpu"].as_array().unwrap_or_else(|| panic!("no cpu figures: {run:#}"));
    assert_eq!(cpu.len(), 2, "both load balancers' CPU: {run:#}");
    for c in cpu {
        let idle = c["idle_pct"].as_f64().unwrap_or_else(|| panic!("no idle CPU for {}: {run:#}", c["lb"]));
        assert!(idle < 2.0, "pglb on {} used {idle:.2}% of a CPU idle after the drill (a busy loop?): {run:#}", c["lb"]);
    }
}

/// A failover scenario: a new writer, the remaining standby following it, the old primary
/// fenced when it came back (needs-rejoin, unrouted, no flows), rejoined by pglb itself, and
/// switched back to pg1 with the pause reported.
pub fn assert_failover(run: &Value, rto_limit_ms: f64) {
    assert_no_loss(run);
    assert_eq!(run["failover"], true, "no failover: {run:#}");
    assert_ne!(run["winner"], "pg1", "pg1 still won: {run:#}");
    let rto = num(run, "write_rto_ms");
    assert!(rto <= rto_limit_ms, "write RTO {rto} ms above {rto_limit_ms} ms: {run:#}");
    assert_eq!(run["standbys_follow"], true, "the other standby did not follow the new primary: {run:#}");
    assert_eq!(run["fenced_ok"], true, "the returning old primary was not fenced (needs-rejoin, unrouted, no flows): {run:#}");
    assert!(num(run, "rejoin_ms") > 0.0, "the old primary was not rejoined by pglb: {run:#}");
    let back = run["switchback_output"].as_str().unwrap_or_default();
    assert!(back.contains("switchover done") && back.contains("writes paused for"), "switching back to pg1 after the rejoin: {back}");
    assert_switchback_lost_nothing(run);
}

/// `pglb switchover --to pg1` ran with the writer inserting: pg1 has every acknowledged row,
/// the run's own included.
pub fn assert_switchback_lost_nothing(run: &Value) {
    assert!(num(run, "switchback_acked") > 50.0, "the writer hardly wrote during the switch back: {run:#}");
    assert_eq!(num(run, "switchback_lost"), 0.0, "acknowledged writes lost in the switch back to pg1: {run:#}");
    assert_eq!(num(run, "lost_after_switchback"), 0.0, "the run's acknowledged writes missing on pg1 after the switch back: {run:#}");
}

