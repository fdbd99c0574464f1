//! The simulation itself: its state, its construction from a seed, and the loop that steps it.

use crate::*;

/// What one seed exercised (summed over seeds for the summary).
#[derive(Debug, Default, Clone, Copy)]
pub struct Coverage {
    pub blips: [u32; 6],
    pub kills: u32,
    pub kills_with_promote_in_flight: u32,
    pub reports_lost: u32,
    pub stale_primary_returns: u32,
    pub stale_while_lb_down: u32,
    pub rejoins_ok: u32,
    pub rejoins_failed: u32,
    pub two_master_steps: u32,
    pub failovers_done: u32,
    pub switchovers_done: u32,
    pub switchovers_aborted: u32,
    pub freezes: u32,
    /// Freezes longer than the lease: the machine woke humble.
    pub stalls: u32,
    /// An `ActionDone` queued behind a stall.
    pub late_action_reports: u32,
    pub disk_faults: u32,
    pub writes_failed: u32,
    /// `FailoverBlocked { StateNotRecorded }`.
    pub blocked_unrecorded: u32,
    pub forged_reports: u32,
    /// `FailoverBlocked { PeerTimelineUnconfirmed }`.
    pub blocked_by_hint: u32,
    /// Peer reports the freshness guard refused.
    pub reports_refused: u32,
    /// Adverts no fresh report vouched for.
    pub adverts_unconfirmed: u32,
    /// A VRRP master that resigned because its machine was not ready.
    pub resigned_not_ready: u32,
}

impl Coverage {
    pub fn add(&mut self, o: &Coverage) {
        for (a, b) in self.blips.iter_mut().zip(o.blips) {
            *a += b;
        }
        // Taken apart, so that a counter added to the struct cannot be left out of the sum.
        let Coverage {
            blips: _,
            kills, kills_with_promote_in_flight, reports_lost, stale_primary_returns, stale_while_lb_down,
            rejoins_ok, rejoins_failed, two_master_steps, failovers_done, switchovers_done, switchovers_aborted,
            freezes, stalls, late_action_reports, disk_faults, writes_failed, blocked_unrecorded,
            forged_reports, blocked_by_hint, reports_refused, adverts_unconfirmed, resigned_not_ready,
        } = *o;
        self.kills += kills;
        self.kills_with_promote_in_flight += kills_with_promote_in_flight;
        self.reports_lost += reports_lost;
        self.stale_primary_returns += stale_primary_returns;
        self.stale_while_lb_down += stale_while_lb_down;
        self.rejoins_ok += rejoins_ok;
        self.rejoins_failed += rejoins_failed;
        self.two_master_steps += two_master_steps;
        self.failovers_done += failovers_done;
        self.switchovers_done += switchovers_done;
        self.switchovers_aborted += switchovers_aborted;
        self.freezes += freezes;
        self.stalls += stalls;
        self.late_action_reports += late_action_reports;
        self.disk_faults += disk_faults;
        self.writes_failed += writes_failed;
        self.blocked_unrecorded += blocked_unrecorded;
        self.forged_reports += forged_reports;
        self.blocked_by_hint += blocked_by_hint;
        self.reports_refused += reports_refused;
        self.adverts_unconfirmed += adverts_unconfirmed;
        self.resigned_not_ready += resigned_not_ready;
    }
}

pub struct Sim {
    pub seed: u64,
    pub scenario: Scenario,
    pub rng: Rng,
    pub now: Duration,
    pub pair: bool,
    pub nodes: Vec<PgNode>,
    pub lbs: Vec<Lb>,
    /// Single: the modelled peers.
    pub peers_alive: Vec<bool>,
    /// Pair: the LB↔LB link, and what is on it.
    pub lb_link: bool,
    pub wire: VecDeque<Wire>,
    /// Forged reports under way.
    pub forgeries: Vec<Forgery>,
    /// timeline -> (parent timeline, fork LSN)
    pub forks: BTreeMap<u32, (u32, u64)>,
    /// Children promoted by pglb actions, per parent timeline.
    pub pglb_children: BTreeMap<u32, Vec<u32>>,
    pub max_tl: u32,
    /// An external promotion or same-timeline primary happened: acknowledged-write tracking
    /// across that fork is not the machine's responsibility.
    pub tainted: bool,
    /// Highest acknowledged commit LSN per timeline.
    pub acked: BTreeMap<u32, u64>,
    pub pending: Vec<Pending>,
    pub faults: Vec<(Duration, Fault)>,
    pub all_faults: Vec<(Duration, Fault)>,
    pub armed: Vec<Armed>,
    pub report_lost: bool,
    pub heal_at: Duration,
    pub end: Duration,
    /// LbCutFromPrimary: (cut, heal) of the cut load balancer's link to the primary.
    pub handover_window: Option<(Duration, Duration)>,
    /// Since when one writer has held without a break (after the heal).
    pub settled_at: Option<Duration>,
    pub promotions: Vec<(Duration, usize, usize)>,
    /// The route clients write through (the first VIP holder's) whenever it changes.
    pub vip_changes: Vec<(Duration, Option<usize>)>,
    pub coverage: Coverage,
    pub trace: Vec<String>,
    /// `SIM_TRACE_NODES`: trace the cluster model at every step.
    pub trace_nodes: bool,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        Sim::with_scenario(seed, SCENARIOS[(seed % SCENARIOS.len() as u64) as usize])
    }

    /// A run of `scenario` whatever the seed (the seed draws everything else).
    pub fn with_scenario(seed: u64, scenario: Scenario) -> Sim {
        use Scenario::*;
        let mut rng = Rng(seed);
        rng.next();
        let pair = match scenario {
            NotMaster | NoQuorum | Chaos => false,
            Crash | Hang | Partition | Flapping | LaggingStandby | SecondPrimary | Switchover | DoubleFault | Cascade => rng.chance(50),
            _ => true,
        };
        let (peers, vrrp) = if pair {
            (1, true)
        } else {
            match scenario {
                NotMaster | NoQuorum | DoubleFault => (1, true),
                Chaos => (rng.below(3) as usize, true),
                _ => (rng.below(2) as usize, rng.chance(50)),
            }
        };
        let rejoin = rng.chance(if scenario == RestartWithStalePrimary { 50 } else { 30 });
        // The state file's disk: a write ends within the step, or one step later.
        let disk_takes = if rng.chance(30) { DT } else { Duration::ZERO };
        let nofailover = (scenario == Chaos && rng.chance(30)).then(|| 1 + rng.below(2) as usize);
        let lbs: Vec<Lb> = if pair {
            (0..2)
                .map(|i| {
                    let mut p = params(vec![lb_addr(1 - i)], true, rejoin, LB_PRIORITY[i]);
                    if let Some(n) = nofailover {
                        p.nodes[n].nofailover = true;
                    }
                    Lb::new(i, p, disk_takes)
                })
                .collect()
        } else {
            let mut p = params((0..peers).map(|i| Ipv4Addr::new(172, 20, 0, 22 + i as u8)).collect(), vrrp, rejoin, LB_PRIORITY[0]);
            if let Some(n) = nofailover {
                p.nodes[n].nofailover = true;
            }
            vec![Lb::new(0, p, disk_takes)]
        };
        let nodes = (0..NODES)
            .map(|i| PgNode {
                alive: true,
                hung: false,
                hung_since: Duration::ZERO,
                in_recovery: i != 0,
                timeline: 1,
                lsn: 1000,
                upstream: (i != 0).then_some(0),
                connected: i != 0,
                repl_link: true,
                lagging: false,
                lag_budget: 0,
                sync_count: 1,
                sync_names: (0..NODES).collect(),
            })
            .collect();
        let mut sim = Sim {
            seed,
            scenario,
            rng,
            now: Duration::ZERO,
            pair,
            nodes,
            lbs,
            peers_alive: vec![true; if pair { 0 } else { peers }],
            lb_link: true,
            wire: VecDeque::new(),
            forgeries: Vec::new(),
            forks: BTreeMap::new(),
            pglb_children: BTreeMap::new(),
            max_tl: 1,
            tainted: false,
            acked: BTreeMap::new(),
            pending: Vec::new(),
            faults: Vec::new(),
            all_faults: Vec::new(),
            armed: Vec::new(),
            report_lost: false,
            heal_at: Duration::ZERO,
            end: Duration::ZERO,
            handover_window: None,
            settled_at: None,
            promotions: Vec::new(),
            vip_changes: Vec::new(),
            coverage: Coverage::default(),
            trace: Vec::new(),
            trace_nodes: std::env::var("SIM_TRACE_NODES").is_ok(),
        };
        // Every daemon starts with the cluster: no state file, nothing routed, nothing decided.
        for lb in 0..sim.lbs.len() {
            sim.restart_daemon(lb);
        }
        sim.plan();
        sim
    }

    /// [`liveness_bound`] with the longest master-down interval of the load balancers.
    pub fn liveness_bound(&self) -> Duration {
        self.lbs.iter().map(|l| liveness_bound(&l.p)).max().expect("load balancers")
    }

    /// [`handover_bound`] with the longest master-down interval of the load balancers.
    pub fn handover_bound(&self) -> Duration {
        self.lbs.iter().map(|l| handover_bound(&l.p)).max().expect("load balancers")
    }

    pub fn note(&mut self, line: String) {
        self.trace.push(format!("{:>6}ms {line}", self.now.as_millis()));
    }

    pub fn fail(&self, what: &str) -> ! {
        let lines = std::env::var("SIM_TRACE_TAIL").ok().and_then(|s| s.parse().ok()).unwrap_or(80);
        let tail: Vec<&str> = self.trace.iter().rev().take(lines).rev().map(|s| s.as_str()).collect();
        let mut lbs = String::new();
        for l in &self.lbs {
            lbs.push_str(&format!(
                "{}: running {} frozen {:?} master {} vip {} lease until {:?} ready {} routed {:?} reach {:?} state file {:?} writes fail until {:?}\n",
                l.name,
                l.running(),
                l.frozen.as_ref().map(|f| (f.since, f.until)),
                l.master,
                l.vip,
                l.lease_until,
                l.ready,
                l.routed,
                l.reach,
                l.disk.persisted,
                l.disk.fails_until,
            ));
            if let Some(m) = &l.m {
                lbs.push_str(&format!("{} view: {:#?}\n", l.name, m.view()));
            }
        }
        let nodes: Vec<String> = (0..NODES).map(|n| self.describe_node(n)).collect();
        panic!(
            "seed {} ({:?}, {}, disk {:?}, rejoin {}) at {}ms: {what}\nfaults: {:?}\nheal at {:?}\nforks: {:?}\nacked: {:?}\n{}\n{}\ntrace:\n{}",
            self.seed,
            self.scenario,
            if self.pair { "pair" } else { "single" },
            self.lbs[0].disk.takes,
            self.lbs[0].p.rejoin,
            self.now.as_millis(),
            self.all_faults,
            self.heal_at,
            self.forks,
            self.acked,
            nodes.join("\n"),
            lbs,
            tail.join("\n")
        );
    }

    pub fn describe_node(&self, n: usize) -> String {
        let x = &self.nodes[n];
        format!(
            "pg{}: alive {} hung {} recovery {} tl {} lsn {} upstream {:?} connected {}",
            n + 1,
            x.alive,
            x.hung,
            x.in_recovery,
            x.timeline,
            x.lsn,
            x.upstream.map(|u| u + 1),
            x.connected
        )
    }

    // ----- probe blips and kills at stages -------------------------------------------------

    /// The stage `lb`'s machine is in, with the nodes by role: old writer (or `from`),
    /// candidate (or `to`), the third.
    pub fn stage_of(&self, lb: usize) -> Option<(Stage, [usize; 3])> {
        let m = self.lbs[lb].m.as_ref()?;
        match m.phase() {
            Phase::Switchover { from, to, stage, .. } => {
                let s = match stage {
                    SwitchoverStage::CatchingUp { .. } => Stage::CatchingUp,
                    SwitchoverStage::Demoting => Stage::Demoting,
                    SwitchoverStage::Demoted => Stage::Demoted,
                    SwitchoverStage::Promoting => Stage::Promoting,
                };
                Some((s, trio(from, Some(to))))
            }
            // Settling is failover's first step: the same stage for the triggers.
            Phase::FailingOver { old, candidate, .. } | Phase::Settling { old, candidate, .. } => {
                let old = old.filter(|&o| o != candidate).unwrap_or((candidate + 1) % NODES);
                Some((Stage::FailingOver, trio(old, Some(candidate))))
            }
            Phase::WriterLost { old, .. } => {
                let debouncing = matches!(m.view().blocked, Some(Blocked::Debouncing { .. }));
                debouncing.then(|| (Stage::Debouncing, trio(old.unwrap_or(0), None)))
            }
            Phase::Steady => {
                let w = m.writer()?;
                (m.view().nodes[w].consecutive_failures > 0).then(|| (Stage::Debouncing, trio(w, None)))
            }
            Phase::Starting => None,
        }
    }

    pub fn fire_stage_triggers(&mut self) {
        if !self.armed.iter().any(|a| matches!(a.trigger, Trigger::Stage(_))) {
            return;
        }
        for lb in 0..self.lbs.len() {
            if let Some((stage, roles)) = self.stage_of(lb) {
                self.fire_armed(lb, Trigger::Stage(stage), Some(roles));
            }
        }
    }

    // ----- the loop ------------------------------------------------------------------------

    pub fn step(&mut self) {
        while let Some(&(t, fault)) = self.faults.first() {
            if t > self.now {
                break;
            }
            self.faults.remove(0);
            self.apply_fault(fault);
        }
        for lb in 0..self.lbs.len() {
            if self.lbs[lb].restart_at.is_some_and(|t| t <= self.now) {
                self.restart_daemon(lb);
            }
            if self.lbs[lb].frozen.as_ref().is_some_and(|f| f.until <= self.now) {
                self.resume(lb);
            }
        }
        for n in 0..NODES {
            self.nodes[n].lag_budget = 8_000; // a third of the average write rate
        }
        for lb in 0..self.lbs.len() {
            for n in 0..NODES {
                if self.lbs[lb].flapping[n] {
                    self.lbs[lb].reach[n] = self.rng.chance(50);
                }
            }
        }
        self.complete_pending();
        for lb in 0..self.lbs.len() {
            self.finish_writes(lb);
        }
        self.replicate();
        self.client_write();
        self.replicate();
        self.update_acks();
        if self.trace_nodes {
            let line: Vec<String> = (0..NODES).map(|n| self.describe_node(n)).collect();
            let acked = format!("{:?}", self.acked);
            self.note(format!("model: {} acked {acked}", line.join("; ")));
        }
        self.peers_speak();
        for lb in 0..self.lbs.len() {
            self.input(lb, Input::VrrpTimer);
        }
        self.deliver_wire();
        self.probe_step();
        for lb in 0..self.lbs.len() {
            self.input(lb, Input::Tick);
            self.input(lb, Input::Renew);
        }
        self.deliver_wire();
        self.fire_stage_triggers();
        let vip = self.vip_route();
        if self.vip_changes.last().is_none_or(|&(_, v)| v != vip) {
            self.vip_changes.push((self.now, vip));
        }
        self.check_step();
        self.check_liveness();
        self.now += DT;
    }

    /// The probe tasks: every node each probe interval (staggered), or at once when asked. A
    /// frozen process takes none; a frozen loop's answers queue.
    fn probe_step(&mut self) {
        for lb in 0..self.lbs.len() {
            for n in 0..NODES {
                let offset = Duration::from_millis(50 * ((n + 2 * lb) % 4) as u64);
                let round = self.now >= offset && (self.now - offset).as_millis().is_multiple_of(PROBE.as_millis());
                let due = round || std::mem::take(&mut self.lbs[lb].probe_now[n]);
                let l = &self.lbs[lb];
                if !due || !l.running() || l.frozen.as_ref().is_some_and(|f| !f.probes_go_on) {
                    continue;
                }
                let result = self.status(lb, n);
                let obs = Observation { node: n, at: self.now, latency: Duration::from_millis(1), result };
                self.input(lb, Input::Probe(obs));
            }
        }
    }

    pub fn run(mut self) -> Sim {
        while self.now < self.end {
            self.step();
        }
        self.check_end();
        self
    }
}
