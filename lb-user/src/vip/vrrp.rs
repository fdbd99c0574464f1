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
//! ```
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

/// Priority of the address owner; such a router is always master and ignores adverts.
pub const PRIORITY_OWNER: u8 = 255;
/// Priority a master sends when it leaves, so backups take over after Skew_Time.
pub const PRIORITY_LEAVING: u8 = 0;

/// Everything a VRRP instance is configured with. The integrator maps pglb's config onto this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpParams {
    /// Interface the VRRP instance runs on and the VIP lives on, e.g. `eth0`.
    pub interface: String,
    /// Virtual router id, 1–255; must match the peers' (keepalived's `virtual_router_id`).
    pub vrid: u8,
    /// Our priority: 1–254, or 255 for the address owner.
    pub priority: u8,
    /// Advertisement interval in centiseconds, 1–4095 (100 = 1 s, keepalived's default).
    pub advert_interval_cs: u16,
    /// Whether a higher-priority backup takes over from a lower-priority master (RFC default
    /// true; keepalived's `nopreempt` is false).
    pub preempt: bool,
    /// Delay after entering Backup before preempting a lower-priority master; `None` = at once.
    pub preempt_delay: Option<Duration>,
    /// Send adverts to these peers by unicast instead of to 224.0.0.18; empty = multicast.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// The virtual IPv4 address.
    pub vip: Ipv4Addr,
    /// Prefix length the VIP is added with (keepalived adds /32 unless told otherwise).
    pub vip_prefix_len: u8,
    /// Our primary IPv4 address on `interface`: the adverts' source and the tie-breaker.
    pub own_address: Ipv4Addr,
    /// Gratuitous ARPs sent back to back on becoming master; 0 = none.
    pub garp_burst: u8,
    /// Period of a single refresh gratuitous ARP while master; `None` = no refresh.
    pub garp_refresh: Option<Duration>,
}

/// A [`VrrpParams`] that cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamsError {
    /// VRID 0 is reserved.
    #[error("vrid must be 1-255, got 0")]
    Vrid,
    /// Priority 0 is reserved for "leaving".
    #[error("priority must be 1-255, got 0")]
    Priority,
    /// The interval does not fit the 12-bit field.
    #[error("advert interval must be 1-4095 centiseconds, got {advert_interval_cs}")]
    AdvertInterval {
        /// The configured value.
        advert_interval_cs: u16,
    },
    /// Prefix length over 32.
    #[error("vip prefix length must be 1-32, got {prefix_len}")]
    PrefixLen {
        /// The configured value.
        prefix_len: u8,
    },
    /// The VIP equals our own address.
    #[error("vip {vip} must differ from the own address")]
    VipIsOwnAddress {
        /// The configured VIP.
        vip: Ipv4Addr,
    },
    /// Empty interface name.
    #[error("interface name must not be empty")]
    Interface,
}

impl VrrpParams {
    /// Parameters with pglb's defaults: 1 s adverts, preemption on without delay, multicast,
    /// VIP as /32, a burst of 5 gratuitous ARPs and a refresh every 10 s.
    pub fn new(interface: &str, vrid: u8, priority: u8, vip: Ipv4Addr, own_address: Ipv4Addr) -> Self {
        VrrpParams {
            interface: interface.to_owned(),
            vrid,
            priority,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay: None,
            unicast_peers: Vec::new(),
            vip,
            vip_prefix_len: 32,
            own_address,
            garp_burst: 5,
            garp_refresh: Some(Duration::from_secs(10)),
        }
    }

    /// Checks every field; run before anything is opened or changed.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.vrid == 0 {
            return Err(ParamsError::Vrid);
        }
        if self.priority == 0 {
            return Err(ParamsError::Priority);
        }
        if self.advert_interval_cs == 0 || self.advert_interval_cs > super::packet::MAX_ADVERT_INT_CS {
            return Err(ParamsError::AdvertInterval { advert_interval_cs: self.advert_interval_cs });
        }
        if self.vip_prefix_len == 0 || self.vip_prefix_len > 32 {
            return Err(ParamsError::PrefixLen { prefix_len: self.vip_prefix_len });
        }
        if self.vip == self.own_address {
            return Err(ParamsError::VipIsOwnAddress { vip: self.vip });
        }
        if self.interface.is_empty() {
            return Err(ParamsError::Interface);
        }
        Ok(())
    }

    /// Our advertisement interval.
    pub fn advert_interval(&self) -> Duration {
        centiseconds(self.advert_interval_cs)
    }
}

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
    },
    /// The caller's clock reached (or passed) [`Vrrp::next_deadline`].
    TimerExpired,
    /// Tracking changed our priority (clamped to 1–254; an owner's 255 is not tracked).
    PriorityChanged {
        /// The new priority.
        priority: u8,
    },
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
}

impl DiscardReason {
    /// A stable snake_case name, used as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::LocalIsOwner => "local_is_owner",
            DiscardReason::OwnAdvert => "own_advert",
            DiscardReason::OtherVrid => "other_vrid",
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
        Vrrp { priority: params.priority, params, role: Role::Initialize, peers: BTreeMap::new() }
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
            Role::Backup(b) => Some(b.master_down_at),
            Role::Master(m) => Some(m.garp_refresh_at.map_or(m.adver_at, |g| g.min(m.adver_at))),
        }
    }

    /// Feeds one event at time `now`; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Duration) -> Vec<Action> {
        if let Event::AdvertReceived { src, packet } = &event {
            if let Some(reason) = self.screen(*src, packet, now) {
                return vec![Action::Discarded { src: *src, reason }];
            }
        }
        if let Event::PriorityChanged { priority } = event {
            return self.change_priority(priority, now);
        }
        match self.role {
            Role::Initialize => self.on_initialize(event, now),
            Role::Backup(_) => self.on_backup(event, now),
            Role::Master(_) => self.on_master(event, now),
        }
    }

    /// Checks common to every state, and peer bookkeeping. Returns a reason to ignore.
    fn screen(&mut self, src: Ipv4Addr, packet: &Advert, now: Duration) -> Option<DiscardReason> {
        if src == self.params.own_address {
            return Some(DiscardReason::OwnAdvert);
        }
        if packet.vrid != self.params.vrid {
            return Some(DiscardReason::OtherVrid);
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

    fn on_initialize(&mut self, event: Event, now: Duration) -> Vec<Action> {
        match event {
            Event::Startup if self.priority == PRIORITY_OWNER => self.become_master(now),
            Event::Startup => {
                let interval = self.params.advert_interval();
                self.role = Role::Backup(BackupRole {
                    master_adver_interval: interval,
                    master_down_at: now + master_down_interval(self.priority, interval),
                    since: now,
                    master: None,
                });
                vec![Action::StateChanged { from: VrrpState::Initialize, to: VrrpState::Backup }]
            }
            Event::Shutdown
            | Event::AdvertReceived { .. }
            | Event::TimerExpired
            | Event::PriorityChanged { .. } => Vec::new(),
        }
    }

    fn on_backup(&mut self, event: Event, now: Duration) -> Vec<Action> {
        let Role::Backup(backup) = &mut self.role else {
            unreachable!("on_backup called in {:?}", self.state());
        };
        match event {
            Event::TimerExpired if now >= backup.master_down_at => self.become_master(now),
            Event::AdvertReceived { src, packet } => {
                if packet.priority == PRIORITY_LEAVING {
                    backup.master_down_at = now + skew_time(self.priority, backup.master_adver_interval);
                    return Vec::new();
                }
                let preempt_deferred = self
                    .params
                    .preempt_delay
                    .is_some_and(|delay| now < backup.since + delay);
                if !self.params.preempt || packet.priority >= self.priority || preempt_deferred {
                    backup.master_adver_interval = centiseconds(packet.max_advert_int_cs);
                    backup.master_down_at =
                        now + master_down_interval(self.priority, backup.master_adver_interval);
                    backup.master = Some(src);
                }
                // Otherwise discard: the down timer runs out and we preempt.
                Vec::new()
            }
            Event::Shutdown => {
                self.role = Role::Initialize;
                vec![Action::StateChanged { from: VrrpState::Backup, to: VrrpState::Initialize }]
            }
            Event::TimerExpired | Event::Startup | Event::PriorityChanged { .. } => Vec::new(),
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
                if let (Some(at), Some(period)) = (master.garp_refresh_at, self.params.garp_refresh) {
                    if now >= at {
                        master.garp_refresh_at = Some(now + period);
                        actions.push(Action::SendGarp { count: 1 });
                    }
                }
                actions
            }
            Event::AdvertReceived { src, packet } => {
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
            Event::Startup | Event::PriorityChanged { .. } => Vec::new(),
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
