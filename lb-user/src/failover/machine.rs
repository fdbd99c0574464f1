//! [`Machine`]: the failover state machine itself. See the module doc of [`crate::failover`]
//! for the transition table.

use std::mem::discriminant;
use std::time::Duration;

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

/// How soon a failed state-file write is tried again.
pub const RECORD_RETRY: Duration = Duration::from_millis(500);

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
        }
    }

    /// A machine that starts from what an earlier run persisted: its fences, its last writer
    /// (preferred on a tie), its highest timeline (no primary below it is adopted) and a
    /// promotion in flight. Names the config no longer has are dropped, and said so at the
    /// first event.
    pub fn restore(params: Params, durable: &Durable) -> Self {
        let mut m = Machine::new(params);
        let id = |name: &str| m.p.nodes.iter().position(|n| n.name == name);
        let mut notes = Vec::new();
        let floor = durable.timeline;
        if floor > 0 {
            m.writer_timeline = Some(floor);
        }
        m.last_writer = durable.writer.as_deref().and_then(id);
        if let Some(w) = &durable.writer
            && m.last_writer.is_none()
        {
            notes.push((Level::Warn, format!("state file: the last writer {w} is no longer configured; ignored")));
        }
        for f in &durable.fences {
            let Some(n) = id(&f.node) else {
                notes.push((Level::Warn, format!("state file: fenced node {} is no longer configured; ignored", f.node)));
                continue;
            };
            let writer = f.writer.as_deref().and_then(id);
            let reason = match (f.reason.as_str(), writer) {
                ("split-brain", Some(w)) => FenceReason::SplitBrain { writer: w, timeline: f.timeline },
                ("replaced", Some(by)) => FenceReason::Replaced { by },
                _ => FenceReason::OlderTimeline { timeline: f.timeline, writer_timeline: floor },
            };
            m.nodes[n].fence = Some(reason);
        }
        if let Some(p) = &durable.promoting {
            match id(&p.node) {
                Some(n) => {
                    m.promoting_from = Some((n, p.from_timeline));
                    notes.push((
                        Level::Warn,
                        format!(
                            "state file: a promotion of {} from timeline {} was in flight; no primary on timeline {} or older is adopted until {} is seen",
                            p.node, p.from_timeline, p.from_timeline, p.node
                        ),
                    ));
                }
                None => notes.push((Level::Warn, format!("state file: promoted node {} is no longer configured; ignored", p.node))),
            }
        }
        let fenced: Vec<&str> = durable.fences.iter().map(|f| f.node.as_str()).collect();
        notes.insert(
            0,
            (
                Level::Info,
                format!(
                    "state file: last writer {}, timeline {floor}, fenced: {}",
                    durable.writer.as_deref().unwrap_or("none"),
                    if fenced.is_empty() { "none".to_owned() } else { fenced.join(", ") }
                ),
            ),
        );
        m.restore_notes = notes;
        m.sent = m.durable();
        m.recorded = m.sent.clone();
        m
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
            Event::Admin(AdminCommand::Rejoined { node }) => self.on_rejoined(*node, &mut out),
            Event::Admin(AdminCommand::Switchover { .. }) => {}
            Event::ActionDone { action, result } => self.on_action_done(action, result, now, &mut out),
        }
        self.count_stale(now, &mut out);
        self.step_phase(&event, now, &mut out);
        if self.phase != Phase::Starting {
            self.reconcile_readers(&mut out);
            self.schedule_rejoins(now, &mut out);
            self.reconcile_tracking(now, &mut out);
        }
        self.note_state_changes(now);
        // What must survive a restart is written as soon as it changes (again and again while
        // writes fail); a promotion waits for its record.
        let durable = self.durable();
        let retry_due = self.record_retry_at.is_none_or(|t| now >= t);
        if (durable != self.sent && !self.record_failing) || (self.record_failing && retry_due) {
            self.sent = durable.clone();
            self.record_retry_at = self.record_failing.then_some(now + RECORD_RETRY);
            out.insert(0, Action::Persist(durable));
        }
        self.release_promotion(&mut out);
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

    /// Sends the held `Promote` once the state file names its promotion.
    fn release_promotion(&mut self, out: &mut Vec<Action>) {
        let Some(n) = self.held else { return };
        if self.recorded.promoting.as_ref().is_some_and(|p| p.node == self.p.nodes[n].name) {
            self.held = None;
            log(out, Level::Info, format!("the promotion of {} is recorded in the state file: promoting", self.name(n)));
            out.push(Action::Promote { node: n });
        }
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

    /// What a restart must not forget, as it stands now.
    pub fn durable(&self) -> Durable {
        let name = |n: NodeId| self.p.nodes[n].name.clone();
        let fences = (0..self.nodes.len())
            .filter_map(|n| {
                let f = self.nodes[n].fence?;
                Some(match f {
                    FenceReason::SplitBrain { writer, timeline } => {
                        DurableFence { node: name(n), reason: "split-brain".into(), timeline, writer: Some(name(writer)) }
                    }
                    FenceReason::OlderTimeline { timeline, .. } => {
                        DurableFence { node: name(n), reason: "older-timeline".into(), timeline, writer: None }
                    }
                    FenceReason::Replaced { by } => DurableFence {
                        node: name(n),
                        reason: "replaced".into(),
                        timeline: self.nodes[n].status.as_ref().map_or(0, |s| s.timeline),
                        writer: Some(name(by)),
                    },
                })
            })
            .collect();
        Durable {
            writer: self.last_writer.map(name),
            timeline: self.writer_timeline.unwrap_or(0),
            fences,
            promoting: self.promoting_from.map(|(n, tl)| DurablePromotion { node: name(n), from_timeline: tl }),
        }
    }

    /// When to call [`Machine::handle`] with [`Event::Tick`] at the latest: always strictly
    /// after the last event's `now` (or `None`). Everything due at or before `now` was decided
    /// by that call, so a deadline in the past would only wake the caller at once, forever.
    ///
    /// Each entry is a time at which some decision can change without any new input: a node's
    /// probe going stale, the startup grace, a phase's timeout, the re-point grace of a
    /// misdirected standby, a failed candidate's exclusion ending, a peer's vote expiring, the
    /// tracking hold.
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
        }
    }

    /// What this instance tells its peers ([`Event::PeerReport`]): its timeline floor, and the
    /// writer it routes if it reaches it (its last probe answered).
    pub fn report(&self) -> PeerReport {
        let timeline = self.writer_timeline.unwrap_or(0);
        let writer = self.writer.filter(|&w| self.phase == Phase::Steady && self.reaches(w)).map(|w| self.name(w).to_owned());
        PeerReport { timeline, writer }
    }

    /// The newest timeline a fresh peer report names above every one confirmed here, and who
    /// names it: writes to older primaries are held back, and nothing is promoted, while it
    /// lasts. It is never the floor and never fences a node: a probe that sees a node on it
    /// (or past it) makes it a fact; the peer no longer saying it ends it.
    fn hint(&self) -> Option<(u32, std::net::Ipv4Addr)> {
        let floor = self.writer_timeline.unwrap_or(0);
        self.peer_reports
            .iter()
            .zip(&self.p.peers)
            .filter_map(|(w, peer)| {
                let w = w.as_ref()?;
                (self.now.saturating_sub(w.at) <= self.p.peer_timeout && w.report.timeline > floor).then_some((w.report.timeline, *peer))
            })
            .max()
    }

    /// `n` is up here and its last probe answered.
    fn reaches(&self, n: NodeId) -> bool {
        let t = &self.nodes[n];
        t.up() && t.failures == 0
    }

    // ----- inputs -------------------------------------------------------------------------

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

    fn observe(&mut self, obs: &Observation, now: Duration, out: &mut Vec<Action>) {
        let n = obs.node;
        if n >= self.nodes.len() {
            log(out, Level::Warn, format!("probe result for unknown node #{n} ignored"));
            return;
        }
        if obs.at < self.stale_before {
            return; // probed before a stall: stale
        }
        let t = &mut self.nodes[n];
        if t.last_obs_at.is_some_and(|last| obs.at < last) {
            return; // a late answer to an older probe
        }
        if t.demoted_at.is_some_and(|d| obs.at < d) && obs.result.as_ref().is_ok_and(|s| !s.in_recovery) {
            return; // probed before the switchover demoted it
        }
        t.last_obs_at = Some(obs.at);
        t.last_count_at = now;
        match &obs.result {
            Err(failure) => self.on_probe_failed(n, failure.clone(), out),
            Ok(status) => {
                // Any answer on a timeline newer than every one routed here proves that timeline
                // exists: older primaries are history from now on, whatever their health says.
                let newer = status.timeline > self.writer_timeline.unwrap_or(0);
                if status.in_recovery {
                    self.on_standby_seen(n, status, obs.at, out);
                } else {
                    self.on_primary_seen(n, status, obs.at, newer, out);
                }
                if newer {
                    self.raise_floor(n, status.timeline, out);
                }
            }
        }
    }

    /// A timeline newer than any routed here exists (`n` answered on it): it becomes the floor,
    /// so no primary on an older one is adopted or kept (rule 1 fences the writer if it is one).
    fn raise_floor(&mut self, n: NodeId, timeline: u32, out: &mut Vec<Action>) {
        let before = self.writer_timeline.unwrap_or(0);
        let ours = self.promoting_from.is_some_and(|(p, _)| p == n);
        let quiet = before == 0 || ours;
        self.set_floor(timeline, (!quiet).then(|| format!("{} answers on timeline {timeline}", self.name(n))), Some(n), out);
    }

    /// A peer's authenticated report: its quorum vote, the writer it reaches (remembered with
    /// whether we had lost it then, [`Blocked::PeerReachesWriter`]), and its timeline, which
    /// is a hint, not a fact ([`Self::hint`]): a timeline above ours holds writes to older
    /// primaries back while the peer keeps saying it, until a probe confirms it.
    fn on_peer_report(&mut self, peer: std::net::Ipv4Addr, report: &PeerReport, now: Duration, out: &mut Vec<Action>) {
        let Some(i) = self.p.peers.iter().position(|p| *p == peer) else {
            log(out, Level::Warn, format!("report from {peer}, not a configured peer: ignored"));
            return;
        };
        let reached = report.writer.as_deref().and_then(|name| self.p.nodes.iter().position(|n| n.name == name));
        let lost_here = reached.is_some_and(|w| !self.reaches(w));
        let floor = self.writer_timeline.unwrap_or(0);
        let was = self.peer_reports[i].as_ref().map(|w| w.report.timeline);
        if report.timeline > floor && was != Some(report.timeline) {
            let msg = format!("peer {peer} reports timeline {}, newer than any seen here ({floor}): writes to older primaries held back until a probe confirms it", report.timeline);
            log(out, Level::Warn, msg);
        }
        self.peer_reports[i] = Some(PeerWord { report: report.clone(), at: now, lost_here });
        self.peers_heard[i] = Some(now);
    }

    /// The floor becomes `timeline` (`why` logged unless `None`); a writer routed here on an
    /// older timeline is unrouted, unless `newer` (the node that showed the timeline) is a
    /// usable primary rule 1 routes next in one map write.
    fn set_floor(&mut self, timeline: u32, why: Option<String>, newer: Option<NodeId>, out: &mut Vec<Action>) {
        let before = self.writer_timeline.unwrap_or(0);
        self.writer_timeline = Some(timeline);
        if let Some(why) = why {
            log(out, Level::Warn, format!("{why}, newer than any routed here ({before}): primaries on older timelines get no writes"));
        }
        // The writer routed here (still debouncing its failures, say) is on an older timeline:
        // it is history, whatever its health says. (A newer primary is routed by rule 1 next,
        // in one map write.)
        if let Some(w) = self.writer
            && Some(w) != newer
            && newer.is_none_or(|n| self.nodes[n].usable_primary().is_none())
            && self.nodes[w].status.as_ref().is_some_and(|s| s.timeline < timeline)
        {
            log(out, Level::Warn, format!("writes refused: the writer {} is on an older timeline than {timeline}", self.name(w)));
            self.route_writer(None, out);
        }
    }

    /// Role handler: the probe failed (or no result came in time).
    fn on_probe_failed(&mut self, n: NodeId, failure: ProbeFailure, out: &mut Vec<Action>) {
        let threshold = if self.old_writer() == Some(n) { self.p.failover_after } else { STANDBY_DOWN_AFTER };
        let t = &mut self.nodes[n];
        t.failures = t.failures.saturating_add(1);
        t.successes = 0;
        t.last_error = Some(failure.clone());
        if t.health != Health::Down && t.failures >= threshold {
            t.health = Health::Down;
            let failures = t.failures;
            let msg = format!("{} is down: {failures} consecutive failed probes (last: {failure})", self.name(n));
            log(out, Level::Warn, msg);
        }
    }

    /// Role handler: the node answered as a primary. A primary above the timeline of a
    /// promotion in flight is that promotion's outcome (or a newer one): the hold ends. A
    /// primary on a timeline newer than any routed here (`newer`) is the newest there is: it
    /// counts as up at once, and a fence on it (from before its promotion, perhaps restored
    /// from the state file) no longer applies.
    fn on_primary_seen(&mut self, n: NodeId, status: &NodeStatus, at: Duration, newer: bool, out: &mut Vec<Action>) {
        if newer && self.nodes[n].fence.is_some() {
            self.lift_fence(n);
            let msg = format!("{} is a primary on timeline {}, newer than any routed here: its fence no longer applies", self.name(n), status.timeline);
            log(out, Level::Warn, msg);
        }
        self.count_success(n, status, at, newer, out);
        if self.writer == Some(n) {
            self.writer_timeline = self.writer_timeline.max(Some(status.timeline));
            self.writer_lsn = status.current_lsn.or(self.writer_lsn);
        }
        if let Some((p, from)) = self.promoting_from
            && p == n
            && status.timeline > from
            && !self.promoting(n)
        {
            self.promoting_from = None;
            log(out, Level::Info, format!("{} is a primary on timeline {}: the promotion in flight is settled", self.name(n), status.timeline));
        }
    }

    /// Role handler: the node answered as a standby. A fenced node that now replicates on the
    /// writer's timeline has been rejoined; the node of a promotion in flight that is still a
    /// standby on the old timeline was not promoted.
    fn on_standby_seen(&mut self, n: NodeId, status: &NodeStatus, at: Duration, out: &mut Vec<Action>) {
        self.count_success(n, status, at, false, out);
        if self.nodes[n].fence.is_some() && self.writer_timeline == Some(status.timeline) {
            self.lift_fence(n);
            let msg = format!("{} rejoined: in recovery on the writer's timeline {}", self.name(n), status.timeline);
            log(out, Level::Info, msg);
        }
        if let Some((p, from)) = self.promoting_from
            && p == n
            && status.timeline <= from
            && !self.promoting(n)
        {
            self.promoting_from = None;
            log(out, Level::Info, format!("{} is still a standby on timeline {}: it was not promoted", self.name(n), status.timeline));
        }
    }

    fn count_success(&mut self, n: NodeId, status: &NodeStatus, at: Duration, newest_primary: bool, out: &mut Vec<Action>) {
        let immediate = self.old_writer() == Some(n) || newest_primary;
        let up_after = self.p.up_after;
        let t = &mut self.nodes[n];
        t.failures = 0;
        t.successes = t.successes.saturating_add(1);
        t.last_error = None;
        t.prev_received = t.status.as_ref().and_then(NodeStatus::received);
        t.status = Some(status.clone());
        t.status_at = at;
        let was = t.health;
        if was == Health::Unknown || (was == Health::Down && (immediate || t.successes >= up_after)) {
            t.health = Health::Up;
            if was == Health::Down {
                let successes = t.successes;
                log(out, Level::Info, format!("{} is up again after {successes} good probes", self.name(n)));
            }
        }
    }

    /// A node that has not answered for `stale_after` gets a failure counted (the prober itself
    /// may be stuck; silence is not health).
    fn count_stale(&mut self, now: Duration, out: &mut Vec<Action>) {
        let stale_after = self.p.stale_after();
        for n in 0..self.nodes.len() {
            if now.saturating_sub(self.nodes[n].last_count_at) >= stale_after {
                self.nodes[n].last_count_at = now;
                self.on_probe_failed(n, ProbeFailure::Timeout, out);
            }
        }
    }

    fn on_vrrp_role(&mut self, master: bool, out: &mut Vec<Action>) {
        if !self.p.vrrp_enabled || self.master == master {
            return;
        }
        self.master = master;
        let msg = if master { "vrrp master: this instance may fail over" } else { "vrrp backup: failover is left to the master" };
        log(out, Level::Info, msg.to_owned());
    }

    fn on_rejoined(&mut self, n: NodeId, out: &mut Vec<Action>) {
        if n >= self.nodes.len() {
            return;
        }
        if self.nodes[n].fence.is_some() {
            self.lift_fence(n);
            // Fresh probes decide again: up_after good ones, and rule 1 fences it again if it
            // still is a primary.
            let t = &mut self.nodes[n];
            t.health = Health::Down;
            t.successes = 0;
            log(out, Level::Info, format!("{} rejoined by the operator: fence lifted, waiting for good probes", self.name(n)));
        }
    }

    /// Results of executor actions that matter in every phase (promotions are the phases').
    fn on_action_done(&mut self, action: &Action, result: &Result<(), String>, now: Duration, out: &mut Vec<Action>) {
        match (action, result) {
            (Action::Repoint { node, primary }, Err(error)) => {
                let msg = format!("re-pointing {} to {} failed: {error}", self.name(*node), self.name(*primary));
                log(out, Level::Warn, msg);
                out.push(Action::Alert(Alert::RepointFailed { node: *node, primary: *primary, error: error.clone() }));
                if let Some(t) = self.nodes.get_mut(*node) {
                    t.last_repoint = Some(now);
                }
            }
            (Action::Repoint { node, .. }, Ok(())) => {
                if let Some(t) = self.nodes.get_mut(*node) {
                    t.repoint_done_at = Some(now);
                }
                // Settling waits for this node's position after the re-point: ask for it now
                // rather than at the next round.
                if matches!(self.phase, Phase::Settling { .. }) && self.settling.contains(node) {
                    out.push(Action::Probe { node: *node });
                }
            }
            (Action::Rejoin { node, .. }, result) if *node < self.nodes.len() => self.on_rejoin_done(*node, result, now, out),
            _ => {}
        }
    }

    fn on_rejoin_done(&mut self, n: NodeId, result: &Result<(), String>, now: Duration, out: &mut Vec<Action>) {
        let backoff = self.p.rejoin_backoff;
        let t = &mut self.nodes[n];
        if !t.rejoin.in_flight {
            return; // the fence it was for is gone
        }
        t.rejoin.in_flight = false;
        match result {
            Ok(()) => {
                t.rejoin.succeeded = true;
                let attempt = t.rejoin.attempts;
                let msg = format!("rejoin of {} done: it stays fenced until probes see it streaming on the writer's timeline", self.name(n));
                log(out, Level::Info, msg);
                out.push(Action::Alert(Alert::RejoinDone { node: n, attempt }));
            }
            Err(error) => {
                let attempt = t.rejoin.attempts;
                let factor = 1u32 << attempt.saturating_sub(1).min(16);
                let retry_in = backoff.saturating_mul(factor).min(REJOIN_BACKOFF_MAX);
                t.rejoin.not_before = Some(now + retry_in);
                let msg = format!("rejoin of {} failed (attempt {attempt}): {error}; it stays fenced; next attempt in {retry_in:?}", self.name(n));
                log(out, Level::Error, msg);
                out.push(Action::Alert(Alert::RejoinFailed { node: n, error: error.clone(), attempt, retry_in }));
            }
        }
    }

    // ----- phases -------------------------------------------------------------------------

    /// Runs the current phase's handler; if it moved to another phase, lets that one look too
    /// (a failover can start in the same call that saw the last failed probe).
    fn step_phase(&mut self, event: &Event, now: Duration, out: &mut Vec<Action>) {
        let mut event = Some(event);
        for _ in 0..4 {
            let before = self.phase;
            if let Some(Event::Admin(AdminCommand::Switchover { to })) = event
                && before != Phase::Steady
            {
                self.reject_switchover(*to, format!("the phase is {}, not steady", before.as_str()), out);
                event = None;
            }
            match before {
                Phase::Starting => self.on_starting(now, out),
                Phase::Steady => self.on_steady(event, now, out),
                Phase::WriterLost { old, since } => self.on_writer_lost(old, since, now, out),
                Phase::Settling { old, candidate, since, deadline } => self.on_settling(old, candidate, since, deadline, now, out),
                Phase::FailingOver { old, candidate, deadline } => {
                    self.on_failing_over(old, candidate, deadline, event, now, out)
                }
                Phase::Switchover { from, to, stage, deadline, started } => {
                    self.on_switchover(Switch { from, to, deadline, started }, stage, event, now, out)
                }
            }
            event = None;
            if self.phase == before {
                break;
            }
        }
    }

    /// Phase handler: wait for every node's first probe (or the grace), then apply rule 1.
    fn on_starting(&mut self, now: Duration, out: &mut Vec<Action>) {
        // The data plane may still route what the previous run routed (a restart: the pinned
        // map, the state file's writer). Until the choice below, keep it only while nothing
        // says it is wrong.
        if !self.writer_emitted
            && let Some(w) = self.last_writer
        {
            let t = &self.nodes[w];
            let floor = self.writer_timeline.unwrap_or(0);
            let unusable = t.fence.is_some() || t.failures > 0 || t.status.as_ref().is_some_and(|s| s.in_recovery || s.timeline < floor);
            if unusable {
                log(out, Level::Warn, format!("startup: writes refused until the writer is chosen: {}, the last writer, is not usable now", self.name(w)));
                self.route_writer(None, out);
            }
        }
        let started = self.started_at.unwrap_or(now);
        let all_seen = self.nodes.iter().all(|t| t.last_obs_at.is_some());
        if !all_seen && now < started + self.p.detection_time() {
            return;
        }
        // A peer may know a newer timeline than the state file (a promotion made while this
        // instance was down or frozen): hear every peer's report before deciding, unless the
        // peer is silent (not even an advert) for a whole master-down interval. A peer whose
        // adverts are heard but whose reports do not arrive keeps this instance waiting: the
        // safe direction (it routes nothing and holds no VIP meanwhile).
        let waiting: Vec<std::net::Ipv4Addr> = (0..self.p.peers.len())
            .filter(|&i| self.peer_reports[i].is_none())
            .filter(|&i| self.adverts_heard[i].is_some() || now < started + self.p.peer_timeout)
            .map(|i| self.p.peers[i])
            .collect();
        if self.p.vrrp_enabled && !waiting.is_empty() {
            return;
        }
        match self.apply_rule1(self.last_writer, out) {
            Some(w) => {
                self.route_writer(Some(w), out);
                let tl = self.writer_timeline.unwrap_or_default();
                log(out, Level::Info, format!("startup: {} is the writer (primary on the highest timeline, {tl})", self.name(w)));
                self.phase = Phase::Steady;
            }
            None => {
                self.route_writer(None, out);
                log(out, Level::Warn, "startup: no usable primary; writes are refused".to_owned());
                // After a restart the last writer (state file) is the one expected back: it is
                // the old writer failover debounces and its answer is taken at once.
                let old = self.last_writer.filter(|&w| self.nodes[w].fence.is_none());
                self.phase = Phase::WriterLost { old, since: now };
            }
        }
    }

    /// Phase handler: a writer is routed. Watch it, fence other primaries, start switchovers,
    /// keep the standbys pointed at it.
    fn on_steady(&mut self, event: Option<&Event>, now: Duration, out: &mut Vec<Action>) {
        let Some(w) = self.writer else {
            // Unrouted outside the phase handlers (a newer timeline showed up): the last writer
            // is the one being replaced.
            self.phase = Phase::WriterLost { old: self.last_writer, since: now };
            return;
        };
        if let Some(Event::Admin(AdminCommand::Switchover { to })) = event {
            self.start_switchover(w, *to, now, out);
            if self.phase != Phase::Steady {
                return;
            }
        }
        let t = &self.nodes[w];
        if t.status.as_ref().is_some_and(|s| s.in_recovery) && t.up() {
            log(out, Level::Warn, format!("writer {} is in recovery now: writes are refused", self.name(w)));
            self.route_writer(None, out);
            self.phase = Phase::WriterLost { old: Some(w), since: now };
            return;
        }
        if t.failures >= self.p.failover_after || t.fence.is_some() {
            let failures = t.failures;
            let msg = format!(
                "writer {} failed {failures} consecutive probes: evaluating failover (writes stay routed to it meanwhile)",
                self.name(w)
            );
            log(out, Level::Warn, msg);
            self.phase = Phase::WriterLost { old: Some(w), since: now };
            return;
        }
        if let Some(c) = self.apply_rule1(Some(w), out)
            && c != w
        {
            let tl = self.writer_timeline.unwrap_or_default();
            let msg = format!("{} is a primary on the newer timeline {tl}: it becomes the writer instead of {}", self.name(c), self.name(w));
            log(out, Level::Warn, msg);
            out.push(Action::Alert(Alert::WriterChanged { from: Some(w), to: c, timeline: tl }));
            self.route_writer(Some(c), out);
        }
        if self.writer.is_none() {
            // Rule 1 fenced the writer (a newer timeline exists) and nobody is usable on it yet.
            self.phase = Phase::WriterLost { old: Some(w), since: now };
            return;
        }
        if let Some((tl, peer)) = self.hint()
            && self.nodes[w].status.as_ref().is_some_and(|s| s.timeline < tl)
        {
            let msg = format!("writes held back: peer {peer} reports timeline {tl}, newer than the writer {}'s; waiting for a probe to confirm it or the peer to stop saying it", self.name(w));
            log(out, Level::Warn, msg);
            self.route_writer(None, out);
            self.phase = Phase::WriterLost { old: Some(w), since: now };
            return;
        }
        self.repoint_misdirected(now, out);
    }

    /// Phase handler: no healthy writer. Re-adopt a primary by rule 1, or fail over when every
    /// guard of rule 2 holds.
    fn on_writer_lost(&mut self, old: Option<NodeId>, since: Duration, now: Duration, out: &mut Vec<Action>) {
        // The old writer counts as a primary again as soon as it answers as one.
        if let Some(c) = self.apply_rule1(old.or(self.last_writer), out) {
            let tl = self.writer_timeline.unwrap_or_default();
            if Some(c) == old {
                log(out, Level::Info, format!("writer {} answers again: kept", self.name(c)));
            } else {
                let msg = format!("{} is the primary on the highest timeline ({tl}): it becomes the writer", self.name(c));
                log(out, Level::Warn, msg);
                out.push(Action::Alert(Alert::WriterChanged { from: old, to: c, timeline: tl }));
            }
            self.route_writer(Some(c), out);
            self.blocked = None;
            self.phase = Phase::Steady;
            return;
        }
        match self.failover_check(old, since, now) {
            Ok(candidate) => self.start_settling(old, candidate, now, out),
            Err(reason) => {
                let changed = self.blocked.as_ref().is_none_or(|b| discriminant(b) != discriminant(&reason));
                if changed {
                    let writer = old.map_or("none", |o| self.name(o));
                    log(out, Level::Warn, format!("writer lost (was {writer}); no failover: {reason}"));
                    if !matches!(reason, Blocked::Debouncing { .. }) {
                        out.push(Action::Alert(Alert::FailoverBlocked { writer: old, reason: reason.clone() }));
                    }
                }
                // The old writer is down and a standby that answers does not follow it: whoever
                // can fail over (a master out of our sight among them) may be promoting. Writes
                // stop here until a probe shows it a primary again on the newest timeline known
                // here; it would otherwise get them the moment it comes back, stale or not. When
                // no other node answers either, nothing says the writer is gone rather than this
                // instance blind (starved by a flood, say): it stays routed, and its clients'
                // connections are not reset.
                if self.writer.is_some()
                    && self.writer == old
                    && !matches!(reason, Blocked::Debouncing { .. })
                    && self.streaming_standby(old).is_none()
                    && (0..self.nodes.len()).any(|n| Some(n) != old && self.reaches(n))
                    && !self.flood
                {
                    let writer = old.map_or("none", |o| self.name(o));
                    log(out, Level::Warn, format!("writes refused: the writer {writer} is down and no reachable standby streams from it"));
                    self.route_writer(None, out);
                }
                self.blocked = Some(reason);
            }
        }
    }

    /// Phase handler: waiting for the promotion of `candidate`.
    fn on_failing_over(
        &mut self,
        old: Option<NodeId>,
        candidate: NodeId,
        deadline: Duration,
        event: Option<&Event>,
        now: Duration,
        out: &mut Vec<Action>,
    ) {
        match event {
            _ if self.held == Some(candidate) && self.record_failing => {
                self.drop_unrecorded_promotion(candidate, out);
                out.push(Action::Alert(Alert::FailoverBlocked { writer: old, reason: Blocked::StateNotRecorded }));
                self.blocked = Some(Blocked::StateNotRecorded);
                self.phase = Phase::WriterLost { old, since: now };
            }
            Some(Event::ActionDone { action: Action::Promote { node }, result }) if *node == candidate => match result {
                Ok(()) => self.finish_promotion(candidate, Promotion::Failover { old }, now, out),
                Err(e) => self.promotion_failed(old, candidate, e.clone(), now, out),
            },
            _ if self.promoted_by_probe(candidate) => self.finish_promotion(candidate, Promotion::Failover { old }, now, out),
            _ if now >= deadline => {
                let e = format!("no report within promote_timeout ({:?})", self.p.promote_timeout);
                self.promotion_failed(old, candidate, e, now, out)
            }
            _ => {}
        }
    }

    /// Phase handler: a planned switchover, one stage at a time.
    fn on_switchover(&mut self, sw: Switch, stage: SwitchoverStage, event: Option<&Event>, now: Duration, out: &mut Vec<Action>) {
        let Switch { from, to, deadline, .. } = sw;
        match stage {
            SwitchoverStage::CatchingUp { blocked_at, mut old_lsn } => {
                let f = &self.nodes[from];
                if let Some(s) = f.status.as_ref().filter(|s| !s.in_recovery && f.status_at >= blocked_at)
                    && let Some(lsn) = s.current_lsn
                {
                    old_lsn = Some((f.status_at, old_lsn.map_or(lsn, |(_, l)| l.max(lsn))));
                }
                let target = &self.nodes[to];
                let caught_up = old_lsn.is_some_and(|(at, lsn)| {
                    target.status_at >= at && target.status.as_ref().and_then(NodeStatus::received).is_some_and(|r| r >= lsn)
                });
                if caught_up {
                    let lsn = old_lsn.map(|(_, l)| l).unwrap_or_default();
                    let msg = format!("switchover: {} has received {lsn:#x} from {}; demoting {}", self.name(to), self.name(from), self.name(from));
                    log(out, Level::Info, msg);
                    out.push(Action::Demote { node: from, primary: to });
                    self.phase = sw.phase(SwitchoverStage::Demoting);
                } else if now >= deadline {
                    self.abort_switchover(from, to, "the target did not catch up in time", true, now, out);
                } else {
                    self.phase = sw.phase(SwitchoverStage::CatchingUp { blocked_at, old_lsn });
                }
            }
            SwitchoverStage::Demoting => match event {
                Some(Event::ActionDone { action: Action::Demote { node, .. }, result }) if *node == from => match result {
                    Ok(()) => {
                        let f = &mut self.nodes[from];
                        f.demoted_at = Some(now);
                        f.health = Health::Down; // restarting: a fresh probe must confirm it
                        f.successes = 0;
                        if let Some(s) = f.status.as_mut() {
                            s.in_recovery = true;
                            s.current_lsn = None;
                        }
                        self.phase = sw.phase(SwitchoverStage::Demoted);
                        self.promote_demoted_target(sw, now, out);
                    }
                    Err(e) => self.abort_switchover(from, to, &format!("demoting failed: {e}"), true, now, out),
                },
                _ if now >= deadline => self.abort_switchover(from, to, "demoting took too long", false, now, out),
                _ => {}
            },
            SwitchoverStage::Demoted => self.promote_demoted_target(sw, now, out),
            SwitchoverStage::Promoting => match event {
                _ if self.held == Some(to) && self.record_failing => {
                    self.drop_unrecorded_promotion(to, out);
                    self.abort_switchover(from, to, "the state file that must record the promotion cannot be written", false, now, out);
                }
                Some(Event::ActionDone { action: Action::Promote { node }, result }) if *node == to => match result {
                    Ok(()) => self.finish_promotion(to, Promotion::Switchover { from, started: sw.started }, now, out),
                    Err(e) => self.abort_switchover(from, to, &format!("promoting failed: {e}"), false, now, out),
                },
                _ if self.promoted_by_probe(to) => self.finish_promotion(to, Promotion::Switchover { from, started: sw.started }, now, out),
                _ if now >= deadline => self.abort_switchover(from, to, "promoting took too long", false, now, out),
                _ => {}
            },
        }
    }

    /// Switchover, old primary demoted: promote the target as soon as nothing holds it back. A
    /// target whose probe blips (a timeout, a dropped connection while the old primary
    /// restarts) is waited for until the switchover's deadline rather than given up at once.
    fn promote_demoted_target(&mut self, sw: Switch, now: Duration, out: &mut Vec<Action>) {
        let Switch { from, to, deadline, .. } = sw;
        match self.promote_blocker(to, now) {
            None => {
                log(out, Level::Info, format!("switchover: {} demoted; promoting {} once the state file records it", self.name(from), self.name(to)));
                self.note_promotion(to);
                self.held = Some(to);
                self.phase = sw.phase(SwitchoverStage::Promoting);
            }
            Some(why) if now >= deadline => {
                self.abort_switchover(from, to, &format!("{} demoted, but {why}", self.name(from)), false, now, out);
            }
            Some(why) => {
                if self.blocked_switchover.as_deref() != Some(why.as_str()) {
                    log(out, Level::Warn, format!("switchover: {} demoted; waiting to promote {}: {why}", self.name(from), self.name(to)));
                    self.blocked_switchover = Some(why);
                }
            }
        }
    }

    // ----- decisions ----------------------------------------------------------------------

    /// Rule 1 over the usable primaries: returns the writer (updating its timeline and LSN)
    /// and fences the others (rule 6). A primary on a timeline older than the highest ever
    /// routed is fenced whatever else it sees; while a promotion is in flight, no primary on
    /// its old timeline (or older) is adopted.
    fn apply_rule1(&mut self, previous: Option<NodeId>, out: &mut Vec<Action>) -> Option<NodeId> {
        let floor = self.writer_timeline.unwrap_or(0);
        let hint = self.hint().map_or(0, |(tl, _)| tl);
        let mut primaries: Vec<(NodeId, u32)> = Vec::new();
        let mut older: Vec<(NodeId, u32)> = Vec::new();
        for n in 0..self.nodes.len() {
            if self.promoting(n) {
                continue;
            }
            let Some(tl) = self.nodes[n].usable_primary().map(|s| s.timeline) else { continue };
            if tl < floor {
                older.push((n, tl));
                continue;
            }
            if tl < hint {
                continue; // held back, not fenced: a peer's word is no fact
            }
            if let Some((p, from)) = self.promoting_from
                && p != n
                && tl <= from
            {
                continue; // maybe replaced already: wait for the promoted node's answer
            }
            primaries.push((n, tl));
        }
        let (writer, fences) = rules::choose_writer(&primaries, previous);
        // Switch the route before fencing the node it replaces: never a fenced writer.
        if let Some(w) = writer
            && self.writer.is_some()
            && self.writer != Some(w)
        {
            self.route_writer(Some(w), out);
        }
        let fences = fences.into_iter().chain(older.into_iter().map(|(n, tl)| (n, FenceReason::OlderTimeline { timeline: tl, writer_timeline: floor })));
        for (n, reason) in fences {
            self.fence(n, reason, out);
        }
        let Some(w) = writer else {
            let tied: Vec<NodeId> = primaries.iter().map(|&(n, _)| n).collect();
            if tied.len() > 1 && tied != self.ambiguous {
                let names: Vec<&str> = tied.iter().map(|&n| self.name(n)).collect();
                let msg = format!("split brain with no previous writer: {} are primaries on one timeline; none is routed", names.join(", "));
                log(out, Level::Error, msg);
            }
            self.ambiguous = tied;
            return None;
        };
        self.ambiguous.clear();
        let s = self.nodes[w].status.as_ref().expect("a usable primary has a status");
        self.writer_timeline = self.writer_timeline.max(Some(s.timeline));
        self.writer_lsn = s.current_lsn.or(self.writer_lsn);
        if self.promoting_from.is_some_and(|(_, from)| s.timeline > from) {
            self.promoting_from = None;
        }
        Some(w)
    }

    fn fence(&mut self, n: NodeId, reason: FenceReason, out: &mut Vec<Action>) {
        if self.nodes[n].fence.is_some() {
            return;
        }
        self.nodes[n].fence = Some(reason);
        self.nodes[n].rejoin = RejoinTrack::default();
        let (level, msg) = match reason {
            FenceReason::SplitBrain { writer, timeline } => {
                out.push(Action::Alert(Alert::SplitBrain { kept: writer, fenced: n, timeline }));
                let msg = format!("split brain: {} is a second primary on timeline {timeline}; keeping {}, fencing {}", self.name(n), self.name(writer), self.name(n));
                (Level::Error, msg)
            }
            FenceReason::OlderTimeline { timeline, writer_timeline } => {
                let msg = format!("{} is a primary on the old timeline {timeline} (writer is on {writer_timeline}): fenced, needs rejoin", self.name(n));
                (Level::Warn, msg)
            }
            FenceReason::Replaced { by } => {
                (Level::Warn, format!("{} was replaced by {}: fenced, needs rejoin", self.name(n), self.name(by)))
            }
        };
        if self.writer == Some(n) {
            self.route_writer(None, out);
        }
        out.push(Action::Fence { node: n, reason });
        log(out, level, msg);
    }

    /// Lifts a fence. The rejoin bookkeeping stays until the next fence: a rejoin still running
    /// (the probes saw the node stream before the command returned) reports its result.
    fn lift_fence(&mut self, n: NodeId) {
        self.nodes[n].fence = None;
    }

    /// The node a WAL receiver streams from, if it is one of ours.
    fn sender_node(&self, r: &WalReceiver) -> Option<NodeId> {
        self.p.nodes.iter().position(|p| r.sender_host.as_deref().is_some_and(|h| *h == p.host.to_string() || *h == p.name) && r.sender_port.is_none_or(|port| port == p.port))
    }

    /// Whether `s` streams from a server that may be a primary this instance cannot see:
    /// streaming, and not from a node that answers as a standby (a cascade, as after a
    /// switchover's demotion, says nothing about a hidden primary).
    fn streams_from_possible_primary(&self, s: &NodeStatus) -> bool {
        let Some(r) = s.wal_receiver.as_ref().filter(|r| r.is_streaming()) else { return false };
        match self.sender_node(r) {
            Some(u) => {
                let t = &self.nodes[u];
                !(t.up() && t.status.as_ref().is_some_and(|us| us.in_recovery))
            }
            None => true,
        }
    }

    /// Rule 2's guards, then rule 3's candidate.
    fn failover_check(&self, old: Option<NodeId>, since: Duration, now: Duration) -> Result<NodeId, Blocked> {
        let needed = self.p.failover_after;
        match old {
            Some(o) => {
                let t = &self.nodes[o];
                let gone = t.failures >= needed || t.fence.is_some() || t.status.as_ref().is_some_and(|s| s.in_recovery);
                if !gone {
                    return Err(Blocked::Debouncing { failures: t.failures, needed });
                }
            }
            None => {
                let waited = now.saturating_sub(since);
                if waited < self.p.detection_time() {
                    let failures = (waited.as_nanos() / self.p.probe_interval.as_nanos().max(1)) as u32;
                    return Err(Blocked::Debouncing { failures, needed });
                }
            }
        }
        if !self.is_master() {
            return Err(Blocked::NotMaster);
        }
        if self.record_failing {
            return Err(Blocked::StateNotRecorded);
        }
        let (votes, members) = self.quorum(now);
        if !rules::has_quorum(votes, members) {
            return Err(Blocked::NoQuorum { votes, members });
        }
        if let Some(standby) = self.streaming_standby(old) {
            return Err(Blocked::StandbyStreaming { standby });
        }
        if let Some(o) = old
            && let Some(i) = self.peer_reports.iter().position(|w| {
                w.as_ref().is_some_and(|w| w.lost_here && w.report.writer.as_deref() == Some(self.name(o)))
            })
        {
            return Err(Blocked::PeerReachesWriter { peer: self.p.peers[i] });
        }
        if let Some((timeline, peer)) = self.hint() {
            return Err(Blocked::PeerTimelineUnconfirmed { peer, timeline });
        }
        if let Some((p, _)) = self.promoting_from {
            return Err(Blocked::PromotionUnsettled { node: p });
        }
        // The synchronous standbys are every node but the old writer (`SetSyncStandbys` lists
        // them all, fenced ones too): a fenced node that streams may hold the last commit. A node
        // that answers on an older timeline (a stale primary, a standby off the writer's
        // history) holds no commit of the writer's timeline, so it does not count.
        let floor = self.writer_timeline.unwrap_or(0);
        let stale = |n: NodeId| {
            let t = &self.nodes[n];
            t.up() && t.status.as_ref().is_some_and(|s| s.timeline < floor)
        };
        let listed = (0..self.nodes.len()).filter(|&n| Some(n) != old && !stale(n)).count();
        // Without a known old writer, one of the listed nodes was it.
        let others = listed.saturating_sub(usize::from(old.is_none()));
        let visible = |n: NodeId| {
            let t = &self.nodes[n];
            t.up() && t.status.as_ref().is_some_and(|s| s.in_recovery)
        };
        let reachable = (0..self.nodes.len()).filter(|&n| Some(n) != old && visible(n) && !stale(n)).count();
        let sync_needed = rules::sync_standbys_needed(others, self.p.synchronous_count);
        if reachable < sync_needed {
            return Err(Blocked::SyncStandbysUnreachable { reachable, needed: sync_needed });
        }
        // Two masters that cannot hear each other must rank the same candidate: each needs the
        // whole cluster (every node that could be a candidate) in view.
        let peer_heard = self.peers_heard.iter().flatten().any(|&h| now.saturating_sub(h) <= self.p.peer_timeout);
        if self.p.vrrp_enabled && !self.p.peers.is_empty() && !peer_heard {
            let unseen = (0..self.nodes.len()).find(|&n| {
                Some(n) != old && self.nodes[n].fence.is_none() && !self.p.nodes[n].nofailover && !visible(n)
            });
            if let Some(unseen) = unseen {
                return Err(Blocked::PartialView { unseen });
            }
        }
        // Rank only final positions: a standby still receiving could overtake the first.
        let on_timeline = |s: &NodeStatus| self.writer_timeline.is_none_or(|tl| s.timeline == tl);
        // A standby catching up from another visible standby (a cascade) can never pass its
        // upstream, whose own position is checked here: its movement holds nothing back. The
        // old writer counts as one once it answers in recovery (a switchover's demoted node).
        let bounded_by_checked = |s: &NodeStatus| {
            s.wal_receiver.as_ref().filter(|r| r.is_streaming()).and_then(|r| self.sender_node(r)).is_some_and(visible)
        };
        let moving = (0..self.nodes.len()).filter(|&n| visible(n)).find(|&n| {
            let t = &self.nodes[n];
            t.status.as_ref().is_some_and(|s| on_timeline(s) && s.received() != t.prev_received && !bounded_by_checked(s))
        });
        if let Some(standby) = moving {
            return Err(Blocked::PositionsMoving { standby });
        }
        self.pick_candidate(old, now)
    }

    /// Rule 3: reachable standby on the writer's timeline, not nofailover, within the lag limit;
    /// highest received LSN, then priority, then name; never behind another reachable standby
    /// (fenced ones included: a fenced node that streams may hold acknowledged commits).
    fn pick_candidate(&self, old: Option<NodeId>, now: Duration) -> Result<NodeId, Blocked> {
        let standbys: Vec<(NodeId, &NodeStatus)> =
            (0..self.nodes.len()).filter(|&n| Some(n) != old).filter_map(|n| Some((n, self.nodes[n].usable_standby()?))).collect();
        let visible: Vec<(NodeId, &NodeStatus)> = (0..self.nodes.len())
            .filter(|&n| Some(n) != old && self.nodes[n].up())
            .filter_map(|n| Some((n, self.nodes[n].status.as_ref().filter(|s| s.in_recovery)?)))
            .collect();
        let timeline = self.writer_timeline.or_else(|| standbys.iter().map(|(_, s)| s.timeline).max());
        let on_timeline = |s: &NodeStatus| Some(s.timeline) == timeline;
        let max_received = visible.iter().filter(|(_, s)| on_timeline(s)).filter_map(|(_, s)| s.received()).max();
        let reference = self.writer_lsn.max(max_received).unwrap_or_default();
        let mut candidates: Vec<Candidate<'_>> = standbys
            .iter()
            .filter(|(n, s)| {
                let p = &self.p.nodes[*n];
                !p.nofailover && on_timeline(s) && self.nodes[*n].excluded_until.is_none_or(|u| now >= u)
            })
            .filter_map(|&(n, s)| {
                let received = s.received()?;
                rules::within_lag(reference, received, self.p.max_lag_on_failover_bytes).then(|| Candidate {
                    node: n,
                    received,
                    priority: self.p.nodes[n].priority,
                    name: &self.p.nodes[n].name,
                })
            })
            .collect();
        rules::rank_candidates(&mut candidates);
        let best = candidates.first().ok_or(Blocked::NoCandidate)?;
        if let Some(&(ahead, _)) =
            visible.iter().find(|(_, s)| on_timeline(s) && s.received().is_some_and(|r| r > best.received))
        {
            return Err(Blocked::CandidateBehind { candidate: best.node, ahead });
        }
        Ok(best.node)
    }

    /// A reachable standby that still streams from `old` (with no known old writer: from
    /// something not a standby, a primary out of sight): the old writer is alive.
    fn streaming_standby(&self, old: Option<NodeId>) -> Option<NodeId> {
        (0..self.nodes.len()).find(|&n| {
            let Some(s) = self.nodes[n].usable_standby() else { return false };
            let streaming = match old {
                Some(o) => s.streams_from(&self.p.nodes[o]) && self.streams_from_possible_primary(s),
                None => self.streams_from_possible_primary(s),
            };
            streaming && Some(n) != old
        })
    }

    /// (votes, members): this instance, every reachable node (up, and its last probe answered:
    /// a node failing probes, not yet debounced down, gives no vote), every peer heard recently.
    fn quorum(&self, now: Duration) -> (usize, usize) {
        let nodes = self.nodes.iter().filter(|t| t.up() && t.failures == 0).count();
        let peers = self.peers_heard.iter().flatten().filter(|&&h| now.saturating_sub(h) <= self.p.peer_timeout).count();
        (1 + nodes + peers, self.p.members())
    }

    /// Remembers (durably: the next `Persist` goes out before the `Promote`) that `n` is being
    /// promoted from the writer's timeline.
    fn note_promotion(&mut self, n: NodeId) {
        let from = self.writer_timeline.or_else(|| self.nodes[n].status.as_ref().map(|s| s.timeline)).unwrap_or(0);
        self.promoting_from = Some((n, from));
    }

    /// Failover, step one: every guard holds for `candidate`. Refuse writes (this load
    /// balancer sends nothing more to the old writer) and point every other reachable standby at
    /// the candidate, so none of them can acknowledge another commit of the old writer (alive
    /// somewhere, or coming back) that the promoted node would lack. The ranking is done again
    /// on positions probed after that ([`Self::on_settling`]).
    fn start_settling(&mut self, old: Option<NodeId>, candidate: NodeId, now: Duration, out: &mut Vec<Action>) {
        let (votes, members) = self.quorum(now);
        let why = match old {
            Some(o) => format!("{} failed {} consecutive probes", self.name(o), self.nodes[o].failures),
            None => format!("no primary for {:?}", self.p.detection_time()),
        };
        let msg = format!(
            "failover: {} is the candidate because {why}; quorum {votes} of {members}; no reachable standby streams from the old writer; writes refused and the other standbys pointed at it before the final ranking",
            self.name(candidate)
        );
        log(out, Level::Warn, msg);
        out.push(Action::Alert(Alert::FailoverStarted { from: old, candidate }));
        if self.writer.is_some() {
            self.route_writer(None, out);
        }
        self.settling.clear();
        for n in 0..self.nodes.len() {
            if n != candidate && Some(n) != old && self.nodes[n].usable_standby().is_some() {
                out.push(Action::Repoint { node: n, primary: candidate });
                self.nodes[n].last_repoint = Some(now);
                self.settling.push(n);
            }
        }
        // The candidate's position after the writes were refused.
        out.push(Action::Probe { node: candidate });
        self.blocked = None;
        let deadline = now + self.p.probe_interval * SETTLE_INTERVALS;
        self.phase = Phase::Settling { old, candidate, since: now, deadline };
    }

    /// Failover, step two: the standbys' positions as probed after they stopped following the
    /// old writer (each one's probe taken after its re-point was done; the candidate's after the
    /// writes were refused), or what is known at the deadline. Every guard is checked again on
    /// them, the best candidate ranked again — it may differ — and promoted.
    fn on_settling(&mut self, old: Option<NodeId>, candidate: NodeId, since: Duration, deadline: Duration, now: Duration, out: &mut Vec<Action>) {
        // The old writer (or a newer primary) answering ends it, as in WriterLost.
        if let Some(c) = self.apply_rule1(old.or(self.last_writer), out) {
            let tl = self.writer_timeline.unwrap_or_default();
            log(out, Level::Warn, format!("failover called off: {} is a primary on timeline {tl}: it becomes the writer", self.name(c)));
            if Some(c) != old {
                out.push(Action::Alert(Alert::WriterChanged { from: old, to: c, timeline: tl }));
            }
            self.route_writer(Some(c), out);
            self.phase = Phase::Steady;
            return;
        }
        let fresh = |n: NodeId| {
            let t = &self.nodes[n];
            t.repoint_done_at.is_some_and(|d| d >= since && t.status_at >= d)
        };
        let settled = self.nodes[candidate].status_at >= since && self.settling.iter().all(|&n| fresh(n));
        if !settled && now < deadline {
            return;
        }
        match self.failover_check(old, Duration::ZERO, now) {
            Ok(best) => self.start_promotion(old, best, now, out),
            Err(reason) => {
                let writer = old.map_or("none", |o| self.name(o));
                log(out, Level::Warn, format!("failover held back after the standbys were read again (writer was {writer}): {reason}"));
                out.push(Action::Alert(Alert::FailoverBlocked { writer: old, reason: reason.clone() }));
                self.blocked = Some(reason);
                self.phase = Phase::WriterLost { old, since: now };
            }
        }
    }

    /// Failover, step three: promote `candidate` (durably noted first).
    fn start_promotion(&mut self, old: Option<NodeId>, candidate: NodeId, now: Duration, out: &mut Vec<Action>) {
        let received = self.nodes[candidate].status.as_ref().and_then(NodeStatus::received).unwrap_or_default();
        let msg = format!(
            "failover: promoting {} (received {received:#x}, priority {}) once the state file records it",
            self.name(candidate),
            self.p.nodes[candidate].priority
        );
        log(out, Level::Warn, msg);
        self.note_promotion(candidate);
        self.held = Some(candidate);
        self.phase = Phase::FailingOver { old, candidate, deadline: now + self.p.promote_timeout };
    }

    /// Whether a probe already shows `n` promoted: a primary above the timeline it was promoted
    /// from.
    fn promoted_by_probe(&self, n: NodeId) -> bool {
        let from = self.promoting_from.filter(|(p, _)| *p == n).map_or(self.writer_timeline.unwrap_or(0), |(_, tl)| tl);
        self.nodes[n].usable_primary().is_some_and(|s| s.timeline > from)
    }

    /// The promotion's outcome is unknown (an error may come after the server acted): the
    /// candidate stays the promotion in flight, so no other standby is promoted and no primary
    /// on the old timeline adopted until a probe shows what it is.
    fn promotion_failed(&mut self, old: Option<NodeId>, candidate: NodeId, error: String, now: Duration, out: &mut Vec<Action>) {
        if self.held == Some(candidate) {
            // Never sent: its record did not land in time.
            self.drop_unrecorded_promotion(candidate, out);
            self.phase = Phase::WriterLost { old, since: now };
            return;
        }
        let msg = format!("promoting {} failed: {error}; trying again without it once a probe shows it still a standby", self.name(candidate));
        log(out, Level::Error, msg);
        out.push(Action::Alert(Alert::PromoteFailed { node: candidate, error }));
        self.nodes[candidate].excluded_until = Some(now + self.p.promote_timeout);
        self.phase = Phase::WriterLost { old, since: now };
    }

    /// Rule 4 and 5: route writes to the promoted node in one map write, fence the replaced
    /// writer, and, on the VRRP master, re-point the other standbys and keep
    /// synchronous_standby_names meaningful (a backup only observes).
    fn finish_promotion(&mut self, new: NodeId, how: Promotion, now: Duration, out: &mut Vec<Action>) {
        if self.held == Some(new) {
            self.held = None; // promoted already (a probe shows it): nothing to send
        }
        let probed_tl = self.nodes[new].usable_primary().map(|s| s.timeline);
        let from = self.promoting_from.filter(|(p, _)| *p == new).map_or(self.writer_timeline.unwrap_or(0), |(_, tl)| tl);
        let tl = probed_tl.unwrap_or(from + 1).max(from + 1);
        self.writer_timeline = self.writer_timeline.max(Some(tl));
        self.promoting_from = None;
        self.writer_lsn = self.nodes[new].status.as_ref().and_then(|s| s.current_lsn.or(s.received()));
        // The promoted node's last probe may still say "standby": it is the primary now.
        if let Some(s) = self.nodes[new].status.as_mut()
            && s.in_recovery
        {
            s.in_recovery = false;
            s.timeline = tl;
            s.wal_receiver = None;
        }
        self.route_writer(Some(new), out);
        let skip = match how {
            Promotion::Failover { old } => {
                if let Some(o) = old.filter(|&o| o != new) {
                    self.fence(o, FenceReason::Replaced { by: new }, out);
                }
                old
            }
            Promotion::Switchover { from, .. } => Some(from), // Demote already pointed it at `new`
        };
        if self.is_master() {
            for n in 0..self.nodes.len() {
                if n != new && Some(n) != skip && self.nodes[n].fence.is_none() && self.nodes[n].up() {
                    out.push(Action::Repoint { node: n, primary: new });
                    self.nodes[n].last_repoint = Some(now);
                    self.nodes[n].misdirected_since = None;
                }
            }
            if self.p.synchronous_count > 0 {
                let names = (0..self.nodes.len()).filter(|&n| n != new).map(|n| self.name(n).to_owned()).collect();
                out.push(Action::SetSyncStandbys { on: new, count: self.p.synchronous_count, names });
            }
        } else {
            let msg = format!("{} promoted while this instance is a vrrp backup: re-pointing is left to the master", self.name(new));
            log(out, Level::Warn, msg);
        }
        match how {
            Promotion::Failover { old } => {
                let from = old.map_or("none", |o| self.name(o));
                log(out, Level::Warn, format!("failover done: {} is the writer on timeline {tl} (was {from})", self.name(new)));
                out.push(Action::Alert(Alert::FailedOver { from: old, to: new }));
            }
            Promotion::Switchover { from, started } => {
                let paused = now.saturating_sub(started);
                log(out, Level::Info, format!("switchover done: {} is the writer on timeline {tl} (was {}); writes paused for {} ms", self.name(new), self.name(from), paused.as_millis()));
                out.push(Action::Alert(Alert::SwitchoverDone { from, to: new, paused }));
            }
        }
        for t in &mut self.nodes {
            t.excluded_until = None;
        }
        self.phase = Phase::Steady;
    }

    /// Checks a switchover request and, if it is safe, blocks writes (stage 1).
    fn start_switchover(&mut self, from: NodeId, to: NodeId, now: Duration, out: &mut Vec<Action>) {
        let reason = if to >= self.nodes.len() {
            Some(format!("there is no node #{to}"))
        } else if to == from {
            Some(format!("{} is the writer already", self.name(to)))
        } else if !self.is_master() {
            Some("this load balancer is not the vrrp master".to_owned())
        } else {
            match self.nodes[to].usable_standby() {
                None => Some(format!("{} is not a reachable, unfenced standby", self.name(to))),
                Some(s) if Some(s.timeline) != self.writer_timeline => {
                    Some(format!("{} is on timeline {}, not the writer's", self.name(to), s.timeline))
                }
                Some(s) if !s.streams_from(&self.p.nodes[from]) => {
                    Some(format!("{} does not stream from {}", self.name(to), self.name(from)))
                }
                Some(s) => {
                    let received = s.received().unwrap_or_default();
                    let reference = self.writer_lsn.unwrap_or_default();
                    (!rules::within_lag(reference, received, self.p.max_lag_on_failover_bytes))
                        .then(|| format!("{} lags {} bytes behind", self.name(to), reference - received))
                }
            }
        };
        if let Some(reason) = reason {
            self.reject_switchover(to, reason, out);
            return;
        }
        let msg = format!("switchover from {} to {}: new writes refused until {} has everything", self.name(from), self.name(to), self.name(to));
        log(out, Level::Info, msg);
        self.route_writer(None, out);
        self.blocked_switchover = None;
        let stage = SwitchoverStage::CatchingUp { blocked_at: now, old_lsn: None };
        self.phase = Phase::Switchover { from, to, stage, deadline: now + self.p.switchover_timeout, started: now };
    }

    fn reject_switchover(&self, to: NodeId, reason: String, out: &mut Vec<Action>) {
        log(out, Level::Warn, format!("switchover to #{to} rejected: {reason}"));
        out.push(Action::Alert(Alert::SwitchoverRejected { to, reason }));
    }

    /// Why a switchover may not promote `to` now (the same guards a failover has).
    fn promote_blocker(&self, to: NodeId, now: Duration) -> Option<String> {
        let (votes, members) = self.quorum(now);
        if self.nodes[to].usable_standby().is_none() {
            Some(format!("{} is not a reachable standby", self.name(to)))
        } else if !self.is_master() {
            Some("this load balancer is no longer the vrrp master".to_owned())
        } else if !rules::has_quorum(votes, members) {
            Some(format!("no quorum: {votes} of {members} members visible"))
        } else {
            None
        }
    }

    /// Gives up a switchover. With `restore` the old primary is still one: route to it again.
    /// Without, the old primary may be a standby now (or half-stopped): the writer is lost,
    /// with the old primary as the old writer, so failover's guards judge it like any loss (a
    /// demoted old primary counts as gone; standbys cascading from it hide no primary).
    fn abort_switchover(&mut self, from: NodeId, to: NodeId, reason: &str, restore: bool, now: Duration, out: &mut Vec<Action>) {
        self.cancel_held();
        log(out, Level::Error, format!("switchover from {} to {} aborted: {reason}", self.name(from), self.name(to)));
        out.push(Action::Alert(Alert::SwitchoverAborted { from, to, reason: reason.to_owned() }));
        if restore {
            self.route_writer(Some(from), out);
            self.phase = Phase::Steady;
        } else {
            self.phase = Phase::WriterLost { old: Some(from), since: now };
        }
    }

    /// Rule 5, level-triggered, on the VRRP master only: a standby that has not streamed from
    /// the writer for `repoint_after` is re-pointed (again, at most once per `repoint_after`).
    /// A standby on a newer timeline than the writer's is never pointed back at it.
    fn repoint_misdirected(&mut self, now: Duration, out: &mut Vec<Action>) {
        let Some(w) = self.writer else { return };
        let master = self.is_master();
        let writer_tl = self.writer_timeline.unwrap_or(0);
        let after = self.p.repoint_after();
        for n in 0..self.nodes.len() {
            if n == w {
                continue;
            }
            let Some(s) = self.nodes[n].usable_standby() else {
                self.nodes[n].misdirected_since = None;
                continue;
            };
            if !master || s.streams_from(&self.p.nodes[w]) || s.timeline > writer_tl {
                self.nodes[n].misdirected_since = None;
                continue;
            }
            let t = &mut self.nodes[n];
            let since = *t.misdirected_since.get_or_insert(now);
            if now.saturating_sub(since) >= after && t.last_repoint.is_none_or(|r| now.saturating_sub(r) >= after) {
                t.last_repoint = Some(now);
                let msg = format!("{} has not streamed from the writer {} for {after:?}: re-pointing it", self.name(n), self.name(w));
                log(out, Level::Info, msg);
                out.push(Action::Repoint { node: n, primary: w });
            }
        }
    }

    /// Rule 6's self-healing (`rejoin_command`): on the VRRP master, in Steady with a healthy
    /// writer, a fenced former primary that answers again is rejoined: once per fence, again
    /// only after a failure and its backoff. A split-brain primary is left to an operator: its
    /// writes on the shared timeline would be rewound away.
    fn schedule_rejoins(&mut self, now: Duration, out: &mut Vec<Action>) {
        if !self.p.rejoin || !self.is_master() || self.phase != Phase::Steady {
            return;
        }
        let Some(w) = self.writer.filter(|&w| self.nodes[w].up()) else { return };
        for n in 0..self.nodes.len() {
            let t = &self.nodes[n];
            let former_primary = matches!(t.fence, Some(FenceReason::Replaced { .. } | FenceReason::OlderTimeline { .. }));
            // Never rewind a node that is a primary on the writer's timeline or a newer one.
            let writer_tl = self.writer_timeline.unwrap_or(0);
            let not_older = t.status.as_ref().is_some_and(|s| !s.in_recovery && s.timeline >= writer_tl);
            let r = t.rejoin;
            if n == w || !former_primary || not_older || !t.up() || r.in_flight || r.succeeded || r.not_before.is_some_and(|nb| now < nb) {
                continue;
            }
            let t = &mut self.nodes[n];
            t.rejoin.in_flight = true;
            t.rejoin.attempts += 1;
            t.rejoin.not_before = None;
            let attempt = t.rejoin.attempts;
            let msg = format!("rejoining {} as a standby of {} with rejoin_command (attempt {attempt})", self.name(n), self.name(w));
            log(out, Level::Warn, msg);
            out.push(Action::Rejoin { node: n, primary: w });
        }
    }

    /// VRRP priority tracking (`Track`): whether this instance reaches the writer. A backup
    /// that lost the writer says no at once; the master says no only when failover has been
    /// held back by a guard for `track_hold` (while it is failing over or switching over it
    /// keeps its priority), so that when only this instance lost the writer a peer that still
    /// reaches it takes the VIP, and when everyone lost it nothing flips. Under a SYN flood
    /// ([`Event::Flood`]) it says yes: its probes fail in its own congestion, and the VIP would
    /// take the flood to the peer and leave every established connection behind.
    fn reconcile_tracking(&mut self, now: Duration, out: &mut Vec<Action>) {
        if !self.p.vrrp_enabled {
            return;
        }
        let reachable = match self.phase {
            Phase::Starting => return,
            _ if self.flood => true,
            Phase::Steady => self.writer.is_some_and(|w| self.nodes[w].up() && self.nodes[w].failures < self.p.failover_after),
            Phase::Settling { .. } | Phase::FailingOver { .. } | Phase::Switchover { .. } => true,
            Phase::WriterLost { since, .. } => {
                let holding = matches!(self.blocked, Some(ref b) if !matches!(b, Blocked::Debouncing { .. }));
                self.is_master() && !(holding && now.saturating_sub(since) >= self.p.track_hold)
            }
        };
        if self.tracked != Some(reachable) {
            self.tracked = Some(reachable);
            let msg = if reachable {
                "tracking: this instance reaches the writer: full vrrp priority".to_owned()
            } else {
                "tracking: this instance does not reach the writer: lowering its vrrp priority so a peer that does can take the VIP".to_owned()
            };
            log(out, if reachable { Level::Info } else { Level::Warn }, msg);
            out.push(Action::Track { writer_reachable: reachable });
        }
    }

    // ----- outputs ------------------------------------------------------------------------

    fn promoting(&self, n: NodeId) -> bool {
        match self.phase {
            Phase::FailingOver { candidate, .. } => candidate == n,
            Phase::Switchover { to, stage: SwitchoverStage::Promoting, .. } => to == n,
            _ => false,
        }
    }

    fn route_writer(&mut self, node: Option<NodeId>, out: &mut Vec<Action>) {
        if self.writer != node || !self.writer_emitted {
            self.writer = node;
            self.writer_emitted = true;
            if node.is_some() {
                self.last_writer = node;
            }
            out.push(Action::SetWriter { node });
        }
    }

    /// Rule 7: standbys on the writer's timeline within both read-lag limits; the writer if
    /// none qualifies.
    fn compute_readers(&self) -> Vec<NodeId> {
        // With no writer ever known, the standbys on the highest timeline serve reads.
        let timeline = self
            .writer_timeline
            .or_else(|| self.nodes.iter().filter_map(|t| t.usable_standby().map(|s| s.timeline)).max());
        let standbys: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&n| self.p.nodes[n].read_weight > 0 && !self.promoting(n))
            .filter(|&n| {
                self.nodes[n].usable_standby().is_some_and(|s| {
                    Some(s.timeline) == timeline
                        && rules::read_lag_ok(self.writer_lsn, s.replay_lsn, s.replay_lag, self.p.max_read_lag_bytes, self.p.max_read_lag)
                })
            })
            .collect();
        if standbys.is_empty() { self.writer.into_iter().collect() } else { standbys }
    }

    fn reconcile_readers(&mut self, out: &mut Vec<Action>) {
        let readers = self.compute_readers();
        if self.readers.as_ref() != Some(&readers) {
            self.readers = Some(readers.clone());
            out.push(Action::SetReaders { nodes: readers });
        }
    }

    fn note_state_changes(&mut self, now: Duration) {
        for n in 0..self.nodes.len() {
            let state = if self.promoting(n) {
                NodeState::Promoting
            } else if let Some(f) = self.nodes[n].fence {
                f.state()
            } else {
                match self.nodes[n].health {
                    Health::Unknown => NodeState::Unknown,
                    Health::Up => NodeState::Up,
                    Health::Down => NodeState::Down,
                }
            };
            let t = &mut self.nodes[n];
            if t.state != state {
                t.state = state;
                t.last_change = now;
            }
        }
    }
}

fn log(out: &mut Vec<Action>, level: Level, message: String) {
    out.push(Action::Log { level, message });
}
