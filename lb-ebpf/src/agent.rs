//! The agent's `connect4` program: zero-hop routing for application hosts (`pglb agent`).
//!
//! Attached to a cgroup v2 directory, it runs at every IPv4 `connect()` of a process in it. A
//! TCP connect to a VIP listener gets its destination rewritten before the kernel sends the SYN:
//! a write listener to the route's writer, a read listener to a reader chosen through the same
//! Maglev table the XDP data plane uses (ids → slots), indexed by `bpf_get_prandom_u32()` (the
//! source port, the XDP program's flow-hash input, is not chosen yet at connect time). After
//! that the kernel's own socket carries the connection straight to PostgreSQL: no per-packet
//! work anywhere.
//!
//! It never refuses a connect (always returns 1) and never rewrites without a valid route: no
//! route written, the route's lease run out (`AgentRoute::expires_ns`, so a hung agent stops
//! rewriting by itself), no writer, no reader — the connection then goes to the VIP and the XDP
//! data plane, as without an agent. Every decision bumps one per-CPU counter (`AGENT_R_*`).
//!
//! Every write connect it rewrites is recorded by socket cookie (`agent_rewritten`): the agent
//! pins that map, so the sockets it sent straight to a writer can be found and closed when it
//! stops, or after it was killed (docs/AGENT.md, "When the agent stops or dies").
#![no_std]
#![no_main]

use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    helpers::{bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns},
    macros::{btf_map, cgroup_sock_addr},
    programs::SockAddrContext,
};
use lb_common::{
    Backend, Listener, ListenerKey, MAGLEV_SIZE, MAX_BACKENDS, MAX_LISTENERS,
    agent::{AGENT_R_READ, AGENT_R_WRITE, AGENT_REASON_COUNT, AGENT_REWRITTEN_MAX, AGENT_ROUTE_KEY, AgentRewritten, AgentRoute, agent_decide, is_reader_id},
};

/// VIP listeners to rewrite (only `pool` is read). Written by the agent at start.
#[btf_map(name = "agent_listeners")]
static AGENT_LISTENERS: HashMap<ListenerKey, Listener, { MAX_LISTENERS as usize }> = HashMap::new();
/// Key 0: the route (writer, live Maglev half, lease). Replaced whole by the agent.
#[btf_map(name = "agent_route")]
static AGENT_ROUTE: HashMap<u32, AgentRoute, 1> = HashMap::new();
/// Reader addresses by backend id. Written by the agent.
#[btf_map(name = "agent_backends")]
static AGENT_BACKENDS: Array<Backend, { MAX_BACKENDS as usize }> = Array::new();
/// Two Maglev tables of backend ids (double buffered). Written by the agent.
#[btf_map(name = "agent_maglev")]
static AGENT_MAGLEV: Array<u32, { 2 * MAGLEV_SIZE as usize }> = Array::new();
/// Per-CPU counter per `AGENT_R_*` code.
#[btf_map(name = "agent_stats")]
static AGENT_STATS: PerCpuArray<u64, { AGENT_REASON_COUNT as usize }> = PerCpuArray::new();

/// Socket cookie → the writer a write connect was sent to. Written here, pinned and read by the
/// agent.
#[btf_map(name = "agent_rewritten")]
static AGENT_REWRITTEN: LruHashMap<u64, AgentRewritten, { AGENT_REWRITTEN_MAX as usize }> = LruHashMap::new();

/// IPPROTO_TCP, as `bpf_sock_addr::protocol` holds it.
const IPPROTO_TCP: u32 = 6;

/// Rewrites a TCP connect to a VIP listener; always lets the connect go on.
#[cgroup_sock_addr(connect4)]
pub fn pglb_connect4(ctx: SockAddrContext) -> i32 {
    let reason = try_connect4(&ctx);
    if let Some(c) = AGENT_STATS.get_ptr_mut(reason) {
        // SAFETY: this CPU's slot of a per-CPU array; the program runs with migration disabled.
        unsafe { *c += 1 };
    }
    1
}

#[inline(always)]
fn try_connect4(ctx: &SockAddrContext) -> u32 {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel's bpf_sock_addr of this call; the verifier allows reading these fields.
    let (protocol, addr, port) = unsafe { ((*sa).protocol, (*sa).user_ip4, (*sa).user_port) };
    let pool = if protocol == IPPROTO_TCP {
        let key = ListenerKey { vip: addr, port: port as u16, _pad: 0 };
        // SAFETY: the value is copied out at once; the agent never writes it in place.
        unsafe { AGENT_LISTENERS.get(&key) }.map(|l| l.pool)
    } else {
        None
    };
    // SAFETY: a hash value is replaced as a whole (RCU), never written in place: copied out.
    let route: Option<AgentRoute> = unsafe { AGENT_ROUTE.get(&AGENT_ROUTE_KEY) }.copied();
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let reason = agent_decide(pool, route.as_ref(), now);
    let Some(route) = route else { return reason };
    let (to_addr, to_port) = match reason {
        AGENT_R_WRITE => (route.writer_addr, route.writer_port),
        AGENT_R_READ => {
            // SAFETY: a helper without arguments.
            let hash = unsafe { bpf_get_prandom_u32() };
            let Some(slot) = route.reader_slot(hash) else { return lb_common::agent::AGENT_R_NO_READER };
            let id = match AGENT_MAGLEV.get(slot) {
                Some(&id) if is_reader_id(id) => id,
                _ => return lb_common::agent::AGENT_R_NO_READER,
            };
            match AGENT_BACKENDS.get(id) {
                Some(b) if b.addr != 0 => (b.addr, b.port),
                _ => return lb_common::agent::AGENT_R_NO_READER,
            }
        }
        _ => return reason,
    };
    // SAFETY: connect4 programs may write user_ip4 and user_port (port in the low 16 bits,
    // network byte order, as read).
    unsafe {
        (*sa).user_ip4 = to_addr;
        (*sa).user_port = to_port as u32;
    }
    if reason == AGENT_R_WRITE {
        // SAFETY: the helper takes this program's context (bpf_sock_addr) and returns the
        // socket's cookie, allocating it if needed.
        let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
        // A full LRU map forgets its oldest entry; an insert cannot fail otherwise.
        let _ = AGENT_REWRITTEN.insert(cookie, AgentRewritten { addr: to_addr, port: to_port, _pad: 0 }, 0);
    }
    reason
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
