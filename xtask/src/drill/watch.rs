//! What the trust drills watch while a fault runs, each in its own thread:
//!
//! - [`VipWatch`]: who holds the VIP, about every millisecond, per load balancer (a thread in
//!   its namespace tries to bind a UDP socket to the VIP, which works only while the address is
//!   on the host: `ip -n pgha-lbN addr` at sub-millisecond resolution), as a list of changes;
//! - [`FloorWatch`]: new flows to a node below the floor. The floor is the highest timeline of
//!   any running primary seen so far (facts from PostgreSQL, not what a load balancer believes);
//!   a node below it is one that is not a standby and whose timeline is older: a primary on an
//!   older timeline (an old primary back as it was), or a node down whose last answer was that
//!   (the old primary from the failover until it answers as a standby again, rejoined). Every
//!   [`FLOOR_EVERY`] it reads each load balancer's per-backend `new_flows` (`pglb map dump
//!   --json`, no daemon needed) and then each node's role and timeline; a counter's rise
//!   between two samples counts when the node was below the floor at both.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle, Scope, ScopedJoinHandle},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::{Drill, NODES, now_us};
use crate::lab::{
    pglb_json,
    topology::{PG_PORT, VIP, host, load_balancers},
};

/// How often [`FloorWatch`] samples.
pub const FLOOR_EVERY: Duration = Duration::from_millis(300);

/// Changes of "this host holds the VIP": (µs since the epoch, held), the first entry the state
/// when the watch started.
pub type Changes = Vec<(u128, bool)>;

/// Samples who holds the VIP on each load balancer until [`VipWatch::finish`].
pub struct VipWatch {
    stop: Arc<AtomicBool>,
    threads: Vec<(&'static str, JoinHandle<Result<Changes>>)>,
}

impl VipWatch {
    /// Starts one sampler per load balancer; returns once each has taken its first look.
    pub fn start() -> Result<VipWatch> {
        let stop = Arc::new(AtomicBool::new(false));
        let vip: Ipv4Addr = VIP.parse().expect("the lab's VIP parses");
        let mut threads = Vec::new();
        for lb in load_balancers() {
            let (stop, ns_path) = (stop.clone(), format!("/run/netns/{}", lb.ns()));
            let (first, looked) = std::sync::mpsc::channel();
            let t = thread::spawn(move || -> Result<Changes> {
                let ns = File::open(&ns_path).with_context(|| format!("opening {ns_path} (is the lab up?)"))?;
                // SAFETY: setns with a valid namespace fd changes only this thread's namespace.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("entering {ns_path}: {}", std::io::Error::last_os_error());
                }
                let mut changes: Changes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let held = UdpSocket::bind(SocketAddrV4::new(vip, 0)).is_ok();
                    if changes.last().is_none_or(|(_, h)| *h != held) {
                        changes.push((now_us(), held));
                        let _ = first.send(());
                    }
                    thread::sleep(Duration::from_micros(500));
                }
                Ok(changes)
            });
            looked.recv_timeout(Duration::from_secs(10)).with_context(|| format!("the VIP sampler in {} took no first look", lb.name))?;
            threads.push((lb.name, t));
        }
        Ok(VipWatch { stop, threads })
    }

    /// Stops the samplers; the changes per load balancer name.
    pub fn finish(mut self) -> Result<BTreeMap<&'static str, Changes>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = BTreeMap::new();
        for (lb, t) in std::mem::take(&mut self.threads) {
            out.insert(lb, t.join().map_err(|_| anyhow::anyhow!("the VIP sampler in {lb} panicked"))??);
        }
        Ok(out)
    }
}

impl Drop for VipWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether the host held the VIP at `t` (as last seen at or before it).
pub fn held_at(c: &[(u128, bool)], t: u128) -> bool {
    c.iter().take_while(|(at, _)| *at <= t).last().is_some_and(|(_, h)| *h)
}

/// The first time after `from` the host's state became `held` (or `from` if it was already).
pub fn first(c: &[(u128, bool)], held: bool, from: u128) -> Option<u128> {
    if held_at(c, from) == held && c.first().is_some_and(|(t, _)| *t <= from) {
        return Some(from);
    }
    c.iter().find(|(t, h)| *t > from && *h == held).map(|(t, _)| *t)
}

/// Whether the host's state was `held` all through `[from, to]`.
pub fn throughout(c: &[(u128, bool)], held: bool, from: u128, to: u128) -> bool {
    c.first().is_some_and(|(t, _)| *t <= from) && held_at(c, from) == held && !c.iter().any(|(t, h)| *t > from && *t <= to && *h != held)
}

/// Milliseconds between two µs times.
pub fn ms(from: u128, to: u128) -> f64 {
    to.saturating_sub(from) as f64 / 1000.0
}

/// What [`FloorWatch`] saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Floor {
    /// Samples taken, those in which some node was below the floor, and the intervals between
    /// two samples during which one was (the new flows of those are counted).
    pub samples: usize,
    pub samples_below: usize,
    pub intervals_below: usize,
    /// The nodes seen below the floor (not standbys, on a timeline older than the floor).
    pub nodes_below: BTreeSet<String>,
    /// The floor at the end: the highest timeline of a running primary seen.
    pub floor: u32,
    /// New flows each load balancer opened to a node while it was below the floor.
    pub new_flows: BTreeMap<String, u64>,
}

struct FloorSample {
    /// Per load balancer: new flows by backend address (None: the dump failed).
    flows: Vec<(&'static str, Option<BTreeMap<String, u64>>)>,
    /// Each node's answer, read after the dumps: (in recovery, timeline), `None` when it does
    /// not answer.
    nodes: Vec<(&'static str, Option<(bool, u32)>)>,
}

/// Samples new flows and the nodes' roles until [`FloorWatch::finish`]; see the module doc.
/// Its thread stops when the watch is dropped too (an error or a panic in the drill), so the
/// scope it runs in never waits for it.
pub struct FloorWatch<'scope> {
    stop: Arc<AtomicBool>,
    thread: Option<ScopedJoinHandle<'scope, Vec<FloorSample>>>,
}

impl<'scope> FloorWatch<'scope> {
    pub fn start<'env>(s: &'scope Scope<'scope, 'env>, d: &'env Drill) -> FloorWatch<'scope> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = s.spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let flows = load_balancers().map(|lb| (lb.name, d.map_dump(lb).ok().and_then(|t| pglb_json::backend_new_flows(&t).ok()))).collect();
                let nodes = NODES.iter().map(|n| (*n, d.view(n).map(|v| (v.in_recovery, v.timeline)))).collect();
                samples.push(FloorSample { flows, nodes });
                thread::sleep(FLOOR_EVERY);
            }
            samples
        });
        FloorWatch { stop, thread: Some(thread) }
    }

    /// Stops sampling (after one more sample) and sums up.
    pub fn finish(mut self) -> Result<Floor> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        let samples = thread.join().map_err(|_| anyhow::anyhow!("the floor watch panicked"))?;
        floor_of(&samples)
    }
}

impl Drop for FloorWatch<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn backend_addr(node: &str) -> Result<String> {
    Ok(format!("{}:{PG_PORT}", host(node)?.addr))
}

fn floor_of(samples: &[FloorSample]) -> Result<Floor> {
    let mut f = Floor { samples: samples.len(), ..Floor::default() };
    let mut below_before: BTreeSet<String> = BTreeSet::new();
    // Each node's last answer: a node down is judged by it.
    let mut last: BTreeMap<&str, (bool, u32)> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        for (n, view) in &s.nodes {
            if let Some(v) = view {
                last.insert(n, *v);
            }
        }
        f.floor = f.floor.max(s.nodes.iter().filter_map(|(_, v)| v.filter(|(rec, _)| !rec).map(|(_, tl)| tl)).max().unwrap_or(0));
        let below: BTreeSet<String> = last.iter().filter(|(_, (rec, tl))| !rec && *tl < f.floor).map(|(n, _)| n.to_string()).collect();
        if !below.is_empty() {
            f.samples_below += 1;
        }
        f.nodes_below.extend(below.iter().cloned());
        if i > 0 {
            let both: Vec<&String> = below.intersection(&below_before).collect();
            if !both.is_empty() {
                f.intervals_below += 1;
            }
            for node in both {
                let addr = backend_addr(node)?;
                for ((lb, now), (_, before)) in s.flows.iter().zip(&samples[i - 1].flows) {
                    let rise = match (now, before) {
                        (Some(n), Some(b)) => n.get(&addr).copied().unwrap_or(0).saturating_sub(b.get(&addr).copied().unwrap_or(0)),
                        _ => 0,
                    };
                    *f.new_flows.entry(lb.to_string()).or_insert(0) += rise;
                }
            }
        }
        below_before = below;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_changes_are_read() {
        let c: Changes = vec![(10, true), (20, false), (30, true)];
        assert!(held_at(&c, 10) && held_at(&c, 15) && !held_at(&c, 25) && held_at(&c, 99));
        assert!(!held_at(&c, 5), "before the first look nothing is known: not held");
        assert_eq!(first(&c, false, 12), Some(20));
        assert_eq!(first(&c, true, 12), Some(12), "already held");
        assert_eq!(first(&c, true, 21), Some(30));
        assert_eq!(first(&c, false, 31), None);
        assert!(throughout(&c, true, 10, 19));
        assert!(!throughout(&c, true, 10, 20));
        assert!(throughout(&c, false, 21, 29));
        assert!(!throughout(&c, true, 5, 8), "a window before the first look proves nothing");
    }

    /// A sample: pg1's new flows on lb1 and lb2, and each node's answer (`P n`: primary on
    /// timeline n, `S n`: standby, `-`: down).
    fn sample(pg1_flows: [u64; 2], nodes: [&str; 3]) -> FloorSample {
        let answer = |a: &str| -> Option<(bool, u32)> {
            let (role, tl) = a.split_once(' ')?;
            Some((role == "S", tl.parse().ok()?))
        };
        FloorSample {
            flows: vec![
                ("lb1", Some(BTreeMap::from([("172.20.0.10:5432".to_owned(), pg1_flows[0])]))),
                ("lb2", Some(BTreeMap::from([("172.20.0.10:5432".to_owned(), pg1_flows[1])]))),
            ],
            nodes: vec![("pg1", answer(nodes[0])), ("pg2", answer(nodes[1])), ("pg3", answer(nodes[2]))],
        }
    }

    #[test]
    fn flows_count_only_while_the_node_is_below_the_floor() {
        let samples = [
            sample([5, 0], ["P 1", "S 1", "S 1"]),  // pg1 the writer: its flows are fine
            sample([6, 0], ["-", "S 1", "S 1"]),    // pg1 killed, no failover yet: still the floor's
            sample([9, 0], ["-", "P 2", "S 1"]),    // pg2 promoted: floor 2, pg1 (down) below it
            sample([10, 0], ["-", "P 2", "S 2"]),   // a flow to the dead old primary: counted
            sample([10, 1], ["P 1", "P 2", "S 2"]), // pg1 back on timeline 1: below
            sample([12, 1], ["P 1", "P 2", "S 2"]), // lb1 opened 2 flows to it: counted
            sample([12, 1], ["-", "P 2", "S 2"]),   // pg1 rewound: down, still below
            sample([12, 4], ["S 2", "P 2", "S 2"]), // pg1 a standby again: lb2's reads are fine
        ];
        let f = floor_of(&samples).unwrap();
        assert_eq!(f.floor, 2);
        assert_eq!(f.nodes_below, BTreeSet::from(["pg1".to_owned()]));
        assert_eq!((f.samples_below, f.intervals_below), (5, 4));
        assert_eq!(f.new_flows, BTreeMap::from([("lb1".to_owned(), 3), ("lb2".to_owned(), 1)]));
        let calm = floor_of(&samples[..2]).unwrap();
        assert!(calm.nodes_below.is_empty() && calm.new_flows.is_empty() && calm.intervals_below == 0);
    }
}
