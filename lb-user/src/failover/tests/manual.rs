//! Manual failover (`pglb failover`): one request in, the exact refusal or the exact actions
//! of the promotion out.

use super::*;

/// Both standbys stopped receiving at 1000 while pg1 went on to 3 MiB, then pg1 crashed: no
/// candidate within `max_lag_on_failover_bytes`, automatic failover held back.
fn lost_far_behind(p: Params) -> H {
    let mut h = H::new(p);
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    h.round(vec![primary(1, 3 * MIB), standby(1, 1000, None), standby(1, 1000, None)]);
    crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1000, None)]);
    assert!(matches!(h.m.phase(), Phase::WriterLost { old: Some(PG1), .. }), "{:?}", h.m.phase());
    assert_eq!(h.m.view().blocked, Some(Blocked::NoCandidate));
    h
}

fn manual(to: NodeId, accept_data_loss: bool) -> Event {
    Event::Admin(AdminCommand::Failover(ManualRequest { to, accept_data_loss }))
}

/// The one alert of a refusal, and the phase unchanged.
fn refused(h: &mut H, to: NodeId, accept: bool) -> (ManualRefused, Vec<String>) {
    let phase = h.m.phase();
    let (actions, logs) = split(h.ev(manual(to, accept)));
    assert_eq!(h.m.phase(), phase, "a refusal changes nothing");
    match actions.as_slice() {
        [Action::Alert(Alert::Manual(ManualOutcome::Refused { to: t, reason }))] if *t == to => (reason.clone(), logs),
        other => panic!("expected one refusal, got {other:?}"),
    }
}

fn far_gap() -> Gap {
    Gap { primary: Some((3 * MIB, PG1)), furthest_standby: Some((1000, PG3)), received: Some(1000), replayed: Some(1000), unseen: vec![] }
}

#[test]
fn refused_without_the_flag_when_the_target_lacks_wal() {
    let mut h = lost_far_behind(params(3));
    let (reason, logs) = refused(&mut h, PG2, false);
    assert_eq!(reason, ManualRefused::DataLoss { to: PG2, gap: far_gap() });
    assert_eq!(far_gap().bytes(), Some(3 * MIB - 1000));
    assert_logged(&logs, "manual failover to pg2 refused: promoting loses at least 3144728 bytes of WAL");
    assert_logged(&logs, "add --accept-data-loss to promote pg2 anyway");
}

#[test]
fn accepted_with_the_flag_promotes_and_fences_as_an_automatic_failover() {
    let mut h = lost_far_behind(params(3));
    let (actions, logs) = split(h.ev(manual(PG2, true)));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG3] }, Action::Promote { node: PG2 }]);
    assert_logged(&logs, "manual failover (pglb failover) to pg2: automatic failover was held back by: no standby qualifies");
    assert_logged(&logs, "the promotion of pg2 is recorded in the state file: promoting");
    assert!(matches!(h.m.phase(), Phase::FailingOver { old: Some(PG1), candidate: PG2, .. }), "{:?}", h.m.phase());
    let (actions, logs) = split(h.done(Action::Promote { node: PG2 }, Ok(())));
    let done = ManualOutcome::Done { from: Some(PG1), to: PG2, timeline: 2, fenced: Some(PG1), gap: far_gap(), held_back: Some(Blocked::NoCandidate) };
    assert_eq!(
        actions,
        [
            Action::SetWriter { node: Some(PG2) },
            Action::Fence { node: PG1, reason: FenceReason::Replaced { by: PG2 } },
            Action::Repoint { node: PG3, primary: PG2 },
            Action::SetSyncStandbys { on: PG2, count: 1, names: vec!["pg1".into(), "pg3".into()] },
            Action::Alert(Alert::Manual(done)),
            Action::SetReaders { nodes: vec![PG2] },
        ]
    );
    assert_logged(&logs, "failover done: pg2 is the writer on timeline 2 (was pg1)");
    assert_eq!(h.m.phase(), Phase::Steady);
    assert_eq!(h.state(PG1), NodeState::NeedsRejoin);
    assert_eq!(h.m.durable().timeline, 2);
}

#[test]
fn a_failed_promotion_is_told_to_the_operator() {
    let mut h = lost_far_behind(params(3));
    h.ev(manual(PG2, true));
    let (actions, _) = split(h.done(Action::Promote { node: PG2 }, Err("server closed the connection".into())));
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::Manual(ManualOutcome::Failed { to: PG2, reason: "promoting pg2 failed: server closed the connection".into() })),
            Action::Alert(Alert::PromoteFailed { node: PG2, error: "server closed the connection".into() }),
            // As after an automatic failover's: nothing else is promoted until a probe shows
            // what pg2 is.
            Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::PromotionUnsettled { node: PG2 } }),
            Action::SetReaders { nodes: vec![PG2, PG3] },
        ]
    );
    assert!(matches!(h.m.phase(), Phase::WriterLost { .. }), "{:?}", h.m.phase());
}

/// A load balancer restarted while the primary was down has no probe of it: the gap is
/// unknown, and the flag is needed even though both standbys are level (the pause holds
/// automatic failover back, and the operator overrides it).
#[test]
fn refused_when_the_gap_is_unknown_and_accepted_with_the_flag_over_a_pause() {
    let durable = Durable { writer: Some("pg1".into()), timeline: 1, ..Durable::default() };
    let mut h = H { m: Machine::restore(params(3), &durable), now: ms(1000) };
    let pause = Maintenance { paused: true, at_ms: 1, by: "lb1".into(), reason: None, until_ms: None };
    h.ev(Event::Admin(AdminCommand::Maintenance(pause)));
    for _ in 0..4 {
        h.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None)]);
    }
    assert!(matches!(h.m.view().blocked, Some(Blocked::Paused { .. })), "{:?}", h.m.view().blocked);
    let (reason, logs) = refused(&mut h, PG2, false);
    let gap = Gap { primary: None, furthest_standby: Some((1000, PG3)), received: Some(1000), replayed: Some(1000), unseen: vec![] };
    assert_eq!(reason, ManualRefused::DataLoss { to: PG2, gap: gap.clone() });
    assert_eq!(gap.bytes(), None);
    assert_logged(&logs, "the data loss is unknown: no probe of the lost primary is known here");
    let (actions, _) = split(h.ev(manual(PG2, true)));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG3] }, Action::Promote { node: PG2 }], "the pause is the operator's to override");
}

/// Paused with both standbys level with the primary's last probe: nothing known is lost, no
/// flag needed.
#[test]
fn a_zero_gap_needs_no_flag() {
    let mut h = steady(3);
    let pause = Maintenance { paused: true, at_ms: 1, by: "lb1".into(), reason: None, until_ms: None };
    h.ev(Event::Admin(AdminCommand::Maintenance(pause)));
    crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1000, None)]);
    let (actions, _) = split(h.ev(manual(PG3, false)));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG2] }, Action::Promote { node: PG3 }]);
}

#[test]
fn refused_while_the_writer_is_healthy_or_not_yet_down() {
    let mut h = steady(3);
    let (reason, _) = refused(&mut h, PG2, true);
    assert_eq!(reason, ManualRefused::WriterHealthy { writer: Some(PG1) });
    assert!(reason.explain(&|n| format!("pg{}", n + 1)).contains("use `pglb switchover --to NODE`"));
    h.round(vec![down(), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let (reason, _) = refused(&mut h, PG2, true);
    assert_eq!(reason, ManualRefused::WriterNotDown { writer: Some(PG1), failures: 1, needed: 3 });
}

#[test]
fn refused_for_an_unknown_unfit_or_nofailover_node() {
    let mut p = params(4);
    p.nodes[PG4].nofailover = true;
    let mut h = lost_far_behind_four(p);
    assert_eq!(refused(&mut h, 7, true).0, ManualRefused::UnknownNode { to: 7 });
    assert_eq!(refused(&mut h, PG1, true).0, ManualRefused::Target { to: PG1, why: Unfit::OldWriter });
    assert_eq!(refused(&mut h, PG4, true).0, ManualRefused::Target { to: PG4, why: Unfit::NoFailover });
    h.ev(Event::Admin(AdminCommand::Mark(NodeMark { node: "pg2".into(), kind: MarkKind::Disable, on: true, at_ms: 1, by: "lb1".into() })));
    let (reason, _) = refused(&mut h, PG2, true);
    assert_eq!(reason, ManualRefused::Target { to: PG2, why: Unfit::Disabled });
    assert!(reason.explain(&|n| format!("pg{}", n + 1)).contains("`pglb node enable pg2` first"));
    h.ev(Event::Admin(AdminCommand::Mark(NodeMark { node: "pg2".into(), kind: MarkKind::Disable, on: false, at_ms: 2, by: "lb1".into() })));
    h.probe(PG3, down());
    let (reason, _) = refused(&mut h, PG3, true);
    assert_eq!(reason, ManualRefused::Target { to: PG3, why: Unfit::NotAnswering });
    assert!(reason.explain(&|n| format!("pg{}", n + 1)).starts_with("pg3 does not answer as a standby"));
    // Once out of sight, pg3 makes pg2's gap unknown beyond what it was last seen with.
    let (reason, _) = refused(&mut h, PG2, false);
    assert!(matches!(&reason, ManualRefused::DataLoss { gap, .. } if gap.unseen == [PG3]), "{reason:?}");
}

fn lost_far_behind_four(p: Params) -> H {
    let mut h = H::new(p);
    let level = || vec![standby(1, 1000, None), standby(1, 1000, None), standby(1, 1000, None)];
    h.round([vec![primary(1, 1000)], level()].concat());
    h.round([vec![primary(1, 3 * MIB)], level()].concat());
    crash_writer(&mut h, level());
    assert!(matches!(h.m.phase(), Phase::WriterLost { old: Some(PG1), .. }), "{:?}", h.m.phase());
    h
}

/// Signs of a live primary are not the operator's to override: a standby that still streams
/// from it.
#[test]
fn refused_while_a_standby_streams_from_the_old_writer() {
    let mut h = steady(3);
    crash_writer(&mut h, vec![standby(1, 1000, Some(PG1)), standby(1, 1000, None)]);
    let (reason, _) = refused(&mut h, PG3, true);
    assert_eq!(reason, ManualRefused::Held(Blocked::StandbyStreaming { standby: PG2 }));
    let text = reason.explain(&|n| format!("pg{}", n + 1));
    assert!(text.contains("standby pg2 still streams") && text.contains("the primary is alive"), "{text}");
}

/// Only the VRRP master acts: a backup refuses.
#[test]
fn refused_on_a_vrrp_backup() {
    let mut h = H::new(vrrp_params(3));
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    for _ in 0..3 {
        round_with_peer(&mut h, vec![down(), standby(1, 1000, None), standby(1, 1000, None)]);
    }
    assert_eq!(h.m.view().blocked, Some(Blocked::NotMaster));
    assert_eq!(refused(&mut h, PG2, true).0, ManualRefused::NotMaster);
}

#[test]
fn refused_while_a_failover_runs() {
    let mut h = steady(3);
    crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    assert!(matches!(h.m.phase(), Phase::Settling { .. }));
    assert_eq!(refused(&mut h, PG2, true).0, ManualRefused::Busy { phase: "settling" });
}

/// No quorum (the peer silent, pg3 down): held back automatically, promoted on the operator's
/// word, and the record of the promotion does not withdraw it for the quorum it overrode.
#[test]
fn accepted_without_quorum_on_the_operators_word() {
    let mut h = master_h(vrrp_params(3));
    round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    assert_eq!(h.m.phase(), Phase::Steady);
    for _ in 0..4 {
        h.round(vec![down(), standby(1, 1000, None), down()]);
    }
    assert!(matches!(h.m.view().blocked, Some(Blocked::NoQuorum { votes: 2, members: 5 })), "{:?}", h.m.view().blocked);
    // The master lowers its VRRP priority after holding the lost writer for track_hold.
    assert_eq!(split(h.ev(Event::Tick)).0, [Action::Track { writer_reachable: false }]);
    // pg3 is out of sight: it may hold more, so the gap is not zero.
    let (reason, _) = refused(&mut h, PG2, false);
    assert!(matches!(&reason, ManualRefused::DataLoss { gap, .. } if gap.unseen == [PG3] && gap.bytes() == Some(0)), "{reason:?}");
    let (actions, logs) = split(h.ev(manual(PG2, true)));
    assert!(actions.contains(&Action::Promote { node: PG2 }), "{actions:?} {logs:#?}");
}
