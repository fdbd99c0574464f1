//! What load balancers tell each other, and whom clients reach.
//!
//! Pair: each daemon runs the real VRRP machine ([`Vrrp`], nopreempt) driven as the runtime
//! drives it (`Runtime::tell_vrrp`): not ready, it may not be master (a master resigns), and its
//! priority is lowered by the tracking weight only while it is ready and does not reach the
//! writer. Adverts and peer reports go every 100 ms over the LB↔LB link from a daemon whose
//! loop turns; a report is judged for freshness by the real guard ([`Freshness`]: the first one
//! after either side starts is refused), and an advert is believed only when the sender's fresh
//! report confirms its priority ([`PeerWords::vouch`]). The VIP is on the interface of the VRRP
//! master (a killed one keeps it until its next start).
//!
//! Single: the VRRP role is scripted (master while the machine is ready, except in NotMaster)
//! and the modelled peers send an advert and a report each 100 ms while alive; their reports
//! echo what this load balancer reports (they know and reach what it does).
//!
//! Forged reports: a key holder's mistake, which passes the MAC and the freshness guard. While
//! a forgery lasts, a report that claims to be the peer's reaches the target between the real
//! ones, with the real one's role and priority but a timeline no node has and/or a wrong writer.
//! It comes only while the real peer's reports reach the target too, so its quorum vote is
//! real: a key holder who also speaks for a silent peer defeats the quorum by design
//! (docs/ARCHITECTURE.md, "Trust model"), which no machine can help.

use lb_user::vip::Advert;
use lb_user::vip::report::{Report, ReportId};
use lb_user::vip::vrrp::{self, VrrpState, Vouch};

use crate::*;

/// A message on the LB↔LB link, delivered within the step it was sent in.
#[derive(Debug, Clone)]
pub enum Wire {
    Advert { from: usize, priority: u8 },
    Report { from: usize, report: Report },
}

/// What a forged report says instead of the real writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgedWriter {
    /// A configured node that is not the one the peer reaches (or is, by chance).
    Node(usize),
    /// That the peer reaches no writer.
    Nobody,
    /// A name no node has.
    Stranger,
}

/// A forgery under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forgery {
    /// The load balancer that receives the forged reports, and the peer they claim to be from.
    pub lb: usize,
    pub peer: usize,
    pub until: Duration,
    /// The timeline it claims (none: the real one).
    pub timeline: Option<u32>,
    /// The writer it claims (none: the real one).
    pub writer: Option<ForgedWriter>,
}

impl Sim {
    /// Reports and adverts of the step: at every advert interval each daemon whose loop turns
    /// reports to its peer (pair), the modelled peers speak (single); between them, forgeries.
    pub fn peers_speak(&mut self) {
        let now = self.now;
        let interval = now.as_millis().is_multiple_of(PEER_ADVERT.as_millis());
        if interval && self.pair {
            for lb in 0..2 {
                self.send_report(lb);
            }
        }
        if interval && !self.pair {
            for i in 0..self.peers_alive.len() {
                if self.peers_alive[i] {
                    self.modelled_peer_speaks(i);
                }
            }
        }
        let between = (now + DT).as_millis().is_multiple_of(PEER_ADVERT.as_millis());
        if between {
            self.forgeries.retain(|f| f.until > now);
            for f in self.forgeries.clone() {
                self.forge(f);
            }
        }
    }

    /// `Runtime::send_report`: its machine's report, its VRRP role and advertised priority.
    fn send_report(&mut self, lb: usize) {
        let l = &mut self.lbs[lb];
        let (Some(m), Some(v)) = (&l.m, &l.vrrp) else { return };
        if l.frozen.is_some() {
            return;
        }
        let report = Report {
            from: l.addr,
            id: l.fresh.stamp(self.now),
            echo: l.fresh.echo(0),
            role: v.state(),
            priority: v.priority(),
            healthy: l.tracked_reachable && l.recorded,
            body: m.report(),
        };
        self.wire.push_back(Wire::Report { from: lb, report });
    }

    /// A modelled peer (single) advertises and reports.
    fn modelled_peer_speaks(&mut self, i: usize) {
        let peer = self.lbs[0].p.peers[i];
        self.input(0, Input::Advert { src: peer, priority: 100 });
        let Some(body) = self.lbs[0].m.as_ref().map(Machine::report) else { return };
        let report = Report { from: peer, id: ReportId { boot: 0, seq: 0 }, echo: None, role: VrrpState::Backup, priority: 100, healthy: true, body };
        self.input(0, Input::Believed(report));
    }

    /// One forged report of `f`, if the real peer's reports reach the target now.
    fn forge(&mut self, f: Forgery) {
        let (real, priority, role, healthy) = if self.pair {
            let peer = &self.lbs[f.peer];
            let (Some(m), Some(v)) = (&peer.m, &peer.vrrp) else { return };
            if peer.frozen.is_some() || !self.lb_link {
                return;
            }
            (m.report(), v.priority(), v.state(), peer.tracked_reachable && peer.recorded)
        } else {
            if !self.peers_alive[f.peer] {
                return;
            }
            let Some(m) = &self.lbs[0].m else { return };
            (m.report(), 100, VrrpState::Backup, true)
        };
        let writer = match f.writer {
            None => real.writer,
            Some(ForgedWriter::Node(n)) => Some(self.lbs[f.lb].p.nodes[n].name.clone()),
            Some(ForgedWriter::Nobody) => None,
            Some(ForgedWriter::Stranger) => Some("pg9".to_owned()),
        };
        let body = PeerReport { timeline: f.timeline.unwrap_or(real.timeline), writer, maintenance: None, marks: vec![] };
        let from = if self.pair { self.lbs[f.peer].addr } else { self.lbs[0].p.peers[f.peer] };
        let report = Report { from, id: ReportId { boot: 0, seq: 0 }, echo: None, role, priority, healthy, body };
        self.coverage.forged_reports += 1;
        self.input(f.lb, Input::Believed(report));
    }

    /// Delivers what is on the LB↔LB link (a cut link loses it).
    pub fn deliver_wire(&mut self) {
        for _ in 0..64 {
            let Some(msg) = self.wire.pop_front() else { return };
            if !self.lb_link {
                continue;
            }
            match msg {
                Wire::Advert { from, priority } => self.input(1 - from, Input::Advert { src: self.lbs[from].addr, priority }),
                Wire::Report { from, report } => self.input(1 - from, Input::Report(report)),
            }
        }
        self.fail("the LB↔LB link never quietens");
    }

    /// A report datagram: believed if fresh (`ReportLink::accept`).
    pub fn judge_report(&mut self, lb: usize, report: Report) {
        match self.lbs[lb].fresh.check(0, report.id, report.echo, self.now) {
            Ok(_) => self.believe_report(lb, report),
            Err(_) => self.coverage.reports_refused += 1,
        }
    }

    /// A believed report: the peer's vote and word, and what its adverts are worth.
    pub fn believe_report(&mut self, lb: usize, report: Report) {
        let now = self.now;
        let l = &mut self.lbs[lb];
        if let Some(i) = l.p.peers.iter().position(|&p| p == report.from) {
            l.last_peer[i] = Some(now);
        }
        l.words.heard(report.from, report.clone(), now);
        self.feed(lb, Event::PeerReport { peer: report.from, report: report.body });
    }

    /// An advert from `src`: the peer is not silent; then, pair, the VRRP machine judges it
    /// with what the peer's fresh report vouches for.
    pub fn on_advert(&mut self, lb: usize, src: Ipv4Addr, priority: u8) {
        if priority > 0 {
            self.feed(lb, Event::PeerHeard { peer: src });
        }
        let now = self.now;
        let l = &mut self.lbs[lb];
        let Some(v) = l.vrrp.as_mut() else { return };
        let vouch = l.words.vouch(src, priority, now);
        if vouch == Vouch::Unconfirmed {
            self.coverage.adverts_unconfirmed += 1;
        }
        let packet = Advert { vrid: VRID, priority, max_advert_int_cs: (PEER_ADVERT.as_millis() / 10) as u16, addresses: vec![VIP] };
        let actions = v.handle(vrrp::Event::AdvertReceived { src, packet, vouch }, now);
        self.vrrp_actions(lb, actions);
    }

    pub fn vrrp_timer(&mut self, lb: usize) {
        let now = self.now;
        let Some(v) = self.lbs[lb].vrrp.as_mut() else { return };
        if v.next_deadline().is_some_and(|d| d <= now) {
            let actions = v.handle(vrrp::Event::TimerExpired, now);
            self.vrrp_actions(lb, actions);
        }
    }

    /// `Runtime::tell_vrrp`: the tracked priority (lowered only while ready), whether it may be
    /// master (ready) and whether it reaches the writer. Single: the scripted role follows.
    pub fn tell_vrrp(&mut self, lb: usize) {
        if !self.pair {
            let l = &self.lbs[0];
            let master = l.p.vrrp_enabled && self.scenario != Scenario::NotMaster && l.running() && l.ready;
            if l.p.vrrp_enabled && master != l.master {
                self.lbs[0].master = master;
                self.feed(0, Event::VrrpRole { master });
            }
            return;
        }
        let now = self.now;
        for _ in 0..4 {
            let l = &mut self.lbs[lb];
            let Some(v) = l.vrrp.as_mut() else { return };
            let lowered = l.base_priority.saturating_sub(TRACK_WEIGHT).max(1);
            let priority = if !l.ready {
                l.base_priority
            } else if !l.recorded {
                1
            } else if l.tracked_reachable {
                l.base_priority
            } else {
                lowered
            };
            let want = VrrpWord { priority, ready: l.ready };
            let Some(had) = l.word.replace(want) else { return };
            if had == want {
                return;
            }
            let mut actions = Vec::new();
            if had.priority != want.priority {
                actions.extend(v.handle(vrrp::Event::PriorityChanged { priority }, now));
            }
            if had.ready != want.ready {
                actions.extend(v.handle(vrrp::Event::Ready { ready: want.ready }, now));
            }
            self.vrrp_actions(lb, actions);
        }
    }

    /// Carries out the VRRP machine's actions: role changes go to the failover machine, adverts
    /// onto the link, the VIP onto or off the interface.
    pub fn vrrp_actions(&mut self, lb: usize, actions: Vec<vrrp::Action>) {
        for a in actions {
            if !self.lbs[lb].running() {
                return; // killed by a trigger on the way
            }
            match a {
                vrrp::Action::StateChanged { from, to } => {
                    let name = self.lbs[lb].name;
                    self.note(format!("{name}: vrrp {} -> {}", from.as_str(), to.as_str()));
                    if (from == VrrpState::Master) != (to == VrrpState::Master) {
                        let master = to == VrrpState::Master;
                        if !master && !self.lbs[lb].ready {
                            self.coverage.resigned_not_ready += 1;
                        }
                        self.lbs[lb].master = master;
                        self.feed(lb, Event::VrrpRole { master });
                    }
                }
                vrrp::Action::SendAdvert { priority } => self.wire.push_back(Wire::Advert { from: lb, priority }),
                vrrp::Action::AddVip => self.lbs[lb].vip = true,
                vrrp::Action::RemoveVip => self.lbs[lb].vip = false,
                vrrp::Action::SendGarp { .. } | vrrp::Action::Discarded { .. } => {}
            }
        }
    }

    /// The VRRP master the operator asks for a switchover (the first load balancer if none).
    pub fn vrrp_master(&self) -> usize {
        (0..self.lbs.len()).find(|&lb| self.lbs[lb].running() && self.lbs[lb].master).unwrap_or(0)
    }

    /// The load balancers clients write through: those whose data plane opens write flows.
    pub fn vip_holders(&self) -> Vec<usize> {
        (0..self.lbs.len()).filter(|&lb| self.lbs[lb].carries_writes(self.now, self.pair)).collect()
    }

    /// The VIP holder's route (the first one's in a split).
    pub fn vip_route(&self) -> Option<usize> {
        self.vip_holders().first().and_then(|&lb| self.lbs[lb].routed)
    }
}
