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
}

impl Coverage {
    pub fn add(&mut self, o: &Coverage) {
        for (a, b) in self.blips.iter_mut().zip(o.blips) {
            *a += b;
        }
        self.kills += o.kills;
        self.kills_with_promote_in_flight += o.kills_with_promote_in_flight;
        self.reports_lost += o.reports_lost;
        self.stale_primary_returns += o.stale_primary_returns;
        self.stale_while_lb_down += o.stale_while_lb_down;
        self.rejoins_ok += o.rejoins_ok;
        self.rejoins_failed += o.rejoins_failed;
        self.two_master_steps += o.two_master_steps;
        self.failovers_done += o.failovers_done;
        self.switchovers_done += o.switchovers_done;
        self.switchovers_aborted += o.switchovers_aborted;
    }
}

pub struct Sim {
    pub seed: u64,
    pub scenario: Scenario,
    pub rng: Rng,
    pub now: Duration,
    pub pair: bool,
    /// Pair: only the VRRP master sends adverts (RFC 9568); otherwise both do.
    pub silent_backups: bool,
    pub nodes: Vec<PgNode>,
    pub lbs: Vec<Lb>,
    /// Single: the modelled peers.
    pub peers_alive: Vec<bool>,
    /// Pair: the LB↔LB link.
    pub lb_link: bool,
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
    /// The VIP holder's route whenever it changes (single: the load balancer's route).
    pub vip_changes: Vec<(Duration, Option<usize>)>,
    pub coverage: Coverage,
    pub trace: Vec<String>,
    /// `SIM_TRACE_NODES`: trace the cluster model at every step.
    pub trace_nodes: bool,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        use Scenario::*;
        let mut rng = Rng(seed);
        let scenario = SCENARIOS[(seed % SCENARIOS.len() as u64) as usize];
        rng.next();
        let pair = match scenario {
            NotMaster | NoQuorum | Chaos => false,
            Crash | Hang | Partition | Flapping | LaggingStandby | SecondPrimary | Switchover | DoubleFault => rng.chance(50),
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
        let silent_backups = pair && rng.chance(30);
        let nofailover = (scenario == Chaos && rng.chance(30)).then(|| 1 + rng.below(2) as usize);
        let lbs: Vec<Lb> = if pair {
            (0..2)
                .map(|i| {
                    let mut p = params(vec![lb_addr(1 - i)], true, rejoin);
                    if let Some(n) = nofailover {
                        p.nodes[n].nofailover = true;
                    }
                    Lb::new(i, p)
                })
                .collect()
        } else {
            let mut p = params((0..peers).map(|i| Ipv4Addr::new(172, 20, 0, 22 + i as u8)).collect(), vrrp, rejoin);
            if let Some(n) = nofailover {
                p.nodes[n].nofailover = true;
            }
            vec![Lb::new(0, p)]
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
            silent_backups,
            nodes,
            lbs,
            peers_alive: vec![true; if pair { 0 } else { peers }],
            lb_link: true,
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
        if pair {
            // The cluster ran before: lb1 is master, and each has heard the other's adverts.
            sim.lbs[1].heard = Some((Duration::ZERO, LB_PRIORITY[0]));
            if !silent_backups {
                sim.lbs[0].heard = Some((Duration::ZERO, LB_PRIORITY[1]));
            }
        }
        sim.plan();
        sim
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
                "{}: running {} master {} priority {} routed {:?} reach {:?} persisted timeline {:?}\n",
                l.name,
                l.running(),
                l.master,
                l.priority(),
                l.routed,
                l.reach,
                l.persisted.as_ref().map(|d| d.timeline)
            ));
            if let Some(m) = &l.m {
                lbs.push_str(&format!("{} view: {:#?}\n", l.name, m.view()));
            }
        }
        let nodes: Vec<String> = (0..NODES).map(|n| self.describe_node(n)).collect();
        panic!(
            "seed {} ({:?}, {}{}, rejoin {}) at {}ms: {what}\nfaults: {:?}\nheal at {:?}\nforks: {:?}\nacked: {:?}\n{}\n{}\ntrace:\n{}",
            self.seed,
            self.scenario,
            if self.pair { "pair" } else { "single" },
            if self.silent_backups { ", silent backups" } else { "" },
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
            let Some((stage, roles)) = self.stage_of(lb) else { continue };
            while let Some(i) =
                self.armed.iter().position(|a| a.trigger == Trigger::Stage(stage) && a.lb.is_none_or(|l| l == lb))
            {
                let armed = self.armed.remove(i);
                match armed.effect {
                    Effect::Kill { down_for } => {
                        self.note(format!("{}: at stage {stage:?}", self.lbs[lb].name));
                        self.kill_daemon(lb, Some(down_for));
                        break;
                    }
                    Effect::Blip { other_lb, role, count, timeout } => {
                        let target = if other_lb && self.pair { 1 - lb } else { lb };
                        let node = roles[role];
                        let failure = if timeout { ProbeFailure::Timeout } else { ProbeFailure::Unreachable("connection reset".into()) };
                        self.coverage.blips[stage as usize] += 1;
                        let (by, to) = (self.lbs[lb].name, self.lbs[target].name);
                        self.note(format!("{by} at stage {stage:?}: the next {count} probes of pg{} by {to} fail: {failure}", node + 1));
                        self.lbs[target].blips[node].extend(std::iter::repeat_n(failure, count as usize));
                    }
                }
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
        self.replicate();
        self.client_write();
        self.replicate();
        self.update_acks();
        if self.trace_nodes {
            let line: Vec<String> = (0..NODES).map(|n| self.describe_node(n)).collect();
            let acked = format!("{:?}", self.acked);
            self.note(format!("model: {} acked {acked}", line.join("; ")));
        }
        self.vrrp_step();
        for lb in 0..self.lbs.len() {
            for n in 0..NODES {
                let offset = Duration::from_millis(50 * ((n + 2 * lb) % 4) as u64);
                let round = self.now >= offset && (self.now - offset).as_millis().is_multiple_of(PROBE.as_millis());
                let due = round || std::mem::take(&mut self.lbs[lb].probe_now[n]);
                if !due || !self.lbs[lb].running() {
                    continue;
                }
                let result = self.status(lb, n);
                if let Ok(s) = result.as_ref()
                    && !s.in_recovery
                {
                    self.lbs[lb].seen_tl = self.lbs[lb].seen_tl.max(s.timeline);
                }
                self.lbs[lb].last_obs[n] = Some((self.now, result.clone()));
                let obs = Observation { node: n, at: self.now, latency: Duration::from_millis(1), result };
                self.call(lb, Event::Probe(obs));
            }
        }
        for lb in 0..self.lbs.len() {
            let due = self.lbs[lb].m.as_ref().and_then(Machine::next_deadline).is_some_and(|d| d <= self.now);
            if due {
                self.call(lb, Event::Tick);
            }
        }
        self.fire_stage_triggers();
        let vip = if self.pair { self.vip_route() } else { self.lbs[0].routed };
        if self.vip_changes.last().is_none_or(|&(_, v)| v != vip) {
            self.vip_changes.push((self.now, vip));
        }
        self.check_step();
        self.check_liveness();
        self.now += DT;
    }

    pub fn run(mut self) -> Sim {
        while self.now < self.end {
            self.step();
        }
        self.check_end();
        self
    }
}
