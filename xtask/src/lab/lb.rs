//! pglb on the lab's load balancers: lb1 with `config/lab.toml`, lb2 with `config/lab-lb2.toml`.
//!
//! pglb is started with `nsenter --net` rather than `ip netns exec`: the latter mounts a fresh
//! sysfs, which hides the root bpffs at /sys/fs/bpf where pglb pins its maps and XDP link.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::{
    net::ns_cmd,
    postgres::wait_for,
    topology::{APP_DB, APP_USER, Host, READ_PORT, VIP, WRITE_PORT, client_pgpass, host},
};
use crate::{setup::PG_BIN, sh};

/// The workspace root (xtask lives one level below it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent folder").to_owned()
}

/// The pglb binary the lab runs: `PGLB_BIN` if set (the tests set it), else this workspace's
/// debug build, built now.
pub fn pglb_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PGLB_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.exists() {
            bail!("PGLB_BIN points at {}, which does not exist", bin.display());
        }
        return Ok(bin);
    }
    let mut build = sh::cmd("cargo", ["build", "-q", "-p", "lb-user", "--bin", "pglb"]);
    build.current_dir(workspace());
    sh::run_inherit(&mut build).context("building pglb for the lab")?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    Ok(target.join("debug/pglb"))
}

/// The config file of a load balancer host.
pub fn config_path(lb: &Host) -> PathBuf {
    let file = if lb.name == "lb1" { "lab.toml".to_owned() } else { format!("lab-{}.toml", lb.name) };
    workspace().join("config").join(file)
}

pub fn log_path(lb: &Host) -> PathBuf {
    lb.dir().join("pglb.log")
}

/// Starts `pglb run` inside the host's network namespace, detached, appending to its log.
pub fn start(lb: &Host, pglb: &Path) -> Result<u32> {
    fs::create_dir_all(lb.dir())?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(lb))
        .with_context(|| format!("opening {}", log_path(lb).display()))?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", lb.ns()))
        .arg(pglb)
        .args(["run", "--config"])
        .arg(config_path(lb))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid() in the child before exec touches no memory of the parent; it puts pglb
    // in its own session so a Ctrl-C aimed at xtask does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting pglb on {}", lb.name))?;
    Ok(child.id())
}

/// Succeeds when a new connection through the VIP on `port` runs a query.
pub fn vip_answers(port: u16) -> Result<bool> {
    let client = host("client")?;
    let mut psql = ns_cmd(&client.ns(), &format!("{PG_BIN}/psql"), [
        "-X", "-h", VIP, "-p", &port.to_string(), "-U", APP_USER, "-d", APP_DB, "-Atc", "SELECT 1",
    ]);
    psql.env("PGPASSFILE", client_pgpass()).env("PGCONNECT_TIMEOUT", "2");
    Ok(sh::capture(&mut psql)?.status.success())
}

/// Starts pglb on every load balancer and waits until the VIP answers on both ports.
pub fn start_all(pglb: &Path) -> Result<()> {
    link_binary(pglb)?;
    for lb in super::topology::HOSTS.iter().filter(|h| h.kind == super::topology::Kind::LoadBalancer) {
        start(lb, pglb)?;
    }
    let lb1 = host("lb1")?;
    wait_for(Duration::from_secs(30), "lb1 (VRRP priority 150) to hold the VIP", || holds_vip(lb1))?;
    for port in [WRITE_PORT, READ_PORT] {
        wait_for(Duration::from_secs(30), &format!("the VIP to answer on {VIP}:{port}"), || vip_answers(port))
            .with_context(|| format!("pglb logs: {}", super::topology::STATE_DIR))?;
    }
    Ok(())
}

/// A stable path to the pglb binary the lab runs, for commands in the lab configs
/// (`[failover] demote_command` runs `pglb node rejoin` through it).
pub fn stable_binary() -> PathBuf {
    Path::new(super::topology::STATE_DIR).join("bin/pglb")
}

fn link_binary(pglb: &Path) -> Result<()> {
    let link = stable_binary();
    fs::create_dir_all(link.parent().expect("a folder"))?;
    let _ = fs::remove_file(&link);
    let target = fs::canonicalize(pglb).with_context(|| format!("resolving {}", pglb.display()))?;
    std::os::unix::fs::symlink(&target, &link).with_context(|| format!("linking {} to {}", link.display(), target.display()))
}

/// Whether the VIP is on the host's eth0.
pub fn holds_vip(lb: &Host) -> Result<bool> {
    let out = sh::output(&mut sh::cmd("ip", ["-n", &lb.ns(), "-4", "-o", "addr", "show", "dev", "eth0"]))?;
    Ok(out.contains(&format!("inet {VIP}/")))
}

/// Whether a pglb process runs in the host's namespace.
pub fn running(lb: &Host) -> bool {
    super::net::namespace_pids(&lb.ns())
        .unwrap_or_default()
        .iter()
        .any(|pid| fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("pglb") && c.contains("run")))
}
