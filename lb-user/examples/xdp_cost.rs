//! Per-packet cost of the XDP program, measured in the kernel with BPF_PROG_TEST_RUN.
//!
//! Run as root: `cargo run --release -p lb-user --example xdp_cost [-- RUNS]`.
//!
//! The rewriting paths cannot use the syscall's `repeat`: the kernel re-runs the program on the
//! same, already rewritten buffer, so the second iteration would measure a different path (a
//! NAT'd packet VIP→backend is just "not for us"). So every rewriting path is run as `RUNS`
//! separate calls with `repeat = 1`, each on the original bytes (new flows use a distinct client
//! port each), and the kernel-reported durations are averaged. The same is done for the trivial
//! `XDP_PASS` program; its mean is the fixed harness cost (timer reads, context setup), which
//! the "net" column subtracts. The non-VIP pass path is idempotent, so it is also measured with
//! `repeat = 1,000,000` as a cross-check of the method.

#[path = "../tests/support/mod.rs"]
mod support;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb_user::dataplane::{BackendSpec, Dataplane, ListenerSpec, Pool};
use support::*;

const PG_PORT: u16 = 5432;

fn ctx_for(len: usize, ifindex: u32) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(24);
    for v in [0u32, len as u32, 0, ifindex, 0, 0] {
        ctx.extend_from_slice(&v.to_ne_bytes());
    }
    ctx
}

/// One run with `repeat`; returns (verdict, mean ns per run as reported by the kernel).
fn run(prog: &Xdp, ifindex: u32, input: &[u8], repeat: u32) -> (u32, f64) {
    let mut out = vec![0u8; input.len() + 512];
    let ctx = ctx_for(input.len(), ifindex);
    let opts = TestRunOptions { data_in: Some(input), data_out: Some(&mut out), ctx_in: Some(&ctx), repeat, ..Default::default() };
    let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    (r.return_value, r.duration.as_nanos() as f64)
}

/// Mean kernel-reported ns over one call per input.
fn mean_single<'a>(prog: &Xdp, ifindex: u32, inputs: impl Iterator<Item = &'a [u8]>, want: u32, what: &str) -> (usize, f64) {
    let mut total = 0.0;
    let mut n = 0;
    for input in inputs {
        let (verdict, ns) = run(prog, ifindex, input, 1);
        assert_eq!(verdict, want, "{what}: unexpected verdict {verdict} at call {n}");
        total += ns;
        n += 1;
    }
    (n, total / n as f64)
}

fn main() {
    let runs: usize = std::env::args().nth(1).map(|a| a.parse().expect("RUNS must be a number")).unwrap_or(200_000);
    require_root();
    let ns = Netns::new();
    let pin = PinDir::new();
    let (name, dir) = (ns.name.clone(), pin.0.clone());
    let result = std::thread::spawn(move || {
        let ns = Netns { name };
        ns.enter();
        std::mem::forget(ns);
        let mut dp = Dataplane::load(&dir, VIP).expect("loading the XDP object");
        dp.set_listeners(&[ListenerSpec { port: 3000, pool: Pool::Write }, ListenerSpec { port: 3001, pool: Pool::Read }])
            .expect("listeners");
        dp.set_backends(&BACKENDS.map(|(id, addr, _)| BackendSpec { id, addr, port: PG_PORT })).expect("backends");
        dp.set_writer(Some(0)).expect("writer");
        dp.set_readers(&[(1, 1), (2, 1)]).expect("readers");
        dp.renew_lease(std::time::Duration::from_secs(3600), std::time::Duration::from_secs(10)).expect("lease");
        let ifname = std::ffi::CString::new(IFACE).expect("name");
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
        let prog = dp.program();
        let pass = dp.pass_program();

        // Harness baseline: the trivial program, one call each.
        let base_pkt = Tcp::new((CLIENT, 40000), (VIP, 3000), ACK).build();
        let (_, base) = mean_single(pass, ifindex, std::iter::repeat_n(base_pkt.as_slice(), runs), 2, "baseline");

        // New flows: one SYN per client port (10,000 flows to the writer).
        let new_flows = runs.min(10_000);
        let syns: Vec<Vec<u8>> = (0..new_flows)
            .map(|i| Tcp::new((CLIENT, 10_000 + i as u16), (VIP, 3000), SYN).build())
            .collect();
        let (n_new, new) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            mean_single(prog, ifindex, syns.iter().map(Vec::as_slice), 3, "new flow")
        }))
        .unwrap_or_else(|p| {
            let c = dp.counters().expect("counters");
            let moved: Vec<_> = c.named_reasons().filter(|(_, n)| *n > 0).collect();
            panic!("{:?}; counters: {moved:?}", p.downcast_ref::<String>());
        });

        // Established: one flow opened above (client port 10000) through the whole handshake
        // (the backend's SYN+ACK, the client's ACK of it), so that it sits in the established
        // table; then data on it.
        let nat = dp.flows().expect("flows").into_iter().find(|f| f.client.port() == 10_000).expect("flow 10000").nat_port;
        let synack = Tcp { eth_src: BACKENDS[0].2, seq: 7000, ack: 1001, ..Tcp::new((BACKENDS[0].1, PG_PORT), (VIP, nat), SYN | ACK) }.build();
        let ack = Tcp { seq: 1001, ack: 7001, ..Tcp::new((CLIENT, 10_000), (VIP, 3000), ACK) }.build();
        for (what, pkt) in [("syn-ack", &synack), ("handshake ack", &ack)] {
            let (verdict, _) = run(prog, ifindex, pkt, 1);
            assert_eq!(verdict, 3, "{what} forwarded");
        }
        let est_flow = dp.flows().expect("flows").into_iter().find(|f| f.client.port() == 10_000).expect("flow 10000");
        assert!(!est_flow.half_open && est_flow.state == "ESTABLISHED", "flow 10000 is established: {est_flow:?}");
        let data = Tcp { payload: vec![b'x'; 64], ..Tcp::new((CLIENT, 10_000), (VIP, 3000), ACK | PSH) }.build();
        let (n_est, est) = mean_single(prog, ifindex, std::iter::repeat_n(data.as_slice(), runs), 3, "established");

        // Reply: the backend's packet to that flow's NAT port.
        let reply = Tcp {
            eth_src: BACKENDS[0].2,
            payload: vec![b'y'; 64],
            ..Tcp::new((BACKENDS[0].1, PG_PORT), (VIP, nat), ACK | PSH)
        }
        .build();
        let (n_rep, rep) = mean_single(prog, ifindex, std::iter::repeat_n(reply.as_slice(), runs), 3, "reply");

        // Non-VIP TCP passes untouched, so repeat is valid for it.
        let ssh = Tcp::new((CLIENT, 50000), (LB_ADDR, 22), ACK).build();
        let (n_pass, pass_single) = mean_single(prog, ifindex, std::iter::repeat_n(ssh.as_slice(), runs), 2, "pass");
        let (_, pass_repeat) = run(prog, ifindex, &ssh, 1_000_000);
        let (_, base_repeat) = run(pass, ifindex, &ssh, 1_000_000);

        println!("XDP per-packet cost (BPF_PROG_TEST_RUN, kernel-reported, {} CPUs)", std::thread::available_parallelism().map_or(0, |n| n.get()));
        println!("| path | calls | ns/packet (raw) | ns/packet (net of harness) |");
        println!("|---|---:|---:|---:|");
        println!("| harness baseline (trivial XDP_PASS program) | {runs} | {base:.0} | 0 |");
        println!("| new flow (SYN → writer: fib lookup, port claim, 2 inserts, rewrite) | {n_new} | {new:.0} | {:.0} |", new - base);
        println!("| established (client → backend rewrite) | {n_est} | {est:.0} | {:.0} |", est - base);
        println!("| reply (backend → client rewrite) | {n_rep} | {rep:.0} | {:.0} |", rep - base);
        println!("| non-VIP TCP pass (2 lookups, no rewrite) | {n_pass} | {pass_single:.0} | {:.0} |", pass_single - base);
        println!("| non-VIP TCP pass, repeat=1000000 | 1 | {pass_repeat:.1} | {:.1} (vs trivial program {base_repeat:.1}) |", pass_repeat - base_repeat);
    })
    .join();
    drop(pin);
    drop(ns);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
