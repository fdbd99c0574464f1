//! Packet fixtures through BPF_PROG_TEST_RUN: each case is (description, input bytes, expected
//! verdict, expected output bytes, expected reason counter). Expected packets are built by the
//! test's own serializer with from-scratch checksums, so a wrong incremental update fails.
//!
//! The program runs in a `pglbt-` network namespace (a veth with a fixed MAC, forwarding on,
//! static neighbour entries for the backends) so that `bpf_fib_lookup` is deterministic; maps are
//! pinned under a unique `/sys/fs/bpf/pglbt-…` directory. Guards remove both, even on panic.
//! Needs root; fails (does not skip) without it.

mod support;

use std::{net::Ipv4Addr, time::Duration};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb_common::{
    MAGLEV_SIZE, ip_to_map,
    tcp::Timeouts,
    hash::flow_hash,
    nat::{nat_port_candidate, nat_port_seed},
    port_to_map,
    reason::{self, REASON_NAMES},
};
use lb_user::dataplane::{BackendSpec, Dataplane, DataplaneSpec, ListenerSpec, Pool, XdpMode};
use support::*;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const PG_PORT: u16 = 5432;

/// A loaded data plane inside a test namespace.
struct Harness {
    dp: Dataplane,
    ifindex: u32,
    /// Where the maps are pinned.
    pin_dir: std::path::PathBuf,
}

/// What the output frame must be.
enum Out {
    /// Unchanged input (pass and drop verdicts).
    Same,
    /// Exactly these bytes.
    Bytes(Vec<u8>),
}

struct Case {
    what: String,
    input: Vec<u8>,
    verdict: u32,
    out: Out,
    reason: u32,
}

impl Harness {
    fn new(pin: &PinDir) -> Self {
        let mut dp = Dataplane::load(&pin.0, VIP).expect("loading the XDP object (verifier log in the error)");
        dp.set_listeners(&[
            ListenerSpec { port: 3000, pool: Pool::Write },
            ListenerSpec { port: 3001, pool: Pool::Read },
        ])
        .expect("writing listeners");
        let backends: Vec<BackendSpec> =
            BACKENDS.iter().map(|&(id, addr, _)| BackendSpec { id, addr, port: PG_PORT }).collect();
        dp.set_backends(&backends).expect("writing backends");
        dp.set_writer(Some(0)).expect("setting the writer");
        dp.set_readers(&[(1, 1), (2, 1)]).expect("setting readers");
        dp.renew_lease(Duration::from_secs(3600), Duration::from_secs(10)).expect("renewing the lease");
        let name = std::ffi::CString::new(IFACE).expect("interface name");
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "{IFACE} must exist in the test namespace");
        Self { dp, ifindex, pin_dir: pin.0.clone() }
    }

    /// Runs the program once on `input` as if received on the test veth.
    fn run_on(prog: &Xdp, ifindex: u32, input: &[u8]) -> std::io::Result<(u32, Vec<u8>)> {
        let mut out = vec![0u8; input.len() + 512];
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
        let mut ctx = Vec::with_capacity(24);
        for v in [0u32, input.len() as u32, 0, ifindex, 0, 0] {
            ctx.extend_from_slice(&v.to_ne_bytes());
        }
        let opts = TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..Default::default()
        };
        let r = prog.test_run(opts).map_err(std::io::Error::other)?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    fn run(&self, input: &[u8]) -> std::io::Result<(u32, Vec<u8>)> {
        Self::run_on(self.dp.program(), self.ifindex, input)
    }

    fn reasons(&self) -> [u64; reason::REASON_COUNT as usize] {
        self.dp.counters().expect("reading counters").reasons
    }

    /// Runs one case and checks verdict, output bytes, checksums and that exactly the expected
    /// reason counter went up by one.
    fn check(&self, c: &Case) {
        let before = self.reasons();
        let (verdict, out) = self.run(&c.input).unwrap_or_else(|e| panic!("{}: BPF_PROG_TEST_RUN failed: {e}", c.what));
        let after = self.reasons();
        let moved: Vec<&str> =
            (0..before.len()).filter(|&i| after[i] != before[i]).map(|i| REASON_NAMES[i]).collect();
        assert_eq!(verdict, c.verdict, "{}: verdict (1 drop, 2 pass, 3 tx); reasons counted: {moved:?}", c.what);
        match &c.out {
            Out::Same => assert_eq!(out, c.input, "{}: the frame must be untouched", c.what),
            Out::Bytes(want) => {
                assert_eq!(hex(&out), hex(want), "{}: output frame", c.what);
                assert_checksums_valid(&c.what, &out);
            }
        }
        for (code, (b, a)) in before.iter().zip(after.iter()).enumerate() {
            let want = u64::from(code as u32 == c.reason);
            assert_eq!(a - b, want, "{}: counter {} moved by {} (expected reason {})", c.what, REASON_NAMES[code], a - b, REASON_NAMES[c.reason as usize]);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().chunks(16).map(|c| c.join(" ")).collect::<Vec<_>>().join("\n")
}

/// Runs `body` in a fresh thread that has entered a fresh test namespace, with a fresh pin dir.
fn in_test_ns(body: impl FnOnce(Harness) + Send + 'static) {
    require_root();
    let ns = Netns::new();
    let pin = PinDir::new();
    let name = ns.name.clone();
    let pin_path = pin.0.clone();
    let result = std::thread::spawn(move || {
        let ns = Netns { name };
        ns.enter();
        std::mem::forget(ns); // the outer guard owns deletion
        let pin = PinDir(pin_path);
        let h = Harness::new(&pin);
        std::mem::forget(pin); // the outer guard owns cleanup
        body(h);
    })
    .join();
    drop(pin);
    drop(ns);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn backend(id: u32) -> (Ipv4Addr, [u8; 6]) {
    let (_, addr, mac) = BACKENDS[id as usize];
    (addr, mac)
}

/// The NAT port the allocation rule gives a fresh flow (first candidate: the maps are empty).
fn nat_port(client: (Ipv4Addr, u16), listener: u16, backend: Ipv4Addr) -> u16 {
    let h = flow_hash(ip_to_map(client.0.octets()), port_to_map(client.1), ip_to_map(VIP.octets()), port_to_map(listener));
    nat_port_candidate(nat_port_seed(h, ip_to_map(backend.octets()), port_to_map(PG_PORT)), 0)
}

/// `pkt` as the data plane forwards it to backend `id` from NAT port `nat`.
fn to_backend(pkt: &Tcp, id: u32, nat: u16) -> Vec<u8> {
    let (addr, mac) = backend(id);
    let mut p = pkt.clone();
    p.eth_dst = mac;
    p.eth_src = LB_MAC;
    p.src = VIP;
    p.dst = addr;
    p.sport = nat;
    p.dport = PG_PORT;
    p.build()
}

/// A backend's packet to NAT port `nat`.
fn from_backend(id: u32, nat: u16, flags: u8) -> Tcp {
    let (addr, mac) = backend(id);
    let mut p = Tcp::new((addr, PG_PORT), (VIP, nat), flags);
    p.eth_src = mac;
    p.seq = 7000;
    p.ack = 1001;
    p
}

/// `pkt` from a backend as forwarded to the client.
fn to_client(pkt: &Tcp, client: (Ipv4Addr, u16), listener: u16) -> Vec<u8> {
    let mut p = pkt.clone();
    p.eth_dst = CLIENT_MAC;
    p.eth_src = LB_MAC;
    p.src = VIP;
    p.dst = client.0;
    p.sport = listener;
    p.dport = client.1;
    p.build()
}

#[test]
fn forwarding_fixtures() {
    in_test_ns(|h| {
        let c1 = (CLIENT, 40000);
        let nat1 = nat_port(c1, 3000, backend(0).0);
        let syn = Tcp { tcp_opts: vec![2, 4, 5, 0xb4, 1, 1, 4, 2], ..Tcp::new(c1, (VIP, 3000), SYN) };
        let synack = from_backend(0, nat1, SYN | ACK);
        let early_ack = Tcp { seq: 1001, ack: 7001, ..Tcp::new(c1, (VIP, 3000), ACK) };
        let wrong_ack = Tcp { seq: 1001, ack: 7002, ..Tcp::new(c1, (VIP, 3000), ACK) };
        let ack = Tcp { seq: 1001, ack: 7001, ..Tcp::new(c1, (VIP, 3000), ACK) };
        let data = Tcp { payload: b"SELECT 1;".to_vec(), ..Tcp::new(c1, (VIP, 3000), ACK | PSH) };
        let reply = Tcp { payload: b"1 row".to_vec(), ..from_backend(0, nat1, ACK | PSH) };

        // Read listener: the reader the Maglev table picks for this flow.
        let c2 = (CLIENT, 40001);
        let mut table = vec![0u32; MAGLEV_SIZE as usize];
        lb_common::maglev::build(&[(1, 1), (2, 1)], &mut table).expect("building the expected table");
        let h2 = flow_hash(ip_to_map(CLIENT.octets()), port_to_map(c2.1), ip_to_map(VIP.octets()), port_to_map(3001));
        let reader = table[(h2 % MAGLEV_SIZE) as usize];
        assert!(reader == 1 || reader == 2, "the read flow maps to a reader");
        let nat2 = nat_port(c2, 3001, backend(reader).0);
        let rsyn = Tcp::new(c2, (VIP, 3001), SYN);

        // IPv4 options are carried through untouched.
        let c3 = (CLIENT, 40002);
        let nat3 = nat_port(c3, 3000, backend(0).0);
        let opt_syn = Tcp { ip_opts: vec![1, 1, 1, 0], ..Tcp::new(c3, (VIP, 3000), SYN) };

        let cases = vec![
            Case { what: "SYN to :3000 goes to the writer".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 0, nat1)), reason: reason::TX_NEW_FLOW },
            Case { what: "retransmitted SYN keeps its NAT port".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 0, nat1)), reason: reason::TX_TO_BACKEND },
            Case { what: "an ACK before any SYN-ACK goes to the writer and completes nothing".into(), input: early_ack.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&early_ack, 0, nat1)), reason: reason::TX_TO_BACKEND },
            Case { what: "SYN-ACK from the writer goes back to the client".into(), input: synack.build(), verdict: XDP_TX, out: Out::Bytes(to_client(&synack, c1, 3000)), reason: reason::TX_TO_CLIENT },
            Case { what: "an ACK of something else than the backend's SYN completes nothing".into(), input: wrong_ack.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&wrong_ack, 0, nat1)), reason: reason::TX_TO_BACKEND },
            Case { what: "a SYN retransmitted after the SYN-ACK keeps its NAT port".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 0, nat1)), reason: reason::TX_TO_BACKEND },
            Case { what: "the client's ACK of the backend's SYN completes the handshake".into(), input: ack.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&ack, 0, nat1)), reason: reason::TX_HANDSHAKE_DONE },
            Case { what: "established data to the writer".into(), input: data.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&data, 0, nat1)), reason: reason::TX_TO_BACKEND },
            Case { what: "backend reply rewritten back to the client".into(), input: reply.build(), verdict: XDP_TX, out: Out::Bytes(to_client(&reply, c1, 3000)), reason: reason::TX_TO_CLIENT },
            Case { what: format!("SYN to :3001 goes to reader {reader}"), input: rsyn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&rsyn, reader, nat2)), reason: reason::TX_NEW_FLOW },
            Case { what: "SYN with IPv4 options".into(), input: opt_syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&opt_syn, 0, nat3)), reason: reason::TX_NEW_FLOW },
        ];
        for c in &cases {
            h.check(c);
        }

        let flows = h.dp.flows().expect("listing flows");
        let f1 = flows.iter().find(|f| f.client.port() == 40000).expect("flow of client port 40000");
        assert_eq!((f1.backend_id, f1.nat_port, f1.state, f1.pool, f1.half_open), (0, nat1, "ESTABLISHED", "write", false), "flow 1 after the handshake");
        assert_eq!(f1.client_next_seq, 7005, "the client expects the end of the backend's last segment (7000 + 5 bytes)");
        let f2 = flows.iter().find(|f| f.client.port() == 40001).expect("flow of client port 40001");
        assert_eq!((f2.backend_id, f2.state, f2.pool, f2.half_open), (reader, "SYN_SENT", "read", true), "flow 2 after its SYN");
        assert_eq!(flows.iter().filter(|f| f.client.port() == 40000).count(), 1, "retransmitted SYNs opened no second flow");
        let counters = h.dp.counters().expect("counters");
        let b0 = counters.backends.iter().find(|(id, _)| *id == 0).expect("backend 0 counters").1;
        assert_eq!((b0.new_flows, b0.to_backend_packets, b0.to_client_packets), (2, 8, 2), "backend 0 counters");
        let l3000 = counters.listeners.iter().find(|(l, _)| l.port == 3000).expect("listener 3000").1;
        assert_eq!((l3000.new_flows, l3000.packets), (2, 8), "listener 3000 counters");

        // The dump shows all of it.
        let dump = h.dp.dump().expect("dump").to_string();
        for needle in [
            "writer: #0 172.31.0.10:5432",
            "172.31.0.50:40000     -> 172.31.0.100:3000",
            "ESTABLISHED",
            "flows: 1 established of 65536, 2 half-open of 16384",
            "tx_new_flow",
            "tx_handshake_done",
            "readers: 2 in table",
        ] {
            assert!(dump.contains(needle), "dump lacks {needle:?}:\n{dump}");
        }

        // FIN both ways then a sweep with a zero "closed" timeout removes the flow.
        let fin = Tcp { seq: 1010, ..Tcp::new(c1, (VIP, 3000), FIN | ACK) };
        h.check(&Case { what: "client FIN".into(), input: fin.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&fin, 0, nat1)), reason: reason::TX_TO_BACKEND });
        let bfin = from_backend(0, nat1, FIN | ACK);
        h.check(&Case { what: "backend FIN".into(), input: bfin.build(), verdict: XDP_TX, out: Out::Bytes(to_client(&bfin, c1, 3000)), reason: reason::TX_TO_CLIENT });
        let mut dp = h.dp;
        let hour = 3_600_000_000_000;
        let stats = dp.sweep(&Timeouts { idle_ns: hour, closed_ns: 0, half_open_ns: hour }).expect("sweeping");
        assert_eq!((stats.removed_closed, stats.removed_idle, stats.removed_half_open), (1, 0, 0), "sweep removes exactly the closed flow: {stats:?}");
        assert!(dp.flows().expect("flows").iter().all(|f| f.client.port() != 40000), "closed flow gone");
        let stats = dp.sweep(&Timeouts { idle_ns: hour, closed_ns: hour, half_open_ns: 0 }).expect("sweeping half-open");
        assert_eq!((stats.removed_half_open, stats.removed_idle), (2, 0), "a zero half-open timeout removes the two half-open flows: {stats:?}");
        assert!(dp.flows().expect("flows").is_empty(), "no flows left");
    });
}

#[test]
fn resets_and_stale_writer() {
    in_test_ns(|mut h| {
        let unknown_ack = Tcp { payload: b"x".to_vec(), ..Tcp::new((CLIENT, 41000), (VIP, 3000), ACK | PSH) };
        h.check(&Case { what: "ACK of an unknown flow gets a RST".into(), input: unknown_ack.build(), verdict: XDP_TX, out: Out::Bytes(unknown_ack.expected_rst()), reason: reason::TX_RST_UNKNOWN_FLOW });
        let unknown_rst = Tcp::new((CLIENT, 41001), (VIP, 3000), RST);
        h.check(&Case { what: "RST of an unknown flow is dropped".into(), input: unknown_rst.build(), verdict: XDP_DROP, out: Out::Same, reason: reason::DROP_RST_UNKNOWN_FLOW });
        let unknown_read = Tcp::new((CLIENT, 41002), (VIP, 3001), ACK);
        h.check(&Case { what: "ACK of an unknown read flow gets a RST".into(), input: unknown_read.build(), verdict: XDP_TX, out: Out::Bytes(unknown_read.expected_rst()), reason: reason::TX_RST_UNKNOWN_FLOW });

        // A write flow on backend 0, then the writer moves to backend 1.
        let c = (CLIENT, 42000);
        let nat0 = nat_port(c, 3000, backend(0).0);
        let syn = Tcp::new(c, (VIP, 3000), SYN);
        h.check(&Case { what: "SYN to the old writer".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 0, nat0)), reason: reason::TX_NEW_FLOW });
        h.dp.set_writer(Some(1)).expect("moving the writer");
        let data = Tcp { payload: b"INSERT".to_vec(), ..Tcp::new(c, (VIP, 3000), ACK | PSH) };
        h.check(&Case { what: "flow pinned to the old writer gets a RST".into(), input: data.build(), verdict: XDP_TX, out: Out::Bytes(data.expected_rst()), reason: reason::TX_RST_STALE_CLIENT });
        assert!(h.dp.flows().expect("flows").iter().all(|f| f.client.port() != 42000), "the stale flow is deleted");
        let late = from_backend(0, nat0, ACK | PSH);
        h.check(&Case { what: "old writer's late reply goes to the kernel (which RSTs it)".into(), input: late.build(), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_VIP });
        let again = Tcp { payload: b"INSERT".to_vec(), ..Tcp::new(c, (VIP, 3000), ACK | PSH) };
        h.check(&Case { what: "client retry on the deleted flow gets a RST".into(), input: again.build(), verdict: XDP_TX, out: Out::Bytes(again.expected_rst()), reason: reason::TX_RST_UNKNOWN_FLOW });

        // A flow on the new writer (1); the writer moves back to 0; the backend's next packet
        // is answered with a RST to the backend.
        let c = (CLIENT, 42001);
        let nat1 = nat_port(c, 3000, backend(1).0);
        let syn = Tcp::new(c, (VIP, 3000), SYN);
        h.check(&Case { what: "SYN to the new writer".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 1, nat1)), reason: reason::TX_NEW_FLOW });
        h.dp.set_writer(Some(0)).expect("moving the writer back");
        let stale_reply = from_backend(1, nat1, SYN | ACK);
        h.check(&Case { what: "reply from a demoted writer gets a RST".into(), input: stale_reply.build(), verdict: XDP_TX, out: Out::Bytes(stale_reply.expected_rst()), reason: reason::TX_RST_STALE_BACKEND });

        let counters = h.dp.counters().expect("counters");
        let resets = |id: u32| counters.backends.iter().find(|(b, _)| *b == id).map(|(_, s)| s.resets);
        assert_eq!((resets(0), resets(1)), (Some(1), Some(1)), "one stale reset per old writer");

        // No writer: a write SYN gets RST+ACK.
        h.dp.set_writer(None).expect("clearing the writer");
        let syn = Tcp::new((CLIENT, 42002), (VIP, 3000), SYN);
        h.check(&Case { what: "SYN with no writer gets a RST".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(syn.expected_rst()), reason: reason::TX_RST_NO_WRITER });
        // No readers: a read SYN gets RST+ACK.
        h.dp.set_readers(&[]).expect("clearing readers");
        let syn = Tcp { payload: Vec::new(), ..Tcp::new((CLIENT, 42003), (VIP, 3001), SYN) };
        h.check(&Case { what: "SYN with no readers gets a RST".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(syn.expected_rst()), reason: reason::TX_RST_NO_READER });
        let l = counters.listeners.iter().find(|(l, _)| l.port == 3000).expect("listener 3000").1;
        assert!(l.resets >= 3, "listener 3000 counted its resets: {l:?}");
    });
}

/// An ARP frame (request or reply) from the client for `target`.
fn arp(op: u8, target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0xff; 6];
    a.extend_from_slice(&CLIENT_MAC);
    a.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, op]);
    a.extend_from_slice(&CLIENT_MAC);
    a.extend_from_slice(&CLIENT.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    a
}

/// Opens a write flow and a read flow through the handshake; returns (write client, its NAT
/// port, read client, its reader, its NAT port).
fn open_flows(h: &Harness, base_port: u16) -> ((Ipv4Addr, u16), u16, (Ipv4Addr, u16), u32, u16) {
    let w = (CLIENT, base_port);
    let nat_w = nat_port(w, 3000, backend(0).0);
    let syn = Tcp::new(w, (VIP, 3000), SYN);
    h.check(&Case { what: "write SYN".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 0, nat_w)), reason: reason::TX_NEW_FLOW });
    let synack = from_backend(0, nat_w, SYN | ACK);
    h.check(&Case { what: "write SYN-ACK".into(), input: synack.build(), verdict: XDP_TX, out: Out::Bytes(to_client(&synack, w, 3000)), reason: reason::TX_TO_CLIENT });
    let ack = Tcp { seq: 1001, ack: 7001, ..Tcp::new(w, (VIP, 3000), ACK) };
    h.check(&Case { what: "write handshake ACK".into(), input: ack.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&ack, 0, nat_w)), reason: reason::TX_HANDSHAKE_DONE });
    let r = (CLIENT, base_port + 1);
    let mut table = vec![0u32; MAGLEV_SIZE as usize];
    lb_common::maglev::build(&[(1, 1), (2, 1)], &mut table).expect("building the expected table");
    let hr = flow_hash(ip_to_map(CLIENT.octets()), port_to_map(r.1), ip_to_map(VIP.octets()), port_to_map(3001));
    let reader = table[(hr % MAGLEV_SIZE) as usize];
    let nat_r = nat_port(r, 3001, backend(reader).0);
    let rsyn = Tcp::new(r, (VIP, 3001), SYN);
    h.check(&Case { what: "read SYN".into(), input: rsyn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&rsyn, reader, nat_r)), reason: reason::TX_NEW_FLOW });
    let rsynack = from_backend(reader, nat_r, SYN | ACK);
    h.check(&Case { what: "read SYN-ACK".into(), input: rsynack.build(), verdict: XDP_TX, out: Out::Bytes(to_client(&rsynack, r, 3001)), reason: reason::TX_TO_CLIENT });
    let rack = Tcp { seq: 1001, ack: 7001, ..Tcp::new(r, (VIP, 3001), ACK) };
    h.check(&Case { what: "read handshake ACK".into(), input: rack.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&rack, reader, nat_r)), reason: reason::TX_HANDSHAKE_DONE });
    (w, nat_w, r, reader, nat_r)
}

/// The dead-man switch: once the control plane's lease runs out, ARP requests for the VIP are
/// dropped and SYNs get a RST; established flows go on for the grace; after it, write flows
/// are reset (read flows go on); a renewed lease restores everything.
#[test]
fn lease_dead_man_switch() {
    in_test_ns(|mut h| {
        let (w, nat_w, r, reader, _) = open_flows(&h, 44000);
        h.check(&Case { what: "ARP request for the VIP, lease valid".into(), input: arp(1, VIP), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_IPV4 });

        h.dp.expire_lease(Duration::from_secs(3600)).expect("expiring the lease");
        let dump = h.dp.dump().expect("dump").to_string();
        assert!(dump.contains("lease: EXPIRED"), "the dump says the lease ran out:\n{dump}");
        h.check(&Case { what: "ARP request for the VIP, lease expired".into(), input: arp(1, VIP), verdict: XDP_DROP, out: Out::Same, reason: reason::DROP_ARP_LEASE_EXPIRED });
        h.check(&Case { what: "ARP request for the LB's own address".into(), input: arp(1, LB_ADDR), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_IPV4 });
        h.check(&Case { what: "ARP reply about the VIP".into(), input: arp(2, VIP), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_IPV4 });
        let mut short_arp = arp(1, VIP);
        short_arp.truncate(14 + 20);
        h.check(&Case { what: "truncated ARP".into(), input: short_arp, verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_IPV4 });
        for port in [3000, 3001] {
            let syn = Tcp::new((CLIENT, 44100 + port), (VIP, port), SYN);
            h.check(&Case { what: format!("SYN to :{port}, lease expired"), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(syn.expected_rst()), reason: reason::TX_RST_LEASE_EXPIRED });
        }
        let data = Tcp { payload: b"INSERT".to_vec(), ..Tcp::new(w, (VIP, 3000), ACK | PSH) };
        h.check(&Case { what: "write flow within the grace".into(), input: data.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&data, 0, nat_w)), reason: reason::TX_TO_BACKEND });

        h.dp.expire_lease(Duration::ZERO).expect("expiring the lease with no grace");
        h.check(&Case { what: "write flow past the grace gets a RST".into(), input: data.build(), verdict: XDP_TX, out: Out::Bytes(data.expected_rst()), reason: reason::TX_RST_LEASE_EXPIRED });
        assert!(h.dp.flows().expect("flows").iter().all(|f| f.client != std::net::SocketAddrV4::new(w.0, w.1)), "the reset write flow is gone");
        let rdata = Tcp { payload: b"SELECT".to_vec(), ..Tcp::new(r, (VIP, 3001), ACK | PSH) };
        let nat_r = nat_port(r, 3001, backend(reader).0);
        h.check(&Case { what: "read flow past the grace goes on".into(), input: rdata.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&rdata, reader, nat_r)), reason: reason::TX_TO_BACKEND });

        // A write flow's backend side past the grace: RST to the backend.
        h.dp.renew_lease(Duration::from_secs(3600), Duration::ZERO).expect("renewing");
        let (w2, nat_w2, ..) = open_flows(&h, 44200);
        h.dp.expire_lease(Duration::ZERO).expect("expiring again");
        let reply = from_backend(0, nat_w2, ACK | PSH);
        h.check(&Case { what: "write backend reply past the grace gets a RST".into(), input: reply.build(), verdict: XDP_TX, out: Out::Bytes(reply.expected_rst()), reason: reason::TX_RST_STALE_BACKEND });
        let _ = w2;

        h.dp.renew_lease(Duration::from_secs(3600), Duration::from_secs(10)).expect("renewing");
        h.check(&Case { what: "ARP request for the VIP, lease renewed".into(), input: arp(1, VIP), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_IPV4 });
        let syn = Tcp::new((CLIENT, 44300), (VIP, 3000), SYN);
        let nat = nat_port((CLIENT, 44300), 3000, backend(0).0);
        h.check(&Case { what: "SYN after the renewal opens a flow".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 0, nat)), reason: reason::TX_NEW_FLOW });
    });
}

/// SYN+RST, SYN+RST+ACK and SYN+FIN to a listener are no way to open a connection: dropped,
/// never a flow, never an answer.
#[test]
fn bad_syn_flags_open_nothing() {
    in_test_ns(|h| {
        for (flags, what) in [(SYN | RST, "SYN+RST"), (SYN | RST | ACK, "SYN+RST+ACK"), (SYN | FIN, "SYN+FIN"), (SYN | FIN | ACK, "SYN+FIN+ACK")] {
            for port in [3000, 3001] {
                let p = Tcp::new((CLIENT, 46000), (VIP, port), flags);
                h.check(&Case { what: format!("{what} to :{port}"), input: p.build(), verdict: XDP_DROP, out: Out::Same, reason: reason::DROP_BAD_TCP_FLAGS });
            }
        }
        assert!(h.dp.flows().expect("flows").is_empty(), "no flow opened");
    });
}

/// The writer changes while a client waits for an answer (sends nothing): the control plane
/// sends it a RST at once, from VIP:3000 with the sequence number it expects (tracked from the
/// backend's last segment), and removes the flow; read flows are left alone. The RST is caught
/// on the veth's other end.
#[test]
fn stale_write_flows_are_reset_actively() {
    in_test_ns(|mut h| {
        let (w, nat_w, r, ..) = open_flows(&h, 47000);
        let reply = Tcp { payload: b"abc".to_vec(), ..from_backend(0, nat_w, ACK | PSH) };
        h.check(&Case { what: "a reply".into(), input: reply.build(), verdict: XDP_TX, out: Out::Bytes(to_client(&reply, w, 3000)), reason: reason::TX_TO_CLIENT });
        ip(&["neigh", "replace", &CLIENT.to_string(), "lladdr", &mac_str(CLIENT_MAC), "dev", IFACE, "nud", "permanent"]);
        let capture = PacketCapture::open("pglbt1");
        h.dp.set_writer(Some(1)).expect("moving the writer");
        let sent = h.dp.reset_stale_write_flows(Some(1)).expect("resetting stale flows");
        assert_eq!(sent, 1, "one stale write flow");
        let flows = h.dp.flows().expect("flows");
        assert!(flows.iter().all(|f| f.client.port() != w.1), "the stale write flow is removed");
        assert!(flows.iter().any(|f| f.client.port() == r.1), "the read flow stays");
        let frame = capture
            .next_matching(Duration::from_secs(2), |f| f.len() >= 54 && f[23] == 6 && f[47] & RST != 0)
            .expect("a RST leaves the interface within 2 s");
        let want = Tcp { eth_dst: CLIENT_MAC, eth_src: LB_MAC, seq: 7003, ..Tcp::new((VIP, 3000), w, RST) };
        let mut want = want;
        want.window = 0;
        want.ip_id = u16::from_be_bytes([frame[18], frame[19]]); // chosen by the kernel
        want.ttl = 64;
        assert_eq!(hex(&frame[..54]), hex(&want.build()), "the RST: VIP:3000 -> client, seq 7003 (7000 + 3 bytes)");
        assert_eq!(h.dp.reset_stale_write_flows(Some(1)).expect("again"), 0, "nothing left to reset");

        // A client whose SYN the (unplugged) writer never answered: still in SYN-SENT, it gets
        // a RST+ACK acknowledging its SYN (ISN 1000 + 1).
        let c = (CLIENT, 47100);
        let syn = Tcp::new(c, (VIP, 3000), SYN);
        let nat = nat_port(c, 3000, backend(1).0);
        h.check(&Case { what: "SYN to the writer".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 1, nat)), reason: reason::TX_NEW_FLOW });
        h.dp.set_writer(Some(2)).expect("moving the writer again");
        assert_eq!(h.dp.reset_stale_write_flows(Some(2)).expect("resetting"), 1, "the half-open write flow");
        let frame = capture
            .next_matching(Duration::from_secs(2), |f| f.len() >= 54 && f[23] == 6 && f[47] == RST | ACK)
            .expect("a RST+ACK leaves the interface within 2 s");
        let mut want = Tcp { eth_dst: CLIENT_MAC, eth_src: LB_MAC, seq: 0, ack: 1001, ..Tcp::new((VIP, 3000), c, RST | ACK) };
        want.window = 0;
        want.ip_id = u16::from_be_bytes([frame[18], frame[19]]);
        want.ttl = 64;
        assert_eq!(hex(&frame[..54]), hex(&want.build()), "the RST+ACK: VIP:3000 -> client, ack 1001");
    });
}

/// The log records the XDP program wrote, as the `log` crate's logger received them.
static KERNEL_LOG: std::sync::Mutex<Vec<(log::Level, String, String)>> = std::sync::Mutex::new(Vec::new());

/// Collects every `log` record in [`KERNEL_LOG`]: (level, target, message).
struct CaptureLog;

impl log::Log for CaptureLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let entry = (record.level(), record.target().to_owned(), record.args().to_string());
        KERNEL_LOG.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    }
    fn flush(&self) {}
}

/// Installs [`CaptureLog`] at debug, once per test process. Must run before the data plane is
/// loaded: the program is loaded with the `log` crate's maximum level (0, nothing, while no
/// logger is set) and its log reader writes to the logger set at that moment.
fn capture_kernel_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&CaptureLog).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// The records from the program (target `lb_ebpf`) that mention `needle`.
fn kernel_records(needle: &str) -> Vec<(log::Level, String)> {
    KERNEL_LOG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, target, msg)| target == "lb_ebpf" && msg.contains(needle))
        .map(|(level, _, msg)| (*level, msg.clone()))
        .collect()
}

/// The program's rare events reach the userspace reader through aya-log: stale-writer resets
/// (debug) on both sides, and a SYN dropped because every NAT port toward the writer is taken
/// (warn). The NAT ports are taken by writing the 16 candidates into the pinned NAT map.
#[test]
fn rare_events_are_logged() {
    capture_kernel_log();
    in_test_ns(|mut h| {
        // Client side: the writer moves away from a flow's backend.
        let c = (CLIENT, 48000);
        let nat0 = nat_port(c, 3000, backend(0).0);
        let syn = Tcp::new(c, (VIP, 3000), SYN);
        h.check(&Case { what: "SYN to the writer".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 0, nat0)), reason: reason::TX_NEW_FLOW });
        h.dp.set_writer(Some(1)).expect("moving the writer");
        let data = Tcp { payload: b"x".to_vec(), ..Tcp::new(c, (VIP, 3000), ACK | PSH) };
        h.check(&Case { what: "stale client packet".into(), input: data.build(), verdict: XDP_TX, out: Out::Bytes(data.expected_rst()), reason: reason::TX_RST_STALE_CLIENT });
        // Backend side: a flow on backend 1, the writer moves back to 0, backend 1 answers.
        let c2 = (CLIENT, 48001);
        let nat1 = nat_port(c2, 3000, backend(1).0);
        let syn = Tcp::new(c2, (VIP, 3000), SYN);
        h.check(&Case { what: "SYN to the new writer".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 1, nat1)), reason: reason::TX_NEW_FLOW });
        h.dp.set_writer(Some(0)).expect("moving the writer back");
        let reply = from_backend(1, nat1, SYN | ACK);
        h.check(&Case { what: "stale backend reply".into(), input: reply.build(), verdict: XDP_TX, out: Out::Bytes(reply.expected_rst()), reason: reason::TX_RST_STALE_BACKEND });

        // Every NAT port the allocation rule tries for this client toward backend 0 is taken.
        let c3 = (CLIENT, 48002);
        let (b0, _) = backend(0);
        let hash = flow_hash(ip_to_map(c3.0.octets()), port_to_map(c3.1), ip_to_map(VIP.octets()), port_to_map(3000));
        let seed = nat_port_seed(hash, ip_to_map(b0.octets()), port_to_map(PG_PORT));
        {
            let data = aya::maps::MapData::from_pin(h.pin_dir.join(lb_common::MAP_NAT)).expect("opening the pinned NAT map");
            let map = aya::maps::Map::from_map_data(data).expect("the NAT map");
            let mut nat: aya::maps::HashMap<_, lb_common::NatKey, lb_common::FlowKey> =
                aya::maps::HashMap::try_from(map).expect("the NAT map is a hash map");
            let other = lb_common::FlowKey { client_addr: ip_to_map([172, 31, 0, 99]), vip: ip_to_map(VIP.octets()), client_port: port_to_map(1), listener_port: port_to_map(3000) };
            for attempt in 0..lb_common::nat::NAT_PORT_PROBES {
                let key = lb_common::NatKey {
                    backend_addr: ip_to_map(b0.octets()),
                    vip: ip_to_map(VIP.octets()),
                    backend_port: port_to_map(PG_PORT),
                    nat_port: port_to_map(nat_port_candidate(seed, attempt)),
                };
                nat.insert(key, other, 0).expect("taking a NAT port");
            }
        }
        let syn = Tcp::new(c3, (VIP, 3000), SYN);
        h.check(&Case { what: "SYN with every NAT port taken".into(), input: syn.build(), verdict: XDP_DROP, out: Out::Same, reason: reason::DROP_PORTS_EXHAUSTED });

        h.dp.flush_log();
        let client = kernel_records(&format!("{CLIENT}:48000"));
        assert_eq!(client, vec![(log::Level::Debug, format!("xdp: stale write flow of {CLIENT}:48000 on backend 0 deleted (not the writer), RST sent to the client"))], "the client-side stale reset");
        let backend_side = kernel_records(&format!("{CLIENT}:48001"));
        assert_eq!(backend_side, vec![(log::Level::Debug, format!("xdp: stale write flow of {CLIENT}:48001 on backend 1 deleted, RST sent to the backend"))], "the backend-side stale reset");
        let exhausted = kernel_records(&format!("{CLIENT}:48002"));
        assert_eq!(exhausted, vec![(log::Level::Warn, format!("xdp: no free NAT port toward backend 0 after 16 probes; SYN from {CLIENT}:48002 dropped"))], "NAT port exhaustion");
    });
}

/// Opens one of the harness's pinned hash maps directly.
fn pinned_hash<K: aya::Pod, V: aya::Pod>(h: &Harness, name: &str) -> aya::maps::HashMap<aya::maps::MapData, K, V> {
    let data = aya::maps::MapData::from_pin(h.pin_dir.join(name)).unwrap_or_else(|e| panic!("opening the pinned {name}: {e}"));
    aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data))
        .or_else(|_| {
            let data = aya::maps::MapData::from_pin(h.pin_dir.join(name)).expect("reopening");
            aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data))
        })
        .unwrap_or_else(|e| panic!("{name} as a hash map: {e}"))
}

/// Bad and hostile TCP against the listeners, one fixture each: a SYN with payload, a RST storm
/// on unknown flows, a SYN on an established flow, a reply to a reclaimed half-open flow, and a
/// full established table.
#[test]
fn hostile_tcp_fixtures() {
    in_test_ns(|h| {
        // A SYN with payload is a SYN (TCP allows data on a SYN; PostgreSQL's kernel keeps or
        // drops it): a flow, the payload carried through untouched.
        let c = (CLIENT, 48000);
        let nat = nat_port(c, 3000, backend(0).0);
        let syn_data = Tcp { payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(), ..Tcp::new(c, (VIP, 3000), SYN) };
        h.check(&Case { what: "SYN with payload".into(), input: syn_data.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn_data, 0, nat)), reason: reason::TX_NEW_FLOW });

        // A RST storm on unknown flows: every one dropped, none answered, no flow.
        let before = h.reasons();
        for i in 0..500u16 {
            let src = Ipv4Addr::new(10, 9, (i >> 8) as u8, i as u8);
            let rst = Tcp { seq: 12345 + u32::from(i), ..Tcp::new((src, 30000 + i), (VIP, 3000 + (i % 2)), RST) };
            let (verdict, out) = h.run(&rst.build()).expect("running a RST");
            assert_eq!((verdict, out), (XDP_DROP, rst.build()), "RST {i} of the storm");
        }
        let after = h.reasons();
        assert_eq!(after[reason::DROP_RST_UNKNOWN_FLOW as usize] - before[reason::DROP_RST_UNKNOWN_FLOW as usize], 500, "500 RSTs counted");
        let moved = (0..after.len()).filter(|&i| after[i] != before[i]).count();
        assert_eq!(moved, 1, "the storm moved one counter only");
        assert_eq!(h.dp.flows().expect("flows").len(), 1, "the storm opened no flow");

        // An established flow; a SYN on it (spoofed, or a client that lost it) is forwarded for
        // the backend's challenge ACK and changes nothing: same flow, same port.
        let (w, nat_w, ..) = open_flows(&h, 48100);
        let spoofed = Tcp { seq: 999_999, ..Tcp::new(w, (VIP, 3000), SYN) };
        h.check(&Case { what: "SYN on an established flow goes to its backend".into(), input: spoofed.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&spoofed, 0, nat_w)), reason: reason::TX_TO_BACKEND });
        let fw = h.dp.flows().expect("flows").into_iter().find(|f| f.client.port() == w.1).expect("the established flow");
        assert_eq!((fw.state, fw.nat_port, fw.half_open), ("ESTABLISHED", nat_w, false), "the established flow is untouched");

        // A half-open flow whose forward entry was reclaimed: the backend's SYN-ACK goes to the
        // kernel (which resets it), counted as such.
        let c = (CLIENT, 48200);
        let nat = nat_port(c, 3000, backend(0).0);
        let syn = Tcp::new(c, (VIP, 3000), SYN);
        h.check(&Case { what: "SYN of a flow about to be reclaimed".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 0, nat)), reason: reason::TX_NEW_FLOW });
        let mut half_open = pinned_hash::<lb_common::FlowKey, lb_common::Flow>(&h, lb_common::MAP_HALF_OPEN);
        let key = lb_common::FlowKey { client_addr: ip_to_map(CLIENT.octets()), vip: ip_to_map(VIP.octets()), client_port: port_to_map(c.1), listener_port: port_to_map(3000) };
        half_open.remove(&key).expect("reclaiming the half-open flow");
        let synack = from_backend(0, nat, SYN | ACK);
        h.check(&Case { what: "SYN-ACK of a reclaimed half-open flow".into(), input: synack.build(), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_HALF_OPEN_RECLAIMED });
        h.check(&Case { what: "its retransmission finds nothing at all".into(), input: synack.build(), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_VIP });

        // The established table full: a completed handshake is refused with a RST to the client;
        // no established flow is evicted for it.
        let mut flows = pinned_hash::<lb_common::FlowKey, lb_common::Flow>(&h, lb_common::MAP_FLOWS);
        let mut filler = 0u32;
        loop {
            let k = lb_common::FlowKey { client_addr: ip_to_map([10, 200, 0, 0]) ^ filler.to_be(), vip: 1, client_port: 1, listener_port: 1 };
            match flows.insert(k, lb_common::Flow::default(), 0) {
                Ok(()) => filler += 1,
                Err(_) => break,
            }
        }
        let full = flows.keys().count();
        assert_eq!(full, lb_common::MAX_FLOWS as usize, "the established table is full");
        let c = (CLIENT, 48300);
        let nat = nat_port(c, 3000, backend(0).0);
        let syn = Tcp::new(c, (VIP, 3000), SYN);
        h.check(&Case { what: "SYN while the established table is full still opens a half-open flow".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 0, nat)), reason: reason::TX_NEW_FLOW });
        let synack = from_backend(0, nat, SYN | ACK);
        h.check(&Case { what: "its SYN-ACK".into(), input: synack.build(), verdict: XDP_TX, out: Out::Bytes(to_client(&synack, c, 3000)), reason: reason::TX_TO_CLIENT });
        let ack = Tcp { seq: 1001, ack: 7001, ..Tcp::new(c, (VIP, 3000), ACK) };
        h.check(&Case { what: "the completing ACK with the established table full gets a RST".into(), input: ack.build(), verdict: XDP_TX, out: Out::Bytes(ack.expected_rst()), reason: reason::TX_RST_FLOW_TABLE_FULL });
        assert_eq!(flows.keys().count(), full, "no established flow was evicted");
        let data = Tcp { payload: b"SELECT 1".to_vec(), ..Tcp::new(w, (VIP, 3000), ACK | PSH) };
        h.check(&Case { what: "the established flow still forwards".into(), input: data.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&data, 0, nat_w)), reason: reason::TX_TO_BACKEND });
    });
}

/// A SYN flood from random sources, more SYNs than the half-open table holds: an established
/// flow opened before it keeps forwarding, new clients still open flows and complete their
/// handshakes, the half-open table stays within its size, the established table holds only
/// completed handshakes.
#[test]
fn syn_flood_leaves_established_flows_and_new_clients_alone() {
    in_test_ns(|h| {
        let (w, nat_w, ..) = open_flows(&h, 49000);
        let flood = lb_common::MAX_HALF_OPEN + 4000;
        let before = h.reasons();
        for i in 0..flood {
            let src = Ipv4Addr::from(0x0a00_0000u32 | i);
            let syn = Tcp { seq: i, ..Tcp::new((src, 1024 + (i % 60000) as u16), (VIP, 3000 + (i % 2) as u16), SYN) };
            let (verdict, _) = h.run(&syn.build()).expect("running a flood SYN");
            assert_eq!(verdict, XDP_TX, "flood SYN {i} is forwarded (the backend's SYN cookies answer it)");
        }
        let after = h.reasons();
        let delta = |r: u32| after[r as usize] - before[r as usize];
        assert_eq!(delta(reason::TX_NEW_FLOW), u64::from(flood), "every flood SYN got a half-open flow");
        assert_eq!((delta(reason::DROP_PORTS_EXHAUSTED), delta(reason::DROP_FLOW_TABLE)), (0, 0), "nothing refused");
        let flows = h.dp.flows().expect("flows");
        let half_open = flows.iter().filter(|f| f.half_open).count();
        assert!(half_open <= lb_common::MAX_HALF_OPEN as usize, "{half_open} half-open flows, at most {}", lb_common::MAX_HALF_OPEN);
        assert_eq!(flows.iter().filter(|f| !f.half_open).count(), 2, "only the two completed handshakes are established");

        let data = Tcp { payload: b"SELECT 1".to_vec(), ..Tcp::new(w, (VIP, 3000), ACK | PSH) };
        h.check(&Case { what: "the established flow forwards after the flood".into(), input: data.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&data, 0, nat_w)), reason: reason::TX_TO_BACKEND });

        // A new client during the flood: a port is free in the first probes as the flood holds
        // at most MAX_HALF_OPEN of the backend's ports; which one depends on the flood's.
        let c = (CLIENT, 49500);
        let syn = Tcp::new(c, (VIP, 3000), SYN);
        let (verdict, out) = h.run(&syn.build()).expect("the new client's SYN");
        assert_eq!(verdict, XDP_TX, "the new client's SYN is forwarded");
        let nat = u16::from_be_bytes([out[34], out[35]]);
        assert_eq!(out, to_backend(&syn, 0, nat), "the new client's SYN, rewritten with NAT port {nat}");
        let synack = from_backend(0, nat, SYN | ACK);
        h.check(&Case { what: "the new client's SYN-ACK".into(), input: synack.build(), verdict: XDP_TX, out: Out::Bytes(to_client(&synack, c, 3000)), reason: reason::TX_TO_CLIENT });
        let ack = Tcp { seq: 1001, ack: 7001, ..Tcp::new(c, (VIP, 3000), ACK) };
        h.check(&Case { what: "the new client completes its handshake".into(), input: ack.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&ack, 0, nat)), reason: reason::TX_HANDSHAKE_DONE });
        let dump = h.dp.dump().expect("dump").to_string();
        assert!(dump.contains("flows: 3 established of 65536"), "the dump counts the tables:\n{}", dump.lines().find(|l| l.starts_with("flows:")).unwrap_or(""));
    });
}

#[test]
fn pass_and_garbage_fixtures() {
    in_test_ns(|h| {
        let mut cases = Vec::new();
        cases.push(Case { what: "ARP request for the VIP".into(), input: arp(1, VIP), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_IPV4 });
        let mut v6 = Tcp::new((CLIENT, 1), (VIP, 3000), SYN).build();
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[14] = 0x60;
        cases.push(Case { what: "IPv6".into(), input: v6, verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_IPV4 });
        for (proto, name) in [(17u8, "UDP to the VIP"), (112, "VRRP"), (1, "ICMP")] {
            let mut p = Tcp::new((CLIENT, 5000), (VIP, 3000), SYN).build();
            p[23] = proto;
            cases.push(Case { what: name.into(), input: p, verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_TCP });
        }
        let ssh = Tcp::new((CLIENT, 50000), (LB_ADDR, 22), SYN);
        cases.push(Case { what: "ssh to the LB's own address".into(), input: ssh.build(), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_VIP });
        let other_port = Tcp::new((CLIENT, 50000), (VIP, 22), SYN);
        cases.push(Case { what: "TCP to a VIP port that is no listener".into(), input: other_port.build(), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_VIP });
        let probe_reply = Tcp { eth_src: BACKENDS[0].2, ..Tcp::new((BACKENDS[0].1, PG_PORT), (LB_ADDR, 45000), SYN | ACK) };
        cases.push(Case { what: "reply to the control plane's own probe".into(), input: probe_reply.build(), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_NOT_VIP });
        let mf = Tcp { frag: 0x2000, ..Tcp::new((CLIENT, 40000), (VIP, 3000), SYN) };
        cases.push(Case { what: "first fragment (MF)".into(), input: mf.build(), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_FRAGMENT });
        let off = Tcp { frag: 0x0010, ..Tcp::new((CLIENT, 40000), (VIP, 3000), SYN) };
        cases.push(Case { what: "later fragment (offset)".into(), input: off.build(), verdict: XDP_PASS, out: Out::Same, reason: reason::PASS_FRAGMENT });

        let base = Tcp::new((CLIENT, 40000), (VIP, 3000), SYN).build();
        let mut bad = |what: &str, reason: u32, edit: &dyn Fn(&mut Vec<u8>)| {
            let mut p = base.clone();
            edit(&mut p);
            cases.push(Case { what: what.into(), input: p, verdict: XDP_DROP, out: Out::Same, reason });
        };
        bad("IP version 6 in an IPv4 frame", reason::DROP_BAD_IP_VERSION, &|p| p[14] = 0x65);
        bad("IHL 4", reason::DROP_BAD_IHL, &|p| p[14] = 0x44);
        bad("IHL 0", reason::DROP_BAD_IHL, &|p| p[14] = 0x40);
        bad("IHL 15 beyond the frame", reason::DROP_BAD_IHL, &|p| p[14] = 0x4f);
        bad("total length below the header", reason::DROP_BAD_IP_LEN, &|p| p[16..18].copy_from_slice(&19u16.to_be_bytes()));
        bad("total length beyond the frame", reason::DROP_BAD_IP_LEN, &|p| p[16..18].copy_from_slice(&41u16.to_be_bytes()));
        bad("total length too short for TCP", reason::DROP_TRUNC_TCP, &|p| p[16..18].copy_from_slice(&39u16.to_be_bytes()));
        bad("TCP data offset 4", reason::DROP_BAD_DOFF, &|p| p[46] = 0x40);
        bad("TCP data offset 0", reason::DROP_BAD_DOFF, &|p| p[46] = 0x00);
        bad("TCP data offset beyond the IP payload", reason::DROP_BAD_DOFF, &|p| p[46] = 0xf0);
        for c in &cases {
            h.check(c);
        }
    });
}

#[test]
fn every_truncation_is_counted_never_forwarded() {
    in_test_ns(|h| {
        // An 80-byte data segment of an established flow: its full form is forwarded.
        let c = (CLIENT, 43000);
        let syn = Tcp::new(c, (VIP, 3000), SYN);
        let nat = nat_port(c, 3000, backend(0).0);
        h.check(&Case { what: "SYN opening the flow".into(), input: syn.build(), verdict: XDP_TX, out: Out::Bytes(to_backend(&syn, 0, nat)), reason: reason::TX_NEW_FLOW });
        let full = Tcp { payload: vec![b'q'; 26], ..Tcp::new(c, (VIP, 3000), ACK | PSH) };
        let bytes = full.build();
        assert_eq!(bytes.len(), 80, "fixture length");
        for len in 0..=80usize {
            let input = &bytes[..len];
            let (verdict_want, out, reason) = match len {
                0..=13 => {
                    // The kernel refuses frames shorter than an Ethernet header: the program
                    // never sees them.
                    let r = h.run(input);
                    assert!(r.is_err(), "{len}-byte frame must be refused by BPF_PROG_TEST_RUN, got {r:?}");
                    continue;
                }
                14..=33 => (XDP_DROP, Out::Same, reason::DROP_TRUNC_IPV4),
                34..=79 => (XDP_DROP, Out::Same, reason::DROP_BAD_IP_LEN),
                _ => (XDP_TX, Out::Bytes(to_backend(&full, 0, nat)), reason::TX_TO_BACKEND),
            };
            h.check(&Case { what: format!("truncated to {len} bytes"), input: input.to_vec(), verdict: verdict_want, out, reason });
        }
        // The same cuts with the IP total length fixed up to match: TCP itself is truncated.
        for len in 34..54usize {
            let mut input = bytes[..len].to_vec();
            input[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
            h.check(&Case { what: format!("TCP header cut at {len} bytes, IP length consistent"), input, verdict: XDP_DROP, out: Out::Same, reason: reason::DROP_TRUNC_TCP });
        }
    });
}

#[test]
fn pinned_maps_survive_a_reload_and_attach_replaces_atomically() {
    require_root();
    capture_kernel_log();
    let ns = Netns::new();
    let pin = PinDir::new();
    let (name, dir) = (ns.name.clone(), pin.0.clone());
    let result = std::thread::spawn(move || {
        Netns { name: name.clone() }.enter_and_forget();
        let spec = DataplaneSpec {
            interface: IFACE.into(),
            pin_dir: dir.clone(),
            vip: VIP,
            listeners: vec![ListenerSpec { port: 3000, pool: Pool::Write }, ListenerSpec { port: 3001, pool: Pool::Read }],
            xdp_mode: XdpMode::Native,
        };
        let mut first = Dataplane::attach(&spec).expect("first attach");
        first.set_backends(&[BackendSpec { id: 0, addr: BACKENDS[0].1, port: PG_PORT }]).expect("backends");
        first.set_writer(Some(0)).expect("writer");
        assert!(dir.join("link").exists(), "the XDP link is pinned");
        let shown = ip(&["-d", "link", "show", "dev", IFACE]);
        assert!(shown.contains("xdp") && shown.contains("pglb_xdp"), "pglb_xdp attached in driver mode:\n{shown}");
        let prog_id = |s: &str| s.split_whitespace().skip_while(|w| *w != "id").nth(1).map(str::to_owned);
        let id1 = prog_id(&shown).expect("program id in ip output");
        // A stale-writer reset logged by the first program and not read before it exits: the
        // restart forwards it (from the replaced program's ring buffer).
        let name = std::ffi::CString::new(IFACE).expect("interface name");
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        first.renew_lease(Duration::from_secs(3600), Duration::from_secs(10)).expect("renewing the lease");
        let c = (CLIENT, 48100);
        let syn = Tcp::new(c, (VIP, 3000), SYN);
        let (verdict, _) = Harness::run_on(first.program(), ifindex, &syn.build()).expect("running the SYN");
        // Attached to a veth, the program sends with bpf_redirect (XDP_REDIRECT, 4).
        assert_eq!(verdict, 4, "the SYN opens a flow to the writer");
        first.set_writer(None).expect("clearing the writer");
        let data = Tcp { payload: b"x".to_vec(), ..Tcp::new(c, (VIP, 3000), ACK | PSH) };
        let (verdict, _) = Harness::run_on(first.program(), ifindex, &data.build()).expect("running the stale packet");
        assert_eq!(verdict, 4, "the stale flow's packet gets a RST");
        first.set_writer(Some(0)).expect("writer");
        drop(first);
        let shown = ip(&["-d", "link", "show", "dev", IFACE]);
        assert!(shown.contains("pglb_xdp"), "program stays attached after the control plane exits:\n{shown}");

        // Restart: same pins, a new program replaces the old one behind the same link.
        let second = Dataplane::attach(&spec).expect("second attach (restart)");
        let shown = ip(&["-d", "link", "show", "dev", IFACE]);
        let id2 = prog_id(&shown).expect("program id after restart");
        assert_ne!(id1, id2, "the restart replaced the program:\n{shown}");
        assert_eq!(
            kernel_records(&format!("{CLIENT}:48100")),
            vec![(log::Level::Debug, format!("xdp: stale write flow of {CLIENT}:48100 on backend 0 deleted (not the writer), RST sent to the client"))],
            "the replaced program's record, forwarded by the restart"
        );
        let dump = lb_user::dataplane::dump(&dir).expect("read-only dump of the pins");
        assert_eq!(dump.writer, Some(0), "the writer survived the restart");
        assert_eq!(dump.backends.len(), 1, "the backends survived the restart");
        assert_eq!(dump.listeners.len(), 2, "listeners");
        drop(second);

        lb_user::dataplane::remove(&dir, Some(IFACE)).expect("remove");
        let shown = ip(&["-d", "link", "show", "dev", IFACE]);
        assert!(!shown.contains("pglb_xdp"), "remove detached the program:\n{shown}");
        assert!(!dir.exists(), "remove deleted the pin directory");
    })
    .join();
    drop(pin);
    drop(ns);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn spec_validation() {
    let spec = |ports: &[u16]| DataplaneSpec {
        interface: "lo".into(),
        pin_dir: "/nonexistent".into(),
        vip: VIP,
        listeners: ports.iter().map(|&port| ListenerSpec { port, pool: Pool::Write }).collect(),
        xdp_mode: XdpMode::Generic,
    };
    for (ports, what) in [(&[][..], "no listeners"), (&[30000][..], "port in the NAT range"), (&[3000, 3000][..], "duplicate port")] {
        let err = Dataplane::attach(&spec(ports)).expect_err(what);
        assert!(!matches!(err, lb_user::dataplane::DataplaneError::PinDir { .. }), "{what}: rejected before touching anything, got {err}");
    }
}

trait EnterForget {
    fn enter_and_forget(self);
}

impl EnterForget for Netns {
    fn enter_and_forget(self) {
        self.enter();
        std::mem::forget(self);
    }
}
