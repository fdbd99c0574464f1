//! Routing: the phase handlers that run after every event, rule 1 (the writer) and its
//! start-up choice, the steady watch of the writer, rule 7 (the readers), VRRP tracking, and
//! the node states shown to operators.

use super::*;

impl Machine {
    /// Runs the current phase's handler; if it moved to another phase, lets that one look too
    /// (a failover can start in the same call that saw the last failed probe).
    pub(super) fn step_phase(&mut self, event: &Event, now: Duration, out: &mut Vec<Action>) {
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
    pub(super) fn on_starting(&mut self, now: Duration, out: &mut Vec<Action>) {
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
    pub(super) fn on_steady(&mut self, event: Option<&Event>, now: Duration, out: &mut Vec<Action>) {
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

    /// Rule 1 over the usable primaries: returns the writer (updating its timeline and LSN)
    /// and fences the others (rule 6). A primary on a timeline older than the highest ever
    /// routed is fenced whatever else it sees; while a promotion is in flight, no primary on
    /// its old timeline (or older) is adopted.
    pub(super) fn apply_rule1(&mut self, previous: Option<NodeId>, out: &mut Vec<Action>) -> Option<NodeId> {
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

    pub(super) fn route_writer(&mut self, node: Option<NodeId>, out: &mut Vec<Action>) {
        if self.writer != node || !self.writer_emitted {
            self.writer = node;
            self.writer_emitted = true;
            if node.is_some() {
                self.last_writer = node;
            }
            out.push(Action::SetWriter { node });
        }
    }

    /// Rule 7: standbys on the writer's timeline within both read-lag limits, not drained; the
    /// writer if none qualifies (drained or not: drain concerns a node as a standby).
    pub(super) fn compute_readers(&self) -> Vec<NodeId> {
        // With no writer ever known, the standbys on the highest timeline serve reads.
        let timeline = self
            .writer_timeline
            .or_else(|| self.nodes.iter().filter_map(|t| t.usable_standby().map(|s| s.timeline)).max());
        let standbys: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&n| self.p.nodes[n].read_weight > 0 && !self.promoting(n) && !self.marked(n, MarkKind::Drain))
            .filter(|&n| {
                self.nodes[n].usable_standby().is_some_and(|s| {
                    Some(s.timeline) == timeline
                        && rules::read_lag_ok(self.writer_lsn, s.replay_lsn, s.replay_lag, self.p.max_read_lag_bytes, self.p.max_read_lag)
                })
            })
            .collect();
        if standbys.is_empty() { self.writer.into_iter().collect() } else { standbys }
    }

    pub(super) fn reconcile_readers(&mut self, out: &mut Vec<Action>) {
        let readers = self.compute_readers();
        if self.readers.as_ref() != Some(&readers) {
            self.readers = Some(readers.clone());
            out.push(Action::SetReaders { nodes: readers });
        }
    }

    /// VRRP priority tracking (`Track`): whether this instance reaches the writer. A backup
    /// that lost the writer says no at once; the master says no only when failover has been
    /// held back by a guard for `track_hold` (while it is failing over or switching over it
    /// keeps its priority), so that when only this instance lost the writer a peer that still
    /// reaches it takes the VIP, and when everyone lost it nothing flips. Under a SYN flood
    /// ([`Event::Flood`]) it says yes: its probes fail in its own congestion, and the VIP would
    /// take the flood to the peer and leave every established connection behind.
    pub(super) fn reconcile_tracking(&mut self, now: Duration, out: &mut Vec<Action>) {
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

    pub(super) fn note_state_changes(&mut self, now: Duration) {
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
