//! Requests from the admin socket (`pglb status`, `switchover`, `failover`, `node rejoin`, `node
//! drain|undrain|disable|enable`, `pause`, `resume`, `reload`, `debug stall-loop`), answered
//! from the main loop.

use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::{PendingSwitchover, Runtime, history::EventKind, snapshot::SnapshotSource, tasks::Tasks};
use crate::{
    admin::AdminRequest,
    failover::{AdminCommand, Event, Maintenance, MarkKind, NodeMark, PAUSE_REASON_MAX, Phase, rfc3339_ms, unix_ms},
    runtime::history::rfc3339,
};

/// The longest `pglb pause --for`.
pub const PAUSE_FOR_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest `pglb debug stall-loop` (a fault injection for drills).
pub const STALL_MAX: Duration = Duration::from_secs(60);

impl Runtime {
    /// One request from the admin socket; its answer goes back on the request's reply channel.
    pub(super) fn on_admin(&mut self, req: AdminRequest, source: &SnapshotSource, tasks: &mut Tasks) {
        let names = || self.p.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
        match req {
            AdminRequest::Status { json, reply } => {
                let source = source.clone();
                // Off the loop (the snapshot walks the flow table); detached on purpose: it only
                // reads and ends with its one reply, which still reaches the operator at a stop.
                tokio::spawn(async move {
                    let snap = source.snapshot().await;
                    let text = if json { crate::status::render_json(&snap) } else { crate::status::render_table(&snap) };
                    let _ = reply.send(text);
                });
            }
            AdminRequest::Switchover { to, reply } => match self.p.nodes.iter().position(|n| n.name == to) {
                None => {
                    let _ = reply.send(Err(format!("unknown node `{to}`: the nodes are {}", names())));
                }
                Some(_) if self.pending.is_some() => {
                    let _ = reply.send(Err("a switchover is already running".into()));
                }
                Some(id) => {
                    info!(to = %to, "admin: switchover requested");
                    let event = self.begin(EventKind::Switchover, format!("switchover to {to} requested"));
                    self.pending = Some(PendingSwitchover { reply, event });
                    self.feed(Event::Admin(AdminCommand::Switchover { to: id }));
                }
            },
            AdminRequest::Failover { to, accept_data_loss, json, reply } => self.on_manual_request(to, accept_data_loss, json, reply),
            AdminRequest::StallLoop { duration, reply } => {
                if duration > STALL_MAX {
                    let _ = reply.send(Err(format!("at most {} s", STALL_MAX.as_secs())));
                    return;
                }
                warn!(ms = duration.as_millis() as u64, "admin: stalling the main loop on purpose (pglb debug stall-loop): no lease, no adverts, no reports meanwhile");
                let _ = reply.send(Ok(format!("the main loop stands still for {} ms", duration.as_millis())));
                // A fault injection: the loop blocks as a hung call would.
                std::thread::sleep(duration);
            }
            AdminRequest::Pause { duration, reason, reply } => {
                let _ = reply.send(self.pause(duration, reason));
            }
            AdminRequest::Resume { reply } => {
                let _ = reply.send(self.resume());
            }
            AdminRequest::Mark { node, kind, on, reply } => {
                let _ = reply.send(self.mark(&node, kind, on));
            }
            AdminRequest::Reload { json, reply } => {
                let outcome = self.reload("pglb reload", tasks);
                let text = if json { outcome.json() } else { outcome.line() };
                let applied = matches!(outcome, super::reload::Reloaded::Applied { .. });
                let _ = reply.send(if applied { Ok(text) } else { Err(text) });
            }
            AdminRequest::Rejoined { node, reply } => match self.p.nodes.iter().position(|n| n.name == node) {
                None => {
                    let _ = reply.send(Err(format!("unknown node `{node}`: the nodes are {}", names())));
                }
                Some(id) => {
                    let _ = reply.send(Ok(format!("{node}: fence lifted; it is routed again once probes see it streaming as a standby")));
                    self.feed(Event::Admin(AdminCommand::Rejoined { node: id }));
                }
            },
        }
    }
}

impl Runtime {
    /// The wall clock now (read now, so a clock NTP stepped since the start counts), told to
    /// the machine first: commands are dated on it.
    fn wall_clock(&mut self) -> SystemTime {
        let now = SystemTime::now();
        let unix = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        self.feed(Event::WallClock { unix });
        now
    }

    /// `pglb pause`: a pause dated now, by this instance; it replaces any earlier one.
    fn pause(&mut self, duration: Option<Duration>, reason: Option<String>) -> Result<String, String> {
        if let Some(r) = reason.as_deref().filter(|r| r.len() > PAUSE_REASON_MAX) {
            return Err(format!("the reason is {} bytes; at most {PAUSE_REASON_MAX} travel to the peers", r.len()));
        }
        if duration.is_some_and(|d| d.is_zero() || d > PAUSE_FOR_MAX) {
            return Err(format!("--for takes more than 0 s and at most {} days", PAUSE_FOR_MAX.as_secs() / 86_400));
        }
        let now = self.wall_clock();
        let view = self.machine.view();
        let before = view.maintenance.filter(|_| view.paused);
        let until = duration.map(|d| now + d);
        let m = Maintenance { paused: true, at_ms: unix_ms(now), by: self.p.instance.clone(), reason: reason.clone(), until_ms: until.map(unix_ms) };
        info!(by = %m.by, reason = reason.as_deref().unwrap_or("-"), until = until.map(rfc3339).as_deref().unwrap_or("-"), "admin: pause requested");
        self.feed(Event::Admin(AdminCommand::Maintenance(m)));
        let view = self.machine.view();
        if !view.paused {
            return Err("the pause was not taken: a newer resume is in force (is this host's clock behind its peer's?)".into());
        }
        let text = format!(
            "paused on {} at {}{}{}: no automatic failover, rejoin, re-point or change of synchronous_standby_names; routing still follows the probes{}\n{}",
            self.p.instance,
            rfc3339(now),
            reason.map_or_else(String::new, |r| format!(" ({r})")),
            until.map_or_else(|| " until `pglb resume`".to_owned(), |u| format!(" until {} (or `pglb resume`)", rfc3339(u))),
            before.map_or_else(String::new, |b| format!("; it replaces the pause taken on {} at {}", b.by, rfc3339_ms(b.at_ms))),
            "the peers learn it from the next report (pglb status shows `paused` on each)",
        );
        Ok(text)
    }

    /// `pglb resume`: refused when no pause is in force.
    fn resume(&mut self) -> Result<String, String> {
        let now = self.wall_clock();
        let view = self.machine.view();
        let Some(pause) = view.maintenance.filter(|_| view.paused) else {
            return Err("not paused: nothing to resume".into());
        };
        let m = Maintenance { paused: false, at_ms: unix_ms(now), by: self.p.instance.clone(), reason: None, until_ms: None };
        info!(by = %m.by, "admin: resume requested");
        self.feed(Event::Admin(AdminCommand::Maintenance(m)));
        if self.machine.view().paused {
            return Err("the resume was not taken: a newer pause is in force (is this host's clock behind its peer's?)".into());
        }
        let text = format!(
            "resumed on {} at {}: the pause taken on {} at {} is over; failover, rejoin and re-pointing act again",
            self.p.instance,
            rfc3339(now),
            pause.by,
            rfc3339_ms(pause.at_ms)
        );
        Ok(text)
    }

    /// `pglb node drain|undrain|disable|enable`: a mark dated now, by this instance. Refused
    /// for an unknown node, a mark already in that state, draining the writer, and disabling
    /// the target of a running switchover.
    fn mark(&mut self, node: &str, kind: MarkKind, on: bool) -> Result<String, String> {
        let Some(id) = self.p.nodes.iter().position(|n| n.name == node) else {
            let names = self.p.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(format!("unknown node `{node}`: the nodes are {names}"));
        };
        let now = self.wall_clock();
        let view = self.machine.view();
        let is = |v: &crate::failover::ClusterView| if kind == MarkKind::Drain { v.nodes[id].drained } else { v.nodes[id].disabled };
        if is(&view) == on {
            let since = view.marks.iter().find(|m| m.node == node && m.kind == kind).map_or_else(String::new, |m| format!(" (since {} on {})", rfc3339_ms(m.at_ms), m.by));
            return Err(format!("{node} is already {}{since}: nothing changed", kind.state_word(on)));
        }
        if kind == MarkKind::Drain && on && view.writer == Some(id) {
            return Err(format!(
                "{node} is the writer: drain takes a standby out of the read ports. Move the writer first (`pglb switchover --to <standby>`), then drain {node}"
            ));
        }
        if let (MarkKind::Disable, true, Phase::Switchover { to, .. }) = (kind, on, view.phase)
            && to == id
        {
            return Err(format!("a switchover to {node} is running: wait for its end, then disable {node}"));
        }
        let m = NodeMark { node: node.to_owned(), kind, on, at_ms: unix_ms(now), by: self.p.instance.clone() };
        info!(node, mark = kind.as_str(), on, by = %m.by, "admin: node mark requested");
        self.feed(Event::Admin(AdminCommand::Mark(m)));
        let view = self.machine.view();
        if is(&view) != on {
            return Err(format!("the {} of {node} was not taken: a newer mark is in force (is this host's clock behind its peer's?)", kind.as_str()));
        }
        let what = match (kind, on) {
            (MarkKind::Drain, true) => format!(
                "no new connection on the read ports goes to it; open ones go on until they close (`pglb node drain {node} --wait` waits for them). It may still be promoted (`pglb node disable {node}` prevents that)"
            ),
            (MarkKind::Drain, false) if view.readers.contains(&id) => "it takes new read connections again (a reader now)".to_owned(),
            (MarkKind::Drain, false) => "it takes new read connections again once it qualifies as a reader (it does not now: down, lagging or not a standby)".to_owned(),
            (MarkKind::Disable, true) => "never a failover candidate or switchover target; it still serves reads".to_owned(),
            (MarkKind::Disable, false) => "it may be a failover candidate and a switchover target again".to_owned(),
        };
        Ok(format!(
            "{node} {} on {} at {}: {what}\nthe peers learn it from the next report (pglb status shows it on each)",
            kind.state_word(on),
            self.p.instance,
            rfc3339(now)
        ))
    }
}
