//! The agent's decisions, sans-IO: which load-balancer messages to believe, when the lease runs
//! out, what to do when two masters disagree, and which sockets to close.
//! `handle(event, now) -> Vec<Action>` and `next_deadline()`; `now` is CLOCK_MONOTONIC (the
//! clock of `bpf_ktime_get_ns`, so a lease deadline is also the route's `expires_ns` in the map).
//!
//! Rules, in order, for a route whose signature checked out:
//! 1. It must be for this agent and echo a nonce sent within the last [`NONCE_WINDOW`]
//!    requests (else a replay, or too late).
//! 2. It must not be older than the last message of the same load balancer (its epoch; datagrams
//!    may arrive out of order). Sequences of different load balancers are never compared.
//! 3. Only a VRRP master's route is a **claim**; a claim lives for the lease, counted from when
//!    the agent sent the nonce it echoes (a delayed answer buys no more time than a prompt one).
//! 4. A claim on a timeline below the highest accepted (the floor) is refused: that load
//!    balancer missed a promotion. Among live claims only the highest timeline counts.
//! 5. Live claims on that timeline that agree on the writer route: their writer, and the readers
//!    every one of them names (so a reader one master dropped is not used). Claims that name
//!    different writers are a **conflict** (a VRRP split): no route, sockets to the old writer
//!    destroyed, and no route again until every claim that lived during the conflict has ended
//!    (about a lease after the last conflicting message), so the agent never flips between two
//!    masters.
//! 6. When the route's writer changes, or the route goes (lease lost, conflict), the sockets to
//!    the old writer are destroyed.
//!
//! ```text
//!            Sent{nonce}: remember it (the last NONCE_WINDOW)
//!  ┌──────────┐  claims agree (one master, or all on one writer)  ┌─────────┐
//!  │ NoRoute  │ ─────────────────────────────────────────────────►│ Routing │◄─┐ other routing: Apply
//!  │ (VIP)    │ ◄─────────────────────────────────────────────────│         │──┘ (+ Destroy old writer)
//!  └──────────┘  Tick past every claim: Clear(lease lost)+Destroy └─────────┘    same: Renew
//!       ▲  ▲              claims disagree: Conflict, Clear(conflict)+Destroy       │
//!       │  └───────────────────────────────────────────────────────────────────────┘
//!       └── Holding: no route until a lease after the last conflicting claim ends
//! ```

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddrV4,
    time::Duration,
};

use super::channel::{Epoch, Role, Route};

/// How many recent request nonces an answer may echo.
pub const NONCE_WINDOW: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A subscribe with this nonce went out.
    Sent { nonce: u64 },
    /// A route whose signature checked out.
    Received(Route),
    /// A deadline passed.
    Tick,
}

/// Why a route was not believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Addressed to another agent.
    OtherAgent,
    UnknownNonce,
    /// Older than that load balancer's last message.
    OutOfOrder,
    NotMaster,
    /// A timeline below the floor.
    StaleTimeline,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::OtherAgent => "other-agent",
            Refusal::UnknownNonce => "unknown-nonce",
            Refusal::OutOfOrder => "out-of-order",
            Refusal::NotMaster => "not-master",
            Refusal::StaleTimeline => "stale-timeline",
        }
    }
}

/// Why the route was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cleared {
    /// No live claim: no master heard within the lease.
    LeaseLost,
    /// Masters disagree on the writer.
    Conflict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write this route into the map, valid until `expires` (CLOCK_MONOTONIC).
    Apply { route: Route, expires: Duration },
    /// Extend the route in the map to `expires`.
    Renew { expires: Duration },
    /// Remove the route: connections go to the VIP.
    Clear { why: Cleared },
    /// Close every socket connected to this address (a writer no longer routed).
    Destroy { addr: SocketAddrV4 },
    /// Masters disagree on one timeline: (load balancer, the writer it names or "-").
    Conflict { timeline: u32, masters: Vec<(String, String)> },
    /// A message was not believed.
    Refused { lb: String, why: Refusal },
}

/// A master's latest route and until when it counts.
#[derive(Debug)]
struct Claim {
    route: Route,
    until: Duration,
}

/// The agent's state.
#[derive(Debug)]
pub struct Machine {
    agent: String,
    lease: Duration,
    /// (nonce, when sent), newest last.
    nonces: VecDeque<(u64, Duration)>,
    /// The highest epoch ever accepted (its timeline is the floor); never goes down.
    floor: Option<Epoch>,
    /// Each load balancer's latest epoch (master or backup), for rule 2.
    last: HashMap<String, Epoch>,
    /// Each load balancer's live master claim, by instance name.
    claims: BTreeMap<String, Claim>,
    /// After a conflict: no route before this.
    hold_until: Option<Duration>,
    /// A conflict was reported and routing has not resumed since.
    in_conflict: bool,
    /// The route in force and until when; `None` while connections go to the VIP.
    current: Option<(Route, Duration)>,
}

impl Machine {
    /// The machine of agent `agent` (routes for others are refused).
    pub fn new(agent: &str, lease: Duration) -> Self {
        Machine {
            agent: agent.to_owned(),
            lease,
            nonces: VecDeque::new(),
            floor: None,
            last: HashMap::new(),
            claims: BTreeMap::new(),
            hold_until: None,
            in_conflict: false,
            current: None,
        }
    }

    /// The highest epoch accepted (what subscribes report as `seen`).
    pub fn floor(&self) -> Epoch {
        self.floor.unwrap_or_default()
    }

    /// The route in force, if any.
    pub fn current(&self) -> Option<&Route> {
        self.current.as_ref().map(|(r, _)| r)
    }

    /// Whether `nonce` was sent within the window (a cookie answering it is taken).
    pub fn sent_recently(&self, nonce: u64) -> bool {
        self.nonces.iter().any(|(n, _)| *n == nonce)
    }

    /// The next moment something changes by itself: a claim ending, or a hold ending.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.claims.values().map(|c| c.until).chain(self.hold_until).min()
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
            Event::Tick => self.settle(now),
        }
    }

    fn on_route(&mut self, route: Route, now: Duration) -> Vec<Action> {
        let refuse = |why| vec![Action::Refused { lb: route.lb.clone(), why }];
        if route.agent != self.agent {
            return refuse(Refusal::OtherAgent);
        }
        let Some(&(_, sent)) = self.nonces.iter().find(|(n, _)| *n == route.nonce) else {
            return refuse(Refusal::UnknownNonce);
        };
        if self.last.get(&route.lb).is_some_and(|last| route.epoch < *last) {
            return refuse(Refusal::OutOfOrder);
        }
        self.last.insert(route.lb.clone(), route.epoch);
        if route.role != Role::Master {
            return refuse(Refusal::NotMaster);
        }
        if self.floor.is_some_and(|f| route.epoch.timeline < f.timeline) {
            return refuse(Refusal::StaleTimeline);
        }
        let until = sent + self.lease;
        if until <= now {
            return Vec::new();
        }
        self.floor = Some(self.floor.map_or(route.epoch, |f| f.max(route.epoch)));
        let until = match self.claims.get(&route.lb) {
            Some(c) if c.route.epoch == route.epoch && c.route.same_routing(&route) => c.until.max(until),
            _ => until,
        };
        self.claims.insert(route.lb.clone(), Claim { route, until });
        self.settle(now)
    }

    /// Drops ended claims, decides the route the live claims make (rule 5), and moves to it.
    fn settle(&mut self, now: Duration) -> Vec<Action> {
        self.claims.retain(|_, c| c.until > now);
        if self.hold_until.is_some_and(|h| h <= now) {
            self.hold_until = None;
        }
        let top = self.claims.values().map(|c| c.route.epoch.timeline).max();
        let live: Vec<&Claim> = self.claims.values().filter(|c| Some(c.route.epoch.timeline) == top).collect();
        let mut actions = Vec::new();
        if live.iter().any(|c| c.route.writer != live[0].route.writer) {
            let end = live.iter().map(|c| c.until).max().expect("a conflict has claims");
            self.hold_until = Some(self.hold_until.map_or(end, |h| h.max(end)));
            if !self.in_conflict {
                self.in_conflict = true;
                let masters = live.iter().map(|c| (c.route.lb.clone(), c.route.writer.as_ref().map_or("-".to_owned(), |w| w.name.clone()))).collect();
                actions.push(Action::Conflict { timeline: top.expect("claims"), masters });
            }
        }
        let desired = match self.hold_until {
            Some(_) => None,
            None => self.agreed(&live),
        };
        let cleared = if self.in_conflict { Cleared::Conflict } else { Cleared::LeaseLost };
        if desired.is_some() {
            self.in_conflict = false;
        }
        actions.extend(self.move_to(desired, cleared));
        actions
    }

    /// The route that agreeing claims make: their writer, the readers all of them name, the
    /// highest epoch; valid until the last of them ends.
    fn agreed(&self, live: &[&Claim]) -> Option<(Route, Duration)> {
        let newest = live.iter().max_by_key(|c| c.route.epoch)?;
        let mut route = newest.route.clone();
        route.readers.retain(|r| live.iter().all(|c| c.route.readers.iter().any(|o| o.id == r.id && o.target == r.target)));
        route.lb = live.iter().map(|c| c.route.lb.as_str()).collect::<Vec<_>>().join(",");
        Some((route, live.iter().map(|c| c.until).max()?))
    }

    fn move_to(&mut self, desired: Option<(Route, Duration)>, cleared: Cleared) -> Vec<Action> {
        let old_writer = self.current.as_ref().and_then(|(r, _)| r.writer.as_ref().map(|w| w.addr));
        let destroy_old = |new: Option<SocketAddrV4>| old_writer.filter(|old| new != Some(*old)).map(|addr| Action::Destroy { addr });
        match (&mut self.current, desired) {
            (None, None) => Vec::new(),
            (Some(_), None) => {
                self.current = None;
                [Some(Action::Clear { why: cleared }), destroy_old(None)].into_iter().flatten().collect()
            }
            (Some((cur, until)), Some((route, expires))) if cur.epoch == route.epoch && cur.same_routing(&route) => {
                if expires > *until {
                    *until = expires;
                    vec![Action::Renew { expires }]
                } else {
                    Vec::new()
                }
            }
            (_, Some((route, expires))) => {
                let destroy = destroy_old(route.writer.as_ref().map(|w| w.addr));
                self.current = Some((route.clone(), expires));
                [Some(Action::Apply { route, expires }), destroy].into_iter().flatten().collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::channel::{Reader, Target};

    const LEASE: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn target(name: &str) -> Target {
        let last = match name {
            "pg1" => 10,
            "pg2" => 11,
            _ => 12,
        };
        Target { name: name.into(), addr: SocketAddrV4::new([172, 20, 0, last].into(), 5432) }
    }

    fn addr(name: &str) -> SocketAddrV4 {
        target(name).addr
    }

    fn reader(name: &str, id: u32) -> Reader {
        Reader { target: target(name), id, weight: 1 }
    }

    /// A master route from `lb` for agent "app".
    fn from(lb: &str, nonce: u64, timeline: u32, seq: u64, writer: Option<&str>) -> Route {
        Route {
            lb: lb.into(),
            agent: "app".into(),
            role: Role::Master,
            nonce,
            epoch: Epoch { timeline, seq },
            writer: writer.map(target),
            readers: vec![reader("pg3", 2)],
        }
    }

    fn route(nonce: u64, timeline: u32, seq: u64, writer: Option<&str>) -> Route {
        from("lb1", nonce, timeline, seq, writer)
    }

    fn refused(lb: &str, why: Refusal) -> Vec<Action> {
        vec![Action::Refused { lb: lb.into(), why }]
    }

    /// A machine that sent nonce 1 at 0 ms and accepted lb1's `route(1, 3, 10, pg1)`.
    fn routing() -> Machine {
        let mut m = Machine::new("app", LEASE);
        m.handle(Event::Sent { nonce: 1 }, ms(0));
        let a = m.handle(Event::Received(route(1, 3, 10, Some("pg1"))), ms(5));
        assert_eq!(a, vec![Action::Apply { route: route(1, 3, 10, Some("pg1")), expires: ms(1000) }], "first route applied");
        m
    }

    /// Runs `steps` (at ms, event, the exact actions expected) on `m`.
    fn run(m: &mut Machine, steps: Vec<(u64, Event, Vec<Action>)>) {
        for (i, (at, event, want)) in steps.into_iter().enumerate() {
            let what = format!("step {i} at {at} ms: {event:?}");
            assert_eq!(m.handle(event, ms(at)), want, "{what}");
        }
    }

    #[test]
    fn a_first_master_route_is_applied_with_the_lease_from_the_request() {
        let m = routing();
        assert_eq!(m.next_deadline(), Some(ms(1000)), "lease runs from the request, not the answer");
        assert_eq!(m.floor(), Epoch { timeline: 3, seq: 10 });
    }

    #[test]
    fn refusals() {
        let backup = Route { role: Role::Backup, ..route(2, 4, 11, Some("pg2")) };
        let for_another = Route { agent: "app2".into(), ..route(2, 3, 11, Some("pg2")) };
        let table = [
            ("backup", backup, refused("lb1", Refusal::NotMaster)),
            ("for another agent", for_another, refused("lb1", Refusal::OtherAgent)),
            ("nonce never sent (replay)", route(99, 3, 11, Some("pg1")), refused("lb1", Refusal::UnknownNonce)),
            ("older than lb1's last", route(2, 3, 9, Some("pg2")), refused("lb1", Refusal::OutOfOrder)),
            ("another lb on an older timeline", from("lb2", 2, 2, 50, Some("pg2")), refused("lb2", Refusal::StaleTimeline)),
        ];
        for (what, r, want) in table {
            let mut m = routing();
            m.handle(Event::Sent { nonce: 2 }, ms(100));
            assert_eq!(m.handle(Event::Received(r), ms(110)), want, "{what}");
            assert_eq!(m.current(), Some(&route(1, 3, 10, Some("pg1"))), "{what}: route unchanged");
        }
    }

    #[test]
    fn nonces_age_out_of_the_window() {
        let mut m = routing();
        for n in 2..2 + NONCE_WINDOW as u64 {
            m.handle(Event::Sent { nonce: n }, ms(10 * n));
        }
        assert!(!m.sent_recently(1) && m.sent_recently(2), "nonce 1 is out of the window");
        assert_eq!(m.handle(Event::Received(route(1, 3, 10, Some("pg1"))), ms(200)), refused("lb1", Refusal::UnknownNonce));
    }

    #[test]
    fn the_same_epoch_renews_the_lease() {
        let mut m = routing();
        run(&mut m, vec![
            (250, Event::Sent { nonce: 2 }, vec![]),
            (260, Event::Received(route(2, 3, 10, Some("pg1"))), vec![Action::Renew { expires: ms(1250) }]),
            (270, Event::Received(route(1, 3, 10, Some("pg1"))), vec![]),
        ]);
        assert_eq!(m.next_deadline(), Some(ms(1250)), "an older nonce extends nothing");
    }

    #[test]
    fn a_new_writer_destroys_the_sockets_to_the_old_one() {
        let mut m = routing();
        let next = route(2, 4, 11, Some("pg2"));
        run(&mut m, vec![
            (300, Event::Sent { nonce: 2 }, vec![]),
            (301, Event::Received(next.clone()), vec![Action::Apply { route: next, expires: ms(1300) }, Action::Destroy { addr: addr("pg1") }]),
        ]);
    }

    #[test]
    fn no_writer_destroys_too_and_readers_alone_do_not() {
        let mut m = routing();
        let mut readers_only = route(2, 3, 11, Some("pg1"));
        readers_only.readers.clear();
        let fenced = route(2, 3, 12, None);
        run(&mut m, vec![
            (300, Event::Sent { nonce: 2 }, vec![]),
            (301, Event::Received(readers_only.clone()), vec![Action::Apply { route: readers_only, expires: ms(1300) }]),
            (302, Event::Received(fenced.clone()), vec![Action::Apply { route: fenced, expires: ms(1300) }, Action::Destroy { addr: addr("pg1") }]),
        ]);
    }

    #[test]
    fn lease_loss_clears_and_closes_writer_sockets_and_keeps_the_floor() {
        let mut m = routing();
        let back = route(5, 3, 10, Some("pg1"));
        run(&mut m, vec![
            (999, Event::Tick, vec![]),
            (1000, Event::Tick, vec![Action::Clear { why: Cleared::LeaseLost }, Action::Destroy { addr: addr("pg1") }]),
            (1100, Event::Sent { nonce: 5 }, vec![]),
            (1101, Event::Received(from("lb2", 5, 2, 90, Some("pg2"))), refused("lb2", Refusal::StaleTimeline)),
            (1101, Event::Received(route(5, 3, 9, Some("pg1"))), refused("lb1", Refusal::OutOfOrder)),
            (1102, Event::Received(back.clone()), vec![Action::Apply { route: back, expires: ms(2100) }]),
        ]);
        assert_eq!(m.floor(), Epoch { timeline: 3, seq: 10 }, "the floor survives the lease");
    }

    #[test]
    fn an_answer_to_a_request_older_than_the_lease_is_not_applied() {
        let mut m = Machine::new("app", LEASE);
        m.handle(Event::Sent { nonce: 1 }, ms(0));
        assert_eq!(m.handle(Event::Received(route(1, 3, 10, Some("pg1"))), ms(1000)), vec![]);
        assert_eq!((m.current(), m.next_deadline()), (None, None));
    }

    #[test]
    fn masters_that_agree_route_together_with_the_readers_both_name() {
        let mut m = routing();
        let mut lb2 = from("lb2", 2, 3, 4, Some("pg1"));
        lb2.readers = vec![reader("pg2", 1)];
        let mut merged = route(1, 3, 10, Some("pg1"));
        merged.lb = "lb1,lb2".into();
        merged.readers.clear();
        run(&mut m, vec![
            (100, Event::Sent { nonce: 2 }, vec![]),
            (110, Event::Received(lb2), vec![Action::Apply { route: merged, expires: ms(1100) }]),
        ]);
        assert_eq!(m.current().map(|r| r.readers.len()), Some(0), "pg3 (lb1 only) and pg2 (lb2 only): no reader both name");
    }

    /// Issue 18: two masters (a VRRP split) on one timeline, each re-stamping above the other,
    /// used to flip the agent between their writers at every answer. Now: the VIP until only
    /// one master has been heard for a lease.
    #[test]
    fn masters_that_disagree_send_connections_to_the_vip_until_one_remains() {
        let mut m = routing();
        let conflict = Action::Conflict { timeline: 3, masters: vec![("lb1".into(), "pg1".into()), ("lb2".into(), "pg2".into())] };
        let lb1_back = route(4, 3, 12, Some("pg1"));
        let lb1_alone = route(5, 3, 12, Some("pg1"));
        run(&mut m, vec![
            (250, Event::Sent { nonce: 2 }, vec![]),
            (260, Event::Received(from("lb2", 2, 3, 11, Some("pg2"))), vec![conflict, Action::Clear { why: Cleared::Conflict }, Action::Destroy { addr: addr("pg1") }]),
            (261, Event::Received(route(2, 3, 12, Some("pg1"))), vec![]),
            (500, Event::Sent { nonce: 3 }, vec![]),
            (510, Event::Received(from("lb2", 3, 3, 13, Some("pg2"))), vec![]),
            (511, Event::Received(route(3, 3, 12, Some("pg1"))), vec![]),
            // lb2 goes quiet (backup, or gone): its last claim ends at 1500. lb1's claim made
            // while lb2's still lived holds the route back until it ends too (1750).
            (750, Event::Sent { nonce: 4 }, vec![]),
            (760, Event::Received(lb1_back.clone()), vec![]),
            (1500, Event::Tick, vec![]),
            (1600, Event::Sent { nonce: 5 }, vec![]),
            (1610, Event::Received(lb1_alone.clone()), vec![]),
            (1749, Event::Tick, vec![]),
            (1750, Event::Tick, vec![Action::Apply { route: lb1_alone, expires: ms(2600) }]),
        ]);
        assert_eq!(m.current().and_then(|r| r.writer.clone()), Some(target("pg1")), "one master left: routed again");
    }

    #[test]
    fn a_master_on_a_newer_timeline_outranks_without_a_conflict() {
        let mut m = routing();
        let promoted = from("lb2", 2, 4, 1, Some("pg2"));
        run(&mut m, vec![
            (100, Event::Sent { nonce: 2 }, vec![]),
            (110, Event::Received(promoted.clone()), vec![Action::Apply { route: promoted, expires: ms(1100) }, Action::Destroy { addr: addr("pg1") }]),
            (120, Event::Received(route(2, 3, 11, Some("pg1"))), refused("lb1", Refusal::StaleTimeline)),
        ]);
    }

    #[test]
    fn a_master_with_no_writer_disagrees_with_one_that_has_one() {
        let mut m = routing();
        m.handle(Event::Sent { nonce: 2 }, ms(100));
        let a = m.handle(Event::Received(from("lb2", 2, 3, 1, None)), ms(110));
        assert_eq!(a[1..], [Action::Clear { why: Cleared::Conflict }, Action::Destroy { addr: addr("pg1") }], "{a:?}");
    }
}
