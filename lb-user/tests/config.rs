//! Tier 1: config parsing and validation, table-driven. Every bad case asserts the exact error
//! variant and that the report (with its source chain) is one line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_user::config::{Config, ConfigError, Ipv4Cidr, Pool, XdpMode};
use toml::{Table, Value};

/// A minimal valid config (no [vrrp], loopback http).
const BASE: &str = r#"
[instance]
name = "lb1"
[dataplane]
interface = "eth0"
address = "172.20.0.21/16"
vip = "172.20.0.100/16"
[[listener]]
port = 3000
pool = "write"
[[listener]]
port = 3001
pool = "read"
[[node]]
name = "pg1"
host = "172.20.0.10"
[[node]]
name = "pg2"
host = "172.20.0.11"
[[node]]
name = "pg3"
host = "172.20.0.12"
[probe]
user = "pglb"
password_file = "/nonexistent/pglb.password"
[replication]
user = "replicator"
password_env = "PGLB_TEST_REPL"
"#;

fn origin() -> &'static Path {
    Path::new("test.toml")
}

/// The error and its sources as `pglb` prints them (the library's renderer, which the binary's
/// `{:#}` matches: a message never repeats its source).
fn report(err: &ConfigError) -> String {
    lb_user::error_chain(err)
}

fn parse_patched(patch: impl FnOnce(&mut Table)) -> Result<Config, ConfigError> {
    let mut table: Table = BASE.parse().expect("BASE is valid toml");
    patch(&mut table);
    let text = toml::to_string(&table).expect("serializes");
    Config::parse(&text, origin())
}

fn expect_err(patch: impl FnOnce(&mut Table)) -> ConfigError {
    let err = parse_patched(patch).expect_err("config should be rejected");
    let line = report(&err);
    assert!(!line.contains('\n'), "error is not one line: {line:?}");
    assert!(!line.is_empty());
    err
}

fn section<'a>(t: &'a mut Table, name: &str) -> &'a mut Table {
    t.entry(name).or_insert_with(|| Value::Table(Table::new())).as_table_mut().unwrap()
}

fn array_item<'a>(t: &'a mut Table, name: &str, i: usize) -> &'a mut Table {
    t[name].as_array_mut().unwrap()[i].as_table_mut().unwrap()
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// A valid `[agent]` (one client), to be patched.
fn agent(t: &mut Table) -> &mut Table {
    let mut client = Table::new();
    client.insert("name".into(), s("app1"));
    client.insert("key_file".into(), s("/k1"));
    let a = section(t, "agent");
    a.insert("listen_port".into(), Value::Integer(3003));
    a.insert("signing_key_file".into(), s("/k"));
    a.insert("client".into(), Value::Array(vec![Value::Table(client)]));
    a
}

fn agent_client(t: &mut Table) -> &mut Table {
    agent(t)["client"].as_array_mut().unwrap()[0].as_table_mut().unwrap()
}

/// A `[vrrp]` with one pglb peer and its key file (not read by `Config::parse`).
/// A `[hooks]` section with its command, created when absent.
fn hooks(t: &mut Table) -> &mut Table {
    let h = t.entry("hooks").or_insert_with(|| Value::Table(Table::new())).as_table_mut().unwrap();
    h.entry("command").or_insert_with(|| s("/etc/pglb/hook.sh"));
    h
}

fn vrrp(t: &mut Table) -> &mut Table {
    let v = section(t, "vrrp");
    v.insert("vrid".into(), Value::Integer(51));
    v.insert("peers".into(), Value::Array(vec![s("172.20.0.22")]));
    v.insert("key_file".into(), s("/nonexistent/peer.key"));
    v
}

#[test]
fn base_parses_with_documented_defaults() {
    let c = parse_patched(|_| {}).expect("base config is valid");
    assert_eq!(c.instance.name, "lb1");
    assert_eq!(c.dataplane.vip, "172.20.0.100/16".parse::<Ipv4Cidr>().unwrap());
    assert_eq!(c.dataplane.xdp_mode, XdpMode::Native);
    assert_eq!(c.dataplane.flow_idle_timeout, Duration::from_secs(3600));
    assert_eq!(c.dataplane.half_open_timeout, Duration::from_secs(5));
    assert_eq!(c.pin_path(), PathBuf::from("/sys/fs/bpf/pglb/lb1"));
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].pool, Pool::Write);
    assert_eq!(c.nodes[1].port, 5432);
    assert_eq!(c.nodes[1].priority, 100);
    assert_eq!(c.nodes[1].read_weight, 100);
    assert!(!c.nodes[1].nofailover);
    assert_eq!(c.probe.dbname, "postgres");
    assert_eq!(c.probe.interval, Duration::from_millis(200));
    assert_eq!(c.probe.timeout, Duration::from_millis(150));
    assert_eq!(c.probe.connect_timeout, Duration::from_millis(150));
    assert_eq!(c.failover.failover_after, 3);
    assert_eq!(c.failover.up_after, 3);
    assert_eq!(c.failover.max_lag_on_failover_bytes, 1 << 20);
    assert_eq!(c.failover.max_read_lag_bytes, 16 << 20);
    assert_eq!(c.failover.max_read_lag, Duration::from_secs(1));
    assert_eq!(c.replication.synchronous_count, 1);
    assert!(c.vrrp.is_none());
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8404");
}

#[test]
fn vrrp_defaults_and_master_down_interval() {
    let c = parse_patched(|t| {
        vrrp(t);
    })
    .unwrap();
    let v = c.vrrp.clone().unwrap();
    assert_eq!(v.priority, 100);
    assert_eq!(v.advert_interval, Duration::from_millis(100));
    assert!(!v.preempt, "keepalived's nopreempt is the default: a returning instance does not reset the master's connections");
    assert_eq!(v.preempt_delay, Duration::ZERO);
    assert_eq!(v.track_weight, 60);
    assert_eq!(v.report_port, 3002);
    assert!(v.keepalived_peers.is_empty());
    assert_eq!(v.max_peer_advert_interval, Duration::from_secs(2));
    assert!(v.unicast_peers().is_empty());
    // The runtime's quorum window: 3 x 100ms + (256 - 100) x 100ms / 256 = 300ms + 60.9375ms.
    let p = lb_user::runtime::params::machine(&c);
    assert_eq!(p.peer_timeout, Duration::from_micros(360_937) + Duration::from_nanos(500));
}

#[test]
fn unknown_key_names_the_key_and_the_file() {
    let err = Config::parse(&format!("{BASE}\n[http]\nlisten = \"127.0.0.1:8404\"\nlisen = 1\n"), origin())
        .expect_err("unknown key");
    let line = report(&err);
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(line.contains("lisen"), "{line}");
    assert!(line.starts_with("test.toml:"), "{line}");
    assert!(!line.contains('\n'), "{line:?}");
    // And inside an array of tables.
    let err = expect_err(|t| {
        array_item(t, "node", 1).insert("weight".into(), Value::Integer(3));
    });
    assert!(matches!(&err, ConfigError::Parse { message, .. } if message.contains("weight")), "{err}");
}

#[test]
fn parse_error_points_at_the_line() {
    let text = format!("{BASE}\n[failover]\nfailover_after = \"three\"\n");
    let err = Config::parse(&text, origin()).unwrap_err();
    match &err {
        ConfigError::Parse { line, .. } => assert_eq!(*line, text.lines().count(), "{err}"),
        other => panic!("expected Parse, got {other:?}"),
    }
}

#[test]
fn bad_configs_are_rejected_with_the_right_variant() {
    type Patch = Box<dyn FnOnce(&mut Table)>;
    type Check = fn(&ConfigError) -> bool;
    let cases: Vec<(&str, Patch, Check)> = vec![
        (
            "vip outside subnet",
            Box::new(|t| {
                section(t, "dataplane").insert("vip".into(), s("10.0.0.100/16"));
            }),
            |e| matches!(e, ConfigError::VipOutsideSubnet { .. }),
        ),
        (
            "vip prefix differs",
            Box::new(|t| {
                section(t, "dataplane").insert("vip".into(), s("172.20.0.100/24"));
            }),
            |e| matches!(e, ConfigError::VipPrefixMismatch { .. }),
        ),
        (
            "vip is the broadcast address",
            Box::new(|t| {
                section(t, "dataplane").insert("vip".into(), s("172.20.255.255/16"));
            }),
            |e| matches!(e, ConfigError::VipNotHostAddress { .. }),
        ),
        (
            "vip is the interface address",
            Box::new(|t| {
                section(t, "dataplane").insert("vip".into(), s("172.20.0.21/16"));
            }),
            |e| matches!(e, ConfigError::VipIsInterfaceAddress { .. }),
        ),
        (
            "vip is a node",
            Box::new(|t| {
                section(t, "dataplane").insert("vip".into(), s("172.20.0.11/16"));
            }),
            |e| matches!(e, ConfigError::VipIsNodeAddress { node, .. } if node == "pg2"),
        ),
        (
            "vip without prefix",
            Box::new(|t| {
                section(t, "dataplane").insert("vip".into(), s("172.20.0.100"));
            }),
            |e| matches!(e, ConfigError::Parse { message, .. } if message.contains("prefix length")),
        ),
        (
            "bad interface name",
            Box::new(|t| {
                section(t, "dataplane").insert("interface".into(), s("a-very-long-interface-name"));
            }),
            |e| matches!(e, ConfigError::InvalidInterface { .. }),
        ),
        (
            "bad instance name",
            Box::new(|t| {
                section(t, "instance").insert("name".into(), s("LB/1"));
            }),
            |e| matches!(e, ConfigError::InvalidInstanceName { .. }),
        ),
        (
            "unknown xdp mode",
            Box::new(|t| {
                section(t, "dataplane").insert("xdp_mode".into(), s("offload"));
            }),
            |e| matches!(e, ConfigError::Parse { message, .. } if message.contains("offload")),
        ),
        (
            "duplicate node name",
            Box::new(|t| {
                array_item(t, "node", 2).insert("name".into(), s("pg1"));
            }),
            |e| matches!(e, ConfigError::DuplicateNodeName { name } if name == "pg1"),
        ),
        (
            "duplicate node address",
            Box::new(|t| {
                array_item(t, "node", 2).insert("host".into(), s("172.20.0.11"));
            }),
            |e| matches!(e, ConfigError::DuplicateNodeAddress { first, second, .. } if first == "pg2" && second == "pg3"),
        ),
        (
            "node name not a slot name",
            Box::new(|t| {
                array_item(t, "node", 0).insert("name".into(), s("PG-1"));
            }),
            |e| matches!(e, ConfigError::InvalidNodeName { .. }),
        ),
        (
            "node port zero",
            Box::new(|t| {
                array_item(t, "node", 0).insert("port".into(), Value::Integer(0));
            }),
            |e| matches!(e, ConfigError::NodePortZero { .. }),
        ),
        (
            "read weight too large",
            Box::new(|t| {
                array_item(t, "node", 0).insert("read_weight".into(), Value::Integer(5000));
            }),
            |e| matches!(e, ConfigError::ReadWeightTooLarge { weight: 5000, .. }),
        ),
        (
            "no nodes",
            Box::new(|t| {
                t.remove("node");
            }),
            |e| matches!(e, ConfigError::NoNodes),
        ),
        (
            "listener port used twice",
            Box::new(|t| {
                array_item(t, "listener", 1).insert("port".into(), Value::Integer(3000));
            }),
            |e| matches!(e, ConfigError::DuplicateListenerPort { port: 3000 }),
        ),
        (
            "listener port zero",
            Box::new(|t| {
                array_item(t, "listener", 1).insert("port".into(), Value::Integer(0));
            }),
            |e| matches!(e, ConfigError::ListenerPortZero),
        ),
        (
            "listener port inside the NAT range (refused before anything is attached)",
            Box::new(|t| {
                array_item(t, "listener", 1).insert("port".into(), Value::Integer(30000));
            }),
            |e| matches!(e, ConfigError::ListenerInNatRange { port: 30000 }),
        ),
        (
            "relative state_dir",
            Box::new(|t| {
                section(t, "instance").insert("state_dir".into(), s("var/lib/pglb"));
            }),
            |e| matches!(e, ConfigError::RelativeStateDir { .. }),
        ),
        (
            "lease too short",
            Box::new(|t| {
                section(t, "dataplane").insert("lease".into(), s("50ms"));
            }),
            |e| matches!(e, ConfigError::DurationOutOfRange { key: "[dataplane] lease", .. }),
        ),
        (
            "half-open timeout too long",
            Box::new(|t| {
                section(t, "dataplane").insert("half_open_timeout".into(), s("10m"));
            }),
            |e| matches!(e, ConfigError::DurationOutOfRange { key: "[dataplane] half_open_timeout", .. }),
        ),
        (
            "empty rejoin_command",
            Box::new(|t| {
                section(t, "failover").insert("rejoin_command".into(), s("  "));
            }),
            |e| matches!(e, ConfigError::EmptyValue { section: "failover", key: "rejoin_command" }),
        ),
        (
            "listener collides with http on all addresses",
            Box::new(|t| {
                let h = section(t, "http");
                h.insert("listen".into(), s("0.0.0.0:3001"));
                h.insert("stats_user".into(), s("admin"));
                h.insert("stats_password_env".into(), s("X"));
            }),
            |e| matches!(e, ConfigError::ListenerCollidesWithHttp { port: 3001, .. }),
        ),
        (
            "no write listener",
            Box::new(|t| {
                array_item(t, "listener", 0).insert("pool".into(), s("read"));
                array_item(t, "listener", 0).insert("port".into(), Value::Integer(3002));
            }),
            |e| matches!(e, ConfigError::NoWriteListener),
        ),
        (
            "no listener at all",
            Box::new(|t| {
                t.remove("listener");
            }),
            |e| matches!(e, ConfigError::NoWriteListener),
        ),
        (
            "probe without password",
            Box::new(|t| {
                section(t, "probe").remove("password_file");
            }),
            |e| matches!(e, ConfigError::MissingPassword { section: "probe" }),
        ),
        (
            "probe with two passwords",
            Box::new(|t| {
                section(t, "probe").insert("password_env".into(), s("X"));
            }),
            |e| matches!(e, ConfigError::ConflictingPassword { section: "probe" }),
        ),
        (
            "probe password inline is an unknown key",
            Box::new(|t| {
                section(t, "probe").insert("password".into(), s("hunter2"));
            }),
            |e| matches!(e, ConfigError::Parse { message, .. } if message.contains("password") && !message.contains("hunter2")),
        ),
        (
            "failover_after zero",
            Box::new(|t| {
                section(t, "failover").insert("failover_after".into(), Value::Integer(0));
            }),
            |e| matches!(e, ConfigError::NumberOutOfRange { key: "[failover] failover_after", value: 0, .. }),
        ),
        (
            "up_after absurd",
            Box::new(|t| {
                section(t, "failover").insert("up_after".into(), Value::Integer(1000));
            }),
            |e| matches!(e, ConfigError::NumberOutOfRange { key: "[failover] up_after", .. }),
        ),
        (
            "probe interval zero",
            Box::new(|t| {
                section(t, "probe").insert("interval".into(), s("0s"));
            }),
            |e| matches!(e, ConfigError::DurationOutOfRange { key: "[probe] interval", .. }),
        ),
        (
            "probe interval absurd",
            Box::new(|t| {
                section(t, "probe").insert("interval".into(), s("2h"));
            }),
            |e| matches!(e, ConfigError::DurationOutOfRange { key: "[probe] interval", .. }),
        ),
        (
            "probe timeout not below interval",
            Box::new(|t| {
                section(t, "probe").insert("timeout".into(), s("200ms"));
            }),
            |e| matches!(e, ConfigError::ProbeTimeoutNotBelowInterval { key: "timeout", .. }),
        ),
        (
            "connect timeout not below interval",
            Box::new(|t| {
                section(t, "probe").insert("connect_timeout".into(), s("1s"));
            }),
            |e| matches!(e, ConfigError::ProbeTimeoutNotBelowInterval { key: "connect_timeout", .. }),
        ),
        (
            "probe timeout zero",
            Box::new(|t| {
                section(t, "probe").insert("timeout".into(), s("0ms"));
            }),
            |e| matches!(e, ConfigError::DurationOutOfRange { key: "[probe] timeout", .. }),
        ),
        (
            "duration without unit",
            Box::new(|t| {
                section(t, "probe").insert("interval".into(), s("200"));
            }),
            |e| matches!(e, ConfigError::Parse { .. }),
        ),
        (
            "max_read_lag zero",
            Box::new(|t| {
                section(t, "failover").insert("max_read_lag".into(), s("0s"));
            }),
            |e| matches!(e, ConfigError::DurationOutOfRange { key: "[failover] max_read_lag", .. }),
        ),
        (
            "pause_alert_after under a minute",
            Box::new(|t| {
                section(t, "failover").insert("pause_alert_after".into(), s("30s"));
            }),
            |e| matches!(e, ConfigError::DurationOutOfRange { key: "[failover] pause_alert_after", .. }),
        ),
        (
            "pause_alert_after over a week",
            Box::new(|t| {
                section(t, "failover").insert("pause_alert_after".into(), s("8d"));
            }),
            |e| matches!(e, ConfigError::DurationOutOfRange { key: "[failover] pause_alert_after", .. }),
        ),
        (
            "synchronous_count too large",
            Box::new(|t| {
                section(t, "replication").insert("synchronous_count".into(), Value::Integer(3));
            }),
            |e| matches!(e, ConfigError::SynchronousCountTooLarge { count: 3, nodes: 3 }),
        ),
        (
            "vrrp priority 0",
            Box::new(|t| {
                vrrp(t).insert("priority".into(), Value::Integer(0));
            }),
            |e| matches!(e, ConfigError::VrrpPriority { priority: 0 }),
        ),
        (
            "vrrp priority 255 without owning the vip",
            Box::new(|t| {
                vrrp(t).insert("priority".into(), Value::Integer(255));
            }),
            |e| matches!(e, ConfigError::VrrpPriority { priority: 255 }),
        ),
        (
            "vrrp priority 256",
            Box::new(|t| {
                vrrp(t).insert("priority".into(), Value::Integer(256));
            }),
            |e| matches!(e, ConfigError::Parse { .. }),
        ),
        (
            "vrrp vrid 0",
            Box::new(|t| {
                vrrp(t).insert("vrid".into(), Value::Integer(0));
            }),
            |e| matches!(e, ConfigError::VrrpVridZero),
        ),
        (
            "advert interval not centiseconds",
            Box::new(|t| {
                vrrp(t).insert("advert_interval".into(), s("105ms"));
            }),
            |e| matches!(e, ConfigError::VrrpAdvertInterval { .. }),
        ),
        (
            "advert interval too long",
            Box::new(|t| {
                vrrp(t).insert("advert_interval".into(), s("41s"));
            }),
            |e| matches!(e, ConfigError::VrrpAdvertInterval { .. }),
        ),
        (
            "advert interval too short",
            Box::new(|t| {
                vrrp(t).insert("advert_interval".into(), s("0ms"));
            }),
            |e| matches!(e, ConfigError::VrrpAdvertInterval { .. }),
        ),
        (
            "track weight not below priority",
            Box::new(|t| {
                vrrp(t).insert("track_weight".into(), Value::Integer(100));
            }),
            |e| matches!(e, ConfigError::VrrpTrackWeight { weight: 100, priority: 100 }),
        ),
        (
            "report port 0",
            Box::new(|t| {
                vrrp(t).insert("report_port".into(), Value::Integer(0));
            }),
            |e| matches!(e, ConfigError::VrrpReportPort),
        ),
        (
            "agent port 0",
            Box::new(|t| {
                agent(t).insert("listen_port".into(), Value::Integer(0));
            }),
            |e| matches!(e, ConfigError::AgentPort { port: 0, .. }),
        ),
        (
            "agent port is the report port",
            Box::new(|t| {
                vrrp(t);
                agent(t).insert("listen_port".into(), Value::Integer(3002));
            }),
            |e| matches!(e, ConfigError::AgentPort { port: 3002, .. }),
        ),
        (
            "agent subscriber ttl too short",
            Box::new(|t| {
                agent(t).insert("subscriber_ttl".into(), s("10ms"));
            }),
            |e| matches!(e, ConfigError::DurationOutOfRange { key: "[agent] subscriber_ttl", .. }),
        ),
        (
            "agent signing key file empty",
            Box::new(|t| {
                agent(t).insert("signing_key_file".into(), s(""));
            }),
            |e| matches!(e, ConfigError::EmptyValue { section: "agent", key: "signing_key_file" }),
        ),
        (
            "agent without clients",
            Box::new(|t| {
                agent(t).remove("client");
            }),
            |e| matches!(e, ConfigError::AgentNoClients),
        ),
        (
            "agent client name with a space",
            Box::new(|t| {
                agent_client(t).insert("name".into(), s("app 1"));
            }),
            |e| matches!(e, ConfigError::AgentClientName { name } if name == "app 1"),
        ),
        (
            "agent client twice",
            Box::new(|t| {
                let twice = Value::Table(agent_client(t).clone());
                agent(t)["client"].as_array_mut().unwrap().push(twice);
            }),
            |e| matches!(e, ConfigError::DuplicateAgentClient { name } if name == "app1"),
        ),
        (
            "agent client key file empty",
            Box::new(|t| {
                agent_client(t).insert("key_file".into(), s(""));
            }),
            |e| matches!(e, ConfigError::EmptyValue { section: "agent.client", key: "key_file" }),
        ),
        (
            "peer twice",
            Box::new(|t| {
                vrrp(t).insert("peers".into(), Value::Array(vec![s("172.20.0.22"), s("172.20.0.22")]));
            }),
            |e| matches!(e, ConfigError::DuplicatePeer { .. }),
        ),
        (
            "peer is self",
            Box::new(|t| {
                vrrp(t).insert("peers".into(), Value::Array(vec![s("172.20.0.21")]));
            }),
            |e| matches!(e, ConfigError::PeerIsSelf { .. }),
        ),
        (
            "vrrp without any peer",
            Box::new(|t| {
                vrrp(t).insert("peers".into(), Value::Array(vec![]));
            }),
            |e| matches!(e, ConfigError::VrrpNoPeers),
        ),
        (
            "pglb peers without a key file",
            Box::new(|t| {
                vrrp(t).remove("key_file");
            }),
            |e| matches!(e, ConfigError::VrrpKeyMissing),
        ),
        (
            "empty key file path",
            Box::new(|t| {
                vrrp(t).insert("key_file".into(), s(""));
            }),
            |e| matches!(e, ConfigError::EmptyValue { section: "vrrp", key: "key_file" }),
        ),
        (
            "a keepalived peer that is also a pglb peer",
            Box::new(|t| {
                vrrp(t).insert("keepalived_peers".into(), Value::Array(vec![s("172.20.0.22")]));
            }),
            |e| matches!(e, ConfigError::DuplicatePeer { .. }),
        ),
        (
            "longest accepted peer interval below our own",
            Box::new(|t| {
                let v = vrrp(t);
                v.insert("advert_interval".into(), s("1s"));
                v.insert("max_peer_advert_interval".into(), s("500ms"));
            }),
            |e| matches!(e, ConfigError::VrrpMaxPeerAdvertInterval { .. }),
        ),
        (
            "longest accepted peer interval past the field",
            Box::new(|t| {
                vrrp(t).insert("max_peer_advert_interval".into(), s("41s"));
            }),
            |e| matches!(e, ConfigError::VrrpMaxPeerAdvertInterval { .. }),
        ),
        (
            "preempt delay absurd",
            Box::new(|t| {
                vrrp(t).insert("preempt_delay".into(), s("2h"));
            }),
            |e| matches!(e, ConfigError::DurationOutOfRange { key: "[vrrp] preempt_delay", .. }),
        ),
        (
            "http on a public address without stats credentials",
            Box::new(|t| {
                section(t, "http").insert("listen".into(), s("172.20.0.21:8404"));
            }),
            |e| matches!(e, ConfigError::StatsCredentialsMissing { .. }),
        ),
        (
            "http stats_user without a password",
            Box::new(|t| {
                section(t, "http").insert("stats_user".into(), s("admin"));
            }),
            |e| matches!(e, ConfigError::StatsCredentialsIncomplete),
        ),
        (
            "http stats password without a user",
            Box::new(|t| {
                section(t, "http").insert("stats_password_env".into(), s("X"));
            }),
            |e| matches!(e, ConfigError::StatsCredentialsIncomplete),
        ),
        (
            "http auth on every endpoint without credentials",
            Box::new(|t| {
                section(t, "http").insert("auth".into(), s("all"));
            }),
            |e| matches!(e, ConfigError::HttpAuthWithoutCredentials),
        ),
        (
            "http empty token_file",
            Box::new(|t| {
                section(t, "http").insert("token_file".into(), s(""));
            }),
            |e| matches!(e, ConfigError::EmptyValue { section: "http", key: "token_file" }),
        ),
        (
            "http allow is empty",
            Box::new(|t| {
                section(t, "http").insert("allow".into(), Value::Array(vec![]));
            }),
            |e| matches!(e, ConfigError::HttpAllowEmpty),
        ),
        (
            "http allow with host bits",
            Box::new(|t| {
                section(t, "http").insert("allow".into(), Value::Array(vec![s("127.0.0.1/8")]));
            }),
            |e| matches!(e, ConfigError::HttpAllowHostBits { network, .. } if network.to_string() == "127.0.0.0"),
        ),
        (
            "http allow that shuts out the loopback listener",
            Box::new(|t| {
                section(t, "http").insert("allow".into(), Value::Array(vec![s("10.0.0.0/8")]));
            }),
            |e| matches!(e, ConfigError::HttpAllowExcludesListen { .. }),
        ),
        (
            "http allow entry not in CIDR notation",
            Box::new(|t| {
                section(t, "http").insert("allow".into(), Value::Array(vec![s("10.0.0.0")]));
            }),
            |e| matches!(e, ConfigError::Parse { message, .. } if message.contains("10.0.0.0") && message.contains("prefix length")),
        ),
        (
            "http auth scope unknown",
            Box::new(|t| {
                section(t, "http").insert("auth".into(), s("everything"));
            }),
            |e| matches!(e, ConfigError::Parse { message, .. } if message.contains("everything")),
        ),
        (
            "empty hooks command",
            Box::new(|t| {
                hooks(t).insert("command".into(), s(" "));
            }),
            |e| matches!(e, ConfigError::EmptyValue { section: "hooks", key: "command" }),
        ),
        (
            "hooks without a command",
            Box::new(|t| {
                hooks(t).remove("command");
            }),
            |e| matches!(e, ConfigError::Parse { message, .. } if message.contains("command")),
        ),
        (
            "hooks timeout too short",
            Box::new(|t| {
                hooks(t).insert("timeout".into(), s("10ms"));
            }),
            |e| matches!(e, ConfigError::DurationOutOfRange { key: "[hooks] timeout", .. }),
        ),
        (
            "hooks max_concurrent 0",
            Box::new(|t| {
                hooks(t).insert("max_concurrent".into(), Value::Integer(0));
            }),
            |e| matches!(e, ConfigError::NumberOutOfRange { key: "[hooks] max_concurrent", min: 1, .. }),
        ),
        (
            "hooks max_concurrent too large",
            Box::new(|t| {
                hooks(t).insert("max_concurrent".into(), Value::Integer(1000));
            }),
            |e| matches!(e, ConfigError::NumberOutOfRange { key: "[hooks] max_concurrent", max: 64, .. }),
        ),
        (
            "unknown hooks key",
            Box::new(|t| {
                hooks(t).insert("comand".into(), s("true"));
            }),
            |e| matches!(e, ConfigError::Parse { message, .. } if message.contains("comand")),
        ),
        (
            "unknown log format",
            Box::new(|t| {
                section(t, "log").insert("format".into(), s("logfmt"));
            }),
            |e| matches!(e, ConfigError::Parse { message, .. } if message.contains("logfmt")),
        ),
        (
            "empty probe user",
            Box::new(|t| {
                section(t, "probe").insert("user".into(), s(""));
            }),
            |e| matches!(e, ConfigError::EmptyValue { section: "probe", key: "user" }),
        ),
    ];
    let count = cases.len();
    for (name, patch, check) in cases {
        let err = expect_err(patch);
        eprintln!("{name}: {}", report(&err));
        assert!(check(&err), "case {name:?}: unexpected error {err:?} ({err})");
        assert!(err.to_string().starts_with(|c: char| !c.is_uppercase()), "case {name:?}: {err}");
    }
    assert!(count >= 40);
}

#[test]
fn good_variants_are_accepted() {
    // vip owner with priority 255
    parse_patched(|t| {
        section(t, "dataplane").insert("vip".into(), s("172.20.0.21/16"));
        vrrp(t).insert("priority".into(), Value::Integer(255));
    })
    .expect("the address owner may use priority 255");
    // http on a public address with credentials
    parse_patched(|t| {
        let h = section(t, "http");
        h.insert("listen".into(), s("172.20.0.21:8404"));
        h.insert("stats_user".into(), s("admin"));
        h.insert("stats_password_file".into(), s("/x"));
    })
    .expect("stats credentials given");
    // http on a public address with a bearer token, on every endpoint, from two networks
    let c = parse_patched(|t| {
        let h = section(t, "http");
        h.insert("listen".into(), s("0.0.0.0:8404"));
        h.insert("token_file".into(), s("/etc/pglb/http.token"));
        h.insert("auth".into(), s("all"));
        h.insert("allow".into(), Value::Array(vec![s("10.0.0.0/8"), s("172.20.0.21/32")]));
    })
    .expect("a token is a credential");
    assert_eq!(c.http.allow.as_deref().map(<[Ipv4Cidr]>::len), Some(2));
    assert_eq!(c.http.auth, lb_user::config::HttpAuthScope::All);
    // synchronous_count 0 with a single node
    parse_patched(|t| {
        t["node"].as_array_mut().unwrap().truncate(1);
        section(t, "replication").insert("synchronous_count".into(), Value::Integer(0));
    })
    .expect("one asynchronous node");
    // unicast peers
    let c = parse_patched(|t| {
        let v = vrrp(t);
        v.insert("peers".into(), Value::Array(vec![s("172.20.0.22")]));
        v.insert("unicast".into(), Value::Boolean(true));
        v.insert("advert_interval".into(), s("1s 500ms"));
    })
    .unwrap();
    let v = c.vrrp.unwrap();
    assert_eq!(v.unicast_peers(), ["172.20.0.22".parse::<std::net::Ipv4Addr>().unwrap()]);
    // keepalived alone (a migration's first step): no key needed; its adverts go unicast too.
    let c = parse_patched(|t| {
        let v = vrrp(t);
        v.insert("peers".into(), Value::Array(vec![]));
        v.remove("key_file");
        v.insert("keepalived_peers".into(), Value::Array(vec![s("172.20.0.23")]));
        v.insert("unicast".into(), Value::Boolean(true));
    })
    .expect("a keepalived peer needs no key");
    assert_eq!(c.vrrp.unwrap().unicast_peers(), ["172.20.0.23".parse::<std::net::Ipv4Addr>().unwrap()]);
    assert_eq!(v.advert_interval, Duration::from_millis(1500));
    // [hooks] with only its command: the documented defaults.
    let c = parse_patched(|t| {
        hooks(t);
    })
    .expect("a hook command alone");
    let h = c.hooks.expect("[hooks]");
    assert_eq!((h.command.as_str(), h.timeout, h.max_concurrent), ("/etc/pglb/hook.sh", Duration::from_secs(10), 4));
    assert!(parse_patched(|_| {}).unwrap().hooks.is_none(), "no [hooks]: no hook");
    // [log]: text lines by default, json when asked.
    assert_eq!(parse_patched(|_| {}).unwrap().log.format, lb_user::config::LogFormat::Text);
    let c = parse_patched(|t| {
        section(t, "log").insert("format".into(), s("json"));
    })
    .expect("json logs");
    assert_eq!(c.log.format, lb_user::config::LogFormat::Json);
}

#[test]
fn cidr_helpers() {
    let cases = [
        ("172.20.0.100/16", "172.20.0.0", "172.20.255.255", true),
        ("10.1.2.3/8", "10.0.0.0", "10.255.255.255", true),
        ("192.168.1.0/24", "192.168.1.0", "192.168.1.255", false),
        ("192.168.1.255/24", "192.168.1.0", "192.168.1.255", false),
        ("192.168.1.1/31", "192.168.1.0", "192.168.1.1", true),
        ("192.168.1.1/32", "192.168.1.1", "192.168.1.1", true),
        ("1.2.3.4/0", "0.0.0.0", "255.255.255.255", true),
    ];
    for (cidr, net, bcast, host) in cases {
        let c: Ipv4Cidr = cidr.parse().unwrap();
        assert_eq!(c.network().to_string(), net, "{cidr}");
        assert_eq!(c.broadcast().to_string(), bcast, "{cidr}");
        assert_eq!(c.is_host_address(), host, "{cidr}");
        assert_eq!(c.to_string(), cidr);
    }
    for bad in ["1.2.3.4", "1.2.3.4/33", "1.2.3/8", "1.2.3.4/", "1.2.3.4/+8", "x/8"] {
        assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
    }
    let c: Ipv4Cidr = "172.20.0.21/16".parse().unwrap();
    assert!(c.contains("172.20.200.1".parse().unwrap()));
    assert!(!c.contains("172.21.0.1".parse().unwrap()));
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pglb-config-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Loads a shipped config with its password paths pointed into `dir`.
fn load_shipped(rel: &str, dir: &TempDir) -> Config {
    let text = std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"));
    let mut table: Table = text.parse().unwrap_or_else(|e| panic!("{rel} is not toml: {e}"));
    let probe = dir.write("pglb.password", "probe-secret\n");
    let repl = dir.write("replicator.password", "repl-secret\r\n");
    section(&mut table, "probe").insert("password_file".into(), s(probe.to_str().unwrap()));
    section(&mut table, "replication").insert("password_file".into(), s(repl.to_str().unwrap()));
    if table.get("vrrp").and_then(Value::as_table).is_some_and(|v| v.contains_key("key_file")) {
        let key = dir.write("peer.key", "0123456789abcdef-peer\n");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        section(&mut table, "vrrp").insert("key_file".into(), s(key.to_str().unwrap()));
    }
    if table.contains_key("agent") {
        let private = |name: &str, text: &str| {
            let key = dir.write(name, text);
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            s(key.to_str().unwrap())
        };
        section(&mut table, "agent").insert("signing_key_file".into(), private("agent-signing.key", &format!("{}\n", "5a".repeat(32))));
        let client = private("agent-client.key", "0123456789abcdef0123\n");
        for c in section(&mut table, "agent")["client"].as_array_mut().unwrap() {
            c.as_table_mut().unwrap().insert("key_file".into(), client.clone());
        }
    }
    let path = dir.write(&rel.replace('/', "_"), &toml::to_string(&table).unwrap());
    // The shipped file itself must parse and validate (secrets aside).
    Config::parse(&text, &repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    Config::load(&path).unwrap_or_else(|e| panic!("{rel}: {}", report(&e)))
}

#[test]
fn shipped_configs_parse_and_validate() {
    let dir = TempDir::new("shipped");
    let example = load_shipped("config/pglb.example.toml", &dir);
    assert_eq!(example.nodes.len(), 3);
    assert_eq!(example.probe.password.expose(), "probe-secret");
    assert_eq!(example.replication.password.expose(), "repl-secret");

    let lb1 = load_shipped("config/lab.toml", &dir);
    let lb2 = load_shipped("config/lab-lb2.toml", &dir);
    for c in [&lb1, &lb2] {
        let hosts: Vec<String> = c.nodes.iter().map(|n| format!("{}={}", n.name, n.host)).collect();
        assert_eq!(hosts, ["pg1=172.20.0.10", "pg2=172.20.0.11", "pg3=172.20.0.12"]);
        assert_eq!(c.dataplane.vip.to_string(), "172.20.0.100/16");
        assert_eq!(c.dataplane.interface, "eth0");
        assert_eq!(c.probe.user, "pglb");
        assert_eq!(c.replication.user, "replicator");
        let ports: Vec<(u16, Pool)> = c.listeners.iter().map(|l| (l.port, l.pool)).collect();
        assert_eq!(ports, [(3000, Pool::Write), (3001, Pool::Read)]);
    }
    assert_eq!(lb1.dataplane.address.to_string(), "172.20.0.21/16");
    assert_eq!(lb2.dataplane.address.to_string(), "172.20.0.22/16");
    assert_eq!(lb1.vrrp.as_ref().unwrap().priority, 150);
    assert_eq!(lb2.vrrp.as_ref().unwrap().priority, 100);
    assert_eq!(lb1.vrrp.as_ref().unwrap().peers, [lb2.dataplane.address.addr]);
    assert_eq!(lb2.vrrp.as_ref().unwrap().peers, [lb1.dataplane.address.addr]);
    assert_eq!(lb1.vrrp.as_ref().unwrap().vrid, lb2.vrrp.as_ref().unwrap().vrid);

    for c in [&lb1, &lb2] {
        let a = c.agent.as_ref().expect("the lab serves the agent channel");
        assert_eq!((a.listen_port, a.subscriber_ttl), (3003, Duration::from_secs(5)), "[agent] port and default ttl");
        assert!(a.signing_key.is_some(), "the signing key is read at load");
        let clients: Vec<(&str, bool)> = a.clients.iter().map(|c| (c.name.as_str(), c.key.is_some())).collect();
        assert_eq!(clients, [("client", true)], "the lab's one agent, its key read at load");
    }

    // The lab installs each load balancer in docs/DEPLOY.md's layout under its own root:
    // <root>/etc/pglb for the secrets, <root>/var/lib/pglb/<name> for the state.
    for (rel, name, c) in [("config/lab.toml", "lb1", &lb1), ("config/lab-lb2.toml", "lb2", &lb2)] {
        let root = format!("/run/pglb-lab/{name}/root");
        let text = std::fs::read_to_string(repo_file(rel)).unwrap();
        assert!(text.contains(&format!("password_file = \"{root}/etc/pglb/pglb.password\"")), "{rel}");
        assert!(text.contains(&format!("password_file = \"{root}/etc/pglb/replicator.password\"")), "{rel}");
        assert_eq!(c.state_dir(), Path::new(&format!("{root}/var/lib/pglb/{name}")), "{rel}");
        assert!(text.contains(&format!("signing_key_file = \"{root}/etc/pglb/agent-signing.key\"")), "{rel}");
        assert!(text.contains(&format!("key_file = \"{root}/etc/pglb/agent-client.key\"")), "{rel}");
        // The lab's hook appends every event to a file beside the state file (tests/hooks.rs).
        let hooks = c.hooks.as_ref().expect("the lab runs a hook");
        assert!(hooks.command.ends_with(&format!(">> {root}/var/lib/pglb/{name}/hooks.log")), "{rel}: {}", hooks.command);
        assert_eq!((hooks.timeout, hooks.max_concurrent), (Duration::from_secs(10), 4), "{rel}: the defaults");
    }
    assert!(example.hooks.is_none(), "the example leaves [hooks] commented out");
}

#[test]
fn unreadable_password_file_names_path_and_os_error() {
    let dir = TempDir::new("unreadable");
    let path = dir.write("c.toml", BASE);
    let err = Config::load(&path).expect_err("/nonexistent/pglb.password cannot be read");
    let line = report(&err);
    assert!(
        matches!(&err, ConfigError::PasswordFileUnreadable { section: "probe", path, .. } if path == Path::new("/nonexistent/pglb.password")),
        "{err:?}"
    );
    assert!(line.contains("/nonexistent/pglb.password"), "{line}");
    assert!(line.contains("No such file or directory"), "{line}");
    assert!(!line.contains('\n'));
}

#[test]
fn missing_config_file_is_one_line() {
    let err = Config::load(Path::new("/nonexistent/pglb.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    let line = report(&err);
    assert!(line.contains("/nonexistent/pglb.toml") && !line.contains('\n'), "{line}");
}

#[test]
fn secrets_from_env_and_redaction() {
    let mut c = parse_patched(|_| {}).unwrap();
    let dir = TempDir::new("env");
    let probe = dir.write("p", "s3cret-probe\n");
    c.probe.password_file = Some(probe);
    c.resolve_secrets(|var| (var == "PGLB_TEST_REPL").then(|| "s3cret-repl".to_owned())).unwrap();
    assert_eq!(c.replication.password.expose(), "s3cret-repl");
    let debug = format!("{c:?}");
    assert!(!debug.contains("s3cret"), "Debug leaks a password: {debug}");
    assert!(debug.contains("<redacted>"));

    let err = c.resolve_secrets(|_| None).unwrap_err();
    assert!(matches!(&err, ConfigError::PasswordEnvMissing { section: "replication", var } if var == "PGLB_TEST_REPL"));

    let empty = dir.write("empty", "\n");
    c.probe.password_file = Some(empty);
    let err = c.resolve_secrets(|_| Some("x".into())).unwrap_err();
    assert!(matches!(err, ConfigError::PasswordEmpty { section: "probe" }));
}

#[test]
fn http_token_file_is_read_and_checked() {
    let dir = TempDir::new("token");
    let mut c = parse_patched(|_| {}).unwrap();
    c.probe.password_file = Some(dir.write("p", "pw\n"));
    let env = |var: &str| (var == "PGLB_TEST_REPL").then(|| "r".to_owned());
    c.http.token_file = Some(dir.write("good", "Zm9vYmFyYmF6cXV4LXRva2Vu\n"));
    c.resolve_secrets(env).expect("a good token");
    assert_eq!(c.http.token.as_ref().map(|t| t.expose()), Some("Zm9vYmFyYmF6cXV4LXRva2Vu"));
    assert!(!format!("{c:?}").contains("Zm9vYmFy"), "Debug leaks the token");
    for (name, text) in [("short", "abc\n"), ("spaces", "a token with spaces in it\n"), ("two-lines", "aaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbb\n"), ("empty", "")] {
        c.http.token_file = Some(dir.write(name, text));
        let err = c.resolve_secrets(env).expect_err(name);
        assert!(matches!(err, ConfigError::TokenInvalid { .. }), "{name}: {err:?}");
        assert!(!report(&err).contains('\n'), "{name}: {}", report(&err));
    }
    c.http.token_file = Some(dir.0.join("missing"));
    let err = c.resolve_secrets(env).expect_err("missing token file");
    assert!(matches!(err, ConfigError::TokenFileUnreadable { .. }) && report(&err).contains("missing"), "{}", report(&err));
}
