//! Plain-data views of the maps (what the control plane, metrics and `pglb map dump` read).

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use lb_common::{BackendStats, ListenerStats, reason::{REASON_COUNT, REASON_NAMES}};

/// A configured backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendView {
    /// Backend id.
    pub id: u32,
    /// Address.
    pub addr: Ipv4Addr,
    /// PostgreSQL port.
    pub port: u16,
    /// Fallback MAC from the ARP table at configuration time, if any.
    pub mac: Option<[u8; 6]>,
}

/// A VIP listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerView {
    /// VIP.
    pub vip: Ipv4Addr,
    /// Port.
    pub port: u16,
    /// `"write"` or `"read"`.
    pub pool: &'static str,
    /// Index of its counters.
    pub index: u32,
}

/// The live reader table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReaderSummary {
    /// Which half of the double-buffered table is live.
    pub active_table: u32,
    /// Readers in it.
    pub readers: u32,
    /// Slots per backend id, sorted by id.
    pub slots: Vec<(u32, u32)>,
    /// Slots in one table.
    pub table_size: u32,
}

/// One live connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowView {
    /// Client address and port.
    pub client: SocketAddrV4,
    /// VIP and listener port.
    pub vip: SocketAddrV4,
    /// SNAT source port on the VIP toward the backend.
    pub nat_port: u16,
    /// Backend address and port.
    pub backend: SocketAddrV4,
    /// Backend id.
    pub backend_id: u32,
    /// `"write"` or `"read"`.
    pub pool: &'static str,
    /// TCP state name (`lb_common::tcp`).
    pub state: &'static str,
    /// In the half-open table (SYN_SENT or SYN_RECV): the client has not completed the
    /// handshake.
    pub half_open: bool,
    /// Time since the last packet.
    pub idle: Duration,
    /// The sequence number the client expects next from the backend side (0: none seen).
    pub client_next_seq: u32,
}

/// Counters summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Packets per reason code (index = `lb_common::reason` code).
    pub reasons: [u64; REASON_COUNT as usize],
    /// Per backend id (configured backends and any with traffic).
    pub backends: Vec<(u32, BackendStats)>,
    /// Per listener.
    pub listeners: Vec<(ListenerView, ListenerStats)>,
}

impl Counters {
    /// The count of one reason code.
    pub fn reason(&self, code: u32) -> u64 {
        self.reasons.get(code as usize).copied().unwrap_or(0)
    }

    /// `(name, count)` for every reason.
    pub fn named_reasons(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REASON_NAMES.iter().copied().zip(self.reasons.iter().copied())
    }
}

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Flows looked at.
    pub examined: usize,
    /// Removed for being idle.
    pub removed_idle: usize,
    /// Removed after RST or both FINs.
    pub removed_closed: usize,
    /// Half-open flows removed after the half-open timeout.
    pub removed_half_open: usize,
    /// Reverse entries without a forward entry.
    pub removed_orphans: usize,
}

/// The control plane's lease as the data plane sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// `lb_common::LEASE_VALID`, `LEASE_EXPIRED` or `LEASE_PAST_GRACE`.
    pub state: u8,
    /// Until it runs out (zero once it has).
    pub remaining: Duration,
    /// How long ago it ran out, if it has.
    pub expired_for: Option<Duration>,
    /// How long write flows go on after it ran out.
    pub grace: Duration,
}

impl fmt::Display for LeaseView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.expired_for) {
            (lb_common::LEASE_VALID, _) => write!(f, "valid for {} ms more (renewed by the running control plane)", self.remaining.as_millis()),
            (lb_common::LEASE_EXPIRED, Some(d)) => write!(
                f,
                "EXPIRED {:.1}s ago: ARP for the VIP dropped, new flows reset; write flows reset in {:.1}s (grace)",
                d.as_secs_f64(),
                self.grace.saturating_sub(d).as_secs_f64()
            ),
            (_, Some(d)) => write!(f, "EXPIRED {:.1}s ago: ARP for the VIP dropped, new flows and write flows reset", d.as_secs_f64()),
            (_, None) => write!(f, "never written: ARP for the VIP dropped, new flows and write flows reset"),
        }
    }
}

/// How many flows each table holds at most (`lb_common::MAX_FLOWS`, `MAX_HALF_OPEN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowCapacity {
    /// Established flows (a plain hash: full means new handshakes are refused).
    pub established: u32,
    /// Half-open flows (an LRU: full means the oldest half-open flow is reclaimed).
    pub half_open: u32,
}

/// Everything in the maps, for `pglb map dump`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDump {
    /// Configured backends.
    pub backends: Vec<BackendView>,
    /// Current writer id.
    pub writer: Option<u32>,
    /// Reader table summary.
    pub readers: ReaderSummary,
    /// Listeners.
    pub listeners: Vec<ListenerView>,
    /// Live flows.
    pub flows: Vec<FlowView>,
    /// Sizes of the flow tables.
    pub capacity: FlowCapacity,
    /// Counters.
    pub counters: Counters,
    /// The control plane's lease.
    pub lease: LeaseView,
}

fn backend_name(backends: &[BackendView], id: u32) -> String {
    match backends.iter().find(|b| b.id == id) {
        Some(b) => format!("#{id} {}:{}", b.addr, b.port),
        None => format!("#{id} (unconfigured)"),
    }
}

impl fmt::Display for MapDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "lease: {}", self.lease)?;
        writeln!(f, "listeners:")?;
        for l in &self.listeners {
            writeln!(f, "  {}:{:<5} {}", l.vip, l.port, l.pool)?;
        }
        writeln!(f, "backends:")?;
        if self.backends.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for b in &self.backends {
            let mac = b.mac.map_or_else(|| "-".to_owned(), |m| {
                format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
            });
            writeln!(f, "  #{:<3} {}:{}  fallback mac {mac}", b.id, b.addr, b.port)?;
        }
        match self.writer {
            Some(id) => writeln!(f, "writer: {}", backend_name(&self.backends, id))?,
            None => writeln!(f, "writer: none (write connections are reset)")?,
        }
        write!(f, "readers: {} in table {} of {} slots", self.readers.readers, self.readers.active_table, self.readers.table_size)?;
        if self.readers.slots.is_empty() {
            writeln!(f, " (none: read connections are reset)")?;
        } else {
            writeln!(f)?;
            for (id, slots) in &self.readers.slots {
                let share = *slots as f64 * 100.0 / self.readers.table_size.max(1) as f64;
                writeln!(f, "  {:<28} {slots:>5} slots {share:5.1}%", backend_name(&self.backends, *id))?;
            }
        }
        let half_open = self.flows.iter().filter(|fl| fl.half_open).count();
        writeln!(
            f,
            "flows: {} established of {}, {half_open} half-open of {} (oldest reclaimed first)",
            self.flows.len() - half_open,
            self.capacity.established,
            self.capacity.half_open
        )?;
        for fl in &self.flows {
            writeln!(
                f,
                "  {:<21} -> {:<21} -> {:<21} (nat port {:<5} {:<5} {:<11} idle {:.1}s)",
                fl.client.to_string(),
                fl.vip.to_string(),
                fl.backend.to_string(),
                fl.nat_port,
                fl.pool,
                fl.state,
                fl.idle.as_secs_f64()
            )?;
        }
        writeln!(f, "counters per backend:")?;
        for (id, s) in &self.counters.backends {
            writeln!(
                f,
                "  {:<28} to backend {} pkts {} bytes, to client {} pkts {} bytes, {} new flows, {} resets",
                backend_name(&self.backends, *id),
                s.to_backend_packets,
                s.to_backend_bytes,
                s.to_client_packets,
                s.to_client_bytes,
                s.new_flows,
                s.resets
            )?;
        }
        writeln!(f, "counters per listener:")?;
        for (l, s) in &self.counters.listeners {
            writeln!(
                f,
                "  {}:{:<5} {:<5} {} pkts {} bytes, {} new flows, {} resets",
                l.vip, l.port, l.pool, s.packets, s.bytes, s.new_flows, s.resets
            )?;
        }
        writeln!(f, "counters per reason:")?;
        for (name, n) in self.counters.named_reasons() {
            writeln!(f, "  {name:<24} {n}")?;
        }
        Ok(())
    }
}
