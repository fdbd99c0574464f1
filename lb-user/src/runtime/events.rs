//! The recent events `/stats` shows, written where the runtime learns them and dated on the wall
//! clock; a failover's event follows the machine's phase (see
//! [`WriterLoss`](super::history::WriterLoss)). And [`Runtime::emit`], the one way an event
//! reaches the journal and the `[hooks]` command (see [`super::hooks`]).

use std::time::{Duration, SystemTime};

use super::{
    Runtime,
    history::{EventId, EventKind},
};
use crate::{
    failover::{Maintenance, MarkKind, NodeId, NodeMark, Phase, rfc3339_ms},
    journal::{self, EventName},
};

impl Runtime {
    /// The wall clock at a time on the runtime's clock (since start).
    fn wall(&self, at: Duration) -> SystemTime {
        self.since_wall + at
    }

    /// The one way an event reaches the journal and the `[hooks]` command: handed to the events
    /// task without waiting (a full queue drops it, counted).
    pub(super) fn emit(&self, event: journal::Event) {
        self.events.emit(event);
    }

    /// An event named `name`, now, on this instance; the caller adds node, writers, timeline.
    pub(super) fn event(&self, name: EventName, text: impl Into<String>) -> journal::Event {
        journal::Event::new(self.wall(self.since.elapsed()), name, &self.p.instance, text)
    }

    /// A node's name, for an event.
    pub(super) fn node_name(&self, node: NodeId) -> String {
        self.executor.ctx().name(node).to_owned()
    }

    /// An event without an end, now.
    pub(super) fn record(&self, kind: EventKind, text: impl Into<String>) {
        let now = self.wall(self.since.elapsed());
        self.recent.events.lock().unwrap_or_else(|p| p.into_inner()).record(now, kind, text, None);
    }

    /// An event that goes on from now.
    pub(super) fn begin(&self, kind: EventKind, text: impl Into<String>) -> EventId {
        let now = self.wall(self.since.elapsed());
        self.recent.events.lock().unwrap_or_else(|p| p.into_inner()).begin(now, kind, text)
    }

    pub(super) fn end_event(&self, id: EventId, text: String) {
        let now = self.wall(self.since.elapsed());
        self.recent.events.lock().unwrap_or_else(|p| p.into_inner()).end(id, now, Some(text));
    }

    pub(super) fn end_event_keeping_text(&self, id: EventId) {
        let now = self.wall(self.since.elapsed());
        self.recent.events.lock().unwrap_or_else(|p| p.into_inner()).end(id, now, None);
    }

    /// A pause or resume taken (here, from a peer, or a `--for` pause that ended): a recent
    /// event, and a `pause` or `resume` event for the journal and the hook.
    pub(super) fn note_maintenance(&self, before: Option<&Maintenance>, m: &Maintenance) {
        let text = if m.paused {
            let reason = m.reason.as_deref().map_or_else(String::new, |r| format!(" ({r})"));
            let until = m.until_ms.map_or_else(|| "until resumed".to_owned(), |u| format!("until {}", rfc3339_ms(u)));
            format!("paused on {}{reason}, {until}: no automatic failover, rejoin or re-point", m.by)
        } else if before.is_some_and(|b| b.paused && b.until_ms == Some(m.at_ms) && b.by == m.by) {
            format!("the pause taken on {} ended by itself (--for)", m.by)
        } else {
            format!("resumed on {}", m.by)
        };
        self.record(EventKind::Maintenance, text.clone());
        let name = if m.paused { EventName::Pause } else { EventName::Resume };
        self.emit(self.event(name, text));
    }

    /// A node mark taken (here or from a peer): a recent event, and a `drain`, `undrain`,
    /// `disable` or `enable` event for the journal and the hook, naming the node.
    pub(super) fn note_mark(&self, m: &NodeMark) {
        let text = format!("{} {} on {}", m.node, m.state_word(), m.by);
        self.record(EventKind::Operator, text.clone());
        let name = match (m.kind, m.on) {
            (MarkKind::Drain, true) => EventName::Drain,
            (MarkKind::Drain, false) => EventName::Undrain,
            (MarkKind::Disable, true) => EventName::Disable,
            (MarkKind::Disable, false) => EventName::Enable,
        };
        self.emit(self.event(name, text).node(m.node.clone()));
    }

    /// A new writer is routed: ends the failover's event (see [`WriterLoss`](super::history::WriterLoss)).
    pub(super) fn end_writer_lost(&mut self, text: String) {
        let now = self.wall(self.since.elapsed());
        self.writer_loss.routed(&mut self.recent.events.lock().unwrap_or_else(|p| p.into_inner()), now, text);
    }

    /// Follows the machine's phase for the failover's event (see [`WriterLoss`](super::history::WriterLoss)).
    pub(super) fn note_phase(&mut self, phase: &Phase) {
        let lost = match phase {
            Phase::WriterLost { old, since } => {
                let what = old.map_or_else(|| "no primary routed".to_owned(), |o| format!("writer {} lost", self.executor.ctx().name(o)));
                Some((self.wall(*since), what))
            }
            _ => None,
        };
        let now = self.wall(self.since.elapsed());
        self.writer_loss.phase(&mut self.recent.events.lock().unwrap_or_else(|p| p.into_inner()), lost, *phase == Phase::Steady, now);
    }
}
