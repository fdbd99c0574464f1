//! `pglb failover --to NODE`: the request into the failover machine
//! ([`AdminCommand::Failover`]), the operator's answer when the machine says how it ended
//! ([`ManualOutcome`]): text, or the `pglb.failover/1` object (docs/JSON.md); and a done one
//! recorded as a failover with `manual: true` in the recent events, the journal and the hook.
//!
//! Only the VRRP master acts on failovers. A backup refuses and names the master it hears: the
//! admin socket is local on purpose (no admin action is reachable from the network), so the
//! request is not forwarded.

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{Runtime, VipOwner, history::EventKind};
use crate::{
    failover::{AdminCommand, Event, Gap, ManualOutcome, ManualRefused, ManualRequest, NodeId, gap_positions, lsn_text},
    journal::EventName,
};

/// The `schema` of `pglb failover --json` (docs/JSON.md).
pub const FAILOVER_SCHEMA: &str = "pglb.failover/1";

/// A manual failover an operator is waiting for.
pub(super) struct PendingManual {
    reply: oneshot::Sender<Result<String, String>>,
    json: bool,
    to: NodeId,
}

/// `pglb failover --json`: one object whatever the result.
#[derive(serde::Serialize)]
struct FailoverJson {
    schema: &'static str,
    instance: String,
    /// `promoted`, `refused` or `failed`.
    result: &'static str,
    target: String,
    /// The refusal's code ([`ManualRefused::code`]), when refused.
    refusal: Option<&'static str>,
    /// What the text answer says.
    message: String,
    old_writer: Option<String>,
    fenced: Option<String>,
    timeline: Option<u32>,
    /// Why automatic failover was held back (promoted only).
    held_back: Option<String>,
    gap: Option<GapJson>,
    /// The bytes of WAL the operator accepted to lose (promoted only; `null` when unknown).
    accepted_loss_bytes: Option<u64>,
}

#[derive(serde::Serialize)]
struct GapJson {
    bytes: Option<u64>,
    primary: Option<String>,
    primary_lsn: Option<String>,
    furthest_standby: Option<String>,
    furthest_standby_lsn: Option<String>,
    received_lsn: Option<String>,
    replayed_lsn: Option<String>,
    unseen: Vec<String>,
}

impl Runtime {
    /// One `pglb failover` request: an unknown name or a second request is refused here, the
    /// rest is the machine's to decide; the answer goes out when it says how it ended.
    pub(super) fn on_manual_request(&mut self, to: String, accept_data_loss: bool, json: bool, reply: oneshot::Sender<Result<String, String>>) {
        let refuse = |message: String| if json { self.answer_json("refused", Some("unknown-node"), &to, message, None) } else { message };
        let Some(id) = self.p.nodes.iter().position(|n| n.name == to) else {
            let names = self.p.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
            let _ = reply.send(Err(refuse(format!("unknown node `{to}`: the nodes are {names}"))));
            return;
        };
        if self.manual.is_some() {
            let message = "a manual failover is already running: wait for its answer (`pglb status`)".to_owned();
            let _ = reply.send(Err(if json { self.answer_json("refused", Some("busy"), &to, message, None) } else { message }));
            return;
        }
        info!(to = %to, accept_data_loss, "admin: manual failover requested");
        self.record(EventKind::Operator, format!("manual failover to {to} requested{}", if accept_data_loss { " (--accept-data-loss)" } else { "" }));
        self.manual = Some(PendingManual { reply, json, to: id });
        self.feed(Event::Admin(AdminCommand::Failover(ManualRequest { to: id, accept_data_loss })));
    }

    /// The machine's word on the manual failover: the operator's answer; a done one is a
    /// failover in the counts, the recent events, the journal and the hook (`manual: true`).
    pub(super) fn on_manual_outcome(&mut self, outcome: &ManualOutcome) {
        let name = |n: NodeId| self.node_name(n);
        let mut done = None;
        let (to, result, text) = match outcome {
            ManualOutcome::Refused { to, reason } => (*to, Err(()), self.refusal_text(reason)),
            ManualOutcome::Failed { to, reason } => (*to, Err(()), format!("manual failover to {} failed: {reason}; the writer is still lost", name(*to))),
            ManualOutcome::Done { from, to, timeline, fenced, gap, held_back } => {
                let fenced_text = fenced.map_or_else(|| "no former writer to fence".to_owned(), |f| format!("fenced {} (needs rejoin: it is never routed again until rewound)", name(f)));
                let loss = match gap.bytes() {
                    Some(0) if gap.is_zero() => "lost nothing known here".to_owned(),
                    Some(b) => format!("lost at least {b} bytes of WAL, accepted with --accept-data-loss ({})", gap_positions(gap, &name)),
                    None => format!("lost an unknown amount of WAL, accepted with --accept-data-loss ({})", gap_positions(gap, &name)),
                };
                let held = held_back.as_ref().map_or_else(String::new, |b| format!("; automatic failover had been held back by: {b}"));
                let text = format!("promoted {} on timeline {timeline}; {fenced_text}; {loss}{held}", name(*to));
                let from_name = from.map(name);
                let journal = format!("manual failover: {} -> {} on timeline {timeline}", from_name.as_deref().unwrap_or("none"), name(*to));
                let event = self.event(EventName::Failover, journal.clone()).writers(from_name, Some(name(*to))).timeline(Some(*timeline)).manual(gap.bytes());
                done = Some((journal, event));
                (*to, Ok(()), text)
            }
        };
        warn!("manual failover: {text}");
        if let Some((journal, event)) = done {
            self.counts.failovers += 1;
            self.end_writer_lost(journal);
            self.emit(event);
        }
        let Some(p) = self.manual.take_if(|p| p.to == to) else { return };
        let answer = if p.json { self.outcome_json(outcome, text) } else { text };
        let _ = p.reply.send(result.map(|()| answer.clone()).map_err(|()| answer));
    }

    /// A refusal for the operator; a backup's names the master it hears.
    fn refusal_text(&self, reason: &ManualRefused) -> String {
        let text = reason.explain(&|n| self.node_name(n));
        match (reason, &self.vip) {
            (ManualRefused::NotMaster, VipOwner::Vrrp(runner)) => match runner.status().borrow().master_address {
                Some(m) => format!("{text} (the master is {m}: `pglb failover` with that load balancer's config, on its host)"),
                None => format!("{text} (no master is heard right now)"),
            },
            _ => text,
        }
    }

    /// The `pglb.failover/1` object of an outcome.
    fn outcome_json(&self, outcome: &ManualOutcome, message: String) -> String {
        let name = |n: NodeId| self.node_name(n);
        match outcome {
            ManualOutcome::Refused { to, reason } => {
                let gap = match reason {
                    ManualRefused::DataLoss { gap, .. } => Some(gap),
                    _ => None,
                };
                self.answer_json("refused", Some(reason.code()), &name(*to), message, gap)
            }
            ManualOutcome::Failed { to, .. } => self.answer_json("failed", None, &name(*to), message, None),
            ManualOutcome::Done { from, to, timeline, fenced, gap, held_back } => {
                let json = FailoverJson {
                    old_writer: from.map(name),
                    fenced: fenced.map(name),
                    timeline: Some(*timeline),
                    held_back: held_back.as_ref().map(|b| b.to_string()),
                    accepted_loss_bytes: gap.bytes(),
                    gap: Some(self.gap_json(gap)),
                    ..self.base_json("promoted", None, &name(*to), message)
                };
                render(&json)
            }
        }
    }

    fn answer_json(&self, result: &'static str, refusal: Option<&'static str>, target: &str, message: String, gap: Option<&Gap>) -> String {
        render(&FailoverJson { gap: gap.map(|g| self.gap_json(g)), ..self.base_json(result, refusal, target, message) })
    }

    fn base_json(&self, result: &'static str, refusal: Option<&'static str>, target: &str, message: String) -> FailoverJson {
        FailoverJson {
            schema: FAILOVER_SCHEMA,
            instance: self.p.instance.clone(),
            result,
            target: target.to_owned(),
            refusal,
            message,
            old_writer: None,
            fenced: None,
            timeline: None,
            held_back: None,
            gap: None,
            accepted_loss_bytes: None,
        }
    }

    fn gap_json(&self, g: &Gap) -> GapJson {
        GapJson {
            bytes: g.bytes(),
            primary: g.primary.map(|(_, n)| self.node_name(n)),
            primary_lsn: g.primary.map(|(l, _)| lsn_text(l)),
            furthest_standby: g.furthest_standby.map(|(_, n)| self.node_name(n)),
            furthest_standby_lsn: g.furthest_standby.map(|(l, _)| lsn_text(l)),
            received_lsn: g.received.map(lsn_text),
            replayed_lsn: g.replayed.map(lsn_text),
            unseen: g.unseen.iter().map(|&n| self.node_name(n)).collect(),
        }
    }
}

/// Pretty JSON with a final newline, as `pglb status --json`.
fn render(json: &FailoverJson) -> String {
    let mut text = serde_json::to_string_pretty(json).expect("a failover answer serializes");
    text.push('\n');
    text
}
