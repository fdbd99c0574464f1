//! The VRRPv3 advertisement for IPv4 on the wire: encode, decode and the receive checks of
//! RFC 9568 §7.1, each failure named by a [`DropReason`].
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IPv4 Address(es)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! **Checksum** (RFC 9568 §5.2.8): the Internet checksum over the IPv4 pseudo-header
//! (source, destination, zero, protocol 112, VRRP message length) followed by the VRRP message.
//! The destination is the packet's real destination: 224.0.0.18 for multicast, the peer's
//! address for unicast. keepalived does the same since 1.3.6; older keepalived always put
//! 224.0.0.18 in the pseudo-header, even for unicast (its `old_unicast_checksum` option), so on
//! receive a unicast packet whose checksum fails with its real destination is checked once more
//! with 224.0.0.18 and accepted if that matches ([`Received::legacy_checksum`] is then set).
//!
//! **Receive checks**, in this order, the first failure wins: IPv4 header well formed
//! ([`DropReason::IpHeader`]), protocol 112 ([`DropReason::NotVrrp`]), TTL 255
//! ([`DropReason::Ttl`]), version 3 ([`DropReason::Version`]), type 1
//! ([`DropReason::Type`]), the whole message present ([`DropReason::Truncated`]), a non-zero
//! address count that matches the message length ([`DropReason::AddressCount`], RFC 9568
//! §5.2.5 and erratum 8299), the checksum ([`DropReason::Checksum`]), and last the VRID
//! ([`DropReason::VridMismatch`]: a valid advert of another virtual router on the same link, "not
//! ours", counted apart from errors).
//!
//! **Address list**: RFC 9568 §7.1 says a receiver MAY check that the address list matches its
//! own configuration and, if not, SHOULD log and MAY report a misconfiguration; it does not say
//! to discard. pglb follows that: [`address_list_matches`] is checked by the runner, a mismatch
//! is logged and counted, and the advert is still processed.

use std::net::Ipv4Addr;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The IPv4 multicast group VRRP adverts are sent to.
pub const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The only TTL a VRRP advert may arrive with.
pub const VRRP_TTL: u8 = 255;
/// VRRP version spoken here.
pub const VERSION: u8 = 3;
/// Type code of an advertisement, the only VRRPv3 message type.
pub const TYPE_ADVERT: u8 = 1;
/// Length of the fixed part of a VRRPv3 message, before the addresses.
pub const HEADER_LEN: usize = 8;
/// The largest Max Adver Int (12 bits), in centiseconds.
pub const MAX_ADVERT_INT_CS: u16 = 0x0fff;

/// A VRRPv3 advertisement for IPv4, as carried after the IPv4 header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// Virtual router id, 1–255.
    pub vrid: u8,
    /// The sender's priority: 0 = leaving, 1–254 = backup capable, 255 = address owner.
    pub priority: u8,
    /// The sender's advertisement interval in centiseconds (12 bits on the wire).
    pub max_advert_int_cs: u16,
    /// The virtual addresses of this virtual router.
    pub addresses: Vec<Ipv4Addr>,
}

/// Why a received datagram was not handed to the state machine. Every drop is counted under one
/// of these; [`DropReason::as_str`] is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Not a well-formed IPv4 header (version, header length, total length).
    IpHeader,
    /// IP protocol is not 112.
    NotVrrp,
    /// IP TTL is not 255: the packet crossed a router (RFC 9568 §7.1).
    Ttl,
    /// VRRP version is not 3.
    Version,
    /// VRRP type is not 1 (advertisement).
    Type,
    /// Shorter than the fixed header plus the addresses its count announces.
    Truncated,
    /// Address count is 0, or bytes follow the announced addresses.
    AddressCount,
    /// The checksum over pseudo-header and message does not verify.
    Checksum,
    /// A valid advert for another virtual router id: not ours.
    VridMismatch,
}

impl DropReason {
    /// Every reason, in check order (for metrics that list all labels, zero included).
    pub const ALL: [DropReason; 9] = [
        DropReason::IpHeader,
        DropReason::NotVrrp,
        DropReason::Ttl,
        DropReason::Version,
        DropReason::Type,
        DropReason::Truncated,
        DropReason::AddressCount,
        DropReason::Checksum,
        DropReason::VridMismatch,
    ];

    /// A stable snake_case name, used as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::IpHeader => "ip_header",
            DropReason::NotVrrp => "not_vrrp",
            DropReason::Ttl => "ttl",
            DropReason::Version => "version",
            DropReason::Type => "type",
            DropReason::Truncated => "truncated",
            DropReason::AddressCount => "address_count",
            DropReason::Checksum => "checksum",
            DropReason::VridMismatch => "vrid_mismatch",
        }
    }

    /// Index into [`DropReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An advert that passed every receive check, with the IPv4 header fields that matter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// IPv4 source: the sender's primary address, used for tie-breaks.
    pub src: Ipv4Addr,
    /// IPv4 destination: 224.0.0.18 or our unicast address.
    pub dst: Ipv4Addr,
    /// The advert itself.
    pub advert: Advert,
    /// The checksum only verified with 224.0.0.18 in place of a unicast destination (a
    /// keepalived older than 1.3.6, or one configured with `old_unicast_checksum`).
    pub legacy_checksum: bool,
}

impl Advert {
    /// Length of this advert's VRRP message in bytes.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + 4 * self.addresses.len()
    }

    /// The VRRP message (no IP header), checksummed for an IPv4 packet from `src` to `dst`.
    ///
    /// Panics if there are more than 255 addresses or the interval does not fit 12 bits; the
    /// parameters are validated long before (see `VrrpParams::validate`).
    pub fn encode(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let count = u8::try_from(self.addresses.len()).expect("at most 255 addresses per advert");
        assert!(
            self.max_advert_int_cs <= MAX_ADVERT_INT_CS,
            "advert interval {} cs does not fit 12 bits",
            self.max_advert_int_cs
        );
        let mut buf = Vec::with_capacity(self.wire_len());
        buf.push((VERSION << 4) | TYPE_ADVERT);
        buf.push(self.vrid);
        buf.push(self.priority);
        buf.push(count);
        buf.extend_from_slice(&self.max_advert_int_cs.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        for address in &self.addresses {
            buf.extend_from_slice(&address.octets());
        }
        let checksum = checksum(src, dst, &buf);
        buf[6..8].copy_from_slice(&checksum.to_be_bytes());
        buf
    }

    /// Decodes and checks a VRRP message (no IP header) received from `src` to `dst`: version,
    /// type, length, address count and checksum. The VRID is not checked here.
    pub fn decode(msg: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<(Advert, bool), DropReason> {
        let Some(fixed) = msg.get(..HEADER_LEN) else {
            // Too short to even read the version; a truncated message is a length error.
            return Err(match msg.first() {
                Some(b) if b >> 4 != VERSION => DropReason::Version,
                Some(b) if b & 0x0f != TYPE_ADVERT => DropReason::Type,
                _ => DropReason::Truncated,
            });
        };
        if fixed[0] >> 4 != VERSION {
            return Err(DropReason::Version);
        }
        if fixed[0] & 0x0f != TYPE_ADVERT {
            return Err(DropReason::Type);
        }
        let count = usize::from(fixed[3]);
        if count == 0 {
            return Err(DropReason::AddressCount);
        }
        let expected = HEADER_LEN + 4 * count;
        if msg.len() < expected {
            return Err(DropReason::Truncated);
        }
        if msg.len() > expected {
            return Err(DropReason::AddressCount);
        }
        let mut legacy_checksum = false;
        if !checksum_ok(src, dst, msg) {
            if dst != VRRP_GROUP && checksum_ok(src, VRRP_GROUP, msg) {
                legacy_checksum = true;
            } else {
                return Err(DropReason::Checksum);
            }
        }
        let advert = Advert {
            vrid: fixed[1],
            priority: fixed[2],
            max_advert_int_cs: u16::from_be_bytes([fixed[4], fixed[5]]) & MAX_ADVERT_INT_CS,
            addresses: msg[HEADER_LEN..]
                .chunks_exact(4)
                .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]))
                .collect(),
        };
        Ok((advert, legacy_checksum))
    }
}

/// Parses an IPv4 datagram as delivered by a raw socket (IP header included) and runs every
/// receive check of RFC 9568 §7.1, `vrid` being the virtual router configured on this link.
pub fn parse_ipv4(datagram: &[u8], vrid: u8) -> Result<Received, DropReason> {
    let Some(first) = datagram.first() else {
        return Err(DropReason::IpHeader);
    };
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || datagram.len() < ihl {
        return Err(DropReason::IpHeader);
    }
    let total_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if total_len < ihl || total_len > datagram.len() {
        return Err(DropReason::IpHeader);
    }
    if datagram[9] != IPPROTO_VRRP {
        return Err(DropReason::NotVrrp);
    }
    if datagram[8] != VRRP_TTL {
        return Err(DropReason::Ttl);
    }
    let src = Ipv4Addr::new(datagram[12], datagram[13], datagram[14], datagram[15]);
    let dst = Ipv4Addr::new(datagram[16], datagram[17], datagram[18], datagram[19]);
    let (advert, legacy_checksum) = Advert::decode(&datagram[ihl..total_len], src, dst)?;
    if advert.vrid != vrid {
        return Err(DropReason::VridMismatch);
    }
    Ok(Received { src, dst, advert, legacy_checksum })
}

/// Whether an advert's address list is exactly the configured one (order ignored). A mismatch
/// is a misconfiguration to log and count; the advert is still processed (see the module doc).
pub fn address_list_matches(advert: &Advert, configured: &[Ipv4Addr]) -> bool {
    let mut got = advert.addresses.clone();
    let mut want = configured.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    got == want
}

/// The VRRPv3 checksum of `msg` (its checksum field taken as zero) for an IPv4 packet from
/// `src` to `dst`.
pub fn checksum(src: Ipv4Addr, dst: Ipv4Addr, msg: &[u8]) -> u16 {
    let mut sum = pseudo_header_sum(src, dst, msg.len());
    for (i, word) in msg.chunks(2).enumerate() {
        if i == 3 {
            continue; // the checksum field itself
        }
        sum += u32::from(u16::from_be_bytes([word[0], *word.get(1).unwrap_or(&0)]));
    }
    !fold(sum)
}

/// Whether `msg`'s checksum field verifies for a packet from `src` to `dst`.
fn checksum_ok(src: Ipv4Addr, dst: Ipv4Addr, msg: &[u8]) -> bool {
    msg.len() >= HEADER_LEN && checksum(src, dst, msg) == u16::from_be_bytes([msg[6], msg[7]])
}

/// One's-complement partial sum of the IPv4 pseudo-header for a VRRP message of `len` bytes.
fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u32 {
    let [s0, s1, s2, s3] = src.octets();
    let [d0, d1, d2, d3] = dst.octets();
    // A VRRP message is at most 8 + 4 × 255 bytes, far below 2^16.
    let len = u32::try_from(len).unwrap_or(u32::MAX) & 0xffff;
    u32::from(u16::from_be_bytes([s0, s1]))
        + u32::from(u16::from_be_bytes([s2, s3]))
        + u32::from(u16::from_be_bytes([d0, d1]))
        + u32::from(u16::from_be_bytes([d2, d3]))
        + u32::from(IPPROTO_VRRP)
        + len
}

/// Folds carries of a 32-bit one's-complement sum into 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    const LB1: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 21);
    const LB2: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 22);
    const VIP: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 100);

    fn lab_advert() -> Advert {
        Advert { vrid: 51, priority: 150, max_advert_int_cs: 100, addresses: vec![VIP] }
    }

    /// The lab's advert from lb1 (vrid 51, priority 150, 1 s, VIP 172.20.0.100) to 224.0.0.18,
    /// checksum worked out by hand in 16-bit big-endian words:
    ///
    /// ```text
    /// pseudo-header  ac14 + 0015 + e000 + 0012 + 0070 + 000c        = 0x18cb7
    ///   ac14+0015 = ac29; +e000 = 18c29; +0012 = 18c3b; +0070 = 18cab; +000c = 18cb7
    /// message        3133 + 9601 + 0064 + (0000) + ac14 + 0064
    ///   18cb7 + 3133 = 1bdea; +9601 = 253eb; +0064 = 2544f; +ac14 = 30063; +0064 = 300c7
    /// fold           0x0003 + 0x00c7 = 0x00ca;  checksum = !0x00ca = 0xff35
    /// ```
    const LAB_ADVERT_BYTES: [u8; 12] =
        [0x31, 0x33, 0x96, 0x01, 0x00, 0x64, 0xff, 0x35, 172, 20, 0, 100];

    /// Two IPv4 datagrams keepalived 2.2.7 (Debian, `vrrp_version 3`, vrid 51, priority 150,
    /// `advert_int 1`, VIP 172.20.0.100/32) sent from 172.20.0.21, captured with `tcpdump -x`
    /// in a test namespace: a regular advert and the priority-0 advert of its graceful stop.
    const KEEPALIVED_ADVERT: [u8; 32] = [
        0x45, 0xc0, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0x2e, 0x71, 0xac, 0x14, 0x00, 0x15,
        0xe0, 0x00, 0x00, 0x12, 0x31, 0x33, 0x96, 0x01, 0x00, 0x64, 0xff, 0x35, 0xac, 0x14, 0x00, 0x64,
    ];
    const KEEPALIVED_LEAVING: [u8; 32] = [
        0x45, 0xc0, 0x00, 0x20, 0x00, 0x04, 0x00, 0x00, 0xff, 0x70, 0x2e, 0x6e, 0xac, 0x14, 0x00, 0x15,
        0xe0, 0x00, 0x00, 0x12, 0x31, 0x33, 0x00, 0x01, 0x00, 0x64, 0x95, 0x36, 0xac, 0x14, 0x00, 0x64,
    ];

    #[test]
    fn keepalived_adverts_parse_and_match_our_encoding() {
        let got = parse_ipv4(&KEEPALIVED_ADVERT, 51).expect("keepalived's advert must pass every check");
        assert_eq!(got.advert, lab_advert());
        assert_eq!((got.src, got.dst, got.legacy_checksum), (LB1, VRRP_GROUP, false));
        assert_eq!(lab_advert().encode(LB1, VRRP_GROUP), KEEPALIVED_ADVERT[20..].to_vec(), "byte-identical to keepalived");
        assert_eq!(KEEPALIVED_ADVERT[20..], LAB_ADVERT_BYTES, "keepalived agrees with the hand computation");

        let leaving = parse_ipv4(&KEEPALIVED_LEAVING, 51).expect("keepalived's priority-0 advert must pass");
        let want = Advert { priority: 0, ..lab_advert() };
        assert_eq!(leaving.advert, want);
        assert_eq!(want.encode(LB1, VRRP_GROUP), KEEPALIVED_LEAVING[20..].to_vec());
    }

    #[test]
    fn encodes_the_hand_computed_lab_advert() {
        assert_eq!(lab_advert().encode(LB1, VRRP_GROUP), LAB_ADVERT_BYTES.to_vec());
    }

    #[test]
    fn decodes_the_hand_computed_lab_advert() {
        let (advert, legacy) = Advert::decode(&LAB_ADVERT_BYTES, LB1, VRRP_GROUP)
            .expect("hand-computed advert must verify");
        assert_eq!(advert, lab_advert());
        assert!(!legacy, "a multicast advert never needs the legacy checksum");
    }

    #[test]
    fn checksum_depends_on_pseudo_header() {
        // Same message, other source: the checksum must change (v2-style checksums would not).
        let a = lab_advert().encode(LB1, VRRP_GROUP);
        let b = lab_advert().encode(LB2, VRRP_GROUP);
        assert_ne!(a[6..8], b[6..8], "checksum must cover the source address");
        assert_eq!(Advert::decode(&a, LB2, VRRP_GROUP), Err(DropReason::Checksum));
    }

    #[test]
    fn round_trips_many_shapes() {
        for (priority, interval, count) in [(0u8, 1u16, 1usize), (1, 100, 2), (254, 4095, 20), (255, 7, 255)] {
            let advert = Advert {
                vrid: 7,
                priority,
                max_advert_int_cs: interval,
                addresses: (0..count).map(|i| Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)).collect(),
            };
            let bytes = advert.encode(LB2, LB1);
            assert_eq!(bytes.len(), 8 + 4 * count, "length for {count} addresses");
            let (back, legacy) = Advert::decode(&bytes, LB2, LB1).expect("round trip must verify");
            assert_eq!(back, advert, "round trip of priority {priority} interval {interval}");
            assert!(!legacy);
        }
    }

    #[test]
    fn reserved_bits_are_ignored_on_decode() {
        let mut bytes = lab_advert().encode(LB1, VRRP_GROUP);
        bytes[4] |= 0xf0;
        let sum = checksum(LB1, VRRP_GROUP, &bytes);
        bytes[6..8].copy_from_slice(&sum.to_be_bytes());
        let (advert, _) = Advert::decode(&bytes, LB1, VRRP_GROUP).expect("reserved bits set is still valid");
        assert_eq!(advert.max_advert_int_cs, 100);
    }

    #[test]
    fn unicast_checksum_with_group_address_is_accepted_as_legacy() {
        let bytes = lab_advert().encode(LB1, VRRP_GROUP);
        let (advert, legacy) =
            Advert::decode(&bytes, LB1, LB2).expect("old keepalived unicast checksum must be accepted");
        assert_eq!(advert, lab_advert());
        assert!(legacy, "legacy flag must be set");
    }

    /// An IPv4 header (no options) around `msg`.
    fn ip_datagram(ttl: u8, proto: u8, src: Ipv4Addr, dst: Ipv4Addr, msg: &[u8]) -> Vec<u8> {
        let total = (20 + msg.len()) as u16;
        let mut d = vec![0x45, 0xc0];
        d.extend_from_slice(&total.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 0, ttl, proto, 0, 0]);
        d.extend_from_slice(&src.octets());
        d.extend_from_slice(&dst.octets());
        d.extend_from_slice(msg);
        d
    }

    fn lab_datagram() -> Vec<u8> {
        ip_datagram(255, 112, LB1, VRRP_GROUP, &LAB_ADVERT_BYTES)
    }

    /// Rewrites the message's checksum after a deliberate corruption, so only the intended
    /// check fails.
    fn refresh_checksum(d: &mut [u8]) {
        let sum = checksum(LB1, VRRP_GROUP, &d[20..]);
        d[26..28].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn accepts_a_good_datagram() {
        let got = parse_ipv4(&lab_datagram(), 51).expect("good datagram");
        assert_eq!(
            got,
            Received { src: LB1, dst: VRRP_GROUP, advert: lab_advert(), legacy_checksum: false }
        );
    }

    #[test]
    fn each_bad_datagram_is_dropped_with_its_reason() {
        let mut cases: Vec<(&str, Vec<u8>, DropReason)> = Vec::new();

        cases.push(("empty", vec![], DropReason::IpHeader));
        let mut d = lab_datagram();
        d[0] = 0x65;
        cases.push(("ip version 6", d, DropReason::IpHeader));
        let mut d = lab_datagram();
        d[2..4].copy_from_slice(&100u16.to_be_bytes());
        cases.push(("ip total length beyond buffer", d, DropReason::IpHeader));
        cases.push(("protocol 17", ip_datagram(255, 17, LB1, VRRP_GROUP, &LAB_ADVERT_BYTES), DropReason::NotVrrp));
        cases.push(("ttl 254", ip_datagram(254, 112, LB1, VRRP_GROUP, &LAB_ADVERT_BYTES), DropReason::Ttl));
        cases.push(("ttl 1", ip_datagram(1, 112, LB1, VRRP_GROUP, &LAB_ADVERT_BYTES), DropReason::Ttl));

        let mut d = lab_datagram();
        d[20] = 0x21; // version 2
        refresh_checksum(&mut d);
        cases.push(("vrrp version 2", d, DropReason::Version));

        let mut d = lab_datagram();
        d[20] = 0x32; // type 2
        refresh_checksum(&mut d);
        cases.push(("vrrp type 2", d, DropReason::Type));

        let mut d = lab_datagram();
        d.truncate(20 + 10);
        d[2..4].copy_from_slice(&30u16.to_be_bytes());
        cases.push(("address cut off", d, DropReason::Truncated));

        let mut d = lab_datagram();
        d.truncate(20 + 6);
        d[2..4].copy_from_slice(&26u16.to_be_bytes());
        cases.push(("fixed header cut off", d, DropReason::Truncated));

        let mut d = lab_datagram();
        d[23] = 2; // count says 2, one address present
        refresh_checksum(&mut d);
        cases.push(("count larger than payload", d, DropReason::Truncated));

        let mut d = lab_datagram();
        d[23] = 0;
        refresh_checksum(&mut d);
        cases.push(("count zero", d, DropReason::AddressCount));

        let mut msg = LAB_ADVERT_BYTES.to_vec();
        msg.extend_from_slice(&[10, 0, 0, 1]);
        let mut d = ip_datagram(255, 112, LB1, VRRP_GROUP, &msg);
        refresh_checksum(&mut d);
        cases.push(("bytes after the announced addresses", d, DropReason::AddressCount));

        let mut d = lab_datagram();
        d[27] ^= 0x01;
        cases.push(("checksum off by one bit", d, DropReason::Checksum));

        let mut d = lab_datagram();
        d[22] = 200; // priority changed, checksum not refreshed
        cases.push(("payload changed after checksum", d, DropReason::Checksum));

        let mut d = lab_datagram();
        d[21] = 52;
        refresh_checksum(&mut d);
        cases.push(("another vrid", d, DropReason::VridMismatch));

        for (name, datagram, reason) in cases {
            assert_eq!(parse_ipv4(&datagram, 51), Err(reason), "case {name:?}");
        }
    }

    #[test]
    fn ip_options_and_padding_are_handled() {
        // IHL 6 (one option word) and 2 bytes of link-layer padding past total length.
        let mut d = vec![0x46, 0xc0];
        d.extend_from_slice(&(24u16 + 12).to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 0, 255, 112, 0, 0]);
        d.extend_from_slice(&LB1.octets());
        d.extend_from_slice(&VRRP_GROUP.octets());
        d.extend_from_slice(&[0x94, 0x04, 0, 0]); // router alert
        d.extend_from_slice(&LAB_ADVERT_BYTES);
        d.extend_from_slice(&[0, 0]);
        let got = parse_ipv4(&d, 51).expect("options and padding");
        assert_eq!(got.advert, lab_advert());
    }

    #[test]
    fn address_list_check_ignores_order() {
        let mut advert = lab_advert();
        assert!(address_list_matches(&advert, &[VIP]));
        assert!(!address_list_matches(&advert, &[LB1]));
        advert.addresses = vec![LB1, VIP];
        assert!(address_list_matches(&advert, &[VIP, LB1]));
        assert!(!address_list_matches(&advert, &[VIP]));
    }

    #[test]
    fn drop_reason_labels_are_unique_and_indexed() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?} index");
        }
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::ALL.len());
    }
}
