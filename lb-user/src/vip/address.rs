//! The VIP on the interface through rtnetlink (added, removed, the interface looked up), and the
//! VIP held without VRRP by a load balancer that is alone ([`StaticVip`]).

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;
use tokio::task::JoinHandle;

use super::garp::{self, GarpKind};
use super::error::VipError;
use super::sockets::GarpSocket;

/// Adds and removes the VIP on the interface through rtnetlink.
pub(super) struct VipAddress {
    pub(super) handle: rtnetlink::Handle,
    pub(super) ifindex: u32,
    pub(super) interface: String,
    pub(super) vip: Ipv4Addr,
    pub(super) prefix_len: u8,
}

impl VipAddress {
    pub(super) async fn add(&self) -> Result<(), VipError> {
        let request = self.handle.address().add(self.ifindex, IpAddr::V4(self.vip), self.prefix_len);
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(source) => Err(self.error("add", source)),
        }
    }

    pub(super) async fn remove(&self) -> Result<(), VipError> {
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.ifindex)
            .set_address_filter(IpAddr::V4(self.vip))
            .execute();
        let mut messages = Vec::new();
        while let Some(msg) = found.try_next().await.map_err(|source| self.error("remove", source))? {
            messages.push(msg);
        }
        for msg in messages {
            match self.handle.address().del(msg).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {}
                Err(source) => return Err(self.error("remove", source)),
            }
        }
        Ok(())
    }

    pub(super) fn error(&self, op: &'static str, source: rtnetlink::Error) -> VipError {
        VipError::Vip { op, vip: self.vip, interface: self.interface.clone(), source }
    }
}

/// Looks up the interface's index and Ethernet address.
pub(super) async fn lookup_link(handle: &rtnetlink::Handle, interface: &str) -> Result<(u32, [u8; 6]), VipError> {
    let mut links = handle.link().get().match_name(interface.to_owned()).execute();
    let link = match links.try_next().await {
        Ok(Some(link)) => link,
        Ok(None) => return Err(VipError::InterfaceNotFound { interface: interface.to_owned() }),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
            return Err(VipError::InterfaceNotFound { interface: interface.to_owned() });
        }
        Err(source) => return Err(VipError::LinkLookup { interface: interface.to_owned(), source }),
    };
    let mac = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        })
        .ok_or_else(|| VipError::NoEthernetAddress { interface: interface.to_owned() })?;
    Ok((link.header.index, mac))
}

/// The VIP held without VRRP, by the only load balancer (no `[vrrp]` section): added with
/// rtnetlink and announced with a burst of gratuitous ARPs, removed on [`StaticVip::release`].
pub struct StaticVip {
    vip: VipAddress,
    netlink_task: JoinHandle<()>,
}

/// Gratuitous ARPs (of each form) a [`StaticVip`] sends when it takes the VIP.
const STATIC_GARP_BURST: u8 = 3;

impl StaticVip {
    /// Adds `vip`/32 to `interface` (in this thread's network namespace) and announces it.
    pub async fn hold(interface: &str, vip: Ipv4Addr) -> Result<Self, VipError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| VipError::NetlinkOpen { source })?;
        let netlink_task = tokio::spawn(connection);
        let (ifindex, mac) = match lookup_link(&handle, interface).await {
            Ok(found) => found,
            Err(e) => {
                netlink_task.abort();
                return Err(e);
            }
        };
        let garp = GarpSocket::open(interface, ifindex)?;
        let address = VipAddress { handle, ifindex, interface: interface.to_owned(), vip, prefix_len: 32 };
        address.add().await?;
        for _ in 0..STATIC_GARP_BURST {
            for kind in [GarpKind::Request, GarpKind::Reply] {
                if let Err(e) = garp.send(&garp::frame(kind, mac, vip)) {
                    tracing::warn!(error = %e, "vip: gratuitous arp send failed");
                }
            }
        }
        Ok(StaticVip { vip: address, netlink_task })
    }

    /// Removes the VIP from the interface.
    pub async fn release(self) -> Result<(), VipError> {
        let result = self.vip.remove().await;
        self.netlink_task.abort();
        result
    }
}
