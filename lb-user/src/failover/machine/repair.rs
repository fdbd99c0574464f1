//! Repair: fences (rule 6), re-pointing misdirected standbys (rule 5) and rejoining fenced
//! former primaries with `rejoin_command`.

use super::*;

impl Machine {
    pub(super) fn fence(&mut self, n: NodeId, reason: FenceReason, out: &mut Vec<Action>) {
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
    pub(super) fn lift_fence(&mut self, n: NodeId) {
        self.nodes[n].fence = None;
    }

    /// Rule 5, level-triggered, on the VRRP master only: a standby that has not streamed from
    /// the writer for `repoint_after` is re-pointed (again, at most once per `repoint_after`).
    /// A standby on a newer timeline than the writer's is never pointed back at it.
    pub(super) fn repoint_misdirected(&mut self, now: Duration, out: &mut Vec<Action>) {
        let Some(w) = self.writer else { return };
        // Paused: a standby off the writer is the operator's business (the grace starts anew at
        // the resume).
        let master = self.is_master() && self.paused().is_none();
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
    pub(super) fn schedule_rejoins(&mut self, now: Duration, out: &mut Vec<Action>) {
        if !self.p.rejoin || !self.is_master() || self.phase != Phase::Steady || self.paused().is_some() {
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

    pub(super) fn on_rejoined(&mut self, n: NodeId, out: &mut Vec<Action>) {
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

    pub(super) fn on_rejoin_done(&mut self, n: NodeId, result: &Result<(), String>, now: Duration, out: &mut Vec<Action>) {
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
}
