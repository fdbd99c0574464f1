//! The runner of VIP ownership: [`VrrpRunner`] owns the sans-IO [`Vrrp`] machine and what it
//! acts on (the sockets of `super::sockets`, the VIP address of [`super::address`]), feeds it
//! datagrams, its timer and the daemon's word, executes its actions, returns [`VrrpEvent`]s
//! (role changes, peers heard), publishes a [`VrrpStatus`] on a `watch` channel for status pages
//! and keeps [`VrrpCounters`] for metrics. The daemon drives it from its main loop; tests drive
//! it from a task of its own ([`VrrpRunner::spawn`]).
//!
//! Sockets and the netlink connection are opened in the network namespace of the thread that
//! calls [`VrrpRunner::open`].

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::address::{VipAddress, lookup_link};
use super::garp::{self, GarpKind};
use super::packet::{self, DropReason, VRRP_GROUP};
use super::sockets::{GarpSocket, VrrpSocket};
use super::error::VipError;
use super::vrrp::{Action, DiscardReason, Event, Vouch, Vrrp, VrrpParams, VrrpState};

/// Largest datagram read from the VRRP socket (IP header + 8 + 4 × 255 bytes fits).
const RECV_BUF_LEN: usize = 2048;

/// What the runner publishes after every event that changes something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpStatus {
    /// The machine's state.
    pub state: VrrpState,
    /// Whether we hold the VIP (state is Master).
    pub master: bool,
    /// Our effective priority.
    pub priority: u8,
    /// Who holds the VIP as far as we know (ourselves as master, the accepted master as backup).
    pub master_address: Option<Ipv4Addr>,
    /// Peers heard from and when, on the runner's clock (see `as_of`); a peer that sent priority
    /// 0 is dropped.
    pub peers_heard: Vec<(Ipv4Addr, Duration)>,
    /// The priority each of those peers sent in its last advert (for the stats page).
    pub peer_priorities: Vec<(Ipv4Addr, u8)>,
    /// The runner's clock when this status was published (time since the runner opened).
    pub as_of: Duration,
    /// Master_Down_Interval: the window a peer counts as heard for the quorum rule.
    pub master_down_interval: Duration,
}

impl VrrpStatus {
    /// Peers heard within `window` before `now` (both on the runner's clock, e.g. `as_of`).
    pub fn peers_heard_within(&self, now: Duration, window: Duration) -> usize {
        self.peers_heard.iter().filter(|(_, heard)| now.saturating_sub(*heard) <= window).count()
    }

    fn initial(priority: u8) -> Self {
        VrrpStatus {
            state: VrrpState::Initialize,
            master: false,
            priority,
            master_address: None,
            peers_heard: Vec::new(),
            peer_priorities: Vec::new(),
            as_of: Duration::ZERO,
            master_down_interval: Duration::ZERO,
        }
    }
}

/// Counters for metrics, updated by the runner, readable from any thread.
#[derive(Debug, Default)]
pub struct VrrpCounters {
    /// Adverts sent (one per destination).
    pub adverts_sent: AtomicU64,
    /// Adverts that passed every packet check.
    pub adverts_received: AtomicU64,
    /// Datagrams dropped by the packet checks, indexed by [`DropReason::index`].
    pub dropped: [AtomicU64; DropReason::ALL.len()],
    /// Valid adverts the machine ignored, indexed by [`DiscardReason::index`].
    pub discarded: [AtomicU64; DiscardReason::ALL.len()],
    /// Adverts whose address list differs from our VIP (logged, still processed).
    pub address_list_mismatch: AtomicU64,
    /// Adverts that only verified with the pre-1.3.6 keepalived unicast checksum.
    pub legacy_checksum: AtomicU64,
    /// Transitions into each state, indexed by [`VrrpState::index`].
    pub transitions: [AtomicU64; VrrpState::ALL.len()],
    /// Gratuitous ARP frames sent.
    pub garps_sent: AtomicU64,
    /// Failed sends (adverts or gratuitous ARPs).
    pub send_errors: AtomicU64,
    /// Failed receives on the VRRP socket.
    pub recv_errors: AtomicU64,
    /// Failed VIP additions or removals.
    pub vip_errors: AtomicU64,
    /// Events dropped because the subscriber did not keep up.
    pub events_dropped: AtomicU64,
}

impl VrrpCounters {
    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    /// Adverts discarded by the machine for `reason`.
    pub fn discarded(&self, reason: DiscardReason) -> u64 {
        self.discarded[reason.index()].load(Ordering::Relaxed)
    }

    /// Transitions into `state`.
    pub fn transitions_to(&self, state: VrrpState) -> u64 {
        self.transitions[state.index()].load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Commands from the rest of the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrrpCommand {
    /// Tracking changed our priority (1–254).
    SetPriority(u8),
    /// Stop gracefully: a master drops the VIP and sends priority 0.
    Shutdown,
    /// Stop for a restart in place: keep the VIP and, as master, send two last adverts at our
    /// priority announcing `interval` as our advert interval, so RFC 9568 backups (pglb or
    /// keepalived) wait 3 × `interval` + skew before they take over.
    RestartHold { interval: Duration },
}

/// What the runner tells its subscriber, as it happens (on the runner's task, in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrrpEvent {
    /// This instance became master (`true`) or stopped being master.
    Role { master: bool },
    /// A valid advert with a non-zero priority arrived from `peer`.
    PeerHeard { peer: Ipv4Addr },
}

/// Events queued for a subscriber that has not read them yet; more are dropped and counted.
const EVENT_QUEUE: usize = 1024;

/// Owns the VRRP machine and everything it acts on: the daemon drives it from its main loop
/// (so that a loop that stops turning stops advertising), a test from its own task
/// ([`VrrpRunner::spawn`]). Open it, take its status and counters, [`start`](VrrpRunner::start)
/// it, then feed it what [`VrrpReceiver::recv`] reads, its timer ([`VrrpRunner::deadline`]) and
/// the daemon's word ([`VrrpRunner::set_priority`], [`VrrpRunner::set_ready`]).
pub struct VrrpRunner {
    machine: Vrrp,
    sock: Arc<VrrpSocket>,
    garp: GarpSocket,
    vip: VipAddress,
    mac: [u8; 6],
    epoch: Instant,
    status: watch::Sender<VrrpStatus>,
    counters: Arc<VrrpCounters>,
    netlink_task: JoinHandle<()>,
    /// Where [`VrrpRunner::spawn`]'s task sends the events ([`VrrpRunner::subscribe`]).
    events: Option<mpsc::Sender<VrrpEvent>>,
}

/// The receiving end of the VRRP socket, for the loop that drives the runner.
#[derive(Clone)]
pub struct VrrpReceiver(Arc<VrrpSocket>);

impl VrrpReceiver {
    /// The next datagram (IP header included).
    pub async fn recv(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; RECV_BUF_LEN];
        let len = self.0.recv(&mut buf).await?;
        buf.truncate(len);
        Ok(buf)
    }
}

/// A spawned runner: status, counters, commands, and the task.
pub struct VrrpHandle {
    status: watch::Receiver<VrrpStatus>,
    counters: Arc<VrrpCounters>,
    commands: mpsc::Sender<VrrpCommand>,
    task: JoinHandle<Result<(), VipError>>,
}

/// How long one VIP addition or removal over netlink may take: the loop that waits for it is
/// the loop that advertises.
const NETLINK_LIMIT: Duration = Duration::from_millis(500);

impl VrrpRunner {
    /// Validates `params`, looks up the interface and opens the sockets and the netlink
    /// connection, in the calling thread's network namespace. Nothing is sent or changed yet.
    /// Must be called within a tokio runtime (the netlink connection is spawned on it).
    pub async fn open(params: VrrpParams) -> Result<Self, VipError> {
        params.validate().map_err(VipError::Params)?;
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| VipError::NetlinkOpen { source })?;
        let netlink_task = tokio::spawn(connection);
        let (ifindex, mac) = match lookup_link(&handle, &params.interface).await {
            Ok(found) => found,
            Err(e) => {
                netlink_task.abort();
                return Err(e);
            }
        };
        let sock = Arc::new(VrrpSocket::open(&params, ifindex)?);
        let garp = GarpSocket::open(&params.interface, ifindex)?;
        let vip = VipAddress {
            handle,
            ifindex,
            interface: params.interface.clone(),
            vip: params.vip,
            prefix_len: params.vip_prefix_len,
        };
        let (status, _) = watch::channel(VrrpStatus::initial(params.priority));
        Ok(VrrpRunner {
            machine: Vrrp::new(params),
            sock,
            garp,
            vip,
            mac,
            epoch: Instant::now(),
            status,
            counters: Arc::new(VrrpCounters::default()),
            netlink_task,
            events: None,
        })
    }

    /// The events [`VrrpRunner::spawn`]'s task will send; call before spawning.
    pub fn subscribe(&mut self) -> mpsc::Receiver<VrrpEvent> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        self.events = Some(tx);
        rx
    }

    /// A receiver of the status the runner publishes.
    pub fn status(&self) -> watch::Receiver<VrrpStatus> {
        self.status.subscribe()
    }

    /// The counters the runner updates.
    pub fn counters(&self) -> Arc<VrrpCounters> {
        Arc::clone(&self.counters)
    }

    /// The socket's receiving end.
    pub fn receiver(&self) -> VrrpReceiver {
        VrrpReceiver(Arc::clone(&self.sock))
    }

    /// When [`VrrpRunner::on_timer`] is due; `None`: no timer runs.
    pub fn deadline(&self) -> Option<Instant> {
        self.machine.next_deadline().map(|at| self.epoch + at)
    }

    /// The machine's state.
    pub fn state(&self) -> VrrpState {
        self.machine.state()
    }

    /// The priority this instance advertises now.
    pub fn priority(&self) -> u8 {
        self.machine.priority()
    }

    /// Removes a stale VIP (left by a crash or a freeze) and starts the machine.
    pub async fn start(&mut self) -> Vec<VrrpEvent> {
        self.remove_vip("vrrp: could not remove a stale vip at startup").await;
        self.apply(Event::Startup).await
    }

    /// A datagram from the socket; `vouch` says what an advert from that source at that
    /// priority is worth ([`Vouch`]). A parsed advert with a non-zero priority is reported as
    /// [`VrrpEvent::PeerHeard`] whatever it is worth: its sender is not silent.
    pub async fn on_datagram(&mut self, datagram: &[u8], vouch: impl FnOnce(Ipv4Addr, u8) -> Vouch) -> Vec<VrrpEvent> {
        let received = match packet::parse_ipv4(datagram, self.machine.params().vrid) {
            Err(reason) => {
                VrrpCounters::bump(&self.counters.dropped[reason.index()]);
                if reason == DropReason::VridMismatch {
                    tracing::trace!(reason = reason.as_str(), "vrrp: advert for another virtual router");
                } else {
                    tracing::debug!(reason = reason.as_str(), "vrrp: dropped a datagram");
                }
                return Vec::new();
            }
            Ok(received) => received,
        };
        VrrpCounters::bump(&self.counters.adverts_received);
        if received.legacy_checksum {
            VrrpCounters::bump(&self.counters.legacy_checksum);
        }
        if !packet::address_list_matches(&received.advert, &[self.machine.params().vip]) {
            VrrpCounters::bump(&self.counters.address_list_mismatch);
            tracing::warn!(
                src = %received.src,
                addresses = ?received.advert.addresses,
                vip = %self.machine.params().vip,
                "vrrp: advert's address list differs from ours (misconfiguration?); processing it anyway"
            );
        }
        let mut events = Vec::new();
        if received.advert.priority > 0 {
            events.push(VrrpEvent::PeerHeard { peer: received.src });
        }
        let vouch = vouch(received.src, received.advert.priority);
        events.extend(self.apply(Event::AdvertReceived { src: received.src, packet: received.advert, vouch }).await);
        events
    }

    /// The timer ran out.
    pub async fn on_timer(&mut self) -> Vec<VrrpEvent> {
        self.apply(Event::TimerExpired).await
    }

    /// Tracking changed our priority (1–254).
    pub async fn set_priority(&mut self, priority: u8) -> Vec<VrrpEvent> {
        self.apply(Event::PriorityChanged { priority }).await
    }

    /// Whether this instance may hold the VIP.
    pub async fn set_ready(&mut self, ready: bool) -> Vec<VrrpEvent> {
        self.apply(Event::Ready { ready }).await
    }

    /// Stops gracefully: a master drops the VIP, then sends priority 0.
    pub async fn shutdown(mut self) {
        self.apply(Event::Shutdown).await;
        self.netlink_task.abort();
    }

    /// Stops for a restart in place (see [`VrrpCommand::RestartHold`]): the VIP stays.
    pub fn restart_hold(self, interval: Duration) {
        // Only a master announces the hold: a backup's advert at its configured priority could
        // make the real master step down.
        if self.machine.state() == VrrpState::Master {
            self.send_hold(interval);
        }
        self.netlink_task.abort();
    }

    /// Runs on a new tokio task, every advert believed as sent (no peer reports here: tests and
    /// tools); the handle's [`VrrpHandle::shutdown`] stops it gracefully.
    pub fn spawn(self) -> VrrpHandle {
        let (commands, rx) = mpsc::channel(16);
        let status = self.status();
        let counters = self.counters();
        let task = tokio::spawn(self.run(rx));
        VrrpHandle { status, counters, commands, task }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<VrrpCommand>) -> Result<(), VipError> {
        let events = self.start().await;
        self.emit(events);
        let receiver = self.receiver();
        loop {
            let timer = sleep_until(self.deadline());
            tokio::select! {
                received = receiver.recv() => match received {
                    Ok(datagram) => {
                        let events = self.on_datagram(&datagram, |_, _| Vouch::Plain).await;
                        self.emit(events);
                    }
                    Err(e) => {
                        VrrpCounters::bump(&self.counters.recv_errors);
                        tracing::warn!(error = %e, "vrrp: receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                () = timer => {
                    let events = self.on_timer().await;
                    self.emit(events);
                }
                command = commands.recv() => match command {
                    Some(VrrpCommand::SetPriority(priority)) => {
                        let events = self.set_priority(priority).await;
                        self.emit(events);
                    }
                    Some(VrrpCommand::RestartHold { interval }) => {
                        self.restart_hold(interval);
                        return Ok(());
                    }
                    Some(VrrpCommand::Shutdown) | None => {
                        self.shutdown().await;
                        return Ok(());
                    }
                },
            }
        }
    }

    /// The runner's clock: time since it opened.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Feeds one event, executes the actions in order, publishes the status, and returns the
    /// role changes.
    async fn apply(&mut self, event: Event) -> Vec<VrrpEvent> {
        let actions = self.machine.handle(event, self.now());
        let mut events = Vec::new();
        for action in actions {
            events.extend(self.execute(action).await);
        }
        self.publish();
        events
    }

    async fn execute(&mut self, action: Action) -> Option<VrrpEvent> {
        match action {
            Action::SendAdvert { priority } => self.send_advert(priority),
            Action::AddVip => match tokio::time::timeout(NETLINK_LIMIT, self.vip.add()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    VrrpCounters::bump(&self.counters.vip_errors);
                    tracing::error!(error = %crate::error_chain(&e), "vrrp: master could not add the vip");
                }
                Err(_) => {
                    VrrpCounters::bump(&self.counters.vip_errors);
                    tracing::error!(limit_ms = NETLINK_LIMIT.as_millis() as u64, "vrrp: adding the vip got no answer from netlink in time");
                }
            },
            Action::RemoveVip => self.remove_vip("vrrp: could not remove the vip").await,
            Action::SendGarp { count } => self.send_garps(count),
            Action::StateChanged { from, to } => {
                VrrpCounters::bump(&self.counters.transitions[to.index()]);
                tracing::info!(
                    from = from.as_str(),
                    to = to.as_str(),
                    vip = %self.machine.params().vip,
                    priority = self.machine.priority(),
                    "vrrp: state changed"
                );
                if (from == VrrpState::Master) != (to == VrrpState::Master) {
                    return Some(VrrpEvent::Role { master: to == VrrpState::Master });
                }
            }
            Action::Discarded { src, reason } => {
                VrrpCounters::bump(&self.counters.discarded[reason.index()]);
                if matches!(reason, DiscardReason::NotAPeer | DiscardReason::BadInterval | DiscardReason::Unconfirmed) {
                    tracing::debug!(%src, reason = reason.as_str(), "vrrp: advert not believed (counted in pglb_vrrp_adverts_dropped_total)");
                } else {
                    tracing::debug!(%src, reason = reason.as_str(), "vrrp: advert ignored");
                }
            }
        }
        None
    }

    async fn remove_vip(&mut self, what: &str) {
        let result = match tokio::time::timeout(NETLINK_LIMIT, self.vip.remove()).await {
            Ok(r) => r.map_err(|e| crate::error_chain(&e)),
            Err(_) => Err(format!("no answer from netlink within {} ms", NETLINK_LIMIT.as_millis())),
        };
        if let Err(e) = result {
            VrrpCounters::bump(&self.counters.vip_errors);
            tracing::error!(error = %e, "{what}");
        }
    }

    /// Sends events to the subscriber, if any; never waits (a full queue drops and counts).
    fn emit(&self, events: Vec<VrrpEvent>) {
        let Some(tx) = &self.events else { return };
        for event in events {
            if tx.try_send(event).is_err() {
                VrrpCounters::bump(&self.counters.events_dropped);
                tracing::warn!(?event, "vrrp: the subscriber did not keep up with vrrp events; one dropped");
            }
        }
    }

    /// Two adverts at our priority announcing `interval` (see [`VrrpCommand::RestartHold`]).
    fn send_hold(&self, interval: Duration) {
        let mut advert = self.machine.advert(self.machine.priority());
        advert.max_advert_int_cs = u16::try_from(interval.as_millis() / 10).unwrap_or(u16::MAX).min(packet::MAX_ADVERT_INT_CS);
        let params = self.machine.params();
        let destinations: &[Ipv4Addr] = if params.unicast_peers.is_empty() { &[VRRP_GROUP] } else { &params.unicast_peers };
        for _ in 0..2 {
            for &dst in destinations {
                match self.sock.send(&advert.encode(params.own_address, dst), dst) {
                    Ok(()) => VrrpCounters::bump(&self.counters.adverts_sent),
                    Err(e) => {
                        VrrpCounters::bump(&self.counters.send_errors);
                        tracing::error!(error = %e, %dst, "vrrp: the restart-hold advert could not be sent: a backup may take the VIP");
                    }
                }
            }
        }
        tracing::info!(interval_ms = interval.as_millis() as u64, "vrrp: announced a restart hold to the backups");
    }

    fn send_advert(&self, priority: u8) {
        let advert = self.machine.advert(priority);
        let params = self.machine.params();
        let destinations: &[Ipv4Addr] =
            if params.unicast_peers.is_empty() { &[VRRP_GROUP] } else { &params.unicast_peers };
        for &dst in destinations {
            let msg = advert.encode(params.own_address, dst);
            match self.sock.send(&msg, dst) {
                Ok(()) => VrrpCounters::bump(&self.counters.adverts_sent),
                Err(e) => {
                    VrrpCounters::bump(&self.counters.send_errors);
                    tracing::warn!(error = %e, %dst, "vrrp: advert send failed");
                }
            }
        }
    }

    fn send_garps(&self, count: u8) {
        let vip = self.machine.params().vip;
        for _ in 0..count {
            for kind in [GarpKind::Request, GarpKind::Reply] {
                match self.garp.send(&garp::frame(kind, self.mac, vip)) {
                    Ok(()) => VrrpCounters::bump(&self.counters.garps_sent),
                    Err(e) => {
                        VrrpCounters::bump(&self.counters.send_errors);
                        tracing::warn!(error = %e, "vrrp: gratuitous arp send failed");
                    }
                }
            }
        }
    }

    fn publish(&self) {
        let machine = &self.machine;
        let state = machine.state();
        let status = VrrpStatus {
            state,
            master: state == VrrpState::Master,
            priority: machine.priority(),
            master_address: machine.master_address(),
            peers_heard: machine.peers().map(|(a, p)| (a, p.last_heard)).collect(),
            peer_priorities: machine.peers().map(|(a, p)| (a, p.priority)).collect(),
            as_of: self.now(),
            master_down_interval: machine.master_down_interval(),
        };
        self.status.send_replace(status);
    }
}

impl VrrpHandle {
    /// A receiver of the runner's status.
    pub fn status(&self) -> watch::Receiver<VrrpStatus> {
        self.status.clone()
    }

    /// The runner's counters.
    pub fn counters(&self) -> Arc<VrrpCounters> {
        Arc::clone(&self.counters)
    }

    /// Tells the machine that tracking changed our priority (never waits: the command queue
    /// holds 16, and priority changes are rare).
    pub fn set_priority(&self, priority: u8) -> Result<(), VipError> {
        self.commands.try_send(VrrpCommand::SetPriority(priority)).map_err(|_| VipError::Stopped)
    }

    /// Stops for a restart in place (see [`VrrpCommand::RestartHold`]) and waits for the task.
    pub async fn restart_hold(self, interval: Duration) -> Result<(), VipError> {
        let _ = self.commands.send(VrrpCommand::RestartHold { interval }).await;
        self.task.await.map_err(|source| VipError::Join { source })?
    }

    /// Stops gracefully (a master drops the VIP, then sends priority 0) and waits for the task.
    pub async fn shutdown(self) -> Result<(), VipError> {
        // A runner that already ended still reports how through its task.
        let _ = self.commands.send(VrrpCommand::Shutdown).await;
        self.task.await.map_err(|source| VipError::Join { source })?
    }

    /// Stops the task without the graceful steps, as a crash would: the VIP stays on the
    /// interface until the next start of a runner removes it.
    pub fn abort(self) {
        self.task.abort();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_heard_within_counts_the_window() {
        let status = VrrpStatus {
            peers_heard: vec![
                (Ipv4Addr::new(192, 0, 2, 1), Duration::from_secs(1)),
                (Ipv4Addr::new(192, 0, 2, 2), Duration::from_secs(9)),
            ],
            ..VrrpStatus::initial(100)
        };
        assert_eq!(status.peers_heard_within(Duration::from_secs(10), Duration::from_secs(3)), 1);
        assert_eq!(status.peers_heard_within(Duration::from_secs(10), Duration::from_secs(9)), 2);
        assert_eq!(status.peers_heard_within(Duration::from_secs(100), Duration::from_secs(3)), 0);
    }

    #[test]
    fn counters_index_every_reason_and_state() {
        let c = VrrpCounters::default();
        for r in DropReason::ALL {
            VrrpCounters::bump(&c.dropped[r.index()]);
        }
        for r in DiscardReason::ALL {
            VrrpCounters::bump(&c.discarded[r.index()]);
        }
        for s in VrrpState::ALL {
            VrrpCounters::bump(&c.transitions[s.index()]);
        }
        assert!(DropReason::ALL.iter().all(|r| c.dropped(*r) == 1));
        assert!(DiscardReason::ALL.iter().all(|r| c.discarded(*r) == 1));
        assert!(VrrpState::ALL.iter().all(|s| c.transitions_to(*s) == 1));
    }
}
