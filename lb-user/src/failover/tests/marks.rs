//! Node marks: a drained standby leaves the readers at once, a disabled one is no failover
//! candidate and no switchover target; the newest mark per node and kind wins, from the
//! operator, a peer's report or the state file.

use super::*;

const WALL_MS: u64 = 1_796_000_000_000;

fn mark(node: &str, kind: MarkKind, on: bool, at_ms: u64, by: &str) -> NodeMark {
    NodeMark { node: node.into(), kind, on, at_ms, by: by.into() }
}

fn operator(m: NodeMark) -> Event {
    Event::Admin(AdminCommand::Mark(m))
}

fn from_peer(marks: Vec<NodeMark>) -> Event {
    Event::PeerReport { peer: PEER, report: PeerReport { timeline: 1, writer: Some("pg1".into()), maintenance: None, marks } }
}

/// The state file written by the actions, if any.
fn persisted(actions: &[Action]) -> Option<&Durable> {
    actions.iter().find_map(|a| if let Action::Persist(d) = a { Some(d) } else { None })
}

#[test]
fn a_drained_standby_leaves_the_readers_at_once_and_the_state_file_keeps_it() {
    let mut h = steady(3);
    let drain = mark("pg2", MarkKind::Drain, true, WALL_MS, "lb1");
    let all = h.ev(operator(drain.clone()));
    assert_eq!(persisted(&all).map(|d| d.marks.clone()), Some(vec![drain.clone()]), "written before anything else: {all:?}");
    let (actions, logs) = split(all);
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG3] }]);
    assert_logged(&logs, "node pg2: drained on lb1");
    let view = h.m.view();
    assert!(view.nodes[PG2].drained && !view.nodes[PG2].disabled);
    assert_eq!(view.marks, std::slice::from_ref(&drain));
    assert_eq!(h.m.report().marks, [drain], "passed on in this instance's reports");
    // Probes change nothing about it.
    let (actions, _) = split(h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]));
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn an_undrain_brings_the_standby_back_and_is_kept_as_the_newest_word() {
    let mut h = steady(3);
    h.ev(operator(mark("pg2", MarkKind::Drain, true, WALL_MS, "lb1")));
    let undrain = mark("pg2", MarkKind::Drain, false, WALL_MS + 1000, "lb2");
    let (actions, logs) = split(h.ev(operator(undrain.clone())));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG2, PG3] }]);
    assert_logged(&logs, "node pg2: undrained on lb2");
    assert!(!h.m.view().nodes[PG2].drained);
    assert_eq!(h.m.durable().marks, [undrain], "the undrain is kept: an older drain cannot come back");
}

#[test]
fn with_every_standby_drained_the_writer_serves_reads() {
    let mut h = steady(3);
    h.ev(operator(mark("pg2", MarkKind::Drain, true, WALL_MS, "lb1")));
    let (actions, _) = split(h.ev(operator(mark("pg3", MarkKind::Drain, true, WALL_MS + 1, "lb1"))));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG1] }]);
}

#[test]
fn the_newest_mark_wins_whoever_took_it() {
    let mut h = H::new(vrrp_params(3));
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    assert_eq!(h.m.view().readers, [PG2, PG3]);
    let drain = mark("pg2", MarkKind::Drain, true, WALL_MS + 500, "lb2");
    let (actions, logs) = split(h.ev(from_peer(vec![drain.clone()])));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG3] }]);
    assert_logged(&logs, "node pg2: drained on lb2");
    assert_logged(&logs, "(learned from peer 172.20.0.22)");
    // The same report again: nothing new, nothing said.
    let (actions, logs) = split(h.ev(from_peer(vec![drain.clone()])));
    assert!(actions.is_empty() && logs.is_empty(), "{actions:?} {logs:?}");
    // An older undrain here (a clock behind the peer's) is refused in the log.
    let (actions, logs) = split(h.ev(operator(mark("pg2", MarkKind::Drain, false, WALL_MS, "lb1"))));
    assert!(actions.is_empty(), "{actions:?}");
    assert_logged(&logs, "is older than the one in force; ignored");
    assert!(h.m.view().nodes[PG2].drained);
    // A tie of the time goes to the greater instance name.
    let (actions, _) = split(h.ev(from_peer(vec![mark("pg2", MarkKind::Drain, false, WALL_MS + 500, "lb3")])));
    assert_eq!(actions, [Action::SetReaders { nodes: vec![PG2, PG3] }]);
    // A mark on a node this config does not have is ignored.
    let (actions, logs) = split(h.ev(from_peer(vec![mark("pg9", MarkKind::Disable, true, WALL_MS + 900, "lb2")])));
    assert!(actions.is_empty() && logs.is_empty(), "{actions:?} {logs:?}");
    assert_eq!(h.m.view().marks.len(), 1);
}

/// Both standbys at the same position: pg2 would win on its name; disabled, pg3 is chosen.
#[test]
fn a_disabled_standby_is_no_failover_candidate() {
    let mut h = steady(3);
    let (actions, logs) = split(h.ev(operator(mark("pg2", MarkKind::Disable, true, WALL_MS, "lb1"))));
    assert!(actions.is_empty(), "a disabled standby still serves reads: {actions:?}");
    assert_logged(&logs, "node pg2: disabled on lb1");
    let (actions, _) = split(crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1000, None)]));
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG3 }),
            Action::SetWriter { node: None },
            Action::Repoint { node: PG2, primary: PG3 },
            Action::Probe { node: PG3 },
        ]
    );
}

/// A disabled standby further ahead holds failover back, as `nofailover` does: promoting the
/// one behind would lose the commits only the disabled one holds.
#[test]
fn a_disabled_standby_ahead_holds_failover_back() {
    let mut h = steady(3);
    h.ev(operator(mark("pg3", MarkKind::Disable, true, WALL_MS, "lb1")));
    let (actions, logs) = split(crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]));
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: Blocked::CandidateBehind { candidate: PG2, ahead: PG3 } }),
            Action::SetWriter { node: None }
        ]
    );
    assert_logged(&logs, "candidate #1 is behind standby #2");
    // Enabled again, it is the candidate.
    let (actions, _) = split(h.ev(operator(mark("pg3", MarkKind::Disable, false, WALL_MS + 1, "lb1"))));
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG3 }),
            Action::Repoint { node: PG2, primary: PG3 },
            Action::Probe { node: PG3 },
        ]
    );
}

#[test]
fn a_switchover_to_a_disabled_node_is_refused() {
    let mut h = steady(3);
    h.ev(operator(mark("pg2", MarkKind::Disable, true, WALL_MS, "lb1")));
    let (actions, logs) = split(h.ev(Event::Admin(AdminCommand::Switchover { to: PG2 })));
    let reason = "pg2 is disabled (`pglb node enable pg2` first)".to_owned();
    assert_eq!(actions, [Action::Alert(Alert::SwitchoverRejected { to: PG2, reason })]);
    assert_logged(&logs, "switchover to #1 rejected: pg2 is disabled");
    assert_eq!(h.m.phase(), Phase::Steady);
    assert_eq!(h.m.writer(), Some(PG1));
}

#[test]
fn marks_survive_a_restart_and_unknown_nodes_are_dropped() {
    let mut h = steady(3);
    h.ev(operator(mark("pg2", MarkKind::Drain, true, WALL_MS, "lb1")));
    h.ev(operator(mark("pg3", MarkKind::Disable, true, WALL_MS + 1, "lb2")));
    let mut durable = h.m.durable();
    durable.marks.push(mark("pg9", MarkKind::Drain, true, WALL_MS + 2, "lb1"));
    let mut h = H { m: Machine::restore(params(3), &durable), now: ms(1000) };
    let view = h.m.view();
    assert!(view.nodes[PG2].drained && view.nodes[PG3].disabled, "{:?}", view.marks);
    assert_eq!(view.marks.len(), 2, "pg9 is not configured: {:?}", view.marks);
    let (actions, logs) = split(h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]));
    assert_eq!(actions, [Action::SetWriter { node: Some(PG1) }, Action::SetReaders { nodes: vec![PG3] }]);
    assert_logged(&logs, "state file: pg2 drained on lb1");
    assert_logged(&logs, "state file: pg3 disabled on lb2");
    assert_logged(&logs, "the drain mark of node pg9 is no longer configured; ignored");
}
