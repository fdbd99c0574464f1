//! The main loop: one input at a time, from whichever source was ready first, into whichever
//! machine it is for; and the upkeep its ticks drive (the lease, the SYN flood meter, the sweep
//! of idle flows).

use std::{
    net::SocketAddrV4,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::time::{Instant, Interval};
use lb_common::tcp::Timeouts;
use tracing::{debug, error, info, warn};

use super::{
    Exit, Inputs, Runtime, VipOwner,
    executor,
    history::EventKind,
    signals::{Ask, Signals},
    snapshot::SnapshotSource,
    tasks::{self, Tasks},
};
use crate::{
    admin::AdminRequest,
    failover::{Event, Observation},
    journal::EventName,
    vip::{report::ReportLink, io::VrrpReceiver},
};

/// How often idle and closed flows are swept from the connection table.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A closed flow is removed this long after its last packet.
const CLOSED_FLOW_LINGER: Duration = Duration::from_secs(10);

/// One input, taken from whichever source was ready first.
enum Input {
    Probe(Observation),
    /// A machine event from the executor or the recorder, or the machine's deadline.
    Machine(Event),
    VrrpDatagram(std::io::Result<Vec<u8>>),
    VrrpTimer,
    Report(SocketAddrV4, Vec<u8>),
    ReportTick,
    Admin(AdminRequest),
    Renew,
    Sweep,
    Signal(Ask),
    /// The probe tasks are gone: stop.
    ProbesGone,
    /// One of the daemon's tasks ended by itself: stop.
    TaskEnded(tasks::Ended),
    /// An action's task panicked: logged.
    ActionPanicked(executor::Panicked),
}

impl Runtime {
    /// Turns until a signal or a fault ends the daemon: each turn takes one input, checks for a
    /// stall before handling it, and brings the VRRP machine in line after it.
    pub(super) async fn run_loop(&mut self, mut inputs: Inputs, mut signals: Signals, tasks: &mut Tasks, source: SnapshotSource) -> Exit {
        let lease = self.p.lease.period;
        // Renewed from this loop: a loop that stops turning lets the lease run out, and stops
        // systemd's watchdog pings (which restarts the daemon).
        let renew_every = crate::notify::loop_tick(lease / 5);
        let mut renew = tokio::time::interval(renew_every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The lease renewal and the peer report ride on turns the loop takes anyway (see
        // `Piggyback`); their own timers fire only when nothing else woke the loop.
        let mut renewed = Piggyback::new(renew_every);
        let mut reported = inputs.report_every.as_ref().map(|i| Piggyback::new(i.period()));
        let mut sweep: Interval = tokio::time::interval(SWEEP_EVERY);
        // The two machines' timers live across turns and are moved only when their deadline
        // changes: a timer made anew at every turn is a timer-wheel entry added and removed
        // tens of times a second for nothing.
        let mut machine_timer = Timer::new();
        let mut vrrp_timer = Timer::new();
        loop {
            machine_timer.set(self.machine.next_deadline().map(|d| self.since + d));
            vrrp_timer.set(match &self.vip {
                VipOwner::Vrrp(r) => r.deadline(),
                VipOwner::Static(_) => None,
            });
            let input = tokio::select! {
                obs = inputs.probes.recv() => obs.map_or(Input::ProbesGone, Input::Probe),
                got = recv_vrrp(&inputs.vrrp) => Input::VrrpDatagram(got),
                () = vrrp_timer.wait(), if vrrp_timer.armed() => Input::VrrpTimer,
                Some(ev) = inputs.done.recv() => Input::Machine(ev),
                (from, datagram) = recv_report(&self.reports) => Input::Report(from, datagram),
                () = tick(&mut inputs.report_every) => Input::ReportTick,
                Some(req) = inputs.admin.recv() => Input::Admin(req),
                () = machine_timer.wait(), if machine_timer.armed() => Input::Machine(Event::Tick),
                _ = renew.tick() => Input::Renew,
                _ = sweep.tick() => Input::Sweep,
                ask = signals.next() => Input::Signal(ask),
                ended = tasks.ended() => Input::TaskEnded(ended),
                panicked = self.executor.panicked() => Input::ActionPanicked(panicked),
            };
            self.check_stall().await;
            let vrrp_turn = matches!(input, Input::VrrpTimer | Input::VrrpDatagram(Ok(_)));
            let timer_turn = matches!(input, Input::Renew | Input::ReportTick);
            if let Some(exit) = self.dispatch(input, &source, tasks).await {
                return exit;
            }
            self.tell_vrrp().await;
            // A report goes out with the VRRP traffic (the master's advert, or the backup's
            // receipt of it), which comes every advert interval too.
            if let Some(due) = &mut reported
                && (timer_turn || vrrp_turn)
                && due.take()
            {
                self.send_report();
                if let Some(every) = &mut inputs.report_every {
                    every.reset();
                }
            }
            if renewed.take() {
                self.renew_turn();
                renew.reset();
            }
        }
    }

    /// One input into whichever machine it is for.
    async fn dispatch(&mut self, input: Input, source: &SnapshotSource, tasks: &mut Tasks) -> Option<Exit> {
        match input {
            Input::Probe(obs) => {
                if let Some(h) = self.latency.get_mut(obs.node) {
                    h.observe(obs.latency.as_secs_f64());
                }
                self.feed(Event::Probe(obs));
            }
            Input::Machine(ev) => {
                if let Event::Persisted { result: Err(e), .. } = &ev {
                    self.counts.state_write_errors += 1;
                    warn!(error = %e, "state: writing the state file failed (tried again; no failover is decided meanwhile)");
                }
                self.feed(ev);
            }
            Input::VrrpDatagram(Ok(datagram)) => {
                let now = self.since.elapsed();
                if let VipOwner::Vrrp(runner) = &mut self.vip {
                    let words = &self.words;
                    let events = runner.on_datagram(&datagram, |src, priority| words.vouch(src, priority, now)).await;
                    self.on_vrrp_events(events);
                }
            }
            Input::VrrpDatagram(Err(e)) => {
                warn!(error = %e, "vrrp: receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Input::VrrpTimer => {
                if let VipOwner::Vrrp(runner) = &mut self.vip {
                    let events = runner.on_timer().await;
                    self.on_vrrp_events(events);
                }
            }
            Input::Report(from, datagram) => {
                let now = self.since.elapsed();
                let verified = self.reports.as_mut().and_then(|link| link.accept(from, &datagram, now));
                if let Some(v) = verified {
                    let body = v.report.body.clone();
                    self.words.heard(v.peer, v.report, now);
                    self.feed(Event::PeerReport { peer: v.peer, report: body });
                }
            }
            // Both are carried out after the turn, by `run_loop`'s `Piggyback`s.
            Input::ReportTick | Input::Renew => {}
            Input::Admin(req) => self.on_admin(req, source, tasks),
            Input::Sweep => self.sweep(),
            Input::Signal(Ask::Stop(name)) => return Some(Exit::Stop(name)),
            Input::Signal(Ask::Restart) => return Some(Exit::Restart),
            Input::Signal(Ask::Reload) => {
                self.reload("SIGHUP", tasks);
            }
            Input::ProbesGone => return Some(Exit::Stop("the probe tasks ended")),
            Input::TaskEnded(ended) => {
                error!(task = ended.name, panic = ?ended.panic, "a task of the daemon ended by itself: stopping (the service manager restarts pglb)");
                return Some(Exit::Stop("a task ended"));
            }
            Input::ActionPanicked(p) => {
                error!(action = p.action, panic = p.panic, "an action's task panicked: its result never reaches the failover machine");
            }
        }
        None
    }

    pub(super) fn renew_lease(&mut self) {
        match self.dataplane.renew_lease(self.p.lease.period, self.p.lease.grace) {
            Ok(()) if self.lease_failing => {
                self.lease_failing = false;
                info!("lease: renewing works again");
            }
            Ok(()) => {}
            Err(e) if !self.lease_failing => {
                self.lease_failing = true;
                error!(error = %crate::error_chain(&e), "lease: renewing failed: the data plane stops answering ARP for the VIP and opening flows when it runs out");
            }
            Err(_) => {}
        }
    }

    /// The lease tick's work: systemd's watchdog ping, the lease renewed (once decided), the
    /// flood meter read.
    fn renew_turn(&mut self) {
        crate::notify::watchdog();
        if self.ready {
            self.renew_lease();
        }
        self.measure_flood();
    }

    /// Reads the half-open and handshake counters and tells the machine when a SYN flood
    /// starts or ends (see [`FloodMeter`](crate::dataplane::FloodMeter)).
    fn measure_flood(&mut self) {
        let (opened, completed) = match self.dataplane.handshake_totals() {
            Ok(t) => t,
            Err(e) => {
                debug!(error = %crate::error_chain(&e), "flood meter: reading the counters failed");
                return;
            }
        };
        if let Some(active) = self.flood.observe(self.since.elapsed(), opened, completed) {
            if active {
                warn!(half_open_per_s = self.flood.rate as u64, "SYN flood: half-open connections pile up; this instance keeps the VIP and the writer routed while it lasts (its own probes may time out in the congestion)");
                let text = format!("SYN flood defence: {} half-open connections/s; VIP and writer kept", self.flood.rate as u64);
                self.flood_event = Some(self.begin(EventKind::Flood, text.clone()));
                self.emit(self.event(EventName::FloodOn, text));
            } else {
                info!("SYN flood over: probe results count again for VRRP tracking");
                if let Some(id) = self.flood_event.take() {
                    self.end_event_keeping_text(id);
                }
                self.emit(self.event(EventName::FloodOff, "SYN flood over: probe results count again for VRRP tracking"));
            }
            self.feed(Event::Flood { active });
        }
    }

    /// Removes idle and closed flows, off this task (a walk of the whole table); one at a time.
    fn sweep(&self) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let timeouts = Timeouts {
            idle_ns: self.p.flows.idle.as_nanos() as u64,
            closed_ns: CLOSED_FLOW_LINGER.as_nanos() as u64,
            half_open_ns: self.p.flows.half_open.as_nanos() as u64,
        };
        let (pinned, busy) = (Arc::clone(&self.pinned), Arc::clone(&self.sweeping));
        tokio::task::spawn_blocking(move || {
            let result = pinned.lock().unwrap_or_else(|p| p.into_inner()).sweep(&timeouts);
            match result {
                Ok(s) if s.removed_idle + s.removed_closed + s.removed_orphans > 0 => {
                    info!(idle = s.removed_idle, closed = s.removed_closed, orphans = s.removed_orphans, half_open = s.removed_half_open, "flows swept");
                }
                Ok(s) if s.removed_half_open > 0 => {
                    debug!(half_open = s.removed_half_open, "half-open flows swept");
                }
                Ok(_) => {}
                Err(e) => warn!(error = %crate::error_chain(&e), "sweeping flows failed"),
            }
            busy.store(false, Ordering::Release);
        });
    }
}

async fn recv_vrrp(rx: &Option<VrrpReceiver>) -> std::io::Result<Vec<u8>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_report(reports: &Option<ReportLink>) -> (SocketAddrV4, Vec<u8>) {
    match reports {
        Some(link) => link.recv().await,
        None => std::future::pending().await,
    }
}

async fn tick(every: &mut Option<Interval>) {
    match every {
        Some(every) => {
            every.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Periodic work that rides on the main loop's turns. An idle daemon turns tens of times a
/// second (probe answers, adverts, reports): work due every `every` is done in the first turn
/// after three quarters of `every`, so its own timer (reset each time) fires only when no other
/// turn came, and each wake of the process does more than one thing.
struct Piggyback {
    every: Duration,
    last: Instant,
}

impl Piggyback {
    fn new(every: Duration) -> Self {
        Piggyback { every, last: Instant::now() }
    }

    /// Whether the work is due in this turn; if so, it counts as done now.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.last) < self.every * 3 / 4 {
            return false;
        }
        self.last = now;
        true
    }
}

/// A deadline timer that lives across the main loop's turns: [`Timer::set`] moves it only when
/// the deadline changes; unarmed (no deadline), it is not waited for.
struct Timer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    deadline: Option<Instant>,
}

impl Timer {
    fn new() -> Self {
        Timer { sleep: Box::pin(tokio::time::sleep(Duration::ZERO)), deadline: None }
    }

    fn set(&mut self, deadline: Option<Instant>) {
        if deadline != self.deadline {
            self.deadline = deadline;
            if let Some(d) = deadline {
                self.sleep.as_mut().reset(d);
            }
        }
    }

    fn armed(&self) -> bool {
        self.deadline.is_some()
    }

    /// Fires once per deadline: after it fires, it is disarmed until `set` gives it one (the
    /// machine that owns the deadline handles the tick and says its next).
    async fn wait(&mut self) {
        (&mut self.sleep).await;
        self.deadline = None;
    }
}
