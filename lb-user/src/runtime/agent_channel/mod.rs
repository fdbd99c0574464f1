//! The load balancer's side of the agent channel (`[agent]` in its config): one task that admits
//! agents' subscribes ([`gate`]: registered agent, MAC, freshness, cookie), tells them the routing
//! the daemon publishes (`watch<Published>`, [`publisher`]), and signs every route with the load
//! balancers' Ed25519 key. Data flows one way: nothing here feeds the failover machine.

pub mod gate;
pub mod publisher;

use std::{
    collections::HashMap,
    net::{SocketAddr, SocketAddrV4},
    time::{Duration, SystemTime},
};

use tokio::{net::UdpSocket, sync::watch, time::Instant};
use tracing::{debug, info, warn};

use self::{
    gate::{Admission, Dropped, Gate},
    publisher::{Publisher, Routing},
};
use super::{RuntimeError, params::{AgentChannelParams, NodeSpec}, snapshot::Published};
use crate::agent::channel::{MAX_DATAGRAM, Route, SigningKey};

/// How often a kind of dropped datagram is logged at most (each line carries the running count).
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Everything the task needs, built by [`open`].
pub struct Channel {
    socket: UdpSocket,
    signing: SigningKey,
    gate: Gate,
    publisher: Publisher,
    /// By node id: (name, address, read weight).
    nodes: Vec<(String, SocketAddrV4, u32)>,
    published: watch::Receiver<Published>,
    /// The nodes again after a reload (new read weights).
    reloaded: watch::Receiver<Vec<NodeSpec>>,
}

/// Binds the channel's UDP port and makes the task (its keys were read by `Config::load`).
pub async fn open(p: AgentChannelParams, published: watch::Receiver<Published>, reloaded: watch::Receiver<Vec<NodeSpec>>) -> Result<Channel, RuntimeError> {
    let port = p.port;
    let socket = UdpSocket::bind(("0.0.0.0", port)).await.map_err(|source| RuntimeError::AgentBind { port, source })?;
    let start_seq = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    info!(port, agents = p.clients.len(), public_key = %p.signing.public(), "agent channel: serving subscribes; routes signed, pushed on every change");
    Ok(Channel {
        socket,
        gate: Gate::new(p.clients, p.signing.derive("pglb-agent cookie key")),
        signing: p.signing,
        publisher: Publisher::new(&p.instance, p.subscriber_ttl, start_seq),
        nodes: node_weights(&p.nodes),
        published,
        reloaded,
    })
}

fn node_weights(nodes: &[NodeSpec]) -> Vec<(String, SocketAddrV4, u32)> {
    nodes.iter().map(|n| (n.name.clone(), n.addr, n.read_weight)).collect()
}

/// The task; ends when the routing's sender is gone.
pub async fn serve(mut c: Channel) {
    let since = Instant::now();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut logged: HashMap<Dropped, Duration> = HashMap::new();
    let first = Routing::from_view(&c.published.borrow_and_update().view, &c.nodes);
    c.publisher.on_routing(first, Duration::ZERO);
    loop {
        let out: Vec<(SocketAddr, String)> = tokio::select! {
            changed = c.published.changed() => {
                if changed.is_err() {
                    return;
                }
                if c.reloaded.has_changed().unwrap_or(false) {
                    c.nodes = node_weights(&c.reloaded.borrow_and_update());
                }
                let routing = Routing::from_view(&c.published.borrow_and_update().view, &c.nodes);
                let out = c.publisher.on_routing(routing.clone(), since.elapsed());
                if !out.is_empty() {
                    info!(epoch = %c.publisher.epoch(), master = routing.master, writer = ?routing.writer.as_ref().map(|w| &w.name), agents = out.len(), "agent channel: routing pushed");
                }
                sign(&c.signing, out)
            }
            got = c.socket.recv_from(&mut buf) => match got {
                Ok((n, from)) => {
                    let now = since.elapsed();
                    let unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                    match c.gate.admit(&buf[..n], from, now, unix) {
                        Admission::Subscribe(sub) => {
                            debug!(agent = %sub.agent, %from, seen = %sub.seen, "agent channel: subscribe");
                            sign(&c.signing, c.publisher.on_subscribe(from, &sub, now))
                        }
                        Admission::Cookie(reply) => {
                            debug!(%from, "agent channel: subscribe without a valid cookie for its address: cookie sent");
                            vec![(from, reply)]
                        }
                        Admission::Dropped(why) => {
                            if logged.get(&why).is_none_or(|at| now.saturating_sub(*at) >= DROP_LOG_EVERY) {
                                logged.insert(why, now);
                                warn!(%from, why = why.as_str(), dropped = c.gate.dropped(why), "agent channel: datagram dropped unanswered (the count is since start)");
                            }
                            Vec::new()
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "agent channel: receive failed");
                    Vec::new()
                }
            },
        };
        for (to, wire) in out {
            if let Err(e) = c.socket.send_to(wire.as_bytes(), to).await {
                debug!(%to, error = %e, "agent channel: send failed");
            }
        }
    }
}

fn sign(key: &SigningKey, routes: Vec<(SocketAddr, Route)>) -> Vec<(SocketAddr, String)> {
    routes.into_iter().map(|(to, route)| (to, route.encode(key))).collect()
}
