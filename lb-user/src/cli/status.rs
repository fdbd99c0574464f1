//! `pglb status`: the running daemon's view of the cluster.
//!
//! The daemon answers the admin socket's `status` request with the status table
//! ([`status::render_table`]); `--json` reads that table back into a [`Snapshot`] (only the
//! fields the table shows) and prints [`status::render_json`] (schema `pglb.status/1`,
//! docs/JSON.md). The table and this reader are tested together below, so a change to one that
//! the other does not follow fails the unit tests rather than a consumer of the JSON.

use anyhow::{Context as _, Result, bail};
use lb_user::status::{self, NodeRow, PeerRow, Snapshot, Traffic};

use super::{ConfigArg, admin_request};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// One JSON object (schema `pglb.status/1`, docs/JSON.md) instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let table = admin_request(&args.config.config, "status")?;
    if args.json {
        // Parsed in full before anything is printed: an error prints no partial JSON.
        let snapshot = parse_table(&table).context("reading the daemon's status reply")?;
        print!("{}", status::render_json(&snapshot));
    } else {
        print!("{table}");
    }
    Ok(())
}

/// The status table back into a [`Snapshot`]: the header line, one row per node, one line per
/// VRRP peer. Fields the table does not show keep their defaults.
fn parse_table(table: &str) -> Result<Snapshot> {
    let mut lines = table.lines();
    let header = lines.next().context("an empty status reply")?;
    let mut s = parse_header(header).with_context(|| format!("unexpected status header {header:?}"))?;
    let columns = lines.next().context("no column line in the status reply")?;
    if split_row(columns).first().copied() != Some("node") {
        bail!("unexpected status columns {columns:?}");
    }
    match lines.next() {
        Some(rule) if rule.starts_with('-') => {}
        other => bail!("unexpected status rule line {other:?}"),
    }
    for line in lines {
        if let Some(peer) = line.strip_prefix("peer ") {
            s.peers.push(parse_peer(peer).with_context(|| format!("unexpected status peer line {line:?}"))?);
        } else if !s.peers.is_empty() {
            bail!("unexpected status line {line:?} after the peers");
        } else {
            s.nodes.push(parse_node(line).with_context(|| format!("unexpected status row {line:?}"))?);
        }
    }
    Ok(s)
}

fn split_row(line: &str) -> Vec<&str> {
    line.split('|').map(str::trim).collect()
}

/// `instance I | VIP V HOLDER | vrrp S | phase P | forwarding yes|no`.
fn parse_header(line: &str) -> Result<Snapshot> {
    let parts: Vec<&str> = line.split(" | ").collect();
    let [instance, vip, vrrp, phase, forwarding] = parts.as_slice() else { bail!("expected five fields") };
    let field = |text: &str, name: &str| -> Result<String> {
        text.strip_prefix(name).and_then(|t| t.strip_prefix(' ')).map(str::to_owned).with_context(|| format!("no `{name}` field"))
    };
    let (vip, holder) = field(vip, "VIP")?.split_once(' ').map(|(v, h)| (v.to_owned(), h.to_owned())).context("no VIP holder")?;
    let (vip_held, vip_master) = match holder.as_str() {
        "held here" => (true, None),
        "not held here" => (false, None),
        _ => (false, Some(holder.strip_prefix("held by ").context("unknown VIP holder")?.to_owned())),
    };
    let forwarding = match field(forwarding, "forwarding")?.as_str() {
        "yes" => true,
        "no" => false,
        other => bail!("forwarding {other:?}"),
    };
    Ok(Snapshot {
        instance: field(instance, "instance")?,
        vip,
        vip_held,
        vip_master,
        vrrp_state: field(vrrp, "vrrp")?,
        phase: field(phase, "phase")?,
        forwarding,
        ..Snapshot::default()
    })
}

/// `-` is an absent value.
fn opt<T: std::str::FromStr>(cell: &str) -> Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    if cell == "-" { Ok(None) } else { Ok(Some(cell.parse().with_context(|| format!("bad value {cell:?}"))?)) }
}

/// `node | address | role | state | timeline | lag bytes | lag s | routed | flows`.
fn parse_node(line: &str) -> Result<NodeRow> {
    let cells = split_row(line);
    let [name, addr, role, state, timeline, lag_bytes, lag_s, routed, flows] = cells.as_slice() else {
        bail!("expected nine cells")
    };
    let routed_ports = if *routed == "-" {
        Vec::new()
    } else {
        routed.split(',').map(|p| p.parse().with_context(|| format!("bad port {p:?}"))).collect::<Result<_>>()?
    };
    Ok(NodeRow {
        name: (*name).to_owned(),
        addr: (*addr).to_owned(),
        role: (*role).to_owned(),
        state: (*state).to_owned(),
        up: *state == "up",
        timeline: opt(timeline)?,
        lag_bytes: opt(lag_bytes)?,
        lag_seconds: opt(lag_s)?,
        routed_ports,
        traffic: Traffic { flows: flows.parse().with_context(|| format!("bad flow count {flows:?}"))?, ..Traffic::default() },
        ..NodeRow::default()
    })
}

/// `ADDR: no report yet`, `ADDR: timeline T, reaches writer W`, `ADDR: timeline T, reaches no writer`.
fn parse_peer(text: &str) -> Result<PeerRow> {
    let (addr, said) = text.split_once(": ").context("no `: `")?;
    let mut peer = PeerRow { addr: addr.to_owned(), ..PeerRow::default() };
    if said == "no report yet" {
        return Ok(peer);
    }
    let (timeline, writer) = said.strip_prefix("timeline ").and_then(|t| t.split_once(", ")).context("no timeline")?;
    peer.timeline = Some(timeline.parse().with_context(|| format!("bad timeline {timeline:?}"))?);
    peer.writer = match writer {
        "reaches no writer" => None,
        _ => Some(writer.strip_prefix("reaches writer ").context("no writer")?.to_owned()),
    };
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use lb_user::status::{Histogram, render_json, render_table};

    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            instance: "lb1".into(),
            vip: "172.20.0.100".into(),
            phase: "failing-over".into(),
            vrrp_state: "backup".into(),
            vip_held: false,
            vip_master: Some("172.20.0.21".into()),
            forwarding: false,
            nodes: vec![
                NodeRow {
                    name: "pg1".into(),
                    addr: "172.20.0.10:5432".into(),
                    role: "primary".into(),
                    state: "up".into(),
                    up: true,
                    timeline: Some(2),
                    routed_ports: vec![3000, 3002],
                    traffic: Traffic { flows: 3, new_flows: 9, packets: 100, bytes: 6400, rsts: 1 },
                    since_change_s: 12.0,
                    probe_latency: Histogram::default(),
                    ..NodeRow::default()
                },
                NodeRow {
                    name: "pg2".into(),
                    addr: "172.20.0.11:5432".into(),
                    role: "standby".into(),
                    state: "up".into(),
                    up: true,
                    timeline: Some(2),
                    lag_bytes: Some(4096),
                    lag_seconds: Some(0.125),
                    routed_ports: vec![3001],
                    ..NodeRow::default()
                },
                NodeRow {
                    name: "pg3".into(),
                    addr: "172.20.0.12:5432".into(),
                    role: "unknown".into(),
                    state: "needs-rejoin".into(),
                    ..NodeRow::default()
                },
            ],
            peers: vec![
                PeerRow { addr: "172.20.0.21".into(), timeline: Some(2), writer: Some("pg1".into()) },
                PeerRow { addr: "172.20.0.22".into(), timeline: Some(3), writer: None },
                PeerRow { addr: "172.20.0.23".into(), timeline: None, writer: None },
            ],
            failovers_total: 4,
            ..Snapshot::default()
        }
    }

    fn json(s: &Snapshot) -> serde_json::Value {
        serde_json::from_str(&render_json(s)).unwrap()
    }

    #[test]
    fn the_table_reads_back_into_the_same_json() {
        for s in [
            sample(),
            Snapshot { vip_held: true, vip_master: None, vrrp_state: "master".into(), forwarding: true, ..sample() },
            Snapshot { vip_held: false, vip_master: None, peers: vec![], ..sample() },
            Snapshot { nodes: vec![], peers: vec![], ..sample() },
        ] {
            let table = render_table(&s);
            let parsed = parse_table(&table).unwrap_or_else(|e| panic!("{e:#}\n{table}"));
            assert_eq!(json(&parsed), json(&s), "{table}");
        }
    }

    #[test]
    fn json_fields() {
        let v = json(&parse_table(&render_table(&sample())).unwrap());
        assert_eq!(v["schema"], "pglb.status/1");
        assert_eq!(v["instance"], "lb1");
        assert_eq!(v["vip"], "172.20.0.100");
        assert_eq!(v["vip_held"], false);
        assert_eq!(v["vip_master"], "172.20.0.21");
        assert_eq!(v["vrrp_state"], "backup");
        assert_eq!(v["phase"], "failing-over");
        assert_eq!(v["forwarding"], false);
        assert_eq!(v["nodes"][0]["routed_ports"], serde_json::json!([3000, 3002]));
        assert_eq!(v["nodes"][0]["flows"], 3);
        assert_eq!(v["nodes"][0]["lag_bytes"], serde_json::Value::Null);
        assert_eq!(v["nodes"][1]["lag_s"], 0.125);
        assert_eq!(v["nodes"][2]["state"], "needs-rejoin");
        assert_eq!(v["nodes"][2]["routed_ports"], serde_json::json!([]));
        assert_eq!(v["peers"][0]["writer"], "pg1");
        assert_eq!(v["peers"][1]["writer"], serde_json::Value::Null);
        assert_eq!(v["peers"][2]["timeline"], serde_json::Value::Null);
    }

    #[test]
    fn a_reply_that_is_not_the_table_is_an_error() {
        assert!(parse_table("").is_err());
        assert!(parse_table("hello\n").is_err());
        let table = render_table(&sample());
        assert!(parse_table(&table.replace("forwarding no", "forwarding maybe")).is_err());
        assert!(parse_table(&table.replace(" | 3000,3002 |", " | 3000;3002 |")).is_err());
        let cut: String = table.lines().take(4).map(|l| format!("{}\n", &l[..l.len().min(20)])).collect();
        assert!(parse_table(&cut).is_err(), "{cut}");
    }
}
