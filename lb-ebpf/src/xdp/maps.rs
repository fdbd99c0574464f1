//! The maps the XDP program reads and writes (`lb_common::maps` documents their keys and
//! values, who writes them and who reads them), and the two single-entry reads every packet needs:
//! the lease and the writer.

use super::*;

/// VIP listeners: (VIP, port) → pool and stats index. Written by the control plane.
#[btf_map(name = "listeners")]
pub(crate) static LISTENERS: HashMap<ListenerKey, Listener, { MAX_LISTENERS as usize }> = HashMap::new();

/// Backends by id. Written by the control plane.
#[btf_map(name = "backends")]
pub(crate) static BACKENDS: Array<Backend, { MAX_BACKENDS as usize }> = Array::new();

/// Index 0: the current writer. Written by the control plane in one update.
#[btf_map(name = "writer")]
pub(crate) static WRITER: Array<Writer, 1> = Array::new();

/// Index 0: which Maglev half is live and how many readers it holds.
#[btf_map(name = "reader_ctl")]
pub(crate) static READER_CTL: Array<ReaderCtl, 1> = Array::new();

/// Two Maglev tables of backend ids (double buffered).
#[btf_map(name = "maglev")]
pub(crate) static MAGLEV: Array<u32, { 2 * MAGLEV_SIZE as usize }> = Array::new();

/// Established flows (forward direction), shared by all CPUs (replies may land on another
/// CPU). A plain hash: nothing is evicted from it to make room.
#[btf_map(name = "flows")]
pub(crate) static FLOWS: HashMap<FlowKey, Flow, { MAX_FLOWS as usize }> = HashMap::new();

/// Reverse connection table: (backend, VIP, NAT port) → client flow key.
#[btf_map(name = "nat")]
pub(crate) static NAT: HashMap<NatKey, FlowKey, { MAX_FLOWS as usize }> = HashMap::new();

/// Half-open flows (SYN_SENT, SYN_RECV), forward direction. LRU: a flood reclaims its own oldest
/// entries, never an established flow's.
#[btf_map(name = "half_open")]
pub(crate) static HALF_OPEN: LruHashMap<FlowKey, Flow, { MAX_HALF_OPEN as usize }> = LruHashMap::new();

/// The NAT ports of half-open flows (reverse direction), LRU like `half_open`.
#[btf_map(name = "half_nat")]
pub(crate) static HALF_NAT: LruHashMap<NatKey, FlowKey, { MAX_HALF_OPEN as usize }> = LruHashMap::new();

/// Per-CPU counters per backend id.
#[btf_map(name = "backend_stats")]
pub(crate) static BACKEND_STATS: PerCpuArray<BackendStats, { MAX_BACKENDS as usize }> = PerCpuArray::new();

/// Per-CPU counters per listener index.
#[btf_map(name = "listener_stats")]
pub(crate) static LISTENER_STATS: PerCpuArray<ListenerStats, { MAX_LISTENERS as usize }> = PerCpuArray::new();

/// Per-CPU packet counter per reason code.
#[btf_map(name = "reasons")]
pub(crate) static REASONS: PerCpuArray<u64, { REASON_COUNT as usize }> = PerCpuArray::new();

/// Index 0: the control plane's lease (dead-man switch). Renewed by the control plane.
#[btf_map(name = "lease")]
pub(crate) static LEASE: Array<Lease, 1> = Array::new();

#[inline(always)]
pub(crate) fn current_lease() -> Lease {
    match LEASE.get(0) {
        Some(l) => *l,
        None => Lease::default(),
    }
}

#[inline(always)]
pub(crate) fn current_writer() -> u32 {
    match WRITER.get(0) {
        Some(w) => w.backend,
        None => BACKEND_NONE,
    }
}
