//! The pure decisions of the failover rules (docs/ARCHITECTURE.md, "Failover rules"), as
//! functions of plain data: writer choice and fencing (rules 1 and 6), quorum (rule 2),
//! candidate ranking (rule 3), reader eligibility (rule 7) and the synchronous-replication
//! guard.

use std::cmp::Reverse;
use std::time::Duration;

use super::types::{FenceReason, NodeId};

/// Whether `votes` is more than half of `members`.
pub fn has_quorum(votes: usize, members: usize) -> bool {
    2 * votes > members
}

/// Rule 1 over the reachable, unfenced primaries `(node, timeline)`: the writer is the one on
/// the highest timeline; on a tie `previous` is kept if it is among them (otherwise nobody is
/// chosen: there is no safe pick). Every other primary is fenced: a tie as split brain, a lower
/// timeline as a returning old primary.
pub fn choose_writer(
    primaries: &[(NodeId, u32)],
    previous: Option<NodeId>,
) -> (Option<NodeId>, Vec<(NodeId, FenceReason)>) {
    let Some(top) = primaries.iter().map(|&(_, tl)| tl).max() else {
        return (None, Vec::new());
    };
    let on_top: Vec<NodeId> = primaries.iter().filter(|&&(_, tl)| tl == top).map(|&(n, _)| n).collect();
    let chosen = match on_top.as_slice() {
        [only] => Some(*only),
        _ => previous.filter(|p| on_top.contains(p)),
    };
    let Some(writer) = chosen else {
        return (None, Vec::new());
    };
    let fences = primaries
        .iter()
        .filter(|&&(n, _)| n != writer)
        .map(|&(n, tl)| {
            let reason = if tl == top {
                FenceReason::SplitBrain { writer, timeline: top }
            } else {
                FenceReason::OlderTimeline { timeline: tl, writer_timeline: top }
            };
            (n, reason)
        })
        .collect();
    (Some(writer), fences)
}

/// A standby that may be promoted, as rule 3 compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub node: NodeId,
    pub received: u64,
    pub priority: u32,
    pub name: &'a str,
}

/// Rule 3's order: highest received LSN, then highest priority, then name.
pub fn rank_candidates(candidates: &mut [Candidate<'_>]) {
    candidates.sort_by_key(|c| (Reverse(c.received), Reverse(c.priority), c.name.to_owned()));
}

/// Whether a standby `received` bytes into the WAL is within `max_lag` of `reference`.
pub fn within_lag(reference: u64, received: u64, max_lag: u64) -> bool {
    reference.saturating_sub(received) <= max_lag
}

/// With `ANY count` synchronous replication over `others` standbys, how many of them must be
/// visible so that at least one holds every acknowledged commit (`others − count + 1`; 0 when
/// replication is asynchronous).
pub fn sync_standbys_needed(others: usize, count: u32) -> usize {
    if count == 0 { 0 } else { (others + 1).saturating_sub(count as usize) }
}

/// Rule 7 for one standby: replay position and replay delay both within their limits. An
/// unknown writer position skips the byte check; an unknown replay position fails it.
pub fn read_lag_ok(
    writer_lsn: Option<u64>,
    replay_lsn: Option<u64>,
    replay_lag: Option<Duration>,
    max_bytes: u64,
    max_lag: Duration,
) -> bool {
    let bytes_ok = match (writer_lsn, replay_lsn) {
        (Some(w), Some(r)) => within_lag(w, r, max_bytes),
        (Some(_), None) => false,
        (None, _) => true,
    };
    bytes_ok && replay_lag.is_none_or(|l| l <= max_lag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_table() {
        for (votes, members, want) in [(3, 5, true), (2, 5, false), (2, 4, false), (3, 4, true), (1, 1, true), (0, 1, false)] {
            assert_eq!(has_quorum(votes, members), want, "{votes}/{members}");
        }
    }

    #[test]
    fn choose_writer_table() {
        use FenceReason::*;
        type Case = (&'static [(NodeId, u32)], Option<NodeId>, Option<NodeId>, Vec<(NodeId, FenceReason)>);
        let cases: Vec<Case> = vec![
            (&[], None, None, vec![]),
            (&[(0, 1)], None, Some(0), vec![]),
            (&[(0, 1), (1, 2)], Some(0), Some(1), vec![(0, OlderTimeline { timeline: 1, writer_timeline: 2 })]),
            (&[(0, 2), (1, 2)], Some(1), Some(1), vec![(0, SplitBrain { writer: 1, timeline: 2 })]),
            (&[(0, 2), (1, 2)], None, None, vec![]),
            (&[(0, 2), (1, 2)], Some(2), None, vec![]),
            (
                &[(0, 1), (1, 3), (2, 3)],
                Some(2),
                Some(2),
                vec![(0, OlderTimeline { timeline: 1, writer_timeline: 3 }), (1, SplitBrain { writer: 2, timeline: 3 })],
            ),
        ];
        for (primaries, previous, want, fences) in cases {
            assert_eq!(choose_writer(primaries, previous), (want, fences), "{primaries:?} previous {previous:?}");
        }
    }

    #[test]
    fn candidate_order() {
        let mut c = vec![
            Candidate { node: 0, received: 100, priority: 100, name: "pg1" },
            Candidate { node: 1, received: 200, priority: 50, name: "pg2" },
            Candidate { node: 2, received: 200, priority: 100, name: "pg3" },
            Candidate { node: 3, received: 200, priority: 100, name: "pg0" },
        ];
        rank_candidates(&mut c);
        let order: Vec<NodeId> = c.iter().map(|c| c.node).collect();
        assert_eq!(order, [3, 2, 1, 0]);
    }

    #[test]
    fn sync_needed_table() {
        for (others, count, want) in [(2, 1, 2), (2, 0, 0), (3, 2, 2), (1, 1, 1), (0, 1, 0), (4, 1, 4)] {
            assert_eq!(sync_standbys_needed(others, count), want, "{others} standbys, ANY {count}");
        }
    }

    #[test]
    fn read_lag_table() {
        let s = Duration::from_secs;
        let cases = [
            (Some(1000), Some(900), Some(s(0)), true),
            (Some(1000), Some(800), Some(s(0)), false),
            (Some(1000), Some(1000), Some(s(2)), false),
            (Some(1000), None, None, false),
            (None, None, None, true),
            (Some(900), Some(1000), None, true),
        ];
        for (w, r, l, want) in cases {
            assert_eq!(read_lag_ok(w, r, l, 100, s(1)), want, "{w:?} {r:?} {l:?}");
        }
    }
}
