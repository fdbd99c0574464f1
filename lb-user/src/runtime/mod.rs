//! `pglb run`: the runtime that drives the sans-IO failover machine (and, through its runner,
//! the VRRP machine).
//!
//! One task owns the [`Machine`] in a [`Runtime`]: every input — a probe result, a VRRP event, an
//! action's result, an operator's command, a deadline — becomes one `Machine::handle` call, and
//! the actions that come back are carried out in order ([`Runtime::apply`]): the state file and
//! the data plane's maps at once, VRRP tracking as a command to the runner, PostgreSQL and host
//! actions on their own tasks ([`executor`]), whose results come back as inputs. The IO drivers
//! around it only feed inputs: the probe tasks ([`crate::probe`]), the VRRP runner
//! ([`crate::vip`]), the admin socket ([`crate::admin`]) and HTTP ([`crate::http`]), which build
//! their snapshots off this task ([`snapshot`]). The same loop renews the data plane's lease: a
//! loop that stops turning lets it run out.
//!
//! ```text
//!  probes ──Observation──┐                    ┌─ state file (Persist, first)
//!  vrrp runner ─VrrpEvent┤                    ├─ maps: writer, readers, lease; stale-flow RSTs
//!  executor ─ActionDone──┼─► Runtime ─handle─►├─ vrrp runner: priority (Track)
//!  peer reports ─report──┤                    ├─ peer reports out (timeline, writer reached)
//!  admin socket ─request─┤   (Machine)        ├─ executor: promote, re-point, demote, rejoin
//!  deadline, lease tick ─┘        │           └─ replies to operators, logs, counts
//!                                 ├──► watch<Published> ──► snapshots for status, /metrics
//!                                 │                     └─► agent channel ([agent]: routing to
//!                                 │                         `pglb agent` hosts, pushed on change)
//!  traffic sampler ───────────────┴──► Recent (events, rates) ──► snapshots for /stats
//! ```
//!
//! The runtime also writes down what an operator wants to see on `/stats` as it happens: the
//! failovers, switchovers, fences, VRRP role changes and SYN floods ([`history::EventLog`]);
//! a task of its own samples the per-backend counters for the traffic charts.

pub mod agent_channel;
pub mod executor;
pub mod history;
pub mod params;
pub mod snapshot;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use thiserror::Error;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::{Notify, mpsc, oneshot, watch},
    time::{Instant, Interval},
};
use lb_common::tcp::Timeouts;
use tracing::{debug, error, info, warn};

use self::{
    executor::{Executor, SqlContext},
    history::{EventId, EventKind, WriterLoss},
    snapshot::{Counts, Published, Recent, SnapshotSource, VipView},
};
use crate::{
    admin::{self, AdminRequest},
    config::Config,
    dataplane::{self, Dataplane, FloodMeter, Pinned},
    failover::{Action, AdminCommand, Alert, Event, FenceReason, Level, Machine, NodeId, Observation, Phase},
    http::{self, StatsAuth},
    probe::{self, ProbeSettings},
    state::StateFile,
    status::Histogram,
    vip::{self, VrrpEvent, VrrpHandle, VrrpRunner, report::ReportLink},
};

/// How often idle and closed flows are swept from the connection table.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A closed flow is removed this long after its last packet.
const CLOSED_FLOW_LINGER: Duration = Duration::from_secs(10);
/// Restart exit (SIGUSR2): the last VRRP adverts announce this interval, so an RFC 9568 backup
/// (pglb or keepalived) declares us down only after 3 × it + skew (~7 s) instead of ~0.36 s.
/// The next `pglb run` becomes master again within ~0.4 s of starting and keeps the VIP here;
/// meanwhile the pinned XDP program keeps forwarding every flow.
const RESTART_HOLD: Duration = Duration::from_secs(2);

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
    #[error("cannot bind the peer report socket on UDP port {port} ([vrrp] report_port)")]
    ReportBind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind the agent channel on UDP port {port} ([agent] listen_port)")]
    AgentBind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the signal handler")]
    Signal(#[source] std::io::Error),
}

/// Who owns the VIP on this instance.
enum VipOwner {
    Vrrp(VrrpHandle),
    /// No `[vrrp]`: this instance is the only load balancer and holds the VIP itself.
    Static(vip::io::StaticVip),
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
    /// SIGTERM / SIGINT: hand the VIP over.
    Stop,
    /// SIGUSR2: keep the VIP and the data plane for the next `pglb run`.
    Restart,
}

/// The inputs' receivers.
struct Inputs {
    probes: mpsc::Receiver<Observation>,
    vrrp: Option<mpsc::Receiver<VrrpEvent>>,
    done: mpsc::Receiver<Event>,
    admin: mpsc::Receiver<AdminRequest>,
    /// Peer reports in and out (with `[vrrp] peers`), sent every advert interval.
    reports: Option<ReportLink>,
    report_every: Option<Interval>,
}

/// The signals the loop ends on.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    restart: Signal,
}

/// The state the loop owns.
struct Runtime {
    config: Config,
    since: Instant,
    machine: Machine,
    dataplane: Dataplane,
    /// The heavy data-plane walks (stale-flow resets, sweeps), off this task.
    pinned: Arc<Mutex<Pinned>>,
    sweeping: Arc<AtomicBool>,
    state: StateFile,
    vip: VipOwner,
    executor: Executor,
    weights: Vec<u32>,
    pending: Option<PendingSwitchover>,
    counts: Counts,
    latency: Vec<Histogram>,
    published: watch::Sender<Published>,
    lease_failing: bool,
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

pub async fn run(config: Config) -> Result<(), RuntimeError> {
    let since = Instant::now();
    let since_wall = SystemTime::now();
    let name = config.instance.name.clone();
    // What an earlier run must not have forgotten, before anything is attached or routed.
    let state = StateFile::new(config.state_dir());
    let durable = state.load()?;
    let spec = params::dataplane(&config);
    enable_forwarding(&spec.interface)?;
    let mut dataplane = Dataplane::attach(&spec)?;
    dataplane.set_backends(&params::backends(&config))?;
    dataplane.renew_lease(config.dataplane.lease, config.dataplane.lease_grace)?;
    let pinned = Arc::new(Mutex::new(Pinned::open(&spec.pin_dir)?));
    info!(instance = %name, interface = %spec.interface, pin_dir = %spec.pin_dir.display(), vip = %spec.vip, lease_ms = config.dataplane.lease.as_millis() as u64, "data plane attached; lease renewed");

    let machine = match &durable {
        Some(d) => {
            info!(path = %state.path().display(), "state file read: fences, the last writer and its timeline are restored");
            Machine::restore(params::machine(&config), d)
        }
        None => {
            info!(path = %state.path().display(), "no state file yet: a first start");
            Machine::new(params::machine(&config))
        }
    };

    let settings = ProbeSettings::from_config(&config);
    let (obs_tx, probes) = mpsc::channel(256);
    let probe_now: Vec<Arc<Notify>> = config.nodes.iter().map(|_| Arc::new(Notify::new())).collect();
    for (i, node) in config.nodes.iter().enumerate() {
        tokio::spawn(probe::run_node(i, node.clone(), settings.clone(), since, obs_tx.clone(), Arc::clone(&probe_now[i])));
    }
    drop(obs_tx);

    let (vip, vrrp_events, vip_view) = match params::vrrp(&config) {
        Some(p) => {
            let (vrid, priority) = (p.vrid, p.priority);
            let mut runner = VrrpRunner::open(p).await?;
            let events = runner.subscribe();
            let handle = runner.spawn();
            info!(vrid, priority, "vrrp: started");
            let view = VipView::Vrrp { status: handle.status(), counters: handle.counters() };
            (VipOwner::Vrrp(handle), Some(events), view)
        }
        None => {
            let held = vip::io::StaticVip::hold(&config.dataplane.interface, config.dataplane.vip.addr).await?;
            info!(vip = %config.dataplane.vip.addr, "vip: no [vrrp] configured: this instance holds the VIP alone");
            (VipOwner::Static(held), None, VipView::Static)
        }
    };

    let (reports, report_every) = match &config.vrrp {
        Some(v) if !v.peers.is_empty() => {
            let link = ReportLink::bind(v.report_port, v.peers.clone()).await.map_err(|source| RuntimeError::ReportBind { port: v.report_port, source })?;
            let mut every = tokio::time::interval(v.advert_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            info!(port = v.report_port, peers = ?v.peers, "peer reports: timeline and writer reached, every advert interval");
            (Some(link), Some(every))
        }
        _ => (None, None),
    };

    let (published, published_rx) = watch::channel(Published {
        view: machine.view(),
        counts: Counts::default(),
        latency: vec![Histogram::default(); config.nodes.len()],
        now: Duration::ZERO,
    });
    let _agent_channel = agent_channel::start(config.agent.as_ref(), &name, &config.nodes, published_rx.clone()).await?;
    let recent = Arc::new(Recent::new(config.nodes.len()));
    tokio::spawn(sample_traffic(Arc::clone(&pinned), Arc::clone(&recent), since));
    let source = SnapshotSource::new(&config, published_rx, Arc::clone(&pinned), vip_view, Arc::clone(&recent));
    let listener = http::bind(config.http.listen).await?;
    let auth = match (&config.http.stats_user, &config.http.stats_password) {
        (Some(u), Some(p)) => Some(StatsAuth::new(u, p.expose())),
        _ => None,
    };
    tokio::spawn(http::serve(listener, source.clone(), auth));
    info!(listen = %config.http.listen, "http: serving /metrics /stats /health");

    let (admin_tx, admin_rx) = mpsc::channel::<AdminRequest>(16);
    let admin_path = admin::socket_path(&name);
    tokio::spawn(admin::serve(admin::bind(&admin_path)?, admin_tx));
    info!(socket = %admin_path.display(), "admin socket ready");

    let (done_tx, done) = mpsc::channel::<Event>(64);
    let signals = Signals {
        terminate: signal(SignalKind::terminate()).map_err(RuntimeError::Signal)?,
        interrupt: signal(SignalKind::interrupt()).map_err(RuntimeError::Signal)?,
        restart: signal(SignalKind::user_defined2()).map_err(RuntimeError::Signal)?,
    };
    let inputs = Inputs { probes, vrrp: vrrp_events, done, admin: admin_rx, reports, report_every };
    let mut rt = Runtime {
        since,
        machine,
        dataplane,
        pinned,
        sweeping: Arc::new(AtomicBool::new(false)),
        state,
        vip,
        executor: Executor::new(SqlContext::from_config(&config), done_tx),
        weights: config.nodes.iter().map(|n| n.read_weight).collect(),
        pending: None,
        counts: Counts::default(),
        latency: vec![Histogram::default(); config.nodes.len()],
        published,
        lease_failing: false,
        flood: FloodMeter::default(),
        probe_now,
        recent,
        since_wall,
        writer_loss: WriterLoss::default(),
        flood_event: None,
        config,
    };
    if let VipOwner::Static(_) = rt.vip {
        rt.record(EventKind::Vrrp, "no [vrrp]: this instance holds the VIP alone");
        rt.feed(Event::VrrpRole { master: true });
    }
    crate::notify::ready(&format!("instance {name}: data plane attached on {}, vip {}", spec.interface, spec.vip));
    let exit = rt.run_loop(inputs, signals, source).await;
    crate::notify::stopping(match exit {
        Exit::Stop => "stopping: releasing the VIP and the lease",
        Exit::Restart => "restarting: the VIP stays here, XDP keeps forwarding",
    });
    rt.stop(exit).await;
    let _ = std::fs::remove_file(&admin_path);
    Ok(())
}

impl Runtime {
    async fn run_loop(&mut self, mut inputs: Inputs, mut signals: Signals, source: SnapshotSource) -> Exit {
        let lease = self.config.dataplane.lease;
        // Renewed from this loop: a loop that stops turning lets the lease run out, and stops
        // systemd's watchdog pings (which restarts the daemon).
        let mut renew = tokio::time::interval(crate::notify::loop_tick(lease / 5));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep: Interval = tokio::time::interval(SWEEP_EVERY);
        loop {
            let deadline = self.machine.next_deadline().map(|d| self.since + d);
            tokio::select! {
                obs = inputs.probes.recv() => match obs {
                    Some(obs) => {
                        if let Some(h) = self.latency.get_mut(obs.node) {
                            h.observe(obs.latency.as_secs_f64());
                        }
                        self.feed(Event::Probe(obs));
                    }
                    None => return Exit::Stop,
                },
                Some(ev) = recv_vrrp(&mut inputs.vrrp) => match ev {
                    VrrpEvent::Role { master } => {
                        let text = if master { "this instance became VRRP master: it holds the VIP" } else { "this instance left VRRP master: it released the VIP" };
                        self.record(EventKind::Vrrp, text);
                        self.feed(Event::VrrpRole { master });
                    }
                    VrrpEvent::PeerHeard { peer } => self.feed(Event::PeerHeard { peer }),
                },
                Some(ev) = inputs.done.recv() => self.feed(ev),
                (peer, report) = recv_report(&inputs.reports) => self.feed(Event::PeerReport { peer, report }),
                () = tick(&mut inputs.report_every) => {
                    if let (Some(link), Some(report)) = (&inputs.reports, self.machine.report()) {
                        link.send(&report);
                    }
                }
                Some(req) = inputs.admin.recv() => self.on_admin(req, &source),
                () = sleep_until(deadline) => self.feed(Event::Tick),
                _ = renew.tick() => {
                    crate::notify::watchdog();
                    self.renew_lease();
                    self.measure_flood();
                }
                _ = sweep.tick() => self.sweep(),
                _ = signals.terminate.recv() => return Exit::Stop,
                _ = signals.interrupt.recv() => return Exit::Stop,
                _ = signals.restart.recv() => return Exit::Restart,
            }
        }
    }

    /// One event into the machine, its actions carried out, the result published.
    fn feed(&mut self, event: Event) {
        let now = self.since.elapsed();
        let actions = self.machine.handle(event, now);
        self.apply(actions);
        let view = self.machine.view();
        self.note_phase(&view.phase);
        self.published.send_replace(Published {
            view,
            counts: self.counts,
            latency: self.latency.clone(),
            now: self.since.elapsed(),
        });
    }

    /// Carries out the machine's actions in order.
    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Persist(durable) => {
                    if let Err(e) = self.state.store(&durable) {
                        self.counts.state_write_errors += 1;
                        error!(error = %crate::error_chain(&e), "state: writing the state file failed: fences and the last timeline would not survive a restart");
                    }
                }
                Action::SetWriter { node } => self.set_writer(node),
                Action::SetReaders { nodes } => {
                    let readers: Vec<(u32, u32)> = nodes.iter().map(|n| (*n as u32, self.weights[*n].max(1))).collect();
                    let names: Vec<&str> = nodes.iter().map(|n| self.executor.ctx().name(*n)).collect();
                    match self.dataplane.set_readers(&readers) {
                        Ok(()) => info!(readers = ?names, "route: read port now goes to {}", if names.is_empty() { "nobody".to_owned() } else { names.join(", ") }),
                        Err(e) => error!(error = %crate::error_chain(&e), "route: setting the readers failed"),
                    }
                }
                Action::Track { writer_reachable } => self.track(writer_reachable),
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

    /// VRRP priority tracking: the configured priority while this instance reaches the writer,
    /// lowered by `track_weight` while it does not.
    fn track(&self, writer_reachable: bool) {
        let (VipOwner::Vrrp(handle), Some(v)) = (&self.vip, &self.config.vrrp) else { return };
        let priority = if writer_reachable { v.priority } else { v.priority.saturating_sub(v.track_weight).max(1) };
        info!(priority, writer_reachable, "vrrp tracking: priority set");
        if let Err(e) = handle.set_priority(priority) {
            error!(error = %crate::error_chain(&e), "vrrp tracking: setting the priority failed");
        }
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
        let names = || self.config.node_names().join(", ");
        match req {
            AdminRequest::Status { json, reply } => {
                let source = source.clone();
                tokio::spawn(async move {
                    let snap = source.snapshot().await;
                    let text = if json { crate::status::render_json(&snap) } else { crate::status::render_table(&snap) };
                    let _ = reply.send(text);
                });
            }
            AdminRequest::Switchover { to, reply } => match self.config.nodes.iter().position(|n| n.name == to) {
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
            AdminRequest::Rejoined { node, reply } => match self.config.nodes.iter().position(|n| n.name == node) {
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
        match self.dataplane.renew_lease(self.config.dataplane.lease, self.config.dataplane.lease_grace) {
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
        let dp = &self.config.dataplane;
        let timeouts = Timeouts {
            idle_ns: dp.flow_idle_timeout.as_nanos() as u64,
            closed_ns: CLOSED_FLOW_LINGER.as_nanos() as u64,
            half_open_ns: dp.half_open_timeout.as_nanos() as u64,
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

    /// Leaves: a restart keeps the VIP and extends the lease over the restart; a stop hands the
    /// VIP over and lets the lease run out.
    async fn stop(self, exit: Exit) {
        let (lease, grace) = (self.config.dataplane.lease, self.config.dataplane.lease_grace);
        let mut dataplane = self.dataplane;
        match exit {
            Exit::Restart => {
                if let Err(e) = dataplane.renew_lease(RESTART_HOLD * 3 + lease + Duration::from_secs(2), grace) {
                    error!(error = %crate::error_chain(&e), "restart: extending the lease over the restart failed: the data plane may refuse new flows until the next start");
                }
                if let VipOwner::Vrrp(handle) = self.vip
                    && let Err(e) = handle.restart_hold(RESTART_HOLD).await
                {
                    error!(error = %crate::error_chain(&e), "restart: stopping vrrp failed");
                }
                info!(hold_s = RESTART_HOLD.as_secs() * 3, "exiting for a restart (SIGUSR2): the VIP stays here and XDP keeps forwarding; backups hold off for the window");
            }
            Exit::Stop => {
                info!("shutting down: releasing the VIP and the lease; the XDP program and maps stay pinned for the next start");
                if let Err(e) = dataplane.expire_lease(grace) {
                    error!(error = %crate::error_chain(&e), "letting the lease run out failed");
                }
                let released = match self.vip {
                    VipOwner::Vrrp(handle) => handle.shutdown().await,
                    VipOwner::Static(held) => held.release().await,
                };
                if let Err(e) = released {
                    error!(error = %crate::error_chain(&e), "releasing the VIP failed");
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

async fn recv_vrrp(rx: &mut Option<mpsc::Receiver<VrrpEvent>>) -> Option<VrrpEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_report(reports: &Option<ReportLink>) -> (std::net::Ipv4Addr, crate::failover::PeerReport) {
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
