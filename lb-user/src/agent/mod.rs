//! `pglb agent`: zero-hop routing on an application host.
//!
//! The agent attaches a cgroup `connect4` program ([`bpf`], the program in `lb-ebpf/src/agent.rs`)
//! that rewrites a `connect()` to VIP:write_port into the current writer's address and
//! VIP:read_port into a reader's, so the application's packets go straight to PostgreSQL. It
//! decides nothing itself: the routing comes from the load balancers over an authenticated UDP
//! channel ([`channel`]; the load balancer's side is [`crate::runtime::agent_channel`]), and
//! [`machine`] decides which messages to believe and how long (the lease). Without a valid
//! route nothing is rewritten and connections take the VIP, as without an agent. When the
//! writer changes (or is lost, or the lease runs out, or masters disagree) the sockets still
//! connected to the old writer are destroyed ([`destroy`]); when the agent stops, or starts
//! after a killed run, so are the sockets it sent to a writer.
//!
//! ```text
//!  subscribe (own key's MAC, time, cookie) ──► load balancers ──route (signed, nonce, epoch)──► Machine
//!                                          ◄── cookie (first time, or a new address)
//!                                                      Apply/Renew/Clear ──► agent_route map
//!                                                      Destroy ──► SOCK_DESTROY (sock_diag)
//! ```

pub mod bpf;
pub mod channel;
pub mod config;
pub mod destroy;
pub mod machine;

use std::{
    collections::{HashMap, HashSet},
    net::{SocketAddr, SocketAddrV4},
    path::Path,
    time::{Duration, SystemTime},
};

use thiserror::Error;
use tokio::{
    net::UdpSocket,
    signal::unix::{SignalKind, signal},
};
use tracing::{debug, error, info, warn};

use self::{
    bpf::{AgentBpfError, AgentProgram},
    config::AgentConfig,
    destroy::Destroyed,
    machine::{Action, Cleared, Event, Machine},
};
use self::channel::{Cookie, Key, KeyError, MAX_DATAGRAM, PublicKey, ProtoError, Subscribe, ToAgent, keys::random_bytes};

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

/// The channel's side of a running agent: its keys, the load balancers' cookies, its clock.
struct Channel {
    name: String,
    key: Key,
    lb_key: PublicKey,
    load_balancers: Vec<SocketAddrV4>,
    socket: UdpSocket,
    /// The cookie each load balancer gave for this agent's address.
    cookies: HashMap<SocketAddrV4, Cookie>,
    /// Load balancers asked again at once for a new cookie since the last round (at most once a
    /// round each, so a load balancer that never accepts a cookie is not asked in a loop).
    asked_again: HashSet<SocketAddrV4>,
    /// The last subscribe's `time` (µs since the Unix epoch, strictly rising).
    time: u64,
}

impl Channel {
    /// A subscribe to each of `to` with one fresh nonce, told to the machine.
    async fn subscribe(&mut self, machine: &mut Machine, to: &[SocketAddrV4]) -> Vec<Action> {
        let mut nonce = [0u8; 8];
        if let Err(e) = random_bytes(&mut nonce) {
            error!(error = %crate::error_chain(&e), "agent: no random nonce: subscribe not sent");
            return Vec::new();
        }
        let nonce = u64::from_ne_bytes(nonce);
        let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        self.time = wall.max(self.time.saturating_add(1));
        let actions = machine.handle(Event::Sent { nonce }, monotonic());
        for lb in to {
            let sub = Subscribe { agent: self.name.clone(), nonce, seen: machine.floor(), time: self.time, cookie: self.cookies.get(lb).copied() };
            if let Err(e) = self.socket.send_to(sub.encode(&self.key).as_bytes(), SocketAddr::V4(*lb)).await {
                debug!(%lb, error = %e, "agent: subscribe not sent");
            }
        }
        actions
    }

    /// A datagram from `from`: a route for the machine, or a cookie (then that load balancer is
    /// asked again at once).
    async fn receive(&mut self, machine: &mut Machine, datagram: &[u8], from: SocketAddr) -> Vec<Action> {
        let lb = match from {
            SocketAddr::V4(a) if self.load_balancers.contains(&a) => a,
            _ => {
                debug!(%from, "agent: datagram from an address that is not a configured load balancer");
                return Vec::new();
            }
        };
        match ToAgent::decode(datagram, &self.lb_key) {
            Ok(ToAgent::Route(route)) => machine.handle(Event::Received(route), monotonic()),
            Ok(ToAgent::Cookie(reply)) if machine.sent_recently(reply.nonce) => {
                debug!(%lb, "agent: cookie received");
                self.cookies.insert(lb, reply.cookie);
                if self.asked_again.insert(lb) { self.subscribe(machine, &[lb]).await } else { Vec::new() }
            }
            Ok(ToAgent::Cookie(_)) => {
                debug!(%lb, "agent: a cookie for a nonce not sent recently: ignored");
                Vec::new()
            }
            Err(e) => {
                let hint = if e == ProtoError::BadSignature { " (is lb_public_key_file the load balancers' signing key's public half?)" } else { "" };
                warn!(%from, error = %e, "agent: message refused{hint}");
                Vec::new()
            }
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let key = Key::from_file(&config.key_file, "agent")?;
    let lb_key = PublicKey::from_file(&config.lb_public_key_file)?;
    let name = config.name();
    let pin = config.pin_path();
    let mut prog = AgentProgram::load()?;
    prog.set_listeners(config.vip, &config.write_ports, &config.read_ports)?;
    let socket = UdpSocket::bind("0.0.0.0:0").await.map_err(AgentError::Socket)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    if let Some(done) = bpf::cleanup_pinned(&pin)? {
        log_closed(&done, "agent: the previous agent run did not stop cleanly: closed the sockets it had sent to a writer");
    }
    let pinned = prog.pin_rewritten(&pin)?;
    prog.attach(&config.cgroup)?;
    info!(
        agent = %name, cgroup = %config.cgroup.display(), vip = %config.vip, write_ports = ?config.write_ports, read_ports = ?config.read_ports,
        load_balancers = ?config.load_balancers, lease_ms = config.lease.as_millis() as u64, pinned = %pinned.display(),
        "agent: connect4 attached; connections go to the VIP until a load balancer's master answers"
    );
    let mut machine = Machine::new(&name, config.lease);
    let mut channel = Channel {
        name,
        key,
        lb_key,
        load_balancers: config.load_balancers.clone(),
        socket,
        cookies: HashMap::new(),
        asked_again: HashSet::new(),
        time: 0,
    };
    let mut every = tokio::time::interval(config.subscribe_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = machine.next_deadline();
        let actions = tokio::select! {
            _ = every.tick() => {
                channel.asked_again.clear();
                let all = channel.load_balancers.clone();
                channel.subscribe(&mut machine, &all).await
            }
            got = channel.socket.recv_from(&mut buf) => match got {
                Ok((n, from)) => channel.receive(&mut machine, &buf[..n], from).await,
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
    stop(&mut prog, &pin);
    Ok(())
}

/// A clean stop: no more rewrites, the sockets sent to a writer closed (nothing would close them
/// once this process is gone, when the writer changes), the pin removed.
fn stop(prog: &mut AgentProgram, pin: &Path) {
    if let Err(e) = prog.clear() {
        error!(error = %crate::error_chain(&e), "agent: clearing the route failed (the program goes with this process anyway)");
    }
    match prog.destroy_rewritten() {
        Ok(done) => {
            log_closed(&done, "agent: stopping: closed the sockets sent straight to a writer (they reconnect through the VIP)");
            if let Err(e) = bpf::unpin(pin) {
                error!(error = %crate::error_chain(&e), "agent: removing the pin failed; the next start or `pglb agent cleanup` closes nothing more");
            }
        }
        Err(e) => error!(
            error = %crate::error_chain(&e), pin = %pin.display(),
            "agent: stopping: closing the sockets sent to a writer failed; the pin is kept for the next start or `pglb agent cleanup`"
        ),
    }
    if let Ok(c) = prog.counters() {
        info!(counts = ?lb_common::agent::AGENT_REASON_NAMES.iter().zip(c).collect::<Vec<_>>(), "agent: stopping; the connect4 program is detached as the process exits");
    }
}

/// `pglb agent cleanup`: closes what a killed agent with this config left (a supervisor runs it
/// after the agent's process is gone, e.g. systemd's `ExecStopPost`).
pub fn cleanup(config: &AgentConfig) -> Result<Option<Destroyed>, AgentError> {
    Ok(bpf::cleanup_pinned(&config.pin_path())?)
}

/// Logs what closing the recorded sockets did.
pub fn log_closed(done: &Destroyed, what: &str) {
    if done.destroyed == done.found {
        info!(found = done.found, destroyed = done.destroyed, "{what}");
    } else {
        warn!(found = done.found, destroyed = done.destroyed, errno = ?done.first_errno, "{what}; some could not be closed");
    }
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
                let names = |r: &[channel::Reader]| r.iter().map(|r| r.target.name.as_str()).collect::<Vec<_>>().join(", ");
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
            Action::Clear { why } => match (prog.clear(), why) {
                (Ok(()), Cleared::LeaseLost) => warn!("agent: lease lost (no valid answer from a master): connections go to the VIP"),
                (Ok(()), Cleared::Conflict) => warn!("agent: masters disagree: no route, connections go to the VIP until one master remains"),
                (Err(e), _) => error!(error = %crate::error_chain(&e), "agent: clearing the route failed (it expires by itself)"),
            },
            Action::Conflict { timeline, masters } => {
                warn!(timeline, masters = ?masters, "agent: conflict: masters name different writers on one timeline (a VRRP split?)");
            }
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
