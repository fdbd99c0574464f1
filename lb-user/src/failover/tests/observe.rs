//! The clock and the bookkeeping: silence counts as failure, deadlines, late answers, the view.

use super::*;

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
