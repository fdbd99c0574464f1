//! One load balancer: its daemon (the failover machine and the runtime's loop around it) and its
//! host (links, the data plane's route and lease, the VIP on its interface, the state file).
//! Kills, restarts and freezes.
//!
//! The loop is modelled on `runtime::Runtime`: every input is one turn ([`Sim::input`]). A gap
//! since the last turn longer than the lease wakes the machine humble first (the lease expired,
//! the VRRP machine told it is not ready, then [`Event::Stalled`]); then the input is handled;
//! then the VRRP machine is told what the failover machine now says ([`Sim::tell_vrrp`], in
//! `peers`). The lease is renewed at every step while the machine is ready; the state file is
//! written off the loop, one write at a time, the newest state next ([`Disk`]). While the loop
//! stands still ([`Freeze`]) nothing is handled: what arrives queues, each source in order, and
//! is handled after the resume in an order the seed picks (the loop's `select!`).

use lb_user::vip::report::{Freshness, Report};
use lb_user::vip::trust::PeerWords;
use lb_user::vip::vrrp::{self, Vrrp};

use crate::*;

/// One input of the runtime's loop.
#[derive(Debug, Clone)]
pub enum Input {
    /// A probe task's observation (the probes channel).
    Probe(Observation),
    /// The executor's or the recorder's answer (one channel).
    Done(Event),
    /// A peer report datagram, judged for freshness when the loop reads it.
    Report(Report),
    /// A report that passes every check: a modelled peer's (single), or a forgery.
    Believed(Report),
    /// A VRRP advert from a peer's address.
    Advert { src: Ipv4Addr, priority: u8 },
    /// An operator's command (the admin socket).
    Admin(AdminCommand),
    /// The machine's deadline (handled only when due).
    Tick,
    /// The VRRP machine's timer (handled only when due).
    VrrpTimer,
    /// The lease renewal tick.
    Renew,
}

/// How many of the loop's sources queue while it stands still (timers do not: they fire again).
const SOURCES: usize = 5;

impl Input {
    /// The loop's source: each one is read in order.
    fn source(&self) -> Option<usize> {
        match self {
            Input::Probe(_) => Some(0),
            Input::Done(_) => Some(1),
            Input::Report(_) | Input::Believed(_) => Some(2),
            Input::Advert { .. } => Some(3),
            Input::Admin(_) => Some(4),
            Input::Tick | Input::VrrpTimer | Input::Renew => None,
        }
    }
}

/// The daemon's loop stands still from `since` to `until`.
#[derive(Debug)]
pub struct Freeze {
    pub since: Duration,
    pub until: Duration,
    /// Only the loop stands still (a blocked call, `pglb debug stall-loop`): the probe tasks go
    /// on and their observations queue. Otherwise the whole process does (SIGSTOP, a suspended
    /// VM): no probe is taken.
    pub probes_go_on: bool,
    /// What arrived meanwhile, in arrival order.
    pub queue: Vec<Input>,
}

/// The state file and the task that writes it (`runtime::recorder`): one write at a time, the
/// newest state handed out meanwhile next (older ones coalesced).
#[derive(Debug, Default)]
pub struct Disk {
    /// The last write that succeeded: what a restart restores.
    pub persisted: Option<Durable>,
    /// The write in progress and when it ends.
    pub writing: Option<(Duration, Durable)>,
    pub next: Option<Durable>,
    /// Writes fail until then (a failing or full disk).
    pub fails_until: Duration,
    /// How long a write takes (per seed: within the step, or one step).
    pub takes: Duration,
}

/// What the loop last told the VRRP machine (`runtime::VrrpWord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VrrpWord {
    pub priority: u8,
    pub ready: bool,
}

/// One load balancer.
pub struct Lb {
    pub name: &'static str,
    pub addr: Ipv4Addr,
    pub base_priority: u8,
    pub p: Params,
    /// `None` while the daemon is down.
    pub m: Option<Machine>,
    /// Bumped at every kill: answers for an older generation never arrive.
    pub generation: u32,
    pub restart_at: Option<Duration>,
    // ----- the runtime's loop ------------------------------------------------------------
    /// Pair: the VRRP machine while the daemon runs (single: the role is scripted).
    pub vrrp: Option<Vrrp>,
    pub word: Option<VrrpWord>,
    /// The machine's last `Track`.
    pub tracked_reachable: bool,
    /// The machine's last state is on disk (`ClusterView::recorded`): the report says healthy,
    /// and the priority is the configured one, only then.
    pub recorded: bool,
    /// The machine was ready after the last turn (the runtime's copy).
    pub ready: bool,
    pub last_turn: Duration,
    /// Its report ids and the freshness of the peer's (pair).
    pub fresh: Freshness,
    /// The peer's latest believed report: what its adverts are worth.
    pub words: PeerWords,
    pub frozen: Option<Freeze>,
    /// The daemon's start or its last wake from a stall: probes taken before are stale.
    pub awake_since: Duration,
    // ----- the host ----------------------------------------------------------------------
    /// The VRRP role (pair: the VRRP machine's state; single: scripted).
    pub master: bool,
    /// The VIP is on this host's interface (a killed daemon leaves it; the next start removes it).
    pub vip: bool,
    /// The data plane's lease: it opens new write flows (and answers ARP for the VIP) only
    /// before this.
    pub lease_until: Duration,
    /// The last turn in which the daemon ran, unfrozen, with its machine ready.
    pub ready_turn: Option<Duration>,
    pub disk: Disk,
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
    /// The last probe of each node the machine counts (taken since `awake_since`).
    pub last_obs: Vec<Option<(Duration, Result<NodeStatus, ProbeFailure>)>>,
    /// When each peer's last report (its quorum vote) was believed since `awake_since`.
    pub last_peer: Vec<Option<Duration>>,
    /// The machine's `writer_timeline` at the last step of this run.
    pub tl_floor: u32,
    /// The highest timeline a probe taken since `awake_since` answered on.
    pub seen_tl: u32,
}

impl Lb {
    /// A load balancer whose daemon has not started yet.
    pub fn new(i: usize, p: Params, disk_takes: Duration) -> Lb {
        let peers = p.peers.len();
        Lb {
            name: ["lb1", "lb2"][i],
            addr: lb_addr(i),
            base_priority: LB_PRIORITY[i],
            words: PeerWords::new(&p.peers, &[], p.peer_timeout),
            p,
            m: None,
            generation: 0,
            restart_at: None,
            vrrp: None,
            word: None,
            tracked_reachable: false,
            recorded: true,
            ready: false,
            last_turn: Duration::ZERO,
            fresh: Freshness::new(0, 1, REPORT_MAX_AGE),
            frozen: None,
            awake_since: Duration::ZERO,
            master: false,
            vip: false,
            lease_until: Duration::ZERO,
            ready_turn: None,
            disk: Disk { takes: disk_takes, ..Disk::default() },
            routed: None,
            routed_by_current: false,
            last_some_routed: None,
            retired: HashSet::new(),
            reach: vec![true; NODES],
            flapping: vec![false; NODES],
            probe_now: vec![false; NODES],
            blips: vec![Vec::new(); NODES],
            last_obs: vec![None; NODES],
            last_peer: vec![None; peers],
            tl_floor: 0,
            seen_tl: 0,
        }
    }

    pub fn running(&self) -> bool {
        self.m.is_some()
    }

    /// Running, not frozen, and its machine has decided: what may renew the lease.
    pub fn live_and_ready(&self) -> bool {
        self.frozen.is_none() && self.m.as_ref().is_some_and(Machine::ready)
    }

    /// Its data plane opens new write flows for clients now: the lease is valid and (pair) the
    /// VIP is on its interface. In the single topology clients reach it whatever VRRP says.
    pub fn carries_writes(&self, now: Duration, pair: bool) -> bool {
        now < self.lease_until && (self.vip || !pair)
    }
}

/// The VRRP parameters of load balancer `i` in the pair, as `runtime::params::vrrp` maps the
/// lab's config: adverts every 100 ms, nopreempt (the default), the other one as its peer.
pub fn vrrp_params(i: usize) -> vrrp::VrrpParams {
    let mut v = vrrp::VrrpParams::new("sim0", VRID, LB_PRIORITY[i], VIP, lb_addr(i));
    v.advert_interval_cs = (PEER_ADVERT.as_millis() / 10) as u16;
    v.preempt = false;
    v.peers = vec![lb_addr(1 - i)];
    v.max_advert_interval_cs = 200;
    v.garp_refresh = None;
    v.validate().expect("the simulation's vrrp parameters are valid");
    v
}

impl Sim {
    // ----- the loop ------------------------------------------------------------------------

    /// One turn of `lb`'s loop with `input`: queued while the loop stands still, lost while the
    /// daemon is down.
    pub fn input(&mut self, lb: usize, input: Input) {
        let l = &mut self.lbs[lb];
        if !l.running() {
            return;
        }
        if let Some(f) = &mut l.frozen {
            if input.source().is_some() {
                f.queue.push(input);
            }
            return;
        }
        self.check_stall(lb);
        self.dispatch(lb, input);
        self.tell_vrrp(lb);
    }

    /// `Runtime::check_stall`: a gap since the last turn longer than the lease, or than the
    /// master-down interval (the peer may have taken over and acted meanwhile), wakes the
    /// instance humble: [`Event::Stalled`], the lease expired, then VRRP told it is not ready
    /// (in that order: a master's resignation fed to a machine that has not seen the stall would
    /// renew the lease it has just expired).
    fn check_stall(&mut self, lb: usize) {
        let now = self.now;
        let l = &mut self.lbs[lb];
        let gap = now.saturating_sub(l.last_turn);
        l.last_turn = now;
        let stall_after = if l.p.vrrp_enabled && !l.p.peers.is_empty() { LEASE.min(l.p.peer_timeout) } else { LEASE };
        if gap <= stall_after {
            return;
        }
        self.coverage.stalls += 1;
        l.ready = false;
        l.lease_until = now;
        l.awake_since = now;
        l.seen_tl = 0;
        l.last_obs = vec![None; NODES];
        l.last_peer = vec![None; l.p.peers.len()];
        let name = l.name;
        self.note(format!("{name}: the loop stood still for {} ms: lease expired, waking humble", gap.as_millis()));
        self.feed(lb, Event::Stalled);
        self.tell_vrrp(lb);
    }

    fn dispatch(&mut self, lb: usize, input: Input) {
        let now = self.now;
        match input {
            Input::Probe(obs) => {
                let l = &mut self.lbs[lb];
                if obs.at >= l.awake_since {
                    if let Ok(s) = &obs.result {
                        l.seen_tl = l.seen_tl.max(s.timeline);
                    }
                    l.last_obs[obs.node] = Some((obs.at, obs.result.clone()));
                }
                self.feed(lb, Event::Probe(obs));
            }
            Input::Done(event) => self.feed(lb, event),
            Input::Report(report) => self.judge_report(lb, report),
            Input::Believed(report) => self.believe_report(lb, report),
            Input::Advert { src, priority } => self.on_advert(lb, src, priority),
            Input::Admin(command) => self.feed(lb, Event::Admin(command)),
            Input::Tick => {
                if self.lbs[lb].m.as_ref().and_then(Machine::next_deadline).is_some_and(|d| d <= now) {
                    self.feed(lb, Event::Tick);
                }
            }
            Input::VrrpTimer => self.vrrp_timer(lb),
            Input::Renew => {
                if self.lbs[lb].ready {
                    self.renew_lease(lb);
                }
            }
        }
    }

    /// One event into `lb`'s machine; its actions applied in order; the lease renewed at once
    /// when the machine has just become ready (`Runtime::feed`); writes that take no time end.
    pub fn feed(&mut self, lb: usize, event: Event) {
        let now = self.now;
        let Some(m) = self.lbs[lb].m.as_mut() else { return };
        let actions = m.handle(event, now);
        if actions.len() > MAX_ACTIONS_PER_CALL {
            self.fail(&format!("{} actions for one event", actions.len()));
        }
        for a in actions {
            if self.act(lb, a) {
                return; // killed right after sending it
            }
        }
        let l = &mut self.lbs[lb];
        l.recorded = l.m.as_ref().is_none_or(|m| m.view().recorded);
        let ready = l.m.as_ref().is_some_and(Machine::ready);
        if ready != l.ready {
            l.ready = ready;
            if ready {
                self.renew_lease(lb);
            }
        }
        self.finish_writes(lb);
    }

    fn renew_lease(&mut self, lb: usize) {
        let now = self.now;
        let l = &mut self.lbs[lb];
        l.lease_until = now + LEASE;
        l.ready_turn = Some(now);
    }

    // ----- the state file ------------------------------------------------------------------

    /// `Action::Persist`: written after the write in progress, if any (`Recorder::record`).
    /// Returns whether a trigger armed for the recording of a promotion killed the daemon.
    pub fn persist(&mut self, lb: usize, state: Durable) -> bool {
        let now = self.now;
        let d = &mut self.lbs[lb].disk;
        let records_promotion = state.promoting.is_some() && d.persisted.as_ref().and_then(|p| p.promoting.as_ref()) != state.promoting.as_ref();
        if d.writing.is_some() {
            d.next = Some(state);
        } else {
            d.writing = Some((now + d.takes, state));
        }
        records_promotion && self.fire_armed(lb, Trigger::Recording, None)
    }

    /// Ends the write in progress if it is due (and starts the next); its outcome goes back to
    /// the machine (`Event::Persisted`). A failing disk fails it.
    pub fn finish_writes(&mut self, lb: usize) {
        let now = self.now;
        for _ in 0..8 {
            let l = &mut self.lbs[lb];
            let Some((_, state)) = l.disk.writing.take_if(|(due, _)| *due <= now) else { return };
            let result = if now < l.disk.fails_until {
                self.coverage.writes_failed += 1;
                let name = l.name;
                self.note(format!("{name}: writing the state file failed (promoting: {:?})", state.promoting));
                Err("writing the state file: input/output error".to_owned())
            } else {
                let floor = l.disk.persisted.as_ref().map_or(0, |d| d.timeline);
                if state.timeline < floor {
                    let name = l.name;
                    self.fail(&format!("{name}: the state file's timeline went back from {floor} to {}", state.timeline));
                }
                l.disk.persisted = Some(state.clone());
                Ok(())
            };
            let l = &mut self.lbs[lb];
            if let Some(next) = l.disk.next.take() {
                l.disk.writing = Some((now + l.disk.takes, next));
            }
            self.input(lb, Input::Done(Event::Persisted { state, result }));
        }
    }

    /// A daemon killed with a write in progress: the rename happened or it did not; the states
    /// handed out after it are lost.
    fn kill_writes(&mut self, lb: usize) {
        let now = self.now;
        let lands = self.rng.chance(IN_FLIGHT_COMPLETES_PERCENT);
        let d = &mut self.lbs[lb].disk;
        d.next = None;
        if let Some((_, state)) = d.writing.take()
            && lands
            && now >= d.fails_until
        {
            d.persisted = Some(state);
        }
    }

    // ----- kills, restarts, freezes --------------------------------------------------------

    /// kill -9: the machine and the VRRP machine are gone; the data plane keeps its route, its
    /// lease runs out by itself, and the VIP stays on the interface until the next start.
    pub fn kill_daemon(&mut self, lb: usize, down_for: Option<Duration>) {
        if !self.lbs[lb].running() {
            return;
        }
        let now = self.now;
        self.note(format!("{}: daemon killed (restart {:?})", self.lbs[lb].name, down_for.map(|d| now + d)));
        self.coverage.kills += 1;
        self.kill_writes(lb);
        let l = &mut self.lbs[lb];
        l.m = None;
        l.vrrp = None;
        l.word = None;
        l.frozen = None;
        l.generation += 1;
        l.master = false;
        l.ready = false;
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

    /// `pglb run`: the machine from the state file (a first start without one) and the data
    /// plane's route as it was left; the lease expired and a stale VIP removed; VRRP a backup
    /// that is not ready, with its master-down timer running.
    pub fn restart_daemon(&mut self, lb: usize) {
        if self.lbs[lb].running() {
            return;
        }
        let now = self.now;
        let pair = self.pair;
        let l = &mut self.lbs[lb];
        let mut m = match &l.disk.persisted {
            Some(d) => Machine::restore(l.p.clone(), d),
            None => Machine::new(l.p.clone()),
        };
        m.set_routed(l.routed);
        let tl = m.view().writer_timeline.unwrap_or(0);
        l.m = Some(m);
        l.restart_at = None;
        l.routed_by_current = false;
        l.master = false;
        l.vip = false;
        l.ready = false;
        l.tracked_reachable = false;
        l.lease_until = now;
        l.last_turn = now;
        l.awake_since = now;
        l.seen_tl = 0;
        l.tl_floor = tl;
        l.last_obs = vec![None; NODES];
        l.last_peer = vec![None; l.p.peers.len()];
        l.fresh = Freshness::new(u64::from(l.generation) + 1, 1, REPORT_MAX_AGE);
        l.words = PeerWords::new(&l.p.peers, &[], l.p.peer_timeout);
        let mut actions = Vec::new();
        if pair {
            let mut v = Vrrp::new(vrrp_params(lb));
            actions.extend(v.handle(vrrp::Event::Ready { ready: false }, now));
            actions.extend(v.handle(vrrp::Event::Startup, now));
            l.word = Some(VrrpWord { priority: l.base_priority, ready: false });
            l.vrrp = Some(v);
        }
        let floor = l.disk.persisted.as_ref().map_or(0, |d| d.timeline);
        let name = l.name;
        self.note(format!("{name}: daemon started from {:?}", self.lbs[lb].disk.persisted));
        if tl < floor {
            self.fail(&format!("{name} started on timeline {tl}, below the {floor} of its state file"));
        }
        self.vrrp_actions(lb, actions);
    }

    /// The daemon's loop stands still for `length` (see [`Freeze`]).
    pub fn freeze(&mut self, lb: usize, length: Duration, probes_go_on: bool) {
        let now = self.now;
        let l = &mut self.lbs[lb];
        if !l.running() || l.frozen.is_some() {
            return;
        }
        l.frozen = Some(Freeze { since: now, until: now + length, probes_go_on, queue: Vec::new() });
        self.coverage.freezes += 1;
        let what = if probes_go_on { "the loop stands still" } else { "the process stands still" };
        self.note(format!("{}: frozen for {} ms ({what})", self.lbs[lb].name, length.as_millis()));
    }

    /// The loop turns again: the gap check first (`Event::Stalled` after more than the lease),
    /// then what queued up meanwhile, each source in order, the sources interleaved as the
    /// seed picks.
    pub fn resume(&mut self, lb: usize) {
        let Some(f) = self.lbs[lb].frozen.take() else { return };
        let name = self.lbs[lb].name;
        self.note(format!("{name}: resumes after {} ms with {} inputs queued", (self.now - f.since).as_millis(), f.queue.len()));
        if self.now - f.since > LEASE && f.queue.iter().any(|i| matches!(i, Input::Done(Event::ActionDone { .. }))) {
            self.coverage.late_action_reports += 1;
        }
        let mut queues: Vec<VecDeque<Input>> = (0..SOURCES).map(|_| VecDeque::new()).collect();
        for input in f.queue {
            let source = input.source().expect("only sources queue");
            queues[source].push_back(input);
        }
        self.input(lb, Input::Renew);
        loop {
            let ready: Vec<usize> = (0..SOURCES).filter(|&s| !queues[s].is_empty()).collect();
            if ready.is_empty() {
                return;
            }
            let source = ready[self.rng.below(ready.len() as u64) as usize];
            let input = queues[source].pop_front().expect("a non-empty source");
            // A trigger may freeze it again meanwhile: the rest queues ahead of what comes next.
            if let Some(f) = &mut self.lbs[lb].frozen {
                let rest: Vec<Input> = std::iter::once(input).chain(queues.into_iter().flatten()).collect();
                f.queue.splice(0..0, rest);
                return;
            }
            self.input(lb, input);
        }
    }
}
