//! What the daemon knows, as one plain snapshot, and its renderings: the `pglb status` table
//! (and its JSON form, `pglb status --json`), Prometheus text and the HTML stats page. Pure
//! functions, tested on fixed snapshots.


mod html;
mod json;
mod metrics;
mod table;

pub use html::{chart_svg, render_html};
pub use json::{STATUS_SCHEMA, render_json};
pub use metrics::render_metrics;
pub use table::render_table;

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
    /// Flows on the read ports not closed yet (half-open or established; a FIN or RST seen on
    /// both sides ends one): what `pglb node drain --wait` waits for.
    pub open_read_flows: u64,
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
    /// Routed on the read ports (a standby within the read-lag limits, or the writer standing
    /// in when none qualifies).
    pub reader: bool,
    /// `pglb node drain`: no new read connection goes to it as a standby.
    pub drained: bool,
    /// `pglb node disable`: never a failover candidate or switchover target.
    pub disabled: bool,
    pub traffic: Traffic,
    /// Seconds since the node's state last changed.
    pub since_change_s: f64,
    pub probe_latency: Histogram,
}

impl NodeRow {
    /// The state with the operator's marks: `up`, `up (drained)`, `down (drained, disabled)`.
    pub fn state_marked(&self) -> String {
        let marks: Vec<&str> = [(self.drained, "drained"), (self.disabled, "disabled")].into_iter().filter(|(on, _)| *on).map(|(_, w)| w).collect();
        if marks.is_empty() { self.state.clone() } else { format!("{} ({})", self.state, marks.join(", ")) }
    }
}

/// The whole picture at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub instance: String,
    pub vip: String,
    /// The failover state machine's phase (`steady`, `failing-over`, …).
    pub phase: String,
    /// Why automatic failover is held back while the writer is lost (phase `writer-lost`).
    pub failover_blocked: Option<String>,
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
    /// The pause in force (maintenance mode), if any.
    pub pause: Option<PauseRow>,
    /// `[failover] pause_alert_after` in seconds (the alert rule's threshold).
    pub pause_alert_after_s: f64,
    /// Recent events, newest first.
    pub events: Vec<EventRow>,
    /// `[hooks]` runs by result (`ok`, `failed`, `timeout`, `spawn_error`, `dropped`).
    pub hook_runs: Vec<(String, u64)>,
    /// Events the journal could not append.
    pub journal_errors_total: u64,
    /// Reloads of the config by result (`ok`, `invalid`, `needs_restart`, `refused`).
    pub config_reloads: Vec<(String, u64)>,
    /// When the config in force was read whole (the start, or the last reload that applied),
    /// Unix seconds; and whether the last reload applied.
    pub config_last_reload_success_s: f64,
    pub config_last_reload_ok: bool,
    /// Per-backend rates, oldest first, one every `rate_every_s`; a full window holds
    /// `rate_window` of them.
    pub rates: Vec<RateSeries>,
    pub rate_every_s: f64,
    pub rate_window: usize,
}

/// The pause in force (`pglb pause`): who took it, why, since and until when.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PauseRow {
    /// The instance that took the command.
    pub by: String,
    pub reason: Option<String>,
    /// Its start, seconds of the wall clock since the Unix epoch, and as RFC 3339 in UTC.
    pub since_unix_s: f64,
    pub since: String,
    /// The end of a `--for` pause, likewise.
    pub until_unix_s: Option<f64>,
    pub until: Option<String>,
}

impl From<&crate::failover::Maintenance> for PauseRow {
    fn from(m: &crate::failover::Maintenance) -> Self {
        let rfc = |ms: u64| humantime::format_rfc3339_seconds(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string();
        PauseRow {
            by: m.by.clone(),
            reason: m.reason.clone(),
            since_unix_s: m.at_ms as f64 / 1000.0,
            since: rfc(m.at_ms),
            until_unix_s: m.until_ms.map(|u| u as f64 / 1000.0),
            until: m.until_ms.map(rfc),
        }
    }
}

impl PauseRow {
    /// One line for the status table and `/stats`.
    pub fn describe(&self) -> String {
        let reason = self.reason.as_deref().map_or_else(String::new, |r| format!(" ({r})"));
        let until = self.until.as_deref().map_or_else(|| "until `pglb resume`".to_owned(), |u| format!("until {u}"));
        format!("paused on {} since {}{reason}, {until}: no automatic failover, rejoin or re-point", self.by, self.since)
    }
}

/// One recent event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventRow {
    /// Its start, RFC 3339 in UTC.
    pub at: String,
    /// `failover`, `switchover`, `fence`, `vrrp`, `flood`, `operator`, `maintenance`.
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
                    reader: false,
                    drained: false,
                    disabled: false,
                    traffic: Traffic { flows: 3, new_flows: 9, packets: 100, bytes: 6400, rsts: 1, open_read_flows: 0 },
                    since_change_s: 12.0,
                    probe_latency: h,
                },
                NodeRow {
                    name: "pg<2>".into(),
                    addr: "172.20.0.11:5432".into(),
                    role: "standby".into(),
                    state: "down".into(),
                    up: false,
                    drained: true,
                    disabled: true,
                    traffic: Traffic { flows: 2, open_read_flows: 1, ..Traffic::default() },
                    ..NodeRow::default()
                },
            ],
            failovers_total: 1,
            hook_runs: vec![("ok".into(), 4), ("timeout".into(), 1)],
            config_reloads: vec![("ok".into(), 2), ("needs_restart".into(), 1)],
            config_last_reload_success_s: 1_700_000_000.5,
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

    /// `pglb node drain` and `disable` show in every rendering.
    #[test]
    fn node_marks_show_in_the_table_json_metrics_and_stats() {
        let s = sample();
        let t = render_table(&s);
        assert!(t.lines().nth(4).is_some_and(|l| l.contains("down (drained, disabled)")), "{t}");
        assert!(t.lines().nth(3).is_some_and(|l| l.contains("| up ")), "{t}");
        let json: serde_json::Value = serde_json::from_str(&render_json(&s)).unwrap();
        let node = &json["nodes"][1];
        assert_eq!((&node["drained"], &node["disabled"], &node["open_read_flows"]), (&serde_json::json!(true), &serde_json::json!(true), &serde_json::json!(1)));
        assert_eq!(json["nodes"][0]["drained"], serde_json::json!(false));
        let m = render_metrics(&s);
        for line in [
            "pglb_node_drained{instance_name=\"lb1\",node=\"pg1\"} 0\n",
            "pglb_node_drained{instance_name=\"lb1\",node=\"pg<2>\"} 1\n",
            "pglb_node_disabled{instance_name=\"lb1\",node=\"pg<2>\"} 1\n",
            "pglb_backend_open_read_flows{instance_name=\"lb1\",node=\"pg<2>\"} 1\n",
        ] {
            assert!(m.contains(line), "{line} not in {m}");
        }
        assert!(render_html(&s).contains("down (drained, disabled)"));
    }

    #[test]
    fn table_and_json_say_why_failover_is_held_back() {
        let held = Snapshot { phase: "writer-lost".into(), failover_blocked: Some("no standby qualifies for promotion".into()), ..sample() };
        let t = render_table(&held);
        assert!(t.contains("failover held back: no standby qualifies for promotion (`pglb failover --to NODE` promotes by hand)"), "{t}");
        let json: serde_json::Value = serde_json::from_str(&render_json(&held)).expect("json");
        assert_eq!(json["failover_blocked"], "no standby qualifies for promotion");
        let json: serde_json::Value = serde_json::from_str(&render_json(&sample())).expect("json");
        assert!(json["failover_blocked"].is_null() && !render_table(&sample()).contains("held back"));
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
        let build = m.lines().find(|l| l.starts_with("pglb_build_info{")).expect("pglb_build_info");
        assert!(build.starts_with(&format!("pglb_build_info{{instance_name=\"lb1\",version=\"{}\"", env!("CARGO_PKG_VERSION"))) && build.ends_with("} 1"), "{build}");
        assert!(m.contains("pglb_hook_runs_total{instance_name=\"lb1\",result=\"ok\"} 4\n"), "{m}");
        assert!(m.contains("pglb_hook_runs_total{instance_name=\"lb1\",result=\"timeout\"} 1\n"), "{m}");
        assert!(m.contains("pglb_journal_write_errors_total{instance_name=\"lb1\"} 0\n"), "{m}");
        assert!(m.contains("pglb_config_reloads_total{instance_name=\"lb1\",result=\"needs_restart\"} 1\n"), "{m}");
        assert!(m.contains("pglb_config_last_reload_success_timestamp_seconds{instance_name=\"lb1\"} 1700000000.5\n"), "{m}");
        assert!(m.contains("pglb_config_last_reload_successful{instance_name=\"lb1\"} 0\n"), "{m}");
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }

    /// The outage gauges read the recent events: an ongoing failover or flood is 1, the newest
    /// finished failover's duration is the last outage, NaN without one.
    #[test]
    fn outages_come_from_the_recent_events() {
        let quiet = render_metrics(&sample());
        assert!(quiet.contains("pglb_last_writer_outage_seconds{instance_name=\"lb1\"} NaN\n"), "{quiet}");
        assert!(quiet.contains("pglb_writer_lost{instance_name=\"lb1\"} 0\n") && quiet.contains("pglb_syn_flood{instance_name=\"lb1\"} 0\n"), "{quiet}");
        let row = |kind: &str, duration_s: Option<f64>, ongoing: bool| EventRow { at: "2026-12-02T07:00:00Z".into(), kind: kind.into(), text: "x".into(), duration_s, ongoing };
        let busy = Snapshot {
            events: vec![row("failover", None, true), row("flood", None, true), row("switchover", Some(9.0), false), row("failover", Some(0.7124), false), row("failover", Some(3.0), false)],
            ..sample()
        };
        let m = render_metrics(&busy);
        for line in ["pglb_writer_lost{instance_name=\"lb1\"} 1\n", "pglb_syn_flood{instance_name=\"lb1\"} 1\n", "pglb_last_writer_outage_seconds{instance_name=\"lb1\"} 0.712\n"] {
            assert!(m.contains(line), "{line:?} missing:\n{m}");
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

    /// A pause shows in every rendering: the table's line, the JSON's `paused` and `pause`, the
    /// `/stats` line (escaped), and the three gauges the alert rule reads; none without one.
    #[test]
    fn a_pause_shows_in_the_table_json_stats_and_metrics() {
        let m = crate::failover::Maintenance {
            paused: true,
            at_ms: 1_796_000_000_000,
            by: "lb2".into(),
            reason: Some("<upgrade>".into()),
            until_ms: Some(1_796_000_900_000),
        };
        let paused = Snapshot { pause: Some(PauseRow::from(&m)), pause_alert_after_s: 3600.0, ..sample() };
        let line = "maintenance: paused on lb2 since 2026-11-30T00:53:20Z (<upgrade>), until 2026-11-30T01:08:20Z: no automatic failover, rejoin or re-point";
        assert!(render_table(&paused).lines().any(|l| l == line), "{}", render_table(&paused));
        let v: serde_json::Value = serde_json::from_str(&render_json(&paused)).expect("valid JSON");
        assert_eq!(v["paused"], true);
        assert_eq!(
            v["pause"],
            serde_json::json!({"by": "lb2", "reason": "<upgrade>", "since": "2026-11-30T00:53:20Z", "until": "2026-11-30T01:08:20Z"})
        );
        assert!(render_html(&paused).contains("<p id=\"pause\"><b>maintenance</b>: paused on lb2 since 2026-11-30T00:53:20Z (&lt;upgrade&gt;)"));
        let metrics = render_metrics(&paused);
        for sample in [
            "pglb_paused{instance_name=\"lb1\"} 1\n",
            "pglb_pause_started_timestamp_seconds{instance_name=\"lb1\"} 1796000000\n",
            "pglb_pause_alert_after_seconds{instance_name=\"lb1\"} 3600\n",
        ] {
            assert!(metrics.contains(sample), "{sample}: {metrics}");
        }
        let quiet = Snapshot { pause_alert_after_s: 3600.0, ..sample() };
        assert!(render_metrics(&quiet).contains("pglb_paused{instance_name=\"lb1\"} 0\n"));
        assert!(render_metrics(&quiet).contains("pglb_pause_started_timestamp_seconds{instance_name=\"lb1\"} 0\n"));
        let v: serde_json::Value = serde_json::from_str(&render_json(&quiet)).expect("valid JSON");
        assert_eq!((v["paused"].clone(), v["pause"].clone()), (serde_json::json!(false), serde_json::Value::Null));
        assert!(!render_table(&quiet).contains("maintenance") && !render_html(&quiet).contains("id=\"pause\""));
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
        assert!(h.contains("<p id=\"events\">none yet (the event journal is empty)</p>"), "{h}");
    }
}
