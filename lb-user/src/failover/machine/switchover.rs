//! Switchover: the planned, zero-loss change of the writer, one stage at a time.

use super::*;

impl Machine {
    /// Checks a switchover request and, if it is safe, blocks writes (stage 1).
    pub(super) fn start_switchover(&mut self, from: NodeId, to: NodeId, now: Duration, out: &mut Vec<Action>) {
        let reason = if to >= self.nodes.len() {
            Some(format!("there is no node #{to}"))
        } else if to == from {
            Some(format!("{} is the writer already", self.name(to)))
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

    /// Why a switchover may not promote `to` now (the same guards a failover has).
    pub(super) fn promote_blocker(&self, to: NodeId, now: Duration) -> Option<String> {
        let (votes, members) = self.quorum(now);
        if self.nodes[to].usable_standby().is_none() {
            Some(format!("{} is not a reachable standby", self.name(to)))
        } else if !self.is_master() {
            Some("this load balancer is no longer the vrrp master".to_owned())
        } else if !rules::has_quorum(votes, members) {
            Some(format!("no quorum: {votes} of {members} members visible"))
        } else {
            None
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
                        self.promote_demoted_target(sw, now, out);
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

    /// Switchover, old primary demoted: promote the target as soon as nothing holds it back. A
    /// target whose probe blips (a timeout, a dropped connection while the old primary
    /// restarts) is waited for until the switchover's deadline rather than given up at once.
    pub(super) fn promote_demoted_target(&mut self, sw: Switch, now: Duration, out: &mut Vec<Action>) {
        let Switch { from, to, deadline, .. } = sw;
        match self.promote_blocker(to, now) {
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
