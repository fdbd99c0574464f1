//! `pglb status`: the cluster as a table for an operator's terminal.

use std::fmt::Write as _;

use super::*;

/// The `pglb status` table, readable like `repmgr cluster show`.
pub fn render_table(s: &Snapshot) -> String {
    let header = ["node", "address", "role", "state", "timeline", "lag bytes", "lag s", "routed", "flows"];
    let rows: Vec<[String; 9]> = s
        .nodes
        .iter()
        .map(|n| {
            [
                n.name.clone(),
                n.addr.clone(),
                n.role.clone(),
                n.state_marked(),
                opt(n.timeline),
                opt(n.lag_bytes),
                n.lag_seconds.map(|l| format!("{l:.3}")).unwrap_or_else(|| "-".into()),
                ports(&n.routed_ports),
                n.traffic.flows.to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!(" {}", padded.join(" | ")).trim_end().to_owned()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "instance {} | VIP {} {} | vrrp {} | phase {} | forwarding {}",
        s.instance,
        s.vip,
        vip_holder(s),
        s.vrrp_state,
        s.phase,
        if s.forwarding { "yes" } else { "no" },
    );
    let _ = writeln!(out, "{}", line(header.to_vec()));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(out, "-{}-", rule.join("-+-"));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
    for p in &s.peers {
        let said = match (&p.timeline, &p.writer) {
            (None, _) => "no report yet".to_owned(),
            (Some(tl), Some(w)) => format!("timeline {tl}, reaches writer {w}"),
            (Some(tl), None) => format!("timeline {tl}, reaches no writer"),
        };
        let _ = writeln!(out, "peer {}: {said}", p.addr);
    }
    if let Some(p) = &s.pause {
        let _ = writeln!(out, "maintenance: {}", p.describe());
    }
    if let Some(b) = &s.failover_blocked {
        let _ = writeln!(out, "failover held back: {b} (`pglb failover --to NODE` promotes by hand)");
    }
    if !s.ready {
        let _ = writeln!(out, "waking humble: no lease and no VIP until fresh probes of every node and a fresh report from every peer heard");
    }
    if let Some((tl, peer)) = &s.timeline_hint {
        let _ = writeln!(out, "peer {peer} reports timeline {tl}, not confirmed by a probe here: writes to older primaries held back");
    }
    if !s.state_recorded {
        let _ = writeln!(out, "the state file cannot be written: no failover is decided until it can ({} failed writes)", s.state_write_errors_total);
    }
    out
}
