//! Operating pglb in the lab: the HTTP endpoints a Prometheus scrape and a health check use,
//! VRRP tracking (a load balancer that reaches no PostgreSQL node hands the VIP over, and once it
//! reaches them again stays backup: no preemption of a healthy master), and the short
//! `lb-crash` drill that keeps `cargo xtask drill` working.

use std::time::Duration;

use pglb_tests::{Lab, bring_vip_home, holds_vip, ok, pglb_log, run, stdout, wait_until};
use serde_json::Value;

/// `curl` inside a load balancer's namespace: (HTTP status, body).
fn http_get(host: &str, path: &str) -> (String, String) {
    let url = format!("http://127.0.0.1:8404{path}");
    let out = run(&["lab", "exec", host, "--", "curl", "-s", "-m", "2", "-w", "\n%{http_code}", &url]);
    assert!(out.status.success(), "curl {url} in {host} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().to_owned(), body.to_owned())
}

/// `/health` of a load balancer: (HTTP status, the JSON body parsed).
fn health(host: &str) -> (String, Value) {
    let (code, body) = http_get(host, "/health");
    let doc = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/health on {host} is not JSON ({e}): {body:?}"));
    (code, doc)
}

const PG_HOSTS: [&str; 3] = ["172.20.0.10", "172.20.0.11", "172.20.0.12"];

#[test]
fn http_endpoints_and_vrrp_tracking() {
    let _lab = Lab::up();
    assert!(holds_vip("lb1") && !holds_vip("lb2"), "lab up must leave the VIP on lb1 only");

    // One connection through each port, so the backend counters have something to show.
    ok(&["lab", "psql", "--", "-Atc", "SELECT 1"]);
    ok(&["lab", "psql", "--port", "3001", "--", "-Atc", "SELECT 1"]);

    let (code, body) = health("lb1");
    assert_eq!(code, "200", "the VIP holder forwards: /health must be 200, got {body}");
    assert_eq!((&body["forwarding"], &body["writer"]), (&Value::from(true), &Value::from("pg1")), "/health on lb1: {body}");
    let (code, body) = health("lb2");
    assert_eq!(code, "503", "the backup does not forward: /health must be 503, got {body}");
    assert_eq!(body["forwarding"], false, "/health on lb2: {body}");

    let (code, metrics) = http_get("lb1", "/metrics");
    assert_eq!(code, "200");
    for line in [
        "pglb_node_up{instance_name=\"lb1\",node=\"pg1\"} 1",
        "pglb_node_up{instance_name=\"lb1\",node=\"pg3\"} 1",
        "pglb_node_role{instance_name=\"lb1\",node=\"pg1\",role=\"primary\"} 1",
        "pglb_node_role{instance_name=\"lb1\",node=\"pg2\",role=\"standby\"} 1",
        "pglb_node_timeline{instance_name=\"lb1\",node=\"pg1\"} 1",
        "pglb_vrrp_state{instance_name=\"lb1\",state=\"master\"} 1",
        "pglb_vip_held{instance_name=\"lb1\"} 1",
        "pglb_phase{instance_name=\"lb1\",phase=\"steady\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "/metrics lacks {line:?}:\n{metrics}");
    }
    let new_flows: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("pglb_backend_new_flows_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().expect("a counter value"))
        .sum();
    assert!(new_flows >= 2, "two connections went through the VIP, new flows counted: {new_flows}");
    assert!(metrics.contains("pglb_probe_latency_seconds_count{instance_name=\"lb1\",node=\"pg1\"}"));
    // Peer reports: lb1 hears lb2's timeline and that lb2 reaches the writer.
    wait_until(Duration::from_secs(5), "lb1 to show lb2's report in /metrics", || {
        let (_, m) = http_get("lb1", "/metrics");
        m.lines().any(|l| l == "pglb_peer_timeline{instance_name=\"lb1\",peer=\"172.20.0.22\"} 1")
            && m.lines().any(|l| l == "pglb_peer_reaches_writer{instance_name=\"lb1\",peer=\"172.20.0.22\"} 1")
    });
    let (code, page) = http_get("lb1", "/stats");
    assert_eq!(code, "200");
    let nodes = page.split("<table id=\"nodes\">").nth(1).and_then(|t| t.split("</table>").next()).unwrap_or_default();
    assert!(page.contains("<title>pglb lb1</title>") && nodes.matches("<tr class=").count() == 3, "{page}");

    // Tracking: cut lb1 from every PostgreSQL node; it no longer reaches the writer, lowers its
    // priority (150 - 60 < 100) and lb2 takes the VIP. lb1 must not fail over meanwhile (it lost
    // its quorum and its mastership).
    for addr in PG_HOSTS {
        ok(&["lab", "exec", "lb1", "--", "ip", "route", "add", "blackhole", &format!("{addr}/32")]);
    }
    wait_until(Duration::from_secs(15), "lb2 to take the VIP from an lb1 that reaches no PostgreSQL node", || {
        holds_vip("lb2") && !holds_vip("lb1")
    });
    assert!(pglb_log("lb1").contains("tracking: this instance does not reach the writer: lowering its vrrp priority"), "lb1's log:\n{}", pglb_log("lb1"));
    assert_eq!(
        ok(&["lab", "psql", "--", "-Atc", "SELECT inet_server_addr()"]).trim(),
        "172.20.0.10",
        "writes through lb2 still reach pg1"
    );
    let restored = "priority set priority=150 writer_reachable=true";
    let restored_before = pglb_log("lb1").matches(restored).count();
    for addr in PG_HOSTS {
        ok(&["lab", "exec", "lb1", "--", "ip", "route", "del", "blackhole", &format!("{addr}/32")]);
    }
    wait_until(Duration::from_secs(15), "lb1 to raise its priority back to 150 once it reaches the nodes", || {
        pglb_log("lb1").matches(restored).count() > restored_before
    });
    // The thing tested: lb1 (150 again) does not preempt lb2, a healthy master (issue 18): nothing
    // moves for 1.5 s, over four of lb1's Master_Down_Intervals (341 ms).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(holds_vip("lb2") && !holds_vip("lb1"), "lb1 preempted lb2, a healthy master, once it reached the nodes again:\n{}", pglb_log("lb1"));
    assert_eq!(
        ok(&["lab", "psql", "--", "-Atc", "SELECT inet_server_addr()"]).trim(),
        "172.20.0.10",
        "writes through lb2 still reach pg1 after the heal"
    );
    // Home again as an operator would: a graceful restart of lb2's pglb.
    bring_vip_home();
    assert!(holds_vip("lb1") && !holds_vip("lb2"), "the VIP back on lb1");
    for log in [pglb_log("lb1"), pglb_log("lb2")] {
        assert!(!log.contains("failover: promoting"), "nobody may promote during the cut:\n{log}");
    }
    assert_eq!(ok(&["lab", "psql", "--", "-Atc", "SELECT pg_is_in_recovery()"]).trim(), "f");
}

#[test]
fn short_drill_lb_crash() {
    let _guard = Lab::guard();
    let json = std::env::temp_dir().join(format!("pglb-lb-drill-{}.json", std::process::id()));
    let out = ok(&["drill", "lb-crash", "--runs", "1", "--json", json.to_str().unwrap()]);
    let text = std::fs::read_to_string(&json).expect("drill JSON");
    let _ = std::fs::remove_file(&json);
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("the drill's JSON does not parse ({e}):\n{text}"));
    let run = &doc["lb"][0];
    assert_eq!((run["scenario"].as_str(), run["from"].as_str(), run["to"].as_str()), (Some("lb-crash"), Some("lb1"), Some("lb2")), "{text}");
    let taken = run["vip_taken_ms"].as_f64().unwrap_or_else(|| panic!("vip_taken_ms missing in {text}"));
    let first = run["first_connection_ms"].as_f64().unwrap_or_else(|| panic!("first_connection_ms missing in {text}"));
    eprintln!("lb-crash: lb2 took the VIP {taken:.0} ms after the crash, first new connection via lb2 after {first:.0} ms");
    // Generous bounds (the goal is 1 s; docs/DRILLS.md has the measured figures): lb2 takes over
    // when its Master_Down_Interval (361 ms) after lb1's last advert runs out, so only a fault,
    // not a busy machine, gets this far.
    assert!(taken < 3000.0, "lb2 took the VIP only {taken} ms after the crash:\n{out}");
    assert!(first < 3000.0, "first new connection via lb2 only {first} ms after the crash:\n{out}");
    assert!(out.contains("restored: pglb on lb1 holds the VIP again"), "{out}");
}
