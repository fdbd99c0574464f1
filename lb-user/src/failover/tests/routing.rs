//! Rule 1 (the writer, at start and later, split brain, returning primaries) and rule 7 (readers).

use super::*;

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
