//! The executor: each machine's actions applied to the model, and their results reported back.

use crate::*;

/// An executor action in flight.
pub struct Pending {
    pub due: Duration,
    pub lb: usize,
    pub generation: u32,
    pub action: Action,
}

impl Sim {
    /// Applies one action of `lb`'s machine (as `Runtime::apply` and the executor do). Returns
    /// whether an armed trigger killed the daemon right after it (the rest of the list is never
    /// applied).
    pub fn act(&mut self, lb: usize, action: Action) -> bool {
        let name = self.lbs[lb].name;
        match &action {
            Action::Log { message, .. } => self.note(format!("{name}: log: {message}")),
            other => self.note(format!("{name}: action: {other:?}")),
        }
        let sent = match &action {
            Action::Promote { .. } => Some(Sent::Promote),
            Action::Demote { .. } => Some(Sent::Demote),
            Action::Repoint { .. } => Some(Sent::Repoint),
            Action::Rejoin { .. } => Some(Sent::Rejoin),
            _ => None,
        };
        let generation = self.lbs[lb].generation;
        let now = self.now;
        let due = |after: Duration| now + after;
        match action {
            Action::Persist(d) => {
                if self.persist(lb, d) {
                    return true;
                }
            }
            Action::Track { writer_reachable } => self.lbs[lb].tracked_reachable = writer_reachable,
            Action::SetWriter { node } => self.set_writer(lb, node),
            Action::SetReaders { nodes } => {
                let view = self.lbs[lb].m.as_ref().expect("acting for a running daemon").view();
                for n in nodes {
                    if matches!(view.nodes[n].state, NodeState::Fenced | NodeState::NeedsRejoin) {
                        self.fail(&format!("{name}: fenced node {n} routed for reads"));
                    }
                }
            }
            Action::Promote { node } => {
                self.check_promotion(lb, node);
                self.promotions.push((self.now, lb, node));
                self.pending.push(Pending { due: due(PROMOTE_TAKES), lb, generation, action: Action::Promote { node } });
            }
            Action::Repoint { .. } => self.pending.push(Pending { due: due(REPOINT_TAKES), lb, generation, action }),
            Action::Demote { .. } => self.pending.push(Pending { due: due(DEMOTE_TAKES), lb, generation, action }),
            Action::Rejoin { .. } => self.pending.push(Pending { due: due(REJOIN_TAKES), lb, generation, action }),
            Action::SetSyncStandbys { on, count, names } => {
                if self.lb_reaches(lb, on) && !self.nodes[on].hung {
                    let ids = names.iter().map(|s| s[2..].parse::<usize>().expect("node names are pgN") - 1).collect();
                    let x = &mut self.nodes[on];
                    x.sync_count = count;
                    x.sync_names = ids;
                }
            }
            Action::Fence { node, reason } => {
                let l = &self.lbs[lb];
                if l.routed_by_current && l.routed == Some(node) {
                    self.fail(&format!("{name}: fenced the routed writer without unrouting it first"));
                }
                if let Err(e) = self.fence_is_real(&reason) {
                    self.fail(&format!("{name}: fenced pg{}: {e}", node + 1));
                }
            }
            Action::Alert(alert) => match alert {
                Alert::FailedOver { .. } => self.coverage.failovers_done += 1,
                Alert::SwitchoverDone { .. } => self.coverage.switchovers_done += 1,
                Alert::SwitchoverAborted { .. } => self.coverage.switchovers_aborted += 1,
                Alert::FailoverBlocked { reason: Blocked::StateNotRecorded, .. } => self.coverage.blocked_unrecorded += 1,
                Alert::FailoverBlocked { reason: Blocked::PeerTimelineUnconfirmed { .. }, .. } => self.coverage.blocked_by_hint += 1,
                _ => {}
            },
            Action::Probe { node } => self.lbs[lb].probe_now[node] = true,
            Action::Log { .. } => {}
        }
        sent.is_some_and(|sent| self.fire_armed(lb, Trigger::Sent(sent), None))
    }

    /// Fires every trigger armed for `lb` reaching `trigger` (`roles`: the stage's nodes, for
    /// probe blips). Returns whether one killed the daemon.
    pub fn fire_armed(&mut self, lb: usize, trigger: Trigger, roles: Option<[usize; 3]>) -> bool {
        while let Some(i) = self.armed.iter().position(|a| a.trigger == trigger && a.lb.is_none_or(|l| l == lb)) {
            let armed = self.armed.remove(i);
            let name = self.lbs[lb].name;
            match armed.effect {
                Effect::Kill { down_for } => {
                    self.note(format!("{name}: at {trigger:?}"));
                    self.kill_daemon(lb, Some(down_for));
                    return true;
                }
                Effect::Freeze { length, probes_go_on } => {
                    self.note(format!("{name}: at {trigger:?}"));
                    self.freeze(lb, length, probes_go_on);
                }
                Effect::DiskFails { length } => {
                    self.note(format!("{name}: at {trigger:?}: the state file cannot be written for {} ms", length.as_millis()));
                    self.lbs[lb].disk.fails_until = self.now + length;
                    self.coverage.disk_faults += 1;
                }
                Effect::Blip { other_lb, role, count, timeout } => {
                    let (Trigger::Stage(stage), Some(roles)) = (trigger, roles) else { continue };
                    let target = if other_lb && self.pair { 1 - lb } else { lb };
                    let node = roles[role];
                    let failure = if timeout { ProbeFailure::Timeout } else { ProbeFailure::Unreachable("connection reset".into()) };
                    self.coverage.blips[stage as usize] += 1;
                    let to = self.lbs[target].name;
                    self.note(format!("{name} at stage {stage:?}: the next {count} probes of pg{} by {to} fail: {failure}", node + 1));
                    self.lbs[target].blips[node].extend(std::iter::repeat_n(failure, count as usize));
                }
            }
        }
        false
    }

    pub fn set_writer(&mut self, lb: usize, node: Option<usize>) {
        let l = &mut self.lbs[lb];
        if let Some(n) = node {
            if l.retired.contains(&n) {
                let name = l.name;
                self.fail(&format!("{name}: node {n} routed as writer again after being replaced"));
            }
            if let Some(prev) = l.last_some_routed.filter(|&p| p != n) {
                l.retired.insert(prev);
            }
            l.last_some_routed = Some(n);
        }
        l.routed = node;
        l.routed_by_current = true;
    }

    pub fn complete_pending(&mut self) {
        let now = self.now;
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending).into_iter().partition(|p| p.due <= now);
        self.pending = rest;
        for p in due {
            let result = self.execute(p.lb, &p.action);
            let l = &self.lbs[p.lb];
            if l.running() && l.generation == p.generation {
                self.note(format!("{}: done: {:?} -> {result:?}", l.name, p.action));
                self.input(p.lb, Input::Done(Event::ActionDone { action: p.action, result }));
            } else {
                self.note(format!("{}: done while its daemon was down: {:?} -> {result:?} (report lost)", l.name, p.action));
            }
        }
    }

    pub fn execute(&mut self, lb: usize, action: &Action) -> Result<(), String> {
        match *action {
            Action::Promote { node } => {
                if !self.lb_reaches(lb, node) || self.nodes[node].hung {
                    return Err("no connection".into());
                }
                if !self.nodes[node].in_recovery {
                    // The executor: a node out of recovery was promoted already (by a peer).
                    return Ok(());
                }
                self.promote_model(node, true);
                if std::mem::take(&mut self.report_lost) {
                    self.coverage.reports_lost += 1;
                    return Err("connection lost after pg_promote".into());
                }
                Ok(())
            }
            Action::Repoint { node, primary } => {
                let ok = self.lb_reaches(lb, node)
                    && self.lb_reaches(lb, primary)
                    && !self.nodes[node].hung
                    && !self.nodes[primary].hung
                    && self.nodes[node].in_recovery;
                if !ok {
                    return Err("cannot reach the standby or its new primary".into());
                }
                self.nodes[node].upstream = Some(primary);
                Ok(())
            }
            Action::Demote { node, primary } => {
                if !self.lb_reaches(lb, node) || self.nodes[node].hung || self.nodes[node].in_recovery {
                    return Err("not a running primary".into());
                }
                // Fast shutdown: walsenders send everything to connected standbys first.
                let lsn = self.nodes[node].lsn;
                for s in 0..NODES {
                    let y = &mut self.nodes[s];
                    if y.alive && !y.hung && y.connected && y.upstream == Some(node) && !y.lagging {
                        y.lsn = y.lsn.max(lsn);
                    }
                }
                let x = &mut self.nodes[node];
                x.in_recovery = true;
                x.upstream = Some(primary);
                x.connected = false;
                for l in &mut self.lbs {
                    l.retired.remove(&node);
                }
                Ok(())
            }
            Action::Rejoin { node, primary } => {
                if !self.lbs[lb].reach[node] || self.nodes[node].hung {
                    return Err("cannot reach the host".into());
                }
                if node == primary || !self.nodes[primary].running_primary() {
                    return Err("the new primary is not a running primary".into());
                }
                if self.rng.chance(REJOIN_FAILS_PERCENT) {
                    self.coverage.rejoins_failed += 1;
                    return Err("pg_rewind: could not connect to the source server".into());
                }
                self.coverage.rejoins_ok += 1;
                self.rewind(node, primary);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
