//! `pglb export pgadmin` as an operator runs it: the built binary on the documented example
//! config (whose password files do not exist here: the export must not need them), a file
//! written with `--output`, the same JSON on stdout without it, and bad input as one `error:`
//! line with a non-zero exit. The format itself is checked key by key in `lb_user::pgadmin`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

fn pglb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pglb")).args(args).output().expect("running the built pglb")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/pglb.example.toml")
}

fn one_error_line(out: &Output, expect: &str) {
    assert!(!out.status.success(), "expected a failure, got {}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got:\n{err}");
    assert!(lines[0].starts_with("error:") && lines[0].contains(expect), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout on failure: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn export_pgadmin_writes_servers_json_from_the_example_config() {
    let dir = std::env::temp_dir().join(format!("pglb-export-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("servers.json");
    let config = example();
    let out = pglb(&["export", "pgadmin", "--config", config.to_str().unwrap(), "--output", file.to_str().unwrap()]);
    assert!(out.status.success(), "pglb export pgadmin failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 servers for pgAdmin"), "{}", String::from_utf8_lossy(&out.stdout));

    let text = fs::read_to_string(&file).expect("servers.json written");
    assert!(!text.to_lowercase().contains("password"), "no password field or value in servers.json:\n{text}");
    let doc: Value = serde_json::from_str(&text).expect("servers.json is JSON");
    let servers = doc["Servers"].as_object().expect("a \"Servers\" object");
    let seen: Vec<(String, String, u64)> = servers
        .values()
        .map(|s| (s["Name"].as_str().unwrap().to_owned(), s["Host"].as_str().unwrap().to_owned(), s["Port"].as_u64().unwrap()))
        .collect();
    assert_eq!(seen.len(), 5, "{text}");
    assert_eq!((seen[0].1.as_str(), seen[0].2), ("172.20.0.100", 3000), "the VIP write port first: {text}");
    assert_eq!((seen[1].1.as_str(), seen[1].2), ("172.20.0.100", 3001), "then the read port: {text}");
    assert_eq!(seen[2..].iter().map(|s| (s.1.as_str(), s.2)).collect::<Vec<_>>(), [("172.20.0.10", 5432), ("172.20.0.11", 5432), ("172.20.0.12", 5432)]);
    for s in servers.values() {
        for key in ["Name", "Group", "Port", "Username", "SSLMode", "MaintenanceDB", "Host"] {
            assert!(s.get(key).is_some(), "{key} missing: {s}");
        }
        assert_eq!((s["Group"].as_str(), s["Username"].as_str()), (Some("pglb lb1"), Some("postgres")));
    }

    // Without --output: the same document on stdout, options applied.
    let out = pglb(&["export", "pgadmin", "--config", config.to_str().unwrap(), "--user", "dba", "--sslmode", "require"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("stdout is the JSON document");
    assert!(doc["Servers"].as_object().unwrap().values().all(|s| s["Username"] == "dba" && s["SSLMode"] == "require" && s["ConnectionParameters"]["sslmode"] == "require"));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_pgadmin_bad_input_is_one_line() {
    one_error_line(&pglb(&["export", "pgadmin", "--config", "/nonexistent/pglb.toml"]), "cannot read config file /nonexistent/pglb.toml");
    let dir = std::env::temp_dir().join(format!("pglb-export-bad-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    let text = fs::read_to_string(example()).unwrap().replace("[probe]\n", "[probe]\nprobe_intervall = \"1s\"\n");
    fs::write(&bad, text).unwrap();
    one_error_line(&pglb(&["export", "pgadmin", "--config", bad.to_str().unwrap()]), "unknown field");
    let config = example();
    one_error_line(
        &pglb(&["export", "pgadmin", "--config", config.to_str().unwrap(), "--output", "/nonexistent/dir/servers.json"]),
        "cannot write /nonexistent/dir/servers.json",
    );
    fs::remove_dir_all(&dir).unwrap();
}
