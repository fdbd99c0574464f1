//! The failover machine's side of the loop: one event into the machine ([`Runtime::feed`]) and
//! its actions carried out in order ([`Runtime::apply`]): map writes at once, the state file to
//! the recorder, PostgreSQL and host actions to the executor; alerts counted and answered.

use std::sync::Arc;

use tracing::{error, info, warn};

use super::{Runtime, history::EventKind, snapshot::Published};
use crate::{
    failover::{Action, Alert, ClusterView, Event, FenceReason, Level, NodeId},
    journal::EventName,
    vip::report::ReportLink,
};

impl Runtime {
    /// One event into the machine, its actions carried out, the result published.
    pub(super) fn feed(&mut self, event: Event) {
        let now = self.since.elapsed();
        let actions = self.machine.handle(event, now);
        self.apply(actions);
        let view = self.machine.view();
        if view.recorded != self.recorded {
            self.recorded = view.recorded;
            let what = if self.recorded { "the state file is written again: full VRRP priority" } else { "the state file cannot be written: lowest VRRP priority, so a peer that can record its decisions takes the VIP" };
            warn!("{what}");
        }
        if view.ready != self.ready {
            self.ready = view.ready;
            if self.ready {
                info!("decided from fresh probes and peer reports: lease renewed, the VIP may be held");
                self.renew_lease();
            }
        }
        self.note_phase(&view.phase);
        let before = self.published.borrow().view.maintenance.clone();
        if view.maintenance != before
            && let Some(m) = &view.maintenance
        {
            self.note_maintenance(before.as_ref(), m);
        }
        let marks_before = self.published.borrow().view.marks.clone();
        for m in view.marks.iter().filter(|m| !marks_before.contains(m)) {
            self.note_mark(m);
        }
        // Readers of the snapshot borrow it when asked; only the agent channel waits for
        // changes, and only for what it publishes: waking it at every turn of this loop (tens
        // of times a second, for nothing) is most of an idle daemon's CPU.
        let routing = |v: &ClusterView| (v.vrrp_master, v.writer_timeline, v.writer, v.readers.clone());
        let routing_changed = routing(&self.published.borrow().view) != routing(&view);
        let next = Published {
            view,
            counts: self.counts,
            latency: self.latency.clone(),
            now: self.since.elapsed(),
            reports: self.reports.as_ref().map(ReportLink::counters),
        };
        self.published.send_if_modified(|p| {
            *p = next;
            routing_changed
        });
    }

    /// Carries out the machine's actions in order.
    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Persist(durable) => self.recorder.record(durable),
                Action::SetWriter { node } => self.set_writer(node),
                Action::SetReaders { nodes } => {
                    let readers: Vec<(u32, u32)> = nodes.iter().map(|n| (*n as u32, self.p.nodes[*n].read_weight.max(1))).collect();
                    let names: Vec<&str> = nodes.iter().map(|n| self.executor.ctx().name(*n)).collect();
                    match self.dataplane.set_readers(&readers) {
                        Ok(()) => info!(readers = ?names, "route: read port now goes to {}", if names.is_empty() { "nobody".to_owned() } else { names.join(", ") }),
                        Err(e) => error!(error = %crate::error_chain(&e), "route: setting the readers failed"),
                    }
                }
                Action::Track { writer_reachable } => self.tracked_reachable = writer_reachable,
                Action::Probe { node } => {
                    if let Some(n) = self.probe_now.get(node) {
                        n.notify_one();
                    }
                }
                Action::Fence { node, reason } => {
                    let name = self.executor.ctx().name(node).to_owned();
                    warn!(node = name, ?reason, "fence: {name} is never routed to until it rejoins");
                    let ctx = self.executor.ctx();
                    let why = match &reason {
                        FenceReason::SplitBrain { writer, timeline } => format!("a second primary beside {} on timeline {timeline}", ctx.name(*writer)),
                        FenceReason::OlderTimeline { timeline, writer_timeline } => format!("a primary on timeline {timeline}, older than the writer's {writer_timeline}"),
                        FenceReason::Replaced { by } => format!("the former writer, replaced by {}", ctx.name(*by)),
                    };
                    let text = format!("{name} fenced ({why}): never routed until it rejoins");
                    self.record(EventKind::Fence, text.clone());
                    let timeline = self.machine.view().writer_timeline;
                    self.emit(self.event(EventName::Fence, text).node(name).timeline(timeline));
                }
                Action::Alert(alert) => self.on_alert(alert),
                Action::Log { level, message } => match level {
                    Level::Info => info!("{message}"),
                    Level::Warn => warn!("{message}"),
                    Level::Error => error!("{message}"),
                },
                a @ (Action::Promote { .. } | Action::Repoint { .. } | Action::Demote { .. } | Action::Rejoin { .. } | Action::SetSyncStandbys { .. }) => {
                    self.executor.spawn(a);
                }
            }
        }
    }

    /// The write port's backend, in one map write; then, off this task, a RST to every client
    /// still on the old writer (those waiting for a hung server's answer included).
    fn set_writer(&mut self, node: Option<NodeId>) {
        let name = node.map(|n| self.executor.ctx().name(n).to_owned());
        let id = node.map(|n| n as u32);
        if let Err(e) = self.dataplane.set_writer(id) {
            error!(error = %crate::error_chain(&e), "route: setting the writer failed");
            return;
        }
        info!(writer = ?name, "route: write port now goes to {}", name.as_deref().unwrap_or("nobody (writes refused)"));
        let pinned = Arc::clone(&self.pinned);
        tokio::task::spawn_blocking(move || {
            let result = pinned.lock().unwrap_or_else(|p| p.into_inner()).reset_stale_write_flows(id);
            match result {
                Ok(0) => {}
                Ok(n) => info!(clients = n, "route: reset the write connections still pinned to the old writer"),
                Err(e) => warn!(error = %crate::error_chain(&e), "route: resetting stale write connections failed (they are reset on their next packet)"),
            }
        });
    }

    /// Every alert in one place: counts, the waiting operator's answer, the recent events, the
    /// log.
    fn on_alert(&mut self, alert: Alert) {
        let name = |n: NodeId| self.executor.ctx().name(n).to_owned();
        let from_name = |n: Option<NodeId>| n.map_or_else(|| "none".to_owned(), name);
        match &alert {
            Alert::FailedOver { from, to } => {
                self.counts.failovers += 1;
                let text = format!("failover: {} -> {}, the new writer is routed", from_name(*from), name(*to));
                let timeline = self.machine.view().writer_timeline;
                let event = self.event(EventName::Failover, text.clone()).writers(from.map(name), Some(name(*to))).timeline(timeline);
                self.end_writer_lost(text);
                self.emit(event);
            }
            Alert::WriterChanged { from, to, timeline } => {
                let text = format!("writer changed: {} -> {} (timeline {timeline}), routed", from_name(*from), name(*to));
                let event = self.event(EventName::WriterChanged, text.clone()).writers(from.map(name), Some(name(*to))).timeline(Some(*timeline));
                self.end_writer_lost(text);
                self.emit(event);
            }
            Alert::RejoinFailed { node, attempt, .. } => {
                self.counts.rejoins_failed += 1;
                let text = format!("rejoin of {} failed (attempt {attempt}): it stays fenced", name(*node));
                self.record(EventKind::Fence, text.clone());
                self.emit(self.event(EventName::RejoinFailed, text).node(name(*node)));
            }
            Alert::RejoinDone { node, .. } => {
                self.counts.rejoins_ok += 1;
                let text = format!("{} rejoined (rejoin_command succeeded)", name(*node));
                self.record(EventKind::Fence, text.clone());
                self.emit(self.event(EventName::RejoinOk, text).node(name(*node)));
            }
            Alert::SwitchoverDone { from, to, paused } => {
                self.counts.switchovers += 1;
                let text = format!("switchover done: {} -> {}; writes paused for {} ms", name(*from), name(*to), paused.as_millis());
                let timeline = self.machine.view().writer_timeline;
                self.emit(self.event(EventName::Switchover, text.clone()).writers(Some(name(*from)), Some(name(*to))).timeline(timeline));
                if let Some(p) = self.pending.take() {
                    self.end_event(p.event, text.clone());
                    let _ = p.reply.send(Ok(text));
                }
            }
            Alert::SwitchoverAborted { reason, to, .. } | Alert::SwitchoverRejected { reason, to } => {
                let text = format!("switchover to {} failed: {reason}", name(*to));
                let writer = self.machine.view().writer.map(name);
                self.emit(self.event(EventName::SwitchoverFailed, text.clone()).node(name(*to)).writers(writer.clone(), writer));
                if let Some(p) = self.pending.take() {
                    self.end_event(p.event, text.clone());
                    let _ = p.reply.send(Err(text));
                }
            }
            Alert::Manual(outcome) => self.on_manual_outcome(outcome),
            _ => {}
        }
        warn!(alert = ?alert, "alert");
    }
}
