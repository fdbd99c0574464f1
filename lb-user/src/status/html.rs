//! `/stats`: one HTML page like HAProxy's, with inline SVG charts (no JavaScript, no external
//! assets).

use std::fmt::Write as _;

use super::*;

pub(super) fn html_escape(v: &str) -> String {
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
            html_escape(&n.state_marked()),
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
    if let Some(p) = &s.pause {
        let _ = write!(o, "<p id=\"pause\"><b>maintenance</b>: {}</p>", html_escape(&p.describe()));
    }
    render_peers(&mut o, s);
    render_events(&mut o, s);
    render_charts(&mut o, s);
    o.push_str("</body></html>\n");
    o
}

/// A peer's VRRP state as far as this instance knows: the master it hears, else a backup if it
/// reports (a backup sends no adverts), else unknown.
pub(super) fn peer_state(s: &Snapshot, p: &PeerRow) -> &'static str {
    if s.vip_master.as_deref() == Some(p.addr.as_str()) {
        "master"
    } else if p.timeline.is_some() {
        "backup"
    } else {
        "unknown"
    }
}

/// The load balancers: this instance and each `[vrrp] peers` entry.
pub(super) fn render_peers(o: &mut String, s: &Snapshot) {
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

pub(super) fn duration_text(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else if seconds < 120.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{:.0} min {:.0} s", (seconds / 60.0).floor(), seconds % 60.0)
    }
}

/// The recent events, newest first.
pub(super) fn render_events(o: &mut String, s: &Snapshot) {
    o.push_str("<h3>Recent events</h3>");
    if s.events.is_empty() {
        o.push_str("<p id=\"events\">none yet (the event journal is empty)</p>");
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
pub(super) const PALETTE: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

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
pub(super) fn render_charts(o: &mut String, s: &Snapshot) {
    let _ = write!(o, "<h3>Traffic per backend (last {}, every {:.0} s)</h3><div id=\"charts\">", duration_text(s.rate_window.saturating_sub(1) as f64 * s.rate_every_s), s.rate_every_s);
    let conns: Vec<(&str, &[f64])> = s.rates.iter().map(|r| (r.node.as_str(), r.conns_per_s.as_slice())).collect();
    let packets: Vec<(&str, &[f64])> = s.rates.iter().map(|r| (r.node.as_str(), r.packets_per_s.as_slice())).collect();
    o.push_str(&chart_svg("new connections per second", &conns, s.rate_window, s.rate_every_s));
    o.push(' ');
    o.push_str(&chart_svg("packets per second", &packets, s.rate_window, s.rate_every_s));
    o.push_str("</div>");
}
