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
