//! The pglb XDP data plane: one-arm full NAT of VIP listeners to PostgreSQL backends.
//!
//! Per packet: parse and validate Ethernet, IPv4 (any IHL) and TCP; a packet to a VIP listener
//! is a client packet (open a flow on SYN, forward a known flow, RST anything else), a packet
//! from a backend to a NAT port of a known flow is a reply; everything else goes to the kernel
//! untouched. Forwarded packets are rewritten in place (MACs, addresses, ports, incremental
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
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST, bpf_fib_lookup as FibParams, xdp_action},
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    helpers::{bpf_fib_lookup, bpf_ktime_get_ns, bpf_redirect, bpf_xdp_adjust_tail},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
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

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const ETH_P_IP_WIRE: [u8; 2] = [0x08, 0x00];
const ETH_P_ARP_WIRE: [u8; 2] = [0x08, 0x06];
/// An Ethernet/IPv4 ARP packet: htype, ptype, hlen 6, plen 4, operation, two address pairs.
const ARP_LEN: usize = 28;
const ARP_OP_REQUEST: [u8; 2] = [0x00, 0x01];
const IPPROTO_TCP: u8 = 6;
/// Look the next hop up as a packet sent from this host out of the ingress interface (one arm).
/// The kernel still requires IPv4 forwarding on the interface (else FWD_DISABLED); the control
/// plane turns it on when it attaches.
const BPF_FIB_LOOKUP_OUTPUT: u32 = 1 << 1;
const AF_INET: u8 = 2;
const RST_FRAME_LEN: usize = ETH_HLEN + IPV4_HLEN + TCP_HLEN;

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
    let eth: *const [u8; ETH_HLEN] = ptr_at(ctx, 0, DROP_TRUNC_ETH)?;
    // SAFETY: ptr_at checked that 14 bytes are inside the packet.
    let eth = unsafe { &*eth };
    if [eth[12], eth[13]] == ETH_P_ARP_WIRE {
        return Err(arp_verdict(ctx));
    }
    if [eth[12], eth[13]] != ETH_P_IP_WIRE {
        return Err(PASS_NOT_IPV4);
    }
    let ip: *const [u8; IPV4_HLEN] = ptr_at(ctx, ETH_HLEN, DROP_TRUNC_IPV4)?;
    // SAFETY: ptr_at checked that 20 bytes are inside the packet.
    let ip = unsafe { &*ip };
    if ip[0] >> 4 != 4 {
        return Err(DROP_BAD_IP_VERSION);
    }
    let ip_hlen = ((ip[0] & 0x0f) as usize) * 4;
    if ip_hlen < IPV4_HLEN {
        return Err(DROP_BAD_IHL);
    }
    let pkt_len = ctx.data_end() - ctx.data();
    if ETH_HLEN + ip_hlen > pkt_len {
        return Err(DROP_BAD_IHL);
    }
    let ip_len = u16::from_be_bytes([ip[2], ip[3]]);
    if (ip_len as usize) < ip_hlen || ETH_HLEN + ip_len as usize > pkt_len {
        return Err(DROP_BAD_IP_LEN);
    }
    if ip[9] != IPPROTO_TCP {
        return Err(PASS_NOT_TCP);
    }
    // More-fragments flag or a fragment offset.
    if (ip[6] & 0x3f) != 0 || ip[7] != 0 {
        return Err(PASS_FRAGMENT);
    }
    if (ip_len as usize) < ip_hlen + TCP_HLEN {
        return Err(DROP_TRUNC_TCP);
    }
    let tcp_off = ETH_HLEN + ip_hlen;
    let tcp: *const [u8; TCP_HLEN] = ptr_at(ctx, tcp_off, DROP_TRUNC_TCP)?;
    // SAFETY: ptr_at checked that 20 bytes are inside the packet.
    let tcp = unsafe { &*tcp };
    let tcp_hlen = ((tcp[12] >> 4) as usize) * 4;
    if tcp_hlen < TCP_HLEN || ip_hlen + tcp_hlen > ip_len as usize {
        return Err(DROP_BAD_DOFF);
    }
    Ok(Packet {
        src: u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
        dst: u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
        sport: u16::from_ne_bytes([tcp[0], tcp[1]]),
        dport: u16::from_ne_bytes([tcp[2], tcp[3]]),
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
        flags: tcp[13],
        ip_len,
        tcp_off,
        payload_len: (ip_len as usize - ip_hlen - tcp_hlen) as u32,
        eth_dst: [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]],
        eth_src: [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]],
    })
}

/// ARP: a request for the VIP is dropped once the lease has run out; everything else passes.
#[inline(always)]
fn arp_verdict(ctx: &XdpContext) -> u32 {
    let Ok(arp) = ptr_at::<[u8; ARP_LEN]>(ctx, ETH_HLEN, PASS_NOT_IPV4) else {
        return PASS_NOT_IPV4;
    };
    // SAFETY: ptr_at checked that 28 bytes are inside the packet.
    let arp = unsafe { &*arp };
    if [arp[6], arp[7]] != ARP_OP_REQUEST {
        return PASS_NOT_IPV4;
    }
    let target = u32::from_ne_bytes([arp[24], arp[25], arp[26], arp[27]]);
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
        let stale = f.pool == POOL_WRITE && (f.backend_id != current_writer() || lease == LEASE_PAST_GRACE);
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
        let stale = f.pool == POOL_WRITE && (f.backend_id != current_writer() || lease == LEASE_PAST_GRACE);
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
    fib.l4_protocol = IPPROTO_TCP;
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
        return Ok(DROP_FLOW_TABLE);
    }
    to_backend(ctx, pkt, &flow)?;
    count_to_backend(&flow, pkt.ip_len, true);
    Ok(TX_NEW_FLOW)
}

/// A packet from a backend to the NAT port of an established flow.
#[inline(always)]
fn backend_packet(ctx: &XdpContext, pkt: &Packet, nkey: &NatKey, fkey: &FlowKey) -> Result<u32, u32> {
    let Some(flow) = FLOWS.get_ptr_mut(fkey) else {
        // The forward entry was evicted or swept: drop the orphan and let the kernel RST it.
        let _ = NAT.remove(nkey);
        return Ok(PASS_NOT_VIP);
    };
    // SAFETY: a live LRU value; concurrent writers only store plain integers into it.
    let f = unsafe { &mut *flow };
    let now = bpf_ktime_get_ns_safe();
    if f.pool == POOL_WRITE && (f.backend_id != current_writer() || current_lease().state(now) == LEASE_PAST_GRACE) {
        let backend_id = f.backend_id;
        let _ = NAT.remove(nkey);
        let _ = FLOWS.remove(fkey);
        if pkt.flags & TCP_RST != 0 {
            return Ok(DROP_RST_UNKNOWN_FLOW);
        }
        count_backend_reset(backend_id);
        return reset_sender(ctx, pkt, TX_RST_STALE_BACKEND);
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
    if f.pool == POOL_WRITE && (f.backend_id != current_writer() || current_lease().state(now) == LEASE_PAST_GRACE) {
        let backend_id = f.backend_id;
        let _ = HALF_NAT.remove(nkey);
        let _ = HALF_OPEN.remove(fkey);
        if pkt.flags & TCP_RST != 0 {
            return Ok(DROP_RST_UNKNOWN_FLOW);
        }
        count_backend_reset(backend_id);
        return reset_sender(ctx, pkt, TX_RST_STALE_BACKEND);
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
    let eth: *mut [u8; ETH_HLEN + IPV4_HLEN] = ptr_at(ctx, 0, DROP_INTERNAL)?;
    let tcp: *mut [u8; TCP_HLEN] = ptr_at(ctx, pkt.tcp_off, DROP_INTERNAL)?;
    // SAFETY: ptr_at checked both ranges; nothing else references the packet now.
    let (hdr, tcp) = unsafe { (&mut *eth, &mut *tcp) };
    let addr = CsumDelta::new().add_u32(pkt.src, src).add_u32(pkt.dst, dst);
    let ports = addr.add_u16(pkt.sport, sport).add_u16(pkt.dport, dport);
    hdr[0..6].copy_from_slice(&dmac);
    hdr[6..12].copy_from_slice(&smac);
    let ip_check = addr.apply(u16::from_ne_bytes([hdr[24], hdr[25]]));
    hdr[24..26].copy_from_slice(&ip_check.to_ne_bytes());
    hdr[26..30].copy_from_slice(&src.to_ne_bytes());
    hdr[30..34].copy_from_slice(&dst.to_ne_bytes());
    let tcp_check = ports.apply(u16::from_ne_bytes([tcp[16], tcp[17]]));
    tcp[0..2].copy_from_slice(&sport.to_ne_bytes());
    tcp[2..4].copy_from_slice(&dport.to_ne_bytes());
    tcp[16..18].copy_from_slice(&tcp_check.to_ne_bytes());
    Ok(())
}

/// Turns the packet into a RST back to its sender (RFC 9293 rules), without IP or TCP
/// options or payload, and returns `reason` (a `TX_RST_*` code).
#[inline(always)]
fn reset_sender(ctx: &XdpContext, pkt: &Packet, reason: u32) -> Result<u32, u32> {
    let (seq, ack, flags) = rst_for(pkt.seq, pkt.ack, pkt.flags, pkt.payload_len);
    let pkt_len = ctx.data_end() - ctx.data();
    let shrink = RST_FRAME_LEN as i32 - pkt_len as i32;
    if shrink != 0 {
        // SAFETY: shrinking an XDP frame that is at least RST_FRAME_LEN long (the parser
        // checked Ethernet + 20-byte IPv4 + 20-byte TCP headers are present).
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, shrink) } != 0 {
            return Err(DROP_INTERNAL);
        }
    }
    let frame: *mut [u8; RST_FRAME_LEN] = ptr_at(ctx, 0, DROP_INTERNAL)?;
    // SAFETY: ptr_at checked the range after the resize; no other reference exists.
    let frame = unsafe { &mut *frame };
    frame[0..6].copy_from_slice(&pkt.eth_src);
    frame[6..12].copy_from_slice(&pkt.eth_dst);
    frame[12..14].copy_from_slice(&ETH_P_IP_WIRE);

    let mut ip = [0u8; IPV4_HLEN];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(IPV4_HLEN as u16 + TCP_HLEN as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64; // TTL
    ip[9] = IPPROTO_TCP;
    ip[12..16].copy_from_slice(&pkt.dst.to_ne_bytes());
    ip[16..20].copy_from_slice(&pkt.src.to_ne_bytes());
    let ip_check = !fold(sum_fixed(&ip, 0));
    ip[10..12].copy_from_slice(&ip_check.to_ne_bytes());

    let mut tcp = [0u8; TCP_HLEN];
    tcp[0..2].copy_from_slice(&pkt.dport.to_ne_bytes());
    tcp[2..4].copy_from_slice(&pkt.sport.to_ne_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = (TCP_HLEN as u8 / 4) << 4;
    tcp[13] = flags;
    let tcp_check = !fold(sum_fixed(&tcp, pseudo_header_sum(pkt.dst, pkt.src, TCP_HLEN as u16)));
    tcp[16..18].copy_from_slice(&tcp_check.to_ne_bytes());

    frame[ETH_HLEN..ETH_HLEN + IPV4_HLEN].copy_from_slice(&ip);
    frame[ETH_HLEN + IPV4_HLEN..].copy_from_slice(&tcp);
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
