//! One load balancer: its daemon (the failover machine), VRRP, and its host (links, data plane,
//! state file); kills and restarts.

use crate::*;

/// One load balancer: its daemon (machine, VRRP) and its host (links, data plane, state file).
pub struct Lb {
    pub name: &'static str,
    pub addr: Ipv4Addr,
    pub base_priority: u8,
    pub p: Params,
    /// `None` while the daemon is down.
    pub m: Option<Machine>,
    /// Bumped at every kill: reports for an older generation never arrive.
    pub generation: u32,
    /// A restarted daemon is a VRRP backup until then.
    pub warm_at: Duration,
    pub restart_at: Option<Duration>,
    /// The state file: the last `Persist`.
    pub persisted: Option<Durable>,
    /// The data plane's writer (the last `SetWriter`; survives a restart).
    pub routed: Option<usize>,
    /// The running machine has emitted a `SetWriter` (before that `routed` is a leftover).
    pub routed_by_current: bool,
    pub last_some_routed: Option<usize>,
    pub retired: HashSet<usize>,
    pub reach: Vec<bool>,
    pub flapping: Vec<bool>,
    /// `Action::Probe` asked for a probe of the node out of its round (done at the next step).
    pub probe_now: Vec<bool>,
    /// Probe failures to hand out before real answers, per node.
    pub blips: Vec<Vec<ProbeFailure>>,
    pub track_down: bool,
    pub master: bool,
    /// Advertise at the next step rather than the next interval (RFC 9568: on becoming master
    /// and on a priority change).
    pub advert_due: bool,
    /// The last advert heard from the peer (pair): when, at which priority.
    pub heard: Option<(Duration, u8)>,
    pub last_obs: Vec<Option<(Duration, Result<NodeStatus, ProbeFailure>)>>,
    /// When each peer's last report (its quorum vote) arrived.
    pub last_peer: Vec<Option<Duration>>,
    /// The highest `writer_timeline` this load balancer ever had.
    pub tl_floor: u32,
    /// The highest timeline its probes showed a primary on since its daemon started.
    pub seen_tl: u32,
}

impl Lb {
    pub fn new(i: usize, p: Params) -> Lb {
        let peers = p.peers.len();
        Lb {
            name: ["lb1", "lb2"][i],
            addr: lb_addr(i),
            base_priority: LB_PRIORITY[i],
            m: Some(Machine::new(p.clone())),
            p,
            generation: 0,
            warm_at: Duration::ZERO,
            restart_at: None,
            persisted: None,
            routed: None,
            routed_by_current: false,
            last_some_routed: None,
            retired: HashSet::new(),
            reach: vec![true; NODES],
            flapping: vec![false; NODES],
            probe_now: vec![false; NODES],
            blips: vec![Vec::new(); NODES],
            track_down: false,
            master: false,
            advert_due: false,
            heard: None,
            last_obs: vec![None; NODES],
            last_peer: vec![None; peers],
            tl_floor: 0,
            seen_tl: 0,
        }
    }

    pub fn running(&self) -> bool {
        self.m.is_some()
    }

    pub fn priority(&self) -> u8 {
        if self.track_down { self.base_priority - TRACK_WEIGHT } else { self.base_priority }
    }
}

impl Sim {
    // ----- the daemons ---------------------------------------------------------------------

    pub fn kill_daemon(&mut self, lb: usize, down_for: Option<Duration>) {
        if !self.lbs[lb].running() {
            return;
        }
        let now = self.now;
        self.note(format!("{}: daemon killed (restart {:?})", self.lbs[lb].name, down_for.map(|d| now + d)));
        self.coverage.kills += 1;
        let l = &mut self.lbs[lb];
        l.m = None;
        l.generation += 1;
        l.master = false;
        l.track_down = false;
        l.heard = None;
        l.restart_at = down_for.map(|d| now + d);
        // A request already sent completes on its server (or never left the host).
        let mut promote_in_flight = false;
        for p in std::mem::take(&mut self.pending) {
            if p.lb == lb && !self.rng.chance(IN_FLIGHT_COMPLETES_PERCENT) {
                self.note(format!("{}: in flight, never reached its server: {:?}", self.lbs[lb].name, p.action));
                continue;
            }
            promote_in_flight |= p.lb == lb && matches!(p.action, Action::Promote { .. });
            self.pending.push(p);
        }
        if promote_in_flight {
            self.coverage.kills_with_promote_in_flight += 1;
        }
    }

    /// `pglb run` again: the machine from the state file (a first start without one), VRRP a
    /// backup until its master-down timer ran out, the data plane's route as it was left.
    pub fn restart_daemon(&mut self, lb: usize) {
        if self.lbs[lb].running() {
            return;
        }
        let now = self.now;
        let l = &mut self.lbs[lb];
        let m = match &l.persisted {
            Some(d) => Machine::restore(l.p.clone(), d),
            None => Machine::new(l.p.clone()),
        };
        let mut m = m;
        m.set_routed(l.routed);
        let tl = m.view().writer_timeline.unwrap_or(0);
        l.m = Some(m);
        l.warm_at = now + l.p.peer_timeout;
        l.restart_at = None;
        l.routed_by_current = false;
        l.master = false;
        l.heard = None;
        l.last_obs = vec![None; NODES];
        l.last_peer = vec![None; l.p.peers.len()];
        l.seen_tl = 0;
        let (name, floor) = (l.name, l.tl_floor);
        self.note(format!("{name}: daemon restarted from {:?}", self.lbs[lb].persisted));
        if tl < floor {
            self.fail(&format!("{name} restarted on timeline {tl}, below the {floor} it had reached"));
        }
    }

    // ----- VRRP ----------------------------------------------------------------------------

    pub fn vrrp_step(&mut self) {
        let now = self.now;
        let advert = now.as_millis().is_multiple_of(PEER_ADVERT.as_millis());
        if !self.pair {
            // The master role is told at start (and lost never, except in NotMaster).
            let l = &self.lbs[0];
            if l.p.vrrp_enabled && now == Duration::ZERO && self.scenario != Scenario::NotMaster {
                self.lbs[0].master = true;
                self.call(0, Event::VrrpRole { master: true });
            }
            if advert {
                for i in 0..self.peers_alive.len() {
                    if self.peers_alive[i] {
                        self.lbs[0].last_peer[i] = Some(now);
                        let peer = self.lbs[0].p.peers[i];
                        self.call(0, Event::PeerHeard { peer });
                        // The scripted peer knows and reaches what this one does.
                        if let Some(report) = self.lbs[0].m.as_ref().map(|m| m.report()) {
                            self.call(0, Event::PeerReport { peer, report });
                        }
                    }
                }
            }
            return;
        }
        // Peer reports (every pglb sends its own each advert interval, backups too, from the
        // first moment its daemon runs; over the LB↔LB link like the adverts).
        if advert && self.lb_link {
            for from in 0..2 {
                let to = 1 - from;
                if !self.lbs[from].running() || !self.lbs[to].running() {
                    continue;
                }
                let Some(report) = self.lbs[from].m.as_ref().map(|m| m.report()) else { continue };
                let peer = self.lbs[from].addr;
                // An authenticated report is the peer's quorum vote (an advert is not).
                self.lbs[to].last_peer[0] = Some(now);
                self.call(to, Event::PeerReport { peer, report });
            }
        }
        // Adverts (at the interval, or at once when due), then roles; a new master's first
        // advert reaches its peer in the same step.
        for round in 0..2 {
            for from in 0..2 {
                let to = 1 - from;
                let y = &self.lbs[from];
                let sends = y.running() && now >= y.warm_at && (!self.silent_backups || y.master);
                if !sends || !(y.advert_due || (advert && round == 0)) {
                    continue;
                }
                self.lbs[from].advert_due = false;
                if !self.lb_link || !self.lbs[to].running() {
                    continue;
                }
                let (priority, addr) = (self.lbs[from].priority(), self.lbs[from].addr);
                self.lbs[to].heard = Some((now, priority));
                self.call(to, Event::PeerHeard { peer: addr });
            }
            for x in 0..2 {
                let l = &self.lbs[x];
                if !l.running() {
                    continue;
                }
                let own = l.priority();
                let peer_addr = self.lbs[1 - x].addr;
                let higher = l.heard.is_some_and(|(at, p)| {
                    now.saturating_sub(at) <= l.p.peer_timeout && (p > own || (p == own && peer_addr > l.addr))
                });
                let master = now >= l.warm_at && !higher;
                if master != l.master {
                    self.lbs[x].master = master;
                    self.lbs[x].advert_due |= master;
                    self.call(x, Event::VrrpRole { master });
                }
            }
        }
    }
}
