//! `pglb run`: wires the pieces together. One task owns the failover machine; it feeds it probe
//! observations, VRRP changes, admin commands and action results, and hands its actions to the
//! executor. Probes, VRRP, HTTP and the admin socket run on their own tasks.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{Arc, RwLock},
    time::Duration,
};

use thiserror::Error;
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tracing::{error, info, warn};

use crate::{
    admin::{self, AdminRequest},
    config::{Config, Pool},
    dataplane::{self, BackendSpec, Dataplane, DataplaneSpec, ListenerSpec},
    executor::{self, ExecutorCounts, SqlContext},
    failover::{Action, AdminCommand, Alert, Event, Machine, NodeState, Params},
    http::{self, StatsAuth},
    probe::{self, ProbeSettings},
    state::StateFile,
    status::{Histogram, NodeRow, Snapshot, Traffic},
    vip::{self, VrrpHandle, VrrpParams, VrrpRunner, VrrpStatus},
};

/// How often idle and closed flows are swept from the connection table.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A closed flow is removed this long after its last packet.
const CLOSED_FLOW_LINGER: Duration = Duration::from_secs(10);
/// How often the status snapshot (metrics, stats, status) is rebuilt.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);
/// Restart exit (SIGUSR2): the last VRRP advert announces this interval, so an RFC 5798 backup
/// (pglb or keepalived) declares us down only after 3 × it + skew (~7 s) instead of ~0.36 s.
/// The next `pglb run` becomes master again within ~0.4 s of starting and keeps the VIP here;
/// meanwhile the pinned XDP program keeps forwarding every flow.
const RESTART_HOLD: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum DaemonError {
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
    #[error("cannot install the signal handler")]
    Signal(#[source] std::io::Error),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

fn dataplane_spec(config: &Config) -> DataplaneSpec {
    DataplaneSpec {
        interface: config.dataplane.interface.clone(),
        pin_dir: config.pin_path(),
        vip: config.dataplane.vip.addr,
        listeners: config
            .listeners
            .iter()
            .map(|l| ListenerSpec { port: l.port, pool: l.pool })
            .collect(),
        xdp_mode: config.dataplane.xdp_mode,
    }
}

fn vrrp_params(config: &Config, v: &crate::config::VrrpConfig) -> VrrpParams {
    let mut p = VrrpParams::new(
        &config.dataplane.interface,
        v.vrid,
        v.priority,
        config.dataplane.vip.addr,
        config.dataplane.address.addr,
    );
    p.advert_interval_cs = (v.advert_interval.as_millis() / 10) as u16;
    p.preempt = v.preempt;
    p.preempt_delay = (!v.preempt_delay.is_zero()).then_some(v.preempt_delay);
    p.unicast_peers = v.unicast_peers().to_vec();
    p
}

/// Who owns the VIP on this instance.
enum VipOwner {
    Vrrp { handle: VrrpHandle, status: watch::Receiver<VrrpStatus>, heard: HashMap<Ipv4Addr, Duration> },
    /// No `[vrrp]`: this instance is the only load balancer and holds the VIP itself.
    Static(vip::io::StaticVip),
}

/// A switchover an operator is waiting for.
struct PendingSwitchover {
    to: usize,
    reply: oneshot::Sender<Result<String, String>>,
    started: Instant,
}

pub async fn run(config: Config) -> Result<(), DaemonError> {
    let since = Instant::now();
    let name = config.instance.name.clone();
    // What an earlier run must not have forgotten, before anything is attached or routed.
    let state = StateFile::new(config.state_dir());
    let durable = state.load()?;
    let spec = dataplane_spec(&config);
    enable_forwarding(&spec.interface)?;
    let mut dp = Dataplane::attach(&spec)?;
    let backends: Vec<BackendSpec> = config
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| BackendSpec { id: i as u32, addr: n.host, port: n.port })
        .collect();
    dp.set_backends(&backends)?;
    let (lease, grace) = (config.dataplane.lease, config.dataplane.lease_grace);
    dp.renew_lease(lease, grace)?;
    info!(instance = %name, interface = %spec.interface, pin_dir = %spec.pin_dir.display(), vip = %spec.vip, lease_ms = lease.as_millis() as u64, "data plane attached; lease renewed");

    let mut machine = match &durable {
        Some(d) => {
            info!(path = %state.path().display(), "state file read: fences, the last writer and its timeline are restored");
            Machine::restore(Params::from_config(&config), d)
        }
        None => {
            info!(path = %state.path().display(), "no state file yet: a first start");
            Machine::new(Params::from_config(&config))
        }
    };
    let weights: Vec<u32> = config.nodes.iter().map(|n| n.read_weight).collect();
    let ctx = SqlContext::from_config(&config);
    let mut counts = ExecutorCounts::default();

    let settings = ProbeSettings::from_config(&config);
    let (obs_tx, mut obs_rx) = mpsc::channel(256);
    for (i, node) in config.nodes.iter().enumerate() {
        tokio::spawn(probe::run_node(i, node.clone(), settings.clone(), since, obs_tx.clone()));
    }
    drop(obs_tx);

    let mut owner = match &config.vrrp {
        Some(v) => {
            let runner = VrrpRunner::open(vrrp_params(&config, v)).await?;
            let handle = runner.spawn();
            let status = handle.status();
            info!(vrid = v.vrid, priority = v.priority, "vrrp: started");
            VipOwner::Vrrp { handle, status, heard: HashMap::new() }
        }
        None => {
            let held = vip::io::StaticVip::hold(&config.dataplane.interface, config.dataplane.vip.addr).await?;
            info!(vip = %config.dataplane.vip.addr, "vip: no [vrrp] configured: this instance holds the VIP alone");
            VipOwner::Static(held)
        }
    };

    let snapshot = Arc::new(RwLock::new(Snapshot { instance: name.clone(), ..Snapshot::default() }));
    let listener = http::bind(config.http.listen).await?;
    let auth = match (&config.http.stats_user, &config.http.stats_password) {
        (Some(u), Some(p)) => Some(StatsAuth::new(u, p.expose())),
        _ => None,
    };
    tokio::spawn(http::serve(listener, snapshot.clone(), auth));
    info!(listen = %config.http.listen, "http: serving /metrics /stats /health");

    let (admin_tx, mut admin_rx) = mpsc::channel::<AdminRequest>(16);
    let admin_path = admin::socket_path(&name);
    let admin_listener = admin::bind(&admin_path)?;
    tokio::spawn(admin::serve(admin_listener, admin_tx));
    info!(socket = %admin_path.display(), "admin socket ready");

    let (done_tx, mut done_rx) = mpsc::channel::<Event>(64);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let mut restart = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()).map_err(DaemonError::Signal)?;
    let mut restarting = false;
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    // Renewed from this loop: a loop that stops turning lets the lease run out.
    let mut renew = tokio::time::interval(lease / 5);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease_failing = false;
    let mut refresh = tokio::time::interval(SNAPSHOT_EVERY);
    let mut latency: Vec<Histogram> = vec![Histogram::default(); config.nodes.len()];
    let mut pending: Option<PendingSwitchover> = None;
    let mut writes_blocked: Option<Instant> = None;
    let mut last_pause: Option<Duration> = None;

    if let VipOwner::Static(_) = owner {
        let actions = machine.handle(Event::VrrpRole { master: true }, since.elapsed());
        executor::apply(actions, &mut dp, &weights, &ctx, &state, &done_tx, &mut counts);
    }

    loop {
        let now = since.elapsed();
        let deadline = machine.next_deadline().map(|d| since + d);
        let events: Vec<Event> = tokio::select! {
            obs = obs_rx.recv() => match obs {
                Some(obs) => {
                    latency[obs.node].observe(obs.latency.as_secs_f64());
                    vec![Event::Probe(obs)]
                }
                None => break,
            },
            _ = sleep_until(deadline) => vec![Event::Tick],
            Some(ev) = done_rx.recv() => vec![ev],
            changed = vrrp_changed(&mut owner) => changed,
            Some(req) = admin_rx.recv() => match req {
                AdminRequest::Status { reply } => {
                    refresh_snapshot(&snapshot, &machine, &dp, &owner, &latency, &counts, &config, since.elapsed());
                    let snap = snapshot.read().unwrap_or_else(|p| p.into_inner()).clone();
                    let _ = reply.send(crate::status::render_table(&snap));
                    vec![]
                }
                AdminRequest::Switchover { to, reply } => match config.nodes.iter().position(|n| n.name == to) {
                    None => {
                        let _ = reply.send(Err(format!("unknown node `{to}`: the nodes are {}", config.node_names().join(", "))));
                        vec![]
                    }
                    Some(_) if pending.is_some() => {
                        let _ = reply.send(Err("a switchover is already running".into()));
                        vec![]
                    }
                    Some(id) => {
                        info!(to = %to, "admin: switchover requested");
                        pending = Some(PendingSwitchover { to: id, reply, started: Instant::now() });
                        vec![Event::Admin(AdminCommand::Switchover { to: id })]
                    }
                },
                AdminRequest::Rejoined { node, reply } => match config.nodes.iter().position(|n| n.name == node) {
                    None => {
                        let _ = reply.send(Err(format!("unknown node `{node}`: the nodes are {}", config.node_names().join(", "))));
                        vec![]
                    }
                    Some(id) => {
                        let _ = reply.send(Ok(format!("{node}: fence lifted; it is routed again once probes see it streaming as a standby")));
                        vec![Event::Admin(AdminCommand::Rejoined { node: id })]
                    }
                },
            },
            _ = sweep.tick() => {
                match dp.sweep(config.dataplane.flow_idle_timeout, CLOSED_FLOW_LINGER) {
                    Ok(s) if s.removed_idle + s.removed_closed + s.removed_orphans > 0 => {
                        info!(idle = s.removed_idle, closed = s.removed_closed, orphans = s.removed_orphans, "flows swept");
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "sweeping flows failed"),
                }
                vec![]
            },
            _ = renew.tick() => {
                match dp.renew_lease(lease, grace) {
                    Ok(()) if lease_failing => {
                        lease_failing = false;
                        info!("lease: renewing works again");
                    }
                    Ok(()) => {}
                    Err(e) if !lease_failing => {
                        lease_failing = true;
                        error!(error = %crate::error_chain(&e), "lease: renewing failed: the data plane stops answering ARP for the VIP and opening flows when it runs out");
                    }
                    Err(_) => {}
                }
                vec![]
            },
            _ = refresh.tick() => {
                refresh_snapshot(&snapshot, &machine, &dp, &owner, &latency, &counts, &config, since.elapsed());
                vec![]
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = restart.recv() => {
                restarting = true;
                break;
            }
        };
        let mut actions = Vec::new();
        for event in events {
            actions.extend(machine.handle(event, now.max(since.elapsed())));
        }
        for a in &actions {
            match a {
                Action::SetWriter { node: None } => {
                    writes_blocked.get_or_insert_with(Instant::now);
                }
                Action::SetWriter { node: Some(_) } => {
                    if let Some(t) = writes_blocked.take() {
                        last_pause = Some(t.elapsed());
                    }
                }
                Action::Alert(Alert::SwitchoverDone { from, to }) => {
                    if let Some(p) = pending.take() {
                        let pause = last_pause.map(|d| format!("{} ms", d.as_millis())).unwrap_or_else(|| "0 ms".into());
                        let _ = p.reply.send(Ok(format!(
                            "switchover done: {} -> {} in {} ms; writes paused for {pause}",
                            config.nodes[*from].name,
                            config.nodes[*to].name,
                            p.started.elapsed().as_millis()
                        )));
                    }
                }
                Action::Alert(Alert::SwitchoverAborted { reason, .. }) | Action::Alert(Alert::SwitchoverRejected { reason, .. }) => {
                    if let Some(p) = pending.take() {
                        let _ = p.reply.send(Err(format!("switchover to {} failed: {reason}", config.nodes[p.to].name)));
                    }
                }
                _ => {}
            }
        }
        if let Some(reachable) = executor::apply(actions, &mut dp, &weights, &ctx, &state, &done_tx, &mut counts) {
            track(reachable, &owner, &config).await;
        }
    }

    if restarting {
        // The lease covers the restart hold: the next `pglb run` renews it.
        let hold = RESTART_HOLD * 3 + lease + Duration::from_secs(2);
        if let Err(e) = dp.renew_lease(hold, grace) {
            error!(error = %crate::error_chain(&e), "restart: extending the lease over the restart failed: the data plane may refuse new flows until the next start");
        }
        // Keep the VIP and the XDP program; tell backups to wait for the next start.
        if let VipOwner::Vrrp { handle, status, .. } = owner {
            // Only a master announces the hold: a backup's advert at its configured priority
            // could make the real master step down.
            let was_master = status.borrow().master;
            handle.abort();
            tokio::time::sleep(Duration::from_millis(20)).await;
            if was_master
                && let Some(v) = &config.vrrp
                && let Err(e) = send_restart_hold(&config, v)
            {
                error!(error = %e, "restart: sending the hold advert failed: a backup may take the VIP");
            }
        }
        info!(hold_s = RESTART_HOLD.as_secs() * 3, "exiting for a restart (SIGUSR2): the VIP stays here and XDP keeps forwarding; backups hold off for the window");
        let _ = std::fs::remove_file(&admin_path);
        return Ok(());
    }
    info!("shutting down: releasing the VIP and the lease; the XDP program and maps stay pinned for the next start");
    if let Err(e) = dp.expire_lease(grace) {
        error!(error = %crate::error_chain(&e), "letting the lease run out failed");
    }
    match owner {
        VipOwner::Vrrp { handle, .. } => {
            if let Err(e) = handle.shutdown().await {
                error!(error = %e, "vrrp shutdown failed");
            }
        }
        VipOwner::Static(held) => {
            if let Err(e) = held.release().await {
                error!(error = %e, "removing the VIP failed");
            }
        }
    }
    let _ = std::fs::remove_file(&admin_path);
    Ok(())
}

/// Sends one VRRPv3 advert at our configured priority announcing [`RESTART_HOLD`] as our
/// interval, to the unicast peers (or the VRRP group), from our own address.
fn send_restart_hold(config: &Config, v: &crate::config::VrrpConfig) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let own = config.dataplane.address.addr;
    let advert = vip::Advert {
        vrid: v.vrid,
        priority: v.priority,
        max_advert_int_cs: (RESTART_HOLD.as_millis() / 10) as u16,
        addresses: vec![config.dataplane.vip.addr],
    };
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112)))?;
    sock.set_ttl_v4(255)?;
    sock.set_multicast_ttl_v4(255)?;
    sock.bind_device(Some(config.dataplane.interface.as_bytes()))?;
    sock.bind(&std::net::SocketAddrV4::new(own, 0).into())?;
    sock.set_multicast_if_v4(&own)?;
    let group = [Ipv4Addr::new(224, 0, 0, 18)];
    let peers = if v.unicast_peers().is_empty() { &group[..] } else { v.unicast_peers() };
    for _ in 0..2 {
        for &dst in peers {
            sock.send_to(&advert.encode(own, dst), &std::net::SocketAddrV4::new(dst, 0).into())?;
        }
    }
    Ok(())
}

/// `bpf_fib_lookup` (the data plane's next-hop MACs) answers "forwarding disabled" unless IPv4
/// forwarding is on for the interface, so the daemon turns it on, saying so.
fn enable_forwarding(interface: &str) -> Result<(), DaemonError> {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/forwarding");
    let current = std::fs::read_to_string(&path).map_err(|source| DaemonError::Forwarding { path: path.clone(), source })?;
    if current.trim() != "1" {
        std::fs::write(&path, "1").map_err(|source| DaemonError::Forwarding { path: path.clone(), source })?;
        info!(%interface, "enabled IPv4 forwarding on the interface (the XDP next-hop lookup needs it)");
    }
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Waits for a VRRP status change and turns it into machine events: the role, then every peer
/// heard since the last change.
async fn vrrp_changed(owner: &mut VipOwner) -> Vec<Event> {
    let VipOwner::Vrrp { status, heard, .. } = owner else {
        return std::future::pending().await;
    };
    if status.changed().await.is_err() {
        return std::future::pending().await;
    }
    let st = status.borrow_and_update().clone();
    let mut events = vec![Event::VrrpRole { master: st.master }];
    for (peer, at) in &st.peers_heard {
        if heard.insert(*peer, *at) != Some(*at) {
            events.push(Event::PeerHeard { peer: *peer });
        }
    }
    events
}

/// VRRP priority tracking: the configured priority while this instance reaches the writer,
/// lowered by `track_weight` while it does not (the failover machine's `Track` verdict).
async fn track(writer_reachable: bool, owner: &VipOwner, config: &Config) {
    let (VipOwner::Vrrp { handle, .. }, Some(v)) = (owner, &config.vrrp) else { return };
    let priority = if writer_reachable { v.priority } else { v.priority.saturating_sub(v.track_weight).max(1) };
    info!(priority, writer_reachable, "vrrp tracking: priority set");
    if let Err(e) = handle.set_priority(priority).await {
        error!(error = %e, "vrrp tracking: setting the priority failed");
    }
}

fn refresh_snapshot(
    snapshot: &RwLock<Snapshot>,
    machine: &Machine,
    dp: &Dataplane,
    owner: &VipOwner,
    latency: &[Histogram],
    counts: &ExecutorCounts,
    config: &Config,
    now: Duration,
) {
    let view = machine.view();
    let counters = dp.counters().ok();
    let flows = dp.flows().unwrap_or_default();
    let write_ports: Vec<u16> = config.listeners.iter().filter(|l| l.pool == Pool::Write).map(|l| l.port).collect();
    let read_ports: Vec<u16> = config.listeners.iter().filter(|l| l.pool == Pool::Read).map(|l| l.port).collect();
    let nodes = view
        .nodes
        .iter()
        .map(|n| {
            let mut routed = Vec::new();
            if view.writer == Some(n.id) {
                routed.extend(&write_ports);
            }
            if view.readers.contains(&n.id) {
                routed.extend(&read_ports);
            }
            let stats = counters.as_ref().and_then(|c| c.backends.iter().find(|(id, _)| *id == n.id as u32).map(|(_, s)| *s));
            NodeRow {
                name: n.name.clone(),
                addr: config.nodes[n.id].addr().to_string(),
                role: n.role.as_str().to_owned(),
                state: n.state.as_str().to_owned(),
                up: n.state == NodeState::Up,
                timeline: n.timeline,
                lag_bytes: n.lag_bytes,
                lag_seconds: n.lag.map(|d| d.as_secs_f64()),
                routed_ports: routed,
                traffic: Traffic {
                    flows: flows.iter().filter(|f| f.backend_id == n.id as u32).count() as u64,
                    new_flows: stats.map(|s| s.new_flows).unwrap_or(0),
                    packets: stats.map(|s| s.to_backend_packets + s.to_client_packets).unwrap_or(0),
                    bytes: stats.map(|s| s.to_backend_bytes + s.to_client_bytes).unwrap_or(0),
                    rsts: stats.map(|s| s.resets).unwrap_or(0),
                },
                since_change_s: now.saturating_sub(n.last_change).as_secs_f64(),
                probe_latency: latency[n.id].clone(),
            }
        })
        .collect();
    let (vrrp_state, vip_held, vip_master, sent, received, dropped, transitions) = match owner {
        VipOwner::Vrrp { status, handle, .. } => {
            let st = status.borrow().clone();
            let c = handle.counters();
            let dropped = vip::DropReason::ALL.iter().map(|r| (r.as_str().to_owned(), c.dropped(*r))).collect();
            let transitions = vip::VrrpState::ALL.iter().map(|s| c.transitions_to(*s)).sum();
            (
                st.state.as_str().to_owned(),
                st.master,
                st.master_address.filter(|_| !st.master).map(|a| a.to_string()),
                c.adverts_sent.load(std::sync::atomic::Ordering::Relaxed),
                c.adverts_received.load(std::sync::atomic::Ordering::Relaxed),
                dropped,
                transitions,
            )
        }
        VipOwner::Static(_) => ("none".to_owned(), true, None, 0, 0, Vec::new(), 0),
    };
    let snap = Snapshot {
        instance: config.instance.name.clone(),
        vip: config.dataplane.vip.addr.to_string(),
        phase: view.phase.as_str().to_owned(),
        vrrp_state,
        vip_held,
        vip_master,
        forwarding: vip_held,
        writer: view.writer.map(|w| config.nodes[w].name.clone()),
        nodes,
        failovers_total: counts.failovers,
        switchovers_total: counts.switchovers,
        vrrp_transitions_total: transitions,
        adverts_sent: sent,
        adverts_received: received,
        adverts_dropped: dropped,
        datapath_reasons: counters
            .map(|c| c.named_reasons().map(|(n, v)| (n.to_owned(), v)).collect())
            .unwrap_or_default(),
        writer_reachable: view.writer_reachable,
        rejoins_ok_total: counts.rejoins_ok,
        rejoins_failed_total: counts.rejoins_failed,
        state_write_errors_total: counts.state_write_errors,
        fenced: view.nodes.iter().filter(|n| n.fence.is_some()).map(|n| n.name.clone()).collect(),
        lease_valid: dp.lease_valid().unwrap_or(false),
    };
    *snapshot.write().unwrap_or_else(|p| p.into_inner()) = snap;
}
