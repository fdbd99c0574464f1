//! Maintenance mode: a pause holds failover, rejoin and re-pointing back while routing follows
//! the probes; the newest pause or resume wins; a `--for` pause ends by itself; the state file
//! keeps it.

use super::*;

/// A wall clock (2026-11-30T00:53:20Z), in milliseconds since the epoch.
const WALL_MS: u64 = 1_796_000_000_000;

fn pause(at_ms: u64, by: &str, until_ms: Option<u64>) -> Maintenance {
    Maintenance { paused: true, at_ms, by: by.into(), reason: Some("shared_buffers".into()), until_ms }
}

fn resume(at_ms: u64, by: &str) -> Maintenance {
    Maintenance { paused: false, at_ms, by: by.into(), reason: None, until_ms: None }
}

fn operator(m: Maintenance) -> Event {
    Event::Admin(AdminCommand::Maintenance(m))
}

fn paused_blocked() -> Blocked {
    Blocked::Paused { by: "lb1".into(), reason: Some("shared_buffers".into()) }
}

/// The writer stops (a restart for a config change) while paused: no failover, writes are
/// refused while it is down, and the same primary on the same timeline gets them again as soon
/// as it answers.
#[test]
fn paused_writer_lost_gives_no_promotion_and_the_restarted_primary_is_routed_again() {
    let mut h = steady(3);
    let (actions, logs) = split(h.ev(operator(pause(WALL_MS, "lb1", None))));
    assert!(actions.is_empty(), "{actions:?}");
    assert_logged(&logs, "maintenance: paused on lb1");
    assert!(h.m.view().paused);
    let standbys = vec![standby(1, 1000, None), standby(1, 1100, None)];
    let (actions, logs) = split(crash_writer(&mut h, standbys.clone()));
    assert_eq!(
        actions,
        [Action::Alert(Alert::FailoverBlocked { writer: Some(PG1), reason: paused_blocked() }), Action::SetWriter { node: None }]
    );
    assert_logged(&logs, "no failover: maintenance mode (paused on lb1: shared_buffers)");
    assert_eq!(h.m.view().blocked, Some(paused_blocked()));
    let mut results = vec![down()];
    results.extend(standbys);
    let actions = rounds(&mut h, 20, &results);
    assert!(actions.is_empty(), "nothing while paused: {actions:?}");
    assert!(matches!(h.m.phase(), Phase::WriterLost { old: Some(PG1), .. }));
    let (actions, logs) = split(h.round(vec![primary(1, 1100), standby(1, 1100, Some(PG1)), standby(1, 1100, Some(PG1))]));
    assert_eq!(actions, [Action::SetWriter { node: Some(PG1) }]);
    assert_logged(&logs, "writer pg1 answers again: kept");
    assert_eq!(h.m.phase(), Phase::Steady);
    assert_eq!(h.m.view().writer_timeline, Some(1));
}

/// Paused: a fenced former primary is not rejoined and a standby streaming from elsewhere is
/// not re-pointed; after the resume both happen.
#[test]
fn no_rejoin_and_no_repoint_while_paused() {
    let mut h = H::new(rejoin_params());
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    h.done(Action::Promote { node: PG3 }, Ok(()));
    assert_eq!(h.state(PG1), NodeState::NeedsRejoin);
    h.ev(operator(pause(WALL_MS, "lb1", None)));
    // pg1 answers as the old primary, pg2 streams from nobody.
    let back = [primary(1, 1000), standby(2, 1100, None), primary(2, 1200)];
    let actions = rounds(&mut h, 40, &back);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Rejoin { .. } | Action::Repoint { .. } | Action::SetSyncStandbys { .. } | Action::Promote { .. })),
        "paused: {actions:?}"
    );
    let (actions, logs) = split(h.ev(operator(resume(WALL_MS + 1, "lb1"))));
    assert_logged(&logs, "maintenance: resumed on lb1");
    assert_eq!(actions, [Action::Rejoin { node: PG1, primary: PG3 }], "at the resume");
    let actions = rounds(&mut h, 16, &back);
    assert!(actions.contains(&Action::Repoint { node: PG2, primary: PG3 }), "after the grace: {actions:?}");
}

/// A failover held back by the pause goes ahead at the resume, if every other guard holds.
#[test]
fn resume_lets_a_held_failover_proceed() {
    let mut h = steady(3);
    h.ev(operator(pause(WALL_MS, "lb1", None)));
    crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    assert_eq!(h.m.view().blocked, Some(paused_blocked()));
    let (actions, _) = split(h.ev(operator(resume(WALL_MS + 60_000, "lb1"))));
    assert_eq!(
        actions,
        [
            Action::Alert(Alert::FailoverStarted { from: Some(PG1), candidate: PG3 }),
            Action::Repoint { node: PG2, primary: PG3 },
            Action::Probe { node: PG3 },
        ]
    );
    assert!(matches!(h.m.phase(), Phase::Settling { old: Some(PG1), candidate: PG3, .. }));
}

/// `--for`: the pause ends at its wall-clock end, woken by the machine's own deadline; the end
/// is a resume dated at it, by the instance that paused (the same record on every instance).
#[test]
fn a_for_pause_expires_by_itself() {
    let mut h = steady(3);
    let wall_now = WALL_MS + 500;
    h.ev(Event::WallClock { unix: Duration::from_millis(wall_now) });
    let end = wall_now + 5_000;
    h.ev(operator(pause(wall_now, "lb1", Some(end))));
    assert!(h.m.view().paused);
    let deadline = h.m.next_deadline().expect("a deadline");
    let end_mono = h.now + ms(5_000);
    assert!(deadline <= end_mono, "the machine wakes for the end: {deadline:?} > {end_mono:?}");
    // Probe rounds up to just before the end: still paused.
    while h.now + ms(200) < end_mono {
        h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
        assert!(h.m.view().paused, "at {:?}", h.now);
    }
    h.now = end_mono;
    assert_eq!(h.m.next_deadline().map(|d| d <= end_mono), Some(true));
    let actions = h.ev(Event::Tick);
    let persisted: Vec<&Durable> = actions.iter().filter_map(|a| if let Action::Persist(d) = a { Some(d) } else { None }).collect();
    let (_, logs) = split(actions.clone());
    assert_logged(&logs, "ended by itself");
    assert!(!h.m.view().paused);
    assert_eq!(h.m.view().maintenance, Some(resume(end, "lb1")));
    assert_eq!(persisted.last().and_then(|d| d.maintenance.clone()), Some(resume(end, "lb1")), "the end is written to the state file");
}

/// Two load balancers: each takes the newest pause or resume, by time, then by name; an older
/// one (from a peer or the operator) changes nothing.
#[test]
fn the_newest_of_two_pauses_from_peers_wins() {
    let mut h = vrrp_master_of_three();
    let peer = Ipv4Addr::new(172, 20, 0, 22);
    let from_peer = |m: Maintenance| Event::PeerReport { peer, report: PeerReport { timeline: 1, writer: Some("pg1".into()), maintenance: Some(m), marks: vec![] } };
    let (_, logs) = split(h.ev(from_peer(pause(WALL_MS, "lb2", None))));
    assert_logged(&logs, "paused on lb2");
    assert_logged(&logs, "(learned from peer 172.20.0.22)");
    assert!(h.m.view().paused);
    assert_eq!(h.m.report().maintenance, Some(pause(WALL_MS, "lb2", None)), "passed on in this instance's reports");
    // The peer's older resume (its clock behind, say) loses to the newer pause.
    h.ev(from_peer(resume(WALL_MS - 1, "lb2")));
    assert!(h.m.view().paused);
    // The operator here resumes later: wins.
    h.ev(operator(resume(WALL_MS + 10, "lb1")));
    assert!(!h.m.view().paused);
    // The peer still repeats its pause in every report: older, ignored.
    let (_, logs) = split(h.ev(from_peer(pause(WALL_MS, "lb2", None))));
    assert!(!h.m.view().paused);
    assert!(!logs.iter().any(|l| l.contains("maintenance")), "{logs:?}");
    // The same millisecond on both: the greater instance name wins, whatever arrives first.
    for order in [[operator(pause(WALL_MS + 20, "lb1", None)), from_peer(resume(WALL_MS + 20, "lb2"))], [from_peer(resume(WALL_MS + 20, "lb2")), operator(pause(WALL_MS + 20, "lb1", None))]] {
        let mut h = vrrp_master_of_three();
        for e in order {
            h.ev(e);
        }
        assert_eq!(h.m.view().maintenance, Some(resume(WALL_MS + 20, "lb2")));
    }
}

/// The pause is in the state file and a restarted instance starts paused: a lost writer is not
/// failed over.
#[test]
fn restore_from_the_state_file_keeps_the_pause() {
    let mut h = steady(3);
    h.ev(operator(pause(WALL_MS, "lb1", None)));
    let durable = h.m.durable();
    assert_eq!(durable.maintenance, Some(pause(WALL_MS, "lb1", None)));
    let text = serde_json::to_string(&durable).expect("serializes");
    let back: Durable = serde_json::from_str(&text).expect("parses");
    let mut h = H { m: Machine::restore(params(3), &back), now: ms(1000) };
    let (_, logs) = split(h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]));
    assert_logged(&logs, "state file: paused on lb1");
    assert!(h.m.view().paused);
    crash_writer(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    assert_eq!(h.m.view().blocked, Some(paused_blocked()));
}

/// A switchover is the operator's change of the writer, and a pause says "change nothing":
/// refused, naming `pglb resume`.
#[test]
fn a_switchover_while_paused_is_refused() {
    let mut h = steady(3);
    h.ev(operator(pause(WALL_MS, "lb1", None)));
    let (actions, _) = split(h.ev(Event::Admin(AdminCommand::Switchover { to: PG2 })));
    let [Action::Alert(Alert::SwitchoverRejected { to: PG2, reason })] = actions.as_slice() else { panic!("{actions:?}") };
    assert!(reason.contains("pglb resume"), "{reason}");
    assert_eq!(h.m.phase(), Phase::Steady);
}
