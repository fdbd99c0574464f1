//! The source-port (SNAT) allocation rule.
//!
//! A new flow to backend B gets source address VIP and a port from
//! `NAT_PORT_FIRST..=NAT_PORT_LAST`. The search is double hashing: it starts at a hash of the
//! client flow and the backend and steps by a second, flow-dependent stride (the range size is
//! prime, so every stride visits distinct ports and there is no clustering) for at most
//! [`NAT_PORT_PROBES`] candidates;
//! the data plane claims a candidate by inserting the reverse entry `(B, VIP, port)` with
//! `BPF_NOEXIST`, so two CPUs can never hand out the same port for the same backend. If every
//! probe is taken the SYN is dropped and counted (`DROP_PORTS_EXHAUSTED`); the client retries.
//! Listener ports must lie outside the range (the control plane validates that), so a reply
//! to a NAT port is never mistaken for a new client connection.

use crate::hash::fmix32;

/// First NAT source port (host order).
pub const NAT_PORT_FIRST: u16 = 20000;
/// Last NAT source port (host order), inclusive. The range holds a prime number of ports.
pub const NAT_PORT_LAST: u16 = 60992;
/// Number of ports in the NAT range.
pub const NAT_PORT_COUNT: u32 = (NAT_PORT_LAST - NAT_PORT_FIRST) as u32 + 1;
/// How many candidates a new flow tries before giving up.
pub const NAT_PORT_PROBES: u32 = 16;

/// Start of the port search for a flow (map representation of addresses and ports).
#[inline(always)]
pub const fn nat_port_seed(flow_hash: u32, backend_addr: u32, backend_port: u16) -> u32 {
    fmix32(flow_hash ^ fmix32(backend_addr ^ ((backend_port as u32) << 16)))
}

/// The `attempt`-th candidate NAT port (host order) for a search started at `seed`.
#[inline(always)]
pub const fn nat_port_candidate(seed: u32, attempt: u32) -> u16 {
    let start = seed % NAT_PORT_COUNT;
    let stride = fmix32(seed) % (NAT_PORT_COUNT - 1) + 1;
    let offset = (start as u64 + attempt as u64 * stride as u64) % NAT_PORT_COUNT as u64;
    NAT_PORT_FIRST + offset as u16
}

/// Whether a listener port would collide with the NAT range.
pub const fn in_nat_range(port: u16) -> bool {
    port >= NAT_PORT_FIRST && port <= NAT_PORT_LAST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_stay_in_range_and_are_distinct() {
        let seeds = [0u32, 1, NAT_PORT_COUNT - 1, NAT_PORT_COUNT - 3, 0xdead_beef, u32::MAX];
        for seed in seeds {
            let mut seen = [0u16; NAT_PORT_PROBES as usize];
            for attempt in 0..NAT_PORT_PROBES {
                let p = nat_port_candidate(seed, attempt);
                assert!(in_nat_range(p), "seed {seed:#x} attempt {attempt}: port {p} outside the range");
                assert!(!seen.contains(&p), "seed {seed:#x} attempt {attempt}: port {p} repeated");
                seen[attempt as usize] = p;
            }
        }
    }

    #[test]
    fn range_size_is_prime_so_every_stride_is_a_permutation() {
        assert!(crate::maglev::is_prime(NAT_PORT_COUNT as usize), "NAT_PORT_COUNT {NAT_PORT_COUNT} must be prime");
        assert_eq!(nat_port_candidate(NAT_PORT_COUNT - 1, 0), NAT_PORT_LAST, "the last port is reachable");
        assert_eq!(nat_port_candidate(0, 0), NAT_PORT_FIRST, "the first port is reachable");
    }

    #[test]
    fn one_client_can_open_most_of_the_range_to_one_backend() {
        // Simulate the data plane's claim loop for 36,000 flows (88% of the range) from one
        // client address to one backend: double hashing must not exhaust early.
        extern crate std;
        let mut used = std::vec![false; NAT_PORT_COUNT as usize];
        let mut failures = 0;
        for i in 0..36_000u32 {
            let h = crate::hash::flow_hash(0x3200_1fac, (i % 65536) as u16, 0x6400_1fac, 0xb80b ^ (i >> 16) as u16);
            let seed = nat_port_seed(h, 0x0a00_1fac, 0x3815);
            let slot = (0..NAT_PORT_PROBES)
                .map(|a| (nat_port_candidate(seed, a) - NAT_PORT_FIRST) as usize)
                .find(|&p| !used[p]);
            match slot {
                Some(p) => used[p] = true,
                None => failures += 1,
            }
        }
        assert!(failures < 36_000 / 100, "{failures} of 36,000 flows found no port in {NAT_PORT_PROBES} probes");
    }

    #[test]
    fn seeds_spread_over_the_range() {
        // 41000 flows from distinct client ports: the starting ports must cover the range
        // roughly uniformly (8 buckets within 5%).
        let mut buckets = [0u32; 8];
        for p in 0..NAT_PORT_COUNT {
            let h = crate::hash::flow_hash(0x0a00_0001, p as u16, 0x6400_14ac, 0xb80b);
            let port = nat_port_candidate(nat_port_seed(h, 0x0a00_14ac, 0x3815), 0);
            buckets[((port - NAT_PORT_FIRST) as u32 * 8 / NAT_PORT_COUNT) as usize] += 1;
        }
        let mean = NAT_PORT_COUNT as f64 / 8.0;
        for (i, b) in buckets.iter().enumerate() {
            assert!(((*b as f64 - mean).abs() / mean) < 0.05, "bucket {i}: {b} starts (mean {mean})");
        }
    }

    #[test]
    fn listener_ports_outside_the_range() {
        for (port, inside) in [(3000u16, false), (3001, false), (5432, false), (20000, true), (60992, true), (60993, false)] {
            assert_eq!(in_nat_range(port), inside, "port {port}");
        }
    }
}
