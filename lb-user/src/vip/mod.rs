//! VIP ownership: VRRPv3 between pglb peers, gratuitous ARP, and the VIP address via netlink.
//!
//! - [`vrrp`]: the sans-IO VRRPv3 state machine (RFC 9568) with its transition table;
//! - [`packet`]: the advertisement on the wire, checksum and receive checks;
//! - [`garp`]: gratuitous ARP frames;
//! - [`io`]: the runner that drives the machine (from the daemon's main loop, or its own task);
//! - `sockets`: the VRRP raw socket and the gratuitous-ARP packet socket;
//! - `error`: [`VipError`], what all of them fail with;
//! - [`address`]: the VIP on the interface through rtnetlink, and [`address::StaticVip`];
//! - [`report`]: the peer reports (timeline floor, writer reached, role and priority) beside
//!   the adverts, authenticated and fresh;
//! - [`trust`]: what those reports make an advert worth (the VRRP machine's `Vouch`).

pub mod address;
mod error;
pub mod garp;
pub mod io;
pub mod packet;
pub mod report;
mod sockets;
pub mod trust;
pub mod vrrp;

pub use packet::{Advert, DropReason};
pub use error::VipError;
pub use io::{VrrpCommand, VrrpCounters, VrrpEvent, VrrpHandle, VrrpRunner, VrrpStatus};
pub use vrrp::{Action, Event, ParamsError, Vouch, Vrrp, VrrpParams, VrrpState};
