//! Live reload (`pglb reload`, SIGHUP): the config file read again through the one gate
//! (`Config::load` validates it and reads its secrets; [`params::from_config`] derives every
//! part's parameters from it), compared key by key with the running parameters ([`diff`]), and
//! then one of three outcomes, each logged, counted for `/metrics`, kept in the recent events
//! and emitted as a `reload` event (journal and `[hooks]`):
//!
//! | outcome | when | what changes |
//! |---|---|---|
//! | `ok` | every changed key can change live | each part gets its new parameters (below) |
//! | `invalid` | the file does not validate, or a secret cannot be read | nothing |
//! | `needs_restart` | a key that only a restart applies changed (named in the answer) | nothing |
//! | `refused` | a node to remove cannot leave now (the writer, a failover running), or an added node's backend cannot be written | nothing |
//!
//! What a reload hands out, and to whom: the failover machine its new [`Params`] (one
//! [`Event::Reconfigure`]: thresholds, lag limits, priorities, read weights; a new weight
//! re-sends the readers, so the data plane rebuilds its Maglev table: established flows stay
//! on their backend); the probe tasks their settings (a watch: new timings from the next round,
//! new credentials on a new connection); the executor its SQL context (actions started from now
//! on); the events task its hook; the HTTP task its access rules (connections accepted from now
//! on); the snapshot its parameters; the agent channel the nodes' read weights. Flows and the
//! VIP are not touched. Everything else stays as started, and [`diff`] refuses a change to it.
//!
//! Nodes added at the end of `[[node]]` get their backend in the data plane first, then a probe
//! task, then a place in the machine (unknown until probed, routed once they qualify). Nodes
//! removed from the end leave the machine first (no longer routed or candidates; their
//! established flows finish on the backend entry, which stays), then their probe tasks are
//! retired. The machine says whether they may leave ([`Machine::removal_blocker`]): never the
//! writer.
//!
//! [`Machine::removal_blocker`]: crate::failover::Machine::removal_blocker
//!
//! The file is read on the loop (a few small files: the config and its secrets).
//!
//! [`Params`]: crate::failover::Params

pub mod diff;

use std::time::SystemTime;

use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    Runtime,
    history::EventKind,
    hooks::HookParams,
    params::{self, NodeSpec, RunParams, SnapshotParams},
    start::spawn_probe,
    tasks::Tasks,
};
use crate::{config::Config, failover::Event, http::Access, journal::EventName, probe::ProbeSettings, status::Histogram};

/// Where a reload's new parameters go: one watch per part that takes them while it runs.
pub(super) struct Owners {
    probe: watch::Sender<ProbeSettings>,
    hooks: watch::Sender<Option<HookParams>>,
    access: watch::Sender<Access>,
    snapshot: watch::Sender<SnapshotParams>,
    agent_nodes: watch::Sender<Vec<NodeSpec>>,
}

/// The receiving ends, handed to the parts as they start.
pub(super) struct Receivers {
    pub probe: watch::Receiver<ProbeSettings>,
    pub hooks: watch::Receiver<Option<HookParams>>,
    pub access: watch::Receiver<Access>,
    pub snapshot: watch::Receiver<SnapshotParams>,
    pub agent_nodes: watch::Receiver<Vec<NodeSpec>>,
}

impl Owners {
    pub(super) fn new(p: &RunParams) -> (Owners, Receivers) {
        let (probe, probe_rx) = watch::channel(p.probe.clone());
        let (hooks, hooks_rx) = watch::channel(p.hooks.clone());
        let (access, access_rx) = watch::channel(p.http.access.clone());
        let (snapshot, snapshot_rx) = watch::channel(p.snapshot.clone());
        let (agent_nodes, agent_nodes_rx) = watch::channel(p.nodes.clone());
        let owners = Owners { probe, hooks, access, snapshot, agent_nodes };
        (owners, Receivers { probe: probe_rx, hooks: hooks_rx, access: access_rx, snapshot: snapshot_rx, agent_nodes: agent_nodes_rx })
    }
}

/// The `schema` of `pglb reload --json` (docs/JSON.md).
pub const RELOAD_SCHEMA: &str = "pglb.reload/1";

/// How a reload ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// Applied: the keys that changed (none: the file matches the running config).
    Applied { changed: Vec<String> },
    /// The file does not validate: the error, on one line.
    Invalid { error: String },
    /// These keys changed and only a restart applies them.
    NeedsRestart { keys: Vec<String> },
    /// A live change that cannot be made now: why, naming the key.
    Refused { reason: String },
}

impl Reloaded {
    /// The `result` label of `pglb_config_reloads_total`.
    pub fn result(&self) -> &'static str {
        match self {
            Reloaded::Applied { .. } => "ok",
            Reloaded::Invalid { .. } => "invalid",
            Reloaded::NeedsRestart { .. } => "needs_restart",
            Reloaded::Refused { .. } => "refused",
        }
    }

    /// One line for the operator, the log and the journal.
    pub fn line(&self) -> String {
        match self {
            Reloaded::Applied { changed } if changed.is_empty() => "reload: no change (the file matches the running config)".to_owned(),
            Reloaded::Applied { changed } => format!("reload: applied {}", changed.join(", ")),
            Reloaded::Invalid { error } => format!("reload refused: the config does not validate: {error}; the running config stays"),
            Reloaded::NeedsRestart { keys } => {
                let verb = if keys.len() == 1 { "needs" } else { "need" };
                format!("reload refused: {} {verb} a restart of pglb (not applied live); nothing was changed", keys.join(", "))
            }
            Reloaded::Refused { reason } => format!("reload refused: {reason}; nothing was changed"),
        }
    }

    /// The answer of `pglb reload --json`.
    pub fn json(&self) -> String {
        let v = match self {
            Reloaded::Applied { changed } => json!({ "schema": RELOAD_SCHEMA, "result": self.result(), "changed": changed, "message": self.line() }),
            Reloaded::Invalid { error } => json!({ "schema": RELOAD_SCHEMA, "result": self.result(), "error": error, "message": self.line() }),
            Reloaded::NeedsRestart { keys } => json!({ "schema": RELOAD_SCHEMA, "result": self.result(), "keys": keys, "message": self.line() }),
            Reloaded::Refused { reason } => json!({ "schema": RELOAD_SCHEMA, "result": self.result(), "error": reason, "message": self.line() }),
        };
        v.to_string()
    }
}

impl Runtime {
    /// Reads the config file again and applies it, or refuses it and changes nothing. `by`:
    /// `SIGHUP` or `pglb reload`.
    pub(super) fn reload(&mut self, by: &str, tasks: &mut Tasks) -> Reloaded {
        let outcome = match Config::load(&self.config_path) {
            Err(e) => Reloaded::Invalid { error: crate::error_chain(&e) },
            Ok(config) => match params::from_config(&config) {
                Err(e) => Reloaded::Invalid { error: crate::error_chain(&e) },
                Ok(new) => self.reload_with(new, tasks),
            },
        };
        self.note_reload(&outcome, by);
        outcome
    }

    /// The reload of `new`, parameters read from a valid config: applied, or refused whole.
    fn reload_with(&mut self, new: RunParams, tasks: &mut Tasks) -> Reloaded {
        let d = diff::diff(&self.p, &new);
        if !d.restart.is_empty() {
            Reloaded::NeedsRestart { keys: d.restart }
        } else if let Some(reason) = self.prepare_nodes(&new) {
            Reloaded::Refused { reason }
        } else {
            if !d.live.is_empty() {
                self.take(new, tasks);
            }
            Reloaded::Applied { changed: d.live }
        }
    }

    /// Whether the nodes added or removed can be, now: a removed node must be free to leave
    /// (the machine's word); an added node gets its backend in the data plane here, before
    /// anything can route to it. Why not, naming the key.
    fn prepare_nodes(&mut self, new: &RunParams) -> Option<String> {
        let (before, after) = (self.p.nodes.len(), new.nodes.len());
        let names = |n: &[NodeSpec]| n.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
        if after < before
            && let Some(why) = self.machine.removal_blocker(after)
        {
            return Some(format!("[[node]] {} (removed): {why}", names(&self.p.nodes[after..])));
        }
        if after > before
            && let Err(e) = self.dataplane.add_backends(&new.backends[before..])
        {
            return Some(format!("[[node]] {} (added): writing its backend to the data plane failed: {}", names(&new.nodes[before..]), crate::error_chain(&e)));
        }
        None
    }

    /// The new parameters, to every part that takes them live. Only keys [`diff`] calls live
    /// differ, so the running parameters are replaced whole. Nodes removed leave the machine
    /// before any other part forgets them; nodes added are known everywhere before the machine
    /// may route to them.
    fn take(&mut self, new: RunParams, tasks: &mut Tasks) {
        let (before, after) = (self.p.nodes.len(), new.nodes.len());
        let machine = (new.machine != self.p.machine).then(|| Event::Reconfigure(Box::new(new.machine.clone())));
        self.executor.set_ctx(new.sql.clone());
        self.p = new;
        if after < before {
            if let Some(ev) = machine {
                self.feed(ev);
            }
            self.resize_probes(tasks);
            self.hand_out();
        } else {
            self.hand_out();
            self.resize_probes(tasks);
            if let Some(ev) = machine {
                self.feed(ev);
            }
        }
        // The agent channel reads the nodes' weights when the routing is published.
        self.published.send_modify(|_| {});
    }

    /// The running parameters to the parts that watch for them.
    fn hand_out(&self) {
        let (o, p) = (&self.owners, &self.p);
        o.probe.send_if_modified(|s| {
            let differs = *s != p.probe;
            s.clone_from(&p.probe);
            differs
        });
        o.hooks.send_replace(p.hooks.clone());
        o.access.send_replace(p.http.access.clone());
        o.snapshot.send_replace(p.snapshot.clone());
        o.agent_nodes.send_replace(p.nodes.clone());
    }

    /// One probe task (with its wake-up and latency histogram) per node of the running
    /// parameters: the added nodes' started, the removed nodes' retired.
    fn resize_probes(&mut self, tasks: &mut Tasks) {
        let n = self.p.nodes.len();
        for task in self.probe_tasks.drain(n.min(self.probe_tasks.len())..) {
            tasks.retire(&task);
        }
        self.probe_now.truncate(n);
        self.latency.resize(n, Histogram::default());
        self.recent.traffic.lock().unwrap_or_else(|e| e.into_inner()).resize(n);
        let Some(out) = self.probe_out.upgrade() else { return };
        let settings = self.owners.probe.subscribe();
        for id in self.probe_tasks.len()..n {
            let (now, task) = spawn_probe(id, &self.p.nodes[id], &settings, self.since, &out, tasks);
            self.probe_now.push(now);
            self.probe_tasks.push(task);
        }
    }

    /// The outcome in the log, the counts, the recent events, the journal and the hook.
    fn note_reload(&mut self, outcome: &Reloaded, by: &str) {
        let line = outcome.line();
        let r = &mut self.counts.reloads;
        match outcome {
            Reloaded::Applied { .. } => {
                r.ok += 1;
                r.last_ok_unix_ms = crate::failover::unix_ms(SystemTime::now());
                info!(by, "{line}");
            }
            Reloaded::Invalid { .. } => {
                r.invalid += 1;
                warn!(by, "{line}");
            }
            Reloaded::NeedsRestart { .. } => {
                r.needs_restart += 1;
                warn!(by, "{line}");
            }
            Reloaded::Refused { .. } => {
                r.refused += 1;
                warn!(by, "{line}");
            }
        }
        r.last_ok = matches!(outcome, Reloaded::Applied { .. });
        let text = format!("{line} ({by})");
        self.record(EventKind::Operator, text.clone());
        self.emit(self.event(EventName::Reload, text));
        // Published with the next view: the counts reach /metrics at once.
        self.feed(Event::Tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_reads_as_one_line_and_as_json() {
        let applied = Reloaded::Applied { changed: vec!["[[node]] pg2 read_weight".into()] };
        assert_eq!(applied.line(), "reload: applied [[node]] pg2 read_weight");
        let none = Reloaded::Applied { changed: vec![] };
        assert_eq!(none.line(), "reload: no change (the file matches the running config)");
        let restart = Reloaded::NeedsRestart { keys: vec!["[dataplane] vip".into()] };
        assert_eq!(restart.line(), "reload refused: [dataplane] vip needs a restart of pglb (not applied live); nothing was changed");
        let invalid = Reloaded::Invalid { error: "[vrrp] vrid 0 is not a virtual router id (1..=255)".into() };
        let refused = Reloaded::Refused { reason: "[[node]] pg1 (removed): pg1 is the writer: switch over to another node first".into() };
        assert_eq!(refused.line(), "reload refused: [[node]] pg1 (removed): pg1 is the writer: switch over to another node first; nothing was changed");
        assert!(invalid.line().starts_with("reload refused: the config does not validate: [vrrp] vrid 0"));
        for (r, result) in [(&applied, "ok"), (&restart, "needs_restart"), (&invalid, "invalid"), (&refused, "refused")] {
            assert!(!r.line().contains('\n'));
            let v: serde_json::Value = serde_json::from_str(&r.json()).expect("json");
            assert_eq!((&v["schema"], &v["result"]), (&serde_json::json!(RELOAD_SCHEMA), &serde_json::json!(result)));
            assert_eq!(v["message"], r.line());
        }
        let v: serde_json::Value = serde_json::from_str(&restart.json()).unwrap();
        assert_eq!(v["keys"][0], "[dataplane] vip");
        let v: serde_json::Value = serde_json::from_str(&applied.json()).unwrap();
        assert_eq!(v["changed"][0], "[[node]] pg2 read_weight");
    }
}
