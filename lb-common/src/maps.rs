//! The BPF map layout: names, sizes, keys and values shared by `lb-ebpf` and `lb-user`.
//!
//! Every type is `#[repr(C)]`, `Copy`, made of fixed-width integers with explicit padding, and
//! has a compile-time size check. Addresses and ports are in network byte order exactly as on
//! the wire (see the crate docs). Maps are pinned by the control plane under its per-instance
//! directory, one file per map named by the `MAP_*` constants.

/// Most backends (PostgreSQL nodes) a data plane knows; ids are `0..MAX_BACKENDS`.
pub const MAX_BACKENDS: u32 = 64;
/// Most VIP listeners.
pub const MAX_LISTENERS: u32 = 16;
/// Capacity of each established-flow map (`flows` and `nat`). Plain hash maps: an entry leaves
/// only when the control plane's sweep removes it (idle, or marked closed by the data plane when
/// it saw the connection end, 10 s later); the kernel
/// never evicts one to make room, so an idle pooled connection survives any flood.
pub const MAX_FLOWS: u32 = 65536;
/// Capacity of each half-open map (`half_open` and `half_nat`). LRU: under a SYN flood the
/// oldest half-open flows are reclaimed for new SYNs, so new clients always get an entry and a
/// NAT port, and half-open flows can never hold more than this many of a backend's NAT ports.
pub const MAX_HALF_OPEN: u32 = 16384;
/// Slots in one Maglev table (prime). The `maglev` map holds two tables (double buffering).
pub const MAGLEV_SIZE: u32 = 4093;
/// "No backend" in the writer entry and in Maglev slots.
pub const BACKEND_NONE: u32 = u32::MAX;

/// Map names (also the pin file names under the pin directory).
pub const MAP_LISTENERS: &str = "listeners";
/// See [`Backend`].
pub const MAP_BACKENDS: &str = "backends";
/// See [`Writer`].
pub const MAP_WRITER: &str = "writer";
/// See [`ReaderCtl`].
pub const MAP_READER_CTL: &str = "reader_ctl";
/// Two Maglev tables of [`MAGLEV_SIZE`] `u32` backend ids each; [`ReaderCtl::active`] says
/// which half is live. Written by the control plane, read by the XDP program on read SYNs.
pub const MAP_MAGLEV: &str = "maglev";
/// See [`FlowKey`] and [`Flow`].
pub const MAP_FLOWS: &str = "flows";
/// See [`NatKey`].
pub const MAP_NAT: &str = "nat";
/// Half-open flows: [`FlowKey`] → [`Flow`] in SYN_SENT or SYN_RECV, an LRU hash of
/// [`MAX_HALF_OPEN`] entries. A flow moves to `flows` when the client completes the handshake.
pub const MAP_HALF_OPEN: &str = "half_open";
/// The NAT ports of half-open flows: [`NatKey`] → [`FlowKey`], an LRU hash of
/// [`MAX_HALF_OPEN`] entries. A half-open flow is valid only while this entry still points back
/// at it (either entry may be reclaimed first).
pub const MAP_HALF_NAT: &str = "half_nat";
/// See [`BackendStats`].
pub const MAP_BACKEND_STATS: &str = "backend_stats";
/// See [`ListenerStats`].
pub const MAP_LISTENER_STATS: &str = "listener_stats";
/// Per-CPU `u64` packet counter per reason code (`crate::reason`), written by the XDP program.
pub const MAP_REASONS: &str = "reasons";
/// See [`Lease`].
pub const MAP_LEASE: &str = "lease";
/// Every map name, in a stable order.
pub const ALL_MAPS: [&str; 13] = [
    MAP_LISTENERS,
    MAP_BACKENDS,
    MAP_WRITER,
    MAP_READER_CTL,
    MAP_MAGLEV,
    MAP_FLOWS,
    MAP_NAT,
    MAP_HALF_OPEN,
    MAP_HALF_NAT,
    MAP_BACKEND_STATS,
    MAP_LISTENER_STATS,
    MAP_REASONS,
    MAP_LEASE,
];

/// Listener pool: the single writer.
pub const POOL_WRITE: u8 = 1;
/// Listener pool: the Maglev table over readers.
pub const POOL_READ: u8 = 2;

/// Key of the `listeners` hash map: a VIP and TCP port clients connect to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    /// VIP, network byte order.
    pub vip: u32,
    /// TCP port, network byte order.
    pub port: u16,
    /// Always zero.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<ListenerKey>() == 8);

/// Value of the `listeners` map. Written by the control plane at attach, read by the XDP
/// program on every packet to a VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listener {
    /// [`POOL_WRITE`] or [`POOL_READ`].
    pub pool: u8,
    /// Always zero.
    pub _pad: [u8; 3],
    /// Index into `listener_stats` (`0..MAX_LISTENERS`).
    pub index: u32,
}
const _: () = assert!(core::mem::size_of::<Listener>() == 8);

/// The backend is configured (unset slots are all zero).
pub const BACKEND_F_ACTIVE: u16 = 1;

/// One slot of the `backends` array, indexed by backend id. Written by the control plane
/// (`set_backends`), read by the XDP program when it opens a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// IPv4 address, network byte order.
    pub addr: u32,
    /// TCP port (PostgreSQL's, usually 5432), network byte order.
    pub port: u16,
    /// `BACKEND_F_*` bits.
    pub flags: u16,
    /// Fallback next-hop MAC, used only when `bpf_fib_lookup` has no neighbour entry; all zero
    /// when unknown.
    pub mac: [u8; 6],
    /// Always zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Backend>() == 16);

/// The single entry (index 0) of the `writer` array: which backend VIP write listeners go to.
/// Written by the control plane in one map update on failover/switchover; read by the XDP
/// program for every write-pool packet (flows to any other backend are reset).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writer {
    /// Backend id, or [`BACKEND_NONE`].
    pub backend: u32,
}
const _: () = assert!(core::mem::size_of::<Writer>() == 4);

impl Default for Writer {
    fn default() -> Self {
        Self { backend: BACKEND_NONE }
    }
}

/// The single entry (index 0) of the `reader_ctl` array. The control plane writes the
/// inactive half of `maglev`, then flips `active` in one update; the XDP program reads it on
/// every read-pool SYN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderCtl {
    /// Which Maglev table is live: 0 or 1.
    pub active: u32,
    /// How many readers the live table holds (0: read SYNs are answered with RST).
    pub readers: u32,
}
const _: () = assert!(core::mem::size_of::<ReaderCtl>() == 8);

/// Key of the `flows` and `half_open` hashes (forward direction): a client connection to a VIP
/// listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client IPv4 address, network byte order.
    pub client_addr: u32,
    /// VIP, network byte order.
    pub vip: u32,
    /// Client TCP port, network byte order.
    pub client_port: u16,
    /// Listener TCP port, network byte order.
    pub listener_port: u16,
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 12);

/// Value of the `flows` and `half_open` hashes: where a client connection goes and how it is
/// doing. Written by the XDP program (into `half_open` on SYN, moved to `flows` when the
/// handshake completes, state and timestamp on every packet, shared by all CPUs), read and swept
/// by the control plane.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Backend IPv4 address, network byte order.
    pub backend_addr: u32,
    /// Backend TCP port, network byte order.
    pub backend_port: u16,
    /// SNAT source port on the VIP, network byte order.
    pub nat_port: u16,
    /// Backend id (index into `backends`).
    pub backend_id: u32,
    /// Index into `listener_stats`.
    pub listener_index: u16,
    /// [`POOL_WRITE`] or [`POOL_READ`].
    pub pool: u8,
    /// `crate::tcp::STATE_*`.
    pub state: u8,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last packet either way.
    pub last_seen_ns: u64,
    /// The client side's MAC (source MAC of the SYN): destination of replies.
    pub client_mac: [u8; 6],
    /// This interface's MAC: source of every rewritten packet.
    pub lb_mac: [u8; 6],
    /// The backend's next-hop MAC.
    pub backend_mac: [u8; 6],
    /// Always zero.
    pub _pad: [u8; 2],
    /// The sequence number the client expects next from the backend side (the end of the
    /// newest backend segment forwarded, SYN and FIN counting one), **host byte order**; 0
    /// until the backend's first segment. In SYN_RECV it is the backend's initial sequence
    /// number + 1, which the client's ACK must acknowledge to complete the handshake. The control
    /// plane uses it to reset a client whose backend is no longer the writer without waiting for
    /// the client's next packet.
    pub client_next_seq: u32,
    /// The client's initial sequence number + 1 (what a RST must acknowledge to abort a
    /// connection still in SYN-SENT), **host byte order**, from its SYN.
    pub client_syn_next: u32,
    /// Always zero.
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<Flow>() == 56);

/// Key of the `nat` and `half_nat` hashes (reverse direction): a backend's reply to a NAT
/// source port. The value is the [`FlowKey`] of the client connection. Written by the XDP
/// program (a SYN claims a port in `half_nat` with `BPF_NOEXIST`, after checking `nat` does not
/// hold it; the completed handshake moves it to `nat`), swept by the control plane.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatKey {
    /// Backend IPv4 address, network byte order.
    pub backend_addr: u32,
    /// VIP, network byte order.
    pub vip: u32,
    /// Backend TCP port, network byte order.
    pub backend_port: u16,
    /// SNAT source port on the VIP, network byte order.
    pub nat_port: u16,
}
const _: () = assert!(core::mem::size_of::<NatKey>() == 12);

/// Per-CPU counters of one backend (`backend_stats`, indexed by backend id), written by the XDP
/// program, summed by the control plane for metrics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Packets forwarded to the backend.
    pub to_backend_packets: u64,
    /// IP bytes forwarded to the backend.
    pub to_backend_bytes: u64,
    /// Packets from the backend forwarded to clients.
    pub to_client_packets: u64,
    /// IP bytes from the backend forwarded to clients.
    pub to_client_bytes: u64,
    /// Flows opened to the backend.
    pub new_flows: u64,
    /// RSTs sent because of this backend (stale writer).
    pub resets: u64,
}
const _: () = assert!(core::mem::size_of::<BackendStats>() == 48);

/// Per-CPU counters of one listener (`listener_stats`, indexed by [`Listener::index`]),
/// written by the XDP program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Client packets to the listener that were forwarded.
    pub packets: u64,
    /// Their IP bytes.
    pub bytes: u64,
    /// Flows opened.
    pub new_flows: u64,
    /// RSTs sent to clients of this listener (unknown flow, no writer/reader, stale writer).
    pub resets: u64,
}
const _: () = assert!(core::mem::size_of::<ListenerStats>() == 32);

/// The single entry (index 0) of the `lease` array: the control plane's dead-man switch.
/// Written by the control plane (renewed several times per lease while it runs), read by the
/// XDP program on ARP requests for the VIP and on client packets to VIP listeners.
///
/// While `now < expires_ns` the data plane works normally. After it (pglb killed or hung),
/// ARP requests for the VIP are dropped (the host stops answering for it) and no new flow is
/// opened; after `expires_ns + grace_ns` packets of write-port flows are answered with RST as
/// well. `expires_ns == 0` (a map never written) counts as expired.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC, ns) at which the lease runs out.
    pub expires_ns: u64,
    /// How long established write flows go on after the lease ran out, ns.
    pub grace_ns: u64,
    /// The VIP whose ARP requests are dropped, network byte order.
    pub vip: u32,
    /// Always zero.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Lease>() == 24);

/// What the lease says at `now_ns` (see [`Lease`]).
pub const LEASE_VALID: u8 = 0;
/// The lease ran out: no ARP for the VIP, no new flows.
pub const LEASE_EXPIRED: u8 = 1;
/// The lease ran out more than `grace_ns` ago: write flows are reset too.
pub const LEASE_PAST_GRACE: u8 = 2;

impl Lease {
    /// [`LEASE_VALID`], [`LEASE_EXPIRED`] or [`LEASE_PAST_GRACE`] at `now_ns`.
    #[inline(always)]
    pub const fn state(&self, now_ns: u64) -> u8 {
        if self.expires_ns != 0 && now_ns < self.expires_ns {
            LEASE_VALID
        } else if self.expires_ns != 0 && now_ns - self.expires_ns < self.grace_ns {
            LEASE_EXPIRED
        } else {
            LEASE_PAST_GRACE
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type is #[repr(C)], Copy, made only of integers and byte arrays with
    // explicit padding fields, so any bit pattern is valid and there are no implicit holes.
    unsafe impl aya::Pod for ListenerKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Listener {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Writer {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ReaderCtl {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Flow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NatKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BackendStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ListenerStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Lease {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ip_from_map, ip_to_map, port_from_map, port_to_map};

    #[test]
    fn byte_order_helpers_keep_wire_bytes() {
        let a = ip_to_map([172, 20, 0, 100]);
        assert_eq!(a.to_ne_bytes(), [172, 20, 0, 100], "address bytes as on the wire");
        assert_eq!(ip_from_map(a), [172, 20, 0, 100], "round trip");
        let p = port_to_map(3000);
        assert_eq!(p.to_ne_bytes(), [0x0b, 0xb8], "port bytes as on the wire");
        assert_eq!(port_from_map(p), 3000, "round trip");
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        // Field offsets sum to the size: the explicit _pad fields cover every hole.
        assert_eq!(core::mem::offset_of!(Flow, last_seen_ns), 16, "Flow.last_seen_ns is 8-aligned");
        assert_eq!(core::mem::offset_of!(Flow, _pad), 42, "Flow padding before client_next_seq");
        assert_eq!(core::mem::offset_of!(Flow, client_next_seq), 44, "Flow.client_next_seq is 4-aligned");
        assert_eq!(core::mem::offset_of!(Flow, client_syn_next), 48, "Flow.client_syn_next");
        assert_eq!(core::mem::offset_of!(Flow, _pad2), 52, "Flow padding at the end");
        assert_eq!(core::mem::offset_of!(Backend, mac), 8, "Backend.mac");
        assert_eq!(core::mem::align_of::<Flow>(), 8, "Flow alignment");
        assert_eq!(Writer::default().backend, BACKEND_NONE, "no writer by default");
    }

    #[test]
    fn lease_states() {
        let s = 1_000_000_000;
        let lease = Lease { expires_ns: 10 * s, grace_ns: 5 * s, vip: 0, _pad: 0 };
        let table: &[(&str, Lease, u64, u8)] = &[
            ("before expiry", lease, 9 * s, LEASE_VALID),
            ("at expiry", lease, 10 * s, LEASE_EXPIRED),
            ("within grace", lease, 15 * s - 1, LEASE_EXPIRED),
            ("grace over", lease, 15 * s, LEASE_PAST_GRACE),
            ("never written", Lease::default(), 1, LEASE_PAST_GRACE),
            ("never written, grace set", Lease { expires_ns: 0, grace_ns: 5 * s, vip: 0, _pad: 0 }, 1, LEASE_PAST_GRACE),
            ("no grace", Lease { grace_ns: 0, ..lease }, 10 * s, LEASE_PAST_GRACE),
        ];
        for (what, l, now, want) in table {
            assert_eq!(l.state(*now), *want, "{what}");
        }
    }
}
