//! Resetting a client whose write flow went stale, without waiting for its next packet.
//!
//! The XDP program resets a stale write flow when a packet of it arrives. A client waiting for
//! the answer of a hung (or unplugged) primary sends nothing, so it would only notice at its own
//! timeout. When the writer changes, the control plane sends such clients a RST itself: from
//! VIP:listener port, at the sequence number the client expects next (`Flow::client_next_seq`,
//! tracked by the XDP program on every backend segment), through a raw IPv4 socket. A RST whose
//! number is slightly off is answered by the client with a challenge ACK, which meets no flow in
//! the data plane and gets an exact RST there. (HAProxy's `on-marked-down shutdown-sessions`
//! does the same job for its proxied sessions.)

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
};

use lb_common::{
    FlowKey,
    csum::{fold, pseudo_header_sum, sum_fixed},
    tcp::{TCP_ACK, TCP_RST},
};
use socket2::{Domain, Protocol, Socket, Type};

const IPV4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const IPPROTO_TCP: u8 = 6;

/// Which RST a stale flow's client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rst {
    /// Past the handshake: `<SEQ=seq><CTL=RST>`, `seq` the number the client expects next.
    Established { seq: u32 },
    /// Still in SYN-SENT: `<SEQ=0><ACK=ack><CTL=RST,ACK>`, `ack` its ISN + 1 (RFC 9293: a RST in
    /// SYN-SENT counts when its ACK acknowledges the SYN).
    SynSent { ack: u32 },
}

/// A raw IPv4 socket (IP_HDRINCL) that sends whole RST datagrams.
pub(super) struct RstSocket {
    sock: Socket,
}

impl RstSocket {
    pub(super) fn open() -> io::Result<Self> {
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
        sock.set_header_included_v4(true)?;
        Ok(RstSocket { sock })
    }

    /// Sends the client of `key` a RST from the VIP and listener port.
    pub(super) fn send_rst(&self, key: &FlowKey, rst: Rst) -> io::Result<()> {
        let datagram = rst_datagram(key, rst);
        let dst = Ipv4Addr::from(lb_common::ip_from_map(key.client_addr));
        self.sock.send_to(&datagram, &SocketAddrV4::new(dst, 0).into()).map(drop)
    }
}

/// The IPv4 datagram of a RST from `key.vip:key.listener_port` to `key.client_addr:key.client_port`
/// (numbers in host order), no options, both checksums complete.
pub(super) fn rst_datagram(key: &FlowKey, rst: Rst) -> [u8; IPV4_HLEN + TCP_HLEN] {
    let (seq, ack, flags) = match rst {
        Rst::Established { seq } => (seq, 0, TCP_RST),
        Rst::SynSent { ack } => (0, ack, TCP_RST | TCP_ACK),
    };
    let mut ip = [0u8; IPV4_HLEN];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((IPV4_HLEN + TCP_HLEN) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = IPPROTO_TCP;
    ip[12..16].copy_from_slice(&key.vip.to_ne_bytes());
    ip[16..20].copy_from_slice(&key.client_addr.to_ne_bytes());
    let ip_check = !fold(sum_fixed(&ip, 0));
    ip[10..12].copy_from_slice(&ip_check.to_ne_bytes());
    let mut tcp = [0u8; TCP_HLEN];
    tcp[0..2].copy_from_slice(&key.listener_port.to_ne_bytes());
    tcp[2..4].copy_from_slice(&key.client_port.to_ne_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = (TCP_HLEN as u8 / 4) << 4;
    tcp[13] = flags;
    let tcp_check = !fold(sum_fixed(&tcp, pseudo_header_sum(key.vip, key.client_addr, TCP_HLEN as u16)));
    tcp[16..18].copy_from_slice(&tcp_check.to_ne_bytes());
    let mut out = [0u8; IPV4_HLEN + TCP_HLEN];
    out[..IPV4_HLEN].copy_from_slice(&ip);
    out[IPV4_HLEN..].copy_from_slice(&tcp);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{ip_to_map, port_to_map};

    /// The RST's bytes against a datagram written out by hand; the checksums were computed
    /// apart from lb-common (RFC 1071 over the 16-bit words listed in the comments: sum, fold
    /// the carries, complement).
    #[test]
    fn rst_bytes_are_exact() {
        let key = FlowKey {
            client_addr: ip_to_map([172, 20, 0, 50]),
            vip: ip_to_map([172, 20, 0, 100]),
            client_port: port_to_map(40000),
            listener_port: port_to_map(3000),
        };
        let d = rst_datagram(&key, Rst::Established { seq: 0x0102_0304 });
        // IP header words: 4500 0028 0000 4000 4006 [csum] ac14 0064 ac14 0032
        // sum 0x21dec -> 0x1dee -> complement 0xe211
        assert_eq!(d[..20], [0x45, 0, 0, 0x28, 0, 0, 0x40, 0, 64, 6, 0xe2, 0x11, 172, 20, 0, 100, 172, 20, 0, 50]);
        // TCP words: 0bb8 9c40 0102 0304 0000 0000 5004 0000 [csum] 0000, pseudo-header words
        // ac14 0064 ac14 0032 0006 0014: sum 0x254da -> 0x54dc -> complement 0xab23
        assert_eq!(d[20..], [0x0b, 0xb8, 0x9c, 0x40, 1, 2, 3, 4, 0, 0, 0, 0, 0x50, 0x04, 0, 0, 0xab, 0x23, 0, 0]);
        // SYN-SENT: TCP words 0bb8 9c40 0000 0000 0a0b 0c0d 5014 0000 [csum] 0000 + the same
        // pseudo-header: sum 0x266fc -> 0x66fe -> complement 0x9901.
        let d = rst_datagram(&key, Rst::SynSent { ack: 0x0a0b_0c0d });
        assert_eq!(d[20..], [0x0b, 0xb8, 0x9c, 0x40, 0, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d, 0x50, 0x14, 0, 0, 0x99, 0x01, 0, 0]);
    }
}
