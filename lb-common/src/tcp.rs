//! TCP connection state as the load balancer sees it, driven by the flags of forwarded segments.
//!
//! ```text
//!              SYN to backend
//!   (new) ───────────────────► SYN_SENT
//!                                 │ SYN+ACK from backend, or any ACK without SYN
//!                                 ▼
//!                            ESTABLISHED ── FIN from client ──► FIN_CLIENT ─┐
//!                                 │                                          │ FIN from backend
//!                                 └───── FIN from backend ──► FIN_BACKEND ──┤ / FIN from client
//!                                                                            ▼
//!   any state ── RST either way ──► CLOSED                                CLOSING
//! ```
//! CLOSING and CLOSED flows are swept after the short "closed" timeout, every other flow after
//! the idle timeout ([`flow_expired`]).

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

/// A SYN was forwarded to the backend; no answer seen yet.
pub const STATE_SYN_SENT: u8 = 1;
/// The handshake completed.
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

/// The state after a segment with `flags` went through in direction `dir`.
#[inline(always)]
pub const fn next_state(state: u8, dir: u8, flags: u8) -> u8 {
    if flags & TCP_RST != 0 {
        return STATE_CLOSED;
    }
    let fin = flags & TCP_FIN != 0;
    let from_client = dir == DIR_TO_BACKEND;
    match state {
        STATE_SYN_SENT | STATE_ESTABLISHED => {
            if fin {
                if from_client { STATE_FIN_CLIENT } else { STATE_FIN_BACKEND }
            } else if state == STATE_SYN_SENT
                && flags & TCP_ACK != 0
                && (flags & TCP_SYN == 0 || !from_client)
            {
                STATE_ESTABLISHED
            } else {
                state
            }
        }
        STATE_FIN_CLIENT if fin && !from_client => STATE_CLOSING,
        STATE_FIN_BACKEND if fin && from_client => STATE_CLOSING,
        _ => state,
    }
}

/// Whether a flow in `state`, last seen `idle_ns` ago, should be removed.
#[inline(always)]
pub const fn flow_expired(state: u8, idle_ns: u64, idle_timeout_ns: u64, closed_timeout_ns: u64) -> bool {
    match state {
        STATE_CLOSING | STATE_CLOSED => idle_ns >= closed_timeout_ns,
        _ => idle_ns >= idle_timeout_ns,
    }
}

/// A human-readable name of a state code.
pub const fn state_name(state: u8) -> &'static str {
    match state {
        STATE_SYN_SENT => "SYN_SENT",
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
            ("syn-ack from backend", STATE_SYN_SENT, B, TCP_SYN | TCP_ACK, STATE_ESTABLISHED),
            ("client ack completes", STATE_SYN_SENT, C, TCP_ACK, STATE_ESTABLISHED),
            ("syn+ack from client is not an answer", STATE_SYN_SENT, C, TCP_SYN | TCP_ACK, STATE_SYN_SENT),
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
            ("fin during handshake", STATE_SYN_SENT, C, TCP_FIN, STATE_FIN_CLIENT),
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
    fn expiry_rules() {
        let idle = 300_000_000_000;
        let closed = 10_000_000_000;
        let table: &[(&str, u8, u64, bool)] = &[
            ("fresh established", STATE_ESTABLISHED, 1, false),
            ("idle established", STATE_ESTABLISHED, idle, true),
            ("closed but recent", STATE_CLOSED, closed - 1, false),
            ("closed and old", STATE_CLOSED, closed, true),
            ("closing and old", STATE_CLOSING, closed, true),
            ("half closed uses idle", STATE_FIN_CLIENT, closed, false),
            ("syn_sent idle", STATE_SYN_SENT, idle + 1, true),
        ];
        for (what, state, age, want) in table {
            assert_eq!(flow_expired(*state, *age, idle, closed), *want, "{what}");
        }
    }

    #[test]
    fn rst_numbers() {
        let table: &[(&str, (u32, u32, u8, u32), (u32, u32, u8))] = &[
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
