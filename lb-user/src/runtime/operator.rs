//! Requests from the admin socket (`pglb status`, `switchover`, `node rejoin`, `debug
//! stall-loop`), answered from the main loop.

use std::time::Duration;

use tracing::{info, warn};

use super::{PendingSwitchover, Runtime, history::EventKind, snapshot::SnapshotSource};
use crate::{
    admin::AdminRequest,
    failover::{AdminCommand, Event},
};

/// The longest `pglb debug stall-loop` (a fault injection for drills).
pub const STALL_MAX: Duration = Duration::from_secs(60);

impl Runtime {
    /// One request from the admin socket; its answer goes back on the request's reply channel.
    pub(super) fn on_admin(&mut self, req: AdminRequest, source: &SnapshotSource) {
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
