//! Rule 5 (re-pointing) and rule 6 (fences, rejoin).

use super::*;

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
