//! The invariants, checked at every step, at every promotion and at the end of a run.

use crate::*;

impl Sim {
    /// The promotion invariants, recomputed from what `lb`'s machine was told.
    pub fn check_promotion(&mut self, lb: usize, cand: usize) {
        let l = &self.lbs[lb];
        if l.p.vrrp_enabled && !l.master {
            self.fail(&format!("{}: promotion by a load balancer that is not the vrrp master", l.name));
        }
        // No action without its record: the state file (its last successful write) names it.
        let recorded = l.disk.persisted.as_ref().and_then(|d| d.promoting.as_ref());
        if recorded.is_none_or(|p| p.node != l.p.nodes[cand].name) {
            self.fail(&format!("{}: promotes pg{} while its state file records {recorded:?}", l.name, cand + 1));
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
            self.check_lease(lb);
            self.check_facts(lb);
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
                && l.frozen.is_none()
            {
                self.fail(&format!("{}: next_deadline {d:?} is not after now: the daemon would spin", l.name));
            }
            let tl = view.writer_timeline.unwrap_or(0);
            // Rule 6 against what this machine knows, once it has decided (until then the map is
            // a leftover the expired lease keeps from new flows): never a primary older than its
            // timeline floor; and while clients write through it, never one older than any
            // timeline its probes have answered on since it started or woke (rule 1 + the floor).
            if let Some(x) = l.routed.filter(|&x| l.routed_by_current && self.nodes[x].running_primary()) {
                let xt = self.nodes[x].timeline;
                if xt < tl && (m.ready() || l.carries_writes(self.now, self.pair)) {
                    self.fail(&format!("{}: routes writes to pg{}, a primary on timeline {xt}, below its timeline {tl}", l.name, x + 1));
                }
                if l.carries_writes(self.now, self.pair) && xt < l.seen_tl {
                    let seen = l.seen_tl;
                    self.fail(&format!(
                        "{} routes client writes to pg{}, a primary on timeline {xt}, after probing timeline {seen} since it woke",
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
        // One writer for clients: two VIP holders whose daemons turn never send writes to two
        // running primaries. (A frozen or killed one's route is a leftover its lease bounds,
        // `check_lease`; what it lets through is judged by "no acknowledged write lost".)
        let holders = self.vip_holders();
        if self.pair && holders.len() > 1 {
            self.coverage.two_master_steps += 1;
            let turning = holders.iter().filter(|&&lb| self.lbs[lb].running() && self.lbs[lb].frozen.is_none());
            let routes: Vec<usize> = turning.filter_map(|&lb| self.lbs[lb].routed).collect();
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
            && self.now >= cut + self.handover_bound()
            && self.now < heal
            && !holders.iter().any(|&lb| self.lbs[lb].routed == Some(0) && self.lb_reaches(lb, 0))
        {
            self.fail("no vip holder routes writes to the primary although one load balancer reaches it");
        }
    }

    /// The lease: a running, unfrozen instance whose machine is not ready opens no new write
    /// flow; a frozen or killed one none once a lease has passed since its last ready turn.
    fn check_lease(&self, lb: usize) {
        let l = &self.lbs[lb];
        if self.now >= l.lease_until || l.live_and_ready() {
            return;
        }
        if l.running() && l.frozen.is_none() {
            self.fail(&format!("{}: its machine is not ready, yet its data plane's lease runs until {:?}", l.name, l.lease_until));
        }
        if l.ready_turn.is_none_or(|t| self.now >= t + LEASE) {
            self.fail(&format!("{}: frozen or down, its lease outlived its last ready turn {:?}", l.name, l.ready_turn));
        }
    }

    /// Trust: what a machine holds as fact (its durable floor, its state file's, the timelines
    /// its fences name) is a timeline some node really has, never one only a forged report
    /// told it.
    fn check_facts(&self, lb: usize) {
        let l = &self.lbs[lb];
        let file = l.disk.persisted.as_ref().map_or(0, |d| d.timeline);
        if file > self.max_tl {
            self.fail(&format!("{}: its state file's floor {file} is above every timeline a node has ({})", l.name, self.max_tl));
        }
        let Some(m) = &l.m else { return };
        let floor = m.durable().timeline;
        if floor > self.max_tl {
            self.fail(&format!("{}: its durable floor {floor} is above every timeline a node has ({})", l.name, self.max_tl));
        }
        for (n, node) in m.view().nodes.iter().enumerate() {
            if let Some(reason) = &node.fence
                && let Err(e) = self.fence_is_real(reason)
            {
                self.fail(&format!("{}: pg{} is fenced: {e}", l.name, n + 1));
            }
        }
    }

    /// Whether a fence rests on a timeline some node has.
    pub fn fence_is_real(&self, reason: &FenceReason) -> Result<(), String> {
        let newer = match *reason {
            FenceReason::OlderTimeline { writer_timeline, .. } => writer_timeline,
            FenceReason::SplitBrain { timeline, .. } => timeline,
            FenceReason::Replaced { .. } => return Ok(()),
        };
        if newer > self.max_tl {
            return Err(format!("{reason:?} names timeline {newer}, which no node has (newest {})", self.max_tl));
        }
        Ok(())
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
            (0..self.lbs.len()).filter(|&lb| self.lbs[lb].vip).collect()
        } else {
            let l = &self.lbs[0];
            if !l.p.vrrp_enabled || l.master { vec![0] } else { Vec::new() }
        };
        if self.pair && holders.len() != 1 {
            return Err(format!("{} vip holders, not one", holders.len()));
        }
        for lb in holders {
            let l = &self.lbs[lb];
            if l.routed != Some(w) || !l.carries_writes(self.now, self.pair) {
                return Err(format!("the vip holder {} does not open write flows to the writer pg{}", l.name, w + 1));
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
            Err(e) if self.now >= self.heal_at + self.liveness_bound() => {
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
                    let lagging = self.all_faults.iter().find_map(|&(_, f)| if let Fault::Lag(n) = f { Some(n) } else { None });
                    let lagging = lagging.expect("a lagging standby");
                    if self.promotions.iter().any(|&(at, _, n)| n == lagging && at < self.heal_at) {
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
            Scenario::Cascade => {
                // The second crash's victim is the first failover's winner; the last node must
                // be writing within the crash bound of it, before anything is restarted.
                let t = fault_at(|f| matches!(f, Fault::CrashWriter)).expect("a second crash");
                let Some(&(_, _, first)) = self.promotions.iter().find(|&&(at, _, _)| at < t) else {
                    return self.fail(&format!("no failover before the second crash at {t:?}: {:?}", self.promotions));
                };
                let last = 3 - first;
                let bound = p.detection_time() + Duration::from_millis(600);
                let promoted = self.vip_changes.iter().find(|(at, w)| *at >= t && *w == Some(last));
                if !self.pair && self.peers_alive.is_empty() {
                    // One load balancer, no peer: itself and pg3 are 2 of 4 members, no majority
                    // (it cannot tell two dead nodes from a cut to two live ones): writes stay
                    // refused until the heal.
                    if let Some((at, _)) = promoted.filter(|(at, _)| *at < self.heal_at) {
                        self.fail(&format!("pg{} promoted at {at:?} without a quorum", last + 1));
                    }
                    return;
                }
                match promoted {
                    Some((at, _)) if *at - t <= bound && *at < self.heal_at => {}
                    other => self.fail(&format!("pg{} not writing within {bound:?} of the second crash at {t:?}: {other:?}", last + 1)),
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
