//! What a probe reads ([`NodeStatus`]) and how it fails ([`ProbeFailure`]): one probe round of
//! one node ([`Observation`]), the machine's input from PostgreSQL.

use std::fmt;
use std::time::Duration;

use super::{NodeId, NodeParams};

/// One probe round of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub node: NodeId,
    /// When the probe started, on the daemon's monotonic clock.
    pub at: Duration,
    /// How long the round trip took (metrics only; the machine ignores it).
    pub latency: Duration,
    pub result: Result<NodeStatus, ProbeFailure>,
}

/// What a successful probe read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// A primary's current timeline; a standby's received (or replayed) timeline.
    pub timeline: u32,
    /// `pg_current_wal_lsn()` on a primary.
    pub current_lsn: Option<u64>,
    /// `pg_last_wal_receive_lsn()` on a standby (flushed to its disk).
    pub receive_lsn: Option<u64>,
    /// `pg_last_wal_replay_lsn()`.
    pub replay_lsn: Option<u64>,
    /// How far replay is behind in time (0 when everything received is replayed).
    pub replay_lag: Option<Duration>,
    /// `pg_stat_wal_receiver`, if it has a row.
    pub wal_receiver: Option<WalReceiver>,
}

impl NodeStatus {
    /// The furthest WAL position this standby holds: received, or replayed if that is further
    /// (after a restart `pg_last_wal_receive_lsn()` is NULL until streaming resumes).
    pub fn received(&self) -> Option<u64> {
        match (self.receive_lsn, self.replay_lsn) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether this standby reports a WAL receiver streaming from `node`.
    pub fn streams_from(&self, node: &NodeParams) -> bool {
        self.in_recovery && self.wal_receiver.as_ref().is_some_and(|r| r.is_streaming() && r.sender_is(node))
    }
}

/// A row of `pg_stat_wal_receiver`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalReceiver {
    /// `streaming`, `starting`, `waiting`, `catchup`, `stopping`, …
    pub status: String,
    pub sender_host: Option<String>,
    pub sender_port: Option<u16>,
}

impl WalReceiver {
    pub fn is_streaming(&self) -> bool {
        self.status == "streaming"
    }

    /// Whether the sender is `node`: the host is its address or its name (whatever
    /// `primary_conninfo` says), and the port, when reported, is its port. An unreported host
    /// counts as a match, so an unknown sender never looks "safe to fail over from".
    pub fn sender_is(&self, node: &NodeParams) -> bool {
        let host_ok = match &self.sender_host {
            None => true,
            Some(h) => *h == node.host.to_string() || *h == node.name,
        };
        host_ok && self.sender_port.is_none_or(|p| p == node.port)
    }
}

/// Why a probe failed. Every failure counts the same towards `failover_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// No connection (refused, reset, no route, authentication failed).
    Unreachable(String),
    /// No answer within the probe timeout: a hung server is down.
    Timeout,
    /// Connected, but the probe query failed.
    QueryFailed(String),
}

impl std::error::Error for ProbeFailure {}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeFailure::Unreachable(e) => write!(f, "unreachable: {e}"),
            ProbeFailure::Timeout => f.write_str("timed out"),
            ProbeFailure::QueryFailed(e) => write!(f, "probe query failed: {e}"),
        }
    }
}
