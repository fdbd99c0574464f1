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
//!
//! In files by concern: the sections' types (`sections`), their defaults (`defaults`), the
//! validation (`validate`), passwords and key files (`secrets`) and CIDR parsing (`cidr`).

mod cidr;
mod defaults;
mod secrets;
mod sections;
mod validate;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Human;

pub use self::cidr::{CidrParseError, Ipv4Cidr};
pub use self::defaults::{DEFAULT_PIN_ROOT, DEFAULT_STATE_ROOT};
pub use self::secrets::Secret;
pub use self::sections::{
    AgentChannelConfig, AgentClientConfig, DataplaneConfig, FailoverConfig, HooksConfig, HttpAuthScope, HttpConfig, InstanceConfig, ListenerConfig, LogConfig, LogFormat,
    NodeConfig, Pool, ProbeConfig, ReplicationConfig, VrrpConfig, XdpMode,
};
pub use self::validate::{
    LONG_TIMEOUT_MAX, MAX_INTERFACE_NAME, MAX_NODE_NAME, MAX_READ_WEIGHT, PROBE_COUNT_MAX, PROBE_INTERVAL_MAX,
    PROBE_INTERVAL_MIN, VRRP_ADVERT_MAX, VRRP_ADVERT_MIN, VRRP_PREEMPT_DELAY_MAX, HOOK_CONCURRENCY_MAX, is_slot_name,
};

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
    /// Absent: no hook runs (the event journal is written all the same).
    #[serde(default)]
    pub hooks: Option<HooksConfig>,
    /// Absent: text lines.
    #[serde(default)]
    pub log: LogConfig,
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
    #[error("[http] listen {listen} is not loopback, so credentials are required: stats_user with stats_password_file (or stats_password_env), or token_file")]
    StatsCredentialsMissing { listen: SocketAddr },
    #[error("[http] auth = \"all\" needs credentials: stats_user with stats_password_file (or stats_password_env), or token_file")]
    HttpAuthWithoutCredentials,
    #[error("[http] allow is empty, so every connection would get 403: list networks, or leave allow out to answer every network")]
    HttpAllowEmpty,
    #[error("[http] allow {cidr} has host bits set: write its network, {network}/{}", cidr.prefix_len)]
    HttpAllowHostBits { cidr: Ipv4Cidr, network: Ipv4Addr },
    #[error("[http] allow does not include listen {listen}: nothing could connect (add \"{listen}/32\")", listen = listen.ip())]
    HttpAllowExcludesListen { listen: SocketAddr },
    #[error("[http] stats_user and its password (stats_password_file or stats_password_env) go together: set both or neither")]
    StatsCredentialsIncomplete,
    #[error("cannot read [http] token_file {}", path.display())]
    TokenFileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("[http] token_file {} must hold one token of A-Z a-z 0-9 - . _ ~ + / = (at least 16 characters)", path.display())]
    TokenInvalid { path: PathBuf },
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
