//! Parsing: the one bounds-checked pointer helper, Ethernet/IPv4/TCP validation into a
//! [`Packet`], and the ARP verdict (a request for the VIP is dropped once the lease ran out).

use super::*;

/// ARP operation "request" (RFC 826), as `ArpHdr::oper` returns it (host order).
pub(crate) const ARP_OP_REQUEST: u16 = 1;

/// The IPv4 "more fragments" and "don't fragment" bits within `Ipv4Hdr::frag_flags` (reserved,
/// DF, MF).
pub(crate) const IP_MF: u8 = 0b001;

pub(crate) const IP_DF: u8 = 0b010;

/// The one bounds-checked pointer helper: a pointer to a `T` at `offset` from the start of the
/// packet, or `Err(reason)` if the packet is too short.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &XdpContext, offset: usize, reason: u32) -> Result<*mut T, u32> {
    // Volatile loads of data/data_end: otherwise LLVM may prove this check redundant from
    // earlier length arithmetic and drop it, and the verifier (which only trusts comparisons of
    // packet pointers) rejects the access.
    // SAFETY: ctx.ctx is the kernel-provided xdp_md of this invocation.
    let (start, end) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*ctx.ctx).data) as usize,
            core::ptr::read_volatile(&raw const (*ctx.ctx).data_end) as usize,
        )
    };
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(reason);
    }
    Ok((start + offset) as *mut T)
}

/// What the parser learned about a TCP/IPv4 packet. Addresses and ports as on the wire.
pub(crate) struct Packet {
    pub(crate) src: u32,
    pub(crate) dst: u32,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) flags: u8,
    pub(crate) ip_len: u16,
    pub(crate) tcp_off: usize,
    pub(crate) payload_len: u32,
    pub(crate) eth_src: [u8; 6],
    pub(crate) eth_dst: [u8; 6],
}

/// Validates Ethernet, IPv4 and TCP headers. `Err` carries the pass/drop reason.
#[inline(always)]
pub(crate) fn parse(ctx: &XdpContext) -> Result<Packet, u32> {
    let eth: *const EthHdr = ptr_at(ctx, 0, DROP_TRUNC_ETH)?;
    // SAFETY: ptr_at checked that the 14 bytes are inside the packet. Read through a raw field
    // pointer, unaligned: the frame need not start 2-byte aligned, and EthHdr has alignment 2
    // (the u16 `ether_type`), so neither a reference to it nor a place read through it is sound.
    // The MACs are read the same way at the end, once the packet is known to be TCP/IPv4: not
    // copied out here, where they would only stay live (spilled) through the checks.
    let ether_type = unsafe { (&raw const (*eth).ether_type).read_unaligned() };
    // EtherType's discriminants are in network byte order, as `ether_type` is.
    if ether_type == EtherType::Arp as u16 {
        return Err(arp_verdict(ctx));
    }
    if ether_type != EtherType::Ipv4 as u16 {
        return Err(PASS_NOT_IPV4);
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, EthHdr::LEN, DROP_TRUNC_IPV4)?;
    // SAFETY: ptr_at checked that the 20 bytes are inside the packet; Ipv4Hdr is made of bytes
    // and byte arrays only (alignment 1), so a reference is aligned wherever it points.
    let ip = unsafe { &*ip };
    if ip.version() != 4 {
        return Err(DROP_BAD_IP_VERSION);
    }
    let ip_hlen = usize::from(ip.ihl());
    if ip_hlen < Ipv4Hdr::LEN {
        return Err(DROP_BAD_IHL);
    }
    let pkt_len = ctx.data_end() - ctx.data();
    if EthHdr::LEN + ip_hlen > pkt_len {
        return Err(DROP_BAD_IHL);
    }
    let ip_len = ip.tot_len();
    if (ip_len as usize) < ip_hlen || EthHdr::LEN + ip_len as usize > pkt_len {
        return Err(DROP_BAD_IP_LEN);
    }
    if ip.proto != IpProto::Tcp as u8 {
        return Err(PASS_NOT_TCP);
    }
    if ip.frag_flags() & IP_MF != 0 || ip.frag_offset() != 0 {
        return Err(PASS_FRAGMENT);
    }
    if (ip_len as usize) < ip_hlen + TcpHdr::LEN {
        return Err(DROP_TRUNC_TCP);
    }
    let tcp_off = EthHdr::LEN + ip_hlen;
    let tcp: *const TcpHdr = ptr_at(ctx, tcp_off, DROP_TRUNC_TCP)?;
    // SAFETY: ptr_at checked that the 20 bytes are inside the packet; TcpHdr has alignment 1.
    let tcp = unsafe { &*tcp };
    let (offset, flags) = tcp_offset_and_flags(tcp);
    let tcp_hlen = usize::from(offset >> 4) * 4;
    if tcp_hlen < TcpHdr::LEN || ip_hlen + tcp_hlen > ip_len as usize {
        return Err(DROP_BAD_DOFF);
    }
    // SAFETY: as for `ether_type` above. Unaligned reads although `[u8; 6]` has alignment 1:
    // rustc takes a field read's alignment from the struct it projects from (2 here).
    let (eth_dst, eth_src) =
        unsafe { ((&raw const (*eth).dst_addr).read_unaligned(), (&raw const (*eth).src_addr).read_unaligned()) };
    Ok(Packet {
        src: u32::from_ne_bytes(ip.src_addr),
        dst: u32::from_ne_bytes(ip.dst_addr),
        sport: u16::from_ne_bytes(tcp.source),
        dport: u16::from_ne_bytes(tcp.dest),
        seq: u32::from_be_bytes(tcp.seq),
        ack: u32::from_be_bytes(tcp.ack_seq),
        flags,
        ip_len,
        tcp_off,
        payload_len: (ip_len as usize - ip_hlen - tcp_hlen) as u32,
        eth_dst,
        eth_src,
    })
}

/// The TCP header's data-offset byte and flags byte (wire bytes 12 and 13).
///
/// `TcpHdr` has them only as a bindgen bitfield (`_bitfield_1`, storage private) whose
/// accessors (`doff()`, `syn()`, ..., `get(8, 8)`) assemble a value bit by bit in a loop over
/// `get_bit`. The bitfield is a `#[repr(C)]` wrapper of its two storage bytes, which are the
/// wire bytes themselves, so copying it out as `[u8; 2]` gives both with two byte loads and no
/// bit assembly, the code the byte-offset parser had.
#[inline(always)]
pub(crate) fn tcp_offset_and_flags(tcp: &TcpHdr) -> (u8, u8) {
    // SAFETY: BitfieldU16 is `#[repr(C)] struct { storage: [u8; 2] }` (network-types 0.2.0,
    // bitfield.rs); every bit pattern is a valid `[u8; 2]`, and transmute checks the size.
    let [offset, flags]: [u8; 2] = unsafe { core::mem::transmute(tcp._bitfield_1) };
    (offset, flags)
}

/// ARP: a request for the VIP is dropped once the lease has run out; everything else passes.
#[inline(always)]
pub(crate) fn arp_verdict(ctx: &XdpContext) -> u32 {
    let Ok(arp) = ptr_at::<ArpHdr>(ctx, EthHdr::LEN, PASS_NOT_IPV4) else {
        return PASS_NOT_IPV4;
    };
    // SAFETY: ptr_at checked that the 28 bytes are inside the packet; ArpHdr is made of bytes
    // and byte arrays only (alignment 1).
    let arp = unsafe { &*arp };
    if arp.oper() != ARP_OP_REQUEST {
        return PASS_NOT_IPV4;
    }
    let target = u32::from_ne_bytes(arp.tpa);
    let lease = current_lease();
    if target == lease.vip && lease.state(bpf_ktime_get_ns_safe()) != LEASE_VALID {
        DROP_ARP_LEASE_EXPIRED
    } else {
        PASS_NOT_IPV4
    }
}
