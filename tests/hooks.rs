//! Event hooks and the event journal in the lab: the lab's `[hooks]` command (config/lab.toml)
//! appends each event's JSON (stdin) and `PGLB_*` environment to `hooks.log` beside the state
//! file. A switchover and a failover (kill -9 of the primary's postmaster) must each reach it,
//! on the master and (as `writer_changed`) on the backup; `pglb events` must read them back
//! from the journal without asking the daemon, and a restarted pglb's `/stats` must show them.

use std::{fs, process::Command, time::Duration};

use pglb_tests::{Lab, STATE_DIR, lb_root, netns, pglb_pid, poll_until, signal, start_pglb, stderr, stdout, wait_gone};
use serde_json::Value;

/// One line of the lab hook's file: the event's JSON and its environment.
struct HookLine {
    json: Value,
    env: String,
}

fn hook_lines(lb: &str) -> Vec<HookLine> {
    let path = lb_root(lb).join(format!("var/lib/pglb/{lb}/hooks.log"));
    let text = fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let (json, env) = l.split_once('\t').unwrap_or_else(|| panic!("{}: a line without the tab: {l:?}", path.display()));
            let json = serde_json::from_str(json).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {json:?}", path.display()));
            HookLine { json, env: env.to_owned() }
        })
        .collect()
}

/// Waits until lb's hook has seen an event named `event` that `check` accepts; returns it.
fn wait_hook(lb: &str, event: &str, limit: Duration, check: impl Fn(&HookLine) -> bool) -> HookLine {
    let mut found = None;
    poll_until(limit, Duration::from_millis(200), &format!("the hook on {lb} to see a {event} event"), || {
        found = hook_lines(lb).into_iter().find(|h| h.json["event"] == event && check(h));
        found.is_some()
    });
    found.expect("found")
}

/// A pglb command against a load balancer's installed config.
fn pglb(args: &[&str], lb: &str) -> std::process::Output {
    pglb_tests::pglb_on(lb, args)
}

#[test]
fn hooks_and_journal_see_switchover_and_failover() {
    let _lab = Lab::up();

    // lb1 became VRRP master at start.
    let master = wait_hook("lb1", "vrrp_master", Duration::from_secs(10), |_| true);
    assert!(master.env.contains("PGLB_EVENT=vrrp_master") && master.env.contains("PGLB_INSTANCE=lb1"), "{}", master.env);

    // A switchover: old and new writer, on stdin and in the environment.
    let out = pglb(&["switchover", "--to", "pg2"], "lb1");
    assert!(out.status.success() && stdout(&out).contains("switchover done: pg1 -> pg2"), "pglb switchover: {}{}", stdout(&out), stderr(&out));
    let sw = wait_hook("lb1", "switchover", Duration::from_secs(10), |h| h.json["new_writer"] == "pg2");
    assert_eq!((&sw.json["old_writer"], &sw.json["instance"]), (&Value::from("pg1"), &Value::from("lb1")), "{}", sw.json);
    assert!(sw.json["timeline"].as_u64().is_some_and(|t| t >= 2), "the switchover's timeline: {}", sw.json);
    for var in ["PGLB_EVENT=switchover ", "PGLB_OLD_WRITER=pg1 ", "PGLB_NEW_WRITER=pg2 ", "PGLB_NODE= "] {
        assert!(sw.env.contains(var), "{var:?} not in the hook's environment: {}", sw.env);
    }
    assert!(sw.env.contains(&format!("PGLB_TIMELINE={} ", sw.json["timeline"])), "{}", sw.env);
    // lb2, the backup, sees the same change as a new writer it did not promote.
    let seen = wait_hook("lb2", "writer_changed", Duration::from_secs(10), |h| h.json["old_writer"] == "pg1" && h.json["new_writer"] == "pg2");
    assert!(seen.env.contains("PGLB_INSTANCE=lb2 ") && seen.env.contains("PGLB_EVENT=writer_changed "), "{}", seen.env);

    // Back to pg1 (the old primary is a standby again once its demote_command ran), so that the
    // failover below kills pg1's postmaster.
    // (`--json`: the answer beside the state it left: pg1 routed for writes.)
    let mut back = None;
    poll_until(Duration::from_secs(60), Duration::from_secs(2), "a switchover back to pg1", || {
        let out = pglb(&["switchover", "--to", "pg1", "--json"], "lb1");
        back = Some(stdout(&out));
        out.status.success()
    });
    let back: Value = serde_json::from_str(back.as_deref().unwrap_or_default()).expect("pglb switchover --json prints JSON");
    let routed = |n: &Value| n["routed_ports"].as_array().is_some_and(|p| p.contains(&Value::from(3000)));
    let writer = back["nodes"].as_array().and_then(|ns| ns.iter().find(|n| routed(n))).map(|n| n["name"].clone());
    assert!(back["message"].as_str().is_some_and(|m| m.contains("switchover done: pg2 -> pg1")) && writer == Some(Value::from("pg1")), "{back:#}");
    wait_hook("lb1", "switchover", Duration::from_secs(10), |h| h.json["old_writer"] == "pg2" && h.json["new_writer"] == "pg1");

    // A failover: kill -9 of pg1's postmaster.
    let pid_file = format!("{STATE_DIR}/pg1/data/postmaster.pid");
    let pid: i32 = fs::read_to_string(&pid_file).expect("pg1's postmaster.pid").lines().next().and_then(|l| l.trim().parse().ok()).expect("a pid");
    signal(pid, libc::SIGKILL);
    let fo = wait_hook("lb1", "failover", Duration::from_secs(30), |h| h.json["old_writer"] == "pg1");
    let new = fo.json["new_writer"].as_str().expect("a new writer").to_owned();
    assert!(new == "pg2" || new == "pg3", "{}", fo.json);
    assert!(fo.env.contains("PGLB_EVENT=failover ") && fo.env.contains(&format!("PGLB_NEW_WRITER={new} ")), "{}", fo.env);
    let fence = wait_hook("lb1", "fence", Duration::from_secs(10), |h| h.json["node"] == "pg1");
    assert!(fence.env.contains("PGLB_NODE=pg1 "), "{}", fence.env);
    wait_hook("lb2", "writer_changed", Duration::from_secs(10), |h| h.json["old_writer"] == "pg1" && h.json["new_writer"] == new.as_str());

    // Every run so far succeeded.
    let metrics = Command::new("ip")
        .args(["netns", "exec", &netns("lb1"), "curl", "-s", "-m", "2", "http://127.0.0.1:8404/metrics"])
        .output()
        .expect("curl /metrics");
    let metrics = stdout(&metrics);
    let ok_runs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pglb_hook_runs_total{instance_name=\"lb1\",result=\"ok\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ok hook runs in /metrics:\n{metrics}"));
    assert!(ok_runs >= 5, "vrrp_master, two switchovers, a failover and a fence ran: {ok_runs}");
    for result in ["failed", "timeout", "spawn_error", "dropped"] {
        let line = format!("pglb_hook_runs_total{{instance_name=\"lb1\",result=\"{result}\"}} 0");
        assert!(metrics.lines().any(|l| l == line), "{line:?} not in /metrics:\n{metrics}");
    }

    // The journal, read by `pglb events` from the state_dir in the config.
    let out = pglb(&["events", "--since", "10m", "--json"], "lb1");
    assert!(out.status.success(), "pglb events: {}", stderr(&out));
    let events: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for want in ["vrrp_master", "switchover", "failover", "fence"] {
        assert!(names.contains(&want), "pglb events lacks {want}: {names:?}");
    }
    let text = pglb(&["events"], "lb1");
    assert!(stdout(&text).lines().any(|l| l.contains("  lb1  failover ") && l.contains("failover: pg1 -> ")), "pglb events:\n{}", stdout(&text));
    let future = pglb(&["events", "--since", "2099-01-01T00:00:00Z"], "lb1");
    assert!(future.status.success() && stdout(&future).is_empty(), "nothing after 2099: {}", stdout(&future));
    let bad = pglb(&["events", "--since", "yesterday"], "lb1");
    assert!(!bad.status.success() && stderr(&bad).contains("neither an RFC 3339 time"), "a bad --since: {}", stderr(&bad));

    // A restart keeps the history: lb2's /stats starts from its journal.
    let pid = pglb_pid("lb2");
    signal(pid, libc::SIGTERM);
    wait_gone(pid, Duration::from_secs(10), "pglb on lb2 to stop");
    start_pglb("lb2");
    poll_until(Duration::from_secs(20), Duration::from_millis(500), "/stats on the restarted lb2 to show the events from before the restart", || {
        let page = Command::new("ip")
            .args(["netns", "exec", &netns("lb2"), "curl", "-s", "-m", "2", "http://127.0.0.1:8404/stats"])
            .output()
            .map(|o| stdout(&o))
            .unwrap_or_default();
        page.contains("writer changed: pg1 -&gt; pg2") && page.contains(&format!("writer changed: pg1 -&gt; {new}"))
    });
}
