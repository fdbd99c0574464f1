//! The state machine's vocabulary: what goes in ([`Event`]), what comes out ([`Action`]), its
//! parameters ([`Params`]) and what it reports ([`ClusterView`]).

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::operator::{Maintenance, NodeMark};
use super::{ManualOutcome, ManualRequest, Observation, ProbeFailure};

/// A node's index in the config's `[[node]]` list.
pub type NodeId = usize;

/// Everything the machine reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Probe(Observation),
    /// Time passed (call at [`crate::failover::Machine::next_deadline`]).
    Tick,
    /// This load balancer's VRRP state changed (ignored when VRRP is not configured).
    VrrpRole { master: bool },
    /// A VRRP advert arrived from a peer's address. Not authenticated (anyone on the segment
    /// can send it): it proves nothing but that the peer is not silent, which a waking instance
    /// must respect ([`Phase::Starting`]); it is no quorum vote.
    PeerHeard { peer: Ipv4Addr },
    /// Another load balancer's report ([`crate::failover::Machine::report`]) arrived,
    /// authenticated and fresh (`crate::vip::report`): the peer's quorum vote, its word on the
    /// writer it reaches, and a timeline hint (never a fact: see the module doc, "Trust").
    PeerReport { peer: Ipv4Addr, report: PeerReport },
    /// The state file write of an [`Action::Persist`] ended: `state` is what was written (the
    /// newest handed out, later ones coalesced), `result` its outcome.
    Persisted { state: Durable, result: Result<(), String> },
    /// The daemon's main loop stood still for longer than its lease (a freeze, a suspended VM,
    /// a blocked call): everything observed before is stale. The machine wakes humble, as
    /// after a restart: it decides nothing until fresh probes and its peers have answered.
    Stalled,
    /// This instance's data plane started or stopped seeing a SYN flood (half-open flows opened
    /// faster than `crate::dataplane::FloodMeter`'s threshold). Under a flood this instance's
    /// own probes time out in the congestion, not because the writer is gone: it keeps the VIP
    /// and the writer routed (moving the VIP would move the flood and drop every established
    /// connection with it).
    Flood { active: bool },
    /// The wall clock now (since the Unix epoch): what a pause's end and version are measured
    /// on. The runtime sends it at start and with every operator command; the machine never
    /// reads a clock, it keeps the offset to `now` ([`Maintenance::until_ms`]).
    WallClock { unix: Duration },
    Admin(AdminCommand),
    /// A reload's new parameters: nodes added or removed at the end only (`machine/reconfigure.rs`).
    Reconfigure(Box<Params>),
    /// The executor finished a [`Action::Promote`], [`Action::Repoint`], [`Action::Demote`] or
    /// [`Action::Rejoin`] (echo the action; other actions need no report). `Err` carries the
    /// reason.
    ActionDone { action: Action, result: Result<(), String> },
}

/// What one load balancer tells its peers, every advert interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    /// Its newest timeline, as its own probes confirmed it (its floor): a promotion it made or
    /// saw while the receiver was down, cut off or restarting. The receiver holds writes back
    /// while it checks it, and never takes it for a fact (see the module doc, "Trust").
    pub timeline: u32,
    /// The writer it routes and reaches right now (its last probe answered), by node name: a
    /// writer the receiver lost is alive behind it.
    pub writer: Option<String>,
    /// Its newest pause or resume: the receiver takes it when it is newer than its own
    /// ([`Maintenance::newer_than`]), so both load balancers agree.
    pub maintenance: Option<Maintenance>,
    /// Its node marks (drain, disable), each the newest it knows for its node and kind; the
    /// receiver takes each one newer than its own ([`NodeMark::newer_than`]).
    pub marks: Vec<NodeMark>,
}

/// Operator commands (`pglb switchover`, `pglb failover`, `pglb node rejoin|drain|undrain|disable|enable`,
/// `pglb pause|resume`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// Planned, zero-loss change of the writer to `to`.
    Switchover { to: NodeId },
    /// `node` was rewound and restarted as a standby: lift its fence.
    Rejoined { node: NodeId },
    /// `pglb pause` or `pglb resume`, dated by the instance that took it.
    Maintenance(Maintenance),
    /// `pglb node drain|undrain|disable|enable`, dated by the instance that took it.
    Mark(NodeMark),
    /// `pglb failover --to NODE`: promote although automatic failover is held back.
    Failover(ManualRequest),
}

/// What the executor must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// One map write: the write port's backend (`None`: refuse new writes). Write flows pinned
    /// to any other backend are reset by the data plane.
    SetWriter { node: Option<NodeId> },
    /// The read port's backends (sorted by id; the writer when no standby qualifies).
    SetReaders { nodes: Vec<NodeId> },
    /// `SELECT pg_promote(wait => true)` on `node`; report with [`Event::ActionDone`].
    Promote { node: NodeId },
    /// Make standby `node` stream from `primary`: ensure the physical slot named after `node`
    /// exists on `primary`, `ALTER SYSTEM SET primary_conninfo` (host/port of `primary`,
    /// `application_name` = node name, `[replication]` credentials) and `primary_slot_name`,
    /// `pg_reload_conf()`. Report with [`Event::ActionDone`].
    Repoint { node: NodeId, primary: NodeId },
    /// Switchover only: stop primary `node` cleanly (fast shutdown, so its WAL reaches the
    /// connected standbys), write `standby.signal` and `primary_conninfo` pointing at `primary`
    /// (slot named after `node`, ensured on `primary`), start it as a standby. PostgreSQL has no
    /// in-place demotion; this is it. Report with [`Event::ActionDone`].
    Demote { node: NodeId, primary: NodeId },
    /// `ALTER SYSTEM SET synchronous_standby_names = 'ANY <count> ("<names>", …)'` and reload
    /// on `on` (names empty or count 0: set it to '').
    SetSyncStandbys { on: NodeId, count: u32, names: Vec<String> },
    /// Probe `node` now, out of its round: the machine waits for its answer (failover's
    /// settling step reads the positions after the re-points). No report.
    Probe { node: NodeId },
    /// Never route to `node` until it rejoins; report it as `needs-rejoin` (or `fenced`).
    Fence { node: NodeId, reason: FenceReason },
    /// Make the fenced former primary `node` a standby of `primary` with `[failover]
    /// rejoin_command` (pg_rewind, standby.signal, start). Report with [`Event::ActionDone`].
    Rejoin { node: NodeId, primary: NodeId },
    /// Write what must survive a restart (the state file), off the daemon's main loop; the
    /// outcome comes back as [`Event::Persisted`]. A promotion is never sent before the write
    /// that records it has succeeded (no action without its record); a failed write is tried
    /// again, and while writes fail no failover is decided ([`Blocked::StateNotRecorded`]).
    Persist(Durable),
    /// Whether this load balancer reaches the writer (VRRP priority tracking): `false` lowers
    /// the VRRP priority by the tracking weight, so a peer that does reach it takes the VIP.
    Track { writer_reachable: bool },
    /// Something an operator should know about (also counted in metrics).
    Alert(Alert),
    /// One line per decision saying why.
    Log { level: Level, message: String },
}

/// Why a node is fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceReason {
    /// A second primary on the writer's timeline (split brain).
    SplitBrain { writer: NodeId, timeline: u32 },
    /// A primary on an older timeline than the writer's (a returning old primary).
    OlderTimeline { timeline: u32, writer_timeline: u32 },
    /// The former writer, replaced by a promotion of `by`.
    Replaced { by: NodeId },
}

impl FenceReason {
    /// The node state a fence shows as.
    pub fn state(&self) -> NodeState {
        match self {
            FenceReason::SplitBrain { .. } => NodeState::Fenced,
            FenceReason::OlderTimeline { .. } | FenceReason::Replaced { .. } => NodeState::NeedsRejoin,
        }
    }
}

/// What the machine must not forget across a daemon restart (docs/ARCHITECTURE.md, "Failure
/// model", restarts lose no safety): written to the state file by [`Action::Persist`] before
/// the actions that depend on it, read back by [`crate::failover::Machine::restore`]. Nodes are named, not numbered,
/// so a reordered `[[node]]` list keeps its meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Durable {
    /// The last writer routed.
    pub writer: Option<String>,
    /// The highest timeline ever routed for writes (0: none yet). A primary on an older
    /// timeline never gets writes again; the value never goes down.
    pub timeline: u32,
    /// Fenced nodes.
    pub fences: Vec<DurableFence>,
    /// A promotion was sent and its outcome is not known yet: `node` was a standby on
    /// `from_timeline`. Until `node` is seen again, no primary on `from_timeline` or older is
    /// adopted (it may already have been replaced).
    pub promoting: Option<DurablePromotion>,
    /// The newest pause or resume (absent in files written before maintenance mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    /// The node marks, on and off (absent in files written before them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<NodeMark>,
}

/// A fence in the state file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurableFence {
    pub node: String,
    /// `split-brain`, `older-timeline` or `replaced`.
    pub reason: String,
    /// The node's timeline when it was fenced (split-brain, older-timeline).
    pub timeline: u32,
    /// The writer it lost to (split-brain, replaced).
    pub writer: Option<String>,
}

/// A promotion in flight, in the state file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurablePromotion {
    pub node: String,
    pub from_timeline: u32,
}

/// Events worth an operator's attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    /// Two primaries on one timeline: `kept` stays the writer, `fenced` is fenced.
    SplitBrain { kept: NodeId, fenced: NodeId, timeline: u32 },
    /// A primary on a newer timeline appeared and became the writer (promoted outside pglb).
    WriterChanged { from: Option<NodeId>, to: NodeId, timeline: u32 },
    /// Automatic failover started.
    FailoverStarted { from: Option<NodeId>, candidate: NodeId },
    /// Automatic failover finished: `to` is the writer.
    FailedOver { from: Option<NodeId>, to: NodeId },
    /// The writer is lost but a guard holds failover back (reported when the reason changes).
    FailoverBlocked { writer: Option<NodeId>, reason: Blocked },
    PromoteFailed { node: NodeId, error: String },
    RepointFailed { node: NodeId, primary: NodeId, error: String },
    SwitchoverRejected { to: NodeId, reason: String },
    /// A switchover finished; new writes were refused for `paused` (from the request to the
    /// writer switch).
    SwitchoverDone { from: NodeId, to: NodeId, paused: Duration },
    SwitchoverAborted { from: NodeId, to: NodeId, reason: String },
    /// `rejoin_command` for a fenced former primary failed; it stays fenced and is tried again
    /// after `retry_in`.
    RejoinFailed { node: NodeId, error: String, attempt: u32, retry_in: Duration },
    /// `rejoin_command` for a fenced former primary succeeded (its fence lifts once probes see
    /// it streaming on the writer's timeline).
    RejoinDone { node: NodeId, attempt: u32 },
    /// A manual failover (`pglb failover`) was refused, done, or failed.
    Manual(ManualOutcome),
}

/// Why the machine does not fail over although the writer is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// The writer has not yet failed `failover_after` consecutive probes.
    Debouncing { failures: u32, needed: u32 },
    /// Another load balancer is VRRP master; only the master acts.
    NotMaster,
    /// Reachable nodes + peers heard + this instance is not more than half of all members.
    NoQuorum { votes: usize, members: usize },
    /// A reachable standby still streams from the old writer: it is alive, only cut from us.
    StandbyStreaming { standby: NodeId },
    /// With `ANY k` synchronous replication, fewer than `needed` of the other nodes are reachable
    /// standbys, so the one holding the last acknowledged commit may be out of sight.
    SyncStandbysUnreachable { reachable: usize, needed: usize },
    /// No reachable standby qualifies (nofailover or disabled, lag, failed promotion, timeline).
    NoCandidate,
    /// The best candidate is behind a reachable standby that may not be promoted (nofailover or
    /// disabled).
    CandidateBehind { candidate: NodeId, ahead: NodeId },
    /// A standby's received position still moved between its last two probes: wait until every
    /// position is final, so that every load balancer ranks the same candidate first.
    PositionsMoving { standby: NodeId },
    /// A promotion was sent (or restored from the state file) and no probe has shown its
    /// outcome yet: promoting another node could make two primaries.
    PromotionUnsettled { node: NodeId },
    /// The last report of `peer` said it reaches the old writer, lost here at that time (this
    /// instance is cut from it, not the peer): the old writer is alive, and the peer may still
    /// route writes to it. Held while that is the peer's last word.
    PeerReachesWriter { peer: Ipv4Addr },
    /// No VRRP peer is heard (they may be masters too) and `unseen` is not a visible standby: a
    /// peer that sees it might rank it first. Fail over only with the whole cluster in view.
    PartialView { unseen: NodeId },
    /// The state file cannot be written: a promotion would not survive a restart of this
    /// instance (no action without its record).
    StateNotRecorded,
    /// `peer` reports `timeline`, newer than any this instance's probes have seen: a promotion
    /// may have happened out of its sight. Nothing is promoted until a probe confirms it or
    /// the peer stops saying it.
    PeerTimelineUnconfirmed { peer: Ipv4Addr, timeline: u32 },
    /// The lost writer answers again, but no pglb peer is heard and no standby probed since
    /// streams from it: a peer out of hearing may be replacing it. Writes wait for a standby to
    /// follow it, or for a peer's report.
    ReturnUnconfirmed { writer: NodeId },
    /// A standby answered on `timeline`, newer than any primary seen here: its primary is out
    /// of sight. Failover waits until every node (`unprobed` first) has been probed since.
    NewerPrimaryUnseen { timeline: u32, unprobed: NodeId },
    /// Maintenance mode (`pglb pause`, by the instance `by`): no automatic failover until
    /// `pglb resume` or the end of a `--for` pause.
    Paused { by: String, reason: Option<String> },
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocked::Debouncing { failures, needed } => write!(f, "{failures} of {needed} failed probes"),
            Blocked::NotMaster => f.write_str("this load balancer is not the vrrp master"),
            Blocked::NoQuorum { votes, members } => write!(f, "no quorum: {votes} of {members} members visible"),
            Blocked::StandbyStreaming { standby } => {
                write!(f, "standby #{standby} still streams from the writer (the writer is cut off from this load balancer only)")
            }
            Blocked::SyncStandbysUnreachable { reachable, needed } => {
                write!(f, "only {reachable} of the {needed} standbys needed to be sure of the last acknowledged commit are reachable")
            }
            Blocked::NoCandidate => f.write_str("no standby qualifies for promotion"),
            Blocked::CandidateBehind { candidate, ahead } => {
                write!(f, "candidate #{candidate} is behind standby #{ahead}, which may not be promoted")
            }
            Blocked::PositionsMoving { standby } => {
                write!(f, "standby #{standby} still receives WAL: waiting for every position to settle")
            }
            Blocked::PromotionUnsettled { node } => {
                write!(f, "the promotion of node #{node} is not settled: waiting for a probe to show whether it is a primary")
            }
            Blocked::PeerReachesWriter { peer } => write!(
                f,
                "peer {peer} last said it reaches the old writer, which this instance had lost: the writer is alive and may still get writes through it"
            ),
            Blocked::PartialView { unseen } => write!(
                f,
                "no vrrp peer is heard and node #{unseen} is not a visible standby: another master may see it (failover needs the whole cluster in view)"
            ),
            Blocked::StateNotRecorded => f.write_str("the state file cannot be written: a promotion would not survive a restart"),
            Blocked::PeerTimelineUnconfirmed { peer, timeline } => {
                write!(f, "peer {peer} reports timeline {timeline}, which no probe here has confirmed yet")
            }
            Blocked::ReturnUnconfirmed { writer } => write!(
                f,
                "the writer #{writer} answers again, but no vrrp peer is heard and no standby probed since streams from it: a peer may be replacing it (writes wait for a standby to follow it or a peer's report)"
            ),
            Blocked::NewerPrimaryUnseen { timeline, unprobed } => write!(
                f,
                "a standby answers on timeline {timeline}, whose primary has not been seen here: waiting for every node to be probed again (node #{unprobed} not yet)"
            ),
            Blocked::Paused { by, reason } => match reason {
                Some(r) => write!(f, "maintenance mode (paused on {by}: {r}): `pglb resume` lets failover act again"),
                None => write!(f, "maintenance mode (paused on {by}): `pglb resume` lets failover act again"),
            },
        }
    }
}

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// A node's role as last probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Standby,
    /// Never probed successfully.
    Unknown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Unknown => "unknown",
        }
    }
}

/// A node's state as reported (`pglb status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// No probe result yet.
    Unknown,
    Up,
    Down,
    /// A former or returning primary: never routed to until rejoined.
    NeedsRejoin,
    /// A split-brain primary: never routed to until rejoined.
    Fenced,
    /// Being promoted.
    Promoting,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Unknown => "unknown",
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::NeedsRejoin => "needs-rejoin",
            NodeState::Fenced => "fenced",
            NodeState::Promoting => "promoting",
        }
    }
}

/// Steps of a planned switchover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchoverStage {
    /// New writes are refused; waiting for the target to receive the old primary's last LSN.
    CatchingUp {
        /// When writes were blocked: only probes started after this count.
        blocked_at: Duration,
        /// The old primary's current LSN as probed after `blocked_at`.
        old_lsn: Option<(Duration, u64)>,
    },
    /// The old primary is being stopped and restarted as a standby of the target.
    Demoting,
    /// The old primary is a standby now; the target is promoted as soon as it is a reachable
    /// standby, this instance the master with quorum (a probe blip is waited out).
    Demoted,
    /// The target is being promoted.
    Promoting,
}

/// The machine's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// After a start or a stall of the main loop: waiting for a fresh probe of every node (or
    /// the detection time) and for every peer's fresh report (or a master-down interval in
    /// which nothing at all is heard from it). Nothing is decided, the data plane's lease is not
    /// renewed and the VIP is not held meanwhile.
    Starting,
    /// A healthy writer is routed.
    Steady,
    /// No healthy writer: `old` (still routed, if it is) failed or vanished; failover is
    /// evaluated on every event.
    WriterLost { old: Option<NodeId>, since: Duration },
    /// Failover decided for `candidate`: writes refused since `since`, the other standbys pointed
    /// at it; waiting for their positions read again (at the latest until `deadline`).
    Settling { old: Option<NodeId>, candidate: NodeId, since: Duration, deadline: Duration },
    /// `candidate` is being promoted; writes are refused.
    FailingOver { old: Option<NodeId>, candidate: NodeId, deadline: Duration },
    /// Planned change from `from` to `to`; new writes refused since `started`.
    Switchover { from: NodeId, to: NodeId, stage: SwitchoverStage, deadline: Duration, started: Duration },
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Steady => "steady",
            Phase::WriterLost { .. } => "writer-lost",
            Phase::Settling { .. } => "settling",
            Phase::FailingOver { .. } => "failing-over",
            Phase::Switchover { .. } => "switchover",
        }
    }
}

/// One node's configuration as the machine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeParams {
    pub name: String,
    pub host: Ipv4Addr,
    pub port: u16,
    pub priority: u32,
    pub nofailover: bool,
    /// 0 = never a reader (except as the writer fallback).
    pub read_weight: u32,
}

/// The machine's parameters (the runtime builds them from the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub nodes: Vec<NodeParams>,
    pub probe_interval: Duration,
    /// Consecutive failed probes before the writer counts as failed.
    pub failover_after: u32,
    /// Consecutive good probes before a down node is routed to again.
    pub up_after: u32,
    pub max_lag_on_failover_bytes: u64,
    pub max_read_lag_bytes: u64,
    pub max_read_lag: Duration,
    pub promote_timeout: Duration,
    pub switchover_timeout: Duration,
    /// `ANY <n>` of synchronous replication; 0 = asynchronous.
    pub synchronous_count: u32,
    /// VRRP configured: act only as master. Not configured: always master.
    pub vrrp_enabled: bool,
    /// The other load balancers (quorum members).
    pub peers: Vec<Ipv4Addr>,
    /// A peer heard longer ago than this no longer counts (VRRP master-down interval).
    pub peer_timeout: Duration,
    /// How long a VRRP master holds the writer lost, with failover held back by a guard,
    /// before it reports the writer unreachable for tracking (a backup reports it at once).
    /// The master-down interval: the backup, whose own detection lags by at most a probe
    /// interval, has lowered its priority by then if it lost the writer too.
    pub track_hold: Duration,
    /// `[failover] rejoin_command` is configured: fenced former primaries are rejoined.
    pub rejoin: bool,
    /// The first retry delay of a failed rejoin; it doubles up to [`REJOIN_BACKOFF_MAX`].
    pub rejoin_backoff: Duration,
}

/// Consecutive failed probes after which a node other than the writer counts as down (leaves
/// the reader set). One: removing a reader is the safe direction.
pub const STANDBY_DOWN_AFTER: u32 = 1;
/// A node with no probe result for this many probe intervals gets a failure counted.
pub const STALE_AFTER_INTERVALS: u32 = 3;
/// A standby not streaming from the writer for this many probe intervals is re-pointed (again).
pub const REPOINT_AFTER_INTERVALS: u32 = 15;
/// Settling waits at most this many probe intervals for the standbys' fresh positions.
pub const SETTLE_INTERVALS: u32 = 3;
/// How soon a failed state-file write is tried again.
pub const RECORD_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between two attempts to rejoin a fenced former primary.
pub const REJOIN_BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Params {
    /// A probe result older than this counts as a failure.
    pub fn stale_after(&self) -> Duration {
        self.probe_interval * STALE_AFTER_INTERVALS
    }

    /// How long a standby may stream from somewhere else before it is re-pointed (again).
    pub fn repoint_after(&self) -> Duration {
        self.probe_interval * REPOINT_AFTER_INTERVALS
    }

    /// How long the detection of a writer failure takes: also the startup grace and how long
    /// "no writer at all" must last before a failover is considered.
    pub fn detection_time(&self) -> Duration {
        self.probe_interval * self.failover_after
    }

    /// Quorum members: every node, every peer and this instance.
    pub fn members(&self) -> usize {
        self.nodes.len() + self.peers.len() + 1
    }
}

/// One node in the [`ClusterView`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub id: NodeId,
    pub name: String,
    pub role: Role,
    pub state: NodeState,
    pub fence: Option<FenceReason>,
    pub timeline: Option<u32>,
    /// Replay position behind the writer's current LSN (standbys).
    pub lag_bytes: Option<u64>,
    pub lag: Option<Duration>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_error: Option<ProbeFailure>,
    /// When `state` last changed.
    pub last_change: Duration,
    /// `pglb node drain`: left out of the read ports' new connections as a standby.
    pub drained: bool,
    /// `pglb node disable`: never a failover candidate or switchover target.
    pub disabled: bool,
}

/// A snapshot of what the machine believes, for status, metrics and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub phase: Phase,
    pub writer: Option<NodeId>,
    pub readers: Vec<NodeId>,
    pub writer_timeline: Option<u32>,
    pub vrrp_master: bool,
    /// The last tracking verdict ([`Action::Track`]); `None` before the first.
    pub writer_reachable: Option<bool>,
    /// (votes, members) as counted now.
    pub quorum: (usize, usize),
    /// Why failover is held back, while the writer is lost.
    pub blocked: Option<Blocked>,
    pub nodes: Vec<NodeView>,
    /// Each configured peer's last report ([`Event::PeerReport`]), in `peers` order; `None`
    /// until one arrives.
    pub peer_reports: Vec<Option<PeerReport>>,
    /// The machine has decided since its start or its last stall (not [`Phase::Starting`]): the
    /// instance may renew its data-plane lease and hold the VIP.
    pub ready: bool,
    /// A timeline a fresh peer report says exists, above every one confirmed here, and who
    /// says it: writes to older primaries are held back while it lasts.
    pub timeline_hint: Option<(u32, Ipv4Addr)>,
    /// The last state written is on disk (no write pending that failed).
    pub recorded: bool,
    /// The newest pause or resume known here.
    pub maintenance: Option<Maintenance>,
    /// A pause is in force now ([`Maintenance::in_force`]).
    pub paused: bool,
    /// The node marks known here (on and off), by node and kind.
    pub marks: Vec<NodeMark>,
}
