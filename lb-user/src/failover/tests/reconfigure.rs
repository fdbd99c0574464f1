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
fn other_nodes_are_not_taken() {
    let mut h = steady(3);
    let before = h.m.params().clone();
    let (actions, logs) = reconfigure(&mut h, |p| p.nodes.push(node(3)));
    assert!(actions.is_empty(), "{actions:?}");
    assert_logged(&logs, "not taken");
    assert_eq!(h.m.params(), &before);
    let (_, logs) = reconfigure(&mut h, |p| p.peers.push(Ipv4Addr::new(172, 20, 0, 23)));
    assert_logged(&logs, "not taken");
    assert_eq!(h.m.params(), &before);
}
