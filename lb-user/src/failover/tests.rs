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
            h.ev(Event::PeerReport { peer, report: PeerReport { timeline: 1, writer: None } });
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

// ----- rule 1: writer selection and split brain --------------------------------------------

#[test]
fn startup_waits_for_every_node_then_routes_the_primary() {
    let mut h = H::new(params(3));
    assert!(split(h.probe(PG1, primary(1, 1000))).0.is_empty());
    assert!(split(h.probe(PG2, standby(1, 1000, Some(PG1)))).0.is_empty());
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

/// A standby answering on a newer timeline while the writer is failing probes (not yet
/// declared down): the writer is history, its writes are refused at once, and it stays the old
/// writer the failover replaces.
#[test]
fn a_newer_timeline_on_a_standby_unroutes_a_debouncing_writer() {
    let mut h = steady(3);
    h.round(vec![down(), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    assert_eq!(h.m.writer(), Some(PG1), "one failed probe keeps the writer routed");
    let (actions, logs) = split(h.probe(PG3, standby(2, 1100, None)));
    assert!(actions.contains(&Action::SetWriter { node: None }), "{actions:?}");
    assert_logged(&logs, "writes refused: the writer pg1 is on an older timeline than 2");
    assert!(matches!(h.m.phase(), Phase::WriterLost { old: Some(PG1), .. }), "{:?}", h.m.phase());
}

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
    let last = crash_and_settle(&mut h, vec![standby(1, 1100, Some(PG1)), standby(1, 1100, Some(PG1))]);
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

/// Failover in two steps: the decision refuses writes and points the other standbys at the
/// candidate; once their positions are read again, the best is ranked again and promoted.
#[test]
fn crash_promotes_the_most_advanced_standby() {
    let mut h = steady(3);
    let last = crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    let (actions, logs) = split(last.clone());
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG3 }),
            Action::SetWriter { node: None },
            Action::Repoint { node: PG2, primary: PG3 },
            Action::Probe { node: PG3 },
        ]
    );
    assert_logged(&logs, "pg1 is down: 3 consecutive failed probes");
    assert_logged(&logs, "failover: pg3 is the candidate");
    assert!(matches!(h.m.phase(), Phase::Settling { old: Some(PG1), candidate: PG3, .. }));
    // Not before pg2's position is read after its re-point.
    let (actions, _) = split(h.probe(PG2, standby(1, 1000, None)));
    assert!(actions.is_empty(), "{actions:?}");
    let (actions, logs) = split(settle(&mut h, &last, vec![standby(1, 1000, Some(PG3)), standby(1, 1100, None)]));
    assert_eq!(actions, [Action::Probe { node: PG2 }, Action::SetReaders { nodes: vec![PG2] }, Action::Promote { node: PG3 }]);
    assert_logged(&logs, "failover: promoting pg3");
    assert!(matches!(h.m.phase(), Phase::FailingOver { old: Some(PG1), candidate: PG3, .. }));
    assert_eq!(h.state(PG3), NodeState::Promoting);
}

/// A standby that acknowledged more of the old writer's commits before its re-point (a
/// client of another load balancer, say) is ranked on its position read afterwards: the
/// promotion goes to it, not to the candidate chosen before.
#[test]
fn the_ranking_after_the_repoints_decides() {
    let mut h = steady(3);
    let last = crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    let (actions, _) = split(settle(&mut h, &last, vec![standby(1, 1200, Some(PG3)), standby(1, 1100, None)]));
    assert!(actions.contains(&Action::Promote { node: PG2 }), "{actions:?}");
}

#[test]
fn candidate_ties_break_on_priority_then_name() {
    let mut p = params(4);
    p.synchronous_count = 0;
    p.nodes[PG2].priority = 50;
    let mut h = H::new(p);
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let (actions, _) = split(crash_and_settle(&mut h, vec![standby(1, 1000, None); 3]));
    assert!(actions.contains(&Action::Promote { node: PG3 }), "pg3 and pg4 tie on priority 100; pg3 sorts first: {actions:?}");
}

#[test]
fn promotion_success_switches_writer_fences_old_repoints_and_sets_sync() {
    let mut h = steady(3);
    crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
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
    crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    let (actions, _) = split(h.probe(PG3, primary(2, 1100)));
    assert_eq!(actions[0], Action::SetWriter { node: Some(PG3) });
    assert_eq!(h.m.phase(), Phase::Steady);
    // The late report changes nothing.
    let (actions, _) = split(h.done(Action::Promote { node: PG3 }, Ok(())));
    assert!(actions.is_empty(), "{actions:?}");
}

/// A failed promotion's outcome is unknown (the server may have acted before the error):
/// no other standby is promoted until a probe shows the first one still a standby.
#[test]
fn promotion_failure_tries_the_next_candidate_once_the_first_is_seen_unpromoted() {
    let mut h = steady(3);
    crash_and_settle(&mut h, vec![standby(1, 1100, None), standby(1, 1100, None)]);
    let (actions, logs) = split(h.done(Action::Promote { node: PG2 }, Err("permission denied".into())));
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::PromoteFailed { node: PG2, error: "permission denied".into() }),
            Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::PromotionUnsettled { node: PG2 } }),
            Action::SetReaders { nodes: vec![PG2, PG3] },
        ]
    );
    assert_logged(&logs, "promoting pg2 failed: permission denied");
    let (actions, logs) = split(h.probe(PG2, standby(1, 1100, None)));
    assert_logged(&logs, "pg2 is still a standby on timeline 1: it was not promoted");
    assert_eq!(
        actions,
        [Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG3 }), Action::Repoint { node: PG2, primary: PG3 }, Action::Probe { node: PG3 }]
    );
    let (actions, _) = split(settle(&mut h, &actions, vec![standby(1, 1100, Some(PG3)), standby(1, 1100, None)]));
    assert_eq!(actions, [Action::Probe { node: PG2 }, Action::SetReaders { nodes: vec![PG2] }, Action::Promote { node: PG3 }]);
}

/// The first candidate turns out promoted after all (its report was lost): it is the writer,
/// and nobody else is promoted.
#[test]
fn a_failed_promotion_that_happened_after_all_is_adopted() {
    let mut h = steady(3);
    crash_and_settle(&mut h, vec![standby(1, 1100, None), standby(1, 1100, None)]);
    h.done(Action::Promote { node: PG2 }, Err("connection reset".into()));
    let (actions, _) = split(h.probe(PG2, primary(2, 1100)));
    assert!(!actions.iter().any(|a| matches!(a, Action::Promote { .. })), "{actions:?}");
    assert!(actions.contains(&Action::SetWriter { node: Some(PG2) }), "{actions:?}");
    assert_eq!(h.m.view().writer_timeline, Some(2));
}

#[test]
fn promotion_timeout_counts_as_failure() {
    let mut h = steady(3);
    crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
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
    let (actions, _) = split(crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1000, None)]));
    // A backup that lost the writer also says so for tracking.
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::NotMaster }),
            Action::SetWriter { node: None },
            Action::Track { writer_reachable: false }
        ]
    );
    let decided = h.ev(Event::VrrpRole { master: true });
    let (_, logs) = split(decided.clone());
    assert_logged(&logs, "vrrp master");
    let (actions, _) = split(settle(&mut h, &decided, vec![standby(1, 1000, None), standby(1, 1000, Some(PG2))]));
    assert!(actions.contains(&Action::Promote { node: PG2 }), "{actions:?}");
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

#[test]
fn no_quorum_means_no_failover_until_a_peer_is_heard() {
    let mut h = vrrp_master_of_three();
    // pg1 and pg3 gone: 1 (self) + pg2 = 2 of 5.
    let (actions, _) = split(crash_and_settle(&mut h, vec![standby(1, 1000, None), down()]));
    assert_eq!(
        actions,
        [Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::NoQuorum { votes: 2, members: 5 } }), Action::SetWriter { node: None }]
    );
    assert_eq!(h.m.view().quorum, (2, 5));
    // An advert is no vote (anyone can send one); the peer's authenticated report is.
    let (advert, _) = split(h.ev(Event::PeerHeard { peer: Ipv4Addr::new(172, 20, 0, 22) }));
    assert!(!advert.iter().any(|a| matches!(a, Action::Alert(Alert::FailoverStarted { .. }))), "{advert:?}");
    assert_eq!(h.m.view().quorum, (2, 5));
    let decided = h.ev(report(PEER, 1, None));
    assert!(decided.contains(&Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG2 })), "{decided:?}");
    h.ev(report(PEER, 1, None));
    let (actions, _) = split(settle(&mut h, &decided, vec![standby(1, 1000, None), down()]));
    assert!(actions.contains(&Action::Promote { node: PG2 }), "{actions:?}");
}

/// A writer that is down while no standby follows it may be being replaced by a load balancer
/// out of sight: while failover is blocked here, it gets no writes; one good probe as a
/// primary on the newest timeline routes it again.
#[test]
fn a_down_writer_nothing_follows_gets_writes_again_only_once_probed() {
    let mut h = vrrp_master_of_three();
    let (actions, logs) = split(crash_writer(&mut h, vec![standby(1, 1000, None), down()]));
    assert!(actions.contains(&Action::SetWriter { node: None }), "{actions:?}");
    assert_logged(&logs, "writes refused: the writer pg1 is down and no reachable standby streams from it");
    assert_eq!(h.m.writer(), None);
    let (actions, logs) = split(h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), down()]));
    assert_eq!(actions, [Action::SetWriter { node: Some(PG1) }]);
    assert_logged(&logs, "writer pg1 answers again: kept");
    assert_eq!(h.m.phase(), Phase::Steady);
}

/// Every node stops answering at once (this instance starved by a SYN flood, or cut off): no
/// quorum, so no failover; and as no standby answers to say it no longer follows the writer,
/// the writer stays routed, so its clients' established connections are not reset.
#[test]
fn a_writer_down_while_nothing_else_answers_stays_routed() {
    let mut h = vrrp_master_of_three();
    let (actions, logs) = split(crash_writer(&mut h, vec![down(), down()]));
    assert!(!actions.iter().any(|a| matches!(a, Action::SetWriter { .. } | Action::Promote { .. })), "{actions:?}");
    assert!(!logs.iter().any(|l| l.contains("writes refused")), "{logs:?}");
    assert_eq!(h.m.writer(), Some(PG1));
    let (actions, _) = split(h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]));
    assert!(!actions.iter().any(|a| matches!(a, Action::SetWriter { .. })), "{actions:?}");
    assert_eq!(h.m.writer(), Some(PG1));
}

/// Under a SYN flood the master's own probes fail in its congestion: it keeps the writer routed
/// and its VRRP priority (the VIP would take the flood to the peer and leave every established
/// connection behind); once the flood is over, probe results count again.
#[test]
fn under_a_flood_the_master_keeps_the_vip_and_the_writer() {
    let mut h = vrrp_master_of_three();
    h.ev(Event::Flood { active: true });
    let mut actions = crash_writer(&mut h, vec![standby(1, 1000, None), down()]);
    for _ in 0..10 {
        actions.extend(h.round(vec![down(), standby(1, 1000, None), down()]));
    }
    let (actions, _) = split(actions);
    assert!(!actions.iter().any(|a| matches!(a, Action::SetWriter { .. } | Action::Track { writer_reachable: false })), "{actions:?}");
    assert_eq!(h.m.writer(), Some(PG1));
    // The flood is over and pg1 still fails: the writer is unrouted and the priority lowered.
    let mut actions = h.ev(Event::Flood { active: false });
    for _ in 0..10 {
        actions.extend(h.round(vec![down(), standby(1, 1000, None), down()]));
    }
    let (actions, _) = split(actions);
    assert!(actions.contains(&Action::SetWriter { node: None }), "{actions:?}");
    assert!(actions.contains(&Action::Track { writer_reachable: false }), "{actions:?}");
}

#[test]
fn sync_guard_blocks_when_a_standby_that_may_hold_the_last_commit_is_unreachable() {
    let mut h = steady(4);
    // pg4 is down too: with ANY 1 over pg2..pg4 all three must be visible.
    let (actions, _) = split(crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1000, None), down()]));
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::SyncStandbysUnreachable { reachable: 2, needed: 3 } }),
            Action::SetWriter { node: None }
        ]
    );
    // pg4 comes back (three good probes): failover goes ahead, to the most advanced.
    let mut decided = Vec::new();
    for _ in 0..3 {
        decided.extend(h.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None), standby(1, 1050, None)]));
    }
    let (actions, _) = split(settle(&mut h, &decided, vec![standby(1, 1000, Some(PG4)), standby(1, 1000, Some(PG4)), standby(1, 1050, None)]));
    assert!(actions.contains(&Action::Promote { node: PG4 }), "{actions:?}");
}

#[test]
fn standby_beyond_the_lag_limit_is_never_a_candidate() {
    let mut h = steady(3);
    h.round(vec![primary(1, 10 * MIB), standby(1, 10 * MIB, Some(PG1)), standby(1, 10 * MIB, Some(PG1))]);
    // pg2 stays far behind, pg3 is close: pg3 despite the name order.
    let (actions, _) = split(crash_and_settle(&mut h, vec![standby(1, 7 * MIB, None), standby(1, 10 * MIB - 10, None)]));
    assert!(actions.contains(&Action::Promote { node: PG3 }), "{actions:?}");
}

#[test]
fn no_candidate_when_every_standby_lags() {
    let mut h = steady(3);
    h.round(vec![primary(1, 10 * MIB), standby(1, 10 * MIB, Some(PG1)), standby(1, 10 * MIB, Some(PG1))]);
    let (actions, _) = split(crash_and_settle(&mut h, vec![standby(1, 7 * MIB, None), standby(1, 8 * MIB, None)]));
    assert_eq!(actions, [Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::NoCandidate }), Action::SetWriter { node: None }]);
}

#[test]
fn nofailover_standby_ahead_blocks_the_failover() {
    let mut p = params(3);
    p.nodes[PG3].nofailover = true;
    let mut h = H::new(p);
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let (actions, _) = split(crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]));
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::CandidateBehind { candidate: PG2, ahead: PG3 } }),
            Action::SetWriter { node: None }
        ]
    );
}

#[test]
fn writer_in_recovery_refuses_writes() {
    let mut h = steady(3);
    let (actions, logs) = split(h.probe(PG1, standby(1, 1000, None)));
    // pg2 and pg3 still say they stream from pg1, a standby now (a cascade hides no primary,
    // and pg1's own position bounds theirs): failover starts; the promotion waits for the
    // positions read after the re-point.
    assert_eq!(
        actions,
        [
            Action::SetWriter { node: None },
            Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG2 }),
            Action::Repoint { node: PG3, primary: PG2 },
            Action::Probe { node: PG2 },
            Action::SetReaders { nodes: vec![PG1, PG2, PG3] },
        ]
    );
    assert_logged(&logs, "is in recovery now");
    assert!(matches!(h.m.phase(), Phase::Settling { candidate: PG2, .. }), "{:?}", h.m.phase());
}

#[test]
fn no_primary_at_all_fails_over_after_detection_time() {
    let mut h = H::new(params(3));
    h.round(vec![down(), standby(1, 1000, None), standby(1, 1100, None)]);
    assert!(matches!(h.m.phase(), Phase::WriterLost { old: None, .. }));
    h.round(vec![down(), standby(1, 1000, None), standby(1, 1100, None)]);
    h.round(vec![down(), standby(1, 1000, None), standby(1, 1100, None)]);
    let decided = h.round(vec![down(), standby(1, 1000, None), standby(1, 1100, None)]);
    let (actions, _) = split(decided.clone());
    assert_eq!(
        actions,
        [Action::Alert(Alert::FailoverStarted { from: None, candidate: PG3 }), Action::Repoint { node: PG2, primary: PG3 }, Action::Probe { node: PG3 }]
    );
    let (actions, _) = split(settle(&mut h, &decided, vec![standby(1, 1000, Some(PG3)), standby(1, 1100, None)]));
    assert_eq!(actions, [Action::Probe { node: PG2 }, Action::SetReaders { nodes: vec![PG2] }, Action::Promote { node: PG3 }]);
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
    crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
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
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG3] }, Action::Promote { node: PG2 }]);
    assert_eq!(h.state(PG2), NodeState::Promoting);
    let (actions, _) = split(h.done(Action::Promote { node: PG2 }, Ok(())));
    assert_eq!(
        actions,
        [
            Action::SetWriter { node: Some(PG2) },
            Action::Repoint { node: PG3, primary: PG2 },
            Action::SetSyncStandbys { on: PG2, count: 1, names: vec!["pg1".into(), "pg3".into()] },
            Action::Alert(Alert::SwitchoverDone { from: PG1, to: PG2, paused: ms(30) }),
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
    crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
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

// ----- issue: partial failures ------------------------------------------------------------------

/// Runs `rounds` probe rounds of the same results; returns every action (logs split off).
fn rounds(h: &mut H, n: usize, results: &[Result<NodeStatus, ProbeFailure>]) -> Vec<Action> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend(split(h.round(results.to_vec())).0);
    }
    out
}

/// (a) A switchover whose target's probe blips while the old primary is demoted used to abort
/// into "writer lost, no old writer", where the standbys cascading from the demoted node
/// looked like streaming from a hidden primary: failover blocked and no primary, forever.
#[test]
fn switchover_probe_blip_during_the_demote_still_ends_with_one_writer() {
    let mut h = steady(3);
    h.ev(Event::Admin(AdminCommand::Switchover { to: PG2 }));
    h.now += ms(10);
    h.probe(PG1, primary(1, 2000));
    h.now += ms(10);
    let (actions, _) = split(h.probe(PG2, standby(1, 2000, Some(PG1))));
    assert_eq!(actions, [Action::Demote { node: PG1, primary: PG2 }]);
    h.now += ms(100);
    h.probe(PG2, down()); // the blip
    let (actions, logs) = split(h.done(Action::Demote { node: PG1, primary: PG2 }, Ok(())));
    assert!(!actions.iter().any(|a| matches!(a, Action::Alert(Alert::SwitchoverAborted { .. }))), "{actions:?}");
    assert_logged(&logs, "waiting to promote pg2");
    // pg1 now a standby of pg2 (cascading), pg2 and pg3 cascading from pg1: nobody streams
    // from a primary. pg2 answers again.
    let after = [standby(1, 2000, Some(PG2)), standby(1, 2000, Some(PG1)), standby(1, 2000, Some(PG1))];
    let actions = rounds(&mut h, 5, &after);
    assert!(actions.contains(&Action::Promote { node: PG2 }), "{actions:?}");
    let (actions, _) = split(h.done(Action::Promote { node: PG2 }, Ok(())));
    assert!(actions.contains(&Action::SetWriter { node: Some(PG2) }), "{actions:?}");
    assert_eq!((h.m.phase(), h.m.writer()), (Phase::Steady, Some(PG2)));
}

/// (a), the target stays away past the switchover's deadline: the switchover aborts, and the
/// failover that follows still finds a writer once the target is back (the sync guard waits
/// for it: it may hold the last commits).
#[test]
fn switchover_target_lost_after_the_demote_fails_over_once_it_is_back() {
    let mut h = steady(3);
    h.ev(Event::Admin(AdminCommand::Switchover { to: PG2 }));
    h.now += ms(10);
    h.probe(PG1, primary(1, 2000));
    h.now += ms(10);
    h.probe(PG2, standby(1, 2000, Some(PG1)));
    h.probe(PG2, down());
    h.done(Action::Demote { node: PG1, primary: PG2 }, Ok(()));
    let cut = [standby(1, 2000, Some(PG2)), down(), standby(1, 2000, Some(PG1))];
    let actions = rounds(&mut h, 55, &cut);
    assert!(actions.iter().any(|a| matches!(a, Action::Alert(Alert::SwitchoverAborted { .. }))), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Promote { .. })), "no promotion while pg2 may hold commits: {actions:?}");
    assert!(matches!(h.m.phase(), Phase::WriterLost { old: Some(PG1), .. }), "{:?}", h.m.phase());
    let back = [standby(1, 2000, Some(PG2)), standby(1, 2000, Some(PG1)), standby(1, 2000, Some(PG1))];
    let actions = rounds(&mut h, 6, &back);
    let promoted: Vec<&Action> = actions.iter().filter(|a| matches!(a, Action::Promote { .. })).collect();
    assert_eq!(promoted, [&Action::Promote { node: PG2 }], "one promotion, of the most advanced, by priority then name");
}

/// (b) A restart used to forget fences and the timeline: a fresh machine adopts an old
/// primary on timeline 1 when the real writer (timeline 2) is out of sight. A machine restored
/// from the state file fences it instead and routes nobody.
#[test]
fn a_restart_with_the_state_file_never_adopts_a_stale_primary() {
    let mut h = steady(3);
    crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    let actions = h.done(Action::Promote { node: PG3 }, Ok(()));
    let Some(Action::Persist(durable)) = actions.first() else { panic!("a failover persists first: {actions:?}") };
    assert_eq!(durable.writer.as_deref(), Some("pg3"));
    assert_eq!(durable.timeline, 2);
    assert_eq!(durable.fences, [DurableFence { node: "pg1".into(), reason: "replaced".into(), timeline: 1, writer: Some("pg3".into()) }]);
    // The hazard, without memory: pg1 restarted without a rejoin, pg2 and pg3 out of sight (a
    // standby seen on timeline 2 would have told even a fresh machine that timeline 1 is over).
    let stale = vec![primary(1, 1500), down(), down()];
    let mut fresh = H::new(params(3));
    fresh.round(stale.clone());
    assert_eq!(fresh.m.writer(), Some(PG1), "without the state file the stale primary is adopted");
    // With it.
    let mut restored = H { m: Machine::restore(params(3), durable), now: ms(1000) };
    let (actions, logs) = split(restored.round(stale));
    assert_logged(&logs, "state file: last writer pg3, timeline 2, fenced: pg1");
    assert!(actions.contains(&Action::SetWriter { node: None }), "{actions:?}");
    assert_eq!(restored.m.writer(), None);
    assert_eq!(restored.state(PG1), NodeState::NeedsRejoin);
    assert_eq!(restored.m.view().writer_timeline, Some(2), "the timeline never goes backwards");
    // pg3 comes back: it is the writer again.
    let (actions, _) = split(restored.round(vec![primary(1, 1500), down(), primary(2, 1100)]));
    assert!(actions.contains(&Action::SetWriter { node: Some(PG3) }), "{actions:?}");
}

/// (b) Even without a state file entry for it, a primary below the highest timeline this
/// instance routed is fenced, and the writer's timeline never goes down.
#[test]
fn a_primary_below_the_highest_routed_timeline_is_fenced() {
    let durable = Durable { writer: Some("pg2".into()), timeline: 5, fences: vec![], promoting: None };
    let mut h = H { m: Machine::restore(params(3), &durable), now: ms(1000) };
    let (actions, _) = split(h.round(vec![primary(4, 100), standby(4, 100, Some(PG1)), down()]));
    assert!(
        actions.contains(&Action::Fence { node: PG1, reason: FenceReason::OlderTimeline { timeline: 4, writer_timeline: 5 } }),
        "{actions:?}"
    );
    assert_eq!(h.m.writer(), None);
}

/// (b) A promotion whose outcome a crash hid: until the promoted node is seen, no primary on
/// the old timeline is adopted; once it is seen still a standby, the old writer is fine.
#[test]
fn a_promotion_in_flight_at_a_restart_holds_the_old_timeline_back() {
    let durable = Durable {
        writer: Some("pg1".into()),
        timeline: 1,
        fences: vec![],
        promoting: Some(DurablePromotion { node: "pg2".into(), from_timeline: 1 }),
    };
    let mut h = H { m: Machine::restore(params(3), &durable), now: ms(1000) };
    let (actions, _) = split(h.round(vec![primary(1, 1000), down(), standby(1, 1000, Some(PG1))]));
    assert_eq!(h.m.writer(), None, "pg2 may be a primary on timeline 2 now: {actions:?}");
    let (actions, logs) = split(h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]));
    assert_logged(&logs, "pg2 is still a standby on timeline 1: it was not promoted");
    assert!(actions.contains(&Action::SetWriter { node: Some(PG1) }), "{actions:?}");
}

/// Persist is the first action whenever the durable state changes, and only then.
#[test]
fn persist_is_write_ahead_and_only_on_change() {
    let mut h = H::new(params(3));
    let actions = h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    // The first answer on timeline 1 is durable at once; the writer when it is chosen.
    let persisted: Vec<&Action> = actions.iter().filter(|a| matches!(a, Action::Persist(_))).collect();
    assert_eq!(
        persisted,
        [
            &Action::Persist(Durable { writer: None, timeline: 1, fences: vec![], promoting: None }),
            &Action::Persist(Durable { writer: Some("pg1".into()), timeline: 1, fences: vec![], promoting: None })
        ]
    );
    let actions = h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    assert!(!actions.iter().any(|a| matches!(a, Action::Persist(_))), "nothing changed: {actions:?}");
    // The promotion is durable before the Promote goes out.
    let actions = crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    let persisted = actions.iter().position(|a| matches!(a, Action::Persist(d) if d.promoting == Some(DurablePromotion { node: "pg3".into(), from_timeline: 1 })));
    let promoted = actions.iter().position(|a| *a == Action::Promote { node: PG3 });
    assert!(matches!((persisted, promoted), (Some(d), Some(p)) if d < p), "the promotion must be persisted before the Promote: {actions:?}");
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

/// (c) A VRRP backup observes: it routes its own map (so a takeover forwards at once) but
/// never re-points a standby, however long it looks misdirected.
#[test]
fn a_backup_never_repoints() {
    let mut h = H::new(vrrp_params(3));
    h.ev(Event::VrrpRole { master: false });
    for _ in 0..40 {
        let (actions, _) = split(round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, None)]));
        assert!(!actions.iter().any(|a| matches!(a, Action::Repoint { .. })), "{actions:?}");
    }
    assert_eq!(h.m.writer(), Some(PG1), "the backup still routes the writer in its own map");
    // The same view as master re-points after the grace.
    h.ev(Event::VrrpRole { master: true });
    let mut all = Vec::new();
    for _ in 0..20 {
        all.extend(split(round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, None)])).0);
    }
    assert!(all.contains(&Action::Repoint { node: PG3, primary: PG1 }), "{all:?}");
}

/// (c) A backup that finishes a promotion it started as master leaves re-pointing to the new
/// master.
#[test]
fn a_promotion_finished_as_backup_repoints_nothing() {
    let mut h = master_h(vrrp_params(3));
    round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let mut decided = Vec::new();
    for _ in 0..3 {
        decided = round_with_peer(&mut h, vec![down(), standby(1, 1000, None), standby(1, 1100, None)]);
    }
    settle(&mut h, &decided, vec![standby(1, 1000, Some(PG3)), standby(1, 1100, None)]);
    assert!(matches!(h.m.phase(), Phase::FailingOver { candidate: PG3, .. }), "{:?}", h.m.phase());
    h.ev(Event::VrrpRole { master: false });
    let (actions, logs) = split(h.done(Action::Promote { node: PG3 }, Ok(())));
    assert!(!actions.iter().any(|a| matches!(a, Action::Repoint { .. } | Action::SetSyncStandbys { .. })), "{actions:?}");
    assert_logged(&logs, "re-pointing is left to the master");
    assert_eq!(h.m.writer(), Some(PG3));
}

/// (d) With `ANY 2` over seven nodes, a fenced node is still listed in
/// synchronous_standby_names and may hold the last commit: the guard counts it. Here pg6 and
/// the fenced pg7 are out of sight; with pg1 gone only 4 of the 6 listed standbys are visible,
/// and 5 are needed (the old guard counted 5 unfenced others, needed 4, and promoted).
#[test]
fn the_sync_guard_counts_fenced_standbys() {
    let mut p = params(7);
    p.synchronous_count = 2;
    let mut h = H::new(p);
    let healthy = |pg7: Result<NodeStatus, ProbeFailure>| {
        let mut v = vec![primary(1, 1000)];
        v.extend((0..5).map(|_| standby(1, 1000, Some(PG1))));
        v.push(pg7);
        v
    };
    h.round(healthy(standby(1, 1000, Some(PG1))));
    // pg7 turns primary on the writer's timeline (a restored backup): fenced, split brain.
    let (actions, _) = split(h.round(healthy(primary(1, 1000))));
    assert!(actions.iter().any(|a| matches!(a, Action::Fence { node: 6, .. })), "{actions:?}");
    let mut last = Vec::new();
    for _ in 0..4 {
        let mut v = vec![down()];
        v.extend((0..4).map(|_| standby(1, 1000, None)));
        v.extend([down(), down()]);
        last = split(h.round(v)).0;
    }
    assert!(!last.iter().any(|a| matches!(a, Action::Promote { .. })), "{last:?}");
    assert_eq!(h.m.view().blocked, Some(Blocked::SyncStandbysUnreachable { reachable: 4, needed: 5 }));
}

/// (e) Two masters that cannot hear each other: one that sees only part of the cluster does
/// not fail over, because the other may see a standby further ahead and promote that one.
#[test]
fn a_master_with_no_peer_heard_fails_over_only_with_the_whole_cluster_in_view() {
    let mut p = vrrp_params(5);
    p.synchronous_count = 0; // asynchronous: the sync guard would not stop it
    let mut a = master_h(p.clone());
    let mut b = master_h(p);
    let mut healthy = vec![primary(1, 1000)];
    healthy.extend((0..4).map(|_| standby(1, 1000, Some(PG1))));
    a.round(healthy.clone());
    b.round(healthy);
    // The peer is silent (VRRP cut between the two). pg1 dies. A cannot see pg5; B sees all,
    // pg5 ahead. Both have quorum (themselves and 4 of 7 members).
    let mut a_actions = Vec::new();
    let mut b_actions = Vec::new();
    // Detection takes 3 rounds; settling (no re-point reported done) ends at its deadline 3
    // rounds later.
    for _ in 0..7 {
        a_actions.extend(split(a.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None), standby(1, 1000, None), down()])).0);
        let b_view = vec![down(), standby(1, 1000, None), standby(1, 1000, None), standby(1, 1000, None), standby(1, 1100, None)];
        b_actions.extend(split(b.round(b_view)).0);
    }
    assert!(!a_actions.iter().any(|x| matches!(x, Action::Promote { .. })), "{a_actions:?}");
    assert_eq!(a.m.view().blocked, Some(Blocked::PartialView { unseen: 4 }));
    assert!(b_actions.contains(&Action::Promote { node: 4 }), "{b_actions:?}");
}

/// (e) Two masters with the same view rank the same candidate, whatever order their probes
/// came in, and only once positions stopped moving.
#[test]
fn two_masters_with_the_same_view_promote_the_same_node() {
    let p = vrrp_params(3);
    let mut a = master_h(p.clone());
    let mut b = master_h(p);
    let healthy = vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))];
    a.round(healthy.clone());
    b.round(healthy);
    let mut a_actions = Vec::new();
    let mut b_actions = Vec::new();
    // pg1 dies while pg3 still receives its last WAL: when A's third failed probe of pg1
    // completes the detection, A's latest probe of pg3 says 1150 (up from 1100; final 1300,
    // ahead of pg2). B's probes of pg3 all came after and say 1300.
    for r in 0..7 {
        let pg3 = match r {
            0 => 1100,
            1 => 1150,
            _ => 1300,
        };
        a_actions.extend(split(a.round(vec![down(), standby(1, 1200, None), standby(1, pg3, None)])).0);
        b_actions.extend(split(b.round(vec![down(), standby(1, 1200, None), standby(1, 1300, None)])).0);
    }
    let promoted = |v: &[Action]| v.iter().filter_map(|x| if let Action::Promote { node } = x { Some(*node) } else { None }).collect::<Vec<_>>();
    assert_eq!(promoted(&a_actions), [PG3]);
    assert_eq!(promoted(&b_actions), [PG3]);
}

/// Tracking: the master cut off from the writer (which the standbys still stream from) holds
/// the VIP for `track_hold`, then says it does not reach the writer (its VRRP priority drops
/// and a peer that reaches the writer takes the VIP); it says so again when it heals.
#[test]
fn a_master_cut_from_the_writer_lowers_its_priority_after_the_hold() {
    let mut h = master_h(vrrp_params(3));
    let (actions, _) = split(round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]));
    assert!(actions.contains(&Action::Track { writer_reachable: true }), "{actions:?}");
    let cut = vec![down(), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))];
    let mut tracked = Vec::new();
    for _ in 0..6 {
        let at = h.now;
        for a in split(round_with_peer(&mut h, cut.clone())).0 {
            if let Action::Track { writer_reachable } = a {
                tracked.push((at, writer_reachable));
            }
        }
        // The hold is a deadline of its own: a tick between probes.
        if let Some(d) = h.m.next_deadline().filter(|&d| d < h.now + ms(200)) {
            let back = h.now;
            h.now = d;
            for a in split(h.ev(Event::Tick)).0 {
                if let Action::Track { writer_reachable } = a {
                    tracked.push((d, writer_reachable));
                }
            }
            h.now = back.max(d);
        }
    }
    assert_eq!(tracked.len(), 1, "{tracked:?}");
    assert!(!tracked[0].1);
    assert_eq!(h.m.view().blocked, Some(Blocked::StandbyStreaming { standby: PG2 }));
    assert!(h.m.view().writer_reachable == Some(false));
    // Healed.
    let mut healed = Vec::new();
    for _ in 0..2 {
        healed.extend(split(round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))])).0);
    }
    assert!(healed.contains(&Action::Track { writer_reachable: true }), "{healed:?}");
}

/// Tracking: a crash the master fails over from never lowers its priority (nothing flips
/// while it promotes), and the promoted writer is reachable.
#[test]
fn a_crash_failover_keeps_the_masters_priority() {
    let mut h = master_h(vrrp_params(3));
    round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let mut all = Vec::new();
    let mut decided = Vec::new();
    for _ in 0..3 {
        decided = round_with_peer(&mut h, vec![down(), standby(1, 1000, None), standby(1, 1100, None)]);
        all.extend(split(decided.clone()).0);
    }
    all.extend(split(settle(&mut h, &decided, vec![standby(1, 1000, Some(PG3)), standby(1, 1100, None)])).0);
    all.extend(split(h.done(Action::Promote { node: PG3 }, Ok(()))).0);
    assert!(all.contains(&Action::Promote { node: PG3 }));
    assert!(!all.iter().any(|a| matches!(a, Action::Track { writer_reachable: false })), "{all:?}");
}

fn rejoin_params() -> Params {
    let mut p = params(3);
    p.rejoin = true;
    p
}

/// Self-healing: a replaced primary that answers again is rejoined by the master, once per
/// fence; a failure is retried after the backoff, doubling; success waits for the probes to
/// lift the fence.
#[test]
fn a_returning_former_primary_is_rejoined_once_with_backoff_on_failure() {
    let mut h = H::new(rejoin_params());
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    h.done(Action::Promote { node: PG3 }, Ok(()));
    let back = [primary(1, 1000), standby(2, 1100, Some(PG3)), primary(2, 1200)];
    let actions = rounds(&mut h, 4, &back);
    let rejoins: Vec<&Action> = actions.iter().filter(|a| matches!(a, Action::Rejoin { .. })).collect();
    assert_eq!(rejoins, [&Action::Rejoin { node: PG1, primary: PG3 }], "once pg1 is up (after up_after probes)");
    let (actions, logs) = split(h.done(Action::Rejoin { node: PG1, primary: PG3 }, Err("pg_rewind failed".into())));
    assert_eq!(
        actions,
        [Action::Alert(Alert::RejoinFailed { node: PG1, error: "pg_rewind failed".into(), attempt: 1, retry_in: Duration::from_secs(10) })]
    );
    assert_logged(&logs, "it stays fenced");
    assert_eq!(h.state(PG1), NodeState::NeedsRejoin);
    let actions = rounds(&mut h, 45, &back); // 9 s
    assert!(!actions.iter().any(|a| matches!(a, Action::Rejoin { .. })), "not before the backoff: {actions:?}");
    let actions = rounds(&mut h, 6, &back);
    assert!(actions.contains(&Action::Rejoin { node: PG1, primary: PG3 }), "{actions:?}");
    let (actions, _) = split(h.done(Action::Rejoin { node: PG1, primary: PG3 }, Err("again".into())));
    assert!(
        actions.contains(&Action::Alert(Alert::RejoinFailed { node: PG1, error: "again".into(), attempt: 2, retry_in: Duration::from_secs(20) })),
        "{actions:?}"
    );
    let actions = rounds(&mut h, 105, &back);
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::Rejoin { .. })).count(), 1);
    let (actions, _) = split(h.done(Action::Rejoin { node: PG1, primary: PG3 }, Ok(())));
    assert_eq!(actions, [Action::Alert(Alert::RejoinDone { node: PG1, attempt: 3 })]);
    let actions = rounds(&mut h, 20, &back);
    assert!(!actions.iter().any(|a| matches!(a, Action::Rejoin { .. })), "once per fence: {actions:?}");
    // It streams on timeline 2: the fence lifts.
    rounds(&mut h, 1, &[standby(2, 1200, Some(PG3)), standby(2, 1200, Some(PG3)), primary(2, 1200)]);
    assert_eq!(h.m.view().nodes[PG1].fence, None);
}

/// Only the master rejoins, and never a split-brain primary (its writes would be rewound).
#[test]
fn rejoin_is_the_masters_and_never_for_a_split_brain() {
    let mut p = rejoin_params();
    p.vrrp_enabled = true;
    let mut h = H::new(p);
    h.ev(Event::VrrpRole { master: false });
    h.round(vec![primary(2, 1000), standby(2, 1000, Some(PG1)), standby(2, 1000, Some(PG1))]);
    let actions = rounds(&mut h, 5, &[primary(2, 1000), standby(2, 1000, Some(PG1)), primary(1, 900)]);
    assert!(actions.iter().any(|a| matches!(a, Action::Fence { node: PG3, .. })), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Rejoin { .. })), "a backup: {actions:?}");
    let mut actions = split(h.ev(Event::VrrpRole { master: true })).0;
    actions.extend(rounds(&mut h, 2, &[primary(2, 1000), standby(2, 1000, Some(PG1)), primary(1, 900)]));
    assert!(actions.contains(&Action::Rejoin { node: PG3, primary: PG1 }), "the master: {actions:?}");
    let mut sb = H::new(rejoin_params());
    sb.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let actions = rounds(&mut sb, 5, &[primary(1, 1000), primary(1, 1000), standby(1, 1000, Some(PG1))]);
    assert!(actions.iter().any(|a| matches!(a, Action::Fence { node: PG2, reason: FenceReason::SplitBrain { .. } })));
    assert!(!actions.iter().any(|a| matches!(a, Action::Rejoin { .. })), "split brain: {actions:?}");
}

// ----- peer timelines ----------------------------------------------------------------------

const PEER: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 22);

fn report(peer: Ipv4Addr, timeline: u32, writer: Option<&str>) -> Event {
    Event::PeerReport { peer, report: PeerReport { timeline, writer: writer.map(str::to_owned) } }
}

/// What a machine reports: its floor, and the writer only while it routes and reaches it.
#[test]
fn the_report_names_the_writer_only_while_it_is_reached() {
    let mut h = steady(3);
    assert_eq!(h.m.report(), PeerReport { timeline: 1, writer: Some("pg1".into()) });
    h.round(vec![down(), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    assert_eq!(h.m.report(), PeerReport { timeline: 1, writer: None }, "one failed probe: not reached");
    assert_eq!(H::new(params(3)).m.report(), PeerReport { timeline: 0, writer: None }, "nothing known yet");
}

/// The VIP holder's peer was cut from the writer (its priority lowered, the holder kept the
/// VIP and the writer); then the two lose each other (a two-master split) and the writer
/// loses its standbys. The peer, master now, does not promote: the holder's last word was that
/// it reaches the writer this one had lost, so the writer is alive and may take writes.
#[test]
fn a_writer_the_silent_peer_last_reached_is_not_failed_over() {
    let mut p = vrrp_params(3);
    p.synchronous_count = 0;
    let mut h = H::new(p);
    h.ev(Event::VrrpRole { master: false });
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    h.ev(report(PEER, 1, Some("pg1")));
    // Cut from pg1 here; the peer still reaches it and says so.
    for _ in 0..4 {
        h.ev(Event::PeerHeard { peer: PEER });
        h.ev(report(PEER, 1, Some("pg1")));
        h.round(vec![down(), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    }
    // The link to the peer goes; this one is master; the standbys lose pg1 too.
    h.ev(Event::VrrpRole { master: true });
    let mut all = Vec::new();
    for _ in 0..10 {
        all.extend(split(h.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None)])).0);
    }
    assert!(!all.iter().any(|a| matches!(a, Action::Promote { .. } | Action::Alert(Alert::FailoverStarted { .. }))), "{all:?}");
    assert_eq!(h.m.view().blocked, Some(Blocked::PeerReachesWriter { peer: PEER }));
    // The peer is heard again and has lost pg1 too: failover goes on.
    h.ev(Event::PeerHeard { peer: PEER });
    let (actions, _) = split(h.ev(report(PEER, 1, None)));
    assert!(actions.contains(&Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG2 })), "{actions:?}");
}

/// A peer that reached the writer while this instance did too, and then went silent (killed),
/// blocks nothing: the writer failing afterwards is failed over.
#[test]
fn a_peer_killed_while_both_reached_the_writer_blocks_nothing() {
    let mut p = vrrp_params(3);
    p.synchronous_count = 0;
    let mut h = master_h(p);
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    h.ev(report(PEER, 1, Some("pg1")));
    let (actions, _) = split(crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1000, None)]));
    assert!(actions.contains(&Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG2 })), "{actions:?}");
}

/// A load balancer restarted from a state file older than a promotion its peer made (it was
/// down meanwhile) waits for the peer's report before choosing a writer. The peer's timeline
/// is a hint: the old primary, back on the old timeline, is held back (not fenced, nothing
/// written) while the peer says it; a probe of a node on the new timeline makes it a fact.
#[test]
fn a_restart_hears_the_peers_timeline_before_choosing() {
    let p = vrrp_params(3);
    let durable = Durable { writer: Some("pg1".into()), timeline: 1, fences: vec![], promoting: None };
    let mut h = H { m: Machine::restore(p, &durable), now: ms(1000) };
    h.ev(Event::VrrpRole { master: true });
    // pg1 is back on timeline 1; pg2 (promoted to timeline 2 by the peer) is out of sight; pg3
    // never followed it.
    let stale = vec![primary(1, 1500), down(), standby(1, 1400, None)];
    let (actions, _) = split(h.round(stale.clone()));
    assert!(!actions.iter().any(|a| matches!(a, Action::SetWriter { .. })), "decided before hearing the peer: {actions:?}");
    assert_eq!(h.m.phase(), Phase::Starting);
    let all = h.ev(report(PEER, 2, None));
    assert!(!all.iter().any(|a| matches!(a, Action::Persist(_))), "a peer's timeline is never written down: {all:?}");
    let (actions, logs) = split(all);
    assert_logged(&logs, "peer 172.20.0.22 reports timeline 2, newer than any seen here (1)");
    assert!(actions.contains(&Action::SetWriter { node: None }), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Fence { .. })), "held back, not fenced: {actions:?}");
    assert_eq!(h.m.view().writer_timeline, Some(1), "the floor is what probes saw");
    assert_eq!(h.m.view().timeline_hint, Some((2, PEER)));
    assert_eq!(h.m.view().peer_reports, [Some(PeerReport { timeline: 2, writer: None })]);
    h.ev(report(PEER, 2, None));
    h.round(stale);
    assert_eq!(h.m.writer(), None, "the stale primary gets no writes while the peer says timeline 2");
    // pg2 comes into sight on timeline 2: a fact now; pg1 is fenced.
    h.ev(report(PEER, 2, Some("pg2")));
    let (actions, _) = split(h.round(vec![primary(1, 1500), primary(2, 2000), standby(2, 2000, Some(PG2))]));
    assert!(actions.iter().any(|a| matches!(a, Action::Fence { node: PG1, reason: FenceReason::OlderTimeline { .. } })), "{actions:?}");
    assert_eq!(h.m.writer(), Some(PG2));
    assert_eq!(h.m.durable().timeline, 2);
}

/// A key holder's mistake costs seconds, not the cluster: a peer's report of a timeline no
/// probe confirms holds the writer's writes back only while the peer keeps saying it; nothing
/// is fenced or written, and the writer is routed again once the report grows old.
#[test]
fn a_peers_unconfirmed_timeline_holds_writes_back_only_while_it_is_said() {
    let mut h = master_h(vrrp_params(3));
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    assert_eq!(h.m.writer(), Some(PG1));
    let (actions, logs) = split(h.ev(report(Ipv4Addr::new(10, 0, 0, 9), 7, None)));
    assert!(actions.is_empty(), "{actions:?}");
    assert_logged(&logs, "report from 10.0.0.9, not a configured peer: ignored");
    let (actions, _) = split(h.ev(report(PEER, 1, None)));
    assert!(actions.is_empty(), "the same timeline changes nothing: {actions:?}");
    let all = h.ev(report(PEER, 99, None));
    assert!(!all.iter().any(|a| matches!(a, Action::Persist(_) | Action::Fence { .. })), "{all:?}");
    let (actions, logs) = split(all);
    assert_eq!(actions, [Action::SetWriter { node: None }], "{actions:?}");
    assert_logged(&logs, "writes held back: peer 172.20.0.22 reports timeline 99");
    let healthy = vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))];
    let (actions, _) = split(h.round(healthy.clone()));
    assert!(actions.is_empty(), "still held: the report is 200 ms old: {actions:?}");
    // Past the peer timeout (361 ms) with no new report saying it, the hint lapses.
    h.now += ms(200);
    let (actions, _) = split(h.ev(Event::Tick));
    assert_eq!(actions, [Action::SetWriter { node: Some(PG1) }], "{actions:?}");
    assert_eq!(h.m.phase(), Phase::Steady);
    assert_eq!(h.m.durable().timeline, 1, "nothing of timeline 99 was written down");
    assert_eq!(h.m.view().timeline_hint, None);
}

/// A peer heard (its adverts) but whose reports do not arrive keeps a starting instance from
/// deciding: it might know a promotion this one did not see.
#[test]
fn a_starting_instance_waits_for_the_report_of_every_peer_it_hears() {
    let healthy = vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))];
    let mut h = H { m: Machine::new(vrrp_params(3)), now: ms(1000) };
    for _ in 0..20 {
        h.ev(Event::PeerHeard { peer: PEER });
        h.round(healthy.clone());
    }
    assert_eq!(h.m.phase(), Phase::Starting, "an advert is heard every round, a report never");
    assert!(!h.m.ready());
    assert_eq!(h.m.writer(), None);
    h.ev(report(PEER, 1, Some("pg1")));
    assert_eq!(h.m.phase(), Phase::Steady);
    assert!(h.m.ready());
    assert_eq!(h.m.writer(), Some(PG1));
}

/// A silent peer (dead, or the link cut) delays the start by one master-down interval at most.
#[test]
fn a_silent_peer_delays_the_start_by_the_master_down_interval_at_most() {
    let p = vrrp_params(3);
    let wait = p.peer_timeout;
    let mut h = H { m: Machine::new(p), now: ms(1000) };
    let healthy = vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))];
    h.round(healthy.clone());
    assert_eq!(h.m.phase(), Phase::Starting);
    let started = h.now - ms(200);
    h.now = started + wait;
    h.ev(Event::Tick);
    assert_eq!(h.m.writer(), Some(PG1));
    assert_eq!(h.m.phase(), Phase::Steady);
}

/// A restart keeps the previous run's routing (the pinned map) while the machine waits for
/// every node and a peer's report — but only while nothing says the last writer is wrong: its
/// first failed probe refuses writes at once.
#[test]
fn a_restart_refuses_writes_as_soon_as_the_last_writer_fails() {
    let durable = Durable { writer: Some("pg1".into()), timeline: 1, fences: vec![], promoting: None };
    let mut h = H { m: Machine::restore(vrrp_params(3), &durable), now: ms(1000) };
    let (actions, _) = split(h.probe(PG2, standby(1, 1000, Some(PG1))));
    assert!(actions.is_empty(), "nothing against pg1 yet: {actions:?}");
    let (actions, logs) = split(h.probe(PG1, down()));
    assert_eq!(actions, [Action::SetWriter { node: None }]);
    assert_logged(&logs, "startup: writes refused until the writer is chosen: pg1, the last writer, is not usable now");
    assert_eq!(h.m.phase(), Phase::Starting, "still waiting for a peer's report");
}
