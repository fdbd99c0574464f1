//! Typed TOML configuration of a pglb instance and its validation.
//!
//! [`Config::load`] reads a file, parses it (unknown keys are errors), checks every value with
//! [`Config::validate`] and then reads the secrets (password files or environment variables).
//! A bad config fails here, with one [`ConfigError`] line, before anything is attached or changed.
//!
//! `config/pglb.example.toml` documents every key; the tests parse it, so the two cannot drift.
//!
//! Decisions worth knowing:
//! - The VIP is given as CIDR (`vip = "172.20.0.100/16"`), and so is this load balancer's own
//!   address on the interface (`address = "172.20.0.21/16"`). The VIP must lie in the interface
//!   address's subnet with the same prefix length (it is added to the same interface), must not
//!   be the subnet's network or broadcast address, nor any node's address. The check is pure;
//!   the daemon may additionally check at run time that `address` really is on `interface`.
//! - Node names are PostgreSQL `application_name`s and physical replication slot names, so they
//!   are restricted to what a slot name allows: 1–63 of `a-z`, `0-9`, `_`.
//! - `[vrrp]` absent means no peers: this instance counts as master and alone forms its quorum
//!   share. `peers` lists the other load balancers; they count towards the failover quorum, and
//!   with `unicast = true` adverts go to them by unicast instead of to 224.0.0.18.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// Where `pin_path` lives when not configured: `<this>/<instance name>`.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/pglb";
/// Where instances keep their state file unless `[instance] state_dir` says otherwise.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/pglb";
/// The longest Linux interface name (IFNAMSIZ − 1).
pub const MAX_INTERFACE_NAME: usize = 15;
/// The longest PostgreSQL identifier (NAMEDATALEN − 1); node names are slot names.
pub const MAX_NODE_NAME: usize = 63;
/// The largest `read_weight` (the data plane's consistent-hash table is finite).
pub const MAX_READ_WEIGHT: u32 = 1000;
/// Probe interval bounds.
pub const PROBE_INTERVAL_MIN: Duration = Duration::from_millis(10);
pub const PROBE_INTERVAL_MAX: Duration = Duration::from_secs(60);
/// `failover_after` and `up_after` bounds (consecutive probes).
pub const PROBE_COUNT_MAX: u32 = 100;
/// VRRP advert interval bounds: a 12-bit count of centiseconds (RFC 9568 §5.2.7).
pub const VRRP_ADVERT_MIN: Duration = Duration::from_millis(10);
pub const VRRP_ADVERT_MAX: Duration = Duration::from_millis(40_950);
/// The longest `preempt_delay` (as keepalived).
pub const VRRP_PREEMPT_DELAY_MAX: Duration = Duration::from_secs(1000);
/// Upper bound of the various "how long to wait" durations, against typos like `30h`.
pub const LONG_TIMEOUT_MAX: Duration = Duration::from_secs(3600);

/// A whole pglb instance's configuration (one file per load balancer).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub instance: InstanceConfig,
    pub dataplane: DataplaneConfig,
    /// `[[listener]]` tables: VIP ports and the pool each serves.
    #[serde(rename = "listener", default)]
    pub listeners: Vec<ListenerConfig>,
    /// `[[node]]` tables: the PostgreSQL nodes; a node's id is its index here.
    #[serde(rename = "node", default)]
    pub nodes: Vec<NodeConfig>,
    pub probe: ProbeConfig,
    #[serde(default)]
    pub failover: FailoverConfig,
    pub replication: ReplicationConfig,
    /// Absent: no load-balancer peers; this instance counts as VRRP master.
    #[serde(default)]
    pub vrrp: Option<VrrpConfig>,
    #[serde(default)]
    pub http: HttpConfig,
    /// Absent: no agent channel (`pglb agent` hosts cannot learn the routing from here).
    #[serde(default)]
    pub agent: Option<AgentChannelConfig>,
}

/// `[agent]`: the authenticated UDP channel `pglb agent` on application hosts learns the routing
/// from (`crate::runtime::agent_channel`). Only the VRRP master's answers route; a backup answers as
/// a backup.
///
/// ```toml
/// [agent]
/// listen_port = 3003
/// signing_key_file = "/etc/pglb/agent-signing.key"   # the same file on every load balancer
/// [[agent.client]]
/// name = "app1"
/// key_file = "/etc/pglb/agents/app1.key"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentChannelConfig {
    /// UDP port agents send their subscribes to, on every address of the load balancer.
    pub listen_port: u16,
    /// The load balancers' Ed25519 signing key (`pglb agent keygen`): 64 hex digits, 0600, the
    /// same file on every load balancer. Agents hold only its public half.
    pub signing_key_file: PathBuf,
    /// How long a subscribe keeps an agent in the push list. Default 5s (agents re-subscribe
    /// every 250 ms by default).
    #[serde(default = "defaults::subscriber_ttl", with = "humantime_serde")]
    pub subscriber_ttl: Duration,
    /// `[[agent.client]]`: the agents allowed to subscribe, each with its own key.
    #[serde(rename = "client", default)]
    pub clients: Vec<AgentClientConfig>,
    /// Filled in by [`Config::load`] from `signing_key_file`.
    #[serde(skip)]
    pub signing_key: Option<crate::channel::SigningKey>,
}

/// `[[agent.client]]`: one application host's agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentClientConfig {
    /// The agent's `name` (its hostname by default): 1-64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// The agent's own HMAC key, the same bytes as its `key_file`: at least 16 bytes, 0600.
    pub key_file: PathBuf,
    /// Filled in by [`Config::load`] from `key_file`.
    #[serde(skip)]
    pub key: Option<crate::channel::Key>,
}

/// `[instance]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// This load balancer's name (`lb1`): used in the pin path, logs and metrics.
    /// 1–32 of `a-z`, `0-9`, `_`, `-`.
    pub name: String,
    /// Where this instance keeps what must survive a restart (`state.json`: fences, the last
    /// writer and its timeline). An absolute path. Default: `/var/lib/pglb/<name>`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
}

/// `[dataplane]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    /// The interface the XDP program attaches to and the VIP is added to.
    pub interface: String,
    /// This load balancer's own address on `interface`, as CIDR (`172.20.0.21/16`).
    pub address: Ipv4Cidr,
    /// The virtual IP, as CIDR (`172.20.0.100/16`): same subnet and prefix as `address`.
    pub vip: Ipv4Cidr,
    /// Where maps are pinned. Default: `/sys/fs/bpf/pglb/<instance name>`.
    #[serde(default)]
    pub pin_path: Option<PathBuf>,
    /// `native` (default) or `generic` (SKB mode, for drivers without XDP support).
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// An established flow with no packet for this long is removed by the sweeper. Default 1h.
    /// Nothing else removes an idle established flow: not a full table, not a flood.
    #[serde(default = "defaults::flow_idle_timeout", with = "humantime_serde")]
    pub flow_idle_timeout: Duration,
    /// A half-open flow (SYN forwarded, the client's ACK of the backend's SYN not seen yet)
    /// older than this is removed by the sweeper. Under a SYN flood the half-open table
    /// reclaims its oldest entries long before. Default 5s.
    #[serde(default = "defaults::half_open_timeout", with = "humantime_serde")]
    pub half_open_timeout: Duration,
    /// The dead-man switch: the running control plane renews a lease in the data plane five
    /// times per `lease`; once it runs out (pglb killed or hung) the XDP program drops ARP
    /// requests for the VIP and resets new connections, so clients move to the load balancer
    /// that holds the VIP. 200ms..=60s, default 1s.
    #[serde(default = "defaults::lease", with = "humantime_serde")]
    pub lease: Duration,
    /// How long established write connections go on after the lease ran out, before they are
    /// reset too (read connections go on). 0..=1h, default 10s.
    #[serde(default = "defaults::lease_grace", with = "humantime_serde")]
    pub lease_grace: Duration,
}

/// How the XDP program is attached (the data plane uses this type too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`); falls back to generic mode with a warning if the
    /// driver refuses.
    #[default]
    Native,
    /// In the generic SKB path (`XDP_FLAGS_SKB_MODE`) only.
    Generic,
}

/// `[[listener]]`: one VIP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub port: u16,
    pub pool: Pool,
}

/// Which backends a listener forwards to (the data plane uses this type too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// The current primary, and nothing else.
    Write,
    /// Healthy standbys under the lag limit; the primary only as fallback.
    Read,
}

/// `[[node]]`: one PostgreSQL node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node name = `application_name` = its replication slot name on the primary.
    pub name: String,
    pub host: Ipv4Addr,
    /// Default 5432.
    #[serde(default = "defaults::pg_port")]
    pub port: u16,
    /// Failover tie-break after received LSN: higher wins. Default 100.
    #[serde(default = "defaults::priority")]
    pub priority: u32,
    /// Never promote this node automatically. Default false.
    #[serde(default)]
    pub nofailover: bool,
    /// Share of read connections (0..=1000; 0 = never a reader except as fallback writer).
    /// Default 100.
    #[serde(default = "defaults::read_weight")]
    pub read_weight: u32,
}

impl NodeConfig {
    pub fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.host, self.port)
    }
}

/// `[probe]`: how nodes are probed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    pub user: String,
    /// Default `postgres`.
    #[serde(default = "defaults::dbname")]
    pub dbname: String,
    /// A file holding the password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Filled in by [`Config::load`] from `password_file` or `password_env`.
    #[serde(skip)]
    pub password: Secret,
    /// Time between probes of one node. Default 200ms.
    #[serde(default = "defaults::probe_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Hard limit for one probe on an established connection; an answer later than this is a
    /// failure (a hung server is down). Must be below `interval`. Default 150ms.
    #[serde(default = "defaults::probe_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Limit for opening a new connection (TCP + authentication). Must be below `interval`.
    /// Default 150ms.
    #[serde(default = "defaults::probe_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

/// `[failover]`: thresholds of the state machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Consecutive failed probes of the writer before it counts as failed. Default 3.
    #[serde(default = "defaults::failover_after")]
    pub failover_after: u32,
    /// Consecutive good probes before a node that was down is routed to again. Default 3.
    #[serde(default = "defaults::up_after")]
    pub up_after: u32,
    /// A standby further behind the old primary's last known LSN than this is never promoted.
    /// Default 1 MiB (1048576).
    #[serde(default = "defaults::max_lag_on_failover_bytes")]
    pub max_lag_on_failover_bytes: u64,
    /// A standby whose replay position is further behind the primary's current LSN than this
    /// serves no reads. Default 16 MiB (16777216).
    #[serde(default = "defaults::max_read_lag_bytes")]
    pub max_read_lag_bytes: u64,
    /// A standby whose reported replay lag (time) exceeds this serves no reads. Default 1s.
    #[serde(default = "defaults::max_read_lag", with = "humantime_serde")]
    pub max_read_lag: Duration,
    /// How long the executor may take to report a promotion before it counts as failed.
    /// Default 30s.
    #[serde(default = "defaults::promote_timeout", with = "humantime_serde")]
    pub promote_timeout: Duration,
    /// A planned switchover that has not finished after this is aborted. Default 10s.
    #[serde(default = "defaults::switchover_timeout", with = "humantime_serde")]
    pub switchover_timeout: Duration,
    /// Shell command that restarts a former primary as a standby during a switchover
    /// (PostgreSQL cannot demote itself; this is where an ssh or agent call goes). `{node}`,
    /// `{host}`, `{primary}` and `{primary_host}` are filled in. Unset: switchovers are refused.
    #[serde(default)]
    pub demote_command: Option<String>,
    /// Shell command that makes a fenced former primary a standby of the writer again (the
    /// classic stack's "rejoins by itself"): the same placeholders as `demote_command`, with
    /// `{primary}` the current writer. The VRRP master runs it once per fence when the node
    /// answers again; a failure is retried after `rejoin_backoff`, doubling up to 5 minutes,
    /// and the node stays fenced meanwhile. Unset: an operator runs `pglb node rejoin`.
    #[serde(default)]
    pub rejoin_command: Option<String>,
    /// The first retry delay of a failed `rejoin_command`. Default 10s.
    #[serde(default = "defaults::rejoin_backoff", with = "humantime_serde")]
    pub rejoin_backoff: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            failover_after: defaults::failover_after(),
            up_after: defaults::up_after(),
            max_lag_on_failover_bytes: defaults::max_lag_on_failover_bytes(),
            max_read_lag_bytes: defaults::max_read_lag_bytes(),
            max_read_lag: defaults::max_read_lag(),
            promote_timeout: defaults::promote_timeout(),
            switchover_timeout: defaults::switchover_timeout(),
            demote_command: None,
            rejoin_command: None,
            rejoin_backoff: defaults::rejoin_backoff(),
        }
    }
}

/// `[replication]`: how standbys connect to the primary after a re-point.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    pub user: String,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// Filled in by [`Config::load`].
    #[serde(skip)]
    pub password: Secret,
    /// N in `synchronous_standby_names = 'ANY N (…)'` that pglb writes on a new primary
    /// (listing every other node). 0 = asynchronous: pglb leaves the setting empty. Default 1.
    #[serde(default = "defaults::synchronous_count")]
    pub synchronous_count: u32,
}

/// `[vrrp]`: VIP ownership between load balancers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpConfig {
    /// Virtual router id, 1..=255, the same on every peer.
    pub vrid: u8,
    /// 1..=254, higher wins (255 only for the address owner, whose `address` is the VIP).
    /// Default 100.
    #[serde(default = "defaults::vrrp_priority")]
    pub priority: u8,
    /// A multiple of 10ms in 10ms..=40950ms. Default 100ms.
    #[serde(default = "defaults::advert_interval", with = "humantime_serde")]
    pub advert_interval: Duration,
    /// Take over from a lower-priority master that is healthy. Default false (keepalived's
    /// `nopreempt`): a returning higher-priority instance stays backup while the master
    /// reaches the writer and reports so, since taking the VIP would reset every connection
    /// the master forwards; it takes over only from a master that lost the writer.
    #[serde(default = "defaults::preempt")]
    pub preempt: bool,
    /// With `preempt`, wait this long after start before preempting. Default 0s.
    #[serde(default, with = "humantime_serde")]
    pub preempt_delay: Duration,
    /// The other pglb load balancers' addresses: they count towards the failover quorum, their
    /// reports are authenticated with `key_file`, and their adverts are believed only when a
    /// fresh report confirms them.
    #[serde(default)]
    pub peers: Vec<Ipv4Addr>,
    /// The key the pglb peers share for their reports (HMAC-SHA256), at least 16 bytes; the
    /// file must not be readable by group or others. Required with `peers`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Filled in by [`Config::load`].
    #[serde(skip)]
    pub key: Option<crate::key::Key>,
    /// Plain VRRPv3 peers (keepalived, during a migration): their adverts are believed as
    /// sent, with no report to confirm them. An explicit, per-peer exception; no quorum vote.
    #[serde(default)]
    pub keepalived_peers: Vec<Ipv4Addr>,
    /// The longest advert interval accepted from a peer (a larger Max_Adver_Int is dropped: it
    /// would make this instance wait minutes before taking over). Default 2s.
    #[serde(default = "defaults::max_peer_advert_interval", with = "humantime_serde")]
    pub max_peer_advert_interval: Duration,
    /// Send adverts to each of `peers` by unicast instead of to 224.0.0.18. Default false.
    #[serde(default)]
    pub unicast: bool,
    /// Priority reduction while this instance does not reach the writer (the failover
    /// machine's `Track` verdict). Must be below `priority`. Default 60.
    #[serde(default = "defaults::track_weight")]
    pub track_weight: u8,
    /// UDP port of the peer reports (timeline floor, writer reached) sent to every peer each
    /// advert interval. Default 3002; the same on every peer.
    #[serde(default = "defaults::report_port")]
    pub report_port: u16,
}

impl VrrpConfig {
    /// Where adverts go by unicast (every peer, pglb and keepalived); empty means multicast to
    /// 224.0.0.18.
    pub fn unicast_peers(&self) -> Vec<Ipv4Addr> {
        if self.unicast { self.all_peers() } else { Vec::new() }
    }

    /// Every address an advert may come from.
    pub fn all_peers(&self) -> Vec<Ipv4Addr> {
        self.peers.iter().chain(&self.keepalived_peers).copied().collect()
    }
}

/// `[http]`: metrics, stats page and health.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Default `127.0.0.1:8404`.
    #[serde(default = "defaults::http_listen")]
    pub listen: SocketAddr,
    /// Basic-auth user for `/stats`; required when `listen` is not loopback.
    #[serde(default)]
    pub stats_user: Option<String>,
    #[serde(default)]
    pub stats_password_file: Option<PathBuf>,
    #[serde(default)]
    pub stats_password_env: Option<String>,
    /// Filled in by [`Config::load`] when a stats password source is set.
    #[serde(skip)]
    pub stats_password: Option<Secret>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: defaults::http_listen(),
            stats_user: None,
            stats_password_file: None,
            stats_password_env: None,
            stats_password: None,
        }
    }
}

/// Default values, one function per key (serde needs functions).
mod defaults {
    use std::net::SocketAddr;
    use std::time::Duration;

    pub fn lease() -> Duration {
        Duration::from_secs(1)
    }
    pub fn lease_grace() -> Duration {
        Duration::from_secs(10)
    }
    pub fn flow_idle_timeout() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn half_open_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn pg_port() -> u16 {
        5432
    }
    pub fn priority() -> u32 {
        100
    }
    pub fn read_weight() -> u32 {
        100
    }
    pub fn dbname() -> String {
        "postgres".to_owned()
    }
    pub fn probe_interval() -> Duration {
        Duration::from_millis(200)
    }
    pub fn probe_timeout() -> Duration {
        Duration::from_millis(150)
    }
    pub fn failover_after() -> u32 {
        3
    }
    pub fn up_after() -> u32 {
        3
    }
    pub fn max_lag_on_failover_bytes() -> u64 {
        1 << 20
    }
    pub fn max_read_lag_bytes() -> u64 {
        16 << 20
    }
    pub fn max_read_lag() -> Duration {
        Duration::from_secs(1)
    }
    pub fn promote_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn rejoin_backoff() -> Duration {
        Duration::from_secs(10)
    }
    pub fn switchover_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn synchronous_count() -> u32 {
        1
    }
    pub fn vrrp_priority() -> u8 {
        100
    }
    pub fn report_port() -> u16 {
        3002
    }
    pub fn advert_interval() -> Duration {
        Duration::from_millis(100)
    }
    pub fn preempt() -> bool {
        false
    }
    pub fn max_peer_advert_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn track_weight() -> u8 {
        60
    }
    pub fn subscriber_ttl() -> Duration {
        Duration::from_secs(5)
    }

    pub fn http_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8404))
    }
}

/// A password. Its `Debug` never shows the value; read it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The password itself: hand it to the driver, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("Secret(<unset>)") } else { f.write_str("Secret(<redacted>)") }
    }
}

/// An IPv4 address with a prefix length, written `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then_some(Ipv4Cidr { addr, prefix_len })
    }
    pub fn mask(&self) -> u32 {
        if self.prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix_len)) }
    }
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    /// Whether `ip` lies in this address's subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
    /// Whether the address is usable by a host (not the network or broadcast address; /31 and
    /// /32 have neither).
    pub fn is_host_address(&self) -> bool {
        self.prefix_len >= 31 || (self.addr != self.network() && self.addr != self.broadcast())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a string is not `a.b.c.d/len`.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not an IPv4 address with a prefix length (like 172.20.0.100/16)")]
pub struct CidrParseError {
    pub value: String,
}

impl FromStr for Ipv4Cidr {
    type Err = CidrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrParseError { value: s.to_owned() };
        let (addr, len) = s.split_once('/').ok_or_else(err)?;
        let addr = addr.parse::<Ipv4Addr>().map_err(|_| err())?;
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let len = len.parse::<u8>().map_err(|_| err())?;
        Ipv4Cidr::new(addr, len).ok_or_else(err)
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = CidrParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A duration as humantime writes it, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() { f.write_str("0s") } else { write!(f, "{}", humantime::format_duration(self.0)) }
    }
}

/// Everything that makes a config unusable. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type or an unknown key (the message names it).
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("[instance] name {name:?} must be 1-32 of a-z, 0-9, '_', '-'")]
    InvalidInstanceName { name: String },
    #[error("[instance] state_dir {} must be an absolute path", path.display())]
    RelativeStateDir { path: PathBuf },
    #[error("[dataplane] interface {name:?} is not a valid interface name (1-15 characters, no '/', ':' or whitespace)")]
    InvalidInterface { name: String },
    #[error("[dataplane] vip {vip} is not in the subnet of the interface address {address}")]
    VipOutsideSubnet { vip: Ipv4Cidr, address: Ipv4Cidr },
    #[error("[dataplane] vip {vip} has another prefix length than the interface address {address}")]
    VipPrefixMismatch { vip: Ipv4Cidr, address: Ipv4Cidr },
    #[error("[dataplane] vip {vip} is the network or broadcast address of its subnet")]
    VipNotHostAddress { vip: Ipv4Cidr },
    #[error("[dataplane] vip {vip} is the interface address itself (allowed only with [vrrp] priority 255, the address owner)")]
    VipIsInterfaceAddress { vip: Ipv4Cidr },
    #[error("[dataplane] vip {vip} is also the address of node {node:?}")]
    VipIsNodeAddress { vip: Ipv4Cidr, node: String },
    #[error("no [[node]] configured: at least one PostgreSQL node is needed")]
    NoNodes,
    #[error("node name {name:?} must be 1-63 of a-z, 0-9, '_' (it is the application_name and replication slot name)")]
    InvalidNodeName { name: String },
    #[error("node name {name:?} is used twice")]
    DuplicateNodeName { name: String },
    #[error("nodes {first:?} and {second:?} have the same address {addr}")]
    DuplicateNodeAddress { first: String, second: String, addr: SocketAddrV4 },
    #[error("node {node:?} has port 0")]
    NodePortZero { node: String },
    #[error("node {node:?} read_weight {weight} is above {MAX_READ_WEIGHT}")]
    ReadWeightTooLarge { node: String, weight: u32 },
    #[error("no [[listener]] with pool = \"write\": the write port is what pglb is for")]
    NoWriteListener,
    #[error("[[listener]] port 0 is not a port")]
    ListenerPortZero,
    #[error("[[listener]] port {port} is used twice")]
    DuplicateListenerPort { port: u16 },
    #[error("[[listener]] port {port} is inside the NAT source-port range {}-{}: pick another port", lb_common::nat::NAT_PORT_FIRST, lb_common::nat::NAT_PORT_LAST)]
    ListenerInNatRange { port: u16 },
    #[error("[[listener]] port {port} collides with [http] listen {listen}")]
    ListenerCollidesWithHttp { port: u16, listen: SocketAddr },
    #[error("[{section}] needs password_file or password_env")]
    MissingPassword { section: &'static str },
    #[error("[{section}] sets both password_file and password_env; keep one")]
    ConflictingPassword { section: &'static str },
    #[error("cannot read [{section}] password file {}", path.display())]
    PasswordFileUnreadable {
        section: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("[{section}] password_env {var} is not set or not valid UTF-8")]
    PasswordEnvMissing { section: &'static str, var: String },
    #[error("[{section}] password is empty")]
    PasswordEmpty { section: &'static str },
    #[error("[{section}] {key} must not be empty")]
    EmptyValue { section: &'static str, key: &'static str },
    #[error("{key} = {value} is outside {min}..={max}")]
    DurationOutOfRange { key: &'static str, value: Human, min: Human, max: Human },
    #[error("{key} = {value} is outside {min}..={max}")]
    NumberOutOfRange { key: &'static str, value: u64, min: u64, max: u64 },
    #[error("[probe] {key} = {value} must be below interval = {interval} (a probe must finish before the next one starts)")]
    ProbeTimeoutNotBelowInterval { key: &'static str, value: Human, interval: Human },
    #[error("[replication] synchronous_count {count} needs more than {count} nodes, but {nodes} are configured")]
    SynchronousCountTooLarge { count: u32, nodes: usize },
    #[error("[vrrp] priority {priority} is outside 1..=254 (255 is only for the address owner, whose interface address is the vip)")]
    VrrpPriority { priority: u8 },
    #[error("[vrrp] vrid 0 is not a virtual router id (1..=255)")]
    VrrpVridZero,
    #[error("[vrrp] advert_interval {interval} is not a multiple of 10ms in 10ms..=40950ms")]
    VrrpAdvertInterval { interval: Human },
    #[error("[vrrp] track_weight {weight} must be below priority {priority}")]
    VrrpTrackWeight { weight: u8, priority: u8 },
    #[error("[vrrp] report_port must not be 0")]
    VrrpReportPort,
    #[error("[vrrp] peer {peer} is listed twice")]
    DuplicatePeer { peer: Ipv4Addr },
    #[error("[vrrp] peer {peer} is this load balancer's own address or the vip")]
    PeerIsSelf { peer: Ipv4Addr },
    #[error("[agent] listen_port {port}: {what}")]
    AgentPort { port: u16, what: &'static str },
    #[error(transparent)]
    Key(#[from] crate::key::KeyError),
    #[error("[vrrp] lists no peers: list the other load balancers in `peers` (pglb) or `keepalived_peers`; a load balancer alone needs no [vrrp] section")]
    VrrpNoPeers,
    #[error("[vrrp] key_file is required with `peers`: the pglb peers authenticate their reports with it (`head -c 32 /dev/urandom | base64 > /etc/pglb/peer.key`, mode 0600, the same file on every load balancer)")]
    VrrpKeyMissing,
    #[error("[vrrp] max_peer_advert_interval {max} must be a multiple of 10ms between advert_interval ({own}) and 40950ms")]
    VrrpMaxPeerAdvertInterval { max: Human, own: Human },
    #[error("[agent] has no [[agent.client]]: no agent could subscribe (docs/AGENT.md, \"Keys\")")]
    AgentNoClients,
    #[error("[[agent.client]] name {name:?} must be 1-64 of A-Z a-z 0-9 . _ -")]
    AgentClientName { name: String },
    #[error("[[agent.client]] {name:?} is listed twice")]
    DuplicateAgentClient { name: String },
    #[error("[http] listen {listen} is not loopback, so stats_user and stats_password_file (or stats_password_env) are required")]
    StatsCredentialsMissing { listen: SocketAddr },
}

impl Config {
    /// Reads, parses and validates the file at `path`, then reads its secrets.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = Config::parse(&text, path)?;
        config.resolve_secrets(|var| std::env::var(var).ok())?;
        Ok(config)
    }

    /// Parses TOML `text` (errors name `origin`) and validates it. Secrets are not read.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| parse_error(e, text, origin))?;
        config.validate()?;
        Ok(config)
    }

    /// Where the maps are pinned: `pin_path`, or `/sys/fs/bpf/pglb/<instance name>`.
    pub fn pin_path(&self) -> PathBuf {
        self.dataplane
            .pin_path
            .clone()
            .unwrap_or_else(|| Path::new(DEFAULT_PIN_ROOT).join(&self.instance.name))
    }

    /// Where the state file lives: `state_dir`, or `/var/lib/pglb/<instance name>`.
    pub fn state_dir(&self) -> PathBuf {
        self.instance.state_dir.clone().unwrap_or_else(|| Path::new(DEFAULT_STATE_ROOT).join(&self.instance.name))
    }

    /// Node names in id order.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Checks every value and every relation between values. Pure: reads no file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_instance()?;
        self.validate_dataplane()?;
        self.validate_nodes()?;
        self.validate_listeners()?;
        self.validate_probe()?;
        self.validate_failover()?;
        self.validate_replication()?;
        if let Some(vrrp) = &self.vrrp {
            self.validate_vrrp(vrrp)?;
        }
        self.validate_http()?;
        if let Some(agent) = &self.agent {
            self.validate_agent(agent)?;
        }
        Ok(())
    }

    fn validate_instance(&self) -> Result<(), ConfigError> {
        let name = &self.instance.name;
        let ok = (1..=32).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(ConfigError::InvalidInstanceName { name: name.clone() });
        }
        if let Some(dir) = &self.instance.state_dir
            && !dir.is_absolute()
        {
            return Err(ConfigError::RelativeStateDir { path: dir.clone() });
        }
        Ok(())
    }

    fn validate_dataplane(&self) -> Result<(), ConfigError> {
        let dp = &self.dataplane;
        let name = &dp.interface;
        let ok = (1..=MAX_INTERFACE_NAME).contains(&name.len())
            && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
        if !ok {
            return Err(ConfigError::InvalidInterface { name: name.clone() });
        }
        let (vip, address) = (dp.vip, dp.address);
        if !address.contains(vip.addr) {
            return Err(ConfigError::VipOutsideSubnet { vip, address });
        }
        if vip.prefix_len != address.prefix_len {
            return Err(ConfigError::VipPrefixMismatch { vip, address });
        }
        if !vip.is_host_address() {
            return Err(ConfigError::VipNotHostAddress { vip });
        }
        let owner = self.vrrp.as_ref().is_some_and(|v| v.priority == 255);
        if vip.addr == address.addr && !owner {
            return Err(ConfigError::VipIsInterfaceAddress { vip });
        }
        if let Some(node) = self.nodes.iter().find(|n| n.host == vip.addr) {
            return Err(ConfigError::VipIsNodeAddress { vip, node: node.name.clone() });
        }
        check_duration("[dataplane] flow_idle_timeout", dp.flow_idle_timeout, Duration::from_secs(1), Duration::from_secs(7 * 86400))?;
        check_duration("[dataplane] half_open_timeout", dp.half_open_timeout, Duration::from_secs(1), Duration::from_secs(120))?;
        check_duration("[dataplane] lease", dp.lease, Duration::from_millis(200), Duration::from_secs(60))?;
        check_duration("[dataplane] lease_grace", dp.lease_grace, Duration::ZERO, LONG_TIMEOUT_MAX)?;
        Ok(())
    }

    fn validate_nodes(&self) -> Result<(), ConfigError> {
        if self.nodes.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        let mut names = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if !is_slot_name(&node.name) {
                return Err(ConfigError::InvalidNodeName { name: node.name.clone() });
            }
            if !names.insert(node.name.as_str()) {
                return Err(ConfigError::DuplicateNodeName { name: node.name.clone() });
            }
            if node.port == 0 {
                return Err(ConfigError::NodePortZero { node: node.name.clone() });
            }
            if node.read_weight > MAX_READ_WEIGHT {
                return Err(ConfigError::ReadWeightTooLarge { node: node.name.clone(), weight: node.read_weight });
            }
            if let Some(first) = self.nodes[..i].iter().find(|o| o.addr() == node.addr()) {
                return Err(ConfigError::DuplicateNodeAddress {
                    first: first.name.clone(),
                    second: node.name.clone(),
                    addr: node.addr(),
                });
            }
        }
        Ok(())
    }

    fn validate_listeners(&self) -> Result<(), ConfigError> {
        let mut ports = HashSet::new();
        for l in &self.listeners {
            if l.port == 0 {
                return Err(ConfigError::ListenerPortZero);
            }
            if !ports.insert(l.port) {
                return Err(ConfigError::DuplicateListenerPort { port: l.port });
            }
            // A backend's reply to a NAT source port must never look like a client packet.
            if lb_common::nat::in_nat_range(l.port) {
                return Err(ConfigError::ListenerInNatRange { port: l.port });
            }
            // The XDP program answers VIP:port before the kernel sees it, so an HTTP server on
            // the same port of the VIP (or of every address) would never be reached.
            let http = self.http.listen;
            let http_on_vip = match http.ip() {
                IpAddr::V4(ip) => ip.is_unspecified() || ip == self.dataplane.vip.addr,
                IpAddr::V6(ip) => ip.is_unspecified(),
            };
            if http_on_vip && http.port() == l.port {
                return Err(ConfigError::ListenerCollidesWithHttp { port: l.port, listen: http });
            }
        }
        if !self.listeners.iter().any(|l| l.pool == Pool::Write) {
            return Err(ConfigError::NoWriteListener);
        }
        Ok(())
    }

    fn validate_probe(&self) -> Result<(), ConfigError> {
        let p = &self.probe;
        if p.user.is_empty() {
            return Err(ConfigError::EmptyValue { section: "probe", key: "user" });
        }
        if p.dbname.is_empty() {
            return Err(ConfigError::EmptyValue { section: "probe", key: "dbname" });
        }
        check_password_source("probe", &p.password_file, &p.password_env)?;
        check_duration("[probe] interval", p.interval, PROBE_INTERVAL_MIN, PROBE_INTERVAL_MAX)?;
        for (key, value) in [("timeout", p.timeout), ("connect_timeout", p.connect_timeout)] {
            if value.is_zero() {
                return Err(ConfigError::DurationOutOfRange {
                    key: if key == "timeout" { "[probe] timeout" } else { "[probe] connect_timeout" },
                    value: Human(value),
                    min: Human(Duration::from_millis(1)),
                    max: Human(p.interval),
                });
            }
            if value >= p.interval {
                return Err(ConfigError::ProbeTimeoutNotBelowInterval {
                    key,
                    value: Human(value),
                    interval: Human(p.interval),
                });
            }
        }
        Ok(())
    }

    fn validate_failover(&self) -> Result<(), ConfigError> {
        let f = &self.failover;
        check_number("[failover] failover_after", f.failover_after.into(), 1, PROBE_COUNT_MAX.into())?;
        check_number("[failover] up_after", f.up_after.into(), 1, PROBE_COUNT_MAX.into())?;
        check_duration("[failover] max_read_lag", f.max_read_lag, Duration::from_millis(1), LONG_TIMEOUT_MAX)?;
        check_duration("[failover] promote_timeout", f.promote_timeout, Duration::from_secs(1), LONG_TIMEOUT_MAX)?;
        check_duration("[failover] switchover_timeout", f.switchover_timeout, Duration::from_secs(1), LONG_TIMEOUT_MAX)?;
        check_duration("[failover] rejoin_backoff", f.rejoin_backoff, Duration::from_secs(1), LONG_TIMEOUT_MAX)?;
        for (key, command) in [("demote_command", &f.demote_command), ("rejoin_command", &f.rejoin_command)] {
            if command.as_ref().is_some_and(|c| c.trim().is_empty()) {
                return Err(ConfigError::EmptyValue { section: "failover", key });
            }
        }
        Ok(())
    }

    fn validate_replication(&self) -> Result<(), ConfigError> {
        let r = &self.replication;
        if r.user.is_empty() {
            return Err(ConfigError::EmptyValue { section: "replication", key: "user" });
        }
        check_password_source("replication", &r.password_file, &r.password_env)?;
        let count = r.synchronous_count;
        if count > 0 && count as usize >= self.nodes.len() {
            return Err(ConfigError::SynchronousCountTooLarge { count, nodes: self.nodes.len() });
        }
        Ok(())
    }

    fn validate_vrrp(&self, v: &VrrpConfig) -> Result<(), ConfigError> {
        if v.vrid == 0 {
            return Err(ConfigError::VrrpVridZero);
        }
        let owner = self.dataplane.address.addr == self.dataplane.vip.addr;
        if v.priority == 0 || (v.priority == 255 && !owner) {
            return Err(ConfigError::VrrpPriority { priority: v.priority });
        }
        let advert = v.advert_interval;
        let centis = advert.as_nanos().is_multiple_of(10_000_000);
        if !centis || advert < VRRP_ADVERT_MIN || advert > VRRP_ADVERT_MAX {
            return Err(ConfigError::VrrpAdvertInterval { interval: Human(advert) });
        }
        check_duration("[vrrp] preempt_delay", v.preempt_delay, Duration::ZERO, VRRP_PREEMPT_DELAY_MAX)?;
        if v.track_weight >= v.priority {
            return Err(ConfigError::VrrpTrackWeight { weight: v.track_weight, priority: v.priority });
        }
        if v.report_port == 0 {
            return Err(ConfigError::VrrpReportPort);
        }
        let mut seen = HashSet::new();
        for peer in v.all_peers() {
            if peer == self.dataplane.address.addr || peer == self.dataplane.vip.addr {
                return Err(ConfigError::PeerIsSelf { peer });
            }
            if !seen.insert(peer) {
                return Err(ConfigError::DuplicatePeer { peer });
            }
        }
        if seen.is_empty() {
            return Err(ConfigError::VrrpNoPeers);
        }
        match &v.key_file {
            None if !v.peers.is_empty() => return Err(ConfigError::VrrpKeyMissing),
            Some(f) if f.as_os_str().is_empty() => return Err(ConfigError::EmptyValue { section: "vrrp", key: "key_file" }),
            _ => {}
        }
        let max = v.max_peer_advert_interval;
        if max < advert || max > VRRP_ADVERT_MAX || !max.as_nanos().is_multiple_of(10_000_000) {
            return Err(ConfigError::VrrpMaxPeerAdvertInterval { max: Human(max), own: Human(advert) });
        }
        Ok(())
    }

    fn validate_agent(&self, a: &AgentChannelConfig) -> Result<(), ConfigError> {
        if a.listen_port == 0 {
            return Err(ConfigError::AgentPort { port: 0, what: "0 is not a port" });
        }
        if self.vrrp.as_ref().is_some_and(|v| v.report_port == a.listen_port) {
            return Err(ConfigError::AgentPort { port: a.listen_port, what: "it is [vrrp] report_port" });
        }
        if a.signing_key_file.as_os_str().is_empty() {
            return Err(ConfigError::EmptyValue { section: "agent", key: "signing_key_file" });
        }
        if a.clients.is_empty() {
            return Err(ConfigError::AgentNoClients);
        }
        let mut seen = HashSet::new();
        for c in &a.clients {
            if !crate::channel::is_agent_name(&c.name) {
                return Err(ConfigError::AgentClientName { name: c.name.clone() });
            }
            if !seen.insert(c.name.as_str()) {
                return Err(ConfigError::DuplicateAgentClient { name: c.name.clone() });
            }
            if c.key_file.as_os_str().is_empty() {
                return Err(ConfigError::EmptyValue { section: "agent.client", key: "key_file" });
            }
        }
        check_duration("[agent] subscriber_ttl", a.subscriber_ttl, Duration::from_secs(1), LONG_TIMEOUT_MAX)
    }

    fn validate_http(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        let has_password = h.stats_password_file.is_some() || h.stats_password_env.is_some();
        if h.stats_password_file.is_some() && h.stats_password_env.is_some() {
            return Err(ConfigError::ConflictingPassword { section: "http" });
        }
        if !h.listen.ip().is_loopback() && (h.stats_user.as_deref().unwrap_or("").is_empty() || !has_password) {
            return Err(ConfigError::StatsCredentialsMissing { listen: h.listen });
        }
        Ok(())
    }

    /// Reads every password from its file or environment variable (`env` looks a variable up;
    /// [`Config::load`] passes the process environment).
    pub fn resolve_secrets(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.probe.password = read_secret("probe", &self.probe.password_file, &self.probe.password_env, &env)?;
        self.replication.password =
            read_secret("replication", &self.replication.password_file, &self.replication.password_env, &env)?;
        let h = &self.http;
        if h.stats_password_file.is_some() || h.stats_password_env.is_some() {
            self.http.stats_password = Some(read_secret("http", &h.stats_password_file, &h.stats_password_env, &env)?);
        }
        if let Some(a) = &mut self.agent {
            a.signing_key = Some(crate::channel::SigningKey::from_file(&a.signing_key_file)?);
            for c in &mut a.clients {
                c.key = Some(crate::key::Key::from_file(&c.key_file, "agent")?);
            }
        }
        if let Some(v) = &mut self.vrrp
            && let Some(f) = &v.key_file
        {
            v.key = Some(crate::key::Key::from_file(f, "peer")?);
        }
        Ok(())
    }
}

/// Whether `name` can be a physical replication slot name (and so a node name).
pub fn is_slot_name(name: &str) -> bool {
    (1..=MAX_NODE_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check_duration(key: &'static str, value: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::DurationOutOfRange { key, value: Human(value), min: Human(min), max: Human(max) });
    }
    Ok(())
}

fn check_number(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::NumberOutOfRange { key, value, min, max });
    }
    Ok(())
}

fn check_password_source(
    section: &'static str,
    file: &Option<PathBuf>,
    env: &Option<String>,
) -> Result<(), ConfigError> {
    match (file, env) {
        (None, None) => Err(ConfigError::MissingPassword { section }),
        (Some(_), Some(_)) => Err(ConfigError::ConflictingPassword { section }),
        (Some(f), None) if f.as_os_str().is_empty() => {
            Err(ConfigError::EmptyValue { section, key: "password_file" })
        }
        (None, Some(v)) if v.is_empty() => Err(ConfigError::EmptyValue { section, key: "password_env" }),
        _ => Ok(()),
    }
}

fn read_secret(
    section: &'static str,
    file: &Option<PathBuf>,
    env: &Option<String>,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Secret, ConfigError> {
    check_password_source(section, file, env)?;
    let raw = match (file, env) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|source| ConfigError::PasswordFileUnreadable { section, path: path.clone(), source })?,
        (None, Some(var)) => lookup(var).ok_or_else(|| ConfigError::PasswordEnvMissing { section, var: var.clone() })?,
        (None, None) => unreachable!("check_password_source rejects a missing source"),
    };
    let value = raw.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&raw);
    if value.is_empty() {
        return Err(ConfigError::PasswordEmpty { section });
    }
    Ok(Secret::new(value))
}

/// Turns toml's multi-line report into one line: `file:line:column: message`.
fn parse_error(err: toml::de::Error, text: &str, origin: &Path) -> ConfigError {
    let (line, column) = match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        }
        None => (0, 0),
    };
    let message = err.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    ConfigError::Parse { path: origin.to_owned(), line, column, message }
}
