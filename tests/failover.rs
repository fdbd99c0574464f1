//! End to end in the lab: failover after a crash and a hang, fencing of the returning old
//! primary, its rejoin by pglb itself (`rejoin_command`), `pglb switchover` — all driven by
//! `cargo xtask drill`, whose writer inserts every 10 ms through VIP:3000 and records every
//! acknowledgement. Plus bad configs, which need no lab.

use std::{fs, path::Path, process::Command};

use pglb_tests::{Lab, assert_failover, assert_no_loss, assert_root, assert_switchback_lost_nothing, drill, ok, pglb_bin, stderr};
use serde_json::Value;

fn drill_run(scenario: &str) -> Value {
    drill(scenario, env!("CARGO_BIN_EXE_drill_client"))
}

/// Issue 6's short drill, part of `cargo xtask test`: one primary crash, RPO 0, bounded RTO;
/// and, after it, each pglb idles under 2 % of a CPU (a failover once left both spinning).
#[test]
fn short_drill_primary_crash() {
    let _lab = Lab::up();
    let run = drill_run("primary-crash");
    assert_failover(&run, 5000.0);
}

/// Issue 4's end-to-end proof: crash, fence, rejoin, switchback (inside the crash drill), a
/// planned switchover under load, a hung primary.
#[test]
fn crash_hang_and_switchover_lose_nothing() {
    let _lab = Lab::up();

    let crash = drill_run("primary-crash");
    assert_failover(&crash, 5000.0);

    let switchover = drill_run("switchover");
    assert_no_loss(&switchover);
    assert_eq!(switchover["winner"], "pg2", "{switchover:#}");
    let out = switchover["switchover_output"].as_str().unwrap_or_default();
    assert!(out.contains("switchover done: pg1 -> pg2") && out.contains("writes paused for"), "{out}");
    assert_switchback_lost_nothing(&switchover);

    let hang = drill_run("primary-hang");
    assert_failover(&hang, 8000.0);

    // Both ports still answer on a healthy cluster after all of it.
    assert_eq!(ok(&["lab", "psql", "--", "-Atc", "SELECT pg_is_in_recovery()"]).trim(), "f");
    assert_eq!(ok(&["lab", "psql", "--port", "3001", "--", "-Atc", "SELECT pg_is_in_recovery()"]).trim(), "t");
}

/// A minimal valid config for the bad-input cases, with a unique instance (its pin folder must
/// never appear).
fn base_config(dir: &Path, instance: &str) -> String {
    let pw = dir.join("pw");
    fs::write(&pw, "secret\n").unwrap();
    format!(
        r#"[instance]
name = "{instance}"

[dataplane]
interface = "lo"
address = "10.99.0.1/24"
vip = "10.99.0.100/24"

[[listener]]
port = 3000
pool = "write"

[[listener]]
port = 3001
pool = "read"

[[node]]
name = "pg1"
host = "10.99.0.10"

[[node]]
name = "pg2"
host = "10.99.0.11"

[probe]
user = "pglb"
password_file = "{pw}"

[replication]
user = "replicator"
password_file = "{pw}"
"#,
        pw = pw.display()
    )
}

fn pglb(args: &[&str]) -> std::process::Output {
    Command::new(pglb_bin()).args(args).output().expect("running pglb")
}

/// Bad input: one clear `error:` line on stderr, a non-zero exit, and nothing attached.
#[test]
fn bad_configs_fail_with_one_line_and_attach_nothing() {
    assert_root();
    let dir = std::env::temp_dir().join(format!("pglbt-badcfg-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let instance = format!("pglbt-bad-{}", std::process::id() % 100000);
    let base = base_config(&dir, &instance);
    assert!(pglb(&["check", "--config", &{
        let p = dir.join("good.toml");
        fs::write(&p, &base).unwrap();
        p.to_str().unwrap().to_owned()
    }])
    .status
    .success(), "the base config must be valid for the cases to mean anything");

    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown key", base.replace("[probe]\n", "[probe]\nprobe_intervall = \"200ms\"\n"), "unknown field"),
        ("vip outside the subnet", base.replace("vip = \"10.99.0.100/24\"", "vip = \"10.98.0.100/24\""), "not in the subnet"),
        ("duplicate node names", base.replace("name = \"pg2\"", "name = \"pg1\""), "used twice"),
        ("a listener port used twice", base.replace("port = 3001", "port = 3000"), "used twice"),
        ("an unreadable password file", base.replacen(&format!("password_file = \"{}\"", dir.join("pw").display()), "password_file = \"/nonexistent/pglbt/pw\"", 1), "password file"),
    ];
    let pins = Path::new("/sys/fs/bpf/pglb").join(&instance);
    for (what, text, expect) in cases {
        let path = dir.join("bad.toml");
        fs::write(&path, &text).unwrap();
        for sub in ["check", "run"] {
            let out = pglb(&[sub, "--config", path.to_str().unwrap()]);
            let err = stderr(&out);
            assert!(!out.status.success(), "pglb {sub} accepted a config with {what}");
            let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "pglb {sub} with {what}: expected one line on stderr, got:\n{err}");
            assert!(lines[0].starts_with("error:") && lines[0].contains(expect), "pglb {sub} with {what}: {err}");
            assert!(!pins.exists(), "pglb {sub} with {what} pinned {}", pins.display());
            assert!(!Path::new(&format!("/run/pglb/{instance}.sock")).exists(), "pglb {sub} with {what} opened its admin socket");
        }
    }
    let xdp = Command::new("ip").args(["-d", "link", "show", "dev", "lo"]).output().expect("ip link");
    assert!(!String::from_utf8_lossy(&xdp.stdout).contains("xdp"), "an XDP program is attached to lo");
    fs::remove_dir_all(&dir).unwrap();
}
