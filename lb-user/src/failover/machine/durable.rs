//! The machine's durable record: what a restart must not forget ([`Durable`], the state
//! file: fences, the last writer, the timeline floor, a promotion in flight, the pause and the
//! node marks), read back by [`Machine::restore`] and written from [`Machine::durable`].

use super::*;

impl Machine {
    /// A machine that starts from what an earlier run persisted: its fences, its last writer
    /// (preferred on a tie), its highest timeline (no primary below it is adopted) and a
    /// promotion in flight. Names the config no longer has are dropped, and said so at the
    /// first event.
    pub fn restore(params: Params, durable: &Durable) -> Self {
        let mut m = Machine::new(params);
        let id = |name: &str| m.p.nodes.iter().position(|n| n.name == name);
        let mut notes = Vec::new();
        let floor = durable.timeline;
        if floor > 0 {
            m.writer_timeline = Some(floor);
        }
        m.last_writer = durable.writer.as_deref().and_then(id);
        if let Some(w) = &durable.writer
            && m.last_writer.is_none()
        {
            notes.push((Level::Warn, format!("state file: the last writer {w} is no longer configured; ignored")));
        }
        for f in &durable.fences {
            let Some(n) = id(&f.node) else {
                notes.push((Level::Warn, format!("state file: fenced node {} is no longer configured; ignored", f.node)));
                continue;
            };
            let writer = f.writer.as_deref().and_then(id);
            let reason = match (f.reason.as_str(), writer) {
                ("split-brain", Some(w)) => FenceReason::SplitBrain { writer: w, timeline: f.timeline },
                ("replaced", Some(by)) => FenceReason::Replaced { by },
                _ => FenceReason::OlderTimeline { timeline: f.timeline, writer_timeline: floor },
            };
            m.nodes[n].fence = Some(reason);
        }
        if let Some(p) = &durable.promoting {
            match id(&p.node) {
                Some(n) => {
                    m.promoting_from = Some((n, p.from_timeline));
                    notes.push((
                        Level::Warn,
                        format!(
                            "state file: a promotion of {} from timeline {} was in flight; no primary on timeline {} or older is adopted until {} is seen",
                            p.node, p.from_timeline, p.from_timeline, p.node
                        ),
                    ));
                }
                None => notes.push((Level::Warn, format!("state file: promoted node {} is no longer configured; ignored", p.node))),
            }
        }
        m.maintenance = durable.maintenance.clone();
        m.restore_marks(&durable.marks, &mut notes);
        if let Some(p) = durable.maintenance.as_ref().filter(|p| p.paused) {
            let until = p.until_ms.map_or_else(|| "until `pglb resume`".to_owned(), |u| format!("until {}", rfc3339_ms(u)));
            notes.push((Level::Warn, format!("state file: paused on {} at {}, {until}: no automatic failover meanwhile", p.by, rfc3339_ms(p.at_ms))));
        }
        let fenced: Vec<&str> = durable.fences.iter().map(|f| f.node.as_str()).collect();
        notes.insert(
            0,
            (
                Level::Info,
                format!(
                    "state file: last writer {}, timeline {floor}, fenced: {}",
                    durable.writer.as_deref().unwrap_or("none"),
                    if fenced.is_empty() { "none".to_owned() } else { fenced.join(", ") }
                ),
            ),
        );
        m.restore_notes = notes;
        m.sent = m.durable();
        m.recorded = m.sent.clone();
        m
    }

    /// What a restart must not forget, as it stands now.
    pub fn durable(&self) -> Durable {
        let name = |n: NodeId| self.p.nodes[n].name.clone();
        let fences = (0..self.nodes.len())
            .filter_map(|n| {
                let f = self.nodes[n].fence?;
                Some(match f {
                    FenceReason::SplitBrain { writer, timeline } => {
                        DurableFence { node: name(n), reason: "split-brain".into(), timeline, writer: Some(name(writer)) }
                    }
                    FenceReason::OlderTimeline { timeline, .. } => {
                        DurableFence { node: name(n), reason: "older-timeline".into(), timeline, writer: None }
                    }
                    FenceReason::Replaced { by } => DurableFence {
                        node: name(n),
                        reason: "replaced".into(),
                        timeline: self.nodes[n].status.as_ref().map_or(0, |s| s.timeline),
                        writer: Some(name(by)),
                    },
                })
            })
            .collect();
        Durable {
            writer: self.last_writer.map(name),
            timeline: self.writer_timeline.unwrap_or(0),
            fences,
            promoting: self.promoting_from.map(|(n, tl)| DurablePromotion { node: name(n), from_timeline: tl }),
            maintenance: self.maintenance.clone(),
            marks: self.marks.clone(),
        }
    }
}
