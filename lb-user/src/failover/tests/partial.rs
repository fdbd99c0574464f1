//! Partial failures: a switchover or failover with probe blips, restarts with the state file,
//! VRRP masters and backups, tracking, the synchronous guard, rejoin.

use super::*;

/// (a) A switchover whose target's probe blips while the old primary is demoted used to abort
/// into "writer lost, no old writer", where the standbys cascading from the demoted node
/// looked like streaming from a hidden primary: failover blocked and no primary, forever.
#[test]
fn switchover_probe_blip_during_the_demote_still_ends_with_one_writer() {
    let mut h = steady(3);
    h.ev(Event::Admin(AdminCommand::Switchover { to: PG2 }));
    h.now += ms(10);
    h.probe(PG1, primary(1, 2000));
    h.now += ms(10);
    let (actions, _) = split(h.probe(PG2, standby(1, 2000, Some(PG1))));
    assert_eq!(actions, [Action::Demote { node: PG1, primary: PG2 }]);
    h.now += ms(100);
    h.probe(PG2, down()); // the blip
    let (actions, logs) = split(h.done(Action::Demote { node: PG1, primary: PG2 }, Ok(())));
    assert!(!actions.iter().any(|a| matches!(a, Action::Alert(Alert::SwitchoverAborted { .. }))), "{actions:?}");
    assert_logged(&logs, "waiting to promote pg2");
    // pg1 now a standby of pg2 (cascading), pg2 and pg3 cascading from pg1: nobody streams
    // from a primary. pg2 answers again.
    let after = [standby(1, 2000, Some(PG2)), standby(1, 2000, Some(PG1)), standby(1, 2000, Some(PG1))];
    let actions = rounds(&mut h, 5, &after);
    assert!(actions.contains(&Action::Promote { node: PG2 }), "{actions:?}");
    let (actions, _) = split(h.done(Action::Promote { node: PG2 }, Ok(())));
    assert!(actions.contains(&Action::SetWriter { node: Some(PG2) }), "{actions:?}");
    assert_eq!((h.m.phase(), h.m.writer()), (Phase::Steady, Some(PG2)));
}

/// (a), the target stays away past the switchover's deadline: the switchover aborts, and the
/// failover that follows still finds a writer once the target is back (the sync guard waits
/// for it: it may hold the last commits).
#[test]
fn switchover_target_lost_after_the_demote_fails_over_once_it_is_back() {
    let mut h = steady(3);
    h.ev(Event::Admin(AdminCommand::Switchover { to: PG2 }));
    h.now += ms(10);
    h.probe(PG1, primary(1, 2000));
    h.now += ms(10);
    h.probe(PG2, standby(1, 2000, Some(PG1)));
    h.probe(PG2, down());
    h.done(Action::Demote { node: PG1, primary: PG2 }, Ok(()));
    let cut = [standby(1, 2000, Some(PG2)), down(), standby(1, 2000, Some(PG1))];
    let actions = rounds(&mut h, 55, &cut);
    assert!(actions.iter().any(|a| matches!(a, Action::Alert(Alert::SwitchoverAborted { .. }))), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Promote { .. })), "no promotion while pg2 may hold commits: {actions:?}");
    assert!(matches!(h.m.phase(), Phase::WriterLost { old: Some(PG1), .. }), "{:?}", h.m.phase());
    let back = [standby(1, 2000, Some(PG2)), standby(1, 2000, Some(PG1)), standby(1, 2000, Some(PG1))];
    let actions = rounds(&mut h, 6, &back);
    let promoted: Vec<&Action> = actions.iter().filter(|a| matches!(a, Action::Promote { .. })).collect();
    assert_eq!(promoted, [&Action::Promote { node: PG2 }], "one promotion, of the most advanced, by priority then name");
}

/// (b) A restart used to forget fences and the timeline: a fresh machine adopts an old
/// primary on timeline 1 when the real writer (timeline 2) is out of sight. A machine restored
/// from the state file fences it instead and routes nobody.
#[test]
fn a_restart_with_the_state_file_never_adopts_a_stale_primary() {
    let mut h = steady(3);
    crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    let actions = h.done(Action::Promote { node: PG3 }, Ok(()));
    let Some(Action::Persist(durable)) = actions.first() else { panic!("a failover persists first: {actions:?}") };
    assert_eq!(durable.writer.as_deref(), Some("pg3"));
    assert_eq!(durable.timeline, 2);
    assert_eq!(durable.fences, [DurableFence { node: "pg1".into(), reason: "replaced".into(), timeline: 1, writer: Some("pg3".into()) }]);
    // The hazard, without memory: pg1 restarted without a rejoin, pg2 and pg3 out of sight (a
    // standby seen on timeline 2 would have told even a fresh machine that timeline 1 is over).
    let stale = vec![primary(1, 1500), down(), down()];
    let mut fresh = H::new(params(3));
    fresh.round(stale.clone());
    assert_eq!(fresh.m.writer(), Some(PG1), "without the state file the stale primary is adopted");
    // With it.
    let mut restored = H { m: Machine::restore(params(3), durable), now: ms(1000) };
    let (actions, logs) = split(restored.round(stale));
    assert_logged(&logs, "state file: last writer pg3, timeline 2, fenced: pg1");
    assert!(actions.contains(&Action::SetWriter { node: None }), "{actions:?}");
    assert_eq!(restored.m.writer(), None);
    assert_eq!(restored.state(PG1), NodeState::NeedsRejoin);
    assert_eq!(restored.m.view().writer_timeline, Some(2), "the timeline never goes backwards");
    // pg3 comes back: it is the writer again.
    let (actions, _) = split(restored.round(vec![primary(1, 1500), down(), primary(2, 1100)]));
    assert!(actions.contains(&Action::SetWriter { node: Some(PG3) }), "{actions:?}");
}

/// (b) Even without a state file entry for it, a primary below the highest timeline this
/// instance routed is fenced, and the writer's timeline never goes down.
#[test]
fn a_primary_below_the_highest_routed_timeline_is_fenced() {
    let durable = Durable { writer: Some("pg2".into()), timeline: 5, fences: vec![], promoting: None, maintenance: None, marks: vec![] };
    let mut h = H { m: Machine::restore(params(3), &durable), now: ms(1000) };
    let (actions, _) = split(h.round(vec![primary(4, 100), standby(4, 100, Some(PG1)), down()]));
    assert!(
        actions.contains(&Action::Fence { node: PG1, reason: FenceReason::OlderTimeline { timeline: 4, writer_timeline: 5 } }),
        "{actions:?}"
    );
    assert_eq!(h.m.writer(), None);
}

/// (b) A promotion whose outcome a crash hid: until the promoted node is seen, no primary on
/// the old timeline is adopted; once it is seen still a standby, the old writer is fine.
#[test]
fn a_promotion_in_flight_at_a_restart_holds_the_old_timeline_back() {
    let durable = Durable {
        writer: Some("pg1".into()),
        timeline: 1,
        fences: vec![],
        promoting: Some(DurablePromotion { node: "pg2".into(), from_timeline: 1 }),
        maintenance: None,
        marks: vec![],
    };
    let mut h = H { m: Machine::restore(params(3), &durable), now: ms(1000) };
    let (actions, _) = split(h.round(vec![primary(1, 1000), down(), standby(1, 1000, Some(PG1))]));
    assert_eq!(h.m.writer(), None, "pg2 may be a primary on timeline 2 now: {actions:?}");
    let (actions, logs) = split(h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]));
    assert_logged(&logs, "pg2 is still a standby on timeline 1: it was not promoted");
    assert!(actions.contains(&Action::SetWriter { node: Some(PG1) }), "{actions:?}");
}

/// Persist is the first action whenever the durable state changes, and only then.
#[test]
fn persist_is_write_ahead_and_only_on_change() {
    let mut h = H::new(params(3));
    let actions = h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    // The first answer on timeline 1 is durable at once; the writer when it is chosen.
    let persisted: Vec<&Action> = actions.iter().filter(|a| matches!(a, Action::Persist(_))).collect();
    assert_eq!(
        persisted,
        [
            &Action::Persist(Durable { writer: None, timeline: 1, fences: vec![], promoting: None, maintenance: None, marks: vec![] }),
            &Action::Persist(Durable { writer: Some("pg1".into()), timeline: 1, fences: vec![], promoting: None, maintenance: None, marks: vec![] })
        ]
    );
    let actions = h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    assert!(!actions.iter().any(|a| matches!(a, Action::Persist(_))), "nothing changed: {actions:?}");
    // The promotion is durable before the Promote goes out.
    let actions = crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    let persisted = actions.iter().position(|a| matches!(a, Action::Persist(d) if d.promoting == Some(DurablePromotion { node: "pg3".into(), from_timeline: 1 })));
    let promoted = actions.iter().position(|a| *a == Action::Promote { node: PG3 });
    assert!(matches!((persisted, promoted), (Some(d), Some(p)) if d < p), "the promotion must be persisted before the Promote: {actions:?}");
}

/// (c) A VRRP backup observes: it routes its own map (so a takeover forwards at once) but
/// never re-points a standby, however long it looks misdirected.
#[test]
fn a_backup_never_repoints() {
    let mut h = H::new(vrrp_params(3));
    h.ev(Event::VrrpRole { master: false });
    for _ in 0..40 {
        let (actions, _) = split(round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, None)]));
        assert!(!actions.iter().any(|a| matches!(a, Action::Repoint { .. })), "{actions:?}");
    }
    assert_eq!(h.m.writer(), Some(PG1), "the backup still routes the writer in its own map");
    // The same view as master re-points after the grace.
    h.ev(Event::VrrpRole { master: true });
    let mut all = Vec::new();
    for _ in 0..20 {
        all.extend(split(round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, None)])).0);
    }
    assert!(all.contains(&Action::Repoint { node: PG3, primary: PG1 }), "{all:?}");
}

/// (c) A backup that finishes a promotion it started as master leaves re-pointing to the new
/// master.
#[test]
fn a_promotion_finished_as_backup_repoints_nothing() {
    let mut h = master_h(vrrp_params(3));
    round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let mut decided = Vec::new();
    for _ in 0..3 {
        decided = round_with_peer(&mut h, vec![down(), standby(1, 1000, None), standby(1, 1100, None)]);
    }
    settle(&mut h, &decided, vec![standby(1, 1000, Some(PG3)), standby(1, 1100, None)]);
    assert!(matches!(h.m.phase(), Phase::FailingOver { candidate: PG3, .. }), "{:?}", h.m.phase());
    h.ev(Event::VrrpRole { master: false });
    let (actions, logs) = split(h.done(Action::Promote { node: PG3 }, Ok(())));
    assert!(!actions.iter().any(|a| matches!(a, Action::Repoint { .. } | Action::SetSyncStandbys { .. })), "{actions:?}");
    assert_logged(&logs, "re-pointing is left to the master");
    assert_eq!(h.m.writer(), Some(PG3));
}

/// (d) With `ANY 2` over seven nodes, a fenced node is still listed in
/// synchronous_standby_names and may hold the last commit: the guard counts it. Here pg6 and
/// the fenced pg7 are out of sight; with pg1 gone only 4 of the 6 listed standbys are visible,
/// and 5 are needed (the old guard counted 5 unfenced others, needed 4, and promoted).
#[test]
fn the_sync_guard_counts_fenced_standbys() {
    let mut p = params(7);
    p.synchronous_count = 2;
    let mut h = H::new(p);
    let healthy = |pg7: Result<NodeStatus, ProbeFailure>| {
        let mut v = vec![primary(1, 1000)];
        v.extend((0..5).map(|_| standby(1, 1000, Some(PG1))));
        v.push(pg7);
        v
    };
    h.round(healthy(standby(1, 1000, Some(PG1))));
    // pg7 turns primary on the writer's timeline (a restored backup): fenced, split brain.
    let (actions, _) = split(h.round(healthy(primary(1, 1000))));
    assert!(actions.iter().any(|a| matches!(a, Action::Fence { node: 6, .. })), "{actions:?}");
    let mut last = Vec::new();
    for _ in 0..4 {
        let mut v = vec![down()];
        v.extend((0..4).map(|_| standby(1, 1000, None)));
        v.extend([down(), down()]);
        last = split(h.round(v)).0;
    }
    assert!(!last.iter().any(|a| matches!(a, Action::Promote { .. })), "{last:?}");
    assert_eq!(h.m.view().blocked, Some(Blocked::SyncStandbysUnreachable { reachable: 4, needed: 5 }));
}

/// (e) Two masters that cannot hear each other: one that sees only part of the cluster does
/// not fail over, because the other may see a standby further ahead and promote that one.
#[test]
fn a_master_with_no_peer_heard_fails_over_only_with_the_whole_cluster_in_view() {
    let mut p = vrrp_params(5);
    p.synchronous_count = 0; // asynchronous: the sync guard would not stop it
    let mut a = master_h(p.clone());
    let mut b = master_h(p);
    let mut healthy = vec![primary(1, 1000)];
    healthy.extend((0..4).map(|_| standby(1, 1000, Some(PG1))));
    a.round(healthy.clone());
    b.round(healthy);
    // The peer is silent (VRRP cut between the two). pg1 dies. A cannot see pg5; B sees all,
    // pg5 ahead. Both have quorum (themselves and 4 of 7 members).
    let mut a_actions = Vec::new();
    let mut b_actions = Vec::new();
    // Detection takes 3 rounds; settling (no re-point reported done) ends at its deadline 3
    // rounds later.
    for _ in 0..7 {
        a_actions.extend(split(a.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None), standby(1, 1000, None), down()])).0);
        let b_view = vec![down(), standby(1, 1000, None), standby(1, 1000, None), standby(1, 1000, None), standby(1, 1100, None)];
        b_actions.extend(split(b.round(b_view)).0);
    }
    assert!(!a_actions.iter().any(|x| matches!(x, Action::Promote { .. })), "{a_actions:?}");
    assert_eq!(a.m.view().blocked, Some(Blocked::PartialView { unseen: 4 }));
    assert!(b_actions.contains(&Action::Promote { node: 4 }), "{b_actions:?}");
}

/// (e) Two masters with the same view rank the same candidate, whatever order their probes
/// came in, and only once positions stopped moving.
#[test]
fn two_masters_with_the_same_view_promote_the_same_node() {
    let p = vrrp_params(3);
    let mut a = master_h(p.clone());
    let mut b = master_h(p);
    let healthy = vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))];
    a.round(healthy.clone());
    b.round(healthy);
    let mut a_actions = Vec::new();
    let mut b_actions = Vec::new();
    // pg1 dies while pg3 still receives its last WAL: when A's third failed probe of pg1
    // completes the detection, A's latest probe of pg3 says 1150 (up from 1100; final 1300,
    // ahead of pg2). B's probes of pg3 all came after and say 1300.
    for r in 0..7 {
        let pg3 = match r {
            0 => 1100,
            1 => 1150,
            _ => 1300,
        };
        a_actions.extend(split(a.round(vec![down(), standby(1, 1200, None), standby(1, pg3, None)])).0);
        b_actions.extend(split(b.round(vec![down(), standby(1, 1200, None), standby(1, 1300, None)])).0);
    }
    let promoted = |v: &[Action]| v.iter().filter_map(|x| if let Action::Promote { node } = x { Some(*node) } else { None }).collect::<Vec<_>>();
    assert_eq!(promoted(&a_actions), [PG3]);
    assert_eq!(promoted(&b_actions), [PG3]);
}

/// Tracking: the master cut off from the writer (which the standbys still stream from) holds
/// the VIP for `track_hold`, then says it does not reach the writer (its VRRP priority drops
/// and a peer that reaches the writer takes the VIP); it says so again when it heals.
#[test]
fn a_master_cut_from_the_writer_lowers_its_priority_after_the_hold() {
    let mut h = master_h(vrrp_params(3));
    let (actions, _) = split(round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]));
    assert!(actions.contains(&Action::Track { writer_reachable: true }), "{actions:?}");
    let cut = vec![down(), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))];
    let mut tracked = Vec::new();
    for _ in 0..6 {
        let at = h.now;
        for a in split(round_with_peer(&mut h, cut.clone())).0 {
            if let Action::Track { writer_reachable } = a {
                tracked.push((at, writer_reachable));
            }
        }
        // The hold is a deadline of its own: a tick between probes.
        if let Some(d) = h.m.next_deadline().filter(|&d| d < h.now + ms(200)) {
            let back = h.now;
            h.now = d;
            for a in split(h.ev(Event::Tick)).0 {
                if let Action::Track { writer_reachable } = a {
                    tracked.push((d, writer_reachable));
                }
            }
            h.now = back.max(d);
        }
    }
    assert_eq!(tracked.len(), 1, "{tracked:?}");
    assert!(!tracked[0].1);
    assert_eq!(h.m.view().blocked, Some(Blocked::StandbyStreaming { standby: PG2 }));
    assert!(h.m.view().writer_reachable == Some(false));
    // Healed.
    let mut healed = Vec::new();
    for _ in 0..2 {
        healed.extend(split(round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))])).0);
    }
    assert!(healed.contains(&Action::Track { writer_reachable: true }), "{healed:?}");
}

/// Tracking: a crash the master fails over from never lowers its priority (nothing flips
/// while it promotes), and the promoted writer is reachable.
#[test]
fn a_crash_failover_keeps_the_masters_priority() {
    let mut h = master_h(vrrp_params(3));
    round_with_peer(&mut h, vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let mut all = Vec::new();
    let mut decided = Vec::new();
    for _ in 0..3 {
        decided = round_with_peer(&mut h, vec![down(), standby(1, 1000, None), standby(1, 1100, None)]);
        all.extend(split(decided.clone()).0);
    }
    all.extend(split(settle(&mut h, &decided, vec![standby(1, 1000, Some(PG3)), standby(1, 1100, None)])).0);
    all.extend(split(h.done(Action::Promote { node: PG3 }, Ok(()))).0);
    assert!(all.contains(&Action::Promote { node: PG3 }));
    assert!(!all.iter().any(|a| matches!(a, Action::Track { writer_reachable: false })), "{all:?}");
}

/// Self-healing: a replaced primary that answers again is rejoined by the master, once per
/// fence; a failure is retried after the backoff, doubling; success waits for the probes to
/// lift the fence.
#[test]
fn a_returning_former_primary_is_rejoined_once_with_backoff_on_failure() {
    let mut h = H::new(rejoin_params());
    h.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    crash_and_settle(&mut h, vec![standby(1, 1000, None), standby(1, 1100, None)]);
    h.done(Action::Promote { node: PG3 }, Ok(()));
    let back = [primary(1, 1000), standby(2, 1100, Some(PG3)), primary(2, 1200)];
    let actions = rounds(&mut h, 4, &back);
    let rejoins: Vec<&Action> = actions.iter().filter(|a| matches!(a, Action::Rejoin { .. })).collect();
    assert_eq!(rejoins, [&Action::Rejoin { node: PG1, primary: PG3 }], "once pg1 is up (after up_after probes)");
    let (actions, logs) = split(h.done(Action::Rejoin { node: PG1, primary: PG3 }, Err("pg_rewind failed".into())));
    assert_eq!(
        actions,
        [Action::Alert(Alert::RejoinFailed { node: PG1, error: "pg_rewind failed".into(), attempt: 1, retry_in: Duration::from_secs(10) })]
    );
    assert_logged(&logs, "it stays fenced");
    assert_eq!(h.state(PG1), NodeState::NeedsRejoin);
    let actions = rounds(&mut h, 45, &back); // 9 s
    assert!(!actions.iter().any(|a| matches!(a, Action::Rejoin { .. })), "not before the backoff: {actions:?}");
    let actions = rounds(&mut h, 6, &back);
    assert!(actions.contains(&Action::Rejoin { node: PG1, primary: PG3 }), "{actions:?}");
    let (actions, _) = split(h.done(Action::Rejoin { node: PG1, primary: PG3 }, Err("again".into())));
    assert!(
        actions.contains(&Action::Alert(Alert::RejoinFailed { node: PG1, error: "again".into(), attempt: 2, retry_in: Duration::from_secs(20) })),
        "{actions:?}"
    );
    let actions = rounds(&mut h, 105, &back);
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::Rejoin { .. })).count(), 1);
    let (actions, _) = split(h.done(Action::Rejoin { node: PG1, primary: PG3 }, Ok(())));
    assert_eq!(actions, [Action::Alert(Alert::RejoinDone { node: PG1, attempt: 3 })]);
    let actions = rounds(&mut h, 20, &back);
    assert!(!actions.iter().any(|a| matches!(a, Action::Rejoin { .. })), "once per fence: {actions:?}");
    // It streams on timeline 2: the fence lifts.
    rounds(&mut h, 1, &[standby(2, 1200, Some(PG3)), standby(2, 1200, Some(PG3)), primary(2, 1200)]);
    assert_eq!(h.m.view().nodes[PG1].fence, None);
}

/// Only the master rejoins, and never a split-brain primary (its writes would be rewound).
#[test]
fn rejoin_is_the_masters_and_never_for_a_split_brain() {
    let mut p = rejoin_params();
    p.vrrp_enabled = true;
    let mut h = H::new(p);
    h.ev(Event::VrrpRole { master: false });
    h.round(vec![primary(2, 1000), standby(2, 1000, Some(PG1)), standby(2, 1000, Some(PG1))]);
    let actions = rounds(&mut h, 5, &[primary(2, 1000), standby(2, 1000, Some(PG1)), primary(1, 900)]);
    assert!(actions.iter().any(|a| matches!(a, Action::Fence { node: PG3, .. })), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Rejoin { .. })), "a backup: {actions:?}");
    let mut actions = split(h.ev(Event::VrrpRole { master: true })).0;
    actions.extend(rounds(&mut h, 2, &[primary(2, 1000), standby(2, 1000, Some(PG1)), primary(1, 900)]));
    assert!(actions.contains(&Action::Rejoin { node: PG3, primary: PG1 }), "the master: {actions:?}");
    let mut sb = H::new(rejoin_params());
    sb.round(vec![primary(1, 1000), standby(1, 1000, Some(PG1)), standby(1, 1000, Some(PG1))]);
    let actions = rounds(&mut sb, 5, &[primary(1, 1000), primary(1, 1000), standby(1, 1000, Some(PG1))]);
    assert!(actions.iter().any(|a| matches!(a, Action::Fence { node: PG2, reason: FenceReason::SplitBrain { .. } })));
    assert!(!actions.iter().any(|a| matches!(a, Action::Rejoin { .. })), "split brain: {actions:?}");
}

/// The writer is lost and a standby answers on a newer timeline than any primary seen here
/// (its primary, promoted out of sight, not probed since): failover waits for a probe of every
/// node, and then adopts the new primary. Before, it ranked on the raised floor at once and
/// promoted that standby, forking the unseen primary's timeline.
#[test]
fn a_standby_on_a_newer_timeline_makes_failover_look_for_its_primary_first() {
    let mut h = steady(3);
    for _ in 0..2 {
        h.round(vec![down(), standby(1, 1000, None), standby(1, 1000, None)]);
    }
    let (mut actions, logs) = split(h.probe(PG3, standby(2, 1500, Some(PG2))));
    assert_logged(&logs, "whose primary has not been seen here");
    h.now += ms(200);
    actions.extend(split(h.probe(PG1, down())).0);
    assert!(!actions.iter().any(|a| matches!(a, Action::Alert(Alert::FailoverStarted { .. }) | Action::Promote { .. })), "{actions:?}");
    assert_eq!(h.m.view().blocked, Some(Blocked::NewerPrimaryUnseen { timeline: 2, unprobed: PG2 }));
    // Probed again: pg2 is that primary.
    let (actions, _) = split(h.probe(PG2, primary(2, 1500)));
    assert!(actions.contains(&Action::SetWriter { node: Some(PG2) }), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Promote { .. })), "{actions:?}");
}
