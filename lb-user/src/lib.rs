//! pglb's control plane: probes PostgreSQL roles, runs the failover state machine, drives the XDP
//! data plane's maps, owns the VIP and serves metrics.

pub mod admin;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod executor;
pub mod failover;
pub mod http;
pub mod node;
pub mod probe;
pub mod status;
pub mod vip;

/// The compiled XDP object (lb-ebpf), embedded at build time by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));
