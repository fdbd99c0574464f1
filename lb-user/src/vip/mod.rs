//! VIP ownership: VRRPv3 between pglb peers, gratuitous ARP, and the VIP address via netlink.
