//! Failover: the writer lost, rule 2's guards asked ([`super::guards`]), rule 3's candidate,
//! the settling step, the promotion (after its record) and its outcome.

use super::*;

impl Machine {
    /// Phase handler: no healthy writer. Re-adopt a primary by rule 1, or fail over when every
    /// guard of rule 2 holds.
    pub(super) fn on_writer_lost(&mut self, old: Option<NodeId>, since: Duration, now: Duration, out: &mut Vec<Action>) {
        // The old writer counts as a primary again as soon as it answers as one (unless a peer
        // out of hearing may be replacing it: `return_unconfirmed`).
        if let Some(c) = self.apply_rule1(old.or(self.last_writer), out) {
            if let Some(reason) = self.return_unconfirmed(old, c) {
                if self.blocked.as_ref() != Some(&reason) {
                    log(out, Level::Warn, format!("no writer: {reason}"));
                }
                self.blocked = Some(reason);
                return;
            }
            let tl = self.writer_timeline.unwrap_or_default();
            if Some(c) == old {
                log(out, Level::Info, format!("writer {} answers again: kept", self.name(c)));
            } else {
                let msg = format!("{} is the primary on the highest timeline ({tl}): it becomes the writer", self.name(c));
                log(out, Level::Warn, msg);
                out.push(Action::Alert(Alert::WriterChanged { from: old, to: c, timeline: tl }));
            }
            self.route_writer(Some(c), out);
            self.blocked = None;
            self.phase = Phase::Steady;
            return;
        }
        match self.failover_check(old, since, now) {
            Ok(candidate) => self.start_settling(old, candidate, now, out),
            Err(reason) => {
                let changed = self.blocked.as_ref().is_none_or(|b| discriminant(b) != discriminant(&reason));
                if changed {
                    let writer = old.map_or("none", |o| self.name(o));
                    log(out, Level::Warn, format!("writer lost (was {writer}); no failover: {reason}"));
                    if !matches!(reason, Blocked::Debouncing { .. }) {
                        out.push(Action::Alert(Alert::FailoverBlocked { writer: old, reason: reason.clone() }));
                    }
                }
                // The old writer is down and a standby that answers does not follow it: whoever
                // can fail over (a master out of our sight among them) may be promoting. Writes
                // stop here until a probe shows it a primary again on the newest timeline known
                // here; it would otherwise get them the moment it comes back, stale or not. When
                // no other node answers either, nothing says the writer is gone rather than this
                // instance blind (starved by a flood, say): it stays routed, and its clients'
                // connections are not reset.
                if self.writer.is_some()
                    && self.writer == old
                    && !matches!(reason, Blocked::Debouncing { .. })
                    && self.streaming_standby(old).is_none()
                    && (0..self.nodes.len()).any(|n| Some(n) != old && self.reaches(n))
                    && !self.flood
                {
                    let writer = old.map_or("none", |o| self.name(o));
                    log(out, Level::Warn, format!("writes refused: the writer {writer} is down and no reachable standby streams from it"));
                    self.route_writer(None, out);
                }
                self.blocked = Some(reason);
            }
        }
    }

    /// Why the lost writer `old`, answering again as the primary `c` on the newest timeline,
    /// may not be taken back yet. With pglb peers and none heard within `peer_timeout` (a
    /// split, or a peer that is down), a peer may be failing over out of hearing: it may have
    /// re-pointed the standbys and be promoting one this very moment. The writer is taken back
    /// once a standby probed since it answers again streams from it — a standby the peer sees
    /// too, so the peer's own rule 2 holds its failover back (`StandbyStreaming`) — or once a
    /// peer is heard again. Meanwhile writes are refused (neither primary gets them).
    pub(super) fn return_unconfirmed(&self, old: Option<NodeId>, c: NodeId) -> Option<Blocked> {
        let peer_heard = self.peers_heard.iter().flatten().any(|&h| self.now.saturating_sub(h) <= self.p.peer_timeout);
        if old != Some(c) || !self.p.vrrp_enabled || self.p.peers.is_empty() || peer_heard {
            return None;
        }
        let back = self.nodes[c].answering_since;
        let followed = (0..self.nodes.len()).any(|n| {
            n != c
                && self.nodes[n].status_at >= back
                && self.nodes[n].usable_standby().is_some_and(|s| s.streams_from(&self.p.nodes[c]))
        });
        (!followed).then_some(Blocked::ReturnUnconfirmed { writer: c })
    }

    /// Rule 2's guards, then rule 3's candidate.
    pub(super) fn failover_check(&self, old: Option<NodeId>, since: Duration, now: Duration) -> Result<NodeId, Blocked> {
        let check = guards::Check { old, since, now };
        for guard in guards::GUARDS {
            guard(self, &check)?;
        }
        self.pick_candidate(old, now)
    }

    /// Rule 3: reachable standby on the writer's timeline, neither nofailover nor disabled
    /// ([`Self::may_promote`]), within the lag limit; highest received LSN, then priority, then
    /// name; never behind another reachable standby (fenced ones included: a fenced node that
    /// streams may hold acknowledged commits).
    pub(super) fn pick_candidate(&self, old: Option<NodeId>, now: Duration) -> Result<NodeId, Blocked> {
        let standbys: Vec<(NodeId, &NodeStatus)> =
            (0..self.nodes.len()).filter(|&n| Some(n) != old).filter_map(|n| Some((n, self.nodes[n].usable_standby()?))).collect();
        let visible: Vec<(NodeId, &NodeStatus)> = (0..self.nodes.len())
            .filter(|&n| Some(n) != old && self.nodes[n].up())
            .filter_map(|n| Some((n, self.nodes[n].status.as_ref().filter(|s| s.in_recovery)?)))
            .collect();
        let timeline = self.writer_timeline.or_else(|| standbys.iter().map(|(_, s)| s.timeline).max());
        let on_timeline = |s: &NodeStatus| Some(s.timeline) == timeline;
        let max_received = visible.iter().filter(|(_, s)| on_timeline(s)).filter_map(|(_, s)| s.received()).max();
        let reference = self.writer_lsn.max(max_received).unwrap_or_default();
        let mut candidates: Vec<Candidate<'_>> = standbys
            .iter()
            .filter(|(n, s)| {
                self.may_promote(*n) && on_timeline(s) && self.nodes[*n].excluded_until.is_none_or(|u| now >= u)
            })
            .filter_map(|&(n, s)| {
                let received = s.received()?;
                rules::within_lag(reference, received, self.p.max_lag_on_failover_bytes).then(|| Candidate {
                    node: n,
                    received,
                    priority: self.p.nodes[n].priority,
                    name: &self.p.nodes[n].name,
                })
            })
            .collect();
        rules::rank_candidates(&mut candidates);
        let best = candidates.first().ok_or(Blocked::NoCandidate)?;
        if let Some(&(ahead, _)) =
            visible.iter().find(|(_, s)| on_timeline(s) && s.received().is_some_and(|r| r > best.received))
        {
            return Err(Blocked::CandidateBehind { candidate: best.node, ahead });
        }
        Ok(best.node)
    }

    /// Remembers (durably: the next `Persist` goes out before the `Promote`) that `n` is being
    /// promoted from the writer's timeline.
    pub(super) fn note_promotion(&mut self, n: NodeId) {
        let from = self.writer_timeline.or_else(|| self.nodes[n].status.as_ref().map(|s| s.timeline)).unwrap_or(0);
        self.promoting_from = Some((n, from));
    }

    /// Failover, step one: every guard holds for `candidate`. Refuse writes (this load
    /// balancer sends nothing more to the old writer) and point every other reachable standby at
    /// the candidate, so none of them can acknowledge another commit of the old writer (alive
    /// somewhere, or coming back) that the promoted node would lack. The ranking is done again
    /// on positions probed after that ([`Self::on_settling`]).
    pub(super) fn start_settling(&mut self, old: Option<NodeId>, candidate: NodeId, now: Duration, out: &mut Vec<Action>) {
        let (votes, members) = self.quorum(now);
        let why = match old {
            Some(o) => format!("{} failed {} consecutive probes", self.name(o), self.nodes[o].failures),
            None => format!("no primary for {:?}", self.p.detection_time()),
        };
        let msg = format!(
            "failover: {} is the candidate because {why}; quorum {votes} of {members}; no reachable standby streams from the old writer; writes refused and the other standbys pointed at it before the final ranking",
            self.name(candidate)
        );
        log(out, Level::Warn, msg);
        out.push(Action::Alert(Alert::FailoverStarted { from: old, candidate }));
        if self.writer.is_some() {
            self.route_writer(None, out);
        }
        self.settling.clear();
        for n in 0..self.nodes.len() {
            if n != candidate && Some(n) != old && self.nodes[n].usable_standby().is_some() {
                out.push(Action::Repoint { node: n, primary: candidate });
                self.nodes[n].last_repoint = Some(now);
                self.settling.push(n);
            }
        }
        // The candidate's position after the writes were refused.
        out.push(Action::Probe { node: candidate });
        self.blocked = None;
        let deadline = now + self.p.probe_interval * SETTLE_INTERVALS;
        self.phase = Phase::Settling { old, candidate, since: now, deadline };
    }

    /// Failover, step two: the standbys' positions as probed after they stopped following the
    /// old writer (each one's probe taken after its re-point was done; the candidate's after the
    /// writes were refused), or what is known at the deadline. Every guard is checked again on
    /// them, the best candidate ranked again — it may differ — and promoted.
    pub(super) fn on_settling(&mut self, old: Option<NodeId>, candidate: NodeId, since: Duration, deadline: Duration, now: Duration, out: &mut Vec<Action>) {
        // The old writer (or a newer primary) answering ends it, as in WriterLost.
        if let Some(c) = self.apply_rule1(old.or(self.last_writer), out)
            && self.return_unconfirmed(old, c).is_none()
        {
            let tl = self.writer_timeline.unwrap_or_default();
            log(out, Level::Warn, format!("failover called off: {} is a primary on timeline {tl}: it becomes the writer", self.name(c)));
            if Some(c) != old {
                out.push(Action::Alert(Alert::WriterChanged { from: old, to: c, timeline: tl }));
            }
            self.route_writer(Some(c), out);
            self.phase = Phase::Steady;
            return;
        }
        let fresh = |n: NodeId| {
            let t = &self.nodes[n];
            t.repoint_done_at.is_some_and(|d| d >= since && t.status_at >= d)
        };
        let settled = self.nodes[candidate].status_at >= since && self.settling.iter().all(|&n| fresh(n));
        if !settled && now < deadline {
            return;
        }
        match self.failover_check(old, Duration::ZERO, now) {
            Ok(best) => self.start_promotion(old, best, now, out),
            Err(reason) => {
                let writer = old.map_or("none", |o| self.name(o));
                log(out, Level::Warn, format!("failover held back after the standbys were read again (writer was {writer}): {reason}"));
                out.push(Action::Alert(Alert::FailoverBlocked { writer: old, reason: reason.clone() }));
                self.blocked = Some(reason);
                self.phase = Phase::WriterLost { old, since: now };
            }
        }
    }

    /// Failover, step three: promote `candidate` (durably noted first).
    pub(super) fn start_promotion(&mut self, old: Option<NodeId>, candidate: NodeId, now: Duration, out: &mut Vec<Action>) {
        let received = self.nodes[candidate].status.as_ref().and_then(NodeStatus::received).unwrap_or_default();
        let msg = format!(
            "failover: promoting {} (received {received:#x}, priority {}) once the state file records it",
            self.name(candidate),
            self.p.nodes[candidate].priority
        );
        log(out, Level::Warn, msg);
        self.note_promotion(candidate);
        self.held = Some(candidate);
        self.phase = Phase::FailingOver { old, candidate, deadline: now + self.p.promote_timeout };
    }

    /// Phase handler: waiting for the promotion of `candidate`.
    pub(super) fn on_failing_over(
        &mut self,
        old: Option<NodeId>,
        candidate: NodeId,
        deadline: Duration,
        event: Option<&Event>,
        now: Duration,
        out: &mut Vec<Action>,
    ) {
        match event {
            _ if self.held == Some(candidate) && self.record_failing => {
                self.drop_unrecorded_promotion(candidate, out);
                out.push(Action::Alert(Alert::FailoverBlocked { writer: old, reason: Blocked::StateNotRecorded }));
                self.blocked = Some(Blocked::StateNotRecorded);
                self.phase = Phase::WriterLost { old, since: now };
            }
            Some(Event::ActionDone { action: Action::Promote { node }, result }) if *node == candidate => match result {
                Ok(()) => self.finish_promotion(candidate, Promotion::Failover { old }, now, out),
                Err(e) => self.promotion_failed(old, candidate, e.clone(), now, out),
            },
            _ if self.promoted_by_probe(candidate) => self.finish_promotion(candidate, Promotion::Failover { old }, now, out),
            _ if now >= deadline => {
                let e = format!("no report within promote_timeout ({:?})", self.p.promote_timeout);
                self.promotion_failed(old, candidate, e, now, out)
            }
            _ => {}
        }
    }

    /// Whether a probe already shows `n` promoted: a primary above the timeline it was promoted
    /// from.
    pub(super) fn promoted_by_probe(&self, n: NodeId) -> bool {
        let from = self.promoting_from.filter(|(p, _)| *p == n).map_or(self.writer_timeline.unwrap_or(0), |(_, tl)| tl);
        self.nodes[n].usable_primary().is_some_and(|s| s.timeline > from)
    }

    /// The promotion's outcome is unknown (an error may come after the server acted): the
    /// candidate stays the promotion in flight, so no other standby is promoted and no primary
    /// on the old timeline adopted until a probe shows what it is.
    pub(super) fn promotion_failed(&mut self, old: Option<NodeId>, candidate: NodeId, error: String, now: Duration, out: &mut Vec<Action>) {
        if self.held == Some(candidate) {
            // Never sent: its record did not land in time.
            self.drop_unrecorded_promotion(candidate, out);
            self.give_up_manual(candidate, format!("the promotion was not made: {error}"), out);
            self.phase = Phase::WriterLost { old, since: now };
            return;
        }
        self.give_up_manual(candidate, format!("promoting {} failed: {error}", self.name(candidate)), out);
        let msg = format!("promoting {} failed: {error}; trying again without it once a probe shows it still a standby", self.name(candidate));
        log(out, Level::Error, msg);
        out.push(Action::Alert(Alert::PromoteFailed { node: candidate, error }));
        self.nodes[candidate].excluded_until = Some(now + self.p.promote_timeout);
        self.phase = Phase::WriterLost { old, since: now };
    }

    /// Rule 4 and 5: route writes to the promoted node in one map write, fence the replaced
    /// writer, and, on the VRRP master, re-point the other standbys and keep
    /// synchronous_standby_names meaningful (a backup only observes).
    pub(super) fn finish_promotion(&mut self, new: NodeId, how: Promotion, now: Duration, out: &mut Vec<Action>) {
        if self.held == Some(new) {
            self.held = None; // promoted already (a probe shows it): nothing to send
        }
        let probed_tl = self.nodes[new].usable_primary().map(|s| s.timeline);
        let from = self.promoting_from.filter(|(p, _)| *p == new).map_or(self.writer_timeline.unwrap_or(0), |(_, tl)| tl);
        let tl = probed_tl.unwrap_or(from + 1).max(from + 1);
        self.writer_timeline = self.writer_timeline.max(Some(tl));
        self.promoting_from = None;
        self.writer_lsn = self.nodes[new].status.as_ref().and_then(|s| s.current_lsn.or(s.received()));
        // The promoted node's last probe may still say "standby": it is the primary now.
        if let Some(s) = self.nodes[new].status.as_mut()
            && s.in_recovery
        {
            s.in_recovery = false;
            s.timeline = tl;
            s.wal_receiver = None;
        }
        self.route_writer(Some(new), out);
        let skip = match how {
            Promotion::Failover { old } => {
                if let Some(o) = old.filter(|&o| o != new) {
                    self.fence(o, FenceReason::Replaced { by: new }, out);
                }
                old
            }
            Promotion::Switchover { from, .. } => Some(from), // Demote already pointed it at `new`
        };
        if self.is_master() {
            for n in 0..self.nodes.len() {
                if n != new && Some(n) != skip && self.nodes[n].fence.is_none() && self.nodes[n].up() {
                    out.push(Action::Repoint { node: n, primary: new });
                    self.nodes[n].last_repoint = Some(now);
                    self.nodes[n].misdirected_since = None;
                }
            }
            if self.p.synchronous_count > 0 {
                let names = (0..self.nodes.len()).filter(|&n| n != new).map(|n| self.name(n).to_owned()).collect();
                out.push(Action::SetSyncStandbys { on: new, count: self.p.synchronous_count, names });
            }
        } else {
            let msg = format!("{} promoted while this instance is a vrrp backup: re-pointing is left to the master", self.name(new));
            log(out, Level::Warn, msg);
        }
        match how {
            Promotion::Failover { old } => {
                let from = old.map_or("none", |o| self.name(o));
                log(out, Level::Warn, format!("failover done: {} is the writer on timeline {tl} (was {from})", self.name(new)));
                match self.manual.take_if(|m| m.to == new) {
                    Some(m) => out.push(Action::Alert(Alert::Manual(m.done(old, tl)))),
                    None => out.push(Action::Alert(Alert::FailedOver { from: old, to: new })),
                }
            }
            Promotion::Switchover { from, started } => {
                let paused = now.saturating_sub(started);
                log(out, Level::Info, format!("switchover done: {} is the writer on timeline {tl} (was {}); writes paused for {} ms", self.name(new), self.name(from), paused.as_millis()));
                out.push(Action::Alert(Alert::SwitchoverDone { from, to: new, paused }));
            }
        }
        for t in &mut self.nodes {
            t.excluded_until = None;
        }
        self.phase = Phase::Steady;
    }
}
