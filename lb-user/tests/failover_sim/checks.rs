//! The invariants, checked at every step, at every promotion and at the end of a run.

use crate::*;

impl Sim {
    /// The promotion invariants, recomputed from what `lb`'s machine was told.
    pub fn check_promotion(&mut self, lb: usize, cand: usize) {
        let l = &self.lbs[lb];
        if l.p.vrrp_enabled && !l.master {
            self.fail(&format!("{}: promotion by a load balancer that is not the vrrp master", l.name));
        }
        let fresh = |(at, r): &(Duration, Result<NodeStatus, ProbeFailure>)| {
            r.is_ok() && self.now.saturating_sub(*at) < l.p.stale_after()
        };
        let reachable = l.last_obs.iter().flatten().filter(|o| fresh(o)).count();
        let peers = l.last_peer.iter().flatten().filter(|&&h| self.now.saturating_sub(h) <= l.p.peer_timeout).count();
        let votes = 1 + reachable + peers;
        if 2 * votes <= l.p.members() {
            self.fail(&format!("{}: promotion without quorum: {votes} of {}", l.name, l.p.members()));
        }
        let Some((_, Ok(cs))) = &l.last_obs[cand] else { self.fail(&format!("{}: promoted a node never probed ok", l.name)) };
        let cand_received = cs.received().unwrap_or(0);
        let mut reference = cand_received;
        if let Some(w) = l.last_some_routed
            && let Some((_, Ok(ws))) = &l.last_obs[w]
            && ws.timeline == cs.timeline
        {
            reference = reference.max(ws.current_lsn.unwrap_or(0));
        }
        for o in l.last_obs.iter().flatten().filter(|o| fresh(o)) {
            if let Ok(s) = &o.1
                && s.in_recovery
                && s.timeline == cs.timeline
            {
                reference = reference.max(s.received().unwrap_or(0));
            }
        }
        if reference - cand_received > l.p.max_lag_on_failover_bytes {
            self.fail(&format!("{}: candidate {cand} is {} bytes behind", l.name, reference - cand_received));
        }
        if !self.tainted && l.p.synchronous_count > 0 {
            let x = &self.nodes[cand];
            let acked = self.acked.get(&x.timeline).copied().unwrap_or(0);
            if x.lsn < acked {
                self.fail(&format!("{}: promoting node {cand} at {} loses acknowledged commits up to {acked}", l.name, x.lsn));
            }
        }
    }

    pub fn check_step(&mut self) {
        for lb in 0..self.lbs.len() {
            let l = &self.lbs[lb];
            let Some(m) = &l.m else { continue };
            let view = m.view();
            if let Some(w) = view.writer
                && matches!(view.nodes[w].state, NodeState::Fenced | NodeState::NeedsRejoin)
            {
                self.fail(&format!("{}: the routed writer is fenced", l.name));
            }
            if l.routed_by_current && view.writer != l.routed {
                self.fail(&format!("{}: the machine's writer differs from the last SetWriter", l.name));
            }
            // The daemon sleeps until next_deadline: one at or before now would wake it at
            // once, forever (a busy loop).
            if let Some(d) = m.next_deadline()
                && d <= self.now
            {
                self.fail(&format!("{}: next_deadline {d:?} is not after now: the daemon would spin", l.name));
            }
            let tl = view.writer_timeline.unwrap_or(0);
            // Rule 6 against what this machine knows: never a primary older than its timeline
            // floor; and a VIP holder (clients write through it) never one older than a
            // primary its probes have shown.
            if let Some(x) = l.routed.filter(|&x| l.routed_by_current && self.nodes[x].running_primary()) {
                let xt = self.nodes[x].timeline;
                if xt < tl {
                    self.fail(&format!("{}: routes writes to pg{}, a primary on timeline {xt}, below its timeline {tl}", l.name, x + 1));
                }
                let holder = if self.pair { l.master } else { !l.p.vrrp_enabled || l.master };
                if holder && xt < l.seen_tl {
                    let seen = l.seen_tl;
                    self.fail(&format!(
                        "{}, the vip holder, routes writes to pg{}, a primary on timeline {xt}, after probing a primary on timeline {seen}",
                        l.name,
                        x + 1
                    ));
                }
            }
            if tl < l.tl_floor {
                self.fail(&format!("{}: writer timeline went back from {} to {tl}", l.name, l.tl_floor));
            }
            self.lbs[lb].tl_floor = tl;
        }
        // One writer for clients: two VIP holders never send writes to two running primaries.
        let holders = self.vip_holders();
        if self.pair && holders.len() > 1 {
            self.coverage.two_master_steps += 1;
            let routes: Vec<usize> = holders.iter().filter_map(|&lb| self.lbs[lb].routed).collect();
            if let [a, b] = routes[..]
                && a != b
                && self.nodes[a].running_primary()
                && self.nodes[b].running_primary()
            {
                self.fail(&format!("two vrrp masters route writes to two running primaries: pg{} and pg{}", a + 1, b + 1));
            }
        }
        // No acknowledged write lost: every acknowledged commit is in the newest history.
        if !self.tainted {
            for (&tl, &lsn) in &self.acked {
                let kept = self.common_point(tl, self.max_tl);
                if lsn > kept {
                    self.fail(&format!(
                        "commits acknowledged on timeline {tl} up to {lsn} are not in the history of the newest timeline {} (it keeps {kept})",
                        self.max_tl
                    ));
                }
            }
        }
        // LbCutFromPrimary: writes continue wherever some load balancer still reaches it.
        if let Some((cut, heal)) = self.handover_window
            && self.now >= cut + handover_bound(&self.lbs[0].p)
            && self.now < heal
            && !holders.iter().any(|&lb| self.lbs[lb].routed == Some(0) && self.lb_reaches(lb, 0))
        {
            self.fail("no vip holder routes writes to the primary although one load balancer reaches it");
        }
    }

    /// Exactly one writer: one running primary on the highest timeline, routed by the VIP
    /// holder, and by no load balancer any other node.
    pub fn one_writer(&self) -> Result<(), String> {
        let top = (0..NODES).filter(|&n| self.nodes[n].alive).map(|n| self.nodes[n].timeline).max().unwrap_or(0);
        let writers: Vec<usize> =
            (0..NODES).filter(|&n| self.nodes[n].running_primary() && self.nodes[n].timeline == top).collect();
        let [w] = writers[..] else {
            return Err(format!("{} running primaries on the highest timeline {top}, not one", writers.len()));
        };
        let holders: Vec<usize> = if self.pair {
            self.vip_holders()
        } else {
            let l = &self.lbs[0];
            if !l.p.vrrp_enabled || l.master { vec![0] } else { Vec::new() }
        };
        if self.pair && holders.len() != 1 {
            return Err(format!("{} vrrp masters, not one", holders.len()));
        }
        for lb in holders {
            if self.lbs[lb].routed != Some(w) {
                return Err(format!("the vip holder {} does not route writes to the writer pg{}", self.lbs[lb].name, w + 1));
            }
        }
        for l in &self.lbs {
            if let Some(x) = l.routed.filter(|&x| x != w) {
                return Err(format!("{} routes writes to pg{} besides the writer pg{}", l.name, x + 1, w + 1));
            }
        }
        Ok(())
    }

    /// After the heal: note when one writer holds from then on; past the bound, require it.
    pub fn check_liveness(&mut self) {
        if self.now < self.heal_at {
            return;
        }
        match self.one_writer() {
            Ok(()) => {
                self.settled_at.get_or_insert(self.now);
            }
            Err(e) if self.now >= self.heal_at + liveness_bound(&self.lbs[0].p) => {
                self.fail(&format!("liveness: {e}, {:?} after every fault healed", self.now - self.heal_at));
            }
            Err(_) => self.settled_at = None,
        }
    }

    pub fn first_new_writer_after(&self, t: Duration, old: usize) -> Option<Duration> {
        self.vip_changes.iter().find(|(at, w)| *at >= t && w.is_some_and(|w| w != old)).map(|(at, _)| *at)
    }

    /// Scenario-specific outcomes.
    pub fn check_end(&self) {
        let fault_at = |want: fn(&Fault) -> bool| self.all_faults.iter().find(|(_, f)| want(f)).map(|(t, _)| *t);
        let p = &self.lbs[0].p;
        match self.scenario {
            Scenario::Crash | Scenario::LaggingStandby => {
                let t = fault_at(|f| matches!(f, Fault::Crash(0))).expect("a crash");
                let bound = p.detection_time() + Duration::from_millis(600);
                match self.first_new_writer_after(t, 0) {
                    Some(at) if at - t <= bound => {}
                    other => self.fail(&format!("no new writer within {bound:?} of the crash at {t:?}: {other:?}")),
                }
                if self.scenario == Scenario::LaggingStandby {
                    let lagging = self.nodes.iter().position(|n| n.lagging).expect("a lagging standby");
                    if self.promotions.iter().any(|&(_, _, n)| n == lagging) {
                        self.fail("the lagging standby was promoted");
                    }
                }
                if let Some(r) = fault_at(|f| matches!(f, Fault::Rejoin(0)))
                    && r + Duration::from_secs(3) < self.now
                {
                    for l in &self.lbs {
                        let st = l.m.as_ref().expect("every daemon runs at the end").view().nodes[0].state;
                        if st != NodeState::Up {
                            self.fail(&format!("pg1 rejoined at {r:?} but {} sees it {st:?}", l.name));
                        }
                    }
                }
            }
            Scenario::Hang => {
                let t = fault_at(|f| matches!(f, Fault::Hang(0))).expect("a hang");
                let resume = fault_at(|f| matches!(f, Fault::Resume(0))).expect("a resume");
                let bound = WAL_RECEIVER_TIMEOUT + p.detection_time() + Duration::from_millis(400);
                if resume - t > bound {
                    match self.first_new_writer_after(t, 0) {
                        Some(at) if at - t <= bound => {}
                        other => self.fail(&format!("no new writer within {bound:?} of the hang: {other:?}")),
                    }
                }
            }
            Scenario::Partition
            | Scenario::Flapping
            | Scenario::NotMaster
            | Scenario::NoQuorum
            | Scenario::DoubleFault
            | Scenario::LbCutFromPrimary
                if !self.promotions.is_empty() =>
            {
                self.fail(&format!("promotions in a scenario that must have none: {:?}", self.promotions));
            }
            Scenario::Switchover => {
                let (t, to) = self
                    .all_faults
                    .iter()
                    .find_map(|(t, f)| if let Fault::Switchover(n) = f { Some((*t, *n)) } else { None })
                    .expect("a switchover");
                let done = self.vip_changes.iter().find(|(at, w)| *at >= t && *w == Some(to));
                match done {
                    Some((at, _)) if *at - t <= Duration::from_secs(2) => {}
                    other => self.fail(&format!("switchover to {to} at {t:?} did not finish in 2s: {other:?}")),
                }
            }
            _ => {}
        }
    }
}
