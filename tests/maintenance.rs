//! Maintenance mode in the lab: `pglb pause` on lb1 reaches lb2 over the peer reports; while
//! paused, a `pg_ctl restart -m fast` of the primary, and a stop, 2 s, start (longer than the
//! detection time: the writer is lost and the pause holds failover back), promote nobody and
//! writes through VIP:3000 resume on the same node, on the same timeline; `pglb resume` reaches
//! lb2 too. Then the same fast restart without a pause: about as long as the detection time,
//! it usually ends before a failover gets to a promotion, and a slower one is a failover
//! (README.md, "Maintenance mode"); either way one primary holds every acknowledged row.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use pglb_tests::{Lab, STATE_DIR, app_sql, lb_config, pglb_bin, pglb_log, pglb_status, run, stderr, stdout, superuser_sql, wait_until};
use serde_json::Value;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const NODES: [&str; 3] = ["pg1", "pg2", "pg3"];

/// `pglb ARGS --config <lb's config>`: its stdout; panics with its output when it fails.
fn pglb(lb: &str, args: &[&str]) -> String {
    let out = Command::new(pglb_bin()).args(args).arg("--config").arg(lb_config(lb)).output().expect("running pglb");
    assert!(out.status.success(), "pglb {args:?} on {lb} failed:\n{}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

fn status(lb: &str) -> Value {
    pglb_status(lb).unwrap_or_else(|e| panic!("pglb status --json on {lb}: {e}"))
}

/// `pg_ctl ACTION -m fast` of `node` (`restart`, `stop`, `start`), as an operator does.
fn pg_ctl(node: &str, action: &str) {
    let data = format!("{STATE_DIR}/{node}/data");
    let log = format!("{STATE_DIR}/{node}/postgres.log");
    let pg_ctl = format!("{PG_BIN}/pg_ctl");
    let out = run(&["lab", "exec", node, "--", "runuser", "-u", "postgres", "--", &pg_ctl, "-D", &data, "-l", &log, "-m", "fast", "-w", "-t", "60", action]);
    assert!(out.status.success(), "pg_ctl {action} of {node} failed:\n{}{}", stdout(&out), stderr(&out));
}

fn restart(node: &str) {
    pg_ctl(node, "restart");
}

/// Waits for a write through VIP:3000 and checks pg1 acknowledged it; returns how long it took.
fn writes_back_on_pg1(phase: &str) -> Duration {
    let mut acked = None;
    let took = wait_until(Duration::from_secs(30), &format!("a write through VIP:3000 ({phase})"), || {
        acked = write_through_vip(phase);
        acked.is_some()
    });
    assert_eq!(acked.as_deref(), Some("172.20.0.10"), "{phase}: the write went to pg1");
    took
}

/// One INSERT through VIP:3000: the address of the server that acknowledged it, if one did.
fn write_through_vip(phase: &str) -> Option<String> {
    let sql = format!("INSERT INTO maintenance (phase) VALUES ('{phase}') RETURNING host(inet_server_addr())");
    let out = run(&["lab", "psql", "--", "-v", "ON_ERROR_STOP=1", "-Atc", &sql]);
    out.status.success().then(|| stdout(&out).lines().next().unwrap_or_default().trim().to_owned())
}

/// Each node's (in recovery, timeline), read on the node itself: a primary's timeline from the
/// name of its current WAL file, a standby's from its last restartpoint.
fn roles() -> Vec<(bool, u32)> {
    let sql = "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint()) \
               ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END";
    NODES
        .iter()
        .map(|n| {
            let row = superuser_sql(n, sql);
            let (rec, tl) = row.split_once('|').unwrap_or_else(|| panic!("{n}: {row:?}"));
            (rec == "t", tl.parse().unwrap_or_else(|_| panic!("{n}: timeline {tl:?}")))
        })
        .collect()
}

/// The node `lb` routes writes to, from its status.
fn routed_writer(lb: &str) -> Option<String> {
    let s = status(lb);
    s["nodes"].as_array()?.iter().find(|n| n["routed_ports"].as_array().is_some_and(|p| p.contains(&Value::from(3000)))).map(|n| n["name"].as_str().unwrap_or_default().to_owned())
}

/// What lb1 logged about the writer since `from` (a length of its log), for the test's output:
/// why it failed over or did not.
fn decisions_since(from: usize) -> String {
    let log = pglb_log("lb1");
    let words = ["writer", "failover", "maintenance", "route:", "promot", "fence", "no usable"];
    log.get(from..).unwrap_or_default().lines().filter(|l| words.iter().any(|w| l.contains(w))).collect::<Vec<_>>().join("\n")
}

/// lb1's log since `from` (a length of it).
fn after_log(from: usize) -> String {
    pglb_log("lb1").get(from..).unwrap_or_default().to_owned()
}

/// Whether the log says the writer was declared lost (failover evaluated).
fn decided_lost(log: &str) -> bool {
    log.contains("evaluating failover") || log.contains("writer lost")
}

#[test]
fn a_paused_cluster_rides_out_primary_restarts_and_an_unpaused_fast_restart_keeps_one_primary() {
    let _lab = Lab::up();
    app_sql("pg1", "CREATE TABLE maintenance (i serial PRIMARY KEY, phase text NOT NULL)");
    assert_eq!(write_through_vip("before").as_deref(), Some("172.20.0.10"));
    assert_eq!(roles(), [(false, 1), (true, 1), (true, 1)], "a fresh lab: pg1 primary on timeline 1");

    // --- paused -----------------------------------------------------------------------------
    let said = pglb("lb1", &["pause", "--reason", "shared_buffers change", "--for", "30m"]);
    assert!(said.contains("paused on lb1") && said.contains("shared_buffers change"), "{said}");
    for lb in ["lb1", "lb2"] {
        wait_until(Duration::from_secs(5), &format!("{lb} to show the pause of lb1"), || {
            let s = status(lb);
            s["paused"] == true && s["pause"]["by"] == "lb1" && s["pause"]["reason"] == "shared_buffers change" && s["pause"]["until"].is_string()
        });
    }
    let table = pglb("lb2", &["status"]);
    assert!(table.contains("maintenance: paused on lb1"), "{table}");

    let log_from = pglb_log("lb1").len();
    let restarted = Instant::now();
    restart("pg1");
    let back = writes_back_on_pg1("paused");
    eprintln!("paused: writes went through again {:?} after pg_ctl restart started ({back:?} after it returned)", restarted.elapsed());
    // Give a failover every chance to happen (it would within a few seconds): it does not.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(roles(), [(false, 1), (true, 1), (true, 1)], "paused: no promotion, pg1 still the primary on timeline 1");
    for lb in ["lb1", "lb2"] {
        assert_eq!(routed_writer(lb).as_deref(), Some("pg1"), "{lb} routes writes to pg1");
        let s = status(lb);
        assert_eq!(s["phase"], "steady", "{lb}: {s:#}");
        assert_eq!(s["paused"], true, "{lb}: {s:#}");
    }
    assert_eq!(write_through_vip("paused-after").as_deref(), Some("172.20.0.10"));
    eprintln!("paused: lb1 decided:\n{}", decisions_since(log_from));

    // The restart, longer than the detection time: stop, 2 s, start. The writer is lost
    // and the pause is what holds failover back.
    let log_from = pglb_log("lb1").len();
    pg_ctl("pg1", "stop");
    std::thread::sleep(Duration::from_secs(2));
    pg_ctl("pg1", "start");
    let back = writes_back_on_pg1("paused-stop-start");
    std::thread::sleep(Duration::from_secs(5));
    let decided = decisions_since(log_from);
    eprintln!("paused, stop 2 s start: writes back {back:?} after the start; lb1 decided:\n{decided}");
    assert!(decided.contains("no failover: maintenance mode (paused on lb1: shared_buffers change)"), "{decided}");
    assert!(decided.contains("writer pg1 answers again: kept"), "{decided}");
    assert_eq!(roles(), [(false, 1), (true, 1), (true, 1)], "paused: no promotion after a 2 s stop either");

    let said: Value = serde_json::from_str(&pglb("lb1", &["resume", "--json"])).expect("pglb resume --json prints JSON");
    assert!(said["message"].as_str().is_some_and(|m| m.contains("resumed on lb1")) && said["paused"] == false && said["pause"].is_null(), "{said}");
    for lb in ["lb1", "lb2"] {
        wait_until(Duration::from_secs(5), &format!("{lb} to show the resume"), || status(lb)["paused"] == false);
    }
    let refused = Command::new(pglb_bin()).args(["resume", "--config"]).arg(lb_config("lb2")).output().expect("running pglb");
    assert!(!refused.status.success() && stderr(&refused).contains("not paused"), "a second resume is refused: {}", stderr(&refused));
    let refused = Command::new(pglb_bin()).args(["resume", "--json", "--config"]).arg(lb_config("lb2")).output().expect("running pglb");
    let said: Value = serde_json::from_str(&stdout(&refused)).expect("a refused resume --json prints JSON");
    assert!(!refused.status.success() && said["error"].as_str().is_some_and(|e| e.contains("not paused")), "{said}");

    // --- not paused: the same restart -------------------------------------------------------
    let rows_before: u64 = app_sql("pg1", "SELECT count(*) FROM maintenance").parse().expect("a count");
    let log_from = pglb_log("lb1").len();
    let restarted = Instant::now();
    restart("pg1");
    let mut acked = None;
    let back = wait_until(Duration::from_secs(30), "a write through VIP:3000 after the unpaused restart", || {
        acked = write_through_vip("unpaused");
        acked.is_some()
    });
    let writer = acked.expect("a write went through");
    eprintln!("unpaused: writes went through again {:?} after pg_ctl restart started ({back:?} after it returned), acknowledged by {writer}", restarted.elapsed());
    // Give a failover every chance to start (it would within a few seconds).
    std::thread::sleep(Duration::from_secs(5));
    let after = roles();
    eprintln!("unpaused: roles after: {after:?}; lb1 decided:\n{}", decisions_since(log_from));
    // The documented behaviour (README.md, "Maintenance mode"): `pg_ctl restart -m fast` of the
    // lab's primary takes 0.3 to 0.5 s, about the detection time (3 failed probes, 600 ms): the
    // writer is declared lost or not, and pg1 usually answers again before a failover gets to a
    // promotion; a slower restart is a failover. Either way: one primary, every acknowledged row
    // on it.
    let lost = decided_lost(&after_log(log_from));
    let primaries: Vec<usize> = (0..NODES.len()).filter(|&i| !after[i].0).collect();
    assert_eq!(primaries.len(), 1, "exactly one primary after the unpaused restart: {after:?}");
    let primary = NODES[primaries[0]];
    let failed_over = primary != "pg1";
    eprintln!("unpaused: the writer was declared lost: {lost}; {}", if failed_over { "a failover" } else { "no failover: pg1 answered first" });
    let by_addr = match writer.as_str() {
        "172.20.0.10" => "pg1",
        "172.20.0.11" => "pg2",
        "172.20.0.12" => "pg3",
        other => panic!("the write was acknowledged by {other}, not a lab node"),
    };
    assert_eq!(by_addr, primary, "the write went to the primary");
    if !failed_over {
        assert_eq!(after[0].1, 1, "no failover: pg1 still on timeline 1");
    }
    let rows_after: u64 = app_sql(primary, "SELECT count(*) FROM maintenance").parse().expect("a count");
    assert_eq!(rows_after, rows_before + 1, "the primary holds every acknowledged row");
}
