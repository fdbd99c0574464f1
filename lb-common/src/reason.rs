//! Why a packet got its verdict: one per-CPU counter per reason (`REASONS` map, indexed by
//! these codes). The verdict itself follows from the reason ([`verdict_of`]).

/// Not IPv4 (ARP, IPv6, VLAN-tagged, ...): passed to the kernel.
pub const PASS_NOT_IPV4: u32 = 0;
/// IPv4 but not TCP (UDP, ICMP, VRRP, ...): passed.
pub const PASS_NOT_TCP: u32 = 1;
/// TCP that is neither to a VIP listener nor a reply to a NAT'd flow (SSH, probes): passed.
pub const PASS_NOT_VIP: u32 = 2;
/// An IPv4 fragment: passed to the kernel, never forwarded.
pub const PASS_FRAGMENT: u32 = 3;
/// Shorter than an Ethernet header.
pub const DROP_TRUNC_ETH: u32 = 4;
/// Shorter than a minimal IPv4 header.
pub const DROP_TRUNC_IPV4: u32 = 5;
/// IPv4 ethertype but IP version is not 4.
pub const DROP_BAD_IP_VERSION: u32 = 6;
/// IHL below 5, or the IP options run past the packet.
pub const DROP_BAD_IHL: u32 = 7;
/// Total length smaller than the header or larger than the packet.
pub const DROP_BAD_IP_LEN: u32 = 8;
/// Shorter than a minimal TCP header.
pub const DROP_TRUNC_TCP: u32 = 9;
/// TCP data offset below 5, or the TCP options run past the IP payload.
pub const DROP_BAD_DOFF: u32 = 10;
/// A SYN started a new flow and was forwarded to its backend.
pub const TX_NEW_FLOW: u32 = 11;
/// A packet of a known flow was forwarded to its backend.
pub const TX_TO_BACKEND: u32 = 12;
/// A backend's reply was forwarded to the client.
pub const TX_TO_CLIENT: u32 = 13;
/// A non-SYN packet of an unknown flow to a VIP listener was answered with RST.
pub const TX_RST_UNKNOWN_FLOW: u32 = 14;
/// A client packet of a write flow whose backend is no longer the writer: RST to the client.
pub const TX_RST_STALE_CLIENT: u32 = 15;
/// A reply from a backend that is no longer the writer: RST to that backend.
pub const TX_RST_STALE_BACKEND: u32 = 16;
/// A SYN to a write listener while no writer is set: RST.
pub const TX_RST_NO_WRITER: u32 = 17;
/// A SYN to a read listener while the reader table is empty: RST.
pub const TX_RST_NO_READER: u32 = 18;
/// A SYN (or a write flow past the lease's grace) while the control plane's lease has run out
/// (pglb killed or hung): RST, so the client tries again, through the new VIP holder once its
/// ARP cache has moved.
pub const TX_RST_LEASE_EXPIRED: u32 = 19;
/// A RST of an unknown flow: dropped (never answer a RST with a RST).
pub const DROP_RST_UNKNOWN_FLOW: u32 = 20;
/// No free NAT source port for the backend within the probe budget (every candidate held by an
/// established flow or a half-open one).
pub const DROP_PORTS_EXHAUSTED: u32 = 21;
/// No MAC address for the backend (FIB/neighbour lookup failed and none configured).
pub const DROP_NO_NEIGH: u32 = 22;
/// The half-open table refused an insert (an LRU map does so only on an internal error: it
/// reclaims its oldest entry instead).
pub const DROP_FLOW_TABLE: u32 = 23;
/// An internal error (a helper failed); should stay at zero.
pub const DROP_INTERNAL: u32 = 24;
/// An ARP request for the VIP while the control plane's lease has run out: dropped, so this
/// host stops answering for the VIP and clients resolve it to the load balancer that holds it.
pub const DROP_ARP_LEASE_EXPIRED: u32 = 25;
/// The client's ACK of the backend's SYN: the flow moved from the half-open table to the
/// established one and the ACK was forwarded.
pub const TX_HANDSHAKE_DONE: u32 = 26;
/// The client completed a handshake but the established table refused the flow (full): RST to
/// the client (the backend's half-open connection is answered with RST by this host's kernel
/// when it retransmits its SYN+ACK). No established flow is ever evicted to make room.
pub const TX_RST_FLOW_TABLE_FULL: u32 = 27;
/// SYN+FIN or SYN+RST to a listener: dropped.
pub const DROP_BAD_TCP_FLAGS: u32 = 28;
/// A backend's reply to the NAT port of a half-open flow that was reclaimed (LRU, under a SYN
/// flood) or swept: passed to the kernel, which answers with RST (no socket owns VIP:port), so
/// the backend frees its half-open connection.
pub const PASS_HALF_OPEN_RECLAIMED: u32 = 29;
/// Number of reason codes; the `REASONS` map has this many entries.
pub const REASON_COUNT: u32 = 30;

/// The packet goes up to the kernel stack.
pub const VERDICT_PASS: u8 = 0;
/// The packet is dropped.
pub const VERDICT_DROP: u8 = 1;
/// The (rewritten) packet is sent back out of the interface.
pub const VERDICT_TX: u8 = 2;

/// The verdict that goes with a reason code.
#[inline(always)]
pub const fn verdict_of(reason: u32) -> u8 {
    match reason {
        PASS_NOT_IPV4 | PASS_NOT_TCP | PASS_NOT_VIP | PASS_FRAGMENT | PASS_HALF_OPEN_RECLAIMED => VERDICT_PASS,
        TX_NEW_FLOW..=TX_RST_LEASE_EXPIRED | TX_HANDSHAKE_DONE | TX_RST_FLOW_TABLE_FULL => VERDICT_TX,
        _ => VERDICT_DROP,
    }
}

/// The name of every reason code, indexed by code (for dumps and metrics labels).
pub const REASON_NAMES: [&str; REASON_COUNT as usize] = [
    "pass_not_ipv4",
    "pass_not_tcp",
    "pass_not_vip",
    "pass_fragment",
    "drop_trunc_eth",
    "drop_trunc_ipv4",
    "drop_bad_ip_version",
    "drop_bad_ihl",
    "drop_bad_ip_len",
    "drop_trunc_tcp",
    "drop_bad_doff",
    "tx_new_flow",
    "tx_to_backend",
    "tx_to_client",
    "tx_rst_unknown_flow",
    "tx_rst_stale_client",
    "tx_rst_stale_backend",
    "tx_rst_no_writer",
    "tx_rst_no_reader",
    "tx_rst_lease_expired",
    "drop_rst_unknown_flow",
    "drop_ports_exhausted",
    "drop_no_neigh",
    "drop_flow_table",
    "drop_internal",
    "drop_arp_lease_expired",
    "tx_handshake_done",
    "tx_rst_flow_table_full",
    "drop_bad_tcp_flags",
    "pass_half_open_reclaimed",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_name_prefixes() {
        for (code, name) in REASON_NAMES.iter().enumerate() {
            let want = if name.starts_with("pass_") {
                VERDICT_PASS
            } else if name.starts_with("tx_") {
                VERDICT_TX
            } else {
                assert!(name.starts_with("drop_"), "reason {code} name {name} has no known prefix");
                VERDICT_DROP
            };
            assert_eq!(verdict_of(code as u32), want, "verdict of reason {code} ({name})");
        }
    }
}
