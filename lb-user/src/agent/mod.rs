//! `pglb agent`: zero-hop routing on an application host.
//!
//! The agent attaches a cgroup `connect4` program ([`bpf`], the program in `lb-ebpf/src/agent.rs`)
//! that rewrites a `connect()` to VIP:write_port into the current writer's address and
//! VIP:read_port into a reader's, so the application's packets go straight to PostgreSQL. It
//! decides nothing itself: the routing comes from the load balancers over an authenticated UDP
//! channel ([`proto`]; the load balancer's side is [`publisher`]), and [`machine`] decides which
//! messages to believe and how long (the lease). Without a valid route nothing is rewritten and
//! connections take the VIP, as without an agent. When the writer changes (or is lost, or the
//! lease runs out) the sockets still connected to the old writer are destroyed ([`destroy`]).
//!
//! ```text
//!  subscribe every interval ──► load balancers ──route (MAC, nonce, epoch)──► Machine
//!                                                      Apply/Renew/Clear ──► agent_route map
//!                                                      Destroy ──► SOCK_DESTROY (sock_diag)
//! ```

pub mod bpf;
pub mod config;
pub mod destroy;
pub mod machine;

use std::{net::SocketAddr, time::Duration};

use thiserror::Error;
use tokio::{
    net::UdpSocket,
    signal::unix::{SignalKind, signal},
};
use tracing::{debug, error, info, warn};

use self::{
    bpf::{AgentBpfError, AgentProgram},
    config::AgentConfig,
    machine::{Action, Event, Machine},
};
use crate::channel::{Key, KeyError, MAX_DATAGRAM, Message, Subscribe};

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Bpf(#[from] AgentBpfError),
    #[error("cannot open the agent's UDP socket")]
    Socket(#[source] std::io::Error),
    #[error("cannot install the signal handler")]
    Signal(#[source] std::io::Error),
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns` (the route's deadline is compared with it).
pub fn monotonic() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn nonce() -> u64 {
    let mut n = [0u8; 8];
    // SAFETY: n is a writable buffer of 8 bytes.
    let got = unsafe { libc::getrandom(n.as_mut_ptr().cast(), n.len(), 0) };
    if got != 8 {
        // Never on Linux ≥ 3.17 with 8 bytes; a nonce only has to be unpredictable enough
        // not to be guessed within one lease.
        return monotonic().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    }
    u64::from_ne_bytes(n)
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let key = Key::from_file(&config.key_file)?;
    let name = config.name.clone().unwrap_or_else(hostname);
    let mut prog = AgentProgram::load()?;
    prog.set_listeners(config.vip, &config.write_ports, &config.read_ports)?;
    let socket = UdpSocket::bind("0.0.0.0:0").await.map_err(AgentError::Socket)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    prog.attach(&config.cgroup)?;
    info!(
        agent = %name, cgroup = %config.cgroup.display(), vip = %config.vip, write_ports = ?config.write_ports, read_ports = ?config.read_ports,
        load_balancers = ?config.load_balancers, lease_ms = config.lease.as_millis() as u64,
        "agent: connect4 attached; connections go to the VIP until a load balancer's master answers"
    );
    let mut machine = Machine::new(config.lease);
    let mut every = tokio::time::interval(config.subscribe_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = machine.next_deadline();
        let actions = tokio::select! {
            _ = every.tick() => {
                let nonce = nonce();
                let wire = Message::Subscribe(Subscribe { agent: name.clone(), nonce, seen: machine.floor() }).encode(&key);
                let actions = machine.handle(Event::Sent { nonce }, monotonic());
                for lb in &config.load_balancers {
                    if let Err(e) = socket.send_to(wire.as_bytes(), SocketAddr::V4(*lb)).await {
                        debug!(%lb, error = %e, "agent: subscribe not sent");
                    }
                }
                actions
            }
            got = socket.recv_from(&mut buf) => match got {
                Ok((n, from)) => match Message::decode(&buf[..n], &key) {
                    Ok(Message::Route(route)) => machine.handle(Event::Received(route), monotonic()),
                    Ok(Message::Subscribe(_)) => Vec::new(),
                    Err(e) => {
                        warn!(%from, error = %e, "agent: message refused");
                        Vec::new()
                    }
                },
                Err(e) => {
                    debug!(error = %e, "agent: receive failed");
                    Vec::new()
                }
            },
            () = sleep_until(deadline) => machine.handle(Event::Tick, monotonic()),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        apply(&mut prog, actions);
    }
    if let Err(e) = prog.clear() {
        error!(error = %crate::error_chain(&e), "agent: clearing the route failed (the program goes with this process anyway)");
    }
    if let Ok(c) = prog.counters() {
        info!(counts = ?lb_common::agent::AGENT_REASON_NAMES.iter().zip(c).collect::<Vec<_>>(), "agent: stopping; the connect4 program is detached as the process exits");
    }
    Ok(())
}

async fn sleep_until(deadline: Option<Duration>) {
    match deadline {
        Some(d) => tokio::time::sleep(d.saturating_sub(monotonic())).await,
        None => std::future::pending().await,
    }
}

fn apply(prog: &mut AgentProgram, actions: Vec<Action>) {
    for action in actions {
        match action {
            Action::Apply { route, expires } => {
                let names = |r: &[crate::channel::Reader]| r.iter().map(|r| r.target.name.as_str()).collect::<Vec<_>>().join(", ");
                match prog.apply(&route, expires.as_nanos() as u64) {
                    Ok(()) => info!(
                        epoch = %route.epoch, lb = %route.lb, writer = ?route.writer.as_ref().map(|w| w.addr), readers = %names(&route.readers),
                        "agent: route: writes to {}, reads to {}",
                        route.writer.as_ref().map_or("the VIP (no writer)".to_owned(), |w| w.name.clone()),
                        if route.readers.is_empty() { "the VIP (no reader)".to_owned() } else { names(&route.readers) }
                    ),
                    Err(e) => error!(error = %crate::error_chain(&e), "agent: writing the route failed; connections keep their previous route until the lease runs out"),
                }
            }
            Action::Renew { expires } => {
                if let Err(e) = prog.renew(expires.as_nanos() as u64) {
                    error!(error = %crate::error_chain(&e), "agent: renewing the route failed");
                }
            }
            Action::Clear => match prog.clear() {
                Ok(()) => warn!("agent: lease lost (no valid answer from a master): connections go to the VIP"),
                Err(e) => error!(error = %crate::error_chain(&e), "agent: clearing the route failed (it expires by itself)"),
            },
            Action::Destroy { addr } => {
                tokio::task::spawn_blocking(move || match destroy::destroy_connected_to(addr) {
                    Ok(d) if d.found == 0 => debug!(%addr, "agent: no socket connected to the old writer"),
                    Ok(d) => info!(%addr, found = d.found, destroyed = d.destroyed, errno = ?d.first_errno, "agent: destroyed the sockets connected to the old writer"),
                    Err(e) => error!(%addr, error = %crate::error_chain(&e), "agent: destroying the sockets to the old writer failed"),
                });
            }
            Action::Refused { lb, why } => debug!(%lb, why = why.as_str(), "agent: route not believed"),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "agent".to_owned())
}
