//! The checks of every value and every relation between values ([`Config::validate`]), with
//! their bounds. Pure: reads no file (the secrets are read afterwards, see `secrets`).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::{AgentChannelConfig, Config, ConfigError, HooksConfig, HttpAuthScope, Ipv4Cidr, Pool, SslMode, VrrpConfig, secrets::check_password_source};
use crate::Human;

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
/// The most hook runs at once.
pub const HOOK_CONCURRENCY_MAX: u32 = 64;
/// Upper bound of the various "how long to wait" durations, against typos like `30h`.
pub const LONG_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// The longest `[failover] pause_alert_after` (a week).
pub const PAUSE_ALERT_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

impl Config {
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
        if let Some(hooks) = &self.hooks {
            validate_hooks(hooks)?;
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
        if p.sslmode == SslMode::Allow {
            return Err(ConfigError::SslModeAllow);
        }
        let files = TlsPaths { section: "probe", rootcert: &p.sslrootcert, cert: &p.sslcert, key: &p.sslkey };
        files.check(Some(p.sslmode))?;
        if matches!(p.sslmode, SslMode::VerifyCa | SslMode::VerifyFull) && p.sslrootcert.is_none() {
            return Err(ConfigError::SslRootCertMissing { section: "probe", mode: p.sslmode });
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
        check_duration("[failover] pause_alert_after", f.pause_alert_after, Duration::from_secs(60), PAUSE_ALERT_MAX)?;
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
        let sources = [("passfile", r.passfile.is_some()), ("password_file", r.password_file.is_some()), ("password_env", r.password_env.is_some())];
        let mut set = sources.iter().filter(|(_, on)| *on).map(|(key, _)| *key);
        match (set.next(), set.next()) {
            (None, _) => return Err(ConfigError::ReplicationPasswordMissing),
            (Some(first), Some(second)) => return Err(ConfigError::ReplicationPasswordConflict { first, second }),
            (Some("passfile"), None) => {}
            (Some(_), None) => check_password_source("replication", &r.password_file, &r.password_env)?,
        }
        let files = TlsPaths { section: "replication", rootcert: &r.sslrootcert, cert: &r.sslcert, key: &r.sslkey };
        files.check(r.sslmode)?;
        for (key, path) in [("passfile", &r.passfile), ("sslrootcert", &r.sslrootcert), ("sslcert", &r.sslcert), ("sslkey", &r.sslkey)] {
            if let Some(path) = path
                && !path.is_absolute()
            {
                return Err(ConfigError::ReplicationPathRelative { key, path: path.clone() });
            }
        }
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
            if !crate::agent::channel::is_agent_name(&c.name) {
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
        if h.stats_password_file.is_some() && h.stats_password_env.is_some() {
            return Err(ConfigError::ConflictingPassword { section: "http" });
        }
        let has_password = h.stats_password_file.is_some() || h.stats_password_env.is_some();
        if h.stats_user.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::EmptyValue { section: "http", key: "stats_user" });
        }
        if h.stats_user.is_some() != has_password {
            return Err(ConfigError::StatsCredentialsIncomplete);
        }
        if h.token_file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
            return Err(ConfigError::EmptyValue { section: "http", key: "token_file" });
        }
        let has_credentials = has_password || h.token_file.is_some();
        if !h.listen.ip().is_loopback() && !has_credentials {
            return Err(ConfigError::StatsCredentialsMissing { listen: h.listen });
        }
        if h.auth == HttpAuthScope::All && !has_credentials {
            return Err(ConfigError::HttpAuthWithoutCredentials);
        }
        if let Some(allow) = &h.allow {
            validate_allow(allow, h.listen)?;
        }
        Ok(())
    }
}

/// `[http] allow`: not empty, networks written as networks, and the listen address itself
/// allowed when it is an IPv4 loopback (else nothing could connect).
fn validate_allow(allow: &[Ipv4Cidr], listen: SocketAddr) -> Result<(), ConfigError> {
    if allow.is_empty() {
        return Err(ConfigError::HttpAllowEmpty);
    }
    if let Some(c) = allow.iter().find(|c| c.addr != c.network()) {
        return Err(ConfigError::HttpAllowHostBits { cidr: *c, network: c.network() });
    }
    if let IpAddr::V4(ip) = listen.ip()
        && ip.is_loopback()
        && !allow.iter().any(|c| c.contains(ip))
    {
        return Err(ConfigError::HttpAllowExcludesListen { listen });
    }
    Ok(())
}

fn validate_hooks(h: &HooksConfig) -> Result<(), ConfigError> {
    if h.command.trim().is_empty() {
        return Err(ConfigError::EmptyValue { section: "hooks", key: "command" });
    }
    check_duration("[hooks] timeout", h.timeout, Duration::from_millis(100), LONG_TIMEOUT_MAX)?;
    check_number("[hooks] max_concurrent", h.max_concurrent.into(), 1, HOOK_CONCURRENCY_MAX.into())
}

/// A section's `sslrootcert`, `sslcert` and `sslkey`.
struct TlsPaths<'a> {
    section: &'static str,
    rootcert: &'a Option<PathBuf>,
    cert: &'a Option<PathBuf>,
    key: &'a Option<PathBuf>,
}

impl TlsPaths<'_> {
    /// None empty, the certificate and its key together, and none with `sslmode = "disable"`.
    fn check(&self, mode: Option<SslMode>) -> Result<(), ConfigError> {
        let section = self.section;
        let all = [("sslrootcert", self.rootcert), ("sslcert", self.cert), ("sslkey", self.key)];
        for (key, path) in all {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(ConfigError::EmptyValue { section, key });
            }
            if path.is_some() && mode == Some(SslMode::Disable) {
                return Err(ConfigError::SslFileWithoutTls { section, key });
            }
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::SslCertKeyIncomplete { section });
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
