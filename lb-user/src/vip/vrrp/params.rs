//! What one VRRP instance is configured with, and its validation.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::centiseconds;

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
            max_advert_interval_cs: super::super::packet::MAX_ADVERT_INT_CS,
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
        if self.advert_interval_cs == 0 || self.advert_interval_cs > super::super::packet::MAX_ADVERT_INT_CS {
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
        if self.max_advert_interval_cs < self.advert_interval_cs || self.max_advert_interval_cs > super::super::packet::MAX_ADVERT_INT_CS {
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
