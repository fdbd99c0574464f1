//! pglb's control plane: probes PostgreSQL roles, runs the failover state machine, drives the XDP
//! data plane's maps, owns the VIP and serves metrics.

pub mod admin;
pub mod agent;
pub mod config;
pub mod dataplane;
pub mod failover;
pub mod http;
pub mod journal;
pub mod key;
pub mod node;
pub mod notify;
pub mod pgadmin;
pub mod pgtls;
pub mod probe;
pub mod runtime;
pub mod state;
pub mod status;
pub mod vip;

/// The compiled XDP object (lb-ebpf), embedded at build time by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));
/// The compiled agent object (lb-ebpf `src/agent.rs`, the cgroup `connect4` program), embedded at
/// build time by `build.rs`.
pub static AGENT_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-agent-ebpf"));

/// A duration as humantime writes it, for error messages (the config's and the agent config's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Human(pub std::time::Duration);

impl std::fmt::Display for Human {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_zero() { f.write_str("0s") } else { write!(f, "{}", humantime::format_duration(self.0)) }
    }
}

/// An error and its whole `source()` chain on one line, `outer: inner: innermost`. Errors in
/// this crate keep their cause out of their own message and in a `#[source]` field, so this is
/// how they are shown to an operator.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
