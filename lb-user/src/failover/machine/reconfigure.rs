//! A reload of the config (`pglb reload`, SIGHUP) reaches the machine as
//! [`Event::Reconfigure`]: new parameters, with the same peers and the same nodes in the same
//! order, except nodes added at the end or removed from the end (a node's id is its place in
//! the list, so no other node's id moves). Thresholds, timeouts, lag limits, priorities,
//! `nofailover` and read weights apply from the next decision on; a changed read weight re-sends
//! the readers (the data plane builds its Maglev table from the weights) even when the set of
//! readers stays the same.
//!
//! An added node starts unknown, as every node does at start: it is routed once probes say it
//! qualifies. A removed node leaves the readers and the candidates at once; the runtime asks
//! [`Machine::removal_blocker`] first, and the machine refuses on its own too: not the writer,
//! not while a failover or switchover runs, not a node another node's fence names.

use super::*;

impl Machine {
    pub(super) fn reconfigure(&mut self, p: &Params, out: &mut Vec<Action>) {
        let (old, new) = (self.p.nodes.len(), p.nodes.len());
        let kept = old.min(new);
        let same_kept = self.p.nodes[..kept].iter().zip(&p.nodes[..kept]).all(|(a, b)| a.name == b.name);
        let blocked = if new < old { self.removal_blocker(new) } else { None };
        if !same_kept || p.peers != self.p.peers || p.vrrp_enabled != self.p.vrrp_enabled || blocked.is_some() {
            let why = blocked.unwrap_or_else(|| "other nodes (not only added or removed at the end) or other peers".to_owned());
            log(out, Level::Error, format!("reload: new parameters not taken ({why}); the running ones stay"));
            return;
        }
        let weights = |p: &Params| p.nodes[..kept].iter().map(|n| n.read_weight).collect::<Vec<_>>();
        if weights(p) != weights(&self.p) {
            // Re-sent by `reconcile_readers` (with the new weights) once the machine decides.
            self.readers = None;
        }
        for n in old..new {
            let mut t = NodeTrack::new();
            (t.last_count_at, t.last_change) = (self.now, self.now);
            self.nodes.push(t);
            log(out, Level::Info, format!("reload: node {} added: probed from now on, routed once it qualifies", p.nodes[n].name));
        }
        if new < old {
            self.forget_nodes_from(new);
            let names: Vec<&str> = self.p.nodes[new..].iter().map(|n| n.name.as_str()).collect();
            log(out, Level::Info, format!("reload: node {} removed: no longer routed or a candidate (its established flows finish)", names.join(", ")));
        }
        self.p = p.clone();
        log(out, Level::Info, "reload: new failover parameters in force".to_owned());
    }

    /// Why the nodes from id `from` on cannot be removed now, if they cannot.
    pub fn removal_blocker(&self, from: NodeId) -> Option<String> {
        let gone = |n: NodeId| n >= from;
        let name = |n: NodeId| self.p.nodes[n].name.clone();
        if let Some(w) = self.writer.filter(|&w| gone(w)) {
            return Some(format!("{} is the writer: switch over to another node first", name(w)));
        }
        if !matches!(self.phase, Phase::Steady | Phase::Starting) {
            return Some(format!("the cluster is not steady (phase {})", self.phase.as_str()));
        }
        if self.held.is_some() || self.promoting_from.is_some_and(|(n, _)| gone(n)) {
            return Some("a promotion is in flight".to_owned());
        }
        let names_gone = |f: &FenceReason| match f {
            FenceReason::SplitBrain { writer, .. } => gone(*writer),
            FenceReason::Replaced { by } => gone(*by),
            FenceReason::OlderTimeline { .. } => false,
        };
        if let Some(n) = (0..from.min(self.nodes.len())).find(|&n| self.nodes[n].fence.as_ref().is_some_and(names_gone)) {
            return Some(format!("the fence of {} names it", name(n)));
        }
        None
    }

    /// Whether an action's result names a node a reload removed while it ran.
    pub(super) fn names_a_removed_node(&self, action: &Action) -> bool {
        let nodes = match action {
            Action::Promote { node } => [Some(*node), None],
            Action::Repoint { node, primary } | Action::Demote { node, primary } | Action::Rejoin { node, primary } => [Some(*node), Some(*primary)],
            _ => [None, None],
        };
        nodes.iter().flatten().any(|&n| n >= self.nodes.len())
    }

    /// Drops the nodes from id `from` on, and every mention of them.
    fn forget_nodes_from(&mut self, from: NodeId) {
        let gone = |n: NodeId| n >= from;
        self.nodes.truncate(from);
        if self.readers.as_ref().is_some_and(|r| r.iter().any(|&n| gone(n))) {
            self.readers = None;
        }
        self.last_writer = self.last_writer.filter(|&n| !gone(n));
        self.floor_raised_by_standby = self.floor_raised_by_standby.filter(|&(_, _, n)| !gone(n));
        self.ambiguous.retain(|&n| !gone(n));
        self.settling.retain(|&n| !gone(n));
    }
}
