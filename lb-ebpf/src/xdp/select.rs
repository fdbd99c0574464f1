//! A new flow: backend selection (the writer, or a reader through the Maglev table), the
//! next-hop MACs, the NAT port claim, and the half-open insert — one function per step, all
//! inlined into the program.

use super::*;

/// A SYN to a listener with no flow: choose a backend, find the next-hop MACs, claim a NAT
/// port, insert both directions into the half-open tables, rewrite and send.
#[inline(always)]
pub(crate) fn new_flow(ctx: &XdpContext, pkt: &Packet, listener: &Listener, fkey: &FlowKey, now: u64) -> Result<u32, u32> {
    let hash = flow_hash(pkt.src, pkt.sport, pkt.dst, pkt.dport);
    let (backend_id, backend) = match choose_backend(listener, hash) {
        Ok(chosen) => chosen,
        Err(no_backend) => {
            count_listener_reset(listener.index);
            return reset_sender(ctx, pkt, no_backend);
        }
    };
    let Some((lb_mac, backend_mac)) = next_hop_macs(ctx, pkt, &backend) else {
        return Ok(DROP_NO_NEIGH);
    };
    let Some(nkey) = claim_nat_port(pkt, fkey, &backend, hash) else {
        log_ports_exhausted(pkt.src, pkt.sport, backend_id);
        return Ok(DROP_PORTS_EXHAUSTED);
    };
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

/// The listener's pool: the writer for the write pool, a reader through the live Maglev table
/// for the read pool. `Err` is the RST reason when there is none (or it is not active).
#[inline(always)]
fn choose_backend(listener: &Listener, hash: u32) -> Result<(u32, Backend), u32> {
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
    match BACKENDS.get(backend_id) {
        Some(b) if b.flags & BACKEND_F_ACTIVE != 0 => Ok((backend_id, *b)),
        _ => Err(no_backend),
    }
}

/// Next-hop MACs (this host's, the backend's) from the kernel's FIB and neighbour table; the
/// configured MAC otherwise; `None` when neither knows (the SYN is dropped: `drop_no_neigh`).
#[inline(always)]
fn next_hop_macs(ctx: &XdpContext, pkt: &Packet, backend: &Backend) -> Option<([u8; 6], [u8; 6])> {
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
    if rc == 0 {
        Some((fib.smac, fib.dmac))
    } else if backend.mac != [0; 6] {
        Some((pkt.eth_dst, backend.mac))
    } else {
        None
    }
}

/// A NAT source port toward `backend` that no established or half-open flow holds, claimed
/// for this flow in the half-open reverse table; `None` when every probe was taken.
#[inline(always)]
fn claim_nat_port(pkt: &Packet, fkey: &FlowKey, backend: &Backend, hash: u32) -> Option<NatKey> {
    let seed = nat_port_seed(hash, backend.addr, backend.port);
    let mut nkey = NatKey { backend_addr: backend.addr, vip: pkt.dst, backend_port: backend.port, nat_port: 0 };
    for attempt in 0..NAT_PORT_PROBES {
        nkey.nat_port = port_to_map(nat_port_candidate(seed, attempt));
        // A port is free when no established flow holds it and no half-open one does; the
        // half-open claim is the atomic step.
        // SAFETY: only tested for presence.
        if unsafe { NAT.get(&nkey) }.is_some() {
            continue;
        }
        if HALF_NAT.insert(&nkey, fkey, BPF_NOEXIST as u64).is_ok() {
            return Some(nkey);
        }
    }
    None
}
