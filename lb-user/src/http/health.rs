//! The health checks other tools already speak (Patroni's REST API: `/primary`, `/replica`,
//! `/read-only`, `/health`, 200 when the check holds, 503 when not), answered from a snapshot.
//! Pure: what a path and its query ask ([`parse_check`]) and the verdict a snapshot gives
//! ([`answer`]).
//!
//! pglb runs beside no PostgreSQL node, so every check comes in two scopes:
//!
//! | path | 200 when |
//! |---|---|
//! | `/primary`, `/read-write` | this instance forwards (holds the VIP) and routes a writer on its write port |
//! | `/replica[?lag=L]` | this instance forwards and routes at least one standby on its read port (within `L`) |
//! | `/read-only[?lag=L]` | this instance forwards and routes any node on its read port or a writer (within `L`) |
//! | `/health` | this instance forwards |
//! | `/node/<name>/primary`, `/node/<name>/read-write` | `<name>` is the writer this instance routes |
//! | `/node/<name>/replica[?lag=L]` | `<name>` is a standby this instance routes reads to (within `L`) |
//! | `/node/<name>/read-only[?lag=L]` | `<name>` is the writer or a standby routed for reads (within `L`) |
//! | `/node/<name>/health` | `<name>` answers its probes and is not fenced |
//! | `/node/<name>` | always, for a configured node: its JSON |
//!
//! The per-node checks do not depend on which load balancer holds the VIP: every instance
//! probes every node, so HAProxy can ask either. A standby "routed for reads" already passed
//! `[failover] max_read_lag_bytes` and `max_read_lag`; `?lag=` only makes a check stricter.
//! `L` is bytes (`1048576`, `16MB`, PostgreSQL's units: 1 kB = 1024 B) or a duration (`10s`,
//! `500ms`); a node whose lag is unknown fails a lag limit. The writer's lag is 0.

use std::time::Duration;

use serde_json::{Value, json};

use crate::status::{NodeRow, Snapshot};

/// A `?lag=` limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagLimit {
    Bytes(u64),
    Time(Duration),
}

/// What is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Primary,
    Replica(Option<LagLimit>),
    ReadOnly(Option<LagLimit>),
    Health,
    /// `/node/<name>` alone: the node's JSON, always 200.
    Describe,
}

/// Whose check: this instance's routing, or one node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Instance,
    Node(String),
}

/// Why a health path cannot be answered: 400 (one line) or 404.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("lag={value} is neither bytes (1048576, 16MB) nor a duration (10s, 500ms)")]
    BadLag { value: String },
    #[error("unknown query parameter {name:?}: only lag= is understood")]
    UnknownParameter { name: String },
    #[error("lag= applies to replica and read-only only")]
    LagNotApplicable,
    #[error("no node named {name:?}: the nodes are {known}")]
    UnknownNode { name: String, known: String },
}

impl CheckError {
    /// 404 for a node that is not configured, 400 for the rest.
    pub fn status(&self) -> &'static str {
        match self {
            CheckError::UnknownNode { .. } => "404 Not Found",
            _ => "400 Bad Request",
        }
    }
}

/// Parses `16MB`, `1048576`, `10s`, `500ms`: bytes with PostgreSQL's units (B, kB, MB, GB, TB,
/// powers of 1024, any case), or a humantime duration.
pub fn parse_lag(value: &str) -> Result<LagLimit, CheckError> {
    let bad = || CheckError::BadLag { value: value.to_owned() };
    let v = value.trim();
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let (number, unit) = v.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => Some(0),
        "kb" => Some(10),
        "mb" => Some(20),
        "gb" => Some(30),
        "tb" => Some(40),
        _ => None,
    };
    match shift {
        Some(s) => number.checked_mul(1 << s).map(LagLimit::Bytes).ok_or_else(bad),
        None => humantime::parse_duration(v).map(LagLimit::Time).map_err(|_| bad()),
    }
}

/// What a path (and its query) asks, or `None` when it is no health path.
pub fn parse_check(path: &str, query: Option<&str>) -> Option<Result<(Scope, Check), CheckError>> {
    let (scope, check) = match path.strip_prefix("/node/") {
        Some(rest) => {
            let (name, check) = rest.split_once('/').unwrap_or((rest, ""));
            if name.is_empty() {
                return None;
            }
            (Scope::Node(name.to_owned()), check)
        }
        None => (Scope::Instance, path.strip_prefix('/')?),
    };
    let lag = match lag_param(query) {
        Ok(lag) => lag,
        Err(e) => return Some(Err(e)),
    };
    let check = match (check, scope.clone()) {
        ("primary" | "read-write", _) => Check::Primary,
        ("replica", _) => Check::Replica(lag),
        ("read-only", _) => Check::ReadOnly(lag),
        ("health", _) => Check::Health,
        ("", Scope::Node(_)) => Check::Describe,
        _ => return None,
    };
    if lag.is_some() && !matches!(check, Check::Replica(_) | Check::ReadOnly(_)) {
        return Some(Err(CheckError::LagNotApplicable));
    }
    Some(Ok((scope, check)))
}

/// The `lag=` of a query string; any other parameter is an error.
fn lag_param(query: Option<&str>) -> Result<Option<LagLimit>, CheckError> {
    let mut lag = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("lag", v)) => lag = Some(parse_lag(v)?),
            _ => return Err(CheckError::UnknownParameter { name: pair.split('=').next().unwrap_or(pair).to_owned() }),
        }
    }
    Ok(lag)
}

/// A check's verdict: 200 or 503, and the JSON body that explains it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub ok: bool,
    pub body: Value,
}

/// Answers a check from a snapshot.
pub fn answer(scope: &Scope, check: Check, s: &Snapshot) -> Result<Verdict, CheckError> {
    match scope {
        Scope::Instance => Ok(instance(check, s)),
        Scope::Node(name) => {
            let Some(n) = s.nodes.iter().find(|n| &n.name == name) else {
                let known = s.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
                return Err(CheckError::UnknownNode { name: name.clone(), known });
            };
            let ok = match check {
                Check::Primary => is_writer(s, n),
                Check::Replica(lag) => is_read_standby(s, n) && within(s, n, lag),
                Check::ReadOnly(lag) => (is_writer(s, n) || n.reader) && within(s, n, lag),
                Check::Health => n.up,
                Check::Describe => true,
            };
            Ok(Verdict { ok, body: node_json(s, n) })
        }
    }
}

/// An instance-wide check: forwarding, and the nodes that pass the same check per node.
fn instance(check: Check, s: &Snapshot) -> Verdict {
    let passing: Vec<&str> = s
        .nodes
        .iter()
        .filter(|n| match check {
            Check::Primary => is_writer(s, n),
            Check::Replica(lag) => is_read_standby(s, n) && within(s, n, lag),
            Check::ReadOnly(lag) => (is_writer(s, n) || n.reader) && within(s, n, lag),
            Check::Health | Check::Describe => is_writer(s, n) || n.reader,
        })
        .map(|n| n.name.as_str())
        .collect();
    let ok = s.forwarding && (matches!(check, Check::Health) || !passing.is_empty());
    let body = json!({
        "instance": s.instance,
        "forwarding": s.forwarding,
        "vrrp": s.vrrp_state,
        "phase": s.phase,
        "writer": s.writer,
        "nodes": passing,
    });
    Verdict { ok, body }
}

fn is_writer(s: &Snapshot, n: &NodeRow) -> bool {
    s.writer.as_deref() == Some(n.name.as_str())
}

/// A standby this instance sends reads to (not the writer standing in for absent standbys).
fn is_read_standby(s: &Snapshot, n: &NodeRow) -> bool {
    n.reader && !is_writer(s, n)
}

/// Whether the node's lag is within the limit (the writer lags by 0; unknown fails).
fn within(s: &Snapshot, n: &NodeRow, lag: Option<LagLimit>) -> bool {
    match lag {
        None => true,
        Some(_) if is_writer(s, n) => true,
        Some(LagLimit::Bytes(max)) => n.lag_bytes.is_some_and(|l| l <= max),
        Some(LagLimit::Time(max)) => n.lag_seconds.is_some_and(|l| l <= max.as_secs_f64()),
    }
}

/// `/node/<name>` and the body of its checks.
pub fn node_json(s: &Snapshot, n: &NodeRow) -> Value {
    json!({
        "instance": s.instance,
        "name": n.name,
        "addr": n.addr,
        "role": n.role,
        "state": n.state,
        "timeline": n.timeline,
        "lag_bytes": n.lag_bytes,
        "lag_s": n.lag_seconds,
        "writer": is_writer(s, n),
        "reader": n.reader,
        "fenced": s.fenced.contains(&n.name),
        "drained": n.drained,
        "disabled": n.disabled,
        "routed_ports": n.routed_ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_in_bytes_or_a_duration() {
        for (text, want) in [
            ("1048576", LagLimit::Bytes(1 << 20)),
            ("0", LagLimit::Bytes(0)),
            ("16MB", LagLimit::Bytes(16 << 20)),
            ("16mb", LagLimit::Bytes(16 << 20)),
            ("1024kB", LagLimit::Bytes(1 << 20)),
            ("2 GB", LagLimit::Bytes(2 << 30)),
            ("1TB", LagLimit::Bytes(1 << 40)),
            ("512B", LagLimit::Bytes(512)),
            ("10s", LagLimit::Time(Duration::from_secs(10))),
            ("500ms", LagLimit::Time(Duration::from_millis(500))),
            ("1m", LagLimit::Time(Duration::from_secs(60))),
        ] {
            assert_eq!(parse_lag(text), Ok(want), "{text}");
        }
        for bad in ["", "MB", "-1", "1.5MB", "10 parsecs", "99999999999999999999", "16777216TB", "ten"] {
            assert_eq!(parse_lag(bad), Err(CheckError::BadLag { value: bad.to_owned() }), "{bad}");
        }
    }

    #[test]
    fn paths_and_queries() {
        let ok = |path, query| parse_check(path, query).expect("a health path").expect("valid");
        let node = |n: &str| Scope::Node(n.to_owned());
        assert_eq!(ok("/primary", None), (Scope::Instance, Check::Primary));
        assert_eq!(ok("/read-write", None), (Scope::Instance, Check::Primary));
        assert_eq!(ok("/replica", Some("lag=16MB")), (Scope::Instance, Check::Replica(Some(LagLimit::Bytes(16 << 20)))));
        assert_eq!(ok("/read-only", Some("")), (Scope::Instance, Check::ReadOnly(None)));
        assert_eq!(ok("/health", None), (Scope::Instance, Check::Health));
        assert_eq!(ok("/node/pg1", None), (node("pg1"), Check::Describe));
        assert_eq!(ok("/node/pg1/", None), (node("pg1"), Check::Describe));
        assert_eq!(ok("/node/pg2/replica", Some("lag=10s")), (node("pg2"), Check::Replica(Some(LagLimit::Time(Duration::from_secs(10))))));
        assert_eq!(ok("/node/pg2/health", None), (node("pg2"), Check::Health));
        for other in ["/metrics", "/stats", "/", "/node/", "/node/pg1/other", "/primary/x"] {
            assert!(parse_check(other, None).is_none(), "{other} is no health path");
        }
        let err = |path, query| parse_check(path, Some(query)).expect("a health path").expect_err("refused");
        assert_eq!(err("/replica", "lag=abc"), CheckError::BadLag { value: "abc".into() });
        assert_eq!(err("/replica", "lag=1MB&tag_x=1"), CheckError::UnknownParameter { name: "tag_x".into() });
        assert_eq!(err("/primary", "lag=1MB"), CheckError::LagNotApplicable);
        assert_eq!(err("/replica", "lag=abc").status(), "400 Bad Request");
        assert_eq!(err("/replica", "lag=abc").to_string(), "lag=abc is neither bytes (1048576, 16MB) nor a duration (10s, 500ms)");
    }

    fn row(name: &str, role: &str, reader: bool, lag_bytes: Option<u64>, lag_s: Option<f64>) -> NodeRow {
        NodeRow {
            name: name.into(),
            role: role.into(),
            state: "up".into(),
            up: true,
            reader,
            lag_bytes,
            lag_seconds: lag_s,
            ..NodeRow::default()
        }
    }

    /// pg1 the writer, pg2 a reader 4 kB and 0.5 s behind, pg3 up but not routed (too far
    /// behind), pg4 down.
    fn cluster(forwarding: bool) -> Snapshot {
        Snapshot {
            instance: "lb1".into(),
            forwarding,
            writer: Some("pg1".into()),
            nodes: vec![
                NodeRow { routed_ports: vec![3000], ..row("pg1", "primary", false, None, None) },
                NodeRow { routed_ports: vec![3001], ..row("pg2", "standby", true, Some(4096), Some(0.5)) },
                row("pg3", "standby", false, Some(64 << 20), Some(30.0)),
                NodeRow { up: false, state: "down".into(), ..row("pg4", "unknown", false, None, None) },
            ],
            ..Snapshot::default()
        }
    }

    fn code(s: &Snapshot, path: &str, query: Option<&str>) -> Result<bool, CheckError> {
        let (scope, check) = parse_check(path, query).expect("a health path")?;
        answer(&scope, check, s).map(|v| v.ok)
    }

    #[test]
    fn per_node_codes_follow_the_routing() {
        let s = cluster(false);
        for (path, query, want) in [
            ("/node/pg1/primary", None, true),
            ("/node/pg2/primary", None, false),
            ("/node/pg1/replica", None, false),
            ("/node/pg2/replica", None, true),
            ("/node/pg3/replica", None, false),
            ("/node/pg2/replica", Some("lag=4kB"), true),
            ("/node/pg2/replica", Some("lag=4095"), false),
            ("/node/pg2/replica", Some("lag=1s"), true),
            ("/node/pg2/replica", Some("lag=100ms"), false),
            ("/node/pg1/read-only", None, true),
            ("/node/pg1/read-only", Some("lag=0"), true),
            ("/node/pg2/read-only", Some("lag=1MB"), true),
            ("/node/pg3/read-only", None, false),
            ("/node/pg4/read-only", None, false),
            ("/node/pg3/health", None, true),
            ("/node/pg4/health", None, false),
            ("/node/pg4", None, true),
        ] {
            assert_eq!(code(&s, path, query), Ok(want), "{path}?{query:?} (answered without the VIP too)");
        }
        assert_eq!(
            code(&s, "/node/pg9/primary", None),
            Err(CheckError::UnknownNode { name: "pg9".into(), known: "pg1, pg2, pg3, pg4".into() })
        );
    }

    #[test]
    fn instance_codes_need_forwarding_and_a_routed_node() {
        let fwd = cluster(true);
        for (path, query, want) in [
            ("/primary", None, true),
            ("/replica", None, true),
            ("/replica", Some("lag=1kB"), false),
            ("/read-only", Some("lag=1kB"), true),
            ("/health", None, true),
        ] {
            assert_eq!(code(&fwd, path, query), Ok(want), "forwarding: {path}?{query:?}");
            assert_eq!(code(&cluster(false), path, query), Ok(false), "not forwarding: {path}?{query:?}");
        }
        let no_writer = Snapshot { writer: None, ..fwd.clone() };
        assert_eq!(code(&no_writer, "/primary", None), Ok(false));
        assert_eq!(code(&no_writer, "/health", None), Ok(true), "health is forwarding alone");
        let v = answer(&Scope::Instance, Check::Replica(None), &fwd).expect("answered");
        assert_eq!(v.body["nodes"], json!(["pg2"]));
        assert_eq!((&v.body["writer"], &v.body["forwarding"]), (&json!("pg1"), &json!(true)));
    }

    #[test]
    fn node_json_names_role_state_lag_and_ports() {
        let s = Snapshot { fenced: vec!["pg3".into()], ..cluster(true) };
        let v = answer(&Scope::Node("pg2".into()), Check::Describe, &s).expect("known");
        assert_eq!(v.body["role"], "standby");
        assert_eq!(v.body["lag_bytes"], 4096);
        assert_eq!(v.body["routed_ports"], json!([3001]));
        assert_eq!((&v.body["writer"], &v.body["reader"], &v.body["fenced"]), (&json!(false), &json!(true), &json!(false)));
        let v = answer(&Scope::Node("pg3".into()), Check::Describe, &s).expect("known");
        assert_eq!(v.body["fenced"], true);
    }
}
