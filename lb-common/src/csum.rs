//! Internet checksums: incremental update (RFC 1624, eqn. 3) and from-scratch computation.
//!
//! All values are "wire words": a `u16` (or `u32`) whose in-memory bytes are the bytes on the
//! wire, i.e. what a plain load from the packet returns. The one's-complement sum is invariant
//! under a consistent byte swap, so no conversion to host order is needed, and the results are
//! stored back with a plain store.

/// Accumulates `~m + m'` over every changed 16-bit word of a header, then applies the sum to a
/// checksum field: `HC' = ~(~HC + ~m + m')` (RFC 1624, eqn. 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CsumDelta {
    sum: u32,
}

impl CsumDelta {
    /// An empty delta (applying it leaves a checksum unchanged, up to the ±0 representation).
    #[inline(always)]
    pub const fn new() -> Self {
        Self { sum: 0 }
    }

    /// Records that the 16-bit wire word `old` became `new`.
    #[inline(always)]
    pub const fn add_u16(self, old: u16, new: u16) -> Self {
        Self { sum: self.sum + (!old) as u32 + new as u32 }
    }

    /// Records that the 32-bit wire word `old` (e.g. an IPv4 address) became `new`.
    #[inline(always)]
    pub const fn add_u32(self, old: u32, new: u32) -> Self {
        let s = self.add_u16(old as u16, new as u16);
        s.add_u16((old >> 16) as u16, (new >> 16) as u16)
    }

    /// Applies the delta to the checksum field value `check` and returns the new field value.
    #[inline(always)]
    pub const fn apply(self, check: u16) -> u16 {
        !fold((!check) as u32 + fold(self.sum) as u32)
    }
}

/// Folds a 32-bit one's-complement accumulator into 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// One's-complement sum (not yet complemented) of `bytes` read as wire words, plus `initial`.
/// An odd trailing byte is padded with a zero byte, as RFC 1071 requires.
pub fn sum_bytes(bytes: &[u8], initial: u32) -> u32 {
    let mut sum = initial as u64;
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u16::from_ne_bytes([pair[0], pair[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += u16::from_ne_bytes([*last, 0]) as u64;
    }
    while sum >> 32 != 0 {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// One's-complement sum of a fixed-size, even-length buffer (no slices, no panics: usable
/// from eBPF), plus `initial`; folds to 16 bits only at the end.
#[inline(always)]
pub fn sum_fixed<const N: usize>(bytes: &[u8; N], initial: u32) -> u32 {
    let mut sum = initial;
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_ne_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// The from-scratch Internet checksum of `bytes` (the checksum field itself must be zero).
pub fn checksum(bytes: &[u8]) -> u16 {
    !fold(sum_bytes(bytes, 0))
}

/// The one's-complement sum of the IPv4 pseudo-header for a TCP segment of `tcp_len` bytes
/// (addresses in map representation).
pub const fn pseudo_header_sum(src: u32, dst: u32, tcp_len: u16) -> u32 {
    let proto_word = u16::from_ne_bytes([0, 6]) as u32;
    let len_word = u16::from_ne_bytes(tcp_len.to_be_bytes()) as u32;
    (src & 0xffff) + (src >> 16) + (dst & 0xffff) + (dst >> 16) + proto_word + len_word
}

/// The from-scratch TCP checksum of `segment` (header + payload, checksum field zeroed).
pub fn tcp_checksum(src: u32, dst: u32, segment: &[u8]) -> u16 {
    !fold(sum_bytes(segment, pseudo_header_sum(src, dst, segment.len() as u16)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*, a deterministic generator for table tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    fn set16(buf: &mut [u8], at: usize, v: u16) {
        buf[at..at + 2].copy_from_slice(&v.to_ne_bytes());
    }
    fn get16(buf: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([buf[at], buf[at + 1]])
    }
    fn get32(buf: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
    }

    #[test]
    fn rfc1071_example_matches() {
        // RFC 1071 section 3 example words: 0001 f203 f4f5 f6f7 -> sum ddf2 (before complement).
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        let sum = fold(sum_bytes(&bytes, 0));
        assert_eq!(sum.to_ne_bytes(), [0xdd, 0xf2], "RFC 1071 example sum");
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // A classic example header; its correct checksum is 0xb861.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = checksum(&hdr);
        assert_eq!(c.to_ne_bytes(), [0xb8, 0x61], "checksum of the example header");
        set16(&mut hdr, 10, c);
        assert_eq!(checksum(&hdr), 0, "a header with a correct checksum sums to zero");
    }

    #[test]
    fn incremental_update_matches_from_scratch_for_nat_rewrites() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for case in 0..20_000 {
            // Random IPv4 header (20 bytes) + TCP segment of random length (20..80 bytes).
            let seg_len = 20 + (rng.next() % 61) as usize;
            let mut ip = [0u8; 20];
            let mut seg = [0u8; 80];
            for b in ip.iter_mut().chain(seg[..seg_len].iter_mut()) {
                *b = rng.next() as u8;
            }
            ip[0] = 0x45;
            set16(&mut ip, 10, 0);
            let ip_check = checksum(&ip);
            set16(&mut ip, 10, ip_check);
            set16(&mut seg, 16, 0);
            let (src, dst) = (get32(&ip, 12), get32(&ip, 16));
            let tcp_check = tcp_checksum(src, dst, &seg[..seg_len]);
            set16(&mut seg, 16, tcp_check);

            // Full NAT: new addresses and ports; some cases keep a word unchanged.
            let new_src = if case % 7 == 0 { src } else { rng.next() as u32 };
            let new_dst = rng.next() as u32;
            let (old_sp, old_dp) = (get16(&seg, 0), get16(&seg, 2));
            let new_sp = if case % 5 == 0 { old_sp } else { rng.next() as u16 };
            let new_dp = rng.next() as u16;

            let addr_delta = CsumDelta::new().add_u32(src, new_src).add_u32(dst, new_dst);
            let tcp_delta = addr_delta.add_u16(old_sp, new_sp).add_u16(old_dp, new_dp);
            let new_ip_check = addr_delta.apply(ip_check);
            let new_tcp_check = tcp_delta.apply(tcp_check);

            ip[12..16].copy_from_slice(&new_src.to_ne_bytes());
            ip[16..20].copy_from_slice(&new_dst.to_ne_bytes());
            set16(&mut seg, 0, new_sp);
            set16(&mut seg, 2, new_dp);

            set16(&mut ip, 10, 0);
            let want_ip = checksum(&ip);
            set16(&mut seg, 16, 0);
            let want_tcp = tcp_checksum(new_src, new_dst, &seg[..seg_len]);
            // 0x0000 and 0xffff are both "zero" in one's complement; a receiver accepts either
            // for the IP header, but compare exactly: RFC 1624 eqn. 3 never yields -0 here.
            assert_eq!(new_ip_check, want_ip, "case {case}: IP checksum after incremental update");
            assert_eq!(new_tcp_check, want_tcp, "case {case}: TCP checksum after incremental update");
        }
    }

    #[test]
    fn empty_delta_keeps_checksum() {
        for check in [0x0001u16, 0x1234, 0xfffe, 0x8000] {
            assert_eq!(CsumDelta::new().apply(check), check, "empty delta on {check:#06x}");
        }
    }

    #[test]
    fn fixed_size_sum_matches_slice_sum() {
        let mut rng = Rng(99);
        for _ in 0..1000 {
            let mut b = [0u8; 20];
            b.iter_mut().for_each(|x| *x = rng.next() as u8);
            let init = rng.next() as u32 & 0xffff;
            assert_eq!(fold(sum_fixed(&b, init)), fold(sum_bytes(&b, init)), "sum of {b:?}");
        }
    }

    #[test]
    fn odd_length_is_zero_padded() {
        assert_eq!(checksum(&[0x12, 0x34, 0x56]), checksum(&[0x12, 0x34, 0x56, 0x00]), "odd byte padding");
    }
}
