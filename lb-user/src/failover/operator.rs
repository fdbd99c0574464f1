//! What operators decide and every load balancer must agree on: the pause ([`Maintenance`],
//! `pglb pause`, `pglb resume`) and the marks on single nodes ([`NodeMark`], `pglb node
//! drain|undrain|disable|enable`). Each is dated on the wall clock of the instance that took
//! the command and travels in the peer reports and the state file; the newest wins, so both
//! load balancers hold the same one.

use std::time::Duration;

/// A wall-clock time as the milliseconds since the epoch that [`Maintenance`] records.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Such milliseconds as RFC 3339 in UTC, to the second (log lines, command answers).
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Maintenance mode: the newest `pglb pause` or `pglb resume`, taken on any load balancer and
/// passed on by the peer reports and the state file. While a pause is in force the machine
/// fails nothing over, rejoins and re-points nothing and leaves `synchronous_standby_names`
/// alone; routing still follows the probes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// `true`: a pause; `false`: a resume (or the end of a `--for` pause).
    pub paused: bool,
    /// When the operator gave the command, milliseconds of the wall clock since the Unix epoch
    /// of the instance that took it: the version, the newest wins.
    pub at_ms: u64,
    /// The instance that took the command (`[instance] name`): breaks a tie of `at_ms`.
    pub by: String,
    /// The operator's words (`--reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A `--for` pause ends by itself at this wall-clock time (milliseconds since the epoch),
    /// on every instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

/// The longest `--reason`, in bytes: it travels in every peer report.
pub const PAUSE_REASON_MAX: usize = 100;

impl Maintenance {
    /// Newest wins: a later `at_ms`, then the greater instance name.
    pub fn newer_than(&self, other: &Maintenance) -> bool {
        (self.at_ms, self.by.as_str()) > (other.at_ms, other.by.as_str())
    }

    /// A pause in force at wall-clock `now_ms` (`None`: the wall clock is not known yet, and a
    /// pause counts until it is).
    pub fn in_force(&self, now_ms: Option<u64>) -> bool {
        self.paused && self.until_ms.is_none_or(|u| now_ms.is_none_or(|n| n < u))
    }
}

/// What a node mark does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkKind {
    /// `pglb node drain`: no new connection on the read ports goes to the node (open ones go
    /// on). It concerns the node as a standby: a drained node that becomes the writer gets the
    /// writes, and the reads when no standby qualifies (rule 7's fallback), as any writer.
    Drain,
    /// `pglb node disable`: never a failover candidate nor a switchover target (Patroni's
    /// `nofailover`, at runtime). It still serves reads.
    Disable,
}

impl MarkKind {
    pub const ALL: [MarkKind; 2] = [MarkKind::Drain, MarkKind::Disable];

    /// The word on the wire, in the state file and in the admin requests.
    pub fn as_str(self) -> &'static str {
        match self {
            MarkKind::Drain => "drain",
            MarkKind::Disable => "disable",
        }
    }

    pub fn parse(word: &str) -> Option<MarkKind> {
        MarkKind::ALL.into_iter().find(|k| k.as_str() == word)
    }

    /// The state a node is in while the mark is on, and while it is off: `drained`,
    /// `undrained`; `disabled`, `enabled`.
    pub fn state_word(self, on: bool) -> &'static str {
        match (self, on) {
            (MarkKind::Drain, true) => "drained",
            (MarkKind::Drain, false) => "undrained",
            (MarkKind::Disable, true) => "disabled",
            (MarkKind::Disable, false) => "enabled",
        }
    }
}

/// One operator mark on one node: `pglb node drain` (`on`) or `undrain` (not `on`), `disable`
/// or `enable`. The newest per node and kind wins; a mark turned off is kept (not forgotten),
/// so an older "on" from a peer or a restarted instance cannot come back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeMark {
    /// The node's name (`[[node]] name`).
    pub node: String,
    pub kind: MarkKind,
    /// `true`: drained or disabled; `false`: undrained or enabled.
    pub on: bool,
    /// When the operator gave the command, milliseconds of the wall clock since the Unix epoch
    /// of the instance that took it: the version, the newest wins.
    pub at_ms: u64,
    /// The instance that took the command: breaks a tie of `at_ms`.
    pub by: String,
}

impl NodeMark {
    /// Both say something about the same node and kind.
    pub fn same_slot(&self, other: &NodeMark) -> bool {
        self.node == other.node && self.kind == other.kind
    }

    /// Newest wins: a later `at_ms`, then the greater instance name.
    pub fn newer_than(&self, other: &NodeMark) -> bool {
        (self.at_ms, self.by.as_str()) > (other.at_ms, other.by.as_str())
    }

    /// The state it puts the node in (`drained`, `enabled`, …).
    pub fn state_word(&self) -> &'static str {
        self.kind.state_word(self.on)
    }
}
