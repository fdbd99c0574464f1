//! A reload of the config (`pglb reload`, SIGHUP) reaches the machine as
//! [`Event::Reconfigure`]: new parameters for the same nodes, in the same order, and the same
//! peers (the runtime refuses a reload that changes either: node ids and quorum members are
//! fixed for a run). Thresholds, timeouts, lag limits, priorities, `nofailover` and read weights
//! apply from the next decision on; a changed read weight re-sends the readers (the data plane
//! builds its Maglev table from the weights) even when the set of readers stays the same.

use super::*;

impl Machine {
    pub(super) fn reconfigure(&mut self, p: &Params, out: &mut Vec<Action>) {
        let names = |p: &Params| p.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        if names(p) != names(&self.p) || p.peers != self.p.peers || p.vrrp_enabled != self.p.vrrp_enabled {
            let msg = "reload: new parameters for other nodes or peers are not taken (a restart applies those); the running ones stay";
            log(out, Level::Error, msg.to_owned());
            return;
        }
        let weights = |p: &Params| p.nodes.iter().map(|n| n.read_weight).collect::<Vec<_>>();
        if weights(p) != weights(&self.p) {
            // Re-sent by `reconcile_readers` (with the new weights) once the machine decides.
            self.readers = None;
        }
        self.p = p.clone();
        log(out, Level::Info, "reload: new failover parameters in force".to_owned());
    }
}
