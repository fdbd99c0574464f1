//! The VIP side's one error type, [`VipError`]: what opening the sockets, looking up the
//! interface, adding or removing the VIP and running the VRRP runner can fail with. Its own file
//! so that the address, the sockets and the runner all import it from below.

use std::io;
use std::net::Ipv4Addr;

use super::vrrp::ParamsError;

/// Errors of the VIP runner.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// The parameters do not validate.
    #[error("invalid vrrp parameters")]
    Params(#[source] ParamsError),
    /// The interface does not exist in this network namespace.
    #[error("interface {interface} not found")]
    InterfaceNotFound {
        /// Its name.
        interface: String,
    },
    /// The interface has no 6-byte hardware address (not Ethernet-like).
    #[error("interface {interface} has no ethernet address")]
    NoEthernetAddress {
        /// Its name.
        interface: String,
    },
    /// Setting up the VRRP raw socket failed.
    #[error("could not {op} for the vrrp socket on {interface}")]
    VrrpSocket {
        /// What was attempted.
        op: &'static str,
        /// The interface.
        interface: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Setting up the gratuitous-ARP packet socket failed.
    #[error("could not open the gratuitous arp socket on {interface}")]
    GarpSocket {
        /// The interface.
        interface: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The netlink connection could not be opened.
    #[error("could not open a netlink connection")]
    NetlinkOpen {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Looking up the interface over netlink failed.
    #[error("could not look up interface {interface} over netlink")]
    LinkLookup {
        /// The interface.
        interface: String,
        /// The netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// Adding or removing the VIP failed.
    #[error("could not {op} vip {vip} on {interface}")]
    Vip {
        /// "add" or "remove".
        op: &'static str,
        /// The VIP.
        vip: Ipv4Addr,
        /// The interface.
        interface: String,
        /// The netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// The runner task is gone (it failed or was aborted).
    #[error("the vrrp runner is not running")]
    Stopped,
    /// The runner task panicked or was cancelled.
    #[error("the vrrp runner task ended abnormally")]
    Join {
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
}
