//! Flow handling: a client packet on a known, half-open or unknown flow; the handshake that
//! moves a flow to the established tables; a backend's reply; stale-writer resets.

use super::*;

/// A packet from a client to a VIP listener.
#[inline(always)]
pub(crate) fn client_packet(ctx: &XdpContext, pkt: &Packet, listener: &Listener) -> Result<u32, u32> {
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
pub(crate) fn reopen_or_reset(
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
pub(crate) fn nat_key(f: &Flow, vip: u32) -> NatKey {
    NatKey { backend_addr: f.backend_addr, vip, backend_port: f.backend_port, nat_port: f.nat_port }
}

/// The client acknowledged the backend's SYN: move the flow (`est`, already ESTABLISHED) from
/// the half-open tables to the established ones, keeping its NAT port, and forward the ACK. A
/// full established table refuses the newcomer (RST to the client); it never evicts anyone.
#[inline(always)]
pub(crate) fn complete_handshake(
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
pub(crate) fn bpf_ktime_get_ns_safe() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// A write flow whose backend is no longer the writer, or any write flow once the lease is past
/// its grace (`lease`: this packet's [`Lease::state`]).
#[inline(always)]
pub(crate) fn stale_write_flow(f: &Flow, lease: u8) -> bool {
    f.pool == POOL_WRITE && (f.backend_id != current_writer() || lease == LEASE_PAST_GRACE)
}

/// A backend's packet for a stale write flow (just removed by the caller): a RST to the backend,
/// never to a RST.
#[inline(always)]
pub(crate) fn reset_stale_backend(ctx: &XdpContext, pkt: &Packet, fkey: &FlowKey, backend_id: u32) -> Result<u32, u32> {
    if pkt.flags & TCP_RST != 0 {
        return Ok(DROP_RST_UNKNOWN_FLOW);
    }
    count_backend_reset(backend_id);
    log_stale_reset(fkey.client_addr, fkey.client_port, backend_id, TX_RST_STALE_BACKEND);
    reset_sender(ctx, pkt, TX_RST_STALE_BACKEND)
}

/// A packet from a backend to the NAT port of an established flow.
#[inline(always)]
pub(crate) fn backend_packet(ctx: &XdpContext, pkt: &Packet, nkey: &NatKey, fkey: &FlowKey) -> Result<u32, u32> {
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
pub(crate) fn half_open_reply(ctx: &XdpContext, pkt: &Packet, nkey: &NatKey, fkey: &FlowKey) -> Result<u32, u32> {
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
