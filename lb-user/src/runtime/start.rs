//! The start-up steps of `pglb run`, in the order [`super::run`] takes them: the state file,
//! the data plane, the failover machine, the probes, the VIP's owner, the peer reports, HTTP and
//! the admin socket; the traffic sampler the stats page reads, and the events task (journal and
//! hooks).

use std::{
    net::SocketAddrV4,
    sync::{Arc, Mutex},
};

use tokio::{
    sync::{Notify, mpsc, watch},
    task::AbortHandle,
    time::{Instant, Interval},
};
use tracing::{debug, info, warn};

use super::{
    Runtime, RuntimeError, VipOwner, VrrpWord,
    history::{self, EventKind},
    hooks::{self, Emitter},
    params::{NodeSpec, RunParams, VipSide},
    snapshot::{Recent, SnapshotSource, VipView},
    tasks::Tasks,
};
use crate::{
    admin::{self, AdminRequest},
    dataplane::{Dataplane, Pinned},
    failover::{Durable, Event, Machine, NodeId, Observation},
    http,
    journal::{self, Journal},
    probe::{self, ProbeSettings},
    state::StateFile,
    vip::{self, VrrpRunner, report::ReportLink, io::VrrpReceiver},
};

/// What an earlier run must not have forgotten, before anything is attached or routed.
pub(super) fn read_state(p: &RunParams) -> Result<(StateFile, Option<Durable>), RuntimeError> {
    let state = StateFile::new(&p.state_dir);
    let durable = state.load()?;
    Ok((state, durable))
}

/// The attached data plane, its pinned maps, and the writer they route.
pub(super) type Attached = (Dataplane, Arc<Mutex<Pinned>>, Option<NodeId>);

/// Attaches (or re-attaches to) the XDP program and its pinned maps. Wake humble: whatever an
/// earlier run left (a restart in place extends its lease) routes no new flow until this run
/// has decided; established flows go on for the grace. Returns the writer the pinned map routes.
pub(super) fn attach_dataplane(p: &RunParams) -> Result<Attached, RuntimeError> {
    let spec = &p.dataplane;
    enable_forwarding(&spec.interface)?;
    let mut dataplane = Dataplane::attach(spec)?;
    dataplane.set_backends(&p.backends)?;
    dataplane.expire_lease(p.lease.grace)?;
    let routed = dataplane.writer()?.map(|id| id as NodeId);
    let pinned = Arc::new(Mutex::new(Pinned::open(&spec.pin_dir)?));
    info!(instance = %p.instance, interface = %spec.interface, pin_dir = %spec.pin_dir.display(), vip = %spec.vip, lease_ms = p.lease.period.as_millis() as u64,
        "data plane attached; lease expired until this instance has decided (fresh probes and peer reports)");
    Ok((dataplane, pinned, routed))
}

/// The failover machine, from the state file if there is one, told what the data plane routes.
pub(super) fn restore_machine(p: &RunParams, durable: Option<&Durable>, routed: Option<NodeId>, state: &StateFile) -> Machine {
    let mut machine = match durable {
        Some(d) => {
            info!(path = %state.path().display(), "state file read: fences, the last writer and its timeline are restored");
            Machine::restore(p.machine.clone(), d)
        }
        None => {
            info!(path = %state.path().display(), "no state file yet: a first start");
            Machine::new(p.machine.clone())
        }
    };
    machine.set_routed(routed);
    machine
}

/// The probe tasks: where they send, and per node its wake-up and its task.
pub(super) struct Probes {
    pub rx: mpsc::Receiver<Observation>,
    /// Weak: the probe tasks hold the senders, so the loop sees when they are all gone.
    pub tx: mpsc::WeakSender<Observation>,
    pub now: Vec<Arc<Notify>>,
    pub tasks: Vec<AbortHandle>,
}

/// One probe task per node; each can be woken for a probe out of its round.
pub(super) fn start_probes(p: &RunParams, settings: &watch::Receiver<ProbeSettings>, since: Instant, tasks: &mut Tasks) -> Probes {
    let (obs_tx, rx) = mpsc::channel(256);
    let mut probes = Probes { rx, tx: obs_tx.downgrade(), now: Vec::new(), tasks: Vec::new() };
    for (i, node) in p.nodes.iter().enumerate() {
        let (now, task) = spawn_probe(i, node, settings, since, &obs_tx, tasks);
        probes.now.push(now);
        probes.tasks.push(task);
    }
    probes
}

/// The probe task of node `id` (at start, or added by a reload), and what wakes it.
pub(super) fn spawn_probe(
    id: NodeId,
    node: &NodeSpec,
    settings: &watch::Receiver<ProbeSettings>,
    since: Instant,
    out: &mpsc::Sender<Observation>,
    tasks: &mut Tasks,
) -> (Arc<Notify>, AbortHandle) {
    let now = Arc::new(Notify::new());
    let work = probe::run_node(id, node.name.clone(), node.addr, settings.clone(), since, out.clone(), Arc::clone(&now));
    (now, tasks.spawn("probe", work))
}

/// The VIP's owner: the VRRP runner (driven from the main loop) or the VIP held alone.
pub(super) async fn open_vip(p: &RunParams) -> Result<(VipOwner, Option<VrrpReceiver>, VipView), RuntimeError> {
    match &p.vip {
        VipSide::Vrrp(v) => {
            let runner = VrrpRunner::open(v.runner.clone()).await?;
            let view = VipView::Vrrp { status: runner.status(), counters: runner.counters() };
            let rx = runner.receiver();
            info!(vrid = v.runner.vrid, priority = v.priority, "vrrp: opened; backup until this instance has decided");
            Ok((VipOwner::Vrrp(Box::new(runner)), Some(rx), view))
        }
        VipSide::Static { interface, vip } => {
            let held = vip::address::StaticVip::hold(interface, *vip).await?;
            info!(%vip, "vip: no [vrrp] configured: this instance holds the VIP alone");
            Ok((VipOwner::Static(held), None, VipView::Static))
        }
    }
}

/// The peer reports' socket and their interval (with pglb peers).
pub(super) async fn open_reports(p: &RunParams) -> Result<Option<(ReportLink, Interval)>, RuntimeError> {
    let VipSide::Vrrp(v) = &p.vip else { return Ok(None) };
    let Some(r) = &v.reports else { return Ok(None) };
    let addr = SocketAddrV4::new(r.own, r.port);
    let link = ReportLink::bind(r.own, r.port, r.peers.clone(), r.key.clone(), r.every).await.map_err(|source| RuntimeError::ReportBind { addr, source })?;
    let mut every = tokio::time::interval(r.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(%addr, peers = ?r.peers, "peer reports: authenticated (HMAC-SHA256), every advert interval");
    Ok(Some((link, every)))
}

/// `/metrics`, `/stats` and `/health`.
pub(super) async fn start_http(p: &RunParams, access: watch::Receiver<http::Access>, source: SnapshotSource, tasks: &mut Tasks) -> Result<(), RuntimeError> {
    let listener = http::bind(p.http.listen).await?;
    tasks.spawn("http", http::serve(listener, source, access));
    info!(listen = %p.http.listen, "http: serving /metrics /stats /primary /replica /read-only /health /node/<name>");
    Ok(())
}

/// The admin socket `pglb status`, `switchover`, `node rejoin` and `debug` talk to.
pub(super) fn start_admin(p: &RunParams, tasks: &mut Tasks) -> Result<(mpsc::Receiver<AdminRequest>, std::path::PathBuf), RuntimeError> {
    let (admin_tx, admin_rx) = mpsc::channel::<AdminRequest>(16);
    let path = admin::socket_path(&p.instance);
    tasks.spawn("admin socket", admin::serve(admin::bind(&path)?, admin_tx));
    info!(socket = %path.display(), "admin socket ready");
    Ok((admin_rx, path))
}

/// The events task (journal and hooks), after the journal's tail is in the recent events: what
/// `/stats` showed before this start, it shows again.
pub(super) fn start_events(p: &RunParams, hook: watch::Receiver<Option<hooks::HookParams>>, recent: &Recent, tasks: &mut Tasks) -> Emitter {
    match journal::read(&p.state_dir) {
        Ok(read) => {
            if read.skipped > 0 {
                warn!(skipped = read.skipped, "events: lines of the journal that are not events were skipped");
            }
            recent.events.lock().unwrap_or_else(|e| e.into_inner()).restore(&read.events);
        }
        Err(e) => warn!(error = %crate::error_chain(&e), "events: the journal cannot be read: /stats starts without the events before this start"),
    }
    let (emitter, queue) = hooks::channel(Arc::clone(&recent.hooks));
    tasks.spawn("events", hooks::serve(queue, Journal::new(&p.state_dir), hook, Arc::clone(&recent.hooks)));
    match &p.hooks {
        Some(h) => info!(command = h.command, timeout_ms = h.timeout.as_millis() as u64, max_concurrent = h.max_concurrent, "events: journal and hooks ready"),
        None => debug!("events: journal ready, no [hooks]"),
    }
    emitter
}

impl Runtime {
    /// The VRRP runner starts not ready (a backup that waits for this instance to decide), with
    /// the stale VIP an earlier run may have left removed; without VRRP the VIP is held.
    pub(super) async fn start_vip(&mut self) {
        match &mut self.vip {
            VipOwner::Vrrp(runner) => {
                let mut events = runner.set_ready(false).await;
                events.extend(runner.start().await);
                self.vrrp_word = Some(VrrpWord { priority: runner.priority(), ready: false });
                self.on_vrrp_events(events);
            }
            VipOwner::Static(_) => {
                self.record(EventKind::Vrrp, "no [vrrp]: this instance holds the VIP alone");
                self.feed(Event::VrrpRole { master: true });
            }
        }
    }
}

/// Samples the per-backend counters every [`history::SAMPLE_EVERY`] for the traffic charts of
/// `/stats` (the counter reads on a blocking thread).
pub(super) async fn sample_traffic(pinned: Arc<Mutex<Pinned>>, recent: Arc<Recent>, since: Instant) {
    let mut every = tokio::time::interval(history::SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let pinned = Arc::clone(&pinned);
        let read = tokio::task::spawn_blocking(move || pinned.lock().unwrap_or_else(|p| p.into_inner()).counters()).await;
        let counters = match read {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                debug!(error = %crate::error_chain(&e), "traffic sampler: reading the counters failed");
                continue;
            }
            Err(_) => continue,
        };
        let totals: Vec<(usize, u64, u64)> =
            counters.backends.iter().map(|(id, s)| (*id as usize, s.new_flows, s.to_backend_packets + s.to_client_packets)).collect();
        recent.traffic.lock().unwrap_or_else(|p| p.into_inner()).observe(since.elapsed(), &totals);
    }
}

/// `bpf_fib_lookup` (the data plane's next-hop MACs) answers "forwarding disabled" unless IPv4
/// forwarding is on for the interface, so the daemon turns it on, saying so.
fn enable_forwarding(interface: &str) -> Result<(), RuntimeError> {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/forwarding");
    let current = std::fs::read_to_string(&path).map_err(|source| RuntimeError::Forwarding { path: path.clone(), source })?;
    if current.trim() != "1" {
        std::fs::write(&path, "1").map_err(|source| RuntimeError::Forwarding { path: path.clone(), source })?;
        info!(%interface, "enabled IPv4 forwarding on the interface (the XDP next-hop lookup needs it)");
    }
    Ok(())
}
