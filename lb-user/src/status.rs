//! What the daemon knows, as one plain snapshot, and its renderings: the `pglb status` table
//! (and its JSON form, `pglb status --json`), Prometheus text and the HTML stats page. Pure
//! functions, tested on fixed snapshots.

use std::fmt::Write as _;

/// Upper bounds (seconds) of the probe latency histogram buckets.
pub const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];

/// A cumulative histogram in Prometheus' shape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// One count per [`LATENCY_BUCKETS`] bound (cumulative counts are computed when rendering).
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if self.buckets.len() != LATENCY_BUCKETS.len() {
            self.buckets = vec![0; LATENCY_BUCKETS.len()];
        }
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// Traffic through one backend, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub flows: u64,
    pub new_flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub rsts: u64,
}

/// One PostgreSQL node as the daemon sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeRow {
    pub name: String,
    pub addr: String,
    /// `primary`, `standby` or `unknown`.
    pub role: String,
    /// `up`, `down`, `needs-rejoin`, `promoting`, …
    pub state: String,
    pub up: bool,
    pub timeline: Option<u32>,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    /// Listener ports that route to this node now.
    pub routed_ports: Vec<u16>,
    pub traffic: Traffic,
    /// Seconds since the node's state last changed.
    pub since_change_s: f64,
    pub probe_latency: Histogram,
}

/// The whole picture at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub instance: String,
    pub vip: String,
    /// The failover state machine's phase (`steady`, `failing-over`, …).
    pub phase: String,
    /// `master`, `backup`, `initialize`, or `none` (no VRRP configured: counts as master).
    pub vrrp_state: String,
    pub vip_held: bool,
    /// The address of the VRRP master as last heard, when another load balancer holds the VIP.
    pub vip_master: Option<String>,
    /// True when this instance's data plane is attached and it owns the VIP.
    pub forwarding: bool,
    /// The node routed on the write port, if any.
    pub writer: Option<String>,
    pub nodes: Vec<NodeRow>,
    pub failovers_total: u64,
    pub switchovers_total: u64,
    pub vrrp_transitions_total: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Dropped adverts by reason.
    pub adverts_dropped: Vec<(String, u64)>,
    /// Data-plane counters by pass/drop reason.
    pub datapath_reasons: Vec<(String, u64)>,
    /// Live flows in the established table and in the half-open table.
    pub flows_established: u64,
    pub flows_half_open: u64,
    /// The last VRRP tracking verdict: does this instance reach the writer (`None` before the
    /// first verdict, or without VRRP).
    pub writer_reachable: Option<bool>,
    /// `rejoin_command` runs that succeeded / failed.
    pub rejoins_ok_total: u64,
    pub rejoins_failed_total: u64,
    /// State-file writes that failed (each is tried again; no failover is decided meanwhile).
    pub state_write_errors_total: u64,
    /// The last state written is on disk (no failed write pending).
    pub state_recorded: bool,
    /// The instance has decided since its start or its last stall (it renews its lease and may
    /// hold the VIP); false while it wakes humble.
    pub ready: bool,
    /// Gaps in the main loop longer than the lease.
    pub loop_stalls_total: u64,
    /// A newer timeline a peer reports that no probe here has confirmed, and who says it.
    pub timeline_hint: Option<(u32, String)>,
    /// Peer reports accepted, and refused by reason.
    pub peer_reports_accepted: u64,
    pub peer_reports_dropped: Vec<(String, u64)>,
    /// Nodes fenced, by name, with the reason shown as their state.
    pub fenced: Vec<String>,
    /// Whether the data plane's lease (dead-man switch) is valid.
    pub lease_valid: bool,
    /// Each VRRP peer's last report.
    pub peers: Vec<PeerRow>,
    /// This instance's effective VRRP priority and its configured one (`None` without VRRP).
    pub vrrp_priority: Option<u8>,
    pub vrrp_priority_configured: Option<u8>,
    /// Recent events, newest first.
    pub events: Vec<EventRow>,
    /// Per-backend rates, oldest first, one every `rate_every_s`; a full window holds
    /// `rate_window` of them.
    pub rates: Vec<RateSeries>,
    pub rate_every_s: f64,
    pub rate_window: usize,
}

/// One recent event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventRow {
    /// Its start, RFC 3339 in UTC.
    pub at: String,
    /// `failover`, `switchover`, `fence`, `vrrp`, `flood`.
    pub kind: String,
    pub text: String,
    /// How long it lasted, once it ended (`None` for events without an end).
    pub duration_s: Option<f64>,
    pub ongoing: bool,
}

/// One backend's rates over the last minutes, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateSeries {
    pub node: String,
    pub conns_per_s: Vec<f64>,
    pub packets_per_s: Vec<f64>,
}

/// A VRRP peer's last report: its timeline floor and the writer it reaches (`None` before the
/// first report).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerRow {
    pub addr: String,
    pub timeline: Option<u32>,
    pub writer: Option<String>,
    /// The priority in its last VRRP advert, and how long ago that was (`None` if never heard:
    /// only a master sends adverts).
    pub advert_priority: Option<u8>,
    pub advert_age_s: Option<f64>,
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_owned())
}

fn ports(p: &[u16]) -> String {
    if p.is_empty() { "-".to_owned() } else { p.iter().map(u16::to_string).collect::<Vec<_>>().join(",") }
}

/// Who holds the VIP, as seen from this instance: `held here`, `held by ADDR`, `not held here`.
fn vip_holder(s: &Snapshot) -> String {
    match (&s.vip_held, &s.vip_master) {
        (true, _) => "held here".to_owned(),
        (false, Some(master)) => format!("held by {master}"),
        (false, None) => "not held here".to_owned(),
    }
}

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
                n.state.clone(),
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
    forwarding: bool,
    ready: bool,
    state_recorded: bool,
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
        forwarding: s.forwarding,
        ready: s.ready,
        state_recorded: s.state_recorded,
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

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus text exposition format 0.0.4.
pub fn render_metrics(s: &Snapshot) -> String {
    let mut o = String::new();
    let inst = escape_label(&s.instance);
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(&mut o, "pglb_node_up", "gauge", "1 when the node's last probe succeeded.");
    for n in &s.nodes {
        let _ = writeln!(o, "pglb_node_up{{instance_name=\"{inst}\",node=\"{}\"}} {}", escape_label(&n.name), u8::from(n.up));
    }
    family(&mut o, "pglb_node_role", "gauge", "1 for the node's current role label.");
    for n in &s.nodes {
        for role in ["primary", "standby", "unknown"] {
            let _ = writeln!(o, "pglb_node_role{{instance_name=\"{inst}\",node=\"{}\",role=\"{role}\"}} {}", escape_label(&n.name), u8::from(n.role == role));
        }
    }
    family(&mut o, "pglb_node_timeline", "gauge", "The node's timeline (0 when unknown).");
    for n in &s.nodes {
        let _ = writeln!(o, "pglb_node_timeline{{instance_name=\"{inst}\",node=\"{}\"}} {}", escape_label(&n.name), n.timeline.unwrap_or(0));
    }
    family(&mut o, "pglb_node_lag_bytes", "gauge", "Replay lag behind the primary in bytes (standbys).");
    for n in &s.nodes {
        if let Some(l) = n.lag_bytes {
            let _ = writeln!(o, "pglb_node_lag_bytes{{instance_name=\"{inst}\",node=\"{}\"}} {l}", escape_label(&n.name));
        }
    }
    family(&mut o, "pglb_probe_latency_seconds", "histogram", "Latency of role probes.");
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
    for (name, help, get) in [
        ("pglb_backend_flows", "Live flows to the backend.", (|t: &Traffic| t.flows) as fn(&Traffic) -> u64),
        ("pglb_backend_new_flows_total", "Flows opened to the backend.", |t| t.new_flows),
        ("pglb_backend_packets_total", "Packets forwarded to and from the backend.", |t| t.packets),
        ("pglb_backend_bytes_total", "Bytes forwarded to and from the backend.", |t| t.bytes),
        ("pglb_backend_rsts_total", "TCP resets sent for flows of the backend.", |t| t.rsts),
    ] {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        family(&mut o, name, kind, help);
        for n in &s.nodes {
            let _ = writeln!(o, "{name}{{instance_name=\"{inst}\",node=\"{}\"}} {}", escape_label(&n.name), get(&n.traffic));
        }
    }
    family(&mut o, "pglb_datapath_packets_total", "counter", "Packets seen by the XDP program, by verdict reason.");
    for (reason, v) in &s.datapath_reasons {
        let _ = writeln!(o, "pglb_datapath_packets_total{{instance_name=\"{inst}\",reason=\"{}\"}} {v}", escape_label(reason));
    }
    family(&mut o, "pglb_flows", "gauge", "Live flows by table: established (never evicted) and half_open (handshake not completed; the oldest reclaimed first under a SYN flood).");
    let _ = writeln!(o, "pglb_flows{{instance_name=\"{inst}\",table=\"established\"}} {}", s.flows_established);
    let _ = writeln!(o, "pglb_flows{{instance_name=\"{inst}\",table=\"half_open\"}} {}", s.flows_half_open);
    family(&mut o, "pglb_failovers_total", "counter", "Automatic failovers performed by this instance.");
    let _ = writeln!(o, "pglb_failovers_total{{instance_name=\"{inst}\"}} {}", s.failovers_total);
    family(&mut o, "pglb_switchovers_total", "counter", "Planned switchovers performed by this instance.");
    let _ = writeln!(o, "pglb_switchovers_total{{instance_name=\"{inst}\"}} {}", s.switchovers_total);
    family(&mut o, "pglb_phase", "gauge", "1 for the failover state machine's current phase.");
    let _ = writeln!(o, "pglb_phase{{instance_name=\"{inst}\",phase=\"{}\"}} 1", escape_label(&s.phase));
    family(&mut o, "pglb_vrrp_state", "gauge", "1 for this instance's VRRP state.");
    let _ = writeln!(o, "pglb_vrrp_state{{instance_name=\"{inst}\",state=\"{}\"}} 1", escape_label(&s.vrrp_state));
    family(&mut o, "pglb_vrrp_transitions_total", "counter", "VRRP state changes.");
    let _ = writeln!(o, "pglb_vrrp_transitions_total{{instance_name=\"{inst}\"}} {}", s.vrrp_transitions_total);
    family(&mut o, "pglb_vrrp_adverts_sent_total", "counter", "VRRP adverts sent.");
    let _ = writeln!(o, "pglb_vrrp_adverts_sent_total{{instance_name=\"{inst}\"}} {}", s.adverts_sent);
    family(&mut o, "pglb_vrrp_adverts_received_total", "counter", "VRRP adverts received and accepted.");
    let _ = writeln!(o, "pglb_vrrp_adverts_received_total{{instance_name=\"{inst}\"}} {}", s.adverts_received);
    family(&mut o, "pglb_vrrp_adverts_dropped_total", "counter", "VRRP adverts dropped, by reason.");
    for (reason, v) in &s.adverts_dropped {
        let _ = writeln!(o, "pglb_vrrp_adverts_dropped_total{{instance_name=\"{inst}\",reason=\"{}\"}} {v}", escape_label(reason));
    }
    family(&mut o, "pglb_rejoins_total", "counter", "Runs of rejoin_command for fenced former primaries, by result.");
    let _ = writeln!(o, "pglb_rejoins_total{{instance_name=\"{inst}\",result=\"ok\"}} {}", s.rejoins_ok_total);
    let _ = writeln!(o, "pglb_rejoins_total{{instance_name=\"{inst}\",result=\"failed\"}} {}", s.rejoins_failed_total);
    family(&mut o, "pglb_node_fenced", "gauge", "1 while the node is fenced (needs-rejoin or split-brain): never routed.");
    for n in &s.nodes {
        let _ = writeln!(o, "pglb_node_fenced{{instance_name=\"{inst}\",node=\"{}\"}} {}", escape_label(&n.name), u8::from(s.fenced.contains(&n.name)));
    }
    family(&mut o, "pglb_state_write_errors_total", "counter", "Failed writes of the state file (each is tried again; no failover is decided while they fail).");
    let _ = writeln!(o, "pglb_state_write_errors_total{{instance_name=\"{inst}\"}} {}", s.state_write_errors_total);
    family(&mut o, "pglb_state_recorded", "gauge", "1 when the last state written is on disk; 0 while a failed write is pending (no promotion is made).");
    let _ = writeln!(o, "pglb_state_recorded{{instance_name=\"{inst}\"}} {}", u8::from(s.state_recorded));
    family(&mut o, "pglb_ready", "gauge", "1 once this instance has decided from fresh probes and peer reports since its start or its last stall; 0 while it wakes humble (no lease, no VIP).");
    let _ = writeln!(o, "pglb_ready{{instance_name=\"{inst}\"}} {}", u8::from(s.ready));
    family(&mut o, "pglb_loop_stalls_total", "counter", "Gaps in the daemon's main loop longer than the lease (each woke the instance humble).");
    let _ = writeln!(o, "pglb_loop_stalls_total{{instance_name=\"{inst}\"}} {}", s.loop_stalls_total);
    if let Some((tl, peer)) = &s.timeline_hint {
        family(&mut o, "pglb_peer_timeline_unconfirmed", "gauge", "A newer timeline a peer reports that no probe here has confirmed (writes to older primaries are held back).");
        let _ = writeln!(o, "pglb_peer_timeline_unconfirmed{{instance_name=\"{inst}\",peer=\"{}\"}} {tl}", escape_label(peer));
    }
    if !s.peer_reports_dropped.is_empty() {
        family(&mut o, "pglb_peer_reports_accepted_total", "counter", "Peer reports that passed every check (MAC, source, freshness).");
        let _ = writeln!(o, "pglb_peer_reports_accepted_total{{instance_name=\"{inst}\"}} {}", s.peer_reports_accepted);
        family(&mut o, "pglb_peer_reports_dropped_total", "counter", "Peer reports refused, by reason (forged, replayed, from a stranger, or the first after a start).");
        for (reason, v) in &s.peer_reports_dropped {
            let _ = writeln!(o, "pglb_peer_reports_dropped_total{{instance_name=\"{inst}\",reason=\"{}\"}} {v}", escape_label(reason));
        }
    }
    if let Some(r) = s.writer_reachable {
        family(&mut o, "pglb_writer_reachable", "gauge", "1 when this instance reaches the writer (VRRP tracking keeps its full priority).");
        let _ = writeln!(o, "pglb_writer_reachable{{instance_name=\"{inst}\"}} {}", u8::from(r));
    }
    if s.peers.iter().any(|p| p.timeline.is_some()) {
        family(&mut o, "pglb_peer_timeline", "gauge", "The newest timeline a VRRP peer last reported (its floor).");
        for p in s.peers.iter().filter(|p| p.timeline.is_some()) {
            let _ = writeln!(o, "pglb_peer_timeline{{instance_name=\"{inst}\",peer=\"{}\"}} {}", escape_label(&p.addr), opt(p.timeline));
        }
        family(&mut o, "pglb_peer_reaches_writer", "gauge", "1 when a VRRP peer last reported that it routes and reaches a writer.");
        for p in s.peers.iter().filter(|p| p.timeline.is_some()) {
            let _ = writeln!(o, "pglb_peer_reaches_writer{{instance_name=\"{inst}\",peer=\"{}\"}} {}", escape_label(&p.addr), u8::from(p.writer.is_some()));
        }
    }
    family(&mut o, "pglb_lease_valid", "gauge", "1 while the data plane's lease from this control plane is valid (dead-man switch).");
    let _ = writeln!(o, "pglb_lease_valid{{instance_name=\"{inst}\"}} {}", u8::from(s.lease_valid));
    family(&mut o, "pglb_vip_held", "gauge", "1 when this instance holds the VIP.");
    let _ = writeln!(o, "pglb_vip_held{{instance_name=\"{inst}\"}} {}", u8::from(s.vip_held));
    family(&mut o, "pglb_forwarding", "gauge", "1 when this instance forwards VIP traffic.");
    let _ = writeln!(o, "pglb_forwarding{{instance_name=\"{inst}\"}} {}", u8::from(s.forwarding));
    o
}

fn html_escape(v: &str) -> String {
    v.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The HTML stats page (auto-refresh every 2 s): one row per node, the load balancers with
/// their VRRP state, priority and whether they see the writer, the recent events, and charts of
/// new connections and packets per second per backend (inline SVG; no scripts, no external
/// assets).
pub fn render_html(s: &Snapshot) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
<title>pglb {inst}</title><style>body{{font-family:sans-serif;font-size:13px}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #999;padding:2px 8px;text-align:right}}th{{background:#446;color:#fff}}\
td.l{{text-align:left}}tr.up td{{background:#cfc}}tr.down td{{background:#fcc}}tr.fenced td{{background:#fc9}}tr.master td{{background:#cdf}}\
h3{{margin:14px 0 4px}}p.note{{color:#555;font-size:11px;margin:2px 0}}</style></head><body>\
<h2>pglb {inst}</h2><p>VIP {vip} ({held}) &middot; VRRP {vrrp} &middot; phase {phase} &middot; forwarding {fwd} &middot; \
failovers {fo} &middot; switchovers {so}</p><table id=\"nodes\"><tr><th>node</th><th>address</th><th>role</th><th>state</th>\
<th>timeline</th><th>lag bytes</th><th>lag s</th><th>routed</th><th>flows</th><th>new flows</th><th>packets</th>\
<th>bytes</th><th>RSTs</th><th>last change</th></tr>",
        inst = html_escape(&s.instance),
        vip = html_escape(&s.vip),
        held = html_escape(&vip_holder(s)),
        vrrp = html_escape(&s.vrrp_state),
        phase = html_escape(&s.phase),
        fwd = if s.forwarding { "yes" } else { "no" },
        fo = s.failovers_total,
        so = s.switchovers_total,
    );
    for n in &s.nodes {
        let class = if !n.up { "down" } else if n.state == "up" { "up" } else { "fenced" };
        let _ = write!(
            o,
            "<tr class=\"{class}\"><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}s ago</td></tr>",
            html_escape(&n.name),
            html_escape(&n.addr),
            html_escape(&n.role),
            html_escape(&n.state),
            opt(n.timeline),
            opt(n.lag_bytes),
            n.lag_seconds.map(|l| format!("{l:.3}")).unwrap_or_else(|| "-".into()),
            ports(&n.routed_ports),
            n.traffic.flows,
            n.traffic.new_flows,
            n.traffic.packets,
            n.traffic.bytes,
            n.traffic.rsts,
            n.since_change_s,
        );
    }
    o.push_str("</table>");
    render_peers(&mut o, s);
    render_events(&mut o, s);
    render_charts(&mut o, s);
    o.push_str("</body></html>\n");
    o
}

/// A peer's VRRP state as far as this instance knows: the master it hears, else a backup if it
/// reports (a backup sends no adverts), else unknown.
fn peer_state(s: &Snapshot, p: &PeerRow) -> &'static str {
    if s.vip_master.as_deref() == Some(p.addr.as_str()) {
        "master"
    } else if p.timeline.is_some() {
        "backup"
    } else {
        "unknown"
    }
}

/// The load balancers: this instance and each `[vrrp] peers` entry.
fn render_peers(o: &mut String, s: &Snapshot) {
    o.push_str("<h3>Load balancers</h3><table id=\"peers\"><tr><th>instance</th><th>VRRP state</th><th>priority</th>\
<th>sees writer</th><th>timeline</th></tr>");
    let priority = match (s.vrrp_priority, s.vrrp_priority_configured) {
        (Some(p), Some(c)) if p != c => format!("{p} (configured {c})"),
        (Some(p), _) => p.to_string(),
        (None, _) => "-".to_owned(),
    };
    let sees = match (s.writer_reachable, &s.writer) {
        (Some(true), Some(w)) => format!("yes ({})", html_escape(w)),
        (Some(true), None) => "yes".to_owned(),
        (Some(false), _) => "no".to_owned(),
        (None, Some(w)) => format!("routes {}", html_escape(w)),
        (None, None) => "-".to_owned(),
    };
    let state_class = |st: &str| if st == "master" || st == "none" { "master" } else { "backup" };
    let _ = write!(
        o,
        "<tr class=\"{}\"><td class=\"l\">{} (this instance)</td><td class=\"l\">{}</td><td>{priority}</td><td class=\"l\">{sees}</td><td>-</td></tr>",
        state_class(&s.vrrp_state),
        html_escape(&s.instance),
        html_escape(&s.vrrp_state),
    );
    for p in &s.peers {
        let state = peer_state(s, p);
        let priority = match (p.advert_priority, p.advert_age_s) {
            (Some(pr), Some(age)) if state != "master" => format!("{pr} (last advert {age:.0}s ago)"),
            (Some(pr), _) => pr.to_string(),
            (None, _) => "-".to_owned(),
        };
        let sees = match (p.timeline, &p.writer) {
            (None, _) => "no report yet".to_owned(),
            (Some(_), Some(w)) => format!("yes ({})", html_escape(w)),
            (Some(_), None) => "no".to_owned(),
        };
        let _ = write!(
            o,
            "<tr class=\"{}\"><td class=\"l\">{}</td><td class=\"l\">{state}</td><td>{priority}</td><td class=\"l\">{sees}</td><td>{}</td></tr>",
            state_class(state),
            html_escape(&p.addr),
            opt(p.timeline),
        );
    }
    o.push_str("</table>");
    if !s.peers.is_empty() {
        o.push_str("<p class=\"note\">A peer's priority is the one in its last VRRP advert: only the master sends \
adverts. Whether a peer sees the writer, and its timeline, come from the report it sends every advert interval.</p>");
    }
}

fn duration_text(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else if seconds < 120.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{:.0} min {:.0} s", (seconds / 60.0).floor(), seconds % 60.0)
    }
}

/// The recent events, newest first.
fn render_events(o: &mut String, s: &Snapshot) {
    o.push_str("<h3>Recent events</h3>");
    if s.events.is_empty() {
        o.push_str("<p id=\"events\">none since this instance started</p>");
        return;
    }
    o.push_str("<table id=\"events\"><tr><th>started (UTC)</th><th>kind</th><th>event</th><th>duration</th></tr>");
    for e in &s.events {
        let duration = match (e.ongoing, e.duration_s) {
            (true, _) => "ongoing".to_owned(),
            (false, Some(d)) => duration_text(d),
            (false, None) => "-".to_owned(),
        };
        let _ = write!(
            o,
            "<tr class=\"ev {kind}\"><td class=\"l\">{}</td><td class=\"l\">{kind}</td><td class=\"l\">{}</td><td>{duration}</td></tr>",
            html_escape(&e.at),
            html_escape(&e.text),
            kind = html_escape(&e.kind),
        );
    }
    o.push_str("</table>");
}

/// Line colours of the charts, by backend.
const PALETTE: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// A small line chart as inline SVG: one polyline per series, the newest value at the right
/// edge of a `window`-sample wide x axis, y from 0 to the largest value.
pub fn chart_svg(title: &str, series: &[(&str, &[f64])], window: usize, every_s: f64) -> String {
    const W: f64 = 520.0;
    const H: f64 = 150.0;
    const LEFT: f64 = 56.0;
    const TOP: f64 = 22.0;
    const PW: f64 = W - LEFT - 10.0;
    const PH: f64 = H - TOP - 42.0;
    let window = window.max(2);
    let max = series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">\
<title>{t}</title><rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{PW}\" height=\"{PH}\" fill=\"#f8f8f8\" stroke=\"#999\"/>\
<text x=\"{LEFT}\" y=\"14\" font-size=\"12\">{t}</text>\
<text x=\"{lx}\" y=\"{ty}\" font-size=\"10\" text-anchor=\"end\">{maxl}</text>\
<text x=\"{lx}\" y=\"{by}\" font-size=\"10\" text-anchor=\"end\">0</text>\
<text x=\"{LEFT}\" y=\"{ay}\" font-size=\"10\">-{span}</text><text x=\"{rx}\" y=\"{ay}\" font-size=\"10\" text-anchor=\"end\">now</text>",
        t = html_escape(title),
        lx = LEFT - 4.0,
        ty = TOP + 8.0,
        by = TOP + PH,
        ay = TOP + PH + 12.0,
        rx = LEFT + PW,
        maxl = if max >= 100.0 { format!("{top:.0}") } else { format!("{top:.1}") },
        span = duration_text((window - 1) as f64 * every_s),
    );
    for (i, (name, values)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let values = &values[values.len().saturating_sub(window)..];
        if !values.is_empty() {
            let first = window - values.len();
            let points: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    let x = LEFT + (first + j) as f64 * PW / (window - 1) as f64;
                    let y = TOP + PH - (v.max(0.0) / top) * PH;
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            let _ = write!(o, "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>", points.join(" "));
            // The newest sample as a dot: visible also while the line has one point.
            if let Some((x, y)) = points.last().and_then(|p| p.split_once(',')) {
                let _ = write!(o, "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"{colour}\"/>");
            }
        }
        let last = values.last().map(|v| if *v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }).unwrap_or_else(|| "-".into());
        let _ = write!(
            o,
            "<text x=\"{x}\" y=\"{y}\" font-size=\"11\" fill=\"{colour}\">{} {last}/s</text>",
            html_escape(name),
            x = LEFT + (i % 4) as f64 * 115.0,
            y = TOP + PH + 26.0 + (i / 4) as f64 * 12.0,
        );
    }
    o.push_str("</svg>");
    o
}

/// Connections and packets per second per backend, from the daemon's own samples.
fn render_charts(o: &mut String, s: &Snapshot) {
    let _ = write!(o, "<h3>Traffic per backend (last {}, every {:.0} s)</h3><div id=\"charts\">", duration_text(s.rate_window.saturating_sub(1) as f64 * s.rate_every_s), s.rate_every_s);
    let conns: Vec<(&str, &[f64])> = s.rates.iter().map(|r| (r.node.as_str(), r.conns_per_s.as_slice())).collect();
    let packets: Vec<(&str, &[f64])> = s.rates.iter().map(|r| (r.node.as_str(), r.packets_per_s.as_slice())).collect();
    o.push_str(&chart_svg("new connections per second", &conns, s.rate_window, s.rate_every_s));
    o.push(' ');
    o.push_str(&chart_svg("packets per second", &packets, s.rate_window, s.rate_every_s));
    o.push_str("</div>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_has_the_schema_and_every_node() {
        let v: serde_json::Value = serde_json::from_str(&render_json(&sample())).expect("valid JSON");
        assert_eq!(v["schema"], STATUS_SCHEMA);
        assert_eq!(v["instance"], "lb1");
        assert_eq!(v["vip_held"], true);
        let nodes = v["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0]["name"], "pg1");
        assert_eq!(nodes[0]["routed_ports"], serde_json::json!([3000]));
        assert_eq!(nodes[0]["flows"], 3);
        assert_eq!(nodes[1]["state"], "down");
    }

    fn sample() -> Snapshot {
        let mut h = Histogram::default();
        h.observe(0.0008);
        h.observe(0.003);
        Snapshot {
            ready: true,
            state_recorded: true,
            instance: "lb1".into(),
            vip: "172.20.0.100".into(),
            phase: "steady".into(),
            vrrp_state: "master".into(),
            vip_held: true,
            forwarding: true,
            nodes: vec![
                NodeRow {
                    name: "pg1".into(),
                    addr: "172.20.0.10:5432".into(),
                    role: "primary".into(),
                    state: "up".into(),
                    up: true,
                    timeline: Some(2),
                    lag_bytes: None,
                    lag_seconds: None,
                    routed_ports: vec![3000],
                    traffic: Traffic { flows: 3, new_flows: 9, packets: 100, bytes: 6400, rsts: 1 },
                    since_change_s: 12.0,
                    probe_latency: h,
                },
                NodeRow {
                    name: "pg<2>".into(),
                    addr: "172.20.0.11:5432".into(),
                    role: "standby".into(),
                    state: "down".into(),
                    up: false,
                    ..NodeRow::default()
                },
            ],
            failovers_total: 1,
            ..Snapshot::default()
        }
    }

    #[test]
    fn table_has_one_row_per_node_with_routes() {
        let t = render_table(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[0].starts_with("instance lb1 | VIP 172.20.0.100 held here | vrrp master | phase steady"), "{t}");
        assert!(lines[3].contains("pg1") && lines[3].contains("primary") && lines[3].contains("3000"), "{t}");
        assert!(lines[4].contains("down") && lines[4].contains(" - "), "{t}");
    }

    #[test]
    fn table_names_the_vip_holder_on_a_backup() {
        let backup = Snapshot { vrrp_state: "backup".into(), vip_held: false, vip_master: Some("172.20.0.21".into()), ..sample() };
        assert!(render_table(&backup).starts_with("instance lb1 | VIP 172.20.0.100 held by 172.20.0.21 | vrrp backup"));
        let unknown = Snapshot { vip_master: None, ..backup };
        assert!(render_table(&unknown).starts_with("instance lb1 | VIP 172.20.0.100 not held here | vrrp backup"));
    }

    #[test]
    fn metrics_histogram_is_cumulative_and_labels_escaped() {
        let m = render_metrics(&sample());
        assert!(m.contains("pglb_probe_latency_seconds_bucket{instance_name=\"lb1\",node=\"pg1\",le=\"0.001\"} 1\n"), "{m}");
        assert!(m.contains("pglb_probe_latency_seconds_bucket{instance_name=\"lb1\",node=\"pg1\",le=\"0.005\"} 2\n"), "{m}");
        assert!(m.contains("pglb_probe_latency_seconds_count{instance_name=\"lb1\",node=\"pg1\"} 2\n"), "{m}");
        assert!(m.contains("pglb_node_up{instance_name=\"lb1\",node=\"pg<2>\"} 0\n"), "{m}");
        assert!(m.contains("pglb_backend_rsts_total{instance_name=\"lb1\",node=\"pg1\"} 1\n"), "{m}");
        assert!(m.contains("pglb_failovers_total{instance_name=\"lb1\"} 1\n"), "{m}");
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }

    #[test]
    fn stats_page_escapes_names_and_refreshes() {
        let h = render_html(&sample());
        assert!(h.contains("http-equiv=\"refresh\""));
        assert!(h.contains("pg&lt;2&gt;") && !h.contains("pg<2>"), "{h}");
        let nodes = h.split("</table>").next().expect("the node table");
        assert_eq!(nodes.matches("<tr class=").count(), 2);
        assert!(!h.contains("<script"), "the page needs no JavaScript");
    }

    /// The tags of an XML fragment open and close in order (enough to catch a broken SVG).
    fn assert_balanced(xml: &str) {
        let mut open: Vec<&str> = Vec::new();
        for tag in xml.split('<').skip(1) {
            let tag = tag.split('>').next().expect("a closed tag");
            if tag.ends_with('/') {
                continue;
            }
            match tag.strip_prefix('/') {
                Some(name) => assert_eq!(open.pop(), Some(name), "</{name}> closes the wrong tag in {xml}"),
                None => open.push(tag.split(' ').next().expect("a tag name")),
            }
        }
        assert!(open.is_empty(), "unclosed {open:?} in {xml}");
    }

    #[test]
    fn stats_chart_svg_is_well_formed_with_one_point_per_sample() {
        let a = [1.0, 2.0, 3.0];
        let b = [0.0, 10.0, 20.0, 30.0, 40.0];
        let svg = chart_svg("new connections per second", &[("pg1", &a), ("pg<2>", &b), ("pg3", &[])], 60, 5.0);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"") && svg.ends_with("</svg>"), "{svg}");
        assert_balanced(&svg);
        let points: Vec<usize> = svg
            .split("points=\"")
            .skip(1)
            .map(|p| p.split('"').next().unwrap().split(' ').count())
            .collect();
        assert_eq!(points, [3, 5], "one polyline per backend with samples, one point per sample: {svg}");
        assert_eq!(svg.matches("<circle").count(), 2, "a dot on each newest sample: {svg}");
        assert!(svg.contains("pg&lt;2&gt; 40.0/s") && !svg.contains("pg<2>"), "{svg}");
        // The newest sample sits on the right edge, the highest one below the top.
        let last_point = svg.split("points=\"").nth(2).unwrap().split('"').next().unwrap().rsplit(' ').next().unwrap();
        let (x, y) = last_point.split_once(',').unwrap();
        assert_eq!(x, "510.0");
        assert!(y.parse::<f64>().unwrap() > 22.0, "{last_point}");
        // More samples than the window: only the newest are drawn; no samples at all: no line.
        let many: Vec<f64> = (0..100).map(f64::from).collect();
        let svg = chart_svg("packets per second", &[("pg1", &many)], 60, 5.0);
        assert_eq!(svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap().split(' ').count(), 60);
        assert!(!chart_svg("t", &[("pg1", &[])], 60, 5.0).contains("<polyline"));
    }

    #[test]
    fn stats_page_shows_load_balancers_events_and_charts() {
        let s = Snapshot {
            vrrp_priority: Some(90),
            vrrp_priority_configured: Some(150),
            writer: Some("pg1".into()),
            writer_reachable: Some(true),
            peers: vec![
                PeerRow { addr: "172.20.0.22".into(), timeline: Some(2), writer: Some("pg1".into()), advert_priority: Some(100), advert_age_s: Some(30.0) },
                PeerRow { addr: "172.20.0.23".into(), ..PeerRow::default() },
            ],
            events: vec![
                EventRow { at: "2026-12-02T07:15:51Z".into(), kind: "failover".into(), text: "writer <pg1> lost".into(), duration_s: None, ongoing: true },
                EventRow { at: "2026-12-02T07:10:00Z".into(), kind: "switchover".into(), text: "switchover pg1 -> pg2".into(), duration_s: Some(1.234), ongoing: false },
                EventRow { at: "2026-12-02T07:00:00Z".into(), kind: "vrrp".into(), text: "became master".into(), duration_s: None, ongoing: false },
            ],
            rates: vec![RateSeries { node: "pg1".into(), conns_per_s: vec![1.0, 2.0], packets_per_s: vec![10.0, 20.0] }],
            rate_every_s: 5.0,
            rate_window: 60,
            ..sample()
        };
        let h = render_html(&s);
        let peers = h.split("<table id=\"peers\">").nth(1).expect("the load balancer table").split("</table>").next().unwrap();
        assert!(peers.contains("lb1 (this instance)</td><td class=\"l\">master</td><td>90 (configured 150)</td><td class=\"l\">yes (pg1)</td>"), "{peers}");
        assert!(peers.contains("172.20.0.22</td><td class=\"l\">backup</td><td>100 (last advert 30s ago)</td><td class=\"l\">yes (pg1)</td><td>2</td>"), "{peers}");
        assert!(peers.contains("172.20.0.23</td><td class=\"l\">unknown</td><td>-</td><td class=\"l\">no report yet</td>"), "{peers}");
        let events = h.split("<table id=\"events\">").nth(1).expect("the events").split("</table>").next().unwrap();
        assert_eq!(events.matches("<tr class=\"ev ").count(), 3, "{events}");
        assert!(events.contains("writer &lt;pg1&gt; lost</td><td>ongoing</td>"), "{events}");
        assert!(events.contains("2026-12-02T07:10:00Z</td><td class=\"l\">switchover</td><td class=\"l\">switchover pg1 -&gt; pg2</td><td>1234 ms</td>"), "{events}");
        assert!(events.find("07:15:51").unwrap() < events.find("07:10:00").unwrap(), "newest first");
        assert_eq!(h.matches("<svg ").count(), 2, "connections and packets");
        assert_eq!(h.matches("<polyline").count(), 2);
        assert!(h.contains("(last 4 min 55 s, every 5 s)"), "{h}");

        let backup = Snapshot { vrrp_state: "backup".into(), vip_held: false, vip_master: Some("172.20.0.22".into()), events: Vec::new(), ..s };
        let h = render_html(&backup);
        assert!(h.contains("172.20.0.22</td><td class=\"l\">master</td><td>100</td>"), "the master we hear: {h}");
        assert!(h.contains("<p id=\"events\">none since this instance started</p>"), "{h}");
    }
}
