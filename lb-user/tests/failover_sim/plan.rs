//! The scenarios and their faults: what can go wrong, when (`Sim::plan`, seeded) and what each
//! fault does to the world (`Sim::apply_fault`).

use crate::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Crash,
    Hang,
    Partition,
    Flapping,
    LaggingStandby,
    SecondPrimary,
    NotMaster,
    NoQuorum,
    Switchover,
    /// The standby holding the newest acknowledged commits dies, then the primary: with
    /// `ANY 1`, promoting the remaining (slightly behind) standby would lose them.
    DoubleFault,
    Chaos,
    LbCutFromPrimary,
    TwoMasterSplit,
    RestartWithStalePrimary,
    SwitchoverProbeBlip,
    FailoverProbeBlip,
    DaemonRestart,
    PairChaos,
    /// Issue 22's cascade: the primary crashes, and inside the healing window (before it is
    /// back) the new primary crashes too. The last standby was the only synchronous standby
    /// streaming from it: it holds every acknowledged commit and must be promoted. Not in
    /// [`SCENARIOS`] (that would move every recorded seed to another scenario): its own test,
    /// `cascade_promotes_the_last_proven_standby`, runs it.
    Cascade,
}

pub const SCENARIOS: [Scenario; 18] = [
    Scenario::Crash,
    Scenario::Hang,
    Scenario::Partition,
    Scenario::Flapping,
    Scenario::LaggingStandby,
    Scenario::SecondPrimary,
    Scenario::NotMaster,
    Scenario::NoQuorum,
    Scenario::Switchover,
    Scenario::DoubleFault,
    Scenario::Chaos,
    Scenario::LbCutFromPrimary,
    Scenario::TwoMasterSplit,
    Scenario::RestartWithStalePrimary,
    Scenario::SwitchoverProbeBlip,
    Scenario::FailoverProbeBlip,
    Scenario::DaemonRestart,
    Scenario::PairChaos,
];

/// A stage of a switchover or a failover, as a machine's phase shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Steady with the writer failing probes, or WriterLost still debouncing.
    Debouncing = 0,
    FailingOver = 1,
    CatchingUp = 2,
    Demoting = 3,
    Demoted = 4,
    Promoting = 5,
}

pub const STAGES: [Stage; 6] =
    [Stage::Debouncing, Stage::FailingOver, Stage::CatchingUp, Stage::Demoting, Stage::Demoted, Stage::Promoting];

/// An action whose sending can kill its daemon right after (the request is out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Promote,
    Demote,
    Repoint,
    Rejoin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A machine is in this stage at the end of a step.
    Stage(Stage),
    /// A machine just emitted this action (the executor sent it).
    Sent(Sent),
    /// A machine handed out the state that records a promotion (`Persist` naming it).
    Recording,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Kill the daemon of the load balancer that triggered; restart it after `down_for`.
    Kill { down_for: Duration },
    /// The next `count` probes of one node fail for one load balancer (the triggering one, or
    /// the other). `role` picks the node from the stage: 0 the old writer (switchover: `from`),
    /// 1 the candidate (switchover: `to`), 2 the third node.
    Blip { other_lb: bool, role: usize, count: u32, timeout: bool },
    /// Freeze the daemon of the load balancer that triggered (see [`Freeze`]).
    Freeze { length: Duration, probes_go_on: bool },
    /// Its state file cannot be written for `length` (the write at hand fails too).
    DiskFails { length: Duration },
}

/// A one-shot trigger: `lb` (or any) reaching `trigger` causes `effect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Armed {
    pub lb: Option<usize>,
    pub trigger: Trigger,
    pub effect: Effect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Crash(usize),
    /// Restart after a crash (an old primary comes back as a primary on its timeline).
    Restart(usize),
    Hang(usize),
    Resume(usize),
    /// Every load balancer loses (regains) node n.
    CutLb(usize),
    HealLb(usize),
    FlapLb(usize),
    StopFlap(usize),
    /// One load balancer loses (regains) one node.
    CutLbFrom { lb: usize, node: usize },
    HealLbFrom { lb: usize, node: usize },
    /// One load balancer loses whichever node is the writer now (the running primary on the
    /// highest timeline), or regains every node.
    CutLbFromWriter { lb: usize },
    HealLbLinks { lb: usize },
    /// The writer now (the running primary on the highest timeline) crashes.
    CrashWriter,
    /// The LB↔LB link (pair only).
    CutLbLink,
    HealLbLink,
    CutRepl(usize),
    HealRepl(usize),
    Lag(usize),
    /// Someone promotes a standby behind pglb's back (new timeline).
    ExternalPromote(usize),
    /// A standby turns primary on the same timeline (a restored backup, say).
    SameTimelinePrimary(usize),
    /// `pglb node rejoin`: rewind the node and start it as a standby of the writer.
    Rejoin(usize),
    /// A modelled peer (single) stops advertising.
    PeerDies(usize),
    Switchover(usize),
    /// kill -9 of a load balancer's daemon (its data plane keeps the last route).
    KillDaemon(usize),
    RestartDaemon(usize),
    Arm(Armed),
    /// The next promotion succeeds on the server but the executor reports an error.
    PromoteReportLost,
    /// Forged reports to `lb` in the name of its peer `peer` for `length`: a timeline `above`
    /// the newest one any node has, and/or a wrong writer (see `peers`).
    Forge { lb: usize, peer: usize, length: Duration, above: Option<u32>, writer: Option<ForgedWriter> },
    /// A load balancer's daemon stands still for `length` (see [`Freeze`]).
    Freeze { lb: usize, length: Duration, probes_go_on: bool },
    /// A load balancer's state file cannot be written for `length`.
    DiskFails { lb: usize, length: Duration },
    /// Everything heals: links, nodes (a lagging standby too), daemons (a frozen one resumes),
    /// disks and peers; forgeries stop and armed triggers are dropped.
    HealAll,
}

impl Sim {
    /// Schedules the scenario's faults, then the heal of everything and the end of the run.
    pub fn plan(&mut self) {
        let has_peers = !self.peers_alive.is_empty();
        let peers = if self.pair { 1 } else { self.peers_alive.len() };
        let r = &mut self.rng;
        let standby = 1 + r.below(2) as usize;
        let other = 3 - standby;
        let t = r.ms(2000, 6000);
        let mut f = vec![];
        let blip = |r: &mut Rng, lb: Option<usize>, stage: Stage, role: usize| Armed {
            lb,
            trigger: Trigger::Stage(stage),
            effect: Effect::Blip { other_lb: r.chance(30), role, count: 1 + r.below(4) as u32, timeout: r.chance(50) },
        };
        let kill_on = |r: &mut Rng, lb: Option<usize>, trigger: Trigger| Armed {
            lb,
            trigger,
            effect: Effect::Kill { down_for: r.ms(200, 4000) },
        };
        match self.scenario {
            Scenario::Crash => {
                f.push((t, Fault::Crash(0)));
                if r.chance(70) {
                    let back = t + r.ms(2000, 6000);
                    f.push((back, Fault::Restart(0)));
                    if r.chance(70) {
                        f.push((back + r.ms(1000, 4000), Fault::Rejoin(0)));
                    }
                }
            }
            Scenario::Hang => {
                f.push((t, Fault::Hang(0)));
                f.push((t + r.ms(2500, 8000), Fault::Resume(0)));
            }
            Scenario::Partition => {
                f.push((t, Fault::CutLb(0)));
                f.push((t + r.ms(1000, 10000), Fault::HealLb(0)));
            }
            Scenario::Flapping => {
                let n = if r.chance(60) { 0 } else { standby };
                f.push((t, Fault::FlapLb(n)));
                f.push((t + r.ms(2000, 10000), Fault::StopFlap(n)));
            }
            Scenario::LaggingStandby => {
                f.push((Duration::from_millis(500), Fault::Lag(standby)));
                f.push((t + Duration::from_secs(4), Fault::Crash(0)));
            }
            Scenario::SecondPrimary => {
                let fault = if r.chance(50) { Fault::ExternalPromote(standby) } else { Fault::SameTimelinePrimary(standby) };
                f.push((t, fault));
                if r.chance(50) {
                    f.push((t + r.ms(1000, 5000), Fault::Crash(0)));
                }
            }
            Scenario::NotMaster | Scenario::NoQuorum => {
                if self.scenario == Scenario::NoQuorum {
                    f.push((t - Duration::from_millis(1000), Fault::PeerDies(0)));
                    f.push((t - Duration::from_millis(1000), Fault::Crash(other)));
                }
                f.push((t, Fault::Crash(0)));
            }
            Scenario::Switchover => {
                f.push((t, Fault::Switchover(standby)));
                if r.chance(30) {
                    f.push((t + r.ms(4000, 8000), Fault::Switchover(0)));
                }
            }
            Scenario::Cascade => {
                f.push((t, Fault::Crash(0)));
                f.push((t + r.ms(2500, 5000), Fault::CrashWriter));
            }
            Scenario::DoubleFault => {
                f.push((t - Duration::from_millis(300), Fault::Lag(standby)));
                f.push((t, Fault::Crash(other)));
                f.push((t + Duration::from_millis(100), Fault::Crash(0)));
            }
            Scenario::Chaos => {
                for _ in 0..(3 + r.below(6)) {
                    let n = r.below(NODES as u64) as usize;
                    let at = r.ms(1000, 25000);
                    let heal = at + r.ms(300, 6000);
                    let (fault, repair) = match r.below(11) {
                        9 | 10 => (trust_fault(r, false, peers, true).0, None),
                        0 => (Fault::Crash(n), Some(Fault::Restart(n))),
                        1 => (Fault::Hang(n), Some(Fault::Resume(n))),
                        2 => (Fault::CutLb(n), Some(Fault::HealLb(n))),
                        3 => (Fault::FlapLb(n), Some(Fault::StopFlap(n))),
                        4 => (Fault::CutRepl(n), Some(Fault::HealRepl(n))),
                        5 => (Fault::Lag(n), None),
                        6 => (Fault::Rejoin(n), None),
                        7 if has_peers => (Fault::PeerDies(0), None),
                        _ => (Fault::Switchover(n), None),
                    };
                    f.push((at, fault));
                    if let Some(repair) = repair.filter(|_| r.chance(70)) {
                        f.push((heal, repair));
                    }
                }
            }
            Scenario::LbCutFromPrimary => {
                let lb = if r.chance(70) { 0 } else { 1 };
                let heal = t + r.ms(1500, 8000);
                f.push((t, Fault::CutLbFrom { lb, node: 0 }));
                f.push((heal, Fault::HealLbFrom { lb, node: 0 }));
                if r.chance(30) {
                    let node = standby;
                    f.push((t + r.ms(0, 1000), Fault::CutLbFrom { lb: 1 - lb, node }));
                    f.push((heal, Fault::HealLbFrom { lb: 1 - lb, node }));
                }
                self.handover_window = Some((t, heal));
            }
            Scenario::TwoMasterSplit => {
                let heal = t + r.ms(2000, 10000);
                f.push((t, Fault::CutLbLink));
                f.push((heal, Fault::HealLbLink));
                let inner = t + r.ms(500, 1500);
                match r.below(6) {
                    0 => {
                        f.push((inner, Fault::Crash(0)));
                        if r.chance(60) {
                            f.push((inner + r.ms(1000, 8000), Fault::Restart(0)));
                        }
                    }
                    1 => {
                        let lb = r.lb();
                        f.push((inner, Fault::CutLbFrom { lb, node: 0 }));
                        f.push((heal + r.ms(0, 2000), Fault::HealLbFrom { lb, node: 0 }));
                    }
                    2 => {
                        f.push((inner, Fault::Hang(0)));
                        f.push((inner + r.ms(2500, 6000), Fault::Resume(0)));
                    }
                    3 => {
                        let lb = r.lb();
                        f.push((t, Fault::CutLbFrom { lb, node: standby }));
                        f.push((inner, Fault::Crash(0)));
                        f.push((heal, Fault::HealLbFrom { lb, node: standby }));
                    }
                    4 => f.push((inner, Fault::Switchover(standby))),
                    _ => {}
                }
            }
            Scenario::RestartWithStalePrimary => {
                f.push((t, Fault::Crash(0)));
                let lb = r.lb();
                let stale_at = t + r.ms(1500, 5000);
                if r.chance(40) {
                    f.push((t, Fault::Arm(kill_on(r, Some(lb), Trigger::Sent(Sent::Promote)))));
                } else {
                    f.push((t + r.ms(0, 3000).min(stale_at - t - DT), Fault::KillDaemon(lb)));
                }
                f.push((stale_at, Fault::Restart(0)));
                let back = stale_at + r.ms(0, 2500);
                f.push((back, Fault::RestartDaemon(lb)));
                match r.below(4) {
                    // The restarted load balancer does not see the new writer for a while.
                    0 => {
                        f.push((stale_at - DT, Fault::CutLbFromWriter { lb }));
                        f.push((back + r.ms(500, 5000), Fault::HealLbLinks { lb }));
                    }
                    // The new writer dies while the stale one is back.
                    1 => f.push((stale_at + r.ms(0, 3000), Fault::CrashWriter)),
                    _ => {}
                }
            }
            Scenario::SwitchoverProbeBlip => {
                f.push((t, Fault::Switchover(standby)));
                let stages = [Stage::CatchingUp, Stage::Demoting, Stage::Demoted, Stage::Promoting];
                for _ in 0..(1 + r.below(3)) {
                    let stage = stages[r.below(4) as usize];
                    let role = r.below(3) as usize;
                    f.push((t - DT, Fault::Arm(blip(r, None, stage, role))));
                }
                if r.chance(50) {
                    // A blip of the target while the old primary restarts: the Demoted wait.
                    let armed = Armed {
                        lb: None,
                        trigger: Trigger::Stage(Stage::Demoting),
                        effect: Effect::Blip { other_lb: false, role: 1, count: 1 + r.below(2) as u32, timeout: r.chance(50) },
                    };
                    f.push((t - DT, Fault::Arm(armed)));
                }
                if r.chance(30) {
                    f.push((t + r.ms(3000, 6000), Fault::Switchover(0)));
                }
            }
            Scenario::FailoverProbeBlip => {
                if r.chance(70) {
                    f.push((t, Fault::Crash(0)));
                    if r.chance(50) {
                        f.push((t + r.ms(2000, 6000), Fault::Restart(0)));
                    }
                } else {
                    f.push((t, Fault::Hang(0)));
                    f.push((t + r.ms(2500, 6000), Fault::Resume(0)));
                }
                for _ in 0..(1 + r.below(3)) {
                    let stage = if r.chance(50) { Stage::Debouncing } else { Stage::FailingOver };
                    let role = r.below(3) as usize;
                    f.push((t - DT, Fault::Arm(blip(r, None, stage, role))));
                }
            }
            Scenario::DaemonRestart => {
                if r.chance(60) {
                    f.push((t, Fault::Crash(0)));
                    if r.chance(50) {
                        f.push((t + r.ms(1500, 6000), Fault::Restart(0)));
                    }
                } else {
                    f.push((t, Fault::Switchover(standby)));
                }
                let triggers = [
                    Trigger::Sent(Sent::Promote),
                    Trigger::Sent(Sent::Demote),
                    Trigger::Sent(Sent::Repoint),
                    Trigger::Sent(Sent::Rejoin),
                    Trigger::Stage(Stage::FailingOver),
                    Trigger::Stage(Stage::CatchingUp),
                    Trigger::Stage(Stage::Debouncing),
                ];
                for _ in 0..(1 + r.below(2)) {
                    let trigger = triggers[r.below(triggers.len() as u64) as usize];
                    let lb = r.chance(50).then(|| r.lb());
                    f.push((t - DT, Fault::Arm(kill_on(r, lb, trigger))));
                }
                for _ in 0..r.below(3) {
                    let lb = r.lb();
                    let at = r.ms(1000, 20000);
                    f.push((at, Fault::KillDaemon(lb)));
                    f.push((at + r.ms(200, 5000), Fault::RestartDaemon(lb)));
                }
                if r.chance(30) {
                    f.push((t - DT, Fault::PromoteReportLost));
                }
            }
            Scenario::PairChaos => {
                for _ in 0..(3 + r.below(6)) {
                    let n = r.below(NODES as u64) as usize;
                    let lb = r.lb();
                    let at = r.ms(1000, 25000);
                    let heal = at + r.ms(300, 6000);
                    let (fault, repair) = match r.below(20) {
                        17..=19 => (trust_fault(r, true, 1, true).0, None),
                        0 => (Fault::Crash(n), Some(Fault::Restart(n))),
                        1 => (Fault::Hang(n), Some(Fault::Resume(n))),
                        2 => (Fault::CutLbFrom { lb, node: n }, Some(Fault::HealLbFrom { lb, node: n })),
                        3 => (Fault::FlapLb(n), Some(Fault::StopFlap(n))),
                        4 => (Fault::CutRepl(n), Some(Fault::HealRepl(n))),
                        5 => (Fault::Lag(n), None),
                        6 => (Fault::Rejoin(n), None),
                        7 => (Fault::CutLbLink, Some(Fault::HealLbLink)),
                        8 => (Fault::KillDaemon(lb), Some(Fault::RestartDaemon(lb))),
                        9 => (Fault::Switchover(n), None),
                        10 => {
                            let sent = [Sent::Promote, Sent::Demote, Sent::Repoint, Sent::Rejoin][r.below(4) as usize];
                            (Fault::Arm(kill_on(r, None, Trigger::Sent(sent))), None)
                        }
                        11 => {
                            let stage = STAGES[r.below(6) as usize];
                            let role = r.below(3) as usize;
                            (Fault::Arm(blip(r, None, stage, role)), None)
                        }
                        12 => (Fault::PromoteReportLost, None),
                        13 => (Fault::CutLb(n), Some(Fault::HealLb(n))),
                        14 => (Fault::CutLbFromWriter { lb }, Some(Fault::HealLbLinks { lb })),
                        15 => (Fault::CrashWriter, None),
                        _ => (Fault::Crash(0), Some(Fault::Restart(0))),
                    };
                    f.push((at, fault));
                    if let Some(repair) = repair.filter(|_| r.chance(70)) {
                        f.push((heal, repair));
                    }
                }
            }
        }
        // The scenarios whose own checks time what their fault causes.
        let timed = matches!(
            self.scenario,
            Scenario::Crash | Scenario::Hang | Scenario::LaggingStandby | Scenario::Switchover | Scenario::LbCutFromPrimary | Scenario::Cascade
        );
        self.mix_trust_faults(&mut f, t, timed);
        let r = &mut self.rng;
        f.sort_by_key(|(t, _)| *t);
        let last = f.last().map_or(Duration::ZERO, |(t, _)| *t);
        // The heal may cut a failover, a switchover or a restart short; scenarios whose own
        // checks time what the fault causes let it play out first.
        let heal_at = last + if timed { r.ms(3000, 8000) } else { r.ms(0, 8000) };
        // Half the mixtures heal in the middle of things: faults still active, a failover, a
        // switchover or a restart under way; what comes after the heal never happens.
        let mixture = matches!(
            self.scenario,
            Scenario::Chaos | Scenario::PairChaos | Scenario::TwoMasterSplit | Scenario::DaemonRestart
        );
        let heal_at = match f.first() {
            Some(&(first, _)) if mixture && r.chance(50) => first + r.ms(0, (last - first).as_millis() as u64 + 1000),
            _ => heal_at,
        };
        f.retain(|(t, _)| *t < heal_at);
        f.push((heal_at, Fault::HealAll));
        self.heal_at = heal_at;
        self.end = heal_at + self.liveness_bound() + LIVENESS_WATCH;
        self.all_faults = f.clone();
        self.faults = f;
    }

    /// The faults of the trust model mixed into 40 % of the scenarios (Chaos and PairChaos draw
    /// them themselves): one or two, anywhere up to 6 s after the scenario's time `t`; before a
    /// timed scenario's faults, which then start once they have played out (3 s after the last).
    fn mix_trust_faults(&mut self, f: &mut Vec<(Duration, Fault)>, t: Duration, timed: bool) {
        let (pair, peers) = (self.pair, if self.pair { 1 } else { self.peers_alive.len() });
        let r = &mut self.rng;
        if matches!(self.scenario, Scenario::Chaos | Scenario::PairChaos) || !r.chance(40) {
            return;
        }
        let mut extra = Vec::new();
        let mut end = Duration::from_secs(1);
        for _ in 0..(1 + r.below(2)) {
            let at = if timed { end + r.ms(0, 1000) } else { r.ms(1000, (t + Duration::from_secs(6)).as_millis() as u64) };
            let (fault, length) = trust_fault(r, pair, peers, !timed);
            extra.push((at, fault));
            end = end.max(at + length);
        }
        if timed {
            let first = f.iter().map(|&(t, _)| t).min().unwrap_or(t);
            let shift = (end + Duration::from_secs(3)).saturating_sub(first);
            f.iter_mut().for_each(|(t, _)| *t += shift);
            if let Some((cut, heal)) = &mut self.handover_window {
                *cut += shift;
                *heal += shift;
            }
        }
        f.extend(extra);
    }

    pub fn apply_fault(&mut self, fault: Fault) {
        self.note(format!("fault {fault:?}"));
        match fault {
            Fault::Crash(n) => {
                let x = &mut self.nodes[n];
                x.alive = false;
                x.connected = false;
            }
            Fault::Restart(n) => self.restart_node(n),
            Fault::Hang(n) => {
                let x = &mut self.nodes[n];
                if !x.hung {
                    x.hung = true;
                    x.hung_since = self.now;
                }
            }
            Fault::Resume(n) => self.nodes[n].hung = false,
            Fault::CutLb(n) => self.lbs.iter_mut().for_each(|l| l.reach[n] = false),
            Fault::HealLb(n) => self.lbs.iter_mut().for_each(|l| l.reach[n] = true),
            Fault::FlapLb(n) => self.lbs.iter_mut().for_each(|l| l.flapping[n] = true),
            Fault::StopFlap(n) => self.lbs.iter_mut().for_each(|l| {
                l.flapping[n] = false;
                l.reach[n] = true;
            }),
            Fault::CutLbFrom { lb, node } => self.lbs[lb].reach[node] = false,
            Fault::HealLbFrom { lb, node } => {
                self.lbs[lb].reach[node] = true;
                self.lbs[lb].flapping[node] = false;
            }
            Fault::CutLbFromWriter { lb } => {
                if let Some(w) = self.top_primary() {
                    self.note(format!("{} loses pg{}", self.lbs[lb].name, w + 1));
                    self.lbs[lb].reach[w] = false;
                }
            }
            Fault::HealLbLinks { lb } => {
                self.lbs[lb].reach = vec![true; NODES];
                self.lbs[lb].flapping = vec![false; NODES];
            }
            Fault::CrashWriter => {
                if let Some(w) = self.top_primary() {
                    self.note(format!("pg{} crashes", w + 1));
                    self.nodes[w].alive = false;
                    self.nodes[w].connected = false;
                }
            }
            Fault::CutLbLink => self.lb_link = false,
            Fault::HealLbLink => self.lb_link = true,
            Fault::CutRepl(n) => self.nodes[n].repl_link = false,
            Fault::HealRepl(n) => self.nodes[n].repl_link = true,
            Fault::Lag(n) => self.nodes[n].lagging = true,
            Fault::ExternalPromote(n) => {
                if self.nodes[n].alive && self.nodes[n].in_recovery {
                    self.tainted = true;
                    self.promote_model(n, false);
                }
            }
            Fault::SameTimelinePrimary(n) => {
                if self.nodes[n].alive && self.nodes[n].in_recovery {
                    self.tainted = true;
                    let x = &mut self.nodes[n];
                    x.in_recovery = false;
                    x.upstream = None;
                    x.connected = false;
                }
            }
            Fault::Rejoin(n) => {
                // The operator rewinds a node onto the history of the primary on the newest
                // timeline (running or not; with two there, the routed one), never that primary
                // itself, and only from a source that answers.
                let top = self.nodes.iter().map(|x| x.timeline).max();
                let newest: Vec<usize> =
                    (0..NODES).filter(|&x| !self.nodes[x].in_recovery && Some(self.nodes[x].timeline) == top).collect();
                let onto = match newest[..] {
                    [w] => Some(w),
                    _ => self.vip_route().filter(|w| newest.contains(w)),
                };
                if let Some(w) = onto.filter(|&w| w != n && self.nodes[w].running_primary()) {
                    self.operator_rejoin(n, w);
                }
            }
            Fault::PeerDies(i) => {
                if let Some(p) = self.peers_alive.get_mut(i) {
                    *p = false;
                }
            }
            Fault::Switchover(n) => {
                let lb = self.vrrp_master();
                self.input(lb, Input::Admin(AdminCommand::Switchover { to: n }));
            }
            Fault::Forge { lb, peer, length, above, writer } => {
                let timeline = above.map(|k| self.max_tl + k);
                self.forgeries.push(Forgery { lb, peer, until: self.now + length, timeline, writer });
            }
            Fault::Freeze { lb, length, probes_go_on } => self.freeze(lb, length, probes_go_on),
            Fault::DiskFails { lb, length } => {
                self.lbs[lb].disk.fails_until = self.now + length;
                self.coverage.disk_faults += 1;
            }
            Fault::KillDaemon(lb) => self.kill_daemon(lb, None),
            Fault::RestartDaemon(lb) => self.restart_daemon(lb),
            Fault::Arm(a) => self.armed.push(a),
            Fault::PromoteReportLost => self.report_lost = true,
            Fault::HealAll => self.heal_all(),
        }
    }
}

/// One fault of the trust model (issue 18), and how long it lasts: reports forged in a peer's
/// name (not without peers), a freeze of a daemon (a third of them shorter than the lease), a
/// state file that cannot be written, or (`armed`) one of the last two at a moment: the
/// recording of a promotion, a `Promote` or `Demote` sent, a failover or switchover stage.
pub fn trust_fault(r: &mut Rng, pair: bool, peers: usize, armed: bool) -> (Fault, Duration) {
    let lb = if pair { r.lb() } else { 0 };
    let freeze = |r: &mut Rng| {
        let length = if r.chance(30) { r.ms(200, 1000) } else { r.ms(1050, 10_000) };
        (length, r.chance(50))
    };
    match r.below(if armed { 5 } else { 4 }) {
        0 if peers > 0 => {
            let length = r.ms(300, 6000);
            let above = r.chance(70).then(|| 1 + r.below(100) as u32);
            let writer = (above.is_none() || r.chance(50)).then(|| match r.below(4) {
                0 | 1 => ForgedWriter::Node(r.below(NODES as u64) as usize),
                2 => ForgedWriter::Nobody,
                _ => ForgedWriter::Stranger,
            });
            let peer = if pair { 1 - lb } else { r.below(peers as u64) as usize };
            (Fault::Forge { lb, peer, length, above, writer }, length)
        }
        0..=2 => {
            let (length, probes_go_on) = freeze(r);
            (Fault::Freeze { lb, length, probes_go_on }, length)
        }
        3 => {
            let length = r.ms(300, 5000);
            (Fault::DiskFails { lb, length }, length)
        }
        _ => {
            let triggers = [
                Trigger::Recording,
                Trigger::Recording,
                Trigger::Sent(Sent::Promote),
                Trigger::Sent(Sent::Demote),
                Trigger::Stage(Stage::FailingOver),
                Trigger::Stage(Stage::Debouncing),
                Trigger::Stage(Stage::Demoting),
                Trigger::Stage(Stage::Promoting),
            ];
            let trigger = triggers[r.below(triggers.len() as u64) as usize];
            let effect = if trigger == Trigger::Recording || r.chance(30) {
                Effect::DiskFails { length: r.ms(300, 5000) }
            } else {
                let (length, probes_go_on) = freeze(r);
                Effect::Freeze { length, probes_go_on }
            };
            let lb = (pair && r.chance(50)).then(|| r.lb());
            (Fault::Arm(Armed { lb, trigger, effect }), Duration::ZERO)
        }
    }
}
