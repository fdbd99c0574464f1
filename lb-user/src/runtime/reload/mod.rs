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
};
use crate::{config::Config, failover::Event, http::Access, journal::EventName, probe::ProbeSettings};

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

/// How a reload ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// Applied: the keys that changed (none: the file matches the running config).
    Applied { changed: Vec<String> },
    /// The file does not validate: the error, on one line.
    Invalid { error: String },
    /// These keys changed and only a restart applies them.
    NeedsRestart { keys: Vec<String> },
}

impl Reloaded {
    /// The `result` label of `pglb_config_reloads_total`.
    pub fn result(&self) -> &'static str {
        match self {
            Reloaded::Applied { .. } => "ok",
            Reloaded::Invalid { .. } => "invalid",
            Reloaded::NeedsRestart { .. } => "needs_restart",
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
        }
    }

    /// The answer of `pglb reload --json`.
    pub fn json(&self) -> String {
        let v = match self {
            Reloaded::Applied { changed } => json!({ "result": self.result(), "changed": changed, "message": self.line() }),
            Reloaded::Invalid { error } => json!({ "result": self.result(), "error": error, "message": self.line() }),
            Reloaded::NeedsRestart { keys } => json!({ "result": self.result(), "keys": keys, "message": self.line() }),
        };
        v.to_string()
    }
}

impl Runtime {
    /// Reads the config file again and applies it, or refuses it and changes nothing. `by`:
    /// `SIGHUP` or `pglb reload`.
    pub(super) fn reload(&mut self, by: &str) -> Reloaded {
        let outcome = match Config::load(&self.config_path) {
            Err(e) => Reloaded::Invalid { error: crate::error_chain(&e) },
            Ok(config) => {
                let new = params::from_config(&config);
                let d = diff::diff(&self.p, &new);
                if d.restart.is_empty() {
                    self.take(new, !d.live.is_empty());
                    Reloaded::Applied { changed: d.live }
                } else {
                    Reloaded::NeedsRestart { keys: d.restart }
                }
            }
        };
        self.note_reload(&outcome, by);
        outcome
    }

    /// The new parameters, to every part that takes them live. Only keys [`diff`] calls live
    /// differ, so the running parameters are replaced whole.
    fn take(&mut self, new: RunParams, changed: bool) {
        if !changed {
            return;
        }
        let o = &self.owners;
        o.probe.send_if_modified(|p| {
            let differs = *p != new.probe;
            *p = new.probe.clone();
            differs
        });
        o.hooks.send_replace(new.hooks.clone());
        o.access.send_replace(new.http.access.clone());
        o.snapshot.send_replace(new.snapshot.clone());
        o.agent_nodes.send_replace(new.nodes.clone());
        self.executor.set_ctx(new.sql.clone());
        let machine = (new.machine != self.p.machine).then(|| new.machine.clone());
        self.p = new;
        if let Some(m) = machine {
            self.feed(Event::Reconfigure(Box::new(m)));
        }
        // The agent channel reads the nodes' weights when the routing is published.
        self.published.send_modify(|_| {});
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
        assert!(invalid.line().starts_with("reload refused: the config does not validate: [vrrp] vrid 0"));
        for (r, result) in [(&applied, "ok"), (&restart, "needs_restart"), (&invalid, "invalid")] {
            assert!(!r.line().contains('\n'));
            let v: serde_json::Value = serde_json::from_str(&r.json()).expect("json");
            assert_eq!(v["result"], result);
            assert_eq!(v["message"], r.line());
        }
        let v: serde_json::Value = serde_json::from_str(&restart.json()).unwrap();
        assert_eq!(v["keys"][0], "[dataplane] vip");
        let v: serde_json::Value = serde_json::from_str(&applied.json()).unwrap();
        assert_eq!(v["changed"][0], "[[node]] pg2 read_weight");
    }
}
