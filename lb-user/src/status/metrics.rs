//! `/metrics`: the Prometheus text exposition format 0.0.4.

use std::fmt::Write as _;

use super::*;

pub(super) fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus text exposition format 0.0.4.
pub fn render_metrics(s: &Snapshot) -> String {
    let mut o = String::new();
    let inst = escape_label(&s.instance);
    for section in [build_info, nodes, probe_latency, backends, datapath, failover, maintenance, vrrp, fences, state, peers, vip, hooks] {
        section(&mut o, s, &inst);
    }
    o
}

/// A metric family's `# HELP` and `# TYPE` lines.
fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The version of the binary serving, and the commit it was built from when the build said
/// (`PGLB_GIT_COMMIT` in the build's environment).
fn build_info(o: &mut String, _s: &Snapshot, inst: &str) {
    family(o, "pglb_build_info", "gauge", "Always 1; the labels name the pglb version (and the git commit, when known) serving.");
    let commit = option_env!("PGLB_GIT_COMMIT").filter(|c| !c.is_empty()).map(|c| format!(",git_commit=\"{}\"", escape_label(c))).unwrap_or_default();
    let _ = writeln!(o, "pglb_build_info{{instance_name=\"{inst}\",version=\"{}\"{commit}}} 1", env!("CARGO_PKG_VERSION"));
}

/// Each node's probe verdict, role, timeline and replay lag.
fn nodes(o: &mut String, s: &Snapshot, inst: &str) {
    family(o, "pglb_node_up", "gauge", "1 when the node's last probe succeeded.");
    for n in &s.nodes {
        let _ = writeln!(o, "pglb_node_up{{instance_name=\"{inst}\",node=\"{}\"}} {}", escape_label(&n.name), u8::from(n.up));
    }
    family(o, "pglb_node_role", "gauge", "1 for the node's current role label.");
    for n in &s.nodes {
        for role in ["primary", "standby", "unknown"] {
            let _ = writeln!(o, "pglb_node_role{{instance_name=\"{inst}\",node=\"{}\",role=\"{role}\"}} {}", escape_label(&n.name), u8::from(n.role == role));
        }
    }
    family(o, "pglb_node_timeline", "gauge", "The node's timeline (0 when unknown).");
    for n in &s.nodes {
        let _ = writeln!(o, "pglb_node_timeline{{instance_name=\"{inst}\",node=\"{}\"}} {}", escape_label(&n.name), n.timeline.unwrap_or(0));
    }
    family(o, "pglb_node_lag_bytes", "gauge", "Replay lag behind the primary in bytes (standbys).");
    for n in &s.nodes {
        if let Some(l) = n.lag_bytes {
            let _ = writeln!(o, "pglb_node_lag_bytes{{instance_name=\"{inst}\",node=\"{}\"}} {l}", escape_label(&n.name));
        }
    }
    for (name, help, get) in [
        ("pglb_node_drained", "1 while the node is drained (pglb node drain): no new read connection goes to it as a standby.", (|n: &NodeRow| n.drained) as fn(&NodeRow) -> bool),
        ("pglb_node_disabled", "1 while the node is disabled (pglb node disable): never a failover candidate or switchover target.", |n| n.disabled),
    ] {
        family(o, name, "gauge", help);
        for n in &s.nodes {
            let _ = writeln!(o, "{name}{{instance_name=\"{inst}\",node=\"{}\"}} {}", escape_label(&n.name), u8::from(get(n)));
        }
    }
}

/// The probe latency histogram per node, cumulative as Prometheus wants it.
fn probe_latency(o: &mut String, s: &Snapshot, inst: &str) {
    family(o, "pglb_probe_latency_seconds", "histogram", "Latency of role probes.");
    for n in &s.nodes {
        let node = escape_label(&n.name);
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += n.probe_latency.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(o, "pglb_probe_latency_seconds_bucket{{instance_name=\"{inst}\",node=\"{node}\",le=\"{bound}\"}} {cumulative}");
        }
        let h = &n.probe_latency;
        let _ = writeln!(o, "pglb_probe_latency_seconds_bucket{{instance_name=\"{inst}\",node=\"{node}\",le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(o, "pglb_probe_latency_seconds_sum{{instance_name=\"{inst}\",node=\"{node}\"}} {}", h.sum);
        let _ = writeln!(o, "pglb_probe_latency_seconds_count{{instance_name=\"{inst}\",node=\"{node}\"}} {}", h.count);
    }
}

/// Each backend's flows and traffic, summed over CPUs.
fn backends(o: &mut String, s: &Snapshot, inst: &str) {
    for (name, help, get) in [
        ("pglb_backend_flows", "Live flows to the backend.", (|t: &Traffic| t.flows) as fn(&Traffic) -> u64),
        ("pglb_backend_open_read_flows", "Flows on the read ports to the backend not closed yet (what pglb node drain --wait waits for).", |t| t.open_read_flows),
        ("pglb_backend_new_flows_total", "Flows opened to the backend.", |t| t.new_flows),
        ("pglb_backend_packets_total", "Packets forwarded to and from the backend.", |t| t.packets),
        ("pglb_backend_bytes_total", "Bytes forwarded to and from the backend.", |t| t.bytes),
        ("pglb_backend_rsts_total", "TCP resets sent for flows of the backend.", |t| t.rsts),
    ] {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        family(o, name, kind, help);
        for n in &s.nodes {
            let _ = writeln!(o, "{name}{{instance_name=\"{inst}\",node=\"{}\"}} {}", escape_label(&n.name), get(&n.traffic));
        }
    }
}

/// The XDP program's verdicts by reason, and the live flows by table.
fn datapath(o: &mut String, s: &Snapshot, inst: &str) {
    family(o, "pglb_datapath_packets_total", "counter", "Packets seen by the XDP program, by verdict reason.");
    for (reason, v) in &s.datapath_reasons {
        let _ = writeln!(o, "pglb_datapath_packets_total{{instance_name=\"{inst}\",reason=\"{}\"}} {v}", escape_label(reason));
    }
    family(o, "pglb_flows", "gauge", "Live flows by table: established (never evicted) and half_open (handshake not completed; the oldest reclaimed first under a SYN flood).");
    let _ = writeln!(o, "pglb_flows{{instance_name=\"{inst}\",table=\"established\"}} {}", s.flows_established);
    let _ = writeln!(o, "pglb_flows{{instance_name=\"{inst}\",table=\"half_open\"}} {}", s.flows_half_open);
}

/// Failovers, switchovers and the failover machine's phase.
fn failover(o: &mut String, s: &Snapshot, inst: &str) {
    family(o, "pglb_failovers_total", "counter", "Automatic failovers performed by this instance.");
    let _ = writeln!(o, "pglb_failovers_total{{instance_name=\"{inst}\"}} {}", s.failovers_total);
    family(o, "pglb_switchovers_total", "counter", "Planned switchovers performed by this instance.");
    let _ = writeln!(o, "pglb_switchovers_total{{instance_name=\"{inst}\"}} {}", s.switchovers_total);
    family(o, "pglb_phase", "gauge", "1 for the failover state machine's current phase.");
    let _ = writeln!(o, "pglb_phase{{instance_name=\"{inst}\",phase=\"{}\"}} 1", escape_label(&s.phase));
    outages(o, s, inst);
}

/// From the recent events: whether the writer is lost or a SYN flood is on now, and how long
/// the last writer outage lasted (lost until a writer was routed again: the write RTO as this
/// instance saw it; NaN while none is among the recent events).
fn outages(o: &mut String, s: &Snapshot, inst: &str) {
    let ongoing = |kind: &str| s.events.iter().any(|e| e.kind == kind && e.ongoing);
    family(o, "pglb_writer_lost", "gauge", "1 while the writer is lost and no new writer is routed yet.");
    let _ = writeln!(o, "pglb_writer_lost{{instance_name=\"{inst}\"}} {}", u8::from(ongoing("failover")));
    family(o, "pglb_last_writer_outage_seconds", "gauge", "How long the last writer outage lasted, from its detection until a writer was routed again (NaN: none among the recent events).");
    let last = s.events.iter().find(|e| e.kind == "failover" && !e.ongoing && e.duration_s.is_some()).and_then(|e| e.duration_s);
    let _ = writeln!(o, "pglb_last_writer_outage_seconds{{instance_name=\"{inst}\"}} {}", last.map_or_else(|| "NaN".to_owned(), |d| format!("{d:.3}")));
    family(o, "pglb_syn_flood", "gauge", "1 while the SYN flood defence is on (half-open connections pile up; the VIP and the writer are kept).");
    let _ = writeln!(o, "pglb_syn_flood{{instance_name=\"{inst}\"}} {}", u8::from(ongoing("flood")));
}

/// The VRRP state, its changes and the adverts sent, received and dropped.
fn vrrp(o: &mut String, s: &Snapshot, inst: &str) {
    family(o, "pglb_vrrp_state", "gauge", "1 for this instance's VRRP state.");
    let _ = writeln!(o, "pglb_vrrp_state{{instance_name=\"{inst}\",state=\"{}\"}} 1", escape_label(&s.vrrp_state));
    family(o, "pglb_vrrp_transitions_total", "counter", "VRRP state changes.");
    let _ = writeln!(o, "pglb_vrrp_transitions_total{{instance_name=\"{inst}\"}} {}", s.vrrp_transitions_total);
    family(o, "pglb_vrrp_adverts_sent_total", "counter", "VRRP adverts sent.");
    let _ = writeln!(o, "pglb_vrrp_adverts_sent_total{{instance_name=\"{inst}\"}} {}", s.adverts_sent);
    family(o, "pglb_vrrp_adverts_received_total", "counter", "VRRP adverts received and accepted.");
    let _ = writeln!(o, "pglb_vrrp_adverts_received_total{{instance_name=\"{inst}\"}} {}", s.adverts_received);
    family(o, "pglb_vrrp_adverts_dropped_total", "counter", "VRRP adverts dropped, by reason.");
    for (reason, v) in &s.adverts_dropped {
        let _ = writeln!(o, "pglb_vrrp_adverts_dropped_total{{instance_name=\"{inst}\",reason=\"{}\"}} {v}", escape_label(reason));
    }
}

/// The `[hooks]` runs and the event journal.
fn hooks(o: &mut String, s: &Snapshot, inst: &str) {
    family(o, "pglb_hook_runs_total", "counter", "Runs of the [hooks] command by result (dropped: never run, the queue was full).");
    for (result, v) in &s.hook_runs {
        let _ = writeln!(o, "pglb_hook_runs_total{{instance_name=\"{inst}\",result=\"{}\"}} {v}", escape_label(result));
    }
    family(o, "pglb_journal_write_errors_total", "counter", "Events the journal (<state_dir>/events.jsonl) could not append.");
    let _ = writeln!(o, "pglb_journal_write_errors_total{{instance_name=\"{inst}\"}} {}", s.journal_errors_total);
}

/// Maintenance mode: whether a pause is in force, since when, and the alert's threshold.
fn maintenance(o: &mut String, s: &Snapshot, inst: &str) {
    family(o, "pglb_paused", "gauge", "1 while a pause (pglb pause, maintenance mode) is in force: no automatic failover, rejoin or re-point.");
    let _ = writeln!(o, "pglb_paused{{instance_name=\"{inst}\"}} {}", u8::from(s.pause.is_some()));
    family(o, "pglb_pause_started_timestamp_seconds", "gauge", "When the pause in force was taken (Unix seconds); 0 when not paused.");
    let _ = writeln!(o, "pglb_pause_started_timestamp_seconds{{instance_name=\"{inst}\"}} {}", s.pause.as_ref().map_or(0.0, |p| p.since_unix_s));
    family(o, "pglb_pause_alert_after_seconds", "gauge", "[failover] pause_alert_after: a pause older than this raises PglbPausedTooLong.");
    let _ = writeln!(o, "pglb_pause_alert_after_seconds{{instance_name=\"{inst}\"}} {}", s.pause_alert_after_s);
}

/// Rejoins and fences.
fn fences(o: &mut String, s: &Snapshot, inst: &str) {
    family(o, "pglb_rejoins_total", "counter", "Runs of rejoin_command for fenced former primaries, by result.");
    let _ = writeln!(o, "pglb_rejoins_total{{instance_name=\"{inst}\",result=\"ok\"}} {}", s.rejoins_ok_total);
    let _ = writeln!(o, "pglb_rejoins_total{{instance_name=\"{inst}\",result=\"failed\"}} {}", s.rejoins_failed_total);
    family(o, "pglb_node_fenced", "gauge", "1 while the node is fenced (needs-rejoin or split-brain): never routed.");
    for n in &s.nodes {
        let _ = writeln!(o, "pglb_node_fenced{{instance_name=\"{inst}\",node=\"{}\"}} {}", escape_label(&n.name), u8::from(s.fenced.contains(&n.name)));
    }
}

/// Trust in this instance itself: its state file, its readiness and its loop's stalls.
fn state(o: &mut String, s: &Snapshot, inst: &str) {
    family(o, "pglb_state_write_errors_total", "counter", "Failed writes of the state file (each is tried again; no failover is decided while they fail).");
    let _ = writeln!(o, "pglb_state_write_errors_total{{instance_name=\"{inst}\"}} {}", s.state_write_errors_total);
    family(o, "pglb_state_recorded", "gauge", "1 when the last state written is on disk; 0 while a failed write is pending (no promotion is made).");
    let _ = writeln!(o, "pglb_state_recorded{{instance_name=\"{inst}\"}} {}", u8::from(s.state_recorded));
    family(o, "pglb_ready", "gauge", "1 once this instance has decided from fresh probes and peer reports since its start or its last stall; 0 while it wakes humble (no lease, no VIP).");
    let _ = writeln!(o, "pglb_ready{{instance_name=\"{inst}\"}} {}", u8::from(s.ready));
    family(o, "pglb_loop_stalls_total", "counter", "Gaps in the daemon's main loop longer than the lease (each woke the instance humble).");
    let _ = writeln!(o, "pglb_loop_stalls_total{{instance_name=\"{inst}\"}} {}", s.loop_stalls_total);
}

/// What the peers report, and whether this instance reaches the writer (VRRP tracking).
fn peers(o: &mut String, s: &Snapshot, inst: &str) {
    if let Some((tl, peer)) = &s.timeline_hint {
        family(o, "pglb_peer_timeline_unconfirmed", "gauge", "A newer timeline a peer reports that no probe here has confirmed (writes to older primaries are held back).");
        let _ = writeln!(o, "pglb_peer_timeline_unconfirmed{{instance_name=\"{inst}\",peer=\"{}\"}} {tl}", escape_label(peer));
    }
    if !s.peer_reports_dropped.is_empty() {
        family(o, "pglb_peer_reports_accepted_total", "counter", "Peer reports that passed every check (MAC, source, freshness).");
        let _ = writeln!(o, "pglb_peer_reports_accepted_total{{instance_name=\"{inst}\"}} {}", s.peer_reports_accepted);
        family(o, "pglb_peer_reports_dropped_total", "counter", "Peer reports refused, by reason (forged, replayed, from a stranger, or the first after a start).");
        for (reason, v) in &s.peer_reports_dropped {
            let _ = writeln!(o, "pglb_peer_reports_dropped_total{{instance_name=\"{inst}\",reason=\"{}\"}} {v}", escape_label(reason));
        }
    }
    if let Some(r) = s.writer_reachable {
        family(o, "pglb_writer_reachable", "gauge", "1 when this instance reaches the writer (VRRP tracking keeps its full priority).");
        let _ = writeln!(o, "pglb_writer_reachable{{instance_name=\"{inst}\"}} {}", u8::from(r));
    }
    if s.peers.iter().any(|p| p.timeline.is_some()) {
        family(o, "pglb_peer_timeline", "gauge", "The newest timeline a VRRP peer last reported (its floor).");
        for p in s.peers.iter().filter(|p| p.timeline.is_some()) {
            let _ = writeln!(o, "pglb_peer_timeline{{instance_name=\"{inst}\",peer=\"{}\"}} {}", escape_label(&p.addr), opt(p.timeline));
        }
        family(o, "pglb_peer_reaches_writer", "gauge", "1 when a VRRP peer last reported that it routes and reaches a writer.");
        for p in s.peers.iter().filter(|p| p.timeline.is_some()) {
            let _ = writeln!(o, "pglb_peer_reaches_writer{{instance_name=\"{inst}\",peer=\"{}\"}} {}", escape_label(&p.addr), u8::from(p.writer.is_some()));
        }
    }
}

/// The lease and the VIP.
fn vip(o: &mut String, s: &Snapshot, inst: &str) {
    family(o, "pglb_lease_valid", "gauge", "1 while the data plane's lease from this control plane is valid (dead-man switch).");
    let _ = writeln!(o, "pglb_lease_valid{{instance_name=\"{inst}\"}} {}", u8::from(s.lease_valid));
    family(o, "pglb_vip_held", "gauge", "1 when this instance holds the VIP.");
    let _ = writeln!(o, "pglb_vip_held{{instance_name=\"{inst}\"}} {}", u8::from(s.vip_held));
    family(o, "pglb_forwarding", "gauge", "1 when this instance forwards VIP traffic.");
    let _ = writeln!(o, "pglb_forwarding{{instance_name=\"{inst}\"}} {}", u8::from(s.forwarding));
}
