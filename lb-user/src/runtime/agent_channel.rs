//! The load balancer's side of the agent channel (`[agent]` in its config): one task that reads
//! the routing the daemon publishes (`watch<Published>`) and tells subscribed agents.
//!
//! [`Publisher`] is sans-IO: a subscribe (MAC already checked) or a new routing in, datagrams
//! out. A subscribe is answered at once and keeps its sender subscribed for `ttl`; every change
//! of what this instance publishes (writer, readers, its VRRP role) takes the next epoch and is
//! pushed to every live subscriber at once, so a failover reaches the agents in the time of one
//! datagram. Data flows one way: nothing here feeds the failover machine.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::UdpSocket, sync::watch, time::Instant};
use tracing::{debug, info, warn};

use super::snapshot::Published;
use crate::{
    channel::{Epoch, Key, MAX_DATAGRAM, Message, Reader, Role, Route, Subscribe, Target},
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
        let target = |id: usize| Target { name: nodes[id].0.clone(), addr: nodes[id].1 };
        Routing {
            master: view.vrrp_master,
            timeline: view.writer_timeline,
            writer: view.writer.map(target),
            readers: view.readers.iter().map(|&id| Reader { target: target(id), id: id as u32, weight: nodes[id].2.max(1) }).collect(),
        }
    }
}

struct Subscriber {
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
    subscribers: HashMap<SocketAddr, Subscriber>,
}

impl Publisher {
    pub fn new(instance: &str, ttl: Duration) -> Self {
        Publisher { instance: instance.to_owned(), ttl, seq: 0, epoch: Epoch::default(), routing: None, subscribers: HashMap::new() }
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
        self.seq += 1;
        self.epoch = Epoch { timeline, seq: self.seq };
        self.routing = Some(routing);
        self.push(now)
    }

    /// A subscribe from `from`: remembered for `ttl`, answered at once. A subscriber that has
    /// accepted a newer epoch on this timeline (from the other load balancer) makes a master
    /// re-stamp its routing above it, pushed to everyone.
    pub fn on_subscribe(&mut self, from: SocketAddr, sub: &Subscribe, now: Duration) -> Vec<(SocketAddr, Route)> {
        self.seq = self.seq.max(sub.seen.seq);
        self.subscribers.retain(|_, s| s.until > now);
        if self.subscribers.len() >= MAX_SUBSCRIBERS && !self.subscribers.contains_key(&from) {
            return Vec::new();
        }
        self.subscribers.insert(from, Subscriber { nonce: sub.nonce, until: now + self.ttl });
        let master = self.routing.as_ref().is_some_and(|r| r.master);
        if master && sub.seen.timeline == self.epoch.timeline && sub.seen > self.epoch {
            self.seq += 1;
            self.epoch.seq = self.seq;
            return self.push(now);
        }
        self.route(sub.nonce).map(|r| vec![(from, r)]).unwrap_or_default()
    }

    fn route(&self, nonce: u64) -> Option<Route> {
        let r = self.routing.as_ref()?;
        Some(Route {
            lb: self.instance.clone(),
            role: if r.master { Role::Master } else { Role::Backup },
            nonce,
            epoch: self.epoch,
            writer: r.writer.clone(),
            readers: r.readers.clone(),
        })
    }

    fn push(&mut self, now: Duration) -> Vec<(SocketAddr, Route)> {
        self.subscribers.retain(|_, s| s.until > now);
        let mut out: Vec<(SocketAddr, Route)> = self.subscribers.iter().filter_map(|(a, s)| Some((*a, self.route(s.nonce)?))).collect();
        out.sort_by_key(|(a, _)| *a);
        out
    }
}

/// The task: `socket` bound to `[agent] listen_port`, routing from `published`.
pub async fn serve(
    socket: UdpSocket,
    key: Key,
    instance: String,
    nodes: Vec<(String, std::net::SocketAddrV4, u32)>,
    ttl: Duration,
    mut published: watch::Receiver<Published>,
) {
    let socket = Arc::new(socket);
    let since = Instant::now();
    let mut publisher = Publisher::new(&instance, ttl);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let first = Routing::from_view(&published.borrow_and_update().view, &nodes);
    publisher.on_routing(first, Duration::ZERO);
    loop {
        let out = tokio::select! {
            changed = published.changed() => {
                if changed.is_err() {
                    return;
                }
                let routing = Routing::from_view(&published.borrow_and_update().view, &nodes);
                let out = publisher.on_routing(routing.clone(), since.elapsed());
                if !out.is_empty() {
                    info!(epoch = %publisher.epoch(), master = routing.master, writer = ?routing.writer.as_ref().map(|w| &w.name), agents = out.len(), "agent channel: routing pushed");
                }
                out
            }
            got = socket.recv_from(&mut buf) => match got {
                Ok((n, from)) => match Message::decode(&buf[..n], &key) {
                    Ok(Message::Subscribe(sub)) => {
                        debug!(agent = %sub.agent, %from, seen = %sub.seen, "agent channel: subscribe");
                        publisher.on_subscribe(from, &sub, since.elapsed())
                    }
                    Ok(Message::Route(_)) => Vec::new(),
                    Err(e) => {
                        debug!(%from, error = %e, "agent channel: datagram refused");
                        Vec::new()
                    }
                },
                Err(e) => {
                    warn!(error = %e, "agent channel: receive failed");
                    Vec::new()
                }
            },
        };
        for (to, route) in out {
            let wire = Message::Route(route).encode(&key);
            if let Err(e) = socket.send_to(wire.as_bytes(), to).await {
                debug!(%to, error = %e, "agent channel: send failed");
            }
        }
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

    fn sub(nonce: u64, timeline: u32, seq: u64) -> Subscribe {
        Subscribe { agent: "app".into(), nonce, seen: Epoch { timeline, seq } }
    }

    const A: &str = "10.0.0.1:4000";
    const B: &str = "10.0.0.2:4000";

    #[test]
    fn a_subscribe_is_answered_with_its_nonce() {
        let mut p = Publisher::new("lb1", ms(5000));
        p.on_routing(routing(true, Some(3), Some("pg1")), ms(0));
        let out = p.on_subscribe(A.parse().unwrap(), &sub(42, 0, 0), ms(1));
        assert_eq!(out.len(), 1);
        let (to, r) = &out[0];
        assert_eq!((to.to_string(), r.nonce, r.role, r.epoch, r.lb.as_str()), (A.to_owned(), 42, Role::Master, Epoch { timeline: 3, seq: 1 }, "lb1"));
    }

    #[test]
    fn a_change_is_pushed_to_live_subscribers_with_the_next_epoch() {
        let mut p = Publisher::new("lb1", ms(5000));
        p.on_routing(routing(true, Some(3), Some("pg1")), ms(0));
        p.on_subscribe(A.parse().unwrap(), &sub(1, 0, 0), ms(1));
        p.on_subscribe(B.parse().unwrap(), &sub(2, 0, 0), ms(4000));
        assert_eq!(p.on_routing(routing(true, Some(3), Some("pg1")), ms(100)), vec![], "unchanged: nothing pushed");
        let out = p.on_routing(routing(true, Some(4), Some("pg2")), ms(5500));
        let to: Vec<(String, u64, Epoch)> = out.iter().map(|(a, r)| (a.to_string(), r.nonce, r.epoch)).collect();
        assert_eq!(to, vec![(B.to_owned(), 2, Epoch { timeline: 4, seq: 2 })], "A expired at 5001 ms; B gets its own nonce");
    }

    #[test]
    fn no_writer_keeps_the_timeline_and_the_epoch_rises() {
        let mut p = Publisher::new("lb1", ms(5000));
        p.on_routing(routing(true, Some(3), Some("pg1")), ms(0));
        p.on_routing(routing(true, None, None), ms(1));
        assert_eq!(p.epoch(), Epoch { timeline: 3, seq: 2 }, "fenced writer: same timeline, next sequence");
    }

    #[test]
    fn the_sequence_follows_what_agents_saw_from_the_other_load_balancer() {
        // lb2 was backup; agents accepted lb1's (3, 40). lb2 becomes master: its epoch must
        // outrank (3, 40) once it has heard of it.
        let mut p = Publisher::new("lb2", ms(5000));
        p.on_routing(routing(false, Some(3), Some("pg1")), ms(0));
        let out = p.on_subscribe(A.parse().unwrap(), &sub(1, 3, 40), ms(1));
        assert_eq!(out[0].1.role, Role::Backup, "a backup answers, as a backup");
        let out = p.on_routing(routing(true, Some(3), Some("pg1")), ms(2));
        assert_eq!(out[0].1.epoch, Epoch { timeline: 3, seq: 41 }, "Lamport: above everything seen");
        // lb1 pushed (3, 60) before going backup; the agent reports it: lb2 re-stamps above.
        let out = p.on_subscribe(A.parse().unwrap(), &sub(2, 3, 60), ms(3));
        assert_eq!((out[0].1.nonce, out[0].1.epoch), (2, Epoch { timeline: 3, seq: 61 }), "re-stamped and pushed");
    }

    #[test]
    fn agents_cannot_raise_the_timeline() {
        let mut p = Publisher::new("lb2", ms(5000));
        p.on_routing(routing(true, Some(3), Some("pg1")), ms(0));
        let out = p.on_subscribe(A.parse().unwrap(), &sub(1, 4, 7), ms(1));
        assert_eq!(out[0].1.epoch.timeline, 3, "a stale load balancer stays below the agent's floor");
    }
}
