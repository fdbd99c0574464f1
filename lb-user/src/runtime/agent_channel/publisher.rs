//! What a load balancer tells its agents, sans-IO: a routing in, the routes to send out.
//!
//! A subscribe (already admitted by [`super::gate`]) is answered at once and keeps its agent
//! subscribed for `ttl`, at the address it came from; every change of what this instance
//! publishes (writer, readers, its VRRP role) takes the next epoch and is pushed to every live
//! subscriber at once, so a failover reaches the agents in the time of one datagram.
//!
//! The sequence starts at the wall clock in ms (so a restarted instance starts above what it
//! published before) and is a Lamport clock: raised to every subscribe's `seen`, and by one at
//! every change, saturating at `u64::MAX` (a subscribe can ask for any value). A subscribe never
//! re-stamps the routing: what two load balancers say is the agents' to compare (by timeline,
//! and a conflict falls back to the VIP), so two masters never outbid each other.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use crate::{
    agent::channel::{Epoch, Reader, Role, Route, Subscribe, Target},
    failover::ClusterView,
};

/// The most agents one load balancer keeps subscribed (the oldest expiring are dropped first).
pub const MAX_SUBSCRIBERS: usize = 4096;

/// What this instance publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    pub master: bool,
    /// The writer's timeline, when it has one.
    pub timeline: Option<u32>,
    pub writer: Option<Target>,
    pub readers: Vec<Reader>,
}

impl Routing {
    /// The routing in a cluster view; `nodes` by node id: (name, address, read weight).
    pub fn from_view(view: &ClusterView, nodes: &[(String, std::net::SocketAddrV4, u32)]) -> Self {
        // `get`: a node a reload just added or removed may be in one of the two and not yet in
        // the other.
        let target = |id: usize| nodes.get(id).map(|n| Target { name: n.0.clone(), addr: n.1 });
        Routing {
            master: view.vrrp_master,
            timeline: view.writer_timeline,
            writer: view.writer.and_then(target),
            readers: view
                .readers
                .iter()
                .filter_map(|&id| Some(Reader { target: target(id)?, id: id as u32, weight: nodes[id].2.max(1) }))
                .collect(),
        }
    }
}

struct Subscriber {
    addr: SocketAddr,
    nonce: u64,
    until: Duration,
}

/// The publishing state.
pub struct Publisher {
    instance: String,
    ttl: Duration,
    /// The Lamport sequence: the highest seen anywhere.
    seq: u64,
    epoch: Epoch,
    routing: Option<Routing>,
    /// By agent name.
    subscribers: HashMap<String, Subscriber>,
}

impl Publisher {
    /// `start_seq`: where the sequence starts (the wall clock in ms).
    pub fn new(instance: &str, ttl: Duration, start_seq: u64) -> Self {
        Publisher { instance: instance.to_owned(), ttl, seq: start_seq, epoch: Epoch::default(), routing: None, subscribers: HashMap::new() }
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// A routing as published now; on a change, the new epoch pushed to every live subscriber.
    pub fn on_routing(&mut self, routing: Routing, now: Duration) -> Vec<(SocketAddr, Route)> {
        if self.routing.as_ref() == Some(&routing) {
            return Vec::new();
        }
        // A writer-less routing keeps the last timeline this instance published: the epoch
        // never goes down.
        let timeline = routing.timeline.unwrap_or(self.epoch.timeline).max(self.epoch.timeline);
        self.seq = self.seq.saturating_add(1);
        self.epoch = Epoch { timeline, seq: self.seq };
        self.routing = Some(routing);
        self.push(now)
    }

    /// An admitted subscribe from `from`: answered there at once and remembered for `ttl`.
    pub fn on_subscribe(&mut self, from: SocketAddr, sub: &Subscribe, now: Duration) -> Vec<(SocketAddr, Route)> {
        self.seq = self.seq.max(sub.seen.seq);
        self.subscribers.retain(|_, s| s.until > now);
        if self.subscribers.len() >= MAX_SUBSCRIBERS && !self.subscribers.contains_key(&sub.agent) {
            return Vec::new();
        }
        self.subscribers.insert(sub.agent.clone(), Subscriber { addr: from, nonce: sub.nonce, until: now + self.ttl });
        self.route(&sub.agent, sub.nonce).map(|r| vec![(from, r)]).unwrap_or_default()
    }

    fn route(&self, agent: &str, nonce: u64) -> Option<Route> {
        let r = self.routing.as_ref()?;
        Some(Route {
            lb: self.instance.clone(),
            agent: agent.to_owned(),
            role: if r.master { Role::Master } else { Role::Backup },
            nonce,
            epoch: self.epoch,
            writer: r.writer.clone(),
            readers: r.readers.clone(),
        })
    }

    fn push(&mut self, now: Duration) -> Vec<(SocketAddr, Route)> {
        self.subscribers.retain(|_, s| s.until > now);
        let mut out: Vec<(SocketAddr, Route)> = self.subscribers.iter().filter_map(|(agent, s)| Some((s.addr, self.route(agent, s.nonce)?))).collect();
        out.sort_by_key(|(a, _)| *a);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn routing(master: bool, timeline: Option<u32>, writer: Option<&str>) -> Routing {
        Routing {
            master,
            timeline,
            writer: writer.map(|w| Target { name: w.into(), addr: "172.20.0.10:5432".parse().unwrap() }),
            readers: vec![],
        }
    }

    fn sub(agent: &str, nonce: u64, timeline: u32, seq: u64) -> Subscribe {
        Subscribe { agent: agent.into(), nonce, seen: Epoch { timeline, seq }, time: nonce, cookie: None }
    }

    const A: &str = "10.0.0.1:4000";
    const B: &str = "10.0.0.2:4000";

    #[test]
    fn a_subscribe_is_answered_with_its_nonce_and_name() {
        let mut p = Publisher::new("lb1", ms(5000), 0);
        p.on_routing(routing(true, Some(3), Some("pg1")), ms(0));
        let out = p.on_subscribe(A.parse().unwrap(), &sub("app", 42, 0, 0), ms(1));
        assert_eq!(out.len(), 1);
        let (to, r) = &out[0];
        assert_eq!(
            (to.to_string(), r.nonce, r.role, r.epoch, r.lb.as_str(), r.agent.as_str()),
            (A.to_owned(), 42, Role::Master, Epoch { timeline: 3, seq: 1 }, "lb1", "app")
        );
    }

    #[test]
    fn a_change_is_pushed_to_live_subscribers_with_the_next_epoch() {
        let mut p = Publisher::new("lb1", ms(5000), 0);
        p.on_routing(routing(true, Some(3), Some("pg1")), ms(0));
        p.on_subscribe(A.parse().unwrap(), &sub("a", 1, 0, 0), ms(1));
        p.on_subscribe(B.parse().unwrap(), &sub("b", 2, 0, 0), ms(4000));
        assert_eq!(p.on_routing(routing(true, Some(3), Some("pg1")), ms(100)), vec![], "unchanged: nothing pushed");
        let out = p.on_routing(routing(true, Some(4), Some("pg2")), ms(5500));
        let to: Vec<(String, u64, Epoch)> = out.iter().map(|(a, r)| (a.to_string(), r.nonce, r.epoch)).collect();
        assert_eq!(to, vec![(B.to_owned(), 2, Epoch { timeline: 4, seq: 2 })], "a expired at 5001 ms; b gets its own nonce");
    }

    #[test]
    fn an_agent_is_one_subscriber_at_its_latest_address() {
        let mut p = Publisher::new("lb1", ms(5000), 0);
        p.on_routing(routing(true, Some(3), Some("pg1")), ms(0));
        p.on_subscribe(A.parse().unwrap(), &sub("app", 1, 0, 0), ms(1));
        p.on_subscribe(B.parse().unwrap(), &sub("app", 2, 0, 0), ms(2));
        let out = p.on_routing(routing(true, Some(3), None), ms(3));
        assert_eq!(out.iter().map(|(a, r)| (a.to_string(), r.nonce)).collect::<Vec<_>>(), vec![(B.to_owned(), 2)]);
    }

    #[test]
    fn no_writer_keeps_the_timeline_and_the_epoch_rises() {
        let mut p = Publisher::new("lb1", ms(5000), 100);
        p.on_routing(routing(true, Some(3), Some("pg1")), ms(0));
        p.on_routing(routing(true, None, None), ms(1));
        assert_eq!(p.epoch(), Epoch { timeline: 3, seq: 102 }, "fenced writer: same timeline, next sequence");
    }

    #[test]
    fn the_sequence_follows_what_agents_saw() {
        let mut p = Publisher::new("lb2", ms(5000), 0);
        p.on_routing(routing(false, Some(3), Some("pg1")), ms(0));
        let out = p.on_subscribe(A.parse().unwrap(), &sub("app", 1, 3, 40), ms(1));
        assert_eq!((out[0].1.role, out[0].1.epoch.seq), (Role::Backup, 1), "a backup answers as a backup, its epoch as it was");
        let out = p.on_routing(routing(true, Some(3), Some("pg1")), ms(2));
        assert_eq!(out[0].1.epoch, Epoch { timeline: 3, seq: 41 }, "Lamport: above everything seen");
    }

    /// Issue 18: two masters on one timeline re-stamped above each other at every subscribe
    /// that reported the other's epoch, and the agent flipped between them.
    #[test]
    fn a_subscribe_never_re_stamps_the_routing() {
        let mut p = Publisher::new("lb2", ms(5000), 0);
        p.on_routing(routing(true, Some(3), Some("pg2")), ms(0));
        let out = p.on_subscribe(A.parse().unwrap(), &sub("app", 1, 3, 60), ms(1));
        assert_eq!(out.iter().map(|(a, r)| (a.to_string(), r.epoch)).collect::<Vec<_>>(), vec![(A.to_owned(), Epoch { timeline: 3, seq: 1 })], "answered, not re-stamped or pushed");
    }

    /// Issue 18: `seen=<t>.18446744073709551615` overflowed `seq += 1` (a panic in debug builds).
    #[test]
    fn a_huge_seen_saturates_the_sequence() {
        let mut p = Publisher::new("lb1", ms(5000), 0);
        p.on_routing(routing(true, Some(3), Some("pg1")), ms(0));
        p.on_subscribe(A.parse().unwrap(), &sub("app", 1, 3, u64::MAX), ms(1));
        p.on_routing(routing(true, Some(3), Some("pg2")), ms(2));
        assert_eq!(p.epoch(), Epoch { timeline: 3, seq: u64::MAX }, "saturated");
        let out = p.on_routing(routing(true, Some(3), None), ms(3));
        assert_eq!(out[0].1.epoch.seq, u64::MAX, "and stays there, still pushed");
    }

    #[test]
    fn agents_cannot_raise_the_timeline() {
        let mut p = Publisher::new("lb2", ms(5000), 0);
        p.on_routing(routing(true, Some(3), Some("pg1")), ms(0));
        let out = p.on_subscribe(A.parse().unwrap(), &sub("app", 1, 4, 7), ms(1));
        assert_eq!(out[0].1.epoch.timeline, 3, "a stale load balancer stays below the agent's floor");
    }
}
