//! Tier 2: one event into the machine, asserting the new state and the exact actions, for every
//! rule. `Log` lines are checked separately (they exist and say why), the rest exactly.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::*;

mod failover;
mod manual;
mod marks;
mod observe;
mod partial;
mod pause;
mod reconfigure;
mod peers;
mod repair;
mod routing;
mod switchover;
mod trust;

const PG1: NodeId = 0;
const PG2: NodeId = 1;
const PG3: NodeId = 2;
const PG4: NodeId = 3;
const MIB: u64 = 1 << 20;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn node(i: usize) -> NodeParams {
    NodeParams {
        name: format!("pg{}", i + 1),
        host: Ipv4Addr::new(172, 20, 0, 10 + i as u8),
        port: 5432,
        priority: 100,
        nofailover: false,
        read_weight: 100,
    }
}

fn params(nodes: usize) -> Params {
    Params {
        nodes: (0..nodes).map(node).collect(),
        probe_interval: ms(200),
        failover_after: 3,
        up_after: 3,
        max_lag_on_failover_bytes: MIB,
        max_read_lag_bytes: 16 * MIB,
        max_read_lag: Duration::from_secs(1),
        promote_timeout: Duration::from_secs(30),
        switchover_timeout: Duration::from_secs(10),
        synchronous_count: 1,
        vrrp_enabled: false,
        peers: vec![],
        peer_timeout: ms(361),
        track_hold: ms(361),
        rejoin: false,
        rejoin_backoff: Duration::from_secs(10),
    }
}

fn primary(timeline: u32, lsn: u64) -> Result<NodeStatus, ProbeFailure> {
    Ok(NodeStatus {
        in_recovery: false,
        timeline,
        current_lsn: Some(lsn),
        receive_lsn: None,
        replay_lsn: Some(lsn),
        replay_lag: None,
        wal_receiver: None,
    })
}

/// A standby on `timeline` that received and replayed `lsn`, streaming from `from` if given.
fn standby(timeline: u32, lsn: u64, from: Option<NodeId>) -> Result<NodeStatus, ProbeFailure> {
    Ok(NodeStatus {
        in_recovery: true,
        timeline,
        current_lsn: None,
        receive_lsn: Some(lsn),
        replay_lsn: Some(lsn),
        replay_lag: Some(Duration::ZERO),
        wal_receiver: from.map(|f| WalReceiver {
            status: "streaming".into(),
            sender_host: Some(node(f).host.to_string()),
            sender_port: Some(5432),
        }),
    })
}

fn down() -> Result<NodeStatus, ProbeFailure> {
    Err(ProbeFailure::Unreachable("connection refused".into()))
}

/// Test harness: a machine and a virtual clock.
struct H {
    m: Machine,
    now: Duration,
}

impl H {
    /// With VRRP peers, the first peer reports timeline 1 at once, as a running peer does (a
    /// starting machine waits for a peer's timeline; the peer tests below say otherwise).
    fn new(p: Params) -> H {
        let peer = p.peers.first().copied().filter(|_| p.vrrp_enabled);
        let mut h = H { m: Machine::new(p), now: ms(1000) };
        if let Some(peer) = peer {
            h.ev(Event::PeerReport { peer, report: PeerReport { timeline: 1, writer: None, maintenance: None, marks: vec![] } });
        }
        h
    }

    /// One event at `now`; a `Persist` among the actions is written at once (a fast disk: the
    /// `Persisted` answer's actions follow). Every call also checks the daemon's loop contract:
    /// the next deadline is strictly in the future (a deadline at or before `now` is already
    /// handled, and the daemon would wake at once, forever: a busy loop).
    fn ev(&mut self, event: Event) -> Vec<Action> {
        let mut actions = self.raw(event);
        let mut i = 0;
        while i < actions.len() {
            if let Action::Persist(d) = &actions[i] {
                let answer = self.raw(Event::Persisted { state: d.clone(), result: Ok(()) });
                actions.extend(answer);
            }
            i += 1;
        }
        actions
    }

    /// One event at `now`, with no answer to a `Persist` (a test of the state file's failures
    /// answers itself).
    fn raw(&mut self, event: Event) -> Vec<Action> {
        let actions = self.m.handle(event, self.now);
        for (i, a) in actions.iter().enumerate() {
            assert!(i == 0 || !matches!(a, Action::Persist(_)), "Persist must be the first action (write-ahead): {actions:?}");
        }
        if let Some(d) = self.m.next_deadline() {
            assert!(d > self.now, "next_deadline {d:?} is not after now {:?} (phase {:?}): the daemon would spin", self.now, self.m.phase());
        }
        actions
    }

    fn probe(&mut self, n: NodeId, result: Result<NodeStatus, ProbeFailure>) -> Vec<Action> {
        let obs = Observation { node: n, at: self.now, latency: ms(1), result };
        self.ev(Event::Probe(obs))
    }

    /// Probes every node at `now` in order, then advances one probe interval.
    fn round(&mut self, results: Vec<Result<NodeStatus, ProbeFailure>>) -> Vec<Action> {
        let mut out = Vec::new();
        for (n, r) in results.into_iter().enumerate() {
            out.extend(self.probe(n, r));
        }
        self.now += ms(200);
        out
    }

    fn done(&mut self, action: Action, result: Result<(), String>) -> Vec<Action> {
        self.ev(Event::ActionDone { action, result })
    }

    fn state(&self, n: NodeId) -> NodeState {
        self.m.view().nodes[n].state
    }
}

/// (actions without logs and state-file writes, log lines). Every decision must come with a
/// log line. A `Persist` must come first (write-ahead); its content is checked by the
/// persistence tests.
fn split(actions: Vec<Action>) -> (Vec<Action>, Vec<String>) {
    let mut rest = Vec::new();
    let mut logs = Vec::new();
    for a in actions {
        match a {
            Action::Log { message, .. } => {
                assert!(!message.contains('\n'), "log is not one line: {message:?}");
                logs.push(message);
            }
            Action::Persist(_) => {}
            other => rest.push(other),
        }
    }
    (rest, logs)
}

fn assert_logged(logs: &[String], needle: &str) {
    assert!(logs.iter().any(|l| l.contains(needle)), "no log line contains {needle:?}: {logs:#?}");
}

/// pg1 primary on timeline 1, pg2 and pg3 streaming from it: Steady after one round.
fn steady(nodes: usize) -> H {
    let mut h = H::new(params(nodes));
    let mut results = vec![primary(1, 1000)];
    results.extend((1..nodes).map(|_| standby(1, 1000, Some(PG1))));
    let (actions, logs) = split(h.round(results));
    let readers: Vec<NodeId> = (1..nodes).collect();
    assert_eq!(actions, [Action::SetWriter { node: Some(PG1) }, Action::SetReaders { nodes: readers }]);
    assert_logged(&logs, "pg1 is the writer");
    assert_eq!(h.m.phase(), Phase::Steady);
    h
}

/// [`crash_writer`], then failover's settling step: the re-points it asked for reported done
/// and one more round of probes; returns the actions of both (the settling round's include the
/// `Promote`).
fn crash_and_settle(h: &mut H, standbys: Vec<Result<NodeStatus, ProbeFailure>>) -> Vec<Action> {
    let mut out = crash_writer(h, standbys.clone());
    out.extend(settle(h, &out.clone(), standbys));
    out
}

/// Reports every `Repoint` in `decided` done, then runs one round (the writer down, the
/// standbys as given): the positions read after the re-points.
fn settle(h: &mut H, decided: &[Action], standbys: Vec<Result<NodeStatus, ProbeFailure>>) -> Vec<Action> {
    let mut out = Vec::new();
    h.now += ms(30);
    for a in decided {
        if let Action::Repoint { .. } = a {
            out.extend(h.done(a.clone(), Ok(())));
        }
    }
    let mut results = vec![down()];
    results.extend(standbys);
    out.extend(h.round(results));
    out
}

/// Brings the writer down with `failover_after` failed probes while the standbys answer
/// `standbys`; returns the last round's actions.
fn crash_writer(h: &mut H, standbys: Vec<Result<NodeStatus, ProbeFailure>>) -> Vec<Action> {
    let mut last = Vec::new();
    for _ in 0..3 {
        let mut results = vec![down()];
        results.extend(standbys.iter().cloned());
        last = h.round(results);
    }
    last
}


/// Three nodes (pg1 the primary, both standbys streaming from it), VRRP on with one peer
/// (172.20.0.22, not heard yet), this instance the master, asynchronous replication.
fn vrrp_master_of_three() -> H {
    let mut p = params(3);
    p.vrrp_enabled = true;
    p.synchronous_count = 0;
    p.peers = vec![Ipv4Addr::new(172, 20, 0, 22)];
    let mut h = H::new(p);
    h.ev(Event::VrrpRole { master: true });
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    h
}

/// Runs `rounds` probe rounds of the same results; returns every action (logs split off).
fn rounds(h: &mut H, n: usize, results: &[Result<NodeStatus, ProbeFailure>]) -> Vec<Action> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend(split(h.round(results.to_vec())).0);
    }
    out
}

fn vrrp_params(nodes: usize) -> Params {
    let mut p = params(nodes);
    p.vrrp_enabled = true;
    p.peers = vec![Ipv4Addr::new(172, 20, 0, 22)];
    p
}

/// A master with a peer's report every round (its quorum vote).
fn master_h(p: Params) -> H {
    let mut h = H::new(p);
    h.ev(Event::VrrpRole { master: true });
    h
}

fn round_with_peer(h: &mut H, results: Vec<Result<NodeStatus, ProbeFailure>>) -> Vec<Action> {
    let mut out = h.ev(report(PEER, 1, None));
    out.extend(h.round(results));
    out
}

fn rejoin_params() -> Params {
    let mut p = params(3);
    p.rejoin = true;
    p
}

const PEER: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 22);

fn report(peer: Ipv4Addr, timeline: u32, writer: Option<&str>) -> Event {
    Event::PeerReport { peer, report: PeerReport { timeline, writer: writer.map(str::to_owned), maintenance: None, marks: vec![] } }
}
