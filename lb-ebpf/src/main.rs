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

mod xdp;

use xdp::*;

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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
