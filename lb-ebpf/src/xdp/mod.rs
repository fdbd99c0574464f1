//! The XDP data plane's rooms (see the crate doc in `main.rs`): [`maps`], [`parse`], [`flow`]
//! handling, new-flow [`select`]ion, [`rewrite`] and RST, [`stats`] and log. Each module
//! imports the others through this one.

pub(crate) mod flow;
pub(crate) mod maps;
pub(crate) mod parse;
pub(crate) mod rewrite;
pub(crate) mod select;
pub(crate) mod stats;

pub(crate) use flow::*;
pub(crate) use maps::*;
pub(crate) use parse::*;
pub(crate) use rewrite::*;
pub(crate) use select::*;
pub(crate) use stats::*;

pub(crate) use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST, bpf_fib_lookup as FibParams, xdp_action},
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    helpers::{bpf_fib_lookup, bpf_ktime_get_ns, bpf_redirect, bpf_xdp_adjust_tail},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
pub(crate) use aya_log_ebpf::{debug, warn};
pub(crate) use core::net::Ipv4Addr;
pub(crate) use lb_common::{
    BACKEND_F_ACTIVE, BACKEND_NONE, Backend, BackendStats, Flow, FlowKey, LEASE_PAST_GRACE,
    LEASE_VALID, Lease, Listener, ListenerKey, ListenerStats, MAGLEV_SIZE, MAX_BACKENDS, MAX_FLOWS,
    MAX_HALF_OPEN, MAX_LISTENERS, NatKey, POOL_WRITE, ReaderCtl, Writer,
    csum::{CsumDelta, fold, pseudo_header_sum, sum_fixed},
    hash::flow_hash,
    nat::{NAT_PORT_PROBES, nat_port_candidate, nat_port_seed},
    port_to_map,
    reason::*,
    tcp::{
        DIR_TO_BACKEND, DIR_TO_CLIENT, STATE_CLOSED, STATE_CLOSING, STATE_ESTABLISHED, STATE_SYN_SENT, TCP_ACK, TCP_FIN,
        TCP_RST, TCP_SYN, bad_syn, completes_handshake, next_state, rst_for,
    },
};
pub(crate) use network_types::{
    arp::ArpHdr,
    bitfield::BitfieldU16,
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr},
    tcp::TcpHdr,
};
