//! Live reload in the lab: under pgbench -S -C (a new connection per transaction) through
//! VIP:3001, a new read weight for pg2 in lb1's config file and `pglb reload` apply without a
//! failed transaction: the reload answers with the key, the reader Maglev table follows the
//! weights (`pglb map dump`), and SIGHUP does the same for pg3. A new VIP is refused naming
//! `[dataplane] vip`, a file that does not validate is refused with its error, and neither
//! changes anything. A node added at the end of `[[node]]` is probed and shows in the status;
//! removed from the end, it leaves the status and the read table, and comes back when added
//! again. Every outcome is in `/metrics` and in `pglb events`.

use std::{
    fs,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use pglb_tests::{Lab, lb_config, netns, pglb_bin, pglb_log, pglb_pid, signal, stderr, stdout, vip_answers, wait_until};
use serde_json::Value;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const VIP: &str = "172.20.0.100";
const PGPASS: &str = "/run/pglb-lab/secrets/client.pgpass";
/// How long the pgbench run lasts: long enough to hold both live reloads.
const BENCH_SECONDS: u64 = 15;

/// `pglb ARGS --config <lb1's config>`.
fn pglb(args: &[&str]) -> Output {
    Command::new(pglb_bin()).args(args).arg("--config").arg(lb_config("lb1")).output().expect("running pglb")
}

/// A command in pgha-client with the lab's client pgpass.
fn client(args: &[&str]) -> Command {
    let mut c = Command::new(pglb_tests::xtask_bin());
    c.args(["lab", "exec", "client", "--", "env", &format!("PGPASSFILE={PGPASS}"), "PGCONNECT_TIMEOUT=5"]);
    c.args(args).stdin(Stdio::null());
    c
}

/// A copy of lb1's config as the lab wrote it: `pglb map dump` reads it (lb1's own file is
/// made invalid on purpose below).
const VALID_COPY: &str = "/run/pglb-lab/lb1/reload-test.toml";

/// lb1's reader slots in the live Maglev table, by node address: (pg2's, pg3's).
fn reader_slots() -> (u64, u64) {
    let out = Command::new(pglb_bin()).args(["map", "dump", "--json", "--config", VALID_COPY]).output().expect("running pglb map dump");
    assert!(out.status.success(), "pglb map dump: {}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("map dump JSON");
    let slots = |addr: &str| {
        v["readers"]["slots"].as_array().and_then(|s| s.iter().find(|r| r["addr"].as_str().is_some_and(|a| a.starts_with(addr)))).map_or(0, |r| r["slots"].as_u64().unwrap_or(0))
    };
    (slots("172.20.0.11"), slots("172.20.0.12"))
}

/// Writes lb1's config with `from` replaced by `to` (in the text as it is now).
fn edit_config(from: &str, to: &str) {
    let path = lb_config("lb1");
    let text = fs::read_to_string(&path).expect("lb1's config");
    assert!(text.contains(from), "lb1's config has no {from:?}");
    fs::write(&path, text.replacen(from, to, 1)).expect("writing lb1's config");
}

/// A node's state in lb1's `pglb status --json`; `None` when it is not listed.
fn node_state(name: &str) -> Option<String> {
    let out = pglb(&["status", "--json"]);
    assert!(out.status.success(), "pglb status: {}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("status JSON");
    v["nodes"].as_array()?.iter().find(|n| n["name"] == name).map(|n| n["state"].as_str().unwrap_or_default().to_owned())
}

/// The server a new connection to VIP:`port` reaches, if one answers.
fn vip_server(port: u16) -> Option<String> {
    let out = pglb_tests::run(&["lab", "psql", "--port", &port.to_string(), "--", "-v", "ON_ERROR_STOP=1", "-Atc", "SELECT host(inet_server_addr())"]);
    if !out.status.success() {
        eprintln!("psql through VIP:{port}: {}", stderr(&out).trim());
    }
    out.status.success().then(|| stdout(&out).trim().to_owned())
}

/// What lb1 logged since `from` (a length of its log) about reloads, routes and its readiness.
fn decisions(from: usize) -> String {
    let log = pglb_log("lb1");
    let words = ["reload", "route:", "stood still", "decided", "lease", "vrrp"];
    log.get(from..).unwrap_or_default().lines().filter(|l| words.iter().any(|w| l.contains(w))).collect::<Vec<_>>().join("\n")
}

/// The value of one sample line of lb1's `/metrics`.
fn metric(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name_and_labels} in /metrics:\n{metrics}"))
}

fn metrics() -> String {
    let out = Command::new("ip").args(["netns", "exec", &netns("lb1"), "curl", "-s", "-m", "2", "http://127.0.0.1:8404/metrics"]).output().expect("curl /metrics");
    stdout(&out)
}

/// pgbench's (transactions processed, failed transactions) from its summary.
fn pgbench_summary(run: Child) -> (u64, u64) {
    let out = run.wait_with_output().expect("waiting for pgbench");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "pgbench exited with {}:\n{text}", out.status);
    let field = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix)).map(|rest| rest.trim().to_owned());
    let processed = field("number of transactions actually processed:")
        .and_then(|s| s.split('/').next().and_then(|n| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no transaction count in pgbench's output:\n{text}"));
    let failed = field("number of failed transactions:").and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok())).unwrap_or(0);
    (processed, failed)
}

#[test]
fn read_weights_reload_live_under_load_and_restart_keys_and_bad_files_change_nothing() {
    let _lab = Lab::up();
    let init = client(&[&format!("{PG_BIN}/pgbench"), "-h", VIP, "-p", "3000", "-U", "app", "-i", "-s", "1", "-q", "app"]).output().expect("pgbench -i");
    assert!(init.status.success(), "pgbench -i through VIP:3000: {}{}", stdout(&init), stderr(&init));
    wait_until(Duration::from_secs(20), "pgbench_accounts on both standbys", || {
        ["pg2", "pg3"].iter().all(|n| pglb_tests::run(&["lab", "psql", "--node", n, "--", "-At", "-c", "SELECT count(*) FROM pgbench_accounts"]).stdout.starts_with(b"100000"))
    });
    let original = fs::read_to_string(lb_config("lb1")).expect("lb1's config");
    fs::write(VALID_COPY, &original).expect("a copy of lb1's config");
    let (pg2, pg3) = reader_slots();
    assert!(pg2.abs_diff(pg3) <= 2, "equal weights split the table evenly: pg2 {pg2}, pg3 {pg3}");

    // --- live: a read weight, by `pglb reload` and by SIGHUP, under pgbench -S -C ------------
    let bench = client(&[&format!("{PG_BIN}/pgbench"), "-h", VIP, "-p", "3001", "-U", "app", "-c", "4", "-j", "2", "-C", "-S", "-T", &BENCH_SECONDS.to_string(), "app"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pgbench -S -C through VIP:3001");
    std::thread::sleep(Duration::from_secs(3));
    edit_config("name = \"pg2\"\nhost = \"172.20.0.11\"", "name = \"pg2\"\nhost = \"172.20.0.11\"\nread_weight = 300");
    let out = pglb(&["reload", "--json"]);
    assert!(out.status.success(), "pglb reload: {}{}", stdout(&out), stderr(&out));
    let answer: Value = serde_json::from_str(&stdout(&out)).expect("pglb reload --json");
    assert_eq!((&answer["result"], &answer["changed"]), (&Value::from("ok"), &serde_json::json!(["[[node]] pg2 read_weight"])), "{answer}");
    let (pg2, pg3) = reader_slots();
    assert!(pg2 > 2 * pg3 && pg3 > 0, "weights 300:100 give pg2 about three times pg3's slots: pg2 {pg2}, pg3 {pg3}");
    eprintln!("pglb reload: pg2 read_weight 300: slots pg2 {pg2}, pg3 {pg3}");

    std::thread::sleep(Duration::from_secs(3));
    edit_config("name = \"pg3\"\nhost = \"172.20.0.12\"", "name = \"pg3\"\nhost = \"172.20.0.12\"\nread_weight = 300");
    signal(pglb_pid("lb1"), libc::SIGHUP);
    wait_until(Duration::from_secs(5), "SIGHUP to even the weights out again", || {
        let (a, b) = reader_slots();
        a.abs_diff(b) <= 2
    });
    assert!(pglb_log("lb1").contains("reload: applied [[node]] pg3 read_weight"), "lb1 logs the SIGHUP reload");

    let (processed, failed) = pgbench_summary(bench);
    eprintln!("pgbench -S -C through VIP:3001 across two reloads: {processed} transactions, {failed} failed");
    assert!(processed > 100, "pgbench ran: {processed} transactions");
    assert_eq!(failed, 0, "no transaction failed across the reloads");

    // --- refused: a key that needs a restart, and a file that does not validate -------------
    let slots = reader_slots();
    edit_config("vip = \"172.20.0.100/16\"", "vip = \"172.20.0.101/16\"");
    let out = pglb(&["reload"]);
    assert!(!out.status.success(), "a new VIP must be refused: {}", stdout(&out));
    let said = stderr(&out);
    assert!(said.contains("reload refused: [dataplane] vip needs a restart"), "{said}");
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    assert_eq!(reader_slots(), slots, "a refused reload changes nothing");
    assert!(vip_answers(3001), "the VIP still answers");

    fs::write(lb_config("lb1"), original.replacen("vrid = 51", "vrid = 0", 1)).expect("writing lb1's config");
    let out = pglb(&["reload", "--json"]);
    assert!(!out.status.success(), "an invalid file must be refused");
    let answer: Value = serde_json::from_str(&stdout(&out)).expect("pglb reload --json");
    assert_eq!(answer["result"], "invalid", "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("vrid 0")), "{answer}");
    assert_eq!(reader_slots(), slots, "an invalid file changes nothing");

    // Back to the file the lab started with: both weights 100 again.
    fs::write(lb_config("lb1"), &original).expect("writing lb1's config");
    let out = pglb(&["reload"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("reload: applied [[node]] pg2 read_weight, [[node]] pg3 read_weight"), "{}", stdout(&out));
    let out = pglb(&["reload"]);
    assert!(stdout(&out).contains("reload: no change"), "{}", stdout(&out));

    // --- nodes: added at the end and probed; removed from the end and no longer routed -------
    let pg3 = "name = \"pg3\"\nhost = \"172.20.0.12\"";
    edit_config(pg3, &format!("{pg3}\n\n[[node]]\nname = \"pg4\"\nhost = \"172.20.0.13\""));
    let out = pglb(&["reload"]);
    assert!(stdout(&out).contains("reload: applied [[node]] pg4 (added)"), "{}{}", stdout(&out), stderr(&out));
    wait_until(Duration::from_secs(10), "pg4 (no such host) to show as down in lb1's status", || node_state("pg4").as_deref() == Some("down"));
    assert_eq!(vip_server(3000).as_deref(), Some("172.20.0.10"), "writes still reach pg1 with pg4 added");
    assert!(vip_server(3001).is_some_and(|s| s == "172.20.0.11" || s == "172.20.0.12"), "reads still reach a standby with pg4 added");
    fs::write(lb_config("lb1"), &original).expect("writing lb1's config");
    let out = pglb(&["reload"]);
    assert!(stdout(&out).contains("reload: applied [[node]] pg4 (removed)"), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(node_state("pg4"), None, "pg4 is gone from the status");

    let log_from = pglb_log("lb1").len();
    edit_config(&format!("[[node]]\n{pg3}"), "");
    let out = pglb(&["reload"]);
    assert!(stdout(&out).contains("reload: applied [[node]] pg3 (removed)"), "{}{}", stdout(&out), stderr(&out));
    let (pg2, pg3) = reader_slots();
    eprintln!("lb1 after pg3 was removed:\n{}", decisions(log_from));
    assert!(pg3 == 0 && pg2 > 4000, "pg3 left the read table, pg2 has it all: pg2 {pg2}, pg3 {pg3}");
    assert_eq!(node_state("pg3"), None, "pg3 is gone from the status");
    let mut server = None;
    wait_until(Duration::from_secs(5), "a read through VIP:3001", || {
        server = vip_server(3001);
        server.is_some()
    });
    assert_eq!(server.as_deref(), Some("172.20.0.11"), "reads go to pg2 alone");
    fs::write(lb_config("lb1"), &original).expect("writing lb1's config");
    let out = pglb(&["reload"]);
    assert!(stdout(&out).contains("reload: applied [[node]] pg3 (added)"), "{}{}", stdout(&out), stderr(&out));
    wait_until(Duration::from_secs(10), "pg3 back in the read table", || {
        let (a, b) = reader_slots();
        b > 0 && a.abs_diff(b) <= 2
    });
    assert_eq!(node_state("pg3").as_deref(), Some("up"));

    // --- what operators see: /metrics and the journal ----------------------------------------
    let m = metrics();
    assert_eq!(metric(&m, "pglb_config_reloads_total{instance_name=\"lb1\",result=\"ok\"}"), 8.0, "two weights, the restore, the unchanged file, pg4 in and out, pg3 out and in");
    assert_eq!(metric(&m, "pglb_config_reloads_total{instance_name=\"lb1\",result=\"needs_restart\"}"), 1.0);
    assert_eq!(metric(&m, "pglb_config_reloads_total{instance_name=\"lb1\",result=\"invalid\"}"), 1.0);
    assert_eq!(metric(&m, "pglb_config_last_reload_successful{instance_name=\"lb1\"}"), 1.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let last = metric(&m, "pglb_config_last_reload_success_timestamp_seconds{instance_name=\"lb1\"}");
    assert!((now - 30.0..=now + 1.0).contains(&last), "the last good reload was just now: {last} vs {now}");

    let out = pglb(&["events", "--since", "10m", "--json"]);
    assert!(out.status.success(), "pglb events: {}", stderr(&out));
    let texts: Vec<String> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|e| e["event"] == "reload")
        .map(|e| e["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(texts.len(), 10, "every reload is journaled: {texts:#?}");
    assert!(texts.iter().any(|t| t.contains("[[node]] pg3 read_weight") && t.ends_with("(SIGHUP)")), "{texts:#?}");
    assert!(texts.iter().any(|t| t.contains("[dataplane] vip needs a restart") && t.ends_with("(pglb reload)")), "{texts:#?}");
    assert!(texts.iter().any(|t| t.contains("does not validate")), "{texts:#?}");
}
