//! `pglb run`: the runtime that drives the sans-IO failover machine and the VRRP machine.
//!
//! One task owns both machines in a `Runtime`: every input — a probe result, a VRRP datagram
//! or timer, a peer report, an action's result, an operator's command, a deadline — becomes one
//! call into a machine, and the actions that come back are carried out in order
//! (`Runtime::apply`): the data plane's maps at once, the state file on its own task
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
//!  Runtime::emit ──try_send──► events task ([hooks]) ──► events.jsonl, the [hooks] command    │
//! ```
//!
//! # Liveness comes from the loop that decides (docs/ARCHITECTURE.md, "Trust model")
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
//!
//! # Where what is
//!
//! This file holds the runtime's state and [`run`]; the loop is cut by concern: `start` (the
//! start-up steps), `main_loop` (the loop, its inputs, and the upkeep its ticks drive: lease,
//! flood meter, sweep), `apply` (one event into the failover machine and its actions carried
//! out), `vrrp` (the VRRP glue and the stall check), `operator` (admin socket requests),
//! `reload` (the config read again and handed to the parts that take it live),
//! `manual` (`pglb failover`: the request, the answer, its event),
//! `events` (the recent events of `/stats`, and the events emitted to the journal and hooks) and
//! `stop`; `hooks` is the events task.

pub mod agent_channel;
pub mod executor;
pub mod history;
pub mod hooks;
pub mod params;
pub mod recorder;
pub mod signals;
pub mod snapshot;
pub mod tasks;

mod apply;
mod events;
mod main_loop;
mod manual;
mod operator;
mod reload;
mod start;
mod stop;
mod vrrp;

use std::{
    net::SocketAddrV4,
    path::PathBuf,
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::{Duration, SystemTime},
};

use thiserror::Error;
use tokio::{
    sync::{Notify, mpsc, oneshot, watch},
    time::{Instant, Interval},
};

use self::{
    executor::Executor,
    history::{EventId, WriterLoss},
    hooks::Emitter,
    params::{RunParams, VipSide},
    recorder::Recorder,
    signals::Signals,
    snapshot::{Counts, Published, Recent, ReloadCounts, SnapshotSource},
    start::{
        attach_dataplane, open_reports, open_vip, read_state, restore_machine, sample_traffic, start_admin, start_events, start_http, start_probes,
    },
    tasks::Tasks,
};
use crate::{
    admin::{self, AdminRequest},
    config::Config,
    dataplane::{self, Dataplane, FloodMeter, Pinned},
    failover::{Event, Machine, Observation},
    http,
    status::Histogram,
    vip::{self, VrrpRunner, report::ReportLink, trust::PeerWords, io::VrrpReceiver},
};

pub use self::operator::STALL_MAX;

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
    #[error(transparent)]
    Tls(#[from] crate::pgtls::TlsError),
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
    /// A manual failover (`pglb failover`) an operator is waiting for.
    manual: Option<manual::PendingManual>,
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
    /// One per node: wakes its probe task for a probe out of its round; the task (retired
    /// when a reload removes the node); where a probe task added by a reload sends.
    probe_now: Vec<Arc<Notify>>,
    probe_tasks: Vec<tokio::task::AbortHandle>,
    probe_out: mpsc::WeakSender<Observation>,
    /// Recent events for `/stats`, and the wall clock at `since` to date them.
    recent: Arc<Recent>,
    since_wall: SystemTime,
    /// The ongoing "writer lost" event and SYN flood event.
    writer_loss: WriterLoss,
    flood_event: Option<EventId>,
    /// The events task's queue: journal and hooks ([`Runtime::emit`]).
    events: Emitter,
    /// The config file, read again on a reload, and where its new parameters go.
    config_path: PathBuf,
    owners: reload::Owners,
}

/// How long the daemon's tasks and the actions in flight get to stop before they are aborted.
const TASKS_STOP_LIMIT: Duration = Duration::from_secs(2);

/// `pglb run`: the config read ([`params::from_config`]; again on a reload, from
/// `config_path`), then the start-up steps in order, the main loop, and the stop.
pub async fn run(config: Config, config_path: PathBuf) -> Result<(), RuntimeError> {
    let p = params::from_config(&config)?;
    drop(config);
    let (owners, live) = reload::Owners::new(&p);
    let since = Instant::now();
    let mut tasks = Tasks::new();
    let (state, durable) = read_state(&p)?;
    let (dataplane, pinned, routed) = attach_dataplane(&p)?;
    let machine = restore_machine(&p, durable.as_ref(), routed, &state);
    let probes = start_probes(&p, &live.probe, since, &mut tasks);
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
        let channel = agent_channel::open(a, published_rx.clone(), live.agent_nodes).await?;
        tasks.spawn("agent channel", agent_channel::serve(channel));
    }
    let recent = Arc::new(Recent::new(p.nodes.len()));
    let events = start_events(&p, live.hooks, &recent, &mut tasks);
    tasks.spawn("traffic sampler", sample_traffic(Arc::clone(&pinned), Arc::clone(&recent), since));
    let source = SnapshotSource::new(live.snapshot, published_rx, Arc::clone(&pinned), vip_view, Arc::clone(&recent));
    start_http(&p, live.access, source.clone(), &mut tasks).await?;
    let (admin_rx, admin_path) = start_admin(&p, &mut tasks)?;
    let (done_tx, done) = mpsc::channel::<Event>(64);
    let (recorder, recording) = Recorder::new(state, done_tx.clone());
    tasks.spawn("state recorder", recording);
    let signals = Signals::install().map_err(RuntimeError::Signal)?;
    let (reports, report_every) = reports.unzip();
    let inputs = Inputs { probes: probes.rx, vrrp: vrrp_rx, done, admin: admin_rx, report_every };
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
        manual: None,
        // The config read at start counts as the first good load (as Prometheus counts its own).
        counts: Counts { reloads: ReloadCounts { last_ok_unix_ms: crate::failover::unix_ms(SystemTime::now()), last_ok: true, ..ReloadCounts::default() }, ..Counts::default() },
        latency: vec![Histogram::default(); p.nodes.len()],
        published,
        lease_failing: false,
        ready: false,
        recorded: true,
        last_turn: Instant::now(),
        flood: FloodMeter::default(),
        probe_now: probes.now,
        probe_tasks: probes.tasks,
        probe_out: probes.tx,
        recent,
        since_wall: SystemTime::now() - since.elapsed(),
        writer_loss: WriterLoss::default(),
        flood_event: None,
        events,
        config_path,
        owners,
        p,
    };
    // The machine's first event: the wall clock a pause's end is measured on.
    rt.feed(Event::WallClock { unix: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default() });
    rt.start_vip().await;
    let spec = &rt.p.dataplane;
    crate::notify::ready(&format!("instance {}: data plane attached on {}, vip {}", rt.p.instance, spec.interface, spec.vip));
    let exit = rt.run_loop(inputs, signals, &mut tasks, source).await;
    crate::notify::stopping(match exit {
        Exit::Stop(_) => "stopping: releasing the VIP and the lease",
        Exit::Restart => "restarting: the VIP stays here, XDP keeps forwarding",
    });
    let executor = rt.stop(exit).await;
    tokio::join!(tasks.stop(TASKS_STOP_LIMIT), executor.stop(TASKS_STOP_LIMIT));
    let _ = std::fs::remove_file(&admin_path);
    Ok(())
}
