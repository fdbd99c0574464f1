//! TLS to PostgreSQL in the lab: every node runs with `ssl = on`; pglb's probes and the standbys'
//! streams use TLS (`pg_stat_ssl`); `hostssl` refuses the pglb role without TLS; a switchover
//! re-points a standby with a passfile and TLS in `primary_conninfo`; and a pglb that
//! trusts the wrong CA (`verify-full` against a second CA) fails closed: every probe fails with
//! a certificate error, it routes nothing, and the instance that trusts the right CA neither
//! fails over nor changes its routing.

use std::{fs, time::Duration};

use pglb_tests::{
    Lab, STATE_DIR, lb_config, lb_root, ok, pglb_log, pglb_pid, pglb_status, run, signal, start_pglb, stderr, stdout,
    superuser_sql, vip_answers, wait_gone, wait_until,
};
use serde_json::Value;

const NODES: [(&str, &str); 3] = [("pg1", "172.20.0.10"), ("pg2", "172.20.0.11"), ("pg3", "172.20.0.12")];
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
/// A primary's timeline as the probes read it (exact right after a promotion, unlike the last
/// checkpoint's).
const TIMELINE: &str = "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int";

/// psql as pglb's role from lb1's namespace to `host`, with the conninfo's TLS words `tls`.
fn psql_as_pglb(host: &str, tls: &str, query: &str) -> std::process::Output {
    let password = fs::read_to_string(format!("{STATE_DIR}/secrets/pglb.password")).expect("the lab's pglb password");
    let conninfo = format!("host={host} user=pglb dbname=postgres connect_timeout=3 {tls}");
    run(&["lab", "exec", "lb1", "--", "env", &format!("PGPASSWORD={}", password.trim()), PSQL, "-X", "-At", "-d", &conninfo, "-c", query])
}

/// (TLS sessions, all sessions) of `filter` on a node (`pg_stat_activity` joined with `pg_stat_ssl`).
fn ssl_sessions(node: &str, filter: &str) -> (u32, u32) {
    let row = superuser_sql(
        node,
        &format!("SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE {filter}"),
    );
    let (tls, all) = row.split_once('|').unwrap_or_else(|| panic!("{node}: {row:?}"));
    (tls.parse().expect("a count"), all.parse().expect("a count"))
}

/// A pglb command against a load balancer's installed config.
fn pglb(args: &[&str], lb: &str) -> std::process::Output {
    pglb_tests::pglb_on(lb, args)
}

fn node<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"].as_array().and_then(|n| n.iter().find(|n| n["name"] == name)).unwrap_or_else(|| panic!("no node {name} in {status}"))
}

#[test]
fn probes_and_replication_use_tls_and_a_wrong_ca_fails_closed() {
    let _lab = Lab::up();

    // Every node serves TLS; pglb's probe sessions from both load balancers use it.
    for (name, _) in NODES {
        assert_eq!(superuser_sql(name, "SHOW ssl"), "on", "{name}");
        wait_until(Duration::from_secs(10), &format!("{name}: probe sessions of lb1 and lb2"), || {
            superuser_sql(name, "SELECT count(DISTINCT application_name) FROM pg_stat_activity WHERE application_name IN ('pglb-lb1', 'pglb-lb2')") == "2"
        });
        let (tls, all) = ssl_sessions(name, "a.usename = 'pglb'");
        assert!(all >= 2 && tls == all, "{name}: {tls} of pglb's {all} sessions use TLS");
    }
    // The standbys stream over TLS, with primary_conninfo naming a passfile and verify-full.
    let streams = superuser_sql("pg1", "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)");
    assert_eq!(streams, "2|2", "pg1: TLS streams | streams");
    for standby in ["pg2", "pg3"] {
        let conninfo = superuser_sql(standby, "SHOW primary_conninfo");
        assert!(conninfo.contains("sslmode=verify-full") && conninfo.contains("passfile="), "{standby}: {conninfo}");
        assert!(!conninfo.contains("password="), "{standby}: a password in primary_conninfo: {conninfo}");
    }

    // pg_hba: the pglb role over TLS logs in, without TLS it is refused.
    let ca = format!("{STATE_DIR}/tls/ca.crt");
    let with_tls = psql_as_pglb("172.20.0.10", &format!("sslmode=verify-full sslrootcert={ca}"), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    assert!(with_tls.status.success(), "pglb over TLS: {}", stderr(&with_tls));
    assert_eq!(String::from_utf8_lossy(&with_tls.stdout).trim(), "t");
    let plain = psql_as_pglb("172.20.0.10", "sslmode=disable", "SELECT 1");
    assert!(!plain.status.success(), "pglb without TLS logged in");
    assert!(stderr(&plain).contains("no encryption"), "refused by pg_hba for want of TLS: {}", stderr(&plain));

    // A switchover to pg2: pg1 is demoted by `pglb node rejoin --sslmode verify-full`, and pglb
    // re-points pg3 with the primary_conninfo of [replication]: a passfile, TLS, verify-full.
    let out = pglb(&["switchover", "--to", "pg2"], "lb1");
    assert!(out.status.success() && stdout(&out).contains("switchover done: pg1 -> pg2"), "pglb switchover: {}{}", stdout(&out), stderr(&out));
    wait_until(Duration::from_secs(60), "pg1 and pg3 streaming from pg2 over TLS", || {
        superuser_sql("pg2", "SELECT count(*) FILTER (WHERE s.ssl) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.state = 'streaming'") == "2"
    });
    let repointed = superuser_sql("pg3", "SHOW primary_conninfo");
    let want = "host=172.20.0.11 port=5432 user=replicator passfile=/run/pglb-lab/replication.pgpass sslmode=verify-full sslrootcert=/run/pglb-lab/tls/ca.crt application_name=pg3";
    assert_eq!(repointed, want, "pg3's primary_conninfo as pglb's re-point wrote it");
    let (primary, standbys) = ("pg2", ["pg1", "pg3"]);

    // lb2 (the backup) trusting the wrong CA: restarted with sslrootcert pointing at it.
    let before = ok(&["lab", "status"]);
    let journal = |lb: &str| fs::read_to_string(lb_root(lb).join(format!("var/lib/pglb/{lb}/events.jsonl"))).unwrap_or_default();
    let journaled = [journal("lb1").len(), journal("lb2").len()];
    let timeline = superuser_sql(primary, TIMELINE);
    let pid = pglb_pid("lb2");
    signal(pid, libc::SIGTERM);
    wait_gone(pid, Duration::from_secs(20), "pglb on lb2 to stop");
    let wrong = lb_root("lb2").join("etc/pglb/wrong-ca.crt");
    fs::copy(format!("{STATE_DIR}/tls/wrong-ca.crt"), &wrong).expect("installing the wrong CA");
    let config = fs::read_to_string(lb_config("lb2")).expect("lb2's config");
    let rewritten = config.replace("etc/pglb/pg-ca.crt", "etc/pglb/wrong-ca.crt");
    assert_ne!(rewritten, config, "lb2's config names etc/pglb/pg-ca.crt");
    fs::write(lb_config("lb2"), rewritten).expect("rewriting lb2's config");
    let log_from = pglb_log("lb2").len();
    start_pglb("lb2");
    wait_until(Duration::from_secs(20), "lb2 to answer pglb status", || pglb_status("lb2").is_ok());
    // Twenty probe rounds: long enough for a node that answered to count as up (up_after = 3).
    std::thread::sleep(Duration::from_secs(4));
    let log = pglb_log("lb2")[log_from..].to_owned();
    for (name, _) in NODES {
        let failed = log.lines().any(|l| l.contains("probe: node does not answer") && l.contains(name) && l.contains("certificate verify failed"));
        assert!(failed, "lb2's log has no certificate failure for {name}:\n{log}");
        let (tls, all) = ssl_sessions(name, "a.application_name = 'pglb-lb2'");
        assert_eq!((tls, all), (0, 0), "{name}: a session of lb2 got through");
    }
    let lb2 = pglb_status("lb2").expect("lb2's status");
    for (name, _) in NODES {
        let n = node(&lb2, name);
        assert_ne!(n["state"], "up", "lb2 counts {name} up: {n}");
        assert_eq!(n["routed_ports"], serde_json::json!([]), "lb2 routes to {name}: {n}");
    }
    assert_eq!(lb2["vip_held"], false, "lb2 took the VIP: {lb2}");

    // lb1 goes on as before: no failover, the same writer and timeline, the VIP answers.
    let lb1 = pglb_status("lb1").expect("lb1's status");
    assert_eq!((&lb1["vip_held"], &lb1["phase"]), (&Value::from(true), &Value::from("steady")), "{lb1}");
    assert!(node(&lb1, primary)["routed_ports"].as_array().is_some_and(|p| p.contains(&Value::from(3000))), "lb1's writer: {lb1}");
    assert_eq!(superuser_sql(primary, "SELECT pg_is_in_recovery()"), "f", "{primary} is still the primary");
    for standby in standbys {
        assert_eq!(superuser_sql(standby, "SELECT pg_is_in_recovery()"), "t", "{standby} is still a standby");
    }
    assert_eq!(superuser_sql(primary, TIMELINE), timeline, "no new timeline");
    assert!(vip_answers(3000) && vip_answers(3001), "the VIP answers");
    for (lb, from) in [("lb1", journaled[0]), ("lb2", journaled[1])] {
        let text = journal(lb);
        let moved = text[from..].lines().filter(|l| l.contains("\"event\":\"failover\"") || l.contains("\"event\":\"fence\"")).collect::<Vec<_>>();
        assert!(moved.is_empty(), "{lb} failed over or fenced: {moved:?}; lab status before:\n{before}");
    }
}
