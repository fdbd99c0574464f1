//! `pglb status --json`: the same as one JSON object with a schema (docs/JSON.md).

use super::*;

/// The `schema` of `pglb status --json` (docs/JSON.md): additive changes keep it, renames and
/// removals bump it.
pub const STATUS_SCHEMA: &str = "pglb.status/1";

/// `pglb status --json`: what the status table shows, as one JSON object (docs/JSON.md).
#[derive(serde::Serialize)]
struct StatusJson<'a> {
    schema: &'static str,
    instance: &'a str,
    vip: &'a str,
    vip_held: bool,
    vip_master: Option<&'a str>,
    vrrp_state: &'a str,
    phase: &'a str,
    /// Why automatic failover is held back (phase `writer-lost`), else null.
    failover_blocked: Option<&'a str>,
    forwarding: bool,
    ready: bool,
    state_recorded: bool,
    paused: bool,
    pause: Option<PauseJson<'a>>,
    nodes: Vec<NodeJson<'a>>,
    peers: Vec<PeerJson<'a>>,
}

#[derive(serde::Serialize)]
struct NodeJson<'a> {
    name: &'a str,
    addr: &'a str,
    role: &'a str,
    state: &'a str,
    timeline: Option<u32>,
    lag_bytes: Option<u64>,
    lag_s: Option<f64>,
    routed_ports: &'a [u16],
    flows: u64,
    /// `pglb node drain`: no new read connection goes to it as a standby.
    drained: bool,
    /// `pglb node disable`: never a failover candidate or switchover target.
    disabled: bool,
    /// Flows on the read ports not closed yet (what `pglb node drain --wait` waits for).
    open_read_flows: u64,
}

#[derive(serde::Serialize)]
struct PauseJson<'a> {
    by: &'a str,
    reason: Option<&'a str>,
    since: &'a str,
    until: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct PeerJson<'a> {
    addr: &'a str,
    timeline: Option<u32>,
    writer: Option<&'a str>,
}

/// `pglb status --json`: the fields of [`render_table`] as one pretty-printed JSON object with
/// `"schema": "pglb.status/1"`, ending with a newline.
pub fn render_json(s: &Snapshot) -> String {
    let json = StatusJson {
        schema: STATUS_SCHEMA,
        instance: &s.instance,
        vip: &s.vip,
        vip_held: s.vip_held,
        vip_master: if s.vip_held { None } else { s.vip_master.as_deref() },
        vrrp_state: &s.vrrp_state,
        phase: &s.phase,
        failover_blocked: s.failover_blocked.as_deref(),
        forwarding: s.forwarding,
        ready: s.ready,
        state_recorded: s.state_recorded,
        paused: s.pause.is_some(),
        pause: s.pause.as_ref().map(|p| PauseJson { by: &p.by, reason: p.reason.as_deref(), since: &p.since, until: p.until.as_deref() }),
        nodes: s
            .nodes
            .iter()
            .map(|n| NodeJson {
                name: &n.name,
                addr: &n.addr,
                role: &n.role,
                state: &n.state,
                timeline: n.timeline,
                lag_bytes: n.lag_bytes,
                lag_s: n.lag_seconds,
                routed_ports: &n.routed_ports,
                flows: n.traffic.flows,
                drained: n.drained,
                disabled: n.disabled,
                open_read_flows: n.traffic.open_read_flows,
            })
            .collect(),
        peers: s
            .peers
            .iter()
            .map(|p| PeerJson { addr: &p.addr, timeline: p.timeline, writer: p.timeline.and(p.writer.as_deref()) })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&json).expect("a status serializes");
    text.push('\n');
    text
}
