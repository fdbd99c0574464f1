//! Tier 3: a seeded, virtual-clock simulation of three PostgreSQL nodes, a client writing
//! through the VIP and load-balancer peers, driving the failover [`Machine`] through faults
//! (crashes, hangs, partitions, flapping, lagging standbys, second primaries, a backup load
//! balancer, lost quorum, switchovers and random mixtures). The simulation plays the executor:
//! it applies `Promote`, `Repoint`, `Demote` and `SetSyncStandbys` to its model of the cluster.
//!
//! Invariants checked at every step (and at every promotion):
//! - the routed writer is never a node replaced by a later writer (until it rejoins), nor one
//!   the machine reports as fenced;
//! - no promotion without quorum, by a non-master, or of a candidate beyond the lag limit
//!   (recomputed from what the machine was told, independently of the machine);
//! - no acknowledged write lost: with `ANY 1` the promoted node holds every commit the client
//!   saw acknowledged on its timeline;
//! - bounded work per step;
//! - the next deadline is always after now (the daemon would otherwise spin).
//!
//! Liveness: after a crash (or hang) of the primary with healthy standbys, a new writer is
//! routed within a bound; a switchover completes; a rejoined node is routed to again.
//!
//! Run: `cargo test -p lb-user --test failover_sim` (SIM_SEEDS=n to change the seed count).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use lb_user::failover::*;

const DT: Duration = Duration::from_millis(50);
const STEPS: u32 = 600; // 30 s of virtual time
const PROBE: Duration = Duration::from_millis(200);
const WAL_RECEIVER_TIMEOUT: Duration = Duration::from_secs(1);
const PEER_ADVERT: Duration = Duration::from_millis(100);
const MIB: u64 = 1 << 20;
const MAX_ACTIONS_PER_CALL: usize = 64;
const NODES: usize = 3;

/// splitmix64: small, seeded, good enough for choosing faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        // on the step grid
        let steps = (lo / 50) + self.below((hi - lo) / 50 + 1);
        Duration::from_millis(steps * 50)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
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
}

const SCENARIOS: [Scenario; 11] = [
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
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Crash(usize),
    /// Restart after a crash (an old primary comes back as a primary on its timeline).
    Restart(usize),
    Hang(usize),
    Resume(usize),
    CutLb(usize),
    HealLb(usize),
    FlapLb(usize),
    StopFlap(usize),
    CutRepl(usize),
    HealRepl(usize),
    Lag(usize),
    /// Someone promotes a standby behind pglb's back (new timeline).
    ExternalPromote(usize),
    /// A standby turns primary on the same timeline (a restored backup, say).
    SameTimelinePrimary(usize),
    /// `pglb node rejoin`: rewind the node and start it as a standby of the writer.
    Rejoin(usize),
    PeerDies(usize),
    Switchover(usize),
}

#[derive(Debug, Clone)]
struct PgNode {
    alive: bool,
    hung: bool,
    hung_since: Duration,
    in_recovery: bool,
    timeline: u32,
    /// Primary: current LSN. Standby: received (flushed) LSN.
    lsn: u64,
    upstream: Option<usize>,
    /// The WAL receiver is connected to `upstream`.
    connected: bool,
    lb_link: bool,
    flapping: bool,
    repl_link: bool,
    lagging: bool,
    /// Bytes a lagging standby may still receive in this step.
    lag_budget: u64,
    sync_count: u32,
    sync_names: Vec<usize>,
}

struct Sim {
    seed: u64,
    scenario: Scenario,
    rng: Rng,
    now: Duration,
    p: Params,
    m: Machine,
    nodes: Vec<PgNode>,
    /// timeline -> (parent timeline, fork LSN)
    forks: HashMap<u32, (u32, u64)>,
    max_tl: u32,
    /// An external promotion or same-timeline primary happened: acknowledged-write tracking
    /// across that fork is not the machine's responsibility.
    tainted: bool,
    /// Highest acknowledged commit LSN per timeline.
    acked: HashMap<u32, u64>,
    routed: Option<usize>,
    last_some_routed: Option<usize>,
    retired: HashSet<usize>,
    pending: Vec<(Duration, Action)>,
    master: bool,
    peers_alive: Vec<bool>,
    last_obs: Vec<Option<(Duration, Result<NodeStatus, ProbeFailure>)>>,
    last_peer: Vec<Option<Duration>>,
    faults: Vec<(Duration, Fault)>,
    promotions: Vec<(Duration, usize)>,
    writer_changes: Vec<(Duration, Option<usize>)>,
    trace: Vec<String>,
}

fn host(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 20, 0, 10 + n as u8)
}

fn params(peers: usize, vrrp: bool) -> Params {
    Params {
        nodes: (0..NODES)
            .map(|i| NodeParams {
                name: format!("pg{}", i + 1),
                host: host(i),
                port: 5432,
                priority: 100,
                nofailover: false,
                read_weight: 100,
            })
            .collect(),
        probe_interval: PROBE,
        failover_after: 3,
        up_after: 3,
        max_lag_on_failover_bytes: MIB,
        max_read_lag_bytes: 16 * MIB,
        max_read_lag: Duration::from_secs(1),
        promote_timeout: Duration::from_secs(5),
        switchover_timeout: Duration::from_secs(10),
        synchronous_count: 1,
        vrrp_enabled: vrrp,
        peers: (0..peers).map(|i| Ipv4Addr::new(172, 20, 0, 22 + i as u8)).collect(),
        peer_timeout: Duration::from_millis(361),
        track_hold: Duration::from_millis(361),
        rejoin: false,
        rejoin_backoff: Duration::from_secs(10),
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let scenario = SCENARIOS[(seed % SCENARIOS.len() as u64) as usize];
        rng.next();
        let (peers, vrrp) = match scenario {
            Scenario::NotMaster | Scenario::NoQuorum | Scenario::DoubleFault => (1, true),
            Scenario::Chaos => (rng.below(3) as usize, true),
            _ => (rng.below(2) as usize, rng.chance(50)),
        };
        let mut p = params(peers, vrrp);
        if scenario == Scenario::Chaos && rng.chance(30) {
            let n = 1 + rng.below(2) as usize;
            p.nodes[n].nofailover = true;
        }
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
                lb_link: true,
                flapping: false,
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
            m: Machine::new(p.clone()),
            p,
            nodes,
            forks: HashMap::new(),
            max_tl: 1,
            tainted: false,
            acked: HashMap::new(),
            routed: None,
            last_some_routed: None,
            retired: HashSet::new(),
            pending: Vec::new(),
            master: false,
            peers_alive: vec![true; peers],
            last_obs: vec![None; NODES],
            last_peer: vec![None; peers],
            faults: Vec::new(),
            promotions: Vec::new(),
            writer_changes: Vec::new(),
            trace: Vec::new(),
        };
        sim.plan();
        sim
    }

    /// Schedules the scenario's faults.
    fn plan(&mut self) {
        let r = &mut self.rng;
        let standby = 1 + r.below(2) as usize;
        let other = 3 - standby;
        let t = r.ms(2000, 6000);
        let mut f = vec![];
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
                    let (fault, repair) = match r.below(9) {
                        0 => (Fault::Crash(n), Some(Fault::Restart(n))),
                        1 => (Fault::Hang(n), Some(Fault::Resume(n))),
                        2 => (Fault::CutLb(n), Some(Fault::HealLb(n))),
                        3 => (Fault::FlapLb(n), Some(Fault::StopFlap(n))),
                        4 => (Fault::CutRepl(n), Some(Fault::HealRepl(n))),
                        5 => (Fault::Lag(n), None),
                        6 => (Fault::Rejoin(n), None),
                        7 if !self.peers_alive.is_empty() => (Fault::PeerDies(0), None),
                        _ => (Fault::Switchover(n), None),
                    };
                    f.push((at, fault));
                    if let Some(repair) = repair.filter(|_| r.chance(70)) {
                        f.push((heal, repair));
                    }
                }
            }
        }
        f.sort_by_key(|(t, _)| *t);
        self.faults = f;
    }

    fn note(&mut self, line: String) {
        self.trace.push(format!("{:>6}ms {line}", self.now.as_millis()));
    }

    fn fail(&self, what: &str) -> ! {
        let tail: Vec<&String> = self.trace.iter().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "seed {} ({:?}) at {}ms: {what}\nfaults: {:?}\nview: {:#?}\ntrace:\n{}",
            self.seed,
            self.scenario,
            self.now.as_millis(),
            self.faults,
            self.m.view(),
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }

    // ----- the cluster model ---------------------------------------------------------------

    /// Whether a standby on timeline `tl` at `lsn` can stream from a server on `upstream_tl`.
    fn can_follow(&self, tl: u32, lsn: u64, upstream_tl: u32) -> bool {
        if tl == upstream_tl {
            return true;
        }
        let mut cur = upstream_tl;
        while let Some(&(parent, fork)) = self.forks.get(&cur) {
            if parent == tl {
                return lsn <= fork;
            }
            cur = parent;
        }
        false
    }

    fn replicate(&mut self) {
        for _pass in 0..2 {
            for s in 0..NODES {
                let n = self.nodes[s].clone();
                if !n.alive || n.hung || !n.in_recovery {
                    continue;
                }
                let Some(u) = n.upstream else {
                    self.nodes[s].connected = false;
                    continue;
                };
                let up = self.nodes[u].clone();
                if !up.alive || !n.repl_link || !up.repl_link || u == s {
                    self.nodes[s].connected = false;
                    continue;
                }
                if up.hung {
                    // TCP stays up; the receiver notices only after wal_receiver_timeout.
                    self.nodes[s].connected = n.connected && self.now < up.hung_since + WAL_RECEIVER_TIMEOUT;
                    continue;
                }
                if !self.can_follow(n.timeline, n.lsn, up.timeline) {
                    self.nodes[s].connected = false;
                    continue;
                }
                let node = &mut self.nodes[s];
                node.timeline = up.timeline;
                node.connected = true;
                if up.lsn > node.lsn {
                    if node.lagging {
                        let got = node.lag_budget.min(up.lsn - node.lsn);
                        node.lsn += got;
                        node.lag_budget -= got;
                    } else {
                        node.lsn = up.lsn;
                    }
                }
            }
        }
    }

    fn lb_reaches(&self, n: usize) -> bool {
        self.nodes[n].alive && self.nodes[n].lb_link
    }

    fn client_write(&mut self) {
        let Some(w) = self.routed else { return };
        let size = 1 + self.rng.below(60_000);
        let reach = self.lb_reaches(w);
        let n = &mut self.nodes[w];
        if reach && !n.hung && !n.in_recovery {
            n.lsn += size;
        }
    }

    /// Commits on the routed writer are acknowledged once `ANY k` of its listed standbys have
    /// them. Only the routed writer counts: clients reach nothing else.
    fn update_acks(&mut self) {
        let Some(w) = self.routed else { return };
        let n = &self.nodes[w];
        if !n.alive || n.hung || n.in_recovery {
            return;
        }
        let mut have: Vec<u64> = n
            .sync_names
            .iter()
            .filter(|&&s| s != w)
            .map(|&s| &self.nodes[s])
            .filter(|s| s.alive && !s.hung && s.in_recovery && s.connected && s.upstream == Some(w))
            .map(|s| s.lsn.min(n.lsn))
            .collect();
        have.sort_unstable_by(|a, b| b.cmp(a));
        let k = n.sync_count as usize;
        let acked = if k == 0 { Some(n.lsn) } else { have.get(k - 1).copied() };
        if let Some(a) = acked {
            let e = self.acked.entry(n.timeline).or_insert(0);
            *e = (*e).max(a);
        }
    }

    fn status(&self, n: usize) -> Result<NodeStatus, ProbeFailure> {
        let x = &self.nodes[n];
        if !self.lb_reaches(n) {
            return Err(ProbeFailure::Unreachable("connection refused".into()));
        }
        if x.hung {
            return Err(ProbeFailure::Timeout);
        }
        Ok(NodeStatus {
            in_recovery: x.in_recovery,
            timeline: x.timeline,
            current_lsn: (!x.in_recovery).then_some(x.lsn),
            receive_lsn: x.in_recovery.then_some(x.lsn),
            replay_lsn: Some(x.lsn),
            replay_lag: x.in_recovery.then_some(Duration::ZERO),
            wal_receiver: (x.in_recovery && x.connected).then(|| WalReceiver {
                status: "streaming".into(),
                sender_host: x.upstream.map(|u| host(u).to_string()),
                sender_port: Some(5432),
            }),
        })
    }

    fn apply_fault(&mut self, fault: Fault) {
        self.note(format!("fault {fault:?}"));
        match fault {
            Fault::Crash(n) => {
                let x = &mut self.nodes[n];
                x.alive = false;
                x.connected = false;
            }
            Fault::Restart(n) => self.nodes[n].alive = true,
            Fault::Hang(n) => {
                let x = &mut self.nodes[n];
                if !x.hung {
                    x.hung = true;
                    x.hung_since = self.now;
                }
            }
            Fault::Resume(n) => self.nodes[n].hung = false,
            Fault::CutLb(n) => self.nodes[n].lb_link = false,
            Fault::HealLb(n) => self.nodes[n].lb_link = true,
            Fault::FlapLb(n) => self.nodes[n].flapping = true,
            Fault::StopFlap(n) => {
                self.nodes[n].flapping = false;
                self.nodes[n].lb_link = true;
            }
            Fault::CutRepl(n) => self.nodes[n].repl_link = false,
            Fault::HealRepl(n) => self.nodes[n].repl_link = true,
            Fault::Lag(n) => self.nodes[n].lagging = true,
            Fault::ExternalPromote(n) => {
                if self.nodes[n].alive && self.nodes[n].in_recovery {
                    self.tainted = true;
                    self.promote_model(n);
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
                // pg_rewind onto the routed writer's history, standby.signal, start.
                let Some(w) = self.routed.filter(|&w| w != n) else { return };
                let wt = self.nodes[w].timeline;
                let fork = self.fork_point(self.nodes[n].timeline, wt).unwrap_or(self.nodes[n].lsn);
                let x = &mut self.nodes[n];
                x.alive = true;
                x.hung = false;
                x.in_recovery = true;
                x.timeline = wt;
                x.lsn = x.lsn.min(fork);
                x.upstream = Some(w);
                x.connected = false;
                self.retired.remove(&n);
                self.call(Event::Admin(AdminCommand::Rejoined { node: n }));
            }
            Fault::PeerDies(i) => {
                if let Some(p) = self.peers_alive.get_mut(i) {
                    *p = false;
                }
            }
            Fault::Switchover(n) => self.call(Event::Admin(AdminCommand::Switchover { to: n })),
        }
    }

    /// Where `child_tl` forked off `tl`, if it descends from it.
    fn fork_point(&self, tl: u32, child_tl: u32) -> Option<u64> {
        let mut cur = child_tl;
        while let Some(&(parent, fork)) = self.forks.get(&cur) {
            if parent == tl {
                return Some(fork);
            }
            cur = parent;
        }
        None
    }

    fn promote_model(&mut self, n: usize) {
        self.max_tl += 1;
        let tl = self.max_tl;
        let x = &mut self.nodes[n];
        self.forks.insert(tl, (x.timeline, x.lsn));
        x.timeline = tl;
        x.in_recovery = false;
        x.upstream = None;
        x.connected = false;
        x.sync_count = 1;
        x.sync_names = (0..NODES).collect();
        self.retired.remove(&n);
    }

    // ----- the executor --------------------------------------------------------------------

    fn call(&mut self, event: Event) {
        let actions = self.m.handle(event.clone(), self.now);
        if actions.len() > MAX_ACTIONS_PER_CALL {
            self.fail(&format!("{} actions for one event", actions.len()));
        }
        for a in actions {
            self.act(a);
        }
    }

    fn act(&mut self, action: Action) {
        match &action {
            Action::Log { message, .. } => self.note(format!("log: {message}")),
            other => self.note(format!("action: {other:?}")),
        }
        match action {
            Action::SetWriter { node } => self.set_writer(node),
            Action::SetReaders { nodes } => {
                let view = self.m.view();
                for n in nodes {
                    if matches!(view.nodes[n].state, NodeState::Fenced | NodeState::NeedsRejoin) {
                        self.fail(&format!("fenced node {n} routed for reads"));
                    }
                }
            }
            Action::Promote { node } => {
                self.check_promotion(node);
                self.promotions.push((self.now, node));
                self.pending.push((self.now + Duration::from_millis(100), Action::Promote { node }));
            }
            Action::Repoint { .. } => self.pending.push((self.now + Duration::from_millis(50), action)),
            Action::Demote { .. } => self.pending.push((self.now + Duration::from_millis(300), action)),
            Action::SetSyncStandbys { on, count, names } => {
                let ids = names.iter().map(|s| s[2..].parse::<usize>().unwrap() - 1).collect();
                let x = &mut self.nodes[on];
                x.sync_count = count;
                x.sync_names = ids;
            }
            Action::Fence { node, .. } => {
                if self.routed == Some(node) {
                    self.fail("fenced the routed writer without unrouting it first");
                }
            }
            Action::Alert(_) | Action::Log { .. } | Action::Persist(_) | Action::Track { .. } | Action::Rejoin { .. } => {}
        }
    }

    fn set_writer(&mut self, node: Option<usize>) {
        if let Some(n) = node {
            if self.retired.contains(&n) {
                self.fail(&format!("node {n} routed as writer again after being replaced"));
            }
            if let Some(prev) = self.last_some_routed.filter(|&p| p != n) {
                self.retired.insert(prev);
            }
            self.last_some_routed = Some(n);
        }
        self.routed = node;
        self.writer_changes.push((self.now, node));
    }

    /// The promotion invariants, recomputed from what the machine was told.
    fn check_promotion(&mut self, cand: usize) {
        if self.p.vrrp_enabled && !self.master {
            self.fail("promotion by a load balancer that is not the vrrp master");
        }
        let fresh = |(at, r): &(Duration, Result<NodeStatus, ProbeFailure>)| {
            r.is_ok() && self.now.saturating_sub(*at) < self.p.stale_after()
        };
        let reachable = self.last_obs.iter().flatten().filter(|o| fresh(o)).count();
        let peers = self.last_peer.iter().flatten().filter(|&&h| self.now.saturating_sub(h) <= self.p.peer_timeout).count();
        let votes = 1 + reachable + peers;
        if 2 * votes <= self.p.members() {
            self.fail(&format!("promotion without quorum: {votes} of {}", self.p.members()));
        }
        let Some((_, Ok(cs))) = &self.last_obs[cand] else { self.fail("promoted a node never probed ok") };
        let cand_received = cs.received().unwrap_or(0);
        let mut reference = cand_received;
        if let Some(w) = self.last_some_routed
            && let Some((_, Ok(ws))) = &self.last_obs[w]
            && ws.timeline == cs.timeline
        {
            reference = reference.max(ws.current_lsn.unwrap_or(0));
        }
        for o in self.last_obs.iter().flatten().filter(|o| fresh(o)) {
            if let Ok(s) = &o.1
                && s.in_recovery
                && s.timeline == cs.timeline
            {
                reference = reference.max(s.received().unwrap_or(0));
            }
        }
        if reference - cand_received > self.p.max_lag_on_failover_bytes {
            self.fail(&format!("candidate {cand} is {} bytes behind", reference - cand_received));
        }
        if !self.tainted && self.p.synchronous_count > 0 {
            let x = &self.nodes[cand];
            let acked = self.acked.get(&x.timeline).copied().unwrap_or(0);
            if x.lsn < acked {
                self.fail(&format!("promoting node {cand} at {} loses acknowledged commits up to {acked}", x.lsn));
            }
        }
    }

    fn complete_pending(&mut self) {
        let now = self.now;
        let (due, rest): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(t, _)| *t <= now);
        self.pending = rest;
        for (_, action) in due {
            let result = self.execute(&action);
            self.note(format!("done: {action:?} -> {result:?}"));
            self.call(Event::ActionDone { action, result });
        }
    }

    fn execute(&mut self, action: &Action) -> Result<(), String> {
        match *action {
            Action::Promote { node } => {
                let x = &self.nodes[node];
                if !x.alive || x.hung || !x.in_recovery {
                    return Err("not a running standby".into());
                }
                self.promote_model(node);
                Ok(())
            }
            Action::Repoint { node, primary } => {
                let x = &mut self.nodes[node];
                if !x.alive || x.hung || !x.in_recovery || !x.lb_link {
                    return Err("cannot reach a standby".into());
                }
                x.upstream = Some(primary);
                Ok(())
            }
            Action::Demote { node, primary } => {
                if !self.nodes[node].alive || self.nodes[node].hung || self.nodes[node].in_recovery {
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
                self.retired.remove(&node);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // ----- the loop ------------------------------------------------------------------------

    fn step(&mut self) {
        while let Some(&(t, fault)) = self.faults.first() {
            if t > self.now {
                break;
            }
            self.faults.remove(0);
            self.apply_fault(fault);
        }
        for n in 0..NODES {
            self.nodes[n].lag_budget = 8_000; // a third of the average write rate
            if self.nodes[n].flapping {
                self.nodes[n].lb_link = self.rng.chance(50);
            }
        }
        self.complete_pending();
        self.replicate();
        self.client_write();
        self.replicate();
        self.update_acks();
        // VRRP: the master role is told at start (and lost never, except in NotMaster).
        if self.p.vrrp_enabled && self.now == Duration::ZERO && self.scenario != Scenario::NotMaster {
            self.master = true;
            self.call(Event::VrrpRole { master: true });
        }
        for n in 0..NODES {
            let offset = Duration::from_millis(50 * n as u64);
            if self.now >= offset && (self.now - offset).as_millis().is_multiple_of(PROBE.as_millis()) {
                let result = self.status(n);
                self.last_obs[n] = Some((self.now, result.clone()));
                self.call(Event::Probe(Observation { node: n, at: self.now, latency: Duration::from_millis(1), result }));
            }
        }
        if self.now.as_millis().is_multiple_of(PEER_ADVERT.as_millis()) {
            for i in 0..self.peers_alive.len() {
                if self.peers_alive[i] {
                    self.last_peer[i] = Some(self.now);
                    let peer = self.p.peers[i];
                    self.call(Event::PeerHeard { peer });
                }
            }
        }
        if self.m.next_deadline().is_some_and(|d| d <= self.now) {
            self.call(Event::Tick);
        }
        self.check_step();
        self.now += DT;
    }

    fn check_step(&mut self) {
        let view = self.m.view();
        if let Some(w) = view.writer
            && matches!(view.nodes[w].state, NodeState::Fenced | NodeState::NeedsRejoin)
        {
            self.fail("the routed writer is fenced");
        }
        if view.writer != self.routed {
            self.fail("the machine's writer differs from the last SetWriter");
        }
        // The daemon sleeps until next_deadline: one at or before now would wake it at once,
        // forever (a busy loop).
        if let Some(d) = self.m.next_deadline()
            && d <= self.now
        {
            self.fail(&format!("next_deadline {d:?} is not after now: the daemon would spin"));
        }
    }

    fn run(mut self) -> Sim {
        let all_faults = self.faults.clone();
        for _ in 0..STEPS {
            self.step();
        }
        self.faults = all_faults;
        self.check_end();
        self
    }

    fn first_new_writer_after(&self, t: Duration, old: usize) -> Option<Duration> {
        self.writer_changes.iter().find(|(at, w)| *at >= t && w.is_some_and(|w| w != old)).map(|(at, _)| *at)
    }

    /// Scenario-specific outcomes.
    fn check_end(&self) {
        let fault_at = |want: fn(&Fault) -> bool| self.faults.iter().find(|(_, f)| want(f)).map(|(t, _)| *t);
        match self.scenario {
            Scenario::Crash | Scenario::LaggingStandby => {
                let t = fault_at(|f| matches!(f, Fault::Crash(0))).expect("a crash");
                let bound = self.p.detection_time() + Duration::from_millis(600);
                match self.first_new_writer_after(t, 0) {
                    Some(at) if at - t <= bound => {}
                    other => self.fail(&format!("no new writer within {bound:?} of the crash at {t:?}: {other:?}")),
                }
                if self.scenario == Scenario::LaggingStandby {
                    let lagging = self.nodes.iter().position(|n| n.lagging).unwrap();
                    if self.promotions.iter().any(|&(_, n)| n == lagging) {
                        self.fail("the lagging standby was promoted");
                    }
                }
                if let Some(r) = fault_at(|f| matches!(f, Fault::Rejoin(0)))
                    && r + Duration::from_secs(3) < self.now
                {
                    let st = self.m.view().nodes[0].state;
                    if st != NodeState::Up {
                        self.fail(&format!("pg1 rejoined at {r:?} but is {st:?}"));
                    }
                }
            }
            Scenario::Hang => {
                let t = fault_at(|f| matches!(f, Fault::Hang(0))).expect("a hang");
                let resume = fault_at(|f| matches!(f, Fault::Resume(0))).expect("a resume");
                let bound = WAL_RECEIVER_TIMEOUT + self.p.detection_time() + Duration::from_millis(400);
                if resume - t > bound {
                    match self.first_new_writer_after(t, 0) {
                        Some(at) if at - t <= bound => {}
                        other => self.fail(&format!("no new writer within {bound:?} of the hang: {other:?}")),
                    }
                }
            }
            Scenario::Partition | Scenario::Flapping | Scenario::NotMaster | Scenario::NoQuorum | Scenario::DoubleFault => {
                if !self.promotions.is_empty() {
                    self.fail(&format!("promotions in a scenario that must have none: {:?}", self.promotions));
                }
            }
            Scenario::Switchover => {
                let (t, to) = self
                    .faults
                    .iter()
                    .find_map(|(t, f)| if let Fault::Switchover(n) = f { Some((*t, *n)) } else { None })
                    .unwrap();
                let done = self.writer_changes.iter().find(|(at, w)| *at >= t && *w == Some(to));
                match done {
                    Some((at, _)) if *at - t <= Duration::from_secs(2) => {}
                    other => self.fail(&format!("switchover to {to} at {t:?} did not finish in 2s: {other:?}")),
                }
            }
            Scenario::SecondPrimary | Scenario::Chaos => {}
        }
    }
}

fn seeds() -> u64 {
    std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(500)
}

#[test]
fn simulation_holds_invariants_over_many_seeds() {
    let mut by_scenario: HashMap<String, (u32, usize)> = HashMap::new();
    for seed in 0..seeds() {
        let sim = Sim::new(seed).run();
        let e = by_scenario.entry(format!("{:?}", sim.scenario)).or_default();
        e.0 += 1;
        e.1 += sim.promotions.len();
    }
    let mut rows: Vec<_> = by_scenario.into_iter().collect();
    rows.sort();
    for (s, (runs, promotions)) in &rows {
        eprintln!("{s:<16} runs {runs:>4}  promotions {promotions:>4}");
    }
    // The scenarios that must fail over did.
    let get = |name: &str| rows.iter().find(|(s, _)| s == name).map(|(_, v)| *v).unwrap();
    assert!(get("Crash").1 >= get("Crash").0 as usize);
    assert_eq!(get("Partition").1, 0);
}

#[test]
fn simulation_is_deterministic() {
    let a = Sim::new(42).run();
    let b = Sim::new(42).run();
    assert_eq!(a.trace, b.trace);
    assert!(!a.trace.is_empty());
}
