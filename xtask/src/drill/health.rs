//! A healthy cluster between drill runs ([`Drill::ensure_healthy`]): pg1 the writer with pg2 and
//! pg3 streaming from it and routed for reads, every pglb running, the VIP on its home (lb1, the
//! first load balancer of the topology) alone. What a drill leaves behind is repaired: a stopped
//! pglb or node, an old primary pglb has not rejoined yet, pg1 a standby (switched back), and the
//! VIP on lb2 after lb1's pglb came back as its backup (brought home with a graceful restart of
//! lb2's pglb).

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{Drill, NODES, PRIMARY, REJOIN_LIMIT, addr_of, process_alive, process_exists};
use crate::{
    lab::{
        self,
        lb as lab_lb,
        net::ns_cmd,
        postgres::wait_for,
        topology::{Host, READ_PORT, WRITE_PORT, home_lb, host, load_balancers},
    },
    setup::PG_BIN,
    sh,
};

impl Drill {
    /// PostgreSQL as a healthy cluster, as `lb`'s pglb routes it: pg1 the only primary, pg2 and
    /// pg3 streaming from it, every node up, pg1 routed for writes and the standbys for reads.
    pub(super) fn cluster_healthy_on(&self, lb: &Host) -> bool {
        let Some(v) = self.view(PRIMARY) else { return false };
        if v.in_recovery || self.primaries().len() != 1 {
            return false;
        }
        if self.streaming_from(PRIMARY) != ["pg2", "pg3"] {
            return false;
        }
        let Ok(rows) = self.status_of(lb) else { return false };
        rows.len() == 3
            && rows.iter().all(|r| {
                let want = if r.node == PRIMARY { WRITE_PORT.to_string() } else { READ_PORT.to_string() };
                r.state == "up" && r.routed == want
            })
    }

    /// Every pglb runs and the VIP is where `lab up` put it: on its home alone.
    pub(super) fn vip_home(&self) -> bool {
        load_balancers().all(lab_lb::running) && lab_lb::holds_vip_alone(home_lb()).unwrap_or(false)
    }

    pub(super) fn healthy(&self) -> bool {
        self.vip_home() && self.cluster_healthy_on(home_lb())
    }

    /// Healthy but for the VIP: another load balancer (lb2) holds it and the home (lb1) runs as
    /// its backup, as after a drill that restarted lb1's pglb (a returning load balancer does
    /// not preempt a healthy master); that holder.
    pub(super) fn healthy_but_vip_away(&self) -> Option<&'static Host> {
        let home = home_lb();
        let holders: Vec<&'static Host> = load_balancers().filter(|lb| lb.name != home.name && lab_lb::holds_vip(lb).unwrap_or(false)).collect();
        let away = match holders[..] {
            [away] => away,
            _ => return None,
        };
        let healthy = load_balancers().all(lab_lb::running) && !lab_lb::holds_vip(home).unwrap_or(true) && self.cluster_healthy_on(away);
        healthy.then_some(away)
    }

    /// [`lab::lb::bring_vip_home`]: a graceful restart of `away`'s pglb hands the VIP to its home.
    pub(super) fn bring_vip_home(&self, away: &Host) -> Result<()> {
        let home = home_lb().name;
        println!("drill: {} holds the VIP and {home} is its backup (no preemption of a healthy master): bringing it home with a graceful restart of {}'s pglb", away.name, away.name);
        let took = lab_lb::bring_vip_home(&self.pglb)?;
        println!("drill: the VIP is home on {home} after {} ms", took.as_millis());
        Ok(())
    }

    /// Waits for a healthy cluster; repairs what a drill leaves behind (a stopped pglb or node,
    /// an old primary pglb has not rejoined yet, pg1 a standby, the VIP on lb2).
    pub(super) fn ensure_healthy(&self) -> Result<()> {
        // pglb rejoins an old primary by itself within seconds: give it the time first.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.stably_healthy() {
                return Ok(());
            }
            if let Some(away) = self.healthy_but_vip_away() {
                self.bring_vip_home(away)?;
                continue;
            }
            thread::sleep(Duration::from_millis(200));
        }
        println!("drill: the cluster is not healthy: repairing");
        for lb in load_balancers() {
            if !lab_lb::running(lb) {
                lab_lb::start(lb, &lab_lb::stable_binary())?;
            }
        }
        for n in NODES {
            if self.view(n).is_none() {
                self.start_node(n)?;
            }
        }
        let primary = self.find_primary().context("no primary left to repair from")?;
        for n in NODES.into_iter().filter(|n| *n != primary) {
            // pglb rejoins a fenced old primary itself; give it the time before stepping in.
            let ok = |d: &Drill| d.view(n).is_some_and(|v| v.in_recovery && v.receiver.contains(addr_of(&primary)));
            if wait_for(REJOIN_LIMIT, &format!("{n} to stream from {primary}"), || Ok(ok(self))).is_err() {
                println!("drill: {n} still does not stream from {primary}: rejoining it by hand");
                self.rejoin(n, &primary)?;
            }
        }
        if primary != PRIMARY {
            wait_for(Duration::from_secs(30), "pg1 to be routed as a reader before switching back", || {
                Ok(self.status()?.iter().any(|r| r.node == PRIMARY && r.routed == READ_PORT.to_string()))
            })?;
            self.pglb_cmd(&["switchover", "--to", PRIMARY, "--config", &self.config_of(self.holder()?)])?;
        }
        wait_for(Duration::from_secs(60), "a healthy cluster (pg1 writer, pg2 and pg3 streaming readers, the VIP on lb1)", || {
            if let Some(away) = self.healthy_but_vip_away() {
                self.bring_vip_home(away)?;
            }
            Ok(self.stably_healthy())
        })
    }

    /// Healthy, and still healthy 2 s later (right after a switch back, the standbys' timeline
    /// and lag settle for a moment).
    pub(super) fn stably_healthy(&self) -> bool {
        if !self.healthy() {
            return false;
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            thread::sleep(Duration::from_millis(250));
            if !self.healthy() {
                return false;
            }
        }
        true
    }

    /// Starts a node's PostgreSQL if no postmaster runs there, once the processes of a killed
    /// postmaster have gone (its backends notice the postmaster's death a moment later and hold
    /// the shared memory until then; the dead postmaster's pid lingers while it is a zombie).
    pub(super) fn start_node(&self, node: &str) -> Result<()> {
        let h = host(node)?;
        let old = self.postmaster_pid(node).ok();
        if old.is_some_and(process_alive) {
            return Ok(()); // running (or being restarted by pglb's rejoin)
        }
        wait_for(Duration::from_secs(15), &format!("the old processes of {node} to exit"), || {
            Ok(old.is_none_or(|pid| !process_exists(pid)) && lab::net::namespace_pids(&h.ns())?.is_empty())
        })?;
        lab::postgres::start(h)
    }

    /// `pglb node rejoin` on `node` against `primary`, run inside the node's namespace.
    pub(super) fn rejoin(&self, node: &str, primary: &str) -> Result<()> {
        let h = host(node)?;
        let data = h.dir().join("data");
        let pass = h.dir().join("pgpass");
        let mut c = ns_cmd(&h.ns(), self.pglb.to_str().unwrap(), [
            "node", "rejoin", "--primary", addr_of(primary), "--name", node, "--data-dir", data.to_str().unwrap(),
            "--passfile", pass.to_str().unwrap(), "--pg-bin", PG_BIN,
        ]);
        c.env("PGLB_LOG", "warn");
        sh::run(&mut c).with_context(|| format!("pglb node rejoin of {node} onto {primary}"))
    }
}
