//! The lab's address plan (DESIGN.md "The reference topology") and where its state lives.

use std::path::PathBuf;

/// Every lab namespace starts with this; nothing else on the machine may use it.
pub const NS_PREFIX: &str = "pgha-";
/// The namespace holding the bridge that joins the hosts.
pub const SWITCH_NS: &str = "pgha-sw";
/// The bridge inside [`SWITCH_NS`].
pub const BRIDGE: &str = "br0";
/// Lab state: PostgreSQL data, sockets, logs, generated secrets. Removed by `lab down`.
pub const STATE_DIR: &str = "/run/pglb-lab";
/// Where each load balancer instance pins its BPF maps (bpffs is shared by all namespaces).
pub const BPF_PIN_ROOT: &str = "/sys/fs/bpf/pglb";
/// The lab's subnet prefix length (172.20.0.0/16).
pub const PREFIX_LEN: u8 = 16;
/// The virtual IP the load balancers share.
pub const VIP: &str = "172.20.0.100";
/// The write and read listener ports on the VIP.
pub const WRITE_PORT: u16 = 3000;
pub const READ_PORT: u16 = 3001;
/// PostgreSQL's port on every database host.
pub const PG_PORT: u16 = 5432;
/// The application database and user.
pub const APP_DB: &str = "app";
pub const APP_USER: &str = "app";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    LoadBalancer,
    Haproxy,
    Client,
}

#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub name: &'static str,
    pub addr: &'static str,
    pub kind: Kind,
}

pub const HOSTS: &[Host] = &[
    Host { name: "pg1", addr: "172.20.0.10", kind: Kind::Postgres },
    Host { name: "pg2", addr: "172.20.0.11", kind: Kind::Postgres },
    Host { name: "pg3", addr: "172.20.0.12", kind: Kind::Postgres },
    Host { name: "haproxy", addr: "172.20.0.20", kind: Kind::Haproxy },
    Host { name: "lb1", addr: "172.20.0.21", kind: Kind::LoadBalancer },
    Host { name: "lb2", addr: "172.20.0.22", kind: Kind::LoadBalancer },
    Host { name: "client", addr: "172.20.0.50", kind: Kind::Client },
];

/// The node pg2 and pg3 are cloned from.
pub const INITIAL_PRIMARY: &str = "pg1";

impl Host {
    pub fn ns(&self) -> String {
        format!("{NS_PREFIX}{}", self.name)
    }

    /// The switch-side end of this host's veth pair.
    pub fn switch_port(&self) -> String {
        format!("v-{}", self.name)
    }

    /// This host's folder under [`STATE_DIR`].
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(STATE_DIR).join(self.name)
    }
}

/// Looks a host up by name; the error lists the valid names.
pub fn host(name: &str) -> anyhow::Result<&'static Host> {
    HOSTS.iter().find(|h| h.name == name).ok_or_else(|| {
        let names: Vec<_> = HOSTS.iter().map(|h| h.name).collect();
        anyhow::anyhow!("unknown lab host `{name}`: the hosts are {} (and `sw`, the switch, for `lab exec`)", names.join(", "))
    })
}

pub fn postgres_hosts() -> impl Iterator<Item = &'static Host> {
    HOSTS.iter().filter(|h| h.kind == Kind::Postgres)
}

pub fn secrets_dir() -> PathBuf {
    PathBuf::from(STATE_DIR).join("secrets")
}

/// A generated password of a lab role, kept 0600 in the secrets folder.
pub fn secret_path(role: &str) -> PathBuf {
    secrets_dir().join(format!("{role}.password"))
}

/// The WAL archive every PostgreSQL node shares (owned by postgres): the primary's
/// `archive_command` copies finished segments here, `restore_command` reads them back. Kept in
/// step with `archive_command`/`restore_command` in postgres.rs's BASE_CONF.
pub fn archive_dir() -> PathBuf {
    PathBuf::from(STATE_DIR).join("archive")
}

/// The pgpass file the client host's psql and pgbench use (app user).
pub fn client_pgpass() -> PathBuf {
    secrets_dir().join("client.pgpass")
}

/// The marker written last by a complete `lab up`.
pub fn up_marker() -> PathBuf {
    PathBuf::from(STATE_DIR).join("lab.up")
}
