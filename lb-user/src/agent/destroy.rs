//! Closing the sockets still connected to a writer that is no longer routed: the kernel's
//! socket-destroy operation (`SOCK_DESTROY` over `NETLINK_SOCK_DIAG`, kernel built with
//! `CONFIG_INET_DIAG_DESTROY`), in the agent's network namespace.
//!
//! A dump of the namespace's TCP sockets (`SOCK_DIAG_BY_FAMILY`) finds those whose peer is the
//! address; each is then destroyed by its full id (addresses, ports, interface, cookie), with
//! the crate's `SockDiagDestroy` wrapper (the same request body, message type `SOCK_DESTROY`).
//! The kernel aborts such a socket as a RST would (`ECONNABORTED` to its owner) without sending
//! anything: the application sees its connection fail at once and reconnects, through the agent
//! to the new writer. Needs `CAP_NET_ADMIN`.

use std::net::{IpAddr, SocketAddrV4};

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::{
    SockDiagDestroy, SockDiagMessage,
    constants::{AF_INET, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DestroyError {
    #[error("cannot open a NETLINK_SOCK_DIAG socket")]
    Open(#[source] std::io::Error),
    #[error("cannot {what} on the sock_diag socket")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode a sock_diag answer: {message}")]
    Decode { message: String },
    #[error("the kernel refused to list sockets (errno {errno})")]
    Dump { errno: i32 },
}

/// Every TCP socket state a connection to a server can be in (not LISTEN, not TIME_WAIT).
fn connected_states() -> StateFlags {
    StateFlags::ESTABLISHED
        | StateFlags::SYN_SENT
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::CLOSE_WAIT
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
}

/// What one call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Destroyed {
    /// Sockets connected to the address.
    pub found: usize,
    /// Of those, destroyed.
    pub destroyed: usize,
    /// The first refusal's errno (ENOENT: closed meanwhile; EOPNOTSUPP: a kernel without
    /// CONFIG_INET_DIAG_DESTROY), if any.
    pub first_errno: Option<i32>,
}

/// Destroys every TCP socket of this network namespace whose peer is `peer`.
pub fn destroy_connected_to(peer: SocketAddrV4) -> Result<Destroyed, DestroyError> {
    destroy_where(|id| peer_of(id) == Some(peer))
}

/// Destroys every connected TCP socket of this network namespace that `pick` selects.
pub fn destroy_where(pick: impl Fn(&SocketId) -> bool) -> Result<Destroyed, DestroyError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DestroyError::Open)?;
    socket.bind_auto().map_err(|source| DestroyError::Io { what: "bind", source })?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(|source| DestroyError::Io { what: "connect", source })?;
    let ids: Vec<SocketId> = dump(&mut socket)?.into_iter().filter(|id| pick(id)).collect();
    let mut done = Destroyed { found: ids.len(), ..Destroyed::default() };
    for id in ids {
        match destroy(&mut socket, id)? {
            None => done.destroyed += 1,
            Some(errno) => {
                done.first_errno.get_or_insert(errno);
            }
        }
    }
    Ok(done)
}

/// The socket's peer, for an IPv4 socket.
pub fn peer_of(id: &SocketId) -> Option<SocketAddrV4> {
    match id.destination_address {
        IpAddr::V4(ip) => Some(SocketAddrV4::new(ip, id.destination_port)),
        IpAddr::V6(_) => None,
    }
}

/// The socket's cookie, as `bpf_get_socket_cookie` returns it (sock_diag gives it as two `u32`
/// in host order, the low half first).
pub fn cookie_of(id: &SocketId) -> u64 {
    let c = id.cookie;
    let low = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
    let high = u32::from_ne_bytes([c[4], c[5], c[6], c[7]]);
    u64::from(high) << 32 | u64::from(low)
}

fn request(socket_id: SocketId, states: StateFlags) -> SockDiagMessage {
    SockDiagMessage::InetRequest(InetRequest { family: AF_INET, protocol: IPPROTO_TCP, extensions: ExtensionFlags::empty(), states, socket_id })
}

fn send<T: netlink_packet_core::NetlinkSerializable + std::fmt::Debug>(socket: &mut Socket, mut packet: NetlinkMessage<T>) -> Result<(), DestroyError> {
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|source| DestroyError::Io { what: "send", source })?;
    Ok(())
}

/// The ids of the namespace's connected IPv4 TCP sockets.
fn dump(socket: &mut Socket) -> Result<Vec<SocketId>, DestroyError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    send(socket, NetlinkMessage::new(header, request(SocketId::new_v4(), connected_states()).into()))?;
    let mut ids = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut buf[..], 0).map_err(|source| DestroyError::Io { what: "receive", source })?;
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&buf[offset..size]).map_err(|e| DestroyError::Decode { message: e.to_string() })?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => ids.push(r.header.socket_id),
                NetlinkPayload::Done(_) => return Ok(ids),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(DestroyError::Dump { errno: -code.get() });
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// Destroys one socket; `Some(errno)` when the kernel refused.
fn destroy(socket: &mut Socket, id: SocketId) -> Result<Option<i32>, DestroyError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let message = SockDiagDestroy::new(request(id, StateFlags::all()));
    send(socket, NetlinkMessage::new(header, message.into()))?;
    let mut buf = vec![0u8; 4096];
    let size = socket.recv(&mut &mut buf[..], 0).map_err(|source| DestroyError::Io { what: "receive", source })?;
    let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&buf[..size]).map_err(|e| DestroyError::Decode { message: e.to_string() })?;
    Ok(match msg.payload {
        NetlinkPayload::Error(e) => e.code.map(|c| -c.get()),
        _ => None,
    })
}
