//! Node marks (`pglb node drain|undrain|disable|enable`): the newest mark per node and kind,
//! from the operator here, a peer's report or the state file, and what a mark changes.
//!
//! - A drained node leaves the read ports' set (rule 7, `compute_readers`) for new connections;
//!   a connection already open goes on (the data plane keeps each flow's backend). Drain is
//!   about the node as a standby: a drained node that becomes the writer gets the writes, and
//!   the reads when no standby qualifies, as any writer.
//! - A disabled node is never a failover candidate (rule 3, like `nofailover`, also in the
//!   guard `whole_cluster_in_view`), never a switchover target, and a promotion held for it is
//!   not sent. It still serves reads.

use std::net::Ipv4Addr;

use super::*;

impl Machine {
    /// Whether the newest mark of `kind` on node `n` is on.
    pub(super) fn marked(&self, n: NodeId, kind: MarkKind) -> bool {
        let name = self.name(n);
        self.marks.iter().any(|m| m.kind == kind && m.on && m.node == name)
    }

    /// Whether `n` may be promoted: neither `nofailover` in the config nor disabled.
    pub(super) fn may_promote(&self, n: NodeId) -> bool {
        !self.p.nodes[n].nofailover && !self.marked(n, MarkKind::Disable)
    }

    /// A mark from the operator (`peer` = `None`) or a peer's report: taken when it is newer
    /// than the one known here for its node and kind. A mark on a node this config does not
    /// have is ignored (logged when the operator's: the runtime checks names first).
    pub(super) fn on_mark(&mut self, m: &NodeMark, peer: Option<Ipv4Addr>, out: &mut Vec<Action>) {
        if !self.p.nodes.iter().any(|n| n.name == m.node) {
            if peer.is_none() {
                log(out, Level::Warn, format!("node mark: there is no node {}; ignored", m.node));
            }
            return;
        }
        let slot = self.marks.iter().position(|c| c.same_slot(m));
        if let Some(i) = slot
            && !m.newer_than(&self.marks[i])
        {
            if peer.is_none() && self.marks[i] != *m {
                let msg = format!("node mark: the {} of {} dated {} is older than the one in force; ignored", m.kind.as_str(), m.node, rfc3339_ms(m.at_ms));
                log(out, Level::Warn, msg);
            }
            return;
        }
        let from = peer.map_or_else(String::new, |p| format!(" (learned from peer {p})"));
        let what = match (m.kind, m.on) {
            (MarkKind::Drain, true) => "no new read connection goes to it; open ones go on",
            (MarkKind::Drain, false) => "it takes new read connections again whenever it qualifies as a reader",
            (MarkKind::Disable, true) => "never a failover candidate or switchover target",
            (MarkKind::Disable, false) => "it may be a failover candidate and a switchover target again",
        };
        let msg = format!("node {}: {} on {} at {}{from}: {what}", m.node, m.state_word(), m.by, rfc3339_ms(m.at_ms));
        log(out, Level::Warn, msg);
        match slot {
            Some(i) => self.marks[i] = m.clone(),
            None => {
                self.marks.push(m.clone());
                self.marks.sort_by(|a, b| (a.node.as_str(), a.kind).cmp(&(b.node.as_str(), b.kind)));
            }
        }
    }

    /// The marks of the state file; those on nodes no longer configured are dropped, and said.
    pub(super) fn restore_marks(&mut self, marks: &[NodeMark], notes: &mut Vec<(Level, String)>) {
        for m in marks {
            if !self.p.nodes.iter().any(|n| n.name == m.node) {
                notes.push((Level::Warn, format!("state file: the {} mark of node {} is no longer configured; ignored", m.kind.as_str(), m.node)));
                continue;
            }
            let mut ignored = Vec::new();
            self.on_mark(m, None, &mut ignored);
            if m.on {
                let msg = format!("state file: {} {} on {} at {}", m.node, m.state_word(), m.by, rfc3339_ms(m.at_ms));
                notes.push((Level::Info, msg));
            }
        }
    }
}
