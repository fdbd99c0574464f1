//! pglb's control plane: probes PostgreSQL roles, runs the failover state machine, drives the XDP
//! data plane's maps, owns the VIP and serves metrics.

pub mod config;
pub mod dataplane;
pub mod failover;
pub mod http;
pub mod status;
pub mod vip;

/// The compiled XDP object (lb-ebpf), embedded at build time by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));
