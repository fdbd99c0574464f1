//! The lab itself: replication, idempotent up/down, cleanup after an interrupted up, bad input.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use pglb_tests::{
    Lab, STATE_DIR, app_sql, assert_lab_gone, assert_root, lb_config, lb_root, ok, pglb_bin, pglb_pids, run, stderr, stdout,
    superuser_sql, wait_until, xtask,
};

/// A file's permission bits.
fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

#[test]
fn lab_installs_pglb_in_the_deploy_guide_layout() {
    let _lab = Lab::up();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent");
    for (lb, source) in [("lb1", "config/lab.toml"), ("lb2", "config/lab-lb2.toml")] {
        let root = lb_root(lb);
        // docs/DEPLOY.md (vagrant/provision/lb.sh): /etc/pglb 0755 with the config 0644 and the
        // secrets 0600; the unit's StateDirectory /var/lib/pglb 0750.
        assert_eq!(lb_config(lb), root.join("etc/pglb/pglb.toml"));
        assert_eq!(mode(&root.join("etc/pglb")), 0o755, "{lb}: etc/pglb");
        assert_eq!(mode(&lb_config(lb)), 0o644, "{lb}: pglb.toml");
        for secret in ["pglb.password", "peer.key", "agent-signing.key", "agent-client.key"] {
            assert_eq!(mode(&root.join("etc/pglb").join(secret)), 0o600, "{lb}: {secret}");
        }
        // The replication password stays on the database hosts ([replication] passfile); the
        // probes' CA certificate is public.
        assert!(!root.join("etc/pglb/replicator.password").exists(), "{lb}: no replication password on a load balancer");
        assert_eq!(mode(&root.join("etc/pglb/pg-ca.crt")), 0o644, "{lb}: pg-ca.crt");
        assert_eq!(mode(&root.join("var/lib/pglb")), 0o750, "{lb}: var/lib/pglb");
        assert!(!root.join("etc/pglb/pglb.toml.new").exists(), "{lb}: the staged config is moved into place");
        assert_eq!(
            fs::read_to_string(lb_config(lb)).expect("the installed config"),
            fs::read_to_string(workspace.join(source)).expect("the repository's config"),
            "{lb}: the installed config is the repository's {source}"
        );
        // The running pglb reads the installed config, not the repository's.
        let pids = pglb_pids(lb);
        assert_eq!(pids.len(), 1, "{lb}: one pglb");
        let cmdline = fs::read_to_string(format!("/proc/{}/cmdline", pids[0])).expect("pglb's cmdline").replace('\0', " ");
        assert!(cmdline.contains(&format!("run --config {}", lb_config(lb).display())), "{lb}: {cmdline}");
        // Its state file is where the config says: <root>/var/lib/pglb/<name>/state.json.
        let state = root.join(format!("var/lib/pglb/{lb}/state.json"));
        wait_until(Duration::from_secs(10), &format!("{lb}'s state file {}", state.display()), || {
            fs::read_to_string(&state).is_ok_and(|s| s.contains("\"version\": 1") || s.contains("\"version\":1"))
        });
        // The operator's commands work against the installed config.
        let out = std::process::Command::new(pglb_bin())
            .args(["check", "--config"])
            .arg(lb_config(lb))
            .env("PGLB_LOG", "warn")
            .output()
            .expect("pglb check");
        assert!(out.status.success(), "{lb}: pglb check: {}", String::from_utf8_lossy(&out.stderr));
    }
    let status = std::process::Command::new(pglb_bin())
        .args(["status", "--json", "--config"])
        .arg(lb_config("lb1"))
        .output()
        .expect("pglb status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success() && text.contains("pglb.status/1") && text.contains("\"pg1\""), "pglb status --json: {text}");
}

#[test]
fn lab_replicates_through_slots_with_quorum_sync_and_down_removes_everything() {
    {
        let _lab = Lab::up();
        app_sql("pg1", "CREATE TABLE e2e_rows (id int PRIMARY KEY, note text)");
        app_sql("pg1", "INSERT INTO e2e_rows VALUES (1, 'written on pg1')");
        for standby in ["pg2", "pg3"] {
            wait_until(Duration::from_secs(10), &format!("the row to reach {standby}"), || {
                run(&["lab", "psql", "--node", standby, "--", "-At", "-c", "SELECT note FROM e2e_rows WHERE id = 1"])
                    .stdout
                    .starts_with(b"written on pg1")
            });
            assert_eq!(app_sql(standby, "SELECT pg_is_in_recovery()"), "t", "{standby} must be a standby");
        }
        let replication = superuser_sql(
            "pg1",
            "SELECT s.application_name, s.state, s.sync_state, r.slot_name
             FROM pg_stat_replication s JOIN pg_replication_slots r ON r.active_pid = s.pid
             ORDER BY 1",
        );
        assert_eq!(
            replication, "pg2|streaming|quorum|pg2\npg3|streaming|quorum|pg3",
            "pg1 must stream to both standbys through their slots with quorum sync"
        );
        assert_eq!(superuser_sql("pg1", "SHOW synchronous_standby_names"), "ANY 1 (pg1, pg2, pg3)");
        for node in ["pg1", "pg2", "pg3"] {
            assert_eq!(superuser_sql(node, "SHOW wal_log_hints"), "on", "{node}");
            assert_eq!(superuser_sql(node, "SHOW recovery_target_timeline"), "latest", "{node}");
        }
        let status = ok(&["lab", "status"]);
        for expected in ["pg1", "primary", "pg2", "standby", "streaming from 172.20.0.10", "sync to pg2 quorum, pg3 quorum"] {
            assert!(status.contains(expected), "lab status lacks {expected:?}:\n{status}");
        }
        // The client host needs no password setup: `lab exec client` gives psql and pgbench the
        // app role's pgpass and the VIP's write port as libpq defaults.
        let who = ok(&["lab", "exec", "client", "--", "/usr/lib/postgresql/15/bin/psql", "-XAt", "-c", "SELECT current_user, inet_server_addr()"]);
        assert_eq!(who.trim(), "app|172.20.0.10", "psql on the client host with no options: the app role through VIP:3000 to pg1");
        let script = std::env::temp_dir().join("pglb-e2e-select1.sql");
        fs::write(&script, "SELECT 1;\n").expect("writing a pgbench script");
        let bench = ok(&["lab", "exec", "client", "--", "/usr/lib/postgresql/15/bin/pgbench", "-n", "-t", "5", "-f", &script.display().to_string()]);
        let _ = fs::remove_file(&script);
        assert!(bench.contains("number of transactions actually processed: 5/5"), "pgbench on the client host with no options:\n{bench}");
        let secrets = fs::metadata(format!("{STATE_DIR}/secrets/app.password")).expect("app password file");
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&secrets.permissions()) & 0o777, 0o600);
    }
    assert_lab_gone();
}

#[test]
fn second_up_changes_nothing_and_double_down_is_safe() {
    let _lab = Lab::up();
    let pid_file = format!("{STATE_DIR}/pg1/data/postmaster.pid");
    let before = fs::read_to_string(&pid_file).expect("pg1 postmaster.pid");
    let again = ok(&["lab", "up"]);
    assert!(again.contains("already up"), "second lab up must say the lab is up:\n{again}");
    assert_eq!(fs::read_to_string(&pid_file).expect("pg1 postmaster.pid"), before, "second lab up restarted pg1");
    let first = ok(&["lab", "down"]);
    assert!(first.contains("namespaces removed"), "first lab down:\n{first}");
    assert_lab_gone();
    let second = ok(&["lab", "down"]);
    assert!(second.contains("already down"), "second lab down must say so:\n{second}");
    assert_lab_gone();
}

#[test]
fn down_after_a_killed_up_removes_everything() {
    let _guard = Lab::guard();
    ok(&["lab", "down"]);
    let mut up = xtask(&["lab", "up"]).spawn().expect("starting lab up");
    // Kill it once PostgreSQL is running on pg1 but before the lab is complete.
    wait_until(Duration::from_secs(60), "pg1 to start during lab up", || {
        if fs::metadata(format!("{STATE_DIR}/pg1/data/postmaster.pid")).is_ok() {
            return true;
        }
        assert!(up.try_wait().expect("polling lab up").is_none(), "lab up ended before it could be killed");
        false
    });
    up.kill().expect("killing lab up");
    up.wait().expect("reaping lab up");
    let status = ok(&["lab", "status"]);
    assert!(status.contains("half-built"), "lab status after a killed up:\n{status}");
    let psql = run(&["lab", "psql"]);
    assert!(!psql.status.success());
    assert!(stderr(&psql).contains("half-built"), "lab psql on a half-built lab:\n{}", stderr(&psql));
    ok(&["lab", "down"]);
    assert_lab_gone();
}

#[test]
fn bad_input_gets_one_clear_line() {
    assert_root();
    let _guard = Lab::guard();
    ok(&["lab", "down"]);

    let psql = run(&["lab", "psql"]);
    assert!(!psql.status.success(), "lab psql without a lab must fail");
    assert_eq!(stderr(&psql).trim(), "error: the lab is not up: start it with `cargo xtask lab up`");

    let exec = run(&["lab", "exec", "nosuchhost", "--", "true"]);
    assert!(!exec.status.success(), "lab exec with an unknown host must fail");
    let err = stderr(&exec);
    assert!(err.starts_with("error: unknown lab host `nosuchhost`: the hosts are pg1, pg2, pg3"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected:\n{err}");

    // setup as an unprivileged user: the binary must say it needs root, without a backtrace.
    let bin = pglb_tests::xtask_bin();
    let setup = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&bin)
        .arg("setup")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("running xtask setup as nobody");
    assert!(!setup.status.success(), "setup as nobody must fail");
    let err = stderr(&setup);
    assert!(err.starts_with("error: `cargo xtask setup` must run as root"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected:\n{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
    assert!(stdout(&setup).is_empty());
}
