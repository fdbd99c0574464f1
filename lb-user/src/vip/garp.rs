//! Gratuitous ARP frames for the VIP, as whole Ethernet frames for an `AF_PACKET` socket: they
//! make switches and neighbours' ARP caches point the VIP at the new master's MAC at once.

use std::net::Ipv4Addr;

/// The Ethernet broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// Length of a frame built here: the 60-byte Ethernet minimum (without FCS), zero padded.
pub const FRAME_LEN: usize = 60;

/// Which form of gratuitous ARP to build. Hosts differ in which they honour, so the runner
/// sends both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GarpKind {
    /// ARP request (operation 1) for the VIP, target hardware address zero (RFC 5227
    /// announcement).
    Request,
    /// ARP reply (operation 2), target hardware address = our MAC.
    Reply,
}

/// A broadcast gratuitous ARP frame announcing that `vip` is at `mac` (sender and target
/// protocol address both the VIP).
pub fn frame(kind: GarpKind, mac: [u8; 6], vip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let (operation, target_mac): (u16, [u8; 6]) = match kind {
        GarpKind::Request => (1, [0; 6]),
        GarpKind::Reply => (2, mac),
    };
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    f[18] = 6; // hardware address length
    f[19] = 4; // protocol address length
    f[20..22].copy_from_slice(&operation.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].copy_from_slice(&target_mac);
    f[38..42].copy_from_slice(&vip.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x21];
    const VIP: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 100);

    #[test]
    fn request_form_byte_for_byte() {
        let mut want = vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
            0x02, 0x00, 0x00, 0x00, 0x00, 0x21, // src: our MAC
            0x08, 0x06, // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4, // Ethernet / IPv4
            0x00, 0x01, // request
            0x02, 0x00, 0x00, 0x00, 0x00, 0x21, 172, 20, 0, 100, // sender: MAC, VIP
            0, 0, 0, 0, 0, 0, 172, 20, 0, 100, // target: zero, VIP
        ];
        want.resize(60, 0);
        assert_eq!(frame(GarpKind::Request, MAC, VIP).to_vec(), want);
    }

    #[test]
    fn reply_form_targets_our_mac() {
        let f = frame(GarpKind::Reply, MAC, VIP);
        assert_eq!(&f[20..22], &[0, 2], "operation must be reply");
        assert_eq!(&f[32..38], &MAC, "target hardware address must be ours");
        assert_eq!(&f[28..32], &f[38..42], "sender and target protocol address must both be the VIP");
        assert_eq!(&f[0..6], &BROADCAST, "a gratuitous reply is still broadcast");
        assert!(f[42..].iter().all(|b| *b == 0), "padding must be zero");
    }
}
