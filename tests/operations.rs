//! Operating pglb in the lab: the HTTP endpoints a Prometheus scrape and a health check use
//! (Patroni's checks per instance and per node, a lag limit, the allow-list and bearer auth),
//! JSON logs, the Grafana dashboard's queries against a real scrape, VRRP tracking (a load balancer that reaches no PostgreSQL node hands the VIP over, and once it
//! reaches them again stays backup: no preemption of a healthy master), and the short
//! `lb-crash` drill that keeps `cargo xtask drill` working.

use std::time::Duration;

use pglb_tests::{Lab, bring_vip_home, holds_vip, lb_config, lb_root, ok, pglb_log, pglb_pid, run, signal, start_pglb_with, stdout, wait_gone, wait_until};
use serde_json::Value;

/// `curl` inside a load balancer's namespace: (HTTP status, body).
fn http_get(host: &str, path: &str) -> (String, String) {
    curl(host, &format!("http://127.0.0.1:8404{path}"), &[])
}

/// `curl URL` with more arguments inside a lab host's namespace: (HTTP status, body); the
/// status is `000` when nothing answered.
fn curl(host: &str, url: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["lab", "exec", host, "--", "curl", "-s", "-m", "2", "-w", "\n%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = run(&args);
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    assert!(out.status.success() || code.trim() == "000", "curl {url} in {host} failed: {}", String::from_utf8_lossy(&out.stderr));
    (code.trim().to_owned(), body.to_owned())
}

/// A JSON body, or a panic that shows it.
fn json(what: &str, body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {body:?}"))
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
    assert!(metrics.lines().any(|l| l.starts_with("pglb_build_info{instance_name=\"lb1\",version=\"") && l.ends_with("} 1")), "/metrics lacks pglb_build_info:\n{metrics}");
    promtool_check_metrics(&metrics);
    let (_, backup_metrics) = http_get("lb2", "/metrics");
    grafana_queries_parse_and_name_emitted_metrics(&format!("{metrics}{backup_metrics}"));
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

    health_checks();
    lag_limit_excludes_a_lagging_standby();

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

    access_rules_and_json_logs();
}

/// `promtool check metrics` (the exposition format and Prometheus' naming lints) on a scrape;
/// promtool comes with `cargo xtask setup`.
fn promtool_check_metrics(metrics: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting promtool (run `cargo xtask setup`): {e}"));
    child.stdin.take().expect("promtool's stdin").write_all(metrics.as_bytes()).expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool's output");
    assert!(out.status.success(), "promtool check metrics refuses /metrics:\n{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
}

/// Every query of `config/grafana/pglb.json` parses (promtool checks it as a recording rule,
/// Grafana's variables replaced by values) and names only metrics that the lab's /metrics
/// emits (`scrape`: both load balancers'); a metric selector outside `pglb_` is refused too.
fn grafana_queries_parse_and_name_emitted_metrics(scrape: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/grafana/pglb.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("reading the dashboard")).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 30, "the dashboard has {} queries", exprs.len());
    let emitted: std::collections::BTreeSet<&str> =
        scrape.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(|l| l.split(['{', ' ']).next().unwrap_or_default()).collect();
    let concrete: Vec<String> = exprs
        .iter()
        .map(|e| e.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$__interval", "15s").replace("$instance", ".*"))
        .collect();
    for (expr, query) in exprs.iter().zip(&concrete) {
        assert!(!query.contains('$'), "a Grafana variable the test does not know in {expr:?}");
        let names = metric_names(query);
        assert!(names.iter().any(|n| n.starts_with("pglb_")), "no pglb metric in {expr:?}");
        for name in names {
            assert!(emitted.contains(name.as_str()), "{expr:?} names {name}, which the lab's /metrics does not emit");
        }
    }
    let rules = serde_json::json!({ "groups": [{ "name": "grafana", "rules": concrete.iter().enumerate()
        .map(|(i, q)| serde_json::json!({ "record": format!("grafana:query_{i}"), "expr": q })).collect::<Vec<_>>() }] });
    let file = std::env::temp_dir().join(format!("pglb-grafana-{}.rules.json", std::process::id()));
    std::fs::write(&file, rules.to_string()).expect("writing the rules file");
    let out = std::process::Command::new("promtool").arg("check").arg("rules").arg(&file).output().unwrap_or_else(|e| panic!("starting promtool (run `cargo xtask setup`): {e}"));
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "promtool does not parse the dashboard's queries:\n{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
}

/// Every `expr` under `v` (panels, rows, targets).
fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            m.values().for_each(|x| collect_exprs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

/// The metric names a PromQL query selects: identifiers outside quotes that start with `pglb_`
/// or stand before a `{`. Panics on any other selector (`up{...}`): the dashboard reads pglb only.
fn metric_names(query: &str) -> Vec<String> {
    let (mut names, mut chars) = (Vec::new(), query.char_indices().peekable());
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            while let Some((_, q)) = chars.next() {
                if q == '\\' {
                    chars.next();
                } else if q == '"' {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut end = i + 1;
            while let Some(&(j, d)) = chars.peek() {
                if !(d.is_ascii_alphanumeric() || d == '_' || d == ':') {
                    break;
                }
                end = j + 1;
                chars.next();
            }
            let word = &query[i..end];
            let selector = query[end..].trim_start().starts_with('{');
            if word.starts_with("pglb_") {
                names.push(word.to_owned());
            } else {
                assert!(!selector, "{query:?} selects {word}, not a pglb metric");
            }
        } else if c.is_ascii_digit() {
            while chars.peek().is_some_and(|&(_, d)| d.is_ascii_alphanumeric() || d == '.') {
                chars.next();
            }
        }
    }
    names
}

/// Patroni's checks: for this instance (the VIP holder routes a writer, the backup nothing)
/// and per node (the same answer from either load balancer), `/node/<name>` as JSON, and
/// one-line refusals.
fn health_checks() {
    let (code, body) = http_get("lb1", "/primary");
    assert_eq!(code, "200", "/primary on the VIP holder: {body}");
    assert_eq!(json("/primary", &body)["writer"], "pg1", "{body}");
    let (code, body) = http_get("lb2", "/primary");
    assert_eq!(code, "503", "/primary on the backup, which forwards nothing: {body}");
    let (code, body) = http_get("lb1", "/replica");
    assert_eq!(code, "200", "{body}");
    assert_eq!(json("/replica", &body)["nodes"], serde_json::json!(["pg2", "pg3"]), "{body}");
    for host in ["lb1", "lb2"] {
        for (path, want) in [
            ("/node/pg1/primary", "200"),
            ("/node/pg2/primary", "503"),
            ("/node/pg1/replica", "503"),
            ("/node/pg2/replica", "200"),
            ("/node/pg1/read-only", "200"),
            ("/node/pg2/read-only", "200"),
            ("/node/pg2/health", "200"),
        ] {
            let (code, body) = http_get(host, path);
            assert_eq!(code, want, "{path} on {host}: {body}");
        }
    }
    let (code, body) = http_get("lb1", "/node/pg2");
    assert_eq!(code, "200", "{body}");
    let pg2 = json("/node/pg2", &body);
    assert_eq!((&pg2["role"], &pg2["state"], &pg2["timeline"]), (&Value::from("standby"), &Value::from("up"), &Value::from(1)), "{body}");
    assert_eq!((&pg2["routed_ports"], &pg2["writer"], &pg2["reader"]), (&serde_json::json!([3001]), &Value::from(false), &Value::from(true)), "{body}");
    // HAProxy's `option httpchk OPTIONS …`: the same status, no body.
    let (code, body) = curl("lb2", "http://127.0.0.1:8404/node/pg1/primary", &["-X", "OPTIONS"]);
    assert_eq!((code.as_str(), body.as_str()), ("200", ""), "OPTIONS /node/pg1/primary on lb2");
    assert_eq!(curl("lb1", "http://127.0.0.1:8404/node/pg2/primary", &["-X", "OPTIONS"]).0, "503");
    assert_eq!(http_get("lb1", "/node/pg9/primary").0, "404");
    let (code, body) = http_get("lb1", "/replica?lag=soon");
    assert_eq!((code.as_str(), body.as_str()), ("400", "lag=soon is neither bytes (1048576, 16MB) nor a duration (10s, 500ms)\n"));
}

/// A lag limit excludes a standby that is still routed: pg1's route to pg2 becomes a blackhole
/// (pg2 receives no more WAL, so its replay lag in time stays 0 and it stays a reader; a
/// blackhole on pg2's side would not do: it stops pg2's ACKs, not the WAL arriving), a commit
/// on pg1 leaves it some bytes behind; `?lag=0` then refuses pg2 and accepts pg3.
fn lag_limit_excludes_a_lagging_standby() {
    ok(&["lab", "exec", "pg1", "--", "ip", "route", "add", "blackhole", "172.20.0.11/32"]);
    ok(&["lab", "psql", "--", "-Atc", "SELECT txid_current()"]);
    wait_until(Duration::from_secs(10), "lb1 to see pg2 behind and pg3 caught up", || {
        http_get("lb1", "/node/pg2/replica?lag=0").0 == "503"
            && http_get("lb1", "/node/pg2/replica?lag=16MB").0 == "200"
            && http_get("lb1", "/node/pg3/replica?lag=0").0 == "200"
    });
    let (code, body) = http_get("lb1", "/node/pg2/replica");
    assert_eq!(code, "200", "without a limit pg2 is still a routed reader: {body}");
    assert!(json("/node/pg2", &body)["lag_bytes"].as_u64().is_some_and(|l| l > 0), "{body}");
    let (code, body) = http_get("lb1", "/replica?lag=0");
    assert_eq!(code, "200", "{body}");
    assert_eq!(json("/replica?lag=0", &body)["nodes"], serde_json::json!(["pg3"]), "{body}");
    ok(&["lab", "exec", "pg1", "--", "ip", "route", "del", "blackhole", "172.20.0.11/32"]);
    wait_until(Duration::from_secs(60), "pg2 to catch up once it reaches pg1 again", || http_get("lb1", "/node/pg2/replica?lag=0").0 == "200");
}

/// pglb on lb2 again, with `[http]` on its own address, answering lb1 only, a bearer token on
/// every endpoint, and `[log] format = "json"`: refusals (403 from elsewhere, 401 without the
/// token), an answer with it, and every log line since the restart one JSON object.
fn access_rules_and_json_logs() {
    const TOKEN: &str = "pglb-lab-http-token-0123456789";
    let token_file = lb_root("lb2").join("etc/pglb/http.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("writing lb2's token file");
    let config = lb_config("lb2");
    let text = std::fs::read_to_string(&config).expect("lb2's config");
    let patched = text.replace(
        "[http]\nlisten = \"127.0.0.1:8404\"\n",
        &format!("[http]\nlisten = \"172.20.0.22:8404\"\nallow = [\"172.20.0.21/32\"]\nauth = \"all\"\ntoken_file = \"{}\"\n", token_file.display()),
    );
    assert_ne!(patched, text, "lb2's config has the [http] section this test rewrites");
    // The log format from the config (`--log-format` would override it).
    let patched = format!("{patched}\n[log]\nformat = \"json\"\n");
    std::fs::write(&config, patched).expect("writing lb2's config");
    let pid = pglb_pid("lb2");
    signal(pid, libc::SIGTERM);
    wait_gone(pid, Duration::from_secs(30), "pglb on lb2 to stop after SIGTERM");
    let log_from = pglb_log("lb2").len();
    start_pglb_with("lb2", &[]);

    let url = "http://172.20.0.22:8404/node/pg1/primary";
    let bearer = format!("Authorization: Bearer {TOKEN}");
    wait_until(Duration::from_secs(15), "lb2 to route pg1 again, asked from lb1 with the token", || {
        curl("lb1", url, &["-H", &bearer]).0 == "200"
    });
    let (code, body) = curl("lb1", url, &[]);
    assert_eq!((code.as_str(), body.as_str()), ("401", "authentication required\n"), "no token from an allowed network");
    let (code, _) = curl("lb1", url, &["-H", "Authorization: Bearer wrong-token-0123456789"]);
    assert_eq!(code, "401", "a wrong token");
    let (code, body) = curl("lb2", url, &["-H", &bearer]);
    assert_eq!(code, "403", "lb2 itself (172.20.0.22) is not in allow, token or not: {body}");
    assert_eq!(curl("lb1", "http://172.20.0.22:8404/metrics", &["-H", &bearer]).0, "200");

    let log = pglb_log("lb2");
    let lines: Vec<&str> = log[log_from..].lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "pglb on lb2 logged nothing since its restart");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}\nall of them:\n{}", lines.join("\n")));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("\"message\":\"http: serving")), "the http start line, as JSON:\n{}", lines.join("\n"));
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
