//! The VRRPv3 state machine for one IPv4 virtual router (RFC 9568 §6), sans-IO: events and a
//! clock go in through [`Vrrp::handle`], [`Action`]s come out, and [`Vrrp::next_deadline`] says
//! when to call again with [`Event::TimerExpired`]. No clock reads, no I/O, no randomness.
//!
//! Times are [`Duration`]s on the caller's monotonic clock (any epoch). Intervals are
//! centiseconds on the wire and in [`VrrpParams`].
//!
//! ```text
//!   Skew_Time            = ((256 − Priority) × Master_Adver_Interval) / 256
//!   Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time
//! ```
//!
//! Master_Adver_Interval starts as our own advert interval and, in Backup, is learned from every
//! advert accepted from the master. Skew_Time uses our own (tracked) priority.
//!
//! # Transitions
//!
//! "adv" is a received advert that passed the packet checks; p is its priority, P ours, src its
//! IPv4 source and own our primary address. Actions are listed in the order they are emitted.
//!
//! ```text
//!  state       event                               actions                           next
//!  ----------  ----------------------------------  --------------------------------  ----------
//!  Initialize  Startup, P = 255                    StateChanged, SendAdvert(P),      Master
//!                                                  AddVip, SendGarp(burst)
//!  Initialize  Startup, P < 255                    StateChanged; down timer =        Backup
//!                                                  Master_Down_Interval
//!  Initialize  anything else                       —                                 Initialize
//!  Backup      down timer fires                    StateChanged, SendAdvert(P),      Master
//!                                                  AddVip, SendGarp(burst)
//!  Backup      adv p = 0                           down timer = Skew_Time            Backup
//!  Backup      adv p ≥ P, or preempt off, or       learn interval; down timer =      Backup
//!              within preempt_delay of entering    Master_Down_Interval
//!              Backup
//!  Backup      adv 0 < p < P, preempt on, delay    discard (the down timer runs out  Backup
//!              passed                              and we take over: preemption)
//!  Backup      Shutdown                            StateChanged                      Initialize
//!  Master      advert timer fires                  SendAdvert(P)                     Master
//!  Master      GARP refresh timer fires            SendGarp(1)                       Master
//!  Master      adv p = 0                           SendAdvert(P), advert timer reset Master
//!  Master      adv p > P, or p = P and src > own   StateChanged, RemoveVip; learn    Backup
//!                                                  interval; down timer =
//!                                                  Master_Down_Interval
//!  Master      adv p < P, or p = P and src < own   discard                           Master
//!  Master      PriorityChanged                     SendAdvert(new P)                 Master
//!  Master      Shutdown                            StateChanged, RemoveVip,          Initialize
//!                                                  SendAdvert(0)
//!  any         adv while P = 255 (owner)           Discarded(LocalIsOwner)           same
//!  any         adv from own address / other VRID   Discarded(OwnAdvert / OtherVrid)  same
//!  any         adv from an address not in `peers`  Discarded(NotAPeer)               same
//!  any         adv with Max_Adver_Int 0 or above   Discarded(BadInterval)            same
//!              `max_advert_interval_cs`
//!  any         adv a pglb peer's fresh report      Discarded(Unconfirmed)            same
//!              does not vouch for
//!  Backup      down timer fires, not ready         (wait for readiness)              Backup
//!  Backup      Ready{ready} changes                down timer = Master_Down_Interval Backup
//!                                                  from now
//!  Master      Ready{ready: false}                 StateChanged, RemoveVip,          Backup
//!                                                  SendAdvert(0)
//! ```
//!
//! # Trust (docs/ARCHITECTURE.md, "Trust model")
//!
//! A source address is not an identity. Every advert carries a [`Vouch`] from the caller: a
//! plain VRRP peer (keepalived) is believed as RFC 9568 says; a pglb peer's advert is believed
//! only when that peer's fresh authenticated report confirms the priority it advertises
//! ([`Vouch::Confirmed`]), otherwise it is discarded ([`Vouch::Unconfirmed`]): a forged advert
//! can neither make a master step down nor keep a backup from taking over. Two more inputs come
//! from the instance that runs the machine ([`Event::Ready`]): whether its view is fresh enough
//! to hold the VIP (after a start, or a stall of its main loop, it is not until it has probed
//! again and heard its peers: a backup then waits, a master resigns).
//!
//! **Preemption** of a lower-priority master follows `preempt` and `preempt_delay` for plain
//! peers. For a pglb peer, with `preempt` off (the default, keepalived's `nopreempt`) a backup
//! takes over from a lower-priority master only when that master's report says it is not
//! healthy — its tracking does not reach the writer, or it cannot write its state file (the
//! priorities, lowered by tracking, then decide as ever): a
//! returning load balancer never takes the VIP from a healthy master (which would reset every
//! connection that master forwards).
//!
//! Departures from the RFC text, all deliberate:
//! - `preempt_delay` (keepalived's option, not in the RFC): a backup that would preempt a
//!   lower-priority master keeps accepting its adverts until `preempt_delay` has passed since the
//!   backup entered Backup, so a restarted load balancer warms up before taking the VIP.
//! - On leaving Master the VIP is removed *before* the priority-0 advert is sent, so the two
//!   load balancers never hold the VIP at once in a clean handover.
//! - A master whose tracked priority changes advertises at once rather than at the next tick.
//! - Accept_Mode is implied: the VIP is a load balancer's service address, so the master always
//!   accepts traffic to it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::packet::Advert;

mod params;

pub use params::{ParamsError, VrrpParams};

/// Priority of the address owner; such a router is always master and ignores adverts.
pub const PRIORITY_OWNER: u8 = 255;
/// Priority a master sends when it leaves, so backups take over after Skew_Time.
pub const PRIORITY_LEAVING: u8 = 0;

/// The RFC's three states, as reported to the rest of the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VrrpState {
    /// Not started, or shut down.
    Initialize,
    /// Listening; takes over when the master goes silent.
    Backup,
    /// Holds the VIP and advertises.
    Master,
}

impl VrrpState {
    /// Every state (for metrics that list all labels).
    pub const ALL: [VrrpState; 3] = [VrrpState::Initialize, VrrpState::Backup, VrrpState::Master];

    /// A stable lowercase name, used as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            VrrpState::Initialize => "initialize",
            VrrpState::Backup => "backup",
            VrrpState::Master => "master",
        }
    }

    /// Index into [`VrrpState::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What happens to the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The instance starts (RFC "Startup").
    Startup,
    /// Graceful stop (RFC "Shutdown"): a master sends priority 0 and drops the VIP.
    Shutdown,
    /// An advert that passed the packet checks (see `packet::parse_ipv4`).
    AdvertReceived {
        /// IPv4 source: the sender's primary address.
        src: Ipv4Addr,
        /// The advert.
        packet: Advert,
        /// What the caller knows of the sender (see the module doc, "Trust").
        vouch: Vouch,
    },
    /// Whether this instance may hold the VIP (its view is fresh: after a start or a stall it
    /// probed again and heard its peers).
    Ready {
        /// May be master.
        ready: bool,
    },
    /// The caller's clock reached (or passed) [`Vrrp::next_deadline`].
    TimerExpired,
    /// Tracking changed our priority (clamped to 1–254; an owner's 255 is not tracked).
    PriorityChanged {
        /// The new priority.
        priority: u8,
    },
}

/// What the caller vouches for an advert's sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vouch {
    /// A plain VRRPv3 peer (keepalived), believed as the RFC says.
    Plain,
    /// A pglb peer whose fresh authenticated report confirms the advertised priority; and
    /// whether that report says it is healthy (it reaches the writer and can write its state).
    Confirmed {
        /// A healthy master is not preempted.
        healthy: bool,
    },
    /// A pglb peer's address, but no fresh report confirms it (forged, or the peer's reports
    /// do not arrive): not believed.
    Unconfirmed,
}

/// Why an advert that passed the packet checks was still ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiscardReason {
    /// We are the address owner (priority 255); RFC 9568 §7.1 says to discard.
    LocalIsOwner,
    /// Our own advert looped back.
    OwnAdvert,
    /// Another virtual router's advert reached the machine.
    OtherVrid,
    /// From an address that is not one of `peers`.
    NotAPeer,
    /// Max_Adver_Int 0 (not a valid interval) or above `max_advert_interval_cs`.
    BadInterval,
    /// A pglb peer's advert that no fresh authenticated report confirms.
    Unconfirmed,
}

impl DiscardReason {
    /// Every reason (for metrics that list all labels).
    pub const ALL: [DiscardReason; 6] = [
        DiscardReason::LocalIsOwner,
        DiscardReason::OwnAdvert,
        DiscardReason::OtherVrid,
        DiscardReason::NotAPeer,
        DiscardReason::BadInterval,
        DiscardReason::Unconfirmed,
    ];

    /// Index into [`DiscardReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name, used as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::LocalIsOwner => "local_is_owner",
            DiscardReason::OwnAdvert => "own_advert",
            DiscardReason::OtherVrid => "other_vrid",
            DiscardReason::NotAPeer => "not_a_peer",
            DiscardReason::BadInterval => "bad_interval",
            DiscardReason::Unconfirmed => "unconfirmed",
        }
    }
}

/// What the machine asks the outside world to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (build it with [`Vrrp::advert`]).
    SendAdvert {
        /// Priority to advertise: ours, or 0 when leaving.
        priority: u8,
    },
    /// Add the VIP to the interface.
    AddVip,
    /// Remove the VIP from the interface.
    RemoveVip,
    /// Send this many gratuitous ARPs for the VIP, back to back.
    SendGarp {
        /// How many frames.
        count: u8,
    },
    /// The state changed (for logs and metrics).
    StateChanged {
        /// Previous state.
        from: VrrpState,
        /// New state.
        to: VrrpState,
    },
    /// An advert was ignored (for logs and metrics).
    Discarded {
        /// Its source.
        src: Ipv4Addr,
        /// Why.
        reason: DiscardReason,
    },
}

/// A peer the machine has heard from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// When its last advert arrived, on the caller's clock.
    pub last_heard: Duration,
    /// The priority it last advertised.
    pub priority: u8,
    /// The interval it last advertised.
    pub advert_interval: Duration,
}

/// Backup's timers and what it learned of the master.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BackupRole {
    /// Interval learned from the master's adverts (ours until one is heard).
    master_adver_interval: Duration,
    /// Master_Down_Timer's deadline.
    master_down_at: Duration,
    /// When we entered Backup (for `preempt_delay`).
    since: Duration,
    /// Source of the last advert we accepted as the master's.
    master: Option<Ipv4Addr>,
    /// The down timer ran out while this instance was not ready: no timer to wait for until
    /// it is ready (which starts the down timer over).
    due: bool,
    /// The master said it is leaving (priority 0) and no advert came since: there is no master
    /// to wait a Master_Down_Interval for, so readiness starts the down timer at Skew_Time.
    master_left: bool,
}

/// Master's timers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MasterRole {
    /// Adver_Timer's deadline.
    adver_at: Duration,
    /// Next refresh gratuitous ARP, if refresh is on.
    garp_refresh_at: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    Initialize,
    Backup(BackupRole),
    Master(MasterRole),
}

/// One VRRPv3 virtual router.
#[derive(Clone, Debug)]
pub struct Vrrp {
    params: VrrpParams,
    /// Effective priority (tracking may lower it).
    priority: u8,
    role: Role,
    peers: BTreeMap<Ipv4Addr, PeerInfo>,
    /// May be master ([`Event::Ready`]); true until told otherwise.
    ready: bool,
}

/// Converts centiseconds to a [`Duration`].
pub fn centiseconds(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

/// Skew_Time for `priority` and a master advert interval.
pub fn skew_time(priority: u8, master_adver_interval: Duration) -> Duration {
    let nanos = (256 - u128::from(priority)) * master_adver_interval.as_nanos() / 256;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Master_Down_Interval for `priority` and a master advert interval.
pub fn master_down_interval(priority: u8, master_adver_interval: Duration) -> Duration {
    master_adver_interval * 3 + skew_time(priority, master_adver_interval)
}

impl Vrrp {
    /// A machine in Initialize. `params` should have passed [`VrrpParams::validate`].
    pub fn new(params: VrrpParams) -> Self {
        Vrrp { priority: params.priority, params, role: Role::Initialize, peers: BTreeMap::new(), ready: true }
    }

    /// The current state.
    pub fn state(&self) -> VrrpState {
        match self.role {
            Role::Initialize => VrrpState::Initialize,
            Role::Backup(_) => VrrpState::Backup,
            Role::Master(_) => VrrpState::Master,
        }
    }

    /// The effective priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Whether this instance may be master ([`Event::Ready`]).
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// The parameters this machine runs with.
    pub fn params(&self) -> &VrrpParams {
        &self.params
    }

    /// Who holds the VIP as far as we know: ourselves as master, the master we accept as
    /// backup, nobody otherwise.
    pub fn master_address(&self) -> Option<Ipv4Addr> {
        match &self.role {
            Role::Initialize => None,
            Role::Backup(b) => b.master,
            Role::Master(_) => Some(self.params.own_address),
        }
    }

    /// The Master_Adver_Interval in use: learned in Backup, ours otherwise.
    pub fn master_adver_interval(&self) -> Duration {
        match &self.role {
            Role::Backup(b) => b.master_adver_interval,
            _ => self.params.advert_interval(),
        }
    }

    /// Master_Down_Interval with the current priority and Master_Adver_Interval; also the window
    /// within which a peer counts as heard for quorum.
    pub fn master_down_interval(&self) -> Duration {
        master_down_interval(self.priority, self.master_adver_interval())
    }

    /// Peers heard from (a peer that sent priority 0 is forgotten), by address.
    pub fn peers(&self) -> impl Iterator<Item = (Ipv4Addr, PeerInfo)> + '_ {
        self.peers.iter().map(|(a, p)| (*a, *p))
    }

    /// The advert to send for a [`Action::SendAdvert`].
    pub fn advert(&self, priority: u8) -> Advert {
        Advert {
            vrid: self.params.vrid,
            priority,
            max_advert_int_cs: self.params.advert_interval_cs,
            addresses: vec![self.params.vip],
        }
    }

    /// When the caller must next deliver [`Event::TimerExpired`]; `None` = no timer runs.
    pub fn next_deadline(&self) -> Option<Duration> {
        match &self.role {
            Role::Initialize => None,
            Role::Backup(b) if b.due => None,
            Role::Backup(b) => Some(b.master_down_at),
            Role::Master(m) => Some(m.garp_refresh_at.map_or(m.adver_at, |g| g.min(m.adver_at))),
        }
    }

    /// Feeds one event at time `now`; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Duration) -> Vec<Action> {
        if let Event::AdvertReceived { src, packet, vouch } = &event
            && let Some(reason) = self.screen(*src, packet, *vouch, now)
        {
            return vec![Action::Discarded { src: *src, reason }];
        }
        if let Event::PriorityChanged { priority } = event {
            return self.change_priority(priority, now);
        }
        if let Event::Ready { ready } = event {
            return self.set_ready(ready, now);
        }
        match self.role {
            Role::Initialize => self.on_initialize(event, now),
            Role::Backup(_) => self.on_backup(event, now),
            Role::Master(_) => self.on_master(event, now),
        }
    }

    /// Checks common to every state, and peer bookkeeping. Returns a reason to ignore.
    fn screen(&mut self, src: Ipv4Addr, packet: &Advert, vouch: Vouch, now: Duration) -> Option<DiscardReason> {
        if src == self.params.own_address {
            return Some(DiscardReason::OwnAdvert);
        }
        if packet.vrid != self.params.vrid {
            return Some(DiscardReason::OtherVrid);
        }
        if !self.params.peers.is_empty() && !self.params.peers.contains(&src) {
            return Some(DiscardReason::NotAPeer);
        }
        if packet.max_advert_int_cs == 0 || packet.max_advert_int_cs > self.params.max_advert_interval_cs {
            return Some(DiscardReason::BadInterval);
        }
        if vouch == Vouch::Unconfirmed {
            return Some(DiscardReason::Unconfirmed);
        }
        if packet.priority == PRIORITY_LEAVING {
            self.peers.remove(&src);
        } else {
            self.peers.insert(
                src,
                PeerInfo {
                    last_heard: now,
                    priority: packet.priority,
                    advert_interval: centiseconds(packet.max_advert_int_cs),
                },
            );
        }
        (self.priority == PRIORITY_OWNER).then_some(DiscardReason::LocalIsOwner)
    }

    fn change_priority(&mut self, priority: u8, now: Duration) -> Vec<Action> {
        if self.params.priority == PRIORITY_OWNER {
            return Vec::new(); // the owner's priority is not tracked
        }
        let priority = priority.clamp(1, PRIORITY_OWNER - 1);
        if priority == self.priority {
            return Vec::new();
        }
        self.priority = priority;
        match &mut self.role {
            Role::Master(m) => {
                m.adver_at = now + self.params.advert_interval();
                vec![Action::SendAdvert { priority }]
            }
            Role::Initialize | Role::Backup(_) => Vec::new(),
        }
    }

    fn set_ready(&mut self, ready: bool, now: Duration) -> Vec<Action> {
        if self.ready == ready {
            return Vec::new();
        }
        self.ready = ready;
        match &mut self.role {
            // Ready or not, the down timer starts over: it may have run out while this instance
            // could not hear, or could not yet believe, the master's adverts (a stall; a start or
            // a cut of the reports: a pglb peer's adverts are believed only with a report that
            // answers ours, and the report that makes this instance ready comes before the next
            // advert it vouches for). A master is taken over only once it has been silent for a
            // whole Master_Down_Interval from now — or Skew_Time, when the master said it is
            // leaving (priority 0) and nothing was heard since: then there is no master to wait for.
            Role::Backup(b) => {
                b.due = false;
                let wait = if b.master_left {
                    skew_time(self.priority, b.master_adver_interval)
                } else {
                    master_down_interval(self.priority, b.master_adver_interval)
                };
                b.master_down_at = now + wait;
                Vec::new()
            }
            Role::Master(_) if !ready => {
                let interval = self.params.advert_interval();
                self.role = Role::Backup(BackupRole {
                    master_adver_interval: interval,
                    master_down_at: now + master_down_interval(self.priority, interval),
                    since: now,
                    master: None,
                    due: false,
                    master_left: false,
                });
                vec![
                    Action::StateChanged { from: VrrpState::Master, to: VrrpState::Backup },
                    Action::RemoveVip,
                    Action::SendAdvert { priority: PRIORITY_LEAVING },
                ]
            }
            _ => Vec::new(),
        }
    }

    fn on_initialize(&mut self, event: Event, now: Duration) -> Vec<Action> {
        match event {
            Event::Startup if self.priority == PRIORITY_OWNER && self.ready => self.become_master(now),
            Event::Startup => {
                let interval = self.params.advert_interval();
                self.role = Role::Backup(BackupRole {
                    master_adver_interval: interval,
                    master_down_at: now + master_down_interval(self.priority, interval),
                    since: now,
                    master: None,
                    due: false,
                    master_left: false,
                });
                vec![Action::StateChanged { from: VrrpState::Initialize, to: VrrpState::Backup }]
            }
            Event::Shutdown
            | Event::AdvertReceived { .. }
            | Event::TimerExpired
            | Event::PriorityChanged { .. }
            | Event::Ready { .. } => Vec::new(),
        }
    }

    fn on_backup(&mut self, event: Event, now: Duration) -> Vec<Action> {
        let Role::Backup(backup) = &mut self.role else {
            unreachable!("on_backup called in {:?}", self.state());
        };
        match event {
            Event::TimerExpired if now >= backup.master_down_at && !backup.due => {
                if self.ready {
                    return self.become_master(now);
                }
                // Not ready to hold the VIP: wait for readiness (the down timer starts over then).
                backup.due = true;
                Vec::new()
            }
            Event::AdvertReceived { src, packet, vouch } => {
                if packet.priority == PRIORITY_LEAVING {
                    backup.master_down_at = now + skew_time(self.priority, backup.master_adver_interval);
                    backup.due = false;
                    backup.master_left = true;
                    return Vec::new();
                }
                let preempt_deferred = self
                    .params
                    .preempt_delay
                    .is_some_and(|delay| now < backup.since + delay);
                let by_config = self.params.preempt && !preempt_deferred;
                let may_preempt = match vouch {
                    Vouch::Plain | Vouch::Unconfirmed => by_config,
                    // nopreempt for pglb peers: only a master that is not healthy.
                    Vouch::Confirmed { healthy } => by_config || !healthy,
                };
                if packet.priority >= self.priority || !may_preempt {
                    backup.master_adver_interval = centiseconds(packet.max_advert_int_cs);
                    backup.master_down_at =
                        now + master_down_interval(self.priority, backup.master_adver_interval);
                    backup.master = Some(src);
                    backup.due = false;
                    backup.master_left = false;
                }
                // Otherwise discard: the down timer runs out and we preempt.
                Vec::new()
            }
            Event::Shutdown => {
                self.role = Role::Initialize;
                vec![Action::StateChanged { from: VrrpState::Backup, to: VrrpState::Initialize }]
            }
            Event::TimerExpired | Event::Startup | Event::PriorityChanged { .. } | Event::Ready { .. } => Vec::new(),
        }
    }

    fn on_master(&mut self, event: Event, now: Duration) -> Vec<Action> {
        let Role::Master(master) = &mut self.role else {
            unreachable!("on_master called in {:?}", self.state());
        };
        match event {
            Event::TimerExpired => {
                let mut actions = Vec::new();
                if now >= master.adver_at {
                    master.adver_at = now + self.params.advert_interval();
                    actions.push(Action::SendAdvert { priority: self.priority });
                }
                if let (Some(at), Some(period)) = (master.garp_refresh_at, self.params.garp_refresh)
                    && now >= at
                {
                    master.garp_refresh_at = Some(now + period);
                    actions.push(Action::SendGarp { count: 1 });
                }
                actions
            }
            Event::AdvertReceived { src, packet, .. } => {
                if packet.priority == PRIORITY_LEAVING {
                    master.adver_at = now + self.params.advert_interval();
                    return vec![Action::SendAdvert { priority: self.priority }];
                }
                let wins = packet.priority > self.priority
                    || (packet.priority == self.priority && src > self.params.own_address);
                if !wins {
                    return Vec::new();
                }
                let interval = centiseconds(packet.max_advert_int_cs);
                self.role = Role::Backup(BackupRole {
                    master_adver_interval: interval,
                    master_down_at: now + master_down_interval(self.priority, interval),
                    since: now,
                    master: Some(src),
                    due: false,
                    master_left: false,
                });
                vec![
                    Action::StateChanged { from: VrrpState::Master, to: VrrpState::Backup },
                    Action::RemoveVip,
                ]
            }
            Event::Shutdown => {
                self.role = Role::Initialize;
                vec![
                    Action::StateChanged { from: VrrpState::Master, to: VrrpState::Initialize },
                    Action::RemoveVip,
                    Action::SendAdvert { priority: PRIORITY_LEAVING },
                ]
            }
            Event::Startup | Event::PriorityChanged { .. } | Event::Ready { .. } => Vec::new(),
        }
    }

    fn become_master(&mut self, now: Duration) -> Vec<Action> {
        let from = self.state();
        self.role = Role::Master(MasterRole {
            adver_at: now + self.params.advert_interval(),
            garp_refresh_at: self.params.garp_refresh.map(|period| now + period),
        });
        let mut actions = vec![
            Action::StateChanged { from, to: VrrpState::Master },
            Action::SendAdvert { priority: self.priority },
            Action::AddVip,
        ];
        if self.params.garp_burst > 0 {
            actions.push(Action::SendGarp { count: self.params.garp_burst });
        }
        actions
    }
}

#[cfg(test)]
mod tests;
