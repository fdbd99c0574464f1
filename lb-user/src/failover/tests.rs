//! Tier 2: one event into the machine, asserting the new state and the exact actions, for every
//! rule. `Log` lines are checked separately (they exist and say why), the rest exactly.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::*;

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
    fn new(p: Params) -> H {
        H { m: Machine::new(p), now: ms(1000) }
    }

    /// One event at `now`. Every call also checks the daemon's loop contract: the next deadline
    /// is strictly in the future (a deadline at or before `now` is already handled, and the
    /// daemon would wake at once, forever: a busy loop).
    fn ev(&mut self, event: Event) -> Vec<Action> {
        let actions = self.m.handle(event, self.now);
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

/// (actions without logs, log lines). Every decision must come with a log line.
fn split(actions: Vec<Action>) -> (Vec<Action>, Vec<String>) {
    let mut rest = Vec::new();
    let mut logs = Vec::new();
    for a in actions {
        match a {
            Action::Log { message, .. } => {
                assert!(!message.contains('\n'), "log is not one line: {message:?}");
                logs.push(message);
            }
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

// ----- rule 1: writer selection and split brain --------------------------------------------

#[test]
fn startup_waits_for_every_node_then_routes_the_primary() {
    let mut h = H::new(params(3));
    assert!(h.probe(PG1, primary(1, 1000)).is_empty());
    assert!(h.probe(PG2, standby(1, 1000, Some(PG1))).is_empty());
    assert_eq!(h.m.phase(), Phase::Starting);
    let (actions, _) = split(h.probe(PG3, standby(1, 1000, Some(PG1))));
    assert_eq!(actions, [Action::SetWriter { node: Some(PG1) }, Action::SetReaders { nodes: vec![PG2, PG3] }]);
    let v = h.m.view();
    assert_eq!((v.writer, v.writer_timeline, v.readers), (Some(PG1), Some(1), vec![PG2, PG3]));
    assert_eq!(v.nodes[PG1].role, Role::Primary);
    assert_eq!(v.nodes[PG2].role, Role::Standby);
}

#[test]
fn startup_without_primary_refuses_writes() {
    let mut h = H::new(params(3));
    let (actions, logs) = split(h.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None)]));
    assert_eq!(actions, [Action::SetWriter { node: None }, Action::SetReaders { nodes: vec![PG2, PG3] }]);
    assert_logged(&logs, "no usable primary");
    assert!(matches!(h.m.phase(), Phase::WriterLost { old: None, .. }));
}

#[test]
fn startup_grace_decides_without_every_node() {
    let mut h = H::new(params(3));
    h.probe(PG1, primary(1, 1000));
    h.now += ms(400);
    h.probe(PG1, primary(1, 1000));
    h.now += ms(200); // detection_time = 3 x 200ms since the first event
    let (actions, _) = split(h.ev(Event::Tick));
    assert_eq!(actions, [Action::SetWriter { node: Some(PG1) }, Action::SetReaders { nodes: vec![PG1] }]);
}

#[test]
fn startup_highest_timeline_wins_and_older_primary_is_fenced() {
    let mut h = H::new(params(3));
    let (actions, logs) = split(h.round(vec![primary(1, 5000), primary(2, 3000), standby(2, 3000, Some(PG2))]));
    let reason = FenceReason::OlderTimeline { timeline: 1, writer_timeline: 2 };
    assert_eq!(
        actions,
        [
            Action::Fence { node: PG1, reason },
            Action::SetWriter { node: Some(PG2) },
            Action::SetReaders { nodes: vec![PG3] }
        ]
    );
    assert_logged(&logs, "old timeline 1");
    assert_eq!(h.state(PG1), NodeState::NeedsRejoin);
}

#[test]
fn startup_tie_without_previous_writer_routes_nobody() {
    let mut h = H::new(params(3));
    let (actions, logs) = split(h.round(vec![primary(1, 1000), primary(1, 1000), standby(1, 1000, None)]));
    assert_eq!(actions, [Action::SetWriter { node: None }, Action::SetReaders { nodes: vec![PG3] }]);
    assert_logged(&logs, "split brain with no previous writer");
    assert_eq!(h.state(PG1), NodeState::Up);
    assert_eq!(h.state(PG2), NodeState::Up);
}

#[test]
fn split_brain_keeps_writer_and_fences_the_other() {
    let mut h = steady(3);
    let (actions, logs) = split(h.probe(PG2, primary(1, 1200)));
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::SplitBrain { kept: PG1, fenced: PG2, timeline: 1 }),
            Action::Fence { node: PG2, reason: FenceReason::SplitBrain { writer: PG1, timeline: 1 } },
            Action::SetReaders { nodes: vec![PG3] },
        ]
    );
    assert_logged(&logs, "split brain");
    assert_eq!(h.state(PG2), NodeState::Fenced);
    assert_eq!(h.m.writer(), Some(PG1));
    // It stays fenced while it is a primary.
    let (actions, _) = split(h.probe(PG2, primary(1, 1300)));
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn returning_old_primary_is_fenced_as_needs_rejoin() {
    let mut h = steady(3);
    h.m = {
        // Writer on timeline 2 (pg2), pg1 comes back as a primary on timeline 1.
        let mut h2 = H::new(params(3));
        h2.round(vec![down(), primary(2, 1000), standby(2, 1000, Some(PG2))]);
        h2.m
    };
    // It was down: up_after (3) good probes before it counts, then it is fenced.
    for _ in 0..2 {
        assert!(split(h.probe(PG1, primary(1, 900))).0.is_empty());
    }
    let (actions, logs) = split(h.probe(PG1, primary(1, 900)));
    assert_eq!(actions, [Action::Fence { node: PG1, reason: FenceReason::OlderTimeline { timeline: 1, writer_timeline: 2 } }]);
    assert_logged(&logs, "needs rejoin");
    assert_eq!(h.state(PG1), NodeState::NeedsRejoin);
    assert_eq!(h.m.view().readers, [PG3]);
}

#[test]
fn newer_timeline_primary_takes_over_the_writer() {
    let mut h = steady(3);
    let (actions, logs) = split(h.probe(PG3, primary(2, 1100)));
    assert_eq!(
        actions,
        [
            Action::SetWriter { node: Some(PG3) },
            Action::Fence { node: PG1, reason: FenceReason::OlderTimeline { timeline: 1, writer_timeline: 2 } },
            Action::Alert(Alert::WriterChanged { from: Some(PG1), to: PG3, timeline: 2 }),
            Action::SetReaders { nodes: vec![PG3] },
        ]
    );
    assert_logged(&logs, "newer timeline 2");
    assert_eq!(h.m.view().writer_timeline, Some(2));
}

// ----- rule 2: failover guards ---------------------------------------------------------------

#[test]
fn writer_failures_are_debounced() {
    let mut h = steady(3);
    for _ in 0..2 {
        let (actions, _) = split(h.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None)]));
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!(h.m.phase(), Phase::Steady);
    }
    assert_eq!(h.m.view().nodes[PG1].consecutive_failures, 2);
    // One good probe resets the count.
    h.round(vec![primary(1, 1000), standby(1, 1000, None), standby(1, 1000, None)]);
    assert_eq!(h.m.view().nodes[PG1].consecutive_failures, 0);
    assert_eq!(h.m.phase(), Phase::Steady);
}

#[test]
fn crash_with_streaming_standbys_cut_off_means_no_failover() {
    // The primary is cut from this load balancer but still streams to both standbys.
    let mut h = steady(3);
    let last = crash_writer(&mut h, vec![standby(1, 1100, Some(PG1)), standby(1, 1100, Some(PG1))]);
    let (actions, logs) = split(last);
    assert_eq!(
        actions,
        [Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::StandbyStreaming { standby: PG2 } })]
    );
    assert_logged(&logs, "still streams");
    assert!(matches!(h.m.phase(), Phase::WriterLost { old: Some(PG1), .. }));
    assert_eq!(h.m.writer(), Some(PG1), "writes stay routed to the cut-off writer");
    // It heals: the writer is kept, nothing is rewritten.
    let (actions, logs) = split(h.round(vec![primary(1, 1200), standby(1, 1200, Some(PG1)), standby(1, 1200, Some(PG1))]));
    assert!(actions.is_empty(), "{actions:?}");
    assert_logged(&logs, "answers again");
    assert_eq!(h.m.phase(), Phase::Steady);
}

#[test]
fn crash_promotes_the_most_advanced_standby() {
    let mut h = steady(3);
    let last = crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    let (actions, logs) = split(last);
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG3 }),
            Action::SetWriter { node: None },
            Action::Promote { node: PG3 },
            Action::SetReaders { nodes: vec![PG2] },
        ]
    );
    assert_logged(&logs, "pg1 is down: 3 consecutive failed probes");
    assert_logged(&logs, "failover: promoting pg3");
    assert!(matches!(h.m.phase(), Phase::FailingOver { old: Some(PG1), candidate: PG3, .. }));
    assert_eq!(h.state(PG3), NodeState::Promoting);
}

#[test]
fn candidate_ties_break_on_priority_then_name() {
    let mut p = params(4);
    p.synchronous_count = 0;
    p.nodes[PG2].priority = 50;
    let mut h = H::new(p);
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let (actions, _) = split(crash_writer(&mut h, vec![standby(1, 1000, None); 3]));
    assert!(actions.contains(&Action::Promote { node: PG3 }), "pg3 and pg4 tie on priority 100; pg3 sorts first: {actions:?}");
}

#[test]
fn promotion_success_switches_writer_fences_old_repoints_and_sets_sync() {
    let mut h = steady(3);
    crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    let (actions, logs) = split(h.done(Action::Promote { node: PG3 }, Ok(())));
    assert_eq!(
        actions,
        [
            Action::SetWriter { node: Some(PG3) },
            Action::Fence { node: PG1, reason: FenceReason::Replaced { by: PG3 } },
            Action::Repoint { node: PG2, primary: PG3 },
            Action::SetSyncStandbys { on: PG3, count: 1, names: vec!["pg1".into(), "pg2".into()] },
            Action::Alert(Alert::FailedOver { from: Some(PG1), to: PG3 }),
            Action::SetReaders { nodes: vec![PG3] },
        ]
    );
    assert_logged(&logs, "failover done: pg3 is the writer on timeline 2");
    let v = h.m.view();
    assert_eq!((v.phase, v.writer, v.writer_timeline), (Phase::Steady, Some(PG3), Some(2)));
    assert_eq!(v.nodes[PG1].state, NodeState::NeedsRejoin);
    // pg2 follows the new timeline: it serves reads again.
    let (actions, _) = split(h.probe(PG2, standby(2, 1200, Some(PG3))));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG2] }]);
    // pg1 returns as a primary on timeline 1: it stays fenced, never routed.
    let (actions, _) = split(h.probe(PG1, primary(1, 1500)));
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(h.m.writer(), Some(PG3));
}

#[test]
fn a_probe_showing_the_promotion_finishes_it_before_the_report() {
    let mut h = steady(3);
    crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    let (actions, _) = split(h.probe(PG3, primary(2, 1100)));
    assert_eq!(actions[0], Action::SetWriter { node: Some(PG3) });
    assert_eq!(h.m.phase(), Phase::Steady);
    // The late report changes nothing.
    let (actions, _) = split(h.done(Action::Promote { node: PG3 }, Ok(())));
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn promotion_failure_tries_the_next_candidate() {
    let mut h = steady(3);
    crash_writer(&mut h, vec![standby(1, 1100, None), standby(1, 1100, None)]);
    let (actions, logs) = split(h.done(Action::Promote { node: PG2 }, Err("permission denied".into())));
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::PromoteFailed { node: PG2, error: "permission denied".into() }),
            Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG3 }),
            Action::Promote { node: PG3 },
            Action::SetReaders { nodes: vec![PG2] },
        ]
    );
    assert_logged(&logs, "promoting pg2 failed: permission denied");
}

#[test]
fn promotion_timeout_counts_as_failure() {
    let mut h = steady(3);
    crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    let deadline = h.m.next_deadline().unwrap();
    assert!(deadline <= h.now + Duration::from_secs(30));
    h.now += Duration::from_secs(30);
    let (actions, _) = split(h.ev(Event::Tick));
    assert!(actions.contains(&Action::Alert(Alert::PromoteFailed { node: PG3, error: "no report within promote_timeout (30s)".into() })), "{actions:?}");
}

#[test]
fn non_master_never_promotes_until_it_becomes_master() {
    let mut p = params(3);
    p.vrrp_enabled = true;
    let mut h = H::new(p);
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let (actions, _) = split(crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1000, None)]));
    assert_eq!(actions, [Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::NotMaster })]);
    let (actions, logs) = split(h.ev(Event::VrrpRole { master: true }));
    assert_logged(&logs, "vrrp master");
    assert!(actions.contains(&Action::Promote { node: PG2 }), "{actions:?}");
}

#[test]
fn no_quorum_means_no_failover_until_a_peer_is_heard() {
    let mut p = params(3);
    p.vrrp_enabled = true;
    p.synchronous_count = 0;
    p.peers = vec![Ipv4Addr::new(172, 20, 0, 22)];
    let mut h = H::new(p);
    h.ev(Event::VrrpRole { master: true });
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    // pg1 and pg3 gone: 1 (self) + pg2 = 2 of 5.
    let (actions, _) = split(crash_writer(&mut h, vec![standby(1, 1000, None), down()]));
    assert_eq!(
        actions,
        [Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::NoQuorum { votes: 2, members: 5 } })]
    );
    assert_eq!(h.m.view().quorum, (2, 5));
    let (actions, _) = split(h.ev(Event::PeerHeard { peer: Ipv4Addr::new(172, 20, 0, 22) }));
    assert!(actions.contains(&Action::Promote { node: PG2 }), "{actions:?}");
}

#[test]
fn sync_guard_blocks_when_a_standby_that_may_hold_the_last_commit_is_unreachable() {
    let mut h = steady(4);
    // pg4 is down too: with ANY 1 over pg2..pg4 all three must be visible.
    let (actions, _) = split(crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1000, None), down()]));
    assert_eq!(
        actions,
        [Action::Alert(Alert::FailoverBlocked {
            writer: Some(PG1),
            reason: Blocked::SyncStandbysUnreachable { reachable: 2, needed: 3 }
        })]
    );
    // pg4 comes back (three good probes): failover goes ahead, to the most advanced.
    let mut last = Vec::new();
    for _ in 0..3 {
        last = h.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None), standby(1, 1050, None)]);
    }
    let (actions, _) = split(last);
    assert!(actions.contains(&Action::Promote { node: PG4 }), "{actions:?}");
}

#[test]
fn standby_beyond_the_lag_limit_is_never_a_candidate() {
    let mut h = steady(3);
    h.round(vec![primary(1, 10 * MIB), standby(1, 10 * MIB, Some(PG1)), standby(1, 10 * MIB, Some(PG1))]);
    // pg2 stays far behind, pg3 is close: pg3 despite the name order.
    let (actions, _) = split(crash_writer(&mut h, vec![standby(1, 7 * MIB, None), standby(1, 10 * MIB - 10, None)]));
    assert!(actions.contains(&Action::Promote { node: PG3 }), "{actions:?}");
}

#[test]
fn no_candidate_when_every_standby_lags() {
    let mut h = steady(3);
    h.round(vec![primary(1, 10 * MIB), standby(1, 10 * MIB, Some(PG1)), standby(1, 10 * MIB, Some(PG1))]);
    let (actions, _) = split(crash_writer(&mut h, vec![standby(1, 7 * MIB, None), standby(1, 8 * MIB, None)]));
    assert_eq!(actions, [Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::NoCandidate })]);
}

#[test]
fn nofailover_standby_ahead_blocks_the_failover() {
    let mut p = params(3);
    p.nodes[PG3].nofailover = true;
    let mut h = H::new(p);
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let (actions, _) = split(crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]));
    assert_eq!(
        actions,
        [Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::CandidateBehind { candidate: PG2, ahead: PG3 } })]
    );
}

#[test]
fn writer_in_recovery_refuses_writes() {
    let mut h = steady(3);
    let (actions, logs) = split(h.probe(PG1, standby(1, 1000, None)));
    // pg2 and pg3 are not streaming (their last probes say they do): no failover yet.
    assert_eq!(
        actions,
        [
            Action::SetWriter { node: None },
            Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::StandbyStreaming { standby: PG2 } }),
            Action::SetReaders { nodes: vec![PG1, PG2, PG3] },
        ]
    );
    assert_logged(&logs, "is in recovery now");
}

#[test]
fn no_primary_at_all_fails_over_after_detection_time() {
    let mut h = H::new(params(3));
    h.round(vec![down(), standby(1, 1000, None), standby(1, 1100, None)]);
    assert!(matches!(h.m.phase(), Phase::WriterLost { old: None, .. }));
    h.round(vec![down(), standby(1, 1000, None), standby(1, 1100, None)]);
    h.round(vec![down(), standby(1, 1000, None), standby(1, 1100, None)]);
    let (actions, _) = split(h.round(vec![down(), standby(1, 1000, None), standby(1, 1100, None)]));
    assert_eq!(
        actions,
        [Action::Alert(Alert::FailoverStarted { from: None, candidate: PG3 }), Action::Promote { node: PG3 }, Action::SetReaders { nodes: vec![PG2] }]
    );
}

// ----- rule 5: re-pointing --------------------------------------------------------------------

#[test]
fn standby_streaming_elsewhere_is_repointed_after_the_grace() {
    let mut h = steady(3);
    for i in 0..15 {
        let (actions, _) = split(h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, None)]));
        assert!(actions.is_empty(), "round {i}: {actions:?}");
    }
    let (actions, logs) = split(h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, None)]));
    assert_eq!(actions, [Action::Repoint { node: PG3, primary: PG1 }]);
    assert_logged(&logs, "re-pointing it");
    // A failed re-point is reported and retried after the grace.
    let (actions, _) = split(h.done(Action::Repoint { node: PG3, primary: PG1 }, Err("timeout".into())));
    assert_eq!(actions, [Action::Alert(Alert::RepointFailed { node: PG3, primary: PG1, error: "timeout".into() })]);
}

// ----- rule 6: fences and rejoin --------------------------------------------------------------

#[test]
fn fenced_node_rejoins_when_it_replicates_on_the_writers_timeline() {
    let mut h = steady(3);
    crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    h.done(Action::Promote { node: PG3 }, Ok(()));
    assert_eq!(h.state(PG1), NodeState::NeedsRejoin);
    // Rewound, on timeline 1 still: not yet.
    let (actions, _) = split(h.probe(PG1, standby(1, 1000, None)));
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(h.state(PG1), NodeState::NeedsRejoin);
    let (actions, logs) = split(h.probe(PG1, standby(2, 1100, Some(PG3))));
    assert!(actions.is_empty(), "{actions:?}");
    assert_logged(&logs, "pg1 rejoined");
    assert_eq!(h.state(PG1), NodeState::Down, "unfenced, but down: up_after good probes first");
    let (actions, _) = split(h.probe(PG1, standby(2, 1100, Some(PG3))));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG1] }]);
    assert_eq!(h.state(PG1), NodeState::Up);
}

#[test]
fn admin_rejoined_lifts_the_fence_and_waits_for_good_probes() {
    let mut h = steady(3);
    h.probe(PG2, primary(1, 1200));
    assert_eq!(h.state(PG2), NodeState::Fenced);
    let (actions, logs) = split(h.ev(Event::Admin(AdminCommand::Rejoined { node: PG2 })));
    assert!(actions.is_empty(), "{actions:?}");
    assert_logged(&logs, "fence lifted");
    assert_eq!(h.state(PG2), NodeState::Down);
    for _ in 0..2 {
        h.probe(PG2, standby(1, 1000, Some(PG1)));
        assert_eq!(h.state(PG2), NodeState::Down);
    }
    let (actions, _) = split(h.probe(PG2, standby(1, 1000, Some(PG1))));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG2, PG3] }]);
    assert_eq!(h.state(PG2), NodeState::Up);
}

// ----- rule 7: readers --------------------------------------------------------------------------

#[test]
fn readers_respect_lag_limits_and_fall_back_to_the_writer() {
    let mut h = steady(3);
    // pg2 replays 20 MiB behind: out.
    assert!(split(h.probe(PG2, standby(1, 10 * MIB, Some(PG1)))).0.is_empty());
    assert!(split(h.probe(PG3, standby(1, 30 * MIB, Some(PG1)))).0.is_empty());
    let (actions, _) = split(h.probe(PG1, primary(1, 30 * MIB)));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG3] }]);
    // pg3 reports 2s of replay lag: out too, so the writer serves reads.
    let mut lagging = standby(1, 30 * MIB, Some(PG1)).unwrap();
    lagging.replay_lag = Some(Duration::from_secs(2));
    let (actions, _) = split(h.probe(PG3, Ok(lagging)));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG1] }]);
}

#[test]
fn a_failed_standby_leaves_at_once_and_returns_after_up_after() {
    let mut h = steady(3);
    let (actions, logs) = split(h.probe(PG2, Err(ProbeFailure::Timeout)));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG3] }]);
    assert_logged(&logs, "pg2 is down: 1 consecutive failed probes (last: timed out)");
    for _ in 0..2 {
        let (actions, _) = split(h.probe(PG2, standby(1, 1000, Some(PG1))));
        assert!(actions.is_empty(), "{actions:?}");
    }
    let (actions, logs) = split(h.probe(PG2, standby(1, 1000, Some(PG1))));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG2, PG3] }]);
    assert_logged(&logs, "pg2 is up again after 3 good probes");
}

#[test]
fn read_weight_zero_never_reads() {
    let mut p = params(3);
    p.nodes[PG2].read_weight = 0;
    let mut h = H::new(p);
    let (actions, _) = split(h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]));
    assert_eq!(actions, [Action::SetWriter { node: Some(PG1) }, Action::SetReaders { nodes: vec![PG3] }]);
}

// ----- switchover -------------------------------------------------------------------------------

#[test]
fn switchover_blocks_catches_up_demotes_promotes_and_switches() {
    let mut h = steady(3);
    let (actions, logs) = split(h.ev(Event::Admin(AdminCommand::Switchover { to: PG2 })));
    assert_eq!(actions, [Action::SetWriter { node: None }]);
    assert_logged(&logs, "switchover from pg1 to pg2");
    assert!(matches!(h.m.phase(), Phase::Switchover { stage: SwitchoverStage::CatchingUp { .. }, .. }));
    h.now += ms(10);
    // The old primary's position after the block; the target has not got it yet.
    let (actions, _) = split(h.probe(PG1, primary(1, 2000)));
    assert!(actions.is_empty(), "{actions:?}");
    h.now += ms(10);
    let (actions, _) = split(h.probe(PG2, standby(1, 1900, Some(PG1))));
    assert!(actions.is_empty(), "{actions:?}");
    h.now += ms(10);
    let (actions, _) = split(h.probe(PG2, standby(1, 2000, Some(PG1))));
    assert_eq!(actions, [Action::Demote { node: PG1, primary: PG2 }]);
    let (actions, _) = split(h.done(Action::Demote { node: PG1, primary: PG2 }, Ok(())));
    assert_eq!(actions, [Action::Promote { node: PG2 }, Action::SetReaders { nodes: vec![PG3] }]);
    assert_eq!(h.state(PG2), NodeState::Promoting);
    let (actions, _) = split(h.done(Action::Promote { node: PG2 }, Ok(())));
    assert_eq!(
        actions,
        [
            Action::SetWriter { node: Some(PG2) },
            Action::Repoint { node: PG3, primary: PG2 },
            Action::SetSyncStandbys { on: PG2, count: 1, names: vec!["pg1".into(), "pg3".into()] },
            Action::Alert(Alert::SwitchoverDone { from: PG1, to: PG2 }),
            Action::SetReaders { nodes: vec![PG2] },
        ]
    );
    assert_eq!(h.m.view().nodes[PG1].fence, None, "a demoted primary is not fenced");
    assert_eq!(h.m.view().writer_timeline, Some(2));
}

#[test]
fn switchover_rejections() {
    let mut h = steady(3);
    h.probe(PG3, standby(1, 1000, None)); // not streaming from the writer
    for (to, needle) in [(PG1, "writer already"), (PG3, "does not stream"), (7, "no node #7")] {
        let (actions, logs) = split(h.ev(Event::Admin(AdminCommand::Switchover { to })));
        assert!(matches!(actions.as_slice(), [Action::Alert(Alert::SwitchoverRejected { .. })]), "{actions:?}");
        assert_logged(&logs, needle);
        assert_eq!(h.m.phase(), Phase::Steady);
    }
}

#[test]
fn switchover_catch_up_timeout_restores_the_writer() {
    let mut h = steady(3);
    h.ev(Event::Admin(AdminCommand::Switchover { to: PG2 }));
    // pg2 never gets pg1's last position.
    for _ in 0..50 {
        let (actions, _) = split(h.round(vec![primary(1, 2000), standby(1, 1500, Some(PG1)), standby(1, 2000, Some(PG1))]));
        assert!(actions.is_empty(), "{actions:?}");
    }
    let (actions, _) = split(h.round(vec![primary(1, 2000), standby(1, 1500, Some(PG1)), standby(1, 2000, Some(PG1))]));
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::SwitchoverAborted { from: PG1, to: PG2, reason: "the target did not catch up in time".into() }),
            Action::SetWriter { node: Some(PG1) },
        ]
    );
    assert_eq!(h.m.phase(), Phase::Steady);
}

#[test]
fn switchover_outside_steady_is_rejected() {
    let mut h = H::new(params(3));
    let (actions, _) = split(h.ev(Event::Admin(AdminCommand::Switchover { to: PG2 })));
    assert_eq!(actions, [Action::Alert(Alert::SwitchoverRejected { to: PG2, reason: "the phase is starting, not steady".into() })]);
}

// ----- clock and bookkeeping --------------------------------------------------------------------

#[test]
fn silence_counts_as_failure() {
    let mut h = steady(3);
    let stale = h.m.next_deadline().expect("a deadline");
    assert_eq!(stale, ms(1000) + ms(600));
    h.now = stale;
    let (actions, logs) = split(h.ev(Event::Tick));
    // Every node silent: standbys leave the readers, the writer has one failure.
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG1] }]);
    assert_logged(&logs, "pg2 is down");
    assert_eq!(h.m.view().nodes[PG1].consecutive_failures, 1);
}

/// The spin after a failover (issue: each pglb at 100 % of a CPU): `last_repoint` of the
/// re-pointed standby stayed in `next_deadline` after it had passed, so the daemon's
/// `sleep_until` returned at once, forever.
#[test]
fn after_a_failover_the_deadline_moves_on() {
    let mut h = steady(3);
    crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    h.done(Action::Promote { node: PG3 }, Ok(()));
    // pg2 follows pg3; pg1 stays dead. Every call checks next_deadline > now (H::ev).
    for _ in 0..40 {
        h.round(vec![down(), standby(2, 1200, Some(PG3)), primary(2, 1200)]);
        let d = h.m.next_deadline().expect("stale-probe deadlines");
        assert!(d > h.now - ms(200), "deadline {d:?} behind now {:?}", h.now);
    }
}

/// The same class of bug in WriterLost: a failover held back long after the detection time,
/// and a failed candidate's exclusion that has run out, must not leave deadlines in the past.
#[test]
fn a_long_blocked_writer_loss_does_not_spin() {
    let mut p = params(3);
    p.vrrp_enabled = true;
    let mut h = H::new(p);
    h.ev(Event::VrrpRole { master: true });
    h.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None)]);
    assert!(matches!(h.m.phase(), Phase::WriterLost { old: None, .. }));
    h.ev(Event::VrrpRole { master: false });
    for _ in 0..20 {
        h.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None)]);
    }
    assert_eq!(h.m.view().blocked, Some(Blocked::NotMaster));
}

#[test]
fn late_observations_are_ignored() {
    let mut h = steady(3);
    let late = Observation { node: PG2, at: ms(500), latency: ms(1), result: down() };
    let (actions, _) = split(h.ev(Event::Probe(late)));
    assert!(actions.is_empty());
    assert_eq!(h.state(PG2), NodeState::Up);
}

#[test]
fn view_reports_lag_and_states() {
    let mut h = steady(3);
    h.round(vec![primary(1, 5000), standby(1, 4000, Some(PG1)), standby(1, 5000, Some(PG1))]);
    let v = h.m.view();
    assert_eq!(v.nodes[PG2].lag_bytes, Some(1000));
    assert_eq!(v.nodes[PG3].lag_bytes, Some(0));
    assert_eq!(v.nodes[PG1].lag_bytes, None);
    assert_eq!(v.phase.as_str(), "steady");
    assert_eq!(v.nodes[PG1].state.as_str(), "up");
    assert_eq!(NodeState::NeedsRejoin.as_str(), "needs-rejoin");
    assert_eq!(v.quorum, (4, 4));
    assert!(v.vrrp_master);
}
