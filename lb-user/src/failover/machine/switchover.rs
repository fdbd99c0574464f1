//! Switchover: the planned, zero-loss change of the writer, one stage at a time.

use super::*;

impl Machine {
    /// Checks a switchover request and, if it is safe, blocks writes (stage 1).
    pub(super) fn start_switchover(&mut self, from: NodeId, to: NodeId, now: Duration, out: &mut Vec<Action>) {
        let reason = if to >= self.nodes.len() {
            Some(format!("there is no node #{to}"))
        } else if to == from {
            Some(format!("{} is the writer already", self.name(to)))
        } else if self.marked(to, MarkKind::Disable) {
            Some(format!("{} is disabled (`pglb node enable {}` first)", self.name(to), self.name(to)))
        } else if let Some(p) = self.paused() {
            Some(format!("maintenance mode (paused on {}): run `pglb resume` first, then the switchover", p.by))
        } else if !self.is_master() {
            Some("this load balancer is not the vrrp master".to_owned())
        } else {
            match self.nodes[to].usable_standby() {
                None => Some(format!("{} is not a reachable, unfenced standby", self.name(to))),
                Some(s) if Some(s.timeline) != self.writer_timeline => {
                    Some(format!("{} is on timeline {}, not the writer's", self.name(to), s.timeline))
                }
                Some(s) if !s.streams_from(&self.p.nodes[from]) => {
                    Some(format!("{} does not stream from {}", self.name(to), self.name(from)))
                }
                Some(s) => {
                    let received = s.received().unwrap_or_default();
                    let reference = self.writer_lsn.unwrap_or_default();
                    (!rules::within_lag(reference, received, self.p.max_lag_on_failover_bytes))
                        .then(|| format!("{} lags {} bytes behind", self.name(to), reference - received))
                }
            }
        };
        if let Some(reason) = reason {
            self.reject_switchover(to, reason, out);
            return;
        }
        let msg = format!("switchover from {} to {}: new writes refused until {} has everything", self.name(from), self.name(to), self.name(to));
        log(out, Level::Info, msg);
        self.route_writer(None, out);
        self.blocked_switchover = None;
        let stage = SwitchoverStage::CatchingUp { blocked_at: now, old_lsn: None };
        self.phase = Phase::Switchover { from, to, stage, deadline: now + self.p.switchover_timeout, started: now };
    }

    pub(super) fn reject_switchover(&self, to: NodeId, reason: String, out: &mut Vec<Action>) {
        log(out, Level::Warn, format!("switchover to #{to} rejected: {reason}"));
        out.push(Action::Alert(Alert::SwitchoverRejected { to, reason }));
    }

    /// Why `to` may not be promoted now (a switchover's target, or a held promotion about to
    /// be sent): it is a reachable standby on the newest timeline known here, this instance is
    /// master with a quorum, and no peer reports a newer timeline.
    pub(super) fn promote_blocker(&self, to: NodeId, now: Duration) -> Option<String> {
        let (votes, members) = self.quorum(now);
        let floor = self.writer_timeline.unwrap_or(0);
        match self.nodes[to].usable_standby() {
            None => Some(format!("{} is not a reachable standby", self.name(to))),
            Some(s) if s.timeline < floor => {
                Some(format!("{} is on timeline {}, older than the newest known here ({floor})", self.name(to), s.timeline))
            }
            Some(_) if !self.is_master() => Some("this load balancer is no longer the vrrp master".to_owned()),
            Some(_) if self.marked(to, MarkKind::Disable) => Some(format!("{} is disabled (pglb node disable)", self.name(to))),
            // A failover decided just before a pause is not made (a switchover the operator
            // started before it goes on, and so does a manual failover: the operator overrode
            // the pause and the quorum).
            Some(_) if matches!(self.phase, Phase::FailingOver { .. }) && self.paused().is_some() && !self.manual_target(to) => {
                Some("maintenance mode: paused since the failover was decided".to_owned())
            }
            Some(_) if !rules::has_quorum(votes, members) && !self.manual_target(to) => {
                Some(format!("no quorum: {votes} of {members} members visible"))
            }
            Some(_) => match self.hint() {
                Some((tl, peer)) => Some(format!("peer {peer} reports timeline {tl}, not confirmed here")),
                None => guards::newest_primary_looked_for(self, &guards::Check { old: None, since: now, now }).err().map(|b| b.to_string()),
            },
        }
    }

    /// Gives up a switchover. With `restore` the old primary is still one: route to it again.
    /// Without, the old primary may be a standby now (or half-stopped): the writer is lost,
    /// with the old primary as the old writer, so failover's guards judge it like any loss (a
    /// demoted old primary counts as gone; standbys cascading from it hide no primary).
    pub(super) fn abort_switchover(&mut self, from: NodeId, to: NodeId, reason: &str, restore: bool, now: Duration, out: &mut Vec<Action>) {
        self.cancel_held();
        log(out, Level::Error, format!("switchover from {} to {} aborted: {reason}", self.name(from), self.name(to)));
        out.push(Action::Alert(Alert::SwitchoverAborted { from, to, reason: reason.to_owned() }));
        if restore {
            self.route_writer(Some(from), out);
            self.phase = Phase::Steady;
        } else {
            self.phase = Phase::WriterLost { old: Some(from), since: now };
        }
    }

    /// Phase handler: a planned switchover, one stage at a time.
    pub(super) fn on_switchover(&mut self, sw: Switch, stage: SwitchoverStage, event: Option<&Event>, now: Duration, out: &mut Vec<Action>) {
        let Switch { from, to, deadline, .. } = sw;
        match stage {
            SwitchoverStage::CatchingUp { blocked_at, mut old_lsn } => {
                let f = &self.nodes[from];
                if let Some(s) = f.status.as_ref().filter(|s| !s.in_recovery && f.status_at >= blocked_at)
                    && let Some(lsn) = s.current_lsn
                {
                    old_lsn = Some((f.status_at, old_lsn.map_or(lsn, |(_, l)| l.max(lsn))));
                }
                let target = &self.nodes[to];
                let caught_up = old_lsn.is_some_and(|(at, lsn)| {
                    target.status_at >= at && target.status.as_ref().and_then(NodeStatus::received).is_some_and(|r| r >= lsn)
                });
                if caught_up {
                    let lsn = old_lsn.map(|(_, l)| l).unwrap_or_default();
                    let msg = format!("switchover: {} has received {lsn:#x} from {}; demoting {}", self.name(to), self.name(from), self.name(from));
                    log(out, Level::Info, msg);
                    out.push(Action::Demote { node: from, primary: to });
                    self.phase = sw.phase(SwitchoverStage::Demoting);
                } else if now >= deadline {
                    self.abort_switchover(from, to, "the target did not catch up in time", true, now, out);
                } else {
                    self.phase = sw.phase(SwitchoverStage::CatchingUp { blocked_at, old_lsn });
                }
            }
            SwitchoverStage::Demoting => match event {
                Some(Event::ActionDone { action: Action::Demote { node, .. }, result }) if *node == from => match result {
                    Ok(()) => {
                        let f = &mut self.nodes[from];
                        f.demoted_at = Some(now);
                        f.health = Health::Down; // restarting: a fresh probe must confirm it
                        f.successes = 0;
                        if let Some(s) = f.status.as_mut() {
                            s.in_recovery = true;
                            s.current_lsn = None;
                        }
                        self.phase = sw.phase(SwitchoverStage::Demoted);
                        // Every standby's position once no more writes can be acknowledged.
                        for n in (0..self.nodes.len()).filter(|&n| n != from && self.visible_standby(n)) {
                            out.push(Action::Probe { node: n });
                        }
                    }
                    Err(e) => self.abort_switchover(from, to, &format!("demoting failed: {e}"), true, now, out),
                },
                _ if now >= deadline => self.abort_switchover(from, to, "demoting took too long", false, now, out),
                _ => {}
            },
            SwitchoverStage::Demoted => self.promote_demoted_target(sw, now, out),
            SwitchoverStage::Promoting => match event {
                _ if self.held == Some(to) && self.record_failing => {
                    self.drop_unrecorded_promotion(to, out);
                    self.abort_switchover(from, to, "the state file that must record the promotion cannot be written", false, now, out);
                }
                Some(Event::ActionDone { action: Action::Promote { node }, result }) if *node == to => match result {
                    Ok(()) => self.finish_promotion(to, Promotion::Switchover { from, started: sw.started }, now, out),
                    Err(e) => self.abort_switchover(from, to, &format!("promoting failed: {e}"), false, now, out),
                },
                _ if self.promoted_by_probe(to) => self.finish_promotion(to, Promotion::Switchover { from, started: sw.started }, now, out),
                _ if now >= deadline => self.abort_switchover(from, to, "promoting took too long", false, now, out),
                _ => {}
            },
        }
    }

    /// Whether the target may lack a commit some standby acknowledged: it must have received as
    /// much as every standby on the writer's timeline, each visible one probed after the
    /// demotion (one out of sight counts with what it was last seen to have).
    /// Writes were refused here before the catch-up check, but another master (a split this
    /// instance does not know of yet) may have routed more to the old primary until it stopped,
    /// and a standby other than the target may hold them. `None` when nothing is missing; a
    /// standby not yet probed since the demotion is waited for (the demotion asked for probes).
    pub(super) fn target_missing_commits(&self, from: NodeId, to: NodeId) -> Option<String> {
        let demoted_at = self.nodes[from].demoted_at.unwrap_or_default();
        let on_timeline = |s: &NodeStatus| self.writer_timeline.is_none_or(|tl| s.timeline == tl);
        let position = |n: NodeId| self.nodes[n].status.as_ref().filter(|s| on_timeline(s)).and_then(NodeStatus::received);
        let waiting = (0..self.nodes.len()).find(|&n| n != from && self.visible_standby(n) && self.nodes[n].status_at < demoted_at);
        if let Some(n) = waiting {
            return Some(format!("{} not probed since the demotion yet", self.name(n)));
        }
        let target = position(to).unwrap_or_default();
        // Down or not, a standby last seen ahead may hold them.
        let ahead = (0..self.nodes.len()).filter(|&n| n != from && n != to).find(|&n| position(n).is_some_and(|r| r > target));
        ahead.map(|n| format!("{} has received more than {} ({:#x} > {target:#x}): it may hold acknowledged commits the target lacks", self.name(n), self.name(to), position(n).unwrap_or_default()))
    }

    /// Switchover, old primary demoted: promote the target as soon as nothing holds it back. A
    /// target whose probe blips (a timeout, a dropped connection while the old primary
    /// restarts) is waited for until the switchover's deadline rather than given up at once.
    pub(super) fn promote_demoted_target(&mut self, sw: Switch, now: Duration, out: &mut Vec<Action>) {
        let Switch { from, to, deadline, .. } = sw;
        match self.promote_blocker(to, now).or_else(|| self.target_missing_commits(from, to)) {
            None => {
                log(out, Level::Info, format!("switchover: {} demoted; promoting {} once the state file records it", self.name(from), self.name(to)));
                self.note_promotion(to);
                self.held = Some(to);
                self.phase = sw.phase(SwitchoverStage::Promoting);
            }
            Some(why) if now >= deadline => {
                self.abort_switchover(from, to, &format!("{} demoted, but {why}", self.name(from)), false, now, out);
            }
            Some(why) => {
                if self.blocked_switchover.as_deref() != Some(why.as_str()) {
                    log(out, Level::Warn, format!("switchover: {} demoted; waiting to promote {}: {why}", self.name(from), self.name(to)));
                    self.blocked_switchover = Some(why);
                }
            }
        }
    }
}
