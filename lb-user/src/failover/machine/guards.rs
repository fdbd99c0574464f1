//! Rule 2's guards, in the order they are asked ([`GUARDS`]): each a pure function of the
//! machine and the check, returning why it holds a failover back (the first that does is
//! reported, [`Blocked`]). A new rule is one function here, one line in [`GUARDS`] and one
//! variant of [`Blocked`]; the arithmetic they share is in [`crate::failover::rules`].

use super::*;

/// What one failover check is about: the writer lost (`None`: no writer was known), since when
/// the machine has been without one, and now.
pub(super) struct Check {
    pub old: Option<NodeId>,
    pub since: Duration,
    pub now: Duration,
}

type Guard = fn(&Machine, &Check) -> Result<(), Blocked>;

/// Rule 2, in order.
pub(super) const GUARDS: [Guard; 13] = [
    writer_gone,
    not_paused,
    master,
    recorded,
    quorum,
    no_standby_streams,
    no_peer_reaches_writer,
    no_unconfirmed_timeline,
    newest_primary_looked_for,
    no_promotion_unsettled,
    sync_standbys_in_view,
    whole_cluster_in_view,
    positions_final,
];

/// What a manual failover (`pglb failover`) still asks, in order: the writer declared down, and
/// every guard whose failure means the old writer may be alive, another promotion may be under
/// way, or the decision could not be recorded. The others (the pause, the quorum, the zero-loss
/// guard, the whole cluster in view, final positions) and rule 3's ranking are the operator's
/// to override: what they protect is the data the [`Gap`] names.
pub(super) const MANUAL_GUARDS: [Guard; 8] = [
    writer_gone,
    master,
    recorded,
    no_standby_streams,
    no_peer_reaches_writer,
    no_unconfirmed_timeline,
    newest_primary_looked_for,
    no_promotion_unsettled,
];

/// The writer failed `failover_after` consecutive probes (or is fenced, or answers in
/// recovery); without a known writer, nobody was one for the detection time.
fn writer_gone(m: &Machine, c: &Check) -> Result<(), Blocked> {
    let needed = m.p.failover_after;
    match c.old {
        Some(o) => {
            let t = &m.nodes[o];
            let gone = t.failures >= needed || t.fence.is_some() || t.status.as_ref().is_some_and(|s| s.in_recovery);
            if !gone {
                return Err(Blocked::Debouncing { failures: t.failures, needed });
            }
        }
        None => {
            let waited = c.now.saturating_sub(c.since);
            if waited < m.p.detection_time() {
                let failures = (waited.as_nanos() / m.p.probe_interval.as_nanos().max(1)) as u32;
                return Err(Blocked::Debouncing { failures, needed });
            }
        }
    }
    Ok(())
}

/// No pause is in force (maintenance mode: the operator restarts or upgrades PostgreSQL and
/// takes the writer's absence for planned).
fn not_paused(m: &Machine, _: &Check) -> Result<(), Blocked> {
    match m.paused() {
        Some(p) => Err(Blocked::Paused { by: p.by.clone(), reason: p.reason.clone() }),
        None => Ok(()),
    }
}

/// Only the VRRP master acts.
fn master(m: &Machine, _: &Check) -> Result<(), Blocked> {
    if m.is_master() { Ok(()) } else { Err(Blocked::NotMaster) }
}

/// No action without its record: the state file can be written.
fn recorded(m: &Machine, _: &Check) -> Result<(), Blocked> {
    if m.record_failing { Err(Blocked::StateNotRecorded) } else { Ok(()) }
}

/// This instance, the reachable nodes and the peers that reported recently are more than half
/// of all members.
fn quorum(m: &Machine, c: &Check) -> Result<(), Blocked> {
    let (votes, members) = m.quorum(c.now);
    if rules::has_quorum(votes, members) { Ok(()) } else { Err(Blocked::NoQuorum { votes, members }) }
}

/// No reachable standby still streams from the writer: it is alive, only cut from us.
fn no_standby_streams(m: &Machine, c: &Check) -> Result<(), Blocked> {
    match m.streaming_standby(c.old) {
        Some(standby) => Err(Blocked::StandbyStreaming { standby }),
        None => Ok(()),
    }
}

/// No peer last said it reaches the writer this instance had lost.
fn no_peer_reaches_writer(m: &Machine, c: &Check) -> Result<(), Blocked> {
    let Some(o) = c.old else { return Ok(()) };
    let reached = m.peer_reports.iter().position(|w| w.as_ref().is_some_and(|w| w.lost_here && w.report.writer.as_deref() == Some(m.name(o))));
    match reached {
        Some(i) => Err(Blocked::PeerReachesWriter { peer: m.p.peers[i] }),
        None => Ok(()),
    }
}

/// No peer reports a timeline no probe here confirms (a promotion may have happened out of
/// sight).
fn no_unconfirmed_timeline(m: &Machine, _: &Check) -> Result<(), Blocked> {
    match m.hint() {
        Some((timeline, peer)) => Err(Blocked::PeerTimelineUnconfirmed { peer, timeline }),
        None => Ok(()),
    }
}

/// A standby answered on a timeline newer than any primary seen here: a primary on it exists
/// (or did) out of sight, perhaps promoted by a peer a moment ago, and that standby may be its
/// follower. Every node is probed once more first: the new primary, if it answers, is adopted
/// by rule 1 rather than forked by promoting one of its standbys.
pub(super) fn newest_primary_looked_for(m: &Machine, _: &Check) -> Result<(), Blocked> {
    let Some((at, timeline, by)) = m.floor_raised_by_standby else { return Ok(()) };
    match (0..m.nodes.len()).find(|&n| n != by && m.nodes[n].last_obs_at.is_none_or(|o| o <= at)) {
        Some(unprobed) => Err(Blocked::NewerPrimaryUnseen { timeline, unprobed }),
        None => Ok(()),
    }
}

/// No promotion whose outcome is unknown (promoting another node could make two primaries).
fn no_promotion_unsettled(m: &Machine, _: &Check) -> Result<(), Blocked> {
    match m.promoting_from {
        Some((node, _)) => Err(Blocked::PromotionUnsettled { node }),
        None => Ok(()),
    }
}

/// With `ANY k` synchronous replication over the n other nodes, at least n − k + 1 of them are
/// reachable standbys: the one holding the last acknowledged commit is in view. The synchronous
/// standbys are every node but the old writer (`SetSyncStandbys` lists them all, fenced ones
/// too: a fenced node that streams may hold the last commit). A node that answers on an older
/// timeline (a stale primary, a standby off the writer's history) holds no commit of the
/// writer's timeline, so it does not count. Nor does a node fenced as a former primary that
/// needs a rejoin (replaced, or a primary on an older timeline): its history forked from the
/// writer's, so it cannot stream from it until it is rewound, and a rewound node that streams
/// answers as a standby on the writer's timeline, which lifts its fence. This decides a
/// cascade: the writer that replaced a crashed primary crashes too, and its only other
/// standby, the one that streamed from it, holds every acknowledged commit (docs/DECISIONS.md,
/// "A cascade of primary losses").
fn sync_standbys_in_view(m: &Machine, c: &Check) -> Result<(), Blocked> {
    let forked = |n: NodeId| m.nodes[n].fence.is_some_and(|f| f.state() == NodeState::NeedsRejoin);
    let listed = (0..m.nodes.len()).filter(|&n| Some(n) != c.old && !m.on_older_timeline(n) && !forked(n)).count();
    // Without a known old writer, one of the listed nodes was it.
    let others = listed.saturating_sub(usize::from(c.old.is_none()));
    let reachable = (0..m.nodes.len()).filter(|&n| Some(n) != c.old && m.visible_standby(n) && !m.on_older_timeline(n)).count();
    let needed = rules::sync_standbys_needed(others, m.p.synchronous_count);
    if reachable < needed { Err(Blocked::SyncStandbysUnreachable { reachable, needed }) } else { Ok(()) }
}

/// Two masters that cannot hear each other must rank the same candidate: without a peer heard,
/// each needs the whole cluster (every node that could be a candidate) in view.
fn whole_cluster_in_view(m: &Machine, c: &Check) -> Result<(), Blocked> {
    let peer_heard = m.peers_heard.iter().flatten().any(|&h| c.now.saturating_sub(h) <= m.p.peer_timeout);
    if !m.p.vrrp_enabled || m.p.peers.is_empty() || peer_heard {
        return Ok(());
    }
    let unseen = (0..m.nodes.len()).find(|&n| Some(n) != c.old && m.nodes[n].fence.is_none() && m.may_promote(n) && !m.visible_standby(n));
    match unseen {
        Some(unseen) => Err(Blocked::PartialView { unseen }),
        None => Ok(()),
    }
}

/// Rank only final positions: a standby still receiving could overtake the first. A standby
/// catching up from another visible standby (a cascade) can never pass its upstream, whose own
/// position is checked here: its movement holds nothing back. The old writer counts as one once
/// it answers in recovery (a switchover's demoted node).
fn positions_final(m: &Machine, _: &Check) -> Result<(), Blocked> {
    let on_timeline = |s: &NodeStatus| m.writer_timeline.is_none_or(|tl| s.timeline == tl);
    let bounded_by_checked =
        |s: &NodeStatus| s.wal_receiver.as_ref().filter(|r| r.is_streaming()).and_then(|r| m.sender_node(r)).is_some_and(|u| m.visible_standby(u));
    let moving = (0..m.nodes.len()).filter(|&n| m.visible_standby(n)).find(|&n| {
        let t = &m.nodes[n];
        t.status.as_ref().is_some_and(|s| on_timeline(s) && s.received() != t.prev_received && !bounded_by_checked(s))
    });
    match moving {
        Some(standby) => Err(Blocked::PositionsMoving { standby }),
        None => Ok(()),
    }
}

impl Machine {
    /// `n` is up and answers in recovery.
    pub(super) fn visible_standby(&self, n: NodeId) -> bool {
        let t = &self.nodes[n];
        t.up() && t.status.as_ref().is_some_and(|s| s.in_recovery)
    }

    /// `n` is up and answers on a timeline older than the floor.
    pub(super) fn on_older_timeline(&self, n: NodeId) -> bool {
        let floor = self.writer_timeline.unwrap_or(0);
        let t = &self.nodes[n];
        t.up() && t.status.as_ref().is_some_and(|s| s.timeline < floor)
    }
}
