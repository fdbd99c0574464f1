//! The flow hash: picks a reader for a new connection and seeds the source-port search.
//!
//! It is a seeded mix of the 4-tuple using murmur3's 32-bit finaliser; cheap in eBPF (a few
//! multiplies, no loops) and well distributed (see the tests).

/// The murmur3 32-bit finaliser: a bijective avalanche mix.
#[inline(always)]
pub const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Hash of a client flow: client address and port, VIP and listener port (map representation,
/// i.e. network byte order as on the wire).
#[inline(always)]
pub const fn flow_hash(client_addr: u32, client_port: u16, vip: u32, port: u16) -> u32 {
    let mut h = fmix32(client_addr ^ 0x9e37_79b9);
    h = fmix32(h ^ vip);
    fmix32(h ^ ((client_port as u32) << 16 | port as u32))
}

/// Hash of a backend id with a seed; the Maglev builder derives offset and skip from it.
#[inline(always)]
pub const fn id_hash(id: u32, seed: u32) -> u32 {
    fmix32(fmix32(id ^ seed).wrapping_add(seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port_to_map;

    #[test]
    fn flow_hash_spreads_client_ports_evenly() {
        // 64k connections from one client to one listener, bucketed by hash % 16.
        const BUCKETS: usize = 16;
        let mut counts = [0u32; BUCKETS];
        let client = u32::from_ne_bytes([172, 20, 0, 50]);
        let vip = u32::from_ne_bytes([172, 20, 0, 100]);
        for port in 0..=u16::MAX {
            let h = flow_hash(client, port_to_map(port), vip, port_to_map(3001));
            counts[h as usize % BUCKETS] += 1;
        }
        let mean = 65536.0 / BUCKETS as f64;
        for (i, c) in counts.iter().enumerate() {
            let dev = (*c as f64 - mean).abs() / mean;
            assert!(dev < 0.03, "bucket {i} has {c} flows, {:.1}% off the mean {mean}", dev * 100.0);
        }
    }

    #[test]
    fn flow_hash_spreads_clients_evenly() {
        const BUCKETS: usize = 3;
        let mut counts = [0u32; BUCKETS];
        let vip = u32::from_ne_bytes([172, 20, 0, 100]);
        for host in 0..30_000u32 {
            let client = u32::from_ne_bytes([10, (host >> 16) as u8, (host >> 8) as u8, host as u8]);
            let h = flow_hash(client, port_to_map(40000), vip, port_to_map(3001));
            counts[h as usize % BUCKETS] += 1;
        }
        for (i, c) in counts.iter().enumerate() {
            assert!((9_500..=10_500).contains(c), "bucket {i} has {c} of 30000 clients");
        }
    }

    #[test]
    fn flow_hash_depends_on_every_field() {
        let base = flow_hash(1, 2, 3, 4);
        assert_ne!(base, flow_hash(5, 2, 3, 4), "client address");
        assert_ne!(base, flow_hash(1, 6, 3, 4), "client port");
        assert_ne!(base, flow_hash(1, 2, 7, 4), "vip");
        assert_ne!(base, flow_hash(1, 2, 3, 8), "listener port");
        assert_eq!(base, flow_hash(1, 2, 3, 4), "deterministic");
    }
}
