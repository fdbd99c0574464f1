//! `a.b.c.d/len`: the VIP's and the interface address's notation, and the subnet arithmetic
//! the validation needs (network, broadcast, membership).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::Deserialize;

/// An IPv4 address with a prefix length, written `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then_some(Ipv4Cidr { addr, prefix_len })
    }
    pub fn mask(&self) -> u32 {
        if self.prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix_len)) }
    }
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    /// Whether `ip` lies in this address's subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
    /// Whether the address is usable by a host (not the network or broadcast address; /31 and
    /// /32 have neither).
    pub fn is_host_address(&self) -> bool {
        self.prefix_len >= 31 || (self.addr != self.network() && self.addr != self.broadcast())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a string is not `a.b.c.d/len`.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not an IPv4 address with a prefix length (like 172.20.0.100/16)")]
pub struct CidrParseError {
    pub value: String,
}

impl FromStr for Ipv4Cidr {
    type Err = CidrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrParseError { value: s.to_owned() };
        let (addr, len) = s.split_once('/').ok_or_else(err)?;
        let addr = addr.parse::<Ipv4Addr>().map_err(|_| err())?;
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let len = len.parse::<u8>().map_err(|_| err())?;
        Ipv4Cidr::new(addr, len).ok_or_else(err)
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = CidrParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}
