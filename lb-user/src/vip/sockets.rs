//! The sockets VRRP needs: the raw IPv4 socket for protocol 112 (adverts in and out, sent from
//! our own address with IP_PKTINFO) and the `AF_PACKET` socket gratuitous ARPs go out of.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::garp;
use super::error::VipError;
use super::packet::{IPPROTO_VRRP, VRRP_GROUP, VRRP_TTL};
use super::vrrp::VrrpParams;

/// The raw IPv4 socket for protocol 112 on one interface.
pub(super) struct VrrpSocket {
    fd: AsyncFd<Socket>,
    ifindex: u32,
    own_address: Ipv4Addr,
}

impl VrrpSocket {
    pub(super) fn open(params: &VrrpParams, ifindex: u32) -> Result<Self, VipError> {
        let err = |op: &'static str| {
            let interface = params.interface.clone();
            move |source| VipError::VrrpSocket { op, interface, source }
        };
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(i32::from(IPPROTO_VRRP))))
            .map_err(err("open a raw socket for ip protocol 112 (needs CAP_NET_RAW)"))?;
        sock.set_header_included_v4(false).map_err(err("clear IP_HDRINCL"))?;
        sock.set_ttl_v4(u32::from(VRRP_TTL)).map_err(err("set IP_TTL 255"))?;
        sock.set_multicast_ttl_v4(u32::from(VRRP_TTL)).map_err(err("set IP_MULTICAST_TTL 255"))?;
        sock.set_multicast_loop_v4(false).map_err(err("clear IP_MULTICAST_LOOP"))?;
        sock.set_multicast_if_v4(&params.own_address).map_err(err("set IP_MULTICAST_IF"))?;
        sock.bind_device(Some(params.interface.as_bytes())).map_err(err("bind to the interface"))?;
        sock.join_multicast_v4_n(&VRRP_GROUP, &InterfaceIndexOrAddress::Index(ifindex))
            .map_err(err("join 224.0.0.18"))?;
        sock.set_nonblocking(true).map_err(err("set non-blocking"))?;
        // SAFETY: `sock` owns its descriptor, which stays open and unchanged until the AsyncFd
        // (which owns `sock`) is dropped.
        let fd = unsafe { AsyncFd::register(sock) }.map_err(|e| err("register with tokio")(io::Error::from(e)))?;
        Ok(VrrpSocket { fd, ifindex, own_address: params.own_address })
    }

    /// Reads one datagram (IP header included, as raw IPv4 sockets deliver it; its TTL is
    /// checked by `packet::parse_ipv4`).
    pub(super) async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().read(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one VRRP message to `dst` from our own address out of our interface (IP_PKTINFO,
    /// so the VIP is never chosen as the source).
    pub(super) fn send(&self, msg: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        #[repr(C)]
        struct PktInfoCmsg {
            hdr: libc::cmsghdr,
            info: libc::in_pktinfo,
        }
        let ifindex = i32::try_from(self.ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: cmsghdr and in_pktinfo are plain C structs for which all-zero is valid.
        let mut cmsg: PktInfoCmsg = unsafe { std::mem::zeroed() };
        let info_len = u32::try_from(size_of::<libc::in_pktinfo>()).unwrap_or(u32::MAX);
        // SAFETY: CMSG_LEN and CMSG_SPACE only do alignment arithmetic on their argument.
        let (cmsg_len, cmsg_space) = unsafe { (libc::CMSG_LEN(info_len), libc::CMSG_SPACE(info_len)) };
        assert!(size_of::<PktInfoCmsg>() >= cmsg_space as usize, "control buffer too small for IP_PKTINFO");
        cmsg.hdr.cmsg_len = cmsg_len as _;
        cmsg.hdr.cmsg_level = libc::IPPROTO_IP;
        cmsg.hdr.cmsg_type = libc::IP_PKTINFO;
        cmsg.info.ipi_ifindex = ifindex;
        cmsg.info.ipi_spec_dst = libc::in_addr { s_addr: u32::from(self.own_address).to_be() };

        let dst_addr = socket2::SockAddr::from(SocketAddrV4::new(dst, 0));
        let mut iov = libc::iovec { iov_base: msg.as_ptr() as *mut libc::c_void, iov_len: msg.len() };
        // SAFETY: msghdr is a plain C struct for which all-zero is valid.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_name = dst_addr.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = dst_addr.len();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = (&mut cmsg as *mut PktInfoCmsg).cast();
        hdr.msg_controllen = cmsg_space as _;
        // SAFETY: every pointer in `hdr` (destination address, one iovec over `msg`, the control
        // buffer of CMSG_SPACE bytes) points to memory that lives until sendmsg returns, and the
        // kernel only reads from them.
        let sent = unsafe { libc::sendmsg(self.fd.get_ref().as_raw_fd(), &hdr, libc::MSG_DONTWAIT) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// An `AF_PACKET` socket that only sends (protocol 0: it receives nothing).
pub(super) struct GarpSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl GarpSocket {
    pub(super) fn open(interface: &str, ifindex: u32) -> Result<Self, VipError> {
        // SAFETY: socket() has no memory preconditions; the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
        if raw < 0 {
            return Err(VipError::GarpSocket { interface: interface.to_owned(), source: io::Error::last_os_error() });
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(GarpSocket { fd, ifindex })
    }

    /// Sends one whole Ethernet frame to the broadcast address.
    pub(super) fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is a plain C struct for which all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = garp::ETH_P_ARP.to_be();
        addr.sll_ifindex = i32::try_from(self.ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&garp::BROADCAST);
        // SAFETY: `frame` and `addr` are valid for the given lengths for the duration of the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
