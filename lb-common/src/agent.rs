//! The maps of the agent's `connect4` program (`lb-ebpf/src/agent.rs`, loaded by `pglb agent`):
//! names, keys and values, and the pure choice the program makes at `connect()`.
//!
//! The agent runs on an application host, not on a load balancer. Its program rewrites the
//! destination of a `connect()` to a VIP listener into the current writer's address (write
//! pool) or a reader's (read pool, through a Maglev table built exactly as the XDP data plane
//! builds its own), so the connection's packets never cross a load balancer. With no valid
//! route (none written, the lease run out, no writer) it leaves the destination alone: the
//! connection goes to the VIP and the XDP data plane, as if no agent ran.
//!
//! Byte order as in the rest of the crate: addresses and ports in network byte order.

use crate::{BACKEND_NONE, MAGLEV_SIZE};

/// VIP listeners the agent rewrites: [`crate::ListenerKey`] → [`crate::Listener`] (only `pool`
/// is read), a hash of at most [`crate::MAX_LISTENERS`]. Written by the agent at start, read by
/// the program at every `connect()` of the cgroup.
pub const MAP_AGENT_LISTENERS: &str = "agent_listeners";
/// The route: key `0u32` → [`AgentRoute`], a hash of one entry. A hash rather than an array
/// because a hash update replaces the whole value at once (a reader sees the old or the new
/// route, never half of each); the agent deletes the key to stop rewriting.
pub const MAP_AGENT_ROUTE: &str = "agent_route";
/// Reader addresses by backend id (the load balancers' node ids): [`crate::Backend`] (only
/// `addr` and `port` are read), an array of [`crate::MAX_BACKENDS`]. Written by the agent before
/// any table that names the id is made live.
pub const MAP_AGENT_BACKENDS: &str = "agent_backends";
/// Two Maglev tables of [`MAGLEV_SIZE`] backend ids (double buffered, as the XDP program's
/// `maglev`); [`AgentRoute::active`] says which half is live. Written by the agent.
pub const MAP_AGENT_MAGLEV: &str = "agent_maglev";
/// Per-CPU `u64` counter per `AGENT_R_*` code, written by the program, read by the agent.
pub const MAP_AGENT_STATS: &str = "agent_stats";
/// The sockets the program sent to the writer: socket cookie (`bpf_get_socket_cookie`, a `u64`)
/// → [`AgentRewritten`], an LRU hash of [`AGENT_REWRITTEN_MAX`]. Written by the program at
/// every write connect it rewrites; pinned by the agent (so it outlives the agent's process) and
/// read by it to close these sockets when it stops, and by the next agent or `pglb agent
/// cleanup` after an agent was killed.
pub const MAP_AGENT_REWRITTEN: &str = "agent_rewritten";
/// How many rewritten sockets are remembered (the oldest are forgotten first).
pub const AGENT_REWRITTEN_MAX: u32 = 16384;
/// Every map of the agent's object.
pub const AGENT_MAPS: [&str; 6] = [MAP_AGENT_LISTENERS, MAP_AGENT_ROUTE, MAP_AGENT_BACKENDS, MAP_AGENT_MAGLEV, MAP_AGENT_STATS, MAP_AGENT_REWRITTEN];
/// The key of the single [`MAP_AGENT_ROUTE`] entry.
pub const AGENT_ROUTE_KEY: u32 = 0;

/// The route the agent learned from the load balancers (the single value of `agent_route`).
/// Written by the agent on every accepted message (the lease renewed), deleted when the lease
/// is lost; read by the program at every `connect()` to a VIP listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentRoute {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC, ns) after which the route is not used: the
    /// agent's lease, so a hung agent stops rewriting by itself. 0: never valid.
    pub expires_ns: u64,
    /// The epoch's per-change sequence (see `lb_user::agent::proto::Epoch`), for `bpftool`.
    pub epoch_seq: u64,
    /// The epoch's timeline (the writer's timeline).
    pub epoch_timeline: u32,
    /// The writer's IPv4 address, network byte order; 0: no writer (writes are not rewritten,
    /// so they reach the VIP, whose data plane refuses them as well).
    pub writer_addr: u32,
    /// The writer's TCP port, network byte order.
    pub writer_port: u16,
    /// Always zero.
    pub _pad: u16,
    /// Which half of `agent_maglev` is live: 0 or 1.
    pub active: u32,
    /// How many readers the live table holds (0: reads are not rewritten).
    pub readers: u32,
    /// Always zero.
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<AgentRoute>() == 40);

/// Where the program sent a rewritten write connect (the value of `agent_rewritten`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentRewritten {
    /// The writer's IPv4 address, network byte order.
    pub addr: u32,
    /// The writer's TCP port, network byte order.
    pub port: u16,
    /// Always zero.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<AgentRewritten>() == 8);

/// A `connect()` that is not to a VIP listener (or not TCP): untouched.
pub const AGENT_R_OTHER: u32 = 0;
/// Rewritten to the writer.
pub const AGENT_R_WRITE: u32 = 1;
/// Rewritten to a reader.
pub const AGENT_R_READ: u32 = 2;
/// To a VIP listener, but no route or its lease ran out: left to the VIP.
pub const AGENT_R_NO_ROUTE: u32 = 3;
/// To a write listener while the route has no writer: left to the VIP (which refuses it).
pub const AGENT_R_NO_WRITER: u32 = 4;
/// To a read listener while the route has no reader: left to the VIP.
pub const AGENT_R_NO_READER: u32 = 5;
/// Number of `AGENT_R_*` codes (the length of `agent_stats`).
pub const AGENT_REASON_COUNT: u32 = 6;
/// The codes' names, by code, for logs and metrics.
pub const AGENT_REASON_NAMES: [&str; AGENT_REASON_COUNT as usize] = ["other", "write", "read", "no_route", "no_writer", "no_reader"];

impl AgentRoute {
    /// Whether the route may be used at `now_ns`.
    #[inline(always)]
    pub const fn valid(&self, now_ns: u64) -> bool {
        self.expires_ns != 0 && now_ns < self.expires_ns
    }

    /// The `agent_maglev` index a read connection with hash `hash` looks up, or `None` with no
    /// reader (the table is the XDP data plane's: the same ids land in the same slots).
    #[inline(always)]
    pub const fn reader_slot(&self, hash: u32) -> Option<u32> {
        if self.readers == 0 {
            return None;
        }
        Some((self.active & 1) * MAGLEV_SIZE + hash % MAGLEV_SIZE)
    }
}

/// What the program does with one `connect()`, given the listener's pool (`None`: not a VIP
/// listener) and the route (`None`: none written). Returns the `AGENT_R_*` code; for
/// [`AGENT_R_WRITE`] the destination is the route's writer, for [`AGENT_R_READ`] the reader in
/// the table slot [`AgentRoute::reader_slot`] (a slot holding [`BACKEND_NONE`] counts as no
/// reader).
#[inline(always)]
pub const fn agent_decide(pool: Option<u8>, route: Option<&AgentRoute>, now_ns: u64) -> u32 {
    let Some(pool) = pool else { return AGENT_R_OTHER };
    let route = match route {
        Some(r) if r.valid(now_ns) => r,
        _ => return AGENT_R_NO_ROUTE,
    };
    if pool == crate::POOL_WRITE {
        if route.writer_addr == 0 { AGENT_R_NO_WRITER } else { AGENT_R_WRITE }
    } else if pool == crate::POOL_READ {
        if route.readers == 0 { AGENT_R_NO_READER } else { AGENT_R_READ }
    } else {
        AGENT_R_OTHER
    }
}

/// Whether a Maglev slot's id names a reader.
#[inline(always)]
pub const fn is_reader_id(id: u32) -> bool {
    id != BACKEND_NONE && id < crate::MAX_BACKENDS
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], Copy, only integers with explicit padding: every bit pattern is valid.
unsafe impl aya::Pod for AgentRoute {}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], Copy, only integers with explicit padding: every bit pattern is valid.
unsafe impl aya::Pod for AgentRewritten {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{POOL_READ, POOL_WRITE};

    #[test]
    fn decisions() {
        let route = AgentRoute { expires_ns: 100, writer_addr: 1, writer_port: 2, readers: 2, ..AgentRoute::default() };
        /// (what, the listener's pool, the route, now, the expected code)
        type Row = (&'static str, Option<u8>, Option<AgentRoute>, u64, u32);
        let table: &[Row] = &[
            ("not a vip listener", None, Some(route), 1, AGENT_R_OTHER),
            ("no route written", Some(POOL_WRITE), None, 1, AGENT_R_NO_ROUTE),
            ("lease ran out", Some(POOL_WRITE), Some(route), 100, AGENT_R_NO_ROUTE),
            ("never valid", Some(POOL_WRITE), Some(AgentRoute { expires_ns: 0, ..route }), 0, AGENT_R_NO_ROUTE),
            ("write to the writer", Some(POOL_WRITE), Some(route), 99, AGENT_R_WRITE),
            ("no writer", Some(POOL_WRITE), Some(AgentRoute { writer_addr: 0, ..route }), 1, AGENT_R_NO_WRITER),
            ("read to a reader", Some(POOL_READ), Some(route), 1, AGENT_R_READ),
            ("no reader", Some(POOL_READ), Some(AgentRoute { readers: 0, ..route }), 1, AGENT_R_NO_READER),
            ("unknown pool", Some(9), Some(route), 1, AGENT_R_OTHER),
        ];
        for (what, pool, route, now, want) in table {
            assert_eq!(agent_decide(*pool, route.as_ref(), *now), *want, "{what}");
        }
    }

    #[test]
    fn reader_slots_stay_in_the_live_half() {
        let r = AgentRoute { readers: 1, active: 1, ..AgentRoute::default() };
        assert_eq!(r.reader_slot(0), Some(MAGLEV_SIZE), "second half starts at MAGLEV_SIZE");
        assert_eq!(r.reader_slot(u32::MAX), Some(MAGLEV_SIZE + u32::MAX % MAGLEV_SIZE), "wraps within the half");
        assert_eq!(AgentRoute { readers: 0, ..r }.reader_slot(5), None, "no reader, no slot");
        assert!(!is_reader_id(BACKEND_NONE) && is_reader_id(0), "none is not a reader");
    }
}
