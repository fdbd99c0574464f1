//! Trust (issue 18): waking humble after a restart or a stall, no promotion without its record.

use super::*;

/// A restarted instance's data plane still routes what the last run routed (the pinned map);
/// the machine is told (`set_routed`), so that a newer timeline seen before it decides
/// unroutes the stale writer. Before, the machine believed it routed nothing and never sent
/// the `SetWriter { None }`, while the map kept the old writer.
#[test]
fn a_restart_unroutes_the_pinned_writer_when_a_newer_timeline_shows() {
    let durable = Durable { writer: Some("pg1".into()), timeline: 1, fences: vec![], promoting: None, maintenance: None, marks: vec![] };
    let mut m = Machine::restore(params(3), &durable);
    m.set_routed(Some(PG1));
    let mut h = H { m, now: ms(1000) };
    assert_eq!(h.m.writer(), Some(PG1), "the machine knows what the pinned map routes");
    assert!(!h.m.ready());
    // pg2 answers first: a primary on timeline 2 (promoted while this instance was down).
    let (actions, logs) = split(h.probe(PG2, primary(2, 5000)));
    assert_eq!(actions, [Action::SetWriter { node: None }], "{actions:?}");
    assert_logged(&logs, "writes refused: the writer pg1 is on an older timeline than 2");
    // Once every node answered, the machine decides: pg2 the writer, pg1 fenced.
    let mut actions = split(h.probe(PG1, primary(1, 3000))).0;
    actions.extend(split(h.probe(PG3, standby(2, 5000, Some(PG2)))).0);
    assert!(actions.iter().any(|a| matches!(a, Action::Fence { node: PG1, .. })), "{actions:?}");
    assert_eq!(h.m.writer(), Some(PG2));
}

/// A stall (the daemon froze longer than its lease): probes taken before it are stale, peer
/// reports forgotten; the machine decides again from `Starting` and is not ready until fresh
/// probes of every node and a fresh report of its peer arrived. What is durable stays.
#[test]
fn a_stall_wakes_the_machine_humble() {
    let mut h = master_h(vrrp_params(3));
    h.ev(report(PEER, 1, Some("pg1")));
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    assert!(h.m.ready());
    let before_stall = h.now;
    h.now += ms(5000);
    let (actions, logs) = split(h.ev(Event::Stalled));
    assert!(actions.is_empty(), "nothing decided on what was seen before: {actions:?}");
    assert_logged(&logs, "the main loop stood still longer than the lease");
    assert_eq!(h.m.phase(), Phase::Starting);
    assert!(!h.m.ready());
    assert_eq!(h.m.writer(), Some(PG1), "the data plane still routes pg1; new flows wait for the lease");
    // A probe started before the stall and answered after it: stale, ignored.
    let late = Observation { node: PG1, at: before_stall, latency: ms(1), result: primary(1, 1000) };
    h.ev(Event::Probe(late));
    assert_eq!(h.m.view().nodes[PG1].state, NodeState::Unknown, "a probe from before the stall counts for nothing");
    // Fresh probes of every node: still waiting for the peer, heard (its adverts) but silent.
    h.ev(Event::PeerHeard { peer: PEER });
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    assert!(!h.m.ready(), "the peer is heard but has not reported since the stall");
    h.ev(report(PEER, 1, Some("pg1")));
    assert!(h.m.ready());
    assert_eq!(h.m.phase(), Phase::Steady);
}

/// A promotion waits for the write that records it; when that write fails the promotion is not
/// made, failover is held back while writes fail (tried again every RECORD_RETRY), and it goes
/// on once a write succeeds. Before, a failed write was logged and forgotten and the promotion
/// went ahead with no record.
#[test]
fn no_promotion_without_its_record() {
    let mut h = H::new(params(3));
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    // The writer crashes; failover decides pg2 (raw: nothing answers the Persists yet).
    let mut decided = Vec::new();
    for _ in 0..3 {
        for (n, r) in [(PG1, down()), (PG2, standby(1, 1000, None)), (PG3, standby(1, 1000, None))] {
            let obs = Observation { node: n, at: h.now, latency: ms(1), result: r };
            decided.extend(h.raw(Event::Probe(obs)));
        }
        h.now += ms(200);
    }
    assert!(decided.contains(&Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG2 })), "{decided:?}");
    h.now += ms(30);
    for a in decided.clone() {
        if let Action::Repoint { .. } = a {
            h.raw(Event::ActionDone { action: a, result: Ok(()) });
        }
    }
    let mut settled = Vec::new();
    for (n, r) in [(PG1, down()), (PG2, standby(1, 1000, None)), (PG3, standby(1, 1000, Some(PG2)))] {
        let obs = Observation { node: n, at: h.now, latency: ms(1), result: r };
        settled.extend(h.raw(Event::Probe(obs)));
    }
    let Some(Action::Persist(recording)) = settled.iter().find(|a| matches!(a, Action::Persist(d) if d.promoting.is_some())).cloned() else {
        panic!("the promotion is written down first: {settled:?}");
    };
    assert_eq!(recording.promoting.as_ref().map(|p| p.node.as_str()), Some("pg2"));
    assert!(!settled.iter().any(|a| matches!(a, Action::Promote { .. })), "no Promote before its record: {settled:?}");
    // The disk refuses it.
    let (actions, logs) = split(h.raw(Event::Persisted { state: recording, result: Err("read-only file system".into()) }));
    assert!(!actions.iter().any(|a| matches!(a, Action::Promote { .. })), "{actions:?}");
    assert_logged(&logs, "promotion of pg2 not made: the state file that must record it cannot be written");
    assert!(actions.contains(&Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::StateNotRecorded })), "{actions:?}");
    assert!(!h.m.view().recorded);
    assert_eq!(h.m.durable().promoting, None, "a promotion never sent is not in flight");
    // While writes fail: tried again every RECORD_RETRY, and no failover decided.
    h.now += RECORD_RETRY;
    let again = h.raw(Event::Tick);
    let Some(Action::Persist(retry)) = again.first().cloned() else { panic!("the write is tried again: {again:?}") };
    let (actions, _) = split(again);
    assert!(!actions.iter().any(|a| matches!(a, Action::Promote { .. } | Action::Alert(Alert::FailoverStarted { .. }))), "{actions:?}");
    assert_eq!(h.m.view().blocked, Some(Blocked::StateNotRecorded));
    // The disk is back: the failover goes on, and this time the promotion's record lands first.
    let (actions, logs) = split(h.ev(Event::Persisted { state: retry, result: Ok(()) }));
    assert_logged(&logs, "state file: written again");
    let mut all = actions;
    for _ in 0..3 {
        all.extend(split(h.round(vec![down(), standby(1, 1000, Some(PG2)), standby(1, 1000, Some(PG2))])).0);
        let repoints: Vec<Action> = all.iter().filter(|a| matches!(a, Action::Repoint { .. })).cloned().collect();
        for a in repoints {
            all.extend(split(h.done(a, Ok(()))).0);
        }
    }
    assert!(all.contains(&Action::Promote { node: PG2 }), "{all:?}");
    assert!(h.m.view().recorded);
}

/// The record of a promotion lands late (a slow disk, a freeze with the probes' answers queued
/// behind it) and the view has changed meanwhile: the target no longer answers. The promotion
/// is withdrawn, never sent, and the switchover waits again for its target (until its
/// deadline). Before, the record's arrival sent the `Promote` on the old decision.
#[test]
fn a_recorded_promotion_that_no_longer_holds_is_not_sent() {
    let mut h = steady(3);
    h.ev(Event::Admin(AdminCommand::Switchover { to: PG2 }));
    h.now += ms(10);
    h.probe(PG1, primary(1, 2000));
    h.probe(PG2, standby(1, 2000, Some(PG1)));
    h.now += ms(10);
    h.done(Action::Demote { node: PG1, primary: PG2 }, Ok(()));
    h.now += ms(10);
    h.probe(PG3, standby(1, 2000, Some(PG1)));
    // The target's probe decides the promotion; its record is not written yet (raw).
    let at = h.now;
    let decided = h.raw(Event::Probe(Observation { node: PG2, at, latency: ms(1), result: standby(1, 2000, None) }));
    let Some(Action::Persist(record)) = decided.first().cloned() else { panic!("the promotion is recorded first: {decided:?}") };
    assert!(record.promoting.is_some());
    assert!(!decided.iter().any(|a| matches!(a, Action::Promote { .. })), "{decided:?}");
    // Before the write lands, the target stops answering.
    h.now += ms(200);
    let at = h.now;
    h.raw(Event::Probe(Observation { node: PG2, at, latency: ms(150), result: Err(ProbeFailure::Timeout) }));
    let (actions, logs) = split(h.raw(Event::Persisted { state: record, result: Ok(()) }));
    assert!(!actions.iter().any(|a| matches!(a, Action::Promote { .. })), "{actions:?}");
    assert_logged(&logs, "the promotion of pg2 is recorded, but it no longer holds: pg2 is not a reachable standby");
    assert!(matches!(h.m.phase(), Phase::Switchover { stage: SwitchoverStage::Demoted, .. }), "{:?}", h.m.phase());
    // The target is up again (three good probes): promoted now (its new record first).
    let mut actions = Vec::new();
    for _ in 0..3 {
        actions.extend(h.round(vec![standby(1, 2000, Some(PG2)), standby(1, 2000, None), standby(1, 2000, Some(PG1))]));
    }
    assert!(actions.contains(&Action::Promote { node: PG2 }), "{actions:?}");
}
