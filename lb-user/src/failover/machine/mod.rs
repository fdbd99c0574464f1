//! [`Machine`]: the failover state machine itself. See the module doc of [`crate::failover`]
//! for the rules and the transition table. This file holds the machine's state and its entry
//! points ([`Machine::handle`], [`Machine::next_deadline`], [`Machine::view`]), the state
//! file's writes and waking after a stall; each concern of the decision has a room of its own:
//!
//! - [`durable`]: what the state file keeps, and [`Machine::restore`] from it;
//! - [`observe`]: probes, peer reports and VRRP in: node tracks, the floor, the quorum;
//! - [`routing`]: the phase handlers, rule 1 (the writer), rule 7 (readers), VRRP tracking;
//! - [`guards`]: rule 2's guards, one pure function each, in the order they are asked;
//! - [`failover`]: rule 3's candidate, settling, the promotion and its outcome;
//! - [`switchover`]: the planned change of the writer;
//! - [`repair`]: fences, re-pointing, rejoining;
//! - [`maintenance`]: the pause (`pglb pause`, `pglb resume`), the newest one winning;
//! - [`manual`]: the operator's failover (`pglb failover`) past the guards it may override;
//! - [`marks`]: the node marks (`pglb node drain|disable`, …), the newest per node and kind.
//! - [`reconfigure`]: new parameters from a reload of the config.

use std::mem::discriminant;
use std::time::Duration;

mod durable;
mod failover;
mod guards;
mod maintenance;
mod manual;
mod marks;
mod observe;
mod reconfigure;
mod repair;
mod routing;
mod switchover;

use super::manual::*;
use super::observation::*;
use super::operator::*;
use super::rules::{self, Candidate};
use super::types::*;

/// Whether a node answers, debounced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Unknown,
    Up,
    Down,
}

/// What the machine remembers about one node.
#[derive(Debug, Clone)]
struct NodeTrack {
    /// The last successful probe and when it started.
    status: Option<NodeStatus>,
    status_at: Duration,
    /// `at` of the newest observation (older ones arriving late are ignored).
    last_obs_at: Option<Duration>,
    /// When a probe result (real, or a stale one counted as failure) was last counted.
    last_count_at: Duration,
    failures: u32,
    successes: u32,
    health: Health,
    fence: Option<FenceReason>,
    last_error: Option<ProbeFailure>,
    state: NodeState,
    last_change: Duration,
    /// Since when this standby has not streamed from the writer.
    misdirected_since: Option<Duration>,
    last_repoint: Option<Duration>,
    /// When a re-point of this node was last reported done.
    repoint_done_at: Option<Duration>,
    /// A failed promotion keeps this node out of the candidates until then.
    excluded_until: Option<Duration>,
    /// Demoted by a switchover then: a "primary" answer to an older probe is out of date.
    demoted_at: Option<Duration>,
    /// When the current run of good probes began (the first answer after failures).
    answering_since: Duration,
    /// The received position of the successful probe before the last one: a standby whose
    /// position still moves is not ranked yet (every load balancer must rank the same one).
    prev_received: Option<u64>,
    /// `rejoin_command` runs for this fence (reset whenever the fence is set or lifted).
    rejoin: RejoinTrack,
}

/// The automatic rejoin of one fenced former primary: once per fence, with backoff on failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RejoinTrack {
    /// Attempts made for the current fence.
    attempts: u32,
    /// A `Rejoin` action is out (waiting for its report).
    in_flight: bool,
    /// The last attempt succeeded: the node is on its way back (probes lift the fence).
    succeeded: bool,
    /// Not before this time (backoff after a failure).
    not_before: Option<Duration>,
}

impl NodeTrack {
    fn new() -> Self {
        NodeTrack {
            status: None,
            status_at: Duration::ZERO,
            last_obs_at: None,
            last_count_at: Duration::ZERO,
            failures: 0,
            successes: 0,
            health: Health::Unknown,
            fence: None,
            last_error: None,
            state: NodeState::Unknown,
            last_change: Duration::ZERO,
            misdirected_since: None,
            last_repoint: None,
            repoint_done_at: None,
            excluded_until: None,
            demoted_at: None,
            answering_since: Duration::ZERO,
            prev_received: None,
            rejoin: RejoinTrack::default(),
        }
    }

    fn role(&self) -> Role {
        match &self.status {
            None => Role::Unknown,
            Some(s) if s.in_recovery => Role::Standby,
            Some(_) => Role::Primary,
        }
    }

    fn up(&self) -> bool {
        self.health == Health::Up
    }

    /// Up, unfenced and a standby: the nodes rules 3 and 7 choose from.
    fn usable_standby(&self) -> Option<&NodeStatus> {
        self.status.as_ref().filter(|s| s.in_recovery && self.up() && self.fence.is_none())
    }

    /// Up, unfenced and a primary.
    fn usable_primary(&self) -> Option<&NodeStatus> {
        self.status.as_ref().filter(|s| !s.in_recovery && self.up() && self.fence.is_none())
    }
}

/// A peer's last report, when it arrived, and whether the writer it said it reaches was lost
/// here then.
#[derive(Debug, Clone)]
struct PeerWord {
    report: PeerReport,
    at: Duration,
    lost_here: bool,
}

/// Promotion after a failover or a switchover: they differ in who gets fenced and re-pointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Promotion {
    Failover { old: Option<NodeId> },
    /// `started`: when the switchover refused new writes.
    Switchover { from: NodeId, started: Duration },
}

/// A switchover's fixed facts, as its phase holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Switch {
    from: NodeId,
    to: NodeId,
    deadline: Duration,
    started: Duration,
}

impl Switch {
    fn phase(self, stage: SwitchoverStage) -> Phase {
        Phase::Switchover { from: self.from, to: self.to, stage, deadline: self.deadline, started: self.started }
    }
}

/// The failover state machine. Feed it [`Event`]s with the current time; apply the returned
/// [`Action`]s in order; call again with [`Event::Tick`] at [`Machine::next_deadline`].
#[derive(Debug, Clone)]
pub struct Machine {
    p: Params,
    nodes: Vec<NodeTrack>,
    phase: Phase,
    /// The routed writer (the last `SetWriter`).
    writer: Option<NodeId>,
    writer_emitted: bool,
    /// The writer's (or, while it is lost, the last writer's) timeline and current LSN. The
    /// timeline never goes down.
    writer_timeline: Option<u32>,
    writer_lsn: Option<u64>,
    /// The last node routed as writer (also across a restart, from the state file): rule 1
    /// keeps it on a tie.
    last_writer: Option<NodeId>,
    /// A promotion whose outcome is unknown (restored from the state file, or sent and not yet
    /// reported): (node, the timeline it was promoted from). No primary on that timeline or an
    /// older one is adopted meanwhile.
    promoting_from: Option<(NodeId, u32)>,
    /// The last `SetReaders`.
    readers: Option<Vec<NodeId>>,
    master: bool,
    /// When each peer's vote (an authenticated report) last arrived.
    peers_heard: Vec<Option<Duration>>,
    /// When an advert last arrived from each peer's address (unauthenticated: only "not silent").
    adverts_heard: Vec<Option<Duration>>,
    /// Each peer's last report.
    peer_reports: Vec<Option<PeerWord>>,
    /// The first event, or the end of the last stall.
    started_at: Option<Duration>,
    /// The end of the last stall: probes started before it are stale.
    stale_before: Duration,
    /// When a standby last answered on a timeline newer than the floor: a primary on it exists
    /// (or did) that this instance has not seen; failover waits for a probe of every node
    /// taken since ([`Blocked::NewerPrimaryUnseen`]).
    floor_raised_by_standby: Option<(Duration, u32, NodeId)>,
    /// The `now` of the last event (for [`Machine::view`] and [`Machine::next_deadline`]).
    now: Duration,
    blocked: Option<Blocked>,
    /// Primaries left unrouted because of a tie with no previous writer (logged once).
    ambiguous: Vec<NodeId>,
    /// The durable state last handed out with `Persist` (or restored).
    sent: Durable,
    /// The durable state last reported written ([`Event::Persisted`], or restored).
    recorded: Durable,
    /// The last write failed; tried again at `record_retry_at`.
    record_failing: bool,
    record_retry_at: Option<Duration>,
    /// A promotion decided and waiting for the write that records it (no action without its
    /// record): `Promote` goes out once `recorded` names it.
    held: Option<NodeId>,
    /// The last `Track` (VRRP tracking); `None` before the first verdict.
    tracked: Option<bool>,
    /// This instance's data plane sees a SYN flood ([`Event::Flood`]).
    flood: bool,
    /// Said once at the first event: what the restored state file held.
    restore_notes: Vec<(Level, String)>,
    /// Why a demoted switchover target is not promoted yet (logged when it changes).
    blocked_switchover: Option<String>,
    /// Settling: the standbys pointed at the candidate, whose fresh positions are awaited.
    settling: Vec<NodeId>,
    /// The newest pause or resume ([`maintenance`]).
    maintenance: Option<Maintenance>,
    /// The node marks, on and off, one per node and kind ([`marks`]).
    marks: Vec<NodeMark>,
    /// The wall clock at monotonic zero ([`Event::WallClock`]); `None` until told.
    wall_offset: Option<Duration>,
    /// A manual failover under way ([`manual`]).
    manual: Option<manual::ManualRun>,
}

impl Machine {
    pub fn new(params: Params) -> Self {
        let n = params.nodes.len();
        let peers = params.peers.len();
        Machine {
            master: !params.vrrp_enabled,
            p: params,
            nodes: (0..n).map(|_| NodeTrack::new()).collect(),
            phase: Phase::Starting,
            writer: None,
            writer_emitted: false,
            writer_timeline: None,
            writer_lsn: None,
            last_writer: None,
            promoting_from: None,
            readers: None,
            peers_heard: vec![None; peers],
            adverts_heard: vec![None; peers],
            peer_reports: vec![None; peers],
            started_at: None,
            stale_before: Duration::ZERO,
            floor_raised_by_standby: None,
            now: Duration::ZERO,
            blocked: None,
            ambiguous: Vec::new(),
            sent: Durable::default(),
            recorded: Durable::default(),
            record_failing: false,
            record_retry_at: None,
            held: None,
            tracked: None,
            flood: false,
            restore_notes: Vec::new(),
            blocked_switchover: None,
            settling: Vec::new(),
            maintenance: None,
            marks: Vec::new(),
            wall_offset: None,
            manual: None,
        }
    }

    /// What the data plane routes writes to before the first event (the pinned writer map of
    /// an earlier run): the machine's writer, so that anything that refuses writes unroutes it.
    /// New flows stay refused by the expired lease until the machine has decided again.
    pub fn set_routed(&mut self, writer: Option<NodeId>) {
        self.writer = writer.filter(|&w| w < self.nodes.len());
        self.writer_emitted = false;
    }

    /// Whether the machine has decided since its start or its last stall: the instance may
    /// renew its lease and hold the VIP.
    pub fn ready(&self) -> bool {
        self.phase != Phase::Starting
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn writer(&self) -> Option<NodeId> {
        self.writer
    }

    /// Handles one event at `now` (monotonic, non-decreasing) and returns what to do.
    pub fn handle(&mut self, event: Event, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        self.now = now;
        if self.started_at.is_none() {
            self.started_at = Some(now);
            for t in &mut self.nodes {
                t.last_count_at = now;
                t.last_change = now;
            }
            for (level, message) in std::mem::take(&mut self.restore_notes) {
                log(&mut out, level, message);
            }
        }
        match &event {
            Event::Probe(obs) => self.observe(obs, now, &mut out),
            Event::Tick => {}
            Event::VrrpRole { master } => self.on_vrrp_role(*master, &mut out),
            Event::PeerHeard { peer } => {
                if let Some(i) = self.p.peers.iter().position(|p| p == peer) {
                    self.adverts_heard[i] = Some(now);
                }
            }
            Event::PeerReport { peer, report } => self.on_peer_report(*peer, report, now, &mut out),
            Event::Persisted { state, result } => self.on_persisted(state, result, now, &mut out),
            Event::Stalled => self.wake(now, &mut out),
            Event::Flood { active } => self.flood = *active,
            Event::WallClock { unix } => self.on_wall_clock(*unix, now),
            Event::Admin(AdminCommand::Maintenance(m)) => self.on_maintenance(m, None, &mut out),
            Event::Admin(AdminCommand::Mark(m)) => self.on_mark(m, None, &mut out),
            Event::Admin(AdminCommand::Rejoined { node }) => self.on_rejoined(*node, &mut out),
            Event::Admin(AdminCommand::Switchover { .. }) => {}
            Event::Admin(AdminCommand::Failover(r)) => self.on_manual_failover(r, now, &mut out),
            Event::Reconfigure(p) => self.reconfigure(p, &mut out),
            Event::ActionDone { action, .. } if self.names_a_removed_node(action) => {
                log(&mut out, Level::Info, format!("the result of {action:?} is ignored: a reload removed its node"));
            }
            Event::ActionDone { action, result } => self.on_action_done(action, result, now, &mut out),
        }
        self.expire_pause(now, &mut out);
        self.count_stale(now, &mut out);
        self.step_phase(&event, now, &mut out);
        self.manual_ended(&mut out);
        if self.phase != Phase::Starting {
            self.reconcile_readers(&mut out);
            self.schedule_rejoins(now, &mut out);
            self.reconcile_tracking(now, &mut out);
        }
        self.note_state_changes(now);
        // What must survive a restart is written as soon as it changes (again and again while
        // writes fail); a promotion waits for its record.
        self.release_promotion(now, &mut out);
        let durable = self.durable();
        let retry_due = self.record_retry_at.is_none_or(|t| now >= t);
        if (durable != self.sent && !self.record_failing) || (self.record_failing && retry_due) {
            self.sent = durable.clone();
            self.record_retry_at = self.record_failing.then_some(now + RECORD_RETRY);
            out.insert(0, Action::Persist(durable));
        }
        out
    }

    /// A `Persist` ended. A success records it; a failure is tried again after [`RECORD_RETRY`]
    /// (the same or a newer state), and a promotion waiting for that write is not made (its
    /// phase gives it up: [`Self::promotion_unrecorded`]).
    fn on_persisted(&mut self, state: &Durable, result: &Result<(), String>, now: Duration, out: &mut Vec<Action>) {
        match result {
            Ok(()) => {
                if self.record_failing {
                    log(out, Level::Info, "state file: written again".to_owned());
                }
                self.record_failing = false;
                self.record_retry_at = None;
                self.recorded = state.clone();
            }
            Err(e) => {
                if !self.record_failing {
                    let msg = format!("state file: writing failed: {e}; no failover is decided until it can be written (tried again every {RECORD_RETRY:?})");
                    log(out, Level::Error, msg);
                }
                self.record_failing = true;
                self.record_retry_at = Some(now + RECORD_RETRY);
            }
        }
    }

    /// Sends the held `Promote` once the state file names its promotion — if the decision still
    /// holds then. The record may land long after the decision (a slow disk, a freeze with the
    /// probes' answers queued behind it), and a promotion is made on the view of the moment it
    /// is sent: this instance master, a quorum, the target a usable standby on the newest
    /// timeline known, no peer's word of a newer one ([`Self::promote_blocker`]). When it no
    /// longer holds, the promotion is withdrawn (never sent) and its phase steps back: a
    /// failover to `WriterLost` (decided again from the current view), a switchover to
    /// `Demoted` (waiting for the target until its deadline).
    fn release_promotion(&mut self, now: Duration, out: &mut Vec<Action>) {
        let Some(n) = self.held else { return };
        if self.recorded.promoting.as_ref().is_none_or(|p| p.node != self.p.nodes[n].name) {
            return;
        }
        if let Some(why) = self.promote_blocker(n, now) {
            let msg = format!("the promotion of {} is recorded, but it no longer holds: {why}; not promoting", self.name(n));
            log(out, Level::Warn, msg);
            self.cancel_held();
            self.give_up_manual(n, format!("the promotion of {} is recorded, but it no longer holds: {why}", self.name(n)), out);
            self.phase = match self.phase {
                Phase::FailingOver { old, .. } => Phase::WriterLost { old, since: now },
                Phase::Switchover { from, to, deadline, started, .. } => {
                    self.blocked_switchover = Some(why);
                    Switch { from, to, deadline, started }.phase(SwitchoverStage::Demoted)
                }
                other => other,
            };
            return;
        }
        self.held = None;
        log(out, Level::Info, format!("the promotion of {} is recorded in the state file: promoting", self.name(n)));
        out.push(Action::Promote { node: n });
    }

    /// The write that was to record the promotion of `n` failed: it is not made. (It was never
    /// sent, so no outcome is pending.)
    fn drop_unrecorded_promotion(&mut self, n: NodeId, out: &mut Vec<Action>) {
        self.cancel_held();
        let msg = format!("promotion of {} not made: the state file that must record it cannot be written", self.name(n));
        log(out, Level::Error, msg);
    }

    /// Forgets a promotion that was decided but never sent (its phase ended first).
    fn cancel_held(&mut self) {
        if let Some(n) = self.held.take()
            && self.promoting_from.is_some_and(|(p, _)| p == n)
        {
            self.promoting_from = None;
        }
    }

    /// A stall of the daemon's main loop longer than its lease: wake humble. Everything
    /// observed before is stale; what is durable (fences, the floor, a promotion in flight)
    /// and what the data plane routes are kept. The machine decides again from `Starting`.
    fn wake(&mut self, now: Duration, out: &mut Vec<Action>) {
        let msg = "the main loop stood still longer than the lease: everything seen before is stale; deciding again from fresh probes and peer reports (writes refused, no VIP meanwhile)";
        log(out, Level::Warn, msg.to_owned());
        if let Some(n) = self.held {
            self.drop_unrecorded_promotion(n, out);
        }
        if let Phase::Switchover { from, to, .. } = self.phase {
            out.push(Action::Alert(Alert::SwitchoverAborted { from, to, reason: "the main loop stood still".into() }));
        }
        self.phase = Phase::Starting;
        self.started_at = Some(now);
        self.stale_before = now;
        self.writer_emitted = false;
        self.blocked = None;
        self.tracked = None;
        self.settling.clear();
        for t in &mut self.nodes {
            *t = NodeTrack { fence: t.fence, rejoin: t.rejoin, excluded_until: t.excluded_until, demoted_at: t.demoted_at, ..NodeTrack::new() };
            t.last_count_at = now;
            t.last_change = now;
        }
        for v in [&mut self.peers_heard, &mut self.adverts_heard] {
            v.iter_mut().for_each(|h| *h = None);
        }
        self.peer_reports.iter_mut().for_each(|r| *r = None);
    }

    /// When to call [`Machine::handle`] with [`Event::Tick`] at the latest: always strictly
    /// after the last event's `now` (or `None`). Everything due at or before `now` was decided
    /// by that call, so a deadline in the past would only wake the caller at once, forever.
    ///
    /// Each entry is a time at which some decision can change without any new input: a node's
    /// probe going stale, the startup grace, a phase's timeout, the re-point grace of a
    /// misdirected standby, a failed candidate's exclusion ending, a peer's vote expiring, the
    /// tracking hold, the end of a `--for` pause.
    pub fn next_deadline(&self) -> Option<Duration> {
        let started = self.started_at?;
        let mut next: Vec<Duration> = self.nodes.iter().map(|t| t.last_count_at + self.p.stale_after()).collect();
        match self.phase {
            Phase::Starting => {
                next.push(started + self.p.detection_time());
                next.push(started + self.p.peer_timeout);
            }
            Phase::WriterLost { old: None, since } => next.push(since + self.p.detection_time()),
            Phase::WriterLost { .. } | Phase::Steady => {}
            Phase::FailingOver { deadline, .. } | Phase::Switchover { deadline, .. } | Phase::Settling { deadline, .. } => {
                next.push(deadline)
            }
        }
        if self.phase == Phase::Steady {
            // A misdirected standby is re-pointed once it has been off the writer for
            // `repoint_after` and its last re-point is `repoint_after` old.
            let after = self.p.repoint_after();
            for t in &self.nodes {
                if let Some(since) = t.misdirected_since {
                    next.push((since + after).max(t.last_repoint.map_or(Duration::ZERO, |r| r + after)));
                }
            }
        }
        if let Phase::WriterLost { since, .. } = self.phase {
            next.extend(self.nodes.iter().filter_map(|t| t.excluded_until));
            next.extend(self.peers_heard.iter().flatten().map(|h| *h + self.p.peer_timeout));
            next.push(since + self.p.track_hold);
        }
        next.extend(self.nodes.iter().filter_map(|t| t.rejoin.not_before));
        next.extend(self.record_retry_at);
        next.extend(self.pause_deadline());
        // A peer's timeline hint lapses when its report grows old.
        next.extend(self.peer_reports.iter().flatten().map(|w| w.at + self.p.peer_timeout));
        next.into_iter().filter(|&d| d > self.now).min()
    }

    /// What the machine believes now.
    pub fn view(&self) -> ClusterView {
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(id, t)| {
                let standby = t.status.as_ref().filter(|s| s.in_recovery);
                NodeView {
                    id,
                    name: self.p.nodes[id].name.clone(),
                    role: t.role(),
                    state: t.state,
                    fence: t.fence,
                    timeline: t.status.as_ref().map(|s| s.timeline),
                    lag_bytes: standby.and_then(|s| Some(self.writer_lsn?.saturating_sub(s.replay_lsn?))),
                    lag: standby.and_then(|s| s.replay_lag),
                    consecutive_failures: t.failures,
                    consecutive_successes: t.successes,
                    last_error: t.last_error.clone(),
                    last_change: t.last_change,
                    drained: self.marked(id, MarkKind::Drain),
                    disabled: self.marked(id, MarkKind::Disable),
                }
            })
            .collect();
        ClusterView {
            phase: self.phase,
            writer: self.writer,
            readers: self.readers.clone().unwrap_or_default(),
            writer_timeline: self.writer_timeline,
            vrrp_master: self.is_master(),
            writer_reachable: self.tracked,
            quorum: self.quorum(self.now),
            blocked: self.blocked.clone(),
            nodes,
            peer_reports: self.peer_reports.iter().map(|r| r.as_ref().map(|w| w.report.clone())).collect(),
            ready: self.ready(),
            timeline_hint: self.hint(),
            recorded: !self.record_failing,
            maintenance: self.maintenance.clone(),
            paused: self.paused().is_some(),
            marks: self.marks.clone(),
        }
    }

    /// What this instance tells its peers ([`Event::PeerReport`]): its timeline floor, the
    /// writer it routes if it reaches it (its last probe answered), its newest pause or resume
    /// and its node marks.
    pub fn report(&self) -> PeerReport {
        let timeline = self.writer_timeline.unwrap_or(0);
        let writer = self.writer.filter(|&w| self.phase == Phase::Steady && self.reaches(w)).map(|w| self.name(w).to_owned());
        PeerReport { timeline, writer, maintenance: self.maintenance.clone(), marks: self.marks.clone() }
    }

    fn name(&self, n: NodeId) -> &str {
        &self.p.nodes[n].name
    }

    fn is_master(&self) -> bool {
        !self.p.vrrp_enabled || self.master
    }

    /// The writer, or the writer being replaced: their failures count to `failover_after`.
    fn old_writer(&self) -> Option<NodeId> {
        match self.phase {
            Phase::WriterLost { old, .. } | Phase::Settling { old, .. } | Phase::FailingOver { old, .. } => old,
            Phase::Switchover { from, .. } => Some(from),
            Phase::Starting | Phase::Steady => self.writer,
        }
    }

    fn promoting(&self, n: NodeId) -> bool {
        match self.phase {
            Phase::FailingOver { candidate, .. } => candidate == n,
            Phase::Switchover { to, stage: SwitchoverStage::Promoting, .. } => to == n,
            _ => false,
        }
    }
}

fn log(out: &mut Vec<Action>, level: Level, message: String) {
    out.push(Action::Log { level, message });
}
