//! The pglb XDP data plane: one-arm full NAT of VIP listeners to PostgreSQL backends.
//!
//! Per packet: parse and validate Ethernet, IPv4 (any IHL) and TCP through the `network-types`
//! header structs (`EthHdr`, `Ipv4Hdr`, `TcpHdr`; `ArpHdr` for ARP); a packet to a VIP
//! listener is a client packet (open a flow on SYN, forward a known flow, RST anything else), a
//! packet from a backend to a NAT port of a known flow is a reply; everything else goes to the
//! kernel untouched. Forwarded packets are rewritten in place (MACs, addresses, ports, incremental
//! checksums) and sent back out with `XDP_TX`. Every packet increments exactly one per-CPU
//! reason counter (`lb_common::reason`), whose code also decides the verdict.
//!
//! The control plane renews a lease (`lease` map, `bpf_ktime_get_ns` clock) while it runs. Once
//! the lease has run out (pglb killed or hung), ARP requests for the VIP are dropped, so this
//! host stops answering for an address it may no longer own, SYNs get a RST instead of a flow,
//! and after the lease's grace packets of write-port flows get a RST too: a dead control plane
//! cannot keep attracting clients to a frozen writer.
//!
//! Handshakes are tracked as conntrack does: a SYN opens a flow in the half-open table (an LRU
//! of `MAX_HALF_OPEN` entries, with its NAT port in `half_nat`), the backend's SYN+ACK moves it
//! to SYN_RECV, and only the client's ACK of that SYN moves it to the established tables
//! (`flows`, `nat`: plain hashes the kernel never evicts from). A SYN flood therefore churns
//! the half-open table only: it cannot take an established flow's entry or NAT port, and it
//! cannot hold more than `MAX_HALF_OPEN` of a backend's NAT ports, so new clients still get both.
//!
//! One XDP invocation can emit one packet, so a stale-writer flow resets the side whose packet
//! arrived and deletes the flow; the other side's next packet then finds no flow: a client
//! gets a RST (unknown flow), a backend's packet goes to the kernel, which answers it with a
//! RST because no socket owns VIP:nat_port.
//!
//! Logging (`aya-log-ebpf`, read by the control plane's `dataplane::kernel_log`): rare events
//! only, never on the per-packet path. A SYN dropped because the flow table refused its flow or
//! no NAT port was free is logged at warn, each stale-writer reset at debug. Each record is
//! written by a non-inlined function (`log_*`, a BPF-to-BPF call on the rare branch only), so
//! the record-writing code stays out of `pglb_xdp` and its stack frame (inlined, the program
//! grows by ~1600 instructions and 56 bytes of stack; docs/DECISIONS.md). The control plane
//! loads the program with `AYA_LOG_LEVEL` set to its own log level, so a record it would
//! discard is not written at all.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST, bpf_fib_lookup as FibParams, xdp_action},
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    helpers::{bpf_fib_lookup, bpf_ktime_get_ns, bpf_redirect, bpf_xdp_adjust_tail},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use aya_log_ebpf::{debug, warn};
use core::net::Ipv4Addr;
use lb_common::{
    BACKEND_F_ACTIVE, BACKEND_NONE, Backend, BackendStats, Flow, FlowKey, LEASE_PAST_GRACE,
    LEASE_VALID, Lease, Listener, ListenerKey, ListenerStats, MAGLEV_SIZE, MAX_BACKENDS, MAX_FLOWS,
    MAX_HALF_OPEN, MAX_LISTENERS, NatKey, POOL_WRITE, ReaderCtl, Writer,
    csum::{CsumDelta, fold, pseudo_header_sum, sum_fixed},
    hash::flow_hash,
    nat::{NAT_PORT_PROBES, nat_port_candidate, nat_port_seed},
    port_to_map,
    reason::*,
    tcp::{
        DIR_TO_BACKEND, DIR_TO_CLIENT, STATE_CLOSED, STATE_CLOSING, STATE_ESTABLISHED, STATE_SYN_SENT, TCP_ACK, TCP_FIN,
        TCP_RST, TCP_SYN, bad_syn, completes_handshake, next_state, rst_for,
    },
};
use network_types::{
    arp::ArpHdr,
    bitfield::BitfieldU16,
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr},
    tcp::TcpHdr,
};

/// VIP listeners: (VIP, port) → pool and stats index. Written by the control plane.
#[btf_map(name = "listeners")]
static LISTENERS: HashMap<ListenerKey, Listener, { MAX_LISTENERS as usize }> = HashMap::new();
/// Backends by id. Written by the control plane.
#[btf_map(name = "backends")]
static BACKENDS: Array<Backend, { MAX_BACKENDS as usize }> = Array::new();
/// Index 0: the current writer. Written by the control plane in one update.
#[btf_map(name = "writer")]
static WRITER: Array<Writer, 1> = Array::new();
/// Index 0: which Maglev half is live and how many readers it holds.
#[btf_map(name = "reader_ctl")]
static READER_CTL: Array<ReaderCtl, 1> = Array::new();
/// Two Maglev tables of backend ids (double buffered).
#[btf_map(name = "maglev")]
static MAGLEV: Array<u32, { 2 * MAGLEV_SIZE as usize }> = Array::new();
/// Established flows (forward direction), shared by all CPUs (replies may land on another
/// CPU). A plain hash: nothing is evicted from it to make room.
#[btf_map(name = "flows")]
static FLOWS: HashMap<FlowKey, Flow, { MAX_FLOWS as usize }> = HashMap::new();
/// Reverse connection table: (backend, VIP, NAT port) → client flow key.
#[btf_map(name = "nat")]
static NAT: HashMap<NatKey, FlowKey, { MAX_FLOWS as usize }> = HashMap::new();
/// Half-open flows (SYN_SENT, SYN_RECV), forward direction. LRU: a flood reclaims its own oldest
/// entries, never an established flow's.
#[btf_map(name = "half_open")]
static HALF_OPEN: LruHashMap<FlowKey, Flow, { MAX_HALF_OPEN as usize }> = LruHashMap::new();
/// The NAT ports of half-open flows (reverse direction), LRU like `half_open`.
#[btf_map(name = "half_nat")]
static HALF_NAT: LruHashMap<NatKey, FlowKey, { MAX_HALF_OPEN as usize }> = LruHashMap::new();
/// Per-CPU counters per backend id.
#[btf_map(name = "backend_stats")]
static BACKEND_STATS: PerCpuArray<BackendStats, { MAX_BACKENDS as usize }> = PerCpuArray::new();
/// Per-CPU counters per listener index.
#[btf_map(name = "listener_stats")]
static LISTENER_STATS: PerCpuArray<ListenerStats, { MAX_LISTENERS as usize }> = PerCpuArray::new();
/// Per-CPU packet counter per reason code.
#[btf_map(name = "reasons")]
static REASONS: PerCpuArray<u64, { REASON_COUNT as usize }> = PerCpuArray::new();
/// Index 0: the control plane's lease (dead-man switch). Renewed by the control plane.
#[btf_map(name = "lease")]
static LEASE: Array<Lease, 1> = Array::new();

/// ARP operation "request" (RFC 826), as `ArpHdr::oper` returns it (host order).
const ARP_OP_REQUEST: u16 = 1;
/// The IPv4 "more fragments" and "don't fragment" bits within `Ipv4Hdr::frag_flags` (reserved,
/// DF, MF).
const IP_MF: u8 = 0b001;
const IP_DF: u8 = 0b010;
/// Look the next hop up as a packet sent from this host out of the ingress interface (one arm).
/// The kernel still requires IPv4 forwarding on the interface (else FWD_DISABLED); the control
/// plane turns it on when it attaches.
const BPF_FIB_LOOKUP_OUTPUT: u32 = 1 << 1;
const AF_INET: u8 = 2;

/// The Ethernet and option-less IPv4 headers as one unit, so that code touching both (the
/// rewrite) needs one bounds check for the 34 bytes. Alignment 2 (`EthHdr::ether_type` is a
/// `u16`), which the packet does not guarantee: never make a reference to it, only raw-pointer
/// field projections and unaligned copies.
#[repr(C)]
struct EthIpv4 {
    eth: EthHdr,
    ip: Ipv4Hdr,
}

/// The whole RST frame `reset_sender` writes: Ethernet, IPv4 and TCP headers, no options.
#[repr(C)]
struct RstFrame {
    eth: EthHdr,
    ip: Ipv4Hdr,
    tcp: TcpHdr,
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
static TX_REDIRECT: u32 = 0;

/// The main XDP program: attach this one to the load balancer's interface.
#[xdp]
pub fn pglb_xdp(ctx: XdpContext) -> u32 {
    let reason = match try_pglb_xdp(&ctx) {
        Ok(reason) | Err(reason) => reason,
    };
    bump_reason(reason);
    match verdict_of(reason) {
        VERDICT_PASS => xdp_action::XDP_PASS,
        // SAFETY: a read of a load-time constant; volatile so LLVM does not fold the default.
        VERDICT_TX if unsafe { core::ptr::read_volatile(&TX_REDIRECT) } != 0 => {
            // SAFETY: bpf_redirect only records the target; it returns XDP_REDIRECT or XDP_ABORTED.
            unsafe { bpf_redirect(ctx.ingress_ifindex() as u32, 0) as u32 }
        }
        VERDICT_TX => xdp_action::XDP_TX,
        _ => xdp_action::XDP_DROP,
    }
}

/// A trivial program for the peer end of a veth: native XDP_TX on a veth only delivers when
/// the peer has an XDP program.
#[xdp]
pub fn pglb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The one bounds-checked pointer helper: a pointer to a `T` at `offset` from the start of the
/// packet, or `Err(reason)` if the packet is too short.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize, reason: u32) -> Result<*mut T, u32> {
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

#[inline(always)]
fn bump_reason(reason: u32) {
    if let Some(c) = REASONS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU array slot of this CPU; XDP runs with preemption disabled.
        unsafe { *c += 1 };
    }
}

/// What the parser learned about a TCP/IPv4 packet. Addresses and ports as on the wire.
struct Packet {
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    ip_len: u16,
    tcp_off: usize,
    payload_len: u32,
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
}

#[inline(always)]
fn try_pglb_xdp(ctx: &XdpContext) -> Result<u32, u32> {
    let pkt = parse(ctx)?;
    let lkey = ListenerKey { vip: pkt.dst, port: pkt.dport, _pad: 0 };
    // SAFETY: listener entries are only read here; the control plane replaces them whole.
    if let Some(listener) = unsafe { LISTENERS.get(&lkey) } {
        let listener = *listener;
        return client_packet(ctx, &pkt, &listener);
    }
    let nkey = NatKey { backend_addr: pkt.src, vip: pkt.dst, backend_port: pkt.sport, nat_port: pkt.dport };
    // SAFETY: the value is copied out at once.
    if let Some(fkey) = unsafe { NAT.get(&nkey) } {
        let fkey = *fkey;
        return backend_packet(ctx, &pkt, &nkey, &fkey);
    }
    // SAFETY: as above.
    if let Some(fkey) = unsafe { HALF_NAT.get(&nkey) } {
        let fkey = *fkey;
        return half_open_reply(ctx, &pkt, &nkey, &fkey);
    }
    Ok(PASS_NOT_VIP)
}

/// Validates Ethernet, IPv4 and TCP headers. `Err` carries the pass/drop reason.
#[inline(always)]
fn parse(ctx: &XdpContext) -> Result<Packet, u32> {
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
fn tcp_offset_and_flags(tcp: &TcpHdr) -> (u8, u8) {
    // SAFETY: BitfieldU16 is `#[repr(C)] struct { storage: [u8; 2] }` (network-types 0.2.0,
    // bitfield.rs); every bit pattern is a valid `[u8; 2]`, and transmute checks the size.
    let [offset, flags]: [u8; 2] = unsafe { core::mem::transmute(tcp._bitfield_1) };
    (offset, flags)
}

/// ARP: a request for the VIP is dropped once the lease has run out; everything else passes.
#[inline(always)]
fn arp_verdict(ctx: &XdpContext) -> u32 {
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

#[inline(always)]
fn current_lease() -> Lease {
    match LEASE.get(0) {
        Some(l) => *l,
        None => Lease::default(),
    }
}

#[inline(always)]
fn current_writer() -> u32 {
    match WRITER.get(0) {
        Some(w) => w.backend,
        None => BACKEND_NONE,
    }
}

/// A packet from a client to a VIP listener.
#[inline(always)]
fn client_packet(ctx: &XdpContext, pkt: &Packet, listener: &Listener) -> Result<u32, u32> {
    if bad_syn(pkt.flags) {
        return Ok(DROP_BAD_TCP_FLAGS);
    }
    let fkey = FlowKey { client_addr: pkt.src, vip: pkt.dst, client_port: pkt.sport, listener_port: pkt.dport };
    let is_syn = pkt.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let now = bpf_ktime_get_ns_safe();
    let lease = current_lease().state(now);
    if let Some(flow) = FLOWS.get_ptr_mut(&fkey) {
        // SAFETY: a live map value; concurrent writers only store plain integers into it.
        let f = unsafe { &mut *flow };
        let stale = stale_write_flow(f, lease);
        if stale || (is_syn && (f.state == STATE_CLOSING || f.state == STATE_CLOSED)) {
            let nkey = nat_key(f, pkt.dst);
            let backend_id = f.backend_id;
            let _ = NAT.remove(&nkey);
            let _ = FLOWS.remove(&fkey);
            return reopen_or_reset(ctx, pkt, listener, &fkey, now, lease, stale.then_some(backend_id));
        }
        // A SYN on a live established flow is forwarded like any segment: the backend answers
        // it with a challenge ACK (RFC 5961 section 4), to which a client that really lost the
        // connection answers with RST, closing the flow; a spoofed SYN changes nothing.
        f.state = next_state(f.state, DIR_TO_BACKEND, pkt.flags);
        f.last_seen_ns = now;
        let f = *f;
        to_backend(ctx, pkt, &f)?;
        count_to_backend(&f, pkt.ip_len, false);
        return Ok(TX_TO_BACKEND);
    }
    if let Some(flow) = HALF_OPEN.get_ptr_mut(&fkey) {
        // SAFETY: as above.
        let f = unsafe { &mut *flow };
        let nkey = nat_key(f, pkt.dst);
        // Either half of a half-open flow may have been reclaimed first: it is live only while
        // its NAT port still points back at it.
        // SAFETY: the value is compared at once.
        let port_held = matches!(unsafe { HALF_NAT.get(&nkey) }, Some(k) if *k == fkey);
        let stale = stale_write_flow(f, lease);
        if !port_held || stale {
            let backend_id = f.backend_id;
            let _ = HALF_OPEN.remove(&fkey);
            if port_held {
                let _ = HALF_NAT.remove(&nkey);
            }
            if stale {
                return reopen_or_reset(ctx, pkt, listener, &fkey, now, lease, Some(backend_id));
            }
        } else if completes_handshake(f.state, pkt.flags, pkt.ack, f.client_next_seq) {
            let mut est = *f;
            est.state = STATE_ESTABLISHED;
            est.last_seen_ns = now;
            return complete_handshake(ctx, pkt, listener, &fkey, &nkey, &est);
        } else {
            // A retransmitted SYN keeps its flow and NAT port; anything else during the handshake
            // (a wrong ACK, a RST, data) goes to the backend, which judges it.
            if is_syn {
                f.client_syn_next = pkt.seq.wrapping_add(1);
            }
            f.state = next_state(f.state, DIR_TO_BACKEND, pkt.flags);
            f.last_seen_ns = now;
            let f = *f;
            if pkt.flags & TCP_RST != 0 {
                let _ = HALF_NAT.remove(&nkey);
                let _ = HALF_OPEN.remove(&fkey);
            }
            to_backend(ctx, pkt, &f)?;
            count_to_backend(&f, pkt.ip_len, false);
            return Ok(TX_TO_BACKEND);
        }
    }
    reopen_or_reset(ctx, pkt, listener, &fkey, now, lease, None)
}

/// A client packet with no (more) flow: a SYN opens a new one, a RST is dropped, anything else
/// is answered with RST. `stale` is the backend of the flow just removed because it no longer
/// is the writer (the RST then says so).
#[inline(always)]
fn reopen_or_reset(
    ctx: &XdpContext,
    pkt: &Packet,
    listener: &Listener,
    fkey: &FlowKey,
    now: u64,
    lease: u8,
    stale: Option<u32>,
) -> Result<u32, u32> {
    let is_syn = pkt.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if pkt.flags & TCP_RST != 0 {
        return Ok(DROP_RST_UNKNOWN_FLOW);
    }
    if is_syn {
        if lease != LEASE_VALID {
            count_listener_reset(listener.index);
            return reset_sender(ctx, pkt, TX_RST_LEASE_EXPIRED);
        }
        return new_flow(ctx, pkt, listener, fkey, now);
    }
    count_listener_reset(listener.index);
    match stale {
        Some(backend_id) => {
            count_backend_reset(backend_id);
            let why = if lease == LEASE_PAST_GRACE { TX_RST_LEASE_EXPIRED } else { TX_RST_STALE_CLIENT };
            log_stale_reset(pkt.src, pkt.sport, backend_id, why);
            reset_sender(ctx, pkt, why)
        }
        None => reset_sender(ctx, pkt, TX_RST_UNKNOWN_FLOW),
    }
}

/// The reverse-table key of a flow to the VIP `vip`.
#[inline(always)]
fn nat_key(f: &Flow, vip: u32) -> NatKey {
    NatKey { backend_addr: f.backend_addr, vip, backend_port: f.backend_port, nat_port: f.nat_port }
}

/// The client acknowledged the backend's SYN: move the flow (`est`, already ESTABLISHED) from
/// the half-open tables to the established ones, keeping its NAT port, and forward the ACK. A
/// full established table refuses the newcomer (RST to the client); it never evicts anyone.
#[inline(always)]
fn complete_handshake(
    ctx: &XdpContext,
    pkt: &Packet,
    listener: &Listener,
    fkey: &FlowKey,
    nkey: &NatKey,
    est: &Flow,
) -> Result<u32, u32> {
    let moved = if FLOWS.insert(fkey, est, BPF_NOEXIST as u64).is_err() {
        false
    } else if NAT.insert(nkey, fkey, BPF_NOEXIST as u64).is_err() {
        let _ = FLOWS.remove(fkey);
        false
    } else {
        true
    };
    // Removed only after `nat` holds the port: a SYN claiming ports checks `nat` first and
    // `half_nat` second, so the port is never free in between.
    let _ = HALF_NAT.remove(nkey);
    let _ = HALF_OPEN.remove(fkey);
    if !moved {
        count_listener_reset(listener.index);
        return reset_sender(ctx, pkt, TX_RST_FLOW_TABLE_FULL);
    }
    to_backend(ctx, pkt, est)?;
    count_to_backend(est, pkt.ip_len, false);
    Ok(TX_HANDSHAKE_DONE)
}

#[inline(always)]
fn bpf_ktime_get_ns_safe() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// A SYN to a listener with no flow: choose a backend, claim a NAT port, insert both directions
/// into the half-open tables, rewrite and send.
#[inline(always)]
fn new_flow(ctx: &XdpContext, pkt: &Packet, listener: &Listener, fkey: &FlowKey, now: u64) -> Result<u32, u32> {
    let hash = flow_hash(pkt.src, pkt.sport, pkt.dst, pkt.dport);
    let (backend_id, no_backend) = if listener.pool == POOL_WRITE {
        (current_writer(), TX_RST_NO_WRITER)
    } else {
        let ctl = match READER_CTL.get(0) {
            Some(c) => *c,
            None => ReaderCtl::default(),
        };
        let slot = (ctl.active & 1) * MAGLEV_SIZE + hash % MAGLEV_SIZE;
        let id = if ctl.readers == 0 {
            BACKEND_NONE
        } else {
            match MAGLEV.get(slot) {
                Some(id) => *id,
                None => BACKEND_NONE,
            }
        };
        (id, TX_RST_NO_READER)
    };
    let backend = match BACKENDS.get(backend_id) {
        Some(b) if b.flags & BACKEND_F_ACTIVE != 0 => *b,
        _ => {
            count_listener_reset(listener.index);
            return reset_sender(ctx, pkt, no_backend);
        }
    };

    // Next-hop MACs from the kernel's FIB and neighbour table; the configured MAC otherwise.
    // SAFETY: bpf_fib_lookup is plain integers and unions of integers; all-zero is valid.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = IpProto::Tcp as u8;
    fib.sport = 0;
    fib.dport = backend.port;
    fib.__bindgen_anon_1.tot_len = pkt.ip_len; // host order: compared with the MTU
    fib.ifindex = ctx.ingress_ifindex() as u32;
    fib.__bindgen_anon_3.ipv4_src = pkt.dst;
    fib.__bindgen_anon_4.ipv4_dst = backend.addr;
    // SAFETY: ctx is the program's context and fib a properly sized stack struct.
    let rc = unsafe {
        bpf_fib_lookup(ctx.ctx.cast(), &mut fib, core::mem::size_of::<FibParams>() as i32, BPF_FIB_LOOKUP_OUTPUT)
    };
    let (lb_mac, backend_mac) = if rc == 0 {
        (fib.smac, fib.dmac)
    } else if backend.mac != [0; 6] {
        (pkt.eth_dst, backend.mac)
    } else {
        return Ok(DROP_NO_NEIGH);
    };

    let seed = nat_port_seed(hash, backend.addr, backend.port);
    let mut nkey = NatKey { backend_addr: backend.addr, vip: pkt.dst, backend_port: backend.port, nat_port: 0 };
    let mut claimed = false;
    for attempt in 0..NAT_PORT_PROBES {
        nkey.nat_port = port_to_map(nat_port_candidate(seed, attempt));
        // A port is free when no established flow holds it and no half-open one does; the
        // half-open claim is the atomic step.
        // SAFETY: only tested for presence.
        if unsafe { NAT.get(&nkey) }.is_some() {
            continue;
        }
        if HALF_NAT.insert(&nkey, fkey, BPF_NOEXIST as u64).is_ok() {
            claimed = true;
            break;
        }
    }
    if !claimed {
        log_ports_exhausted(pkt.src, pkt.sport, backend_id);
        return Ok(DROP_PORTS_EXHAUSTED);
    }
    let flow = Flow {
        backend_addr: backend.addr,
        backend_port: backend.port,
        nat_port: nkey.nat_port,
        backend_id,
        listener_index: listener.index as u16,
        pool: listener.pool,
        state: STATE_SYN_SENT,
        last_seen_ns: now,
        client_mac: pkt.eth_src,
        lb_mac,
        backend_mac,
        _pad: [0; 2],
        client_next_seq: 0,
        client_syn_next: pkt.seq.wrapping_add(1),
        _pad2: 0,
    };
    if HALF_OPEN.insert(fkey, &flow, BPF_ANY as u64).is_err() {
        let _ = HALF_NAT.remove(&nkey);
        log_flow_table_refused(pkt.src, pkt.sport, backend_id);
        return Ok(DROP_FLOW_TABLE);
    }
    to_backend(ctx, pkt, &flow)?;
    count_to_backend(&flow, pkt.ip_len, true);
    Ok(TX_NEW_FLOW)
}

/// A write flow whose backend is no longer the writer, or any write flow once the lease is past
/// its grace (`lease`: this packet's [`Lease::state`]).
#[inline(always)]
fn stale_write_flow(f: &Flow, lease: u8) -> bool {
    f.pool == POOL_WRITE && (f.backend_id != current_writer() || lease == LEASE_PAST_GRACE)
}

/// A backend's packet for a stale write flow (just removed by the caller): a RST to the backend,
/// never to a RST.
#[inline(always)]
fn reset_stale_backend(ctx: &XdpContext, pkt: &Packet, fkey: &FlowKey, backend_id: u32) -> Result<u32, u32> {
    if pkt.flags & TCP_RST != 0 {
        return Ok(DROP_RST_UNKNOWN_FLOW);
    }
    count_backend_reset(backend_id);
    log_stale_reset(fkey.client_addr, fkey.client_port, backend_id, TX_RST_STALE_BACKEND);
    reset_sender(ctx, pkt, TX_RST_STALE_BACKEND)
}

/// A packet from a backend to the NAT port of an established flow.
#[inline(always)]
fn backend_packet(ctx: &XdpContext, pkt: &Packet, nkey: &NatKey, fkey: &FlowKey) -> Result<u32, u32> {
    let Some(flow) = FLOWS.get_ptr_mut(fkey) else {
        // The forward entry was swept or removed: drop the orphan and let the kernel RST it.
        let _ = NAT.remove(nkey);
        return Ok(PASS_NOT_VIP);
    };
    // SAFETY: a live map value; concurrent writers only store plain integers into it.
    let f = unsafe { &mut *flow };
    let now = bpf_ktime_get_ns_safe();
    if stale_write_flow(f, current_lease().state(now)) {
        let backend_id = f.backend_id;
        let _ = NAT.remove(nkey);
        let _ = FLOWS.remove(fkey);
        return reset_stale_backend(ctx, pkt, fkey, backend_id);
    }
    f.state = next_state(f.state, DIR_TO_CLIENT, pkt.flags);
    f.last_seen_ns = now;
    // Where the client's receive window starts: the end of the newest backend segment.
    let end = pkt
        .seq
        .wrapping_add(pkt.payload_len)
        .wrapping_add(u32::from(pkt.flags & TCP_SYN != 0))
        .wrapping_add(u32::from(pkt.flags & TCP_FIN != 0));
    if f.client_next_seq == 0 || (end.wrapping_sub(f.client_next_seq) as i32) > 0 {
        f.client_next_seq = end;
    }
    let f = *f;
    to_client(ctx, pkt, &f, fkey)
}

/// A packet from a backend to the NAT port of a half-open flow: the SYN+ACK (or a RST) of a
/// handshake in progress.
#[inline(always)]
fn half_open_reply(ctx: &XdpContext, pkt: &Packet, nkey: &NatKey, fkey: &FlowKey) -> Result<u32, u32> {
    let Some(flow) = HALF_OPEN.get_ptr_mut(fkey) else {
        // Reclaimed under pressure or swept: let the kernel answer with RST, so the backend
        // frees its side at once.
        let _ = HALF_NAT.remove(nkey);
        return Ok(PASS_HALF_OPEN_RECLAIMED);
    };
    // SAFETY: a live map value; concurrent writers only store plain integers into it.
    let f = unsafe { &mut *flow };
    if f.nat_port != nkey.nat_port || f.backend_addr != nkey.backend_addr || f.backend_port != nkey.backend_port {
        // The flow key was reused by a newer half-open flow with another port.
        let _ = HALF_NAT.remove(nkey);
        return Ok(PASS_HALF_OPEN_RECLAIMED);
    }
    let now = bpf_ktime_get_ns_safe();
    if stale_write_flow(f, current_lease().state(now)) {
        let backend_id = f.backend_id;
        let _ = HALF_NAT.remove(nkey);
        let _ = HALF_OPEN.remove(fkey);
        return reset_stale_backend(ctx, pkt, fkey, backend_id);
    }
    f.state = next_state(f.state, DIR_TO_CLIENT, pkt.flags);
    f.last_seen_ns = now;
    if pkt.flags & TCP_SYN != 0 {
        // What the client's ACK must acknowledge to complete the handshake.
        f.client_next_seq = pkt.seq.wrapping_add(1);
    }
    let f = *f;
    if pkt.flags & TCP_RST != 0 {
        let _ = HALF_NAT.remove(nkey);
        let _ = HALF_OPEN.remove(fkey);
    }
    to_client(ctx, pkt, &f, fkey)
}

/// Rewrites a backend's packet towards the client and counts it.
#[inline(always)]
fn to_client(ctx: &XdpContext, pkt: &Packet, f: &Flow, fkey: &FlowKey) -> Result<u32, u32> {
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
fn to_backend(ctx: &XdpContext, pkt: &Packet, f: &Flow) -> Result<(), u32> {
    rewrite(ctx, pkt, f.backend_mac, f.lb_mac, pkt.dst, f.backend_addr, f.nat_port, f.backend_port)
}

/// Rewrites MACs, addresses and ports in place and updates both checksums incrementally.
#[expect(clippy::too_many_arguments, reason = "one call per direction; a struct would only rename them")]
#[inline(always)]
fn rewrite(
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
fn reset_sender(ctx: &XdpContext, pkt: &Packet, reason: u32) -> Result<u32, u32> {
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

#[inline(always)]
fn count_to_backend(f: &Flow, ip_len: u16, new: bool) {
    if let Some(s) = BACKEND_STATS.get_ptr_mut(f.backend_id) {
        // SAFETY: this CPU's slot of a per-CPU array.
        let s = unsafe { &mut *s };
        s.to_backend_packets += 1;
        s.to_backend_bytes += ip_len as u64;
        if new {
            s.new_flows += 1;
        }
    }
    if let Some(s) = LISTENER_STATS.get_ptr_mut(f.listener_index as u32) {
        // SAFETY: this CPU's slot of a per-CPU array.
        let s = unsafe { &mut *s };
        s.packets += 1;
        s.bytes += ip_len as u64;
        if new {
            s.new_flows += 1;
        }
    }
}

#[inline(always)]
fn count_backend_reset(backend_id: u32) {
    if let Some(s) = BACKEND_STATS.get_ptr_mut(backend_id) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { (*s).resets += 1 };
    }
}

#[inline(always)]
fn count_listener_reset(index: u32) {
    if let Some(s) = LISTENER_STATS.get_ptr_mut(index) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { (*s).resets += 1 };
    }
}

// The program's log records (see the crate doc). Arguments are wire-order addresses and ports,
// as in `Packet` and the map keys; `AYA_LOG_LEVEL` is checked inside, so a disabled level costs
// the call and one load, on these rare branches only.

/// Warn: the flow table refused a new flow (`bpf_map_update_elem` failed; an LRU map only does
/// so when it cannot allocate), so the SYN was dropped.
#[inline(never)]
fn log_flow_table_refused(client_addr: u32, client_port: u16, backend_id: u32) {
    let client = Ipv4Addr::from(client_addr.to_ne_bytes());
    warn!(&(), "xdp: the flow table refused a new flow; SYN from {:i}:{} to backend {} dropped", client, u16::from_be(client_port), backend_id);
}

/// Warn: every NAT port probed toward the backend was taken (or the NAT table refused the
/// insert), so the SYN was dropped.
#[inline(never)]
fn log_ports_exhausted(client_addr: u32, client_port: u16, backend_id: u32) {
    let client = Ipv4Addr::from(client_addr.to_ne_bytes());
    warn!(&(), "xdp: no free NAT port toward backend {} after {} probes; SYN from {:i}:{} dropped", backend_id, NAT_PORT_PROBES, client, u16::from_be(client_port));
}

/// Debug: a write flow found stale (its backend is no longer the writer, or the lease is past
/// its grace) was deleted and the sender of the packet reset. `why` is the reason code counted.
#[inline(never)]
fn log_stale_reset(client_addr: u32, client_port: u16, backend_id: u32, why: u32) {
    let client = Ipv4Addr::from(client_addr.to_ne_bytes());
    let port = u16::from_be(client_port);
    match why {
        TX_RST_STALE_BACKEND => debug!(&(), "xdp: stale write flow of {:i}:{} on backend {} deleted, RST sent to the backend", client, port, backend_id),
        TX_RST_LEASE_EXPIRED => debug!(&(), "xdp: write flow of {:i}:{} on backend {} deleted (lease past its grace), RST sent to the client", client, port, backend_id),
        _ => debug!(&(), "xdp: stale write flow of {:i}:{} on backend {} deleted (not the writer), RST sent to the client", client, port, backend_id),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
