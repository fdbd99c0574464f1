//! The VRRP glue: what the main loop tells the VRRP machine (priority, readiness), what the VRRP
//! machine reports back to the failover machine, the stall check that wakes the instance
//! humble, and this instance's report to its peers.

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{Runtime, VipOwner, VrrpWord, history::EventKind, params::VipSide};
use crate::{
    failover::Event,
    journal::EventName,
    vip::{VrrpEvent, VrrpState},
};

impl Runtime {
    /// A gap since the last turn longer than the lease or the master-down interval
    /// (`RunParams::stall_after`): everything this instance believes may
    /// be stale. Wake humble (see the module doc).
    pub(super) async fn check_stall(&mut self) {
        let now = Instant::now();
        let gap = now.saturating_duration_since(self.last_turn);
        self.last_turn = now;
        if gap <= self.p.stall_after {
            return;
        }
        self.counts.loop_stalls += 1;
        warn!(gap_ms = gap.as_millis() as u64, stall_after_ms = self.p.stall_after.as_millis() as u64,
            "the main loop stood still longer than its lease or its peer's master-down interval: waking humble (lease expired, VIP released, writes refused until fresh probes and peer reports)");
        self.record(EventKind::Vrrp, format!("main loop stood still for {} ms: woke humble", gap.as_millis()));
        // The machine first: nothing it believed before may act again (not even on the VRRP
        // role change that follows), and `ready` falls with it.
        self.feed(Event::Stalled);
        if let Err(e) = self.dataplane.expire_lease(self.p.lease.grace) {
            error!(error = %crate::error_chain(&e), "lease: letting it run out failed (it runs out by itself)");
        }
        self.tell_vrrp().await;
    }

    /// Brings the VRRP machine in line with what this loop knows: the tracked priority, and
    /// whether this instance may hold the VIP (the failover machine has decided). Role changes
    /// that follow are fed back to the failover machine.
    pub(super) async fn tell_vrrp(&mut self) {
        for _ in 0..4 {
            let VipOwner::Vrrp(runner) = &mut self.vip else { return };
            let VipSide::Vrrp(v) = &self.p.vip else { return };
            // An instance that cannot write its state file cannot act (no promotion without its
            // record): the lowest priority, so a peer that can takes the VIP and the decisions.
            let priority = if !self.ready {
                v.priority
            } else if !self.recorded {
                1
            } else if self.tracked_reachable {
                v.priority
            } else {
                v.priority.saturating_sub(v.track_weight).max(1)
            };
            let want = VrrpWord { priority, ready: self.ready };
            let Some(had) = self.vrrp_word.replace(want) else { return };
            if had == want {
                return;
            }
            let mut events = Vec::new();
            if had.priority != want.priority {
                info!(priority, writer_reachable = self.tracked_reachable, "vrrp tracking: priority set");
                events.extend(runner.set_priority(priority).await);
            }
            if had.ready != want.ready {
                events.extend(runner.set_ready(want.ready).await);
            }
            self.on_vrrp_events(events);
        }
    }

    /// What the VRRP machine reports: role changes and adverts heard, for the failover machine.
    pub(super) fn on_vrrp_events(&mut self, events: Vec<VrrpEvent>) {
        for ev in events {
            match ev {
                VrrpEvent::Role { master } => {
                    let text = if master { "this instance became VRRP master: it holds the VIP" } else { "this instance left VRRP master: it released the VIP" };
                    self.record(EventKind::Vrrp, text);
                    let view = self.machine.view();
                    let writer = view.writer.map(|w| self.node_name(w));
                    let name = if master { EventName::VrrpMaster } else { EventName::VrrpBackup };
                    self.emit(self.event(name, text).writers(writer.clone(), writer).timeline(view.writer_timeline));
                    self.feed(Event::VrrpRole { master });
                }
                VrrpEvent::PeerHeard { peer } => self.feed(Event::PeerHeard { peer }),
            }
        }
    }

    /// This instance's report to its peers: what its machine says, and its VRRP role, the
    /// priority its adverts carry (which the report vouches for) and whether it is healthy (it
    /// reaches the writer and can write its state file: a master that is not may be preempted).
    pub(super) fn send_report(&mut self) {
        let (role, priority) = match &self.vip {
            VipOwner::Vrrp(r) => (r.state(), r.priority()),
            VipOwner::Static(_) => (VrrpState::Master, 0),
        };
        let body = self.machine.report();
        let now = self.since.elapsed();
        let healthy = self.tracked_reachable && self.recorded;
        if let Some(link) = &mut self.reports {
            link.send(role, priority, healthy, &body, now);
        }
    }
}
