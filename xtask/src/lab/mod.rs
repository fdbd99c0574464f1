//! `cargo xtask lab up|down|status|psql|exec`: the reference topology in network namespaces.

pub mod agent;
pub mod fault;
pub mod lb;
pub mod net;
pub mod pgbench;
pub mod pglb_json;
pub mod postgres;
pub mod tls;
pub mod topology;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use topology::{
    APP_DB, APP_USER, BPF_PIN_ROOT, HOSTS, INITIAL_PRIMARY, Kind, READ_PORT, STATE_DIR, SWITCH_NS, VIP, WRITE_PORT,
    client_pgpass, host, postgres_hosts, up_marker,
};

use crate::{setup::PG_BIN, sh};

/// What is on the machine now.
#[derive(Debug, PartialEq, Eq)]
pub enum LabState {
    /// No lab namespace, no state folder.
    Down,
    /// A complete `lab up` finished and its namespaces are there.
    Up,
    /// Something of a lab is there, but no complete `up` (killed or failed half-way).
    Partial,
}

pub fn state() -> Result<LabState> {
    let namespaces = net::lab_namespaces()?;
    let state_dir = Path::new(STATE_DIR).exists() || Path::new(agent::CGROUP).exists();
    Ok(if namespaces.is_empty() && !state_dir {
        LabState::Down
    } else if up_marker().exists() && namespaces.len() == HOSTS.len() + 1 {
        LabState::Up
    } else {
        LabState::Partial
    })
}

fn require_up() -> Result<()> {
    match state()? {
        LabState::Up => Ok(()),
        LabState::Down => bail!("the lab is not up: start it with `cargo xtask lab up`"),
        LabState::Partial => {
            bail!("the lab is half-built (an interrupted `lab up`?): run `cargo xtask lab down`, then `cargo xtask lab up`")
        }
    }
}

fn check_tools() -> Result<()> {
    for (tool, path) in [("ip", "/usr/sbin/ip"), ("ethtool", "/usr/sbin/ethtool"), ("runuser", "/usr/sbin/runuser")] {
        if !Path::new(path).exists() && which(tool).is_none() {
            bail!("`{tool}` is missing: run `cargo xtask setup`");
        }
    }
    if !Path::new(PG_BIN).join("postgres").exists() {
        bail!("PostgreSQL 15 server binaries are missing in {PG_BIN}: run `cargo xtask setup`");
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
}

pub fn up(fresh: bool, keep_on_failure: bool) -> Result<()> {
    sh::require_root("lab up")?;
    check_tools()?;
    match state()? {
        LabState::Up if !fresh => {
            println!("lab: already up; nothing changed (use `cargo xtask lab up --fresh` to rebuild it)");
            return Ok(());
        }
        LabState::Up => {
            println!("lab: --fresh: tearing down the running lab first");
            down()?;
        }
        LabState::Partial => {
            println!("lab: found a half-built lab (no completion marker): tearing it down before building a new one");
            down()?;
        }
        LabState::Down => {}
    }
    let started = Instant::now();
    if let Err(e) = build() {
        if keep_on_failure {
            return Err(e.context("lab up failed; the half-built lab is left for inspection (`cargo xtask lab down` removes it)"));
        }
        let kept = keep_logs();
        let _ = down_quiet();
        return Err(e.context(match kept {
            Some(dir) => format!("lab up failed and was torn down; logs kept in {}", dir.display()),
            None => "lab up failed and was torn down".to_owned(),
        }));
    }
    println!("lab: up in {:.1}s", started.elapsed().as_secs_f64());
    print_status()?;
    Ok(())
}

fn build() -> Result<()> {
    let pglb = lb::pglb_binary()?;
    fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;
    println!("lab: network namespaces and bridge");
    net::create()?;
    postgres::create_secrets()?;
    tls::create_cas()?;
    agent::create_keys(&pglb).context("generating the agent channel's keys (pglb agent keygen)")?;
    println!("lab: PostgreSQL 15 cluster (pg1 primary, pg2 and pg3 cloned through slots)");
    postgres::create_cluster(&pglb)?;
    println!("lab: pglb on lb1 and lb2 (VRRP for the VIP); waiting for {VIP}:{WRITE_PORT} and :{READ_PORT} to answer");
    lb::start_all(&pglb)?;
    agent::install().context("installing pglb agent's config and cgroup on the client host")?;
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    fs::write(up_marker(), format!("{stamp}\n"))?;
    Ok(())
}

/// Copies every log of the lab to a folder that outlives `lab down`, for a failed `up`.
fn keep_logs() -> Option<PathBuf> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let dest = PathBuf::from(format!("/tmp/pglb-lab-failed-{stamp}"));
    fs::create_dir_all(&dest).ok()?;
    for h in HOSTS {
        for name in ["postgres.log", "pglb.log"] {
            let src = h.dir().join(name);
            if src.exists() {
                let _ = fs::copy(&src, dest.join(format!("{}-{name}", h.name)));
            }
        }
    }
    Some(dest)
}

/// Stops every lab process, deletes every lab namespace, BPF pin and the state folder.
/// Safe to run twice and after an interrupted `up`.
pub fn down() -> Result<()> {
    sh::require_root("lab down")?;
    if state()? == LabState::Down && !Path::new(BPF_PIN_ROOT).exists() {
        println!("lab: already down; nothing to remove");
        return Ok(());
    }
    let report = down_quiet()?;
    println!("lab: down ({report})");
    Ok(())
}

fn down_quiet() -> Result<String> {
    for node in postgres_hosts() {
        postgres::stop_immediate(node);
    }
    let mut killed = 0;
    for ns in net::lab_namespaces()? {
        for pid in net::namespace_pids(&ns)? {
            // SAFETY: kill(2) with a pid read from `ip netns pids`; at worst the process is gone.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    postgres::wait_for(std::time::Duration::from_secs(10), "lab processes to exit", || {
        for ns in net::lab_namespaces()? {
            if !net::namespace_pids(&ns)?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    agent::remove_cgroup()?;
    let removed = net::delete_all()?;
    if Path::new(BPF_PIN_ROOT).exists() {
        fs::remove_dir_all(BPF_PIN_ROOT).with_context(|| format!("removing BPF pins under {BPF_PIN_ROOT}"))?;
    }
    if Path::new(STATE_DIR).exists() {
        fs::remove_dir_all(STATE_DIR).with_context(|| format!("removing {STATE_DIR}"))?;
    }
    Ok(format!("{killed} processes stopped, {} namespaces removed, state folder removed", removed.len()))
}

pub fn status() -> Result<()> {
    sh::require_root("lab status")?;
    match state()? {
        LabState::Down => {
            println!("lab: down (start it with `cargo xtask lab up`)");
            Ok(())
        }
        LabState::Partial => {
            println!("lab: half-built (an interrupted `lab up`?): run `cargo xtask lab down`");
            Ok(())
        }
        LabState::Up => print_status(),
    }
}

fn print_status() -> Result<()> {
    let primary_lag = postgres_hosts()
        .map(postgres::standby_lag)
        .find(|lags| !lags.is_empty())
        .unwrap_or_default();
    let mut rows = vec![["host", "namespace", "address", "role", "timeline", "replication", "lag"].map(String::from)];
    for h in HOSTS {
        let row = match h.kind {
            Kind::Postgres => {
                let s = postgres::node_status(h, &primary_lag);
                [h.name.into(), h.ns(), h.addr.into(), s.role, s.timeline, s.replication, s.lag]
            }
            Kind::LoadBalancer => {
                let holds_vip = lb::holds_vip(h).unwrap_or(false);
                let role = match (lb::running(h), holds_vip) {
                    (true, true) => "pglb, holds the VIP",
                    (true, false) => "pglb, standing by",
                    (false, true) => "pglb NOT running, VIP still on eth0",
                    (false, false) => "pglb NOT running",
                };
                [h.name.into(), h.ns(), h.addr.into(), role.into(), "-".into(), "-".into(), String::new()]
            }
            Kind::Haproxy => [h.name.into(), h.ns(), h.addr.into(), "haproxy (benchmarks)".into(), "-".into(), "-".into(), String::new()],
            Kind::Client => [h.name.into(), h.ns(), h.addr.into(), "client".into(), "-".into(), "-".into(), String::new()],
        };
        rows.push(row);
    }
    print_table(&rows);
    println!("VIP {VIP}: write :{WRITE_PORT}, read :{READ_PORT}");
    Ok(())
}

fn print_table(rows: &[[String; 7]]) {
    let widths: Vec<usize> = (0..7).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!(" {}", line.join(" | ").trim_end());
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("-{}-", rule.join("-+-"));
        }
    }
}

/// `lab psql`: psql in `pgha-client` as the application user, through the VIP or to one node.
pub fn psql(port: u16, node: Option<&str>, args: &[String]) -> Result<ExitCode> {
    sh::require_root("lab psql")?;
    require_up()?;
    let (addr, port) = match node {
        Some(name) => {
            let h = host(name)?;
            if h.kind != Kind::Postgres {
                bail!("`{name}` is not a PostgreSQL host: use one of pg1, pg2, pg3");
            }
            (h.addr, topology::PG_PORT)
        }
        None => (VIP, port),
    };
    let mut cmd = net::ns_cmd(
        &host("client")?.ns(),
        &format!("{PG_BIN}/psql"),
        ["-X", "-h", addr, "-p", &port.to_string(), "-U", APP_USER, "-d", APP_DB],
    );
    cmd.args(args).env("PGPASSFILE", client_pgpass()).env("PGCONNECT_TIMEOUT", "5");
    let status = cmd.status().context("starting psql in pgha-client")?;
    Ok(exit_code(status))
}

/// `lab exec HOST [--agent] -- CMD`: runs a command inside a lab host's namespace; with
/// `--agent` (client only) inside the client's cgroup, where `pglb agent` rewrites its connects.
pub fn exec(host_name: &str, in_agent_cgroup: bool, command: &[String]) -> Result<ExitCode> {
    sh::require_root("lab exec")?;
    let ns = if host_name == "sw" { SWITCH_NS.to_owned() } else { host(host_name)?.ns() };
    require_up()?;
    let Some((program, args)) = command.split_first() else {
        bail!("`lab exec {host_name}` needs a command after `--`, e.g. `cargo xtask lab exec {host_name} -- ip addr`");
    };
    let mut cmd = if in_agent_cgroup {
        if host_name != "client" {
            bail!("--agent runs a command in the client host's cgroup: use `lab exec client --agent -- CMD`");
        }
        if agent::pids().is_empty() {
            eprintln!("lab: pglb agent is not running (`cargo xtask lab agent start`): connections take the VIP");
        }
        agent::in_cgroup(&ns, program, args)
    } else {
        net::ns_cmd(&ns, program, args)
    };
    if host_name == "client" {
        // psql and pgbench on the client host connect with no setup: the app role's pgpass, and
        // the VIP's write port, role and database as defaults (each left alone when the caller
        // set it).
        for (key, value) in client_pg_env() {
            if std::env::var_os(key).is_none() {
                cmd.env(key, value);
            }
        }
    }
    let status = cmd.status().with_context(|| format!("running {program} in {ns}"))?;
    Ok(exit_code(status))
}

/// `lab agent start|stop`: `pglb agent` on the client host.
pub fn agent_command(start: bool) -> Result<()> {
    sh::require_root("lab agent")?;
    require_up()?;
    if start { agent::start(&lb::stable_binary()) } else { agent::stop() }
}

/// The libpq environment `lab exec client` gives its command.
fn client_pg_env() -> [(&'static str, String); 5] {
    [
        ("PGPASSFILE", client_pgpass().display().to_string()),
        ("PGHOST", VIP.to_owned()),
        ("PGPORT", WRITE_PORT.to_string()),
        ("PGUSER", APP_USER.to_owned()),
        ("PGDATABASE", APP_DB.to_owned()),
    ]
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    ExitCode::from(status.code().map(|c| c as u8).unwrap_or(1))
}

/// Shown by `lab up` and `run`: how to connect.
pub fn connect_help() -> String {
    format!(
        "Connect (inside the lab's client host):
  cargo xtask lab psql                # psql as {APP_USER} to {VIP}:{WRITE_PORT} (the primary)
  cargo xtask lab psql --port {READ_PORT}    # the read port (standbys)
  cargo xtask lab psql --node {INITIAL_PRIMARY}      # straight to a node, bypassing the VIP
  cargo xtask lab exec client -- CMD  # any command on the client host, with PGPASSFILE, PGHOST={VIP},
                                      # PGPORT={WRITE_PORT}, PGUSER={APP_USER}, PGDATABASE={APP_DB} set (pgbench, psql)
  cargo xtask lab agent start         # pglb agent on the client host (docs/AGENT.md), then:
  cargo xtask lab exec client --agent -- CMD   # CMD in the agent's cgroup: VIP connects go straight to PostgreSQL
JDBC:
  jdbc:postgresql://{VIP}:{WRITE_PORT}/{APP_DB}?user={APP_USER}
  jdbc:postgresql://{VIP}:{READ_PORT}/{APP_DB}?user={APP_USER}&readOnly=true
Password of {APP_USER}: {secret}",
        secret = topology::secret_path(APP_USER).display(),
    )
}
