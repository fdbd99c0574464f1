//! Counters (per reason, per backend, per listener) and the rare-event log records, each
//! written by a non-inlined function so the record-writing code stays off the packet path.

use super::*;

#[inline(always)]
pub(crate) fn bump_reason(reason: u32) {
    if let Some(c) = REASONS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU array slot of this CPU; XDP runs with preemption disabled.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub(crate) fn count_to_backend(f: &Flow, ip_len: u16, new: bool) {
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
pub(crate) fn count_backend_reset(backend_id: u32) {
    if let Some(s) = BACKEND_STATS.get_ptr_mut(backend_id) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { (*s).resets += 1 };
    }
}

#[inline(always)]
pub(crate) fn count_listener_reset(index: u32) {
    if let Some(s) = LISTENER_STATS.get_ptr_mut(index) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { (*s).resets += 1 };
    }
}

/// The records' target, whatever module writes them: the control plane's log shows them as
/// `lb_ebpf` (`PGLB_LOG=info,lb_ebpf=debug`).
const LOG_TARGET: &str = "lb_ebpf";

// The program's log records (see the crate doc). Arguments are wire-order addresses and ports,
// as in `Packet` and the map keys; `AYA_LOG_LEVEL` is checked inside, so a disabled level costs
// the call and one load, on these rare branches only.

/// Warn: the flow table refused a new flow (`bpf_map_update_elem` failed; an LRU map only does
/// so when it cannot allocate), so the SYN was dropped.
#[inline(never)]
pub(crate) fn log_flow_table_refused(client_addr: u32, client_port: u16, backend_id: u32) {
    let client = Ipv4Addr::from(client_addr.to_ne_bytes());
    warn!(&(), target: LOG_TARGET, "xdp: the flow table refused a new flow; SYN from {:i}:{} to backend {} dropped", client, u16::from_be(client_port), backend_id);
}

/// Warn: every NAT port probed toward the backend was taken (or the NAT table refused the
/// insert), so the SYN was dropped.
#[inline(never)]
pub(crate) fn log_ports_exhausted(client_addr: u32, client_port: u16, backend_id: u32) {
    let client = Ipv4Addr::from(client_addr.to_ne_bytes());
    warn!(&(), target: LOG_TARGET, "xdp: no free NAT port toward backend {} after {} probes; SYN from {:i}:{} dropped", backend_id, NAT_PORT_PROBES, client, u16::from_be(client_port));
}

/// Debug: a write flow found stale (its backend is no longer the writer, or the lease is past
/// its grace) was deleted and the sender of the packet reset. `why` is the reason code counted.
#[inline(never)]
pub(crate) fn log_stale_reset(client_addr: u32, client_port: u16, backend_id: u32, why: u32) {
    let client = Ipv4Addr::from(client_addr.to_ne_bytes());
    let port = u16::from_be(client_port);
    match why {
        TX_RST_STALE_BACKEND => debug!(&(), target: LOG_TARGET, "xdp: stale write flow of {:i}:{} on backend {} deleted, RST sent to the backend", client, port, backend_id),
        TX_RST_LEASE_EXPIRED => debug!(&(), target: LOG_TARGET, "xdp: write flow of {:i}:{} on backend {} deleted (lease past its grace), RST sent to the client", client, port, backend_id),
        _ => debug!(&(), target: LOG_TARGET, "xdp: stale write flow of {:i}:{} on backend {} deleted (not the writer), RST sent to the client", client, port, backend_id),
    }
}
