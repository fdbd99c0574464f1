//! `pglb export pgadmin`: the cluster of a config as a pgAdmin 4 `servers.json`, the file
//! `setup.py load-servers` (and Tools → Import/Export Servers) reads. Pure: a config in, a JSON
//! value out; no file, no secret.
//!
//! The format is pgAdmin's "Import/Export Servers" page
//! (<https://www.pgadmin.org/docs/pgadmin4/latest/import_export_servers.html>, source
//! `docs/en_US/import_export_servers.rst` in pgadmin-org/pgadmin4): a top-level `"Servers"`
//! object whose keys are "1", "2", …; every server needs `Name`, `Group`, `Port`, `Username`,
//! `SSLMode`, `MaintenanceDB` and one of `Host`, `HostAddr`, `Service`. Newer pgAdmin reads the
//! SSL mode from `ConnectionParameters.sslmode` and older releases from `SSLMode`, so both are
//! written. Password fields cannot be imported and none is written: pgAdmin asks at the first
//! connection (or reads the `passfile` the operator names).

use serde_json::{Map, Value, json};

use crate::config::{Config, Pool};

/// What the config does not say: who connects, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// The pgAdmin server group; `None`: `pglb <instance name>`.
    pub group: Option<String>,
    /// The role pgAdmin connects as (an administrator's, not pglb's probe role).
    pub username: String,
    /// The database pgAdmin connects to first.
    pub maintenance_db: String,
    /// libpq `sslmode`: disable, allow, prefer, require, verify-ca, verify-full.
    pub sslmode: String,
    /// A libpq passfile on the pgAdmin host (`ConnectionParameters.passfile`); `None`: pgAdmin
    /// asks for the password.
    pub passfile: Option<String>,
}

/// The libpq `sslmode` values pgAdmin offers.
pub const SSLMODES: &[&str] = &["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

/// libpq's connect timeout pgAdmin gets, seconds (its own default is 10).
const CONNECT_TIMEOUT_S: u64 = 10;

/// The `servers.json` document: the VIP's listeners (write first, in config order), then each
/// `[[node]]` straight at its own address and port.
pub fn servers_json(config: &Config, options: &ExportOptions) -> Value {
    let group = options.group.clone().unwrap_or_else(|| format!("pglb {}", config.instance.name));
    let vip = config.dataplane.vip.addr;
    let mut entries: Vec<(String, String, u16, String)> = Vec::new();
    let mut listeners: Vec<_> = config.listeners.iter().collect();
    listeners.sort_by_key(|l| l.pool != Pool::Write);
    for l in listeners {
        let (what, comment) = match l.pool {
            Pool::Write => ("write", "pglb VIP write port: always the current primary"),
            Pool::Read => ("read", "pglb VIP read port: a healthy standby (the primary when none is)"),
        };
        entries.push((format!("VIP {what} ({vip}:{})", l.port), vip.to_string(), l.port, comment.to_owned()));
    }
    for n in &config.nodes {
        entries.push((
            format!("{} ({}:{})", n.name, n.host, n.port),
            n.host.to_string(),
            n.port,
            format!("PostgreSQL node {} directly, bypassing the VIP (role changes with failovers)", n.name),
        ));
    }
    let mut servers = Map::new();
    for (i, (name, host, port, comment)) in entries.into_iter().enumerate() {
        let mut params = Map::new();
        params.insert("sslmode".into(), json!(options.sslmode));
        params.insert("connect_timeout".into(), json!(CONNECT_TIMEOUT_S));
        if let Some(passfile) = &options.passfile {
            params.insert("passfile".into(), json!(passfile));
        }
        servers.insert(
            (i + 1).to_string(),
            json!({
                "Name": name,
                "Group": group,
                "Host": host,
                "Port": port,
                "MaintenanceDB": options.maintenance_db,
                "Username": options.username,
                "SSLMode": options.sslmode,
                "Comment": comment,
                "ConnectionParameters": Value::Object(params),
            }),
        );
    }
    json!({ "Servers": Value::Object(servers) })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every key a server entry may have, as pgAdmin's "Import/Export Servers" page documents
    /// them (the fully defined example of
    /// https://www.pgadmin.org/docs/pgadmin4/latest/import_export_servers.html, plus `SSLMode`
    /// and `HostAddr`, which the page names as required or alternative).
    const DOCUMENTED_KEYS: &[&str] = &[
        "Name", "Group", "Host", "HostAddr", "Port", "MaintenanceDB", "Username", "Role", "Comment",
        "DBRestriction", "Shared", "SharedUsername", "BGColor", "FGColor", "Service", "UseSSHTunnel",
        "TunnelHost", "TunnelPort", "TunnelUsername", "TunnelAuthentication", "TunnelIdentityFile",
        "TunnelKeepAlive", "PasswordExecCommand", "PasswordExecExpiration", "KerberosAuthentication",
        "ConnectionParameters", "Tags", "PostConnectionSQL", "SSLMode",
    ];

    /// A JSON type check, `Value::is_string` and the like.
    type IsType = fn(&Value) -> bool;

    /// The page's required keys with the JSON type pgAdmin checks (Port must be an integer).
    const REQUIRED: &[(&str, IsType)] = &[
        ("Name", Value::is_string),
        ("Group", Value::is_string),
        ("Port", Value::is_u64),
        ("Username", Value::is_string),
        ("SSLMode", Value::is_string),
        ("MaintenanceDB", Value::is_string),
    ];

    /// libpq connection keywords pgAdmin documents in `ConnectionParameters` and this export uses.
    const CONNECTION_PARAMETERS: &[&str] = &["sslmode", "connect_timeout", "passfile"];

    fn example() -> Config {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/pglb.example.toml"));
        Config::parse(&std::fs::read_to_string(path).unwrap(), path).expect("the example config parses")
    }

    fn options() -> ExportOptions {
        ExportOptions {
            group: None,
            username: "postgres".into(),
            maintenance_db: "postgres".into(),
            sslmode: "prefer".into(),
            passfile: Some("/var/lib/pgadmin/.pgpass".into()),
        }
    }

    /// Asserts `doc` is a servers.json pgAdmin documents; returns its entries in key order.
    fn check_format(doc: &Value) -> Vec<&Map<String, Value>> {
        let top = doc.as_object().expect("an object");
        assert_eq!(top.keys().collect::<Vec<_>>(), ["Servers"], "only \"Servers\" at the top: {doc}");
        let servers = top["Servers"].as_object().expect("\"Servers\" is an object");
        // Keys are "1", "2", … (a JSON object has no order; serde_json sorts them as strings).
        let mut keys: Vec<usize> = servers.keys().map(|k| k.parse().unwrap_or_else(|_| panic!("server key {k:?} is not a number"))).collect();
        keys.sort_unstable();
        assert_eq!(keys, (1..=servers.len()).collect::<Vec<_>>(), "server keys are 1..=n");
        let mut out = Vec::new();
        for key in keys.iter().map(usize::to_string) {
            let (key, entry) = (&key, &servers[&key]);
            let entry = entry.as_object().unwrap_or_else(|| panic!("server {key} is an object"));
            for (k, is_type) in REQUIRED {
                let v = entry.get(*k).unwrap_or_else(|| panic!("server {key} lacks the required {k}: {entry:?}"));
                assert!(is_type(v), "server {key}: {k} has the wrong JSON type: {v}");
            }
            assert!(["Host", "HostAddr", "Service"].iter().any(|k| entry.get(*k).is_some_and(Value::is_string)), "server {key} has no Host, HostAddr or Service");
            for k in entry.keys() {
                assert!(DOCUMENTED_KEYS.contains(&k.as_str()), "server {key}: {k} is not a key pgAdmin documents");
                assert!(!k.to_lowercase().contains("password") || k.starts_with("PasswordExec"), "server {key} carries a password field {k}");
            }
            let params = entry["ConnectionParameters"].as_object().expect("ConnectionParameters is an object");
            for (k, v) in params {
                assert!(CONNECTION_PARAMETERS.contains(&k.as_str()), "server {key}: ConnectionParameters.{k} is not used here");
                assert!(v.is_string() || v.is_u64(), "server {key}: ConnectionParameters.{k} = {v}");
            }
            assert_eq!(params["sslmode"], entry["SSLMode"], "server {key}: both SSL modes agree");
            out.push(entry);
        }
        out
    }

    #[test]
    fn the_example_config_exports_both_vip_ports_and_every_node_in_documented_keys() {
        let doc = servers_json(&example(), &options());
        let entries = check_format(&doc);
        let rows: Vec<(&str, &str, u64, &str)> = entries
            .iter()
            .map(|e| (e["Name"].as_str().unwrap(), e["Host"].as_str().unwrap(), e["Port"].as_u64().unwrap(), e["Group"].as_str().unwrap()))
            .collect();
        assert_eq!(rows, [
            ("VIP write (172.20.0.100:3000)", "172.20.0.100", 3000, "pglb lb1"),
            ("VIP read (172.20.0.100:3001)", "172.20.0.100", 3001, "pglb lb1"),
            ("pg1 (172.20.0.10:5432)", "172.20.0.10", 5432, "pglb lb1"),
            ("pg2 (172.20.0.11:5432)", "172.20.0.11", 5432, "pglb lb1"),
            ("pg3 (172.20.0.12:5432)", "172.20.0.12", 5432, "pglb lb1"),
        ]);
        for e in &entries {
            assert_eq!((e["Username"].as_str(), e["MaintenanceDB"].as_str()), (Some("postgres"), Some("postgres")));
            assert_eq!(e["ConnectionParameters"]["passfile"], "/var/lib/pgadmin/.pgpass");
        }
    }

    #[test]
    fn write_port_first_node_ports_and_group_follow_the_config() {
        let mut config = example();
        config.listeners.reverse(); // read listed first: the write port still comes first
        config.nodes[1].port = 5433;
        let mut opts = options();
        opts.group = Some("prod".into());
        opts.passfile = None;
        let doc = servers_json(&config, &opts);
        let entries = check_format(&doc);
        assert_eq!(entries[0]["Port"], 3000);
        assert_eq!(entries[3]["Port"], 5433);
        assert!(entries.iter().all(|e| e["Group"] == "prod" && e["ConnectionParameters"].get("passfile").is_none()));
    }
}
