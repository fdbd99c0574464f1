//! The agent's decisions, sans-IO: which load-balancer messages to believe, when the lease runs
//! out, and which sockets to close. `handle(event, now) -> Vec<Action>` and `next_deadline()`;
//! `now` is CLOCK_MONOTONIC (the clock of `bpf_ktime_get_ns`, so a lease deadline is also the
//! route's `expires_ns` in the map).
//!
//! ```text
//!            Sent{nonce}: remember it (the last NONCE_WINDOW)
//!  ┌──────────┐  master route, known nonce, epoch ≥ floor   ┌─────────┐
//!  │ NoRoute  │ ───────────────────────────────────────────► │ Routing │ ◄─┐ newer epoch: Apply
//!  │ (VIP)    │ ◄─────────────────────────────────────────── │         │ ──┘ (+ Destroy old writer)
//!  └──────────┘   Tick past the lease: Clear + Destroy writer └─────────┘   same epoch: Renew
//! ```
//!
//! Refused, with a counted reason: a backup's answer (only the VRRP master routes), a nonce the
//! agent did not send within its last [`NONCE_WINDOW`] requests (a replay, or too late), an
//! epoch below the floor (the highest accepted, kept across lease loss). The MAC is checked
//! before a message gets here.
//!
//! The lease of an accepted message runs from when the agent *sent* the nonce it echoes, so a
//! message delayed in the network buys no more time than a prompt one.

use std::{collections::VecDeque, net::SocketAddrV4, time::Duration};

use crate::channel::{Epoch, Role, Route};

/// How many recent request nonces an answer may echo.
pub const NONCE_WINDOW: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A subscribe with this nonce went out (to every load balancer).
    Sent { nonce: u64 },
    /// A route whose MAC checked out.
    Received(Route),
    /// A deadline passed.
    Tick,
}

/// Why a route was not believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotMaster,
    UnknownNonce,
    Stale,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotMaster => "not-master",
            Refusal::UnknownNonce => "unknown-nonce",
            Refusal::Stale => "stale-epoch",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write this route into the map, valid until `expires` (CLOCK_MONOTONIC).
    Apply { route: Route, expires: Duration },
    /// Extend the route in the map to `expires`.
    Renew { expires: Duration },
    /// Remove the route: connections go to the VIP.
    Clear,
    /// Close every socket connected to this address (a writer no longer routed).
    Destroy { addr: SocketAddrV4 },
    /// A message was not believed.
    Refused { lb: String, why: Refusal },
}

/// The agent's state.
#[derive(Debug)]
pub struct Machine {
    lease: Duration,
    /// (nonce, when sent), newest last.
    nonces: VecDeque<(u64, Duration)>,
    /// The highest epoch ever accepted; never goes down.
    floor: Option<Epoch>,
    /// The route in force and until when; `None` while connections go to the VIP.
    current: Option<(Route, Duration)>,
}

impl Machine {
    pub fn new(lease: Duration) -> Self {
        Machine { lease, nonces: VecDeque::new(), floor: None, current: None }
    }

    /// The highest epoch accepted (what subscribes report as `seen`).
    pub fn floor(&self) -> Epoch {
        self.floor.unwrap_or_default()
    }

    /// The route in force, if any.
    pub fn current(&self) -> Option<&Route> {
        self.current.as_ref().map(|(r, _)| r)
    }

    /// When the lease runs out, while a route is in force.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.current.as_ref().map(|(_, until)| *until)
    }

    pub fn handle(&mut self, event: Event, now: Duration) -> Vec<Action> {
        match event {
            Event::Sent { nonce } => {
                self.nonces.push_back((nonce, now));
                while self.nonces.len() > NONCE_WINDOW {
                    self.nonces.pop_front();
                }
                Vec::new()
            }
            Event::Received(route) => self.on_route(route, now),
            Event::Tick => self.on_tick(now),
        }
    }

    fn on_route(&mut self, route: Route, now: Duration) -> Vec<Action> {
        let refuse = |why| vec![Action::Refused { lb: route.lb.clone(), why }];
        if route.role != Role::Master {
            return refuse(Refusal::NotMaster);
        }
        let Some(&(_, sent)) = self.nonces.iter().find(|(n, _)| *n == route.nonce) else {
            return refuse(Refusal::UnknownNonce);
        };
        if self.floor.is_some_and(|f| route.epoch < f) {
            return refuse(Refusal::Stale);
        }
        let expires = sent + self.lease;
        if expires <= now {
            return Vec::new();
        }
        self.floor = Some(route.epoch);
        match &mut self.current {
            Some((cur, until)) if cur.epoch == route.epoch && cur.same_routing(&route) => {
                if expires > *until {
                    *until = expires;
                    vec![Action::Renew { expires }]
                } else {
                    Vec::new()
                }
            }
            _ => {
                let mut actions = Vec::new();
                let old = self.current.as_ref().and_then(|(r, _)| r.writer.as_ref().map(|w| w.addr));
                if let Some(old) = old
                    && route.writer.as_ref().map(|w| w.addr) != Some(old)
                {
                    actions.push(Action::Destroy { addr: old });
                }
                self.current = Some((route.clone(), expires));
                actions.insert(0, Action::Apply { route, expires });
                actions
            }
        }
    }

    fn on_tick(&mut self, now: Duration) -> Vec<Action> {
        match &self.current {
            Some((route, until)) if *until <= now => {
                let writer = route.writer.as_ref().map(|w| w.addr);
                self.current = None;
                let mut actions = vec![Action::Clear];
                // What the lease was for: without a fresh word from the master, a direct
                // connection to the writer could be talking to a node fenced meanwhile.
                if let Some(addr) = writer {
                    actions.push(Action::Destroy { addr });
                }
                actions
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Reader, Target};

    const LEASE: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn target(name: &str, last: u8) -> Target {
        Target { name: name.into(), addr: SocketAddrV4::new([172, 20, 0, last].into(), 5432) }
    }

    fn route(nonce: u64, timeline: u32, seq: u64, writer: Option<&str>) -> Route {
        Route {
            lb: "lb1".into(),
            role: Role::Master,
            nonce,
            epoch: Epoch { timeline, seq },
            writer: writer.map(|w| target(w, if w == "pg1" { 10 } else { 11 })),
            readers: vec![Reader { target: target("pg3", 12), id: 2, weight: 1 }],
        }
    }

    /// A machine that sent nonce 1 at 0 ms and accepted `route(1, 3, 10, pg1)`.
    fn routing() -> Machine {
        let mut m = Machine::new(LEASE);
        m.handle(Event::Sent { nonce: 1 }, ms(0));
        let a = m.handle(Event::Received(route(1, 3, 10, Some("pg1"))), ms(5));
        assert_eq!(a, vec![Action::Apply { route: route(1, 3, 10, Some("pg1")), expires: ms(1000) }], "first route applied");
        m
    }

    #[test]
    fn a_first_master_route_is_applied_with_the_lease_from_the_request() {
        let m = routing();
        assert_eq!(m.next_deadline(), Some(ms(1000)), "lease runs from the request, not the answer");
        assert_eq!(m.floor(), Epoch { timeline: 3, seq: 10 });
    }

    #[test]
    fn refusals() {
        let mut m = routing();
        m.handle(Event::Sent { nonce: 2 }, ms(100));
        let backup = Route { role: Role::Backup, ..route(2, 4, 1, Some("pg2")) };
        let table = [
            ("backup", backup, Refusal::NotMaster),
            ("nonce never sent (replay)", route(99, 3, 11, Some("pg1")), Refusal::UnknownNonce),
            ("older sequence", route(2, 3, 9, Some("pg2")), Refusal::Stale),
            ("older timeline, higher sequence", route(2, 2, 50, Some("pg2")), Refusal::Stale),
        ];
        for (what, r, why) in table {
            assert_eq!(m.handle(Event::Received(r), ms(110)), vec![Action::Refused { lb: "lb1".into(), why }], "{what}");
            assert_eq!(m.current(), Some(&route(1, 3, 10, Some("pg1"))), "{what}: route unchanged");
        }
    }

    #[test]
    fn nonces_age_out_of_the_window() {
        let mut m = routing();
        for n in 2..2 + NONCE_WINDOW as u64 {
            m.handle(Event::Sent { nonce: n }, ms(10 * n));
        }
        let a = m.handle(Event::Received(route(1, 3, 10, Some("pg1"))), ms(200));
        assert_eq!(a, vec![Action::Refused { lb: "lb1".into(), why: Refusal::UnknownNonce }], "nonce 1 is out of the window");
    }

    #[test]
    fn the_same_epoch_renews_the_lease() {
        let mut m = routing();
        m.handle(Event::Sent { nonce: 2 }, ms(250));
        assert_eq!(m.handle(Event::Received(route(2, 3, 10, Some("pg1"))), ms(260)), vec![Action::Renew { expires: ms(1250) }]);
        assert_eq!(m.handle(Event::Received(route(1, 3, 10, Some("pg1"))), ms(270)), vec![], "an older nonce extends nothing");
        assert_eq!(m.next_deadline(), Some(ms(1250)));
    }

    #[test]
    fn a_new_writer_destroys_the_sockets_to_the_old_one() {
        let mut m = routing();
        m.handle(Event::Sent { nonce: 2 }, ms(300));
        let next = route(2, 4, 11, Some("pg2"));
        let a = m.handle(Event::Received(next.clone()), ms(301));
        assert_eq!(
            a,
            vec![Action::Apply { route: next, expires: ms(1300) }, Action::Destroy { addr: target("pg1", 10).addr }],
            "route first, then close what still talks to pg1"
        );
    }

    #[test]
    fn no_writer_destroys_too_and_readers_alone_do_not() {
        let mut m = routing();
        m.handle(Event::Sent { nonce: 2 }, ms(300));
        let mut readers_only = route(2, 3, 11, Some("pg1"));
        readers_only.readers.clear();
        assert_eq!(m.handle(Event::Received(readers_only.clone()), ms(301)), vec![Action::Apply { route: readers_only, expires: ms(1300) }]);
        let fenced = route(2, 3, 12, None);
        let a = m.handle(Event::Received(fenced.clone()), ms(302));
        assert_eq!(a, vec![Action::Apply { route: fenced, expires: ms(1300) }, Action::Destroy { addr: target("pg1", 10).addr }]);
    }

    #[test]
    fn lease_loss_clears_and_closes_writer_sockets_and_keeps_the_floor() {
        let mut m = routing();
        assert_eq!(m.handle(Event::Tick, ms(999)), vec![], "not yet");
        assert_eq!(m.handle(Event::Tick, ms(1000)), vec![Action::Clear, Action::Destroy { addr: target("pg1", 10).addr }]);
        assert_eq!(m.current(), None);
        assert_eq!(m.next_deadline(), None, "nothing to wait for");
        m.handle(Event::Sent { nonce: 5 }, ms(1100));
        assert_eq!(
            m.handle(Event::Received(route(5, 3, 9, Some("pg1"))), ms(1101)),
            vec![Action::Refused { lb: "lb1".into(), why: Refusal::Stale }],
            "the floor survives the lease"
        );
        let back = route(5, 3, 10, Some("pg1"));
        assert_eq!(m.handle(Event::Received(back.clone()), ms(1102)), vec![Action::Apply { route: back, expires: ms(2100) }], "the same epoch routes again");
    }

    #[test]
    fn an_answer_to_a_request_older_than_the_lease_is_not_applied() {
        let mut m = Machine::new(LEASE);
        m.handle(Event::Sent { nonce: 1 }, ms(0));
        assert_eq!(m.handle(Event::Received(route(1, 3, 10, Some("pg1"))), ms(1000)), vec![]);
        assert_eq!(m.current(), None);
    }
}
