//! `pglb run`: the runtime that drives the sans-IO failover machine and the VRRP machine.
//!
//! One task owns both machines in a [`Runtime`]: every input — a probe result, a VRRP datagram
//! or timer, a peer report, an action's result, an operator's command, a deadline — becomes one
//! call into a machine, and the actions that come back are carried out in order
//! ([`Runtime::apply`]): the data plane's maps at once, the state file on its own task
//! ([`recorder`]), PostgreSQL and host actions on theirs ([`executor`]), whose results come back
//! as inputs. The IO drivers around it only feed inputs: the probe tasks ([`crate::probe`]), the
//! admin socket ([`crate::admin`]) and HTTP ([`crate::http`]), which build their snapshots off
//! this task ([`snapshot`]).
//!
//! ```text
//!  probes ──Observation──┐                         ┌─ state file (recorder task) ─Persisted─┐
//!  vrrp socket, timer ───┤                         ├─ maps: writer, readers, lease; RSTs     │
//!  peer reports (MAC) ───┼─► Runtime ─handle──────►├─ vrrp: adverts, VIP, GARP (this loop)   │
//!  executor ─ActionDone──┤   (Machine, Vrrp)       ├─ peer reports out (this loop)           │
//!  recorder ─Persisted───┤◄────────────────────────┼─ executor: promote, re-point, rejoin    │
//!  admin socket ─request─┤                         └─ replies to operators, logs, counts     │
//!  deadline, lease tick ─┘        │                                                          │
//!                                 ├──► watch<Published> ──► snapshots for status, /metrics   │
//!                                 │                     └─► agent channel ([agent])          │
//!  traffic sampler ───────────────┴──► Recent (events, rates) ──► snapshots for /stats       │
//! ```
//!
//! # Liveness comes from the loop that decides (DESIGN.md, "Trust model")
//!
//! The data plane's lease is renewed, VRRP adverts are sent and peer reports go out from this
//! loop only: a loop that stops turning stops all three, so the data plane stops attracting new
//! traffic and the peer takes over within its master-down interval.
//!
//! # Waking humble
//!
//! At start, and after any gap between two turns of this loop longer than the lease — or than
//! the master-down interval, after which a pglb peer may have taken the VIP and acted (a freeze, a
//! suspended VM, a blocked call; measured on the monotonic clock), the instance trusts nothing
//! it remembers: the lease is expired (established write flows go on for the grace, new ones get
//! a RST), a stale VIP is removed, the VRRP machine may not be master, and the failover machine
//! starts over from its durable state ([`Event::Stalled`]). Once the machine has decided again —
//! fresh probes of every node, and a fresh authenticated report from every peer it hears or a
//! master-down interval of silence — the lease is renewed and the VIP may be held again.

pub mod agent_channel;
pub mod executor;
pub mod history;
pub mod params;
pub mod recorder;
pub mod signals;
pub mod snapshot;
pub mod tasks;

use std::{
    net::SocketAddrV4,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use thiserror::Error;
use tokio::{
    sync::{Notify, mpsc, oneshot, watch},
    time::{Instant, Interval},
};
use lb_common::tcp::Timeouts;
use tracing::{debug, error, info, warn};

use self::{
    executor::Executor,
    history::{EventId, EventKind, WriterLoss},
    params::{RunParams, VipSide},
    recorder::Recorder,
    signals::{Ask, Signals},
    snapshot::{Counts, Published, Recent, SnapshotSource, VipView},
    tasks::Tasks,
};
use crate::{
    admin::{self, AdminRequest},
    config::Config,
    dataplane::{self, Dataplane, FloodMeter, Pinned},
    failover::{Action, AdminCommand, Alert, Durable, Event, FenceReason, Level, Machine, NodeId, Observation, Phase},
    http,
    probe,
    state::StateFile,
    status::Histogram,
    vip::{self, VrrpEvent, VrrpRunner, VrrpState, report::ReportLink, trust::PeerWords, io::VrrpReceiver},
};

/// How often idle and closed flows are swept from the connection table.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A closed flow is removed this long after its last packet.
const CLOSED_FLOW_LINGER: Duration = Duration::from_secs(10);
/// Restart exit (SIGUSR2): the last VRRP adverts announce this interval, so an RFC 9568 backup
/// (pglb or keepalived) declares us down only after 3 × it + skew (~7 s) instead of ~0.36 s.
/// The next `pglb run` wakes humble (new flows refused until it has decided, ~0.5 s) and becomes
/// master again; meanwhile the pinned XDP program keeps forwarding every established flow.
const RESTART_HOLD: Duration = Duration::from_secs(2);
/// The longest `pglb debug stall-loop` (a fault injection for drills).
pub const STALL_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Dataplane(#[from] dataplane::DataplaneError),
    #[error(transparent)]
    Vip(#[from] vip::VipError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error("cannot enable IPv4 forwarding ({path})")]
    Forwarding {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind the peer report socket on {addr} ([vrrp] report_port)")]
    ReportBind {
        addr: SocketAddrV4,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind the agent channel on UDP port {port} ([agent] listen_port)")]
    AgentBind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the signal handlers")]
    Signal(#[source] std::io::Error),
}

/// Who owns the VIP on this instance.
enum VipOwner {
    /// VRRP, driven from this loop.
    Vrrp(Box<VrrpRunner>),
    /// No `[vrrp]`: this instance is the only load balancer and holds the VIP itself.
    Static(vip::address::StaticVip),
}

/// What this loop last told the VRRP machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VrrpWord {
    priority: u8,
    ready: bool,
}

/// A switchover an operator is waiting for.
struct PendingSwitchover {
    to: NodeId,
    reply: oneshot::Sender<Result<String, String>>,
    /// Its entry in the recent events, ended when it is done.
    event: EventId,
}

/// How the loop ended.
enum Exit {
    /// SIGTERM and the others: hand the VIP over.
    Stop(&'static str),
    /// SIGUSR2: keep the VIP and the data plane for the next `pglb run`.
    Restart,
}

/// The inputs' receivers.
struct Inputs {
    probes: mpsc::Receiver<Observation>,
    vrrp: Option<VrrpReceiver>,
    done: mpsc::Receiver<Event>,
    admin: mpsc::Receiver<AdminRequest>,
    report_every: Option<Interval>,
}

/// One input, taken from whichever source was ready first.
enum Input {
    Probe(Observation),
    /// A machine event from the executor or the recorder, or the machine's deadline.
    Machine(Event),
    VrrpDatagram(std::io::Result<Vec<u8>>),
    VrrpTimer,
    Report(SocketAddrV4, Vec<u8>),
    ReportTick,
    Admin(AdminRequest),
    Renew,
    Sweep,
    Signal(Ask),
    /// The probe tasks are gone: stop.
    ProbesGone,
    /// One of the daemon's tasks ended by itself: stop.
    TaskEnded(tasks::Ended),
}

/// The state the loop owns.
struct Runtime {
    p: RunParams,
    since: Instant,
    machine: Machine,
    dataplane: Dataplane,
    /// The heavy data-plane walks (stale-flow resets, sweeps), off this task.
    pinned: Arc<Mutex<Pinned>>,
    sweeping: Arc<AtomicBool>,
    recorder: Recorder,
    vip: VipOwner,
    /// What the VRRP machine was last told; what the failover machine last said of tracking.
    vrrp_word: Option<VrrpWord>,
    tracked_reachable: bool,
    /// Peer reports out and in (with `[vrrp] peers`), and what they vouch for.
    reports: Option<ReportLink>,
    words: PeerWords,
    executor: Executor,
    pending: Option<PendingSwitchover>,
    counts: Counts,
    latency: Vec<Histogram>,
    published: watch::Sender<Published>,
    lease_failing: bool,
    /// The machine has decided since the start or the last stall: the lease is renewed.
    ready: bool,
    /// The last state handed to the recorder is on disk (no failed write pending).
    recorded: bool,
    /// When the last turn of the loop began (a longer gap than the lease is a stall).
    last_turn: Instant,
    /// SYN flood detection, read at every lease renewal.
    flood: FloodMeter,
    /// One per node: wakes its probe task for a probe out of its round.
    probe_now: Vec<Arc<Notify>>,
    /// Recent events for `/stats`, and the wall clock at `since` to date them.
    recent: Arc<Recent>,
    since_wall: SystemTime,
    /// The ongoing "writer lost" event and SYN flood event.
    writer_loss: WriterLoss,
    flood_event: Option<EventId>,
}

/// How long the daemon's tasks get to stop before they are aborted.
const TASKS_STOP_LIMIT: Duration = Duration::from_secs(2);

/// `pglb run`: the config read once ([`params::from_config`]), then the start-up steps in
/// order, the main loop, and the stop.
pub async fn run(config: Config) -> Result<(), RuntimeError> {
    let p = params::from_config(&config);
    drop(config);
    let since = Instant::now();
    let mut tasks = Tasks::new();
    let (state, durable) = read_state(&p)?;
    let (dataplane, pinned, routed) = attach_dataplane(&p)?;
    let machine = restore_machine(&p, durable.as_ref(), routed, &state);
    let (probes, probe_now) = start_probes(&p, since, &mut tasks);
    let (vip, vrrp_rx, vip_view) = open_vip(&p).await?;
    let reports = open_reports(&p).await?;
    let (published, published_rx) = watch::channel(Published {
        view: machine.view(),
        counts: Counts::default(),
        latency: vec![Histogram::default(); p.nodes.len()],
        now: Duration::ZERO,
        reports: reports.as_ref().map(|(link, _)| link.counters()),
    });
    if let Some(a) = p.agent.clone() {
        let channel = agent_channel::open(a, published_rx.clone()).await?;
        tasks.spawn("agent channel", agent_channel::serve(channel));
    }
    let recent = Arc::new(Recent::new(p.nodes.len()));
    tasks.spawn("traffic sampler", sample_traffic(Arc::clone(&pinned), Arc::clone(&recent), since));
    let source = SnapshotSource::new(p.snapshot.clone(), published_rx, Arc::clone(&pinned), vip_view, Arc::clone(&recent));
    start_http(&p, source.clone(), &mut tasks).await?;
    let (admin_rx, admin_path) = start_admin(&p, &mut tasks)?;
    let (done_tx, done) = mpsc::channel::<Event>(64);
    let (recorder, recording) = Recorder::new(state, done_tx.clone());
    tasks.spawn("state recorder", recording);
    let signals = Signals::install().map_err(RuntimeError::Signal)?;
    let (reports, report_every) = reports.unzip();
    let inputs = Inputs { probes, vrrp: vrrp_rx, done, admin: admin_rx, report_every };
    let words = match &p.vip {
        VipSide::Vrrp(v) => PeerWords::new(&v.pglb_peers, &v.keepalived_peers, v.fresh_for),
        VipSide::Static { .. } => PeerWords::new(&[], &[], Duration::ZERO),
    };
    let mut rt = Runtime {
        since,
        machine,
        dataplane,
        pinned,
        sweeping: Arc::new(AtomicBool::new(false)),
        recorder,
        vip,
        vrrp_word: None,
        tracked_reachable: false,
        reports,
        words,
        executor: Executor::new(p.sql.clone(), done_tx),
        pending: None,
        counts: Counts::default(),
        latency: vec![Histogram::default(); p.nodes.len()],
        published,
        lease_failing: false,
        ready: false,
        recorded: true,
        last_turn: Instant::now(),
        flood: FloodMeter::default(),
        probe_now,
        recent,
        since_wall: SystemTime::now() - since.elapsed(),
        writer_loss: WriterLoss::default(),
        flood_event: None,
        p,
    };
    rt.start_vip().await;
    let spec = &rt.p.dataplane;
    crate::notify::ready(&format!("instance {}: data plane attached on {}, vip {}", rt.p.instance, spec.interface, spec.vip));
    let exit = rt.run_loop(inputs, signals, &mut tasks, source).await;
    crate::notify::stopping(match exit {
        Exit::Stop(_) => "stopping: releasing the VIP and the lease",
        Exit::Restart => "restarting: the VIP stays here, XDP keeps forwarding",
    });
    rt.stop(exit).await;
    tasks.stop(TASKS_STOP_LIMIT).await;
    let _ = std::fs::remove_file(&admin_path);
    Ok(())
}

/// What an earlier run must not have forgotten, before anything is attached or routed.
fn read_state(p: &RunParams) -> Result<(StateFile, Option<Durable>), RuntimeError> {
    let state = StateFile::new(&p.state_dir);
    let durable = state.load()?;
    Ok((state, durable))
}

/// Attaches (or re-attaches to) the XDP program and its pinned maps. Wake humble: whatever an
/// earlier run left (a restart in place extends its lease) routes no new flow until this run
/// has decided; established flows go on for the grace. Returns the writer the pinned map routes.
fn attach_dataplane(p: &RunParams) -> Result<(Dataplane, Arc<Mutex<Pinned>>, Option<NodeId>), RuntimeError> {
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
fn restore_machine(p: &RunParams, durable: Option<&Durable>, routed: Option<NodeId>, state: &StateFile) -> Machine {
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

/// One probe task per node; each can be woken for a probe out of its round.
fn start_probes(p: &RunParams, since: Instant, tasks: &mut Tasks) -> (mpsc::Receiver<Observation>, Vec<Arc<Notify>>) {
    let (obs_tx, probes) = mpsc::channel(256);
    let probe_now: Vec<Arc<Notify>> = p.nodes.iter().map(|_| Arc::new(Notify::new())).collect();
    for (i, node) in p.nodes.iter().enumerate() {
        let work = probe::run_node(i, node.name.clone(), node.addr, p.probe.clone(), since, obs_tx.clone(), Arc::clone(&probe_now[i]));
        tasks.spawn("probe", work);
    }
    (probes, probe_now)
}

/// The VIP's owner: the VRRP runner (driven from the main loop) or the VIP held alone.
async fn open_vip(p: &RunParams) -> Result<(VipOwner, Option<VrrpReceiver>, VipView), RuntimeError> {
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
async fn open_reports(p: &RunParams) -> Result<Option<(ReportLink, Interval)>, RuntimeError> {
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
async fn start_http(p: &RunParams, source: SnapshotSource, tasks: &mut Tasks) -> Result<(), RuntimeError> {
    let listener = http::bind(p.http.listen).await?;
    tasks.spawn("http", http::serve(listener, source, p.http.auth.clone()));
    info!(listen = %p.http.listen, "http: serving /metrics /stats /health");
    Ok(())
}

/// The admin socket `pglb status`, `switchover`, `node rejoin` and `debug` talk to.
fn start_admin(p: &RunParams, tasks: &mut Tasks) -> Result<(mpsc::Receiver<AdminRequest>, std::path::PathBuf), RuntimeError> {
    let (admin_tx, admin_rx) = mpsc::channel::<AdminRequest>(16);
    let path = admin::socket_path(&p.instance);
    tasks.spawn("admin socket", admin::serve(admin::bind(&path)?, admin_tx));
    info!(socket = %path.display(), "admin socket ready");
    Ok((admin_rx, path))
}

impl Runtime {
    /// The VRRP runner starts not ready (a backup that waits for this instance to decide), with
    /// the stale VIP an earlier run may have left removed; without VRRP the VIP is held.
    async fn start_vip(&mut self) {
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

    async fn run_loop(&mut self, mut inputs: Inputs, mut signals: Signals, tasks: &mut Tasks, source: SnapshotSource) -> Exit {
        let lease = self.p.lease.period;
        // Renewed from this loop: a loop that stops turning lets the lease run out, and stops
        // systemd's watchdog pings (which restarts the daemon).
        let mut renew = tokio::time::interval(crate::notify::loop_tick(lease / 5));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep: Interval = tokio::time::interval(SWEEP_EVERY);
        loop {
            let deadline = self.machine.next_deadline().map(|d| self.since + d);
            let vrrp_deadline = match &self.vip {
                VipOwner::Vrrp(r) => r.deadline(),
                VipOwner::Static(_) => None,
            };
            let input = tokio::select! {
                obs = inputs.probes.recv() => obs.map_or(Input::ProbesGone, Input::Probe),
                got = recv_vrrp(&inputs.vrrp) => Input::VrrpDatagram(got),
                () = sleep_until(vrrp_deadline) => Input::VrrpTimer,
                Some(ev) = inputs.done.recv() => Input::Machine(ev),
                (from, datagram) = recv_report(&self.reports) => Input::Report(from, datagram),
                () = tick(&mut inputs.report_every) => Input::ReportTick,
                Some(req) = inputs.admin.recv() => Input::Admin(req),
                () = sleep_until(deadline) => Input::Machine(Event::Tick),
                _ = renew.tick() => Input::Renew,
                _ = sweep.tick() => Input::Sweep,
                ask = signals.next() => Input::Signal(ask),
                ended = tasks.ended() => Input::TaskEnded(ended),
            };
            self.check_stall().await;
            if let Some(exit) = self.dispatch(input, &source).await {
                return exit;
            }
            self.tell_vrrp().await;
        }
    }

    /// One input into whichever machine it is for.
    async fn dispatch(&mut self, input: Input, source: &SnapshotSource) -> Option<Exit> {
        match input {
            Input::Probe(obs) => {
                if let Some(h) = self.latency.get_mut(obs.node) {
                    h.observe(obs.latency.as_secs_f64());
                }
                self.feed(Event::Probe(obs));
            }
            Input::Machine(ev) => {
                if let Event::Persisted { result: Err(e), .. } = &ev {
                    self.counts.state_write_errors += 1;
                    warn!(error = %e, "state: writing the state file failed (tried again; no failover is decided meanwhile)");
                }
                self.feed(ev);
            }
            Input::VrrpDatagram(Ok(datagram)) => {
                let now = self.since.elapsed();
                if let VipOwner::Vrrp(runner) = &mut self.vip {
                    let words = &self.words;
                    let events = runner.on_datagram(&datagram, |src, priority| words.vouch(src, priority, now)).await;
                    self.on_vrrp_events(events);
                }
            }
            Input::VrrpDatagram(Err(e)) => {
                warn!(error = %e, "vrrp: receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Input::VrrpTimer => {
                if let VipOwner::Vrrp(runner) = &mut self.vip {
                    let events = runner.on_timer().await;
                    self.on_vrrp_events(events);
                }
            }
            Input::Report(from, datagram) => {
                let now = self.since.elapsed();
                let verified = self.reports.as_mut().and_then(|link| link.accept(from, &datagram, now));
                if let Some(v) = verified {
                    let body = v.report.body.clone();
                    self.words.heard(v.peer, v.report, now);
                    self.feed(Event::PeerReport { peer: v.peer, report: body });
                }
            }
            Input::ReportTick => self.send_report(),
            Input::Admin(req) => self.on_admin(req, source),
            Input::Renew => {
                crate::notify::watchdog();
                if self.ready {
                    self.renew_lease();
                }
                self.measure_flood();
            }
            Input::Sweep => self.sweep(),
            Input::Signal(Ask::Stop(name)) => return Some(Exit::Stop(name)),
            Input::Signal(Ask::Restart) => return Some(Exit::Restart),
            Input::Signal(Ask::Reload) => {
                warn!("SIGHUP: reloading the config is not supported yet; carrying on with the config read at start (restart pglb to apply a changed file)");
            }
            Input::ProbesGone => return Some(Exit::Stop("the probe tasks ended")),
            Input::TaskEnded(ended) => {
                error!(task = ended.name, panic = ?ended.panic, "a task of the daemon ended by itself: stopping (the service manager restarts pglb)");
                return Some(Exit::Stop("a task ended"));
            }
        }
        None
    }

    /// A gap since the last turn longer than the lease or the master-down interval
    /// (`RunParams::stall_after`): everything this instance believes may
    /// be stale. Wake humble (see the module doc).
    async fn check_stall(&mut self) {
        let now = Instant::now();
        let gap = now.saturating_duration_since(self.last_turn);
        self.last_turn = now;
        if gap <= self.p.stall_after {
            return;
        }
        self.counts.loop_stalls += 1;
        warn!(gap_ms = gap.as_millis() as u64, stall_after_ms = self.p.stall_after.as_millis() as u64,
            "the main loop stood still longer than its lease or its peer's master-down interval: waking humble (lease expired, VIP released, writes refused until fresh probes and peer reports)");
        self.record(EventKind::Vrrp, format!("main loop stood still for {} ms: woke humble", gap.as_millis()));
        // The machine first: nothing it believed before may act again (not even on the VRRP
        // role change that follows), and `ready` falls with it.
        self.feed(Event::Stalled);
        if let Err(e) = self.dataplane.expire_lease(self.p.lease.grace) {
            error!(error = %crate::error_chain(&e), "lease: letting it run out failed (it runs out by itself)");
        }
        self.tell_vrrp().await;
    }

    /// Brings the VRRP machine in line with what this loop knows: the tracked priority, and
    /// whether this instance may hold the VIP (the failover machine has decided). Role changes
    /// that follow are fed back to the failover machine.
    async fn tell_vrrp(&mut self) {
        for _ in 0..4 {
            let VipOwner::Vrrp(runner) = &mut self.vip else { return };
            let VipSide::Vrrp(v) = &self.p.vip else { return };
            // An instance that cannot write its state file cannot act (no promotion without its
            // record): the lowest priority, so a peer that can takes the VIP and the decisions.
            let priority = if !self.ready {
                v.priority
            } else if !self.recorded {
                1
            } else if self.tracked_reachable {
                v.priority
            } else {
                v.priority.saturating_sub(v.track_weight).max(1)
            };
            let want = VrrpWord { priority, ready: self.ready };
            let Some(had) = self.vrrp_word.replace(want) else { return };
            if had == want {
                return;
            }
            let mut events = Vec::new();
            if had.priority != want.priority {
                info!(priority, writer_reachable = self.tracked_reachable, "vrrp tracking: priority set");
                events.extend(runner.set_priority(priority).await);
            }
            if had.ready != want.ready {
                events.extend(runner.set_ready(want.ready).await);
            }
            self.on_vrrp_events(events);
        }
    }

    /// What the VRRP machine reports: role changes and adverts heard, for the failover machine.
    fn on_vrrp_events(&mut self, events: Vec<VrrpEvent>) {
        for ev in events {
            match ev {
                VrrpEvent::Role { master } => {
                    let text = if master { "this instance became VRRP master: it holds the VIP" } else { "this instance left VRRP master: it released the VIP" };
                    self.record(EventKind::Vrrp, text);
                    self.feed(Event::VrrpRole { master });
                }
                VrrpEvent::PeerHeard { peer } => self.feed(Event::PeerHeard { peer }),
            }
        }
    }

    /// This instance's report to its peers: what its machine says, and its VRRP role, the
    /// priority its adverts carry (which the report vouches for) and whether it is healthy (it
    /// reaches the writer and can write its state file: a master that is not may be preempted).
    fn send_report(&mut self) {
        let (role, priority) = match &self.vip {
            VipOwner::Vrrp(r) => (r.state(), r.priority()),
            VipOwner::Static(_) => (VrrpState::Master, 0),
        };
        let body = self.machine.report();
        let now = self.since.elapsed();
        let healthy = self.tracked_reachable && self.recorded;
        if let Some(link) = &mut self.reports {
            link.send(role, priority, healthy, &body, now);
        }
    }

    /// One event into the machine, its actions carried out, the result published.
    fn feed(&mut self, event: Event) {
        let now = self.since.elapsed();
        let actions = self.machine.handle(event, now);
        self.apply(actions);
        let view = self.machine.view();
        if view.recorded != self.recorded {
            self.recorded = view.recorded;
            let what = if self.recorded { "the state file is written again: full VRRP priority" } else { "the state file cannot be written: lowest VRRP priority, so a peer that can record its decisions takes the VIP" };
            warn!("{what}");
        }
        if view.ready != self.ready {
            self.ready = view.ready;
            if self.ready {
                info!("decided from fresh probes and peer reports: lease renewed, the VIP may be held");
                self.renew_lease();
            }
        }
        self.note_phase(&view.phase);
        self.published.send_replace(Published {
            view,
            counts: self.counts,
            latency: self.latency.clone(),
            now: self.since.elapsed(),
            reports: self.reports.as_ref().map(ReportLink::counters),
        });
    }

    /// Carries out the machine's actions in order.
    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Persist(durable) => self.recorder.record(durable),
                Action::SetWriter { node } => self.set_writer(node),
                Action::SetReaders { nodes } => {
                    let readers: Vec<(u32, u32)> = nodes.iter().map(|n| (*n as u32, self.p.nodes[*n].read_weight.max(1))).collect();
                    let names: Vec<&str> = nodes.iter().map(|n| self.executor.ctx().name(*n)).collect();
                    match self.dataplane.set_readers(&readers) {
                        Ok(()) => info!(readers = ?names, "route: read port now goes to {}", if names.is_empty() { "nobody".to_owned() } else { names.join(", ") }),
                        Err(e) => error!(error = %crate::error_chain(&e), "route: setting the readers failed"),
                    }
                }
                Action::Track { writer_reachable } => self.tracked_reachable = writer_reachable,
                Action::Probe { node } => {
                    if let Some(n) = self.probe_now.get(node) {
                        n.notify_one();
                    }
                }
                Action::Fence { node, reason } => {
                    let name = self.executor.ctx().name(node).to_owned();
                    warn!(node = name, ?reason, "fence: {name} is never routed to until it rejoins");
                    let ctx = self.executor.ctx();
                    let why = match &reason {
                        FenceReason::SplitBrain { writer, timeline } => format!("a second primary beside {} on timeline {timeline}", ctx.name(*writer)),
                        FenceReason::OlderTimeline { timeline, writer_timeline } => format!("a primary on timeline {timeline}, older than the writer's {writer_timeline}"),
                        FenceReason::Replaced { by } => format!("the former writer, replaced by {}", ctx.name(*by)),
                    };
                    self.record(EventKind::Fence, format!("{name} fenced ({why}): never routed until it rejoins"));
                }
                Action::Alert(alert) => self.on_alert(alert),
                Action::Log { level, message } => match level {
                    Level::Info => info!("{message}"),
                    Level::Warn => warn!("{message}"),
                    Level::Error => error!("{message}"),
                },
                a @ (Action::Promote { .. } | Action::Repoint { .. } | Action::Demote { .. } | Action::Rejoin { .. } | Action::SetSyncStandbys { .. }) => {
                    self.executor.spawn(a);
                }
            }
        }
    }

    /// The write port's backend, in one map write; then, off this task, a RST to every client
    /// still on the old writer (those waiting for a hung server's answer included).
    fn set_writer(&mut self, node: Option<NodeId>) {
        let name = node.map(|n| self.executor.ctx().name(n).to_owned());
        let id = node.map(|n| n as u32);
        if let Err(e) = self.dataplane.set_writer(id) {
            error!(error = %crate::error_chain(&e), "route: setting the writer failed");
            return;
        }
        info!(writer = ?name, "route: write port now goes to {}", name.as_deref().unwrap_or("nobody (writes refused)"));
        let pinned = Arc::clone(&self.pinned);
        tokio::task::spawn_blocking(move || {
            let result = pinned.lock().unwrap_or_else(|p| p.into_inner()).reset_stale_write_flows(id);
            match result {
                Ok(0) => {}
                Ok(n) => info!(clients = n, "route: reset the write connections still pinned to the old writer"),
                Err(e) => warn!(error = %crate::error_chain(&e), "route: resetting stale write connections failed (they are reset on their next packet)"),
            }
        });
    }

    /// Every alert in one place: counts, the waiting operator's answer, the recent events, the
    /// log.
    fn on_alert(&mut self, alert: Alert) {
        let name = |n: NodeId| self.executor.ctx().name(n).to_owned();
        let from_name = |n: Option<NodeId>| n.map_or_else(|| "none".to_owned(), name);
        match &alert {
            Alert::FailedOver { from, to } => {
                self.counts.failovers += 1;
                let text = format!("failover: {} -> {}, the new writer is routed", from_name(*from), name(*to));
                self.end_writer_lost(text);
            }
            Alert::WriterChanged { from, to, timeline } => {
                let text = format!("writer changed: {} -> {} (timeline {timeline}), routed", from_name(*from), name(*to));
                self.end_writer_lost(text);
            }
            Alert::RejoinFailed { node, attempt, .. } => {
                self.counts.rejoins_failed += 1;
                self.record(EventKind::Fence, format!("rejoin of {} failed (attempt {attempt}): it stays fenced", name(*node)));
            }
            Alert::RejoinDone { node, .. } => {
                self.counts.rejoins_ok += 1;
                self.record(EventKind::Fence, format!("{} rejoined (rejoin_command succeeded)", name(*node)));
            }
            Alert::SwitchoverDone { from, to, paused } => {
                self.counts.switchovers += 1;
                let text = format!("switchover done: {} -> {}; writes paused for {} ms", name(*from), name(*to), paused.as_millis());
                if let Some(p) = self.pending.take() {
                    self.end_event(p.event, text.clone());
                    let _ = p.reply.send(Ok(text));
                }
            }
            Alert::SwitchoverAborted { reason, .. } | Alert::SwitchoverRejected { reason, .. } => {
                if let Some(p) = self.pending.take() {
                    let text = format!("switchover to {} failed: {reason}", name(p.to));
                    self.end_event(p.event, text.clone());
                    let _ = p.reply.send(Err(text));
                }
            }
            _ => {}
        }
        warn!(alert = ?alert, "alert");
    }

    fn on_admin(&mut self, req: AdminRequest, source: &SnapshotSource) {
        let names = || self.p.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
        match req {
            AdminRequest::Status { json, reply } => {
                let source = source.clone();
                tokio::spawn(async move {
                    let snap = source.snapshot().await;
                    let text = if json { crate::status::render_json(&snap) } else { crate::status::render_table(&snap) };
                    let _ = reply.send(text);
                });
            }
            AdminRequest::Switchover { to, reply } => match self.p.nodes.iter().position(|n| n.name == to) {
                None => {
                    let _ = reply.send(Err(format!("unknown node `{to}`: the nodes are {}", names())));
                }
                Some(_) if self.pending.is_some() => {
                    let _ = reply.send(Err("a switchover is already running".into()));
                }
                Some(id) => {
                    info!(to = %to, "admin: switchover requested");
                    let event = self.begin(EventKind::Switchover, format!("switchover to {to} requested"));
                    self.pending = Some(PendingSwitchover { to: id, reply, event });
                    self.feed(Event::Admin(AdminCommand::Switchover { to: id }));
                }
            },
            AdminRequest::StallLoop { duration, reply } => {
                if duration > STALL_MAX {
                    let _ = reply.send(Err(format!("at most {} s", STALL_MAX.as_secs())));
                    return;
                }
                warn!(ms = duration.as_millis() as u64, "admin: stalling the main loop on purpose (pglb debug stall-loop): no lease, no adverts, no reports meanwhile");
                let _ = reply.send(Ok(format!("the main loop stands still for {} ms", duration.as_millis())));
                // A fault injection: the loop blocks as a hung call would.
                std::thread::sleep(duration);
            }
            AdminRequest::Rejoined { node, reply } => match self.p.nodes.iter().position(|n| n.name == node) {
                None => {
                    let _ = reply.send(Err(format!("unknown node `{node}`: the nodes are {}", names())));
                }
                Some(id) => {
                    let _ = reply.send(Ok(format!("{node}: fence lifted; it is routed again once probes see it streaming as a standby")));
                    self.feed(Event::Admin(AdminCommand::Rejoined { node: id }));
                }
            },
        }
    }

    fn renew_lease(&mut self) {
        match self.dataplane.renew_lease(self.p.lease.period, self.p.lease.grace) {
            Ok(()) if self.lease_failing => {
                self.lease_failing = false;
                info!("lease: renewing works again");
            }
            Ok(()) => {}
            Err(e) if !self.lease_failing => {
                self.lease_failing = true;
                error!(error = %crate::error_chain(&e), "lease: renewing failed: the data plane stops answering ARP for the VIP and opening flows when it runs out");
            }
            Err(_) => {}
        }
    }

    /// Reads the half-open and handshake counters and tells the machine when a SYN flood
    /// starts or ends (see [`FloodMeter`]).
    fn measure_flood(&mut self) {
        let (opened, completed) = match self.dataplane.handshake_totals() {
            Ok(t) => t,
            Err(e) => {
                debug!(error = %crate::error_chain(&e), "flood meter: reading the counters failed");
                return;
            }
        };
        if let Some(active) = self.flood.observe(self.since.elapsed(), opened, completed) {
            if active {
                warn!(half_open_per_s = self.flood.rate as u64, "SYN flood: half-open connections pile up; this instance keeps the VIP and the writer routed while it lasts (its own probes may time out in the congestion)");
                let text = format!("SYN flood defence: {} half-open connections/s; VIP and writer kept", self.flood.rate as u64);
                self.flood_event = Some(self.begin(EventKind::Flood, text));
            } else {
                info!("SYN flood over: probe results count again for VRRP tracking");
                if let Some(id) = self.flood_event.take() {
                    self.end_event_keeping_text(id);
                }
            }
            self.feed(Event::Flood { active });
        }
    }

    /// The wall clock at a time on the runtime's clock (since start).
    fn wall(&self, at: Duration) -> SystemTime {
        self.since_wall + at
    }

    /// An event without an end, now.
    fn record(&self, kind: EventKind, text: impl Into<String>) {
        let now = self.wall(self.since.elapsed());
        self.recent.events.lock().unwrap_or_else(|p| p.into_inner()).record(now, kind, text, None);
    }

    /// An event that goes on from now.
    fn begin(&self, kind: EventKind, text: impl Into<String>) -> EventId {
        let now = self.wall(self.since.elapsed());
        self.recent.events.lock().unwrap_or_else(|p| p.into_inner()).begin(now, kind, text)
    }

    fn end_event(&self, id: EventId, text: String) {
        let now = self.wall(self.since.elapsed());
        self.recent.events.lock().unwrap_or_else(|p| p.into_inner()).end(id, now, Some(text));
    }

    fn end_event_keeping_text(&self, id: EventId) {
        let now = self.wall(self.since.elapsed());
        self.recent.events.lock().unwrap_or_else(|p| p.into_inner()).end(id, now, None);
    }

    /// A new writer is routed: ends the failover's event (see [`WriterLoss`]).
    fn end_writer_lost(&mut self, text: String) {
        let now = self.wall(self.since.elapsed());
        self.writer_loss.routed(&mut self.recent.events.lock().unwrap_or_else(|p| p.into_inner()), now, text);
    }

    /// Follows the machine's phase for the failover's event (see [`WriterLoss`]).
    fn note_phase(&mut self, phase: &Phase) {
        let lost = match phase {
            Phase::WriterLost { old, since } => {
                let what = old.map_or_else(|| "no primary routed".to_owned(), |o| format!("writer {} lost", self.executor.ctx().name(o)));
                Some((self.wall(*since), what))
            }
            _ => None,
        };
        let now = self.wall(self.since.elapsed());
        self.writer_loss.phase(&mut self.recent.events.lock().unwrap_or_else(|p| p.into_inner()), lost, *phase == Phase::Steady, now);
    }

    /// Removes idle and closed flows, off this task (a walk of the whole table); one at a time.
    fn sweep(&self) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let timeouts = Timeouts {
            idle_ns: self.p.flows.idle.as_nanos() as u64,
            closed_ns: CLOSED_FLOW_LINGER.as_nanos() as u64,
            half_open_ns: self.p.flows.half_open.as_nanos() as u64,
        };
        let (pinned, busy) = (Arc::clone(&self.pinned), Arc::clone(&self.sweeping));
        tokio::task::spawn_blocking(move || {
            let result = pinned.lock().unwrap_or_else(|p| p.into_inner()).sweep(&timeouts);
            match result {
                Ok(s) if s.removed_idle + s.removed_closed + s.removed_orphans > 0 => {
                    info!(idle = s.removed_idle, closed = s.removed_closed, orphans = s.removed_orphans, half_open = s.removed_half_open, "flows swept");
                }
                Ok(s) if s.removed_half_open > 0 => {
                    debug!(half_open = s.removed_half_open, "half-open flows swept");
                }
                Ok(_) => {}
                Err(e) => warn!(error = %crate::error_chain(&e), "sweeping flows failed"),
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// Leaves: a restart keeps the VIP and extends the lease over the restart (the next run
    /// expires it at once and renews it once it has decided); a stop hands the VIP over and
    /// lets the lease run out.
    async fn stop(mut self, exit: Exit) {
        let (lease, grace) = (self.p.lease.period, self.p.lease.grace);
        match exit {
            Exit::Restart => {
                if let Err(e) = self.dataplane.renew_lease(RESTART_HOLD * 3 + lease + Duration::from_secs(2), grace) {
                    error!(error = %crate::error_chain(&e), "restart: extending the lease over the restart failed: the data plane may refuse new flows until the next start");
                }
                if let VipOwner::Vrrp(runner) = self.vip {
                    runner.restart_hold(RESTART_HOLD);
                }
                info!(hold_s = RESTART_HOLD.as_secs() * 3, "exiting for a restart (SIGUSR2): the VIP stays here and XDP keeps forwarding; backups hold off for the window");
            }
            Exit::Stop(why) => {
                info!(why, "shutting down: releasing the VIP and the lease; the XDP program and maps stay pinned for the next start");
                if let Err(e) = self.dataplane.expire_lease(grace) {
                    error!(error = %crate::error_chain(&e), "letting the lease run out failed");
                }
                // A last report saying priority 0, so the peers believe the priority-0 advert
                // that follows and take over after their skew time.
                let body = self.machine.report();
                let now = self.since.elapsed();
                if let Some(link) = &mut self.reports {
                    link.send(VrrpState::Initialize, 0, false, &body, now);
                }
                match self.vip {
                    VipOwner::Vrrp(runner) => runner.shutdown().await,
                    VipOwner::Static(held) => {
                        if let Err(e) = held.release().await {
                            error!(error = %crate::error_chain(&e), "releasing the VIP failed");
                        }
                    }
                }
            }
        }
    }
}

/// Samples the per-backend counters every [`history::SAMPLE_EVERY`] for the traffic charts of
/// `/stats` (the counter reads on a blocking thread).
async fn sample_traffic(pinned: Arc<Mutex<Pinned>>, recent: Arc<Recent>, since: Instant) {
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

async fn recv_vrrp(rx: &Option<VrrpReceiver>) -> std::io::Result<Vec<u8>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_report(reports: &Option<ReportLink>) -> (SocketAddrV4, Vec<u8>) {
    match reports {
        Some(link) => link.recv().await,
        None => std::future::pending().await,
    }
}

async fn tick(every: &mut Option<Interval>) {
    match every {
        Some(every) => {
            every.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
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
