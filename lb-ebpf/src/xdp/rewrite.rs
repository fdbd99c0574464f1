//! Rewriting a packet in place towards the backend or the client (MACs, addresses, ports,
//! incremental checksums) and answering with a RST.

use super::*;

/// Look the next hop up as a packet sent from this host out of the ingress interface (one arm).
/// The kernel still requires IPv4 forwarding on the interface (else FWD_DISABLED); the control
/// plane turns it on when it attaches.
pub(crate) const BPF_FIB_LOOKUP_OUTPUT: u32 = 1 << 1;

pub(crate) const AF_INET: u8 = 2;

/// The Ethernet and option-less IPv4 headers as one unit, so that code touching both (the
/// rewrite) needs one bounds check for the 34 bytes. Alignment 2 (`EthHdr::ether_type` is a
/// `u16`), which the packet does not guarantee: never make a reference to it, only raw-pointer
/// field projections and unaligned copies.
#[repr(C)]
pub(crate) struct EthIpv4 {
    pub(crate) eth: EthHdr,
    pub(crate) ip: Ipv4Hdr,
}

/// The whole RST frame `reset_sender` writes: Ethernet, IPv4 and TCP headers, no options.
#[repr(C)]
pub(crate) struct RstFrame {
    pub(crate) eth: EthHdr,
    pub(crate) ip: Ipv4Hdr,
    pub(crate) tcp: TcpHdr,
}

// No padding: the structs are exactly the wire headers back to back.
const _: () = assert!(core::mem::size_of::<EthIpv4>() == EthHdr::LEN + Ipv4Hdr::LEN);

const _: () = assert!(core::mem::size_of::<RstFrame>() == EthHdr::LEN + Ipv4Hdr::LEN + TcpHdr::LEN);

const _: () = assert!(EthHdr::LEN == 14 && Ipv4Hdr::LEN == 20 && TcpHdr::LEN == 20 && ArpHdr::LEN == 28);

/// Set at load time by the control plane (non-zero on a veth): send rewritten packets back out
/// with `bpf_redirect` to the ingress interface instead of `XDP_TX`. A veth delivers `XDP_TX`
/// frames to its peer but only wakes the peer when the peer runs an XDP program itself, so
/// without one they wait for the next packet the host sends (up to a VRRP advert interval); a
/// redirect is flushed with `XDP_XMIT_FLUSH`, which wakes the peer. Physical NICs keep `XDP_TX`.
#[unsafe(no_mangle)]
pub(crate) static TX_REDIRECT: u32 = 0;

/// Rewrites a backend's packet towards the client and counts it.
#[inline(always)]
pub(crate) fn to_client(ctx: &XdpContext, pkt: &Packet, f: &Flow, fkey: &FlowKey) -> Result<u32, u32> {
    rewrite(ctx, pkt, f.client_mac, f.lb_mac, fkey.vip, fkey.client_addr, fkey.listener_port, fkey.client_port)?;
    if let Some(s) = BACKEND_STATS.get_ptr_mut(f.backend_id) {
        // SAFETY: this CPU's slot of a per-CPU array.
        let s = unsafe { &mut *s };
        s.to_client_packets += 1;
        s.to_client_bytes += pkt.ip_len as u64;
    }
    Ok(TX_TO_CLIENT)
}

#[inline(always)]
pub(crate) fn to_backend(ctx: &XdpContext, pkt: &Packet, f: &Flow) -> Result<(), u32> {
    rewrite(ctx, pkt, f.backend_mac, f.lb_mac, pkt.dst, f.backend_addr, f.nat_port, f.backend_port)
}

/// Rewrites MACs, addresses and ports in place and updates both checksums incrementally.
#[expect(clippy::too_many_arguments, reason = "one call per direction; a struct would only rename them")]
#[inline(always)]
pub(crate) fn rewrite(
    ctx: &XdpContext,
    pkt: &Packet,
    dmac: [u8; 6],
    smac: [u8; 6],
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
) -> Result<(), u32> {
    let hdr: *mut EthIpv4 = ptr_at(ctx, 0, DROP_INTERNAL)?;
    let tcp: *mut TcpHdr = ptr_at(ctx, pkt.tcp_off, DROP_INTERNAL)?;
    // SAFETY: ptr_at checked both ranges, and nothing else references the packet now. The MACs
    // are written through raw field pointers, unaligned, never through a reference to the
    // EthHdr, whose alignment 2 the frame does not guarantee (and rustc would assume it for a
    // plain write to a field of it). Ipv4Hdr and TcpHdr have alignment 1, so references to them
    // are sound.
    let (ip, tcp) = unsafe {
        (&raw mut (*hdr).eth.dst_addr).write_unaligned(dmac);
        (&raw mut (*hdr).eth.src_addr).write_unaligned(smac);
        (&mut *(&raw mut (*hdr).ip), &mut *tcp)
    };
    let addr = CsumDelta::new().add_u32(pkt.src, src).add_u32(pkt.dst, dst);
    let ports = addr.add_u16(pkt.sport, sport).add_u16(pkt.dport, dport);
    // Checksums stay wire words (lb_common::csum): the raw fields, not the host-order getters.
    ip.check = addr.apply(u16::from_ne_bytes(ip.check)).to_ne_bytes();
    ip.src_addr = src.to_ne_bytes();
    ip.dst_addr = dst.to_ne_bytes();
    tcp.check = ports.apply(u16::from_ne_bytes(tcp.check)).to_ne_bytes();
    tcp.source = sport.to_ne_bytes();
    tcp.dest = dport.to_ne_bytes();
    Ok(())
}

/// Turns the packet into a RST back to its sender (RFC 9293 rules), without IP or TCP
/// options or payload, and returns `reason` (a `TX_RST_*` code).
#[inline(always)]
pub(crate) fn reset_sender(ctx: &XdpContext, pkt: &Packet, reason: u32) -> Result<u32, u32> {
    let (seq, ack, flags) = rst_for(pkt.seq, pkt.ack, pkt.flags, pkt.payload_len);
    let pkt_len = ctx.data_end() - ctx.data();
    let shrink = core::mem::size_of::<RstFrame>() as i32 - pkt_len as i32;
    if shrink != 0 {
        // SAFETY: shrinking an XDP frame that is at least a RstFrame long (the parser checked
        // Ethernet + 20-byte IPv4 + 20-byte TCP headers are present).
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, shrink) } != 0 {
            return Err(DROP_INTERNAL);
        }
    }
    let frame: *mut RstFrame = ptr_at(ctx, 0, DROP_INTERNAL)?;

    let mut ip = Ipv4Hdr {
        vihl: (4 << 4) | (Ipv4Hdr::LEN / 4) as u8,
        tos: 0,
        tot_len: ((Ipv4Hdr::LEN + TcpHdr::LEN) as u16).to_be_bytes(),
        id: [0; 2],
        frags: ((IP_DF as u16) << 13).to_be_bytes(),
        ttl: 64,
        proto: IpProto::Tcp as u8,
        check: [0; 2],
        src_addr: pkt.dst.to_ne_bytes(),
        dst_addr: pkt.src.to_ne_bytes(),
    };
    // SAFETY: Ipv4Hdr is `#[repr(C)]` bytes and byte arrays, 20 bytes without padding; any such
    // value is a valid `[u8; 20]` (transmute checks the size).
    let ip_bytes: [u8; Ipv4Hdr::LEN] = unsafe { core::mem::transmute(ip) };
    ip.check = (!fold(sum_fixed(&ip_bytes, 0))).to_ne_bytes();

    let mut tcp = TcpHdr {
        source: pkt.dport.to_ne_bytes(),
        dest: pkt.sport.to_ne_bytes(),
        seq: seq.to_be_bytes(),
        ack_seq: ack.to_be_bytes(),
        _bitfield_align_1: [],
        // The storage bytes are the wire bytes: data offset << 4, then the flags (see
        // tcp_offset_and_flags); `new_bitfield_1` would set them bit by bit.
        _bitfield_1: BitfieldU16::new([((TcpHdr::LEN / 4) as u8) << 4, flags]),
        window: [0; 2],
        check: [0; 2],
        urg_ptr: [0; 2],
    };
    // SAFETY: TcpHdr is `#[repr(C)]` bytes, byte arrays and the two-byte bitfield, 20 bytes
    // without padding; any such value is a valid `[u8; 20]` (transmute checks the size).
    let tcp_bytes: [u8; TcpHdr::LEN] = unsafe { core::mem::transmute(tcp) };
    tcp.check = (!fold(sum_fixed(&tcp_bytes, pseudo_header_sum(pkt.dst, pkt.src, TcpHdr::LEN as u16)))).to_ne_bytes();

    let eth = EthHdr { dst_addr: pkt.eth_src, src_addr: pkt.eth_dst, ether_type: EtherType::Ipv4 as u16 };
    // SAFETY: ptr_at checked the range after the resize; no other reference exists. An unaligned
    // write: RstFrame has EthHdr's alignment 2, which the frame does not guarantee.
    unsafe { frame.write_unaligned(RstFrame { eth, ip, tcp }) };
    Ok(reason)
}
