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

/// The `schema` of `pglb map dump --json` (docs/JSON.md): additive changes keep it, renames and
/// removals bump it.
pub const MAP_DUMP_SCHEMA: &str = "pglb.map-dump/1";

/// `pglb map dump --json`: one JSON object (docs/JSON.md), built from explicit structs so the
/// field names are the schema's and not the Rust types'.
mod json {
    use serde::{Serialize, Serializer, ser::SerializeMap as _};

    use super::{BackendView, FlowView, MAP_DUMP_SCHEMA, MapDump};

    #[derive(Serialize)]
    pub struct Dump {
        schema: &'static str,
        lease: Lease,
        listeners: Vec<Listener>,
        backends: Vec<Backend>,
        writer: Option<BackendRef>,
        readers: Readers,
        flows: Vec<Flow>,
        capacity: Capacity,
        counters: Counters,
    }

    #[derive(Serialize)]
    struct Lease {
        state: &'static str,
        remaining_ms: u64,
        expired_for_ms: Option<u64>,
        grace_ms: u64,
    }

    #[derive(Serialize)]
    struct Listener {
        vip: String,
        pool: &'static str,
    }

    #[derive(Serialize)]
    struct Backend {
        id: u32,
        addr: String,
        fallback_mac: Option<String>,
    }

    #[derive(Serialize)]
    struct BackendRef {
        id: u32,
        addr: Option<String>,
    }

    #[derive(Serialize)]
    struct Readers {
        table: u32,
        readers: u32,
        table_size: u32,
        slots: Vec<ReaderSlots>,
    }

    #[derive(Serialize)]
    struct ReaderSlots {
        id: u32,
        addr: Option<String>,
        slots: u32,
    }

    #[derive(Serialize)]
    struct Flow {
        client: String,
        vip: String,
        backend: String,
        backend_id: u32,
        nat_port: u16,
        pool: &'static str,
        state: &'static str,
        half_open: bool,
        idle_s: f64,
    }

    #[derive(Serialize)]
    struct Capacity {
        established: u32,
        half_open: u32,
    }

    #[derive(Serialize)]
    struct Counters {
        reasons: Reasons,
        backends: Vec<BackendCounters>,
        listeners: Vec<ListenerCounters>,
    }

    /// Reason name → count, in reason-code order.
    struct Reasons(Vec<(&'static str, u64)>);

    impl Serialize for Reasons {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (name, n) in &self.0 {
                map.serialize_entry(name, n)?;
            }
            map.end()
        }
    }

    #[derive(Serialize)]
    struct BackendCounters {
        id: u32,
        addr: Option<String>,
        to_backend_packets: u64,
        to_backend_bytes: u64,
        to_client_packets: u64,
        to_client_bytes: u64,
        new_flows: u64,
        resets: u64,
    }

    #[derive(Serialize)]
    struct ListenerCounters {
        vip: String,
        pool: &'static str,
        packets: u64,
        bytes: u64,
        new_flows: u64,
        resets: u64,
    }

    fn addr_of(backends: &[BackendView], id: u32) -> Option<String> {
        backends.iter().find(|b| b.id == id).map(|b| format!("{}:{}", b.addr, b.port))
    }

    fn millis(d: std::time::Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    fn flow(f: &FlowView) -> Flow {
        Flow {
            client: f.client.to_string(),
            vip: f.vip.to_string(),
            backend: f.backend.to_string(),
            backend_id: f.backend_id,
            nat_port: f.nat_port,
            pool: f.pool,
            state: f.state,
            half_open: f.half_open,
            idle_s: f.idle.as_secs_f64(),
        }
    }

    impl From<&MapDump> for Dump {
        fn from(d: &MapDump) -> Dump {
            let b = &d.backends;
            let lease_state = match (d.lease.state, d.lease.expired_for) {
                (lb_common::LEASE_VALID, _) => "valid",
                (_, None) => "never_written",
                (lb_common::LEASE_EXPIRED, Some(_)) => "expired",
                (_, Some(_)) => "past_grace",
            };
            Dump {
                schema: MAP_DUMP_SCHEMA,
                lease: Lease {
                    state: lease_state,
                    remaining_ms: millis(d.lease.remaining),
                    expired_for_ms: d.lease.expired_for.map(millis),
                    grace_ms: millis(d.lease.grace),
                },
                listeners: d.listeners.iter().map(|l| Listener { vip: format!("{}:{}", l.vip, l.port), pool: l.pool }).collect(),
                backends: b
                    .iter()
                    .map(|v| Backend {
                        id: v.id,
                        addr: format!("{}:{}", v.addr, v.port),
                        fallback_mac: v.mac.map(|m| {
                            format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
                        }),
                    })
                    .collect(),
                writer: d.writer.map(|id| BackendRef { id, addr: addr_of(b, id) }),
                readers: Readers {
                    table: d.readers.active_table,
                    readers: d.readers.readers,
                    table_size: d.readers.table_size,
                    slots: d.readers.slots.iter().map(|&(id, slots)| ReaderSlots { id, addr: addr_of(b, id), slots }).collect(),
                },
                flows: d.flows.iter().map(flow).collect(),
                capacity: Capacity { established: d.capacity.established, half_open: d.capacity.half_open },
                counters: Counters {
                    reasons: Reasons(d.counters.named_reasons().collect()),
                    backends: d
                        .counters
                        .backends
                        .iter()
                        .map(|(id, s)| BackendCounters {
                            id: *id,
                            addr: addr_of(b, *id),
                            to_backend_packets: s.to_backend_packets,
                            to_backend_bytes: s.to_backend_bytes,
                            to_client_packets: s.to_client_packets,
                            to_client_bytes: s.to_client_bytes,
                            new_flows: s.new_flows,
                            resets: s.resets,
                        })
                        .collect(),
                    listeners: d
                        .counters
                        .listeners
                        .iter()
                        .map(|(l, s)| ListenerCounters {
                            vip: format!("{}:{}", l.vip, l.port),
                            pool: l.pool,
                            packets: s.packets,
                            bytes: s.bytes,
                            new_flows: s.new_flows,
                            resets: s.resets,
                        })
                        .collect(),
                },
            }
        }
    }
}

impl MapDump {
    /// `pglb map dump --json`: one pretty-printed JSON object with `"schema": "pglb.map-dump/1"`
    /// (docs/JSON.md), ending with a newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(&json::Dump::from(self)).expect("a map dump serializes");
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{BackendStats, ListenerStats, reason::REASON_NAMES};

    use super::*;

    fn sample() -> MapDump {
        let vip = Ipv4Addr::new(172, 20, 0, 100);
        let pg1 = Ipv4Addr::new(172, 20, 0, 10);
        let write = ListenerView { vip, port: 3000, pool: "write", index: 0 };
        let mut reasons = [0; REASON_COUNT as usize];
        reasons[1] = 7;
        MapDump {
            backends: vec![BackendView { id: 0, addr: pg1, port: 5432, mac: Some([0x02, 0, 0, 0, 0, 0x0a]) }],
            writer: Some(0),
            readers: ReaderSummary { active_table: 1, readers: 1, slots: vec![(0, 256), (5, 1)], table_size: 257 },
            listeners: vec![write],
            flows: vec![
                FlowView {
                    client: SocketAddrV4::new(Ipv4Addr::new(172, 20, 0, 2), 40000),
                    vip: SocketAddrV4::new(vip, 3000),
                    nat_port: 61000,
                    backend: SocketAddrV4::new(pg1, 5432),
                    backend_id: 0,
                    pool: "write",
                    state: "ESTABLISHED",
                    half_open: false,
                    idle: Duration::from_millis(1500),
                    client_next_seq: 1,
                },
                FlowView {
                    client: SocketAddrV4::new(Ipv4Addr::new(172, 20, 0, 2), 40001),
                    half_open: true,
                    state: "SYN_SENT",
                    idle: Duration::ZERO,
                    ..sample_flow_placeholder(vip, pg1)
                },
            ],
            capacity: FlowCapacity { established: 65536, half_open: 16384 },
            counters: Counters {
                reasons,
                backends: vec![(0, BackendStats { to_backend_packets: 10, to_backend_bytes: 640, new_flows: 2, ..Default::default() })],
                listeners: vec![(write, ListenerStats { packets: 10, bytes: 640, new_flows: 2, resets: 1 })],
            },
            lease: LeaseView {
                state: lb_common::LEASE_EXPIRED,
                remaining: Duration::ZERO,
                expired_for: Some(Duration::from_millis(2500)),
                grace: Duration::from_secs(10),
            },
        }
    }

    fn sample_flow_placeholder(vip: Ipv4Addr, pg1: Ipv4Addr) -> FlowView {
        FlowView {
            client: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            vip: SocketAddrV4::new(vip, 3000),
            nat_port: 61001,
            backend: SocketAddrV4::new(pg1, 5432),
            backend_id: 0,
            pool: "write",
            state: "",
            half_open: false,
            idle: Duration::ZERO,
            client_next_seq: 0,
        }
    }

    #[test]
    fn json_has_the_schema_and_the_documented_fields() {
        let text = sample().to_json();
        assert!(text.ends_with("}\n"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], "pglb.map-dump/1");
        assert_eq!(v["lease"]["state"], "expired");
        assert_eq!(v["lease"]["expired_for_ms"], 2500);
        assert_eq!(v["lease"]["grace_ms"], 10000);
        assert_eq!(v["listeners"][0]["vip"], "172.20.0.100:3000");
        assert_eq!(v["listeners"][0]["pool"], "write");
        assert_eq!(v["backends"][0]["addr"], "172.20.0.10:5432");
        assert_eq!(v["backends"][0]["fallback_mac"], "02:00:00:00:00:0a");
        assert_eq!(v["writer"]["id"], 0);
        assert_eq!(v["writer"]["addr"], "172.20.0.10:5432");
        assert_eq!(v["readers"]["slots"][1]["addr"], serde_json::Value::Null, "an unconfigured id has no address");
        assert_eq!(v["readers"]["slots"][0]["slots"], 256);
        let flow = &v["flows"][0];
        assert_eq!(flow["client"], "172.20.0.2:40000");
        assert_eq!(flow["vip"], "172.20.0.100:3000");
        assert_eq!(flow["backend"], "172.20.0.10:5432");
        assert_eq!(flow["nat_port"], 61000);
        assert_eq!(flow["state"], "ESTABLISHED");
        assert_eq!(flow["half_open"], false);
        assert_eq!(flow["idle_s"], 1.5);
        assert_eq!(v["flows"][1]["half_open"], true);
        assert_eq!(v["capacity"]["established"], 65536);
        assert_eq!(v["capacity"]["half_open"], 16384);
        let reasons = v["counters"]["reasons"].as_object().unwrap();
        assert_eq!(reasons.len(), REASON_NAMES.len(), "every reason, zero or not");
        assert_eq!(reasons[REASON_NAMES[1]], 7);
        assert_eq!(reasons[REASON_NAMES[0]], 0);
        assert_eq!(v["counters"]["backends"][0]["addr"], "172.20.0.10:5432");
        assert_eq!(v["counters"]["backends"][0]["to_backend_packets"], 10);
        assert_eq!(v["counters"]["listeners"][0]["resets"], 1);
        // Round trip: what a consumer parses prints back to the same object.
        let again: serde_json::Value = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(again, v);
    }

    #[test]
    fn json_names_every_lease_state() {
        let state = |state, expired_for| {
            let d = MapDump { lease: LeaseView { state, expired_for, ..sample().lease }, ..sample() };
            serde_json::from_str::<serde_json::Value>(&d.to_json()).unwrap()["lease"]["state"].as_str().unwrap().to_owned()
        };
        assert_eq!(state(lb_common::LEASE_VALID, None), "valid");
        assert_eq!(state(lb_common::LEASE_EXPIRED, Some(Duration::from_secs(1))), "expired");
        assert_eq!(state(lb_common::LEASE_PAST_GRACE, Some(Duration::from_secs(11))), "past_grace");
        assert_eq!(state(lb_common::LEASE_EXPIRED, None), "never_written");
    }

    #[test]
    fn json_writer_none_is_null() {
        let d = MapDump { writer: None, ..sample() };
        let v: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        assert!(v["writer"].is_null());
    }
}
