//! The agent's config file (`pglb agent --config AGENT.toml`): which cgroup, which VIP
//! listeners, which load balancers, the keys, the lease and where its record of rewritten
//! sockets is pinned.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use thiserror::Error;

use crate::Human;

/// The agent's whole configuration.
///
/// ```toml
/// name = "app1"                                     # its [[agent.client]] name on the load balancers; default: the hostname
/// cgroup = "/sys/fs/cgroup/unified/pglb-lab-client" # cgroup v2 directory of the application
/// vip = "172.20.0.100"
/// write_ports = [3000]
/// read_ports = [3001]
/// load_balancers = ["172.20.0.21:3003", "172.20.0.22:3003"]  # each one's [agent] listen_port
/// key_file = "/etc/pglb/agent.key"                  # this agent's own key: its [[agent.client]] key_file (0600)
/// lb_public_key_file = "/etc/pglb/agent-signing.pub" # the load balancers' public key (`pglb agent keygen`)
/// lease = "1s"                                      # default 1s
/// subscribe_interval = "250ms"                      # default 250ms, at most lease / 2
/// pin_path = "/sys/fs/bpf/pglb-agent/app1"          # default: /sys/fs/bpf/pglb-agent/<name>
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub cgroup: PathBuf,
    pub vip: Ipv4Addr,
    pub write_ports: Vec<u16>,
    #[serde(default)]
    pub read_ports: Vec<u16>,
    pub load_balancers: Vec<SocketAddrV4>,
    /// This agent's HMAC key (its subscribes' MAC); the load balancers hold the same bytes as its
    /// `[[agent.client]] key_file`.
    pub key_file: PathBuf,
    /// The load balancers' Ed25519 public key: routes must be signed by its private half.
    pub lb_public_key_file: PathBuf,
    /// Where the map of sockets this agent rewrote is pinned (a bpffs directory), so that sockets
    /// outlive no agent run: the next start or `pglb agent cleanup` closes what a killed agent
    /// left. Default: `/sys/fs/bpf/pglb-agent/<name>`.
    #[serde(default)]
    pub pin_path: Option<PathBuf>,
    /// How long a master's answer keeps the route valid, counted from the request it answers.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    #[serde(default = "default_subscribe_interval", with = "humantime_serde")]
    pub subscribe_interval: Duration,
}

fn default_lease() -> Duration {
    Duration::from_secs(1)
}

fn default_subscribe_interval() -> Duration {
    Duration::from_millis(250)
}

/// Lease bounds.
pub const LEASE_MIN: Duration = Duration::from_millis(100);
pub const LEASE_MAX: Duration = Duration::from_secs(60);
/// The shortest subscribe interval.
pub const SUBSCRIBE_MIN: Duration = Duration::from_millis(10);

#[derive(Debug, Error)]
pub enum AgentConfigError {
    #[error("cannot read the agent config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("cgroup {} must be an absolute path (a cgroup v2 directory)", path.display())]
    RelativeCgroup { path: PathBuf },
    #[error("vip {vip} is not a unicast address")]
    Vip { vip: Ipv4Addr },
    #[error("write_ports is empty: the write port is what the agent is for")]
    NoWritePort,
    #[error("port {port} is 0 or listed twice in write_ports and read_ports")]
    Port { port: u16 },
    #[error("load_balancers is empty: the agent learns its routing only from them")]
    NoLoadBalancers,
    #[error("load balancer {addr} is listed twice")]
    DuplicateLoadBalancer { addr: SocketAddrV4 },
    #[error("lease = {value} is outside {}..={}", Human(LEASE_MIN), Human(LEASE_MAX))]
    Lease { value: Human },
    #[error("subscribe_interval = {value} must be within {}..={} (at least two requests per lease)", Human(SUBSCRIBE_MIN), Human(*max))]
    SubscribeInterval { value: Human, max: Duration },
    #[error("name {name:?} must be 1-64 of A-Z a-z 0-9 . _ - (the [[agent.client]] name on the load balancers)")]
    Name { name: String },
    #[error("pin_path {} must be an absolute path under a bpffs mount (e.g. /sys/fs/bpf/pglb-agent/NAME)", path.display())]
    RelativePinPath { path: PathBuf },
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, origin: &Path) -> Result<Self, AgentConfigError> {
        let config: AgentConfig = toml::from_str(text).map_err(|e| AgentConfigError::Parse {
            path: origin.to_owned(),
            message: e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; reads no file.
    pub fn validate(&self) -> Result<(), AgentConfigError> {
        if !self.cgroup.is_absolute() {
            return Err(AgentConfigError::RelativeCgroup { path: self.cgroup.clone() });
        }
        let vip = self.vip;
        if vip.is_unspecified() || vip.is_broadcast() || vip.is_multicast() {
            return Err(AgentConfigError::Vip { vip });
        }
        if self.write_ports.is_empty() {
            return Err(AgentConfigError::NoWritePort);
        }
        let mut seen = HashSet::new();
        for &port in self.write_ports.iter().chain(&self.read_ports) {
            if port == 0 || !seen.insert(port) {
                return Err(AgentConfigError::Port { port });
            }
        }
        if self.load_balancers.is_empty() {
            return Err(AgentConfigError::NoLoadBalancers);
        }
        let mut seen = HashSet::new();
        for &addr in &self.load_balancers {
            if !seen.insert(addr) {
                return Err(AgentConfigError::DuplicateLoadBalancer { addr });
            }
        }
        if self.lease < LEASE_MIN || self.lease > LEASE_MAX {
            return Err(AgentConfigError::Lease { value: Human(self.lease) });
        }
        let max = self.lease / 2;
        if self.subscribe_interval < SUBSCRIBE_MIN || self.subscribe_interval > max {
            return Err(AgentConfigError::SubscribeInterval { value: Human(self.subscribe_interval), max });
        }
        if let Some(name) = &self.name
            && !super::channel::is_agent_name(name)
        {
            return Err(AgentConfigError::Name { name: name.clone() });
        }
        if let Some(path) = &self.pin_path
            && !path.is_absolute()
        {
            return Err(AgentConfigError::RelativePinPath { path: path.clone() });
        }
        Ok(())
    }

    /// The agent's name: `name`, or the hostname.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(hostname)
    }

    /// Where the map of rewritten sockets is pinned.
    pub fn pin_path(&self) -> PathBuf {
        self.pin_path.clone().unwrap_or_else(|| Path::new(DEFAULT_PIN_ROOT).join(self.name()))
    }
}

/// Where agents pin their maps when the config names no `pin_path`.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/pglb-agent";

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "agent".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
cgroup = "/sys/fs/cgroup/unified/app"
vip = "172.20.0.100"
write_ports = [3000]
read_ports = [3001]
load_balancers = ["172.20.0.21:3003", "172.20.0.22:3003"]
key_file = "/etc/pglb/agent.key"
lb_public_key_file = "/etc/pglb/agent-signing.pub"
"#;

    #[test]
    fn the_example_parses_with_defaults() {
        let c = AgentConfig::parse(GOOD, Path::new("agent.toml")).expect("valid");
        assert_eq!(c.lease, Duration::from_secs(1), "default lease");
        assert_eq!(c.subscribe_interval, Duration::from_millis(250), "default interval");
        let named = AgentConfig::parse(&format!("name = \"app1\"\n{GOOD}"), Path::new("agent.toml")).expect("valid");
        assert_eq!(named.pin_path(), Path::new("/sys/fs/bpf/pglb-agent/app1"), "default pin path by name");
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let table = [
            ("relative cgroup", GOOD.replace("\"/sys/fs/cgroup/unified/app\"", "\"app\""), "absolute path"),
            ("no write port", GOOD.replace("write_ports = [3000]", "write_ports = []"), "write_ports is empty"),
            ("port twice", GOOD.replace("read_ports = [3001]", "read_ports = [3000]"), "port 3000"),
            ("no lb", GOOD.replace("load_balancers = [\"172.20.0.21:3003\", \"172.20.0.22:3003\"]", "load_balancers = []"), "load_balancers is empty"),
            ("lb twice", GOOD.replace("172.20.0.22:3003", "172.20.0.21:3003"), "listed twice"),
            ("lease too short", format!("{GOOD}lease = \"10ms\"\n"), "lease = 10ms"),
            ("interval above half the lease", format!("{GOOD}subscribe_interval = \"600ms\"\n"), "subscribe_interval = 600ms"),
            ("unknown key", format!("{GOOD}leese = \"1s\"\n"), "unknown field"),
            ("vip unspecified", GOOD.replace("172.20.0.100", "0.0.0.0"), "vip 0.0.0.0"),
            ("no public key", GOOD.replace("lb_public_key_file = \"/etc/pglb/agent-signing.pub\"\n", ""), "missing field `lb_public_key_file`"),
            ("name with a space", format!("name = \"app 1\"\n{GOOD}"), "name \"app 1\""),
            ("name with =", format!("name = \"a=b\"\n{GOOD}"), "name \"a=b\""),
            ("relative pin path", format!("{GOOD}pin_path = \"pglb\"\n"), "pin_path pglb"),
        ];
        for (what, text, want) in table {
            let err = AgentConfig::parse(&text, Path::new("agent.toml")).expect_err(what).to_string();
            assert!(err.contains(want), "{what}: {err}");
        }
    }
}
