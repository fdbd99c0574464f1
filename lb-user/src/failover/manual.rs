//! Manual failover (`pglb failover --to NODE`): the operator's request ([`ManualRequest`]), what
//! promoting the target may lose ([`Gap`]), why a request is refused ([`ManualRefused`]) and how
//! it ended ([`ManualOutcome`]). The machine decides (`machine/manual.rs`); this is its
//! vocabulary.

use std::fmt;

use super::{Blocked, NodeId};

/// `pglb failover --to NODE [--accept-data-loss]`: promote `to` although automatic failover is
/// held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualRequest {
    pub to: NodeId,
    /// The operator accepts losing what the target lacks ([`Gap`]).
    pub accept_data_loss: bool,
}

/// What promoting the target may lose, from what the machine knows: the lost writer's last
/// probed position and each other standby's last one, against what the target received. WAL
/// the lost primary wrote after its last probe is not known to anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The lost writer's last known WAL position (`pg_current_wal_lsn()` of its last probe), and
    /// which node it was. `None`: no probe of it is known here (a restarted load balancer).
    pub primary: Option<(u64, NodeId)>,
    /// The furthest position another standby on the writer's timeline was last seen with.
    pub furthest_standby: Option<(u64, NodeId)>,
    /// The target's received and replayed positions.
    pub received: Option<u64>,
    pub replayed: Option<u64>,
    /// Standbys whose position now is not known (down, or not answering as standbys): they may
    /// hold more than anything seen here.
    pub unseen: Vec<NodeId>,
}

impl Gap {
    /// Bytes the target lacks of the furthest position known; `None` when the lost writer's
    /// position or the target's is not known.
    pub fn bytes(&self) -> Option<u64> {
        let primary = self.primary?.0;
        let furthest = self.furthest_standby.map_or(primary, |(s, _)| s.max(primary));
        Some(furthest.saturating_sub(self.received?))
    }

    /// Nothing known is lost: the target has the furthest position known and no standby is out
    /// of sight.
    pub fn is_zero(&self) -> bool {
        self.bytes() == Some(0) && self.unseen.is_empty()
    }

    /// What the target still has to replay before the promotion ends (not lost: slower).
    pub fn to_replay(&self) -> Option<u64> {
        Some(self.received?.saturating_sub(self.replayed?))
    }
}

/// Why the target may not be promoted, whatever the operator accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// It does not answer (down, or never probed).
    NotAnswering,
    /// It answers as a primary.
    Primary,
    /// Fenced: a former primary that needs a rejoin, or a split-brain primary.
    Fenced,
    /// It is the writer that was lost.
    OldWriter,
    /// `nofailover = true` in its `[[node]]`.
    NoFailover,
    /// Disabled with `pglb node disable`.
    Disabled,
    /// It is a standby on another timeline than the newest routed here.
    Timeline { timeline: u32, floor: u32 },
}

/// Why a manual failover is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManualRefused {
    /// There is no node with that index.
    UnknownNode { to: NodeId },
    /// The instance is starting (or woke after a stall): it decides nothing before a fresh probe
    /// of every node.
    Starting,
    /// The writer is routed and answers: a planned change is `pglb switchover`.
    WriterHealthy { writer: Option<NodeId> },
    /// The writer has not failed enough probes to be declared down.
    WriterNotDown { writer: Option<NodeId>, failures: u32, needed: u32 },
    /// A failover or switchover is already running (the phase's name).
    Busy { phase: &'static str },
    /// This load balancer is a VRRP backup: the master acts on failovers.
    NotMaster,
    /// A guard that `--accept-data-loss` does not override holds: the old writer may be alive,
    /// another promotion may be under way, or the decision could not be recorded.
    Held(Blocked),
    /// The target may not be promoted.
    Target { to: NodeId, why: Unfit },
    /// Promoting the target loses what [`Gap`] says, or an unknown amount, and the operator did
    /// not accept it (`--accept-data-loss`).
    DataLoss { to: NodeId, gap: Gap },
}

impl ManualRefused {
    /// A short stable name for scripts (`pglb failover --json`'s `refusal`).
    pub fn code(&self) -> &'static str {
        match self {
            ManualRefused::UnknownNode { .. } => "unknown-node",
            ManualRefused::Starting => "starting",
            ManualRefused::WriterHealthy { .. } => "writer-healthy",
            ManualRefused::WriterNotDown { .. } => "writer-not-down",
            ManualRefused::Busy { .. } => "busy",
            ManualRefused::NotMaster => "not-master",
            ManualRefused::Held(_) => "held",
            ManualRefused::Target { .. } => "target-unfit",
            ManualRefused::DataLoss { .. } => "data-loss",
        }
    }

    /// The refusal for an operator, nodes by name, ending with what to do.
    pub fn explain(&self, name: &dyn Fn(NodeId) -> String) -> String {
        let writer = |w: &Option<NodeId>| w.map_or_else(|| "the writer".to_owned(), |w| format!("the writer {}", name(w)));
        match self {
            ManualRefused::UnknownNode { to } => format!("there is no node #{to}"),
            ManualRefused::Starting => {
                "this load balancer is starting: it decides after a fresh probe of every node; try again in a few seconds".to_owned()
            }
            ManualRefused::WriterHealthy { writer: w } => format!(
                "{} is routed and answers: a manual failover is for a lost primary; for a planned change without loss use `pglb switchover --to NODE`",
                writer(w)
            ),
            ManualRefused::WriterNotDown { writer: w, failures, needed } => format!(
                "{} has failed {failures} of the {needed} probes that declare it down: wait until it is (`pglb status` shows the phase writer-lost), or use `pglb switchover --to NODE` if it is alive",
                writer(w)
            ),
            ManualRefused::Busy { phase } => {
                format!("a failover or switchover is running (phase {phase}): wait for it to end (`pglb status`)")
            }
            ManualRefused::NotMaster => {
                "this load balancer is a vrrp backup: only the vrrp master (the VIP holder) acts on failovers; run the command there".to_owned()
            }
            ManualRefused::Held(b) => {
                let what = match b {
                    Blocked::StandbyStreaming { .. } | Blocked::PeerReachesWriter { .. } => {
                        "the primary is alive (only this load balancer lost it): fix the path to it, or use `pglb switchover --to NODE` on a load balancer that reaches it"
                    }
                    Blocked::StateNotRecorded => "the promotion could not be recorded: fix the state directory first",
                    _ => "wait until it clears (`pglb status`), then try again",
                };
                format!("{}; --accept-data-loss does not override this: {what}", with_names(&b.to_string(), name))
            }
            ManualRefused::Target { to, why } => {
                let to = name(*to);
                match why {
                    Unfit::NotAnswering => format!("{to} does not answer as a standby: choose a reachable standby (`pglb status`)"),
                    Unfit::Primary => format!("{to} answers as a primary, not a standby"),
                    Unfit::Fenced => format!("{to} is fenced (a former primary): `pglb node rejoin` it first, or choose another standby"),
                    Unfit::OldWriter => format!("{to} is the writer that was lost"),
                    Unfit::NoFailover => format!("{to} has nofailover = true in its [[node]]: it is never promoted"),
                    Unfit::Disabled => format!("{to} is disabled: `pglb node enable {to}` first, or choose another standby"),
                    Unfit::Timeline { timeline, floor } => {
                        format!("{to} is a standby on timeline {timeline}, not on the newest routed here ({floor})")
                    }
                }
            }
            ManualRefused::DataLoss { to, gap } => {
                format!("{}; add --accept-data-loss to promote {} anyway", describe_gap(gap, name), name(*to))
            }
        }
    }
}

impl fmt::Display for ManualRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain(&|n| format!("#{n}")))
    }
}

/// A [`Blocked`] reason's text with `#N` replaced by node names (highest index first, so `#1`
/// does not eat `#12`).
pub fn with_names(text: &str, name: &dyn Fn(NodeId) -> String) -> String {
    let mut ids: Vec<NodeId> = text.match_indices('#').filter_map(|(i, _)| text[i + 1..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.into_iter().fold(text.to_owned(), |t, n| t.replace(&format!("#{n}"), &name(n)))
}

/// PostgreSQL's notation of a WAL position.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// One sentence on what promoting the target loses.
pub fn describe_gap(gap: &Gap, name: &dyn Fn(NodeId) -> String) -> String {
    let loss = match (gap.bytes(), gap.primary) {
        (Some(0), _) if gap.is_zero() => "promoting loses nothing known here".to_owned(),
        (Some(b), Some(_)) => format!("promoting loses at least {b} bytes of WAL"),
        (_, None) => "the data loss is unknown: no probe of the lost primary is known here (a restarted load balancer?)".to_owned(),
        (None, Some(_)) => "the data loss is unknown: the target's position is not known".to_owned(),
    };
    format!("{loss}: {}", gap_positions(gap, name))
}

/// The positions behind a [`Gap`]: the target's, the furthest known, who may hold more, and
/// what is still to replay.
pub fn gap_positions(gap: &Gap, name: &dyn Fn(NodeId) -> String) -> String {
    let received = gap.received.map_or_else(|| "an unknown position".to_owned(), lsn_text);
    let furthest = match (gap.primary, gap.furthest_standby) {
        (p, Some((s, n))) if p.is_none_or(|(p, _)| s > p) => format!("{} (on {})", lsn_text(s), name(n)),
        (Some((p, old)), _) => format!("{} (the last probe of {})", lsn_text(p), name(old)),
        (None, _) => "not known".to_owned(),
    };
    let mut s = format!("the target has received {received}, the furthest position known is {furthest}");
    if !gap.unseen.is_empty() {
        let names: Vec<String> = gap.unseen.iter().map(|&n| name(n)).collect();
        s.push_str(&format!("; {} out of sight may hold more", names.join(", ")));
    }
    if let Some(r) = gap.to_replay().filter(|&r| r > 0) {
        s.push_str(&format!("; {r} bytes received are still to replay before the promotion ends"));
    }
    s
}

/// How a manual failover ended, for the operator waiting for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManualOutcome {
    /// Refused at once: nothing changed.
    Refused { to: NodeId, reason: ManualRefused },
    /// `to` is the writer on `timeline`; `fenced` (the lost writer) is fenced as after an
    /// automatic failover. `held_back`: why automatic failover had not acted.
    Done { from: Option<NodeId>, to: NodeId, timeline: u32, fenced: Option<NodeId>, gap: Gap, held_back: Option<Blocked> },
    /// Accepted, but the promotion was not made or failed (`reason`); the writer is still lost.
    Failed { to: NodeId, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(primary: Option<u64>, standby: Option<u64>, received: Option<u64>, unseen: Vec<NodeId>) -> Gap {
        Gap { primary: primary.map(|p| (p, 0)), furthest_standby: standby.map(|s| (s, 2)), received, replayed: received, unseen }
    }

    #[test]
    fn gap_bytes_and_zero() {
        let cases = [
            (gap(Some(1000), Some(900), Some(900), vec![]), Some(100), false),
            (gap(Some(1000), Some(1200), Some(1000), vec![]), Some(200), false),
            (gap(Some(1000), None, Some(1000), vec![]), Some(0), true),
            (gap(Some(1000), None, Some(1100), vec![]), Some(0), true),
            (gap(Some(1000), None, Some(1000), vec![2]), Some(0), false),
            (gap(None, Some(900), Some(900), vec![]), None, false),
            (gap(Some(1000), None, None, vec![]), None, false),
        ];
        for (g, bytes, zero) in cases {
            assert_eq!((g.bytes(), g.is_zero()), (bytes, zero), "{g:?}");
        }
    }

    #[test]
    fn refusals_name_nodes_and_what_to_do() {
        let name = |n: NodeId| format!("pg{}", n + 1);
        let loss = ManualRefused::DataLoss { to: 1, gap: gap(Some(0x3000500), Some(0x3000100), Some(0x3000000), vec![]) };
        let text = loss.explain(&name);
        assert!(text.contains("at least 1280 bytes") && text.contains("0/3000500 (the last probe of pg1)") && text.ends_with("add --accept-data-loss to promote pg2 anyway"), "{text}");
        let held = ManualRefused::Held(Blocked::StandbyStreaming { standby: 2 });
        assert!(held.explain(&name).contains("standby pg3 still streams") && held.explain(&name).contains("pglb switchover"), "{}", held.explain(&name));
        assert!(ManualRefused::WriterHealthy { writer: Some(0) }.explain(&name).contains("the writer pg1 is routed and answers"));
        assert_eq!(with_names("node #1 and #12", &name), "node pg2 and pg13");
    }
}
