//! The sections of a config file, one type each (`[instance]`, `[dataplane]`, `[[listener]]`,
//! `[[node]]`, `[probe]`, `[failover]`, `[replication]`, `[vrrp]`, `[http]`, `[agent]`,
//! `[hooks]`, `[log]`), as
//! serde reads them: what each key means and its default. The defaults' values are in
//! `defaults`, the checks of the values in `validate`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Ipv4Cidr, Secret, defaults};

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
    /// Filled in by [`Config::load`](super::Config::load) from `signing_key_file`.
    #[serde(skip)]
    pub signing_key: Option<crate::agent::channel::SigningKey>,
}

/// `[[agent.client]]`: one application host's agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentClientConfig {
    /// The agent's `name` (its hostname by default): 1-64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// The agent's own HMAC key, the same bytes as its `key_file`: at least 16 bytes, 0600.
    pub key_file: PathBuf,
    /// Filled in by [`Config::load`](super::Config::load) from `key_file`.
    #[serde(skip)]
    pub key: Option<crate::agent::channel::Key>,
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

/// Which HTTP endpoints need credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuthScope {
    /// `/stats` only: scrapers and health checkers need none.
    #[default]
    Stats,
    /// Every endpoint, health checks and `/metrics` included.
    All,
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
    /// Filled in by [`Config::load`](super::Config::load) from `password_file` or `password_env`.
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
    /// TLS of pglb's own connections (probes, promote, re-point, `synchronous_standby_names`),
    /// with libpq's meanings (`crate::pgtls`): `disable` (default, plain TCP as before),
    /// `prefer`, `require`, `verify-ca`, `verify-full`. `allow` is refused.
    #[serde(default)]
    pub sslmode: SslMode,
    /// The CA certificates (PEM) the server's certificate must chain to; the only ones trusted.
    /// Required by `verify-ca` and `verify-full`; with `require` it makes the chain checked.
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// A client certificate (PEM, with its chain) and its key (PEM, mode 0600): both or neither.
    #[serde(default)]
    pub sslcert: Option<PathBuf>,
    #[serde(default)]
    pub sslkey: Option<PathBuf>,
    /// Filled in by [`Config::load`](super::Config::load) from the three files above.
    #[serde(skip)]
    pub tls: crate::pgtls::TlsFiles,
}

/// libpq's `sslmode` values, defined beside the connector that implements them.
pub use crate::pgtls::SslMode;

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
    /// A pause (`pglb pause`) that has lasted longer than this is an alert: exported as the
    /// gauge `pglb_pause_alert_after_seconds`, which the rule `PglbPausedTooLong` compares
    /// against. Default 1h.
    #[serde(default = "defaults::pause_alert_after", with = "humantime_serde")]
    pub pause_alert_after: Duration,
}

/// `[replication]`: the `primary_conninfo` pglb writes on a standby at a re-point. Its paths
/// (`passfile`, `sslrootcert`, `sslcert`, `sslkey`) are read by the standby's PostgreSQL on the
/// database host, not by pglb: absolute, and not checked here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    pub user: String,
    /// A libpq passfile on the database hosts, owned by the user PostgreSQL runs as (0600):
    /// `primary_conninfo` then says `passfile=…` instead of carrying the password. Exactly one
    /// of `passfile`, `password_file`, `password_env`.
    #[serde(default)]
    pub passfile: Option<PathBuf>,
    /// The password itself, written inline into `primary_conninfo` (visible in
    /// `postgresql.auto.conf`): prefer `passfile`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// Filled in by [`Config::load`](super::Config::load) (empty with `passfile`).
    #[serde(skip)]
    pub password: Secret,
    /// `sslmode` in `primary_conninfo`, any of libpq's six. Absent: not written, so libpq's own
    /// default (`prefer`) applies, as before.
    #[serde(default)]
    pub sslmode: Option<SslMode>,
    /// `sslrootcert`, `sslcert`, `sslkey` in `primary_conninfo`: paths on the database hosts.
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    #[serde(default)]
    pub sslcert: Option<PathBuf>,
    #[serde(default)]
    pub sslkey: Option<PathBuf>,
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
    /// Filled in by [`Config::load`](super::Config::load).
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

/// `[http]`: metrics, stats page, health checks, and who may ask them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Default `127.0.0.1:8404`.
    #[serde(default = "defaults::http_listen")]
    pub listen: SocketAddr,
    /// The networks (CIDR, `10.0.0.0/8`) whose connections are answered; any other gets 403.
    /// Absent: every network. Include `127.0.0.1/32` to keep asking from the host itself.
    #[serde(default)]
    pub allow: Option<Vec<Ipv4Cidr>>,
    /// Which endpoints need credentials (basic auth with `stats_user`, or the bearer token of
    /// `token_file`): `"stats"` (default) only `/stats`, `"all"` every endpoint.
    #[serde(default)]
    pub auth: HttpAuthScope,
    /// A file holding a bearer token (`Authorization: Bearer <token>`), accepted wherever basic
    /// auth is; one line, A-Z a-z 0-9 `-._~+/=`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Filled in by [`Config::load`](super::Config::load) from `token_file`.
    #[serde(skip)]
    pub token: Option<Secret>,
    /// Basic-auth user; credentials (this with a password, or `token_file`) are required when
    /// `listen` is not loopback.
    #[serde(default)]
    pub stats_user: Option<String>,
    #[serde(default)]
    pub stats_password_file: Option<PathBuf>,
    #[serde(default)]
    pub stats_password_env: Option<String>,
    /// Filled in by [`Config::load`](super::Config::load) when a stats password source is set.
    #[serde(skip)]
    pub stats_password: Option<Secret>,
}

/// `[hooks]`: a command run on every event (failover, switchover, fence, rejoin, VRRP role, SYN
/// flood defence), off the main loop (`crate::runtime::hooks`). The event is one JSON object on
/// its stdin, and `PGLB_EVENT`, `PGLB_NODE`, `PGLB_OLD_WRITER`, `PGLB_NEW_WRITER` and
/// `PGLB_TIMELINE` in its environment.
///
/// ```toml
/// [hooks]
/// command = "/etc/pglb/hook.sh"
/// timeout = "10s"
/// max_concurrent = 4
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Run with `/bin/sh -c`, in its own process group.
    pub command: String,
    /// A run still going after this is killed (its whole process group). Default 10s.
    #[serde(default = "defaults::hook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Runs at once; events beyond wait in a bounded queue, and a full queue drops (counted).
    /// Default 4.
    #[serde(default = "defaults::hook_max_concurrent")]
    pub max_concurrent: u32,
}

/// `[log]`: how the daemon writes its log lines to stderr (journald keeps either).
///
/// ```toml
/// [log]
/// format = "json"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`; `pglb run --log-format` overrides it.
    #[serde(default)]
    pub format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp` (RFC 3339, UTC), `level`, `message` and the
    /// event's fields at the top level, then `span`/`spans` when inside one.
    Json,
}
