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
//!  Backup      down timer fires, not ready         (wait: take over once ready)      Backup
//!  Backup      Ready{ready} while the down timer   StateChanged, SendAdvert(P),      Master
//!              ran out                             AddVip, SendGarp(burst)
//!  Master      Ready{ready: false}                 StateChanged, RemoveVip,          Backup
//!                                                  SendAdvert(0)
//! ```
//!
//! # Trust (DESIGN.md, "Trust model")
//!
//! A source address is not an identity. Every advert carries a [`Vouch`] from the caller: a
//! plain VRRP peer (keepalived) is believed as RFC 9568 says; a pglb peer's advert is believed
//! only when that peer's fresh authenticated report confirms the priority it advertises
//! ([`Vouch::Confirmed`]), otherwise it is discarded ([`Vouch::Unconfirmed`]): a forged advert
//! can neither make a master step down nor keep a backup from taking over. Two more inputs come
//! from the instance that runs the machine ([`Event::Ready`]): whether its view is fresh enough
//! to hold the VIP (after a start, or a stall of its main loop, it is not until it has probed
//! again and heard its peers: a backup then waits, a master resigns), and whether it reaches the
//! writer itself.
//!
//! **Preemption** of a lower-priority master follows `preempt` and `preempt_delay` for plain
//! peers. For a pglb peer, with `preempt` off (the default, keepalived's `nopreempt`) a backup
//! takes over from a lower-priority master only when that master's report says it does not
//! reach the writer while this instance does: a returning load balancer never takes the VIP
//! from a healthy master (which would reset every connection that master forwards).
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
    /// The addresses adverts are accepted from (pglb and keepalived peers alike); empty =
    /// from any address. The daemon always lists its peers.
    pub peers: Vec<Ipv4Addr>,
    /// The longest Max_Adver_Int accepted from a peer, centiseconds (a larger one would make a
    /// backup wait minutes before it declares the master down).
    pub max_advert_interval_cs: u16,
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
    /// The longest accepted peer interval is outside 1–4095 centiseconds or below our own.
    #[error("the longest accepted peer advert interval must be {advert_interval_cs}-4095 centiseconds (at least our own), got {max_advert_interval_cs}")]
    MaxAdvertInterval {
        /// Our own interval.
        advert_interval_cs: u16,
        /// The configured bound.
        max_advert_interval_cs: u16,
    },
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
            peers: Vec::new(),
            max_advert_interval_cs: super::packet::MAX_ADVERT_INT_CS,
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
        if self.max_advert_interval_cs < self.advert_interval_cs || self.max_advert_interval_cs > super::packet::MAX_ADVERT_INT_CS {
            return Err(ParamsError::MaxAdvertInterval {
                advert_interval_cs: self.advert_interval_cs,
                max_advert_interval_cs: self.max_advert_interval_cs,
            });
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
        /// What the caller knows of the sender (see the module doc, "Trust").
        vouch: Vouch,
    },
    /// Whether this instance may hold the VIP (its view is fresh: after a start or a stall it
    /// probed again and heard its peers), and whether it reaches the writer itself.
    Ready {
        /// May be master.
        ready: bool,
        /// Reaches the writer (a pglb master that does not may be preempted; see "Trust").
        reaches_writer: bool,
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
    /// whether that report says it reaches the writer.
    Confirmed {
        /// The peer reaches the writer (a healthy master is not preempted).
        reaches_writer: bool,
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
    /// The down timer ran out while this instance was not ready: it takes over as soon as it
    /// is (unless a master is heard first).
    due: bool,
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
    /// Reaches the writer ([`Event::Ready`]).
    reaches_writer: bool,
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
        Vrrp { priority: params.priority, params, role: Role::Initialize, peers: BTreeMap::new(), ready: true, reaches_writer: true }
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
        if let Event::Ready { ready, reaches_writer } = event {
            return self.set_ready(ready, reaches_writer, now);
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

    fn set_ready(&mut self, ready: bool, reaches_writer: bool, now: Duration) -> Vec<Action> {
        self.reaches_writer = reaches_writer;
        if self.ready == ready {
            return Vec::new();
        }
        self.ready = ready;
        match &self.role {
            Role::Backup(b) if ready && b.due => self.become_master(now),
            Role::Master(_) if !ready => {
                let interval = self.params.advert_interval();
                self.role = Role::Backup(BackupRole {
                    master_adver_interval: interval,
                    master_down_at: now + master_down_interval(self.priority, interval),
                    since: now,
                    master: None,
                    due: false,
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
                // Not ready to hold the VIP: take over as soon as we are.
                backup.due = true;
                Vec::new()
            }
            Event::AdvertReceived { src, packet, vouch } => {
                if packet.priority == PRIORITY_LEAVING {
                    backup.master_down_at = now + skew_time(self.priority, backup.master_adver_interval);
                    backup.due = false;
                    return Vec::new();
                }
                let preempt_deferred = self
                    .params
                    .preempt_delay
                    .is_some_and(|delay| now < backup.since + delay);
                let by_config = self.params.preempt && !preempt_deferred;
                let may_preempt = match vouch {
                    Vouch::Plain | Vouch::Unconfirmed => by_config,
                    // nopreempt for pglb peers: only a master that lost the writer, and only by
                    // an instance that reaches it.
                    Vouch::Confirmed { reaches_writer } => by_config || (!reaches_writer && self.reaches_writer),
                };
                if packet.priority >= self.priority || !may_preempt {
                    backup.master_adver_interval = centiseconds(packet.max_advert_int_cs);
                    backup.master_down_at =
                        now + master_down_interval(self.priority, backup.master_adver_interval);
                    backup.master = Some(src);
                    backup.due = false;
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
mod tests {
    use super::*;

    const OWN: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 21);
    const LOWER: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 20);
    const HIGHER: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 22);
    const VIP: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 100);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn params(priority: u8) -> VrrpParams {
        VrrpParams::new("eth0", 51, priority, VIP, OWN)
    }

    fn advert_from(src: Ipv4Addr, priority: u8, interval_cs: u16) -> Event {
        vouched(src, priority, interval_cs, Vouch::Plain)
    }

    fn vouched(src: Ipv4Addr, priority: u8, interval_cs: u16, vouch: Vouch) -> Event {
        Event::AdvertReceived {
            src,
            packet: Advert { vrid: 51, priority, max_advert_int_cs: interval_cs, addresses: vec![VIP] },
            vouch,
        }
    }

    fn advert(priority: u8, interval_cs: u16) -> Event {
        advert_from(HIGHER, priority, interval_cs)
    }

    /// A machine started at t = 0 with `p`.
    fn backup_with(p: VrrpParams) -> Vrrp {
        let mut m = Vrrp::new(p);
        let actions = m.handle(Event::Startup, Duration::ZERO);
        assert_eq!(actions, vec![Action::StateChanged { from: VrrpState::Initialize, to: VrrpState::Backup }]);
        m
    }

    fn backup(priority: u8) -> Vrrp {
        backup_with(params(priority))
    }

    /// A machine that became master at its first down-timer expiry.
    fn master_with(p: VrrpParams) -> (Vrrp, Duration) {
        let mut m = backup_with(p);
        let at = m.next_deadline().expect("a backup has a down timer");
        let actions = m.handle(Event::TimerExpired, at);
        assert_eq!(m.state(), VrrpState::Master, "must be master after the down timer: {actions:?}");
        (m, at)
    }

    fn master(priority: u8) -> (Vrrp, Duration) {
        master_with(params(priority))
    }

    fn to_master(from: VrrpState, priority: u8, burst: u8) -> Vec<Action> {
        vec![
            Action::StateChanged { from, to: VrrpState::Master },
            Action::SendAdvert { priority },
            Action::AddVip,
            Action::SendGarp { count: burst },
        ]
    }

    #[test]
    fn skew_and_master_down_interval_follow_rfc_9568() {
        // (priority, Master_Adver_Interval, Skew_Time, Master_Down_Interval), worked out by hand:
        // skew = (256 - p) / 256 × interval.
        let table = [
            (100u8, secs(1), us(609_375), us(3_609_375)),
            (150, secs(1), us(414_062) + Duration::from_nanos(500), us(3_414_062) + Duration::from_nanos(500)),
            (254, secs(1), us(7_812) + Duration::from_nanos(500), us(3_007_812) + Duration::from_nanos(500)),
            (255, secs(1), us(3_906) + Duration::from_nanos(250), us(3_003_906) + Duration::from_nanos(250)),
            (100, Duration::from_millis(100), us(60_937) + Duration::from_nanos(500), us(360_937) + Duration::from_nanos(500)),
            (1, Duration::from_millis(500), us(498_046) + Duration::from_nanos(875), us(1_998_046) + Duration::from_nanos(875)),
        ];
        for (p, interval, skew, down) in table {
            assert_eq!(skew_time(p, interval), skew, "skew for priority {p} at {interval:?}");
            assert_eq!(master_down_interval(p, interval), down, "down interval for priority {p} at {interval:?}");
        }
    }

    #[test]
    fn params_validation_names_the_bad_field() {
        assert_eq!(params(100).validate(), Ok(()));
        let bad = [
            (VrrpParams { vrid: 0, ..params(100) }, ParamsError::Vrid),
            (VrrpParams { priority: 0, ..params(100) }, ParamsError::Priority),
            (VrrpParams { advert_interval_cs: 0, ..params(100) }, ParamsError::AdvertInterval { advert_interval_cs: 0 }),
            (
                VrrpParams { advert_interval_cs: 4096, ..params(100) },
                ParamsError::AdvertInterval { advert_interval_cs: 4096 },
            ),
            (VrrpParams { vip_prefix_len: 33, ..params(100) }, ParamsError::PrefixLen { prefix_len: 33 }),
            (
                VrrpParams { advert_interval_cs: 100, max_advert_interval_cs: 50, ..params(100) },
                ParamsError::MaxAdvertInterval { advert_interval_cs: 100, max_advert_interval_cs: 50 },
            ),
            (VrrpParams { vip: OWN, ..params(100) }, ParamsError::VipIsOwnAddress { vip: OWN }),
            (VrrpParams { interface: String::new(), ..params(100) }, ParamsError::Interface),
        ];
        for (p, want) in bad {
            assert_eq!(p.validate(), Err(want), "params {p:?}");
        }
    }

    #[test]
    fn initialize_goes_master_for_the_address_owner() {
        let mut m = Vrrp::new(params(255));
        let actions = m.handle(Event::Startup, secs(7));
        assert_eq!(actions, to_master(VrrpState::Initialize, 255, 5));
        assert_eq!(m.state(), VrrpState::Master);
        assert_eq!(m.next_deadline(), Some(secs(8)), "advert timer = now + advert interval");
        assert_eq!(m.master_address(), Some(OWN));
    }

    #[test]
    fn initialize_goes_backup_with_master_down_timer() {
        let mut m = Vrrp::new(params(100));
        assert_eq!(m.next_deadline(), None, "no timer before startup");
        let actions = m.handle(Event::Startup, secs(7));
        assert_eq!(actions, vec![Action::StateChanged { from: VrrpState::Initialize, to: VrrpState::Backup }]);
        assert_eq!(m.state(), VrrpState::Backup);
        assert_eq!(m.next_deadline(), Some(secs(7) + us(3_609_375)));
        assert_eq!(m.master_address(), None);
    }

    #[test]
    fn initialize_ignores_everything_but_startup() {
        let mut m = Vrrp::new(params(100));
        for event in [Event::TimerExpired, Event::Shutdown, advert(200, 100)] {
            assert_eq!(m.handle(event.clone(), secs(1)), vec![], "{event:?} in Initialize");
            assert_eq!(m.state(), VrrpState::Initialize);
        }
    }

    #[test]
    fn backup_becomes_master_when_the_down_timer_fires() {
        let mut m = backup(100);
        let deadline = us(3_609_375);
        assert_eq!(m.handle(Event::TimerExpired, deadline - Duration::from_nanos(1)), vec![], "early wake-up");
        assert_eq!(m.state(), VrrpState::Backup);
        assert_eq!(m.handle(Event::TimerExpired, deadline), to_master(VrrpState::Backup, 100, 5));
        assert_eq!(m.next_deadline(), Some(deadline + secs(1)));
    }

    #[test]
    fn backup_learns_the_masters_interval_for_its_timer() {
        let mut m = backup(100);
        // Master at priority 200 advertises every 50 cs: down = 1.5 s + 156/256 × 0.5 s.
        assert_eq!(m.handle(advert(200, 50), secs(1)), vec![]);
        assert_eq!(m.master_adver_interval(), Duration::from_millis(500));
        assert_eq!(m.next_deadline(), Some(secs(1) + us(1_804_687) + Duration::from_nanos(500)));
        assert_eq!(m.master_address(), Some(HIGHER));
        // A later advert at 2 s moves the timer again.
        assert_eq!(m.handle(advert(200, 200), secs(2)), vec![]);
        assert_eq!(m.next_deadline(), Some(secs(2) + secs(6) + us(1_218_750)));
    }

    #[test]
    fn backup_accepts_equal_priority_master() {
        let mut m = backup(100);
        assert_eq!(m.handle(advert_from(LOWER, 100, 100), secs(1)), vec![]);
        assert_eq!(m.next_deadline(), Some(secs(1) + us(3_609_375)), "equal priority resets the timer");
    }

    #[test]
    fn higher_priority_backup_preempts_a_lower_master() {
        let mut m = backup(150);
        let startup_deadline = m.next_deadline();
        assert_eq!(m.handle(advert(100, 100), secs(1)), vec![]);
        assert_eq!(m.next_deadline(), startup_deadline, "a lower-priority advert must not reset the timer");
        assert_eq!(m.handle(advert(100, 100), secs(2)), vec![]);
        assert_eq!(m.handle(advert(100, 100), secs(3)), vec![]);
        let at = startup_deadline.expect("down timer");
        assert_eq!(at, us(3_414_062) + Duration::from_nanos(500));
        assert_eq!(m.handle(Event::TimerExpired, at), to_master(VrrpState::Backup, 150, 5));
    }

    #[test]
    fn preempt_delay_defers_preemption_then_preempts() {
        let mut m = backup_with(VrrpParams { preempt_delay: Some(secs(5)), ..params(150) });
        for t in 1..=4 {
            assert_eq!(m.handle(advert(100, 100), secs(t)), vec![], "advert at {t} s");
            assert_eq!(m.next_deadline(), Some(secs(t) + us(3_414_062) + Duration::from_nanos(500)),
                "within the delay the lower master's advert at {t} s resets the timer");
        }
        // From 5 s on (since + delay) the lower master's adverts are discarded.
        assert_eq!(m.handle(advert(100, 100), secs(5)), vec![]);
        let at = secs(4) + us(3_414_062) + Duration::from_nanos(500);
        assert_eq!(m.next_deadline(), Some(at), "after the delay the timer is no longer reset");
        assert_eq!(m.handle(advert(100, 100), secs(6)), vec![]);
        assert_eq!(m.handle(Event::TimerExpired, at), to_master(VrrpState::Backup, 150, 5));
    }

    #[test]
    fn no_preemption_when_preempt_is_off() {
        let mut m = backup_with(VrrpParams { preempt: false, ..params(150) });
        for t in 1..=20 {
            assert_eq!(m.handle(advert(100, 100), secs(t)), vec![]);
            let deadline = m.next_deadline().expect("down timer");
            assert!(deadline > secs(t + 1), "timer keeps moving at {t} s");
            assert_eq!(m.handle(Event::TimerExpired, secs(t) + Duration::from_millis(999)), vec![]);
        }
        assert_eq!(m.state(), VrrpState::Backup, "preempt=false must never take over from a live master");
    }

    #[test]
    fn priority_zero_in_backup_sets_the_timer_to_skew_time() {
        let mut m = backup(100);
        assert_eq!(m.handle(advert(200, 100), secs(1)), vec![]);
        assert_eq!(m.handle(advert(0, 100), secs(2)), vec![]);
        assert_eq!(m.next_deadline(), Some(secs(2) + us(609_375)), "Skew_Time after priority 0");
        assert_eq!(m.peers().count(), 0, "a leaving peer is forgotten");
        assert_eq!(m.handle(Event::TimerExpired, secs(2) + us(609_375)), to_master(VrrpState::Backup, 100, 5));
    }

    #[test]
    fn master_steps_down_for_a_higher_priority() {
        let (mut m, t) = master(100);
        let now = t + secs(1);
        assert_eq!(
            m.handle(advert(200, 50), now),
            vec![Action::StateChanged { from: VrrpState::Master, to: VrrpState::Backup }, Action::RemoveVip]
        );
        assert_eq!(m.state(), VrrpState::Backup);
        assert_eq!(m.master_adver_interval(), Duration::from_millis(500), "interval learned on step-down");
        assert_eq!(m.next_deadline(), Some(now + us(1_804_687) + Duration::from_nanos(500)));
        assert_eq!(m.master_address(), Some(HIGHER));
    }

    #[test]
    fn master_ignores_a_lower_priority() {
        let (mut m, t) = master(100);
        let deadline = m.next_deadline();
        assert_eq!(m.handle(advert(99, 100), t + us(1)), vec![]);
        assert_eq!(m.state(), VrrpState::Master);
        assert_eq!(m.next_deadline(), deadline, "a lower advert leaves the advert timer alone");
    }

    #[test]
    fn equal_priority_tie_goes_to_the_higher_address() {
        // We are 172.20.0.21: a peer at .22 with equal priority wins, a peer at .20 loses.
        let (mut m, t) = master(100);
        assert_eq!(m.handle(advert_from(LOWER, 100, 100), t + us(1)), vec![]);
        assert_eq!(m.state(), VrrpState::Master, "lower address loses the tie");
        assert_eq!(
            m.handle(advert_from(HIGHER, 100, 100), t + us(2)),
            vec![Action::StateChanged { from: VrrpState::Master, to: VrrpState::Backup }, Action::RemoveVip]
        );
        assert_eq!(m.state(), VrrpState::Backup, "higher address wins the tie");
    }

    #[test]
    fn master_answers_priority_zero_with_an_advert() {
        let (mut m, t) = master(100);
        let now = t + Duration::from_millis(300);
        assert_eq!(m.handle(advert(0, 100), now), vec![Action::SendAdvert { priority: 100 }]);
        assert_eq!(m.next_deadline(), Some(now + secs(1)), "advert timer reset");
        assert_eq!(m.state(), VrrpState::Master);
    }

    #[test]
    fn master_advertises_every_interval_and_refreshes_garp() {
        let (mut m, t) = master(100);
        for i in 1..10 {
            let now = t + secs(i);
            assert_eq!(m.next_deadline(), Some(now), "advert {i} due");
            assert_eq!(m.handle(Event::TimerExpired, now), vec![Action::SendAdvert { priority: 100 }], "tick {i}");
        }
        // At 10 s the advert and the GARP refresh are both due.
        let now = t + secs(10);
        assert_eq!(
            m.handle(Event::TimerExpired, now),
            vec![Action::SendAdvert { priority: 100 }, Action::SendGarp { count: 1 }]
        );
        assert_eq!(m.next_deadline(), Some(now + secs(1)));
    }

    #[test]
    fn garp_refresh_and_burst_can_be_turned_off() {
        let (mut m, t) = {
            let mut m = backup_with(VrrpParams { garp_burst: 0, garp_refresh: None, ..params(100) });
            let at = m.next_deadline().expect("down timer");
            assert_eq!(
                m.handle(Event::TimerExpired, at),
                vec![
                    Action::StateChanged { from: VrrpState::Backup, to: VrrpState::Master },
                    Action::SendAdvert { priority: 100 },
                    Action::AddVip,
                ]
            );
            (m, at)
        };
        for i in 1..=12 {
            assert_eq!(m.handle(Event::TimerExpired, t + secs(i)), vec![Action::SendAdvert { priority: 100 }]);
        }
    }

    #[test]
    fn graceful_shutdown_of_master_drops_vip_then_sends_priority_zero() {
        let (mut m, t) = master(100);
        assert_eq!(
            m.handle(Event::Shutdown, t + secs(1)),
            vec![
                Action::StateChanged { from: VrrpState::Master, to: VrrpState::Initialize },
                Action::RemoveVip,
                Action::SendAdvert { priority: 0 },
            ]
        );
        assert_eq!(m.state(), VrrpState::Initialize);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.advert(0).priority, 0);
    }

    #[test]
    fn shutdown_of_backup_just_stops() {
        let mut m = backup(100);
        assert_eq!(
            m.handle(Event::Shutdown, secs(1)),
            vec![Action::StateChanged { from: VrrpState::Backup, to: VrrpState::Initialize }]
        );
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.handle(Event::Startup, secs(2)), vec![Action::StateChanged {
            from: VrrpState::Initialize,
            to: VrrpState::Backup
        }], "a stopped instance can start again");
    }

    #[test]
    fn owner_discards_adverts_and_stays_master() {
        let mut m = Vrrp::new(params(255));
        m.handle(Event::Startup, Duration::ZERO);
        for p in [0u8, 100, 255] {
            assert_eq!(
                m.handle(advert(p, 100), secs(1)),
                vec![Action::Discarded { src: HIGHER, reason: DiscardReason::LocalIsOwner }],
                "priority {p}"
            );
        }
        assert_eq!(m.state(), VrrpState::Master);
        assert_eq!(m.handle(Event::PriorityChanged { priority: 10 }, secs(2)), vec![], "owner is not tracked");
        assert_eq!(m.priority(), 255);
    }

    #[test]
    fn own_and_foreign_vrid_adverts_are_discarded() {
        let (mut m, t) = master(100);
        assert_eq!(
            m.handle(advert_from(OWN, 200, 100), t),
            vec![Action::Discarded { src: OWN, reason: DiscardReason::OwnAdvert }]
        );
        let foreign = Event::AdvertReceived {
            src: HIGHER,
            packet: Advert { vrid: 52, priority: 200, max_advert_int_cs: 100, addresses: vec![VIP] },
            vouch: Vouch::Plain,
        };
        assert_eq!(m.handle(foreign, t), vec![Action::Discarded { src: HIGHER, reason: DiscardReason::OtherVrid }]);
        assert_eq!(m.state(), VrrpState::Master);
        assert_eq!(m.peers().count(), 0, "discarded adverts are not peers");
    }

    /// lb1's view of the lab: peers lb2 (pglb) and a keepalived host, nopreempt.
    fn guarded(priority: u8) -> VrrpParams {
        VrrpParams { peers: vec![HIGHER, LOWER], preempt: false, max_advert_interval_cs: 200, ..params(priority) }
    }

    #[test]
    fn adverts_from_strangers_or_with_bad_intervals_are_discarded_in_every_state() {
        const STRANGER: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 50);
        let cases = [
            ("not a peer", vouched(STRANGER, 254, 10, Vouch::Plain), STRANGER, DiscardReason::NotAPeer),
            ("interval 0", vouched(HIGHER, 254, 0, Vouch::Plain), HIGHER, DiscardReason::BadInterval),
            ("interval past the bound", vouched(HIGHER, 254, 201, Vouch::Plain), HIGHER, DiscardReason::BadInterval),
            ("interval 4095", vouched(HIGHER, 254, 4095, Vouch::Plain), HIGHER, DiscardReason::BadInterval),
            ("unconfirmed pglb peer", vouched(HIGHER, 254, 10, Vouch::Unconfirmed), HIGHER, DiscardReason::Unconfirmed),
        ];
        for (what, event, src, reason) in cases {
            let (mut m, t) = master_with(guarded(150));
            assert_eq!(m.handle(event.clone(), t + us(1)), vec![Action::Discarded { src, reason }], "master: {what}");
            assert_eq!(m.state(), VrrpState::Master, "master keeps the VIP: {what}");
            assert_eq!(m.peers().count(), 0, "a discarded advert is no peer: {what}");
            let mut b = backup_with(guarded(100));
            let deadline = b.next_deadline();
            assert_eq!(b.handle(event, secs(1)), vec![Action::Discarded { src, reason }], "backup: {what}");
            assert_eq!(b.next_deadline(), deadline, "a discarded advert does not hold the backup off: {what}");
        }
    }

    #[test]
    fn a_confirmed_higher_advert_is_obeyed_an_unconfirmed_one_is_not() {
        let (mut m, t) = master_with(guarded(150));
        let forged = vouched(HIGHER, 254, 10, Vouch::Unconfirmed);
        for i in 1..=30 {
            m.handle(forged.clone(), t + Duration::from_millis(100 * i));
        }
        assert_eq!(m.state(), VrrpState::Master, "30 forged adverts at 254 move nothing");
        let real = vouched(HIGHER, 200, 10, Vouch::Confirmed { reaches_writer: true });
        assert_eq!(
            m.handle(real, t + secs(4)),
            vec![Action::StateChanged { from: VrrpState::Master, to: VrrpState::Backup }, Action::RemoveVip]
        );
    }

    #[test]
    fn an_unconfirmed_master_does_not_hold_a_backup_off() {
        // lb1 is dead; someone sends adverts with its address: lb2 takes over anyway.
        let mut b = backup_with(guarded(100));
        let at = b.next_deadline().expect("down timer");
        for i in 1..=3 {
            b.handle(vouched(HIGHER, 150, 10, Vouch::Unconfirmed), Duration::from_millis(100 * i));
        }
        assert_eq!(b.next_deadline(), Some(at), "the timer runs on");
        assert_eq!(b.handle(Event::TimerExpired, at), to_master(VrrpState::Backup, 100, 5));
    }

    #[test]
    fn nopreempt_keeps_a_returning_higher_priority_backup_off_a_healthy_master() {
        let mut b = backup_with(guarded(150));
        let healthy = vouched(LOWER, 100, 10, Vouch::Confirmed { reaches_writer: true });
        for i in 1..=50 {
            let now = Duration::from_millis(100 * i);
            assert_eq!(b.handle(healthy.clone(), now), vec![], "advert {i}");
            assert!(b.next_deadline().expect("timer") > now, "the timer is held off");
        }
        assert_eq!(b.state(), VrrpState::Backup, "a healthy master keeps the VIP");
        assert_eq!(b.master_address(), Some(LOWER));
        // The master loses the writer (its report says so) while we reach it: we take over.
        let lost = vouched(LOWER, 100, 10, Vouch::Confirmed { reaches_writer: false });
        let held = b.next_deadline().expect("timer");
        assert_eq!(b.handle(lost.clone(), secs(6)), vec![], "discarded: the timer runs out");
        assert_eq!(b.next_deadline(), Some(held));
        assert_eq!(b.handle(Event::TimerExpired, held), to_master(VrrpState::Backup, 150, 5));
        // ... but not when we do not reach it either.
        let mut c = backup_with(guarded(150));
        c.handle(Event::Ready { ready: true, reaches_writer: false }, Duration::ZERO);
        c.handle(lost.clone(), secs(1));
        assert_eq!(
            c.next_deadline(),
            Some(secs(1) + master_down_interval(150, Duration::from_millis(100))),
            "held off: neither of us reaches the writer"
        );
        // preempt = true keeps RFC 9568's preemption for pglb peers too.
        let mut d = backup_with(VrrpParams { preempt: true, ..guarded(150) });
        let at = d.next_deadline().expect("timer");
        d.handle(healthy, secs(1));
        assert_eq!(d.next_deadline(), Some(at), "preempt = true discards the lower master's advert");
    }

    #[test]
    fn a_backup_that_is_not_ready_waits_and_takes_over_once_ready() {
        let mut b = backup_with(guarded(150));
        assert_eq!(b.handle(Event::Ready { ready: false, reaches_writer: false }, Duration::ZERO), vec![]);
        let at = b.next_deadline().expect("down timer");
        assert_eq!(b.handle(Event::TimerExpired, at), vec![], "not ready: no takeover");
        assert_eq!(b.state(), VrrpState::Backup);
        assert_eq!(b.next_deadline(), None, "waiting for readiness, not for a timer");
        assert_eq!(b.handle(Event::Ready { ready: true, reaches_writer: true }, at + secs(1)), to_master(VrrpState::Backup, 150, 5));
        // A master heard while waiting ends the wait.
        let mut c = backup_with(guarded(150));
        c.handle(Event::Ready { ready: false, reaches_writer: false }, Duration::ZERO);
        let at = c.next_deadline().expect("down timer");
        c.handle(Event::TimerExpired, at);
        c.handle(vouched(HIGHER, 200, 10, Vouch::Confirmed { reaches_writer: true }), at + us(1));
        assert_eq!(c.handle(Event::Ready { ready: true, reaches_writer: true }, at + us(2)), vec![], "a master is heard");
        assert_eq!(c.state(), VrrpState::Backup);
    }

    #[test]
    fn a_master_that_is_no_longer_ready_resigns() {
        let (mut m, t) = master_with(guarded(150));
        assert_eq!(
            m.handle(Event::Ready { ready: false, reaches_writer: true }, t + us(1)),
            vec![
                Action::StateChanged { from: VrrpState::Master, to: VrrpState::Backup },
                Action::RemoveVip,
                Action::SendAdvert { priority: PRIORITY_LEAVING },
            ]
        );
        assert_eq!(m.state(), VrrpState::Backup);
        assert_eq!(m.handle(Event::Ready { ready: false, reaches_writer: true }, t + us(2)), vec![], "once");
    }

    #[test]
    fn tracking_lowers_master_priority_and_advertises_it() {
        let (mut m, t) = master(150);
        assert_eq!(m.handle(Event::PriorityChanged { priority: 50 }, t + us(5)), vec![Action::SendAdvert { priority: 50 }]);
        assert_eq!(m.next_deadline(), Some(t + us(5) + secs(1)));
        assert_eq!(m.handle(Event::PriorityChanged { priority: 50 }, t + us(6)), vec![], "no change, no advert");
        assert_eq!(m.handle(Event::PriorityChanged { priority: 0 }, t + us(7)), vec![Action::SendAdvert { priority: 1 }], "clamped to 1");
        assert_eq!(m.handle(Event::PriorityChanged { priority: 255 }, t + us(8)), vec![Action::SendAdvert { priority: 254 }], "clamped to 254");
        // A backup that gets tracked up does not act until the master's next advert.
        let mut b = backup(100);
        assert_eq!(b.handle(Event::PriorityChanged { priority: 120 }, secs(1)), vec![]);
        assert_eq!(b.priority(), 120);
    }

    #[test]
    fn peers_are_tracked_with_last_heard() {
        let mut m = backup(100);
        m.handle(advert_from(HIGHER, 200, 100), secs(1));
        m.handle(advert_from(LOWER, 50, 20), secs(2));
        m.handle(advert_from(HIGHER, 200, 100), secs(3));
        let peers: Vec<_> = m.peers().collect();
        assert_eq!(
            peers,
            vec![
                (LOWER, PeerInfo { last_heard: secs(2), priority: 50, advert_interval: Duration::from_millis(200) }),
                (HIGHER, PeerInfo { last_heard: secs(3), priority: 200, advert_interval: secs(1) }),
            ]
        );
    }

    /// Tier 3: two machines on a virtual clock with a seeded delivery delay, a crash, a restart
    /// and a graceful stop, stepping event by event with a bound.
    #[test]
    fn two_node_simulation_elects_one_master_through_faults() {
        struct Node {
            m: Vrrp,
            up: bool,
            holds_vip: bool,
        }
        const A: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 21);
        const B: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 22);
        let mk = |own, priority| Node {
            m: Vrrp::new(VrrpParams::new("eth0", 51, priority, VIP, own)),
            up: false,
            holds_vip: false,
        };
        let mut nodes = [mk(A, 150), mk(B, 100)];
        let mut seed: u64 = 0x5eed_1234;
        let mut jitter = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            Duration::from_micros((seed >> 33) % 2_000) // 0–2 ms link delay
        };
        // In flight: (arrival, to, from, advert).
        let mut wire: Vec<(Duration, usize, usize, Advert)> = Vec::new();
        let mut now = Duration::ZERO;
        let mut both_since: Option<Duration> = None;
        let mut longest_overlap = Duration::ZERO;
        let mut log: Vec<(Duration, usize, VrrpState)> = Vec::new();

        // Scripted faults: (time, node, event); None = crash (no events, VIP stays until restart).
        let script: Vec<(Duration, usize, Option<Event>)> = vec![
            (Duration::ZERO, 1, Some(Event::Startup)),
            (Duration::from_millis(500), 0, Some(Event::Startup)),
            (secs(20), 0, None),                       // crash A
            (secs(30), 0, Some(Event::Startup)),       // A back: preempts
            (secs(45), 0, Some(Event::Shutdown)),      // graceful stop of A
        ];
        let mut script = script.into_iter().peekable();
        let end = secs(60);
        for _step in 0..100_000 {
            let next_timer = nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.up)
                .filter_map(|(i, n)| n.m.next_deadline().map(|d| (d, i)))
                .min();
            let next_wire = wire.iter().map(|w| w.0).min();
            let next_script = script.peek().map(|s| s.0);
            let Some(t) = [next_timer.map(|x| x.0), next_wire, next_script].into_iter().flatten().min() else {
                break;
            };
            if t > end {
                break;
            }
            now = t;
            let mut fed: Vec<(usize, Vec<Action>)> = Vec::new();
            if next_script == Some(t) {
                let (_, i, ev) = script.next().expect("peeked");
                match ev {
                    None => {
                        nodes[i].up = false;
                        nodes[i].m = Vrrp::new(nodes[i].m.params().clone());
                    }
                    Some(ev) => {
                        if ev == Event::Startup {
                            nodes[i].up = true;
                            // A restarted runner removes a stale VIP before starting.
                            nodes[i].holds_vip = false;
                        }
                        let actions = nodes[i].m.handle(ev.clone(), now);
                        if ev == Event::Shutdown {
                            nodes[i].up = false;
                        }
                        fed.push((i, actions));
                    }
                }
            } else if next_wire == Some(t) {
                let pos = wire.iter().position(|w| w.0 == t).expect("due packet");
                let (_, to, from, advert) = wire.remove(pos);
                if nodes[to].up {
                    let src = nodes[from].m.params().own_address;
                    fed.push((to, nodes[to].m.handle(Event::AdvertReceived { src, packet: advert, vouch: Vouch::Plain }, now)));
                }
            } else if let Some((_, i)) = next_timer {
                fed.push((i, nodes[i].m.handle(Event::TimerExpired, now)));
            }
            for (i, actions) in fed {
                for a in actions {
                    match a {
                        Action::SendAdvert { priority } => {
                            let advert = nodes[i].m.advert(priority);
                            wire.push((now + jitter(), 1 - i, i, advert));
                        }
                        Action::AddVip => nodes[i].holds_vip = true,
                        Action::RemoveVip => nodes[i].holds_vip = false,
                        Action::StateChanged { to, .. } => log.push((now, i, to)),
                        Action::SendGarp { .. } | Action::Discarded { .. } => {}
                    }
                }
            }
            if nodes[0].holds_vip && nodes[1].holds_vip && nodes[0].up && nodes[1].up {
                let since = *both_since.get_or_insert(now);
                longest_overlap = longest_overlap.max(now - since);
            } else {
                both_since = None;
            }
        }
        assert!(now >= secs(59), "simulation must run to the end, stopped at {now:?}");
        let master_at = |t: Duration| {
            let mut state = [VrrpState::Initialize; 2];
            for (when, i, to) in &log {
                if *when <= t {
                    state[*i] = *to;
                }
            }
            state
        };
        assert_eq!(master_at(secs(10)), [VrrpState::Master, VrrpState::Backup], "A (150) wins the election");
        assert_eq!(master_at(secs(25))[1], VrrpState::Master, "B takes over after A crashes");
        let takeover = log
            .iter()
            .find(|(t, i, to)| *t > secs(20) && *i == 1 && *to == VrrpState::Master)
            .expect("B takeover")
            .0;
        assert!(takeover - secs(20) <= us(3_609_375) + secs(1), "crash takeover within Master_Down_Interval + one interval, took {:?}", takeover - secs(20));
        assert_eq!(master_at(secs(40)), [VrrpState::Master, VrrpState::Backup], "A preempts after restart");
        let handover = log
            .iter()
            .find(|(t, i, to)| *t > secs(45) && *i == 1 && *to == VrrpState::Master)
            .expect("B takeover after graceful stop")
            .0;
        assert!(handover - secs(45) <= us(609_375) + Duration::from_millis(3), "graceful takeover after Skew_Time, took {:?}", handover - secs(45));
        assert!(longest_overlap <= secs(1), "both held the VIP for {longest_overlap:?}");
    }
}
