//! Rule 2's guards and rule 3's candidate, the settling step and the promotion.

use super::*;

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

/// Issue 22's cascade: pg1 crashed and pg2 replaced it (pg1 fenced, needs a rejoin, still
/// down); then pg2 crashes too. With `ANY 1` over pg1 and pg3, pg3 alone could acknowledge
/// pg2's commits (pg1's history forked from pg2's: it cannot stream from it unrewound), so it
/// holds every one of them; the peer's reports are the third of five votes. pg3 is promoted.
#[test]
fn a_cascade_promotes_the_last_standby_once_the_other_is_fenced_as_forked() {
    let mut h = master_h(vrrp_params(3));
    round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let mut decided = Vec::new();
    for _ in 0..3 {
        decided.extend(round_with_peer(&mut h, vec![down(), standby(1, 1000, None), standby(1, 1000, None)]));
    }
    for a in decided.clone() {
        if let Action::Repoint { .. } = a {
            h.done(a, Ok(()));
        }
    }
    let (actions, _) = split(round_with_peer(&mut h, vec![down(), standby(1, 1000, None), standby(1, 1000, Some(PG2))]));
    assert!(actions.contains(&Action::Promote { node: PG2 }), "{actions:?}");
    h.done(Action::Promote { node: PG2 }, Ok(()));
    for _ in 0..4 {
        round_with_peer(&mut h, vec![down(), primary(2, 2000), standby(2, 2000, Some(PG2))]);
    }
    assert_eq!((h.m.writer(), h.state(PG1)), (Some(PG2), NodeState::NeedsRejoin), "pg2 writes, pg1 fenced: {:?}", h.m.view());

    // pg2 crashes: pg3 is the last standby, at pg2's last position.
    let mut decided = Vec::new();
    for _ in 0..3 {
        decided.extend(round_with_peer(&mut h, vec![down(), down(), standby(2, 2000, None)]));
    }
    let (actions, logs) = split(decided);
    assert!(!actions.iter().any(|a| matches!(a, Action::Alert(Alert::FailoverBlocked { .. }))), "blocked: {actions:?}\n{logs:#?}");
    assert_logged(&logs, "failover: pg3 is the candidate");
    // No other standby to re-point first: the promotion goes out in the same rounds.
    assert!(actions.contains(&Action::Promote { node: PG3 }), "{actions:?}");
    assert!(matches!(h.m.phase(), Phase::FailingOver { old: Some(PG2), candidate: PG3, .. }), "{:?}", h.m.phase());
}

/// The same cascade with pg1 not fenced (a standby that was down before the first failover:
/// it may have streamed from pg2 unseen): `ANY 1` over pg1 and pg3 needs both in view, and
/// writes stay refused.
#[test]
fn a_cascade_waits_while_the_other_standby_may_hold_the_last_commit() {
    let mut h = master_h(vrrp_params(3));
    round_with_peer(&mut h, vec![primary(2, 2000), standby(2, 2000, Some(PG1)), standby(2, 2000, Some(PG1))]);
    round_with_peer(&mut h, vec![primary(2, 2000), down(), standby(2, 2000, Some(PG1))]);
    let mut decided = Vec::new();
    for _ in 0..3 {
        decided.extend(round_with_peer(&mut h, vec![down(), down(), standby(2, 2000, None)]));
    }
    let (actions, _) = split(decided);
    assert!(
        actions.contains(&Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::SyncStandbysUnreachable { reachable: 1, needed: 2 } })),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Promote { .. })), "{actions:?}");
}
