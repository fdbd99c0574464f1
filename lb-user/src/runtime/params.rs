//! From the config to what each part of `pglb run` runs with: [`from_config`] is the only place
//! that reads [`Config`] on their behalf. Every part takes the typed parameters built here and
//! none depends on the config's shape, so a live reload has one place to derive everything again.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use crate::{
    agent::channel::{Key, SigningKey},
    config::{Config, Pool},
    dataplane::{BackendSpec, DataplaneSpec, ListenerSpec},
    failover::{NodeParams, Params},
    http::Access,
    pgtls::{PgTls, TlsError},
    probe::ProbeSettings,
    vip::{VrrpParams, vrrp::master_down_interval},
};

use super::{
    executor::{Credential, ReplicationLogin, SqlContext},
    hooks::HookParams,
};

/// One PostgreSQL node, as the runtime's parts name and reach it (by node id: its position).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub addr: SocketAddrV4,
    pub read_weight: u32,
}

/// The data plane's dead-man switch: renewed for `period` while the instance is ready;
/// established write flows go on for `grace` after it ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseParams {
    pub period: Duration,
    pub grace: Duration,
}

/// When idle, closed and half-open flows are swept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimeouts {
    pub idle: Duration,
    pub half_open: Duration,
}

/// The peer reports (with pglb peers in `[vrrp]`).
#[derive(Clone, Debug)]
pub struct ReportParams {
    /// This instance's address: the reports' source and bind address.
    pub own: Ipv4Addr,
    pub port: u16,
    pub peers: Vec<Ipv4Addr>,
    pub key: Key,
    /// Sent every advert interval.
    pub every: Duration,
}

/// VIP ownership with `[vrrp]`.
#[derive(Clone, Debug)]
pub struct VrrpSide {
    pub runner: VrrpParams,
    /// The configured priority and what tracking takes off it.
    pub priority: u8,
    pub track_weight: u8,
    pub reports: Option<ReportParams>,
    /// Who vouches for adverts (`crate::vip::trust::PeerWords`): the pglb peers, the keepalived
    /// peers, and how long a report vouches (the master-down interval).
    pub pglb_peers: Vec<Ipv4Addr>,
    pub keepalived_peers: Vec<Ipv4Addr>,
    pub fresh_for: Duration,
}

/// Who holds the VIP.
#[derive(Clone, Debug)]
pub enum VipSide {
    Vrrp(Box<VrrpSide>),
    /// No `[vrrp]`: this instance holds the VIP alone.
    Static { interface: String, vip: Ipv4Addr },
}

/// The agent channel (`[agent]`).
#[derive(Clone, Debug)]
pub struct AgentChannelParams {
    pub port: u16,
    pub instance: String,
    pub signing: SigningKey,
    /// Each registered agent's key, by name.
    pub clients: HashMap<String, Key>,
    pub subscriber_ttl: Duration,
    pub nodes: Vec<NodeSpec>,
}

/// The HTTP endpoints and who may ask them.
#[derive(Clone)]
pub struct HttpParams {
    pub listen: SocketAddr,
    pub access: Access,
}

/// What a status snapshot shows besides what the machine publishes.
#[derive(Clone, Debug)]
pub struct SnapshotParams {
    pub instance: String,
    pub vip: String,
    /// (name, address) by node id.
    pub nodes: Vec<(String, SocketAddrV4)>,
    pub write_ports: Vec<u16>,
    pub read_ports: Vec<u16>,
    /// `[vrrp] peers`, in order.
    pub peers: Vec<String>,
    /// `[vrrp] priority` (`None` without VRRP).
    pub configured_priority: Option<u8>,
    /// `[failover] pause_alert_after`: `/metrics` exports it for the alert rule.
    pub pause_alert_after: Duration,
}

/// Everything `pglb run` runs with. No `Debug`: it holds the probe and replication passwords.
#[derive(Clone)]
pub struct RunParams {
    pub instance: String,
    pub state_dir: PathBuf,
    pub dataplane: DataplaneSpec,
    pub backends: Vec<BackendSpec>,
    pub lease: LeaseParams,
    /// A gap between two turns of the main loop longer than this is a stall (the instance wakes
    /// humble): the lease, or the master-down interval when pglb peers may take over sooner.
    pub stall_after: Duration,
    pub flows: FlowTimeouts,
    pub nodes: Vec<NodeSpec>,
    pub machine: Params,
    pub probe: ProbeSettings,
    pub sql: SqlContext,
    pub vip: VipSide,
    pub agent: Option<AgentChannelParams>,
    pub http: HttpParams,
    pub snapshot: SnapshotParams,
    /// `[hooks]`: the command run on every event (`None`: events are only journaled).
    pub hooks: Option<HookParams>,
}

/// Reads the config, once. Its secrets and certificates were read by `Config::load`; only
/// building the TLS connector from them can fail here.
pub fn from_config(config: &Config) -> Result<RunParams, TlsError> {
    let nodes: Vec<NodeSpec> = config.nodes.iter().map(|n| NodeSpec { name: n.name.clone(), addr: n.addr(), read_weight: n.read_weight }).collect();
    let probe = probe(config)?;
    Ok(RunParams {
        instance: config.instance.name.clone(),
        state_dir: config.state_dir(),
        dataplane: dataplane(config),
        backends: backends(config),
        lease: LeaseParams { period: config.dataplane.lease, grace: config.dataplane.lease_grace },
        stall_after: stall_after(config),
        flows: FlowTimeouts { idle: config.dataplane.flow_idle_timeout, half_open: config.dataplane.half_open_timeout },
        machine: machine(config),
        sql: sql(config, probe.clone()),
        probe,
        vip: vip(config),
        agent: agent(config, &nodes),
        http: http(config),
        snapshot: snapshot(config),
        hooks: config.hooks.as_ref().map(|h| HookParams { command: h.command.clone(), timeout: h.timeout, max_concurrent: h.max_concurrent as usize }),
        nodes,
    })
}

/// The failover machine's parameters. A peer counts for the quorum for the VRRP master-down
/// interval, and the master holds its tracking verdict for as long.
pub fn machine(config: &Config) -> Params {
    let f = &config.failover;
    let master_down = config.vrrp.as_ref().map(|v| master_down_interval(v.priority, v.advert_interval)).unwrap_or_default();
    Params {
        nodes: config
            .nodes
            .iter()
            .map(|n| NodeParams {
                name: n.name.clone(),
                host: n.host,
                port: n.port,
                priority: n.priority,
                nofailover: n.nofailover,
                read_weight: n.read_weight,
            })
            .collect(),
        probe_interval: config.probe.interval,
        failover_after: f.failover_after,
        up_after: f.up_after,
        max_lag_on_failover_bytes: f.max_lag_on_failover_bytes,
        max_read_lag_bytes: f.max_read_lag_bytes,
        max_read_lag: f.max_read_lag,
        promote_timeout: f.promote_timeout,
        switchover_timeout: f.switchover_timeout,
        synchronous_count: config.replication.synchronous_count,
        vrrp_enabled: config.vrrp.is_some(),
        peers: config.vrrp.as_ref().map(|v| v.peers.clone()).unwrap_or_default(),
        peer_timeout: master_down,
        track_hold: master_down,
        rejoin: f.rejoin_command.is_some(),
        rejoin_backoff: f.rejoin_backoff,
    }
}

/// The lease, or the master-down interval if shorter and a pglb peer may take the VIP (and
/// decide) while this loop stands still: after such a gap nothing this instance saw is current.
fn stall_after(config: &Config) -> Duration {
    let lease = config.dataplane.lease;
    match &config.vrrp {
        Some(v) if !v.peers.is_empty() => lease.min(master_down_interval(v.priority, v.advert_interval)),
        _ => lease,
    }
}

/// The probe settings, with the one TLS connector every connection to PostgreSQL goes through
/// (built here, once, from the certificates `Config::load` read).
fn probe(config: &Config) -> Result<ProbeSettings, TlsError> {
    Ok(ProbeSettings {
        user: config.probe.user.clone(),
        password: config.probe.password.expose().to_owned(),
        dbname: config.probe.dbname.clone(),
        application_name: format!("pglb-{}", config.instance.name),
        interval: config.probe.interval,
        timeout: config.probe.timeout,
        connect_timeout: config.probe.connect_timeout,
        tls: PgTls::new(config.probe.sslmode, &config.probe.tls)?,
    })
}

fn sql(config: &Config, settings: ProbeSettings) -> SqlContext {
    SqlContext {
        settings,
        nodes: config.nodes.iter().map(|n| (n.name.clone(), n.addr())).collect(),
        replication: replication(config),
        timeout: config.failover.promote_timeout,
        demote_command: config.failover.demote_command.clone(),
        rejoin_command: config.failover.rejoin_command.clone(),
    }
}

/// What `primary_conninfo` says (`[replication]`): a passfile when one is configured, else the
/// password inline.
fn replication(config: &Config) -> ReplicationLogin {
    let r = &config.replication;
    ReplicationLogin {
        user: r.user.clone(),
        credential: match &r.passfile {
            Some(path) => Credential::Passfile(path.clone()),
            None => Credential::Password(r.password.expose().to_owned()),
        },
        sslmode: r.sslmode,
        sslrootcert: r.sslrootcert.clone(),
        sslcert: r.sslcert.clone(),
        sslkey: r.sslkey.clone(),
    }
}

/// The VIP's owner: the VRRP runner's parameters and the peer reports, or the VIP held alone.
fn vip(config: &Config) -> VipSide {
    let Some(v) = &config.vrrp else {
        return VipSide::Static { interface: config.dataplane.interface.clone(), vip: config.dataplane.vip.addr };
    };
    let mut runner = VrrpParams::new(&config.dataplane.interface, v.vrid, v.priority, config.dataplane.vip.addr, config.dataplane.address.addr);
    runner.advert_interval_cs = (v.advert_interval.as_millis() / 10) as u16;
    runner.preempt = v.preempt;
    runner.preempt_delay = (!v.preempt_delay.is_zero()).then_some(v.preempt_delay);
    runner.unicast_peers = v.unicast_peers();
    runner.peers = v.all_peers();
    runner.max_advert_interval_cs = (v.max_peer_advert_interval.as_millis() / 10) as u16;
    let reports = (!v.peers.is_empty()).then(|| ReportParams {
        own: config.dataplane.address.addr,
        port: v.report_port,
        peers: v.peers.clone(),
        key: v.key.clone().expect("Config::load read the peer key"),
        every: v.advert_interval,
    });
    VipSide::Vrrp(Box::new(VrrpSide {
        runner,
        priority: v.priority,
        track_weight: v.track_weight,
        reports,
        pglb_peers: v.peers.clone(),
        keepalived_peers: v.keepalived_peers.clone(),
        fresh_for: master_down_interval(v.priority, v.advert_interval),
    }))
}

fn agent(config: &Config, nodes: &[NodeSpec]) -> Option<AgentChannelParams> {
    let a = config.agent.as_ref()?;
    Some(AgentChannelParams {
        port: a.listen_port,
        instance: config.instance.name.clone(),
        signing: a.signing_key.clone().expect("Config::load read the signing key"),
        clients: a.clients.iter().map(|c| (c.name.clone(), c.key.clone().expect("Config::load read the client keys"))).collect(),
        subscriber_ttl: a.subscriber_ttl,
        nodes: nodes.to_vec(),
    })
}

fn http(config: &Config) -> HttpParams {
    let h = &config.http;
    let basic = match (&h.stats_user, &h.stats_password) {
        (Some(u), Some(p)) => Some((u.as_str(), p.expose())),
        _ => None,
    };
    let token = h.token.as_ref().map(|t| t.expose());
    HttpParams { listen: h.listen, access: Access::new(h.allow.clone().unwrap_or_default(), basic, token, h.auth) }
}

fn snapshot(config: &Config) -> SnapshotParams {
    let ports = |pool: Pool| config.listeners.iter().filter(|l| l.pool == pool).map(|l| l.port).collect();
    SnapshotParams {
        instance: config.instance.name.clone(),
        vip: config.dataplane.vip.addr.to_string(),
        nodes: config.nodes.iter().map(|n| (n.name.clone(), n.addr())).collect(),
        write_ports: ports(Pool::Write),
        read_ports: ports(Pool::Read),
        peers: config.vrrp.iter().flat_map(|v| v.peers.iter().map(ToString::to_string)).collect(),
        configured_priority: config.vrrp.as_ref().map(|v| v.priority),
        pause_alert_after: config.failover.pause_alert_after,
    }
}

/// What the data plane attaches.
fn dataplane(config: &Config) -> DataplaneSpec {
    DataplaneSpec {
        interface: config.dataplane.interface.clone(),
        pin_dir: config.pin_path(),
        vip: config.dataplane.vip.addr,
        listeners: config.listeners.iter().map(|l| ListenerSpec { port: l.port, pool: l.pool }).collect(),
        xdp_mode: config.dataplane.xdp_mode,
    }
}

/// The backends, by node id (a node's position in `[[node]]`).
fn backends(config: &Config) -> Vec<BackendSpec> {
    config.nodes.iter().enumerate().map(|(i, n)| BackendSpec { id: i as u32, addr: n.host, port: n.port }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_config_maps_onto_every_part() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/lab.toml");
        let text = std::fs::read_to_string(&path).expect("the lab config");
        let mut config = Config::parse(&text, &path).expect("valid");
        config.vrrp.as_mut().expect("[vrrp]").key = Some(Key::new(b"0123456789abcdef".to_vec()));
        let p = machine(&config);
        assert_eq!(p.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["pg1", "pg2", "pg3"]);
        // 3 × 100 ms + (256 − 150) × 100 ms / 256 = 341.40625 ms.
        assert_eq!(p.peer_timeout, Duration::from_nanos(341_406_250));
        assert_eq!(p.track_hold, p.peer_timeout);
        assert!(p.rejoin && p.vrrp_enabled);
        let VipSide::Vrrp(v) = vip(&config) else { panic!("[vrrp] is configured") };
        assert_eq!((v.runner.vrid, v.runner.priority, v.runner.advert_interval_cs), (51, 150, 10));
        assert_eq!(v.runner.peers, ["172.20.0.22".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!((v.runner.max_advert_interval_cs, v.runner.preempt), (200, false));
        assert_eq!(v.fresh_for, p.peer_timeout);
        assert_eq!(dataplane(&config).listeners.len(), 2);
        assert_eq!(backends(&config)[2].id, 2);
        let s = snapshot(&config);
        assert_eq!((s.write_ports, s.read_ports, s.configured_priority), (vec![3000], vec![3001], Some(150)));
    }
}
