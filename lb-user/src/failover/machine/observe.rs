//! Observation: what probes, peers and VRRP tell the machine — node tracks and their
//! debounced health, the timeline floor (facts from probes) and a peer's timeline hint, the
//! quorum count, the results of executor actions that matter in every phase.

use super::*;

impl Machine {
    pub(super) fn observe(&mut self, obs: &Observation, now: Duration, out: &mut Vec<Action>) {
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
                    if status.in_recovery && self.writer_timeline.is_some() {
                        self.floor_raised_by_standby = Some((obs.at, status.timeline, n));
                    }
                    self.raise_floor(n, status.timeline, out);
                }
            }
        }
    }

    /// A timeline newer than any routed here exists (`n` answered on it): it becomes the floor,
    /// so no primary on an older one is adopted or kept (rule 1 fences the writer if it is one).
    pub(super) fn raise_floor(&mut self, n: NodeId, timeline: u32, out: &mut Vec<Action>) {
        let before = self.writer_timeline.unwrap_or(0);
        let ours = self.promoting_from.is_some_and(|(p, _)| p == n);
        let quiet = before == 0 || ours;
        self.set_floor(timeline, (!quiet).then(|| format!("{} answers on timeline {timeline}", self.name(n))), Some(n), out);
    }

    /// A peer's authenticated report: its quorum vote, the writer it reaches (remembered with
    /// whether we had lost it then, [`Blocked::PeerReachesWriter`]), and its timeline, which
    /// is a hint, not a fact ([`Self::hint`]): a timeline above ours holds writes to older
    /// primaries back while the peer keeps saying it, until a probe confirms it.
    pub(super) fn on_peer_report(&mut self, peer: std::net::Ipv4Addr, report: &PeerReport, now: Duration, out: &mut Vec<Action>) {
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
        if let Some(m) = &report.maintenance {
            self.on_maintenance(m, Some(peer), out);
        }
        for m in &report.marks {
            self.on_mark(m, Some(peer), out);
        }
        self.peer_reports[i] = Some(PeerWord { report: report.clone(), at: now, lost_here });
        self.peers_heard[i] = Some(now);
    }

    /// The floor becomes `timeline` (`why` logged unless `None`); a writer routed here on an
    /// older timeline is unrouted, unless `newer` (the node that showed the timeline) is a
    /// usable primary rule 1 routes next in one map write.
    pub(super) fn set_floor(&mut self, timeline: u32, why: Option<String>, newer: Option<NodeId>, out: &mut Vec<Action>) {
        let before = self.writer_timeline.unwrap_or(0);
        self.writer_timeline = Some(timeline);
        if let Some(why) = why {
            log(out, Level::Warn, format!("{why}, newer than any routed here ({before}): primaries on older timelines get no writes"));
        }
        // The writer routed here (still debouncing its failures, say) is on an older timeline:
        // it is history, whatever its health says. (A newer primary is routed by rule 1 next,
        // in one map write.)
        // A writer not probed since a (re)start was routed on the floor before, at most.
        let routes_next = self.phase != Phase::Starting && newer.is_some_and(|n| self.nodes[n].usable_primary().is_some());
        if let Some(w) = self.writer
            && Some(w) != newer
            && !routes_next
            && self.nodes[w].status.as_ref().map_or(before < timeline, |s| s.timeline < timeline)
        {
            log(out, Level::Warn, format!("writes refused: the writer {} is on an older timeline than {timeline}", self.name(w)));
            self.route_writer(None, out);
        }
    }

    /// The newest timeline a fresh peer report names above every one confirmed here, and who
    /// names it: writes to older primaries are held back, and nothing is promoted, while it
    /// lasts. It is never the floor and never fences a node: a probe that sees a node on it
    /// (or past it) makes it a fact; the peer no longer saying it ends it.
    pub(super) fn hint(&self) -> Option<(u32, std::net::Ipv4Addr)> {
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
    pub(super) fn reaches(&self, n: NodeId) -> bool {
        let t = &self.nodes[n];
        t.up() && t.failures == 0
    }

    /// (votes, members): this instance, every reachable node (up, and its last probe answered:
    /// a node failing probes, not yet debounced down, gives no vote), every peer heard recently.
    pub(super) fn quorum(&self, now: Duration) -> (usize, usize) {
        let nodes = self.nodes.iter().filter(|t| t.up() && t.failures == 0).count();
        let peers = self.peers_heard.iter().flatten().filter(|&&h| now.saturating_sub(h) <= self.p.peer_timeout).count();
        (1 + nodes + peers, self.p.members())
    }

    /// Role handler: the probe failed (or no result came in time).
    pub(super) fn on_probe_failed(&mut self, n: NodeId, failure: ProbeFailure, out: &mut Vec<Action>) {
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
    pub(super) fn on_primary_seen(&mut self, n: NodeId, status: &NodeStatus, at: Duration, newer: bool, out: &mut Vec<Action>) {
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
    pub(super) fn on_standby_seen(&mut self, n: NodeId, status: &NodeStatus, at: Duration, out: &mut Vec<Action>) {
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

    pub(super) fn count_success(&mut self, n: NodeId, status: &NodeStatus, at: Duration, newest_primary: bool, out: &mut Vec<Action>) {
        let immediate = self.old_writer() == Some(n) || newest_primary;
        let up_after = self.p.up_after;
        let t = &mut self.nodes[n];
        t.failures = 0;
        t.successes = t.successes.saturating_add(1);
        if t.successes == 1 {
            t.answering_since = at;
        }
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
    pub(super) fn count_stale(&mut self, now: Duration, out: &mut Vec<Action>) {
        let stale_after = self.p.stale_after();
        for n in 0..self.nodes.len() {
            if now.saturating_sub(self.nodes[n].last_count_at) >= stale_after {
                self.nodes[n].last_count_at = now;
                self.on_probe_failed(n, ProbeFailure::Timeout, out);
            }
        }
    }

    pub(super) fn on_vrrp_role(&mut self, master: bool, out: &mut Vec<Action>) {
        if !self.p.vrrp_enabled || self.master == master {
            return;
        }
        self.master = master;
        let msg = if master { "vrrp master: this instance may fail over" } else { "vrrp backup: failover is left to the master" };
        log(out, Level::Info, msg.to_owned());
    }

    /// Results of executor actions that matter in every phase (promotions are the phases').
    pub(super) fn on_action_done(&mut self, action: &Action, result: &Result<(), String>, now: Duration, out: &mut Vec<Action>) {
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

    /// The node a WAL receiver streams from, if it is one of ours.
    pub(super) fn sender_node(&self, r: &WalReceiver) -> Option<NodeId> {
        self.p.nodes.iter().position(|p| r.sender_host.as_deref().is_some_and(|h| *h == p.host.to_string() || *h == p.name) && r.sender_port.is_none_or(|port| port == p.port))
    }

    /// Whether `s` streams from a server that may be a primary this instance cannot see:
    /// streaming, and not from a node that answers as a standby (a cascade, as after a
    /// switchover's demotion, says nothing about a hidden primary).
    pub(super) fn streams_from_possible_primary(&self, s: &NodeStatus) -> bool {
        let Some(r) = s.wal_receiver.as_ref().filter(|r| r.is_streaming()) else { return false };
        match self.sender_node(r) {
            Some(u) => {
                let t = &self.nodes[u];
                !(t.up() && t.status.as_ref().is_some_and(|us| us.in_recovery))
            }
            None => true,
        }
    }

    /// A reachable standby that still streams from `old` (with no known old writer: from
    /// something not a standby, a primary out of sight): the old writer is alive.
    pub(super) fn streaming_standby(&self, old: Option<NodeId>) -> Option<NodeId> {
        (0..self.nodes.len()).find(|&n| {
            let Some(s) = self.nodes[n].usable_standby() else { return false };
            let streaming = match old {
                Some(o) => s.streams_from(&self.p.nodes[o]) && self.streams_from_possible_primary(s),
                None => self.streams_from_possible_primary(s),
            };
            streaming && Some(n) != old
        })
    }
}
