//! What the daemon remembers for the `/stats` page: a bounded ring of recent events (failovers,
//! switchovers, fences, VRRP transitions, SYN floods), each with its wall-clock start and, once
//! it ended, its duration, beginning with the journal's tail from before the start ([`EventLog::restore`]); and per-backend rates (new connections and packets per second) from
//! samples of the data plane's counters. The runtime writes both, snapshots only read them.
//! No clock reads inside: every call is given its time.

use std::{
    collections::VecDeque,
    time::{Duration, SystemTime},
};

use crate::journal::{self, EventName};

/// Events kept; the oldest is dropped first.
pub const EVENTS_KEPT: usize = 50;
/// How often the traffic counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Rates kept per backend: 5 minutes at [`SAMPLE_EVERY`].
pub const SAMPLES_KEPT: usize = 60;

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The writer lost, until a new writer is routed (or the old one is back).
    Failover,
    /// A planned switchover, from the request to its end.
    Switchover,
    /// A node fenced (never routed until it rejoins), or a rejoin of a fenced node.
    Fence,
    /// This instance became VRRP master or left it.
    Vrrp,
    /// A SYN flood, from its detection to its end.
    Flood,
    /// An operator's command (drain, disable, reload and their reverses).
    Operator,
    /// A pause or resume (`pglb pause`, `pglb resume`, or its end).
    Maintenance,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Failover => "failover",
            EventKind::Switchover => "switchover",
            EventKind::Fence => "fence",
            EventKind::Vrrp => "vrrp",
            EventKind::Flood => "flood",
            EventKind::Operator => "operator",
            EventKind::Maintenance => "maintenance",
        }
    }

    /// Where a journal's event shows on `/stats`.
    pub fn of(name: EventName) -> Self {
        match name {
            EventName::Failover | EventName::WriterChanged => EventKind::Failover,
            EventName::Switchover | EventName::SwitchoverFailed => EventKind::Switchover,
            EventName::Fence | EventName::RejoinOk | EventName::RejoinFailed => EventKind::Fence,
            EventName::VrrpMaster | EventName::VrrpBackup => EventKind::Vrrp,
            EventName::FloodOn | EventName::FloodOff => EventKind::Flood,
            EventName::Pause | EventName::Resume => EventKind::Maintenance,
            EventName::Drain
            | EventName::Undrain
            | EventName::Disable
            | EventName::Enable
            | EventName::Reload => EventKind::Operator,
        }
    }
}

/// Names an event that is still going on, to end it later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventId(u64);

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    id: u64,
    pub started: SystemTime,
    pub kind: EventKind,
    pub text: String,
    /// How long it lasted: `None` while it goes on, and for events without an end.
    pub duration: Option<Duration>,
    /// Still going on.
    pub ongoing: bool,
}

/// The ring of the last [`EVENTS_KEPT`] events, oldest first.
#[derive(Debug)]
pub struct EventLog {
    entries: VecDeque<Entry>,
    kept: usize,
    next: u64,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new(EVENTS_KEPT)
    }
}

impl EventLog {
    pub fn new(kept: usize) -> Self {
        EventLog { entries: VecDeque::with_capacity(kept), kept: kept.max(1), next: 0 }
    }

    fn push(&mut self, started: SystemTime, kind: EventKind, text: String, duration: Option<Duration>, ongoing: bool) -> EventId {
        if self.entries.len() == self.kept {
            self.entries.pop_front();
        }
        let id = self.next;
        self.next += 1;
        self.entries.push_back(Entry { id, started, kind, text, duration, ongoing });
        EventId(id)
    }

    /// An event that is over when recorded: an instant one (`duration` `None`) or one whose
    /// duration is already known.
    pub fn record(&mut self, started: SystemTime, kind: EventKind, text: impl Into<String>, duration: Option<Duration>) {
        self.push(started, kind, text.into(), duration, false);
    }

    /// An event that goes on until [`EventLog::end`].
    pub fn begin(&mut self, started: SystemTime, kind: EventKind, text: impl Into<String>) -> EventId {
        self.push(started, kind, text.into(), None, true)
    }

    /// Ends an ongoing event at `ended`, its text replaced when `text` is given. An event that
    /// has left the ring meanwhile is forgotten: nothing happens.
    pub fn end(&mut self, id: EventId, ended: SystemTime, text: Option<String>) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id.0 && e.ongoing) {
            e.ongoing = false;
            e.duration = Some(ended.duration_since(e.started).unwrap_or_default());
            if let Some(t) = text {
                e.text = t;
            }
        }
    }

    /// The events, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().rev()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest of the journal's `events` (oldest first), as events without an end: what
    /// `/stats` shows of the time before this start.
    pub fn restore(&mut self, events: &[journal::Event]) {
        for e in &events[events.len().saturating_sub(self.kept)..] {
            self.record(e.at, EventKind::of(e.event), e.text.clone(), None);
        }
    }
}

/// Times a failover: from the machine's detection of the writer's loss (phase `writer-lost`)
/// to a new writer routed, or to the machine steady again without one (the writer came back).
#[derive(Debug, Default)]
pub struct WriterLoss {
    open: Option<(EventId, String)>,
}

impl WriterLoss {
    /// The machine's phase after an event: `lost` (when the loss was detected, and what was
    /// lost) while it is `writer-lost`, `steady` while it is steady; other phases change nothing.
    pub fn phase(&mut self, log: &mut EventLog, lost: Option<(SystemTime, String)>, steady: bool, now: SystemTime) {
        match (lost, steady) {
            (Some((detected, what)), _) if self.open.is_none() => {
                self.open = Some((log.begin(detected, EventKind::Failover, what.clone()), what));
            }
            (None, true) => {
                if let Some((id, what)) = self.open.take() {
                    log.end(id, now, Some(format!("{what}, then steady again without a failover")));
                }
            }
            _ => {}
        }
    }

    /// A new writer is routed: the open event ends with `text`; without one (this instance
    /// never saw the loss), an event of its own.
    pub fn routed(&mut self, log: &mut EventLog, now: SystemTime, text: String) {
        match self.open.take() {
            Some((id, _)) => log.end(id, now, Some(text)),
            None => log.record(now, EventKind::Failover, text, None),
        }
    }
}

/// One rate sample of one backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub conns_per_s: f64,
    pub packets_per_s: f64,
}

/// Per-backend rates from counter samples, the last [`SAMPLES_KEPT`] per backend.
#[derive(Debug, Default)]
pub struct TrafficHistory {
    /// By backend (node) id: the last reading (time, new flows, packets) and the rates.
    backends: Vec<Backend>,
    kept: usize,
}

#[derive(Debug, Default)]
struct Backend {
    last: Option<(Duration, u64, u64)>,
    rates: VecDeque<Rate>,
}

impl TrafficHistory {
    pub fn new(backends: usize, kept: usize) -> Self {
        TrafficHistory { backends: (0..backends).map(|_| Backend::default()).collect(), kept: kept.max(2) }
    }

    /// Follows a reload that added nodes at the end of the list or removed them from its end.
    pub fn resize(&mut self, backends: usize) {
        self.backends.resize_with(backends, Backend::default);
    }

    /// One reading at `now` of each backend's totals: (backend id, new flows, packets). A
    /// backend missing from `totals` keeps its last reading and gets a zero rate. The first
    /// reading gives no rate; a counter that went back (maps created again) counts from zero.
    pub fn observe(&mut self, now: Duration, totals: &[(usize, u64, u64)]) {
        for (id, b) in self.backends.iter_mut().enumerate() {
            let reading = totals.iter().find(|(i, ..)| *i == id).map(|&(_, f, p)| (f, p));
            let (flows, packets) = match (reading, b.last) {
                (Some(r), _) => r,
                (None, Some((_, f, p))) => (f, p),
                (None, None) => continue,
            };
            if let Some((then, f0, p0)) = b.last {
                let dt = now.saturating_sub(then).as_secs_f64();
                if dt <= 0.0 {
                    continue;
                }
                b.last = Some((now, flows, packets));
                let delta = |now: u64, before: u64| if now >= before { now - before } else { now };
                if b.rates.len() == self.kept {
                    b.rates.pop_front();
                }
                b.rates.push_back(Rate { conns_per_s: delta(flows, f0) as f64 / dt, packets_per_s: delta(packets, p0) as f64 / dt });
            } else {
                b.last = Some((now, flows, packets));
            }
        }
    }

    /// A backend's rates, oldest first (empty for an unknown id).
    pub fn rates(&self, id: usize) -> Vec<Rate> {
        self.backends.get(id).map(|b| b.rates.iter().copied().collect()).unwrap_or_default()
    }

    /// How many rates a full window holds.
    pub fn kept(&self) -> usize {
        self.kept
    }
}

/// RFC 3339 in UTC with seconds, e.g. `2026-12-02T07:15:51Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    #[test]
    fn stats_event_ring_keeps_the_newest_and_ends_ongoing_events() {
        let mut log = EventLog::new(3);
        let flood = log.begin(at(0), EventKind::Flood, "SYN flood");
        log.record(at(1), EventKind::Vrrp, "became master", None);
        assert_eq!(log.newest_first().map(|e| e.ongoing).collect::<Vec<_>>(), [false, true]);
        log.end(flood, at(12), Some("SYN flood, 2000 half-open/s".into()));
        let first = log.newest_first().last().expect("the flood");
        assert_eq!((first.duration, first.ongoing, first.text.as_str()), (Some(Duration::from_secs(12)), false, "SYN flood, 2000 half-open/s"));
        // Ending twice changes nothing.
        log.end(flood, at(20), None);
        assert_eq!(log.newest_first().last().unwrap().duration, Some(Duration::from_secs(12)));

        let fo = log.begin(at(30), EventKind::Failover, "writer pg1 lost");
        log.record(at(31), EventKind::Fence, "pg1 fenced", None);
        assert_eq!(log.len(), 3, "the oldest (the flood) left the ring");
        assert_eq!(log.newest_first().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Fence, EventKind::Failover, EventKind::Vrrp]);
        log.record(at(32), EventKind::Vrrp, "x", None);
        log.record(at(33), EventKind::Vrrp, "y", None);
        // The failover left the ring before it ended: ending it is a no-op, not a panic.
        log.end(fo, at(40), None);
        assert!(log.newest_first().all(|e| e.kind != EventKind::Failover));
        assert_eq!(rfc3339(at(0)), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn stats_ring_starts_with_the_journals_newest_events() {
        let mut log = EventLog::new(2);
        let events: Vec<journal::Event> = [(EventName::VrrpMaster, "became master"), (EventName::Fence, "pg1 fenced"), (EventName::Failover, "pg1 -> pg2")]
            .into_iter()
            .enumerate()
            .map(|(i, (name, text))| journal::Event::new(at(i as u64), name, "lb1", text))
            .collect();
        log.restore(&events);
        let restored: Vec<(EventKind, &str, SystemTime, bool)> = log.newest_first().map(|e| (e.kind, e.text.as_str(), e.started, e.ongoing)).collect();
        assert_eq!(restored, [(EventKind::Failover, "pg1 -> pg2", at(2), false), (EventKind::Fence, "pg1 fenced", at(1), false)]);
        log.restore(&[]);
        assert_eq!(log.len(), 2);
        assert_eq!(EventKind::of(EventName::Reload).as_str(), "operator");
    }

    #[test]
    fn stats_failover_lasts_from_detection_to_the_new_writer() {
        let mut log = EventLog::default();
        let mut loss = WriterLoss::default();
        loss.phase(&mut log, Some((at(10), "writer pg1 lost".into())), false, at(11));
        loss.phase(&mut log, Some((at(11), "writer pg1 lost".into())), false, at(12)); // still lost: one event
        loss.phase(&mut log, None, false, at(12)); // settling, failing over
        assert_eq!(log.len(), 1);
        assert!(log.newest_first().next().unwrap().ongoing);
        loss.routed(&mut log, at(13), "failover: pg1 -> pg2, the new writer is routed".into());
        loss.phase(&mut log, None, true, at(13));
        let e = log.newest_first().next().unwrap();
        assert_eq!((e.kind, e.started, e.duration, e.ongoing), (EventKind::Failover, at(10), Some(Duration::from_secs(3)), false));
        assert_eq!(e.text, "failover: pg1 -> pg2, the new writer is routed");

        // Lost, then back without a failover.
        loss.phase(&mut log, Some((at(20), "writer pg2 lost".into())), false, at(20));
        loss.phase(&mut log, None, true, at(21));
        let e = log.newest_first().next().unwrap();
        assert_eq!((e.duration, e.text.as_str()), (Some(Duration::from_secs(1)), "writer pg2 lost, then steady again without a failover"));
        // A new writer this instance never saw lost (a backup following the master).
        loss.routed(&mut log, at(30), "writer changed: pg2 -> pg3 (timeline 4), routed".into());
        let e = log.newest_first().next().unwrap();
        assert_eq!((e.started, e.duration, e.ongoing), (at(30), None, false));
        assert_eq!(log.len(), 3);
    }

    #[test]
    fn stats_rates_from_counter_deltas_with_a_reset() {
        let mut h = TrafficHistory::new(2, 4);
        let s = Duration::from_secs;
        h.observe(s(0), &[(0, 10, 1000), (1, 0, 0)]);
        assert!(h.rates(0).is_empty(), "no rate from a first reading");
        h.observe(s(5), &[(0, 20, 2000), (1, 5, 50)]);
        h.observe(s(10), &[(0, 20, 2500)]); // backend 1 missing: a zero rate
        h.observe(s(15), &[(0, 3, 100), (1, 5, 50)]); // backend 0's counters went back
        let r0 = h.rates(0);
        assert_eq!(r0.iter().map(|r| r.conns_per_s).collect::<Vec<_>>(), [2.0, 0.0, 0.6]);
        assert_eq!(r0.iter().map(|r| r.packets_per_s).collect::<Vec<_>>(), [200.0, 100.0, 20.0]);
        assert_eq!(h.rates(1).iter().map(|r| r.packets_per_s).collect::<Vec<_>>(), [10.0, 0.0, 0.0]);
        for t in 4..10 {
            h.observe(s(t * 5), &[(0, 3, 100)]);
        }
        assert_eq!(h.rates(0).len(), 4, "bounded to the window");
        assert!(h.rates(7).is_empty());
        // The same instant twice gives no rate.
        let before = h.rates(0);
        h.observe(s(45), &[(0, 9, 900)]);
        assert_eq!(h.rates(0), before);
    }
}
