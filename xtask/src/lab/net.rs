//! The lab's network: one bridge in its own namespace, every host a namespace joined by a veth
//! pair. Nothing is created in the root namespace: each veth is made inside the switch namespace
//! with its peer placed straight into the host's namespace.

use std::{
    ffi::OsStr,
    fs,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

use super::topology::{BRIDGE, HOSTS, Host, Kind, NS_PREFIX, PREFIX_LEN, SWITCH_NS};
use crate::sh;

/// `ip netns exec NS PROGRAM ARGS…`.
pub fn ns_cmd<I, S>(ns: &str, program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = sh::cmd("ip", ["netns", "exec", ns, program]);
    c.args(args);
    c
}

/// Starts `program args…` in `ns`'s network namespace, detached in its own session (a Ctrl-C
/// aimed at xtask does not reach it), appending stdout and stderr to `log`; returns its pid.
/// `nsenter --net`, not `ip netns exec`: the latter mounts a fresh sysfs in a private mount
/// namespace, which hides the machine's bpffs (`/sys/fs/bpf`) and cgroup tree.
pub fn spawn_detached<I, S>(ns: &str, program: &Path, args: I, log: &Path) -> Result<u32>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = fs::OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}"))
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: setsid() in the child before exec touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting {} in {ns}", program.display()))?;
    Ok(child.id())
}

/// The lab namespaces that exist now.
pub fn lab_namespaces() -> Result<Vec<String>> {
    let out = sh::output(&mut sh::cmd("ip", ["netns", "list"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(NS_PREFIX))
        .map(str::to_owned)
        .collect())
}

fn ip(args: &[&str]) -> Result<()> {
    sh::run(&mut sh::cmd("ip", args))
}

pub fn create() -> Result<()> {
    ip(&["netns", "add", SWITCH_NS])?;
    ip(&["-n", SWITCH_NS, "link", "set", "lo", "up"])?;
    ip(&["-n", SWITCH_NS, "link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["-n", SWITCH_NS, "link", "set", BRIDGE, "up"])?;
    for host in HOSTS {
        add_host(host).with_context(|| format!("adding lab host {}", host.name))?;
    }
    Ok(())
}

fn add_host(host: &Host) -> Result<()> {
    let ns = host.ns();
    let port = host.switch_port();
    let cidr = format!("{}/{PREFIX_LEN}", host.addr);
    ip(&["netns", "add", &ns])?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip(&["-n", SWITCH_NS, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
    ip(&["-n", SWITCH_NS, "link", "set", &port, "master", BRIDGE])?;
    ip(&["-n", SWITCH_NS, "link", "set", &port, "up"])?;
    ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    // veth leaves TCP checksums unfinished with tx offload on; XDP rewrites need them complete.
    sh::run(&mut ns_cmd(SWITCH_NS, "ethtool", ["-K", &port, "tx", "off"]))?;
    sh::run(&mut ns_cmd(&ns, "ethtool", ["-K", "eth0", "tx", "off"]))?;
    if host.kind == Kind::LoadBalancer {
        // Frames that pglb's XDP program sends back out of a veth (bpf_redirect, see
        // docs/DECISIONS.md) are accepted only when the peer end runs NAPI: GRO turns it on.
        sh::run(&mut ns_cmd(SWITCH_NS, "ethtool", ["-K", &port, "gro", "on"]))?;
    }
    Ok(())
}

/// Deletes every lab namespace; returns the names removed.
pub fn delete_all() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for ns in lab_namespaces()? {
        sh::run(&mut sh::cmd("ip", ["netns", "del", &ns]))
            .with_context(|| format!("deleting namespace {ns}"))?;
        removed.push(ns);
    }
    Ok(removed)
}

/// PIDs of every process whose network namespace is `ns`.
pub fn namespace_pids(ns: &str) -> Result<Vec<i32>> {
    let out = sh::capture(&mut sh::cmd("ip", ["netns", "pids", ns]))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}
