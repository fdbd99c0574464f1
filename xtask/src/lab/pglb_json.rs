//! Readers of `pglb status --json` (schema `pglb.status/1`) and `pglb map dump --json` (schema
//! `pglb.map-dump/1`), docs/JSON.md: what the drills and the bench take from them. Pure
//! functions over the JSON text, tested here; in `lab` so that neither of them imports the other.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

pub const STATUS_SCHEMA: &str = "pglb.status/1";
pub const MAP_DUMP_SCHEMA: &str = "pglb.map-dump/1";

/// The JSON object of `what`, checked to carry `schema`.
fn parse(text: &str, schema: &str, what: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(text).with_context(|| format!("`{what}` printed no JSON object: {text:?}"))?;
    match v.get("schema").and_then(Value::as_str) {
        Some(s) if s == schema => Ok(v),
        Some(s) => bail!("`{what}` printed schema {s:?}, expected {schema:?}"),
        None => bail!("`{what}` printed no \"schema\" field"),
    }
}

fn dump(text: &str) -> Result<Value> {
    parse(text, MAP_DUMP_SCHEMA, "pglb map dump --json")
}

/// One node of `pglb status`: its name, state, and routed ports as the table shows them
/// (`3000`, `3000,3001`, or `-` when unrouted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub node: String,
    pub state: String,
    pub routed: String,
}

/// The nodes of `pglb status --json`.
pub fn status_rows(text: &str) -> Result<Vec<StatusRow>> {
    let v = parse(text, STATUS_SCHEMA, "pglb status --json")?;
    let nodes = v.get("nodes").and_then(Value::as_array).context("no \"nodes\" array in `pglb status --json`")?;
    nodes
        .iter()
        .map(|n| {
            let field = |name: &str| n.get(name).and_then(Value::as_str).map(str::to_owned).with_context(|| format!("a node without \"{name}\": {n}"));
            let ports = n.get("routed_ports").and_then(Value::as_array).with_context(|| format!("a node without \"routed_ports\": {n}"))?;
            let ports: Vec<String> = ports.iter().map(|p| p.as_u64().map(|p| p.to_string()).with_context(|| format!("bad port {p}"))).collect::<Result<_>>()?;
            Ok(StatusRow { node: field("name")?, state: field("state")?, routed: if ports.is_empty() { "-".to_owned() } else { ports.join(",") } })
        })
        .collect()
}

/// Every reason counter of `pglb map dump --json`, by name: every reason the data plane has,
/// whatever they are called in this build.
pub fn reasons(text: &str) -> Result<BTreeMap<String, u64>> {
    let v = dump(text)?;
    let reasons = v.pointer("/counters/reasons").and_then(Value::as_object).context("no \"counters.reasons\" object in `pglb map dump --json`")?;
    if reasons.is_empty() {
        bail!("no reason counters in `pglb map dump --json`");
    }
    reasons.iter().map(|(name, n)| Ok((name.clone(), n.as_u64().with_context(|| format!("bad count {n} of {name}"))?))).collect()
}

/// One reason counter of `pglb map dump --json`.
pub fn reason(text: &str, name: &str) -> Result<u64> {
    reasons(text)?.get(name).copied().with_context(|| format!("no counter {name}"))
}

/// New flows opened per backend (`counters.backends[].new_flows` of `pglb map dump --json`), by
/// the backend's `"a.b.c.d:port"`; backends without an address are left out.
pub fn backend_new_flows(text: &str) -> Result<BTreeMap<String, u64>> {
    let v = dump(text)?;
    let backends = v.pointer("/counters/backends").and_then(Value::as_array).context("no \"counters.backends\" array in `pglb map dump --json`")?;
    let mut out = BTreeMap::new();
    for b in backends {
        let Some(addr) = b.get("addr").and_then(Value::as_str) else { continue };
        let n = b.get("new_flows").and_then(Value::as_u64).with_context(|| format!("a backend without a \"new_flows\" count: {b}"))?;
        *out.entry(addr.to_owned()).or_insert(0) += n;
    }
    Ok(out)
}

/// The `"ready"` of `pglb status --json` (issue 18: false while the instance wakes humble after a
/// start or a stall). An error when the field is missing: a check of it must not pass on a pglb
/// that does not say.
pub fn status_ready(text: &str) -> Result<bool> {
    let v = parse(text, STATUS_SCHEMA, "pglb status --json")?;
    v.get("ready").and_then(Value::as_bool).context("no boolean \"ready\" in `pglb status --json` (a pglb from before issue 18?)")
}

/// The timelines the instance's peers last reported (`peers[].timeline` of `pglb status
/// --json`), by peer address; a peer that has not reported is left out.
pub fn peer_timelines(text: &str) -> Result<BTreeMap<String, u64>> {
    let v = parse(text, STATUS_SCHEMA, "pglb status --json")?;
    let peers = v.get("peers").and_then(Value::as_array).context("no \"peers\" array in `pglb status --json`")?;
    Ok(peers
        .iter()
        .filter_map(|p| Some((p.get("addr")?.as_str()?.to_owned(), p.get("timeline")?.as_u64()?)))
        .collect())
}

/// Whether the lease of `pglb map dump --json` has run out (`expired` or `past_grace`; the
/// text dump's `lease: EXPIRED`).
pub fn lease_expired(text: &str) -> Result<bool> {
    let v = dump(text)?;
    let state = v.pointer("/lease/state").and_then(Value::as_str).context("no \"lease.state\" in `pglb map dump --json`")?;
    match state {
        "expired" | "past_grace" => Ok(true),
        "valid" | "never_written" => Ok(false),
        other => bail!("unknown lease state {other:?} in `pglb map dump --json`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = r#"{
  "schema": "pglb.status/1", "instance": "lb1", "vip": "172.20.0.100", "vip_held": true, "vip_master": null,
  "vrrp_state": "master", "phase": "steady", "forwarding": true,
  "nodes": [
    {"name": "pg1", "addr": "172.20.0.10:5432", "role": "primary", "state": "up", "timeline": 2, "lag_bytes": null, "lag_s": null, "routed_ports": [3000], "flows": 1},
    {"name": "pg2", "addr": "172.20.0.11:5432", "role": "standby", "state": "up", "timeline": 2, "lag_bytes": 0, "lag_s": 0.0, "routed_ports": [3001, 3002], "flows": 0},
    {"name": "pg3", "addr": "172.20.0.12:5432", "role": "unknown", "state": "needs-rejoin", "timeline": null, "lag_bytes": null, "lag_s": null, "routed_ports": [], "flows": 0}
  ],
  "peers": []
}"#;

    const DUMP: &str = r#"{
  "schema": "pglb.map-dump/1",
  "lease": {"state": "expired", "remaining_ms": 0, "expired_for_ms": 1200, "grace_ms": 10000},
  "listeners": [], "backends": [], "writer": null,
  "readers": {"table": 0, "readers": 0, "table_size": 0, "slots": []},
  "flows": [], "capacity": {"established": 65536, "half_open": 16384},
  "counters": {"reasons": {"pass_not_ipv4": 3, "tx_new_flow": 10, "drop_flow_table": 0}, "backends": [
    {"id": 0, "addr": "172.20.0.10:5432", "to_backend_packets": 5, "to_backend_bytes": 300, "to_client_packets": 4, "to_client_bytes": 240, "new_flows": 2, "resets": 0},
    {"id": 1, "addr": "172.20.0.11:5432", "to_backend_packets": 0, "to_backend_bytes": 0, "to_client_packets": 0, "to_client_bytes": 0, "new_flows": 0, "resets": 0},
    {"id": 7, "addr": null, "to_backend_packets": 1, "to_backend_bytes": 60, "to_client_packets": 0, "to_client_bytes": 0, "new_flows": 1, "resets": 0}
  ], "listeners": []}
}"#;

    #[test]
    fn status_rows_keep_the_tables_routed_column() {
        let rows = status_rows(STATUS).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], StatusRow { node: "pg1".into(), state: "up".into(), routed: "3000".into() });
        assert_eq!(rows[1].routed, "3001,3002");
        assert_eq!(rows[2], StatusRow { node: "pg3".into(), state: "needs-rejoin".into(), routed: "-".into() });
        assert!(status_rows(&STATUS.replace("pglb.status/1", "pglb.status/2")).is_err());
        assert!(status_rows("error: no pglb daemon answers").is_err());
        assert!(status_rows(DUMP).is_err(), "a map dump is not a status");
    }

    #[test]
    fn backend_new_flows_are_read_by_address() {
        let flows = backend_new_flows(DUMP).unwrap();
        assert_eq!(flows.len(), 2, "the backend without an address is left out: {flows:?}");
        assert_eq!(flows["172.20.0.10:5432"], 2);
        assert_eq!(flows["172.20.0.11:5432"], 0);
        assert!(backend_new_flows(&DUMP.replace("\"new_flows\": 2", "\"new_flows\": \"x\"")).is_err());
        assert!(backend_new_flows(STATUS).is_err(), "a status is not a map dump");
    }

    #[test]
    fn ready_and_peer_timelines_are_read_from_the_status() {
        assert!(status_ready(STATUS).is_err(), "a status without \"ready\" must not read as ready or not");
        let ready = STATUS.replace("\"forwarding\": true,", "\"forwarding\": true, \"ready\": false,");
        assert!(!status_ready(&ready).unwrap());
        assert!(status_ready(&ready.replace("\"ready\": false", "\"ready\": true")).unwrap());
        assert!(status_ready(&ready.replace("\"ready\": false", "\"ready\": 1")).is_err());
        assert!(peer_timelines(STATUS).unwrap().is_empty());
        let peers = STATUS.replace("\"peers\": []", r#""peers": [{"addr": "172.20.0.22", "timeline": 99, "writer": null}, {"addr": "172.20.0.23", "timeline": null, "writer": null}]"#);
        assert_eq!(peer_timelines(&peers).unwrap(), BTreeMap::from([("172.20.0.22".to_owned(), 99)]));
    }

    #[test]
    fn reasons_and_the_lease_are_read() {
        let r = reasons(DUMP).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r["tx_new_flow"], 10);
        assert_eq!(reason(DUMP, "pass_not_ipv4").unwrap(), 3);
        assert!(reason(DUMP, "no_such_reason").is_err());
        assert!(lease_expired(DUMP).unwrap());
        assert!(lease_expired(&DUMP.replace("\"expired\"", "\"past_grace\"")).unwrap());
        assert!(!lease_expired(&DUMP.replace("\"expired\"", "\"valid\"")).unwrap());
        assert!(!lease_expired(&DUMP.replace("\"expired\"", "\"never_written\"")).unwrap());
        assert!(reasons(&DUMP.replace(r#"{"pass_not_ipv4": 3, "tx_new_flow": 10, "drop_flow_table": 0}"#, "{}")).is_err());
        assert!(reasons(&DUMP.replace("\"tx_new_flow\": 10", "\"tx_new_flow\": \"x\"")).is_err());
        assert!(reasons("lease: valid\n").is_err());
        assert!(reasons(STATUS).is_err(), "a status is not a map dump");
    }
}
