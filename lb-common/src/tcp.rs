//! TCP connection state as the load balancer sees it, driven by the flags of forwarded segments.
//!
//! ```text
//!              SYN to backend                  SYN+ACK from backend
//!   (new) ───────────────────► SYN_SENT ─────────────────────────────► SYN_RECV
//!                                                                          │ the client's ACK of the
//!                                       half-open table ▲                  │ backend's SYN
//!                                      ─ ─ ─ ─ ─ ─ ─ ─ ─│─ ─ ─ ─ ─ ─ ─ ─ ─ ─ ▼ ─ ─ ─ ─ ─ ─ ─ ─ ─ ─
//!                                     established table ▼             ESTABLISHED
//!                                                                          │
//!                            ESTABLISHED ── FIN from client ──► FIN_CLIENT ─┐
//!                                 │                                          │ FIN from backend
//!                                 └───── FIN from backend ──► FIN_BACKEND ──┤ / FIN from client
//!                                                                            ▼
//!   any state ── RST either way ──► CLOSED                                CLOSING
//! ```
//! As netfilter's conntrack does, a flow is ESTABLISHED only once the client acknowledged the
//! backend's SYN ([`completes_handshake`]): a SYN+ACK alone, or an ACK that acknowledges
//! anything else, leaves it half-open. Half-open flows (SYN_SENT, SYN_RECV) live in their own
//! bounded LRU table and move to the established table when the handshake completes; the data
//! plane does that move, [`next_state`] never returns ESTABLISHED for a half-open flow.
//!
//! Half-open flows are swept after the short half-open timeout, CLOSING and CLOSED flows after
//! the short "closed" timeout, every other flow after the idle timeout ([`flow_expired`]).

/// TCP flag bits (byte 13 of the TCP header).
pub const TCP_FIN: u8 = 0x01;
/// SYN flag.
pub const TCP_SYN: u8 = 0x02;
/// RST flag.
pub const TCP_RST: u8 = 0x04;
/// PSH flag.
pub const TCP_PSH: u8 = 0x08;
/// ACK flag.
pub const TCP_ACK: u8 = 0x10;

/// A SYN was forwarded to the backend; no answer seen yet. Half-open.
pub const STATE_SYN_SENT: u8 = 1;
/// The backend answered with SYN+ACK; the client has not acknowledged it yet. Half-open.
pub const STATE_SYN_RECV: u8 = 7;
/// The handshake completed: the client acknowledged the backend's SYN.
pub const STATE_ESTABLISHED: u8 = 2;
/// The client sent FIN.
pub const STATE_FIN_CLIENT: u8 = 3;
/// The backend sent FIN.
pub const STATE_FIN_BACKEND: u8 = 4;
/// Both sides sent FIN.
pub const STATE_CLOSING: u8 = 5;
/// A RST was seen.
pub const STATE_CLOSED: u8 = 6;

/// Direction of a segment through the load balancer.
pub const DIR_TO_BACKEND: u8 = 0;
/// From the backend back to the client.
pub const DIR_TO_CLIENT: u8 = 1;

/// Whether a state is half-open (lives in the half-open table).
#[inline(always)]
pub const fn is_half_open(state: u8) -> bool {
    matches!(state, STATE_SYN_SENT | STATE_SYN_RECV)
}

/// The state after a segment with `flags` went through in direction `dir`. A half-open flow
/// never becomes ESTABLISHED here: see [`completes_handshake`].
#[inline(always)]
pub const fn next_state(state: u8, dir: u8, flags: u8) -> u8 {
    if flags & TCP_RST != 0 {
        return STATE_CLOSED;
    }
    let fin = flags & TCP_FIN != 0;
    let from_client = dir == DIR_TO_BACKEND;
    match state {
        STATE_SYN_SENT if !from_client && flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK => STATE_SYN_RECV,
        STATE_ESTABLISHED if fin => {
            if from_client { STATE_FIN_CLIENT } else { STATE_FIN_BACKEND }
        }
        STATE_FIN_CLIENT if fin && !from_client => STATE_CLOSING,
        STATE_FIN_BACKEND if fin && from_client => STATE_CLOSING,
        _ => state,
    }
}

/// Whether a client segment completes the handshake of a flow in `state`: the flow is in
/// SYN_RECV and the segment is a plain ACK (no SYN, no RST) of the backend's SYN, `ack ==
/// backend_syn_next` (the backend's initial sequence number + 1, host order).
#[inline(always)]
pub const fn completes_handshake(state: u8, flags: u8, ack: u32, backend_syn_next: u32) -> bool {
    state == STATE_SYN_RECV && flags & (TCP_SYN | TCP_RST | TCP_ACK) == TCP_ACK && ack == backend_syn_next
}

/// A segment no TCP would send at the start of a connection: SYN with FIN or with RST. The
/// data plane drops it (as Linux drops SYN+FIN and netfilter marks both INVALID).
#[inline(always)]
pub const fn bad_syn(flags: u8) -> bool {
    flags & TCP_SYN != 0 && flags & (TCP_FIN | TCP_RST) != 0
}

/// How long each kind of flow may stay quiet before the sweeper removes it, ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// ESTABLISHED and half-closed flows.
    pub idle_ns: u64,
    /// CLOSING and CLOSED flows.
    pub closed_ns: u64,
    /// Half-open flows (SYN_SENT, SYN_RECV).
    pub half_open_ns: u64,
}

/// Whether a flow in `state`, last seen `idle_ns` ago, should be removed.
#[inline(always)]
pub const fn flow_expired(state: u8, idle_ns: u64, timeouts: &Timeouts) -> bool {
    match state {
        STATE_CLOSING | STATE_CLOSED => idle_ns >= timeouts.closed_ns,
        STATE_SYN_SENT | STATE_SYN_RECV => idle_ns >= timeouts.half_open_ns,
        _ => idle_ns >= timeouts.idle_ns,
    }
}

/// A human-readable name of a state code.
pub const fn state_name(state: u8) -> &'static str {
    match state {
        STATE_SYN_SENT => "SYN_SENT",
        STATE_SYN_RECV => "SYN_RECV",
        STATE_ESTABLISHED => "ESTABLISHED",
        STATE_FIN_CLIENT => "FIN_CLIENT",
        STATE_FIN_BACKEND => "FIN_BACKEND",
        STATE_CLOSING => "CLOSING",
        STATE_CLOSED => "CLOSED",
        _ => "UNKNOWN",
    }
}

/// Sequence and acknowledgement numbers and flags of the RST answering a segment (RFC 9293
/// section 3.10.7.1): if the segment has ACK, the RST is `<SEQ=SEG.ACK><CTL=RST>`; otherwise
/// `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`, SYN and FIN counting one each in SEG.LEN.
/// Numbers are in host order.
#[inline(always)]
pub const fn rst_for(seq: u32, ack: u32, flags: u8, payload_len: u32) -> (u32, u32, u8) {
    if flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        let mut len = payload_len;
        if flags & TCP_SYN != 0 {
            len += 1;
        }
        if flags & TCP_FIN != 0 {
            len += 1;
        }
        (0, seq.wrapping_add(len), TCP_RST | TCP_ACK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u8 = DIR_TO_BACKEND;
    const B: u8 = DIR_TO_CLIENT;

    #[test]
    fn transition_table() {
        let table: &[(&str, u8, u8, u8, u8)] = &[
            ("syn retransmit stays", STATE_SYN_SENT, C, TCP_SYN, STATE_SYN_SENT),
            ("syn-ack from backend is half-open", STATE_SYN_SENT, B, TCP_SYN | TCP_ACK, STATE_SYN_RECV),
            ("client ack before any syn-ack stays", STATE_SYN_SENT, C, TCP_ACK, STATE_SYN_SENT),
            ("syn+ack from client is not an answer", STATE_SYN_SENT, C, TCP_SYN | TCP_ACK, STATE_SYN_SENT),
            ("bare ack from backend is not an answer", STATE_SYN_SENT, B, TCP_ACK, STATE_SYN_SENT),
            ("client ack stays half-open here", STATE_SYN_RECV, C, TCP_ACK, STATE_SYN_RECV),
            ("syn-ack retransmit stays", STATE_SYN_RECV, B, TCP_SYN | TCP_ACK, STATE_SYN_RECV),
            ("rst during handshake", STATE_SYN_RECV, C, TCP_RST, STATE_CLOSED),
            ("data keeps established", STATE_ESTABLISHED, C, TCP_ACK | TCP_PSH, STATE_ESTABLISHED),
            ("reply keeps established", STATE_ESTABLISHED, B, TCP_ACK, STATE_ESTABLISHED),
            ("client fin", STATE_ESTABLISHED, C, TCP_FIN | TCP_ACK, STATE_FIN_CLIENT),
            ("backend fin", STATE_ESTABLISHED, B, TCP_FIN | TCP_ACK, STATE_FIN_BACKEND),
            ("backend fin after client fin", STATE_FIN_CLIENT, B, TCP_FIN | TCP_ACK, STATE_CLOSING),
            ("client fin after backend fin", STATE_FIN_BACKEND, C, TCP_FIN | TCP_ACK, STATE_CLOSING),
            ("client fin retransmit", STATE_FIN_CLIENT, C, TCP_FIN | TCP_ACK, STATE_FIN_CLIENT),
            ("ack in fin_client", STATE_FIN_CLIENT, B, TCP_ACK, STATE_FIN_CLIENT),
            ("last ack in closing", STATE_CLOSING, C, TCP_ACK, STATE_CLOSING),
            ("rst from client", STATE_ESTABLISHED, C, TCP_RST, STATE_CLOSED),
            ("rst from backend", STATE_SYN_SENT, B, TCP_RST | TCP_ACK, STATE_CLOSED),
            ("rst in closing", STATE_CLOSING, B, TCP_RST, STATE_CLOSED),
            ("closed stays closed", STATE_CLOSED, C, TCP_ACK, STATE_CLOSED),
            ("fin during handshake stays half-open", STATE_SYN_SENT, C, TCP_FIN, STATE_SYN_SENT),
        ];
        for (what, from, dir, flags, want) in table {
            let got = next_state(*from, *dir, *flags);
            assert_eq!(
                got, *want,
                "{what}: {} + flags {flags:#04x} -> {} (want {})",
                state_name(*from), state_name(got), state_name(*want)
            );
        }
    }

    #[test]
    fn handshake_completion() {
        let next = 5001;
        let table: &[(&str, u8, u8, u32, bool)] = &[
            ("ack of the backend's syn", STATE_SYN_RECV, TCP_ACK, next, true),
            ("ack with data", STATE_SYN_RECV, TCP_ACK | TCP_PSH, next, true),
            ("wrong ack number", STATE_SYN_RECV, TCP_ACK, next + 1, false),
            ("before the syn-ack", STATE_SYN_SENT, TCP_ACK, next, false),
            ("syn+ack from the client", STATE_SYN_RECV, TCP_SYN | TCP_ACK, next, false),
            ("rst+ack", STATE_SYN_RECV, TCP_RST | TCP_ACK, next, false),
            ("no ack flag", STATE_SYN_RECV, TCP_PSH, next, false),
            ("already established", STATE_ESTABLISHED, TCP_ACK, next, false),
        ];
        for (what, state, flags, ack, want) in table {
            assert_eq!(completes_handshake(*state, *flags, *ack, next), *want, "{what}");
        }
    }

    #[test]
    fn bad_syn_flags() {
        for (flags, want) in [
            (TCP_SYN, false),
            (TCP_SYN | TCP_ACK, false),
            (TCP_SYN | TCP_FIN, true),
            (TCP_SYN | TCP_RST, true),
            (TCP_SYN | TCP_RST | TCP_ACK, true),
            (TCP_FIN | TCP_ACK, false),
            (TCP_RST, false),
        ] {
            assert_eq!(bad_syn(flags), want, "flags {flags:#04x}");
        }
    }

    #[test]
    fn expiry_rules() {
        let t = Timeouts { idle_ns: 300_000_000_000, closed_ns: 10_000_000_000, half_open_ns: 5_000_000_000 };
        let table: &[(&str, u8, u64, bool)] = &[
            ("fresh established", STATE_ESTABLISHED, 1, false),
            ("idle established", STATE_ESTABLISHED, t.idle_ns, true),
            ("established quiet for a half-open timeout stays", STATE_ESTABLISHED, t.half_open_ns, false),
            ("closed but recent", STATE_CLOSED, t.closed_ns - 1, false),
            ("closed and old", STATE_CLOSED, t.closed_ns, true),
            ("closing and old", STATE_CLOSING, t.closed_ns, true),
            ("half closed uses idle", STATE_FIN_CLIENT, t.closed_ns, false),
            ("syn_sent within the half-open timeout", STATE_SYN_SENT, t.half_open_ns - 1, false),
            ("syn_sent past the half-open timeout", STATE_SYN_SENT, t.half_open_ns, true),
            ("syn_recv past the half-open timeout", STATE_SYN_RECV, t.half_open_ns, true),
        ];
        for (what, state, age, want) in table {
            assert_eq!(flow_expired(*state, *age, &t), *want, "{what}");
        }
    }

    #[test]
    fn rst_numbers() {
        /// (what, (seq, ack, flags, payload length) in, (seq, ack, flags) of the RST out)
        type Case = (&'static str, (u32, u32, u8, u32), (u32, u32, u8));
        let table: &[Case] = &[
            ("ack segment", (100, 555, TCP_ACK | TCP_PSH, 10), (555, 0, TCP_RST)),
            ("bare syn", (1000, 0, TCP_SYN, 0), (0, 1001, TCP_RST | TCP_ACK)),
            ("data without ack", (7, 0, TCP_PSH, 5), (0, 12, TCP_RST | TCP_ACK)),
            ("fin without ack wraps", (u32::MAX, 0, TCP_FIN, 0), (0, 0, TCP_RST | TCP_ACK)),
        ];
        for (what, (seq, ack, flags, len), want) in table {
            assert_eq!(rst_for(*seq, *ack, *flags, *len), *want, "{what}");
        }
    }
}
