//! Peer reports: the writer a peer reaches, a peer's timeline as a hint, starting with peers.

use super::*;

/// What a machine reports: its floor, and the writer only while it routes and reaches it.
#[test]
fn the_report_names_the_writer_only_while_it_is_reached() {
    let mut h = steady(3);
    assert_eq!(h.m.report(), PeerReport { timeline: 1, writer: Some("pg1".into()), maintenance: None, marks: vec![] });
    h.round(vec![down(), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    assert_eq!(h.m.report(), PeerReport { timeline: 1, writer: None, maintenance: None, marks: vec![] }, "one failed probe: not reached");
    assert_eq!(H::new(params(3)).m.report(), PeerReport { timeline: 0, writer: None, maintenance: None, marks: vec![] }, "nothing known yet");
}

/// The VIP holder's peer was cut from the writer (its priority lowered, the holder kept the
/// VIP and the writer); then the two lose each other (a two-master split) and the writer
/// loses its standbys. The peer, master now, does not promote: the holder's last word was that
/// it reaches the writer this one had lost, so the writer is alive and may take writes.
#[test]
fn a_writer_the_silent_peer_last_reached_is_not_failed_over() {
    let mut p = vrrp_params(3);
    p.synchronous_count = 0;
    let mut h = H::new(p);
    h.ev(Event::VrrpRole { master: false });
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    h.ev(report(PEER, 1, Some("pg1")));
    // Cut from pg1 here; the peer still reaches it and says so.
    for _ in 0..4 {
        h.ev(Event::PeerHeard { peer: PEER });
        h.ev(report(PEER, 1, Some("pg1")));
        h.round(vec![down(), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    }
    // The link to the peer goes; this one is master; the standbys lose pg1 too.
    h.ev(Event::VrrpRole { master: true });
    let mut all = Vec::new();
    for _ in 0..10 {
        all.extend(split(h.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None)])).0);
    }
    assert!(!all.iter().any(|a| matches!(a, Action::Promote { .. } | Action::Alert(Alert::FailoverStarted { .. }))), "{all:?}");
    assert_eq!(h.m.view().blocked, Some(Blocked::PeerReachesWriter { peer: PEER }));
    // The peer is heard again and has lost pg1 too: failover goes on.
    h.ev(Event::PeerHeard { peer: PEER });
    let (actions, _) = split(h.ev(report(PEER, 1, None)));
    assert!(actions.contains(&Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG2 })), "{actions:?}");
}

/// A peer that reached the writer while this instance did too, and then went silent (killed),
/// blocks nothing: the writer failing afterwards is failed over.
#[test]
fn a_peer_killed_while_both_reached_the_writer_blocks_nothing() {
    let mut p = vrrp_params(3);
    p.synchronous_count = 0;
    let mut h = master_h(p);
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    h.ev(report(PEER, 1, Some("pg1")));
    let (actions, _) = split(crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1000, None)]));
    assert!(actions.contains(&Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG2 })), "{actions:?}");
}

/// A load balancer restarted from a state file older than a promotion its peer made (it was
/// down meanwhile) waits for the peer's report before choosing a writer. The peer's timeline
/// is a hint: the old primary, back on the old timeline, is held back (not fenced, nothing
/// written) while the peer says it; a probe of a node on the new timeline makes it a fact.
#[test]
fn a_restart_hears_the_peers_timeline_before_choosing() {
    let p = vrrp_params(3);
    let durable = Durable { writer: Some("pg1".into()), timeline: 1, fences: vec![], promoting: None, maintenance: None, marks: vec![] };
    let mut h = H { m: Machine::restore(p, &durable), now: ms(1000) };
    h.ev(Event::VrrpRole { master: true });
    // pg1 is back on timeline 1; pg2 (promoted to timeline 2 by the peer) is out of sight; pg3
    // never followed it.
    let stale = vec![primary(1, 1500), down(), standby(1, 1400, None)];
    let (actions, _) = split(h.round(stale.clone()));
    assert!(!actions.iter().any(|a| matches!(a, Action::SetWriter { .. })), "decided before hearing the peer: {actions:?}");
    assert_eq!(h.m.phase(), Phase::Starting);
    let all = h.ev(report(PEER, 2, None));
    assert!(!all.iter().any(|a| matches!(a, Action::Persist(_))), "a peer's timeline is never written down: {all:?}");
    let (actions, logs) = split(all);
    assert_logged(&logs, "peer 172.20.0.22 reports timeline 2, newer than any seen here (1)");
    assert!(actions.contains(&Action::SetWriter { node: None }), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Fence { .. })), "held back, not fenced: {actions:?}");
    assert_eq!(h.m.view().writer_timeline, Some(1), "the floor is what probes saw");
    assert_eq!(h.m.view().timeline_hint, Some((2, PEER)));
    assert_eq!(h.m.view().peer_reports, [Some(PeerReport { timeline: 2, writer: None, maintenance: None, marks: vec![] })]);
    h.ev(report(PEER, 2, None));
    h.round(stale);
    assert_eq!(h.m.writer(), None, "the stale primary gets no writes while the peer says timeline 2");
    // pg2 comes into sight on timeline 2: a fact now; pg1 is fenced.
    h.ev(report(PEER, 2, Some("pg2")));
    let (actions, _) = split(h.round(vec![primary(1, 1500), primary(2, 2000), standby(2, 2000, Some(PG2))]));
    assert!(actions.iter().any(|a| matches!(a, Action::Fence { node: PG1, reason: FenceReason::OlderTimeline { .. } })), "{actions:?}");
    assert_eq!(h.m.writer(), Some(PG2));
    assert_eq!(h.m.durable().timeline, 2);
}

/// A key holder's mistake costs seconds, not the cluster: a peer's report of a timeline no
/// probe confirms holds the writer's writes back only while the peer keeps saying it; nothing
/// is fenced or written, and the writer is routed again once the report grows old.
#[test]
fn a_peers_unconfirmed_timeline_holds_writes_back_only_while_it_is_said() {
    let mut h = master_h(vrrp_params(3));
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    assert_eq!(h.m.writer(), Some(PG1));
    let (actions, logs) = split(h.ev(report(Ipv4Addr::new(10, 0, 0, 9), 7, None)));
    assert!(actions.is_empty(), "{actions:?}");
    assert_logged(&logs, "report from 10.0.0.9, not a configured peer: ignored");
    let (actions, _) = split(h.ev(report(PEER, 1, None)));
    assert!(actions.is_empty(), "the same timeline changes nothing: {actions:?}");
    let all = h.ev(report(PEER, 99, None));
    assert!(!all.iter().any(|a| matches!(a, Action::Persist(_) | Action::Fence { .. })), "{all:?}");
    let (actions, logs) = split(all);
    assert_eq!(actions, [Action::SetWriter { node: None }], "{actions:?}");
    assert_logged(&logs, "writes held back: peer 172.20.0.22 reports timeline 99");
    let healthy = vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))];
    let (actions, _) = split(h.round(healthy.clone()));
    assert!(actions.is_empty(), "still held: the report is 200 ms old: {actions:?}");
    // Past the peer timeout (361 ms) with no new report saying it, the hint lapses.
    h.now += ms(200);
    let (actions, _) = split(h.ev(Event::Tick));
    assert_eq!(actions, [Action::SetWriter { node: Some(PG1) }], "{actions:?}");
    assert_eq!(h.m.phase(), Phase::Steady);
    assert_eq!(h.m.durable().timeline, 1, "nothing of timeline 99 was written down");
    assert_eq!(h.m.view().timeline_hint, None);
}

/// A peer heard (its adverts) but whose reports do not arrive keeps a starting instance from
/// deciding: it might know a promotion this one did not see.
#[test]
fn a_starting_instance_waits_for_the_report_of_every_peer_it_hears() {
    let healthy = vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))];
    let mut h = H { m: Machine::new(vrrp_params(3)), now: ms(1000) };
    for _ in 0..20 {
        h.ev(Event::PeerHeard { peer: PEER });
        h.round(healthy.clone());
    }
    assert_eq!(h.m.phase(), Phase::Starting, "an advert is heard every round, a report never");
    assert!(!h.m.ready());
    assert_eq!(h.m.writer(), None);
    h.ev(report(PEER, 1, Some("pg1")));
    assert_eq!(h.m.phase(), Phase::Steady);
    assert!(h.m.ready());
    assert_eq!(h.m.writer(), Some(PG1));
}

/// A silent peer (dead, or the link cut) delays the start by one master-down interval at most.
#[test]
fn a_silent_peer_delays_the_start_by_the_master_down_interval_at_most() {
    let p = vrrp_params(3);
    let wait = p.peer_timeout;
    let mut h = H { m: Machine::new(p), now: ms(1000) };
    let healthy = vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))];
    h.round(healthy.clone());
    assert_eq!(h.m.phase(), Phase::Starting);
    let started = h.now - ms(200);
    h.now = started + wait;
    h.ev(Event::Tick);
    assert_eq!(h.m.writer(), Some(PG1));
    assert_eq!(h.m.phase(), Phase::Steady);
}

/// A restart keeps the previous run's routing (the pinned map) while the machine waits for
/// every node and a peer's report — but only while nothing says the last writer is wrong: its
/// first failed probe refuses writes at once.
#[test]
fn a_restart_refuses_writes_as_soon_as_the_last_writer_fails() {
    let durable = Durable { writer: Some("pg1".into()), timeline: 1, fences: vec![], promoting: None, maintenance: None, marks: vec![] };
    let mut h = H { m: Machine::restore(vrrp_params(3), &durable), now: ms(1000) };
    let (actions, _) = split(h.probe(PG2, standby(1, 1000, Some(PG1))));
    assert!(actions.is_empty(), "nothing against pg1 yet: {actions:?}");
    let (actions, logs) = split(h.probe(PG1, down()));
    assert_eq!(actions, [Action::SetWriter { node: None }]);
    assert_logged(&logs, "startup: writes refused until the writer is chosen: pg1, the last writer, is not usable now");
    assert_eq!(h.m.phase(), Phase::Starting, "still waiting for a peer's report");
}

/// A two-master split: the writer hangs and this master (its peer silent) starts a failover,
/// re-pointing pg3 at its candidate pg2; then the writer answers again. The peer, master too,
/// may be promoting pg2 this very moment: the writer is not taken back until a standby probed
/// since its return streams from it (the peer's own rule 2 then holds its failover back).
/// Before, it was taken back at once, while the peer promoted: two routed primaries.
#[test]
fn a_returning_writer_is_taken_back_in_a_split_only_once_a_standby_follows_it() {
    let mut h = vrrp_master_of_three();
    h.ev(report(PEER, 1, Some("pg1")));
    h.now += ms(1000); // the peer falls silent (a split)
    let mut all = Vec::new();
    for _ in 0..3 {
        all.extend(split(h.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None)])).0);
    }
    assert!(all.contains(&Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG2 })), "{all:?}");
    // The writer answers before the settling step ends; pg3 follows pg2 now, pg2 nothing.
    let returned = [primary(1, 1000), standby(1, 1000, None), standby(1, 1000, Some(PG2))];
    let (actions, logs) = split(h.round(returned.to_vec()));
    assert!(!actions.contains(&Action::SetWriter { node: Some(PG1) }), "{actions:?}");
    let actions = rounds(&mut h, 4, &returned);
    assert!(!actions.iter().any(|a| matches!(a, Action::SetWriter { node: Some(_) } | Action::Promote { .. })), "{actions:?} {logs:?}");
    assert_eq!(h.m.view().blocked, Some(Blocked::ReturnUnconfirmed { writer: PG1 }));
    // pg2 reconnects to it: taken back.
    let (actions, _) = split(h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG2))]));
    assert!(actions.contains(&Action::SetWriter { node: Some(PG1) }), "{actions:?}");
}

/// The same with the peer heard: the returning writer is taken back at once (the peer's
/// reports say what it does).
#[test]
fn a_returning_writer_is_taken_back_at_once_with_the_peer_heard() {
    let mut h = vrrp_master_of_three();
    let mut all = Vec::new();
    for _ in 0..3 {
        h.ev(report(PEER, 1, None));
        all.extend(split(h.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None)])).0);
    }
    assert!(all.contains(&Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG2 })), "{all:?}");
    h.ev(report(PEER, 1, None));
    let (actions, _) = split(h.round(vec![primary(1, 1000), standby(1, 1000, None), standby(1, 1000, Some(PG2))]));
    assert!(actions.contains(&Action::SetWriter { node: Some(PG1) }), "{actions:?}");
}
