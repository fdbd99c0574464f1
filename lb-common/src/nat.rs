//! The source-port (SNAT) allocation rule.
//!
//! A new flow to backend B gets source address VIP and a port from
//! `NAT_PORT_FIRST..=NAT_PORT_LAST`. The search starts at a hash of the client flow and the
//! backend and walks at most [`NAT_PORT_PROBES`] consecutive ports (wrapping inside the range);
//! the data plane claims a candidate by inserting the reverse entry `(B, VIP, port)` with
//! `BPF_NOEXIST`, so two CPUs can never hand out the same port for the same backend. If every
//! probe is taken the SYN is dropped and counted (`DROP_PORTS_EXHAUSTED`); the client retries.
//! Listener ports must lie outside the range (the control plane validates that), so a reply
//! to a NAT port is never mistaken for a new client connection.

use crate::hash::fmix32;

/// First NAT source port (host order).
pub const NAT_PORT_FIRST: u16 = 20000;
/// Last NAT source port (host order), inclusive.
pub const NAT_PORT_LAST: u16 = 60999;
/// Number of ports in the NAT range.
pub const NAT_PORT_COUNT: u32 = (NAT_PORT_LAST - NAT_PORT_FIRST) as u32 + 1;
/// How many candidates a new flow tries before giving up.
pub const NAT_PORT_PROBES: u32 = 8;

/// Start of the port search for a flow (map representation of addresses and ports).
#[inline(always)]
pub const fn nat_port_seed(flow_hash: u32, backend_addr: u32, backend_port: u16) -> u32 {
    fmix32(flow_hash ^ fmix32(backend_addr ^ ((backend_port as u32) << 16)))
}

/// The `attempt`-th candidate NAT port (host order) for a search started at `seed`.
#[inline(always)]
pub const fn nat_port_candidate(seed: u32, attempt: u32) -> u16 {
    let offset = (seed % NAT_PORT_COUNT + attempt) % NAT_PORT_COUNT;
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
    fn wraps_at_the_end_of_the_range() {
        let seed = NAT_PORT_COUNT - 1;
        assert_eq!(nat_port_candidate(seed, 0), NAT_PORT_LAST, "last port first");
        assert_eq!(nat_port_candidate(seed, 1), NAT_PORT_FIRST, "then wraps to the first");
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
        for (port, inside) in [(3000u16, false), (3001, false), (5432, false), (20000, true), (60999, true), (61000, false)] {
            assert_eq!(in_nat_range(port), inside, "port {port}");
        }
    }
}
