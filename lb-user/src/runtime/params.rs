//! From the config to what each part runs with: the failover machine's [`Params`], the VRRP
//! runner's [`VrrpParams`], the data plane's spec and backends. The only place that reads
//! `Config` on their behalf, so none of them depends on the config's shape.

use crate::{
    config::Config,
    dataplane::{BackendSpec, DataplaneSpec, ListenerSpec},
    failover::{NodeParams, Params},
    vip::{VrrpParams, vrrp::master_down_interval},
};

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

/// The VRRP runner's parameters, when `[vrrp]` is configured.
pub fn vrrp(config: &Config) -> Option<VrrpParams> {
    let v = config.vrrp.as_ref()?;
    let mut p = VrrpParams::new(&config.dataplane.interface, v.vrid, v.priority, config.dataplane.vip.addr, config.dataplane.address.addr);
    p.advert_interval_cs = (v.advert_interval.as_millis() / 10) as u16;
    p.preempt = v.preempt;
    p.preempt_delay = (!v.preempt_delay.is_zero()).then_some(v.preempt_delay);
    p.unicast_peers = v.unicast_peers();
    p.peers = v.all_peers();
    p.max_advert_interval_cs = (v.max_peer_advert_interval.as_millis() / 10) as u16;
    Some(p)
}

/// What the data plane attaches.
pub fn dataplane(config: &Config) -> DataplaneSpec {
    DataplaneSpec {
        interface: config.dataplane.interface.clone(),
        pin_dir: config.pin_path(),
        vip: config.dataplane.vip.addr,
        listeners: config.listeners.iter().map(|l| ListenerSpec { port: l.port, pool: l.pool }).collect(),
        xdp_mode: config.dataplane.xdp_mode,
    }
}

/// The backends, by node id (a node's position in `[[node]]`).
pub fn backends(config: &Config) -> Vec<BackendSpec> {
    config.nodes.iter().enumerate().map(|(i, n)| BackendSpec { id: i as u32, addr: n.host, port: n.port }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_config_maps_onto_every_part() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/lab.toml");
        let text = std::fs::read_to_string(&path).expect("the lab config");
        let config = Config::parse(&text, &path).expect("valid");
        let p = machine(&config);
        assert_eq!(p.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["pg1", "pg2", "pg3"]);
        // 3 × 100 ms + (256 − 150) × 100 ms / 256 = 341.40625 ms.
        assert_eq!(p.peer_timeout, std::time::Duration::from_nanos(341_406_250));
        assert_eq!(p.track_hold, p.peer_timeout);
        assert!(p.rejoin && p.vrrp_enabled);
        let v = vrrp(&config).expect("[vrrp]");
        assert_eq!((v.vrid, v.priority, v.advert_interval_cs), (51, 150, 10));
        assert_eq!(dataplane(&config).listeners.len(), 2);
        assert_eq!(backends(&config)[2].id, 2);
    }
}
