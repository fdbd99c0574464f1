//! The planned switchover.

use super::*;

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
