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
    // ----- the executor --------------------------------------------------------------------

    pub fn call(&mut self, lb: usize, event: Event) {
        let now = self.now;
        let Some(m) = self.lbs[lb].m.as_mut() else { return };
        let actions = m.handle(event, now);
        if actions.len() > MAX_ACTIONS_PER_CALL {
            self.fail(&format!("{} actions for one event", actions.len()));
        }
        let mut written = None;
        for a in actions {
            if let Action::Persist(d) = &a {
                written = Some(d.clone());
            }
            if self.act(lb, a) {
                return;
            }
        }
        // The state file is written at once (a fast disk); its answer follows the actions.
        if let Some(state) = written {
            self.call(lb, Event::Persisted { state, result: Ok(()) });
        }
    }

    /// Applies one action of `lb`'s machine. Returns whether an armed trigger killed the
    /// daemon right after it (the rest of the list is never applied).
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
            Action::Persist(d) => self.lbs[lb].persisted = Some(d),
            Action::Track { writer_reachable } => {
                let l = &mut self.lbs[lb];
                l.advert_due |= l.track_down == writer_reachable;
                l.track_down = !writer_reachable;
            }
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
            Action::Fence { node, .. } => {
                let l = &self.lbs[lb];
                if l.routed_by_current && l.routed == Some(node) {
                    self.fail(&format!("{name}: fenced the routed writer without unrouting it first"));
                }
            }
            Action::Alert(alert) => match alert {
                Alert::FailedOver { .. } => self.coverage.failovers_done += 1,
                Alert::SwitchoverDone { .. } => self.coverage.switchovers_done += 1,
                Alert::SwitchoverAborted { .. } => self.coverage.switchovers_aborted += 1,
                _ => {}
            },
            Action::Probe { node } => self.lbs[lb].probe_now[node] = true,
            Action::Log { .. } => {}
        }
        let Some(sent) = sent else { return false };
        let hit = self.armed.iter().position(|a| {
            a.trigger == Trigger::Sent(sent) && a.lb.is_none_or(|l| l == lb) && matches!(a.effect, Effect::Kill { .. })
        });
        let Some(i) = hit else { return false };
        let Effect::Kill { down_for } = self.armed.remove(i).effect else { unreachable!("filtered on Kill") };
        self.kill_daemon(lb, Some(down_for));
        true
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
                self.call(p.lb, Event::ActionDone { action: p.action, result });
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
