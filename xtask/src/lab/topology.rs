//! The lab's address plan (docs/ARCHITECTURE.md, "The lab") and where its state lives.

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

/// The load balancers, in the order of [`HOSTS`]: `lab up` starts them in this order, and their
/// configs give them falling VRRP priorities (a test in `lb.rs` checks it). Another load
/// balancer is one more line in [`HOSTS`] and its config, `config/lab-<name>.toml`.
pub fn load_balancers() -> impl Iterator<Item = &'static Host> {
    HOSTS.iter().filter(|h| h.kind == Kind::LoadBalancer)
}

/// The VIP's home: the first load balancer, which takes the VIP at `lab up` (highest priority,
/// started first) and to which the drills and tests bring it back after moving it.
pub fn home_lb() -> &'static Host {
    load_balancers().next().expect("the lab topology has a load balancer")
}

/// The load balancer that takes the VIP when `lb` stops: the first other one in [`HOSTS`], the
/// highest priority of the rest.
pub fn peer_of(lb: &Host) -> &'static Host {
    load_balancers().find(|o| o.name != lb.name).expect("the lab topology has two load balancers")
}

/// The VIP's home and its peer: lb1 and lb2 in the lab, the names the drills' checks use.
pub fn home_and_peer() -> (&'static Host, &'static Host) {
    let home = home_lb();
    (home, peer_of(home))
}

pub fn secrets_dir() -> PathBuf {
    PathBuf::from(STATE_DIR).join("secrets")
}

/// A generated password of a lab role, kept 0600 in the secrets folder.
pub fn secret_path(role: &str) -> PathBuf {
    secrets_dir().join(format!("{role}.password"))
}

/// The libpq passfile the standbys stream with (`[replication] passfile`): the replication role's
/// password, owned by postgres, 0600.
pub fn replication_passfile() -> PathBuf {
    PathBuf::from(STATE_DIR).join("replication.pgpass")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_load_balancer_is_the_home_and_each_has_a_peer() {
        let names: Vec<&str> = load_balancers().map(|h| h.name).collect();
        assert_eq!(names, ["lb1", "lb2"]);
        assert_eq!(home_lb().name, "lb1");
        let (home, peer) = home_and_peer();
        assert_eq!((home.name, peer.name), ("lb1", "lb2"));
        assert_eq!(peer_of(peer).name, "lb1", "the home takes the VIP back from its peer");
    }
}
