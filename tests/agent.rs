//! `pglb agent` on the lab's client host (docs/AGENT.md): connects from its cgroup go straight
//! to PostgreSQL, follow a switchover (the session on the old writer is destroyed), fall back
//! to the VIP when the load balancers cannot be heard for a lease, and when the agent stops; the
//! sessions it sent straight to the writer end when it stops, and after a `kill -9` when the
//! supervisor's `pglb agent cleanup` or the next agent start runs.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pglb_tests::{AGENT_CGROUP, Lab, STATE_DIR, assert_failover, drill_with, lb_config, ok, pglb_bin, poll_until, stderr, stdout, superuser_sql, wait_until, xtask};

const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
/// The lab's `[agent] listen_port` (config/lab*.toml).
const CHANNEL_PORT: u16 = 3003;

/// (server address, client address) of a new connection to VIP:`port` from the client host, in
/// the agent's cgroup or not. Through the VIP, PostgreSQL sees the VIP as the client (full NAT);
/// through the agent, the client host itself.
fn connect(port: u16, in_cgroup: bool) -> (String, String) {
    let mut args = vec!["lab", "exec", "client"];
    if in_cgroup {
        args.push("--agent");
    }
    let port = port.to_string();
    args.extend(["--", PSQL, "-X", "-p", &port, "-Atc", "SELECT host(inet_server_addr()) || ' ' || host(inet_client_addr())"]);
    let out = ok(&args);
    let (server, client) = out.trim().split_once(' ').unwrap_or_else(|| panic!("unexpected psql output {out:?}"));
    (server.to_owned(), client.to_owned())
}

/// The client agent's config, as the lab installed it.
const AGENT_CONFIG: &str = "/run/pglb-lab/client/root/etc/pglb/agent.toml";

/// Pids of `pglb agent` in pgha-client.
fn agent_pids() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "pids", "pgha-client"]).output().expect("ip netns pids");
    stdout(&out)
        .split_whitespace()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.len() > 1 && args[0].ends_with(b"pglb") && args[1] == b"agent"
        })
        .map(str::to_owned)
        .collect()
}

/// `kill -9` of the agent (by pid), until it is gone.
fn kill_agent() {
    let pids = agent_pids();
    assert!(!pids.is_empty(), "the agent runs");
    for pid in pids {
        assert!(Command::new("kill").args(["-KILL", &pid]).status().expect("kill").success(), "kill -9 {pid}");
    }
    poll_until(Duration::from_secs(5), Duration::from_millis(20), "the agent to die", || agent_pids().is_empty());
}

/// A session through the agent (`SELECT pg_sleep(60)` from the cgroup, marked with `tag`), once
/// `server` shows it. The tag tells it from an earlier session whose socket the agent destroyed:
/// a destroy sends nothing, so that session's server side still sleeps.
fn long_session(server: &str, tag: &str) -> std::process::Child {
    let query = format!("SELECT pg_sleep(60), '{tag}'");
    let session = xtask(&["lab", "exec", "client", "--agent", "--", PSQL, "-X", "-Atc", &query])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a long session");
    wait_until(Duration::from_secs(10), &format!("the session {tag} to run on {server} from the client host"), || {
        superuser_sql(server, &format!("SELECT count(*) FROM pg_stat_activity WHERE query = $q${query}$q$ AND host(client_addr) = '172.20.0.50'")) == "1"
    });
    session
}

/// Waits (10 s at most) for a session to fail with the agent's destroy (ECONNABORTED).
fn aborted(mut session: std::process::Child, what: &str) {
    poll_until(Duration::from_secs(10), Duration::from_millis(20), what, || session.try_wait().expect("waiting for the session").is_some());
    let out = session.wait_with_output().expect("the session's output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Software caused connection abort"), "{what}: the socket is destroyed (ECONNABORTED): {err}");
}

fn agent_log() -> String {
    std::fs::read_to_string(format!("{STATE_DIR}/client/agent.log")).unwrap_or_default()
}

/// A bridge-family nftables table in the switch that drops the agent channel's datagrams.
struct ChannelCut;

impl ChannelCut {
    fn install() -> ChannelCut {
        let script = format!(
            "table bridge pglbcut_agent {{\n  chain cut {{\n    type filter hook forward priority 0;\n    udp dport {CHANNEL_PORT} drop\n    udp sport {CHANNEL_PORT} drop\n  }}\n}}\n"
        );
        let file = std::env::temp_dir().join("pglb-test-agent-cut.nft");
        std::fs::write(&file, script).expect("writing the nft script");
        ok(&["lab", "exec", "sw", "--", "nft", "-f", file.to_str().unwrap()]);
        ChannelCut
    }
}

impl Drop for ChannelCut {
    fn drop(&mut self) {
        let _ = xtask(&["lab", "exec", "sw", "--", "nft", "delete", "table", "bridge", "pglbcut_agent"]).output();
    }
}

#[test]
fn agent_routes_connects_directly_follows_a_switchover_and_falls_back_to_the_vip() {
    let _lab = Lab::up();
    assert!(std::path::Path::new(AGENT_CGROUP).is_dir(), "lab up creates the client's cgroup");

    // Without the agent, the cgroup changes nothing: the VIP, NATed by lb1 (the VIP is the source PostgreSQL sees).
    assert_eq!(connect(3000, true), ("172.20.0.10".into(), "172.20.0.100".into()), "cgroup without an agent: the VIP");
    ok(&["lab", "agent", "start"]);
    assert!(agent_log().contains("agent: route: writes to pg1"), "{}", agent_log());

    // With it: writes straight to pg1, reads straight to a standby; outside the cgroup, the VIP.
    assert_eq!(connect(3000, true), ("172.20.0.10".into(), "172.20.0.50".into()), "agent: straight to the writer");
    assert_eq!(connect(3000, false), ("172.20.0.10".into(), "172.20.0.100".into()), "outside the cgroup: the VIP");
    let mut readers = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let (server, client) = connect(3001, true);
        assert_eq!(client, "172.20.0.50", "reads straight from the client host");
        assert!(server == "172.20.0.11" || server == "172.20.0.12", "a read reached {server}");
        readers.insert(server);
    }
    assert_eq!(readers.len(), 2, "12 read connects reach both standbys: {readers:?}");

    // A session open on pg1 through the agent, then a switchover to pg2: the agent destroys the
    // session's socket (ECONNABORTED) and the next connect goes to pg2.
    let mut session = long_session("pg1", "switchover");
    let destroyed_before = agent_log().matches("destroyed the sockets connected to the old writer").count();
    let started = Instant::now();
    let out = Command::new(pglb_bin())
        .args(["switchover", "--to", "pg2", "--config"])
        .arg(lb_config("lb1"))
        .env("PGLB_LOG", "warn")
        .output()
        .expect("pglb switchover");
    assert!(out.status.success() && stdout(&out).contains("switchover done: pg1 -> pg2"), "{}{}", stdout(&out), stderr(&out));
    poll_until(Duration::from_secs(10), Duration::from_millis(20), "the session on the old writer to end", || {
        session.try_wait().expect("waiting for the session").is_some()
    });
    let ended = started.elapsed();
    let out = session.wait_with_output().expect("the session's output");
    let err = String::from_utf8_lossy(&out.stderr);
    println!("session ended {} ms after the switchover began: {}", ended.as_millis(), err.trim());
    assert!(!out.status.success(), "the session on the old writer must not finish its 60 s");
    assert!(err.contains("Software caused connection abort"), "the agent destroyed the socket (ECONNABORTED), not the server: {err}");
    let log = agent_log();
    assert!(
        log.matches("destroyed the sockets connected to the old writer").count() > destroyed_before
            && log.contains("addr=172.20.0.10:5432"),
        "the agent logs the destroy:\n{log}"
    );
    poll_until(Duration::from_secs(10), Duration::from_millis(100), "the agent to route writes to pg2", || {
        agent_log().contains("agent: route: writes to pg2")
    });
    assert_eq!(connect(3000, true), ("172.20.0.11".into(), "172.20.0.50".into()), "agent: straight to the new writer");

    // The load balancers unheard for longer than the lease (1 s): the route goes, connects take
    // the VIP (now to pg2 through lb1); heard again: straight again.
    {
        let _cut = ChannelCut::install();
        poll_until(Duration::from_secs(5), Duration::from_millis(100), "the agent to lose its lease", || agent_log().contains("lease lost"));
        assert_eq!(connect(3000, true), ("172.20.0.11".into(), "172.20.0.100".into()), "lease lost: the VIP");
    }
    poll_until(Duration::from_secs(10), Duration::from_millis(200), "the agent to route again once it hears the masters", || {
        connect(3000, true) == ("172.20.0.11".into(), "172.20.0.50".into())
    });

    // Agent stopped: its program goes with it, the cgroup's connects take the VIP, and the
    // session it sent straight to pg2 is closed (nothing would close it when the writer changes).
    let session = long_session("pg2", "stop");
    ok(&["lab", "agent", "stop"]);
    aborted(session, "the session the stopped agent had sent to pg2");
    assert!(agent_log().contains("stopping: closed the sockets sent straight to a writer"), "{}", agent_log());
    assert_eq!(connect(3000, true), ("172.20.0.11".into(), "172.20.0.100".into()), "agent stopped: the VIP");

    // Killed: the session outlives the process until the supervisor's cleanup runs.
    ok(&["lab", "agent", "start"]);
    let session = long_session("pg2", "kill-cleanup");
    kill_agent();
    let mut session = session;
    std::thread::sleep(Duration::from_secs(1));
    assert!(session.try_wait().expect("waiting").is_none(), "with no supervisor yet, the session stays (the window docs/AGENT.md states)");
    assert_eq!(connect(3000, true), ("172.20.0.11".into(), "172.20.0.100".into()), "killed: new connects take the VIP at once");
    // As a supervisor runs it: in the agent's namespaces (`nsenter --net`, as the lab starts the
    // agent; `ip netns exec` would hide the machine's bpffs behind a fresh sysfs).
    let cleanup = Command::new("nsenter")
        .arg("--net=/run/netns/pgha-client")
        .arg(pglb_bin())
        .args(["agent", "cleanup", "--config", AGENT_CONFIG])
        .output()
        .expect("pglb agent cleanup");
    assert!(cleanup.status.success() && stderr(&cleanup).contains("agent cleanup: closed"), "{}", stderr(&cleanup));
    println!("{}", stderr(&cleanup).trim());
    aborted(session, "the killed agent's session after `pglb agent cleanup`");

    // Killed, and started again with no cleanup in between: the start closes what was left.
    ok(&["lab", "agent", "start"]);
    let session = long_session("pg2", "kill-start");
    kill_agent();
    ok(&["lab", "agent", "start"]);
    aborted(session, "the killed agent's session after the next start");
    assert!(agent_log().contains("the previous agent run did not stop cleanly"), "{}", agent_log());
    ok(&["lab", "agent", "stop"]);
}

/// `cargo xtask drill primary-crash --client agent`: the drill's writer and reader run in the
/// agent's cgroup, so their connects go straight to PostgreSQL; the crash is found by the load
/// balancers, the agent follows their new routing, and nothing acknowledged is lost.
#[test]
fn agent_drill_primary_crash_loses_nothing() {
    let _lab = Lab::up();
    let run = drill_with("primary-crash", &["--client", "agent"], env!("CARGO_BIN_EXE_drill_client"));
    assert_failover(&run, 5000.0);
    let log = agent_log();
    assert!(log.contains("agent: route: writes to pg1"), "the drill's writes went straight to pg1:\n{log}");
    let winner = run["winner"].as_str().expect("a winner");
    assert!(log.contains(&format!("agent: route: writes to {winner}")), "the agent followed the failover to {winner}:\n{log}");
}
