//! Manual failover (`pglb failover --to NODE [--accept-data-loss]`): the operator promotes a
//! standby while automatic failover is held back. The request is checked against what must
//! hold whatever the operator says ([`guards::MANUAL_GUARDS`]: the writer declared down, this
//! instance the master, the decision recordable, no sign of a live primary or of another
//! promotion), then the target ([`Machine::manual_unfit`]), then the [`Gap`]: what the target
//! lacks of the furthest position known. A gap that is not zero, or not known, needs
//! `accept_data_loss`. An accepted request takes failover's own path from its last step: writes
//! refused, the promotion recorded then sent ([`Machine::start_promotion`]), and on success the
//! same actions as an automatic failover ([`Machine::finish_promotion`]: the new writer routed,
//! the lost writer fenced, the other standbys re-pointed, `synchronous_standby_names` set),
//! with [`ManualOutcome::Done`] in place of `FailedOver`.
//!
//! ```text
//!  phase        request                                          actions                          next
//!  -----------  -----------------------------------------------  -------------------------------  -----------
//!  WriterLost   a kept guard fails, target unfit, or a gap and   Alert(Manual(Refused)), Log      WriterLost
//!               no accept_data_loss
//!  WriterLost   accepted                                         SetWriter(None) if routed, Log   FailingOver
//!  FailingOver  Promote done ok (or probed)                      as failover, Alert(Manual(Done)) Steady
//!  FailingOver  Promote failed, withdrawn or given up            Alert(Manual(Failed))            WriterLost
//!  any other    request                                          Alert(Manual(Refused)), Log      same
//! ```

use super::*;

/// A manual failover accepted and not ended yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ManualRun {
    pub to: NodeId,
    pub gap: Gap,
    /// Why automatic failover was held back when the operator acted.
    pub held_back: Option<Blocked>,
}

impl ManualRun {
    /// The outcome once `to` is the writer on `timeline`, `old` fenced as replaced.
    pub fn done(self, old: Option<NodeId>, timeline: u32) -> ManualOutcome {
        let fenced = old.filter(|&o| o != self.to);
        ManualOutcome::Done { from: old, to: self.to, timeline, fenced, gap: self.gap, held_back: self.held_back }
    }
}

impl Machine {
    /// `pglb failover`: refused with its reason, or the promotion started.
    pub(super) fn on_manual_failover(&mut self, r: &ManualRequest, now: Duration, out: &mut Vec<Action>) {
        match self.manual_check(r, now) {
            Err(reason) => {
                let to = if r.to < self.nodes.len() { self.name(r.to).to_owned() } else { format!("#{}", r.to) };
                log(out, Level::Warn, format!("manual failover to {to} refused: {}", reason.explain(&|n| self.name(n).to_owned())));
                out.push(Action::Alert(Alert::Manual(ManualOutcome::Refused { to: r.to, reason })));
            }
            Ok((old, gap)) => self.start_manual(old, r.to, gap, now, out),
        }
    }

    /// Whether `r` may be acted on now: the lost writer, and what the target lacks.
    fn manual_check(&self, r: &ManualRequest, now: Duration) -> Result<(Option<NodeId>, Gap), ManualRefused> {
        if r.to >= self.nodes.len() {
            return Err(ManualRefused::UnknownNode { to: r.to });
        }
        let (old, since) = match self.phase {
            Phase::WriterLost { old, since } => (old, since),
            Phase::Starting => return Err(ManualRefused::Starting),
            Phase::Steady => {
                let writer = self.writer;
                let failures = writer.map_or(0, |w| self.nodes[w].failures);
                return Err(if failures > 0 {
                    ManualRefused::WriterNotDown { writer, failures, needed: self.p.failover_after }
                } else {
                    ManualRefused::WriterHealthy { writer }
                });
            }
            other => return Err(ManualRefused::Busy { phase: other.as_str() }),
        };
        let check = guards::Check { old, since, now };
        for guard in guards::MANUAL_GUARDS {
            guard(self, &check).map_err(|b| match b {
                Blocked::Debouncing { failures, needed } => ManualRefused::WriterNotDown { writer: old, failures, needed },
                Blocked::NotMaster => ManualRefused::NotMaster,
                other => ManualRefused::Held(other),
            })?;
        }
        if let Some(why) = self.manual_unfit(r.to, old) {
            return Err(ManualRefused::Target { to: r.to, why });
        }
        let gap = self.gap(r.to, old);
        if !gap.is_zero() && !r.accept_data_loss {
            return Err(ManualRefused::DataLoss { to: r.to, gap });
        }
        Ok((old, gap))
    }

    /// Why `to` may not be promoted by hand, whatever the operator accepts: the one place that
    /// says which node may be (a reachable, unfenced standby on the newest timeline, not the
    /// lost writer, neither `nofailover` nor disabled).
    pub(super) fn manual_unfit(&self, to: NodeId, old: Option<NodeId>) -> Option<Unfit> {
        let t = &self.nodes[to];
        let floor = self.writer_timeline.unwrap_or(0);
        if Some(to) == old {
            Some(Unfit::OldWriter)
        } else if t.fence.is_some() {
            Some(Unfit::Fenced)
        } else if self.p.nodes[to].nofailover {
            Some(Unfit::NoFailover)
        } else if self.marked(to, MarkKind::Disable) {
            Some(Unfit::Disabled)
        } else {
            match t.status.as_ref().filter(|_| t.up()) {
                None => Some(Unfit::NotAnswering),
                Some(s) if !s.in_recovery => Some(Unfit::Primary),
                Some(s) if self.writer_timeline.is_some_and(|tl| s.timeline != tl) => Some(Unfit::Timeline { timeline: s.timeline, floor }),
                Some(_) => None,
            }
        }
    }

    /// What promoting `to` loses, from what is known here: the lost writer's last probed
    /// position, the other standbys' last positions on the writer's timeline (a standby down
    /// counts with what it was last seen to have, and as unseen), against the target's.
    fn gap(&self, to: NodeId, old: Option<NodeId>) -> Gap {
        let on_timeline = |s: &NodeStatus| self.writer_timeline.is_none_or(|tl| s.timeline == tl);
        let lost = old.or(self.last_writer);
        let probed = lost.and_then(|o| self.nodes[o].status.as_ref().filter(|s| !s.in_recovery && on_timeline(s))?.current_lsn);
        let primary = self.writer_lsn.max(probed).zip(lost);
        let others = (0..self.nodes.len()).filter(|&n| n != to && Some(n) != lost);
        let furthest_standby = others
            .clone()
            .filter_map(|n| Some((self.nodes[n].status.as_ref().filter(|s| s.in_recovery && on_timeline(s))?.received()?, n)))
            .max();
        let unseen = others.filter(|&n| !self.visible_standby(n) && !self.on_older_timeline(n)).collect();
        let target = self.nodes[to].status.as_ref();
        Gap { primary, furthest_standby, received: target.and_then(NodeStatus::received), replayed: target.and_then(|s| s.replay_lsn), unseen }
    }

    /// Accepted: writes stay refused, the promotion goes out once recorded (as failover's).
    fn start_manual(&mut self, old: Option<NodeId>, to: NodeId, gap: Gap, now: Duration, out: &mut Vec<Action>) {
        let held_back = self.blocked.take();
        let why = held_back.as_ref().map_or_else(|| "nothing".to_owned(), |b| b.to_string());
        let loss = describe_gap(&gap, &|n| self.name(n).to_owned());
        log(out, Level::Warn, format!("manual failover (pglb failover) to {}: automatic failover was held back by: {why}; {loss}", self.name(to)));
        if self.writer.is_some() {
            self.route_writer(None, out);
        }
        self.manual = Some(ManualRun { to, gap, held_back });
        self.start_promotion(old, to, now, out);
    }

    /// Whether `n` is the target of the manual failover under way (the promotion it overrode
    /// the pause and the quorum for).
    pub(super) fn manual_target(&self, n: NodeId) -> bool {
        self.manual.as_ref().is_some_and(|m| m.to == n)
    }

    /// The manual failover of `n` ends without a promotion: the operator is told why.
    pub(super) fn give_up_manual(&mut self, n: NodeId, reason: String, out: &mut Vec<Action>) {
        if let Some(m) = self.manual.take_if(|m| m.to == n) {
            out.push(Action::Alert(Alert::Manual(ManualOutcome::Failed { to: m.to, reason })));
        }
    }

    /// A manual failover whose promotion phase ended some other way (a stall, the state file,
    /// a newer primary found) is over too.
    pub(super) fn manual_ended(&mut self, out: &mut Vec<Action>) {
        let Some(to) = self.manual.as_ref().map(|m| m.to) else { return };
        if !matches!(self.phase, Phase::FailingOver { candidate, .. } if candidate == to) {
            let reason = format!(
                "the promotion of {} was given up (phase {}): it may have been sent before; `pglb status` and the log say where the cluster stands",
                self.name(to),
                self.phase.as_str()
            );
            self.give_up_manual(to, reason, out);
        }
    }
}
