//! Node marks in the lab (`pglb node drain|undrain|disable|enable`): a drain on lb1 reaches lb2
//! over the peer reports; new VIP:3001 connections never reach the drained standby while one
//! already open on it still works, and `drain --wait` returns once it closes; undrain brings
//! it back; the refusals (already drained, the writer, an unknown node) say why; the marks
//! survive a restart of pglb (the state file); a disabled standby is refused as a switchover
//! target and passed over by the failover after the primary stops; the journal has the events.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use pglb_tests::{HeldConnection, Lab, STATE_DIR, lb_config, pglb_bin, pglb_pid, pglb_status, run, signal, start_pglb, stderr, stdout, wait_gone, wait_until};
use serde_json::Value;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PGPASS: &str = "/run/pglb-lab/secrets/client.pgpass";
const ADDRS: [(&str, &str); 3] = [("pg1", "172.20.0.10"), ("pg2", "172.20.0.11"), ("pg3", "172.20.0.12")];

/// `pglb ARGS --config <lb's config>`: (success, stdout + stderr).
fn pglb(lb: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(pglb_bin()).args(args).arg("--config").arg(lb_config(lb)).output().expect("running pglb");
    (out.status.success(), format!("{}{}", stdout(&out), stderr(&out)))
}

/// `pglb ARGS` that must succeed; its output.
fn pglb_ok(lb: &str, args: &[&str]) -> String {
    let (ok, text) = pglb(lb, args);
    assert!(ok, "pglb {args:?} on {lb} failed:\n{text}");
    text
}

/// `pglb ARGS` that must be refused with a message containing `needle`.
fn pglb_refused(lb: &str, args: &[&str], needle: &str) {
    let (ok, text) = pglb(lb, args);
    assert!(!ok && text.contains(needle), "pglb {args:?} on {lb} should be refused with {needle:?}:\n{text}");
}

fn status(lb: &str) -> Value {
    pglb_status(lb).unwrap_or_else(|e| panic!("pglb status --json on {lb}: {e}"))
}

/// The status row of `node` on `lb`.
fn node(lb: &str, name: &str) -> Value {
    let s = status(lb);
    s["nodes"].as_array().and_then(|n| n.iter().find(|n| n["name"] == name)).cloned().unwrap_or_else(|| panic!("no {name} in {s:#}"))
}

fn name_of(addr: &str) -> &'static str {
    ADDRS.iter().find(|(_, a)| *a == addr).map(|(n, _)| *n).unwrap_or_else(|| panic!("{addr:?} is not a lab node"))
}

/// `count` new connections through VIP:3001 from pgha-client: how many reached each node.
fn read_connections(count: usize) -> BTreeMap<&'static str, usize> {
    let script = format!(
        "for i in $(seq {count}); do {PG_BIN}/psql -X -h 172.20.0.100 -p 3001 -U app -d app -At -c 'SELECT host(inet_server_addr())' || echo failed; done"
    );
    let out = run(&["lab", "exec", "client", "--", "env", &format!("PGPASSFILE={PGPASS}"), "PGCONNECT_TIMEOUT=5", "bash", "-c", &script]);
    assert!(out.status.success(), "the connection loop failed:\n{}{}", stdout(&out), stderr(&out));
    let mut per_node = BTreeMap::new();
    for line in stdout(&out).lines() {
        *per_node.entry(name_of(line.trim())).or_default() += 1;
    }
    assert_eq!(per_node.values().sum::<usize>(), count, "every connection answered: {per_node:?}");
    per_node
}

/// The journal's events on `lb` (`pglb events --json`, no daemon needed): (event, node).
fn journal(lb: &str) -> Vec<(String, String)> {
    pglb_ok(lb, &["events", "--json"])
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| (e["event"].as_str().unwrap_or_default().to_owned(), e["node"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Stops pglb on `lb` (SIGTERM) and waits for it to exit.
fn stop(lb: &str) {
    let pid = pglb_pid(lb);
    signal(pid, libc::SIGTERM);
    wait_gone(pid, Duration::from_secs(30), &format!("pglb on {lb} to stop"));
}

#[test]
fn drain_and_disable_reach_both_load_balancers_keep_open_flows_and_survive_restarts() {
    let _lab = Lab::up();
    wait_until(Duration::from_secs(30), "lb1 to hold the VIP and lb2 to follow it", || {
        status("lb1")["vip_held"] == true && pglb_status("lb2").is_ok_and(|s| s["vip_held"] == false && s["ready"] != false)
    });

    // --- drain: a held connection decides which standby ------------------------------------
    let held = HeldConnection::open(3001);
    let mut drained = "";
    wait_until(Duration::from_secs(5), "lb1 to count the held read connection", || {
        drained = ["pg2", "pg3"].into_iter().find(|n| node("lb1", n)["open_read_flows"] == 1).unwrap_or("");
        !drained.is_empty()
    });
    let other = if drained == "pg2" { "pg3" } else { "pg2" };
    eprintln!("the held VIP:3001 connection went to {drained}; draining it");
    let mut wait = Command::new(pglb_bin())
        .args(["node", "drain", drained, "--wait", "--timeout", "60s", "--config"])
        .arg(lb_config("lb1"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pglb node drain --wait");
    for lb in ["lb1", "lb2"] {
        wait_until(Duration::from_secs(5), &format!("{lb} to show {drained} drained"), || node(lb, drained)["drained"] == true);
    }
    let table = pglb_ok("lb2", &["status"]);
    assert!(table.lines().any(|l| l.contains(drained) && l.contains("up (drained)")), "{table}");
    let per_node = read_connections(20);
    assert_eq!(per_node.get(drained), None, "a new read connection reached the drained {drained}: {per_node:?}");
    assert_eq!(per_node.get(other), Some(&20), "{per_node:?}");
    assert!(wait.try_wait().expect("polling drain --wait").is_none(), "drain --wait returned while a connection is open");
    let metrics = run(&["lab", "exec", "lb1", "--", "curl", "-s", "-m", "2", "http://127.0.0.1:8404/metrics"]);
    let metrics = stdout(&metrics);
    let stats = stdout(&run(&["lab", "exec", "lb2", "--", "curl", "-s", "-m", "2", "http://127.0.0.1:8404/stats"]));
    assert!(stats.contains("up (drained)"), "lb2's /stats shows the drain: {stats}");
    assert!(metrics.contains(&format!("pglb_node_drained{{instance_name=\"lb1\",node=\"{drained}\"}} 1")), "{metrics}");
    assert!(metrics.contains(&format!("pglb_backend_open_read_flows{{instance_name=\"lb1\",node=\"{drained}\"}} 1")), "{metrics}");

    // The open connection still works, then closes: --wait returns.
    held.still_open().unwrap_or_else(|e| panic!("the connection open on the drained {drained} was cut: {e}"));
    let closed = Instant::now();
    let out = loop {
        if let Some(status) = wait.try_wait().expect("polling drain --wait") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut wait.stdout.take().expect("stdout"), &mut text).expect("reading drain --wait");
            break (status, text);
        }
        assert!(closed.elapsed() < Duration::from_secs(20), "drain --wait did not return after the connection closed");
        thread::sleep(Duration::from_millis(50));
    };
    eprintln!("drain --wait returned {:?} after the held connection closed:\n{}", closed.elapsed(), out.1);
    assert!(out.0.success() && out.1.contains(&format!("{drained} drained on lb1")) && out.1.contains("no read connection open any more"), "{}", out.1);

    // --- refusals ----------------------------------------------------------------------------
    pglb_refused("lb2", &["node", "drain", drained], &format!("{drained} is already drained"));
    pglb_refused("lb2", &["node", "drain", drained, "--wait"], "this load balancer does not hold the VIP (the one at 172.20.0.21 does)");
    pglb_refused("lb1", &["node", "drain", "pg1"], "pglb switchover");
    pglb_refused("lb1", &["node", "disable", "pg9"], "unknown node `pg9`: the nodes are pg1, pg2, pg3");
    pglb_refused("lb1", &["node", "enable", "pg2"], "pg2 is already enabled");
    let out = Command::new(pglb_bin()).args(["node", "disable", "pg9", "--json", "--config"]).arg(lb_config("lb1")).output().expect("running pglb");
    let refusal: Value = serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| panic!("a --json refusal is one object ({e}): {}", stdout(&out)));
    assert!(!out.status.success() && refusal["error"].as_str().is_some_and(|e| e.contains("unknown node `pg9`")), "{refusal}");
    let json: Value = serde_json::from_str(&pglb_ok("lb1", &["node", "drain", drained, "--wait", "--json"])).expect("drain --json");
    assert_eq!((&json["drained"], &json["open_read_flows"]), (&Value::from(true), &Value::from(0)), "{json:#}");

    // --- undrain on lb2: both, and new connections reach it again ----------------------------
    let said = pglb_ok("lb2", &["node", "undrain", drained]);
    assert!(said.contains(&format!("{drained} undrained on lb2")), "{said}");
    wait_until(Duration::from_secs(5), "lb1 to learn the undrain", || node("lb1", drained)["drained"] == false);
    let per_node = read_connections(20);
    assert!(per_node.get(drained).is_some_and(|&n| n > 0), "no new read connection reached the undrained {drained}: {per_node:?}");

    // --- restarts keep the marks: both stopped, each started from its state file alone ------
    pglb_ok("lb1", &["node", "drain", "pg3"]);
    pglb_ok("lb1", &["node", "disable", "pg2"]);
    wait_until(Duration::from_secs(5), "lb2 to learn both marks", || node("lb2", "pg3")["drained"] == true && node("lb2", "pg2")["disabled"] == true);
    stop("lb2");
    stop("lb1");
    start_pglb("lb1");
    wait_until(Duration::from_secs(30), "the restarted lb1 to answer with both marks", || {
        pglb_status("lb1").is_ok_and(|s| s["nodes"][2]["drained"] == true && s["nodes"][1]["disabled"] == true)
    });
    start_pglb("lb2");
    wait_until(Duration::from_secs(30), "lb1 to hold the VIP and the restarted lb2 to follow it", || {
        pglb_status("lb1").is_ok_and(|s| s["vip_held"] == true && s["ready"] == true) && pglb_status("lb2").is_ok_and(|s| s["vip_held"] == false && s["ready"] == true)
    });
    assert_eq!((node("lb2", "pg3")["drained"].clone(), node("lb2", "pg2")["disabled"].clone()), (Value::from(true), Value::from(true)));
    pglb_ok("lb1", &["node", "undrain", "pg3"]);

    // --- disable: no switchover to it, and the failover passes it over ----------------------
    pglb_refused("lb1", &["switchover", "--to", "pg2"], "pg2 is disabled");
    // Both standbys are equal: the name would pick pg2; disabled, pg3 is promoted.
    let pg_ctl = format!("{PG_BIN}/pg_ctl");
    let out = run(&["lab", "exec", "pg1", "--", "runuser", "-u", "postgres", "--", &pg_ctl, "-D", &format!("{STATE_DIR}/pg1/data"), "-m", "fast", "-w", "stop"]);
    assert!(out.status.success(), "stopping pg1:\n{}{}", stdout(&out), stderr(&out));
    let took = wait_until(Duration::from_secs(60), "a failover to a new writer", || {
        pglb_status("lb1").is_ok_and(|s| s["phase"] == "steady" && s["nodes"].as_array().is_some_and(|n| n.iter().any(|n| n["name"] != "pg1" && n["role"] == "primary" && n["routed_ports"].as_array().is_some_and(|p| p.contains(&Value::from(3000))))))
    });
    let writer = status("lb1")["nodes"].as_array().and_then(|n| n.iter().find(|n| n["role"] == "primary" && n["name"] != "pg1")).map(|n| n["name"].clone());
    eprintln!("failover with pg2 disabled took {took:?}: the writer is {writer:?}");
    assert_eq!(writer, Some(Value::from("pg3")), "the disabled pg2 was promoted");
    assert_eq!(node("lb1", "pg2")["role"], "standby", "pg2 stays a standby");

    // --- the journal: both instances, each mark and its reverse -----------------------------
    for lb in ["lb1", "lb2"] {
        let events = journal(lb);
        for (event, on) in [("drain", drained), ("undrain", drained), ("disable", "pg2"), ("drain", "pg3"), ("undrain", "pg3")] {
            assert!(events.iter().any(|(e, n)| e == event && n == on), "{lb}'s journal has no {event} of {on}: {events:?}");
        }
    }
}
