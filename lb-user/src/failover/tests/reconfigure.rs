//! `Event::Reconfigure`: a reload's new parameters, applied from the next decision on.

use super::*;

fn reconfigure(h: &mut H, edit: impl FnOnce(&mut Params)) -> (Vec<Action>, Vec<String>) {
    let mut p = h.m.params().clone();
    edit(&mut p);
    split(h.ev(Event::Reconfigure(Box::new(p))))
}

#[test]
fn a_new_read_weight_resends_the_same_readers() {
    let mut h = steady(3);
    let (actions, logs) = reconfigure(&mut h, |p| p.nodes[PG2].read_weight = 300);
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG2, PG3] }]);
    assert_logged(&logs, "reload: new failover parameters in force");
    assert_eq!(h.m.params().nodes[PG2].read_weight, 300);
    let (actions, _) = split(h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]));
    assert!(actions.is_empty(), "sent once: {actions:?}");
}

#[test]
fn a_read_weight_of_zero_takes_the_node_out_of_the_readers() {
    let mut h = steady(3);
    let (actions, _) = reconfigure(&mut h, |p| p.nodes[PG3].read_weight = 0);
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG2] }]);
}

#[test]
fn a_tighter_lag_limit_applies_at_once() {
    let mut h = steady(3);
    let (actions, _) = split(h.round(vec![primary(1, 5000), standby(1, 1000, Some(PG1)), standby(1, 4500, Some(PG1))]));
    assert!(actions.is_empty(), "within 16 MiB: {actions:?}");
    let (actions, _) = reconfigure(&mut h, |p| p.max_read_lag_bytes = 1000);
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG3] }]);
}

#[test]
fn nothing_changed_sends_nothing() {
    let mut h = steady(3);
    let (actions, logs) = reconfigure(&mut h, |_| {});
    assert!(actions.is_empty(), "{actions:?}");
    assert_logged(&logs, "reload: new failover parameters in force");
}

#[test]
fn a_new_failover_after_counts_from_the_next_probe() {
    let mut h = steady(3);
    reconfigure(&mut h, |p| p.failover_after = 5);
    let standbys = [standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))];
    for _ in 0..4 {
        let mut r = vec![down()];
        r.extend(standbys.iter().cloned());
        h.round(r);
    }
    assert_eq!(h.m.phase(), Phase::Steady, "4 failures are below the new threshold of 5");
    let mut r = vec![down()];
    r.extend(standbys.iter().cloned());
    h.round(r);
    assert_ne!(h.m.phase(), Phase::Steady, "the 5th failure loses the writer");
}

#[test]
fn other_nodes_or_peers_are_not_taken() {
    let mut h = steady(3);
    let before = h.m.params().clone();
    let (actions, logs) = reconfigure(&mut h, |p| p.nodes[PG2].name = "pg9".into());
    assert!(actions.is_empty(), "{actions:?}");
    assert_logged(&logs, "not taken");
    assert_eq!(h.m.params(), &before);
    let (_, logs) = reconfigure(&mut h, |p| p.peers.push(Ipv4Addr::new(172, 20, 0, 23)));
    assert_logged(&logs, "not taken");
    assert_eq!(h.m.params(), &before);
}

#[test]
fn a_node_added_at_the_end_is_routed_once_probes_say_it_qualifies() {
    let mut h = steady(3);
    let (actions, logs) = reconfigure(&mut h, |p| p.nodes.push(node(PG4)));
    assert!(actions.is_empty(), "nothing routed yet: {actions:?}");
    assert_logged(&logs, "reload: node pg4 added");
    assert_eq!(h.state(PG4), NodeState::Unknown);
    assert_eq!(h.m.view().nodes.len(), 4);
    let (actions, _) = split(h.probe(PG4, standby(1, 1000, Some(PG1))));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG2, PG3, PG4] }]);
    assert_eq!(h.state(PG4), NodeState::Up);
}

#[test]
fn a_standby_removed_from_the_end_leaves_the_readers_and_its_late_probes_are_ignored() {
    let mut h = steady(3);
    let (actions, logs) = reconfigure(&mut h, |p| {
        p.nodes.pop();
    });
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG2] }]);
    assert_logged(&logs, "reload: node pg3 removed");
    assert_eq!(h.m.view().nodes.len(), 2);
    let (actions, logs) = split(h.probe(PG3, standby(1, 1000, Some(PG1))));
    assert!(actions.is_empty(), "{actions:?}");
    assert_logged(&logs, "unknown node #2 ignored");
}

#[test]
fn removing_the_writer_is_refused() {
    let mut h = steady(2);
    let mut p = h.m.params().clone();
    p.nodes.truncate(1);
    assert!(h.m.removal_blocker(1).is_none(), "pg2 is a standby");
    // From id 0 on: pg1, the writer, among them.
    assert_eq!(h.m.removal_blocker(0).as_deref(), Some("pg1 is the writer: switch over to another node first"));
    let before = h.m.params().clone();
    p.nodes.clear();
    let (actions, logs) = split(h.ev(Event::Reconfigure(Box::new(p))));
    assert!(actions.is_empty(), "{actions:?}");
    assert_logged(&logs, "pg1 is the writer");
    assert_eq!(h.m.params(), &before);
}

#[test]
fn while_the_writer_is_lost_nothing_is_removed() {
    let mut h = steady(3);
    crash_writer(&mut h, vec![standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    assert_ne!(h.m.phase(), Phase::Steady);
    assert!(h.m.removal_blocker(2).is_some_and(|w| w.contains("not steady")), "{:?}", h.m.removal_blocker(2));
}
