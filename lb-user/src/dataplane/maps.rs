//! Typed access to the data plane's maps, shared by a loaded instance and read-only dumps.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray},
};
use lb_common::{
    BACKEND_F_ACTIVE, BACKEND_NONE, Backend, BackendStats, Flow, FlowKey, Lease, Listener, ListenerKey, ListenerStats,
    MAGLEV_SIZE, MAX_FLOWS, MAX_HALF_OPEN, MAP_BACKEND_STATS, MAP_BACKENDS, MAP_FLOWS, MAP_LEASE, MAP_LISTENER_STATS, MAP_LISTENERS, MAP_MAGLEV,
    MAP_HALF_NAT, MAP_HALF_OPEN, MAP_NAT, MAP_READER_CTL, MAP_REASONS, MAP_WRITER, MAX_BACKENDS, NatKey, POOL_WRITE, ReaderCtl, Writer, ip_from_map,
    ip_to_map, port_from_map, port_to_map,
    reason::REASON_COUNT,
    tcp::{STATE_CLOSED, STATE_CLOSING, Timeouts, flow_expired, is_half_open, state_name},
};

use super::{
    BackendSpec, DataplaneError,
    view::{BackendView, Counters, FlowCapacity, FlowView, LeaseView, ListenerView, MapDump, ReaderSummary, SweepStats},
};

/// Every map of one instance.
pub(super) struct Maps {
    listeners: Map,
    backends: Map,
    writer: Map,
    reader_ctl: Map,
    maglev: Map,
    flows: Map,
    nat: Map,
    half_open: Map,
    half_nat: Map,
    backend_stats: Map,
    listener_stats: Map,
    reasons: Map,
    lease: Map,
}

fn map_err(name: &'static str, op: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, op, source: Box::new(source) }
}

fn pool_name(pool: u8) -> &'static str {
    if pool == POOL_WRITE { "write" } else { "read" }
}

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns`.
pub(super) fn monotonic_ns() -> Result<u64, DataplaneError> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return Err(DataplaneError::Clock { source: std::io::Error::last_os_error() });
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// A configured backend as its map entry: active, with the neighbour MAC as a fallback.
fn backend_value(b: &BackendSpec) -> Backend {
    Backend { addr: ip_to_map(b.addr.octets()), port: port_to_map(b.port), flags: BACKEND_F_ACTIVE, mac: arp_mac(b.addr).unwrap_or_default(), _pad: [0; 2] }
}

/// The complete neighbour entry for `addr` in this network namespace's ARP table.
fn arp_mac(addr: Ipv4Addr) -> Option<[u8; 6]> {
    let table = std::fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 4 || cols[0].parse::<Ipv4Addr>().ok()? != addr || cols[2] != "0x2" {
            return None;
        }
        let mut mac = [0u8; 6];
        let mut parts = cols[3].split(':');
        for b in &mut mac {
            *b = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        Some(mac)
    })
}

impl Maps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(DataplaneError::MissingMap { name });
        Ok(Self {
            listeners: take(MAP_LISTENERS)?,
            backends: take(MAP_BACKENDS)?,
            writer: take(MAP_WRITER)?,
            reader_ctl: take(MAP_READER_CTL)?,
            maglev: take(MAP_MAGLEV)?,
            flows: take(MAP_FLOWS)?,
            nat: take(MAP_NAT)?,
            half_open: take(MAP_HALF_OPEN)?,
            half_nat: take(MAP_HALF_NAT)?,
            backend_stats: take(MAP_BACKEND_STATS)?,
            listener_stats: take(MAP_LISTENER_STATS)?,
            reasons: take(MAP_REASONS)?,
            lease: take(MAP_LEASE)?,
        })
    }

    pub(super) fn open_pinned(dir: &Path) -> Result<Self, DataplaneError> {
        let open = |name: &'static str| -> Result<Map, DataplaneError> {
            let path = dir.join(name);
            if !path.exists() {
                return Err(DataplaneError::MissingMap { name });
            }
            let data = MapData::from_pin(&path).map_err(map_err(name, "opening the pin"))?;
            Map::from_map_data(data).map_err(map_err(name, "opening the pin"))
        };
        Ok(Self {
            listeners: open(MAP_LISTENERS)?,
            backends: open(MAP_BACKENDS)?,
            writer: open(MAP_WRITER)?,
            reader_ctl: open(MAP_READER_CTL)?,
            maglev: open(MAP_MAGLEV)?,
            flows: open(MAP_FLOWS)?,
            nat: open(MAP_NAT)?,
            half_open: open(MAP_HALF_OPEN)?,
            half_nat: open(MAP_HALF_NAT)?,
            backend_stats: open(MAP_BACKEND_STATS)?,
            listener_stats: open(MAP_LISTENER_STATS)?,
            reasons: open(MAP_REASONS)?,
            lease: open(MAP_LEASE)?,
        })
    }

    /// Initial values for maps that were just created (an all-zero writer would mean id 0).
    pub(super) fn init_fresh(&mut self) -> Result<(), DataplaneError> {
        self.write_writer(None)?;
        let mut ctl: Array<&mut MapData, ReaderCtl> =
            Array::try_from(&mut self.reader_ctl).map_err(map_err(MAP_READER_CTL, "opening"))?;
        ctl.set(0, ReaderCtl::default(), 0).map_err(map_err(MAP_READER_CTL, "initialising"))
    }

    pub(super) fn write_listeners(&mut self, vip: Ipv4Addr, listeners: &[(u16, u8)]) -> Result<(), DataplaneError> {
        let mut map: HashMap<&mut MapData, ListenerKey, Listener> =
            HashMap::try_from(&mut self.listeners).map_err(map_err(MAP_LISTENERS, "opening"))?;
        let wanted: Vec<(ListenerKey, Listener)> = listeners
            .iter()
            .enumerate()
            .map(|(i, &(port, pool))| {
                let key = ListenerKey { vip: ip_to_map(vip.octets()), port: port_to_map(port), _pad: 0 };
                (key, Listener { pool, _pad: [0; 3], index: i as u32 })
            })
            .collect();
        let existing: Vec<ListenerKey> = map.keys().filter_map(Result::ok).collect();
        for key in existing {
            if !wanted.iter().any(|(k, _)| *k == key) {
                map.remove(&key).map_err(map_err(MAP_LISTENERS, "removing a listener"))?;
            }
        }
        for (key, value) in wanted {
            map.insert(key, value, 0).map_err(map_err(MAP_LISTENERS, "inserting a listener"))?;
        }
        Ok(())
    }

    pub(super) fn write_backends(&mut self, backends: &[BackendSpec]) -> Result<(), DataplaneError> {
        let mut map: Array<&mut MapData, Backend> =
            Array::try_from(&mut self.backends).map_err(map_err(MAP_BACKENDS, "opening"))?;
        for id in 0..MAX_BACKENDS {
            let value = backends.iter().find(|b| b.id == id).map_or_else(Backend::default, backend_value);
            map.set(id, value, 0).map_err(map_err(MAP_BACKENDS, "writing a backend"))?;
        }
        Ok(())
    }

    /// Writes these backends only; every other entry stays as it is.
    pub(super) fn add_backends(&mut self, backends: &[BackendSpec]) -> Result<(), DataplaneError> {
        let mut map: Array<&mut MapData, Backend> =
            Array::try_from(&mut self.backends).map_err(map_err(MAP_BACKENDS, "opening"))?;
        for b in backends {
            map.set(b.id, backend_value(b), 0).map_err(map_err(MAP_BACKENDS, "writing a backend"))?;
        }
        Ok(())
    }

    pub(super) fn require_backend(&self, id: u32) -> Result<(), DataplaneError> {
        if id >= MAX_BACKENDS {
            return Err(DataplaneError::BackendIdOutOfRange { id });
        }
        let map: Array<&MapData, Backend> = Array::try_from(&self.backends).map_err(map_err(MAP_BACKENDS, "opening"))?;
        let b = map.get(&id, 0).map_err(map_err(MAP_BACKENDS, "reading a backend"))?;
        if b.flags & BACKEND_F_ACTIVE == 0 {
            return Err(DataplaneError::UnknownBackend { id });
        }
        Ok(())
    }

    pub(super) fn write_writer(&mut self, writer: Option<u32>) -> Result<(), DataplaneError> {
        let mut map: Array<&mut MapData, Writer> =
            Array::try_from(&mut self.writer).map_err(map_err(MAP_WRITER, "opening"))?;
        map.set(0, Writer { backend: writer.unwrap_or(BACKEND_NONE) }, 0).map_err(map_err(MAP_WRITER, "writing"))
    }

    pub(super) fn write_readers(&mut self, readers: &[(u32, u32)]) -> Result<(), DataplaneError> {
        let mut table = vec![BACKEND_NONE; MAGLEV_SIZE as usize];
        let placed = lb_common::maglev::build(readers, &mut table).map_err(|source| DataplaneError::Maglev { source })?;
        let mut ctl_map: Array<&mut MapData, ReaderCtl> =
            Array::try_from(&mut self.reader_ctl).map_err(map_err(MAP_READER_CTL, "opening"))?;
        let ctl = ctl_map.get(&0, 0).map_err(map_err(MAP_READER_CTL, "reading"))?;
        let next = (ctl.active & 1) ^ 1;
        let mut maglev: Array<&mut MapData, u32> =
            Array::try_from(&mut self.maglev).map_err(map_err(MAP_MAGLEV, "opening"))?;
        for (i, id) in table.iter().enumerate() {
            maglev.set(next * MAGLEV_SIZE + i as u32, id, 0).map_err(map_err(MAP_MAGLEV, "writing a slot"))?;
        }
        ctl_map
            .set(0, ReaderCtl { active: next, readers: placed as u32 }, 0)
            .map_err(map_err(MAP_READER_CTL, "switching tables"))
    }

    /// Writes the lease: valid until `expires_ns` (CLOCK_MONOTONIC; 0 = expired now).
    pub(super) fn write_lease(&mut self, vip: Ipv4Addr, expires_ns: u64, grace: Duration) -> Result<(), DataplaneError> {
        let mut map: Array<&mut MapData, Lease> = Array::try_from(&mut self.lease).map_err(map_err(MAP_LEASE, "opening"))?;
        let value = Lease { expires_ns, grace_ns: grace.as_nanos() as u64, vip: ip_to_map(vip.octets()), _pad: 0 };
        map.set(0, value, 0).map_err(map_err(MAP_LEASE, "writing"))
    }

    pub(super) fn lease_valid(&self) -> Result<bool, DataplaneError> {
        Ok(self.lease_view()?.state == lb_common::LEASE_VALID)
    }

    fn lease_view(&self) -> Result<LeaseView, DataplaneError> {
        let map: Array<&MapData, Lease> = Array::try_from(&self.lease).map_err(map_err(MAP_LEASE, "opening"))?;
        let l = map.get(&0, 0).map_err(map_err(MAP_LEASE, "reading"))?;
        let now = monotonic_ns()?;
        Ok(LeaseView {
            state: l.state(now),
            remaining: Duration::from_nanos(l.expires_ns.saturating_sub(now)),
            expired_for: (l.expires_ns != 0 && now >= l.expires_ns).then(|| Duration::from_nanos(now - l.expires_ns)),
            grace: Duration::from_nanos(l.grace_ns),
        })
    }

    /// Write-port flows (established or half-open) whose backend is not `writer` and that are
    /// not closed, with the addresses a RST to their client needs; they are removed from their
    /// tables.
    pub(super) fn take_stale_write_flows(&mut self, writer: Option<u32>) -> Result<Vec<(FlowKey, Flow)>, DataplaneError> {
        let stale_in = |table: Vec<(FlowKey, Flow)>| -> Vec<(FlowKey, Flow)> {
            table
                .into_iter()
                .filter(|(_, f)| f.pool == POOL_WRITE && Some(f.backend_id) != writer && !matches!(f.state, STATE_CLOSED | STATE_CLOSING))
                .collect()
        };
        let established = stale_in(raw_entries(&self.flows, MAP_FLOWS)?);
        let half_open = stale_in(raw_entries(&self.half_open, MAP_HALF_OPEN)?);
        remove_flows(&mut self.flows, &mut self.nat, (MAP_FLOWS, MAP_NAT), &established)?;
        remove_flows(&mut self.half_open, &mut self.half_nat, (MAP_HALF_OPEN, MAP_HALF_NAT), &half_open)?;
        Ok(established.into_iter().chain(half_open).collect())
    }

    pub(super) fn writer_id(&self) -> Result<Option<u32>, DataplaneError> {
        let map: Array<&MapData, Writer> = Array::try_from(&self.writer).map_err(map_err(MAP_WRITER, "opening"))?;
        let w = map.get(&0, 0).map_err(map_err(MAP_WRITER, "reading"))?;
        Ok((w.backend != BACKEND_NONE).then_some(w.backend))
    }

    fn backend_views(&self) -> Result<Vec<BackendView>, DataplaneError> {
        let map: Array<&MapData, Backend> = Array::try_from(&self.backends).map_err(map_err(MAP_BACKENDS, "opening"))?;
        let mut out = Vec::new();
        for id in 0..MAX_BACKENDS {
            let b = map.get(&id, 0).map_err(map_err(MAP_BACKENDS, "reading"))?;
            if b.flags & BACKEND_F_ACTIVE != 0 {
                out.push(BackendView {
                    id,
                    addr: Ipv4Addr::from(ip_from_map(b.addr)),
                    port: port_from_map(b.port),
                    mac: (b.mac != [0; 6]).then_some(b.mac),
                });
            }
        }
        Ok(out)
    }

    fn listener_views(&self) -> Result<Vec<ListenerView>, DataplaneError> {
        let map: HashMap<&MapData, ListenerKey, Listener> =
            HashMap::try_from(&self.listeners).map_err(map_err(MAP_LISTENERS, "opening"))?;
        let mut out = Vec::new();
        for item in map.iter() {
            let (k, v) = item.map_err(map_err(MAP_LISTENERS, "iterating"))?;
            out.push(ListenerView {
                vip: Ipv4Addr::from(ip_from_map(k.vip)),
                port: port_from_map(k.port),
                pool: pool_name(v.pool),
                index: v.index,
            });
        }
        out.sort_by_key(|l| l.index);
        Ok(out)
    }

    fn reader_summary(&self) -> Result<ReaderSummary, DataplaneError> {
        let ctl_map: Array<&MapData, ReaderCtl> =
            Array::try_from(&self.reader_ctl).map_err(map_err(MAP_READER_CTL, "opening"))?;
        let ctl = ctl_map.get(&0, 0).map_err(map_err(MAP_READER_CTL, "reading"))?;
        let mut slots: Vec<(u32, u32)> = Vec::new();
        if ctl.readers > 0 {
            let maglev: Array<&MapData, u32> = Array::try_from(&self.maglev).map_err(map_err(MAP_MAGLEV, "opening"))?;
            let base = (ctl.active & 1) * MAGLEV_SIZE;
            for i in 0..MAGLEV_SIZE {
                let id = maglev.get(&(base + i), 0).map_err(map_err(MAP_MAGLEV, "reading"))?;
                match slots.iter_mut().find(|(sid, _)| *sid == id) {
                    Some((_, n)) => *n += 1,
                    None => slots.push((id, 1)),
                }
            }
            slots.sort_unstable();
        }
        Ok(ReaderSummary { active_table: ctl.active & 1, readers: ctl.readers, slots, table_size: MAGLEV_SIZE })
    }

    /// One reason counter summed over CPUs.
    pub(super) fn reason_total(&self, code: u32) -> Result<u64, DataplaneError> {
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(&self.reasons).map_err(map_err(MAP_REASONS, "opening"))?;
        Ok(map.get(&code, 0).map_err(map_err(MAP_REASONS, "reading"))?.iter().sum())
    }

    pub(super) fn counters(&self) -> Result<Counters, DataplaneError> {
        let reasons_map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(&self.reasons).map_err(map_err(MAP_REASONS, "opening"))?;
        let mut reasons = [0u64; REASON_COUNT as usize];
        for (code, slot) in reasons.iter_mut().enumerate() {
            let v = reasons_map.get(&(code as u32), 0).map_err(map_err(MAP_REASONS, "reading"))?;
            *slot = v.iter().sum();
        }
        let configured: Vec<u32> = self.backend_views()?.iter().map(|b| b.id).collect();
        let bstats: PerCpuArray<&MapData, BackendStats> =
            PerCpuArray::try_from(&self.backend_stats).map_err(map_err(MAP_BACKEND_STATS, "opening"))?;
        let mut backends = Vec::new();
        for id in 0..MAX_BACKENDS {
            let per_cpu = bstats.get(&id, 0).map_err(map_err(MAP_BACKEND_STATS, "reading"))?;
            let mut s = BackendStats::default();
            for c in per_cpu.iter() {
                s.to_backend_packets += c.to_backend_packets;
                s.to_backend_bytes += c.to_backend_bytes;
                s.to_client_packets += c.to_client_packets;
                s.to_client_bytes += c.to_client_bytes;
                s.new_flows += c.new_flows;
                s.resets += c.resets;
            }
            if configured.contains(&id) || s != BackendStats::default() {
                backends.push((id, s));
            }
        }
        let lstats: PerCpuArray<&MapData, ListenerStats> =
            PerCpuArray::try_from(&self.listener_stats).map_err(map_err(MAP_LISTENER_STATS, "opening"))?;
        let mut listeners = Vec::new();
        for l in self.listener_views()? {
            let per_cpu = lstats.get(&l.index, 0).map_err(map_err(MAP_LISTENER_STATS, "reading"))?;
            let mut s = ListenerStats::default();
            for c in per_cpu.iter() {
                s.packets += c.packets;
                s.bytes += c.bytes;
                s.new_flows += c.new_flows;
                s.resets += c.resets;
            }
            listeners.push((l, s));
        }
        Ok(Counters { reasons, backends, listeners })
    }

    /// Every flow, established and half-open.
    fn raw_flows(&self) -> Result<Vec<(FlowKey, Flow)>, DataplaneError> {
        let mut all = raw_entries(&self.flows, MAP_FLOWS)?;
        all.extend(raw_entries(&self.half_open, MAP_HALF_OPEN)?);
        Ok(all)
    }

    pub(super) fn flows(&self) -> Result<Vec<FlowView>, DataplaneError> {
        let now = monotonic_ns()?;
        let mut out: Vec<FlowView> = self
            .raw_flows()?
            .into_iter()
            .map(|(k, f)| FlowView {
                half_open: is_half_open(f.state),
                client: SocketAddrV4::new(ip_from_map(k.client_addr).into(), port_from_map(k.client_port)),
                vip: SocketAddrV4::new(ip_from_map(k.vip).into(), port_from_map(k.listener_port)),
                nat_port: port_from_map(f.nat_port),
                backend: SocketAddrV4::new(ip_from_map(f.backend_addr).into(), port_from_map(f.backend_port)),
                backend_id: f.backend_id,
                pool: pool_name(f.pool),
                state: state_name(f.state),
                idle: Duration::from_nanos(now.saturating_sub(f.last_seen_ns)),
                client_next_seq: f.client_next_seq,
            })
            .collect();
        out.sort_by_key(|f| (f.vip, f.client));
        Ok(out)
    }

    /// Removes expired flows from both pairs of tables, and reverse entries whose forward entry
    /// is gone or belongs to another port.
    pub(super) fn sweep(&mut self, timeouts: &Timeouts) -> Result<SweepStats, DataplaneError> {
        let now = monotonic_ns()?;
        let mut stats = SweepStats::default();
        for (forward, reverse, names) in [
            (&mut self.flows, &mut self.nat, (MAP_FLOWS, MAP_NAT)),
            (&mut self.half_open, &mut self.half_nat, (MAP_HALF_OPEN, MAP_HALF_NAT)),
        ] {
            let all = raw_entries(forward, names.0)?;
            stats.examined += all.len();
            let expired: Vec<(FlowKey, Flow)> =
                all.into_iter().filter(|(_, f)| flow_expired(f.state, now.saturating_sub(f.last_seen_ns), timeouts)).collect();
            for (_, f) in &expired {
                match f.state {
                    STATE_CLOSED | STATE_CLOSING => stats.removed_closed += 1,
                    s if is_half_open(s) => stats.removed_half_open += 1,
                    _ => stats.removed_idle += 1,
                }
            }
            remove_flows(forward, reverse, names, &expired)?;
            stats.removed_orphans += remove_orphans(forward, reverse, names)?;
        }
        Ok(stats)
    }

    pub(super) fn dump(&self) -> Result<MapDump, DataplaneError> {
        Ok(MapDump {
            backends: self.backend_views()?,
            writer: self.writer_id()?,
            readers: self.reader_summary()?,
            listeners: self.listener_views()?,
            flows: self.flows()?,
            capacity: FlowCapacity { established: MAX_FLOWS, half_open: MAX_HALF_OPEN },
            counters: self.counters()?,
            lease: self.lease_view()?,
        })
    }
}

/// Every entry of a flow table (`flows` or `half_open`).
fn raw_entries(map: &Map, name: &'static str) -> Result<Vec<(FlowKey, Flow)>, DataplaneError> {
    let map: HashMap<&MapData, FlowKey, Flow> = HashMap::try_from(map).map_err(map_err(name, "opening"))?;
    let mut out = Vec::new();
    for item in map.iter() {
        match item {
            Ok(kv) => out.push(kv),
            // An entry removed by the data plane between key and value lookups.
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(name, "iterating")(e)),
        }
    }
    Ok(out)
}

/// Removes `flows` from a forward table and their NAT ports from its reverse table. An entry
/// already gone (the data plane closed it meanwhile) is not an error.
fn remove_flows(
    forward: &mut Map,
    reverse: &mut Map,
    (fname, rname): (&'static str, &'static str),
    flows: &[(FlowKey, Flow)],
) -> Result<(), DataplaneError> {
    let mut fmap: HashMap<&mut MapData, FlowKey, Flow> = HashMap::try_from(forward).map_err(map_err(fname, "opening"))?;
    let mut rmap: HashMap<&mut MapData, NatKey, FlowKey> = HashMap::try_from(reverse).map_err(map_err(rname, "opening"))?;
    for (key, f) in flows {
        let _ = fmap.remove(key);
        let _ = rmap.remove(&NatKey { backend_addr: f.backend_addr, vip: key.vip, backend_port: f.backend_port, nat_port: f.nat_port });
    }
    Ok(())
}

/// Removes reverse entries whose forward entry is gone or holds another port; returns how many.
fn remove_orphans(forward: &mut Map, reverse: &mut Map, (fname, rname): (&'static str, &'static str)) -> Result<usize, DataplaneError> {
    let fmap: HashMap<&MapData, FlowKey, Flow> = HashMap::try_from(&*forward).map_err(map_err(fname, "opening"))?;
    let mut rmap: HashMap<&mut MapData, NatKey, FlowKey> = HashMap::try_from(reverse).map_err(map_err(rname, "opening"))?;
    let entries: Vec<(NatKey, FlowKey)> = rmap.iter().filter_map(Result::ok).collect();
    let mut removed = 0;
    for (nkey, fkey) in entries {
        let live = match fmap.get(&fkey, 0) {
            Ok(f) => f.nat_port == nkey.nat_port && f.backend_addr == nkey.backend_addr && f.backend_port == nkey.backend_port,
            Err(_) => false,
        };
        if !live {
            let _ = rmap.remove(&nkey);
            removed += 1;
        }
    }
    Ok(removed)
}
