//! Building the [`Snapshot`] that `pglb status`, `/metrics`, `/stats` and `/health` render,
//! off the task that owns the failover machine: the runtime publishes what the machine believes
//! ([`Published`], cheap to clone) after every event; a request reads that, the VRRP status and
//! the data plane's counters and flows (a walk of the flow table, on a blocking thread) and
//! assembles the snapshot, with the recent events and traffic rates the runtime keeps
//! ([`Recent`]). Nothing is built while nobody asks.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::watch;

use super::{
    history::{self, EventLog, TrafficHistory},
    hooks::{HookCounts, HookResult},
    params::SnapshotParams,
};
use crate::{
    dataplane::{Counters, FlowView, Pinned},
    failover::{ClusterView, NodeState, Phase, with_names},
    status::{EventRow, Histogram, NodeRow, PauseRow, PeerRow, RateSeries, Snapshot, Traffic},
    vip::{self, VrrpCounters, VrrpStatus},
};

/// The VRRP machine's discards that say an advert was not believed (forged, a stranger's, a
/// bad interval), shown with the packet-level drops in `pglb_vrrp_adverts_dropped_total`.
const TRUST_DISCARDS: [vip::vrrp::DiscardReason; 3] =
    [vip::vrrp::DiscardReason::NotAPeer, vip::vrrp::DiscardReason::BadInterval, vip::vrrp::DiscardReason::Unconfirmed];

/// What the runtime remembers for the stats page: it writes, snapshots read.
#[derive(Debug)]
pub struct Recent {
    pub events: Mutex<EventLog>,
    pub traffic: Mutex<TrafficHistory>,
    /// Hook runs by result and failed journal appends (the events task writes them).
    pub hooks: Arc<HookCounts>,
}

impl Recent {
    pub fn new(backends: usize) -> Self {
        Recent {
            events: Mutex::new(EventLog::default()),
            traffic: Mutex::new(TrafficHistory::new(backends, history::SAMPLES_KEPT)),
            hooks: Arc::new(HookCounts::default()),
        }
    }
}

/// Counters the runtime keeps.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub failovers: u64,
    pub switchovers: u64,
    pub rejoins_ok: u64,
    pub rejoins_failed: u64,
    pub state_write_errors: u64,
    /// Gaps in the main loop longer than the lease (each woke the instance humble).
    pub loop_stalls: u64,
    pub reloads: ReloadCounts,
}

/// Reloads of the config (`pglb reload`, SIGHUP) by result, and the last good one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadCounts {
    pub ok: u64,
    pub invalid: u64,
    pub needs_restart: u64,
    pub refused: u64,
    /// When the config in force was last read whole (the start counts), Unix milliseconds.
    pub last_ok_unix_ms: u64,
    /// Whether the last reload (or the start) applied.
    pub last_ok: bool,
}

/// What the runtime publishes after each event.
#[derive(Debug, Clone)]
pub struct Published {
    pub view: ClusterView,
    pub counts: Counts,
    /// Probe latency per node id.
    pub latency: Vec<Histogram>,
    /// The runtime's clock (since start) when published.
    pub now: Duration,
    /// The peer reports' counters (with `[vrrp] peers`).
    pub reports: Option<Arc<crate::vip::report::ReportCounters>>,
}

/// Who owns the VIP, as a snapshot sees it.
#[derive(Clone)]
pub enum VipView {
    Vrrp { status: watch::Receiver<VrrpStatus>, counters: Arc<VrrpCounters> },
    /// No `[vrrp]`: this instance holds the VIP alone.
    Static,
}

/// Everything a snapshot is built from; cheap to clone into request handlers.
#[derive(Clone)]
pub struct SnapshotSource {
    /// What the config says a snapshot shows (instance, VIP, nodes, ports, peers, priority):
    /// taken from `params` when a snapshot starts (a reload sends new ones).
    pub p: SnapshotParams,
    pub params: watch::Receiver<SnapshotParams>,
    pub published: watch::Receiver<Published>,
    pub pinned: Arc<Mutex<Pinned>>,
    pub vip_view: VipView,
    pub recent: Arc<Recent>,
}

impl SnapshotSource {
    pub fn new(params: watch::Receiver<SnapshotParams>, published: watch::Receiver<Published>, pinned: Arc<Mutex<Pinned>>, vip_view: VipView, recent: Arc<Recent>) -> Self {
        let p = params.borrow().clone();
        SnapshotSource { p, params, published, pinned, vip_view, recent }
    }

    /// Builds a snapshot now (the map reads on a blocking thread).
    pub async fn snapshot(&self) -> Snapshot {
        let mut source = self.clone();
        source.p = self.params.borrow().clone();
        match tokio::task::spawn_blocking(move || source.build()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "building the status snapshot failed");
                Snapshot { instance: self.p.instance.clone(), ..Snapshot::default() }
            }
        }
    }

    /// The snapshot, section by section: the machine's view as last published, the data plane's
    /// counters and flows, the VRRP machine's status, the peers, the recent events and rates.
    fn build(&self) -> Snapshot {
        let published = self.published.borrow().clone();
        let view = &published.view;
        let read = self.read_dataplane();
        let nodes = self.node_rows(&published, &read);
        let vrrp = self.vrrp_part();
        let c = published.counts;
        let (peer_reports_accepted, peer_reports_dropped) = peer_report_counts(&published);
        let (rates, rate_window) = self.rates();
        Snapshot {
            instance: self.p.instance.clone(),
            vip: self.p.vip.clone(),
            phase: view.phase.as_str().to_owned(),
            failover_blocked: view
                .blocked
                .as_ref()
                .filter(|_| matches!(view.phase, Phase::WriterLost { .. }))
                .map(|b| with_names(&b.to_string(), &|n| self.p.nodes[n].0.clone())),
            vrrp_state: vrrp.state,
            vip_held: vrrp.held,
            vip_master: vrrp.master,
            forwarding: vrrp.held,
            // `get`: a reload that removed a node hands out its new parameters and view in turn.
            writer: view.writer.and_then(|w| self.p.nodes.get(w)).map(|n| n.0.clone()),
            nodes,
            failovers_total: c.failovers,
            switchovers_total: c.switchovers,
            vrrp_transitions_total: vrrp.transitions,
            adverts_sent: vrrp.sent,
            adverts_received: vrrp.received,
            adverts_dropped: vrrp.dropped,
            flows_established: read.flows.iter().filter(|f| !f.half_open).count() as u64,
            flows_half_open: read.flows.iter().filter(|f| f.half_open).count() as u64,
            datapath_reasons: read.counters.map(|c| c.named_reasons().map(|(n, v)| (n.to_owned(), v)).collect()).unwrap_or_default(),
            writer_reachable: view.writer_reachable,
            rejoins_ok_total: c.rejoins_ok,
            rejoins_failed_total: c.rejoins_failed,
            state_write_errors_total: c.state_write_errors,
            state_recorded: view.recorded,
            ready: view.ready,
            loop_stalls_total: c.loop_stalls,
            timeline_hint: view.timeline_hint.map(|(tl, peer)| (tl, peer.to_string())),
            peer_reports_accepted,
            peer_reports_dropped,
            fenced: view.nodes.iter().filter(|n| n.fence.is_some()).map(|n| n.name.clone()).collect(),
            lease_valid: read.lease_valid,
            peers: self.peer_rows(view, vrrp.status.as_ref()),
            vrrp_priority: vrrp.status.as_ref().map(|st| st.priority),
            vrrp_priority_configured: self.p.configured_priority,
            pause: view.maintenance.as_ref().filter(|_| view.paused).map(PauseRow::from),
            pause_alert_after_s: self.p.pause_alert_after.as_secs_f64(),
            events: self.events(),
            hook_runs: HookResult::ALL.iter().map(|r| (r.as_str().to_owned(), self.recent.hooks.runs(*r))).collect(),
            journal_errors_total: self.recent.hooks.journal_errors(),
            config_reloads: [("ok", c.reloads.ok), ("invalid", c.reloads.invalid), ("needs_restart", c.reloads.needs_restart), ("refused", c.reloads.refused)]
                .iter()
                .map(|(r, v)| ((*r).to_owned(), *v))
                .collect(),
            config_last_reload_success_s: c.reloads.last_ok_unix_ms as f64 / 1000.0,
            config_last_reload_ok: c.reloads.last_ok,
            rates,
            rate_every_s: history::SAMPLE_EVERY.as_secs_f64(),
            rate_window,
        }
    }

    /// The data plane's counters, flows and lease, read under one lock of the pinned maps.
    fn read_dataplane(&self) -> DataplaneRead {
        let pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        DataplaneRead { counters: pinned.counters().ok(), flows: pinned.flows().unwrap_or_default(), lease_valid: pinned.lease_valid().unwrap_or(false) }
    }

    /// One row per node: the machine's view of it, the ports routed to it and its traffic.
    fn node_rows(&self, published: &Published, read: &DataplaneRead) -> Vec<NodeRow> {
        let view = &published.view;
        view.nodes
            .iter()
            .map(|n| {
                let mut routed = Vec::new();
                if view.writer == Some(n.id) {
                    routed.extend(&self.p.write_ports);
                }
                if view.readers.contains(&n.id) {
                    routed.extend(&self.p.read_ports);
                }
                let stats = read.counters.as_ref().and_then(|c| c.backends.iter().find(|(id, _)| *id == n.id as u32).map(|(_, s)| *s));
                NodeRow {
                    name: n.name.clone(),
                    addr: self.p.nodes.get(n.id).map(|a| a.1.to_string()).unwrap_or_default(),
                    role: n.role.as_str().to_owned(),
                    state: n.state.as_str().to_owned(),
                    up: n.state == NodeState::Up,
                    timeline: n.timeline,
                    lag_bytes: n.lag_bytes,
                    lag_seconds: n.lag.map(|d| d.as_secs_f64()),
                    routed_ports: routed,
                    reader: !self.p.read_ports.is_empty() && view.readers.contains(&n.id),
                    drained: n.drained,
                    disabled: n.disabled,
                    traffic: Traffic {
                        flows: read.flows.iter().filter(|f| f.backend_id == n.id as u32).count() as u64,
                        open_read_flows: read.flows.iter().filter(|f| f.backend_id == n.id as u32 && f.pool == "read" && !matches!(f.state, "CLOSING" | "CLOSED")).count() as u64,
                        new_flows: stats.map(|s| s.new_flows).unwrap_or(0),
                        packets: stats.map(|s| s.to_backend_packets + s.to_client_packets).unwrap_or(0),
                        bytes: stats.map(|s| s.to_backend_bytes + s.to_client_bytes).unwrap_or(0),
                        rsts: stats.map(|s| s.resets).unwrap_or(0),
                    },
                    since_change_s: published.now.saturating_sub(n.last_change).as_secs_f64(),
                    probe_latency: published.latency.get(n.id).cloned().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The VRRP machine's status and counters; without VRRP, this instance holds the VIP.
    fn vrrp_part(&self) -> VrrpPart {
        let VipView::Vrrp { status, counters: c } = &self.vip_view else {
            return VrrpPart { status: None, state: "none".to_owned(), held: true, master: None, sent: 0, received: 0, dropped: Vec::new(), transitions: 0 };
        };
        let st = status.borrow().clone();
        let dropped = vip::DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), c.dropped(*r)))
            .chain(TRUST_DISCARDS.iter().map(|r| (r.as_str().to_owned(), c.discarded(*r))))
            .collect();
        VrrpPart {
            state: st.state.as_str().to_owned(),
            held: st.master,
            master: st.master_address.filter(|_| !st.master).map(|a| a.to_string()),
            sent: c.adverts_sent.load(std::sync::atomic::Ordering::Relaxed),
            received: c.adverts_received.load(std::sync::atomic::Ordering::Relaxed),
            dropped,
            transitions: vip::VrrpState::ALL.iter().map(|s| c.transitions_to(*s)).sum(),
            status: Some(st),
        }
    }

    /// Each `[vrrp] peers` entry: its last report, and its last advert's priority and age (on
    /// the VRRP runner's clock).
    fn peer_rows(&self, view: &ClusterView, vrrp_status: Option<&VrrpStatus>) -> Vec<PeerRow> {
        let advert = |addr: &str| -> (Option<u8>, Option<f64>) {
            let Some(st) = vrrp_status else { return (None, None) };
            let priority = st.peer_priorities.iter().find(|(a, _)| a.to_string() == addr).map(|(_, p)| *p);
            let age = st.peers_heard.iter().find(|(a, _)| a.to_string() == addr).map(|(_, h)| st.as_of.saturating_sub(*h).as_secs_f64());
            (priority, age)
        };
        self.p.peers
            .iter()
            .zip(&view.peer_reports)
            .map(|(addr, r)| {
                let (advert_priority, advert_age_s) = advert(addr);
                PeerRow {
                    addr: addr.clone(),
                    timeline: r.as_ref().map(|r| r.timeline),
                    writer: r.as_ref().and_then(|r| r.writer.clone()),
                    advert_priority,
                    advert_age_s,
                }
            })
            .collect()
    }

    /// The recent events, newest first.
    fn events(&self) -> Vec<EventRow> {
        let log = self.recent.events.lock().unwrap_or_else(|p| p.into_inner());
        log.newest_first()
            .map(|e| EventRow {
                at: history::rfc3339(e.started),
                kind: e.kind.as_str().to_owned(),
                text: e.text.clone(),
                duration_s: e.duration.map(|d| d.as_secs_f64()),
                ongoing: e.ongoing,
            })
            .collect()
    }

    /// Each node's traffic rates, and how many samples a full window holds.
    fn rates(&self) -> (Vec<RateSeries>, usize) {
        let traffic = self.recent.traffic.lock().unwrap_or_else(|p| p.into_inner());
        let rates = self
            .p
            .nodes
            .iter()
            .enumerate()
            .map(|(id, (name, _))| {
                let r = traffic.rates(id);
                RateSeries { node: name.clone(), conns_per_s: r.iter().map(|r| r.conns_per_s).collect(), packets_per_s: r.iter().map(|r| r.packets_per_s).collect() }
            })
            .collect();
        (rates, traffic.kept())
    }
}

/// The peer reports accepted, and those dropped by reason (none without `[vrrp] peers`).
fn peer_report_counts(published: &Published) -> (u64, Vec<(String, u64)>) {
    let Some(r) = published.reports.as_ref() else { return (0, Vec::new()) };
    let dropped = crate::vip::report::Rejection::ALL.iter().map(|x| (x.as_str().to_owned(), r.dropped(*x))).collect();
    (r.accepted.load(std::sync::atomic::Ordering::Relaxed), dropped)
}

/// What a snapshot reads from the data plane.
struct DataplaneRead {
    counters: Option<Counters>,
    flows: Vec<FlowView>,
    lease_valid: bool,
}

/// The VRRP section of a snapshot.
struct VrrpPart {
    /// The runner's status (`None` without VRRP), for the peers' adverts and the priority.
    status: Option<VrrpStatus>,
    state: String,
    held: bool,
    master: Option<String>,
    sent: u64,
    received: u64,
    dropped: Vec<(String, u64)>,
    transitions: u64,
}

impl crate::http::SnapshotProvider for SnapshotSource {
    fn snapshot(&self) -> impl std::future::Future<Output = Snapshot> + Send {
        SnapshotSource::snapshot(self)
    }
}
