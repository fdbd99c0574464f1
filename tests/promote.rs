//! `pglb failover --to NODE` in the lab: both standbys fall behind (cut from the primary in the
//! switch, pg3 first so pg2 holds one more acknowledged row), the primary writes on alone
//! (`synchronous_commit = local`, more than `max_lag_on_failover_bytes`) and is killed with
//! `kill -9` and kept down. Automatic failover is held back (no candidate: `pglb status` says
//! why); the backup lb2 refuses and names the master; lb1 refuses without `--accept-data-loss`
//! and prints the gap; with it, pg2 is promoted, writes through VIP:3000 land on pg2 with every
//! row it had, lb2 follows, the journal and the hook record a manual failover with the bytes
//! accepted, and the old primary, started again, is fenced, never routed, and rewound by
//! `rejoin_command` as after an automatic failover (its rows of its own are gone).

use std::{
    process::Output,
    time::Duration,
};

use pglb_tests::{Lab, STATE_DIR, app_sql, lb_root, ok, pglb_status, run, stderr, stdout, superuser_sql, wait_until, xtask};
use serde_json::Value;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const MIB: u64 = 1 << 20;

/// A bridge-family nftables table in the switch that drops every frame between pg1 and
/// `standby` (both directions); removed when dropped.
struct CutFromPrimary(&'static str);

impl CutFromPrimary {
    fn install(standby: &'static str) -> CutFromPrimary {
        let script = format!(
            "table bridge pglbcut_promote_{standby} {{\n  chain cut {{\n    type filter hook forward priority 0;\n    iifname \"v-pg1\" oifname \"v-{standby}\" drop\n    iifname \"v-{standby}\" oifname \"v-pg1\" drop\n  }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("pglb-test-promote-{standby}.nft"));
        std::fs::write(&file, script).expect("writing the nft script");
        ok(&["lab", "exec", "sw", "--", "nft", "-f", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(&file);
        CutFromPrimary(standby)
    }
}

impl Drop for CutFromPrimary {
    fn drop(&mut self) {
        let _ = xtask(&["lab", "exec", "sw", "--", "nft", "delete", "table", "bridge", &format!("pglbcut_promote_{}", self.0)]).output();
    }
}

/// `pglb ARGS --config <lb's config>`.
fn pglb(lb: &str, args: &[&str]) -> Output {
    pglb_tests::pglb_on(lb, args)
}

fn status(lb: &str) -> Value {
    pglb_status(lb).unwrap_or_else(|e| panic!("pglb status --json on {lb}: {e}"))
}

fn node<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["nodes"].as_array().and_then(|n| n.iter().find(|n| n["name"] == name)).unwrap_or_else(|| panic!("no node {name} in {s:#}"))
}

/// The node `lb` routes writes to.
fn routed_writer(lb: &str) -> Option<String> {
    let s = status(lb);
    s["nodes"].as_array()?.iter().find(|n| n["routed_ports"].as_array().is_some_and(|p| p.contains(&Value::from(3000)))).map(|n| n["name"].as_str().unwrap_or_default().to_owned())
}

/// One INSERT through VIP:3000: the address of the server that acknowledged it, if one did.
fn write_through_vip(phase: &str) -> Option<String> {
    let sql = format!("INSERT INTO promote (phase) VALUES ('{phase}') RETURNING host(inet_server_addr())");
    let out = run(&["lab", "psql", "--", "-v", "ON_ERROR_STOP=1", "-Atc", &sql]);
    out.status.success().then(|| stdout(&out).lines().next().unwrap_or_default().trim().to_owned())
}

/// Waits until pg1 no longer has a WAL sender for `standby` (the cut took effect).
fn wait_unstreamed(standby: &str) {
    let sql = format!("SELECT count(*) FROM pg_stat_replication WHERE application_name = '{standby}'");
    wait_until(Duration::from_secs(15), &format!("pg1 to lose {standby}'s WAL receiver"), || superuser_sql("pg1", &sql) == "0");
}

fn in_recovery(node: &str) -> bool {
    superuser_sql(node, "SELECT pg_is_in_recovery()") == "t"
}

/// [`in_recovery`] for a node that may be restarting (rewound by `rejoin_command`): `false`
/// while it does not answer.
fn answers_in_recovery(node: &str) -> bool {
    let sock = format!("{STATE_DIR}/{node}/sock");
    let psql = format!("{PG_BIN}/psql");
    let out = run(&["lab", "exec", node, "--", "runuser", "-u", "postgres", "--", &psql, "-X", "-h", &sock, "-U", "postgres", "-At", "-c", "SELECT pg_is_in_recovery()"]);
    out.status.success() && stdout(&out).trim() == "t"
}

fn count(node: &str, like: &str) -> u64 {
    app_sql(node, &format!("SELECT count(*) FROM promote WHERE phase LIKE '{like}'"))
        .parse()
        .unwrap_or_else(|e| panic!("a count on {node}: {e}"))
}

/// `pg_ctl start` of `node`, as an operator does after repairing its host.
fn pg_start(node: &str) {
    let data = format!("{STATE_DIR}/{node}/data");
    let log = format!("{STATE_DIR}/{node}/postgres.log");
    let pg_ctl = format!("{PG_BIN}/pg_ctl");
    let out = run(&["lab", "exec", node, "--", "runuser", "-u", "postgres", "--", &pg_ctl, "-D", &data, "-l", &log, "-w", "-t", "60", "start"]);
    assert!(out.status.success(), "pg_ctl start of {node} failed:\n{}{}", stdout(&out), stderr(&out));
}

/// The JSON a `pglb failover --json` printed.
fn answer(out: &Output) -> Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("pglb failover --json printed no JSON ({e}):\n{}{}", stdout(out), stderr(out)))
}

/// The events of lb's journal.
fn journal(lb: &str) -> Vec<Value> {
    let path = lb_root(lb).join(format!("var/lib/pglb/{lb}/events.jsonl"));
    std::fs::read_to_string(&path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).expect("a journal line is JSON")).collect()
}

#[test]
fn manual_failover_promotes_a_standby_behind_with_the_primary_gone() {
    let _lab = Lab::up();
    app_sql("pg1", "CREATE TABLE promote (i serial PRIMARY KEY, phase text NOT NULL)");
    assert_eq!(write_through_vip("before").as_deref(), Some("172.20.0.10"));

    // pg3 is cut first: the next acknowledged row reaches pg2 only. Then pg2 is cut, and pg1
    // writes on alone.
    let cut3 = CutFromPrimary::install("pg3");
    wait_unstreamed("pg3");
    assert_eq!(write_through_vip("pg2-has-it").as_deref(), Some("172.20.0.10"));
    let cut2 = CutFromPrimary::install("pg2");
    wait_unstreamed("pg2");
    app_sql("pg1", "SET synchronous_commit = local; INSERT INTO promote (phase) SELECT 'lost-' || repeat('x', 200) FROM generate_series(1, 20000)");
    // lb1's probes read pg1's position (every 200 ms), then pg1 dies and stays down.
    std::thread::sleep(Duration::from_secs(1));
    let pid = ok(&["lab", "exec", "pg1", "--", "head", "-1", &format!("{STATE_DIR}/pg1/data/postmaster.pid")]);
    ok(&["lab", "exec", "pg1", "--", "kill", "-9", pid.trim()]);
    drop((cut2, cut3));

    wait_until(Duration::from_secs(15), "lb1 to hold failover back with pg1 gone", || {
        let s = status("lb1");
        s["phase"] == "writer-lost" && s["failover_blocked"].as_str().is_some_and(|b| b.contains("no standby qualifies"))
    });
    let table = stdout(&pglb("lb1", &["status"]));
    assert!(table.contains("failover held back: no standby qualifies for promotion"), "{table}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(in_recovery("pg2") && in_recovery("pg3"), "automatic failover promoted nobody");

    // The backup does not act, and says who does.
    let out = pglb("lb2", &["failover", "--to", "pg2", "--accept-data-loss"]);
    assert!(!out.status.success() && stderr(&out).contains("vrrp backup") && stderr(&out).contains("172.20.0.21"), "lb2: {}{}", stdout(&out), stderr(&out));

    // Without the flag: refused, with the gap.
    let out = pglb("lb1", &["failover", "--to", "pg2"]);
    let said = stderr(&out);
    eprintln!("refused without --accept-data-loss: {said}");
    assert!(!out.status.success() && said.contains("promoting loses at least") && said.contains("add --accept-data-loss to promote pg2 anyway"), "{said}");
    let refused = answer(&pglb("lb1", &["failover", "--to", "pg2", "--json"]));
    assert_eq!((&refused["schema"], &refused["result"], &refused["refusal"]), (&"pglb.failover/1".into(), &"refused".into(), &"data-loss".into()), "{refused:#}");
    let gap = refused["gap"]["bytes"].as_u64().unwrap_or_else(|| panic!("a known gap: {refused:#}"));
    assert!(gap > MIB, "the gap is what pg1 wrote alone (> 1 MiB): {refused:#}");
    assert_eq!(refused["gap"]["primary"], "pg1", "{refused:#}");
    assert!(in_recovery("pg2"), "a refusal promotes nobody");

    // With it: pg2 promoted, pg1 fenced.
    let asked = std::time::Instant::now();
    let out = pglb("lb1", &["failover", "--to", "pg2", "--accept-data-loss", "--json"]);
    let answered = asked.elapsed();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let done = answer(&out);
    eprintln!("promoted: {}", done["message"]);
    assert_eq!((&done["result"], &done["target"], &done["fenced"], &done["timeline"]), (&"promoted".into(), &"pg2".into(), &"pg1".into(), &2.into()), "{done:#}");
    assert!(done["accepted_loss_bytes"].as_u64().is_some_and(|b| b >= gap), "{done:#}");
    assert!(done["held_back"].as_str().is_some_and(|h| h.contains("no standby qualifies")), "{done:#}");

    let mut acked = None;
    wait_until(Duration::from_secs(30), "a write through VIP:3000 after the manual failover", || {
        acked = write_through_vip("after");
        acked.is_some()
    });
    assert_eq!(acked.as_deref(), Some("172.20.0.11"), "writes go to pg2");
    eprintln!("pglb failover answered in {answered:?}; the first write through VIP:3000 acknowledged {:?} after the request", asked.elapsed());
    assert_eq!((count("pg2", "before"), count("pg2", "pg2-has-it"), count("pg2", "lost-%")), (1, 1, 0), "pg2 has what it received, not pg1's lone writes");
    assert_eq!(node(&status("lb1"), "pg1")["state"], "needs-rejoin");
    wait_until(Duration::from_secs(10), "lb2 to follow the new writer", || routed_writer("lb2").as_deref() == Some("pg2"));

    let manual = || journal("lb1").into_iter().find(|e| e["event"] == "failover" && e["manual"] == true);
    wait_until(Duration::from_secs(10), "a manual failover in lb1's journal", || manual().is_some());
    let event = manual().expect("found");
    assert_eq!((&event["old_writer"], &event["new_writer"], &event["timeline"]), (&"pg1".into(), &"pg2".into(), &2.into()), "{event:#}");
    assert_eq!(event["accepted_loss_bytes"], done["accepted_loss_bytes"], "{event:#}");
    wait_until(Duration::from_secs(10), "lb1's hook to see the manual failover", || {
        let hooks = std::fs::read_to_string(lb_root("lb1").join("var/lib/pglb/lb1/hooks.log")).unwrap_or_default();
        hooks.lines().any(|l| l.contains("\"manual\":true") && l.contains("PGLB_MANUAL=true"))
    });

    // The old primary comes back on timeline 1: fenced, never routed, rewound by pglb.
    pg_start("pg1");
    wait_until(Duration::from_secs(90), "pg1 to be rewound into a standby of pg2 (rejoin_command)", || answers_in_recovery("pg1"));
    assert_eq!(write_through_vip("rejoined").as_deref(), Some("172.20.0.11"), "writes still go to pg2");
    wait_until(Duration::from_secs(30), "pg1 to replay pg2's rows", || {
        let out = run(&["lab", "psql", "--node", "pg1", "--", "-At", "-c", "SELECT count(*) FROM promote WHERE phase = 'rejoined'"]);
        out.status.success() && stdout(&out).trim() == "1"
    });
    assert_eq!(count("pg1", "lost-%"), 0, "pg1's lone writes were rewound away");
}
